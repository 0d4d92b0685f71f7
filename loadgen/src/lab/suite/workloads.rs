//! The suite's workloads: the matrix of one repetition, and one run of one workload against
//! a running server (with the idle connections the idle workload holds open beside it); for
//! the sweep workload, the plan `loadgen sweep` runs against one model's server.
//!
//! Apart from the loop over models and repetitions so that what a workload *is* (its
//! connections, its request, what a bounded model is excused) reads in one place, and the
//! loop only says in which order they run.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use echolab_protocol::{Command as Op, Decoded, Protocol, Request};

use super::report::Workload;
use crate::config::{self, Arrivals, Engine, Outputs, Progress, RunConfig};
use crate::lab::launch::{Model, Server};
use crate::lab::sweep::SweepPlan;
use crate::run;

/// The matrix of one repetition.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    /// loadgen's engine, for every run.
    pub(super) engine: Engine,
    /// Count system calls in every run.
    pub(super) count_syscalls: bool,
    pub(super) duration: Duration,
    pub(super) warmup: Duration,
    pub(super) connections: Vec<u32>,
    pub(super) idle: Vec<u32>,
    pub(super) workloads: Vec<Workload>,
    /// The sweep workload, when asked for: it runs after a model's other workloads, against
    /// the same server, and is no cell (its result is a curve, not one run's figures).
    pub(super) sweep: Option<SweepSpec>,
}

/// What the sweep workload offers every model.
#[derive(Debug, Clone)]
pub(super) struct SweepSpec {
    /// p99 objective.
    pub(super) slo: Duration,
    /// Offered rates as fractions of the model's capacity, lowest first.
    pub(super) fractions: Vec<f64>,
}

/// The sweep's connections: few enough that every model (a pool or pre-forked workers of the
/// default 32 included) serves them all at once.
pub(super) const SWEEP_CONNECTIONS: u32 = 16;
/// Requests in flight per connection in the sweep: one. Pipelined 4 deep, the closed loop
/// batches its way to 600 000-900 000 echoes a second on the reference machine, rates one
/// loadgen thread cannot pace an open loop at (about 200 000), so every point above a
/// fifth of such a capacity would be loadgen's limit, not the server's knee.
pub(super) const SWEEP_PIPELINE: u32 = 1;
/// A sweep's curve stops climbing past this many times the SLO (as `loadgen sweep`'s
/// default): the rates above would only queue longer.
pub(super) const SWEEP_RUNAWAY: f64 = 10.0;

/// Connection slots of the short and sleep workloads.
const SLOTS: u32 = 16;

impl Plan {
    /// Every (workload, x) of one model, in run order.
    pub(super) fn runs(&self) -> Vec<(Workload, u32)> {
        let mut out = Vec::new();
        for &w in &self.workloads {
            match w {
                Workload::Echo => out.extend(self.connections.iter().map(|&c| (w, c))),
                Workload::Short | Workload::Sleep => out.push((w, SLOTS)),
                Workload::Idle => out.extend(self.idle.iter().map(|&n| (w, n))),
            }
        }
        out
    }
}

/// The name `--workloads` takes for the sweep workload.
pub(super) const SWEEP: &str = "sweep";

/// `--workloads` (every workload when not given): the cell workloads, and whether to sweep.
pub(super) fn pick_workloads(names: Option<&[String]>) -> Result<(Vec<Workload>, bool), String> {
    let all = [
        Workload::Echo,
        Workload::Short,
        Workload::Sleep,
        Workload::Idle,
    ];
    let Some(names) = names else {
        return Ok((all.to_vec(), true));
    };
    let mut workloads = Vec::new();
    let mut sweep = false;
    for n in names {
        if n == SWEEP {
            sweep = true;
        } else {
            let w = all.iter().copied().find(|w| w.name() == n).ok_or_else(|| {
                format!("--workloads {n}: not a workload (echo, short, sleep, idle, sweep)")
            })?;
            if !workloads.contains(&w) {
                workloads.push(w);
            }
        }
    }
    Ok((workloads, sweep))
}

/// Why `model` cannot run `workload` at `x` by its nature, if it cannot.
pub(super) fn cannot(model: &Model, workload: Workload, x: u32) -> Option<String> {
    match (workload, model.capacity) {
        (Workload::Sleep, _) if model.protocol == Protocol::Resp => {
            Some("RESP has no SLEEP".into())
        }
        (Workload::Idle, Some(n)) if x > 0 => Some(format!(
            "{n} workers: each idle connection holds one, so the measuring connection would wait behind them"
        )),
        _ => None,
    }
}

