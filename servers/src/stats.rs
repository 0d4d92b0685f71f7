//! Counters that survive `fork`, and the statistics report written on shutdown.
//!
//! After `fork`, parent and child have separate copies of every variable: a child that counts
//! requests in an ordinary integer counts into its own copy, and the parent never sees it. The
//! counters therefore live in a `MAP_SHARED` anonymous mapping, created before the first fork
//! and inherited by every child: one physical page that all processes write to with atomic
//! operations. This is what Stevens' `meter.c` did for the prefork servers of UNP ch. 30. The
//! thread server uses the same type so every model reports the same way.

use std::io;
use std::num::NonZeroUsize;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use nix::sys::mman::{mmap_anonymous, munmap, MapFlags, ProtFlags};
use serde::Serialize;

/// One set of counters. Slot 0 of [`SharedCounters`] is the whole server; further slots are
/// per worker where a model has workers.
#[repr(C)]
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections accepted (including those then refused as busy).
    pub accepted: AtomicU64,
    /// Connections refused with the "server busy" reply.
    pub refused: AtomicU64,
    /// Connections served and closed, for any reason.
    pub closed: AtomicU64,
    /// Connections closed by the idle timeout.
    pub idle_timeouts: AtomicU64,
    /// Connections closed because the client did not read its replies in time.
    pub write_timeouts: AtomicU64,
    /// Connections closed because a request took longer than `--request-timeout` to arrive.
    pub request_timeouts: AtomicU64,
    /// Requests answered with a success reply.
    pub requests: AtomicU64,
    /// Requests answered with an ERROR reply (connection kept).
    pub errors: AtomicU64,
    /// Connections closed for a protocol error (bad length, bad header, not JSON).
    pub protocol_errors: AtomicU64,
    /// For a worker slot: its current pid (0 when none); for a worker that is a thread which
    /// records it (`server-eventloop --threads`), its kernel thread id.
    pub pid: AtomicU64,
    /// For a worker slot: how many times it was restarted after dying.
    pub restarts: AtomicU64,
    /// For a worker slot: how many times it was replaced after retiring at
    /// `--max-requests-per-worker` (a planned exit, not a death).
    pub recycled: AtomicU64,
    /// For a worker slot: 1 while the worker serves a connection, 0 while it waits for one.
    /// A gauge, not a count: the prefork parent and the pool's accept loop read it to tell
    /// whether any worker is free (see [`crate::saturation`]).
    pub busy: AtomicU64,
    /// For an event loop: times its wait returned with something ready (not the timeouts of
    /// its housekeeping tick).
    pub wakeups: AtomicU64,
    /// For an event loop: wake-ups with the listener among what was ready.
    pub listener_wakeups: AtomicU64,
    /// For an event loop: wake-ups with the listener ready whose first accept found nothing
    /// (`EAGAIN`): another process took the connection first. The thundering herd.
    pub futile_wakeups: AtomicU64,
    /// Not a count, and not reported: when (CLOCK_MONOTONIC, ms) the totals slot last logged
    /// "this looks like RESP" ([`crate::log::once_a_second`]). It lives here because this is
    /// the one memory every process of a server shares: in a per-process variable, each fork
    /// child would start with "never logged" and log again.
    pub resp_hint_logged_ms: AtomicU64,
}

/// A plain copy of [`Counters`], for reports.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Snapshot {
    pub accepted: u64,
    pub refused: u64,
    pub closed: u64,
    pub idle_timeouts: u64,
    pub write_timeouts: u64,
    pub request_timeouts: u64,
    pub requests: u64,
    pub errors: u64,
    pub protocol_errors: u64,
}

impl Counters {
    /// Adds one to a counter.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    /// Marks a worker's slot busy (serving a connection) or free.
    pub fn set_busy(&self, busy: bool) {
        self.busy.store(u64::from(busy), Relaxed);
    }

