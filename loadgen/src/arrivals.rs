//! When the open loop's requests are due: on a fixed timetable, or as a Poisson process.
//!
//! Real traffic is closer to Poisson than to a metronome: many independent clients, each
//! arriving when it likes, add up to exponentially distributed gaps. That irregularity is the
//! point of measuring with it: requests that bunch up queue behind each other, so latency
//! climbs long before the server is busy 100% of the time, where a fixed timetable at the same
//! mean rate keeps them apart and hides that queueing.
//!
//! The `N` connection slots share the rate. With `fixed` arrivals slot `g` sends request `k`
//! at `(g + k·N) / rate` (computed by the engine; on a ramp or steps, when the schedule's
//! count reaches `g + k·N`: [`crate::schedule`]). With `poisson` each slot is a Poisson
//! process of its own at `rate / N`: the sum of independent Poisson processes is a Poisson
//! process at the summed rate, so the run as a whole arrives as one at `rate`, while each slot
//! needs only its own state. Each slot draws from its own PCG generator, whose state is mixed
//! from the seed and the slot's index and whose stream number is the index, so slot `g`'s
//! timetable depends on `--seed` and `g` only: the same on every run (for one version of
//! rand and rand_pcg), whichever thread or machine sends it.

use std::fmt;
use std::str::FromStr;

use rand::RngExt;
use rand_pcg::Pcg64;

use crate::schedule::Timetable;

/// How the open loop's requests arrive (named `fixed` and `poisson` on the command line and
/// in JSON alike).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Arrivals {
    /// Evenly spaced: the coefficient of variation of the gaps is 0.
    #[default]
    Fixed,
    /// Exponentially distributed gaps (a Poisson process): the coefficient of variation is 1.
    Poisson,
}

impl fmt::Display for Arrivals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Arrivals::Fixed => "fixed",
            Arrivals::Poisson => "poisson",
        })
    }
}

impl FromStr for Arrivals {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fixed" => Ok(Arrivals::Fixed),
            "poisson" => Ok(Arrivals::Poisson),
            _ => Err(format!("'{s}' is not an arrival process: fixed or poisson")),
        }
    }
}

/// How many due times [`PoissonSlot::count_due`] may draw, over all the slots of a thread,
/// before it estimates the rest: about 10 ms of drawing, so the count of a huge unsent
/// timetable (a dead server asked for 10^8 a second) does not hold up the end of the run.
pub const COUNT_EXACTLY: u64 = 1_000_000;

/// One step of splitmix64 (Steele, Lea and Flood, 2014) from state `z`: the output for the
/// state `z + golden ratio`. It scatters neighbouring inputs, so slots `g` and `g + 1` start
/// from unrelated PCG states (PCG generators that share one state and differ only in their
/// stream number are correlated); `loadgen proxy` draws its coin flips from it too.
pub fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One connection slot's Poisson timetable: the time its next request is due, and the stream
/// the gaps after it are drawn from.
///
/// The slot adds unit-exponential gaps, each scaled by the `N` slots, in the units of the
/// run's Λ (requests due since the start, [`Timetable`]), and a request is due when Λ reaches
/// the sum: at a constant rate that is a gap of mean `N / rate` seconds, and a ramp or steps
/// bend the same draws onto the changing rate.
#[derive(Debug, Clone)]
pub struct PoissonSlot {
    rng: Pcg64,
    /// How many slots share the rate (each slot's gaps in Λ have mean `slots`).
    slots: f64,
    /// Λ at the next request: the sum of the gaps so far, unrounded so that rounding errors
    /// do not add up over millions of them.
    at: f64,
    /// When the next request is due, ns from the run's start (Λ⁻¹ of `at`).
    due_ns: f64,
}

