//! What a run is: the typed, checked [`RunConfig`] that [`crate::run::run`] carries out.
//!
//! This is the core's one description of a run's parameters. The command line
//! ([`crate::cli::RunArgs`]) is one adapter that builds a `RunConfig`; the lab's drivers
//! (`suite`, `compare`) build theirs in code, starting from [`RunConfig::default`], which is
//! what `loadgen run` does with no flags. The report's `params` are this struct serialized, so
//! a parameter is named, typed and documented here once. [`RunConfig::checked`] refuses the
//! combinations the engine cannot carry out, with a message that names the flag, before a
//! socket is opened; `run` calls it, so no caller can skip it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::ValueEnum;
use echolab_protocol::{Protocol, MAX_ARG_MICROS};
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

pub use crate::arrivals::Arrivals;
pub use crate::records::RecordSpec;
pub use crate::schedule::{RateArg, Schedule};

/// A run configuration. Build one from [`RunConfig::default`]; [`RunConfig::checked`] (called
/// by [`crate::run::run`]) says whether the engine can carry it out.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunConfig {
    /// Server address.
    #[serde(serialize_with = "as_text")]
    pub addr: SocketAddr,
    /// Source addresses, spread round-robin over connections (empty: the kernel's choice).
    #[serde(serialize_with = "all_as_text")]
    pub source_ips: Vec<IpAddr>,
    /// Wire protocol.
    #[serde(serialize_with = "protocol_name")]
    pub protocol: Protocol,
    /// Connection slots.
    pub connections: u32,
    /// Event-loop threads (the checked configuration has at most `connections`).
    pub threads: u32,
    /// How each thread talks to the kernel: readiness (epoll) or completion (io_uring).
    pub engine: Engine,
    /// Measured duration, if limited by time (neither this nor `requests`: 10 s).
    #[serde(rename = "duration_s", serialize_with = "opt_seconds")]
    pub duration: Option<Duration>,
    /// Measured requests, if limited by count.
    pub requests: Option<u64>,
    /// Unrecorded lead-in.
    #[serde(rename = "warmup_s", serialize_with = "seconds")]
    pub warmup: Duration,
    /// Payload bytes as sent on the wire (for JSON, including the quotes).
    pub payload: usize,
    /// The operation.
    #[serde(serialize_with = "as_text")]
    pub op: Op,
    /// Requests in flight per connection.
    pub pipeline: u32,
    /// Requests per connection before it is closed and reopened (short connections).
    pub requests_per_conn: Option<u64>,
    /// Per-request (and connect, and blocked-write) limit.
    #[serde(rename = "timeout_s", serialize_with = "seconds")]
    pub timeout: Duration,
    /// Closed or open loop (reported as `mode`, `rate` and `schedule`).
    #[serde(flatten)]
    pub pacing: Pacing,
    /// Open loop: how requests arrive (fixed timetable or Poisson).
    #[serde(serialize_with = "as_text")]
    pub arrivals: Arrivals,
    /// Open loop with Poisson arrivals: the seed of every slot's timetable (`None`:
    /// [`DEFAULT_SEED`]).
    pub seed: Option<u64>,
    /// What to resend when a connection breaks with requests unanswered.
    pub retry: Retry,
    /// The most times one request is written, the first included (`--retry safe|always`).
    pub max_attempts: u32,
    /// `--op incr`: how many counters the run increments.
    pub keys: u32,
    /// `--op incr`: the counters' names start with this (then the key's index), so runs
    /// against one server do not mix. `None` until [`RunConfig::checked`] derives it from
    /// the client-id base.
    pub key_prefix: Option<String>,
    /// `--op incr`: connection slot `g` is session client `client_id_base + g`. `None` until
    /// [`RunConfig::checked`] draws one from the clock and the pid.
    pub client_id_base: Option<u64>,
    /// `--op record`: the records' format, shape, content and compression (`None` with
    /// every other op; [`RunConfig::checked`] fills in the defaults for `--op record`).
    pub record: Option<RecordSpec>,
    /// `--segment I/N`: this instance runs segment I of N of the run described, the
    /// connection slots `g` with `g % N == I`, and with them their share of the timetable
    /// (`None`: the whole run).
    pub segment: Option<Segment>,
    /// `--start-at`: when to start, on the wall clock (`None`: now).
    #[serde(serialize_with = "opt_rfc3339")]
    pub start_at: Option<SystemTime>,
    /// Sample this process tree's CPU, context switches and memory over the window.
    #[serde(skip)]
    pub server_pid: Option<i32>,
    /// Count the system calls of loadgen and (with `server_pid`) of the server's tree over
    /// the window ([`crate::syscalls`]).
    pub count_syscalls: bool,
    /// Files to write and the live line.
    #[serde(skip)]
    pub outputs: Outputs,
}

