//! The flags every server takes, defined once and flattened into each binary's own `Args`.
//!
//! Keeping one definition is what makes the models comparable: the load generator and the lab
//! script start any of them with the same flags, and a limit means the same thing everywhere.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use echolab_protocol::{ServerProtocol, DEFAULT_MAX_FRAME};

// The value parsers live in the protocol crate so loadgen reads `10s` and `64K` exactly as
// the servers do.
pub use echolab_protocol::units::{parse_duration, parse_size, parse_timeout, MAX_DURATION};

/// Flags shared by every server binary.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Address to listen on; port 0 picks a free port (the chosen one is printed).
    #[arg(long, default_value = "127.0.0.1:7000")]
    pub addr: SocketAddr,

    /// Wire protocol: auto (binary or RESP, told apart by each connection's first byte),
    /// binary (echolab v1), resp (Redis RESP2 subset) or json (the book's, which auto cannot
    /// recognise). With --max-frame at 672 MiB or more, some binary frames look like RESP to
    /// auto: say binary then (docs/protocol.md).
    #[arg(long, default_value = "auto", value_parser = parse_protocol)]
    pub protocol: ServerProtocol,

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

    /// Close a connection whose request takes longer than this from its first byte to its
    /// last (slowloris: a client trickling a byte every few seconds never finishes a request;
    /// the idle timeout would let it hold its thread or worker until --idle-timeout, this cuts
    /// it off sooner). The client gets an ERROR reply, then EOF. Time the server spends
    /// waiting for the client to take its replies does not count.
    #[arg(long, default_value = "10s", value_parser = parse_timeout)]
    pub request_timeout: Duration,

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

    /// Testing aid: burn this many nanoseconds of CPU on every request, after decoding it and
    /// before replying. It makes a build measurably slower without editing code, which is how
    /// the regression gate (`loadgen compare`, docs/ci.md) is shown to catch a slowdown.
    /// 0 (the default) adds nothing.
    #[arg(long, value_name = "NS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=MAX_DEBUG_SPIN_NS))]
    pub debug_spin_ns: u64,
}

/// The largest `--debug-spin-ns`: one second per request is already a server that does nothing.
pub const MAX_DEBUG_SPIN_NS: u64 = 1_000_000_000;

/// What every server sets up for the whole process before its model starts (see
/// [`crate::main_with`]).
#[derive(Debug, Clone, Copy)]
pub struct ProcessSettings {
    /// `--verbose`.
    pub verbose: bool,
    /// `--debug-spin-ns`.
    pub debug_spin_ns: u64,
}

impl ServerArgs {
    /// The settings that hold for the whole process, whichever model runs.
    pub fn process_settings(&self) -> ProcessSettings {
        ProcessSettings {
            verbose: self.verbose,
            debug_spin_ns: self.debug_spin_ns,
        }
    }

    /// The per-connection limits the blocking handler enforces.
    pub fn limits(&self) -> crate::conn::Limits {
        crate::conn::Limits {
            idle_timeout: self.idle_timeout,
            write_timeout: self.write_timeout,
            request_timeout: self.request_timeout,
        }
    }
}

fn parse_protocol(s: &str) -> Result<ServerProtocol, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_frame_bounds() {
        assert!(parse_max_frame("255").is_err());
        assert_eq!(parse_max_frame("1048576"), Ok(1048576));
        assert!(parse_max_frame("99999999999").is_err());
    }
}
