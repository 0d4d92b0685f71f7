//! The run's result: one [`Report`] rendered three ways — a summary for people, JSON for
//! scripts (the suite, the CI gate), and HdrHistogram's percentile text for its plotters.

use std::fmt::Write as _;
use std::io;
use std::path::Path;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::collector::IntervalSummary;
use crate::config::RunConfig;
use crate::config::{as_text, Arrivals};
use crate::config::{Op, Retry};
use crate::counters::CounterCheck;
use crate::proc::{MachineInfo, ServerCost};
use crate::stats::{fmt_us, fmt_us_f, Counts, ErrorCounts, ErrorKind, Refusals, Summary};
use echolab_protocol::Protocol;

/// An open-loop run whose client lag p99 is above this is invalid: the client, not the
/// server, was setting the pace.
pub const MAX_LAG_P99_US: u64 = 1_000;
/// An open-loop run that achieved less than this fraction of `--rate` is invalid.
pub const MIN_RATE_FRACTION: f64 = 0.99;

/// The open loop's honesty record.
#[derive(Debug, Clone, Serialize)]
pub struct OpenLoop {
    /// Target requests per second (on a ramp or steps, their mean over the measured window).
    pub rate: f64,
    /// Requests per second actually sent in the measured window.
    pub achieved_rps: f64,
    /// How late requests left for the client's own reasons, µs.
    pub lag_us: Summary,
    /// Scheduled sends that never left.
    pub unsent: u64,
    /// The timetable asked for and the one the sends kept, per connection slot.
    pub arrivals: ArrivalsReport,
    /// On a ramp or steps: a row per step (`None` at a constant rate).
    pub steps: Option<Vec<StepReport>>,
}

/// One step of a ramp or steps (or the hold at the last rate after them). Its requests are
/// those *scheduled* in it, wherever their replies landed, so a step's latency is the
/// latency of the load offered in it.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// When it began, seconds into the measured window.
    pub start_s: f64,
    /// When it ended (or the run did).
    pub end_s: f64,
    /// The rate at its start, requests per second.
    pub target_from_rps: f64,
    /// The rate at its end (the same as at its start for a step).
    pub target_to_rps: f64,
    /// The mean rate asked for over the step.
    pub target_rps: f64,
    /// The rate honoured: `target_rps` times the share of the step's timetable sent.
    pub achieved_rps: f64,
    /// Whether it sent at least [`MIN_RATE_FRACTION`] of its timetable: a step that did not
    /// describes an overloaded queue, not the server at that rate.
    pub achieved: bool,
    /// Requests sent.
    pub sent: u64,
    /// Scheduled and never sent.
    pub unsent: u64,
    /// Verified replies.
    pub ok: u64,
    /// Certainly not run.
    pub failed: u64,
    /// Written, no good reply.
    pub indeterminate: u64,
    /// Latency from the scheduled time, µs.
    pub latency_us: Summary,
}

/// The open loop's arrival process: what was asked for, per connection slot, and what the
/// sends measured. A slot's gaps have mean `N / rate` either way, and a coefficient of
/// variation of 0 (fixed) or 1 (Poisson); the measured ones come from the times requests
/// actually left, so a client that fell behind, or a server that held a connection up, shows
/// as a different spread.
#[derive(Debug, Clone, Serialize)]
pub struct ArrivalsReport {
    /// `fixed` or `poisson`.
    #[serde(serialize_with = "as_text")]
    pub process: Arrivals,
    /// The seed (Poisson only).
    pub seed: Option<u64>,
    /// The gap between one slot's consecutive sends asked for, µs (`N / rate`).
    pub gap_us: f64,
    /// The gaps measured: their mean, µs (`None` with fewer than two sends on any slot).
    pub measured_gap_us: Option<f64>,
    /// The coefficient of variation asked for (0 fixed, 1 Poisson).
    pub cv: f64,
    /// The coefficient of variation measured (`None` as above).
    pub measured_cv: Option<f64>,
    /// How many gaps were measured.
    pub gaps: u64,
}