/// What a run writes besides its [`crate::report::Report`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outputs {
    /// The report as JSON.
    pub json: Option<PathBuf>,
    /// The latency distribution in HdrHistogram's percentile text format.
    pub hgrm: Option<PathBuf>,
    /// One histogram per second in HdrHistogram's interval log format.
    pub hlog: Option<PathBuf>,
    /// The live line on stderr.
    pub progress: Progress,
}

/// Payload bytes when none is given (and the op carries one).
pub const DEFAULT_PAYLOAD: usize = 64;

/// The duration used when neither a duration nor a request count is given.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// `--seed` when none is given: a fixed one, so that two runs with the same flags send the
/// same timetable unless asked otherwise.
pub const DEFAULT_SEED: u64 = 1;

/// `--max-attempts` when none is given: enough to ride out a few broken connections in a
/// row, few enough that a dead server does not keep a request alive for long.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;

/// `--keys` when none is given.
pub const DEFAULT_KEYS: u32 = 16;

/// The most counters one run may use (the servers' table is finite; past it they answer
/// KEYSFULL, which a run should meet on purpose, not by a typo).
pub const MAX_KEYS: u32 = 65_536;

impl Default for RunConfig {
    /// `loadgen run` with no flags (a test in cli.rs holds the two together).
    fn default() -> Self {
        RunConfig {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 7000)),
            source_ips: Vec::new(),
            protocol: Protocol::Binary,
            connections: 16,
            threads: 1,
            engine: Engine::Epoll,
            duration: None,
            requests: None,
            warmup: Duration::from_secs(1),
            payload: DEFAULT_PAYLOAD,
            op: Op::Echo,
            pipeline: 1,
            requests_per_conn: None,
            timeout: Duration::from_secs(5),
            pacing: Pacing::Closed,
            arrivals: Arrivals::Fixed,
            seed: None,
            retry: Retry::Never,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            keys: DEFAULT_KEYS,
            key_prefix: None,
            client_id_base: None,
            record: None,
            segment: None,
            start_at: None,
            server_pid: None,
            count_syscalls: false,
            outputs: Outputs::default(),
        }
    }
}

impl RunConfig {
    /// The seed of the Poisson timetable: `--seed`, or [`DEFAULT_SEED`].
    pub fn seed(&self) -> u64 {
        self.seed.unwrap_or(DEFAULT_SEED)
    }

    /// The connection slots this instance runs: all of them, or a `--segment`'s share.
    pub fn slots(&self) -> u32 {
        match self.segment {
            None => self.connections,
            Some(s) => s.checked(self.connections).unwrap_or(0),
        }
    }

