//! `--op record` against a real server: every format, with and without snappy, on records
//! whose content compresses well and badly, verified reply by reply, and the bytes each
//! request weighs on the wire as the report counts them.
//!
//! The byte counts are checked against what the codec itself writes (the report must count
//! exactly, not roughly), and against what compression must do: a repetitive large record
//! shrinks several times, a random one hardly at all (positional's goes raw, flagged so).

mod common;

use common::{loadgen, Server};
use echolab_protocol::record::Format;

const REQUESTS: u64 = 300;

fn run(addr: &str, flags: &str) -> common::Run {
    let run = loadgen(&format!(
        "--addr {addr} --op record -n {REQUESTS} -c 2 -p 2 --warmup 0 --timeout 5s {flags}"
    ));
    run.assert_clean(REQUESTS);
    run
}

#[test]
fn every_format_round_trips_and_counts_its_bytes() {
    let s = Server::start("server-eventloop", &["--protocol", "binary"]);
    for format in Format::ALL {
        let sent = |flags: &str| {
            let r = run(
                &s.addr(),
                &format!("--format {format} --record large {flags}"),
            );
            assert_eq!(
                r.get("params.record.format"),
                format.name(),
                "{}",
                r.output()
            );
            r.f("bytes_per_request.sent")
        };
        let plain = sent("--compress none");
        let packed = sent("--compress snappy");
        let random = sent("--compress snappy --entropy high");
        let random_plain = sent("--compress none --entropy high");
        eprintln!("{format}: {plain} plain, {packed} snappy; random {random_plain} plain, {random} snappy");
        assert!(packed * 4.0 < plain, "{format}: snappy {packed} vs {plain}");
        // Random letters have no repeats for snappy to find: only a format's own structure
        // (JSON's `","` between interests) compresses, a little; a record that does not shrink
        // goes raw, no larger. Not to the byte: slot 1's request ids are 5 bytes longer than
        // slot 0's (its index is in their high bits), and how many of the 300 each slot sends
        // follows the timing, so the mean moves by 5/300 of a byte per request that changes
        // slot (0.013 in a CI run through the uring engine). A compressed record sent as is
        // would be hundreds of bytes larger.
        assert!(
            random > 0.95 * random_plain && random <= random_plain + 1.0,
            "{format}: random content ({random} vs {random_plain})"
        );
    }
    // The book's record as docs/protocol.md shows it ("Martin", a number, "daydreaming" and
    // "hacking", no address: 31 bytes with a two-byte number), behind 4 (length) + 1 (op) +
    // 1 or 6 (the id: slot 1's index is in its high bits) + 1 (arg) + 1 (flag): exactly what
    // the codec writes, so the mean lies between 39 and 44 bytes.
    let book = run(&s.addr(), "--format positional --record book");
    let per = book.f("bytes_per_request.sent");
    assert!(
        (39.0..=44.0).contains(&per),
        "{per} bytes per book record\n{}",
        book.output()
    );
}

#[test]
fn short_connections_agree_the_schema_on_each() {
    let s = Server::start("server-thread", &["--protocol", "binary"]);
    let r = run(
        &s.addr(),
        "--format avro --record nested --requests-per-conn 10",
    );
    assert!(r.u("connect_us.count") >= REQUESTS / 10, "{}", r.output());
}