/// Bytes per request on the wire, the protocol's framing included (TCP's and IP's headers
/// not): what a format, a payload size or compression changes.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct BytesPerRequest {
    /// Bytes encoded per request attempt (an attempt whose connection broke before it was
    /// written counts too: it was built for the wire).
    pub sent: f64,
    /// Bytes read per verified reply.
    pub received: f64,
}

/// A run's place on the wall clock.
#[derive(Debug, Clone, Serialize)]
pub struct RunClock {
    /// The start of the measured window, RFC 3339 in UTC.
    pub measured_from: String,
    /// The same, in seconds since 1970.
    pub measured_from_unix_s: f64,
    /// With `--start-at`: how late the run began after it, seconds.
    pub start_late_s: Option<f64>,
    /// How the times were taken, and what comparing them across machines assumes.
    pub source: &'static str,
}

/// [`RunClock::source`].
pub const CLOCK_SOURCE: &str = "the wall clock (CLOCK_REALTIME) read once when the run began;     every duration and latency on CLOCK_MONOTONIC. Aligning runs of several machines assumes     their wall clocks agree (NTP, PTP): an offset between them shifts their seconds, not     their latencies";

/// loadgen's own cost.
#[derive(Debug, Clone, Serialize)]
pub struct ClientCpu {
    /// User CPU seconds over the measured window.
    pub user_s: f64,
    /// System CPU seconds.
    pub system_s: f64,
    /// (user + system) µs per verified reply.
    pub us_per_request: f64,
    /// `--count-syscalls`: system calls per verified reply, every thread of loadgen's.
    pub syscalls_per_request: Option<f64>,
}

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `loadgen <version>`.
    pub tool: String,
    /// What was asked for (the checked configuration, serialized by [`RunConfig`] itself).
    pub params: RunConfig,
    /// Where it ran.
    pub machine: MachineInfo,
    /// When the measured window began on the wall clock: what `loadgen merge` aligns the
    /// reports and interval logs of several instances by.
    pub clock: RunClock,
    /// The measured window, seconds.
    pub elapsed_s: f64,
    /// Verified replies per second.
    pub throughput_rps: f64,
    /// Request tallies (measured window), bytes included.
    pub counts: Counts,
    /// What a request and its reply weigh on the wire, on average (`None` with no reply).
    pub bytes_per_request: Option<BytesPerRequest>,
    /// Errors by kind (warmup included: an error is an error).
    pub errors: ErrorCounts,
    /// `--op incr`: session refusals by code word (warmup included, like errors; each is
    /// also an `error_reply`).
    pub refusals: Refusals,
    /// `--op incr`: the counters read back after the run and compared with what was
    /// acknowledged (the exactly-once check).
    pub counters: Option<CounterCheck>,
    /// The first few error messages.
    pub error_examples: Vec<String>,
    /// When no reply was verified: the likely cause, in a sentence (nothing listening, a
    /// protocol mismatch, a server that accepts and never answers).
    pub diagnosis: Option<String>,
    /// Latency, µs: from the scheduled send in open loop, the actual send in closed loop.
    pub latency_us: Summary,
    /// Open loop: latency from the actual send (what an uncorrected client would report).
    pub latency_uncorrected_us: Option<Summary>,
    /// Connect latency, µs, when connections were opened in the measured window.
    pub connect_us: Option<Summary>,
    /// Open loop only.
    pub open_loop: Option<OpenLoop>,
    /// False when the figures cannot be trusted as a measurement of the server.
    pub valid: bool,
    /// Why not, in words.
    pub invalid_reasons: Vec<String>,
    /// loadgen's own CPU time.
    pub client_cpu: ClientCpu,
    /// The server's cost, with `--server-pid`.
    pub server: Option<ServerCost>,
    /// Per-second figures.
    pub intervals: Vec<IntervalSummary>,
    /// Anything else worth knowing (sampling problems, files not written).
    pub notes: Vec<String>,
    /// The run was cut short by SIGINT or SIGTERM.
    pub interrupted: bool,
    /// No error, no failed or indeterminate request, at least one verified reply, and with
    /// `--op incr` a counter check that found every increment exactly once.
    pub ok: bool,
}

