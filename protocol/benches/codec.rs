//! What one echo costs in each wire format, with no sockets involved.
//!
//! For every protocol (binary, resp, json) and payload size (16 B, 1 KiB, 64 KiB) this measures
//! two things through the `Codec` trait object that the servers and loadgen use
//! (`Protocol::codec(DEFAULT_MAX_FRAME)`):
//!
//! - `echo_roundtrip/<protocol>/<size>`: one full exchange, client `encode_request` -> server
//!   `decode_request` -> server `encode_reply(Reply::Echo)` -> client `decode_response`;
//! - `decode_request/<protocol>/<size>`: the server's parse alone, of an already-encoded
//!   request, so the docs can say how much of the round trip is parsing.
//!
//! Throughput is one element per iteration, so criterion's figures read as time per message.
//! Output buffers are allocated once and `clear()`ed between iterations, so what is measured
//! is the codec, not the allocator. Binary and RESP payloads are `x` repeated; the JSON payload
//! must be JSON text, so it is a JSON string of exactly `size` bytes, quotes included
//! (`"xx...x"`). Every exchange is checked once for correctness before it is timed.
//!
//! `ECHOLAB_COUNT_ITERS=N` runs the same cases a fixed number of times instead, for the
//! instruction gate to count under Callgrind (see `counting`).
//!
//! Run it with `cargo bench -p echolab-protocol --bench codec` (about a minute and a half;
//! results land in `target/criterion/`). It exists because the book asks how much a text or
//! self-describing format costs compared with a binary one: these numbers are that cost with
//! the network, the kernel and the concurrency model taken out.

use std::time::Duration;

mod counting;

use criterion::{black_box, criterion_group, BenchmarkId, Criterion, Throughput};
use echolab_protocol::{
    Codec, Command, Decoded, Protocol, Reply, Request, Status, DEFAULT_MAX_FRAME,
};

/// Payload sizes, in bytes: a tiny message, a typical one, and one that is all payload.
const SIZES: [usize; 3] = [16, 1024, 64 * 1024];

/// The request id sent (RESP has no ids and ignores it).
const ID: u64 = 42;

/// A payload of exactly `size` bytes that `protocol` can carry: ASCII `x`s, or for JSON a
/// JSON string of `x`s whose quotes count towards `size`.
fn payload(protocol: Protocol, size: usize) -> Vec<u8> {
    match protocol {
        Protocol::Json => {
            let mut p = Vec::with_capacity(size);
            p.push(b'"');
            p.resize(size - 1, b'x');
            p.push(b'"');
            p
        }
        Protocol::Binary | Protocol::Resp => vec![b'x'; size],
    }
}

fn echo_request(payload: &[u8]) -> Request<'_> {
    Request {
        id: Some(ID),
        command: Command::Echo,
        payload,
    }
}

/// One full echo exchange through `codec`, reusing `wire` and `reply`. Returns the length of
/// the echoed payload the client decoded (cheap, but enough to keep every step live).
fn echo_exchange(
    codec: &dyn Codec,
    request: &Request<'_>,
    wire: &mut Vec<u8>,
    reply: &mut Vec<u8>,
) -> usize {
    wire.clear();
    if let Err(e) = codec.encode_request(request, wire) {
        panic!("{}: encode_request failed: {e}", codec.protocol());
    }
    let received = match codec.decode_request(wire) {
        Ok(Decoded::Complete { message, .. }) => message,
        other => panic!("{}: decode_request gave {other:?}", codec.protocol()),
    };
    reply.clear();
    codec.encode_reply(&received, Reply::Echo, reply);
    match codec.decode_response(reply) {
        Ok(Decoded::Complete { message, .. }) => message.payload.len(),
        other => panic!("{}: decode_response gave {other:?}", codec.protocol()),
    }
}

