//! The flags every server takes, defined once and flattened into each binary's own `Args`.
//!
//! Keeping one definition is what makes the models comparable: the load generator and the lab
//! script start any of them with the same flags, and a limit means the same thing everywhere.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::RangedI64ValueParser;
use clap::{Args, ValueEnum};
use echolab_protocol::{ServerProtocol, DEFAULT_MAX_FRAME};

use crate::session::{self, MAX_CLIENTS, MAX_COUNTER_KEYS, MAX_WINDOW, WAYS};

// The value parsers live in the protocol crate so loadgen reads `10s` and `64K` exactly as
// the servers do.
pub use echolab_protocol::units::{
    parse_addr, parse_duration, parse_size, parse_timeout, MAX_DURATION,
};

/// Flags shared by every server binary.
///
/// Help text: clap shows a field's first doc paragraph for `-h` and the whole comment for
/// `--help`, so the first paragraph is one line and detail goes after a blank line.
///
/// Numeric flags take `allow_negative_numbers` (and those with units, `allow_hyphen_values`):
/// without it clap reads `--backlog -5` as an unknown flag `-5` and answers "unexpected
/// argument", where the value parser would have said which values are valid.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Address to listen on, HOST:PORT; port 0 picks a free port (the chosen one is printed).
    ///
    /// HOST is an IP address (127.0.0.1, `[::1]`, 0.0.0.0 for every interface) or a name, which
    /// is resolved once at start and the first address taken (`localhost` may give ::1 or
    /// 127.0.0.1, depending on /etc/hosts and gai.conf): the `listening on` line says which.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:7000", value_parser = parse_addr)]
    pub addr: SocketAddr,

    /// Wire protocol: auto (binary or RESP, told apart by each connection's first byte),
    /// binary (echolab v1), resp (Redis RESP2 subset) or json (the book's, which auto cannot
    /// recognise). With --max-frame at 672 MiB or more, some binary frames look like RESP to
    /// auto: say binary then (docs/protocol.md).
    #[arg(long, default_value = "auto", value_parser = parse_protocol)]
    pub protocol: ServerProtocol,

    /// Largest frame body (binary, JSON) or bulk string (RESP) accepted, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_FRAME, value_parser = parse_max_frame, allow_negative_numbers = true)]
    pub max_frame: usize,

    /// Most connections served at once; one more gets an ERROR reply "server busy" and is closed.
    ///
    /// Where a model has a fixed number of workers (server-thread --pool, server-prefork),
    /// the workers are the real limit: see that binary's help.
    #[arg(long, value_name = "N", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..), allow_negative_numbers = true)]
    pub max_connections: u32,

    /// Close a connection with no complete request and no reply delivered for this long.
    ///
    /// E.g. 60s, 500ms. Waiting for a request's remaining bytes does not count as activity:
    /// --request-timeout covers that.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_timeout, allow_hyphen_values = true)]
    pub idle_timeout: Duration,

    /// Give up on a client that does not take its replies for this long.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_timeout, allow_hyphen_values = true)]
    pub write_timeout: Duration,

    /// Close a connection whose request takes longer than this from first byte to last.
    ///
    /// Against slowloris: a client trickling a byte every few seconds never finishes a
    /// request, and the idle timeout would let it hold its thread or worker until
    /// --idle-timeout; this cuts it off sooner. The client gets an ERROR reply, then EOF. Time
    /// the server spends waiting for the client to take its replies does not count.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_timeout, allow_hyphen_values = true)]
    pub request_timeout: Duration,

    /// Length of the kernel's queue of connections waiting to be accepted (listen(2)).
    ///
    /// Linux caps it at net.core.somaxconn (4096 by default since Linux 5.4) and the server
    /// says so at start if it did. Past it, new clients' handshakes are not completed and they
    /// retry. At least 1; at most 65535, long the kernel's own ceiling: more is a typo.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(i32).range(1..=MAX_BACKLOG), allow_negative_numbers = true)]
    pub backlog: i32,

    /// On SIGINT/SIGTERM, how long in-flight requests may take to finish before the server exits.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration, allow_hyphen_values = true)]
    pub grace: Duration,

    /// Write statistics as JSON to this file on shutdown.
    #[arg(long, value_name = "PATH")]
    pub stats_file: Option<PathBuf>,

    /// Debug logs on stderr (one line per connection event).
    #[arg(short, long)]
    pub verbose: bool,

    /// Burn this many nanoseconds of CPU on every request, to slow a build down on purpose.
    ///
    /// After decoding a request and before replying; 0 adds nothing. It makes a build
    /// measurably slower without editing code, which is how the regression gate
    /// (`loadgen compare`, docs/ci.md) is shown to catch a slowdown.
    #[arg(long, value_name = "NS", default_value_t = 0, value_parser = RangedI64ValueParser::<u64>::new().range(0..=MAX_DEBUG_SPIN_NS as i64), allow_negative_numbers = true, help_heading = TESTING_AIDS)]
    pub debug_spin_ns: u64,

    /// Run this many rounds of a fixed arithmetic loop on every request: a slowdown counted
    /// in instructions, not in time.
    ///
    /// Each round is the same few instructions whatever the machine's speed or load, so under
    /// Cachegrind (the instruction gate, docs/ci.md) it adds exactly the same count to every
    /// request, where --debug-spin-ns adds however many loop turns fit in the time (fewer
    /// under Valgrind, which runs code ~50 times slower). 0 adds nothing.
    #[arg(long, value_name = "ROUNDS", default_value_t = 0, value_parser = RangedI64ValueParser::<u64>::new().range(0..=MAX_DEBUG_WORK as i64), allow_negative_numbers = true, help_heading = TESTING_AIDS)]
    pub debug_work: u64,

    /// Exactly-once INCR: on records each executed (client, seq) and answers a retry from it.
    ///
    /// on: a retried INCR (same client, same seq, after a broken connection) is answered with
    /// the value it got the first time and not run again; what the server can no longer tell
    /// it refuses (TOOOLD, CONFLICT, EXPIRED; docs/protocol.md). off: HELLO answers
    /// "unrecorded" and every INCR runs, retry or not, as a plain Redis INCR does: the lesson
    /// of what a retry costs without deduplication. Counters are shared either way.
    #[arg(long, value_enum, default_value_t = Dedup::On)]
    pub dedup: Dedup,

    /// With --dedup on: the most client sessions remembered (8 to 1048576).
    ///
    /// The table is fixed at start: clients hash to buckets of 8, and a new client in a full
    /// bucket evicts that bucket's least recently used one, whose next request is refused
    /// EXPIRED. Rounded down to a multiple of 8. Memory: 24 + 24 x --dedup-window bytes each.
    #[arg(long, value_name = "N", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(WAYS as i64..=i64::from(MAX_CLIENTS)), allow_negative_numbers = true)]
    pub dedup_clients: u32,

    /// With --dedup on: the replies remembered per client, by sequence number (1 to 4096).
    ///
    /// A retry more than this many seqs behind the client's newest is refused TOOOLD, as is
    /// one below the `low` the client itself sent. A client with more requests in flight than
    /// this cannot retry the oldest safely.
    #[arg(long, value_name = "N", default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_WINDOW)), allow_negative_numbers = true)]
    pub dedup_window: u32,

    /// The most counters INCR can create (8 to 1048576).
    ///
    /// Keys hash to buckets of 8; a new key in a full bucket is refused KEYSFULL (counters are
    /// data and never evicted). Rounded down to a multiple of 8; 80 bytes each.
    #[arg(long, value_name = "N", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(WAYS as i64..=i64::from(MAX_COUNTER_KEYS)), allow_negative_numbers = true)]
    pub counter_keys: u32,

    /// Hold the session table's lock this long inside every executed INCR (0 to 1s).
    ///
    /// Between writing the counter and writing the INCR's reply record: the window in which
    /// a test SIGKILLs a fork child or prefork worker to show that the robust lock and the
    /// table's journal leave the INCR done exactly once. Every INCR and GET of the server
    /// waits behind it.
    #[arg(long, value_name = "NS", default_value_t = 0, value_parser = RangedI64ValueParser::<u64>::new().range(0..=MAX_DEBUG_SPIN_NS as i64), allow_negative_numbers = true, help_heading = TESTING_AIDS)]
    pub debug_lock_hold_ns: u64,
}

