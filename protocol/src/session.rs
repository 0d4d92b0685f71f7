//! Client sessions: what a request id must mean for a retry to be safe.
//!
//! When a connection breaks with a request unanswered, the client cannot tell which half of
//! the round trip was lost. If the request never reached the server, not sending it again
//! loses it; if the *reply* was lost, the server already ran it, and sending it again runs it
//! twice. An echo does not care, an `INCR` does. The book's cure (and Raft's client sessions,
//! Kafka's idempotent producer, HTTP's idempotency keys) is to make the second run impossible
//! rather than unlikely:
//!
//! 1. The client picks a **client id** once and keeps it across reconnects. On every new
//!    connection it says `HELLO client sent` first (binary op `0x10`), where `sent` is how many
//!    sequence numbers it has used so far (0 for a brand-new client).
//! 2. Within the session a request's id **is** its sequence number: 1, 2, 3, ... A retry
//!    carries the same number; a new request never reuses one.
//! 3. The server records each executed `(client, seq)` with its reply. A repeated one is
//!    answered from the record (a *replay*), never executed again.
//! 4. Memory is finite, so each request also carries `low`, the lowest sequence number
//!    whose reply the client has not received yet (Raft dissertation §6.3): every record below
//!    it may be forgotten, the client will never ask again. The server also keeps at most a
//!    fixed window of records per client and a fixed number of clients.
//!
//! What the server cannot answer it refuses, loudly, instead of running the request a second
//! time. The refusals are ERROR replies whose message starts with a code word (as Redis's
//! `WRONGTYPE` does), so a client can act on them without parsing prose:
//!
//! | code | meaning | what the client knows |
//! |---|---|---|
//! | [`TOO_OLD`] | the seq is below what the server still remembers for this client | nothing: it may or may not have run |
//! | [`CONFLICT`] | the same `(client, seq)` arrived before with different content | the new request did not run |
//! | [`EXPIRED`] | HELLO: the client is unknown (evicted) but says it used seqs before; INCR: the connection's session was evicted, or replaced by a new one under the same id | this request did not run; earlier ones may have: start a new session |
//!
//! This module holds only what both sides must agree on; the table itself is the server's
//! (`servers/src/session.rs`), the retry policy the load generator's.

/// The longest counter name `INCR` and `GET` accept, in bytes. The server stores names
/// inline in a fixed-size table, so a limit is part of the contract, not a detail.
pub const MAX_KEY: usize = 64;

/// ERROR code: the seq is older than what the server still remembers for this client (below
/// the client's own `low`, or pushed out of the per-client window). The request was not run
/// now; whether it ran before, the server can no longer say.
pub const TOO_OLD: &str = "TOOOLD";

/// ERROR code: this `(client, seq)` was executed before with different content (another key
/// or amount). A client bug, never a retry: the request was not run.
pub const CONFLICT: &str = "CONFLICT";

/// ERROR code: the server no longer has this session. On HELLO: it does not know the client
/// (evicted, or the server restarted), yet the client says it has used sequence numbers. On
/// INCR: the session this connection's HELLO opened was evicted since, or the same client id
/// opened a new session (`HELLO` with `sent` 0). The request was not run; earlier ones may or
/// may not have: the client must start a new session with a new client id.
pub const EXPIRED: &str = "EXPIRED";

/// ERROR code: a session request (`INCR` with a nonzero seq) on a connection that has not
/// said `HELLO`.
pub const NO_SESSION: &str = "NOSESSION";

/// ERROR code: the server's counter table has no room for another key.
pub const KEYS_FULL: &str = "KEYSFULL";

/// What `HELLO` answers, as the reply's payload.
pub mod hello {
    /// The server did not know the client and opened a new session.
    pub const NEW: &str = "new";
    /// The server knew the client, which says it has used seqs: its records are still
    /// there. (A known client that says `sent` 0 is a new incarnation of that id, and gets
    /// [`NEW`]: a fresh session, the old records dropped.)
    pub const RESUMED: &str = "resumed";
    /// The server was started with `--dedup off`: it accepts the session and records
    /// nothing, so every retry runs again. That is the lesson.
    pub const UNRECORDED: &str = "unrecorded";
    /// A HELLO with client 0 agreed a record format and opened no session.
    pub const AGREED: &str = "agreed";
}

/// The refusals a session can get, read back from an ERROR reply's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// [`TOO_OLD`].
    TooOld,
    /// [`CONFLICT`].
    Conflict,
    /// [`EXPIRED`].
    Expired,
    /// [`NO_SESSION`].
    NoSession,
    /// [`KEYS_FULL`].
    KeysFull,
}

impl Refusal {
    /// The code word the message starts with.
    pub fn code(self) -> &'static str {
        match self {
            Refusal::TooOld => TOO_OLD,
            Refusal::Conflict => CONFLICT,
            Refusal::Expired => EXPIRED,
            Refusal::NoSession => NO_SESSION,
            Refusal::KeysFull => KEYS_FULL,
        }
    }

    /// Which refusal an ERROR reply's payload is, if it is one (the code word, then a space
    /// or the end).
    pub fn of_message(message: &[u8]) -> Option<Refusal> {
        let word = message.split(|&b| b == b' ').next()?;
        [
            Refusal::TooOld,
            Refusal::Conflict,
            Refusal::Expired,
            Refusal::NoSession,
            Refusal::KeysFull,
        ]
        .into_iter()
        .find(|r| r.code().as_bytes() == word)
    }

    /// The full message: the code word, then `detail`.
    pub fn message(self, detail: &str) -> String {
        format!("{} {detail}", self.code())
    }
}

/// Parses the decimal value an `INCR` or `GET` reply carries.
pub fn parse_value(payload: &[u8]) -> Option<u64> {
    std::str::from_utf8(payload).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_round_trip_through_their_message() {
        for r in [
            Refusal::TooOld,
            Refusal::Conflict,
            Refusal::Expired,
            Refusal::NoSession,
            Refusal::KeysFull,
        ] {
            let m = r.message("client 7 seq 3");
            assert_eq!(Refusal::of_message(m.as_bytes()), Some(r), "{m}");
        }
        assert_eq!(Refusal::of_message(b"TOOOLDER x"), None);
        assert_eq!(Refusal::of_message(b"unknown op 0x09"), None);
        assert_eq!(Refusal::of_message(b""), None);
        assert_eq!(
            Refusal::of_message(TOO_OLD.as_bytes()),
            Some(Refusal::TooOld)
        );
    }

    #[test]
    fn values_are_decimal_text() {
        assert_eq!(parse_value(b"0"), Some(0));
        assert_eq!(parse_value(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_value(b"-1"), None);
        assert_eq!(parse_value(b"1 "), None);
    }
}
