//! Minimal logging to stderr: `info!` always, `debug!` with `-v`.
//!
//! A logging crate would bring a global logger and, in most configurations, a background
//! thread or a lock; the forking servers must stay single-threaded and may log from a freshly
//! forked child, so the lab uses plain `eprintln!` behind one flag. Every line names the
//! program and the pid, because with `fork` several processes share one stderr.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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
#[derive(Debug, Default)]
pub struct OnceASecond {
    last: Option<Instant>,
}

impl OnceASecond {
    /// How often a limited line may appear.
    pub const PERIOD: Duration = Duration::from_secs(1);

    /// Whether a line may be logged now; if so, the next one must wait a second.
    pub fn ready(&mut self) -> bool {
        if self.last.is_some_and(|t| t.elapsed() < Self::PERIOD) {
            return false;
        }
        self.last = Some(Instant::now());
        true
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
