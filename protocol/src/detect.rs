//! Which wire format a connection speaks, told from its first byte: what a server started with
//! `--protocol auto` (the default) does, so that `redis-cli` and `loadgen` both work against a
//! server started with no flags.
//!
//! Binary v1 and RESP differ in their first byte. A binary frame opens with its 4-byte
//! big-endian length, so every frame shorter than 16 MiB (length at most `0x00ff_ffff`) starts
//! with `0x00`; a RESP request opens with `*` (an array: what every client library sends) or
//! with a letter (an inline command, typed into telnet). JSON cannot be told apart: its length
//! is little-endian, so its first byte is the length's *low* byte, which can be anything,
//! `0x00`, `*` and letters included. JSON therefore stays explicit (`--protocol json`).
//!
//! The rule ([`detect`]): `*` or an ASCII letter means RESP, any other byte means binary.
//! It is exact for binary frames shorter than 672 MiB: a binary frame's first byte is its
//! length divided by 2^24, which is `*` (`0x2a`) only for lengths `0x2a00_0000..=0x2aff_ffff`
//! (704 643 072 to 721 420 287 bytes) and a letter only from `0x4100_0000` (1 090 519 040
//! bytes, `A`) up. So with `--max-frame` below 704 643 072 (the default is 1 MiB) no valid
//! binary frame is taken for RESP; above it, frames of those lengths are, and such a client
//! must start the server with `--protocol binary`. (Frames of 16 MiB up to 672 MiB start with
//! `0x01..=0x29`, which is not RESP's, so auto still serves them as binary.)
//!
//! The decision is made once per connection; afterwards the connection's codec is an ordinary
//! `&dyn Codec` and costs what it cost before. [`ServerCodecs`] holds the three codecs a server
//! needs and picks one.

use std::fmt;
use std::str::FromStr;

use crate::binary::BinaryCodec;
use crate::json::JsonCodec;
use crate::resp::RespCodec;
use crate::{Codec, Protocol};

/// The first binary frame length whose first byte is `*`, which auto reads as RESP:
/// `0x2a00_0000` (672 MiB). Below it, auto never mistakes a binary frame for RESP.
pub const FIRST_AMBIGUOUS_LENGTH: usize = 0x2a00_0000;

/// The protocol a connection whose first byte is `first` speaks, by the rule in the module
/// docs: `*` or an ASCII letter is RESP, anything else binary.
///
/// Anything else is binary rather than "unknown" because binary is what echolab's own client
/// (`loadgen`) speaks, and because the binary decoder refuses garbage from its four header
/// bytes alone: a stray TLS handshake (`0x16`) gets one ERROR reply and a close, as it did when
/// binary was the only default.
pub fn detect(first: u8) -> Protocol {
    if first == b'*' || first.is_ascii_alphabetic() {
        Protocol::Resp
    } else {
        Protocol::Binary
    }
}

/// Whether `prefix`, the first bytes of a connection, looks like a RESP client: `*` and a
/// digit or `-` (an array count), or two letters (an inline command). A server in explicit
/// binary or JSON mode uses it, after the first request failed to decode, to suggest
/// `--protocol resp`.
///
/// It asks for two bytes where [`detect`] needs one because it also serves JSON, whose first
/// byte alone is often `*` or a letter (a 42-byte body starts with `*`); a JSON length below
/// 16 MiB has `0x00` in its top byte, so two letters in a row are rare in JSON and common in
/// RESP (`PING`).
pub fn looks_like_resp(prefix: &[u8]) -> bool {
    match prefix {
        [b'*', second, ..] => second.is_ascii_digit() || *second == b'-',
        [first, second, ..] => first.is_ascii_alphabetic() && second.is_ascii_alphabetic(),
        _ => false,
    }
}

/// What a server speaks: one protocol, or whichever each connection's first byte says.
/// Servers take it as `--protocol auto|binary|resp|json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServerProtocol {
    /// Binary or RESP, decided per connection by [`detect`].
    Auto,
    /// Only this protocol, on every connection.
    Fixed(Protocol),
}

impl ServerProtocol {
    /// Every choice, in the order the docs list them.
    pub const ALL: [ServerProtocol; 4] = [
        ServerProtocol::Auto,
        ServerProtocol::Fixed(Protocol::Binary),
        ServerProtocol::Fixed(Protocol::Resp),
        ServerProtocol::Fixed(Protocol::Json),
    ];

    /// The name used on the command line and in the statistics report.
    pub fn name(self) -> &'static str {
        match self {
            ServerProtocol::Auto => "auto",
            ServerProtocol::Fixed(p) => p.name(),
        }
    }

    /// The codecs a server with this setting needs, refusing frames (or RESP bulk strings)
    /// longer than `max_frame`.
    pub fn codecs(self, max_frame: usize) -> ServerCodecs {
        ServerCodecs::new(self, max_frame)
    }
}

impl fmt::Display for ServerProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ServerProtocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ServerProtocol::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown protocol '{s}' (expected auto, binary, resp or json)"))
    }
}