    /// Checks the parameters against each other and returns the configuration the engine
    /// runs: threads at most connections, and the default duration when no limit is given.
    pub fn checked(&self) -> Result<RunConfig, String> {
        let payload = self.payload;
        match (self.op, self.protocol) {
            (Op::Ping, Protocol::Resp) if payload != 0 => {
                return Err(format!(
                    "--op ping carries no payload: leave out --payload {payload}"
                ))
            }
            (Op::Ping, Protocol::Resp) => {}
            (Op::Ping, _) => {
                return Err("--op ping is RESP's bare PING: use --protocol resp".into())
            }
            (Op::Sleep(_) | Op::Spin(_), Protocol::Resp | Protocol::Json) => {
                return Err(format!(
                    "--op {} needs --protocol binary (RESP and JSON have no SLEEP or SPIN)",
                    self.op
                ))
            }
            (Op::Incr, Protocol::Resp | Protocol::Json) => {
                return Err(
                    "--op incr needs --protocol binary (sessions are binary-only: RESP and JSON have no field for a client id or a seq)"
                        .into(),
                )
            }
            (Op::Incr, _) if payload != 0 => {
                return Err(format!(
                    "--op incr sends the counter's name as its payload: leave out --payload {payload}"
                ))
            }
            (Op::Record, Protocol::Resp | Protocol::Json) => {
                return Err(
                    "--op record needs --protocol binary (records are binary-only: RESP and JSON have no HELLO to agree a format)"
                        .into(),
                )
            }
            (Op::Record, _) if payload != 0 => {
                return Err(format!(
                    "--op record sends a record as its payload: leave out --payload {payload} (--record picks its size)"
                ))
            }
            _ => {}
        }
        let record = match (self.op, self.record) {
            (Op::Record, spec) => Some(spec.unwrap_or_default()),
            (_, None) => None,
            (op, Some(_)) => {
                return Err(format!(
                    "--format, --record, --entropy, --compress and --compress-threshold describe --op record's records, not --op {op}"
                ))
            }
        };
        if self.max_attempts == 0 {
            return Err("--max-attempts must be at least 1 (the first write counts)".into());
        }
        let (key_prefix, client_id_base) = if self.op == Op::Incr {
            self.session_names()?
        } else {
            (self.key_prefix.clone(), self.client_id_base)
        };
        if self.protocol == Protocol::Json && payload < 2 {
            return Err(
                "--payload must be at least 2 with --protocol json (a JSON string \"\")".into(),
            );
        }
        if payload > echolab_protocol::DEFAULT_MAX_FRAME - 64 {
            return Err(format!(
                "--payload {} is larger than the servers accept by default (about {} bytes)",
                payload,
                echolab_protocol::DEFAULT_MAX_FRAME - 64
            ));
        }
        if let Some(bad) = self
            .source_ips
            .iter()
            .find(|ip| ip.is_ipv4() != self.addr.is_ipv4())
        {
            return Err(format!(
                "--source-ips {bad} is not the same address family as --addr {}",
                self.addr
            ));
        }
        // The flags' own ranges, for callers that build a configuration in code (the command
        // line's parsers refuse these first, with the same words).
        if !(1..=MAX_CONNECTIONS).contains(&self.connections) {
            return Err(format!("--connections must be 1 to {MAX_CONNECTIONS}"));
        }
        if self.threads == 0 || self.pipeline == 0 {
            return Err("--threads and --pipeline must be at least 1".into());
        }
        if self.requests == Some(0) || self.requests_per_conn == Some(0) {
            return Err("--requests and --requests-per-conn must be at least 1".into());
        }
        if self.timeout.is_zero() {
            return Err("--timeout must be above 0".into());
        }
        if let Pacing::Open(schedule) = &self.pacing {
            schedule
                .checked(check_rate)
                .map_err(|e| format!("--rate or --steps: {e}"))?;
        }
        if let Some(schedule) = self.pacing.schedule().filter(|s| s.varies()) {
            // Steps, the hold after them included, times the threads that each keep a
            // histogram per step.
            let histograms =
                (schedule.pieces().len() + 1) * self.threads.min(self.connections) as usize;
            if histograms > crate::schedule::MAX_STEP_HISTOGRAMS {
                return Err(format!(
                    "{} steps on {} threads would keep {histograms} latency histograms of about \
                     140 KB (each thread one per step): at most {} (fewer steps or --threads)",
                    schedule.pieces().len(),
                    self.threads.min(self.connections),
                    crate::schedule::MAX_STEP_HISTOGRAMS
                ));
            }
        }
        let schedule_length = self.pacing.schedule().and_then(Schedule::length);
        if let Some(length) = schedule_length {
            if self.requests.is_some() {
                return Err(
                    "--requests does not go with a ramp or steps: the schedule sets how long the \
                     run lasts"
                        .into(),
                );
            }
            if self.duration.is_some_and(|d| d < length) {
                return Err(format!(
                    "--duration {:?} would end the run before its schedule ({:?}): leave \
                     --duration out, or make it longer to hold the last rate",
                    self.duration.unwrap_or_default(),
                    length
                ));
            }
        }
        if self.seed.is_some() && self.arrivals != Arrivals::Poisson {
            return Err(
                "--seed draws the Poisson timetable: it needs --arrivals poisson (a fixed \
                 timetable has nothing to draw)"
                    .into(),
            );
        }
        if self.arrivals == Arrivals::Poisson && self.pacing == Pacing::Closed {
            return Err(
                "--arrivals poisson needs --rate: arrivals are the open loop's timetable, and \
                 a closed loop sends when replies come back"
                    .into(),
            );
        }
        let duration = match (self.duration, self.requests) {
            (None, None) => Some(schedule_length.unwrap_or(DEFAULT_DURATION)),
            (d, _) => d,
        };
        if duration == Some(Duration::ZERO) {
            return Err("--duration must be above 0".into());
        }
        let slots = match self.segment {
            None => self.connections,
            Some(seg) => seg.checked(self.connections)?,
        };
        Ok(RunConfig {
            threads: self.threads.min(slots),
            duration,
            key_prefix,
            client_id_base,
            record,
            ..self.clone()
        })
    }

