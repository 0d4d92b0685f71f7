//! A sweep's result as data: each offered rate's figures, the knee, and the table people read.
//!
//! The knee is decided here, from the points alone, so the suite and `loadgen sweep` draw the
//! same line: walking up from the lowest rate, the last one that was achieved and met the SLO
//! before the first that did not (or was not achieved, or not run). A curve that wobbles back
//! under the SLO above a miss does not move the knee up: past the first miss the server is no
//! longer reliably within its objective, and the noise of a shared machine is not a second
//! chance.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::config::Arrivals;
use crate::stats::fmt_us;

/// Everything one sweep measured.
#[derive(Debug, Clone, Serialize)]
pub struct SweepReport {
    /// `loadgen <version>`.
    pub tool: String,
    /// What was asked for.
    pub params: SweepParams,
    /// The closed-loop capacity the rates are fractions of.
    pub capacity: Capacity,
    /// One curve per arrival process.
    pub curves: Vec<Curve>,
    /// Anything worth a line (a run that failed, a curve that stopped early and why).
    pub notes: Vec<String>,
    /// Some run had errors: failed or indeterminate requests, or errors of any kind.
    pub errors: bool,
    /// Cut short by SIGINT or SIGTERM.
    pub interrupted: bool,
}

/// The sweep's parameters (the runs' own are each run's `params`; these say how they were
/// chosen).
#[derive(Debug, Clone, Serialize)]
pub struct SweepParams {
    /// Server address.
    pub addr: String,
    /// Protocol, connections, pipeline, op and payload, as `loadgen run` would print them.
    pub load: String,
    /// The objective the knee is judged against: p99 at most this, µs.
    pub slo_p99_us: u64,
    /// The offered rates as fractions of the capacity, lowest first.
    pub fractions: Vec<f64>,
    /// Measured time per run, s.
    pub step_s: f64,
    /// Warmup per run, s.
    pub warmup_s: f64,
    /// Rounds (each rate is run once per round and arrival process).
    pub repeat: u32,
    /// A curve stops climbing after two rates in a row whose p99 is above this many times the
    /// SLO (or whose rate was not achieved).
    pub runaway: f64,
}

/// The closed-loop capacity.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Capacity {
    /// The median of the runs, requests per second.
    pub rps: f64,
    /// Each run's throughput (empty when given with `--capacity`).
    pub runs: Vec<f64>,
    /// The server's CPU per request in those runs (median), with `--server-pid`.
    pub server_cpu_us: Option<f64>,
}

/// Latency against offered load for one arrival process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Curve {
    /// `fixed` or `poisson`.
    pub arrivals: Arrivals,
    /// One point per offered rate, lowest first (those never run included, with no runs).
    pub points: Vec<Point>,
    /// The highest rate achieved within the SLO below the first that was not (`None`: not
    /// even the lowest; `lower_bound` when no rate swept was not).
    pub knee: Option<Knee>,
}

/// One offered rate's runs, summarised.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Point {
    /// The rate asked for, requests per second.
    pub offered_rps: f64,
    /// It as a fraction of the capacity: the utilisation it offers.
    pub utilisation: f64,
    /// Runs made at this rate (a round that stopped below it made none).
    pub runs: u32,
    /// Of those, runs that were valid measurements (`loadgen run`'s exit-3 rule: the client
    /// kept its schedule and sent at least 99% of the timetable).
    pub valid_runs: u32,
    /// Achieved: most of its runs were valid. Only then are its latencies reported.
    pub achieved: bool,
    /// The rate sent (median over the runs made).
    pub achieved_rps: f64,
    /// Medians over the valid runs, µs (0 when not achieved).
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest.
    pub max_us: u64,
    /// Errors, failed and indeterminate requests, summed over its runs.
    pub errors: u64,
    /// The server's CPU per request (median over the runs), with `--server-pid`.
    pub server_cpu_us: Option<f64>,
    /// Why a run was not valid, once per distinct reason.
    pub invalid_reasons: Vec<String>,
}

impl Point {
    /// Achieved, and its p99 within `slo_us`.
    pub fn meets(&self, slo_us: u64) -> bool {
        self.achieved && self.runs > 0 && self.p99_us <= slo_us
    }
}

/// Where the latency leaves the objective.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Knee {
    /// The highest rate within the SLO (see the module's rule), requests per second.
    pub offered_rps: f64,
    /// It over the capacity.
    pub utilisation: f64,
    /// Its p99, µs.
    pub p99_us: u64,
    /// Every rate swept met the SLO: the knee is somewhere above, and this is only as far
    /// as the sweep went (sweep higher with `--to`).
    #[serde(default)]
    pub lower_bound: bool,
}

/// The knee of `points` (lowest rate first) against `slo_us`.
pub fn knee(points: &[Point], slo_us: u64) -> Option<Knee> {
    let good = points.iter().take_while(|p| p.meets(slo_us)).count();
    let last = points.get(good.checked_sub(1)?)?;
    Some(Knee {
        offered_rps: last.offered_rps,
        utilisation: last.utilisation,
        p99_us: last.p99_us,
        lower_bound: good == points.len(),
    })
}

