//! A subset of Redis's RESP2: enough for `redis-cli ping` and `redis-benchmark -t ping` to drive
//! every echolab server, and for a text protocol to be measured against a binary one.
//!
//! Requests come in two shapes, exactly as Redis accepts them:
//!
//! ```text
//! *2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n      an array of bulk strings (what every client library sends)
//! PING\r\n                              an inline command (what a person types into telnet)
//! ```
//!
//! Commands (case-insensitive): `PING` -> `+PONG`, `PING msg` -> `$3\r\nmsg`, `ECHO msg` -> the
//! same, and `CONFIG GET pattern` -> the matching name/value pairs of [`CONFIG`] (an empty
//! array when none matches), which is what `redis-benchmark` asks before every run. Anything
//! else gets `-ERR unknown command 'name'`, a wrong argument count gets
//! `-ERR wrong number of arguments for 'cmd' command`, and the connection stays open.
//!
//! Unlike the binary protocol, RESP has no total length up front: an array header announces a
//! count, each bulk header a length, and the decoder walks them. Malformed headers are fatal
//! (`-ERR Protocol error: ...` and close, as Redis does) because once a count is wrong the
//! receiver cannot tell where the next command starts. Inline arguments are split on
//! whitespace; Redis's quoting rules (`"a b"`) are not implemented.

use crate::{Codec, Command, Decoded, Protocol, ProtocolError, Reply, Request, Response, Status};

/// The longest inline command or header line accepted without a line end (Redis's
/// `PROTO_INLINE_MAX_SIZE`, 64 KiB).
pub const MAX_INLINE: usize = 64 * 1024;

/// The largest array count accepted (Redis's historical limit of 1024 * 1024 elements).
pub const MAX_MULTIBULK: i64 = 1024 * 1024;

/// The settings `CONFIG GET` reports, as Redis names them. These two are what
/// `redis-benchmark` asks for before every run: without a `[name, value]` pair for each it
/// prints "WARNING: Could not fetch server CONFIG" (an empty array is not enough), and shows
/// them as "host configuration" in its full report. The values are true of echolab, which
/// keeps nothing on disk: `save` is empty (no snapshots, as `redis-server --save ''` reports)
/// and `appendonly` is `no`. Any other name is a setting echolab does not have, and gets the
/// empty array Redis gives an unknown name.
pub const CONFIG: &[(&str, &str)] = &[("save", ""), ("appendonly", "no")];

/// The RESP codec.
#[derive(Debug, Clone)]
pub struct RespCodec {
    max_frame: usize,
}

/// A command in flight through the parser: the first three arguments are kept (no valid
/// command has more: `CONFIG GET pattern` has three), the rest are only counted, so parsing
/// never allocates.
struct Args<'a> {
    first: [&'a [u8]; 3],
    count: usize,
}

impl<'a> Args<'a> {
    fn new() -> Self {
        Args {
            first: [&[], &[], &[]],
            count: 0,
        }
    }

    fn push(&mut self, arg: &'a [u8]) {
        if let Some(slot) = self.first.get_mut(self.count) {
            *slot = arg;
        }
        self.count += 1;
    }
}

/// Finds the CRLF-terminated line starting at `from`; `None` when it has not all arrived.
fn line(buf: &[u8], from: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(from..)?;
    let cr = rest.windows(2).position(|w| w == b"\r\n")?;
    Some((&rest[..cr], from + cr + 2))
}

/// Parses a decimal integer the way Redis's `string2ll` does: optional `-`, digits, no spaces.
fn parse_int(digits: &[u8]) -> Option<i64> {
    std::str::from_utf8(digits).ok()?.parse().ok()
}

impl RespCodec {
    /// A codec rejecting bulk strings longer than `max_frame`.
    pub fn new(max_frame: usize) -> Self {
        RespCodec { max_frame }
    }

    /// The most a partial command may occupy before the connection is cut: one maximal bulk
    /// plus headers. Without it a client could announce a million elements and make the
    /// server buffer them all.
    fn buffer_limit(&self) -> usize {
        self.max_frame + MAX_INLINE
    }

    /// `Incomplete`, unless what is buffered so far already exceeds the limit.
    fn incomplete<T>(&self, buffered: usize) -> Result<Decoded<T>, ProtocolError> {
        if buffered > self.buffer_limit() {
            Err(ProtocolError::CommandTooLarge {
                max: self.max_frame,
            })
        } else {
            Ok(Decoded::Incomplete)
        }
    }