    /// `--op incr`: checks `--keys`, and the key prefix and client-id base, drawing those not
    /// given. Drawn here, once, so the report's `params` hold the names the counters got and
    /// a second `checked` (run() checks again) keeps them.
    fn session_names(&self) -> Result<(Option<String>, Option<u64>), String> {
        if !(1..=MAX_KEYS).contains(&self.keys) {
            return Err(format!("--keys must be 1 to {MAX_KEYS}"));
        }
        let base = match self.client_id_base {
            Some(0) => return Err("--client-id-base must be at least 1 (0 is no client)".into()),
            Some(b) => b,
            None => drawn_client_id_base(),
        };
        // Each slot may renew its session (EXPIRED) and take base + g + r·connections: leave
        // room for a million renewals before the id would wrap.
        if base
            .checked_add(u64::from(self.connections) * (1 << 20))
            .is_none()
        {
            return Err(format!(
                "--client-id-base {base} leaves no room for {} connections' client ids",
                self.connections
            ));
        }
        // A segment counts on counters of its own, so that its exactly-once check reads only
        // its own increments, even when every segment is given one --client-id-base.
        let prefix = self
            .key_prefix
            .clone()
            .unwrap_or_else(|| match self.segment {
                None => format!("lg{base:x}-"),
                Some(s) => format!("lg{base:x}-s{}-", s.index),
            });
        let longest = prefix.len() + (self.keys - 1).to_string().len();
        if prefix.is_empty() || longest > echolab_protocol::session::MAX_KEY {
            return Err(format!(
                "--key-prefix '{prefix}' with --keys {} makes names of up to {longest} bytes: they must be 1 to {} bytes",
                self.keys,
                echolab_protocol::session::MAX_KEY
            ));
        }
        Ok((Some(prefix), Some(base)))
    }
}

/// A client-id base nobody else is likely to use: the clock's nanoseconds and the pid mixed
/// (splitmix64's finaliser), kept below 2^56 so base + slot never wraps, and never 0.
fn drawn_client_id_base() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut z = nanos ^ (u64::from(std::process::id()) << 32);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z & ((1 << 56) - 1)).max(1)
}

