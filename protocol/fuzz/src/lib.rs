//! What every decoder fuzz target checks, on every input the fuzzer makes up.
//!
//! The servers and the load generator hand a decoder whatever the kernel returned: half a
//! message, several, garbage, a message and a half. For the server half (`decode_request`) and
//! the client half (`decode_response`) of one protocol, on arbitrary bytes:
//!
//! 1. **No panic**, whatever the bytes and whatever `max_frame` (picked by the first input
//!    byte).
//! 2. **Consumed + remaining = input.** Every message or message error reported spans at least
//!    one byte and no more than what is buffered; walking the input message by message ends at
//!    an `Incomplete` tail or a fatal error, with every byte accounted for.
//! 3. **Chunked, the same story.** Fed through a [`ReadBuffer`] in chunks of one size, picked
//!    by the second byte (at least 1/256 of the input), the decoder reports exactly the
//!    messages, errors and fatal error that it reports on the whole input at once.
//! 4. **decode(encode(m)) == m.** Every request decoded is encoded again and decodes to
//!    itself, with `len` the encoded size; and the reply a server would send to it (an echo)
//!    decodes, in the client half, to the request's payload and id.
//!
//! Run one for ten minutes (from `protocol/`; the stable toolchain needs `RUSTC_BOOTSTRAP=1`
//! for the sanitizer flags cargo-fuzz passes):
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run resp -- -max_total_time=600`.

use echolab_protocol::{
    Command, Decoded, Protocol, ProtocolError, ReadBuffer, Reply, Request, Status,
};

/// One thing a decoder said about the input, owned so two walks can be compared.
#[derive(Debug, Clone, PartialEq)]
enum Said {
    /// A whole message: its id, what it says (command or status), its payload, its size.
    Message {
        id: Option<u64>,
        what: String,
        payload: Vec<u8>,
        len: usize,
    },
    /// A message that breaks a rule but leaves the stream usable.
    Invalid {
        id: Option<u64>,
        error: String,
        len: usize,
    },
    /// A fatal error: nothing after this is read.
    Fatal(String),
}

/// Which half of a codec to drive.
#[derive(Debug, Clone, Copy)]
enum Half {
    Server,
    Client,
}

/// One decode of `buf` by `half`, as a [`Said`] (`None`: incomplete).
fn decode_one(codec: &dyn echolab_protocol::Codec, half: Half, buf: &[u8]) -> Option<Said> {
    fn owned<M>(
        d: Result<Decoded<M>, ProtocolError>,
        f: impl Fn(M) -> (Option<u64>, String, Vec<u8>),
    ) -> Option<Said> {
        match d {
            Ok(Decoded::Incomplete) => None,
            Ok(Decoded::Complete { message, len }) => {
                let (id, what, payload) = f(message);
                Some(Said::Message {
                    id,
                    what,
                    payload,
                    len,
                })
            }
            Ok(Decoded::Invalid { id, error, len }) => Some(Said::Invalid {
                id,
                error: error.to_string(),
                len,
            }),
            Err(e) => Some(Said::Fatal(e.to_string())),
        }
    }
    match half {
        Half::Server => owned(codec.decode_request(buf), |r| {
            (r.id, format!("{:?}", r.command), r.payload.to_vec())
        }),
        Half::Client => owned(codec.decode_response(buf), |r| {
            (r.id, format!("{:?}", r.status), r.payload.to_vec())
        }),
    }
}

/// The length a [`Said`] consumed, checked against what was buffered.
fn consumed(said: &Said, buffered: usize) -> usize {
    match said {
        Said::Message { len, .. } | Said::Invalid { len, .. } => {
            assert!(*len >= 1, "a message of no bytes: {said:?}");
            assert!(
                *len <= buffered,
                "{said:?} claims more than the {buffered} bytes buffered"
            );
            *len
        }
        Said::Fatal(_) => 0,
    }
}

/// Property 2: the whole input, message by message.
fn walk_whole(codec: &dyn echolab_protocol::Codec, half: Half, input: &[u8]) -> Vec<Said> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(said) = decode_one(codec, half, &input[pos..]) {
        let fatal = matches!(said, Said::Fatal(_));
        pos += consumed(&said, input.len() - pos);
        out.push(said);
        if fatal {
            break;
        }
    }
    assert!(pos <= input.len());
    out
}

/// Property 3: the same input through a [`ReadBuffer`], `chunk` bytes per "read".
fn walk_chunked(
    codec: &dyn echolab_protocol::Codec,
    half: Half,
    input: &[u8],
    chunk: usize,
) -> Vec<Said> {
    let mut out = Vec::new();
    let mut buf = ReadBuffer::new(chunk.max(16));
    for piece in input.chunks(chunk) {
        buf.spare(piece.len())[..piece.len()].copy_from_slice(piece);
        buf.filled(piece.len());
        while let Some(said) = decode_one(codec, half, buf.data()) {
            let fatal = matches!(said, Said::Fatal(_));
            let n = consumed(&said, buf.len());
            out.push(said);
            if fatal {
                return out;
            }
            buf.consume(n);
        }
    }
    out
}

/// Property 4 for one decoded request.
fn round_trip(protocol: Protocol, max_frame: usize, input: &[u8]) {
    let codec = protocol.codec(max_frame);
    let Ok(Decoded::Complete {
        message: request, ..
    }) = codec.decode_request(input)
    else {
        return;
    };
    let mut wire = Vec::new();
    match codec.encode_request(&request, &mut wire) {
        Ok(()) => {}
        // Re-encoded in the canonical form, a JSON request may not fit a tiny max_frame.
        Err(ProtocolError::FrameTooLarge { .. }) => return,
        Err(e) => panic!("{protocol}: a decoded request {request:?} cannot be encoded: {e}"),
    }
    match codec.decode_request(&wire) {
        Ok(Decoded::Complete { message, len }) => {
            assert_eq!(len, wire.len(), "{protocol}: len of a re-encoded request");
            assert_eq!(
                (message.id, message.command, message.payload),
                (request.id, request.command, request.payload),
                "{protocol}: decode(encode(m)) != m"
            );
        }
        other => panic!("{protocol}: re-encoded {request:?} decodes to {other:?}"),
    }
    echo_round_trip(protocol, max_frame, &request);
}

/// The echo a server sends back decodes, in the client half, to the request's id and payload.
fn echo_round_trip(protocol: Protocol, max_frame: usize, request: &Request<'_>) {
    match request.command {
        // Computing pi for an arbitrary n is not the decoder's business.
        Command::Pi { .. } => return,
        // Not an echo: a RESP array of settings, which the client half (loadgen's) does not
        // read; resp.rs's own tests check those replies.
        Command::ConfigGet => return,
        _ => {}
    }
    let server = protocol.codec(max_frame);
    // The reply's envelope may be a little longer than the request's.
    let client = protocol.codec(max_frame.saturating_mul(4));
    let mut reply = Vec::new();
    server.encode_reply(request, Reply::Echo, &mut reply);
    match client.decode_response(&reply) {
        Ok(Decoded::Complete { message, len }) => {
            assert_eq!(len, reply.len(), "{protocol}: len of an echo reply");
            assert_eq!(message.status, Status::Ok, "{protocol}: echo status");
            let expected: &[u8] = match request.command {
                Command::Ping => b"PONG",
                _ => request.payload,
            };
            assert_eq!(message.payload, expected, "{protocol}: echoed payload");
            if protocol != Protocol::Resp {
                let want = if protocol == Protocol::Binary {
                    Some(request.id.unwrap_or(0))
                } else {
                    request.id
                };
                assert_eq!(message.id, want, "{protocol}: echoed id");
            }
        }
        other => panic!("{protocol}: the echo of {request:?} decodes to {other:?}"),
    }
}

/// Every property, for `protocol`, on one fuzzer input.
pub fn check(protocol: Protocol, data: &[u8]) {
    let [pick, chunk, input @ ..] = data else {
        return;
    };
    let max_frame = match pick % 4 {
        0 => 256,
        1 => 4096,
        2 => 65_536,
        _ => echolab_protocol::DEFAULT_MAX_FRAME,
    };
    // At most 256 pieces: a line decoder rescans what is buffered on every call, so 64 KiB
    // fed a byte at a time would cost a fuzzer run seconds (as it would a server a few
    // milliseconds per such client, bounded by the 64 KiB line limit, like Redis).
    let chunk = usize::from(*chunk).max(1).max(input.len() / 256);
    let codec = protocol.codec(max_frame);
    for half in [Half::Server, Half::Client] {
        let whole = walk_whole(&*codec, half, input);
        let chunked = walk_chunked(&*codec, half, input, chunk);
        assert_eq!(
            whole, chunked,
            "{protocol} {half:?}: the whole input and {chunk}-byte chunks say different things"
        );
    }
    // Every message boundary the server half found starts a request to round-trip.
    let mut pos = 0;
    for said in walk_whole(&*codec, Half::Server, input) {
        if let Said::Message { len, .. } = said {
            round_trip(protocol, max_frame, &input[pos..pos + len]);
        }
        pos += match said {
            Said::Message { len, .. } | Said::Invalid { len, .. } => len,
            Said::Fatal(_) => 0,
        };
    }
}

/// The record decoders ([`echolab_protocol::record`]), the compression frame and the Avro
/// schema check, on arbitrary bytes: **no panic** in any format's decoder, in `unframe` (the
/// first byte picks the limit a compressed record may claim, so small limits are tried as
/// often as large ones) or in `RecordCodec::agreed` (the input as a peer's schema); and
/// **decode(encode(r)) == r** for every record a decoder accepted, in every format (a record
/// one format accepts is one every format must carry); and what the server does with a
/// RECORD request (`RecordCodec::answer`, the input as the request's frame) answers in a
/// frame the client side reads back.
pub fn check_record(data: &[u8]) {
    use echolab_protocol::record::{unframe, Format, RecordCodec};
    use std::sync::OnceLock;
    // Made once: an Avro codec parses its schema when it is made.
    static CODECS: OnceLock<Vec<RecordCodec>> = OnceLock::new();
    let codecs = CODECS.get_or_init(|| Format::ALL.into_iter().map(RecordCodec::new).collect());
    let limit = 1usize << (data.first().copied().unwrap_or(0) % 24);
    if let Ok(body) = unframe(data, limit) {
        assert!(body.len() <= limit.max(data.len()), "unframe returned more than allowed");
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = RecordCodec::agreed(Format::Avro, Some(text));
    }
    for codec in codecs {
        let mut reply = Vec::new();
        if codec.answer(data, limit, &mut reply).is_ok() {
            let back = codec.reply(&reply, usize::MAX);
            assert!(back.is_ok(), "{}: an answer that does not read back: {back:?}", codec.format());
        }
        let Ok(record) = codec.decode(data) else {
            continue;
        };
        for other in codecs {
            let mut out = Vec::new();
            other.encode(&record, &mut out).unwrap_or_else(|e| {
                panic!("{}'s record does not encode in {}: {e}", codec.format(), other.format())
            });
            assert_eq!(
                other.decode(&out).as_ref(),
                Ok(&record),
                "{}'s record through {}",
                codec.format(),
                other.format()
            );
        }
    }
}
