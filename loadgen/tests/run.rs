//! loadgen against real, correct servers: every protocol, pipelining, several threads, short
//! connections, the output files, `--server-pid`, `--source-ips` and the open-loop verdict.
//!
//! These are the runs a person makes, so their figures must add up exactly: `-n 2000` means
//! 2000 requests sent, 2000 replies verified and 2000 latencies recorded, no error of any
//! kind, and exit code 0. The files must be the formats HdrHistogram's own tools read, so the
//! interval log is parsed back with the hdrhistogram crate and its counts reconciled with the
//! JSON report. A load generator whose arithmetic is off by one request, or whose files its
//! plotters cannot read, misleads every experiment built on it.

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;

use common::{loadgen, FakeServer, Server, TempPath, SLACK};
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;
use serde_json::Value;

/// Runs `-n 2000 -c 4` (and the pipelined and two-thread variants) against `server` in every
/// protocol, and checks each run is clean and reports the parameters it was given.
fn every_protocol_against(server: &str) {
    for protocol in ["binary", "resp", "json"] {
        let s = Server::start(server, &["--protocol", protocol]);
        // (flags, connections, threads, pipeline)
        let variants = [
            ("-c 4", 4, 1, 1),
            ("-c 4 -p 16", 4, 1, 16),
            ("-t 2 -c 8", 8, 2, 1),
        ];
        for (flags, c, t, p) in variants {
            let run = loadgen(&format!(
                "--addr {} --protocol {protocol} -n 2000 --warmup 0 --timeout 5s {flags}",
                s.addr()
            ));
            eprintln!("{server} {protocol} {flags}: {:?}", run.elapsed);
            run.assert_clean(2000);
            assert_eq!(run.get("params.protocol"), protocol, "{}", run.output());
            assert_eq!(run.get("params.mode"), "closed", "{}", run.output());
            assert_eq!(run.get("params.requests"), 2000, "{}", run.output());
            assert_eq!(run.u("params.connections"), c, "{}", run.output());
            assert_eq!(run.u("params.threads"), t, "{}", run.output());
            assert_eq!(run.u("params.pipeline"), p, "{}", run.output());
            // Persistent connections: each opened once, in the measured window (no warmup).
            assert_eq!(run.u("connect_us.count"), c, "{}", run.output());
            assert!(
                run.get("latency_uncorrected_us").is_null(),
                "{}",
                run.output()
            );
            assert!(run.get("open_loop").is_null(), "{}", run.output());
            assert_eq!(run.get("valid"), &Value::Bool(true), "{}", run.output());
            let intervals = run.get("intervals").as_array().expect("intervals");
            let ok: u64 = intervals.iter().filter_map(|i| i["ok"].as_u64()).sum();
            assert_eq!(
                ok,
                2000,
                "the intervals' ok add up to the total\n{}",
                run.output()
            );
        }
    }
}

#[test]
fn every_protocol_against_server_thread() {
    every_protocol_against("server-thread");
}

#[test]
fn every_protocol_against_server_eventloop() {
    every_protocol_against("server-eventloop");
}

#[test]
fn resp_bare_ping() {
    let s = Server::start("server-eventloop", &["--protocol", "resp"]);
    let run = loadgen(&format!(
        "--addr {} --protocol resp --op ping -n 2000 -c 4 --warmup 0 --timeout 5s",
        s.addr()
    ));
    run.assert_clean(2000);
    assert_eq!(run.get("params.op"), "ping", "{}", run.output());
}

/// SLEEP 2 ms on a thread-per-connection server: every reply takes at least 2 ms, so a
/// median below that means latency is not measured from send to reply.
#[test]
fn binary_sleep_shows_in_latency() {
    let s = Server::start("server-thread", &[]);
    let run = loadgen(&format!(
        "--addr {} --op sleep:2000 -n 50 -c 1 --warmup 0 --timeout 5s",
        s.addr()
    ));
    run.assert_clean(50);
    assert!(run.u("latency_us.p50") >= 2000, "{}", run.output());
    assert!(run.u("latency_us.min") >= 2000, "{}", run.output());
}

