//! The command line of every server, as a person meets it: a bad flag is refused with exit
//! status 2 and a message that says what *is* valid; a runtime failure to listen exits 1 and
//! names the address; and every binary's help page looks alike.
//!
//! Each case here was once a bad first contact (issue 12): `--addr localhost:7000` refused as
//! "invalid socket address syntax", `--workers -1` answered with clap's "unexpected argument
//! '-1' found" (clap took the value for a flag), `--stack-size 1` silently accepted, "Address
//! already in use" without saying which address, and two help styles among four binaries.

mod common;

use std::process::Command;

use common::{eventloop_bin, fork_bin, prefork_bin, thread_bin, uring_bin, Client, Server};

/// Every server binary, with its short name.
fn binaries() -> Vec<(&'static str, &'static str)> {
    vec![
        ("server-thread", thread_bin()),
        ("server-fork", fork_bin()),
        ("server-eventloop", eventloop_bin()),
        ("server-prefork", prefork_bin()),
        ("server-uring", uring_bin()),
    ]
}

/// Runs `bin args` to completion (every case here exits at once) and returns its exit code
/// and stderr.
fn run(bin: &str, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(bin)
        .args(args)
        .output()
        .expect("run the server");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts that `bin args` is refused by the parser (exit 2) with a message containing every
/// one of `says`, and never clap's "unexpected argument" (which is what a negative number got
/// before: clap took `-1` for a flag).
fn assert_refused(name: &str, bin: &str, args: &[&str], says: &[&str]) {
    let (code, stderr) = run(bin, args);
    assert_eq!(code, Some(2), "{name} {args:?}: exit status\n{stderr}");
    assert!(
        stderr.contains("error: invalid value"),
        "{name} {args:?}: {stderr}"
    );
    assert!(
        !stderr.contains("unexpected argument"),
        "{name} {args:?}: the value was taken for a flag\n{stderr}"
    );
    for s in says {
        assert!(stderr.contains(s), "{name} {args:?}: no {s:?} in\n{stderr}");
    }
}

#[test]
fn addr_without_a_port_or_unresolvable_says_what_is_expected() {
    let expected = "expected HOST:PORT, e.g. 127.0.0.1:7000";
    for (name, bin) in binaries() {
        for addr in ["127.0.0.1", "localhost", "nonsense", "[::1]"] {
            assert_refused(name, bin, &["--addr", addr], &["no port", expected]);
        }
        // A port that is not a number (a service name) cannot be resolved.
        assert_refused(
            name,
            bin,
            &["--addr", "localhost:http"],
            &["cannot resolve", expected],
        );
    }
}

/// `--addr localhost:0` resolves the name, and the server listens on a loopback address (the
/// harness checks that the `listening on` address is loopback).
#[test]
fn addr_takes_a_host_name() {
    for (name, bin) in binaries() {
        let extra: &[&str] = if name == "server-prefork" {
            &["--workers", "2"]
        } else {
            &[]
        };
        let mut args = vec!["--addr", "localhost:0"];
        args.extend_from_slice(extra);
        let server = Server::start(bin, &args);
        assert!(server.addr.ip().is_loopback(), "{name}: {}", server.addr);
        let mut client = Client::connect(server.addr, server.protocol);
        client.echo(b"by name");
        drop(client);
        server.stop().assert_clean(name);
    }
}

/// Negative and zero values of the numeric flags every server shares: each gets the valid
/// range (or the valid form) in the message.
#[test]
fn negative_and_zero_shared_flags_are_told_the_range() {
    let cases: &[(&[&str], &[&str])] = &[
        (&["--backlog", "-5"], &["-5 is not in 1..=65535"]),
        (&["--backlog", "0"], &["0 is not in 1..=65535"]),
        (&["--backlog", "70000"], &["70000 is not in 1..=65535"]),
        (&["--max-connections", "-1"], &["-1 is not in 1.."]),
        (&["--max-frame", "-1"], &["from 256 to 4294967295"]),
        (&["--debug-spin-ns", "-1"], &["-1 is not in 0..=1000000000"]),
        (&["--idle-timeout", "-1s"], &["is not a duration"]),
        (&["--request-timeout", "-1"], &["is not a duration"]),
        (&["--grace", "-5s"], &["is not a duration"]),
    ];
    for (name, bin) in binaries() {
        for (args, says) in cases {
            assert_refused(name, bin, args, says);
        }
    }
}

#[test]
fn negative_and_zero_model_flags_are_told_the_range() {
    let mut cases: Vec<(&str, &str, &[&str], &[&str])> = vec![
        (
            "server-thread",
            thread_bin(),
            &["--pool", "-1"],
            &["-1 is not in 0..=4096"],
        ),
        (
            "server-thread",
            thread_bin(),
            &["--queue", "-1"],
            &["-1 is not in 1.."],
        ),
        (
            "server-thread",
            thread_bin(),
            &["--queue", "0"],
            &["0 is not in 1.."],
        ),
        (
            "server-thread",
            thread_bin(),
            &["--stack-size", "-1"],
            &["is not a size"],
        ),
        (
            "server-fork",
            fork_bin(),
            &["--max-children", "-1"],
            &["-1 is not in 1.."],
        ),
        (
            "server-eventloop",
            eventloop_bin(),
            &["--write-budget", "-1"],
            &["is not a size"],
        ),
        (
            "server-eventloop",
            eventloop_bin(),
            &["--max-pending-output", "-64K"],
            &["is not a size"],
        ),
    ];
    let bin = prefork_bin();
    cases.extend([
        (
            "server-prefork",
            bin,
            &["--workers", "-1"][..],
            &["-1 is not in 1..=1024"][..],
        ),
        (
            "server-prefork",
            bin,
            &["--workers", "0"],
            &["0 is not in 1..=1024"],
        ),
        (
            "server-prefork",
            bin,
            &["--max-requests-per-worker", "-1"],
            &["-1 is not in 0..="],
        ),
        (
            "server-prefork",
            bin,
            &["--stats-interval", "-1s"],
            &["is not a duration"],
        ),
    ]);
    for (name, bin, args, says) in cases {
        assert_refused(name, bin, args, says);
    }
}

/// A stack too small for a connection handler is refused (std would silently round 1 byte up
/// to glibc's minimum, PTHREAD_STACK_MIN plus thread-local storage, which leaves today's
/// handler little to spare), as is one so large that every thread creation would fail.
#[test]
fn stack_size_outside_what_can_work_is_refused() {
    let bin = thread_bin();
    for small in ["1", "16K", "63K"] {
        assert_refused(
            "server-thread",
            bin,
            &["--stack-size", small],
            &["too small: at least 64K"],
        );
    }
    assert_refused(
        "server-thread",
        bin,
        &["--stack-size", "2G"],
        &["too large: at most 1G"],
    );
}

/// A port in use: exit status 1 (a runtime failure, not a usage error), and the message names
/// the address and says what to do.
#[test]
fn address_in_use_names_the_address() {
    let taken = Server::start(thread_bin(), &[]);
    let addr = taken.addr.to_string();
    for (name, bin) in binaries() {
        // (prefork binds before it forks any worker, so its default of 256 costs nothing here.)
        let (code, stderr) = run(bin, &["--addr", &addr]);
        assert_eq!(code, Some(1), "{name}: exit status\n{stderr}");
        assert!(
            stderr.contains(&format!("cannot listen on {addr}"))
                && stderr.contains("Address already in use")
                && stderr.contains("port 0"),
            "{name}: {stderr}"
        );
    }
    taken.stop().assert_clean("the server holding the port");
}

/// The lines of `-h` output that belong to `flag`: its own line and its help line.
fn help_entry(help: &str, flag: &str) -> String {
    let lines: Vec<&str> = help.lines().collect();
    let i = lines
        .iter()
        .position(|l| l.trim_start().starts_with(flag) || l.contains(&format!(", {flag}")))
        .unwrap_or_else(|| panic!("no {flag} in\n{help}"));
    lines[i..=i + 1].join("\n")
}

fn short_help(bin: &str) -> String {
    let out = Command::new(bin).arg("-h").output().expect("run -h");
    assert!(out.status.success(), "{bin} -h");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn long_help(bin: &str) -> String {
    let out = Command::new(bin)
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(out.status.success(), "{bin} --help");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The binaries show the flags they share in one style: the same entry, word for word,
/// in `-h` (but for `--max-connections`, which says what the limit really is per model), and
/// every `-h` points to `--help` for more.
#[test]
fn help_is_alike_in_all_four() {
    let shared = [
        "--addr",
        "--protocol",
        "--max-frame",
        "--idle-timeout",
        "--write-timeout",
        "--request-timeout",
        "--backlog",
        "--grace",
        "--stats-file",
        "--verbose",
        "--debug-spin-ns",
    ];
    let all = binaries();
    let reference = short_help(all[0].1);
    for (name, bin) in &all {
        let help = short_help(bin);
        for flag in shared {
            assert_eq!(
                help_entry(&help, flag),
                help_entry(&reference, flag),
                "{name}: {flag} is shown differently from server-thread"
            );
        }
        assert!(
            help.contains("Print help (see more with '--help')"),
            "{name}: -h does not point to --help\n{help}"
        );
    }
}

/// Testing aids sit under their own heading, after every flag a user tunes; `-h` shows one
/// line of help per flag, and the detail is in `--help`.
#[test]
fn help_puts_testing_aids_apart_and_keeps_short_help_short() {
    for (name, bin) in binaries() {
        let help = short_help(bin);
        let heading = help
            .find("\nTesting aids:\n")
            .unwrap_or_else(|| panic!("{name}: no Testing aids heading\n{help}"));
        let spin = help
            .find("--debug-spin-ns")
            .expect("--debug-spin-ns listed");
        assert!(
            spin > heading,
            "{name}: --debug-spin-ns outside Testing aids\n{help}"
        );
        let timeout = help_entry(&help, "--request-timeout");
        let text = timeout.lines().nth(1).unwrap_or_default();
        assert!(
            text.len() <= 120 && !text.contains("slowloris"),
            "{name}: -h's --request-timeout should be one line: {text:?}"
        );
        let long = long_help(bin);
        assert!(
            long.contains("slowloris"),
            "{name}: --help lost --request-timeout's detail"
        );
    }
}

/// `--max-connections` tells the truth per model: prefork ignores it (the workers are the
/// limit), and the pool serves only --pool at once.
#[test]
fn max_connections_help_says_what_the_limit_is() {
    let thread = help_entry(&short_help(thread_bin()), "--max-connections");
    assert!(thread.contains("--pool"), "{thread}");
    let bin = prefork_bin();
    let prefork = help_entry(&short_help(bin), "--max-connections");
    assert!(
        prefork.contains("Ignored") && prefork.contains("--workers"),
        "{prefork}"
    );
    let workers = long_help(bin);
    assert!(
        workers.contains("[default: 256]") && workers.contains("redis-benchmark"),
        "--workers' help should give the default and why"
    );
}

/// The floor works: at `--stack-size 64K`, per-connection threads and pool workers come
/// through the deepest paths a handler has — a 1 MiB echo, SLEEP and SPIN, an ERROR reply
/// that keeps the connection, and a fatal error closed with `linger_close` (16 KiB of drain
/// buffer on the stack), in every protocol, and JSON nested to serde_json's depth limit. A
/// stack overflow would abort the whole server, so a clean exit (status 0) is the proof.
#[test]
fn stack_size_floor_serves_the_deepest_requests() {
    use common::content;
    use echolab_protocol::{Command as Op, Protocol, Request, Status};

    let frame = |body: &[u8], big_endian: bool| {
        let len = body.len() as u32;
        let mut f = if big_endian {
            len.to_be_bytes().to_vec()
        } else {
            len.to_le_bytes().to_vec()
        };
        f.extend_from_slice(body);
        f
    };
    for model in [
        &["--stack-size", "64K"][..],
        &["--stack-size", "64K", "--pool", "2"],
    ] {
        for protocol in ["binary", "resp", "json"] {
            let mut args = model.to_vec();
            args.extend(["--protocol", protocol]);
            let server = Server::start(thread_bin(), &args);
            let p = server.protocol;
            let mut c = Client::connect(server.addr, p);
            c.label = format!("{args:?}");
            let big = if p == Protocol::Json {
                500_000
            } else {
                1_000_000
            };
            c.echo(&content(p, big, 1));
            if p == Protocol::Binary {
                for command in [Op::Sleep { micros: 1000 }, Op::Spin { micros: 1000 }] {
                    let r = c.request(&Request {
                        id: Some(7),
                        command,
                        payload: b"slow",
                    });
                    assert_eq!((r.status, r.payload.as_slice()), (Status::Ok, &b"slow"[..]));
                }
            }
            // An error inside an intact frame: ERROR, and the connection stays.
            let (wrong, fatal) = match p {
                Protocol::Binary => (frame(&[0x09, 1, 0], true), vec![0xff, 0xff, 0xff, 0xff]),
                Protocol::Resp => (
                    b"*1\r\n$4\r\nNOPE\r\n".to_vec(),
                    b"*3000000000\r\n".to_vec(),
                ),
                Protocol::Json => {
                    let nested = format!(
                        r#"{{"in":"ping","params":{}{},"id":1}}"#,
                        "[".repeat(127),
                        "]".repeat(127)
                    );
                    c.send_raw(&frame(nested.as_bytes(), false));
                    let r = c.read_response();
                    assert_eq!(r.status, Status::Ok, "{r:?}");
                    (
                        frame(br#"{"in":"nope","id":2}"#, false),
                        frame(b"not json", false),
                    )
                }
            };
            c.send_raw(&wrong);
            assert_eq!(c.read_response().status, Status::Error);
            c.echo(b"still here");
            // A fatal one: ERROR, then the lingering close.
            c.send_raw(&fatal);
            assert_eq!(c.read_response().status, Status::Error);
            c.expect_eof();
            server.stop().assert_clean(&format!("{args:?}"));
        }
    }
}