/// Why `model` cannot run the sweep by its nature, if it cannot: the sweep's connections are
/// persistent, and a bounded model serves one per worker until it closes, so a connection
/// with no worker of its own waits the whole run and its requests time out. That is the
/// bound at work (the echo workload at 256 connections shows it), not a failure.
pub(super) fn cannot_sweep(model: &Model) -> Option<String> {
    let n = model.capacity?;
    if n < SWEEP_CONNECTIONS {
        Some(format!(
            "{n} workers: the sweep's {SWEEP_CONNECTIONS} persistent connections need one each"
        ))
    } else if model.name.ends_with("reuseport") {
        Some(format!(
            "SO_REUSEPORT hashes each of the sweep's {SWEEP_CONNECTIONS} persistent connections \
             to one worker's queue, so some share a worker and wait the whole run behind another"
        ))
    } else {
        None
    }
}

/// The sweep against `model`'s server at `addr` (its process `pid`): the load of the echo
/// workload in the model's protocol (64 B echo; RESP's ECHO for redis-server), over
/// [`SWEEP_CONNECTIONS`] connections, [`SWEEP_PIPELINE`] request in flight on each, from one
/// loadgen thread, with the suite's run times. `pid` is `None` for the plan a report is summarised
/// with, which runs nothing.
pub(super) fn sweep_plan(
    model: &Model,
    addr: SocketAddr,
    pid: Option<i32>,
    plan: &Plan,
    spec: &SweepSpec,
) -> Result<SweepPlan, String> {
    let base = RunConfig {
        connections: SWEEP_CONNECTIONS,
        pipeline: SWEEP_PIPELINE,
        server_pid: pid,
        ..echo_args(addr, model.protocol, plan)
    }
    .checked()?;
    Ok(SweepPlan {
        base,
        slo_p99_us: spec.slo.as_micros() as u64,
        arrivals: vec![Arrivals::Fixed, Arrivals::Poisson],
        fractions: spec.fractions.clone(),
        // The suite measures one per repetition (`measure_capacity`), never takes one given.
        capacity: None,
        capacity_duration: plan.duration,
        duration: plan.duration,
        warmup: plan.warmup,
        // A repetition runs one round (`round`, which does not read this); the plan the
        // report is summarised with says how many there were.
        repeat: 1,
        runaway: SWEEP_RUNAWAY,
        seed: 1,
    })
}

pub(super) enum Outcome {
    Measured(Box<crate::report::Report>),
    Unable(String),
}

/// One loadgen run of `workload` at `x` against the running `server`.
pub(super) fn run_one(
    model: &Model,
    server: &mut Server,
    workload: Workload,
    x: u32,
    plan: &Plan,
    hgrm: &Path,
) -> Result<Outcome, String> {
    let mut held = Vec::new();
    let mut args = run_args(server.addr, model.protocol, plan, hgrm, server.pid());
    match workload {
        Workload::Echo => args.connections = x,
        Workload::Short => {
            args.connections = SLOTS;
            args.requests_per_conn = Some(1);
            // Each address has its own ephemeral ports; a suite makes tens of thousands of
            // connections, each leaving a port in TIME_WAIT on this side.
            args.source_ips = config::parse_source_ips("127.0.0.2-127.0.0.254")
                .map(|ips| ips.0)
                .unwrap_or_default();
        }
        Workload::Sleep => {
            args.connections = SLOTS;
            args.op = config::Op::Sleep(1000);
        }
        Workload::Idle => {
            args.connections = 1;
            match hold_idle(server.addr, model.protocol, x) {
                Ok(conns) => held = conns,
                Err(IdleError::Refused { held: n, why }) => {
                    let limit = if model.name.contains("select") {
                        " (select's FD_SETSIZE is 1024)"
                    } else {
                        ""
                    };
                    return Ok(Outcome::Unable(format!(
                        "served {n} of {x} idle connections, then refused{limit}: {why}"
                    )));
                }
                Err(IdleError::Other(e)) => return Err(format!("opening idle connections: {e}")),
            }
        }
    }
    let report = run::run(&args).map_err(|e| e.to_string())?;
    drop(held);
    if !server.alive() {
        return Err(format!(
            "the server died during the run ({})",
            server.describe_exit()
        ));
    }
    // A bounded model serves one connection per worker: connections beyond the workers (or,
    // with SO_REUSEPORT, hashed to a busy worker's own queue) wait and time out. That is the
    // model, reported in the cell's note, not a failure of the run.
    let starves = model.capacity.is_some_and(|n| args.connections > n)
        || (model.capacity.is_some() && model.name.ends_with("reuseport"));
    let only_waiting = report.errors.nonzero().all(|(k, _)| {
        matches!(
            k,
            crate::stats::ErrorKind::ReadTimeoutEmpty
                | crate::stats::ErrorKind::ConnectTimeout
                | crate::stats::ErrorKind::ErrorReply
        )
    });
    if report.ok || (starves && only_waiting && report.counts.ok > 0) {
        Ok(Outcome::Measured(Box::new(report)))
    } else {
        let kinds: Vec<String> = report
            .errors
            .nonzero()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        Err(format!(
            "{} verified replies, errors: {}",
            report.counts.ok,
            if kinds.is_empty() {
                "none".into()
            } else {
                kinds.join(", ")
            }
        ))
    }
}