    /// Reads one `$<len>\r\n<bytes>\r\n` starting at `pos`. `Ok(None)` means "need more".
    fn bulk<'a>(
        &self,
        buf: &'a [u8],
        pos: usize,
    ) -> Result<Option<(&'a [u8], usize)>, ProtocolError> {
        let Some(&first) = buf.get(pos) else {
            return Ok(None);
        };
        if first != b'$' {
            return Err(ProtocolError::ExpectedBulk(first));
        }
        let Some((digits, start)) = line(buf, pos + 1) else {
            if buf.len() - pos > MAX_INLINE {
                return Err(ProtocolError::LineTooLong { what: "bulk count" });
            }
            return Ok(None);
        };
        let len = match parse_int(digits) {
            Some(n) if n >= 0 && n as u64 <= self.max_frame as u64 => n as usize,
            _ => return Err(ProtocolError::InvalidBulkLength),
        };
        let Some(end) = buf.get(start..start + len + 2) else {
            return Ok(None);
        };
        if &end[len..] != b"\r\n" {
            return Err(ProtocolError::MissingCrlf);
        }
        Ok(Some((&end[..len], start + len + 2)))
    }

    /// Parses `*<n>\r\n` and `n` bulk strings at the start of `buf`. `Ok(None)`: need more.
    fn multibulk<'a>(&self, buf: &'a [u8]) -> Result<Option<(Args<'a>, usize)>, ProtocolError> {
        let Some((digits, mut pos)) = line(buf, 1) else {
            if buf.len() > MAX_INLINE {
                return Err(ProtocolError::LineTooLong {
                    what: "multibulk count",
                });
            }
            return Ok(None);
        };
        let count = match parse_int(digits) {
            Some(n) if n <= MAX_MULTIBULK => n,
            _ => return Err(ProtocolError::InvalidMultibulkLength),
        };
        let mut args = Args::new();
        for _ in 0..count.max(0) {
            let Some((arg, next)) = self.bulk(buf, pos)? else {
                return Ok(None);
            };
            args.push(arg);
            pos = next;
        }
        Ok(Some((args, pos)))
    }

    /// Parses one inline command line at the start of `buf`. `Ok(None)`: need more.
    fn inline<'a>(&self, buf: &'a [u8]) -> Result<Option<(Args<'a>, usize)>, ProtocolError> {
        let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
            if buf.len() > MAX_INLINE {
                return Err(ProtocolError::LineTooLong {
                    what: "inline request",
                });
            }
            return Ok(None);
        };
        if nl > MAX_INLINE {
            return Err(ProtocolError::LineTooLong {
                what: "inline request",
            });
        }
        // Redis accepts a bare "\n" as the line end too, for hand-typed input.
        let line = buf[..nl].strip_suffix(b"\r").unwrap_or(&buf[..nl]);
        let mut args = Args::new();
        for word in line
            .split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty())
        {
            args.push(word);
        }
        Ok(Some((args, nl + 1)))
    }
}

/// Maps parsed arguments onto a request, or the (non-fatal) reason they are not one.
fn command<'a>(args: &Args<'a>) -> Result<Request<'a>, ProtocolError> {
    let [name, first, second] = args.first;
    let request = |command, payload| Request {
        id: None,
        command,
        payload,
    };
    if name.eq_ignore_ascii_case(b"ping") {
        match args.count {
            1 => Ok(request(Command::Ping, &[])),
            // PING with a message is ECHO by another name.
            2 => Ok(request(Command::Echo, first)),
            _ => Err(ProtocolError::WrongArity("ping")),
        }
    } else if name.eq_ignore_ascii_case(b"echo") {
        match args.count {
            2 => Ok(request(Command::Echo, first)),
            _ => Err(ProtocolError::WrongArity("echo")),
        }
    } else if name.eq_ignore_ascii_case(b"config") {
        // Redis's wording for each mistake. Only GET exists here: SET, RESETSTAT and the
        // rest would change settings echolab takes from its command line.
        match args.count {
            1 => Err(ProtocolError::WrongArity("config")),
            _ if !first.eq_ignore_ascii_case(b"get") => Err(ProtocolError::UnknownSubcommand {
                command: "CONFIG",
                name: String::from_utf8_lossy(first).into_owned(),
            }),
            // One pattern, as Redis before 7.0 took; 7.0 takes several, but redis-benchmark
            // sends one per command, and keeping one keeps the parser free of allocation.
            3 => Ok(request(Command::ConfigGet, second)),
            _ => Err(ProtocolError::WrongArity("config|get")),
        }
    } else {
        Err(ProtocolError::UnknownCommand(
            String::from_utf8_lossy(name).into_owned(),
        ))
    }
}

