//! Saturation made visible while it happens, for the models with a fixed number of workers
//! (server-prefork, and server-thread's `--pool`).
//!
//! A bounded model does not refuse the client it has no worker for: it lets it wait — in the
//! kernel's accept queue (prefork) or in the pool's queue. That client's `connect` succeeded
//! long ago, its request simply gets no answer, and inside the server nothing happens at all,
//! since nobody is free to notice. Before this module, `redis-benchmark -c 50` against a
//! prefork with 2 workers ran for 0.75 s, then sat at 0 requests per second, and the server
//! said nothing.
//!
//! So the process that never serves a client — the prefork parent, the pool's accept loop —
//! samples, every [`SAMPLE_EVERY`], whether any worker is free and how many connections
//! wait; when none is free and some wait, it logs a line that says how many and what to do,
//! at most once a second ([`OnceASecond`]), and it keeps two figures for the statistics
//! report. Busy workers come from the `busy` gauge in the shared counters (each worker sets
//! its own), the accept queue from `TCP_INFO` ([`crate::net::accept_queue`]): no thread is
//! added, so the forking servers stay single-threaded. nginx and Apache leave this to a
//! status page (`mod_status`'s scoreboard shows every worker's state); the lab puts it in the
//! log because that is where someone whose benchmark just stalled looks first.

use std::time::{Duration, Instant};

use crate::log::OnceASecond;

/// How often the watcher samples. Often enough that a stall shows within a second, and cheap:
/// one `getsockopt` per listener and one load per worker's slot.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// What the watcher has seen so far.
#[derive(Debug, Default)]
pub struct Saturation {
    log_limit: OnceASecond,
    last_sample: Option<Instant>,
    saturated: Duration,
    peak_waiting: u64,
}

impl Saturation {
    /// Records one sample: `waiting` connections wait with no worker free to take them (0 when
    /// some worker is free or nobody waits). When a line is due, logs what `describe` says.
    pub fn sample(&mut self, waiting: u64, describe: impl FnOnce() -> String) {
        let now = Instant::now();
        // The time since the last sample is credited to whatever this sample saw: the figure
        // is exact to within one sampling period. Capped, so that a watcher that was itself
        // stopped (SIGSTOP, a debugger) does not credit the whole pause.
        let since = self
            .last_sample
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t))
            .min(2 * SAMPLE_EVERY);
        self.last_sample = Some(now);
        if waiting == 0 {
            return;
        }
        self.saturated += since;
        self.peak_waiting = self.peak_waiting.max(waiting);
        if self.log_limit.ready() {
            crate::info!("{}", describe());
        }
    }

    /// Adds the two figures to a statistics report's model-specific part:
    /// - `saturated_s`: seconds during which no worker was free and connections waited
    ///   (sampled every 250 ms);
    /// - `peak_waiting`: the most connections seen waiting at one sample while no worker was
    ///   free.
    pub fn report_into(&self, extra: &mut serde_json::Map<String, serde_json::Value>) {
        // Milliseconds are all the sampling can resolve.
        let seconds = (self.saturated.as_secs_f64() * 1000.0).round() / 1000.0;
        extra.insert("saturated_s".into(), seconds.into());
        extra.insert("peak_waiting".into(), self.peak_waiting.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_saturated_samples() {
        let mut s = Saturation::default();
        s.sample(0, || unreachable!("not saturated"));
        std::thread::sleep(Duration::from_millis(20));
        let mut lines = 0;
        s.sample(3, || {
            lines += 1;
            String::new()
        });
        // A second line within the second is not logged.
        s.sample(5, || {
            lines += 1;
            String::new()
        });
        assert_eq!(lines, 1);
        assert_eq!(s.peak_waiting, 5);
        assert!(
            s.saturated >= Duration::from_millis(20),
            "{:?}",
            s.saturated
        );
        let mut extra = serde_json::Map::new();
        s.report_into(&mut extra);
        assert_eq!(extra["peak_waiting"], 5);
        assert!(extra["saturated_s"].as_f64().is_some_and(|x| x > 0.0));
    }
}