/// One request per connection against the fork-per-connection server: every request costs a
/// connect (and a fork), and each connect is timed.
#[test]
fn short_connections_are_all_timed() {
    let s = Server::start("server-fork", &[]);
    let run = loadgen(&format!(
        "--addr {} --requests-per-conn 1 -n 300 -c 4 --warmup 0 --timeout 5s",
        s.addr()
    ));
    run.assert_clean(300);
    // Each request went out on a connection of its own. A slot may also have reconnected just
    // before the budget ran out on another slot, and then had nothing to send.
    let connects = run.u("connect_us.count");
    assert!(
        (300..=304).contains(&connects),
        "connect_us.count {connects}, expected 300 (to 304)\n{}",
        run.output()
    );
    assert_eq!(run.get("params.requests_per_conn"), 1, "{}", run.output());
    assert!(
        run.stdout.contains("short connections of 1 request(s)"),
        "{}",
        run.output()
    );
}

/// `--hgrm` and `--hlog` in HdrHistogram's formats, reconciled with the JSON report.
#[test]
fn hgrm_and_hlog_files() {
    let s = Server::start("server-thread", &[]);
    let (hgrm, hlog) = (TempPath::new(".hgrm"), TempPath::new(".hlog"));
    // SLEEP keeps the run cheap (about 1000 replies a second) while it spans two intervals.
    let run = loadgen(&format!(
        "--addr {} --op sleep:1000 -c 2 -d 1.5s --warmup 0 --timeout 5s --hgrm {} --hlog {}",
        s.addr(),
        hgrm.arg(),
        hlog.arg()
    ));
    run.assert_code(0);
    run.assert_no_errors();
    let replies = run.u("counts.ok");
    assert!(replies > 100, "{}", run.output());
    assert_eq!(run.u("latency_us.count"), replies, "{}", run.output());

    // --- the percentile distribution ---
    let text = hgrm.read();
    let header = text.lines().next().expect("a header line");
    for column in ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"] {
        assert!(
            header.contains(column),
            "hgrm header lacks {column}: {header:?}"
        );
    }
    let rows: Vec<Vec<f64>> = text
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            l.split_whitespace()
                .map(|f| {
                    f.parse::<f64>()
                        .unwrap_or_else(|_| panic!("hgrm row {l:?}"))
                })
                .collect()
        })
        .collect();
    assert!(rows.len() > 10, "hgrm has {} data rows\n{text}", rows.len());
    for pair in rows.windows(2) {
        assert!(pair[0][0] <= pair[1][0], "hgrm values decrease: {pair:?}");
        assert!(
            pair[0][1] <= pair[1][1],
            "hgrm percentiles decrease: {pair:?}"
        );
        assert!(pair[0][2] <= pair[1][2], "hgrm counts decrease: {pair:?}");
    }
    let last = rows.last().expect("a last row");
    assert_eq!(last[1], 1.0, "the last row is the 100th percentile\n{text}");
    assert_eq!(
        last[2], replies as f64,
        "the last row counts every reply\n{text}"
    );
    let max_ms = run.u("latency_us.max") as f64 / 1000.0;
    assert!(
        (last[0] - max_ms).abs() <= max_ms * 0.002 + 0.002,
        "hgrm max {} ms, report max {max_ms} ms",
        last[0]
    );
    for footer in ["#[Mean", "#[Max", "#[Buckets"] {
        assert!(
            text.lines().any(|l| l.starts_with(footer)),
            "hgrm lacks {footer}\n{text}"
        );
    }
    let total = format!("Total count    = {replies:12}]");
    assert!(text.contains(&total), "hgrm footer lacks {total:?}\n{text}");

    // --- the interval log ---
    let log = hlog.read();
    assert!(log.lines().any(|l| l.starts_with("#[StartTime: ")), "{log}");
    assert!(log.lines().any(|l| l.starts_with("#[BaseTime: ")), "{log}");
    let interval_lines: Vec<&str> = log
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    let intervals = run.get("intervals").as_array().expect("intervals");
    assert_eq!(
        interval_lines.len(),
        intervals.len(),
        "one log line per interval of the report\n{log}"
    );
    assert!(
        intervals.len() >= 2,
        "a 1.5 s run spans two intervals\n{}",
        run.output()
    );
    for line in &interval_lines {
        let fields: Vec<&str> = line.split(',').collect();
        assert_eq!(fields.len(), 4, "interval line {line:?}");
        for f in &fields[..3] {
            f.parse::<f64>()
                .unwrap_or_else(|_| panic!("interval line {line:?}"));
        }
    }
    let (mut sum, mut seen) = (0, 0);
    let (mut start_time, mut base_time) = (false, false);
    for entry in IntervalLogIterator::new(log.as_bytes()) {
        match entry.unwrap_or_else(|e| panic!("the interval log does not parse: {e:?}\n{log}")) {
            LogEntry::StartTime(_) => start_time = true,
            LogEntry::BaseTime(_) => base_time = true,
            LogEntry::Interval(iv) => {
                let bytes = common::base64_decode(iv.encoded_histogram());
                let h: Histogram<u64> = Deserializer::new()
                    .deserialize(&mut bytes.as_slice())
                    .unwrap_or_else(|e| panic!("interval {seen}: bad histogram: {e:?}"));
                assert_eq!(iv.start_timestamp(), Duration::from_secs(seen), "{log}");
                let reported = &intervals[seen as usize];
                // Every interval is a second long except the last, which ends with the run.
                let length = reported["length_s"].as_f64().expect("length_s");
                assert!(
                    (iv.duration().as_secs_f64() - length).abs() < 0.001,
                    "interval {seen}: log says {:?}, JSON {length}\n{log}",
                    iv.duration()
                );
                if (seen as usize) < intervals.len() - 1 {
                    assert_eq!(iv.duration(), Duration::from_secs(1), "{log}");
                }
                assert_eq!(
                    Some(h.len()),
                    reported["ok"].as_u64(),
                    "interval {seen}: {reported}"
                );
                if !h.is_empty() {
                    assert_eq!(
                        Some(h.max()),
                        reported["max_us"].as_u64(),
                        "interval {seen}"
                    );
                    let max_ms = h.max() as f64 / 1000.0;
                    assert!(
                        (iv.max() - max_ms).abs() < 0.002,
                        "interval {seen}: {}",
                        iv.max()
                    );
                }
                sum += h.len();
                seen += 1;
            }
        }
    }
    assert!(
        start_time && base_time,
        "the iterator saw no StartTime/BaseTime\n{log}"
    );
    assert_eq!(seen as usize, interval_lines.len(), "{log}");
    assert_eq!(
        sum, replies,
        "the intervals' histograms hold every reply\n{log}"
    );
}