impl Report {
    /// The process exit code for this report: 0 clean, 1 errors (or a failed or indeterminate
    /// request, or a counter check that is not exactly once), 3 invalid measurement, 130
    /// interrupted (as a shell reports Ctrl-C). The report is complete in every case: a run
    /// that injects faults on purpose reads its figures from it, whatever the code.
    pub fn exit_code(&self) -> i32 {
        if self.interrupted {
            130
        } else if !self.ok {
            1
        } else if !self.valid {
            3
        } else {
            0
        }
    }

    /// Writes the report as pretty JSON.
    pub fn write_json(&self, path: &Path) -> io::Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(io::Error::other)?;
        std::fs::write(path, text + "\n")
    }

    /// The summary a person reads.
    pub fn summary(&self) -> String {
        let p = &self.params;
        let mut s = String::new();
        let limit = match (p.duration.map(|d| d.as_secs_f64()), p.requests) {
            (Some(d), Some(n)) => format!("{d} s or {n} requests"),
            (Some(d), None) => format!("{d} s"),
            (None, Some(n)) => format!("{n} requests"),
            (None, None) => String::new(),
        };
        let shape = match p.requests_per_conn {
            Some(k) => format!("short connections of {k} request(s)"),
            None => "persistent connections".into(),
        };
        let mode = match p.pacing.schedule() {
            Some(r) => format!("open loop at {r}"),
            None => "closed loop".into(),
        };
        let what = match p.op {
            Op::Incr => format!(
                "incr on {} counters {}*",
                p.keys,
                p.key_prefix.as_deref().unwrap_or("")
            ),
            op => format!("{op} {} B", p.payload),
        };
        let retry = match p.retry {
            Retry::Never => String::new(),
            r => format!(", retry {r} (at most {} attempts)", p.max_attempts),
        };
        let conns = match p.segment {
            None => format!("{} connections", p.connections),
            Some(seg) => format!(
                "segment {seg}: {} of {} connections",
                p.slots(),
                p.connections
            ),
        };
        let _ = writeln!(
            s,
            "loadgen: {} {} {what}, {conns} ({shape}) on {} thread(s), {mode}, pipeline {}{retry}, {limit} after {} s warmup",
            p.addr, p.protocol.name(), p.threads, p.pipeline, p.warmup.as_secs_f64()
        );
        if p.start_at.is_some() || p.segment.is_some() {
            let late = self.clock.start_late_s.map_or(String::new(), |l| {
                format!(" ({:.1} ms after --start-at)", l * 1e3)
            });
            let _ = writeln!(
                s,
                "  clock       measured from {}{late} on this machine's wall clock",
                self.clock.measured_from
            );
        }
        let _ = writeln!(
            s,
            "  throughput  {:.0} req/s ({} verified replies in {:.2} s)",
            self.throughput_rps, self.counts.ok, self.elapsed_s
        );
        let l = &self.latency_us;
        let label = if p.pacing.schedule().is_some() {
            "latency (from the schedule)"
        } else {
            "latency"
        };
        if self.counts.ok == 0 {
            // A table of zeros would read as a measurement.
            let _ = writeln!(s, "  {label:<11} none: no reply was verified");
        } else {
            let _ = writeln!(s, "  {label}");
            let _ = writeln!(s, "    {}", percentiles(l));
        }
        if let Some(u) = &self.latency_uncorrected_us {
            let _ = writeln!(
                s,
                "  latency from the actual send (uncorrected; for comparison only)"
            );
            let _ = writeln!(s, "    {}", percentiles(u));
        }
        if let Some(c) = &self.connect_us {
            let _ = writeln!(s, "  connect ({} connections)", c.count);
            let _ = writeln!(s, "    {}", percentiles(c));
        }
        let c = &self.counts;
        let _ = writeln!(
            s,
            "  requests    sent {}  ok {}  failed {} ({} unwritten)  indeterminate {}  unsent {}{}",
            c.sent,
            c.ok,
            c.failed,
            c.unwritten,
            c.indeterminate,
            c.unsent,
            if p.retry == Retry::Never {
                String::new()
            } else {
                format!("  retries {}", c.retries)
            }
        );
        if let Some(b) = &self.bytes_per_request {
            let _ = writeln!(
                s,
                "  bytes       {:.1} per request sent, {:.1} per reply received; {} written and {} read on the sockets (whole run)",
                b.sent,
                b.received,
                fmt_bytes(c.bytes_written),
                fmt_bytes(c.bytes_read)
            );
        }
        if c.failed + c.indeterminate > 0 {
            let _ = writeln!(
                s,
                "              failed: certainly not run (never fully written, or refused); indeterminate: written, no good reply, may have run"
            );
        }
        if self.refusals.total() > 0 {
            let by_code: Vec<String> = self
                .refusals
                .nonzero()
                .map(|(r, n)| format!("{} {n}", r.code()))
                .collect();
            let _ = writeln!(s, "  refusals    {}", by_code.join("  "));
        }
        if let Some(k) = &self.counters {
            let _ = writeln!(s, "  counters    {}", k.verdict());
            if let Some(sum) = k.value_sum {
                let _ = writeln!(
                    s,
                    "              values add up to {sum}: {} acknowledged, {} indeterminate, {} failed, {} written more than once (warmup included)",
                    k.acknowledged, k.indeterminate, k.failed, k.written_twice
                );
            }
        }
        if c.abandoned > 0 || c.closed_idle > 0 {
            let _ = writeln!(
                s,
                "  connections {} closed by the server owing nothing (idle, or after an ERROR reply); {} of the --requests budget used by connections that carried no request",
                c.closed_idle, c.abandoned
            );
        }
        if self.errors.total() == 0 {
            let _ = writeln!(s, "  errors      none");
        } else {
            let by_kind: Vec<String> = self
                .errors
                .nonzero()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            let _ = writeln!(s, "  errors      {}", by_kind.join("  "));
            for e in &self.error_examples {
                let _ = writeln!(s, "    e.g. {e}");
            }
        }
        if let Some(o) = &self.open_loop {
            let _ = writeln!(
                s,
                "  schedule    target {:.0} req/s, sent {:.0} req/s; client lag p50 {} p99 {} max {}",
                o.rate,
                o.achieved_rps,
                fmt_us(o.lag_us.p50),
                fmt_us(o.lag_us.p99),
                fmt_us(o.lag_us.max)
            );
            let a = &o.arrivals;
            let sent = match (a.measured_gap_us, a.measured_cv) {
                (Some(gap), Some(cv)) => format!("{gap:.0}µs and {cv:.2} sent ({} gaps)", a.gaps),
                _ => "too few sends to measure".into(),
            };
            let _ = writeln!(
                s,
                "  arrivals    {}{}: per connection, gap {:.0}µs and CV {:.2} asked, {sent}",
                a.process,
                a.seed.map(|n| format!(" (seed {n})")).unwrap_or_default(),
                a.gap_us,
                a.cv,
            );
            if let Some(steps) = &o.steps {
                let _ = writeln!(
                    s,
                    "  steps       {:>13}  {:>17}  {:>9}  {:>9}  {:>9}  {:>9}  {:>9}  failed",
                    "window", "target req/s", "sent/s", "p50", "p99", "p99.9", "max"
                );
                for st in steps {
                    let target = if st.target_from_rps == st.target_to_rps {
                        format!("{:.0}", st.target_rps)
                    } else {
                        format!("{:.0}->{:.0}", st.target_from_rps, st.target_to_rps)
                    };
                    let l = &st.latency_us;
                    let _ = writeln!(
                        s,
                        "              {:>5.1}-{:<5.1}s  {target:>17}  {:>9.0}  {:>9}  {:>9}  {:>9}  {:>9}  {}{}",
                        st.start_s,
                        st.end_s,
                        st.achieved_rps,
                        fmt_us(l.p50),
                        fmt_us(l.p99),
                        fmt_us(l.p999),
                        fmt_us(l.max),
                        st.failed + st.indeterminate,
                        if st.achieved { "" } else { "  NOT ACHIEVED" }
                    );
                }
            }
        }
        let cpu = &self.client_cpu;
        let _ = writeln!(
            s,
            "  client      cpu {:.2} s user + {:.2} s sys = {:.2} µs per request{}",
            cpu.user_s,
            cpu.system_s,
            cpu.us_per_request,
            syscalls_text(cpu.syscalls_per_request)
        );
        if let Some(sv) = &self.server {
            let _ = writeln!(
                s,
                "  server      pid {}: cpu {:.2} s user + {:.2} s sys = {:.2} µs per request; context switches {} voluntary + {} involuntary = {:.3} per request{}",
                sv.pid,
                sv.cpu_user_s,
                sv.cpu_system_s,
                sv.cpu_us_per_request,
                sv.ctx_voluntary,
                sv.ctx_involuntary,
                sv.ctx_per_request,
                if sv.ctx_lower_bound { " (at least: short-lived tasks are missed)" } else { "" }
            );
            if sv.syscalls_per_request.is_some() {
                let _ = writeln!(
                    s,
                    "              {}",
                    syscalls_text(sv.syscalls_per_request).trim_start_matches("; ")
                );
            }
            let pss = sv.pss_kib.map_or("n/a".to_string(), |k| {
                format!("{:.1} MiB", k as f64 / 1024.0)
            });
            let _ = writeln!(
                s,
                "              memory PSS {pss}, RSS {:.1} MiB (peak {:.1}); {} process(es) (peak {}), {} thread(s) (peak {})",
                sv.rss_kib as f64 / 1024.0,
                sv.rss_kib_peak as f64 / 1024.0,
                sv.processes,
                sv.processes_peak,
                sv.threads,
                sv.threads_peak
            );
        }
        let c = &self.counts;
        // Only where the window, not a count, ended the run: with -n, or an op slower than the
        // window, replies legitimately come after it.
        let timed = p.duration.is_some() && p.requests.is_none();
        if timed && c.ok > 0 && c.connections_served < u64::from(p.slots()) {
            let _ = writeln!(
                s,
                "  served      {} of {} connections got a verified reply in the window: the figures above describe those only (a bounded server, a pool or pre-forked workers, serves one connection per worker; the others wait)",
                c.connections_served, p.slots()
            );
        }
        for n in &self.notes {
            let _ = writeln!(s, "  note        {n}");
        }
        if let Some(d) = &self.diagnosis {
            let _ = writeln!(s, "  cause       {d}");
        }
        if !self.valid {
            let _ = writeln!(s, "  INVALID     {}", self.invalid_reasons.join("; "));
        }
        let verdict = if self.interrupted {
            "INTERRUPTED: the figures cover the run so far (exit 130)"
        } else if !self.ok && self.errors.total() == 0 && self.counts.ok == 0 {
            "FAILED: no reply was verified (exit 1)"
        } else if !self.ok
            && self.counters.as_ref().is_some_and(|k| !k.exactly_once)
            && self.errors.total() > 0
        {
            "FAILED: errors above, and the counters are not exactly once (exit 1)"
        } else if !self.ok && self.counters.as_ref().is_some_and(|k| !k.exactly_once) {
            "FAILED: the counters are not exactly once (exit 1)"
        } else if !self.ok {
            "FAILED: errors above (exit 1)"
        } else if !self.valid {
            "INVALID measurement (exit 3)"
        } else {
            "ok: every reply verified"
        };
        let _ = writeln!(s, "  result      {verdict}");
        s
    }
}

