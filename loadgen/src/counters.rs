//! `--op incr`'s check at the end: read every counter back and compare it with what the run
//! was told, to say whether each increment ran exactly once.
//!
//! A client knows three things per counter ([`KeyTally`]): the increments acknowledged (they
//! ran), those that failed (they certainly did not), and those left indeterminate (written,
//! never answered: they may have). It also knows which requests it wrote more than once, the
//! only ones that can have run twice. The server's value is the number of times an increment
//! actually ran. With X the requests that ran at least once, D the extra runs (duplicates)
//! and L the requests that never ran (lost):
//!
//! - `acked ≤ X ≤ acked + indeterminate`, and `X ≤ value` (each of them ran at least once);
//! - `D = value − X`, and `D` is at most the writes beyond each request's first (`D = 0`
//!   exactly when no request was written twice), so `X ≥ value − extra writes`;
//! - `L = (acked + indeterminate + failed) − X` (failed requests count: they did not run).
//!
//! So with nothing indeterminate, `X = acked` exactly, and with nothing written twice,
//! `X = value` exactly; otherwise each is a range, computed per counter and summed. The run
//! was *exactly once* when every counter equals its acknowledged increments and nothing is
//! indeterminate: no duplicate, and nothing the client cannot account for.
//!
//! The counters are read on a fresh connection after every worker has finished (and on
//! another after a break: a GET is idempotent, so that retry is always safe), so no
//! increment of the run is still on its way from the client. One still queued inside the
//! server (on a connection the run has closed) may run after the GET: it is then counted as
//! not run, within the indeterminate ones' bounds. Their names carry the run's prefix, so other
//! runs against the same server do not mix in; a value beyond anything this run could have
//! caused (every indeterminate request run, every extra write run again) is reported as
//! `unexplained` rather than silently counted as a duplicate.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::RunConfig;
use crate::stats::KeyTally;
use crate::workload::{Check, Workload};

/// GETs written before their replies are read: enough to spare round trips, few enough that
/// neither side's socket buffer fills while the other waits.
const BATCH: usize = 256;

/// The shortest wait for the counters' replies, whatever `--timeout`: a GET may queue behind
/// the run's last increments (resends among them) in the server, and a run that sets a short
/// `--timeout` to provoke failures must still get its check.
const MIN_READ_WAIT: Duration = Duration::from_secs(5);

/// An inclusive range of counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Range {
    /// At least.
    pub min: u64,
    /// At most.
    pub max: u64,
}

impl Range {
    fn exactly(n: u64) -> Range {
        Range { min: n, max: n }
    }

    fn add(self, o: Range) -> Range {
        // Saturating: the counters come from the network, and a hostile server's values
        // must make a wrong report, not a panic.
        Range {
            min: self.min.saturating_add(o.min),
            max: self.max.saturating_add(o.max),
        }
    }
}

impl std::fmt::Display for Range {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.min == self.max {
            write!(f, "{}", self.min)
        } else {
            write!(f, "{}..{}", self.min, self.max)
        }
    }
}

/// What one counter's value and tally say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bounds {
    /// Requests that ran at least once (X).
    pub executed: Range,
    /// Extra runs of requests that ran more than once (D).
    pub duplicated: Range,
    /// Requests that never ran (L), failed ones included.
    pub lost: Range,
    /// Acknowledged increments the counter does not hold (the server lost them).
    pub missing: u64,
    /// Increments beyond what the run could have caused (with nothing written twice: more
    /// than acknowledged + indeterminate): another writer on the key, or a server bug.
    pub unexplained: u64,
}