/// `--server-pid` on a thread-per-connection server: one process, a thread per connection
/// plus the acceptor at the peak, measurable CPU per request, and memory.
#[test]
fn server_pid_reports_a_threaded_servers_cost() {
    let s = Server::start("server-thread", &[]);
    let pid = s.pid();
    let run = loadgen(&format!(
        "--addr {} -c 2 -d 1s --warmup 0 --timeout 5s --server-pid {pid}",
        s.addr()
    ));
    run.assert_code(0);
    assert!(
        run.get("server").is_object(),
        "no server object\n{}",
        run.output()
    );
    assert_eq!(run.u("server.pid"), pid as u64, "{}", run.output());
    assert!(run.f("server.cpu_us_per_request") > 0.0, "{}", run.output());
    // The closing sample is taken at the end of the measured window, before loadgen closes
    // its connections, so the connection threads are still there: the acceptor plus one per
    // connection. (Sampling after the close would see only the acceptor.)
    assert!(
        run.u("server.threads_peak") >= 3,
        "acceptor + 2 connections\n{}",
        run.output()
    );
    assert!(
        run.u("server.threads") >= 3,
        "acceptor + 2 connections at the end of the window\n{}",
        run.output()
    );
    assert!(run.u("server.ctx_voluntary") > 0, "{}", run.output());
    assert!(
        run.u("server.threads_peak") >= run.u("server.threads"),
        "{}",
        run.output()
    );
    assert_eq!(run.u("server.processes"), 1, "{}", run.output());
    assert!(run.u("server.rss_kib") > 0, "{}", run.output());
    assert!(
        run.u("server.rss_kib_peak") >= run.u("server.rss_kib"),
        "{}",
        run.output()
    );
    assert!(
        run.stdout.contains(&format!("server      pid {pid}")),
        "{}",
        run.output()
    );
}

