//! What a run counts: errors by kind, request tallies, and latency histograms.
//!
//! Each worker thread owns one [`Tally`] and records into it without locks; the collector
//! merges them. Histograms are created with fixed bounds (1 µs .. 60 s, 3 significant digits)
//! so recording never allocates, and values outside the range are clamped rather than lost: a
//! 90 s stall still counts, as 60 s.

use std::fmt;

use echolab_protocol::session::Refusal;
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::arrivals::GapStats;

/// The lowest latency the histograms resolve, in µs.
pub const LOWEST_US: u64 = 1;
/// The highest latency the histograms hold, in µs (60 s); longer values are clamped.
pub const HIGHEST_US: u64 = 60_000_000;
/// Significant decimal digits kept (0.1% resolution).
pub const SIGFIG: u8 = 3;

/// A histogram of microseconds with the run's bounds.
pub fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts; failure here is a programming error.
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(LOWEST_US, HIGHEST_US, SIGFIG).expect("constant histogram bounds")
}

/// Records `micros`, clamped into the histogram's range.
#[inline]
pub fn record(h: &mut Histogram<u64>, micros: u64) {
    h.saturating_record(micros.clamp(LOWEST_US, HIGHEST_US));
}

/// Why a request or a connection failed. The book separates connection, write-timeout and
/// read-timeout errors because they mean different things to a caller deciding whether to
/// retry: a request that was never completely written was certainly not executed; one whose
/// reply timed out may have been.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// connect(2) was refused: nothing listens there (or the backlog overflowed with
    /// `tcp_abort_on_overflow`).
    ConnectRefused,
    /// The connection was not established within `--timeout` (a full accept backlog, a
    /// stopped server, a dropped SYN).
    ConnectTimeout,
    /// Any other connect failure (unreachable, ...).
    ConnectOther,
    /// The client ran out of something of its own: ephemeral ports (`EADDRNOTAVAIL`), file
    /// descriptors, buffers. Not the server's fault; see `--source-ips`.
    LocalResource,
    /// A request could not be written within `--timeout` (the server stopped reading): it was
    /// at most partly sent, so it was certainly not executed.
    WriteTimeout,
    /// A request was sent and nothing at all came back within `--timeout`.
    ReadTimeoutEmpty,
    /// Part of a reply arrived, then nothing more within `--timeout`.
    ReadTimeoutPartial,
    /// The connection was reset (`ECONNRESET`, `EPIPE`).
    Reset,
    /// The server closed the connection with requests unanswered (or mid-reply).
    Eof,
    /// The bytes were not a valid reply in the protocol.
    Protocol,
    /// A well-formed ERROR reply (e.g. "server busy").
    ErrorReply,
    /// A reply that does not answer the request it should: wrong id, wrong payload, or a reply
    /// to nothing.
    Mismatch,
}

impl ErrorKind {
    /// Every kind, in report order.
    pub const ALL: [ErrorKind; 12] = [
        ErrorKind::ConnectRefused,
        ErrorKind::ConnectTimeout,
        ErrorKind::ConnectOther,
        ErrorKind::LocalResource,
        ErrorKind::WriteTimeout,
        ErrorKind::ReadTimeoutEmpty,
        ErrorKind::ReadTimeoutPartial,
        ErrorKind::Reset,
        ErrorKind::Eof,
        ErrorKind::Protocol,
        ErrorKind::ErrorReply,
        ErrorKind::Mismatch,
    ];

    /// The name used in reports and JSON.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::ConnectRefused => "connect_refused",
            ErrorKind::ConnectTimeout => "connect_timeout",
            ErrorKind::ConnectOther => "connect_other",
            ErrorKind::LocalResource => "local_resource",
            ErrorKind::WriteTimeout => "write_timeout",
            ErrorKind::ReadTimeoutEmpty => "read_timeout_empty",
            ErrorKind::ReadTimeoutPartial => "read_timeout_partial",
            ErrorKind::Reset => "reset",
            ErrorKind::Eof => "eof",
            ErrorKind::Protocol => "protocol",
            ErrorKind::ErrorReply => "error_reply",
            ErrorKind::Mismatch => "mismatch",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error counts, one per [`ErrorKind`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrorCounts([u64; ErrorKind::ALL.len()]);

impl ErrorCounts {
    /// Counts one error.
    pub fn add(&mut self, kind: ErrorKind) {
        self.0[kind.index()] += 1;
    }

    /// The count for `kind`.
    pub fn get(&self, kind: ErrorKind) -> u64 {
        self.0[kind.index()]
    }

    /// All errors.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Adds another set of counts.
    pub fn merge(&mut self, other: &ErrorCounts) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a += b;
        }
    }