/// `--dedup`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Dedup {
    /// Record executed INCRs; answer retries from the records.
    On,
    /// Record nothing; every retry runs again.
    Off,
}

/// The help heading of flags that exist for the lab's tests and gates, not for someone
/// running a server: they are listed apart so that nobody mistakes them for tuning knobs.
pub const TESTING_AIDS: &str = "Testing aids";

/// The largest `--backlog`: for most of Linux's history the accept queue's length was a
/// 16-bit field and net.core.somaxconn could not exceed 65535; a larger request is a typo,
/// not a plan.
pub const MAX_BACKLOG: i64 = 65535;

/// The largest `--debug-spin-ns`: one second per request is already a server that does nothing.
pub const MAX_DEBUG_SPIN_NS: u64 = 1_000_000_000;

/// The largest `--debug-work`: about a second of CPU per request on this kind of machine.
pub const MAX_DEBUG_WORK: u64 = 1_000_000_000;

/// What every server sets up for the whole process before its model starts (see
/// [`crate::main_with`]).
#[derive(Debug, Clone, Copy)]
pub struct ProcessSettings {
    /// `--verbose`.
    pub verbose: bool,
    /// `--debug-spin-ns`.
    pub debug_spin_ns: u64,
    /// `--debug-work`.
    pub debug_work: u64,
}

