//! The suite's report as text: the Markdown of `report.md`, the tables `loadgen suite` prints,
//! and the outcome line that opens both.
//!
//! These read only a [`SuiteReport`], never the runs, so a stored `report.json` renders as
//! the live suite did; each table of a cell workload links to the experiment in
//! docs/experiments.md it answers. The sweep's tables (each model's knee, and its p99 at each
//! offered load) follow them.

use std::path::Path;

use super::report::{Cell, CellStatus, ModelSweep, SuiteReport, SweepCurve, Workload};
use crate::config::Arrivals;

/// docs/experiments.md relative to the report directory `dir`, if `dir` lies inside an
/// echolab checkout (so the report's links work where it is committed, under results/).
pub(super) fn experiments_doc(dir: &Path) -> Option<String> {
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
                "{} at {} ({:.0} of {} served, {} errors, {} failed and {} indeterminate requests over {} runs)",
                c.model,
                match c.workload {
                    Workload::Echo => format!("{} connections", c.x),
                    w => format!("{} x{}", w.name(), c.x),
                },
                c.served.unwrap_or(0.0),
                c.connections,
                c.errors,
                c.failed,
                c.indeterminate,
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
the model cannot run this workload by its nature. A † note counts the rows' requests by outcome: **ok** verified, **failed** certainly not run (never fully written, or refused), **indeterminate** written with no good reply, so they may have run. Prefork's table gives **Jain's index** of \
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
    s.push_str(&syscall_table(report));
    s.push_str(&sweep_tables(report));
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

/// The knee's three columns of one curve: req/s, % of the capacity, p99 µs; "none" when not
/// even the lowest rate met the SLO.
fn knee_columns(curve: Option<&SweepCurve>) -> String {
    match curve.map(|c| c.knee) {
        None => "not swept | | ".into(),
        Some(None) => "none | | ".into(),
        // "≥": every rate swept met the SLO, and the knee is further up.
        Some(Some(k)) => format!(
            "{}{:.0} | {:.0}% | {}",
            if k.lower_bound { "≥ " } else { "" },
            k.offered_rps,
            100.0 * k.utilisation,
            k.p99_us
        ),
    }
}

/// One curve's p99 at its `i`th rate, as the sweep's p99 table writes it.
fn p99_at(curve: Option<&SweepCurve>, i: usize, slo_us: u64) -> String {
    match curve.and_then(|c| c.points.get(i)) {
        None => "–".into(),
        Some(p) if p.runs == 0 => "–".into(),
        Some(p) if !p.achieved => "n/a".into(),
        Some(p) if p.p99_us > slo_us => format!("**{}**", p.p99_us),
        Some(p) => p.p99_us.to_string(),
    }
}

/// The sweep's tables: each model's capacity and knees, then its p99 at each offered load;
/// empty when the sweep was not run.
fn sweep_tables(report: &SuiteReport) -> String {
    let sweeps = &report.sweeps;
    if sweeps.is_empty() {
        return String::new();
    }
    let settings = report.params.sweep.as_ref();
    // The fractions every model was offered (the settings'; a report without them: the first
    // curve's).
    let fractions: Vec<f64> = settings.map(|p| p.fractions.clone()).unwrap_or_else(|| {
        (sweeps.iter().flat_map(|w| w.curves.first()))
            .next()
            .map(|c| c.points.iter().map(|p| p.utilisation).collect())
            .unwrap_or_default()
    });
    let slo_us = settings.map_or(0, |p| p.slo_p99_us);
    let (connections, pipeline) = settings.map_or((0, 0), |p| (p.connections, p.pipeline));
    let span = match (fractions.first(), fractions.last()) {
        (Some(lo), Some(hi)) => format!("{:.0}% to {:.0}%", 100.0 * lo, 100.0 * hi),
        _ => "fractions".into(),
    };
    let mut s = format!(
        "\n### latency against offered load: the knee (SLO p99 ≤ {})\n\n",
        fmt_latency_words(slo_us)
    );
    s.push_str(&format!(
        "Each repetition measured a model's closed-loop capacity (one run of echo 64 B over \
         {connections} connections, {pipeline} in flight on each; RESP's ECHO for redis-server), \
         then offered it {} open-loop rates from {span} of that capacity, fixed and Poisson \
         arrivals side by side; a point's figures are medians over the repetitions. The **knee** is the \
         highest offered rate whose median p99 meets the SLO, below the first rate that does \
         not; a rate loadgen did not achieve (its exit-3 rule: the client fell behind its \
         schedule or sent under 99% of it) never counts. **≥**: every rate swept met it, and the \
         knee is further up. **none**: not even the lowest rate met \
         the SLO. Server CPU per request is from the capacity runs.\n\n",
        fractions.len()
    ));
    s.push_str("| model | capacity req/s | server CPU µs/req | knee, fixed arrivals: req/s | % of capacity | p99 µs | knee, Poisson arrivals: req/s | % of capacity | p99 µs |\n");
    s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let flagged = |w: &ModelSweep| w.note.is_some() || !w.notes.is_empty();
    for w in sweeps {
        let Some(capacity) = w.capacity.as_ref().filter(|_| w.status == CellStatus::Ok) else {
            s.push_str(&format!(
                "| {} | {} | | | | | | | |\n",
                w.model,
                match w.status {
                    CellStatus::Unable => format!("unable: {}", w.note.as_deref().unwrap_or("")),
                    _ => format!("**FAILED**: {}", w.note.as_deref().unwrap_or("")),
                }
            ));
            continue;
        };
        s.push_str(&format!(
            "| {}{} | {:.0} | {} | {} | {} |\n",
            w.model,
            if flagged(w) { " †" } else { "" },
            capacity.rps,
            fmt_opt(capacity.server_cpu_us, 1),
            knee_columns(w.curve(Arrivals::Fixed)),
            knee_columns(w.curve(Arrivals::Poisson)),
        ));
    }
    let measured: Vec<&ModelSweep> = sweeps
        .iter()
        .filter(|w| w.status == CellStatus::Ok)
        .collect();
    if !measured.is_empty() && !fractions.is_empty() {
        s.push_str(&format!(
            "\np99 µs at each offered load (a share of the model's capacity above), fixed / \
             Poisson arrivals: **bold** over the SLO; n/a not achieved; – not run (the curve had \
             run away below).\n\n| model |{}\n|---|{}\n",
            fractions
                .iter()
                .map(|f| format!(" {:.0}% |", 100.0 * f))
                .collect::<String>(),
            "---:|".repeat(fractions.len())
        ));
        for w in &measured {
            let (fixed, poisson) = (w.curve(Arrivals::Fixed), w.curve(Arrivals::Poisson));
            s.push_str(&format!("| {} |", w.model));
            for i in 0..fractions.len() {
                s.push_str(&format!(
                    " {} / {} |",
                    p99_at(fixed, i, slo_us),
                    p99_at(poisson, i, slo_us)
                ));
            }
            s.push('\n');
        }
    }
    let notes: Vec<String> = (sweeps.iter())
        .filter(|w| w.status == CellStatus::Ok && flagged(w))
        .map(|w| {
            let all: Vec<&str> = w.note.iter().chain(&w.notes).map(String::as_str).collect();
            format!("† {}: {}", w.model, all.join("; "))
        })
        .collect();
    if !notes.is_empty() {
        s.push('\n');
        s.push_str(&notes.join("\n"));
        s.push('\n');
    }
    s
}

/// An SLO as a heading says it: `1 ms`, `500 µs`.
fn fmt_latency_words(us: u64) -> String {
    if us >= 1000 && us % 1000 == 0 {
        format!("{} ms", us / 1000)
    } else if us >= 1000 {
        format!("{:.1} ms", us as f64 / 1000.0)
    } else {
        format!("{us} µs")
    }
}

/// `--count-syscalls`: system calls per request of each model's server and of loadgen, per
/// workload and setting; empty when none were counted.
fn syscall_table(report: &SuiteReport) -> String {
    let counted: Vec<&Cell> = report
        .cells
        .iter()
        .filter(|c| c.server_syscalls_per_req.is_some() || c.client_syscalls_per_req.is_some())
        .collect();
    if counted.is_empty() {
        return String::new();
    }
    let mut s = format!(
        "\n### System calls per request (--count-syscalls, loadgen's {} engine)\n\n\
         Counted by the kernel (the raw_syscalls tracepoint) over each measured window, medians of \
         the repetitions. Counting slows every system call, so this suite's throughput is not to \
         be set beside an uncounted one's.\n\n\
         | model | workload | setting | server | loadgen |\n|---|---|---:|---:|---:|\n",
        report.params.engine
    );
    for c in counted {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            c.model,
            c.workload.name(),
            c.x,
            fmt_opt(c.server_syscalls_per_req, 2),
            fmt_opt(c.client_syscalls_per_req, 2),
        ));
    }
    s
}