    /// Whether a worker's slot is marked busy.
    pub fn is_busy(&self) -> bool {
        self.busy.load(Relaxed) != 0
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            accepted: self.accepted.load(Relaxed),
            refused: self.refused.load(Relaxed),
            closed: self.closed.load(Relaxed),
            idle_timeouts: self.idle_timeouts.load(Relaxed),
            write_timeouts: self.write_timeouts.load(Relaxed),
            request_timeouts: self.request_timeouts.load(Relaxed),
            requests: self.requests.load(Relaxed),
            errors: self.errors.load(Relaxed),
            protocol_errors: self.protocol_errors.load(Relaxed),
        }
    }
}

/// `slots` sets of [`Counters`] in memory shared with every child forked after creation.
#[derive(Debug)]
pub struct SharedCounters {
    ptr: NonNull<Counters>,
    slots: usize,
}

// SAFETY: the mapping is only accessed through `&Counters`, whose fields are atomics, so
// sharing it between threads is as safe as sharing any `Sync` value.
unsafe impl Send for SharedCounters {}
// SAFETY: as above.
unsafe impl Sync for SharedCounters {}

impl SharedCounters {
    /// Maps `slots` zeroed counter sets (slot 0 for the totals).
    pub fn new(slots: usize) -> io::Result<SharedCounters> {
        let slots = slots.max(1);
        let bytes = slots
            .checked_mul(std::mem::size_of::<Counters>())
            .and_then(NonZeroUsize::new)
            .ok_or_else(|| io::Error::other(format!("cannot map {slots} counter slots")))?;
        // SAFETY: a fresh anonymous mapping aliases no Rust object. The kernel zero-fills it,
        // and all-zero bytes are a valid `AtomicU64` (0), so the memory is a valid
        // `[Counters; slots]` from the start; `mmap` returns page-aligned memory, which
        // satisfies `Counters`' alignment.
        let ptr = unsafe {
            mmap_anonymous(
                None,
                bytes,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )
        }?;
        Ok(SharedCounters {
            ptr: ptr.cast(),
            slots,
        })
    }

    /// The whole server's counters.
    pub fn total(&self) -> &Counters {
        self.slot(0)
    }

    /// Slot `i` (0 = totals, 1.. = workers).
    ///
    /// # Panics
    /// If `i` is out of range: a bug in the caller.
    pub fn slot(&self, i: usize) -> &Counters {
        assert!(i < self.slots, "counter slot {i} of {}", self.slots);
        // SAFETY: `i` is in bounds of the mapping, which lives as long as `self` and holds
        // valid `Counters` (see `new`).
        unsafe { &*self.ptr.as_ptr().add(i) }
    }

    /// Number of slots, totals included.
    pub fn slots(&self) -> usize {
        self.slots
    }
}

impl Drop for SharedCounters {
    fn drop(&mut self) {
        // SAFETY: the pointer and length are those `mmap` returned; no reference into the
        // mapping outlives `self`, since `slot` borrows `self`.
        let _ = unsafe {
            munmap(
                self.ptr.cast(),
                self.slots * std::mem::size_of::<Counters>(),
            )
        };
    }
}

/// Jain's fairness index of `xs`: 1.0 when every value is equal, 1/n when one worker got
/// everything. `None` when there is nothing to judge.
pub fn jain_index(xs: &[u64]) -> Option<f64> {
    let sum: f64 = xs.iter().map(|&x| x as f64).sum();
    let squares: f64 = xs.iter().map(|&x| (x as f64) * (x as f64)).sum();
    (sum > 0.0).then(|| sum * sum / (xs.len() as f64 * squares))
}

/// One worker's line in the report.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerReport {
    /// Worker index, from 0.
    pub worker: usize,
    /// Its pid, for process-based workers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u64>,
    /// Its kernel thread id, for thread workers that record one (event-loop threads): what
    /// `top -H`, `perf --tid` and `/proc/PID/task/` call it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tid: Option<u64>,
    /// Times it was restarted after dying.
    pub restarts: u64,
    /// Times it retired at `--max-requests-per-worker` and was replaced.
    pub recycled: u64,
    /// Whether it was serving a connection when the report was made (an event-loop worker:
    /// whether it had no room for another).
    pub busy: bool,
    /// Event-loop workers only (absent for blocking ones, which wait in accept() and are
    /// woken only with a connection): times its poller's wait returned with something ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wakeups: Option<u64>,
    /// Event-loop workers only: wake-ups with the listener among what was ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listener_wakeups: Option<u64>,
    /// Event-loop workers only: wake-ups with the listener ready whose first accept found
    /// nothing, because another worker took the connection (the thundering herd).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub futile_wakeups: Option<u64>,
    /// Its counters.
    #[serde(flatten)]
    pub counters: Snapshot,
}