/// The likely cause of a run in which no reply was verified, from its errors: the kind seen
/// most decides, since one cause (nothing listening, another protocol) repeats on every
/// connection. `None` when some reply was verified or nothing failed.
pub fn diagnose(
    addr: &str,
    protocol: Protocol,
    timeout: std::time::Duration,
    counts: &Counts,
    errors: &ErrorCounts,
) -> Option<String> {
    if counts.ok > 0 || errors.total() == 0 {
        return None;
    }
    let (kind, _) = errors.nonzero().max_by_key(|&(_, n)| n)?;
    let other = match protocol {
        Protocol::Binary => "--protocol resp or --protocol json",
        Protocol::Resp => "--protocol binary or --protocol json",
        _ => "--protocol binary or --protocol resp",
    };
    Some(match kind {
        ErrorKind::ConnectRefused => format!(
            "nothing is listening at {addr}: every connection was refused. Start the server first \
             (echolab's print `listening on ADDR` when ready) or check --addr"
        ),
        ErrorKind::ConnectTimeout => format!(
            "{addr} did not complete a connection within {timeout:?}: a stopped server with a \
             full accept queue, or an address nothing answers at"
        ),
        ErrorKind::ReadTimeoutEmpty | ErrorKind::ReadTimeoutPartial => format!(
            "connections to {addr} opened, but no request got a reply within {timeout:?}: the \
             server may speak another protocol than {protocol} (try {other}), or every worker \
             of a bounded server is busy with other clients"
        ),
        ErrorKind::Protocol | ErrorKind::Mismatch => format!(
            "{addr} answered with bytes that are not a {protocol} reply: a protocol mismatch \
             (try {other}; the examples above show what came back)"
        ),
        ErrorKind::Eof | ErrorKind::Reset => format!(
            "{addr} closed every connection without answering: it may speak another protocol \
             than {protocol} and drop what it cannot parse (try {other}), or refuse clients"
        ),
        ErrorKind::ErrorReply => format!(
            "{addr} refused every request with an ERROR reply (the examples above say why: \
             \"server busy\" is a server at its --max-connections)"
        ),
        _ => format!("no request to {addr} was answered; the errors above say how each failed"),
    })
}

