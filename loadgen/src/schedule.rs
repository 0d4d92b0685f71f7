//! The open loop's target rate over time: constant, a linear ramp, or a list of steps.
//!
//! One number describes a whole timetable: Λ(t), how many requests are due from the run's
//! start to time `t` (the integral of the rate). A constant rate gives `Λ(t) = rate · t`; a
//! ramp adds a term in `t²`; steps join straight pieces end to end. Request `x` of the run
//! (counting from 0) is due when `Λ(t) = x`, so the fixed timetable is `Λ⁻¹(g + k·N)` for
//! request `k` of connection slot `g` of `N` (at a constant rate, the familiar
//! `(g + k·N) / rate`), and a Poisson process at a varying rate is a unit-rate one with its
//! clock run through `Λ⁻¹` (the time-change theorem): a slot adds unit-exponential gaps in
//! Λ's units and sends when the sum is due. The schedule is a function of time, not of how
//! the server keeps up, so a request's place on it never moves: latency still runs from
//! the time it was due.
//!
//! The warmup runs at the schedule's first rate; a ramp or the first step starts when the
//! measured window does. A run that lasts longer than its schedule holds the last rate: that
//! time is one more step of the report.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::clock::{ns, NANOS};

/// The most steps a schedule may have (the report has a row for each).
pub const MAX_STEPS: usize = 1000;

/// The most step histograms a run may keep, over all its threads: each thread records the
/// latency of each step in a histogram of its own (about 140 KB, 1 µs to 60 s at 3 digits),
/// so steps × threads is the memory a schedule costs, twice more at the end (the merge, and
/// the interval log's copy). 2000 is under 300 MB.
pub const MAX_STEP_HISTOGRAMS: usize = 2000;

/// One piece of a schedule: the rate goes from `from_rps` to `to_rps` (equal for a step)
/// over `length` (`None`: for the rest of the run).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Piece {
    /// The rate at the piece's start, requests per second.
    pub from_rps: f64,
    /// The rate at its end.
    pub to_rps: f64,
    /// How long it lasts (`None`: to the end of the run).
    #[serde(rename = "duration_s", serialize_with = "opt_seconds")]
    pub length: Option<Duration>,
}

fn opt_seconds<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

/// The target rate over the measured window.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Schedule {
    pieces: Vec<Piece>,
}

impl Schedule {
    /// `rate` requests per second throughout.
    pub fn constant(rate: f64) -> Schedule {
        Schedule {
            pieces: vec![Piece {
                from_rps: rate,
                to_rps: rate,
                length: None,
            }],
        }
    }

    /// From `from` to `to` requests per second, linearly, over `over`.
    pub fn ramp(from: f64, to: f64, over: Duration) -> Schedule {
        Schedule {
            pieces: vec![Piece {
                from_rps: from,
                to_rps: to,
                length: Some(over),
            }],
        }
    }

    /// Each `(rate, length)` in turn.
    pub fn steps(steps: &[(f64, Duration)]) -> Schedule {
        Schedule {
            pieces: steps
                .iter()
                .map(|&(rate, length)| Piece {
                    from_rps: rate,
                    to_rps: rate,
                    length: Some(length),
                })
                .collect(),
        }
    }

    /// The pieces, in order.
    pub fn pieces(&self) -> &[Piece] {
        &self.pieces
    }

    /// The rate, when it never changes.
    pub fn constant_rate(&self) -> Option<f64> {
        match self.pieces.as_slice() {
            [p] if p.length.is_none() => Some(p.from_rps),
            _ => None,
        }
    }

    /// Whether the rate changes during the run (a ramp or steps): then the report has a row
    /// per step and each second says its target.
    pub fn varies(&self) -> bool {
        self.constant_rate().is_none()
    }

    /// How long the schedule lasts, if every piece has a length.
    pub fn length(&self) -> Option<Duration> {
        self.pieces.iter().map(|p| p.length).sum()
    }