/// The bounds for one counter whose value is `value` (see the module's arithmetic).
pub fn bounds(value: u64, t: &KeyTally) -> Bounds {
    let total = t.acked + t.indeterminate + t.failed;
    let most = t.acked + t.indeterminate;
    let missing = t.acked.saturating_sub(value);
    // The most this run can have caused: every indeterminate request ran, and every extra
    // write of a request ran again. Beyond that the value is someone else's doing (another
    // writer on the key, a reused --key-prefix, a server bug), reported, not counted as ours.
    let unexplained = value.saturating_sub(most.saturating_add(t.extra_writes));
    let value = value - unexplained;
    if t.written_twice == 0 {
        // No duplicate is possible, so every unit of the value is a distinct request. A value
        // below acked is the server's loss (`missing`); X is taken as the nearest possible count.
        let x = value.clamp(t.acked, most);
        return Bounds {
            executed: Range::exactly(x),
            duplicated: Range::exactly(0),
            lost: Range::exactly(total - x),
            missing,
            unexplained,
        };
    }
    // X = value − D, and D is at most the extra writes.
    let x = Range {
        min: value.saturating_sub(t.extra_writes).clamp(t.acked, most),
        max: most.min(value).max(t.acked),
    };
    Bounds {
        executed: x,
        duplicated: Range {
            min: value.saturating_sub(x.max),
            max: value.saturating_sub(x.min).min(t.extra_writes),
        },
        lost: Range {
            min: total - x.max,
            max: total - x.min,
        },
        missing,
        unexplained,
    }
}

/// The check's result, as the report's `counters`.
#[derive(Debug, Clone, Serialize)]
pub struct CounterCheck {
    /// Counters.
    pub keys: u32,
    /// Their names' prefix (then the index: `PREFIX0`, `PREFIX1`, ...).
    pub key_prefix: String,
    /// The counters' values added up, as read after the run (`None`: they could not be read).
    pub value_sum: Option<u64>,
    /// Increments acknowledged, warmup and drain included.
    pub acknowledged: u64,
    /// Increments written and never answered: they may or may not have run.
    pub indeterminate: u64,
    /// Increments that certainly did not run (never written, or refused).
    pub failed: u64,
    /// Requests written more than once (`--retry`): only these can have run twice.
    pub written_twice: u64,
    /// Requests that ran at least once.
    pub executed: Option<Range>,
    /// Extra runs: the counters exceed the requests that ran by this much.
    pub duplicated: Option<Range>,
    /// Requests that never ran, failed ones included.
    pub lost: Option<Range>,
    /// Acknowledged increments the counters do not hold.
    pub missing: u64,
    /// Increments no request of this run can explain.
    pub unexplained: u64,
    /// Every counter equals its acknowledged increments and nothing is indeterminate.
    pub exactly_once: bool,
    /// Why the counters could not be read, if they could not.
    pub error: Option<String>,
}

impl CounterCheck {
    /// Compares the values read (`Err`: why they could not be) with the run's tallies.
    pub fn new(cfg: &RunConfig, tallies: &[KeyTally], values: Result<Vec<u64>, String>) -> Self {
        let mut sum = KeyTally::default();
        for t in tallies {
            sum.merge(t);
        }
        let mut check = CounterCheck {
            keys: cfg.keys,
            key_prefix: cfg.key_prefix.clone().unwrap_or_default(),
            value_sum: None,
            acknowledged: sum.acked,
            indeterminate: sum.indeterminate,
            failed: sum.failed,
            written_twice: sum.written_twice,
            executed: None,
            duplicated: None,
            lost: None,
            missing: 0,
            unexplained: 0,
            exactly_once: false,
            error: None,
        };
        let values = match values {
            Ok(v) => v,
            Err(e) => {
                check.error = Some(e);
                return check;
            }
        };
        let empty = KeyTally::default();
        let mut total = Bounds::default();
        let mut every_key_exact = true;
        for (k, &value) in values.iter().enumerate() {
            let t = tallies.get(k).unwrap_or(&empty);
            let b = bounds(value, t);
            total.executed = total.executed.add(b.executed);
            total.duplicated = total.duplicated.add(b.duplicated);
            total.lost = total.lost.add(b.lost);
            total.missing += b.missing;
            total.unexplained += b.unexplained;
            every_key_exact &= value == t.acked;
        }
        check.value_sum = Some(values.iter().fold(0u64, |a, &v| a.saturating_add(v)));
        check.executed = Some(total.executed);
        check.duplicated = Some(total.duplicated);
        check.lost = Some(total.lost);
        check.missing = total.missing;
        check.unexplained = total.unexplained;
        check.exactly_once = every_key_exact && sum.indeterminate == 0;
        check
    }

