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
//! Workloads (see [`Workload`](report::Workload)): echo over 1, 16 and 256 persistent
//! connections; a new connection per request; a 1 ms blocking handler at 16 connections; idle
//! connections held open beside one measuring connection; and `sweep`, latency against
//! offered load: after a model's other workloads, against the same server, one closed-loop
//! run measures its capacity (echo, 16 connections, one request in flight on each), then one round of
//! `loadgen sweep` offers open-loop rates from 20% (10% with `--full`) to 120% of it, fixed
//! and Poisson arrivals side by side ([`crate::lab::sweep`]). Over the repetitions the capacity is the median and
//! the rounds merge point by point, into a curve per arrival process and its knee (the highest
//! rate whose p99 meets `--sweep-slo`). Bounded models (a thread pool, pre-forked workers)
//! serve at most their worker count at once: the suite shows what that does at 256
//! connections and marks the idle workload, and a sweep whose connections outnumber their
//! workers (or that SO_REUSEPORT would hash onto busy ones), as beyond them, rather than
//! hiding it.
//!
//! The suite is split the way a run flows, each file importing only [`report`] (the result as
//! data) and none importing another or this one: `workloads` (what one run of a workload is),
//! `cells` (what the runs of one cell add up to), `tables` (`report.md` and the printed
//! tables) and `figures` (the SVG plots). This file holds the flags and [`suite`], the loop
//! that runs them in order.
//!
//! Every figure is the median of the repetitions; a sweep's rates are fractions of each
//! repetition's own capacity, so a point's offered rate is the median of its runs' rates.

mod cells;
mod figures;
pub mod report;
mod tables;
mod workloads;

pub use tables::{outcome, tables, PARTIAL};

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Args;

use crate::config::Engine;
use crate::lab::launch::{
    custom_model, describe_placement, display_command, find_bin_dir, pin_halves, raise_nofile,
    server_cpu_count, standard_models, Model, Server,
};
use crate::lab::suite::report::{
    AcceptDistribution, Cell, CellStatus, ModelInfo, ModelSweep, SuiteParams, SuiteReport,
    SweepSettings,
};
use crate::lab::sweep::{drop_last_run, fractions, measure_capacity, round, SweepPlan};
use crate::run;
use crate::stats::median;
use cells::{jain, make_cell, make_sweep, worker_accepts, Sample, SweepRuns};
use tables::{experiments_doc, markdown};
use workloads::{
    cannot, cannot_sweep, pick_workloads, run_one, sweep_plan, Outcome, Plan, SweepSpec,
    SWEEP_CONNECTIONS, SWEEP_PIPELINE, SWEEP_RUNAWAY,
};

/// `loadgen suite`: run every model through the lab's workloads and write a report.
#[derive(Debug, Clone, Args)]
pub struct SuiteArgs {
    /// The long matrix: more connection counts and idle counts, 5 repetitions, 3 s runs, 12
    /// sweep rates (about 600 runs of 4 s, plus the sweep's 25 per model and repetition,
    /// another 1,500: roughly 2.5 hours; the default takes about 8 minutes, 5 of them the
    /// sweep; --workloads echo,short,sleep,idle leaves it out).
    #[arg(long)]
    pub full: bool,

    /// Only these models (comma-separated short names: thread, thread-pool, fork,
    /// prefork-shared, prefork-locked, prefork-reuseport, prefork-eventloop-exclusive,
    /// prefork-eventloop-reuseport, eventloop-select, eventloop-poll, eventloop-epoll,
    /// eventloop-threads, uring, redis-server, or a name given with --server). The loop-per-core
    /// models run one loop per CPU the servers are given (half the machine when pinned).
    #[arg(long, value_delimiter = ',')]
    pub only: Option<Vec<String>>,

    /// Only these workloads (comma-separated: echo, short, sleep, idle, sweep). sweep is
    /// latency against offered load: each repetition measures a model's closed-loop capacity
    /// (one run), then offers open-loop fractions of it, fixed and Poisson arrivals, and the
    /// report gives each model's curve and its knee (see --sweep-slo, --sweep-points).
    #[arg(long, value_delimiter = ',')]
    pub workloads: Option<Vec<String>>,