    /// The rate the warmup runs at.
    pub fn first_rate(&self) -> f64 {
        self.pieces.first().map_or(0.0, |p| p.from_rps)
    }

    /// Checks every rate against `check_rate` and every length against 0; the message names
    /// what is wrong.
    pub fn checked(&self, check_rate: impl Fn(f64) -> Result<f64, String>) -> Result<(), String> {
        if self.pieces.is_empty() || self.pieces.len() > MAX_STEPS {
            return Err(format!("a schedule has 1 to {MAX_STEPS} steps"));
        }
        for p in &self.pieces {
            for r in [p.from_rps, p.to_rps] {
                check_rate(r).map_err(|range| format!("rate {r}: {range}"))?;
            }
            if p.length == Some(Duration::ZERO) {
                return Err("a step or a ramp must last longer than 0 s".into());
            }
        }
        Ok(())
    }
}

impl fmt::Display for Schedule {
    /// `500 req/s`, `1000 -> 50000 req/s over 20 s`, or `3 steps: 1000, 2000, 4000 req/s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pieces.as_slice() {
            [p] if p.length.is_none() => write!(f, "{} req/s", p.from_rps),
            [p] if p.from_rps != p.to_rps => write!(
                f,
                "{} -> {} req/s over {} s",
                p.from_rps,
                p.to_rps,
                p.length.map_or(0.0, |d| d.as_secs_f64())
            ),
            pieces => {
                let rates: Vec<String> = pieces.iter().map(|p| p.from_rps.to_string()).collect();
                write!(f, "{} steps: {} req/s", pieces.len(), rates.join(", "))
            }
        }
    }
}

/// `--steps`' list: each step's rate and length.
#[derive(Debug, Clone, PartialEq)]
pub struct StepList(pub Vec<(f64, Duration)>);

/// Parses `--steps`: `RATE:DURATION` pairs, comma-separated (`1000:5s,2000:5s,4000:10s`).
pub fn parse_steps(s: &str) -> Result<StepList, String> {
    s.split(',')
        .map(|part| {
            let (rate, length) = part
                .split_once(':')
                .ok_or_else(|| format!("'{part}' is not a step: RATE:DURATION, e.g. 1000:5s"))?;
            let rate: f64 = rate.trim().parse().map_err(|_| {
                format!("'{rate}' in '{part}' is not a rate in requests per second")
            })?;
            let length = echolab_protocol::units::parse_duration(length.trim())
                .map_err(|e| format!("'{part}': {e}"))?;
            Ok((rate, length))
        })
        .collect::<Result<_, String>>()
        .map(StepList)
}

/// The rate `--rate` asked for: one number, or a range for `--ramp`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RateArg {
    /// `R`.
    Constant(f64),
    /// `A..B`.
    Range(f64, f64),
}

/// A straight piece of Λ, in run time: from `start` (ns) on, Λ = `count + rate·τ + slope·τ²/2`
/// with `τ` the ns since `start` (rates per ns).
#[derive(Debug, Clone, Copy)]
struct Segment {
    start: f64,
    count: f64,
    rate: f64,
    slope: f64,
}

impl Segment {
    fn count_at(&self, t: f64) -> f64 {
        let tau = t - self.start;
        self.count + tau * (self.rate + self.slope * tau / 2.0)
    }

    /// The time at which Λ reaches `x` (at least the segment's count): the root of the
    /// quadratic in the form that neither cancels nor divides by a slope of 0.
    fn time_of(&self, x: f64) -> f64 {
        let d = (x - self.count).max(0.0);
        let disc = (self.rate * self.rate + 2.0 * self.slope * d).max(0.0);
        let denom = self.rate + disc.sqrt();
        if denom <= 0.0 {
            return f64::INFINITY;
        }
        self.start + 2.0 * d / denom
    }
}

/// A schedule laid onto a run's clock: Λ and its inverse, and the steps the report has a row
/// for. Built once per run and shared by the threads.
#[derive(Debug, Clone)]
pub struct Timetable {
    segments: Vec<Segment>,
    /// Each reported step's `[start, end)` in run time, and the piece it is (`None`: the hold
    /// after the schedule). Empty when the rate never changes.
    steps: Vec<(u64, u64, Option<usize>)>,
}