/// What a connection resends when it breaks with requests unanswered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Retry {
    /// Nothing: every unanswered request ends as failed or indeterminate.
    #[default]
    Never,
    /// Only what certainly did not run (never fully written): gRPC's transparent retry.
    Safe,
    /// Everything unanswered, on the slot's next connection: the retry-on-timeout choice,
    /// which runs a request twice unless the server deduplicates.
    Always,
}

impl std::fmt::Display for Retry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Retry::Never => "never",
            Retry::Safe => "safe",
            Retry::Always => "always",
        })
    }
}

/// How a worker thread does its I/O (`--engine`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    /// Readiness: a mio loop over epoll, one `read` and one `write` system call per socket
    /// each time it is ready.
    #[default]
    #[value(alias = "mio")]
    Epoll,
    /// Completion: one io_uring per thread; connects, receives and sends are submitted, and
    /// every operation queued during a turn of the loop goes to the kernel in the one
    /// `io_uring_enter` that also waits for completions.
    Uring,
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Engine::Epoll => "epoll",
            Engine::Uring => "uring",
        })
    }
}

/// The most connections one run opens.
pub const MAX_CONNECTIONS: u32 = 1_000_000;

/// When to print the live line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Progress {
    /// When stderr is a terminal.
    #[default]
    Auto,
    /// Always (useful when piping to a log).
    Always,
    /// Never.
    Never,
}

/// `--segment I/N`: one of N instances that together make one run (on N machines, say).
///
/// The run's connection slots are numbered `0..connections`; segment I takes the slots `g`
/// with `g % N == I`. Everything else a slot does already depends on `g` alone: its share of
/// the open-loop timetable (fixed: request `g + k·connections`; Poisson: its own stream seeded
/// from `--seed` and `g`), its share of `--requests`, its request ids (`g` in the high bits)
/// and its session client id. So the N segments send exactly what one instance would, the
/// same total rate, no request twice and none skipped, and each is a whole run of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Segment {
    /// Which segment, from 0.
    pub index: u32,
    /// How many segments.
    pub count: u32,
}

impl Segment {
    /// Whether connection slot `g` is this segment's.
    pub fn owns(&self, g: u64) -> bool {
        g % u64::from(self.count) == u64::from(self.index)
    }

    /// How many of `connections` slots are this segment's, or why it has none.
    pub fn checked(&self, connections: u32) -> Result<u32, String> {
        if self.index >= self.count {
            return Err(format!(
                "--segment {self}: the index counts from 0, so it must be below {}",
                self.count
            ));
        }
        if connections < self.count {
            return Err(format!(
                "--segment {self}: {connections} connection(s) cannot be shared by {} segments (each needs at least one: raise --connections)",
                self.count
            ));
        }
        Ok((connections - self.index).div_ceil(self.count))
    }
}

impl std::fmt::Display for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Parses `--segment I/N`.
pub fn parse_segment(s: &str) -> Result<Segment, String> {
    let bad = || format!("'{s}' is not a segment: expected I/N, e.g. 0/4 (I counts from 0)");
    let (i, n) = s.split_once('/').ok_or_else(bad)?;
    let index = i.trim().parse().map_err(|_| bad())?;
    let count: u32 = n.trim().parse().map_err(|_| bad())?;
    if count == 0 {
        return Err(bad());
    }
    Ok(Segment { index, count })
}

/// Parses `--start-at`: an RFC 3339 time (`2026-12-07T18:30:00Z`, a fraction allowed; a
/// space for the `T` too), or `+DURATION` from now (`+10s`), which is only useful on one
/// machine.
pub fn parse_start_at(s: &str) -> Result<SystemTime, String> {
    if let Some(after) = s.strip_prefix('+') {
        let d =
            echolab_protocol::units::parse_duration(after).map_err(|e| format!("'{s}': {e}"))?;
        return Ok(SystemTime::now() + d);
    }
    humantime::parse_rfc3339_weak(s).map_err(|e| {
        format!("'{s}' is not a time: {e} (expected RFC 3339 in UTC, e.g. 2026-12-07T18:30:00Z, or +10s)")
    })
}