    /// The nonzero counts, by kind.
    pub fn nonzero(&self) -> impl Iterator<Item = (ErrorKind, u64)> + '_ {
        ErrorKind::ALL
            .iter()
            .map(|&k| (k, self.get(k)))
            .filter(|&(_, n)| n > 0)
    }
}

impl Serialize for ErrorCounts {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(ErrorKind::ALL.len()))?;
        for k in ErrorKind::ALL {
            map.serialize_entry(k.name(), &self.get(k))?;
        }
        map.end()
    }
}

/// Request tallies. Every request started ends as exactly one of three outcomes, so at the end
/// of a run `sent = ok + failed + indeterminate`:
/// - **ok**: its reply was verified;
/// - **failed**: it certainly did not run: it was never completely written to the socket
///   (the connection broke or stopped taking bytes first), or the server answered ERROR;
/// - **indeterminate**: it was written and no good reply came (a reset, a close, a timeout, a
///   reply that does not verify): it may or may not have run, and the client cannot tell.
///
/// The split is the book's point about retries: resending a failed request is always safe,
/// resending an indeterminate one may run it twice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Counts {
    /// Requests started: encoded and handed to the connection's socket. Each counts once,
    /// however many times `--retry` wrote it.
    pub sent: u64,
    /// Replies received and verified.
    pub ok: u64,
    /// Requests that certainly did not run (never fully written, or an ERROR reply).
    pub failed: u64,
    /// Of `failed`: those never completely written (the rest got an ERROR reply).
    pub unwritten: u64,
    /// Requests written whose reply never came or did not verify: they may have run.
    pub indeterminate: u64,
    /// Resends (`--retry safe|always`): writes of a request after its first.
    pub retries: u64,
    /// Open loop: scheduled sends that never left (the connection was down, or its pipeline
    /// full, until the run ended).
    pub unsent: u64,
    /// Runs limited by `--requests`: budget used up by connections that failed or closed
    /// before carrying a request (so a dead server cannot make the run retry forever).
    pub abandoned: u64,
    /// Connections the server closed owing nothing: nothing in flight (an idle timeout), or
    /// right after an ERROR reply that explains the close ("server busy"). Reopened; not an
    /// error in itself.
    pub closed_idle: u64,
    /// Connection slots that got at least one verified reply in the measured window (in a run
    /// limited by time, before its end: not in the drain after it, when other connections
    /// closing may have freed a worker). Below
    /// the run's connections, some connections were never served: a bounded server (a pool,
    /// pre-forked workers) left them waiting, and the figures describe the others only.
    pub connections_served: u64,
    /// Bytes of the measured requests as encoded, every attempt (a resend goes on the wire
    /// again): the protocol's cost per request, headers included, TCP's not.
    pub request_bytes: u64,
    /// Bytes of the measured requests' verified replies.
    pub reply_bytes: u64,
    /// Bytes the sockets took over the whole run (warmup, session HELLOs and resends
    /// included; `--op incr`'s read-back of the counters after the run not).
    pub bytes_written: u64,
    /// Bytes read from the sockets over the whole run.
    pub bytes_read: u64,
}

impl Counts {
    /// Adds another set of counts.
    pub fn merge(&mut self, o: &Counts) {
        self.sent += o.sent;
        self.ok += o.ok;
        self.failed += o.failed;
        self.unwritten += o.unwritten;
        self.indeterminate += o.indeterminate;
        self.retries += o.retries;
        self.unsent += o.unsent;
        self.abandoned += o.abandoned;
        self.closed_idle += o.closed_idle;
        self.connections_served += o.connections_served;
        self.request_bytes += o.request_bytes;
        self.reply_bytes += o.reply_bytes;
        self.bytes_written += o.bytes_written;
        self.bytes_read += o.bytes_read;
    }

    /// Bytes per request sent (every attempt counted) and per verified reply received, on
    /// the measured requests; `None` with none.
    pub fn bytes_per_request(&self) -> Option<(f64, f64)> {
        let attempts = self.sent + self.retries;
        (attempts > 0 && self.ok > 0).then(|| {
            (
                self.request_bytes as f64 / attempts as f64,
                self.reply_bytes as f64 / self.ok as f64,
            )
        })
    }
}