impl Timetable {
    /// `schedule` on a run whose measured window is `[measure_from, stop_at)`.
    pub fn new(schedule: &Schedule, measure_from: u64, stop_at: Option<u64>) -> Timetable {
        let per_ns = |rps: f64| rps / NANOS as f64;
        let mut segments = vec![Segment {
            start: 0.0,
            count: 0.0,
            rate: per_ns(schedule.first_rate()),
            slope: 0.0,
        }];
        let mut steps = Vec::new();
        let mut t = measure_from;
        let mut last = schedule.first_rate();
        for (i, p) in schedule.pieces().iter().enumerate() {
            let count = segments
                .last()
                .map_or(0.0, |s: &Segment| s.count_at(t as f64));
            let Some(length) = p.length else {
                segments.push(Segment {
                    start: t as f64,
                    count,
                    rate: per_ns(p.from_rps),
                    slope: 0.0,
                });
                last = p.from_rps;
                break;
            };
            let len = ns(length);
            segments.push(Segment {
                start: t as f64,
                count,
                rate: per_ns(p.from_rps),
                slope: per_ns(p.to_rps - p.from_rps) / len as f64,
            });
            steps.push((t, t + len, Some(i)));
            t += len;
            last = p.to_rps;
        }
        if schedule.length().is_some() {
            let count = segments.last().map_or(0.0, |s| s.count_at(t as f64));
            segments.push(Segment {
                start: t as f64,
                count,
                rate: per_ns(last),
                slope: 0.0,
            });
            if stop_at.is_none_or(|stop| stop > t) {
                steps.push((t, stop_at.unwrap_or(u64::MAX), None));
            }
        }
        if !schedule.varies() {
            steps.clear();
        }
        Timetable { segments, steps }
    }

    fn segment_at(&self, t: f64) -> &Segment {
        let i = self.segments.partition_point(|s| s.start <= t);
        &self.segments[i.saturating_sub(1)]
    }

    /// Λ(t): requests due in `[0, t)`, t in ns of run time.
    pub fn count(&self, t: u64) -> f64 {
        let t = t as f64;
        self.segment_at(t).count_at(t)
    }

    /// Λ⁻¹(x): when request `x` (from 0, fractional for Poisson) is due, ns of run time.
    pub fn time_of(&self, x: f64) -> f64 {
        let i = self.segments.partition_point(|s| s.count <= x);
        self.segments[i.saturating_sub(1)].time_of(x)
    }

    /// The mean target rate over `[from, until)`, requests per second.
    pub fn mean_rate(&self, from: u64, until: u64) -> f64 {
        if until <= from {
            return self.segment_at(from as f64).rate * NANOS as f64;
        }
        (self.count(until) - self.count(from)) * NANOS as f64 / (until - from) as f64
    }

    /// The steps the report has a row for: `[start, end)` in run time (the last may end at
    /// `u64::MAX` when the run has no set end), and the schedule's piece (`None`: the hold
    /// after it). Empty when the rate is constant.
    pub fn steps(&self) -> &[(u64, u64, Option<usize>)] {
        &self.steps
    }

