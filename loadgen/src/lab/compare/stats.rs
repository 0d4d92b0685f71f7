//! The gate's statistics: the paired ratio with its bootstrap interval, and the verdict.
//!
//! Pure functions of numbers, with no knowledge of servers or flags, so that what decides a
//! regression can be tested (and recomputed from a stored report) without running anything.

use serde::{Deserialize, Serialize};

/// A ratio, candidate over baseline, with its confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// The trimmed geometric mean of the pair ratios.
    pub ratio: f64,
    /// Lower end of the interval.
    pub low: f64,
    /// Upper end.
    pub high: f64,
}

/// The share of pairs dropped at each end before averaging.
pub const TRIM: f64 = 0.2;

/// The mean of `logs` after dropping `TRIM` of them at each end. Sorts `logs`.
fn trimmed_mean(logs: &mut [f64]) -> f64 {
    logs.sort_by(|a, b| a.total_cmp(b));
    let cut = (logs.len() as f64 * TRIM).floor() as usize;
    let kept = &logs[cut..logs.len() - cut];
    kept.iter().sum::<f64>() / kept.len() as f64
}

/// splitmix64: a tiny, well-studied generator. Written out (eight lines) rather than taken
/// from a crate so that a recorded comparison's interval can be recomputed exactly, whatever
/// a dependency's next version does to its streams.
#[derive(Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n small: the modulo bias is below 2^-50).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The candidate/baseline ratio of paired measurements, with a percentile-bootstrap interval
/// at `confidence` over `resamples` resamplings of the pairs. `base` and `cand` are the two
/// sides of each pair, in pair order; values must be positive.
pub fn paired_ratio(
    base: &[f64],
    cand: &[f64],
    confidence: f64,
    resamples: u32,
    seed: u64,
) -> Option<Estimate> {
    let logs: Vec<f64> = base
        .iter()
        .zip(cand)
        .filter(|(b, c)| **b > 0.0 && **c > 0.0 && b.is_finite() && c.is_finite())
        .map(|(b, c)| (c / b).ln())
        .collect();
    if logs.is_empty() {
        return None;
    }
    let ratio = trimmed_mean(&mut logs.clone()).exp();
    let mut rng = SplitMix64(seed);
    let mut sample = vec![0.0; logs.len()];
    let mut means: Vec<f64> = (0..resamples.max(1))
        .map(|_| {
            for s in sample.iter_mut() {
                *s = logs[rng.below(logs.len())];
            }
            trimmed_mean(&mut sample)
        })
        .collect();
    means.sort_by(|a, b| a.total_cmp(b));
    let tail = (1.0 - confidence) / 2.0;
    let at = |q: f64| {
        let i = (q * (means.len() - 1) as f64).round() as usize;
        means[i.min(means.len() - 1)].exp()
    };
    Some(Estimate {
        ratio,
        low: at(tail),
        high: at(1.0 - tail),
    })
}

/// What a comparison concludes about one figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Worse beyond the threshold, and the interval excludes no change.
    Regression,
    /// Better beyond the threshold, and the interval excludes no change.
    Improvement,
    /// Anything else: within the threshold, or not distinguishable from noise.
    NoSignificantChange,
    /// The interval never got as narrow as `--precision` in the pairs and time allowed, and it
    /// reaches below `1 - threshold`: a regression beyond the threshold can be neither shown
    /// nor ruled out. The machine was too noisy; run the gate again.
    Inconclusive,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Regression => "REGRESSION",
            Verdict::Improvement => "improvement",
            Verdict::NoSignificantChange => "no significant change",
            Verdict::Inconclusive => "INCONCLUSIVE",
        })
    }
}

/// The verdict on `e` with `threshold` (a fraction), for a figure where a higher ratio is
/// better (throughput) or worse (latency).
pub fn verdict(e: &Estimate, threshold: f64, higher_is_better: bool) -> Verdict {
    let worse = if higher_is_better {
        e.ratio < 1.0 - threshold && e.high < 1.0
    } else {
        e.ratio > 1.0 + threshold && e.low > 1.0
    };
    let better = if higher_is_better {
        e.ratio > 1.0 + threshold && e.low > 1.0
    } else {
        e.ratio < 1.0 - threshold && e.high < 1.0
    };
    match (worse, better) {
        (true, _) => Verdict::Regression,
        (_, true) => Verdict::Improvement,
        _ => Verdict::NoSignificantChange,
    }
}

/// The throughput verdict: [`verdict`], except that an interval still wider than
/// ±`precision` (the pairs or the time ran out) that reaches below `1 - threshold` is
/// [`Verdict::Inconclusive`]: it can neither show nor rule out a regression that matters.
pub fn throughput_verdict(e: &Estimate, threshold: f64, precision: f64) -> Verdict {
    let v = verdict(e, threshold, true);
    if v == Verdict::NoSignificantChange && half_width(e) > precision && e.low < 1.0 - threshold {
        Verdict::Inconclusive
    } else {
        v
    }
}

