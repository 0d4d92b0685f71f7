//! Structured records (issue 16), against the real binaries: every model agrees a record
//! format in a connection's HELLO (Avro's schema sent once, there), answers RECORD by
//! decoding the record, adding 1 to its number and encoding it back, and refuses what it
//! cannot read with an ERROR reply while the connection, and every other, is served on.
//!
//! The refusals: a RECORD before any format was agreed; a HELLO with an Avro schema that is
//! not the server's (or a schema for a format that takes none), after which nothing is
//! agreed; malformed record bytes; an unknown compression flag; and a decompression bomb, a
//! few bytes claiming to expand past `--max-frame`, refused before anything is allocated.

mod common;

use common::*;
use echolab_protocol::record::{
    Compression, Format, Person, RecordCodec, AVRO_SCHEMA, MAX_INTERESTS,
};
use echolab_protocol::session::hello as word;
use echolab_protocol::varint::put_uvarint;
use echolab_protocol::{Command, Request, Status};

/// The server's `--max-frame` in these tests: the bomb claims more.
const MAX_FRAME: usize = 1 << 20;

/// Sends HELLO with `format` (and `schema`) for `client` (0: no session).
fn hello(c: &mut Client, client: u64, format: Format, schema: &str) -> OwnedResponse {
    let id = c.next_id();
    c.request(&Request {
        id: Some(id),
        command: Command::Hello {
            client,
            sent: 0,
            format: Some(format),
        },
        payload: schema.as_bytes(),
    })
}

/// Sends RECORD with `frame` as its payload.
fn record(c: &mut Client, frame: &[u8]) -> OwnedResponse {
    let id = c.next_id();
    let r = c.request(&Request {
        id: Some(id),
        command: Command::Record,
        payload: frame,
    });
    assert_eq!(r.id, Some(id), "the reply carries the request's id");
    r
}

/// A record with `n` interests, compressible.
fn person(n: usize, number: i64) -> Person {
    Person {
        user_name: "Martin".into(),
        favourite_number: number,
        interests: (0..n).map(|i| format!("interest {}", i % 7)).collect(),
        address: None,
    }
}

/// Sends `p` in `format`, compressed as `compression`, and checks that the reply is `p` with
/// its number one higher.
fn round_trip(c: &mut Client, format: Format, p: &Person, compression: Compression) {
    let codec = RecordCodec::new(format);
    let (mut scratch, mut frame) = (Vec::new(), Vec::new());
    codec
        .request(p, compression, &mut scratch, &mut frame)
        .expect("encodes");
    let r = record(c, &frame);
    assert_eq!(r.status, Status::Ok, "{format}: {}", r.message());
    let got = codec.reply(&r.payload, MAX_FRAME).expect("a record back");
    assert_eq!(got.favourite_number, p.favourite_number + 1, "{format}");
    assert_eq!(got.interests, p.interests, "{format}");
}

/// An ERROR reply whose message contains `expected`.
fn refused(r: &OwnedResponse, expected: &str) {
    assert_eq!(r.status, Status::Error, "expected an error: {r:?}");
    assert!(
        r.message().contains(expected),
        "{:?} does not say {expected:?}",
        r.message()
    );
}

fn records_and_refusals(model: &Model) {
    let max = MAX_FRAME.to_string();
    let server = model.start(&["--protocol", "binary", "--max-frame", &max]);

    // A: Avro, the schema sent once; a large record, snappy-compressed both ways.
    let mut a = model.client(&server);
    let r = hello(&mut a, 0, Format::Avro, AVRO_SCHEMA);
    assert_eq!(
        (r.status, r.message()),
        (Status::Ok, word::AGREED.into()),
        "{}",
        model.name
    );
    let big = person(2000, -5);
    round_trip(
        &mut a,
        Format::Avro,
        &big,
        Compression::Snappy { threshold: 0 },
    );

    // B: every refusal, on one connection that stays open throughout.
    let mut b = model.client(&server);
    let good = {
        let (mut s, mut f) = (Vec::new(), Vec::new());
        RecordCodec::new(Format::Protobuf)
            .request(&person(3, 7), Compression::None, &mut s, &mut f)
            .expect("encodes");
        f
    };
    refused(&record(&mut b, &good), "RECORD before a HELLO");
    let other = AVRO_SCHEMA.replace("\"long\"", "\"int\"");
    refused(
        &hello(&mut b, 0, Format::Avro, &other),
        "the Avro schema is not the server's",
    );
    refused(
        &hello(&mut b, 0, Format::Protobuf, AVRO_SCHEMA),
        "a schema was sent for protobuf",
    );
    refused(&record(&mut b, &good), "RECORD before a HELLO");
    // A session and a format in one HELLO.
    let r = hello(&mut b, 77, Format::Protobuf, "");
    assert_eq!((r.status, r.message()), (Status::Ok, word::NEW.into()));
    round_trip(&mut b, Format::Protobuf, &person(3, 7), Compression::None);
    // Protobuf field 1 (a string) claiming 100 bytes where there are 2.
    refused(
        &record(&mut b, &[0, 0x0a, 100, b'x', b'y']),
        "malformed record",
    );
    refused(&record(&mut b, &[9, 1, 2, 3]), "unknown compression flag 9");
    refused(&record(&mut b, &[]), "empty record frame");
    // The bomb: snappy's header claims 1 GiB, in 6 bytes.
    let mut bomb = vec![1];
    put_uvarint(&mut bomb, 1 << 30);
    bomb.push(0);
    refused(
        &record(&mut b, &bomb),
        &format!("more than the limit of {max}"),
    );
    // More interests than any format may carry, each one byte.
    let mut many = vec![0];
    for _ in 0..=MAX_INTERESTS {
        many.extend_from_slice(&[0x1a, 0]);
    }
    refused(&record(&mut b, &many), "interests, more than");
    round_trip(&mut b, Format::Protobuf, &person(3, -1), Compression::None);

    // A was served all along, and still is.
    round_trip(&mut a, Format::Avro, &big, Compression::None);
    drop((a, b));
    server.stop().assert_clean(model.name);
}

macro_rules! model_table {
    ($($module:ident => $model:expr),* $(,)?) => {
        $(
            mod $module {
                use super::*;

                #[test]
                fn records_are_answered_and_bad_ones_refused() {
                    records_and_refusals(&$model);
                }
            }
        )*
    };
}

every_model!(model_table);