impl SweepReport {
    /// The tables people read: a row per rate, per arrival process, and the knees.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let p = &self.params;
        let _ = writeln!(
            s,
            "loadgen sweep: {} {}; SLO p99 <= {}; {} s runs after {} s warmup, {} round(s)",
            p.addr,
            p.load,
            fmt_us(p.slo_p99_us),
            p.step_s,
            p.warmup_s,
            p.repeat
        );
        let c = &self.capacity;
        let runs: Vec<String> = c.runs.iter().map(|r| format!("{r:.0}")).collect();
        let _ = writeln!(
            s,
            "  capacity    {:.0} req/s closed loop{}{}",
            c.rps,
            if runs.is_empty() {
                " (given)".to_string()
            } else {
                format!(" (median of {})", runs.join(", "))
            },
            c.server_cpu_us
                .map(|u| format!("; server {u:.1} µs CPU per request"))
                .unwrap_or_default()
        );
        for curve in &self.curves {
            let _ = writeln!(s, "  {} arrivals", curve.arrivals);
            let _ = writeln!(
                s,
                "    {:>9} {:>6} {:>10} {:>9} {:>9} {:>9} {:>9} {:>6}  verdict",
                "offered/s", "util", "sent/s", "p50", "p99", "p99.9", "max", "errors"
            );
            for pt in &curve.points {
                let verdict = if pt.runs == 0 {
                    "not run (the curve had run away below)".to_string()
                } else if !pt.achieved {
                    format!("NOT ACHIEVED ({} of {} runs valid)", pt.valid_runs, pt.runs)
                } else if pt.p99_us <= p.slo_p99_us {
                    "within SLO".to_string()
                } else {
                    "over SLO".to_string()
                };
                let lat = |v: u64| {
                    if pt.achieved {
                        fmt_us(v)
                    } else {
                        "-".into()
                    }
                };
                let _ = writeln!(
                    s,
                    "    {:>9.0} {:>5.0}% {:>10} {:>9} {:>9} {:>9} {:>9} {:>6}  {verdict}",
                    pt.offered_rps,
                    100.0 * pt.utilisation,
                    if pt.runs > 0 {
                        format!("{:.0}", pt.achieved_rps)
                    } else {
                        "-".into()
                    },
                    lat(pt.p50_us),
                    lat(pt.p99_us),
                    lat(pt.p999_us),
                    lat(pt.max_us),
                    pt.errors
                );
            }
            let _ = match curve.knee {
                Some(k) => writeln!(
                    s,
                    "    knee: {}{:.0} req/s ({:.0}% of capacity), p99 {}{}",
                    if k.lower_bound { "at least " } else { "" },
                    k.offered_rps,
                    100.0 * k.utilisation,
                    fmt_us(k.p99_us),
                    if k.lower_bound {
                        ": every rate swept met the SLO (sweep higher with --to)"
                    } else {
                        ""
                    }
                ),
                None => writeln!(
                    s,
                    "    knee: none: even the lowest rate missed the SLO or was not achieved"
                ),
            };
        }
        for n in &self.notes {
            let _ = writeln!(s, "  note        {n}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(rate: f64, achieved: bool, p99: u64) -> Point {
        Point {
            offered_rps: rate,
            utilisation: rate / 1000.0,
            runs: 3,
            valid_runs: if achieved { 3 } else { 0 },
            achieved,
            p99_us: p99,
            ..Point::default()
        }
    }

    #[test]
    fn the_knee_is_the_last_good_rate_before_the_first_miss() {
        let pts = [
            point(100.0, true, 200),
            point(500.0, true, 800),
            point(800.0, true, 1500),
            // Back under the SLO above a miss: noise, not a second knee.
            point(900.0, true, 900),
            point(1000.0, false, 0),
        ];
        let k = knee(&pts, 1000).expect("a knee");
        assert_eq!(k.offered_rps, 500.0);
        assert_eq!(k.p99_us, 800);
        assert!(!k.lower_bound);
        // Every rate within the SLO: the knee is only as far as the sweep went.
        let k = knee(&pts[..2], 1000).expect("a knee");
        assert_eq!((k.offered_rps, k.lower_bound), (500.0, true));
        assert!(knee(&pts[2..], 1000).is_none(), "the lowest rate missed");
        // A rate that was not achieved ends the climb even with a low p99 on record.
        let pts = [point(100.0, true, 200), point(200.0, false, 100)];
        assert_eq!(knee(&pts, 1000).map(|k| k.offered_rps), Some(100.0));
        // A rate never run ends it too.
        let mut never = point(300.0, true, 10);
        never.runs = 0;
        assert_eq!(
            knee(&[point(100.0, true, 200), never], 1000).map(|k| k.offered_rps),
            Some(100.0)
        );
    }
}