pub(super) fn markdown(report: &SuiteReport, plots: &[String], docs: Option<&str>) -> String {
    let p = &report.params;
    let mut s = format!(
        "# echolab suite {}\n\n{} repetitions, interleaved across models; {} s measured after {} s warmup per run; \
         every figure is the median of the repetitions; {}; loadgen's {} engine. Machine: {}. {} models, {:.0} s in all.\n\
         echolab's servers speak the binary protocol; redis-server (a reference, when installed) speaks RESP (ECHO).\n",
        report.run_id,
        p.repeat,
        p.duration_s,
        p.warmup_s,
        p.placement,
        p.engine,
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
    use crate::lab::suite::report::{
        Cell, ModelInfo, SuiteParams, SweepCapacity, SweepKnee, SweepPoint, SweepSettings,
    };
    use std::fs;

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
            ok: 1000,
            failed: 0,
            indeterminate: errors,
            throughput_rps: 100_000.0,
            p50_us: 100.0,
            p90_us: 150.0,
            p99_us: 200.0,
            p999_us: 300.0,
            max_us: 900.0,
            server_cpu_us_per_req: Some(5.0),
            server_ctx_per_req: Some(1.0),
            server_syscalls_per_req: None,
            client_syscalls_per_req: None,
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
                engine: "epoll".into(),
                count_syscalls: false,
                sweep: None,
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
            sweeps: vec![],
        }
    }

    /// A curve at 20%, 60% and 100% of `capacity` with these p99s (`None`: not achieved,
    /// `Some(0)` with no runs: not run), its knee as the sweep decides it.
    fn curve(
        arrivals: &str,
        capacity: f64,
        p99: [Option<u64>; 3],
        knee: Option<usize>,
    ) -> SweepCurve {
        let points: Vec<SweepPoint> = [0.2, 0.6, 1.0]
            .iter()
            .zip(p99)
            .map(|(f, p)| SweepPoint {
                offered_rps: f * capacity,
                utilisation: *f,
                runs: if p == Some(0) { 0 } else { 3 },
                achieved: p.is_some_and(|p| p > 0),
                p99_us: p.unwrap_or(0),
                ..SweepPoint::default()
            })
            .collect();
        SweepCurve {
            arrivals: arrivals.parse().expect("fixed or poisson"),
            knee: knee.map(|i| SweepKnee {
                offered_rps: points[i].offered_rps,
                utilisation: points[i].utilisation,
                p99_us: points[i].p99_us,
                lower_bound: false,
            }),
            points,
        }
    }

    /// The knee table names each model's capacity and knees (or "none"), the unable model
    /// and why, and the p99 table marks what missed the SLO, was not achieved, or not run.
    #[test]
    fn the_sweep_tables_give_each_models_knee() {
        let mut r = report(vec![]);
        r.params.sweep = Some(SweepSettings {
            slo_p99_us: 1000,
            fractions: vec![0.2, 0.6, 1.0],
            connections: 16,
            pipeline: 4,
            runaway: 10.0,
        });
        let measured = |model: &str, capacity: f64, curves: Vec<SweepCurve>| ModelSweep {
            model: model.into(),
            status: CellStatus::Ok,
            note: None,
            load: String::new(),
            capacity: Some(SweepCapacity {
                rps: capacity,
                runs: vec![capacity],
                server_cpu_us: Some(2.5),
            }),
            curves,
            notes: vec![],
            errors: false,
        };
        r.sweeps = vec![
            measured(
                "thread",
                10_000.0,
                vec![
                    curve(
                        "fixed",
                        10_000.0,
                        [Some(300), Some(800), Some(5000)],
                        Some(1),
                    ),
                    curve("poisson", 10_000.0, [Some(1500), Some(0), Some(0)], None),
                ],
            ),
            ModelSweep {
                status: CellStatus::Unable,
                note: Some("4 workers".into()),
                capacity: None,
                curves: vec![],
                ..measured("thread-pool", 0.0, vec![])
            },
            measured(
                "eventloop-epoll",
                100_000.0,
                vec![
                    curve("fixed", 100_000.0, [Some(100), Some(200), None], Some(1)),
                    curve("poisson", 100_000.0, [Some(100), Some(400), None], Some(1)),
                ],
            ),
        ];
        let md = markdown(&r, &[], None);
        let row = |model: &str, after: &str| {
            let at = md
                .find(after)
                .unwrap_or_else(|| panic!("no {after:?}\n{md}"));
            md[at..]
                .lines()
                .find(|l| l.starts_with(&format!("| {model} ")))
                .unwrap_or_else(|| panic!("no row for {model}\n{md}"))
                .to_string()
        };
        assert!(
            md.contains("### latency against offered load: the knee (SLO p99 ≤ 1 ms)"),
            "{md}"
        );
        assert!(
            md.contains("The **knee** is the highest offered rate"),
            "{md}"
        );
        assert_eq!(
            row("thread", "| model | capacity"),
            "| thread | 10000 | 2.5 | 6000 | 60% | 800 | none | |  |"
        );
        assert!(
            row("thread-pool", "| model | capacity").contains("unable: 4 workers"),
            "{md}"
        );
        assert_eq!(
            row("eventloop-epoll", "| model | capacity"),
            "| eventloop-epoll | 100000 | 2.5 | 60000 | 60% | 200 | 60000 | 60% | 400 |"
        );
        assert_eq!(
            row("thread", "| model | 20% | 60% | 100% |"),
            "| thread | 300 / **1500** | 800 / – | **5000** / – |"
        );
        assert_eq!(
            row("eventloop-epoll", "| model | 20% | 60% | 100% |"),
            "| eventloop-epoll | 100 / 100 | 200 / 400 | n/a / n/a |"
        );
        // The printed tables carry them too; a report without a sweep has neither table.
        assert!(tables(&r).contains("| eventloop-epoll | 100000 |"));
        r.sweeps.clear();
        assert!(!markdown(&r, &[], None).contains("the knee"));
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
}
