//! `loadgen run`'s flags: the command line's adapter onto the core's [`RunConfig`].
//!
//! clap checks each flag's own form and range; [`RunArgs::config`] builds the configuration
//! and has [`RunConfig::checked`] refuse combinations (an op the protocol cannot express, a
//! payload the server would reject), so a mistake is reported before a socket is opened, with
//! a message that names the flag.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::Args;
use echolab_protocol::record::Format;
use echolab_protocol::units::{parse_addr, parse_duration, parse_size, parse_timeout};
use echolab_protocol::Protocol;

use crate::config::{
    parse_op, parse_protocol, parse_rate_arg, parse_segment, parse_source_ips, parse_start_at,
    Arrivals, Engine, Op, Outputs, Pacing, Progress, RateArg, Retry, RunConfig, Schedule, Segment,
    SourceIps, DEFAULT_KEYS, DEFAULT_MAX_ATTEMPTS, DEFAULT_PAYLOAD, MAX_CONNECTIONS, MAX_KEYS,
};
use crate::records::{Compress, Entropy, RecordSpec, Shape};
use crate::schedule::{parse_steps, StepList};

/// Parses `--format`: one of the record formats, by name.
fn parse_format(s: &str) -> Result<Format, String> {
    s.parse()
}

/// `loadgen run`: drive one server and report what it did.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Server address, HOST:PORT (a name such as localhost:7000 is resolved once, at start,
    /// to its first IPv4 address).
    #[arg(long, default_value = "127.0.0.1:7000", value_parser = parse_addr)]
    pub addr: SocketAddr,

    /// Local addresses to connect from, spread round-robin over connections: a range
    /// (127.0.0.2-127.0.0.9) or a list (127.0.0.2,127.0.0.3). Each source address has its own
    /// ~28 000 ephemeral ports, so short-connection runs do not run out of them.
    #[arg(long, value_name = "IPS", value_parser = parse_source_ips)]
    pub source_ips: Option<SourceIps>,

    /// What load to offer.
    #[command(flatten)]
    pub load: LoadArgs,

    /// How long to measure, after the warmup (e.g. 10s, 500ms). Default 10s unless --requests is given.
    #[arg(short, long, value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Stop after this many measured requests (with --duration: whichever comes first).
    #[arg(short = 'n', long, value_parser = clap::value_parser!(u64).range(1..))]
    pub requests: Option<u64>,

    /// Run this long first without recording (replies are still verified).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Per-request limit: a reply (or a connect, or a blocked write) that takes longer is an
    /// error of its kind, and the connection is closed and reopened.
    #[arg(long, default_value = "5s", value_parser = parse_timeout)]
    pub timeout: Duration,

    /// Open loop: send this many requests per second in total, on a timetable, and measure
    /// latency from each request's scheduled send time. A range A..B with --ramp changes the
    /// rate during the run. Default: closed loop.
    #[arg(short, long, value_name = "R|A..B", value_parser = parse_rate_arg)]
    pub rate: Option<RateArg>,

    /// With --rate A..B: after the warmup (which runs at A), go from A to B linearly over this
    /// long (e.g. 20s); the run lasts as long as the ramp unless --duration holds B longer.
    /// The report has the ramp's figures and each second's target and achieved rate.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "rate")]
    pub ramp: Option<Duration>,

    /// Open loop in steps: RATE:DURATION pairs, comma-separated (e.g. 1000:5s,2000:5s,4000:5s).
    /// The warmup runs at the first rate; the report has a row per step (latency of the
    /// requests scheduled in it, target and achieved rate), and the interval log a histogram
    /// per step (tag "step") beside the per-second ones.
    #[arg(long, value_name = "STEPS", value_parser = parse_steps, conflicts_with_all = ["rate", "ramp"])]
    pub steps: Option<StepList>,

    /// Open loop: how requests arrive. fixed: evenly spaced, connection g of C sending at
    /// (g + k·C) / rate; poisson: each connection a Poisson process at rate / C, so the run
    /// as a whole is one at --rate, with exponentially distributed gaps (as many independent
    /// users make), drawn from --seed. Latency still runs from each request's scheduled time.
    #[arg(long, value_enum, default_value_t = Arrivals::Fixed)]
    pub arrivals: Arrivals,

    /// With --arrivals poisson: the seed of the timetable (default 1). The same seed gives
    /// the same timetable on every run (connection g's is fixed by the seed and g).
    #[arg(long, value_name = "SEED")]
    pub seed: Option<u64>,

    /// When a connection breaks with requests unanswered, resend: never (each ends failed or
    /// indeterminate); safe (only those never fully written, which certainly did not run);
    /// always (every unanswered one, on the slot's next connection, with the same id: may run
    /// a request twice unless the server deduplicates). Resends go out first, and their latency
    /// runs from the request's first start.
    #[arg(long, value_enum, default_value_t = Retry::Never)]
    pub retry: Retry,

    /// With --retry safe or always: the most times one request is written, the first
    /// included. A request out of attempts keeps its last outcome (failed or indeterminate).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_ATTEMPTS, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_attempts: u32,

    /// With --op incr: how many counters to increment (each request adds 1 to one of them,
    /// round-robin). After the run one fresh connection reads them all (GET) and compares
    /// them with the increments acknowledged: the exactly-once check.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_KEYS, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_KEYS)))]
    pub keys: u32,

    /// With --op incr: the counters are named PREFIX0, PREFIX1, ... so that runs against one
    /// server do not mix. Default: "lg", the client-id base in hex, and "-".
    #[arg(long, value_name = "PREFIX")]
    pub key_prefix: Option<String>,

    /// With --op incr: connection slot g is session client BASE + g, kept across
    /// reconnects (a slot whose session expired takes a fresh id). Default: drawn from the
    /// clock and the pid, and printed in the report's params.
    #[arg(long, value_name = "BASE", value_parser = clap::value_parser!(u64).range(1..))]
    pub client_id_base: Option<u64>,

    /// Run segment I of N (I from 0): the connection slots g with g % N == I, and with them
    /// their share of the timetable and of --requests. N instances with the same flags and
    /// I = 0..N-1 send exactly what one would (the same total --rate and -c); merge their
    /// reports and interval logs with `loadgen merge`. See docs/loadgen.md, "More than one
    /// machine".
    #[arg(long, value_name = "I/N", value_parser = parse_segment)]
    pub segment: Option<Segment>,

    /// Start at this wall-clock time, RFC 3339 in UTC (2026-12-07T18:30:00Z), or +DURATION
    /// from now: so that segments on several machines start together. It assumes their
    /// clocks agree (NTP, PTP); the report records the clock.
    #[arg(long, value_name = "TIME", value_parser = parse_start_at)]
    pub start_at: Option<SystemTime>,

    /// Sample the CPU time, context switches, memory and task counts of this process and
    /// its descendants over the measured window (Linux /proc).
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<i32>,

    /// Count system calls over the measured window, loadgen's and (with --server-pid) the
    /// server tree's, with the kernel's raw_syscalls tracepoint (perf events: root, or
    /// kernel.perf_event_paranoid <= 1). While counting, every system call on the machine
    /// costs a little more, so compare throughput only between runs that did not count.
    #[arg(long)]
    pub count_syscalls: bool,

    /// Write every figure, the parameters and the machine as JSON.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,

    /// Write the latency percentile distribution in HdrHistogram's text format (values in ms).
    #[arg(long, value_name = "PATH")]
    pub hgrm: Option<PathBuf>,

    /// Write one histogram per second in HdrHistogram's interval log format.
    #[arg(long, value_name = "PATH")]
    pub hlog: Option<PathBuf>,

    /// Live progress on stderr: auto (only when stderr is a terminal), always or never.
    #[arg(long, value_enum, default_value_t = Progress::Auto)]
    pub progress: Progress,
}