/// Checks, untimed, that the exchange the benchmark repeats really echoes `payload`.
fn check_exchange(codec: &dyn Codec, payload: &[u8]) {
    let protocol = codec.protocol();
    let request = echo_request(payload);
    let mut wire = Vec::new();
    if let Err(e) = codec.encode_request(&request, &mut wire) {
        panic!("{protocol}: encode_request failed: {e}");
    }
    let received = match codec.decode_request(&wire) {
        Ok(Decoded::Complete { message, len }) => {
            assert_eq!(len, wire.len(), "{protocol}: request not fully consumed");
            assert_eq!(message.command, Command::Echo, "{protocol}: wrong command");
            assert_eq!(
                message.payload, payload,
                "{protocol}: request payload differs"
            );
            message
        }
        other => panic!("{protocol}: decode_request gave {other:?}"),
    };
    let mut reply = Vec::new();
    codec.encode_reply(&received, Reply::Echo, &mut reply);
    match codec.decode_response(&reply) {
        Ok(Decoded::Complete { message, len }) => {
            assert_eq!(len, reply.len(), "{protocol}: reply not fully consumed");
            assert_eq!(message.status, Status::Ok, "{protocol}: error status");
            assert_eq!(
                message.payload, payload,
                "{protocol}: echoed payload differs"
            );
            let expected_id = match protocol {
                Protocol::Resp => None,
                Protocol::Binary | Protocol::Json => Some(ID),
            };
            assert_eq!(message.id, expected_id, "{protocol}: wrong id");
        }
        other => panic!("{protocol}: decode_response gave {other:?}"),
    }
}

/// Every `echo_roundtrip` case: its protocol and size, and the exchange it repeats (each
/// checked once first). The timed and the counted runs both take their cases from here.
fn roundtrip_cases(mut each: impl FnMut(&str, usize, &mut dyn FnMut() -> usize)) {
    for protocol in Protocol::ALL {
        let codec = protocol.codec(DEFAULT_MAX_FRAME);
        for size in SIZES {
            let payload = payload(protocol, size);
            check_exchange(&*codec, &payload);
            let request = echo_request(&payload);
            let mut wire = Vec::new();
            let mut reply = Vec::new();
            each(protocol.name(), size, &mut || {
                echo_exchange(&*codec, black_box(&request), &mut wire, &mut reply)
            });
        }
    }
}

/// Every `decode_request` case: the server's parse of an already-encoded request.
fn decode_cases(mut each: impl FnMut(&str, usize, &mut dyn FnMut() -> usize)) {
    for protocol in Protocol::ALL {
        let codec = protocol.codec(DEFAULT_MAX_FRAME);
        for size in SIZES {
            let payload = payload(protocol, size);
            check_exchange(&*codec, &payload);
            let mut wire = Vec::new();
            if let Err(e) = codec.encode_request(&echo_request(&payload), &mut wire) {
                panic!("{protocol}: encode_request failed: {e}");
            }
            each(
                protocol.name(),
                size,
                &mut || match codec.decode_request(black_box(&wire)) {
                    Ok(Decoded::Complete { message, len }) => message.payload.len() + len,
                    other => panic!("{protocol}: decode_request gave {other:?}"),
                },
            );
        }
    }
}

fn echo_roundtrip(c: &mut Criterion) {
    let mut group = c.benchmark_group("echo_roundtrip");
    group.throughput(Throughput::Elements(1));
    roundtrip_cases(|protocol, size, f| {
        group.bench_function(BenchmarkId::new(protocol, size), |b| b.iter(&mut *f));
    });
    group.finish();
}

fn decode_request(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_request");
    group.throughput(Throughput::Elements(1));
    decode_cases(|protocol, size, f| {
        group.bench_function(BenchmarkId::new(protocol, size), |b| b.iter(&mut *f));
    });
    group.finish();
}

criterion_group! {
    name = benches;
    // 18 benchmarks x (1 s warm-up + 2 s measurement) plus analysis: well under three
    // minutes even on a small, shared machine.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(100);
    targets = echo_roundtrip, decode_request
}

/// criterion's main, unless `ECHOLAB_COUNT_ITERS` asks for the cases counted ([`counting`]).
fn main() {
    if let Some(n) = counting::iterations() {
        roundtrip_cases(|protocol, size, f| {
            counting::case(&format!("echo_roundtrip/{protocol}/{size}"), n, || {
                black_box(f());
            });
        });
        decode_cases(|protocol, size, f| {
            counting::case(&format!("decode_request/{protocol}/{size}"), n, || {
                black_box(f());
            });
        });
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