/// Session refusals (`--op incr`) by code word, as the server's ERROR replies began
/// ([`echolab_protocol::session`]). Serialized under the code words themselves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Refusals([u64; 5]);

impl Refusals {
    const ALL: [Refusal; 5] = [
        Refusal::TooOld,
        Refusal::Conflict,
        Refusal::Expired,
        Refusal::NoSession,
        Refusal::KeysFull,
    ];

    fn index(r: Refusal) -> usize {
        match r {
            Refusal::TooOld => 0,
            Refusal::Conflict => 1,
            Refusal::Expired => 2,
            Refusal::NoSession => 3,
            Refusal::KeysFull => 4,
        }
    }

    /// Counts one refusal.
    pub fn add(&mut self, r: Refusal) {
        self.0[Self::index(r)] += 1;
    }

    /// The count for `r`.
    pub fn get(&self, r: Refusal) -> u64 {
        self.0[Self::index(r)]
    }

    /// All refusals.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Adds another set of counts.
    pub fn merge(&mut self, o: &Refusals) {
        for (a, b) in self.0.iter_mut().zip(o.0.iter()) {
            *a += b;
        }
    }

    /// The nonzero counts, by refusal.
    pub fn nonzero(&self) -> impl Iterator<Item = (Refusal, u64)> + '_ {
        Self::ALL
            .iter()
            .map(|&r| (r, self.get(r)))
            .filter(|&(_, n)| n > 0)
    }
}

impl Serialize for Refusals {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(Self::ALL.len()))?;
        for r in Self::ALL {
            map.serialize_entry(r.code(), &self.get(r))?;
        }
        map.end()
    }
}

/// `--op incr`: what one counter was sent, over the whole run (warmup and drain included,
/// since the server's counter holds every increment), for the check at the end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct KeyTally {
    /// Increments acknowledged (a verified reply).
    pub acked: u64,
    /// Increments that certainly did not run.
    pub failed: u64,
    /// Increments that may or may not have run.
    pub indeterminate: u64,
    /// Of all three, requests written to a socket more than once (only these can have run
    /// twice).
    pub written_twice: u64,
    /// Writes beyond the first, summed over those requests: the most extra runs the run can
    /// have caused.
    pub extra_writes: u64,
}

impl KeyTally {
    /// Adds another tally of the same key.
    pub fn merge(&mut self, o: &KeyTally) {
        self.acked += o.acked;
        self.failed += o.failed;
        self.indeterminate += o.indeterminate;
        self.written_twice += o.written_twice;
        self.extra_writes += o.extra_writes;
    }
}

/// Everything one worker thread records over the measured window.
#[derive(Debug, Clone)]
pub struct Tally {
    /// Latency: from the scheduled send time in open loop, from the actual send in closed loop.
    pub latency: Histogram<u64>,
    /// Open loop only: latency from the actual send (what a naive client would report).
    pub uncorrected: Histogram<u64>,
    /// Connect latency (connect(2) to writable), short connections included.
    pub connect: Histogram<u64>,
    /// Open loop only: how late each request left relative to its schedule, for reasons of
    /// the client's own (not a full pipeline or a reconnect, which are the server's).
    pub lag: Histogram<u64>,
    /// Requests.
    pub counts: Counts,
    /// Errors by kind.
    pub errors: ErrorCounts,
    /// Session refusals by code (`--op incr`), warmup included like errors.
    pub refusals: Refusals,
    /// `--op incr`: one tally per counter, by key index.
    pub keys: Vec<KeyTally>,
    /// Open loop: the gaps between consecutive sends of each connection slot, as they left.
    pub gaps: GapStats,
    /// Open loop on a ramp or steps: one tally per step, by the step each request was
    /// scheduled in (empty otherwise).
    pub steps: Vec<StepTally>,
}

/// One step of a ramp or steps: its requests, by the time each was scheduled, so a request
/// that waited into the next step still counts where it was offered.
#[derive(Debug, Clone)]
pub struct StepTally {
    /// Latency of its verified replies, µs.
    pub latency: Histogram<u64>,
    /// Requests sent (first attempts).
    pub sent: u64,
    /// Verified replies.
    pub ok: u64,
    /// Failed: certainly not run.
    pub failed: u64,
    /// Indeterminate: written, no good reply.
    pub indeterminate: u64,
    /// Scheduled in the step, never sent.
    pub unsent: u64,
}

impl Default for StepTally {
    fn default() -> Self {
        StepTally {
            latency: new_histogram(),
            sent: 0,
            ok: 0,
            failed: 0,
            indeterminate: 0,
            unsent: 0,
        }
    }
}