/// The flags that say what load to offer, shared by `loadgen run` and `loadgen compare`
/// (whose trials are runs), so each is declared, documented and range-checked once.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Wire protocol: binary, resp or json.
    #[arg(long, default_value = "binary", value_parser = parse_protocol)]
    pub protocol: Protocol,

    /// Connections kept open (or, with --requests-per-conn, connection slots).
    #[arg(short, long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_CONNECTIONS)))]
    pub connections: u32,

    /// Threads; each drives its share of the connections with one nonblocking event loop.
    #[arg(short, long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: u32,

    /// How each thread does its I/O: epoll (readiness, a system call per read and per write)
    /// or uring (completion: one io_uring per thread, each turn's operations submitted in one
    /// system call). uring needs Linux 5.11 or later with io_uring allowed.
    #[arg(long, value_enum, default_value_t = Engine::Epoll)]
    pub engine: Engine,

    /// Payload bytes per request (64, 1K, ...). JSON wraps it in quotes: at least 2.
    /// [default: 64; 0 with --op ping, which carries none]
    #[arg(long, value_parser = parse_size, allow_hyphen_values = true)]
    pub payload: Option<usize>,

    /// What each request asks: echo, ping (RESP's bare PING), sleep:US or spin:US (binary only;
    /// the server sleeps or burns CPU for US microseconds, then echoes), incr (binary only:
    /// each connection slot is a session client, each request adds 1 to a counter; see
    /// --keys, --retry), or record (binary only: each request is a structured record the
    /// server decodes, changes and encodes back; see --format).
    #[arg(long, default_value = "echo", value_parser = parse_op)]
    pub op: Op,

    /// Requests in flight per connection (1 = request/response; 16 = like redis-benchmark -P 16).
    #[arg(short, long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub pipeline: u32,

    /// Short connections: connect, send this many requests, close, reconnect. Connect latency
    /// gets its own histogram. Default: connections stay open.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u64).range(1..))]
    pub requests_per_conn: Option<u64>,

    /// With --op record: how records are laid out. positional (echolab's own: values in a
    /// fixed order), json (field names in every message), protobuf (a tag/type key per
    /// field, varints, zigzag) or avro (values only; the schema is sent once per connection,
    /// in its HELLO). [default: positional]
    #[arg(long, value_parser = parse_format, help_heading = "Records (--op record)")]
    pub format: Option<Format>,

    /// With --op record: book (the book's Person: a name, a number, two interests), nested
    /// (with an address message inside) or large (512 interests, about 7-8 KB).
    /// [default: book]
    #[arg(long, value_enum, help_heading = "Records (--op record)")]
    pub record: Option<Shape>,

    /// With --op record: low (words from a small vocabulary, which compress well) or high
    /// (random letters and digits of the same lengths, which snappy cannot compress).
    /// [default: low]
    #[arg(long, value_enum, help_heading = "Records (--op record)")]
    pub entropy: Option<Entropy>,

    /// With --op record: none, or snappy for records of at least --compress-threshold bytes
    /// (each message's flag byte says which; the server compresses its reply when the
    /// request was). [default: none]
    #[arg(long, value_enum, help_heading = "Records (--op record)")]
    pub compress: Option<Compress>,

    /// With --compress snappy: the smallest record compressed, in bytes (256, 1K, ...).
    /// [default: 256]
    #[arg(long, value_name = "BYTES", value_parser = parse_size, help_heading = "Records (--op record)")]
    pub compress_threshold: Option<usize>,
}

