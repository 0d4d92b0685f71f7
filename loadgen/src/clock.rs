//! One monotonic clock for a run, in nanoseconds since the run began.
//!
//! Every timestamp in loadgen (schedules, sends, replies, interval boundaries) is a `u64` of
//! nanoseconds from one shared base, so threads can compare them and the open-loop timetable
//! is plain integer arithmetic. `Instant` is `CLOCK_MONOTONIC` on Linux; the clock also keeps
//! that clock's reading at the base so a deadline can be handed to `timerfd_settime` as an
//! absolute `CLOCK_MONOTONIC` time, which is what lets pacing wake to the microsecond instead
//! of to epoll's millisecond.

use std::time::{Duration, Instant, SystemTime};

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
    /// The wall clock (`CLOCK_REALTIME`) at `base`: read once, so that a step of the wall
    /// clock during the run (NTP) moves no timestamp; only the run's start is wall time.
    base_wall: SystemTime,
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
            base_wall: SystemTime::now(),
        }
    }

    /// A run time on the wall clock, as the run's start fixed it: what interval logs and
    /// reports of several machines are aligned by (so only as good as their clocks' sync).
    pub fn wall(&self, at: u64) -> SystemTime {
        self.base_wall + Duration::from_nanos(at)
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

/// Seconds since 1970 in UTC, split into (year, month, day) and (hour, minute, second).
fn utc_now() -> ((i64, u32, u32), (u64, u64, u64)) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    (
        civil_from_days(days as i64),
        (rem / 3600, rem / 60 % 60, rem % 60),
    )
}

/// A results directory name: `2026-11-25-182648-<what>`, in UTC.
pub fn run_id(what: &str) -> String {
    let ((y, m, d), (hh, mm, ss)) = utc_now();
    format!("{y:04}-{m:02}-{d:02}-{hh:02}{mm:02}{ss:02}-{what}")
}

/// The current time as ISO 8601 in UTC: `2026-11-25T18:26:48Z`.
pub fn utc_timestamp() -> String {
    let ((y, m, d), (hh, mm, ss)) = utc_now();
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar (Howard
/// Hinnant's algorithm), so timestamps need no date crate.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_417), (2025, 11, 25));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