    /// The verdict, in a line.
    pub fn verdict(&self) -> String {
        if let Some(e) = &self.error {
            return format!("NOT checked: the counters could not be read ({e})");
        }
        let failed = if self.failed > 0 {
            format!(
                " ({} more failed and did not run: refused, or never sent)",
                self.failed
            )
        } else {
            String::new()
        };
        if self.exactly_once {
            return format!(
                "exactly once: every counter equals its {} acknowledged increments{failed}",
                self.acknowledged
            );
        }
        let mut s = format!(
            "NOT exactly once: {} duplicated, {} lost",
            self.duplicated.unwrap_or_default(),
            self.lost.unwrap_or_default()
        );
        if self.indeterminate > 0 {
            s.push_str(&format!(
                "; {} increments indeterminate",
                self.indeterminate
            ));
        }
        if self.missing > 0 {
            s.push_str(&format!(
                "; {} acknowledged increments missing from the counters",
                self.missing
            ));
        }
        if self.unexplained > 0 {
            s.push_str(&format!(
                "; {} increments no request of this run explains (another client on these keys?)",
                self.unexplained
            ));
        }
        s
    }
}

/// How many connections the check may use: a GET is idempotent, so when a connection breaks
/// (a fault proxy between loadgen and the server cuts it), the check reconnects and reads on
/// from the first counter it has not read. This is the retry that is always safe.
const READ_ATTEMPTS: u32 = 8;

/// Why one connection's reading stopped.
enum Stopped {
    /// The connection broke: read on over a new one.
    Broken(String),
    /// No retry would change it: the server answered something that is not a counter's value,
    /// or did not answer within the wait (a hung server would only make every retry wait).
    Final(String),
}

/// Reads every counter of the run: `GET` each key, in batches, on a fresh connection, and on
/// another one after a break (at most `READ_ATTEMPTS`).
pub fn read_values(cfg: &RunConfig, workload: &Workload) -> Result<Vec<u64>, String> {
    let mut values = Vec::with_capacity(workload.key_count());
    let mut attempt = 1;
    loop {
        match read_on(cfg, workload, &mut values) {
            Ok(()) => return Ok(values),
            Err(Stopped::Final(why)) => return Err(why),
            Err(Stopped::Broken(why)) if attempt >= READ_ATTEMPTS => {
                return Err(format!("{why} ({attempt} connections tried)"))
            }
            Err(Stopped::Broken(_)) => attempt += 1,
        }
    }
}