/// `--server-pid` on the pre-forked server counts the parent and its three workers.
#[test]
fn server_pid_counts_prefork_workers() {
    let s = Server::start("server-prefork", &["--workers", "3"]);
    let run = loadgen(&format!(
        "--addr {} -c 3 -d 1s --warmup 0 --timeout 5s --server-pid {}",
        s.addr(),
        s.pid()
    ));
    run.assert_code(0);
    assert!(
        run.get("server").is_object(),
        "no server object\n{}",
        run.output()
    );
    assert!(
        run.u("server.processes") >= 4,
        "parent + 3 workers\n{}",
        run.output()
    );
    assert!(run.u("server.processes_peak") >= 4, "{}", run.output());
    assert!(run.f("server.cpu_us_per_request") > 0.0, "{}", run.output());
}

/// A pid that no longer exists (a child of this test, already reaped) is refused before any
/// load is sent: no summary, no report, no connection to the server.
#[test]
fn a_bad_server_pid_runs_nothing() {
    let mut child = Command::new("true").spawn().expect("run true");
    let pid = child.id();
    child.wait().expect("reap true");
    let fake = FakeServer::silent();
    let run = loadgen(&format!(
        "--addr {} -n 10 --warmup 0 --timeout 1s --server-pid {pid}",
        fake.addr()
    ));
    assert!(
        matches!(run.code, Some(1 | 2)),
        "exit code {:?}, expected 1 or 2\n{}",
        run.code,
        run.output()
    );
    assert!(
        run.stderr.contains("--server-pid"),
        "stderr should name --server-pid\n{}",
        run.output()
    );
    run.assert_nothing_started(&fake);
}

/// `--source-ips` spreads connections over the given loopback addresses, as the server sees
/// them (a fake echo server records each connection's peer address).
#[test]
fn source_ips_are_used_round_robin() {
    let fake = FakeServer::echo();
    let run = loadgen(&format!(
        "--addr {} --source-ips 127.0.0.2-127.0.0.4 --requests-per-conn 1 -n 30 -c 3 \
         --warmup 0 --timeout 5s",
        fake.addr()
    ));
    run.assert_clean(30);
    let peers = fake.peers();
    assert!(
        peers.len() >= 30,
        "{} connections for 30 one-request connections",
        peers.len()
    );
    let ips: BTreeSet<IpAddr> = peers.iter().map(|p| p.ip()).collect();
    let expected: BTreeSet<IpAddr> = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
        .iter()
        .map(|s| s.parse().expect("an ip"))
        .collect();
    assert_eq!(
        ips, expected,
        "peer addresses seen by the server: {peers:?}"
    );
    assert_eq!(
        run.get("params.source_ips"),
        &serde_json::json!(["127.0.0.2", "127.0.0.3", "127.0.0.4"]),
        "{}",
        run.output()
    );
}

