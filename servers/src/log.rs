//! Minimal logging to stderr: `info!` always, `debug!` with `-v`.
//!
//! A logging crate would bring a global logger and, in most configurations, a background
//! thread or a lock; the forking servers must stay single-threaded and may log from a freshly
//! forked child, so the lab uses plain `eprintln!` behind one flag. Every line names the
//! program and the pid, because with `fork` several processes share one stderr.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use nix::time::{clock_gettime, ClockId};

static VERBOSE: AtomicBool = AtomicBool::new(false);
static PROGRAM: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// Turns debug logging on or off and sets the program name shown on each line.
pub fn init(program: &'static str, verbose: bool) {
    let _ = PROGRAM.set(program);
    VERBOSE.store(verbose, Ordering::Relaxed);
}

/// Whether `-v` was given.
pub fn verbose() -> bool {
    VERBOSE.load(Ordering::Relaxed)
}

/// Whether a line rate-limited by `last` may be logged now: true at most once a second for
/// every thread and process that shares `last`, which holds the time of the last `true`.
///
/// This is the one limiter. A line any connection handler may log needs one limit for the
/// whole server, fork children and prefork workers included, so `last` can be an atomic in
/// the fork-shared stats page, and the clock is CLOCK_MONOTONIC in milliseconds: the same
/// clock in every process, which an `Instant` cannot be stored as. Of several callers within
/// the same second, the compare-exchange lets exactly one through. A loop in one process
/// (the acceptor, the saturation line) keeps its `last` to itself: [`OnceASecond`].
pub fn once_a_second(last: &AtomicU64) -> bool {
    // clock_gettime(2) cannot fail for CLOCK_MONOTONIC; if it did, logging is the safe side.
    let Ok(now) = clock_gettime(ClockId::CLOCK_MONOTONIC) else {
        return true;
    };
    // Never 0, which `last` holds until the first line.
    let now_ms = (now.tv_sec() as u64 * 1000 + now.tv_nsec() as u64 / 1_000_000).max(1);
    let prev = last.load(Ordering::Relaxed);
    if prev != 0 && u128::from(now_ms.saturating_sub(prev)) < OnceASecond::PERIOD.as_millis() {
        return false;
    }
    last.compare_exchange(prev, now_ms, Ordering::Relaxed, Ordering::Relaxed)
        .is_ok()
}

/// The prefix of every line: `[server-fork 1234]`.
pub fn prefix() -> String {
    format!(
        "[{} {}]",
        PROGRAM.get().copied().unwrap_or("echolab"),
        std::process::id()
    )
}

/// A limiter for lines that report a lasting condition (out of descriptors, every worker
/// busy): the first line says it at once, and the condition may go on for minutes, so later
/// ones are dropped until a second has passed. A line per event would flood the log, and
/// slow the server down, exactly when it is already in trouble.
///
/// It is [`once_a_second`] with a `last` of its own, for a loop in one process.
#[derive(Debug, Default)]
pub struct OnceASecond {
    last: AtomicU64,
}

impl OnceASecond {
    /// How often a limited line may appear.
    pub const PERIOD: Duration = Duration::from_secs(1);

    /// Whether a line may be logged now; if so, the next one must wait a second.
    pub fn ready(&mut self) -> bool {
        once_a_second(&self.last)
    }
}

/// Logs a line to stderr.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => {
        eprintln!("{} {}", $crate::log::prefix(), format_args!($($arg)*))
    };
}

/// Logs a line to stderr when `-v` was given.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => {
        if $crate::log::verbose() {
            eprintln!("{} {}", $crate::log::prefix(), format_args!($($arg)*))
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_a_second_lets_one_line_through_per_second() {
        let last = AtomicU64::new(0);
        assert!(once_a_second(&last), "the first line goes out");
        assert!(
            !once_a_second(&last),
            "a second one within the second does not"
        );
        assert!(!once_a_second(&last));
        // Pretend the last line went out 1.1 s ago.
        let t = last.load(Ordering::Relaxed);
        last.store(t.saturating_sub(1100).max(1), Ordering::Relaxed);
        assert!(once_a_second(&last), "a second later, one more");
        assert!(!once_a_second(&last));
    }
}
