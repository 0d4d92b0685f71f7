//! What a structured record costs in each format, with and without snappy, with no sockets.
//!
//! For every format (positional, JSON, protobuf, Avro) and record (the book's `Person`; the
//! same with a nested address; and a large one of 500 interests, its text either
//! repetitive, which compresses, or drawn at random, which does not), this times one exchange
//! as a server would see it in real RPC: the client encodes and frames the record, the server
//! unframes and decodes it, adds 1 to `favourite_number`, encodes and frames it back, and the
//! client unframes and decodes the reply. `record_roundtrip/<format>/<record>` frames raw;
//! `record_snappy/<format>/<record>` compresses every record (threshold 0; a record snappy
//! cannot shorten still goes raw, as `record::frame` decides).
//!
//! Before timing, it prints one line per (format, record, compression) to stderr, `size
//! FORMAT RECORD COMPRESSION BYTES`: the framed request's size, which
//! `scripts/record-bench.py` keeps beside the times.
//!
//! `ECHOLAB_COUNT_ITERS=N` runs the same cases a fixed number of times instead, for the
//! instruction gate to count under Callgrind (see `counting`).
//!
//! `cargo bench -p echolab-protocol --bench record` (about two minutes).

use std::time::Duration;

mod counting;

use criterion::{black_box, criterion_group, BenchmarkId, Criterion, Throughput};
use echolab_protocol::record::{frame, unframe, Address, Compression, Format, Person, RecordCodec};

/// The most a framed record may claim to expand to.
const LIMIT: usize = 1 << 20;

/// Deterministic pseudo-random letters (splitmix64), so the "random" record is the same in
/// every run.
fn random_word(state: &mut u64, len: usize) -> String {
    (0..len)
        .map(|_| {
            *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = *state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            char::from(b'a' + (z % 26) as u8)
        })
        .collect()
}

/// The records measured: name and value.
fn records() -> Vec<(&'static str, Person)> {
    let book = Person {
        user_name: "Martin".into(),
        favourite_number: 1337,
        interests: vec!["daydreaming".into(), "hacking".into()],
        address: None,
    };
    let nested = Person {
        address: Some(Address {
            street: "12 Avenue des Champs".into(),
            city: "Paris".into(),
        }),
        ..book.clone()
    };
    let large_text = Person {
        interests: (0..500)
            .map(|i| format!("interest number {i:04}"))
            .collect(),
        ..nested.clone()
    };
    let mut state = 7;
    let large_random = Person {
        interests: (0..500).map(|_| random_word(&mut state, 20)).collect(),
        ..nested.clone()
    };
    vec![
        ("book", book),
        ("nested", nested),
        ("large-text", large_text),
        ("large-random", large_random),
    ]
}

/// One exchange; returns the reply's number (to keep every step live).
fn exchange(
    codec: &RecordCodec,
    compression: Compression,
    p: &Person,
    wire: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
) -> i64 {
    // Client: encode and frame the request.
    scratch.clear();
    wire.clear();
    let _ = codec.encode(p, scratch);
    frame(scratch, compression, wire);
    // Server: unframe, decode, change, encode, frame the reply.
    let Ok(body) = unframe(wire, LIMIT) else {
        return 0;
    };
    let Ok(mut got) = codec.decode(&body) else {
        return 0;
    };
    got.favourite_number = got.favourite_number.wrapping_add(1);
    scratch.clear();
    let _ = codec.encode(&got, scratch);
    wire.clear();
    frame(scratch, compression, wire);
    // Client: unframe and decode the reply.
    unframe(wire, LIMIT)
        .ok()
        .and_then(|b| codec.decode(&b).ok())
        .map_or(0, |r| r.favourite_number)
}

/// The two groups: every record framed raw, and every record snappy-compressed (threshold 0;
/// a record snappy cannot shorten still goes raw, as `record::frame` decides).
const GROUPS: [(&str, Compression); 2] = [
    ("record_roundtrip", Compression::None),
    ("record_snappy", Compression::Snappy { threshold: 0 }),
];

/// Every case of one group: its format and record, and the exchange it repeats (checked
/// once, and its framed request's size printed, first). The timed and the counted runs both
/// take their cases from here.
fn cases(
    group_name: &str,
    compression: Compression,
    mut each: impl FnMut(Format, &str, &mut dyn FnMut() -> i64),
) {
    let records = records();
    for format in Format::ALL {
        let codec = RecordCodec::new(format);
        for (name, p) in &records {
            let (mut wire, mut scratch) = (Vec::new(), Vec::new());
            // Checked once, untimed: the exchange works and the reply is incremented.
            assert_eq!(
                exchange(&codec, compression, p, &mut wire, &mut scratch),
                p.favourite_number + 1,
                "{format} {name}"
            );
            scratch.clear();
            wire.clear();
            let _ = codec.encode(p, &mut scratch);
            frame(&scratch, compression, &mut wire);
            eprintln!("size {format} {name} {group_name} {}", wire.len());
            each(format, name, &mut || {
                exchange(&codec, compression, black_box(p), &mut wire, &mut scratch)
            });
        }
    }
}

fn bench(c: &mut Criterion) {
    for (group_name, compression) in GROUPS {
        let mut group = c.benchmark_group(group_name);
        group.throughput(Throughput::Elements(1));
        group.warm_up_time(Duration::from_millis(500));
        group.measurement_time(Duration::from_secs(2));
        cases(group_name, compression, |format, name, f| {
            group.bench_function(BenchmarkId::new(format.name(), name), |b| b.iter(&mut *f));
        });
        group.finish();
    }
}

criterion_group!(benches, bench);

/// criterion's main, unless `ECHOLAB_COUNT_ITERS` asks for the cases counted ([`counting`]).
fn main() {
    if let Some(n) = counting::iterations() {
        for (group_name, compression) in GROUPS {
            cases(group_name, compression, |format, name, f| {
                counting::case(&format!("{group_name}/{}/{name}", format.name()), n, || {
                    black_box(f());
                });
            });
        }
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