/// Whether `name` matches the glob `pattern`, ignoring ASCII case, as `CONFIG GET` matches
/// setting names in Redis (`stringmatchlen` with `nocase`). `*` matches any run of bytes and
/// `?` any one byte; Redis's `[...]` classes and `\` escapes are not implemented (no setting
/// name here needs them), so those bytes match themselves.
fn glob_matches(pattern: &[u8], name: &[u8]) -> bool {
    // The classic backtracking match: on a mismatch, let the most recent `*` swallow one more
    // byte and try again. Linear in practice, and at worst pattern x name, both short.
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == b'?' || c.eq_ignore_ascii_case(&name[n]) => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    star = Some((sp, sn + 1));
                    p = sp + 1;
                    n = sn + 1;
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Appends the `CONFIG GET pattern` reply: an array of name/value bulk strings, one pair per
/// setting of [`CONFIG`] that matches, or `*0` when none does. Like Redis 7, a pattern without
/// wildcards is answered under the name as the client wrote it (`CONFIG GET SAVE` answers
/// `SAVE`), a pattern with them under the settings' own names.
fn put_config(out: &mut Vec<u8>, pattern: &[u8]) {
    let literal = !pattern.iter().any(|&b| b == b'*' || b == b'?');
    let matching = CONFIG
        .iter()
        .filter(|(name, _)| glob_matches(pattern, name.as_bytes()));
    out.push(b'*');
    out.extend_from_slice(
        itoa::Buffer::new()
            .format(2 * matching.clone().count())
            .as_bytes(),
    );
    out.extend_from_slice(b"\r\n");
    for (name, value) in matching {
        put_bulk(out, if literal { pattern } else { name.as_bytes() });
        put_bulk(out, value.as_bytes());
    }
}

/// Appends `$<len>\r\n<bytes>\r\n`.
fn put_bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len() + 16);
    out.push(b'$');
    out.extend_from_slice(itoa::Buffer::new().format(bytes.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

impl Codec for RespCodec {
    fn protocol(&self) -> Protocol {
        Protocol::Resp
    }

    fn max_frame(&self) -> usize {
        self.max_frame
    }

    fn decode_request<'a>(&self, buf: &'a [u8]) -> Result<Decoded<Request<'a>>, ProtocolError> {
        // Empty commands (`*0`, `*-1`, blank inline lines) are skipped without a reply, as
        // Redis does; the loop walks past them to the next real command.
        let mut start = 0;
        loop {
            let rest = &buf[start..];
            let Some(&first) = rest.first() else {
                return self.incomplete(buf.len());
            };
            let parsed = if first == b'*' {
                self.multibulk(rest)?
            } else {
                self.inline(rest)?
            };
            let Some((args, used)) = parsed else {
                return self.incomplete(buf.len());
            };
            let len = start + used;
            if args.count == 0 {
                start = len;
                continue;
            }
            return Ok(match command(&args) {
                Ok(message) => Decoded::Complete { message, len },
                Err(error) => Decoded::Invalid {
                    id: None,
                    error,
                    len,
                },
            });
        }
    }

    fn encode_reply(&self, request: &Request<'_>, reply: Reply, out: &mut Vec<u8>) {
        match (request.command, reply) {
            (Command::Ping, Reply::Echo) => out.extend_from_slice(b"+PONG\r\n"),
            (Command::ConfigGet, _) => put_config(out, request.payload),
            (_, Reply::Echo) => put_bulk(out, request.payload),
            (_, Reply::Pi(value)) => put_bulk(out, value.to_string().as_bytes()),
            // Sessions are binary-only; these keep the reply well-formed RESP all the same.
            (_, Reply::Value(value)) => {
                out.push(b':');
                out.extend_from_slice(value.to_string().as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            (_, Reply::Word(word)) => {
                out.push(b'+');
                out.extend_from_slice(word.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            // Records are binary-only; a bulk string carries any bytes all the same.
            (_, Reply::Bytes(bytes)) => put_bulk(out, bytes),
        }
    }

    fn encode_error(&self, _id: Option<u64>, message: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(b"-ERR ");
        // A line break inside the message would end the reply early and desynchronise the
        // client, so it is flattened (Redis does the same to error strings).
        out.extend(
            message
                .bytes()
                .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
        out.extend_from_slice(b"\r\n");
    }

    fn encode_request(
        &self,
        request: &Request<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), ProtocolError> {
        match request.command {
            Command::Ping => out.extend_from_slice(b"*1\r\n$4\r\nPING\r\n"),
            Command::Echo => {
                if request.payload.len() > self.max_frame {
                    return Err(ProtocolError::FrameTooLarge {
                        len: request.payload.len() as u64,
                        max: self.max_frame,
                    });
                }
                out.extend_from_slice(b"*2\r\n$4\r\nECHO\r\n");
                put_bulk(out, request.payload);
            }
            Command::ConfigGet => {
                if request.payload.len() > self.max_frame {
                    return Err(ProtocolError::FrameTooLarge {
                        len: request.payload.len() as u64,
                        max: self.max_frame,
                    });
                }
                out.extend_from_slice(b"*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n");
                put_bulk(out, request.payload);
            }
            Command::Sleep { .. } | Command::Spin { .. } | Command::Pi { .. } => {
                return Err(ProtocolError::Unsupported {
                    protocol: Protocol::Resp,
                    what: "SLEEP, SPIN or pi",
                })
            }
            Command::Hello { .. } | Command::Incr { .. } | Command::Get => {
                return Err(ProtocolError::Unsupported {
                    protocol: Protocol::Resp,
                    what: "sessions (HELLO, INCR, GET)",
                })
            }
            Command::Record => {
                return Err(ProtocolError::Unsupported {
                    protocol: Protocol::Resp,
                    what: "records",
                })
            }
        }
        Ok(())
    }

    fn decode_response<'a>(&self, buf: &'a [u8]) -> Result<Decoded<Response<'a>>, ProtocolError> {
        let Some(&kind) = buf.first() else {
            return Ok(Decoded::Incomplete);
        };
        let simple = |status| -> Result<Decoded<Response<'a>>, ProtocolError> {
            match line(buf, 1) {
                Some((text, len)) => Ok(Decoded::Complete {
                    message: Response {
                        id: None,
                        status,
                        payload: text,
                    },
                    len,
                }),
                None if buf.len() > MAX_INLINE => Err(ProtocolError::LineTooLong {
                    what: "simple reply",
                }),
                None => Ok(Decoded::Incomplete),
            }
        };
        match kind {
            b'+' => simple(Status::Ok),
            b'-' => simple(Status::Error),
            b'$' => Ok(match self.bulk(buf, 0)? {
                Some((payload, len)) => Decoded::Complete {
                    message: Response {
                        id: None,
                        status: Status::Ok,
                        payload,
                    },
                    len,
                },
                None => Decoded::Incomplete,
            }),
            other => Err(ProtocolError::UnexpectedReplyType(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec() -> RespCodec {
        RespCodec::new(1024)
    }

    fn complete(buf: &[u8]) -> (Request<'_>, usize) {
        match codec().decode_request(buf) {
            Ok(Decoded::Complete { message, len }) => (message, len),
            other => panic!("expected a request, got {other:?}"),
        }
    }

    fn reply_to(buf: &[u8]) -> Vec<u8> {
        let c = codec();
        let mut out = Vec::new();
        match c.decode_request(buf) {
            Ok(Decoded::Complete { message, .. }) => {
                c.encode_reply(&message, Reply::Echo, &mut out)
            }
            Ok(Decoded::Invalid { id, error, .. }) => {
                c.encode_error(id, &error.to_string(), &mut out)
            }
            Err(error) => c.encode_error(None, &error.to_string(), &mut out),
            Ok(Decoded::Incomplete) => panic!("incomplete"),
        }
        out
    }

    #[test]
    fn the_redis_conversations() {
        assert_eq!(reply_to(b"*1\r\n$4\r\nPING\r\n"), b"+PONG\r\n");
        assert_eq!(reply_to(b"PING\r\n"), b"+PONG\r\n");
        assert_eq!(reply_to(b"ping\n"), b"+PONG\r\n");
        assert_eq!(
            reply_to(b"*2\r\n$4\r\nPiNg\r\n$3\r\nmsg\r\n"),
            b"$3\r\nmsg\r\n"
        );
        assert_eq!(
            reply_to(b"*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n"),
            b"$2\r\nhi\r\n"
        );
        assert_eq!(reply_to(b"echo hello\r\n"), b"$5\r\nhello\r\n");
        assert_eq!(reply_to(b"*2\r\n$4\r\nECHO\r\n$0\r\n\r\n"), b"$0\r\n\r\n");
        assert_eq!(
            reply_to(b"*1\r\n$3\r\nGET\r\n"),
            b"-ERR unknown command 'GET'\r\n"
        );
        assert_eq!(
            reply_to(b"*1\r\n$4\r\necho\r\n"),
            b"-ERR wrong number of arguments for 'echo' command\r\n"
        );
        assert_eq!(
            reply_to(b"PING a b\r\n"),
            b"-ERR wrong number of arguments for 'ping' command\r\n"
        );
    }

    /// `CONFIG GET`, answered as redis-server 7.0 answers it (checked side by side with
    /// `redis-server --save '' --appendonly no`), and its mistakes in Redis's words.
    #[test]
    fn config_get() {
        let save = b"*2\r\n$4\r\nsave\r\n$0\r\n\r\n";
        let appendonly = b"*2\r\n$10\r\nappendonly\r\n$2\r\nno\r\n";
        assert_eq!(
            reply_to(b"*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$4\r\nsave\r\n"),
            save
        );
        assert_eq!(
            reply_to(b"*3\r\n$6\r\nconfig\r\n$3\r\nget\r\n$10\r\nappendonly\r\n"),
            appendonly
        );
        assert_eq!(reply_to(b"config get save\r\n"), save);
        assert_eq!(reply_to(b"CONFIG GET nosuch\r\n"), b"*0\r\n");
        // A literal name comes back as written; a pattern's matches under their own names.
        assert_eq!(
            reply_to(b"CONFIG GET SAVE\r\n"),
            b"*2\r\n$4\r\nSAVE\r\n$0\r\n\r\n"
        );
        assert_eq!(reply_to(b"CONFIG GET app*\r\n"), appendonly);
        assert_eq!(reply_to(b"CONFIG GET sav?\r\n"), save);
        assert_eq!(
            reply_to(b"CONFIG GET *\r\n"),
            b"*4\r\n$4\r\nsave\r\n$0\r\n\r\n$10\r\nappendonly\r\n$2\r\nno\r\n"
        );
        assert_eq!(
            reply_to(b"CONFIG\r\n"),
            b"-ERR wrong number of arguments for 'config' command\r\n"
        );
        assert_eq!(
            reply_to(b"CONFIG GET\r\n"),
            b"-ERR wrong number of arguments for 'config|get' command\r\n"
        );
        assert_eq!(
            reply_to(b"CONFIG GET save appendonly\r\n"),
            b"-ERR wrong number of arguments for 'config|get' command\r\n"
        );
        assert_eq!(
            reply_to(b"CONFIG SET save 60\r\n"),
            b"-ERR unknown subcommand 'SET'. Try CONFIG HELP.\r\n"
        );
    }

    /// Exactly what redis-benchmark 7.0 writes on connecting: two CONFIG GETs in one write.
    #[test]
    fn redis_benchmarks_config_probe() {
        let probe = b"*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$4\r\nsave\r\n\
                      *3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$10\r\nappendonly\r\n";
        let (first, len) = complete(probe);
        assert_eq!(
            (first.command, first.payload),
            (Command::ConfigGet, &b"save"[..])
        );
        let (second, rest) = complete(&probe[len..]);
        assert_eq!(
            (second.command, second.payload),
            (Command::ConfigGet, &b"appendonly"[..])
        );
        assert_eq!(len + rest, probe.len());
        // The client half writes the same bytes.
        let mut out = Vec::new();
        codec().encode_request(&first, &mut out).expect("encodable");
        codec()
            .encode_request(&second, &mut out)
            .expect("encodable");
        assert_eq!(out, probe);
    }

    #[test]
    fn glob() {
        assert!(glob_matches(b"*", b""));
        assert!(glob_matches(b"*", b"save"));
        assert!(glob_matches(b"save", b"SAVE"));
        assert!(glob_matches(b"s*e", b"save"));
        assert!(glob_matches(b"*only", b"appendonly"));
        assert!(glob_matches(b"a*o*y", b"appendonly"));
        assert!(glob_matches(b"????", b"save"));
        assert!(glob_matches(b"**", b"save"));
        assert!(!glob_matches(b"???", b"save"));
        assert!(!glob_matches(b"sav", b"save"));
        assert!(!glob_matches(b"save*x", b"save"));
        assert!(!glob_matches(b"", b"save"));
        assert!(glob_matches(b"", b""));
        // Classes are not implemented: '[' is literal.
        assert!(!glob_matches(b"s[a]ve", b"save"));
    }

    #[test]
    fn binary_safe_bulk_payload() {
        let (req, len) = complete(b"*2\r\n$4\r\nECHO\r\n$4\r\n\r\n\0\xff\r\n");
        assert_eq!(
            (req.command, req.payload, len),
            (Command::Echo, &b"\r\n\0\xff"[..], 24)
        );
    }

    #[test]
    fn protocol_errors_are_fatal_with_redis_wording() {
        let err = |b: &[u8]| codec().decode_request(b).unwrap_err().to_string();
        assert_eq!(err(b"*x\r\n"), "Protocol error: invalid multibulk length");
        assert_eq!(
            err(b"*2000000\r\n"),
            "Protocol error: invalid multibulk length"
        );
        assert_eq!(err(b"*1\r\n$-5\r\n"), "Protocol error: invalid bulk length");
        assert_eq!(
            err(b"*1\r\n$1025\r\n"),
            "Protocol error: invalid bulk length"
        );
        assert_eq!(
            err(b"*1\r\n:4\r\n"),
            "Protocol error: expected '$', got ':'"
        );
        assert_eq!(
            err(b"*1\r\n$2\r\nabcd"),
            "Protocol error: bulk string not followed by CRLF"
        );
        let long = vec![b'a'; MAX_INLINE + 1];
        assert_eq!(err(&long), "Protocol error: too big inline request");
    }

    #[test]
    fn empty_commands_are_skipped_silently() {
        let (req, len) = complete(b"*0\r\n\r\n*-1\r\nPING\r\n");
        assert_eq!((req.command, len), (Command::Ping, 17));
    }

    #[test]
    fn partial_commands_wait() {
        let whole = b"*2\r\n$4\r\nECHO\r\n$5\r\nhello\r\n";
        for end in 0..whole.len() {
            assert_eq!(
                codec().decode_request(&whole[..end]),
                Ok(Decoded::Incomplete),
                "prefix {end}"
            );
        }
        assert_eq!(codec().decode_request(b"PIN"), Ok(Decoded::Incomplete));
    }

    #[test]
    fn a_huge_array_cannot_make_the_server_buffer_unboundedly() {
        // 1000 elements of max_frame each would be ~1 MB; the limit cuts it at max_frame + 64 KiB.
        let mut buf = b"*1000\r\n".to_vec();
        while buf.len() <= 1024 + MAX_INLINE {
            buf.extend_from_slice(b"$1000\r\n");
            buf.extend_from_slice(&[b'x'; 1000]);
            buf.extend_from_slice(b"\r\n");
        }
        assert!(matches!(
            codec().decode_request(&buf),
            Err(ProtocolError::CommandTooLarge { .. })
        ));
    }

    #[test]
    fn error_messages_cannot_break_the_line() {
        let mut out = Vec::new();
        codec().encode_error(None, "a\r\nb", &mut out);
        assert_eq!(out, b"-ERR a  b\r\n");
    }

    #[test]
    fn client_side_replies() {
        let c = codec();
        let ok = |b: &[u8]| match c.decode_response(b) {
            Ok(Decoded::Complete { message, len }) => {
                (message.status, message.payload.to_vec(), len)
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(ok(b"+PONG\r\n"), (Status::Ok, b"PONG".to_vec(), 7));
        assert_eq!(ok(b"-ERR x\r\n"), (Status::Error, b"ERR x".to_vec(), 8));
        assert_eq!(ok(b"$2\r\nhi\r\n"), (Status::Ok, b"hi".to_vec(), 8));
        assert_eq!(c.decode_response(b"$2\r\nh"), Ok(Decoded::Incomplete));
        assert!(matches!(
            c.decode_response(b":1\r\n"),
            Err(ProtocolError::UnexpectedReplyType(b':'))
        ));
    }
}