/// The codecs of one server, built once at start-up and shared by every connection (and, in
/// the forking models, inherited by every child).
///
/// A connection asks for its codec once, when its first byte has arrived
/// ([`ServerCodecs::for_first_byte`]), and keeps the `&dyn Codec` it gets: requests cost the
/// same dynamic call as with a fixed protocol, and nothing is decided per request.
#[derive(Debug, Clone)]
pub struct ServerCodecs {
    setting: ServerProtocol,
    binary: BinaryCodec,
    resp: RespCodec,
    json: JsonCodec,
}

impl ServerCodecs {
    /// The codecs for `setting`, with `max_frame` as every codec's limit. All three are built
    /// whatever the setting: each is one integer, and a fixed server simply never asks for
    /// the other two.
    pub fn new(setting: ServerProtocol, max_frame: usize) -> ServerCodecs {
        ServerCodecs {
            setting,
            binary: BinaryCodec::new(max_frame),
            resp: RespCodec::new(max_frame),
            json: JsonCodec::new(max_frame),
        }
    }

    /// What the server was started with.
    pub fn setting(&self) -> ServerProtocol {
        self.setting
    }

    /// The protocol of a connection whose first byte is `first`: the fixed one, or [`detect`]'s
    /// answer under auto.
    pub fn protocol_for(&self, first: u8) -> Protocol {
        match self.setting {
            ServerProtocol::Fixed(p) => p,
            ServerProtocol::Auto => detect(first),
        }
    }

    /// The codec for `protocol`.
    pub fn codec(&self, protocol: Protocol) -> &dyn Codec {
        match protocol {
            Protocol::Binary => &self.binary,
            Protocol::Resp => &self.resp,
            Protocol::Json => &self.json,
        }
    }

    /// The codec for a connection whose first byte is `first`.
    pub fn for_first_byte(&self, first: u8) -> &dyn Codec {
        self.codec(self.protocol_for(first))
    }

