//! Minimal logging to stderr: `info!` always, `debug!` with `-v`.
//!
//! A logging crate would bring a global logger and, in most configurations, a background
//! thread or a lock; the forking servers must stay single-threaded and may log from a freshly
//! forked child, so the lab uses plain `eprintln!` behind one flag. Every line names the
//! program and the pid, because with `fork` several processes share one stderr.

use std::sync::atomic::{AtomicBool, Ordering};

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