/// A byte count with a binary prefix: `512 B`, `6.4 MiB`.
fn fmt_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

/// `p50 .. max, mean ± stdev` on one line.
fn percentiles(l: &Summary) -> String {
    format!(
        "p50 {}  p90 {}  p99 {}  p99.9 {}  p99.99 {}  max {}  mean {} ± {}",
        fmt_us(l.p50),
        fmt_us(l.p90),
        fmt_us(l.p99),
        fmt_us(l.p999),
        fmt_us(l.p9999),
        fmt_us(l.max),
        fmt_us_f(l.mean),
        fmt_us_f(l.stdev)
    )
}

/// HdrHistogram's sub-bucket count for `sigfig` digits: the smallest power of two holding
/// 2·10^sigfig (2048 for 3 digits), as the Java implementation prints it.
fn sub_buckets(sigfig: u8) -> u64 {
    let needed = 2 * 10u64.pow(u32::from(sigfig));
    needed.next_power_of_two()
}

/// The verdict on an open-loop run: the reasons it is invalid, if any.
pub fn open_loop_validity(o: &OpenLoop) -> Vec<String> {
    let mut reasons = Vec::new();
    if o.lag_us.p99 > MAX_LAG_P99_US {
        reasons.push(format!(
            "the client fell behind its own schedule: lag p99 {} is above {} (add --threads, or lower --rate)",
            fmt_us(o.lag_us.p99),
            fmt_us(MAX_LAG_P99_US)
        ));
    }
    let missed: Vec<String> = o
        .steps
        .iter()
        .flatten()
        .filter(|st| !st.achieved)
        .map(|st| {
            format!(
                "{:.0}-{:.0} s ({:.0} of {:.0} req/s)",
                st.start_s, st.end_s, st.achieved_rps, st.target_rps
            )
        })
        .collect();
    if !missed.is_empty() {
        reasons.push(format!(
            "steps not achieved (under {:.0}% of their timetable sent): {}",
            100.0 * MIN_RATE_FRACTION,
            missed.join(", ")
        ));
    }
    if o.achieved_rps < MIN_RATE_FRACTION * o.rate {
        reasons.push(format!(
            "only {:.0} req/s of the {:.0} asked for were sent ({:.1}% of the timetable): the server (or --pipeline/--connections) could not take that rate, so the latencies describe an overloaded queue",
            o.achieved_rps,
            o.rate,
            100.0 * o.achieved_rps / o.rate
        ));
    }
    reasons
}