/// Reads the counters from `values.len()` on, over one new connection, appending to `values`.
fn read_on(cfg: &RunConfig, workload: &Workload, values: &mut Vec<u64>) -> Result<(), Stopped> {
    let timeout = cfg.timeout.max(MIN_READ_WAIT);
    let mut sock = TcpStream::connect_timeout(&cfg.addr, timeout)
        .map_err(|e| Stopped::Broken(format!("connect to {}: {e}", cfg.addr)))?;
    let io = |e: std::io::Error| match e.kind() {
        // SO_RCVTIMEO expiring reads as EAGAIN.
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => Stopped::Final(format!(
            "no reply to GET from {} within {timeout:?}",
            cfg.addr
        )),
        _ => Stopped::Broken(format!("reading the counters from {}: {e}", cfg.addr)),
    };
    sock.set_read_timeout(Some(timeout)).map_err(io)?;
    sock.set_write_timeout(Some(timeout)).map_err(io)?;
    let _ = sock.set_nodelay(true);
    let keys = workload.key_count();
    let mut out = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let mut first = values.len();
    while first < keys {
        let last = (first + BATCH).min(keys);
        out.clear();
        for k in first..last {
            workload
                .encode_get(k as u64 + 1, k, &mut out)
                .map_err(|e| Stopped::Final(format!("cannot encode GET: {e}")))?;
        }
        sock.write_all(&out).map_err(io)?;
        // Each read waits at most --timeout; the batch as a whole is bounded too, so a
        // server that trickles bytes cannot hold the report back.
        let deadline = Instant::now() + timeout + Duration::from_secs(1);
        for k in first..last {
            loop {
                let (check, value) = workload.check_value(k as u64 + 1, &buf);
                match (check, value) {
                    (Check::Ok { len }, Some(v)) => {
                        buf.drain(..len);
                        values.push(v);
                        break;
                    }
                    (Check::Incomplete, _) => {
                        if Instant::now() > deadline {
                            return Err(Stopped::Final(format!(
                                "no reply to GET within {timeout:?}"
                            )));
                        }
                        let n = sock.read(&mut chunk).map_err(io)?;
                        if n == 0 {
                            return Err(Stopped::Broken("the server closed the connection".into()));
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    (Check::Ok { .. }, None) => {
                        return Err(Stopped::Final("a GET reply without a value".into()));
                    }
                    (Check::Failed { why, .. } | Check::Refused { why, .. }, _)
                    | (Check::Fatal { why }, _) => {
                        return Err(Stopped::Final(format!("GET {}: {why}", k)));
                    }
                }
            }
        }
        first = last;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tally whose requests written twice were written exactly twice.
    fn tally(acked: u64, indeterminate: u64, failed: u64, written_twice: u64) -> KeyTally {
        KeyTally {
            acked,
            failed,
            indeterminate,
            written_twice,
            extra_writes: written_twice,
        }
    }

    #[test]
    fn nothing_uncertain_is_exact() {
        let b = bounds(10, &tally(10, 0, 0, 0));
        assert_eq!(b.executed, Range::exactly(10));
        assert_eq!(b.duplicated, Range::exactly(0));
        assert_eq!(b.lost, Range::exactly(0));
        assert_eq!((b.missing, b.unexplained), (0, 0));
    }

    /// Failed requests did not run: they are lost, exactly, and nothing else is uncertain.
    #[test]
    fn failed_requests_are_lost_exactly() {
        let b = bounds(10, &tally(10, 0, 3, 0));
        assert_eq!(b.executed, Range::exactly(10));
        assert_eq!(b.lost, Range::exactly(3));
    }

    /// Nothing written twice: the value counts distinct requests, so X = value, D = 0, and
    /// the indeterminate ones split exactly into ran and lost.
    #[test]
    fn nothing_written_twice_pins_executed_to_the_value() {
        let b = bounds(12, &tally(10, 5, 1, 0));
        assert_eq!(b.executed, Range::exactly(12));
        assert_eq!(b.duplicated, Range::exactly(0));
        assert_eq!(b.lost, Range::exactly(4));
    }

    /// Nothing indeterminate: X = acked, so the excess is duplicates, exactly.
    #[test]
    fn nothing_indeterminate_makes_duplicates_exact() {
        let b = bounds(14, &tally(10, 0, 2, 4));
        assert_eq!(b.executed, Range::exactly(10));
        assert_eq!(b.duplicated, Range::exactly(4));
        assert_eq!(b.lost, Range::exactly(2));
    }

    /// Both uncertain: ranges. value 13, acked 10, indeterminate 5, failed 1, two requests
    /// written twice: D in [0, 2] (one extra run per extra write at most), so X = 13 − D in
    /// [11, 13], and L = 16 − X in [3, 5].
    #[test]
    fn indeterminate_and_retried_gives_ranges() {
        let b = bounds(13, &tally(10, 5, 1, 2));
        assert_eq!(b.executed, Range { min: 11, max: 13 });
        assert_eq!(b.duplicated, Range { min: 0, max: 2 });
        assert_eq!(b.lost, Range { min: 3, max: 5 });
        // A value beyond acked + indeterminate: some duplicates for certain. Here 5 extra
        // writes and 5 more than could have run once: every one of them ran again.
        let b = bounds(20, &tally(10, 5, 0, 5));
        assert_eq!(b.executed, Range::exactly(15));
        assert_eq!(b.duplicated, Range::exactly(5));
        assert_eq!(b.lost, Range::exactly(0));
        // With more extra writes than that, a range again.
        let t = KeyTally {
            extra_writes: 9,
            ..tally(10, 5, 0, 5)
        };
        let b = bounds(20, &t);
        assert_eq!(b.executed, Range { min: 11, max: 15 });
        assert_eq!(b.duplicated, Range { min: 5, max: 9 });
        assert_eq!(b.lost, Range { min: 0, max: 4 });
    }

    /// What the run cannot account for is named, not folded into the ranges.
    #[test]
    fn impossible_values_are_reported() {
        let b = bounds(7, &tally(10, 0, 0, 0));
        assert_eq!(b.missing, 3);
        assert_eq!(b.executed, Range::exactly(10));
        let b = bounds(25, &tally(10, 5, 0, 0));
        assert_eq!(b.unexplained, 10);
        assert_eq!(b.duplicated, Range::exactly(0));
        // Written twice: at most one extra run per extra write; the rest is someone else's.
        let b = bounds(30, &tally(10, 0, 0, 2));
        assert_eq!(b.duplicated, Range::exactly(2));
        assert_eq!(b.unexplained, 18);
        // A hostile value cannot overflow the sums.
        let b = bounds(u64::MAX, &tally(10, 5, 0, 3));
        assert_eq!(b.unexplained, u64::MAX - 18);
    }

    fn cfg() -> RunConfig {
        RunConfig {
            keys: 2,
            key_prefix: Some("t-".into()),
            ..RunConfig::default()
        }
    }

    #[test]
    fn the_check_sums_per_key_bounds_and_gives_a_verdict() {
        let tallies = [tally(5, 0, 1, 0), tally(7, 0, 0, 0)];
        let c = CounterCheck::new(&cfg(), &tallies, Ok(vec![5, 7]));
        assert!(c.exactly_once, "{c:?}");
        assert_eq!(c.value_sum, Some(12));
        assert_eq!(c.lost, Some(Range::exactly(1)));
        assert!(
            c.verdict()
                .starts_with("exactly once: every counter equals its 12 acknowledged increments"),
            "{}",
            c.verdict()
        );
        // Duplicates on one key, an indeterminate one on the other: computed per key (summed
        // totals would let one key's excess hide the other's loss).
        let tallies = [tally(5, 0, 0, 2), tally(7, 1, 0, 0)];
        let c = CounterCheck::new(&cfg(), &tallies, Ok(vec![7, 7]));
        assert!(!c.exactly_once);
        assert_eq!(c.duplicated, Some(Range::exactly(2)));
        assert_eq!(c.lost, Some(Range::exactly(1)));
        assert!(
            c.verdict()
                .starts_with("NOT exactly once: 2 duplicated, 1 lost"),
            "{}",
            c.verdict()
        );
        // Counters that could not be read: no verdict of exactly once.
        let c = CounterCheck::new(&cfg(), &tallies, Err("refused".into()));
        assert!(!c.exactly_once);
        assert!(c.verdict().contains("could not be read"));
    }

    #[test]
    fn ranges_print_as_one_number_when_exact() {
        assert_eq!(Range::exactly(3).to_string(), "3");
        assert_eq!(Range { min: 0, max: 3 }.to_string(), "0..3");
    }
}