/// How often event loops woke, and how often for nothing: the thundering herd in figures.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Wakeups {
    /// Waits that returned with something ready (the housekeeping tick's timeouts excluded).
    pub wakeups: u64,
    /// Wake-ups with the listener among what was ready.
    pub listener_wakeups: u64,
    /// Of those, the ones whose first accept found nothing: another loop took the connection.
    pub futile_wakeups: u64,
    /// `futile_wakeups / listener_wakeups`: the share of listener wake-ups that were the herd's
    /// (absent before the listener was ever ready).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub futile_share: Option<f64>,
}

/// The statistics a server prints and writes on shutdown.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The binary (`server-thread`, ...).
    pub server: String,
    /// The model and variant (`thread-per-connection`, `prefork/locked`, ...).
    pub model: String,
    /// The wire protocol.
    pub protocol: String,
    /// The server's pid.
    pub pid: u32,
    /// Seconds from start to the report.
    pub uptime_s: f64,
    /// Counters for the whole server.
    pub totals: Snapshot,
    /// Per-worker counters, where the model has workers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<WorkerReport>,
    /// Jain's fairness index of connections accepted per worker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accept_fairness_jain: Option<f64>,
    /// Event loops only: their wake-ups, all loops together ([`Report::with_wakeups`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wakeups: Option<Wakeups>,
    /// The session table's figures (HELLO, INCR, GET): one table for the whole server, so
    /// for fork and prefork these are every process's together.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sessions: Option<crate::session::SessionReport>,
    /// Model-specific figures (children forked, zombies seen, ...).
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Report {
    /// A report with the totals of `counters` and no workers.
    pub fn new(
        server: &str,
        model: String,
        protocol: &str,
        started: Instant,
        counters: &SharedCounters,
    ) -> Report {
        Report {
            server: server.to_owned(),
            model,
            protocol: protocol.to_owned(),
            pid: std::process::id(),
            uptime_s: started.elapsed().as_secs_f64(),
            totals: counters.total().snapshot(),
            workers: Vec::new(),
            accept_fairness_jain: None,
            wakeups: None,
            sessions: None,
            extra: serde_json::Map::new(),
        }
    }

    /// Adds the session table's figures.
    pub fn with_sessions(mut self, store: &crate::session::Store) -> Report {
        self.sessions = Some(store.report());
        self
    }

    /// Adds per-worker lines from slots `1..` and the fairness of their accept counts. Each
    /// line names its process (`pid`) for process workers; thread workers have a `tid` where
    /// they recorded one in the slot's `pid` field.
    pub fn with_workers(mut self, counters: &SharedCounters, processes: bool) -> Report {
        self.workers = (1..counters.slots())
            .map(|i| {
                let slot = counters.slot(i);
                let id = slot.pid.load(Relaxed);
                WorkerReport {
                    worker: i - 1,
                    pid: processes.then_some(id),
                    tid: (!processes && id != 0).then_some(id),
                    restarts: slot.restarts.load(Relaxed),
                    recycled: slot.recycled.load(Relaxed),
                    busy: slot.busy.load(Relaxed) != 0,
                    wakeups: None,
                    listener_wakeups: None,
                    futile_wakeups: None,
                    counters: slot.snapshot(),
                }
            })
            .collect();
        let accepted: Vec<u64> = self.workers.iter().map(|w| w.counters.accepted).collect();
        self.accept_fairness_jain = jain_index(&accepted);
        self
    }

    /// Adds the wake-up counts of event loops: in total, and (after
    /// [`Report::with_workers`]) per worker. Only models that run event loops call it, so
    /// blocking workers' reports have no wake-up fields at all rather than zeros that would
    /// read as "never woke".
    pub fn with_wakeups(mut self, counters: &SharedCounters) -> Report {
        for w in &mut self.workers {
            let slot = counters.slot(w.worker + 1);
            w.wakeups = Some(slot.wakeups.load(Relaxed));
            w.listener_wakeups = Some(slot.listener_wakeups.load(Relaxed));
            w.futile_wakeups = Some(slot.futile_wakeups.load(Relaxed));
        }
        let total = counters.total();
        let listener = total.listener_wakeups.load(Relaxed);
        let futile = total.futile_wakeups.load(Relaxed);
        self.wakeups = Some(Wakeups {
            wakeups: total.wakeups.load(Relaxed),
            listener_wakeups: listener,
            futile_wakeups: futile,
            futile_share: (listener > 0).then(|| futile as f64 / listener as f64),
        });
        self
    }

    /// Writes the JSON to `path` via a temporary file and a rename, so a reader polling the
    /// file never sees half of it.
    pub fn write_atomically(&self, path: &Path) -> io::Result<()> {
        let tmp = path.with_extension("tmp");
        let json = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        std::fs::write(&tmp, json)?;
        std::fs::rename(&tmp, path)
    }

    /// Prints a summary on stderr and writes the JSON to `path`, if given.
    pub fn emit(&self, path: Option<&Path>) {
        let t = &self.totals;
        crate::info!(
            "stats: accepted {} refused {} closed {} requests {} errors {} protocol_errors {} idle_timeouts {} write_timeouts {} request_timeouts {}",
            t.accepted, t.refused, t.closed, t.requests, t.errors, t.protocol_errors, t.idle_timeouts, t.write_timeouts, t.request_timeouts
        );
        for w in &self.workers {
            let woken = match (w.wakeups, w.futile_wakeups) {
                (Some(n), Some(futile)) => format!(" wakeups {n} futile_wakeups {futile}"),
                _ => String::new(),
            };
            crate::info!(
                "  worker {} accepted {} requests {} restarts {} recycled {}{woken}",
                w.worker,
                w.counters.accepted,
                w.counters.requests,
                w.restarts,
                w.recycled
            );
        }
        if let Some(w) = &self.wakeups {
            let share = w
                .futile_share
                .map_or("-".to_owned(), |s| format!("{:.1}%", s * 100.0));
            crate::info!(
                "  wake-ups {}: with the listener ready {}, futile {} (futile share {share}: woken for a connection another took)",
                w.wakeups, w.listener_wakeups, w.futile_wakeups
            );
        }
        if let Some(s) = &self.sessions {
            crate::info!(
                "  sessions (dedup {}): clients_live {} incr_executed {} replayed {} evicted {} too_old {} conflicts {} expired {} no_session {} keys_full {} lock_recoveries {}",
                if s.dedup { "on" } else { "off" },
                s.clients_live, s.incr_executed, s.replayed, s.evicted, s.too_old, s.conflicts, s.expired, s.no_session, s.keys_full, s.lock_recoveries
            );
        }
        if let Some(j) = self.accept_fairness_jain {
            crate::info!("  accept fairness (Jain's index, 1.0 = even): {j:.3}");
        }
        if let Some(path) = path {
            if let Err(e) = self.write_atomically(path) {
                crate::info!("could not write stats file {}: {e}", path.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jain() {
        assert_eq!(jain_index(&[5, 5, 5, 5]), Some(1.0));
        assert_eq!(jain_index(&[8, 0, 0, 0]), Some(0.25));
        assert_eq!(jain_index(&[0, 0]), None);
    }

    #[test]
    fn counters_are_shared_with_a_forked_child() {
        let counters = SharedCounters::new(2).unwrap();
        // SAFETY: the test harness is multi-threaded, so the child only does async-signal-safe
        // work: an atomic add on shared memory and _exit.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                counters.slot(1).requests.fetch_add(41, Relaxed);
                // SAFETY: _exit skips the parent's test harness destructors in the child.
                unsafe { libc::_exit(0) };
            }
            nix::unistd::ForkResult::Parent { child } => {
                nix::sys::wait::waitpid(child, None).unwrap();
            }
        }
        assert_eq!(counters.slot(1).requests.load(Relaxed), 41);
    }
}