/// Writes `h` (µs) in HdrHistogram's percentile-distribution text, in milliseconds: the
/// format `HistogramLogProcessor` prints and the HdrHistogram plotter reads.
pub fn write_hgrm(h: &Histogram<u64>, path: &Path) -> io::Result<()> {
    std::fs::write(path, hgrm_text(h))
}

/// The percentile distribution as text (values scaled from µs to ms).
pub fn hgrm_text(h: &Histogram<u64>) -> String {
    const SCALE: f64 = 1000.0;
    let mut s = String::new();
    let _ = write!(
        s,
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    if !h.is_empty() {
        for v in h.iter_quantiles(5) {
            total += v.count_since_last_iteration();
            let value = v.value_iterated_to() as f64 / SCALE;
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                let _ = writeln!(
                    s,
                    "{value:12.3} {q:2.12} {total:10} {:14.2}",
                    1.0 / (1.0 - q)
                );
            } else {
                let _ = writeln!(s, "{value:12.3} {q:2.12} {total:10}");
            }
        }
    }
    let _ = writeln!(
        s,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
        h.mean() / SCALE,
        h.stdev() / SCALE
    );
    let _ = writeln!(
        s,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        h.max() as f64 / SCALE,
        h.len()
    );
    let _ = writeln!(
        s,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        sub_buckets(h.sigfig())
    );
    s
}