/// Serializes a wall-clock time as RFC 3339, in UTC, to the nanosecond.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

fn opt_rfc3339<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&rfc3339(*t)),
        None => s.serialize_none(),
    }
}

/// What each request asks the server to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", content = "micros", rename_all = "snake_case")]
pub enum Op {
    /// Echo the payload.
    Echo,
    /// RESP's bare PING (answered by PONG; no payload).
    Ping,
    /// Sleep this many µs, then echo.
    Sleep(u32),
    /// Burn CPU this many µs, then echo.
    Spin(u32),
    /// Add 1 to one of the run's counters, in a session (binary only): see `--keys`.
    Incr,
    /// Send a structured record, which the server decodes, changes and encodes back
    /// (binary only): see `--format`.
    Record,
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::Echo => f.write_str("echo"),
            Op::Ping => f.write_str("ping"),
            Op::Sleep(us) => write!(f, "sleep:{us}"),
            Op::Spin(us) => write!(f, "spin:{us}"),
            Op::Incr => f.write_str("incr"),
            Op::Record => f.write_str("record"),
        }
    }
}

/// Whether requests are paced by replies or by the clock.
#[derive(Debug, Clone, PartialEq)]
pub enum Pacing {
    /// Each connection sends its next request when a reply frees a slot in its pipeline.
    Closed,
    /// Requests leave on a timetable at the schedule's rate (requests per second over all
    /// connections): a constant rate, a ramp or steps.
    Open(Schedule),
}

impl Pacing {
    /// The open loop's schedule.
    pub fn schedule(&self) -> Option<&Schedule> {
        match self {
            Pacing::Closed => None,
            Pacing::Open(s) => Some(s),
        }
    }

    /// The open loop at a constant `rate`.
    pub fn open(rate: f64) -> Pacing {
        Pacing::Open(Schedule::constant(rate))
    }
}

// The report names the pacing `mode` (closed or open), gives a constant `rate` (null when
// closed or when the rate changes) and the `schedule` when it changes: flat fields, which
// scripts and the suite read.
impl Serialize for Pacing {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Pacing", 3)?;
        match self {
            Pacing::Closed => {
                s.serialize_field("mode", "closed")?;
                s.serialize_field("rate", &None::<f64>)?;
                s.serialize_field("schedule", &None::<Schedule>)?;
            }
            Pacing::Open(schedule) => {
                s.serialize_field("mode", "open")?;
                s.serialize_field("rate", &schedule.constant_rate())?;
                s.serialize_field("schedule", &schedule.varies().then_some(schedule))?;
            }
        }
        s.end()
    }
}

