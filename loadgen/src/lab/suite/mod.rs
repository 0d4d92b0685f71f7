//! `loadgen suite`: every concurrency model side by side, in one command.
//!
//! For each repetition, for each model (interleaved: A B C A B C, so a machine that drifts
//! does not favour one model), the suite starts the server on a free port, waits until it
//! listens, runs every workload against it with loadgen's own engine (server cost included),
//! stops it with SIGTERM, and checks that it exited cleanly and left no process behind. Each
//! figure is the median of the repetitions. The result goes to `results/<run-id>/`:
//! `report.json` (every figure), `report.md` (the tables), the `.hgrm` file of each cell's
//! median run, and SVG plots.
//!
//! Workloads (see [`Workload`]): echo over 1, 16 and 256 persistent connections; a new
//! connection per request; a 1 ms blocking handler at 16 connections; idle connections held
//! open beside one measuring connection. Bounded models (a thread pool, pre-forked workers)
//! serve at most their worker count at once: the suite shows what that does at 256
//! connections and marks the idle workload as beyond them, rather than hiding it.

mod figures;
pub mod report;

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Args;
use echolab_protocol::{Command as Op, Decoded, Protocol, Request};

use crate::config::{self, Outputs, Progress, RunConfig};
use crate::lab::launch::{
    custom_model, describe_placement, display_command, find_bin_dir, pin_halves, raise_nofile,
    standard_models, Model, Server,
};
use crate::lab::suite::report::{
    AcceptDistribution, Cell, CellStatus, ModelInfo, SuiteParams, SuiteReport, Workload,
};
use crate::run;
use crate::stats::median;

/// `loadgen suite`: run every model through the lab's workloads and write a report.
#[derive(Debug, Clone, Args)]
pub struct SuiteArgs {
    /// The long matrix: more connection counts and idle counts, 5 repetitions, 3 s runs
    /// (about 600 runs of 4 s: roughly 40 minutes; the default takes about 2.5).
    #[arg(long)]
    pub full: bool,

    /// Only these models (comma-separated short names: thread, thread-pool, fork,
    /// prefork-shared, prefork-locked, prefork-reuseport, eventloop-select, eventloop-poll,
    /// eventloop-epoll, redis-server, or a name given with --server).
    #[arg(long, value_delimiter = ',')]
    pub only: Option<Vec<String>>,

    /// Only these workloads (comma-separated: echo, short, sleep, idle).
    #[arg(long, value_delimiter = ',')]
    pub workloads: Option<Vec<String>>,

    /// Connection counts for the echo workload (default 1,16,256; --full 1,4,16,64,256).
    #[arg(long, value_delimiter = ',')]
    pub connections: Option<Vec<u32>>,

    /// Idle connections for the idle workload (default 1000,2000; --full 0,250,1000,2000,4000).
    #[arg(long, value_delimiter = ',')]
    pub idle: Option<Vec<u32>>,

    /// Repetitions of every run (default 3; --full 5). Figures are medians.
    #[arg(long)]
    pub repeat: Option<u32>,

    /// Measured time per run (default 500ms; --full 3s).
    #[arg(long, value_parser = echolab_protocol::units::parse_duration)]
    pub duration: Option<Duration>,

    /// Warmup per run (default 200ms; --full 1s).
    #[arg(long, value_parser = echolab_protocol::units::parse_duration)]
    pub warmup: Option<Duration>,

    /// Workers for server-thread --pool and server-prefork --workers.
    #[arg(long, default_value_t = 32)]
    pub workers: u32,

    /// Also run your own server: NAME=COMMAND, where COMMAND (run by sh) speaks the binary
    /// protocol and either contains {addr} (replaced by a free 127.0.0.1 port) or prints
    /// `listening on ADDR`. Repeatable.
    #[arg(long = "server", value_name = "NAME=COMMAND")]
    pub servers: Vec<String>,

    /// Directory of the server binaries (default: beside this loadgen, built with cargo if
    /// missing).
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,

    /// Let the scheduler place servers and loadgen (default: servers on the first half of the
    /// CPUs, loadgen on the second, for every model alike).
    #[arg(long)]
    pub no_pin: bool,

    /// Write the report here (default `results/<run-id>` under the current directory).
    #[arg(long, value_name = "DIR")]
    pub results: Option<PathBuf>,
}

/// What one run of one (model, workload, x) measured.
#[derive(Debug, Clone)]
struct Sample {
    report: crate::report::Report,
    hgrm: PathBuf,
}