/// `--count-syscalls`' figure as the summary says it ("" when not counted).
fn syscalls_text(per_request: Option<f64>) -> String {
    per_request.map_or(String::new(), |n| {
        format!("; {n:.2} system calls per request")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats;

    #[test]
    fn hgrm_has_the_standard_shape() {
        let mut h = stats::new_histogram();
        for v in 1..=10_000u64 {
            stats::record(&mut h, v);
        }
        let text = hgrm_text(&h);
        let mut lines = text.lines();
        let header = lines.next().expect("header");
        assert!(header.contains("Value") && header.contains("1/(1-Percentile)"));
        assert_eq!(lines.next(), Some(""));
        let rows: Vec<&str> = text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.contains("Value"))
            .collect();
        assert!(rows.len() > 50, "{} rows", rows.len());
        // The last row is the 100th percentile with every value counted, in milliseconds.
        let last: Vec<&str> = rows[rows.len() - 1].split_whitespace().collect();
        assert_eq!(last[1].parse::<f64>().expect("q"), 1.0);
        assert_eq!(last[2], "10000");
        assert!((last[0].parse::<f64>().expect("value") - 10.0).abs() < 0.02);
        assert!(text.contains("#[Max     ="));
        assert!(text.contains("Total count    =        10000]"));
        assert!(text.contains("SubBuckets     =         2048]"), "{text}");
    }

    #[test]
    fn open_loop_validity_reasons() {
        let mut o = OpenLoop {
            rate: 1000.0,
            achieved_rps: 995.0,
            lag_us: Summary::default(),
            unsent: 0,
            arrivals: ArrivalsReport {
                process: Arrivals::Fixed,
                seed: None,
                gap_us: 1000.0,
                measured_gap_us: Some(1000.0),
                cv: 0.0,
                measured_cv: Some(0.0),
                gaps: 10,
            },
            steps: None,
        };
        assert!(open_loop_validity(&o).is_empty());
        o.achieved_rps = 900.0;
        o.lag_us.p99 = 5_000;
        assert_eq!(open_loop_validity(&o).len(), 2);
    }

    #[test]
    fn byte_counts_read_in_binary_units() {
        assert_eq!(fmt_bytes(0), "0 B");
        assert_eq!(fmt_bytes(1023), "1023 B");
        assert_eq!(fmt_bytes(1536), "1.5 KiB");
        assert_eq!(fmt_bytes(5 * 1024 * 1024), "5.0 MiB");
        assert_eq!(fmt_bytes(3 << 40), "3.0 TiB");
    }

    #[test]
    fn units() {
        assert_eq!(fmt_us(45), "45µs");
        assert_eq!(fmt_us(1_500), "1.50ms");
        assert_eq!(fmt_us(2_000_000), "2.00s");
    }
}
