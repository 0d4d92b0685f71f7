//! The proof that loadgen corrects coordinated omission: freeze a server for one second
//! (SIGSTOP, then SIGCONT) in the middle of a run and look at the tail.
//!
//! In the open loop requests have places on a timetable, and latency runs from each one's
//! scheduled send time: every request scheduled during the freeze waited for it, so a quarter
//! of a four-second run shows latencies up to a second and the p99 is hundreds of
//! milliseconds. A client that measured from the actual send (what `latency_uncorrected_us`
//! reports, and what most load generators print) would show a p99 of a few milliseconds,
//! because it simply did not send while the server was frozen; the test fails if loadgen's
//! main figure looks like that. In the closed loop only the handful of requests in flight
//! during the freeze see it: the max is a second, the p99 stays small. That contrast is the
//! lesson (see STYLE.md, "Measure like HdrHistogram intends").
//!
//! Thresholds are generous on purpose — the machine may be a loaded two-core box running
//! debug builds — but each sits far from what a wrong measurement would produce.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::{Loadgen, Run, Server, SLACK};
use nix::sys::signal::Signal;
use serde_json::Value;

/// The freeze: it starts this long after loadgen is started (one second into the measured
/// window, after the 0.5 s warmup) and lasts [`FREEZE`].
const FREEZE_AT: Duration = Duration::from_millis(1500);
const FREEZE: Duration = Duration::from_secs(1);

/// Runs loadgen (`-c 10 -d 4s --warmup 0.5s` plus `extra`) against a fresh single-process
/// event-loop server and freezes the server for [`FREEZE`] during the run.
fn run_with_a_freeze(extra: &str) -> Run {
    let server = Server::start("server-eventloop", &[]);
    let cmd = format!(
        "--addr {} -c 10 -d 4s --warmup 0.5s --timeout 5s {extra}",
        server.addr()
    );
    let started = Instant::now();
    let lg = Loadgen::start(&cmd);
    thread::sleep(FREEZE_AT.saturating_sub(started.elapsed()));
    server.signal(Signal::SIGSTOP);
    let stopped = Instant::now();
    thread::sleep(FREEZE);
    server.signal(Signal::SIGCONT);
    eprintln!("server frozen for {:?}", stopped.elapsed());
    let run = lg.wait();
    run.assert_within(Duration::from_millis(4500) + SLACK);
    // A one-second freeze is well inside the 5 s timeout: nothing may fail.
    run.assert_no_errors();
    assert_eq!(run.get("ok"), &Value::Bool(true), "{}", run.output());
    // The freeze fell inside the measured window: some interval saw a second-long reply.
    let intervals = run.get("intervals").as_array().expect("intervals");
    assert!(
        intervals
            .iter()
            .any(|i| i["max_us"].as_u64().unwrap_or(0) >= 900_000),
        "no interval shows the freeze\n{}",
        run.output()
    );
    eprintln!("{}", run.stdout);
    run
}

#[test]
fn open_loop_shows_a_frozen_server_in_the_tail() {
    let run = run_with_a_freeze("--rate 2000");
    // An invalid verdict (exit 3: the client lagged on a loaded machine) does not change
    // what the latencies show; errors (exit 1) would.
    assert!(
        matches!(run.code, Some(0 | 3)),
        "exit {:?}\n{}",
        run.code,
        run.output()
    );
    let p99 = run.u("latency_us.p99");
    let max = run.u("latency_us.max");
    assert!(
        p99 >= 500_000,
        "p99 {p99} µs: the freeze must show in the tail\n{}",
        run.output()
    );
    assert!(max >= 900_000, "max {max} µs\n{}", run.output());
    let raw_p99 = run.u("latency_uncorrected_us.p99");
    assert!(
        raw_p99 < 100_000 && raw_p99 * 5 <= p99,
        "uncorrected p99 {raw_p99} µs should be far below the corrected {p99} µs\n{}",
        run.output()
    );
    assert_eq!(
        run.u("latency_uncorrected_us.count"),
        run.u("latency_us.count"),
        "{}",
        run.output()
    );
}

#[test]
fn closed_loop_hides_a_frozen_server_behind_its_max() {
    let run = run_with_a_freeze("");
    run.assert_code(0);
    let p99 = run.u("latency_us.p99");
    let max = run.u("latency_us.max");
    assert!(
        max >= 900_000,
        "max {max} µs: the requests in flight waited a second\n{}",
        run.output()
    );
    assert!(
        p99 < 100_000,
        "p99 {p99} µs: only a handful of requests saw the freeze\n{}",
        run.output()
    );
    assert!(
        run.get("latency_uncorrected_us").is_null(),
        "{}",
        run.output()
    );
}