impl StepTally {
    /// Adds another thread's tally of the same step.
    pub fn merge(&mut self, o: &StepTally) {
        let _ = self.latency.add(&o.latency);
        self.sent += o.sent;
        self.ok += o.ok;
        self.failed += o.failed;
        self.indeterminate += o.indeterminate;
        self.unsent += o.unsent;
    }
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            latency: new_histogram(),
            uncorrected: new_histogram(),
            connect: new_histogram(),
            lag: new_histogram(),
            counts: Counts::default(),
            errors: ErrorCounts::default(),
            refusals: Refusals::default(),
            keys: Vec::new(),
            gaps: GapStats::default(),
            steps: Vec::new(),
        }
    }
}

impl Tally {
    /// Adds another thread's tally.
    pub fn merge(&mut self, o: &Tally) {
        // `add` only fails when the source holds values the destination cannot, and every
        // histogram here has the same bounds.
        let _ = self.latency.add(&o.latency);
        let _ = self.uncorrected.add(&o.uncorrected);
        let _ = self.connect.add(&o.connect);
        let _ = self.lag.add(&o.lag);
        self.counts.merge(&o.counts);
        self.errors.merge(&o.errors);
        self.refusals.merge(&o.refusals);
        if self.keys.len() < o.keys.len() {
            self.keys.resize(o.keys.len(), KeyTally::default());
        }
        for (a, b) in self.keys.iter_mut().zip(o.keys.iter()) {
            a.merge(b);
        }
        self.gaps.merge(&o.gaps);
        if self.steps.len() < o.steps.len() {
            self.steps.resize(o.steps.len(), StepTally::default());
        }
        for (a, b) in self.steps.iter_mut().zip(o.steps.iter()) {
            a.merge(b);
        }
    }
}

/// A summary of a histogram in µs, with the fixed percentile labels HdrHistogram uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Values recorded.
    pub count: u64,
    /// Smallest.
    pub min: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th.
    pub p99: u64,
    /// 99.9th.
    pub p999: u64,
    /// 99.99th.
    pub p9999: u64,
    /// Largest.
    pub max: u64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Standard deviation.
    pub stdev: f64,
}

impl Summary {
    /// Summarises `h` (all zeros when it is empty).
    pub fn of(h: &Histogram<u64>) -> Summary {
        if h.is_empty() {
            return Summary::default();
        }
        Summary {
            count: h.len(),
            min: h.min(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            p9999: h.value_at_quantile(0.9999),
            max: h.max(),
            mean: h.mean(),
            stdev: h.stdev(),
        }
    }
}

/// The median of `xs` (0 when empty); the mean of the middle two when their number is even.
pub fn median(mut xs: Vec<f64>) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.sort_by(|a, b| a.total_cmp(b));
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// Formats microseconds with a unit that keeps three significant figures.
pub fn fmt_us(us: u64) -> String {
    fmt_us_f(us as f64)
}

/// [`fmt_us`] for a mean or a deviation.
pub fn fmt_us_f(us: f64) -> String {
    if us < 1_000.0 {
        format!("{us:.0}µs")
    } else if us < 1_000_000.0 {
        format!("{:.2}ms", us / 1e3)
    } else {
        format!("{:.2}s", us / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(vec![]), 0.0);
    }

    #[test]
    fn clamps_out_of_range_values() {
        let mut h = new_histogram();
        record(&mut h, 0);
        record(&mut h, 90_000_000);
        assert_eq!(h.len(), 2);
        assert_eq!(h.min(), LOWEST_US);
        assert!(h.max() >= HIGHEST_US);
    }

    #[test]
    fn error_counts_serialise_every_kind() {
        let mut e = ErrorCounts::default();
        e.add(ErrorKind::Eof);
        e.add(ErrorKind::Eof);
        let v = serde_json::to_value(e).expect("json");
        assert_eq!(v["eof"], 2);
        assert_eq!(v["reset"], 0);
        assert_eq!(v.as_object().map(|o| o.len()), Some(ErrorKind::ALL.len()));
        assert_eq!(e.total(), 2);
    }

    #[test]
    fn summary_percentiles() {
        let mut h = new_histogram();
        for v in 1..=1000 {
            record(&mut h, v);
        }
        let s = Summary::of(&h);
        assert_eq!(s.count, 1000);
        assert_eq!(s.p50, 500);
        assert_eq!(s.p99, 990);
        assert_eq!(s.max, 1000);
    }
}