impl PoissonSlot {
    /// Slot `slot` of `slots`, on `timetable`, with `seed`.
    pub fn new(seed: u64, slot: u64, slots: u32, timetable: &Timetable) -> PoissonSlot {
        // Each half of the 128-bit state from a different mix of (seed, slot), and the
        // slot as the stream number as well.
        let hi = splitmix64(seed ^ splitmix64(slot));
        let lo = splitmix64(hi ^ slot.wrapping_mul(0xD1B5_4A32_D192_ED03));
        let state = u128::from(hi) << 64 | u128::from(lo);
        let mut p = PoissonSlot {
            rng: Pcg64::new(state, u128::from(slot)),
            slots: f64::from(slots),
            at: 0.0,
            due_ns: 0.0,
        };
        p.advance(timetable);
        p
    }

    /// An exponentially distributed gap of mean `slots`, by inversion: `-slots · ln(1 - U)`,
    /// `U` uniform on [0, 1), so the logarithm's argument is never 0.
    fn gap(&mut self) -> f64 {
        let u: f64 = self.rng.random();
        -self.slots * (1.0 - u).ln()
    }

    /// When the slot's next request is due, ns from the run's start.
    pub fn due(&self) -> u64 {
        self.due_ns as u64
    }

    /// The next request has been sent (or, at the start, none has): draw the one after it.
    pub fn advance(&mut self, timetable: &Timetable) {
        self.at += self.gap();
        self.due_ns = timetable.time_of(self.at);
    }

    /// How many of the slot's requests, from the next one on, are due in each of the windows
    /// `bins` (consecutive `[start, end)` pairs, in run time), added to `counts`: counted one
    /// by one while `budget` (draws, shared with the thread's other slots) lasts, then
    /// estimated. A Poisson process has no memory, so from any due time on the expected count
    /// in a window is what Λ grows by in it, over the slots.
    pub fn count_due(
        &self,
        timetable: &Timetable,
        bins: &[(u64, u64)],
        counts: &mut [u64],
        budget: &mut u64,
    ) {
        let Some(until) = bins.last().map(|b| b.1) else {
            return;
        };
        let mut p = self.clone();
        while p.due() < until {
            if *budget == 0 {
                // The next one is due at p.due(); the rest at the expected rate.
                let from = p.due();
                for (bin, count) in bins.iter().zip(counts.iter_mut()) {
                    if (bin.0..bin.1).contains(&from) {
                        *count += 1;
                    }
                    let start = bin.0.max(from);
                    if start < bin.1 {
                        let expected =
                            (timetable.count(bin.1) - timetable.count(start)) / self.slots;
                        *count += expected.round() as u64;
                    }
                }
                return;
            }
            *budget -= 1;
            let due = p.due();
            let i = bins.partition_point(|b| b.1 <= due);
            if bins.get(i).is_some_and(|b| b.0 <= due) {
                counts[i] += 1;
            }
            p.advance(timetable);
        }
    }
}

/// Gaps between consecutive sends on each connection slot, as they left: the measured side of
/// the timetable (the requested side is `N / rate` and a coefficient of variation of 0 or 1).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GapStats {
    /// Gaps recorded.
    pub count: u64,
    /// Their sum, µs.
    pub sum_us: f64,
    /// The sum of their squares, µs².
    pub sum_sq_us: f64,
}

impl GapStats {
    /// Records one gap, ns.
    pub fn record(&mut self, gap_ns: u64) {
        let us = gap_ns as f64 / 1000.0;
        self.count += 1;
        self.sum_us += us;
        self.sum_sq_us += us * us;
    }

    /// Adds another thread's gaps.
    pub fn merge(&mut self, o: &GapStats) {
        self.count += o.count;
        self.sum_us += o.sum_us;
        self.sum_sq_us += o.sum_sq_us;
    }

