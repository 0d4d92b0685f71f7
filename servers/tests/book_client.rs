//! The book's own client, unchanged in its framing, against every blocking model's JSON mode.
//!
//! `scripts/book_client.py` frames requests the way the book's Python client does
//! (`struct.pack("I")`, native byte order) and calls `ping` and `pi`. If echolab's JSON mode
//! ever drifted from the book's wire format (say, a big-endian length), this is the test that
//! says so in the book's own terms. Skips, with a message, where `python3` is not installed
//! (and fails there under `ECHOLAB_NO_SKIP=1`, as in CI).

mod common;

use std::time::Duration;

use common::{fork_bin, prefork_bin, run_tool, skip, thread_bin, Server};

fn book_client_against(bin: &str, extra: &[&str]) {
    let mut args = vec!["--protocol", "json"];
    args.extend_from_slice(extra);
    let server = Server::start(bin, &args);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/book_client.py");
    let port = server.addr.port().to_string();
    let Some((status, out)) = run_tool(
        "python3",
        &[script, "--port", &port, "--count", "3"],
        Duration::from_secs(30),
    ) else {
        skip("book_client", "python3 is not installed");
        return;
    };
    assert!(
        status.success(),
        "book_client.py failed against {bin}:\n{out}"
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "pong ireader 0",
            "pong ireader 1",
            "pong ireader 2",
            "pi_r 3.141274"
        ],
        "{bin}"
    );
    server.stop().assert_clean(bin);
}

#[test]
fn book_client_thread() {
    book_client_against(thread_bin(), &[]);
}

#[test]
fn book_client_fork() {
    book_client_against(fork_bin(), &[]);
}

#[test]
fn book_client_prefork() {
    book_client_against(prefork_bin(), &["--workers", "2"]);
}