/// Runs the suite; returns the report (also written to disk) or a message saying why it
/// could not run at all.
pub fn suite(args: &SuiteArgs) -> Result<SuiteReport, String> {
    let started = Instant::now();
    let load_before = crate::proc::load_average();
    let full = args.full;
    let repeat = args.repeat.unwrap_or(if full { 5 } else { 3 }).max(1);
    let duration = args.duration.unwrap_or(if full {
        Duration::from_secs(3)
    } else {
        Duration::from_millis(500)
    });
    let warmup = args.warmup.unwrap_or(if full {
        Duration::from_secs(1)
    } else {
        Duration::from_millis(200)
    });
    let connections = args.connections.clone().unwrap_or(if full {
        vec![1, 4, 16, 64, 256]
    } else {
        vec![1, 16, 256]
    });
    let idle = args.idle.clone().unwrap_or(if full {
        vec![0, 250, 1000, 2000, 4000]
    } else {
        vec![1000, 2000]
    });
    let workloads = pick_workloads(args.workloads.as_deref())?;
    let (mut connections, mut idle) = (connections, idle);
    for list in [&mut connections, &mut idle] {
        list.sort_unstable();
        list.dedup();
    }

    let mut failures = Vec::new();
    let nofile = raise_nofile();
    let most_idle = idle.iter().copied().max().unwrap_or(0);
    if u64::from(most_idle) + 200 > nofile {
        let fit = nofile.saturating_sub(200) as u32;
        idle.retain(|&n| n <= fit);
        failures.push(format!(
            "note: the open-file limit is {nofile}: idle counts above {fit} were dropped"
        ));
    }

    let bin_dir = find_bin_dir(args.bin_dir.as_deref())?;
    let placement = if args.no_pin { None } else { pin_halves() };
    let mut models = standard_models(&bin_dir, args.workers);
    for spec in &args.servers {
        let model = custom_model(spec)?;
        if models.iter().any(|m| m.name == model.name) {
            return Err(format!("--server {}: that name is taken", model.name));
        }
        models.push(model);
    }
    if let Some(only) = &args.only {
        if let Some(bad) = only.iter().find(|n| !models.iter().any(|m| &m.name == *n)) {
            let names: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
            return Err(format!(
                "--only {bad}: no such model (known: {})",
                names.join(", ")
            ));
        }
        models.retain(|m| only.contains(&m.name));
    }

    let run_id = crate::clock::run_id("suite");
    let dir = args
        .results
        .clone()
        .unwrap_or_else(|| PathBuf::from("results").join(&run_id));
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let scratch = dir.join("runs");
    fs::create_dir_all(&scratch)
        .map_err(|e| format!("cannot create {}: {e}", scratch.display()))?;

    // (model, workload, x) -> samples; and the accept counts of prefork workers.
    let mut samples: BTreeMap<(String, &'static str, u32), Vec<Sample>> = BTreeMap::new();
    let mut unable: BTreeMap<(String, &'static str, u32), String> = BTreeMap::new();
    let mut failed: BTreeMap<(String, &'static str, u32), String> = BTreeMap::new();
    let mut accepts: BTreeMap<String, (Vec<u64>, Vec<f64>)> = BTreeMap::new();

    let plan = Plan {
        duration,
        warmup,
        connections: connections.clone(),
        idle: idle.clone(),
        workloads: workloads.clone(),
    };
    let total = repeat as usize * models.len();
    let mut done = 0;
    let interrupted = || run::INTERRUPTED.load(Ordering::Relaxed);
    'reps: for rep in 0..repeat {
        for model in &models {
            if interrupted() {
                break 'reps;
            }
            done += 1;
            eprintln!("[{done}/{total}] {} (repetition {})", model.name, rep + 1);
            let stats_file = scratch.join(format!("{}-r{rep}.stats.json", model.name));
            let mut server = match Server::start(model, Some(&stats_file), placement.as_ref()) {
                Ok(s) => s,
                Err(e) => {
                    failures.push(format!("{}: did not start: {e}", model.name));
                    for (workload, x) in plan.runs() {
                        let key = (model.name.clone(), workload.name(), x);
                        failed.insert(key, format!("the server did not start: {e}"));
                    }
                    continue;
                }
            };
            for (workload, x) in plan.runs() {
                let key = (model.name.clone(), workload.name(), x);
                if let Some(why) = cannot(model, workload, x) {
                    unable.insert(key, why);
                    continue;
                }
                if interrupted() {
                    break;
                }
                if !server.alive() {
                    failed
                        .entry(key)
                        .or_insert_with(|| "not run: the server had died".into());
                    continue;
                }
                let hgrm = scratch.join(format!(
                    "{}-{}-{x}-r{rep}.hgrm",
                    model.name,
                    workload.name()
                ));
                match run_one(model, &mut server, workload, x, &plan, &hgrm) {
                    // A run cut short by Ctrl-C is not a measurement.
                    Ok(Outcome::Measured(report)) if report.interrupted => {}
                    Err(_) if interrupted() => {}
                    Ok(Outcome::Measured(report)) => {
                        samples.entry(key).or_default().push(Sample {
                            report: *report,
                            hgrm,
                        });
                    }
                    Ok(Outcome::Unable(why)) => {
                        unable.insert(key, why);
                    }
                    Err(e) => {
                        failures.push(format!(
                            "{} {} x{x} (repetition {}): {e}",
                            model.name,
                            workload.name(),
                            rep + 1
                        ));
                        failed.insert(key, e);
                    }
                }
            }
            match server.stop() {
                Ok(()) => {}
                Err(e) => failures.push(format!("{}: {e}", model.name)),
            }
            if model.echolab {
                if let Some(per_worker) = worker_accepts(&stats_file) {
                    // Jain's index per repetition: worker i of one repetition is not worker
                    // i of the next, so summing first would even out what was uneven.
                    let (sum, jains) = accepts.entry(model.name.clone()).or_default();
                    jains.push(jain(&per_worker));
                    sum.resize(sum.len().max(per_worker.len()), 0);
                    for (s, n) in sum.iter_mut().zip(per_worker) {
                        *s += n;
                    }
                }
            }
        }
    }

    let mut cells = Vec::new();
    for model in &models {
        for (workload, x) in plan.runs() {
            let key = (model.name.clone(), workload.name(), x);
            cells.push(make_cell(
                &model.name,
                workload,
                x,
                samples.get(&key).map(Vec::as_slice).unwrap_or(&[]),
                unable.get(&key),
                failed.get(&key),
                &dir,
            ));
        }
    }
    if interrupted() {
        failures.push("interrupted: the report covers the runs completed before Ctrl-C".into());
    }
    // In model order, not the map's.
    let accept = models
        .iter()
        .filter(|m| m.name.starts_with("prefork"))
        .filter_map(|m| accepts.remove(&m.name).map(|a| (m.name.clone(), a)))
        .map(|(model, (per_worker, jains))| AcceptDistribution {
            jain: median(jains),
            model,
            per_worker,
        })
        .collect();
    let machine = proc_machine();
    let report = SuiteReport {
        run_id,
        tool: format!("loadgen {}", env!("CARGO_PKG_VERSION")),
        machine,
        params: SuiteParams {
            repeat,
            duration_s: duration.as_secs_f64(),
            warmup_s: warmup.as_secs_f64(),
            connections,
            idle,
            full,
            placement: describe_placement(placement.as_ref()),
        },
        models: models
            .iter()
            .map(|m| ModelInfo {
                name: m.name.clone(),
                command: display_command(m),
            })
            .collect(),
        cells,
        accept,
        failures,
        elapsed_s: started.elapsed().as_secs_f64(),
        load_before,
        load_after: crate::proc::load_average(),
    };
    let _ = fs::remove_dir_all(&scratch);
    write_report(&report, &dir)?;
    Ok(report)
}

/// The matrix of one repetition.
#[derive(Debug, Clone)]
struct Plan {
    duration: Duration,
    warmup: Duration,
    connections: Vec<u32>,
    idle: Vec<u32>,
    workloads: Vec<Workload>,
}

/// Connection slots of the short and sleep workloads.
const SLOTS: u32 = 16;

impl Plan {
    /// Every (workload, x) of one model, in run order.
    fn runs(&self) -> Vec<(Workload, u32)> {
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

fn pick_workloads(names: Option<&[String]>) -> Result<Vec<Workload>, String> {
    let all = [
        Workload::Echo,
        Workload::Short,
        Workload::Sleep,
        Workload::Idle,
    ];
    let Some(names) = names else {
        return Ok(all.to_vec());
    };
    names
        .iter()
        .map(|n| {
            all.iter().copied().find(|w| w.name() == n).ok_or_else(|| {
                format!("--workloads {n}: not a workload (echo, short, sleep, idle)")
            })
        })
        .collect()
}

/// Why `model` cannot run `workload` at `x` by its nature, if it cannot.
fn cannot(model: &Model, workload: Workload, x: u32) -> Option<String> {
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

enum Outcome {
    Measured(Box<crate::report::Report>),
    Unable(String),
}

/// One loadgen run of `workload` at `x` against the running `server`.
fn run_one(
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
        addr,
        protocol,
        connections: 1,
        threads: 1,
        duration: Some(plan.duration),
        warmup: plan.warmup,
        payload: 64,
        op: config::Op::Echo,
        // Short enough that starved connections of a bounded model do not stall the suite.
        timeout: Duration::from_secs(1),
        server_pid: Some(pid),
        outputs: Outputs {
            hgrm: Some(hgrm.to_path_buf()),
            progress: Progress::Never,
            ..Outputs::default()
        },
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

fn worker_accepts(stats_file: &Path) -> Option<Vec<u64>> {
    let text = fs::read_to_string(stats_file).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let workers = v.get("workers")?.as_array()?;
    Some(
        workers
            .iter()
            .map(|w| w.get("accepted").and_then(|a| a.as_u64()).unwrap_or(0))
            .collect(),
    )
}

/// Jain's fairness index: (Σx)² / (n·Σx²), 1.0 when every worker got the same.
fn jain(xs: &[u64]) -> f64 {
    let sum: f64 = xs.iter().map(|&x| x as f64).sum();
    let squares: f64 = xs.iter().map(|&x| (x as f64) * (x as f64)).sum();
    if squares == 0.0 {
        0.0
    } else {
        sum * sum / (xs.len() as f64 * squares)
    }
}

fn proc_machine() -> serde_json::Value {
    serde_json::to_value(crate::proc::machine_info()).unwrap_or(serde_json::Value::Null)
}

// ----- cells -----------------------------------------------------------------------------

fn median_opt(xs: Vec<Option<f64>>) -> Option<f64> {
    let vals: Vec<f64> = xs.into_iter().flatten().collect();
    (!vals.is_empty()).then(|| median(vals))
}

fn make_cell(
    model: &str,
    workload: Workload,
    x: u32,
    samples: &[Sample],
    unable: Option<&String>,
    failed: Option<&String>,
    dir: &Path,
) -> Cell {
    let f = |get: &dyn Fn(&crate::report::Report) -> f64| {
        median(samples.iter().map(|s| get(&s.report)).collect())
    };
    let srv = |get: &dyn Fn(&crate::proc::ServerCost) -> f64| {
        median_opt(
            samples
                .iter()
                .map(|s| s.report.server.as_ref().map(get))
                .collect(),
        )
    };
    let status = if !samples.is_empty() {
        CellStatus::Ok
    } else if unable.is_some() {
        CellStatus::Unable
    } else {
        CellStatus::Failed
    };
    // Notes: why unable or failed, and the errors a bounded model's starved connections saw.
    let mut note = unable.or(failed).cloned();
    let errors: u64 = samples.iter().map(|s| s.report.errors.total()).sum();
    let connections = samples.first().map_or(0, |s| s.report.params.connections);
    let served = (!samples.is_empty()).then(|| {
        median(
            samples
                .iter()
                .map(|s| s.report.counts.connections_served as f64)
                .collect(),
        )
    });
    if errors > 0 {
        let why = if model.ends_with("reuseport") {
            "SO_REUSEPORT hashes each connection to one worker's own queue, so a connection hashed to a worker that holds another connection waits for it while other workers idle"
        } else {
            "connections beyond the workers wait for one: in the kernel's accept queue (prefork), or in the pool's --queue, refused with \"server busy\" when it is full; a wait longer than loadgen's --timeout is an error"
        };
        let kinds: Vec<String> = {
            let mut total = crate::stats::ErrorCounts::default();
            for s in samples {
                total.merge(&s.report.errors);
            }
            total.nonzero().map(|(k, n)| format!("{k} {n}")).collect()
        };
        note = Some(format!(
            "{errors} errors over {} runs ({}): {why}",
            samples.len(),
            kinds.join(", ")
        ));
    }
    // The run with the median p50 gives the spectrum and the kept .hgrm.
    let mut spectrum = Vec::new();
    let mut hgrm = None;
    if !samples.is_empty() {
        let mut order: Vec<usize> = (0..samples.len()).collect();
        order.sort_by_key(|&i| samples[i].report.latency_us.p50);
        let mid = &samples[order[order.len() / 2]];
        let name = format!("{model}-{}-{x}.hgrm", workload.name());
        if fs::copy(&mid.hgrm, dir.join(&name)).is_ok() {
            spectrum = read_spectrum(&dir.join(&name));
            hgrm = Some(name);
        }
    }
    Cell {
        model: model.into(),
        workload,
        x,
        status,
        note,
        runs: samples.len() as u32,
        connections,
        served,
        errors,
        throughput_rps: f(&|r| r.throughput_rps),
        p50_us: f(&|r| r.latency_us.p50 as f64),
        p90_us: f(&|r| r.latency_us.p90 as f64),
        p99_us: f(&|r| r.latency_us.p99 as f64),
        p999_us: f(&|r| r.latency_us.p999 as f64),
        max_us: f(&|r| r.latency_us.max as f64),
        server_cpu_us_per_req: srv(&|s| s.cpu_us_per_request),
        server_ctx_per_req: srv(&|s| s.ctx_per_request),
        server_pss_kib: median_opt(
            samples
                .iter()
                .map(|s| {
                    s.report
                        .server
                        .as_ref()
                        .and_then(|v| v.pss_kib)
                        .map(|k| k as f64)
                })
                .collect(),
        ),
        server_rss_kib: srv(&|s| s.rss_kib as f64),
        server_processes: srv(&|s| f64::from(s.processes_peak)),
        server_threads: srv(&|s| f64::from(s.threads_peak)),
        spectrum,
        hgrm,
    }
}

/// (percentile, µs) pairs from a `.hgrm` file (values in ms).
fn read_spectrum(path: &Path) -> Vec<(f64, f64)> {
    let Ok(text) = fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let value: f64 = it.next()?.parse().ok()?;
            let q: f64 = it.next()?.parse().ok()?;
            Some((q * 100.0, value * 1000.0))
        })
        .collect()
}

// ----- the report ------------------------------------------------------------------------

fn write_report(report: &SuiteReport, dir: &Path) -> Result<(), String> {
    let json = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
    fs::write(dir.join("report.json"), json + "\n")
        .map_err(|e| format!("cannot write report.json: {e}"))?;
    let plots = figures::write_all(report, dir).unwrap_or_else(|e| {
        eprintln!("plots not written: {e}");
        Vec::new()
    });
    let md = markdown(report, &plots, experiments_doc(dir).as_deref());
    fs::write(dir.join("report.md"), md).map_err(|e| format!("cannot write report.md: {e}"))
}

/// docs/experiments.md relative to the report directory `dir`, if `dir` lies inside an
/// echolab checkout (so the report's links work where it is committed, under results/).
fn experiments_doc(dir: &Path) -> Option<String> {
    let dir = dir.canonicalize().ok()?;
    let root = dir
        .ancestors()
        .find(|a| a.join("docs/experiments.md").is_file())?;
    let depth = dir.strip_prefix(root).ok()?.components().count();
    Some(format!("{}docs/experiments.md", "../".repeat(depth)))
}

/// The load averages, and a warning when the machine was busy before the suite began.
fn load_line(report: &SuiteReport) -> Option<String> {
    let before = report.load_before?;
    let cores = report
        .machine
        .get("cores")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(1) as usize;
    let after = report
        .load_after
        .map_or("unknown".into(), |a| format!("{:.2}", a[0]));
    let mut s = format!(
        "Load average (1 min) {:.2} before the first run, {after} after the last, on {cores} CPUs.",
        before[0]
    );
    if crate::proc::busy(before[0], cores) {
        s.push_str(" **Busy machine**: other work was using more than half the CPUs when the suite began, so these figures are lower and noisier than on an idle one.");
    }
    Some(s)
}

/// The first lines of the report: what happened, before any table.
pub fn outcome(report: &SuiteReport) -> String {
    let failures: Vec<&String> = report
        .failures
        .iter()
        .filter(|f| !f.starts_with("note:"))
        .collect();
    let mut s = String::new();
    if failures.is_empty() {
        s.push_str("Every server started, ran each workload it can, exited cleanly on SIGTERM and left no process behind.");
    } else {
        s.push_str(&format!(
            "**{} failure(s)**: a model crashed, left a process behind, or a run failed (listed under Failures; exit 1).",
            failures.len()
        ));
    }
    let partial: Vec<String> = report
        .cells
        .iter()
        .filter(|c| c.partial())
        .map(|c| {
            format!(
                "{} at {} ({:.0} of {} served, {} errors over {} runs)",
                c.model,
                match c.workload {
                    Workload::Echo => format!("{} connections", c.x),
                    w => format!("{} x{}", w.name(), c.x),
                },
                c.served.unwrap_or(0.0),
                c.connections,
                c.errors,
                c.runs
            )
        })
        .collect();
    if !partial.is_empty() {
        s.push_str(&format!(
            " **{} row(s) are partial** ({PARTIAL}): the model served only some of its connections in the measured window while the others waited, for a free worker of a bounded model (a pool, pre-forked workers: beyond their number, or under SO_REUSEPORT behind a worker their hash chose), or for fork's parent, which shares its CPU with the children it already forked, to accept them: {}. Their throughput and latency describe the served connections only; they are marked, not ranked beside full rows, drawn as hollow rings in the throughput plot and left out of the others. That is how the model behaves under this load, so it does not fail the suite.",
            partial.len(),
            partial.join("; ")
        ));
    }
    let other_errors: u64 = report
        .cells
        .iter()
        .filter(|c| !c.partial())
        .map(|c| c.errors)
        .sum();
    if other_errors > 0 {
        s.push_str(&format!(
            " {other_errors} error(s) in rows that served every connection (†, explained under their tables)."
        ));
    }
    s
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".into(), |v| format!("{v:.digits$}"))
}

/// The experiment in docs/experiments.md that explains each table: (heading as written
/// there, what the table shows of it). The headings are checked against the file by a test.
fn experiment(w: Workload, x: u32) -> &'static str {
    match (w, x) {
        (Workload::Echo, x) if x > 32 => "6. What happens to a bounded model past its workers?",
        (Workload::Echo, _) => {
            "2. How does throughput grow with connections, and what does a context switch cost?"
        }
        (Workload::Short, _) => "1. What does a process per connection cost?",
        (Workload::Sleep, _) => "3. What happens when a handler blocks in an event loop?",
        (Workload::Idle, _) => {
            "4. What do idle connections cost `select` and `poll`, and not `epoll`?"
        }
    }
}

/// The experiment on memory per connection, and the one on prefork's accept distribution.
const MEMORY_EXPERIMENT: &str =
    "5. What does a connection cost in memory, and why does RSS lie about fork?";
const ACCEPT_EXPERIMENT: &str =
    "7. How evenly does the kernel spread connections over pre-forked workers?";

/// A Markdown heading's anchor as GitHub makes it: lower case, spaces to hyphens, and
/// everything but letters, digits, hyphens and underscores dropped.
fn anchor(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The marker of a partial row (some connections never served).
pub const PARTIAL: &str = "◐";

/// What the columns mean, once, under the tables' heading.
const LEGEND: &str = "Columns: **req/s** verified replies per second; **p50/p99/max µs** latency \
from each request's send to its verified reply; **server CPU µs/req** the server's user + \
system CPU time over the window, per reply; **ctx switches/req** the server's voluntary + \
involuntary context switches per reply (about 1 for a blocking model, which sleeps in `read` \
between requests; near 0 for an event loop that finds more work on each wake-up); **server PSS \
MiB** proportional set size at the end of the window, summed over the server's processes (a \
page shared by n processes counts 1/n in each, so PSS adds up across a forked tree where RSS \
does not); **processes, threads** the server's, at the peak; **served** connections that got \
at least one verified reply, of those opened.\n\n\
Marks: **◐** a partial row: a bounded model (a pool, pre-forked workers) served only some of \
its connections and the rest waited, so its figures describe the served ones only and are not \
comparable with full rows; **†** the row had errors, explained under its table; **unable** \
the model cannot run this workload by its nature. Prefork's table gives **Jain's index** of \
the connections each worker accepted: (Σx)² / (n·Σx²), 1.0 when every worker got as many, 1/n \
when one got all.\n";

/// The side-by-side tables: one per workload and x, a row per model. `docs` is the path of
/// docs/experiments.md relative to the report, if the report sits in an echolab checkout.
pub fn tables(report: &SuiteReport) -> String {
    tables_linked(report, None)
}

fn tables_linked(report: &SuiteReport, docs: Option<&str>) -> String {
    let explained = |heading: &str| match docs {
        Some(path) => format!(
            "Explained in [experiment {heading}]({path}#{})\n\n",
            anchor(heading)
        ),
        None => format!("Explained in docs/experiments.md, experiment {heading}\n\n"),
    };
    let mut s = String::new();
    let mut keys: Vec<(Workload, u32)> = Vec::new();
    for c in &report.cells {
        if !keys.contains(&(c.workload, c.x)) {
            keys.push((c.workload, c.x));
        }
    }
    for (w, x) in keys {
        let connections = |n: u32| {
            if n == 1 {
                "1 connection".to_string()
            } else {
                format!("{n} connections")
            }
        };
        let title = match w {
            Workload::Echo => format!("echo 64 B, closed loop, {}", connections(x)),
            Workload::Short => format!("a new connection per request ({x} at a time)"),
            Workload::Sleep => format!("SLEEP 1 ms (a blocking handler), {}", connections(x)),
            Workload::Idle => format!("{x} idle connections beside 1 measuring connection"),
        };
        s.push_str(&format!("\n### {title}\n\n"));
        s.push_str(&explained(experiment(w, x)));
        s.push_str("| model | req/s | p50 µs | p99 µs | max µs | server CPU µs/req | ctx switches/req | server PSS MiB | processes | threads | served |\n");
        s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for c in report.cells.iter().filter(|c| c.workload == w && c.x == x) {
            if c.status != CellStatus::Ok {
                s.push_str(&format!(
                    "| {} | {} | | | | | | | | | |\n",
                    c.model,
                    match c.status {
                        CellStatus::Unable =>
                            format!("unable: {}", c.note.as_deref().unwrap_or("")),
                        _ => format!("**FAILED**: {}", c.note.as_deref().unwrap_or("")),
                    }
                ));
                continue;
            }
            let served = match c.served {
                Some(n) if c.partial() => format!("**{n:.0} of {}** {PARTIAL}", c.connections),
                Some(n) => format!("{n:.0}"),
                None => "–".into(),
            };
            s.push_str(&format!(
                "| {}{}{} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {served} |\n",
                c.model,
                if c.partial() {
                    format!(" {PARTIAL}")
                } else {
                    String::new()
                },
                if c.note.is_some() { " †" } else { "" },
                c.throughput_rps,
                c.p50_us,
                c.p99_us,
                c.max_us,
                fmt_opt(c.server_cpu_us_per_req, 1),
                fmt_opt(c.server_ctx_per_req, 2),
                fmt_opt(c.server_pss_kib.map(|k| k / 1024.0), 1),
                fmt_opt(c.server_processes, 0),
                fmt_opt(c.server_threads, 0),
            ));
        }
        let notes: Vec<String> = report
            .cells
            .iter()
            .filter(|c| c.workload == w && c.x == x && c.status == CellStatus::Ok)
            .filter_map(|c| c.note.as_ref().map(|n| format!("† {}: {n}", c.model)))
            .collect();
        if !notes.is_empty() {
            s.push('\n');
            s.push_str(&notes.join("\n"));
            s.push('\n');
        }
    }
    if !report.accept.is_empty() {
        s.push_str(
            "\n### prefork: connections accepted per worker (all workloads, all repetitions)\n\n",
        );
        s.push_str(&explained(ACCEPT_EXPERIMENT));
        s.push_str(
            "| accept mode | per worker (min / median / max) | Jain's index |\n|---|---|---:|\n",
        );
        for a in &report.accept {
            let mut v = a.per_worker.clone();
            v.sort_unstable();
            let (min, med, max) = (
                v.first().copied().unwrap_or(0),
                v.get(v.len() / 2).copied().unwrap_or(0),
                v.last().copied().unwrap_or(0),
            );
            s.push_str(&format!(
                "| {} | {min} / {med} / {max} over {} workers | {:.3} |\n",
                a.model,
                v.len(),
                a.jain
            ));
        }
    }
    s
}

fn markdown(report: &SuiteReport, plots: &[String], docs: Option<&str>) -> String {
    let p = &report.params;
    let mut s = format!(
        "# echolab suite {}\n\n{} repetitions, interleaved across models; {} s measured after {} s warmup per run; \
         every figure is the median of the repetitions; {}. Machine: {}. {} models, {:.0} s in all.\n\
         echolab's servers speak the binary protocol; redis-server (a reference, when installed) speaks RESP (ECHO).\n",
        report.run_id,
        p.repeat,
        p.duration_s,
        p.warmup_s,
        p.placement,
        report.machine.get("cpu_model").and_then(|v| v.as_str()).unwrap_or("unknown"),
        report.models.len(),
        report.elapsed_s
    );
    let (notes, failures): (Vec<&String>, Vec<&String>) =
        report.failures.iter().partition(|f| f.starts_with("note:"));
    if let Some(load) = load_line(report) {
        s.push_str(&load);
        s.push('\n');
    }
    s.push_str(&format!("\n{}\n", outcome(report)));
    if !failures.is_empty() {
        s.push_str("\n## Failures\n\n");
        for f in &failures {
            s.push_str(&format!("- {f}\n"));
        }
    }
    for n in notes {
        s.push_str(&format!("\n{n}\n"));
    }
    if !plots.is_empty() {
        s.push_str("\n## Plots\n\n");
        for p in plots {
            s.push_str(&format!("![{p}]({p})\n"));
        }
    }
    s.push_str("\n## Tables\n\n");
    s.push_str(LEGEND);
    s.push_str(&match docs {
        Some(path) => format!(
            "What PSS and RSS measure, and why they differ for fork: [experiment {MEMORY_EXPERIMENT}]({path}#{}).\n",
            anchor(MEMORY_EXPERIMENT)
        ),
        None => format!(
            "What PSS and RSS measure, and why they differ for fork: docs/experiments.md, experiment {MEMORY_EXPERIMENT}\n"
        ),
    });
    s.push_str(&tables_linked(report, docs));
    s.push_str("\n## Models\n\n");
    for m in &report.models {
        s.push_str(&format!("- `{}`: `{}`\n", m.name, m.command));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jain_index() {
        assert!((jain(&[5, 5, 5, 5]) - 1.0).abs() < 1e-12);
        assert!((jain(&[20, 0, 0, 0]) - 0.25).abs() < 1e-12);
        assert_eq!(jain(&[]), 0.0);
    }

    fn cell(model: &str, workload: Workload, x: u32, served: f64, errors: u64) -> Cell {
        Cell {
            model: model.into(),
            workload,
            x,
            status: CellStatus::Ok,
            note: (errors > 0).then(|| format!("{errors} errors")),
            runs: 3,
            connections: x,
            served: Some(served),
            errors,
            throughput_rps: 100_000.0,
            p50_us: 100.0,
            p90_us: 150.0,
            p99_us: 200.0,
            p999_us: 300.0,
            max_us: 900.0,
            server_cpu_us_per_req: Some(5.0),
            server_ctx_per_req: Some(1.0),
            server_pss_kib: Some(2048.0),
            server_rss_kib: Some(4096.0),
            server_processes: Some(1.0),
            server_threads: Some(33.0),
            spectrum: vec![],
            hgrm: None,
        }
    }

    fn report(cells: Vec<Cell>) -> SuiteReport {
        SuiteReport {
            run_id: "test".into(),
            tool: "loadgen test".into(),
            machine: serde_json::json!({}),
            params: SuiteParams {
                repeat: 3,
                duration_s: 0.5,
                warmup_s: 0.2,
                connections: vec![1, 256],
                idle: vec![],
                full: false,
                placement: "unpinned".into(),
            },
            models: ["thread", "thread-pool"]
                .iter()
                .map(|m| ModelInfo {
                    name: (*m).into(),
                    command: (*m).into(),
                })
                .collect(),
            cells,
            accept: vec![],
            failures: vec![],
            elapsed_s: 1.0,
            load_before: Some([1.5, 1.0, 0.5]),
            load_after: Some([2.0, 1.2, 0.6]),
        }
    }

    /// Issue 12: a pool that served 32 of 256 connections must not read as the better model.
    /// Its row says how many were served and is marked partial, the first lines say so, and
    /// a row that served everyone is not marked.
    #[test]
    fn a_partial_row_says_how_many_were_served() {
        let r = report(vec![
            cell("thread", Workload::Echo, 256, 256.0, 0),
            cell("thread-pool", Workload::Echo, 256, 32.0, 2400),
            cell("thread", Workload::Echo, 1, 1.0, 0),
        ]);
        let md = markdown(&r, &[], Some("../../docs/experiments.md"));
        let row = |model: &str| {
            md.lines()
                .find(|l| l.starts_with(&format!("| {model} ")))
                .unwrap_or_else(|| panic!("no row for {model}\n{md}"))
                .to_string()
        };
        assert!(
            row("thread-pool").contains(&format!("thread-pool {PARTIAL} †")),
            "{md}"
        );
        assert!(row("thread-pool").contains("**32 of 256**"), "{md}");
        assert!(!row("thread").contains(PARTIAL), "{md}");
        let first = md
            .lines()
            .find(|l| l.starts_with("Every server"))
            .expect("outcome");
        assert!(first.contains("1 row(s) are partial"), "{first}");
        assert!(
            first.contains("thread-pool at 256 connections (32 of 256 served, 2400 errors"),
            "{first}"
        );
        assert!(
            md.contains("### echo 64 B, closed loop, 1 connection\n"),
            "{md}"
        );
        assert!(md.contains("Columns: **req/s**"), "a legend\n{md}");
        // 1.5 before, and the machine's cores unknown (1): busy, and said.
        assert!(md.contains("**Busy machine**"), "{md}");
        assert!(
            md.contains(
                "](../../docs/experiments.md#6-what-happens-to-a-bounded-model-past-its-workers)"
            ),
            "{md}"
        );
    }

    /// Every table links to a heading that exists in docs/experiments.md.
    #[test]
    fn every_experiment_link_has_its_heading() {
        let doc = fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/experiments.md"),
        )
        .expect("docs/experiments.md");
        let headings: Vec<String> = doc
            .lines()
            .filter_map(|l| l.strip_prefix("## "))
            .map(anchor)
            .collect();
        let mut wanted: Vec<&str> = [
            Workload::Echo,
            Workload::Short,
            Workload::Sleep,
            Workload::Idle,
        ]
        .iter()
        .flat_map(|&w| [experiment(w, 1), experiment(w, 256)])
        .collect();
        wanted.extend([MEMORY_EXPERIMENT, ACCEPT_EXPERIMENT]);
        for h in wanted {
            assert!(
                headings.contains(&anchor(h)),
                "no heading '## {h}' in docs/experiments.md"
            );
        }
        assert_eq!(
            anchor("4. What do idle connections cost `select` and `poll`, and not `epoll`?"),
            "4-what-do-idle-connections-cost-select-and-poll-and-not-epoll"
        );
    }

    #[test]
    fn workloads_parse() {
        assert!(pick_workloads(Some(&["echo".into(), "idle".into()])).is_ok());
        assert!(pick_workloads(Some(&["nap".into()])).is_err());
    }
}