fn run_args(addr: SocketAddr, protocol: Protocol, plan: &Plan, hgrm: &Path, pid: i32) -> RunConfig {
    RunConfig {
        server_pid: Some(pid),
        outputs: Outputs {
            hgrm: Some(hgrm.to_path_buf()),
            progress: Progress::Never,
            ..Outputs::default()
        },
        ..echo_args(addr, protocol, plan)
    }
}

/// The echo workload's request and times, over one connection: what the other workloads
/// and the sweep change.
fn echo_args(addr: SocketAddr, protocol: Protocol, plan: &Plan) -> RunConfig {
    RunConfig {
        addr,
        protocol,
        connections: 1,
        threads: 1,
        engine: plan.engine,
        count_syscalls: plan.count_syscalls,
        duration: Some(plan.duration),
        warmup: plan.warmup,
        payload: 64,
        op: config::Op::Echo,
        // Short enough that starved connections of a bounded model do not stall the suite.
        timeout: Duration::from_secs(1),
        ..RunConfig::default()
    }
}

/// Why idle connections could not all be held.
enum IdleError {
    /// The server refused some (select past FD_SETSIZE, a connection cap).
    Refused { held: u32, why: String },
    /// Something else (the client's own limits).
    Other(String),
}

/// Opens `n` connections and has each answer one echo (so the server has really taken it
/// on), then leaves them idle. They close when the returned vector is dropped.
fn hold_idle(addr: SocketAddr, protocol: Protocol, n: u32) -> Result<Vec<TcpStream>, IdleError> {
    let codec = protocol.codec(echolab_protocol::DEFAULT_MAX_FRAME);
    let mut request = Vec::new();
    codec
        .encode_request(
            &Request {
                id: Some(1),
                command: Op::Echo,
                payload: b"\"idle\"",
            },
            &mut request,
        )
        .map_err(|e| IdleError::Other(e.to_string()))?;
    let mut conns = Vec::with_capacity(n as usize);
    let deadline = Instant::now() + Duration::from_secs(60);
    for held in 0..n {
        if Instant::now() > deadline || run::INTERRUPTED.load(Ordering::Relaxed) {
            return Err(IdleError::Other(format!(
                "gave up after {held} of {n} idle connections (60 s or Ctrl-C)"
            )));
        }
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .map_err(|e| IdleError::Other(format!("connection {held}: {e}")))?;
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        s.write_all(&request)
            .map_err(|e| IdleError::Other(format!("connection {held}: {e}")))?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 512];
        loop {
            match s.read(&mut chunk) {
                Ok(0) => {
                    return Err(IdleError::Refused {
                        held,
                        why: "closed without a reply".into(),
                    })
                }
                Ok(k) => buf.extend_from_slice(&chunk[..k]),
                Err(e) => {
                    return Err(IdleError::Other(format!(
                        "connection {held}: no reply within 2 s: {e}"
                    )))
                }
            }
            match codec.decode_response(&buf) {
                Ok(Decoded::Complete { message, .. }) => {
                    if message.status == echolab_protocol::Status::Error {
                        return Err(IdleError::Refused {
                            held,
                            why: String::from_utf8_lossy(message.payload).into_owned(),
                        });
                    }
                    break;
                }
                Ok(Decoded::Incomplete) => {}
                Ok(Decoded::Invalid { error, .. }) | Err(error) => {
                    return Err(IdleError::Other(error.to_string()))
                }
            }
        }
        conns.push(s);
    }
    Ok(conns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_parse() {
        assert!(pick_workloads(Some(&["echo".into(), "idle".into()])).is_ok());
        assert!(pick_workloads(Some(&["nap".into()])).is_err());
        let (cells, sweep) = pick_workloads(None).expect("the default");
        assert!(sweep && cells.len() == 4, "{cells:?} {sweep}");
        let (cells, sweep) = pick_workloads(Some(&["sweep".into()])).expect("sweep alone");
        assert!(sweep && cells.is_empty(), "{cells:?} {sweep}");
        let (_, sweep) = pick_workloads(Some(&["echo".into()])).expect("echo alone");
        assert!(!sweep);
    }

    #[test]
    fn bounded_models_sweep_only_when_every_connection_has_a_worker() {
        let model = |name: &str, capacity: Option<u32>| Model {
            capacity,
            ..Model::command(name, "true", echolab_protocol::Protocol::Binary)
        };
        assert!(cannot_sweep(&model("thread", None)).is_none());
        assert!(cannot_sweep(&model("thread-pool", Some(32))).is_none());
        assert!(cannot_sweep(&model("thread-pool", Some(4))).is_some());
        assert!(cannot_sweep(&model("prefork-reuseport", Some(32))).is_some());
        // Event loops behind SO_REUSEPORT serve many connections each: not bounded.
        assert!(cannot_sweep(&model("prefork-eventloop-reuseport", None)).is_none());
    }
}
