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
    // A constant: in a build without it the comparison is always false, and the branch and
    // the loop compile to nothing. That is the point, so clippy's lint does not apply.
    #[allow(clippy::absurd_extreme_comparisons)]
    if BUILT_IN_WORK > 0 {
        work(BUILT_IN_WORK);
    }
}

/// `rounds` turns of an add whose value goes through `black_box` each time: a few instructions
/// per turn, the same on any machine, and neither folded nor vectorised by the compiler.
#[inline(always)]
fn work(rounds: u64) {
    let mut x = 0u64;
    for _ in 0..rounds {
        x = std::hint::black_box(x).wrapping_add(1);
    }
    std::hint::black_box(x);
}

/// `ECHOLAB_DEBUG_WORK`, read when the crate is compiled: rounds of [`work`] built into every
/// request. A build made with it is a candidate with a CPU-only regression compiled in, as
/// one a real change would bring, with none of the per-request check `--debug-work` costs
/// (a few instructions, about 1% of a request here): that is how the instruction gate's proof
/// (scripts/instr-gate-proof.py) injects 0.5%. 0, the default, compiles to nothing.
const BUILT_IN_WORK: u64 = match option_env!("ECHOLAB_DEBUG_WORK") {
    Some(s) => parse_rounds(s.as_bytes()),
    None => 0,
};

/// A decimal number, at compile time (anything else is 0).
const fn parse_rounds(digits: &[u8]) -> u64 {
    let mut n = 0u64;
    let mut i = 0;
    while i < digits.len() {
        let d = digits[i];
        if !d.is_ascii_digit() {
            return 0;
        }
        n = n.saturating_mul(10).saturating_add((d - b'0') as u64);
        i += 1;
    }
    n
}

/// Burns CPU on this thread for `d` of wall time.
fn spin(d: Duration) {
    let deadline = Instant::now() + d;
    while Instant::now() < deadline {
        std::hint::spin_loop();
    }
}