/// The verdict on `e` if more pairs cannot change it, or `None` while they still can.
///
/// A verdict changes only when the estimate crosses `1 - threshold` or `1 + threshold` (the
/// line at 1 matters only beyond them: a regression is an estimate below `1 - threshold`
/// whose interval also lies below 1). So once the estimate and its whole interval lie on one
/// side of both lines, pairs that land where the interval says pairs land leave the verdict
/// as it is, and more of them only narrow the interval. That is the early stop's rule: it
/// never shortens a comparison whose interval still reaches across a line, which is exactly
/// the case the extra pairs are for. It trusts the interval; how far that can be trusted with
/// few pairs is what `--early-stop`'s floor is for.
pub fn settled(e: &Estimate, threshold: f64, higher_is_better: bool) -> Option<Verdict> {
    // -1 below the lower line, 0 between the lines, 1 above the upper one; a value on a line
    // belongs to neither side.
    let side = |x: f64| {
        if x < 1.0 - threshold {
            Some(-1)
        } else if x > 1.0 - threshold && x < 1.0 + threshold {
            Some(0)
        } else if x > 1.0 + threshold {
            Some(1)
        } else {
            None
        }
    };
    let s = side(e.ratio)?;
    if side(e.low) != Some(s) || side(e.high) != Some(s) {
        return None;
    }
    let v = verdict(e, threshold, higher_is_better);
    // Below or above both lines, with the interval on the same side, the verdict is the
    // region's (the interval excludes 1 there); the check keeps the two definitions honest.
    let expected = match (s, higher_is_better) {
        (0, _) => Verdict::NoSignificantChange,
        (-1, true) | (1, false) => Verdict::Regression,
        _ => Verdict::Improvement,
    };
    (v == expected).then_some(v)
}