pub(crate) fn as_text<T: std::fmt::Display, S: Serializer>(
    value: &T,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

fn all_as_text<S: Serializer>(ips: &[IpAddr], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(ips.iter().map(|ip| ip.to_string()))
}

fn protocol_name<S: Serializer>(p: &Protocol, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(p.name())
}

fn seconds<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn opt_seconds<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

/// Source addresses for outgoing connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceIps(pub Vec<IpAddr>);

/// The most source addresses a range may expand to.
const MAX_SOURCE_IPS: u32 = 65_536;

/// Parses `binary`, `resp` or `json`.
pub fn parse_protocol(s: &str) -> Result<Protocol, String> {
    s.parse()
}

pub fn parse_rate(s: &str) -> Result<f64, String> {
    let r: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a rate in requests per second"))?;
    check_rate(r).map_err(|range| format!("'{s}': {range}"))
}

/// Parses `--rate`: `R`, or `A..B` for a ramp (with `--ramp`).
pub fn parse_rate_arg(s: &str) -> Result<RateArg, String> {
    match s.split_once("..") {
        Some((a, b)) => Ok(RateArg::Range(parse_rate(a)?, parse_rate(b)?)),
        None => parse_rate(s).map(RateArg::Constant),
    }
}

pub(crate) fn check_rate(r: f64) -> Result<f64, String> {
    if !(r.is_finite() && (0.01..=100e6).contains(&r)) {
        return Err("the rate must be between 0.01 and 100000000 requests/s".into());
    }
    Ok(r)
}

/// Parses `echo`, `ping`, `sleep:US`, `spin:US`, `incr`, `record`.
pub fn parse_op(s: &str) -> Result<Op, String> {
    let micros = |arg: &str| -> Result<u32, String> {
        let us: u64 = arg
            .parse()
            .map_err(|_| format!("'{s}': expected microseconds after ':' (e.g. sleep:1000)"))?;
        if us > MAX_ARG_MICROS {
            return Err(format!(
                "'{s}': at most {MAX_ARG_MICROS} µs (the servers' limit)"
            ));
        }
        u32::try_from(us).map_err(|e| e.to_string())
    };
    match s.split_once(':') {
        None if s == "echo" => Ok(Op::Echo),
        None if s == "ping" => Ok(Op::Ping),
        None if s == "incr" => Ok(Op::Incr),
        None if s == "record" => Ok(Op::Record),
        Some(("sleep", arg)) => Ok(Op::Sleep(micros(arg)?)),
        Some(("spin", arg)) => Ok(Op::Spin(micros(arg)?)),
        _ => Err(format!(
            "'{s}' is not an op (echo, ping, sleep:US, spin:US, incr or record)"
        )),
    }
}

/// Parses `127.0.0.2-127.0.0.9` (IPv4 range, inclusive) or a comma-separated list.
pub fn parse_source_ips(s: &str) -> Result<SourceIps, String> {
    if let Some((a, b)) = s.split_once('-') {
        let first: Ipv4Addr = a.trim().parse().map_err(|e| format!("'{a}': {e}"))?;
        let last: Ipv4Addr = b.trim().parse().map_err(|e| format!("'{b}': {e}"))?;
        let (lo, hi) = (u32::from(first), u32::from(last));
        if hi < lo {
            return Err(format!("'{s}': the range ends before it starts"));
        }
        if hi - lo >= MAX_SOURCE_IPS {
            return Err(format!("'{s}': at most {MAX_SOURCE_IPS} addresses"));
        }
        return Ok(SourceIps(
            (lo..=hi).map(|n| IpAddr::V4(Ipv4Addr::from(n))).collect(),
        ));
    }
    let ips = s
        .split(',')
        .map(|part| {
            part.trim()
                .parse::<IpAddr>()
                .map_err(|e| format!("'{part}': {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SourceIps(ips))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops() {
        assert_eq!(parse_op("echo"), Ok(Op::Echo));
        assert_eq!(parse_op("sleep:1000"), Ok(Op::Sleep(1000)));
        assert_eq!(parse_op("spin:5"), Ok(Op::Spin(5)));
        assert_eq!(parse_op("incr"), Ok(Op::Incr));
        assert!(parse_op("incr:2").is_err());
        assert!(parse_op("sleep").is_err());
        assert!(parse_op("sleep:-1").is_err());
        assert!(parse_op("sleep:2000000").is_err());
        assert!(parse_op("nap:5").is_err());
    }

    #[test]
    fn source_ips() {
        let r = parse_source_ips("127.0.0.2-127.0.0.4").expect("range");
        assert_eq!(r.0.len(), 3);
        assert_eq!(r.0[2], "127.0.0.4".parse::<IpAddr>().expect("ip"));
        assert_eq!(parse_source_ips("127.0.0.2,::1").expect("list").0.len(), 2);
        assert!(parse_source_ips("127.0.0.9-127.0.0.2").is_err());
        assert!(parse_source_ips("10.0.0.0-10.255.255.255").is_err());
        assert!(parse_source_ips("localhost").is_err());
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("1000"), Ok(1000.0));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("1e-12").is_err());
        assert!(parse_rate("NaN").is_err());
        assert!(parse_rate("inf").is_err());
    }
}
