//! One monotonic clock for a run, in nanoseconds since the run began.
//!
//! Every timestamp in loadgen (schedules, sends, replies, interval boundaries) is a `u64` of
//! nanoseconds from one shared base, so threads can compare them and the open-loop timetable
//! is plain integer arithmetic. `Instant` is `CLOCK_MONOTONIC` on Linux; the clock also keeps
//! that clock's reading at the base so a deadline can be handed to `timerfd_settime` as an
//! absolute `CLOCK_MONOTONIC` time, which is what lets pacing wake to the microsecond instead
//! of to epoll's millisecond.

use std::time::{Duration, Instant};

use nix::sys::time::TimeSpec;
use nix::time::{clock_gettime, ClockId};

/// Nanoseconds in a second.
pub const NANOS: u64 = 1_000_000_000;

/// The run's clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Instant,
    /// `CLOCK_MONOTONIC` at `base`, in ns.
    base_mono_ns: u64,
}

impl Clock {
    /// Starts the clock now.
    pub fn start() -> Clock {
        let base = Instant::now();
        // clock_gettime(2) on CLOCK_MONOTONIC cannot fail on Linux; were it to, timerfd
        // deadlines would be early and pacing would fall back to polling, not break.
        let mono = clock_gettime(ClockId::CLOCK_MONOTONIC)
            .map(|t| t.tv_sec() as u64 * NANOS + t.tv_nsec() as u64)
            .unwrap_or(0);
        Clock {
            base,
            base_mono_ns: mono,
        }
    }

    /// Nanoseconds since the start.
    #[inline]
    pub fn now(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    /// A run time as an absolute `CLOCK_MONOTONIC` time, for `TFD_TIMER_ABSTIME`.
    pub fn monotonic(&self, at: u64) -> TimeSpec {
        TimeSpec::from_duration(Duration::from_nanos(self.base_mono_ns.saturating_add(at)))
    }
}

/// Converts a duration to run-clock nanoseconds (saturating; durations are capped at a day).
pub fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