    /// The mean gap, µs (0 with none recorded).
    pub fn mean_us(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum_us / self.count as f64
        }
    }

    /// The coefficient of variation: standard deviation over mean (0 with under two gaps).
    pub fn cv(&self) -> f64 {
        if self.count < 2 || self.sum_us <= 0.0 {
            return 0.0;
        }
        let n = self.count as f64;
        let mean = self.sum_us / n;
        let var = (self.sum_sq_us / n - mean * mean).max(0.0);
        var.sqrt() / mean
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::NANOS;
    use crate::schedule::Schedule;
    use std::time::Duration;

    fn constant(rate: f64) -> Timetable {
        Timetable::new(&Schedule::constant(rate), 0, None)
    }

    /// `count_due` over one window.
    fn due_between(
        p: &PoissonSlot,
        tt: &Timetable,
        from: u64,
        until: u64,
        budget: &mut u64,
    ) -> u64 {
        let mut n = [0];
        p.count_due(tt, &[(from, until)], &mut n, budget);
        n[0]
    }

    fn gaps(slot: &mut PoissonSlot, tt: &Timetable, n: usize) -> GapStats {
        let mut g = GapStats::default();
        let mut last = 0;
        for _ in 0..n {
            let due = slot.due();
            g.record(due - last);
            last = due;
            slot.advance(tt);
        }
        g
    }

    /// 200 000 gaps of a slot at 1000/s over 4 slots: mean 4000 µs and a coefficient of
    /// variation of 1, each within 1% (the standard error of both is about 0.2% here; with a
    /// fixed seed the draw is the same on every run of one version of rand and rand_pcg, so
    /// this cannot flake).
    #[test]
    fn poisson_gaps_have_the_requested_mean_and_spread() {
        let tt = constant(1000.0);
        let mut slot = PoissonSlot::new(7, 3, 4, &tt);
        let g = gaps(&mut slot, &tt, 200_000);
        assert!(
            (g.mean_us() / 4000.0 - 1.0).abs() < 0.01,
            "mean {}",
            g.mean_us()
        );
        assert!((g.cv() - 1.0).abs() < 0.01, "cv {}", g.cv());
    }

    /// The slots together are one Poisson process at the whole rate: over 16 slots at
    /// 8000/s, the count in each 10 ms window has mean 80 and variance 80 (a Poisson count's
    /// variance is its mean), each within 5% over 1000 windows.
    #[test]
    fn slots_add_up_to_a_poisson_process_at_the_whole_rate() {
        let (slots, window_ns, windows) = (16u32, 10_000_000u64, 1000u64);
        let tt = constant(8000.0);
        let mut counts = vec![0u64; windows as usize];
        for s in 0..slots {
            let mut p = PoissonSlot::new(42, u64::from(s), slots, &tt);
            while p.due() < window_ns * windows {
                counts[(p.due() / window_ns) as usize] += 1;
                p.advance(&tt);
            }
        }
        let n = counts.len() as f64;
        let mean = counts.iter().sum::<u64>() as f64 / n;
        let var = counts
            .iter()
            .map(|&c| (c as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        assert!((mean / 80.0 - 1.0).abs() < 0.05, "mean {mean}");
        assert!(
            (var / mean - 1.0).abs() < 0.15,
            "variance {var} against mean {mean}"
        );
    }

    /// One seed and slot give one timetable; another seed or another slot another.
    #[test]
    fn the_seed_and_the_slot_fix_the_timetable() {
        let tt = constant(500.0);
        let take = |seed, slot| {
            let mut p = PoissonSlot::new(seed, slot, 8, &tt);
            (0..5)
                .map(|_| {
                    let d = p.due();
                    p.advance(&tt);
                    d
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(take(1, 0), take(1, 0));
        assert_ne!(take(1, 0), take(2, 0));
        assert_ne!(take(1, 0), take(1, 1));
    }

    /// `count_due` counts what `advance` would reach in the window (here after a warmup of
    /// 0.2 s), and leaves the slot where it was.
    #[test]
    fn count_due_counts_without_moving() {
        let (from, until) = (200_000_000, 1_000_000_000);
        let tt = constant(1000.0);
        let mut p = PoissonSlot::new(3, 0, 1, &tt);
        let first = p.due();
        let mut budget = u64::MAX;
        let n = due_between(&p, &tt, from, until, &mut budget);
        assert_eq!(p.due(), first);
        let mut m = 0;
        while p.due() < until {
            m += u64::from(p.due() >= from);
            p.advance(&tt);
        }
        assert_eq!(n, m);
        assert!(n > 700 && n < 900, "{n}");
    }

    /// Past the budget the count is estimated, and the budget is spent: a day at 10^8/s
    /// (8.64·10^12 due, which drawing one by one would take hours) comes out within 0.1%.
    #[test]
    fn a_huge_unsent_count_is_estimated_not_drawn() {
        let tt = constant(1e8);
        let p = PoissonSlot::new(5, 0, 1, &tt);
        let mut budget = 1000;
        let n = due_between(&p, &tt, 0, 86_400 * NANOS, &mut budget);
        assert_eq!(budget, 0);
        assert!((n as f64 / 8.64e12 - 1.0).abs() < 0.001, "{n}");
    }

    /// On a ramp the same draws follow the rate: 8 slots ramping from 1000 to 9000 a second
    /// over 10 s send about Λ's count in each second (1400, 2200, ... 8600: the mean rate of
    /// that second), each within 5 standard deviations of a Poisson count, and `count_due`
    /// splits them into the same seconds.
    #[test]
    fn a_ramp_bends_the_poisson_process() {
        let (slots, seconds) = (8u32, 10u64);
        let tt = Timetable::new(
            &Schedule::ramp(1000.0, 9000.0, Duration::from_secs(seconds)),
            0,
            None,
        );
        let bins: Vec<(u64, u64)> = (0..seconds).map(|s| (s * NANOS, (s + 1) * NANOS)).collect();
        let mut drawn = vec![0u64; seconds as usize];
        let mut counted = vec![0u64; seconds as usize];
        for s in 0..slots {
            let mut p = PoissonSlot::new(9, u64::from(s), slots, &tt);
            let mut budget = u64::MAX;
            p.count_due(&tt, &bins, &mut counted, &mut budget);
            while p.due() < seconds * NANOS {
                drawn[(p.due() / NANOS) as usize] += 1;
                p.advance(&tt);
            }
        }
        assert_eq!(drawn, counted);
        for (s, &n) in drawn.iter().enumerate() {
            let expected = 1400.0 + 800.0 * s as f64;
            let z = (n as f64 - expected) / expected.sqrt();
            assert!(z.abs() < 5.0, "second {s}: {n} against {expected}");
        }
    }

    /// Past the budget, each window gets its expected share: steps of 100/s and 10 000/s.
    #[test]
    fn the_estimate_follows_the_steps() {
        let tt = Timetable::new(
            &Schedule::steps(&[
                (100.0, Duration::from_secs(10)),
                (10_000.0, Duration::from_secs(10)),
            ]),
            0,
            None,
        );
        let p = PoissonSlot::new(2, 0, 1, &tt);
        let mut counts = [0, 0];
        let mut budget = 10;
        p.count_due(
            &tt,
            &[(0, 10 * NANOS), (10 * NANOS, 20 * NANOS)],
            &mut counts,
            &mut budget,
        );
        assert!((900..1100).contains(&counts[0]), "{counts:?}");
        assert!((99_000..101_000).contains(&counts[1]), "{counts:?}");
    }

    #[test]
    fn fixed_gaps_vary_by_nothing() {
        let mut g = GapStats::default();
        for _ in 0..10 {
            g.record(2_000_000);
        }
        assert_eq!(g.mean_us(), 2000.0);
        assert_eq!(g.cv(), 0.0);
    }

    #[test]
    fn names_parse_and_print() {
        for a in [Arrivals::Fixed, Arrivals::Poisson] {
            assert_eq!(a.to_string().parse::<Arrivals>(), Ok(a));
        }
        assert!("gamma".parse::<Arrivals>().is_err());
    }
}