impl ServerArgs {
    /// The settings that hold for the whole process, whichever model runs.
    pub fn process_settings(&self) -> ProcessSettings {
        ProcessSettings {
            verbose: self.verbose,
            debug_spin_ns: self.debug_spin_ns,
            debug_work: self.debug_work,
        }
    }

    /// The session table's settings (`--dedup`, `--dedup-clients`, `--dedup-window`,
    /// `--counter-keys`, `--debug-lock-hold-ns`).
    pub fn sessions(&self) -> session::Config {
        session::Config {
            dedup: self.dedup == Dedup::On,
            clients: self.dedup_clients,
            window: self.dedup_window,
            counter_keys: self.counter_keys,
            debug_lock_hold: Duration::from_nanos(self.debug_lock_hold_ns),
        }
    }

    /// Checks what no single flag's range can: that the session table the flags ask for
    /// together stays within [`session::MAX_TABLE_BYTES`]. A binary turns the error into a
    /// usage error (`clap::Error`), so it reads like any other bad flag.
    pub fn check(&self) -> Result<(), String> {
        self.sessions().table_bytes().map(drop)
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
    let range = format!("a byte count from {MIN_MAX_FRAME} to {}", u32::MAX);
    let n: usize = s.parse().map_err(|_| format!("'{s}' is not {range}"))?;
    if !(MIN_MAX_FRAME..=u32::MAX as usize).contains(&n) {
        return Err(format!("must be {range}"));
    }
    Ok(n)
}

/// The smallest `--stack-size`, for server-thread's connection and pool threads.
///
/// Measured: the deepest stack a connection handler reached was 24 KiB, in the release and
/// the debug build alike (`scripts/thread-memory.py`, runs `results/2026-12-07-thread-memory`
/// and `results/2026-12-07-thread-memory-debug`: the resident pages of a `--pool 1` worker's
/// stack after every protocol's worst cases: 1 MB echoes, JSON nested to serde_json's depth
/// limit, fatal errors closed with `linger_close`, whose drain buffer alone is 16 KiB on the
/// stack). 64 KiB leaves more than twice that. Below it, glibc and std silently raise the size
/// to their own minimum anyway (glibc's PTHREAD_STACK_MIN, 16 KiB on x86-64, plus
/// thread-local storage), which leaves that deepest path little room or none, and a stack
/// overflow aborts the whole process, every connection with it.
pub const MIN_STACK_SIZE: usize = 64 << 10;

/// The largest `--stack-size`. A stack is address space, touched only as deep as it is used,
/// but every thread reserves all of it: a thousand connections at 1 GiB each is already a
/// terabyte, and a single larger reservation than RAM plus swap fails under Linux's default
/// overcommit heuristic, so every connection would be refused.
pub const MAX_STACK_SIZE: usize = 1 << 30;

/// `--stack-size`: a size ([`parse_size`]) from [`MIN_STACK_SIZE`] to [`MAX_STACK_SIZE`].
pub fn parse_stack_size(s: &str) -> Result<usize, String> {
    let n = parse_size(s)?;
    if n < MIN_STACK_SIZE {
        return Err(format!(
            "'{s}' is too small: at least 64K (a connection handler's stack was measured at up to 24K; a thread whose stack overflows aborts the whole server)"
        ));
    }
    if n > MAX_STACK_SIZE {
        return Err(format!(
            "'{s}' is too large: at most 1G (each thread reserves its whole stack)"
        ));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_sizes() {
        assert!(parse_stack_size("1").is_err());
        assert!(parse_stack_size("63K").is_err());
        assert_eq!(parse_stack_size("64K"), Ok(65536));
        assert_eq!(parse_stack_size("1G"), Ok(1 << 30));
        assert!(parse_stack_size("2G").is_err());
    }

    #[test]
    fn max_frame_bounds() {
        assert!(parse_max_frame("255").is_err());
        assert_eq!(parse_max_frame("1048576"), Ok(1048576));
        assert!(parse_max_frame("99999999999").is_err());
    }
}
