//! The suite's cells: what the repeated runs of one (model, workload, x) add up to, how
//! evenly prefork's workers shared `accept`, and what one model's sweep rounds add up to.
//!
//! A cell is built once every repetition has run, from the samples the loop kept: only their
//! medians, and the median run's `.hgrm`, reach the report, so the loop itself never has to
//! decide what a figure is. A sweep likewise: each repetition leaves a capacity and a round,
//! and `lab::sweep::summarise` merges the rounds point by point.

use std::fs;
use std::path::{Path, PathBuf};

use super::report::{Cell, CellStatus, ModelSweep, Workload};
use crate::lab::sweep::report::{Capacity, SweepReport};
use crate::lab::sweep::{summarise, Round, SweepPlan};
use crate::stats::median;

/// What one run of one (model, workload, x) measured.
#[derive(Debug, Clone)]
pub(super) struct Sample {
    pub(super) report: crate::report::Report,
    pub(super) hgrm: PathBuf,
}

pub(super) fn worker_accepts(stats_file: &Path) -> Option<Vec<u64>> {
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
pub(super) fn jain(xs: &[u64]) -> f64 {
    let sum: f64 = xs.iter().map(|&x| x as f64).sum();
    let squares: f64 = xs.iter().map(|&x| (x as f64) * (x as f64)).sum();
    if squares == 0.0 {
        0.0
    } else {
        sum * sum / (xs.len() as f64 * squares)
    }
}

fn median_opt(xs: Vec<Option<f64>>) -> Option<f64> {
    let vals: Vec<f64> = xs.into_iter().flatten().collect();
    (!vals.is_empty()).then(|| median(vals))
}

pub(super) fn make_cell(
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
    // A figure the server's cost has only sometimes (PSS, system-call counts).
    let srv_opt = |get: &dyn Fn(&crate::proc::ServerCost) -> Option<f64>| {
        median_opt(
            samples
                .iter()
                .map(|s| s.report.server.as_ref().and_then(get))
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
    let outcome = |get: &dyn Fn(&crate::stats::Counts) -> u64| -> u64 {
        samples.iter().map(|s| get(&s.report.counts)).sum()
    };
    let (ok, failed, indeterminate) = (
        outcome(&|c| c.ok),
        outcome(&|c| c.failed),
        outcome(&|c| c.indeterminate),
    );
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
            "{errors} errors over {} runs ({}; requests {ok} ok, {failed} failed, {indeterminate} indeterminate): {why}",
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
        ok,
        failed,
        indeterminate,
        throughput_rps: f(&|r| r.throughput_rps),
        p50_us: f(&|r| r.latency_us.p50 as f64),
        p90_us: f(&|r| r.latency_us.p90 as f64),
        p99_us: f(&|r| r.latency_us.p99 as f64),
        p999_us: f(&|r| r.latency_us.p999 as f64),
        max_us: f(&|r| r.latency_us.max as f64),
        server_cpu_us_per_req: srv(&|s| s.cpu_us_per_request),
        server_ctx_per_req: srv(&|s| s.ctx_per_request),
        server_syscalls_per_req: srv_opt(&|s| s.syscalls_per_request),
        client_syscalls_per_req: median_opt(
            samples
                .iter()
                .map(|s| s.report.client_cpu.syscalls_per_request)
                .collect(),
        ),
        server_pss_kib: srv_opt(&|s| s.pss_kib.map(|k| k as f64)),
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

/// What the sweep workload gathered for one model: each repetition's capacity and round (a
/// repetition that failed leaves neither), why the model cannot sweep, or why repetitions
/// failed.
#[derive(Debug, Default)]
pub(super) struct SweepRuns {
    pub(super) capacities: Vec<Capacity>,
    pub(super) rounds: Vec<Round>,
    pub(super) unable: Option<String>,
    pub(super) failed: Vec<String>,
}

/// One model's sweep from its repetitions: the capacity is the median of theirs (the CPU per
/// request too), the points the rounds merged by `summarise`. `plan` is the model's sweep
/// plan (its address aside, what every repetition ran); `runs` is `None` when no repetition
/// reached the sweep (Ctrl-C before it).
pub(super) fn make_sweep(
    model: &str,
    plan: Result<SweepPlan, String>,
    runs: Option<&SweepRuns>,
) -> ModelSweep {
    let empty = SweepRuns::default();
    let runs = runs.unwrap_or(&empty);
    let failed = |note: String| ModelSweep {
        model: model.into(),
        status: CellStatus::Failed,
        note: Some(note),
        load: String::new(),
        capacity: None,
        curves: Vec::new(),
        notes: Vec::new(),
        errors: false,
    };
    let plan = match plan {
        Ok(p) => p,
        Err(e) => return failed(e),
    };
    let rps: Vec<f64> = runs.capacities.iter().map(|c| c.rps).collect();
    let cpu: Vec<f64> = runs
        .capacities
        .iter()
        .filter_map(|c| c.server_cpu_us)
        .collect();
    let capacity = Capacity {
        rps: if rps.is_empty() {
            0.0
        } else {
            median(rps.clone())
        },
        runs: rps,
        server_cpu_us: (!cpu.is_empty()).then(|| median(cpu)),
    };
    let measured = !runs.capacities.is_empty();
    // With no round, `summarise` still says what the load was, for the unable and failed
    // rows.
    let report = summarise(&plan, capacity, if measured { &runs.rounds } else { &[] });
    let mut sweep = from_report(model, report);
    if let Some(why) = &runs.unable {
        sweep.status = CellStatus::Unable;
        sweep.note = Some(why.clone());
    } else if !measured {
        sweep.status = CellStatus::Failed;
        sweep.note = Some(if runs.failed.is_empty() {
            "not run".into()
        } else {
            runs.failed.join("; ")
        });
    } else if !runs.failed.is_empty() {
        sweep.note = Some(runs.failed.join("; "));
    }
    if sweep.status != CellStatus::Ok {
        (sweep.capacity, sweep.curves) = (None, Vec::new());
    }
    sweep
}

/// `loadgen sweep`'s report as the suite keeps it.
fn from_report(model: &str, r: SweepReport) -> ModelSweep {
    ModelSweep {
        model: model.into(),
        status: CellStatus::Ok,
        note: None,
        load: r.params.load,
        capacity: Some(r.capacity),
        curves: r.curves,
        notes: r.notes,
        errors: r.errors,
    }
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
}
