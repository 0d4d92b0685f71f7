//! Flags that cannot work are refused before any load is sent: exit code 2, a message on
//! stderr that names the flag, no summary, no report, and no connection to the server.
//!
//! A run with a silently ignored flag (an op the protocol cannot express, a payload the server
//! rejects) would measure something other than what was asked, so refusing it is the only
//! honest answer. Each case points loadgen at a listener that records connections, with `-n 1`
//! so that even a wrongly accepted command line ends at once.

mod common;

use common::{loadgen, FakeServer};

/// Runs loadgen with `flags` and checks it refused them: exit 2, stderr containing `needle`.
fn refused(flags: &str, needle: &str) {
    let fake = FakeServer::silent();
    let run = loadgen(&format!(
        "--addr {} -n 1 --warmup 0 --timeout 1s {flags}",
        fake.addr()
    ));
    run.assert_code(2);
    assert!(
        run.stderr.contains(needle),
        "stderr should contain {needle:?}\n{}",
        run.output()
    );
    run.assert_nothing_started(&fake);
}

#[test]
fn sleep_needs_the_binary_protocol() {
    refused("--op sleep:10 --protocol resp", "--op sleep:10");
}

#[test]
fn ping_needs_resp() {
    refused("--op ping --protocol binary", "--op ping");
}

#[test]
fn ping_carries_no_payload() {
    refused(
        "--op ping --protocol resp --payload 5",
        "leave out --payload 5",
    );
}

/// A negative number reaches the value parser, which names the range, instead of clap's
/// "unexpected argument '-1' found".
#[test]
fn a_negative_number_gets_its_range() {
    refused("-c -1", "-1 is not in 1..=1000000");
    refused("--payload -1", "is not a size");
}

/// An address without a port, or not an address at all, says what is expected (checked
/// before anything is sent: there is no server to send to).
#[test]
fn an_address_says_what_it_expects() {
    for (addr, needle) in [
        ("127.0.0.1", "expected HOST:PORT"),
        ("nonsense", "expected HOST:PORT"),
        ("127.0.0.1:99999", "invalid port value"),
    ] {
        let run = loadgen(&format!("--addr {addr} -n 1"));
        run.assert_code(2);
        assert!(run.stderr.contains(needle), "{needle:?}\n{}", run.output());
    }
}

/// A host name is resolved: localhost:PORT reaches a server on 127.0.0.1.
#[test]
fn a_host_name_is_resolved() {
    let s = common::Server::start("server-eventloop", &[]);
    let run = loadgen(&format!(
        "--addr localhost:{} -n 10 -c 1 --warmup 0",
        s.addr.port()
    ));
    run.assert_clean(10);
}

#[test]
fn a_json_payload_needs_its_quotes() {
    refused("--protocol json --payload 1", "--payload");
}

#[test]
fn a_zero_rate() {
    refused("--rate 0", "--rate");
}

#[test]
fn poisson_arrivals_without_a_rate() {
    refused("--arrivals poisson", "--arrivals poisson needs --rate");
}

#[test]
fn a_seed_without_poisson_arrivals() {
    refused("--rate 100 --seed 3", "--seed draws the Poisson timetable");
}

#[test]
fn an_unknown_arrival_process() {
    refused("--rate 100 --arrivals gamma", "--arrivals");
}

#[test]
fn a_backwards_source_range() {
    refused("--source-ips 127.0.0.9-127.0.0.2", "--source-ips");
}

#[test]
fn a_source_address_of_the_wrong_family() {
    refused("--source-ips ::1", "--source-ips");
}

#[test]
fn an_unknown_flag() {
    refused("--frobnicate", "--frobnicate");
}

#[test]
fn an_unknown_op_and_protocol() {
    refused("--op nap:5", "--op");
    refused("--protocol http", "--protocol");
}

#[test]
fn a_zero_duration() {
    refused("-d 0", "--duration");
}

/// Sessions are binary-only, and --op incr's flags have ranges: refused before any load.
#[test]
fn incr_combinations_are_refused() {
    refused("--op incr --protocol resp", "binary-only");
    refused("--op incr --protocol json", "binary-only");
    refused("--op incr --keys 0", "--keys");
    refused("--op incr --payload 16", "leave out --payload 16");
    refused("--op incr --client-id-base 0", "--client-id-base");
    refused("--retry maybe", "--retry");
    refused("--retry always --max-attempts 0", "--max-attempts");
    refused(
        &format!("--op incr --keys 100 --key-prefix {}", "k".repeat(63)),
        "--key-prefix",
    );
}