/// An open loop the server cannot keep up with (one connection, 1 ms per request, 200 000
/// requests a second asked for) is not a measurement: `valid` is false with a reason, and the
/// exit code is 3 when there were no errors (1 when there were: errors win).
#[test]
fn an_unreachable_rate_is_an_invalid_measurement() {
    let s = Server::start("server-thread", &[]);
    let run = loadgen(&format!(
        "--addr {} --op sleep:1000 -c 1 --rate 200000 -d 1s --warmup 0 --timeout 5s",
        s.addr()
    ));
    run.assert_within(Duration::from_secs(1) + SLACK);
    assert_eq!(run.get("valid"), &Value::Bool(false), "{}", run.output());
    let reasons = run
        .get("invalid_reasons")
        .as_array()
        .expect("invalid_reasons");
    assert!(
        reasons
            .iter()
            .any(|r| r.as_str().is_some_and(|r| r.contains("req/s"))),
        "a reason should say the rate was not reached\n{}",
        run.output()
    );
    assert_eq!(run.get("params.mode"), "open", "{}", run.output());
    assert!(
        run.f("open_loop.achieved_rps") < 0.99 * 200_000.0,
        "{}",
        run.output()
    );
    assert!(run.u("open_loop.unsent") > 0, "{}", run.output());
    assert!(run.u("counts.ok") > 0, "{}", run.output());
    assert!(run.stdout.contains("INVALID"), "{}", run.output());
    // The documented rule: errors (of any kind, or failed or indeterminate requests) make it exit 1;
    // otherwise an invalid measurement is exit 3. This server makes no errors, so: 3.
    let errors: u64 = run
        .get("errors")
        .as_object()
        .expect("errors")
        .values()
        .filter_map(Value::as_u64)
        .sum();
    let clean = errors == 0 && run.u("counts.indeterminate") == 0 && run.u("counts.failed") == 0;
    assert_eq!(run.get("ok"), &Value::Bool(clean), "{}", run.output());
    run.assert_code(if clean { 3 } else { 1 });
    assert!(
        clean,
        "a slow but correct server should cause no errors\n{}",
        run.output()
    );
}

/// `--arrivals poisson --seed 7` against a server that keeps up (4 connections, 2000 req/s in
/// all, 500 per connection): the report names the process and the seed, asks for a gap of
/// 2000 µs and a coefficient of variation of 1 per connection, and the gaps the sends kept
/// have about that mean and spread (a fixed timetable's spread is near 0, so a run that sent
/// on a metronome cannot pass). The tolerances are wide because the gaps measured are the
/// sends', which the machine's scheduling jitters; the schedule's own statistics are checked
/// exactly in `arrivals.rs`. A run loadgen itself marks invalid for falling behind its
/// schedule (exit 3, on a loaded machine) sent in catch-up bursts, so its gaps say nothing
/// about the timetable and are not checked.
#[test]
fn poisson_arrivals_keep_their_mean_and_spread() {
    let s = Server::start("server-eventloop", &[]);
    for (process, cv, seed) in [("poisson", 1.0, " --seed 7"), ("fixed", 0.0, "")] {
        let run = loadgen(&format!(
            "--addr {} -c 4 --rate 2000 -d 2s --warmup 200ms --arrivals {process}{seed}",
            s.addr()
        ));
        assert_eq!(run.get("params.arrivals"), process, "{}", run.output());
        assert_eq!(
            run.get("open_loop.arrivals.seed").as_u64(),
            (process == "poisson").then_some(7),
            "{}",
            run.output()
        );
        let a = |k: &str| run.f(&format!("open_loop.arrivals.{k}"));
        assert_eq!(a("gap_us"), 2000.0, "{}", run.output());
        assert_eq!(a("cv"), cv, "{}", run.output());
        if run.code == Some(3) {
            assert!(
                run.stdout.contains("fell behind its own schedule"),
                "{}",
                run.output()
            );
            continue;
        }
        run.assert_code(0);
        assert!(run.u("open_loop.arrivals.gaps") > 2000, "{}", run.output());
        assert!(
            (a("measured_gap_us") / 2000.0 - 1.0).abs() < 0.1,
            "{process}: mean gap {}\n{}",
            a("measured_gap_us"),
            run.output()
        );
        assert!(
            (a("measured_cv") - cv).abs() < 0.3,
            "{process}: coefficient of variation {}\n{}",
            a("measured_cv"),
            run.output()
        );
    }
}