    /// The sweep's objective: a model's knee is the highest offered rate whose p99 is at most
    /// this, below the first rate whose p99 is not (e.g. 1ms, 500us).
    #[arg(long, value_name = "DURATION", default_value = "1ms",
          value_parser = echolab_protocol::units::parse_duration)]
    pub sweep_slo: Duration,

    /// Offered rates of the sweep, evenly spaced over fractions of each model's capacity
    /// (default 6, from 20% to 120%; --full 12, from 10% to 120%).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=200))]
    pub sweep_points: Option<u32>,

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

    /// loadgen's engine for every run: epoll (readiness) or uring (io_uring completions).
    /// The same for every model, so the models stay comparable; compare two suites to
    /// compare the engines.
    #[arg(long, value_enum, default_value_t = Engine::Epoll)]
    pub engine: Engine,

    /// Count system calls per request, the server's and loadgen's, in every run (perf
    /// events on the raw_syscalls tracepoint: root, or kernel.perf_event_paranoid <= 1). Every
    /// system call on the machine costs a little more while they are counted, so the report's
    /// throughput is for the counts, not to be set beside an uncounted suite's.
    #[arg(long)]
    pub count_syscalls: bool,

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

/// Runs the suite; returns the report (also written to disk) or a message saying why it
/// could not run at all.
pub fn suite(args: &SuiteArgs) -> Result<SuiteReport, String> {
    let started = Instant::now();
    let load_before = crate::proc::load_average();
    let mut failures = Vec::new();
    let (repeat, plan) = plan(args, &mut failures)?;
    let bin_dir = find_bin_dir(args.bin_dir.as_deref())?;
    let placement = if args.no_pin { None } else { pin_halves() };
    let models = models(args, &bin_dir, server_cpu_count(placement.as_ref()))?;
    let (run_id, dir, scratch) = results_dir(args)?;

    let runs = run_all(
        &models,
        repeat,
        &plan,
        placement.as_ref(),
        &scratch,
        &mut failures,
    );
    let cells = assemble_cells(&models, &plan, &runs, &dir);
    let sweeps = assemble_sweeps(&models, repeat, &plan, &runs, &mut failures);
    if interrupted() {
        failures.push("interrupted: the report covers the runs completed before Ctrl-C".into());
    }
    let accept = accept_distributions(&models, runs.accepts);

    let machine = proc_machine();
    let report = SuiteReport {
        run_id,
        tool: format!("loadgen {}", env!("CARGO_PKG_VERSION")),
        machine,
        params: SuiteParams {
            repeat,
            duration_s: plan.duration.as_secs_f64(),
            warmup_s: plan.warmup.as_secs_f64(),
            connections: plan.connections,
            idle: plan.idle,
            full: args.full,
            placement: describe_placement(placement.as_ref()),
            engine: plan.engine.to_string(),
            count_syscalls: plan.count_syscalls,
            sweep: plan.sweep.as_ref().map(|s| SweepSettings {
                slo_p99_us: s.slo.as_micros() as u64,
                fractions: s.fractions.clone(),
                connections: SWEEP_CONNECTIONS,
                pipeline: SWEEP_PIPELINE,
                runaway: SWEEP_RUNAWAY,
            }),
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
        sweeps,
    };
    let _ = fs::remove_dir_all(&scratch);
    write_report(&report, &dir)?;
    Ok(report)
}

/// Whether Ctrl-C has cut the suite short.
fn interrupted() -> bool {
    run::INTERRUPTED.load(Ordering::Relaxed)
}

/// The matrix asked for, `--full`'s where a flag is not given: the repetitions, and the plan
/// of one. Idle counts the open-file limit cannot hold are dropped, with a note in `failures`.
fn plan(args: &SuiteArgs, failures: &mut Vec<String>) -> Result<(u32, Plan), String> {
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
    let (workloads, sweep) = pick_workloads(args.workloads.as_deref())?;
    if args.sweep_slo.is_zero() {
        return Err("--sweep-slo must be above 0".into());
    }
    let sweep = sweep.then(|| {
        let from = if full { 0.1 } else { 0.2 };
        let n = args.sweep_points.unwrap_or(if full { 12 } else { 6 });
        SweepSpec {
            slo: args.sweep_slo,
            fractions: fractions(from, 1.2, n),
        }
    });
    let (mut connections, mut idle) = (connections, idle);
    for list in [&mut connections, &mut idle] {
        list.sort_unstable();
        list.dedup();
    }

    let nofile = raise_nofile();
    let most_idle = idle.iter().copied().max().unwrap_or(0);
    if u64::from(most_idle) + 200 > nofile {
        let fit = nofile.saturating_sub(200) as u32;
        idle.retain(|&n| n <= fit);
        failures.push(format!(
            "note: the open-file limit is {nofile}: idle counts above {fit} were dropped"
        ));
    }
    if args.engine == Engine::Uring {
        if let Some(why) = crate::ring::unavailable() {
            return Err(why);
        }
    }
    let plan = Plan {
        engine: args.engine,
        count_syscalls: args.count_syscalls,
        duration,
        warmup,
        connections,
        idle,
        workloads,
        sweep,
    };
    Ok((repeat, plan))
}

/// The models to run: the standard ones built in `bin_dir` (a loop per server CPU where a
/// model runs one per core), then `--server`'s, less those `--only` leaves out.
fn models(args: &SuiteArgs, bin_dir: &Path, server_cpus: usize) -> Result<Vec<Model>, String> {
    let mut models = standard_models(bin_dir, args.workers, server_cpus);
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
    Ok(models)
}

/// The run's id, its results directory, and the scratch directory inside it where the runs
/// leave their files until the report is written; both directories created.
fn results_dir(args: &SuiteArgs) -> Result<(String, PathBuf, PathBuf), String> {
    let run_id = crate::clock::run_id("suite");
    let dir = args
        .results
        .clone()
        .unwrap_or_else(|| PathBuf::from("results").join(&run_id));
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let scratch = dir.join("runs");
    fs::create_dir_all(&scratch)
        .map_err(|e| format!("cannot create {}: {e}", scratch.display()))?;
    Ok((run_id, dir, scratch))
}

/// A cell's key: (model, workload, x).
type Key = (String, &'static str, u32);

/// What the runs gathered: by cell, the samples measured and why a run was unable or failed;
/// by model, the accept counts of prefork's workers summed over the repetitions, each
/// repetition's Jain index, and the sweep's capacities and rounds.
#[derive(Debug, Default)]
struct Runs {
    samples: BTreeMap<Key, Vec<Sample>>,
    unable: BTreeMap<Key, String>,
    failed: BTreeMap<Key, String>,
    accepts: BTreeMap<String, (Vec<u64>, Vec<f64>)>,
    sweeps: BTreeMap<String, SweepRuns>,
}

/// Every repetition of every model, interleaved (A B C A B C), until done or Ctrl-C.
fn run_all(
    models: &[Model],
    repeat: u32,
    plan: &Plan,
    placement: Option<&nix::sched::CpuSet>,
    scratch: &Path,
    failures: &mut Vec<String>,
) -> Runs {
    let mut runs = Runs::default();
    let total = repeat as usize * models.len();
    let mut done = 0;
    'reps: for rep in 0..repeat {
        for model in models {
            if interrupted() {
                break 'reps;
            }
            done += 1;
            eprintln!("[{done}/{total}] {} (repetition {})", model.name, rep + 1);
            run_model(model, rep, plan, placement, scratch, &mut runs, failures);
        }
    }
    runs
}

/// Repetition `rep` of one model: a fresh server, every workload of the plan against it (the
/// sweep last), the server stopped and checked, and its workers' accept counts read.
fn run_model(
    model: &Model,
    rep: u32,
    plan: &Plan,
    placement: Option<&nix::sched::CpuSet>,
    scratch: &Path,
    runs: &mut Runs,
    failures: &mut Vec<String>,
) {
    let stats_file = scratch.join(format!("{}-r{rep}.stats.json", model.name));
    let mut server = match Server::start(model, Some(&stats_file), placement) {
        Ok(s) => s,
        Err(e) => {
            failures.push(format!("{}: did not start: {e}", model.name));
            for (workload, x) in plan.runs() {
                let key = (model.name.clone(), workload.name(), x);
                runs.failed
                    .insert(key, format!("the server did not start: {e}"));
            }
            if plan.sweep.is_some() {
                let sweep = runs.sweeps.entry(model.name.clone()).or_default();
                sweep.failed.push(format!(
                    "repetition {}: the server did not start: {e}",
                    rep + 1
                ));
            }
            return;
        }
    };
    for (workload, x) in plan.runs() {
        let key = (model.name.clone(), workload.name(), x);
        if let Some(why) = cannot(model, workload, x) {
            runs.unable.insert(key, why);
            continue;
        }
        if interrupted() {
            break;
        }
        if !server.alive() {
            runs.failed
                .entry(key)
                .or_insert_with(|| "not run: the server had died".into());
            continue;
        }
        let hgrm = scratch.join(format!(
            "{}-{}-{x}-r{rep}.hgrm",
            model.name,
            workload.name()
        ));
        match run_one(model, &mut server, workload, x, plan, &hgrm) {
            // A run cut short by Ctrl-C is not a measurement.
            Ok(Outcome::Measured(report)) if report.interrupted => {}
            Err(_) if interrupted() => {}
            Ok(Outcome::Measured(report)) => {
                runs.samples.entry(key).or_default().push(Sample {
                    report: *report,
                    hgrm,
                });
            }
            Ok(Outcome::Unable(why)) => {
                runs.unable.insert(key, why);
            }
            Err(e) => {
                failures.push(format!(
                    "{} {} x{x} (repetition {}): {e}",
                    model.name,
                    workload.name(),
                    rep + 1
                ));
                runs.failed.insert(key, e);
            }
        }
    }
    if let Some(spec) = &plan.sweep {
        let sweep = runs.sweeps.entry(model.name.clone()).or_default();
        run_sweep(model, &mut server, rep, plan, spec, sweep, failures);
    }
    match server.stop() {
        Ok(()) => {}
        Err(e) => failures.push(format!("{}: {e}", model.name)),
    }
    if model.echolab {
        if let Some(per_worker) = worker_accepts(&stats_file) {
            // Jain's index per repetition: worker i of one repetition is not worker
            // i of the next, so summing first would even out what was uneven.
            let (sum, jains) = runs.accepts.entry(model.name.clone()).or_default();
            jains.push(jain(&per_worker));
            sum.resize(sum.len().max(per_worker.len()), 0);
            for (s, n) in sum.iter_mut().zip(per_worker) {
                *s += n;
            }
        }
    }
}

/// Repetition `rep` of the sweep against `model`'s running server: its capacity (one
/// closed-loop run), then one round of open-loop rates at fractions of it, both kept in
/// `sweep`. A capacity run or round that fails is a failure of the suite, named by model and
/// repetition; one cut short by Ctrl-C is dropped, as a cell's run is.
fn run_sweep(
    model: &Model,
    server: &mut Server,
    rep: u32,
    plan: &Plan,
    spec: &SweepSpec,
    sweep: &mut SweepRuns,
    failures: &mut Vec<String>,
) {
    if let Some(why) = cannot_sweep(model) {
        sweep.unable = Some(why);
        return;
    }
    if interrupted() {
        return;
    }
    if !server.alive() {
        // Its death is already a failure, of the run it happened in.
        sweep.failed.push(format!(
            "repetition {}: not run: the server had died",
            rep + 1
        ));
        return;
    }
    let mut fail = |sweep: &mut SweepRuns, why: String| {
        failures.push(format!(
            "{} sweep (repetition {}): {why}",
            model.name,
            rep + 1
        ));
        sweep.failed.push(format!("repetition {}: {why}", rep + 1));
    };
    let sweep_plan = match sweep_plan(model, server.addr, Some(server.pid()), plan, spec) {
        Ok(p) => p,
        Err(e) => return fail(sweep, e),
    };
    // Indented under the suite's "[n/N] model" line, as the rest of the model's output.
    let mut log = |line: &str| eprintln!("    sweep: {line}");
    let capacity = measure_capacity(&sweep_plan, 1, &mut log);
    // A capacity run cut short by Ctrl-C measured nothing, whatever it returned.
    if interrupted() {
        return;
    }
    let died = |server: &mut Server| {
        (!server.alive()).then(|| format!("the server died ({})", server.describe_exit()))
    };
    let capacity = match capacity {
        Ok(c) => c,
        Err(e) => {
            // The error ends with the run's whole summary: the failure keeps its first line.
            let first = e.lines().next().unwrap_or("").trim_end_matches(':');
            let why = died(server).map_or_else(
                || format!("capacity: {first}"),
                |d| format!("capacity: {d}"),
            );
            return fail(sweep, why);
        }
    };
    match round(&sweep_plan, capacity.rps, rep, &mut log) {
        Ok(mut r) => {
            if interrupted() {
                drop_last_run(&mut r);
            }
            if let Some(d) = died(server) {
                return fail(sweep, format!("{d} during the sweep"));
            }
            sweep.capacities.push(capacity);
            sweep.rounds.push(r);
        }
        Err(_) if interrupted() => {}
        Err(e) => fail(sweep, died(server).unwrap_or(e)),
    }
}

/// Each model's sweep, in model order; errors in a sweep's runs are failures of the suite
/// (16 requests in flight at most, one per connection, so even past the capacity nothing
/// should time out: an
/// error is the server's).
fn assemble_sweeps(
    models: &[Model],
    repeat: u32,
    plan: &Plan,
    runs: &Runs,
    failures: &mut Vec<String>,
) -> Vec<ModelSweep> {
    let Some(spec) = &plan.sweep else {
        return Vec::new();
    };
    let mut sweeps = Vec::new();
    for model in models {
        // The plan the repetitions ran, less their server's address and pid, with a round per
        // repetition: what the report says of the load.
        let unbound = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let sweep_plan =
            sweep_plan(model, unbound, None, plan, spec).map(|p| SweepPlan { repeat, ..p });
        let sweep = make_sweep(&model.name, sweep_plan, runs.sweeps.get(&model.name));
        if sweep.status == CellStatus::Ok && sweep.errors {
            failures.push(format!(
                "{} sweep: runs had errors: {}",
                model.name,
                sweep.notes.join("; ")
            ));
        }
        sweeps.push(sweep);
    }
    sweeps
}

/// One cell per model and (workload, x) of the plan, model by model: the tables' order.
fn assemble_cells(models: &[Model], plan: &Plan, runs: &Runs, dir: &Path) -> Vec<Cell> {
    let mut cells = Vec::new();
    for model in models {
        for (workload, x) in plan.runs() {
            let key = (model.name.clone(), workload.name(), x);
            cells.push(make_cell(
                &model.name,
                workload,
                x,
                runs.samples.get(&key).map(Vec::as_slice).unwrap_or(&[]),
                runs.unable.get(&key),
                runs.failed.get(&key),
                dir,
            ));
        }
    }
    cells
}

/// Prefork's accept distributions, one per prefork model that has counts, in model order
/// (not the map's).
fn accept_distributions(
    models: &[Model],
    mut accepts: BTreeMap<String, (Vec<u64>, Vec<f64>)>,
) -> Vec<AcceptDistribution> {
    models
        .iter()
        .filter(|m| m.name.starts_with("prefork"))
        .filter_map(|m| accepts.remove(&m.name).map(|a| (m.name.clone(), a)))
        .map(|(model, (per_worker, jains))| AcceptDistribution {
            jain: median(jains),
            model,
            per_worker,
        })
        .collect()
}

fn proc_machine() -> serde_json::Value {
    serde_json::to_value(crate::proc::machine_info()).unwrap_or(serde_json::Value::Null)
}

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
