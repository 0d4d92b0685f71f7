//! The suite's result, as data: what `report.json` holds, what `report.md` and the plots are
//! drawn from. Kept apart from the code that runs the suite so the renderings (Markdown,
//! SVG) depend only on this shape.

use serde::{Deserialize, Serialize};

use crate::config::Arrivals;

/// One whole suite run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SuiteReport {
    /// `YYYY-MM-DD-HHMMSS-suite`: the directory name under `results/`.
    pub run_id: String,
    /// `loadgen <version>`.
    pub tool: String,
    /// The machine, as `loadgen run --json` describes it.
    pub machine: serde_json::Value,
    /// What was asked for.
    pub params: SuiteParams,
    /// Every model and variant that was run, in table order.
    pub models: Vec<ModelInfo>,
    /// One cell per (model, workload, x): medians over the repetitions.
    pub cells: Vec<Cell>,
    /// Prefork only: connections accepted per worker under each accept mode.
    pub accept: Vec<AcceptDistribution>,
    /// Anything that went wrong: a model that crashed, left a process behind, failed a run.
    /// Empty on a clean suite.
    pub failures: Vec<String>,
    /// Seconds the whole suite took.
    pub elapsed_s: f64,
    /// Load averages (1, 5, 15 minutes) before the first run and after the last: a suite
    /// run on a machine already busy says so in its report.
    #[serde(default)]
    pub load_before: Option<[f64; 3]>,
    /// Load averages after the last run.
    #[serde(default)]
    pub load_after: Option<[f64; 3]>,
    /// The sweep workload: latency against offered load, one per model, in model order
    /// (empty when the sweep was not run, and in reports from before it existed).
    #[serde(default)]
    pub sweeps: Vec<ModelSweep>,
}

/// The suite's parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SuiteParams {
    /// Repetitions of every (model, workload) run, interleaved across models.
    pub repeat: u32,
    /// Measured seconds per run.
    pub duration_s: f64,
    /// Warmup seconds per run.
    pub warmup_s: f64,
    /// Connections for the echo workload.
    pub connections: Vec<u32>,
    /// Idle connections held open for the idle workload.
    pub idle: Vec<u32>,
    /// The `--full` matrix was asked for.
    pub full: bool,
    /// Where the processes ran: "servers on CPUs [..], loadgen on [..]", or "unpinned".
    #[serde(default)]
    pub placement: String,
    /// loadgen's engine in every run: "epoll" or "uring" (reports from before the engines
    /// were two: epoll).
    #[serde(default = "epoll")]
    pub engine: String,
    /// Whether system calls were counted (`--count-syscalls`), which slows every call.
    #[serde(default)]
    pub count_syscalls: bool,
    /// How the sweep workload ran, when it did.
    #[serde(default)]
    pub sweep: Option<SweepSettings>,
}

/// What a report from before `--engine` ran with.
fn epoll() -> String {
    "epoll".into()
}

/// The sweep workload's settings, the same for every model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepSettings {
    /// The objective the knee is judged against: p99 at most this, µs.
    pub slo_p99_us: u64,
    /// The offered rates as fractions of each model's capacity, lowest first.
    pub fractions: Vec<f64>,
    /// Connections of every run (capacity and open loop).
    pub connections: u32,
    /// Requests in flight per connection.
    pub pipeline: u32,
    /// A curve stops climbing (for the repetition) past this many times the SLO.
    pub runaway: f64,
}

/// One model or variant.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Short name used in tables and plots: `thread`, `thread-pool`, `fork`,
    /// `prefork-shared`, `prefork-locked`, `prefork-reuseport`, `eventloop-select`,
    /// `eventloop-poll`, `eventloop-epoll`, `redis-server`.
    pub name: String,
    /// The command line it was started with (without the address).
    pub command: String,
}

/// Which workload a cell measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Workload {
    /// Echo 64 B, closed loop, over `x` persistent connections.
    Echo,
    /// One request per connection (connect, request, close), 16 connection slots.
    Short,
    /// SLEEP 1 ms at 16 connections: a blocking handler.
    Sleep,
    /// `x` idle connections held open while one connection measures echo latency.
    Idle,
}

impl Workload {
    /// The name used in tables.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Echo => "echo",
            Workload::Short => "short",
            Workload::Sleep => "sleep",
            Workload::Idle => "idle",
        }
    }
}

/// Whether a cell has figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CellStatus {
    /// Measured.
    Ok,
    /// The model cannot do this by its nature (select past FD_SETSIZE, SLEEP in RESP):
    /// shown as such, not as a failure.
    Unable,
    /// A run failed (errors, a crash): see `note` and the suite's failures.
    Failed,
}

