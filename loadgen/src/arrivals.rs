//! When the open loop's requests are due: on a fixed timetable, or as a Poisson process.
//!
//! Real traffic is closer to Poisson than to a metronome: many independent clients, each
//! arriving when it likes, add up to exponentially distributed gaps. That irregularity is the
//! point of measuring with it: requests that bunch up queue behind each other, so latency
//! climbs long before the server is busy 100% of the time, where a fixed timetable at the same
//! mean rate keeps them apart and hides that queueing.
//!
//! The `N` connection slots share the rate. With `fixed` arrivals slot `g` sends request `k`
//! at `(g + k·N) / rate` (computed by the engine). With `poisson` each slot is a Poisson
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

use crate::clock::NANOS;

/// How the open loop's requests arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
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

/// How many due times [`PoissonSlot::due_between`] may draw, over all the slots of a thread,
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
#[derive(Debug, Clone)]
pub struct PoissonSlot {
    rng: Pcg64,
    /// The slot's mean gap, ns (`N / rate` seconds).
    mean_gap_ns: f64,
    /// When the next request is due, ns from the run's start, unrounded so that rounding
    /// errors do not add up over millions of gaps.
    due_ns: f64,
}

impl PoissonSlot {
    /// Slot `slot` of `slots`, sharing `rate` requests per second, with `seed`.
    pub fn new(seed: u64, slot: u64, slots: u32, rate: f64) -> PoissonSlot {
        // Each half of the 128-bit state from a different mix of (seed, slot), and the
        // slot as the stream number as well.
        let hi = splitmix64(seed ^ splitmix64(slot));
        let lo = splitmix64(hi ^ slot.wrapping_mul(0xD1B5_4A32_D192_ED03));
        let state = u128::from(hi) << 64 | u128::from(lo);
        let mut p = PoissonSlot {
            rng: Pcg64::new(state, u128::from(slot)),
            mean_gap_ns: f64::from(slots) * NANOS as f64 / rate,
            due_ns: 0.0,
        };
        p.due_ns = p.gap();
        p
    }

    /// An exponentially distributed gap, by inversion: `-mean · ln(1 - U)`, `U` uniform on
    /// [0, 1), so the logarithm's argument is never 0.
    fn gap(&mut self) -> f64 {
        let u: f64 = self.rng.random();
        -self.mean_gap_ns * (1.0 - u).ln()
    }

    /// When the slot's next request is due, ns from the run's start.
    pub fn due(&self) -> u64 {
        self.due_ns as u64
    }

    /// The next request has been sent: draw the one after it.
    pub fn advance(&mut self) {
        self.due_ns += self.gap();
    }

    /// How many of the slot's requests, from the next one on, are due in `[from, until)`:
    /// counted one by one while `budget` (draws, shared with the thread's other slots) lasts,
    /// then estimated. A Poisson process has no memory, so from any due time on the expected
    /// count is that one plus the time left over the mean gap.
    pub fn due_between(&self, from: u64, until: u64, budget: &mut u64) -> u64 {
        let mut p = self.clone();
        let mut n = 0;
        while p.due() < until {
            if *budget == 0 {
                let start = p.due().max(from);
                let rest = until.saturating_sub(start) as f64;
                return n + 1 + (rest / p.mean_gap_ns).round() as u64;
            }
            *budget -= 1;
            if p.due() >= from {
                n += 1;
            }
            p.advance();
        }
        n
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

    fn gaps(slot: &mut PoissonSlot, n: usize) -> GapStats {
        let mut g = GapStats::default();
        let mut last = 0;
        for _ in 0..n {
            let due = slot.due();
            g.record(due - last);
            last = due;
            slot.advance();
        }
        g
    }

    /// 200 000 gaps of a slot at 1000/s over 4 slots: mean 4000 µs and a coefficient of
    /// variation of 1, each within 1% (the standard error of both is about 0.2% here; with a
    /// fixed seed the draw is the same on every run of one version of rand and rand_pcg, so
    /// this cannot flake).
    #[test]
    fn poisson_gaps_have_the_requested_mean_and_spread() {
        let mut slot = PoissonSlot::new(7, 3, 4, 1000.0);
        let g = gaps(&mut slot, 200_000);
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
        let (slots, rate, window_ns, windows) = (16u32, 8000.0, 10_000_000u64, 1000u64);
        let mut counts = vec![0u64; windows as usize];
        for s in 0..slots {
            let mut p = PoissonSlot::new(42, u64::from(s), slots, rate);
            while p.due() < window_ns * windows {
                counts[(p.due() / window_ns) as usize] += 1;
                p.advance();
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
        let take = |seed, slot| {
            let mut p = PoissonSlot::new(seed, slot, 8, 500.0);
            (0..5)
                .map(|_| {
                    let d = p.due();
                    p.advance();
                    d
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(take(1, 0), take(1, 0));
        assert_ne!(take(1, 0), take(2, 0));
        assert_ne!(take(1, 0), take(1, 1));
    }

    /// `due_between` counts what `advance` would reach in the window (here after a warmup of
    /// 0.2 s), and leaves the slot where it was.
    #[test]
    fn due_between_counts_without_moving() {
        let (from, until) = (200_000_000, 1_000_000_000);
        let mut p = PoissonSlot::new(3, 0, 1, 1000.0);
        let first = p.due();
        let mut budget = u64::MAX;
        let n = p.due_between(from, until, &mut budget);
        assert_eq!(p.due(), first);
        let mut m = 0;
        while p.due() < until {
            m += u64::from(p.due() >= from);
            p.advance();
        }
        assert_eq!(n, m);
        assert!(n > 700 && n < 900, "{n}");
    }

    /// Past the budget the count is estimated, and the budget is spent: a day at 10^8/s
    /// (8.64·10^12 due, which drawing one by one would take hours) comes out within 0.1%.
    #[test]
    fn a_huge_unsent_count_is_estimated_not_drawn() {
        let p = PoissonSlot::new(5, 0, 1, 1e8);
        let mut budget = 1000;
        let n = p.due_between(0, 86_400 * NANOS, &mut budget);
        assert_eq!(budget, 0);
        assert!((n as f64 / 8.64e12 - 1.0).abs() < 0.001, "{n}");
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
