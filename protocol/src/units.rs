//! Human units on the command line (`500ms`, `64K`), parsed the same way by every echolab
//! binary: the servers and loadgen share these so a flag means one thing everywhere.
//!
//! They live in the protocol crate only because it is the one crate everything depends on;
//! like the codecs they are pure functions of their input.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

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

/// What `--addr` wants, said in every refusal.
const ADDR_EXPECTED: &str = "expected HOST:PORT, e.g. 127.0.0.1:7000, [::1]:7000 or localhost:7000 (port 0 picks a free port)";

/// `--addr` of every server and of loadgen: an IP address and port, or a host name and port
/// resolved with getaddrinfo(3) (std's `ToSocketAddrs`), taking its first IPv4 address (or
/// its first address, if it has no IPv4 one).
///
/// The one function in this crate that is not a pure function of its input: a name is looked
/// up (in /etc/hosts for `localhost`). It still touches no socket.
///
/// Taking one address, rather than listening on all of them as nginx does for a name, keeps
/// one listener per server, which the models (and prefork's reuseport sockets) assume.
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    // An address or a name with no port: say so, rather than let the resolver fail on it.
    let unbracketed = s.trim_start_matches('[').trim_end_matches(']');
    if unbracketed.parse::<IpAddr>().is_ok() || !s.contains(':') {
        return Err(format!("no port in '{s}'; {ADDR_EXPECTED}"));
    }
    match s.to_socket_addrs() {
        // An IPv4 address first: `localhost` lists ::1 first on some machines, and a server
        // on one loopback address and a client on the other would never meet.
        Ok(addrs) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            (addrs.iter().find(|a| a.is_ipv4()))
                .or(addrs.first())
                .copied()
                .ok_or_else(|| format!("'{s}' resolves to no address; {ADDR_EXPECTED}"))
        }
        Err(e) => Err(format!("cannot resolve '{s}': {e}; {ADDR_EXPECTED}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            parse_addr("127.0.0.1:7000"),
            Ok(([127, 0, 0, 1], 7000).into())
        );
        assert_eq!(
            parse_addr("[::1]:0"),
            Ok((std::net::Ipv6Addr::LOCALHOST, 0).into())
        );
        let local = parse_addr("localhost:7000").expect("localhost resolves");
        assert!(local.ip().is_loopback() && local.port() == 7000, "{local}");
        for no_port in ["127.0.0.1", "::1", "[::1]", "localhost", "nonsense"] {
            let e = parse_addr(no_port).expect_err(no_port);
            assert!(e.contains("no port") && e.contains("HOST:PORT"), "{e}");
        }
        let e = parse_addr("localhost:http").expect_err("a service name is not a port");
        assert!(e.contains("HOST:PORT"), "{e}");
    }

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
}