    /// The codec for a reply sent before the client has said anything: the "server busy"
    /// refusal at accept, mostly. A fixed server uses its protocol. Under auto there is no
    /// byte to go by, and the accept loop must not wait for one, so it is binary's: binary is
    /// what loadgen speaks, and loadgen is the client that drives a server to its connection
    /// limit and counts the refusals (a binary ERROR reply is what it recognises as one). A
    /// RESP client refused this way reports a protocol error instead of "server busy"; either
    /// way the connection is closed.
    pub fn before_first_byte(&self) -> &dyn Codec {
        match self.setting {
            ServerProtocol::Fixed(p) => self.codec(p),
            ServerProtocol::Auto => &self.binary,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Command, Decoded, Request};

    /// Every byte value falls in exactly one class, and each class goes where the docs say.
    #[test]
    fn every_first_byte_has_a_protocol() {
        for b in 0..=u8::MAX {
            let want = match b {
                b'*' | b'A'..=b'Z' | b'a'..=b'z' => Protocol::Resp,
                _ => Protocol::Binary,
            };
            assert_eq!(detect(b), want, "first byte 0x{b:02x}");
        }
        // The classes by name: binary's usual byte, RESP's array and inline starts.
        assert_eq!(detect(0x00), Protocol::Binary);
        assert_eq!(detect(b'*'), Protocol::Resp);
        assert_eq!(detect(b'P'), Protocol::Resp);
        assert_eq!(detect(b'p'), Protocol::Resp);
        // Not RESP: a digit, the other RESP type bytes (replies, never requests), a blank
        // line before a command, a TLS handshake, a byte above ASCII.
        for b in [b'1', b'$', b'+', b'-', b'\r', b'\n', b' ', 0x16, 0x80, 0xff] {
            assert_eq!(detect(b), Protocol::Binary, "first byte 0x{b:02x}");
        }
    }

    /// What real clients send first: `redis-cli`, `redis-benchmark`'s inline PING, and
    /// loadgen's binary frames, including the largest a default server accepts.
    #[test]
    fn real_first_requests() {
        assert_eq!(detect(b"*1\r\n$4\r\nPING\r\n"[0]), Protocol::Resp);
        assert_eq!(detect(b"PING\r\n"[0]), Protocol::Resp);
        let binary = crate::Protocol::Binary.codec(crate::DEFAULT_MAX_FRAME);
        let payload = vec![7u8; crate::DEFAULT_MAX_FRAME - 16];
        for payload in [&b""[..], b"hi", &payload] {
            let mut wire = Vec::new();
            let request = Request {
                id: Some(u64::MAX),
                command: Command::Echo,
                payload,
            };
            binary.encode_request(&request, &mut wire).expect("fits");
            assert_eq!(detect(wire[0]), Protocol::Binary, "{} bytes", wire.len());
        }
    }

    /// The binary length boundaries of the module docs: the first byte of a frame of length
    /// `len` is `len >> 24`.
    #[test]
    fn where_binary_lengths_collide_with_resp() {
        let first = |len: u32| len.to_be_bytes()[0];
        // Below 16 MiB, always 0x00; 16 MiB itself is the first 0x01.
        assert_eq!(first(0x00ff_ffff), 0x00);
        assert_eq!(first(16 << 20), 0x01);
        // Up to the byte before `*`, binary.
        assert_eq!(
            detect(first(FIRST_AMBIGUOUS_LENGTH as u32 - 1)),
            Protocol::Binary
        );
        // `*`: 704 643 072 ..= 721 420 287, taken for RESP.
        assert_eq!(FIRST_AMBIGUOUS_LENGTH, 704_643_072);
        assert_eq!(first(704_643_072), b'*');
        assert_eq!(first(721_420_287), b'*');
        assert_eq!(detect(first(704_643_072)), Protocol::Resp);
        assert_eq!(detect(first(721_420_288)), Protocol::Binary);
        // Letters: from 'A' at 1 090 519 040.
        assert_eq!(detect(first(1_090_519_039)), Protocol::Binary);
        assert_eq!(first(1_090_519_040), b'A');
        assert_eq!(detect(first(1_090_519_040)), Protocol::Resp);
        assert_eq!(first(u32::MAX), 0xff);
        assert_eq!(detect(first(u32::MAX)), Protocol::Binary);
        // Every length below FIRST_AMBIGUOUS_LENGTH is binary (sampled every MiB).
        for len in (1..FIRST_AMBIGUOUS_LENGTH as u32).step_by(1 << 20) {
            assert_eq!(detect(first(len)), Protocol::Binary, "length {len}");
        }
    }

    #[test]
    fn looks_like_resp_needs_two_bytes_of_evidence() {
        assert!(looks_like_resp(b"*1\r\n$4\r\nPING\r\n"));
        assert!(looks_like_resp(b"*-1\r\n"));
        assert!(looks_like_resp(b"PING\r\n"));
        assert!(looks_like_resp(b"config get save\r\n"));
        // One byte is not enough to say.
        assert!(!looks_like_resp(b"*"));
        assert!(!looks_like_resp(b"P"));
        assert!(!looks_like_resp(b""));
        // A JSON frame of 42 bytes starts `*` 0x00; of 80 bytes, `P` 0x00: not RESP.
        assert!(!looks_like_resp(&42u32.to_le_bytes()));
        assert!(!looks_like_resp(&80u32.to_le_bytes()));
        // A binary frame.
        assert!(!looks_like_resp(b"\x00\x00\x00\x05\x01\x01\x00hi"));
    }

    #[test]
    fn names_parse_and_print() {
        for p in ServerProtocol::ALL {
            assert_eq!(p.name().parse::<ServerProtocol>(), Ok(p));
            assert_eq!(p.to_string(), p.name());
        }
        assert_eq!("AUTO".parse(), Ok(ServerProtocol::Auto));
        assert_eq!("resp".parse(), Ok(ServerProtocol::Fixed(Protocol::Resp)));
        let err = "xml".parse::<ServerProtocol>().unwrap_err();
        assert!(err.contains("auto, binary, resp or json"), "{err}");
    }

    #[test]
    fn fixed_servers_ignore_the_first_byte() {
        for p in Protocol::ALL {
            let codecs = ServerProtocol::Fixed(p).codecs(1024);
            for b in [0x00, b'*', b'P', 0xff] {
                assert_eq!(codecs.protocol_for(b), p);
                assert_eq!(codecs.for_first_byte(b).protocol(), p);
            }
            assert_eq!(codecs.before_first_byte().protocol(), p);
            assert_eq!(codecs.setting(), ServerProtocol::Fixed(p));
        }
    }

    /// Under auto, each connection gets the codec its first byte names, and each codec then
    /// decodes that connection's requests as a fixed server's would.
    #[test]
    fn auto_picks_a_working_codec_per_connection() {
        let codecs = ServerProtocol::Auto.codecs(1024);
        assert_eq!(codecs.before_first_byte().protocol(), Protocol::Binary);
        assert_eq!(codecs.codec(Protocol::Json).protocol(), Protocol::Json);
        assert_eq!(codecs.codec(Protocol::Json).max_frame(), 1024);

        let resp = b"*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n";
        let codec = codecs.for_first_byte(resp[0]);
        assert_eq!(codec.protocol(), Protocol::Resp);
        let Ok(Decoded::Complete { message, len }) = codec.decode_request(resp) else {
            panic!("RESP ECHO does not decode");
        };
        assert_eq!((message.payload, len), (&b"hi"[..], resp.len()));

        let binary = b"\x00\x00\x00\x05\x01\x01\x00hi";
        let codec = codecs.for_first_byte(binary[0]);
        assert_eq!(codec.protocol(), Protocol::Binary);
        let Ok(Decoded::Complete { message, .. }) = codec.decode_request(binary) else {
            panic!("binary ECHO does not decode");
        };
        assert_eq!((message.id, message.payload), (Some(1), &b"hi"[..]));
    }
}