/// `--steps`: each step is offered its own rate (the requests scheduled in it, sent or not,
/// are its rate times its length, to within one per connection: the fixed timetable is
/// exact), each second says its target and what was sent in it, the steps' rows add up to
/// the run's counts, and the interval log holds one histogram per step, tagged "step", whose
/// counts are the rows' replies. Rates low enough for a debug-built loadgen on a shared
/// machine; a run that fell behind anyway (exit 3) still owes the timetable's counts.
#[test]
fn steps_offer_each_rate_in_turn() {
    let s = Server::start("server-eventloop", &[]);
    let hlog = TempPath::new(".hlog");
    let run = loadgen(&format!(
        "--addr {} -c 4 --steps 500:1s,2000:1s,1000:1s --warmup 200ms --hlog {}",
        s.addr(),
        hlog.arg()
    ));
    assert!(matches!(run.code, Some(0 | 3)), "{}", run.output());
    assert_eq!(run.f("params.duration_s"), 3.0, "as long as the steps");
    assert!(run.get("params.rate").is_null());
    assert_eq!(run.get("params.schedule").as_array().map(Vec::len), Some(3));
    let steps = run
        .get("open_loop.steps")
        .as_array()
        .expect("a row per step");
    assert_eq!(steps.len(), 3, "{}", run.output());
    let (mut sent, mut ok) = (0, 0);
    for (st, target) in steps.iter().zip([500.0, 2000.0, 1000.0]) {
        let f = |k: &str| st[k].as_f64().unwrap_or(f64::NAN);
        let u = |k: &str| st[k].as_u64().unwrap_or(u64::MAX);
        assert!((f("target_rps") - target).abs() < 1e-6, "{st}");
        let offered = u("sent") + u("unsent");
        assert!(
            offered.abs_diff(target as u64) <= 4,
            "{target} a second for 1 s: {offered} scheduled\n{}",
            run.output()
        );
        if run.code == Some(0) {
            assert_eq!(u("unsent"), 0, "{st}");
            assert_eq!(st["achieved"], true, "{st}");
            assert_eq!(u("ok"), u("sent"), "{st}");
        } else if st["achieved"] == false {
            // Exit 3 for a step that missed its timetable: it left some of it unsent.
            assert!(u("unsent") > 0, "a step not achieved sent everything: {st}");
        }
        sent += u("sent");
        ok += u("ok");
    }
    assert_eq!(sent, run.u("counts.sent"));
    assert_eq!(ok, run.u("counts.ok"));
    let intervals = run.get("intervals").as_array().expect("intervals");
    assert!(intervals.len() >= 3, "a second per step\n{}", run.output());
    for (iv, target) in intervals.iter().zip([500.0, 2000.0, 1000.0]) {
        let got = iv["target_rps"].as_f64().unwrap_or(0.0);
        assert!((got - target).abs() < 1e-6, "{iv}");
        if run.code == Some(0) {
            let sent = iv["sent"].as_u64().unwrap_or(0) as f64;
            assert!(
                (sent / target - 1.0).abs() < 0.05,
                "second {}: {sent} sent of {target}\n{}",
                iv["t_s"],
                run.output()
            );
        }
    }

    let log = hlog.read();
    let mut tagged = Vec::new();
    for entry in IntervalLogIterator::new(log.as_bytes()) {
        if let Ok(LogEntry::Interval(iv)) = entry {
            if iv.tag().map(|t| t.as_str()) == Some("step") {
                let bytes = common::base64_decode(iv.encoded_histogram());
                let h: Histogram<u64> = Deserializer::new()
                    .deserialize(&mut bytes.as_slice())
                    .expect("a step's histogram");
                tagged.push((iv.start_timestamp(), iv.duration(), h.len()));
            }
        }
    }
    let expected: Vec<(Duration, Duration, u64)> = steps
        .iter()
        .enumerate()
        .map(|(i, st)| {
            (
                Duration::from_secs(i as u64),
                Duration::from_secs(1),
                st["ok"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(tagged, expected, "{log}");
}

/// `--rate A..B --ramp D`: each second is offered the ramp's mean over it (fixed: exactly,
/// to one request per connection; Poisson: within five standard deviations of a Poisson
/// count), and the ramp is one row, followed by the hold at B when --duration is longer.
#[test]
fn a_ramp_offers_its_mean_each_second() {
    let s = Server::start("server-eventloop", &[]);
    for (arrivals, slack) in [("fixed", 4.0), ("poisson", 5.0)] {
        let run = loadgen(&format!(
            "--addr {} -c 4 --rate 500..2500 --ramp 2s -d 3s --warmup 200ms --arrivals {arrivals}",
            s.addr()
        ));
        assert!(matches!(run.code, Some(0 | 3)), "{}", run.output());
        let steps = run.get("open_loop.steps").as_array().expect("rows");
        assert_eq!(steps.len(), 2, "the ramp, then the hold\n{}", run.output());
        let offered = |i: usize| {
            steps[i]["sent"].as_u64().unwrap_or(0) + steps[i]["unsent"].as_u64().unwrap_or(0)
        };
        // The ramp: (500 + 2500) / 2 · 2 s; the hold: 2500 for 1 s.
        for (i, expected) in [(0, 3000.0f64), (1, 2500.0)] {
            let tolerance = if arrivals == "fixed" {
                slack
            } else {
                slack * expected.sqrt()
            };
            assert!(
                (offered(i) as f64 - expected).abs() <= tolerance,
                "{arrivals}, row {i}: {} offered, {expected} expected\n{}",
                offered(i),
                run.output()
            );
        }
        assert_eq!(steps[0]["target_from_rps"].as_f64(), Some(500.0));
        assert_eq!(steps[0]["target_to_rps"].as_f64(), Some(2500.0));
        let intervals = run.get("intervals").as_array().expect("intervals");
        assert!(intervals.len() >= 3, "three seconds\n{}", run.output());
        for (iv, target) in intervals.iter().zip([1000.0, 2000.0, 2500.0]) {
            let got = iv["target_rps"].as_f64().unwrap_or(0.0);
            assert!((got - target).abs() < 1e-6, "{iv}");
        }
    }
}

/// Bytes on the wire, counted two ways that must agree: as each request and reply is
/// encoded or verified (per request) and as the sockets took and gave them (in total). With
/// no warmup, one connection and a count, nothing else crosses the sockets, so the two are
/// equal in each protocol; and for binary echo of 64 B the size per request is what the
/// protocol crate's own encoder makes of one (ids below 128 all have the same length).
#[test]
fn bytes_per_request_are_what_the_codec_encodes() {
    use echolab_protocol::{Command, Protocol, Reply, Request};
    let s = Server::start("server-eventloop", &[]);
    // JSON has no first byte of its own that `--protocol auto` could tell apart.
    let json = Server::start("server-eventloop", &["--protocol", "json"]);
    let mut per_request = Vec::new();
    for (protocol, server) in [("binary", &s), ("resp", &s), ("json", &json)] {
        let run = loadgen(&format!(
            "--addr {} --protocol {protocol} -c 1 -n 100 --warmup 0",
            server.addr()
        ));
        run.assert_code(0);
        assert_eq!(run.u("counts.ok"), 100);
        assert_eq!(
            run.u("counts.request_bytes"),
            run.u("counts.bytes_written"),
            "{protocol}: encoded against written\n{}",
            run.output()
        );
        assert_eq!(
            run.u("counts.reply_bytes"),
            run.u("counts.bytes_read"),
            "{protocol}: verified against read\n{}",
            run.output()
        );
        let sent = run.f("bytes_per_request.sent");
        assert_eq!(sent, run.u("counts.request_bytes") as f64 / 100.0);
        per_request.push(sent);
        assert!(run.stdout.contains("per request sent"), "{}", run.output());
    }
    // The binary request and reply the protocol crate encodes for one echo of 64 B.
    let codec = Protocol::Binary.codec(echolab_protocol::DEFAULT_MAX_FRAME);
    let payload = [b'a'; 64];
    let request = Request {
        id: Some(99),
        command: Command::Echo,
        payload: &payload,
    };
    let mut out = Vec::new();
    codec
        .encode_request(&request, &mut out)
        .expect("an echo encodes");
    assert_eq!(per_request[0], out.len() as f64, "binary bytes per request");
    let mut reply = Vec::new();
    codec.encode_reply(&request, Reply::Echo, &mut reply);
    let run = loadgen(&format!("--addr {} -c 1 -n 100 --warmup 0", s.addr()));
    assert_eq!(run.f("bytes_per_request.received"), reply.len() as f64);
    // JSON names every field in every message; binary names none.
    assert!(
        per_request[2] > per_request[0],
        "json {} against binary {}",
        per_request[2],
        per_request[0]
    );
}