/// `--seed` mixed with the model's name: the models' pairs ran minute by minute together, and
/// one stream of resampling for all of them would make their intervals err together.
pub(super) fn model_seed(seed: u64, name: &str) -> u64 {
    name.bytes().fold(seed, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Half the width of `e`'s interval, as a fraction of the ratio 1.
pub(super) fn half_width(e: &Estimate) -> f64 {
    (e.high - e.low) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimmed_mean_drops_a_fifth_at_each_end() {
        // Ten values: two dropped at each end, the mean of the middle six.
        let mut xs = [100.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, -100.0, 7.0, 8.0];
        assert!((trimmed_mean(&mut xs) - 4.5).abs() < 1e-12);
        // Too few to trim: the plain mean.
        assert!((trimmed_mean(&mut [1.0, 2.0, 6.0]) - 3.0).abs() < 1e-12);
    }

    #[test]
    fn identical_sides_give_ratio_one_and_a_degenerate_interval() {
        let xs = [100.0, 120.0, 90.0, 130.0, 110.0];
        let e = paired_ratio(&xs, &xs, 0.95, 1000, 1).expect("estimate");
        assert_eq!((e.ratio, e.low, e.high), (1.0, 1.0, 1.0));
        assert_eq!(verdict(&e, 0.05, true), Verdict::NoSignificantChange);
    }

    #[test]
    fn drift_cancels_within_pairs() {
        // The machine drifts from 100k to 190k req/s; the candidate is 10% slower in every
        // pair. Unpaired, the two sides' ranges overlap completely; paired, it is exact.
        let base: Vec<f64> = (0..12)
            .map(|i| 100_000.0 + 8_000.0 * f64::from(i))
            .collect();
        let cand: Vec<f64> = base.iter().map(|b| b * 0.9).collect();
        let e = paired_ratio(&base, &cand, 0.95, 2000, 7).expect("estimate");
        assert!((e.ratio - 0.9).abs() < 1e-9, "{e:?}");
        assert_eq!(verdict(&e, 0.05, true), Verdict::Regression);
        // The same as latency (higher is worse): an improvement.
        assert_eq!(verdict(&e, 0.05, false), Verdict::Improvement);
    }

    #[test]
    fn one_wild_pair_does_not_decide() {
        // Eleven pairs within ±1%, one where the candidate's trial was hit by other work.
        let base = vec![100.0; 12];
        let mut cand = vec![
            99.0, 101.0, 100.5, 99.5, 100.0, 99.2, 100.8, 100.1, 99.9, 100.3, 99.7,
        ];
        cand.push(50.0);
        let e = paired_ratio(&base, &cand, 0.95, 5000, 3).expect("estimate");
        assert!((e.ratio - 1.0).abs() < 0.01, "{e:?}");
        assert_eq!(verdict(&e, 0.05, true), Verdict::NoSignificantChange);
    }

    #[test]
    fn verdict_needs_both_significance_and_size() {
        let e = |ratio, low, high| Estimate { ratio, low, high };
        // Certain but small: not a regression.
        assert_eq!(
            verdict(&e(0.98, 0.97, 0.99), 0.05, true),
            Verdict::NoSignificantChange
        );
        // Large but uncertain: not a regression.
        assert_eq!(
            verdict(&e(0.90, 0.80, 1.02), 0.05, true),
            Verdict::NoSignificantChange
        );
        // Large and certain.
        assert_eq!(
            verdict(&e(0.90, 0.86, 0.94), 0.05, true),
            Verdict::Regression
        );
        assert_eq!(
            verdict(&e(1.10, 1.06, 1.14), 0.05, true),
            Verdict::Improvement
        );
        // Latency: higher is worse.
        assert_eq!(
            verdict(&e(1.40, 1.20, 1.60), 0.25, false),
            Verdict::Regression
        );
        assert_eq!(
            verdict(&e(1.20, 1.10, 1.30), 0.25, false),
            Verdict::NoSignificantChange
        );
    }

    #[test]
    fn a_verdict_is_settled_only_when_its_interval_crosses_no_line() {
        let e = |ratio, low, high| Estimate { ratio, low, high };
        // Wholly below 0.95: a regression more pairs cannot undo.
        assert_eq!(
            settled(&e(0.90, 0.88, 0.93), 0.05, true),
            Some(Verdict::Regression)
        );
        // A regression today, but the interval reaches above 0.95: not settled.
        assert_eq!(settled(&e(0.93, 0.90, 0.97), 0.05, true), None);
        // Wholly between the lines: no change, however wide (wider than ±2.5% here).
        assert_eq!(
            settled(&e(1.0, 0.955, 1.045), 0.05, true),
            Some(Verdict::NoSignificantChange)
        );
        // Between the lines but touching one: not settled.
        assert_eq!(settled(&e(1.0, 0.95, 1.02), 0.05, true), None);
        // An estimate outside its own interval (a skewed bootstrap): not settled.
        assert_eq!(settled(&e(0.96, 0.90, 0.94), 0.05, true), None);
        assert_eq!(
            settled(&e(1.10, 1.06, 1.14), 0.05, true),
            Some(Verdict::Improvement)
        );
        // Latency: higher is worse.
        assert_eq!(
            settled(&e(1.40, 1.30, 1.50), 0.25, false),
            Some(Verdict::Regression)
        );
        assert_eq!(
            settled(&e(0.95, 0.85, 1.10), 0.25, false),
            Some(Verdict::NoSignificantChange)
        );
        assert_eq!(settled(&e(1.20, 1.10, 1.30), 0.25, false), None);
    }

    #[test]
    fn a_settled_verdict_is_the_verdict_with_any_precision() {
        // Whatever --precision says, a settled interval gets the verdict it settled on: the
        // early stop and the final summary cannot disagree.
        for (ratio, low, high) in [
            (0.90, 0.88, 0.93),
            (1.0, 0.955, 1.045),
            (1.1, 1.06, 1.14),
            (0.97, 0.951, 0.99),
        ] {
            let e = Estimate { ratio, low, high };
            let s = settled(&e, 0.05, true).expect("settled");
            for precision in [0.001, 0.025, 1.0] {
                assert_eq!(throughput_verdict(&e, 0.05, precision), s, "{e:?}");
            }
        }
    }

    #[test]
    fn too_wide_an_interval_is_inconclusive_only_when_it_reaches_a_regression() {
        let e = |ratio, low, high| Estimate { ratio, low, high };
        // Wide, and a 5% regression cannot be ruled out: inconclusive.
        assert_eq!(
            throughput_verdict(&e(0.98, 0.90, 1.06), 0.05, 0.025),
            Verdict::Inconclusive
        );
        // Wide, but nowhere near a regression: no change.
        assert_eq!(
            throughput_verdict(&e(1.05, 0.99, 1.11), 0.05, 0.025),
            Verdict::NoSignificantChange
        );
        // Precise enough: the plain verdict stands.
        assert_eq!(
            throughput_verdict(&e(0.96, 0.94, 0.98), 0.05, 0.025),
            Verdict::NoSignificantChange
        );
        // Wide, yet clearly a regression: a regression.
        assert_eq!(
            throughput_verdict(&e(0.80, 0.70, 0.92), 0.05, 0.025),
            Verdict::Regression
        );
    }

    #[test]
    fn the_interval_covers_the_truth_under_noise() {
        // Pairs with 5% noise around a true ratio of 0.93: over 200 simulated comparisons the
        // 95% interval should contain 0.93 most of the time (the percentile bootstrap with 12
        // pairs undercovers a little; well above 80% is what it must manage).
        let mut rng = SplitMix64(42);
        let mut normal = || {
            // Box-Muller from two uniforms in (0, 1].
            let u = |r: &mut SplitMix64| ((r.next() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
            let (a, b) = (u(&mut rng), u(&mut rng));
            (-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()
        };
        let mut covered = 0;
        for k in 0..200 {
            let base: Vec<f64> = (0..12).map(|_| 100.0 * (0.05 * normal()).exp()).collect();
            let cand: Vec<f64> = base
                .iter()
                .map(|b| b * 0.93 * (0.05 * normal()).exp())
                .collect();
            let e = paired_ratio(&base, &cand, 0.95, 2000, k).expect("estimate");
            if e.low <= 0.93 && 0.93 <= e.high {
                covered += 1;
            }
        }
        assert!(covered >= 160, "covered {covered} of 200");
    }
}