/// The figures of one (model, workload, x), medians over the repetitions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cell {
    /// The model's short name.
    pub model: String,
    /// The workload.
    pub workload: Workload,
    /// Connections (echo), idle connections (idle), or the connection slots (short, sleep).
    pub x: u32,
    /// Measured, unable, or failed.
    pub status: CellStatus,
    /// Why unable or failed, or what the errors of a measured cell were.
    pub note: Option<String>,
    /// Repetitions that produced figures.
    pub runs: u32,
    /// Connections each run opened (for the idle workload: the one measuring connection).
    #[serde(default)]
    pub connections: u32,
    /// Connections that got at least one verified reply (median over the repetitions). Below
    /// `connections`, the cell is partial: a bounded model left the others waiting, and its
    /// figures describe only those it served.
    #[serde(default)]
    pub served: Option<f64>,
    /// Errors over all repetitions.
    #[serde(default)]
    pub errors: u64,
    /// Requests over all repetitions, by outcome (see `loadgen::stats::Counts`): verified;
    /// certainly not run (never fully written, or refused); written with no good reply, so
    /// they may have run.
    #[serde(default)]
    pub ok: u64,
    /// Requests that failed, over all repetitions.
    #[serde(default)]
    pub failed: u64,
    /// Requests left indeterminate, over all repetitions.
    #[serde(default)]
    pub indeterminate: u64,
    /// Verified replies per second (median).
    pub throughput_rps: f64,
    /// Latency percentiles in µs (medians of each percentile).
    pub p50_us: f64,
    /// 90th percentile, µs.
    pub p90_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
    /// 99.9th percentile, µs.
    pub p999_us: f64,
    /// Largest, µs.
    pub max_us: f64,
    /// Server CPU µs per request (median).
    pub server_cpu_us_per_req: Option<f64>,
    /// Server context switches per request (median).
    pub server_ctx_per_req: Option<f64>,
    /// `--count-syscalls`: the server tree's system calls per request (median).
    #[serde(default)]
    pub server_syscalls_per_req: Option<f64>,
    /// `--count-syscalls`: loadgen's system calls per request (median).
    #[serde(default)]
    pub client_syscalls_per_req: Option<f64>,
    /// Server PSS at the end of the window, KiB (median).
    pub server_pss_kib: Option<f64>,
    /// Server RSS at the end of the window, KiB (median).
    pub server_rss_kib: Option<f64>,
    /// Server processes at the peak (median).
    pub server_processes: Option<f64>,
    /// Server threads at the peak (median).
    pub server_threads: Option<f64>,
    /// The latency distribution of the run with the median p50, as (percentile in 0..100,
    /// latency µs) pairs from HdrHistogram's quantile iteration: what the spectrum plots draw.
    pub spectrum: Vec<(f64, f64)>,
    /// That run's `.hgrm` file, relative to the report's directory.
    pub hgrm: Option<String>,
}

impl Cell {
    /// Whether some connections were never served: the figures then describe the others
    /// only, and must not be read (or ranked, or plotted) as the model's at `connections`.
    pub fn partial(&self) -> bool {
        self.status == CellStatus::Ok
            && self.served.is_some_and(|s| s < f64::from(self.connections))
    }
}

/// Prefork: how one accept mode spread connections over the workers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AcceptDistribution {
    /// The model's short name (`prefork-shared`, ...).
    pub model: String,
    /// Connections accepted by each worker, summed over the repetitions.
    pub per_worker: Vec<u64>,
    /// Jain's fairness index of `per_worker` (1.0 = perfectly even).
    pub jain: f64,
}

/// One model's latency against offered load: `loadgen sweep`'s report, less what changes from
/// one repetition's server to the next (its address), in types that can be read back.
///
/// Its capacity and curves are the sweep's own types (`lab::sweep::report`), so a reader of
/// either file finds the same shape.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelSweep {
    /// The model's short name.
    pub model: String,
    /// Measured, unable (a bounded model that cannot serve the sweep's connections at once),
    /// or failed (no repetition measured a capacity).
    pub status: CellStatus,
    /// Why unable or failed, or which repetitions failed.
    pub note: Option<String>,
    /// Protocol, op, payload, connections, pipeline and threads, as `loadgen sweep` prints
    /// them.
    pub load: String,
    /// The closed-loop capacity: the median of one run per repetition.
    pub capacity: Option<SweepCapacity>,
    /// One curve per arrival process (fixed, then Poisson).
    pub curves: Vec<SweepCurve>,
    /// The sweep's notes: runs with errors, an interruption.
    pub notes: Vec<String>,
    /// Some run had errors (failed or indeterminate requests, or errors of any kind).
    pub errors: bool,
}

impl ModelSweep {
    /// The curve of `arrivals`, if it was swept.
    pub fn curve(&self, arrivals: Arrivals) -> Option<&SweepCurve> {
        self.curves.iter().find(|c| c.arrivals == arrivals)
    }
}

/// The sweep's own types, under the names the suite's files use: they read back from
/// `report.json` as `loadgen sweep --json` writes them.
pub use crate::lab::sweep::report::{
    Capacity as SweepCapacity, Curve as SweepCurve, Knee as SweepKnee, Point as SweepPoint,
};
