//! The flags every server takes, defined once and flattened into each binary's own `Args`.
//!
//! Keeping one definition is what makes the models comparable: the load generator and the lab
//! script start any of them with the same flags, and a limit means the same thing everywhere.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use echolab_protocol::{Protocol, DEFAULT_MAX_FRAME};

/// Flags shared by every server binary.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Address to listen on; port 0 picks a free port (the chosen one is printed).
    #[arg(long, default_value = "127.0.0.1:7000")]
    pub addr: SocketAddr,

    /// Wire protocol: binary (echolab v1), resp (Redis RESP2 subset) or json (the book's).
    #[arg(long, default_value = "binary", value_parser = parse_protocol)]
    pub protocol: Protocol,

    /// Largest frame body (binary, JSON) or bulk string (RESP) accepted, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_FRAME, value_parser = parse_max_frame)]
    pub max_frame: usize,

    /// Most connections served at once; one more gets an ERROR reply "server busy" and is closed.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Close a connection with no activity (no complete request, no reply delivered) for this long (e.g. 60s, 500ms).
    #[arg(long, default_value = "60s", value_parser = parse_timeout)]
    pub idle_timeout: Duration,

    /// Give up on a client that does not take its replies for this long.
    #[arg(long, default_value = "10s", value_parser = parse_timeout)]
    pub write_timeout: Duration,

    /// Length of the kernel's queue of completed connections not yet accepted (listen(2)).
    #[arg(long, default_value_t = 1024)]
    pub backlog: i32,

    /// On SIGINT/SIGTERM, how long in-flight requests may take to finish before the server exits.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub grace: Duration,

    /// Write statistics as JSON to this file on shutdown.
    #[arg(long, value_name = "PATH")]
    pub stats_file: Option<PathBuf>,

    /// Debug logs on stderr (one line per connection event).
    #[arg(short, long)]
    pub verbose: bool,
}

impl ServerArgs {
    /// The per-connection limits the blocking handler enforces.
    pub fn limits(&self) -> crate::conn::Limits {
        crate::conn::Limits {
            idle_timeout: self.idle_timeout,
            write_timeout: self.write_timeout,
        }
    }
}

fn parse_protocol(s: &str) -> Result<Protocol, String> {
    s.parse()
}

/// The smallest `--max-frame` allowed: every error message must fit in a reply frame.
pub const MIN_MAX_FRAME: usize = 256;

fn parse_max_frame(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("not a byte count: {e}"))?;
    if !(MIN_MAX_FRAME..=u32::MAX as usize).contains(&n) {
        return Err(format!(
            "must be between {MIN_MAX_FRAME} and {} bytes",
            u32::MAX
        ));
    }
    Ok(n)
}

/// The longest duration any flag takes: one day. Longer is surely a typo, and would overflow
/// clock arithmetic (`Instant + Duration`) for absurd values.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// Parses `1.5s`, `200ms`, `50us`, `2m`, or a bare number of seconds, up to [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = parse_any_duration(s)?;
    if d > MAX_DURATION {
        return Err(format!("'{s}' is longer than the limit of 24h"));
    }
    Ok(d)
}

/// A duration that must be at least 1 ms: a zero idle or write timeout would close every
/// connection, and a zero interval would make a loop spin.
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(1) {
        return Err(format!("'{s}' is too short (at least 1ms)"));
    }
    Ok(d)
}

fn parse_any_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (examples: 60s, 500ms, 2m)"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" | "µs" => value / 1e6,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "unknown unit '{unit}' in '{s}' (use h, m, s, ms or us)"
            ))
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("'{s}': {e}"))
}

/// Parses a byte size: `65536`, `64K`, `2M`, `1G` (powers of 1024).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&s[..s.len() - 1], 1usize << 10),
        Some('M') => (&s[..s.len() - 1], 1 << 20),
        Some('G') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.trim()
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("'{s}' is not a size (examples: 65536, 64K, 2M)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("9300000000000000000").is_err());
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_timeout("0").is_err());
        assert!(parse_timeout("0.5ms").is_err());
        assert_eq!(parse_timeout("1ms"), Ok(Duration::from_millis(1)));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("2m"), Ok(2 << 20));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn max_frame_bounds() {
        assert!(parse_max_frame("255").is_err());
        assert_eq!(parse_max_frame("1048576"), Ok(1048576));
        assert!(parse_max_frame("99999999999").is_err());
    }
}
