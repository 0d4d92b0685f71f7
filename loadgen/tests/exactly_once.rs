//! Issue 13 end to end: the real servers, the real `loadgen proxy` cutting connections, and
//! `loadgen run --op incr` reading the counters back, for each of the nine server variants,
//! each fault phase and each retry policy.
//!
//! What each combination must show is the book's retry dilemma, measured:
//!
//! | cut on the... | never, safe | always, dedup off | always, dedup on |
//! |---|---|---|---|
//! | request path (the server never ran it) | lost | exactly once | exactly once |
//! | response path (it ran, the reply was lost) | indeterminate, nothing lost | duplicated | exactly once |
//!
//! `safe` behaves as `never` here because a cut request was written whole to the proxy: the
//! client cannot know it never reached the server. The proxy's own counters say how many
//! messages it cut, so a run whose seed cut nothing cannot pass for a proof.

mod common;

use common::{n, Proxy, Server};
use serde_json::Value;

/// The nine variants: (binary, flags, name for messages).
const MODELS: [(&str, &[&str], &str); 9] = [
    ("server-thread", &[], "thread"),
    ("server-thread", &["--pool", "4"], "thread --pool 4"),
    ("server-fork", &[], "fork"),
    (
        "server-prefork",
        &["--workers", "3", "--accept", "shared"],
        "prefork shared",
    ),
    (
        "server-prefork",
        &["--workers", "3", "--accept", "locked"],
        "prefork locked",
    ),
    (
        "server-prefork",
        &["--workers", "3", "--accept", "reuseport"],
        "prefork reuseport",
    ),
    (
        "server-eventloop",
        &["--backend", "select"],
        "eventloop select",
    ),
    ("server-eventloop", &["--backend", "poll"], "eventloop poll"),
    (
        "server-eventloop",
        &["--backend", "epoll"],
        "eventloop epoll",
    ),
];

/// Requests per run and the proxy's cut probability: about 12 cuts a run, and with the fixed
/// seed the same ones each time the traffic is the same.
const REQUESTS: u64 = 250;
const RATE: &str = "0.05";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Request,
    Response,
}

/// What one run through the proxy produced.
struct Outcome {
    report: Value,
    cuts: u64,
    what: String,
}

impl Outcome {
    fn u(&self, path: &str) -> u64 {
        let mut v = &self.report;
        for part in path.split('.') {
            v = &v[part];
        }
        v.as_u64()
            .unwrap_or_else(|| panic!("{}: {path} is {v}\n{}", self.what, self.report))
    }

    fn exactly_once(&self) -> bool {
        self.report["counters"]["exactly_once"] == Value::Bool(true)
    }
}

/// A fresh server, the proxy in front of it cutting `phase`, and one incr run through it.
fn run(model: usize, dedup: &str, phase: Phase, retry: &str, seed: u64) -> Outcome {
    let (bin, flags, name) = MODELS[model];
    let mut args = flags.to_vec();
    args.extend(["--dedup", dedup]);
    let server = Server::start(bin, &args);
    let cut = match phase {
        Phase::Request => "--cut-request",
        Phase::Response => "--cut-response",
    };
    let proxy = Proxy::start(&server.addr(), &format!("{cut} {RATE} --seed {seed}"));
    let lg = common::loadgen(&format!(
        "--addr {} --op incr --keys 4 -c 2 --requests {REQUESTS} --warmup 0s --timeout 5s \
         --retry {retry} --max-attempts 20",
        proxy.addr()
    ));
    let (stats, _) = proxy.stop();
    let what = format!("{name}, dedup {dedup}, {phase:?} cuts, retry {retry}");
    let report = lg
        .json
        .clone()
        .unwrap_or_else(|| panic!("{what}: no report\n{}", lg.output()));
    assert!(
        report["counters"]["error"].is_null(),
        "{what}: the counters were not read\n{}",
        lg.output()
    );
    let cuts = n(&stats, "cut_request") + n(&stats, "cut_response");
    assert!(
        cuts > 0,
        "{what}: the proxy cut nothing, so this run proves nothing"
    );
    Outcome { report, cuts, what }
}

/// One model through every combination the table at the top names.
fn check_model(model: usize) {
    let seed = 1300 + model as u64;
    for retry in ["never", "safe"] {
        // Request path: the cut requests never ran and nobody resent them.
        let o = run(model, "on", Phase::Request, retry, seed);
        assert!(!o.exactly_once(), "{}: exactly once?\n{}", o.what, o.report);
        assert!(
            o.u("counters.lost.min") > 0,
            "{}: nothing lost ({} cuts)\n{}",
            o.what,
            o.cuts,
            o.report
        );
        assert_eq!(
            o.u("counters.duplicated.max"),
            0,
            "{}\n{}",
            o.what,
            o.report
        );
        assert_eq!(
            o.u("counts.retries"),
            0,
            "{}: {retry} resent a written request",
            o.what
        );

        // Response path: the cut requests ran; the client cannot say so, but nothing is lost.
        let o = run(model, "on", Phase::Response, retry, seed);
        assert!(!o.exactly_once(), "{}: exactly once?\n{}", o.what, o.report);
        assert!(o.u("counts.indeterminate") > 0, "{}\n{}", o.what, o.report);
        assert_eq!(o.u("counters.lost.max"), 0, "{}\n{}", o.what, o.report);
        assert_eq!(
            o.u("counters.duplicated.max"),
            0,
            "{}\n{}",
            o.what,
            o.report
        );
    }
    // Resending everything without a table: the response-path cuts ran twice.
    let o = run(model, "off", Phase::Response, "always", seed);
    assert!(!o.exactly_once(), "{}: exactly once?\n{}", o.what, o.report);
    assert!(
        o.u("counters.duplicated.min") > 0,
        "{}: no duplicate ({} cuts)\n{}",
        o.what,
        o.cuts,
        o.report
    );
    // ... and with the table, both phases come out exactly once.
    for phase in [Phase::Request, Phase::Response] {
        let o = run(model, "on", phase, "always", seed);
        assert!(
            o.exactly_once(),
            "{}: not exactly once ({} cuts)\n{}",
            o.what,
            o.cuts,
            o.report
        );
        assert_eq!(o.u("counts.indeterminate"), 0, "{}", o.what);
        // Every request sent was acknowledged and ran once. (A connection cut before it
        // carried a request, during its HELLO, is charged to the budget as `abandoned`.)
        assert_eq!(
            o.u("counts.ok"),
            o.u("counts.sent"),
            "{}\n{}",
            o.what,
            o.report
        );
        assert_eq!(o.u("counters.value_sum"), o.u("counts.ok"), "{}", o.what);
        assert_eq!(
            o.u("counts.sent") + o.u("counts.abandoned"),
            REQUESTS,
            "{}",
            o.what
        );
        assert!(o.u("counts.retries") > 0, "{}: nothing was resent", o.what);
    }
}

macro_rules! each_model {
    ($($test:ident = $i:expr;)*) => {$(
        #[test]
        fn $test() {
            check_model($i);
        }
    )*};
}

each_model! {
    thread = 0;
    thread_pool = 1;
    fork = 2;
    prefork_shared = 3;
    prefork_locked = 4;
    prefork_reuseport = 5;
    eventloop_select = 6;
    eventloop_poll = 7;
    eventloop_epoll = 8;
}