impl LoadArgs {
    /// The payload sent: as given, else none for PING and INCR (whose payload is the key) and
    /// the default for every other op.
    pub fn payload(&self) -> usize {
        self.payload.unwrap_or(match self.op {
            Op::Ping | Op::Incr | Op::Record => 0,
            _ => DEFAULT_PAYLOAD,
        })
    }

    /// The records --op record sends, when any of their flags is given (`None` otherwise:
    /// defaults for --op record, and the flags refused with any other op, by
    /// [`RunConfig::checked`]).
    pub fn record(&self) -> Option<RecordSpec> {
        if self.format.is_none()
            && self.record.is_none()
            && self.entropy.is_none()
            && self.compress.is_none()
            && self.compress_threshold.is_none()
        {
            return None;
        }
        let d = RecordSpec::default();
        Some(RecordSpec {
            format: self.format.unwrap_or(d.format),
            shape: self.record.unwrap_or(d.shape),
            entropy: self.entropy.unwrap_or(d.entropy),
            compress: self.compress.unwrap_or(d.compress),
            threshold: self.compress_threshold.unwrap_or(d.threshold),
        })
    }

    /// `config` with this load.
    pub fn apply(&self, config: RunConfig) -> RunConfig {
        RunConfig {
            protocol: self.protocol,
            connections: self.connections,
            threads: self.threads,
            engine: self.engine,
            payload: self.payload(),
            op: self.op,
            pipeline: self.pipeline,
            requests_per_conn: self.requests_per_conn,
            record: self.record(),
            ..config
        }
    }
}

