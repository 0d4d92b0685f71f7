//! `loadgen run`'s flags, and their translation into a checked [`RunConfig`].
//!
//! Everything a person can get wrong on the command line is caught here, before a socket is
//! opened, with a message that names the flag: an op the protocol cannot express, a payload the
//! server would reject, more threads than connections.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use echolab_protocol::units::{parse_addr, parse_duration, parse_size, parse_timeout};
use echolab_protocol::{Protocol, MAX_ARG_MICROS};

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

    /// Wire protocol: binary, resp or json.
    #[arg(long, default_value = "binary", value_parser = parse_protocol)]
    pub protocol: Protocol,

    /// Connections kept open (or, with --requests-per-conn, connection slots).
    #[arg(short, long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub connections: u32,

    /// Threads; each drives its share of the connections with one nonblocking event loop.
    #[arg(short, long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: u32,

    /// How long to measure, after the warmup (e.g. 10s, 500ms). Default 10s unless --requests is given.
    #[arg(short, long, value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Stop after this many measured requests (with --duration: whichever comes first).
    #[arg(short = 'n', long, value_parser = clap::value_parser!(u64).range(1..))]
    pub requests: Option<u64>,

    /// Run this long first without recording (replies are still verified).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Payload bytes per request (64, 1K, ...). JSON wraps it in quotes: at least 2.
    /// [default: 64; 0 with --op ping, which carries none]
    #[arg(long, value_parser = parse_size, allow_hyphen_values = true)]
    pub payload: Option<usize>,

    /// What each request asks: echo, ping (RESP's bare PING), sleep:US or spin:US (binary only;
    /// the server sleeps or burns CPU for US microseconds, then echoes).
    #[arg(long, default_value = "echo", value_parser = parse_op)]
    pub op: Op,

    /// Requests in flight per connection (1 = request/response; 16 = like redis-benchmark -P 16).
    #[arg(short, long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub pipeline: u32,

    /// Short connections: connect, send this many requests, close, reconnect. Connect latency
    /// gets its own histogram. Default: connections stay open.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u64).range(1..))]
    pub requests_per_conn: Option<u64>,

    /// Per-request limit: a reply (or a connect, or a blocked write) that takes longer is an
    /// error of its kind, and the connection is closed and reopened.
    #[arg(long, default_value = "5s", value_parser = parse_timeout)]
    pub timeout: Duration,

    /// Open loop: send this many requests per second in total, on a fixed timetable, and
    /// measure latency from each request's scheduled send time. Default: closed loop.
    #[arg(short, long, value_name = "R", value_parser = parse_rate)]
    pub rate: Option<f64>,

    /// Sample the CPU time, context switches, memory and task counts of this process and
    /// its descendants over the measured window (Linux /proc).
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<i32>,

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

/// When to print the live line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Progress {
    /// When stderr is a terminal.
    Auto,
    /// Always (useful when piping to a log).
    Always,
    /// Never.
    Never,
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
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::Echo => f.write_str("echo"),
            Op::Ping => f.write_str("ping"),
            Op::Sleep(us) => write!(f, "sleep:{us}"),
            Op::Spin(us) => write!(f, "spin:{us}"),
        }
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

fn parse_rate(s: &str) -> Result<f64, String> {
    let r: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a rate in requests per second"))?;
    if !(r.is_finite() && (0.01..=100e6).contains(&r)) {
        return Err(format!(
            "'{s}': the rate must be between 0.01 and 100000000 requests/s"
        ));
    }
    Ok(r)
}

/// Parses `echo`, `ping`, `sleep:US`, `spin:US`.
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
        Some(("sleep", arg)) => Ok(Op::Sleep(micros(arg)?)),
        Some(("spin", arg)) => Ok(Op::Spin(micros(arg)?)),
        _ => Err(format!(
            "'{s}' is not an op (echo, ping, sleep:US or spin:US)"
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

/// Whether requests are paced by replies or by the clock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pacing {
    /// Each connection sends its next request when a reply frees a slot in its pipeline.
    Closed,
    /// Requests leave on a fixed timetable at this many per second in total.
    Open {
        /// Requests per second over all connections.
        rate: f64,
    },
}

/// A checked run configuration: every combination here is one the engine can carry out.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Server address.
    pub addr: SocketAddr,
    /// Source addresses (empty: let the kernel choose).
    pub source_ips: Vec<IpAddr>,
    /// Wire protocol.
    pub protocol: Protocol,
    /// Connection slots.
    pub connections: u32,
    /// Event-loop threads (at most `connections`).
    pub threads: u32,
    /// Measured duration, if limited by time.
    pub duration: Option<Duration>,
    /// Measured requests, if limited by count.
    pub requests: Option<u64>,
    /// Unrecorded lead-in.
    pub warmup: Duration,
    /// Payload bytes as sent on the wire (for JSON, including the quotes).
    pub payload: usize,
    /// The operation.
    pub op: Op,
    /// Requests in flight per connection.
    pub pipeline: u32,
    /// Requests per connection before it is closed and reopened.
    pub requests_per_conn: Option<u64>,
    /// Per-request (and connect, and blocked-write) limit.
    pub timeout: Duration,
    /// Closed or open loop.
    pub pacing: Pacing,
}

/// Payload bytes when --payload is not given (and the op carries one).
pub const DEFAULT_PAYLOAD: usize = 64;

/// The duration used when neither --duration nor --requests is given.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);

impl RunArgs {
    /// Checks the flags against each other and builds the configuration.
    pub fn config(&self) -> Result<RunConfig, String> {
        let protocol = self.protocol;
        let payload = self.payload.unwrap_or(match self.op {
            Op::Ping => 0,
            _ => DEFAULT_PAYLOAD,
        });
        match (self.op, protocol) {
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
            _ => {}
        }
        if protocol == Protocol::Json && payload < 2 {
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
        if let Some(ips) = &self.source_ips {
            if let Some(bad) = ips.0.iter().find(|ip| ip.is_ipv4() != self.addr.is_ipv4()) {
                return Err(format!(
                    "--source-ips {bad} is not the same address family as --addr {}",
                    self.addr
                ));
            }
        }
        let threads = self.threads.min(self.connections);
        let duration = match (self.duration, self.requests) {
            (None, None) => Some(DEFAULT_DURATION),
            (d, _) => d,
        };
        if duration == Some(Duration::ZERO) {
            return Err("--duration must be above 0".into());
        }
        let pacing = match self.rate {
            None => Pacing::Closed,
            Some(rate) => Pacing::Open { rate },
        };
        Ok(RunConfig {
            addr: self.addr,
            source_ips: self.source_ips.clone().map(|s| s.0).unwrap_or_default(),
            protocol,
            connections: self.connections,
            threads,
            duration,
            requests: self.requests,
            warmup: self.warmup,
            payload,
            op: self.op,
            pipeline: self.pipeline,
            requests_per_conn: self.requests_per_conn,
            timeout: self.timeout,
            pacing,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops() {
        assert_eq!(parse_op("echo"), Ok(Op::Echo));
        assert_eq!(parse_op("sleep:1000"), Ok(Op::Sleep(1000)));
        assert_eq!(parse_op("spin:5"), Ok(Op::Spin(5)));
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
