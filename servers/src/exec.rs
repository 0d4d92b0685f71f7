//! Executing a request: the same few lines for every model.
//!
//! SLEEP and SPIN are the two kinds of slow handler a real server meets: one that waits (on a
//! disk, a database, another service) and one that computes. In a thread or a process per
//! connection, either delays only its own client. In the event loop, both delay *every*
//! client, because the loop is the only thread: that contrast is the point of having them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use echolab_protocol::{json, Command, Reply, Request};

/// `--debug-spin-ns`: CPU burnt on every request, set once at start-up.
///
/// A process-wide setting rather than a parameter threaded through every model: it is a testing
/// aid, not part of any model's lifecycle, and a global keeps it out of the code students read.
/// Forked children inherit it with the rest of memory.
static DEBUG_SPIN_NS: AtomicU64 = AtomicU64::new(0);

/// `--debug-work`: rounds of a fixed loop run on every request, set once at start-up.
static DEBUG_WORK: AtomicU64 = AtomicU64::new(0);

/// Sets `--debug-work` for this process (and the children it will fork).
pub fn set_debug_work(rounds: u64) {
    DEBUG_WORK.store(rounds, Ordering::Relaxed);
}

/// Sets `--debug-spin-ns` for this process (and the children it will fork).
pub fn set_debug_spin_ns(ns: u64) {
    DEBUG_SPIN_NS.store(ns, Ordering::Relaxed);
}

/// Runs `request` on the calling thread and returns what to reply.
pub fn execute(request: &Request<'_>) -> Reply<'static> {
    debug_spin();
    match request.command {
        // CONFIG GET has nothing to run: the codec answers it from its table of settings.
        Command::Echo | Command::Ping | Command::ConfigGet => Reply::Echo,
        Command::Sleep { micros } => {
            // nanosleep(2); std retries it on EINTR with the remaining time, so a signal
            // does not cut the simulated blocking call short.
            std::thread::sleep(Duration::from_micros(micros.into()));
            Reply::Echo
        }
        Command::Spin { micros } => {
            spin(Duration::from_micros(micros.into()));
            Reply::Echo
        }
        Command::Pi { n } => Reply::Pi(json::pi(n)),
        // Answered by the caller (conn::answer_all) from the session table
        // (crate::session::Store), which is state, where everything here is stateless.
        Command::Hello { .. } | Command::Incr { .. } | Command::Get | Command::Record => {
            Reply::Echo
        }
    }
}

/// Burns `--debug-spin-ns` of CPU and runs `--debug-work`'s rounds, as every request does
/// (the session requests, which [`crate::session`] answers, call it too).
pub fn debug_spin() {
    let ns = DEBUG_SPIN_NS.load(Ordering::Relaxed);
    if ns > 0 {
        spin(Duration::from_nanos(ns));
    }
    let rounds = DEBUG_WORK.load(Ordering::Relaxed);
    if rounds > 0 {
        work(rounds);
    }
}

/// `rounds` turns of an xorshift step: the same instructions per turn on any machine, kept
/// from being optimised away by `black_box`.
fn work(rounds: u64) {
    let mut x = std::hint::black_box(0x9e37_79b9_7f4a_7c15_u64);
    for _ in 0..rounds {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x = std::hint::black_box(x);
    }
}

/// Burns CPU on this thread for `d` of wall time.
fn spin(d: Duration) {
    let deadline = Instant::now() + d;
    while Instant::now() < deadline {
        std::hint::spin_loop();
    }
}