    /// The step whose window holds run time `t`, if any (none in the warmup).
    pub fn step_of(&self, t: u64) -> Option<usize> {
        let i = self.steps.partition_point(|&(start, _, _)| start <= t);
        let i = i.checked_sub(1)?;
        (t < self.steps[i].1).then_some(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = NANOS;

    /// A constant rate is the old timetable: request x at x / rate.
    #[test]
    fn a_constant_rate_is_a_straight_line() {
        let tt = Timetable::new(&Schedule::constant(1000.0), S, Some(11 * S));
        assert!(tt.steps().is_empty());
        assert_eq!(tt.count(2 * S), 2000.0);
        assert!((tt.time_of(1500.0) - 1.5e9).abs() < 1e-3);
        assert_eq!(tt.step_of(5 * S), None);
        assert!((tt.mean_rate(S, 3 * S) - 1000.0).abs() < 1e-9);
    }

    /// A ramp from 1000 to 3000 over 2 s after a 1 s warmup at 1000: 1000 in the warmup,
    /// (1000 + 3000) / 2 · 2 = 4000 in the ramp, then 3000 a second.
    #[test]
    fn a_ramp_integrates_to_its_mean() {
        let tt = Timetable::new(
            &Schedule::ramp(1000.0, 3000.0, Duration::from_secs(2)),
            S,
            None,
        );
        assert!((tt.count(S) - 1000.0).abs() < 1e-6);
        assert!((tt.count(3 * S) - 5000.0).abs() < 1e-6);
        assert!((tt.count(4 * S) - 8000.0).abs() < 1e-6);
        // Half-way through the ramp the rate is 2000: 1000 + (1000 + 2000) / 2.
        assert!((tt.count(2 * S) - 2500.0).abs() < 1e-6);
        for x in [0.0, 999.0, 1000.0, 1000.5, 2500.0, 4999.9, 5000.0, 7000.0] {
            let t = tt.time_of(x);
            assert!((tt.count(t.round() as u64) - x).abs() < 0.01, "x {x} t {t}");
        }
        assert!((tt.mean_rate(S, 3 * S) - 2000.0).abs() < 1e-6);
        // The ramp, then the hold at 3000 for as long as the run goes on.
        assert_eq!(tt.steps(), &[(S, 3 * S, Some(0)), (3 * S, u64::MAX, None)]);
        assert_eq!(tt.step_of(S / 2), None);
        assert_eq!(tt.step_of(2 * S), Some(0));
        assert_eq!(tt.step_of(10 * S), Some(1));
    }

    /// A ramp down is inverted as exactly as a ramp up, to its very end.
    #[test]
    fn a_ramp_down_inverts() {
        let tt = Timetable::new(
            &Schedule::ramp(5000.0, 10.0, Duration::from_secs(4)),
            0,
            None,
        );
        let end = tt.count(4 * S);
        assert!((end - 4.0 * 2505.0).abs() < 1e-6);
        for x in [1.0, 100.0, 5000.0, end - 1.0, end - 0.001, end + 5.0] {
            let t = tt.time_of(x);
            assert!(t.is_finite());
            assert!((tt.count(t.round() as u64) - x).abs() < 0.01, "x {x} t {t}");
        }
    }

    /// Steps: each its own rate and row, and a run that stops with the schedule has no hold.
    #[test]
    fn steps_follow_each_other() {
        let schedule = Schedule::steps(&[
            (100.0, Duration::from_secs(1)),
            (400.0, Duration::from_secs(2)),
        ]);
        let tt = Timetable::new(&schedule, S / 2, Some(S / 2 + 3 * S));
        assert!((tt.count(S / 2) - 50.0).abs() < 1e-9);
        assert!((tt.count(S / 2 + 3 * S) - 950.0).abs() < 1e-9);
        assert!((tt.mean_rate(S / 2 + S, S / 2 + 3 * S) - 400.0).abs() < 1e-9);
        assert_eq!(tt.steps().len(), 2);
        assert_eq!(tt.step_of(S / 2 + 3 * S), None);
        assert_eq!(schedule.length(), Some(Duration::from_secs(3)));
        assert_eq!(schedule.to_string(), "2 steps: 100, 400 req/s");
    }

    #[test]
    fn steps_parse() {
        assert_eq!(
            parse_steps("1000:5s, 2000:500ms").map(|s| s.0),
            Ok(vec![
                (1000.0, Duration::from_secs(5)),
                (2000.0, Duration::from_millis(500))
            ])
        );
        assert!(parse_steps("1000").is_err());
        assert!(parse_steps("fast:5s").is_err());
        assert!(parse_steps("1000:soon").is_err());
        assert!(parse_steps("").is_err());
    }
}