impl RunArgs {
    /// The pacing that --rate, --ramp and --steps ask for.
    fn pacing(&self) -> Result<Pacing, String> {
        Ok(match (self.rate, self.ramp, &self.steps) {
            (None, _, None) => Pacing::Closed,
            (_, _, Some(steps)) => Pacing::Open(Schedule::steps(&steps.0)),
            (Some(RateArg::Constant(r)), None, _) => Pacing::open(r),
            (Some(RateArg::Range(a, b)), Some(over), _) => Pacing::Open(Schedule::ramp(a, b, over)),
            (Some(RateArg::Range(a, b)), None, _) => {
                return Err(format!(
                    "--rate {a}..{b} is a ramp: say how long it takes with --ramp (e.g. --ramp 20s)"
                ))
            }
            (Some(RateArg::Constant(r)), Some(_), _) => {
                return Err(format!(
                    "--ramp needs a range to ramp over: --rate A..B (not --rate {r})"
                ))
            }
        })
    }

    /// Checks the flags against each other and builds the configuration.
    pub fn config(&self) -> Result<RunConfig, String> {
        if self.segment.is_some() && self.load.op == Op::Incr && self.key_prefix.is_some() {
            return Err(
                "--key-prefix with --segment: each segment checks exactly-once on counters of its own (its default prefix names the segment); with one prefix every segment would count the others' increments as duplicates"
                    .into(),
            );
        }
        self.load
            .apply(RunConfig {
                addr: self.addr,
                source_ips: self.source_ips.clone().map(|s| s.0).unwrap_or_default(),
                duration: self.duration,
                requests: self.requests,
                warmup: self.warmup,
                timeout: self.timeout,
                pacing: self.pacing()?,
                arrivals: self.arrivals,
                seed: self.seed,
                retry: self.retry,
                max_attempts: self.max_attempts,
                keys: self.keys,
                key_prefix: self.key_prefix.clone(),
                client_id_base: self.client_id_base,
                segment: self.segment,
                start_at: self.start_at,
                server_pid: self.server_pid,
                count_syscalls: self.count_syscalls,
                outputs: Outputs {
                    json: self.json.clone(),
                    hgrm: self.hgrm.clone(),
                    hlog: self.hlog.clone(),
                    progress: self.progress,
                },
                ..RunConfig::default()
            })
            .checked()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Flags {
        #[command(flatten)]
        run: RunArgs,
    }

    fn config(args: &[&str]) -> Result<RunConfig, String> {
        let flags = Flags::try_parse_from(std::iter::once("loadgen").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        flags.run.config()
    }

    /// The flags' defaults and `RunConfig::default` are the same run: the lab's drivers start
    /// from the one, people from the other.
    #[test]
    fn no_flags_is_the_default_config() {
        assert_eq!(config(&[]), RunConfig::default().checked());
    }

    #[test]
    fn flags_reach_the_config() {
        let cfg = config(&[
            "--rate",
            "500",
            "-c",
            "4",
            "-t",
            "8",
            "--op",
            "ping",
            "--protocol",
            "resp",
        ])
        .expect("valid flags");
        assert_eq!(cfg.pacing, Pacing::open(500.0));
        assert_eq!(cfg.threads, 4, "at most one thread per connection");
        assert_eq!(cfg.payload, 0, "ping carries no payload");
        assert!(config(&["--op", "ping"]).is_err(), "ping is RESP's");
    }

    #[test]
    fn schedule_flags() {
        let ramp = config(&["--rate", "1000..5000", "--ramp", "20s"]).expect("a ramp");
        assert_eq!(
            ramp.pacing,
            Pacing::Open(Schedule::ramp(1000.0, 5000.0, Duration::from_secs(20)))
        );
        assert_eq!(
            ramp.duration,
            Some(Duration::from_secs(20)),
            "as long as the ramp"
        );
        let held = config(&["--rate", "1000..5000", "--ramp", "20s", "-d", "30s"]).expect("held");
        assert_eq!(held.duration, Some(Duration::from_secs(30)));
        let steps = config(&["--steps", "100:1s,200:2s"]).expect("steps");
        assert_eq!(steps.duration, Some(Duration::from_secs(3)));
        let refused = |args: &[&str], needle: &str| {
            let e = config(args).expect_err("refused");
            assert!(e.contains(needle), "{args:?}: {e}");
        };
        refused(&["--rate", "1000..5000"], "--ramp");
        refused(&["--rate", "1000", "--ramp", "5s"], "A..B");
        refused(&["--ramp", "5s"], "--rate");
        refused(&["--steps", "100:1s", "--rate", "5"], "--rate");
        refused(&["--steps", "100:1s", "-n", "50"], "--requests");
        refused(&["--steps", "100:2s", "-d", "1s"], "--duration");
        refused(&["--steps", "100:0s"], "0 s");
        refused(&["--steps", "0:1s"], "rate 0");
        refused(&["--rate", "1..1e9", "--ramp", "1s"], "1e9");
        let many: Vec<String> = (0..100).map(|i| format!("{}:1s", 100 + i)).collect();
        let many = many.join(",");
        refused(&["--steps", &many, "-c", "32", "-t", "32"], "histograms");
        assert!(
            config(&["--steps", &many]).is_ok(),
            "100 steps on one thread"
        );
    }

    #[test]
    fn record_flags() {
        let d = config(&["--op", "record"]).expect("valid flags");
        assert_eq!(d.record, Some(RecordSpec::default()));
        assert_eq!(d.payload, 0, "the record is the payload");
        let cfg = config(&[
            "--op",
            "record",
            "--format",
            "avro",
            "--record",
            "large",
            "--entropy",
            "high",
            "--compress",
            "snappy",
            "--compress-threshold",
            "1K",
        ])
        .expect("valid flags");
        assert_eq!(
            cfg.record,
            Some(RecordSpec {
                format: Format::Avro,
                shape: Shape::Large,
                entropy: Entropy::High,
                compress: Compress::Snappy,
                threshold: 1024,
            })
        );
        let refused = |args: &[&str], needle: &str| {
            let e = config(args).expect_err("refused");
            assert!(e.contains(needle), "{args:?}: {e}");
        };
        refused(&["--op", "record", "--protocol", "json"], "binary-only");
        refused(
            &["--op", "record", "--payload", "8"],
            "leave out --payload 8",
        );
        refused(&["--format", "avro"], "not --op echo");
        refused(&["--op", "incr", "--compress", "snappy"], "not --op incr");
        assert!(config(&["--op", "record", "--format", "xml"]).is_err());
    }

    #[test]
    fn segment_flags() {
        let cfg = config(&["--segment", "1/3", "-c", "10", "-t", "8"]).expect("valid flags");
        assert_eq!(cfg.segment, Some(Segment { index: 1, count: 3 }));
        assert_eq!((cfg.slots(), cfg.threads), (3, 3), "slots 1, 4, 7");
        let incr = config(&["--segment", "2/3", "--op", "incr", "--client-id-base", "16"])
            .expect("valid flags");
        assert_eq!(incr.key_prefix.as_deref(), Some("lg10-s2-"));
        let e = config(&["--segment", "0/2", "--op", "incr", "--key-prefix", "k"])
            .expect_err("one prefix for every segment");
        assert!(e.contains("--key-prefix with --segment"), "{e}");
    }

    #[test]
    fn incr_flags() {
        let cfg = config(&["--op", "incr", "--client-id-base", "77", "--keys", "3"])
            .expect("valid flags");
        assert_eq!(cfg.payload, 0, "the key is the payload");
        assert_eq!(cfg.client_id_base, Some(77));
        assert_eq!(
            cfg.key_prefix.as_deref(),
            Some("lg4d-"),
            "derived from the base"
        );
        assert_eq!(cfg.retry, Retry::Never);
        assert_eq!(
            cfg.checked(),
            Ok(cfg.clone()),
            "a second check keeps the names"
        );
        // Drawn when not given, and not 0.
        let drawn = config(&["--op", "incr"]).expect("valid flags");
        assert!(drawn.client_id_base.is_some_and(|b| b > 0));
        let refused = |args: &[&str], needle: &str| {
            let e = config(args).expect_err("refused");
            assert!(e.contains(needle), "{args:?}: {e}");
        };
        refused(&["--op", "incr", "--protocol", "resp"], "binary-only");
        refused(&["--op", "incr", "--protocol", "json"], "binary-only");
        refused(&["--op", "incr", "--keys", "0"], "--keys");
        refused(&["--op", "incr", "--payload", "8"], "leave out --payload 8");
        refused(
            &["--op", "incr", "--client-id-base", "0"],
            "--client-id-base",
        );
        refused(&["--max-attempts", "0"], "--max-attempts");
        refused(&["--retry", "sometimes"], "--retry");
        let long = "k".repeat(63);
        refused(
            &["--op", "incr", "--key-prefix", &long, "--keys", "11"],
            "--key-prefix",
        );
        refused(&["--op", "incr", "--key-prefix", ""], "--key-prefix");
    }
}
