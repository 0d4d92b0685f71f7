//! A structured record in four formats, and snappy compression above a threshold: what the
//! book's message chapters compare, as a sans-IO codec the servers and loadgen share.
//!
//! The record is the book's own `Person { user_name, favourite_number, interests }`, with an
//! optional nested `Address` (a message inside a message). Its formats differ in where the
//! structure lives:
//! - **JSON** ([`Format::Json`], serde_json) is *explicit*: every message names every field;
//! - **protobuf** ([`Format::Protobuf`], prost) is explicit too, but compactly: each field is a
//!   varint key of its tag number and wire type, numbers are varints (`sint64`: zigzag, so a
//!   small negative number is a small varint), strings and nested messages length-prefixed,
//!   and a field at its default value is not sent at all;
//! - **Avro** ([`Format::Avro`], apache-avro) is *implicit*: the schema ([`AVRO_SCHEMA`]) is
//!   agreed once per connection and each message carries the values only, in schema order;
//! - **positional** ([`Format::Positional`], echolab's own) is implicit and fixed: the layout
//!   is the code's, with no schema to send (a varint length before each string, the number
//!   zigzag-encoded, a count before the list, a presence byte before the address).
//!
//! Every decoder takes bytes from the network: it returns an error for anything it cannot
//! parse, and what it allocates is bounded by a multiple of its input. Positional and Avro
//! check a list's count against the bytes left, and against [`MAX_INTERESTS`], before
//! anything is reserved. prost and serde_json build the list first and [`MAX_INTERESTS`] is
//! checked after: an interest costs them a `String` (24 bytes) for as little as 2 input bytes,
//! so a record frame of `max_frame` bytes may briefly hold about 12 times that (some 24 MiB at
//! the default 1 MiB, doubled while a `Vec` grows) before it is refused.
//! [`frame`] and [`unframe`] put a flag byte in front of each encoded record (0: as is; 1:
//! snappy), compressing at or above a threshold; a compressed record's claimed length is
//! checked against a limit, and against what snappy can expand its bytes to, before a byte is
//! decompressed, so a small frame claiming to expand to gigabytes is refused, not allocated.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::varint::{get_uvarint, put_uvarint, zigzag_decode, zigzag_encode};

/// The record: the book's `Person`, with a nested message.
#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
pub struct Person {
    /// A name.
    #[prost(string, tag = "1")]
    pub user_name: String,
    /// A signed number: the field zigzag exists for.
    #[prost(sint64, tag = "2")]
    pub favourite_number: i64,
    /// A list of strings, possibly empty, possibly long.
    #[prost(string, repeated, tag = "3")]
    pub interests: Vec<String>,
    /// A nested message, or none.
    #[prost(message, optional, tag = "4")]
    pub address: Option<Address>,
}

/// The nested message.
#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
pub struct Address {
    /// Street.
    #[prost(string, tag = "1")]
    pub street: String,
    /// City.
    #[prost(string, tag = "2")]
    pub city: String,
}

/// The Avro schema of [`Person`]: what an Avro connection agrees on once, at its start.
pub const AVRO_SCHEMA: &str = r#"{
  "type": "record",
  "name": "Person",
  "fields": [
    {"name": "user_name", "type": "string"},
    {"name": "favourite_number", "type": "long"},
    {"name": "interests", "type": {"type": "array", "items": "string"}},
    {"name": "address", "type": ["null", {
      "type": "record",
      "name": "Address",
      "fields": [
        {"name": "street", "type": "string"},
        {"name": "city", "type": "string"}
      ]
    }], "default": null}
  ]
}"#;

/// The most apache-avro may reserve for one string (bytes) or array (items) while decoding
/// (see [`RecordCodec::new`]): a second guard behind the check of every claim against the
/// bytes left. Process-wide and set once, by the first codec made.
pub const AVRO_MAX_ALLOCATION: usize = 16 << 20;

/// The most interests a record may carry, in every format: a decoded list costs a few dozen
/// bytes per item (a `String`, or apache-avro's `Value`), so a count that one input byte per
/// item would allow is still capped.
pub const MAX_INTERESTS: usize = 65_536;

/// How a record is laid out on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// echolab's own positional binary.
    Positional,
    /// JSON, field names in every message.
    Json,
    /// Protocol Buffers (prost).
    Protobuf,
    /// Avro: values only, the schema agreed once per connection.
    Avro,
}

impl Format {
    /// Every format, in the order the docs list them.
    pub const ALL: [Format; 4] = [
        Format::Positional,
        Format::Json,
        Format::Protobuf,
        Format::Avro,
    ];

    /// Its code in a binary HELLO.
    pub fn code(self) -> u8 {
        match self {
            Format::Positional => 0,
            Format::Json => 1,
            Format::Protobuf => 2,
            Format::Avro => 3,
        }
    }

    /// The format a binary HELLO's code names, if any.
    pub fn from_code(code: u8) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.code() == code)
    }

    /// Whether a connection agrees a schema for it at its start: only Avro's travels; the
    /// others' layouts are compiled into both sides (protobuf's `.proto`, positional's code)
    /// or spelt out in every message (JSON).
    pub fn has_schema(self) -> bool {
        self == Format::Avro
    }

    /// Its name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Format::Positional => "positional",
            Format::Json => "json",
            Format::Protobuf => "protobuf",
            Format::Avro => "avro",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Format::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| format!("'{s}' is not a format (positional, json, protobuf or avro)"))
    }
}

/// Why a record could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordError {
    /// The bytes are not a record in this format (the message says where).
    Malformed(String),
    /// An Avro schema that is not the one this codec speaks.
    SchemaMismatch,
    /// A schema sent for a format that agrees none at run time.
    UnexpectedSchema(Format),
    /// A frame's flag byte names no compression this codec knows.
    UnknownCompression(u8),
    /// A compressed record claims to expand past the limit.
    TooLarge {
        /// What it claims.
        claimed: usize,
        /// The limit.
        limit: usize,
    },
    /// An empty frame (no flag byte).
    Empty,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Malformed(why) => write!(f, "malformed record: {why}"),
            RecordError::SchemaMismatch => f.write_str("the Avro schema is not the server's"),
            RecordError::UnexpectedSchema(format) => {
                write!(f, "a schema was sent for {format}, which takes none")
            }
            RecordError::UnknownCompression(flag) => {
                write!(f, "unknown compression flag {flag} (0 none, 1 snappy)")
            }
            RecordError::TooLarge { claimed, limit } => write!(
                f,
                "compressed record claims {claimed} bytes, more than the limit of {limit}"
            ),
            RecordError::Empty => f.write_str("empty record frame"),
        }
    }
}

impl std::error::Error for RecordError {}

fn malformed(why: impl fmt::Display) -> RecordError {
    RecordError::Malformed(why.to_string())
}

/// Encodes and decodes [`Person`] in one [`Format`].
pub struct RecordCodec {
    format: Format,
    /// Avro only: the parsed schema, one for the whole process.
    avro: Option<&'static apache_avro::Schema>,
}

/// [`AVRO_SCHEMA`] parsed, and as JSON (what a peer's schema is compared with): made once, by
/// the first Avro codec, not by every connection that agrees Avro.
struct OurSchema {
    parsed: Option<apache_avro::Schema>,
    json: Option<serde_json::Value>,
}

fn our_schema() -> &'static OurSchema {
    static OURS: std::sync::OnceLock<OurSchema> = std::sync::OnceLock::new();
    OURS.get_or_init(|| {
        // apache-avro reserves what a string's or an array's length claims, up to a
        // process-wide limit (512 MiB unless set before the first decode): a record is never
        // larger than its frame, so a claim past this is a lie.
        apache_avro::max_allocation_bytes(AVRO_MAX_ALLOCATION);
        OurSchema {
            // The schema is a constant of this file, and a test checks that it parses.
            parsed: apache_avro::Schema::parse_str(AVRO_SCHEMA).ok(),
            json: serde_json::from_str(AVRO_SCHEMA).ok(),
        }
    })
}

impl fmt::Debug for RecordCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordCodec")
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

impl RecordCodec {
    /// A codec of `format` (Avro with [`AVRO_SCHEMA`]).
    pub fn new(format: Format) -> RecordCodec {
        let avro = if format == Format::Avro {
            our_schema().parsed.as_ref()
        } else {
            None
        };
        RecordCodec { format, avro }
    }

    /// A codec for a connection that announced `format` and, for Avro, the schema `schema`:
    /// refused with [`RecordError::SchemaMismatch`] unless the schema is this codec's as JSON
    /// (whitespace and the order of keys within an object do not matter; a different field,
    /// type or name does).
    ///
    /// The peer's schema is compared as JSON and never handed to apache-avro's parser, which
    /// `unwrap`s on some invalid names (apache/avro-rs#547): a schema is the first thing a
    /// client sends, and it must not be able to take the server down.
    pub fn agreed(format: Format, schema: Option<&str>) -> Result<RecordCodec, RecordError> {
        if !format.has_schema() && schema.is_some_and(|s| !s.is_empty()) {
            return Err(RecordError::UnexpectedSchema(format));
        }
        let codec = RecordCodec::new(format);
        if codec.avro.is_some() {
            let theirs = schema.and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok());
            if theirs.is_none() || theirs.as_ref() != our_schema().json.as_ref() {
                return Err(RecordError::SchemaMismatch);
            }
        }
        Ok(codec)
    }

    /// Its format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Appends `p` in this codec's format to `out`.
    pub fn encode(&self, p: &Person, out: &mut Vec<u8>) -> Result<(), RecordError> {
        match self.format {
            Format::Positional => {
                encode_positional(p, out);
                Ok(())
            }
            Format::Json => serde_json::to_writer(out, p).map_err(malformed),
            Format::Protobuf => prost::Message::encode(p, out).map_err(malformed),
            Format::Avro => {
                let schema = self.avro.ok_or(RecordError::SchemaMismatch)?;
                let value = apache_avro::to_value(p).map_err(malformed)?;
                let bytes = apache_avro::to_avro_datum(schema, value).map_err(malformed)?;
                out.extend_from_slice(&bytes);
                Ok(())
            }
        }
    }

    /// Client side: appends `p` as a record frame, compressed as `compression` says.
    pub fn request(
        &self,
        p: &Person,
        compression: Compression,
        scratch: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<(), RecordError> {
        scratch.clear();
        self.encode(p, scratch)?;
        frame(scratch, compression, out);
        Ok(())
    }

    /// Server side: what RECORD does. Reads the record in `request` (a frame, refused if it
    /// claims to expand past `limit`), adds 1 to its number (wrapping, so `i64::MAX` becomes
    /// `i64::MIN` rather than an error), and appends it encoded again as a frame to `out`.
    /// The reply is compressed when the request was: a client that sends snappy reads it.
    pub fn answer(
        &self,
        request: &[u8],
        limit: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), RecordError> {
        let bytes = unframe(request, limit)?;
        let compressed = matches!(bytes, std::borrow::Cow::Owned(_));
        let mut p = self.decode(&bytes)?;
        p.favourite_number = p.favourite_number.wrapping_add(1);
        let mut encoded = Vec::with_capacity(bytes.len() + 8);
        self.encode(&p, &mut encoded)?;
        let compression = if compressed {
            Compression::Snappy { threshold: 0 }
        } else {
            Compression::None
        };
        frame(&encoded, compression, out);
        Ok(())
    }

    /// Client side: the record in a reply frame.
    pub fn reply(&self, frame: &[u8], limit: usize) -> Result<Person, RecordError> {
        self.decode(&unframe(frame, limit)?)
    }

    /// Decodes one record that is exactly `bytes`.
    pub fn decode(&self, bytes: &[u8]) -> Result<Person, RecordError> {
        let p = self.decode_any(bytes)?;
        if p.interests.len() > MAX_INTERESTS {
            return Err(malformed(format!(
                "{} interests, more than {MAX_INTERESTS}",
                p.interests.len()
            )));
        }
        Ok(p)
    }

    fn decode_any(&self, bytes: &[u8]) -> Result<Person, RecordError> {
        match self.format {
            Format::Positional => decode_positional(bytes),
            Format::Json => serde_json::from_slice(bytes).map_err(malformed),
            Format::Protobuf => <Person as prost::Message>::decode(bytes).map_err(malformed),
            Format::Avro => {
                let schema = self.avro.ok_or(RecordError::SchemaMismatch)?;
                // apache-avro reserves an array's claimed count of values (tens of bytes
                // each) before reading them: a few bytes claiming 60 million interests asked
                // it for 3 GB under the fuzzer. Every claim is checked against the bytes left
                // first.
                avro_claims_fit(bytes)?;
                let mut reader = bytes;
                let value =
                    apache_avro::from_avro_datum(schema, &mut reader, None).map_err(malformed)?;
                if !reader.is_empty() {
                    return Err(malformed(format!(
                        "{} bytes after the record",
                        reader.len()
                    )));
                }
                apache_avro::from_value(&value).map_err(malformed)
            }
        }
    }
}

/// Walks an Avro datum of [`AVRO_SCHEMA`] without building anything, checking that every
/// length and count it claims fits in the bytes left (an array item is at least one byte):
/// what makes apache-avro's decoding of it bounded by its size.
fn avro_claims_fit(bytes: &[u8]) -> Result<(), RecordError> {
    let mut c = Cursor { buf: bytes };
    let long = |c: &mut Cursor<'_>, what: &str| c.varint(what).map(zigzag_decode);
    // A negative length fails the conversion, as a length past the bytes left fails the check.
    let string = |c: &mut Cursor<'_>, what: &str| -> Result<(), RecordError> {
        let len = long(c, what)?;
        c.take(len, what).map(|_| ())
    };
    string(&mut c, "user_name")?;
    long(&mut c, "favourite_number")?;
    let mut total: u64 = 0;
    loop {
        let count = long(&mut c, "interests")?;
        if count == 0 {
            break;
        }
        if count < 0 {
            // A negative count is followed by the block's size in bytes.
            long(&mut c, "interests' block size")?;
        }
        let items = count.unsigned_abs();
        total = total.saturating_add(items);
        if items > c.buf.len() as u64 || total > MAX_INTERESTS as u64 {
            return Err(malformed(format!(
                "interests: {items} claimed ({total} in all), {} bytes left, at most \
                 {MAX_INTERESTS}",
                c.buf.len()
            )));
        }
        for _ in 0..items {
            string(&mut c, "an interest")?;
        }
    }
    match long(&mut c, "address")? {
        0 => {}
        1 => {
            string(&mut c, "street")?;
            string(&mut c, "city")?;
        }
        b => return Err(malformed(format!("address: union index {b}"))),
    }
    Ok(())
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_uvarint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn encode_positional(p: &Person, out: &mut Vec<u8>) {
    put_str(out, &p.user_name);
    put_uvarint(out, zigzag_encode(p.favourite_number));
    put_uvarint(out, p.interests.len() as u64);
    for i in &p.interests {
        put_str(out, i);
    }
    match &p.address {
        None => out.push(0),
        Some(a) => {
            out.push(1);
            put_str(out, &a.street);
            put_str(out, &a.city);
        }
    }
}

/// A reader over the positional layout: every length is checked against what is left.
struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn varint(&mut self, what: &str) -> Result<u64, RecordError> {
        let (v, n) = get_uvarint(self.buf).map_err(|e| malformed(format!("{what}: {e}")))?;
        self.buf = &self.buf[n..];
        Ok(v)
    }

    /// The next `len` bytes, if that many are left (a claimed length is never trusted).
    fn take(
        &mut self,
        len: impl TryInto<usize> + fmt::Display + Copy,
        what: &str,
    ) -> Result<&'a [u8], RecordError> {
        let n = len
            .try_into()
            .ok()
            .filter(|&l| l <= self.buf.len())
            .ok_or_else(|| {
                malformed(format!(
                    "{what}: {len} bytes claimed, {} left",
                    self.buf.len()
                ))
            })?;
        let (s, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(s)
    }

    fn string(&mut self, what: &str) -> Result<String, RecordError> {
        let len = self.varint(what)?;
        let s = self.take(len, what)?;
        String::from_utf8(s.to_vec()).map_err(|_| malformed(format!("{what}: not UTF-8")))
    }

    fn byte(&mut self, what: &str) -> Result<u8, RecordError> {
        let (&b, rest) = self
            .buf
            .split_first()
            .ok_or_else(|| malformed(format!("{what}: the record ended")))?;
        self.buf = rest;
        Ok(b)
    }
}

fn decode_positional(bytes: &[u8]) -> Result<Person, RecordError> {
    let mut c = Cursor { buf: bytes };
    let user_name = c.string("user_name")?;
    let favourite_number = zigzag_decode(c.varint("favourite_number")?);
    let count = c.varint("interests")?;
    // Each string takes at least its length byte: a count above the bytes left is a lie, and
    // reserving for it would let four bytes ask for gigabytes.
    if count > c.buf.len() as u64 || count > MAX_INTERESTS as u64 {
        return Err(malformed(format!(
            "interests: {count} claimed, {} bytes left, at most {MAX_INTERESTS}",
            c.buf.len()
        )));
    }
    let mut interests = Vec::with_capacity(count as usize);
    for _ in 0..count {
        interests.push(c.string("an interest")?);
    }
    let address = match c.byte("address")? {
        0 => None,
        1 => Some(Address {
            street: c.string("street")?,
            city: c.string("city")?,
        }),
        b => return Err(malformed(format!("address: presence byte {b}"))),
    };
    if !c.buf.is_empty() {
        return Err(malformed(format!("{} bytes after the record", c.buf.len())));
    }
    Ok(Person {
        user_name,
        favourite_number,
        interests,
        address,
    })
}

/// How many times its size a snappy body may claim to expand to (its densest element, a
/// 3-byte copy of 64 bytes, is about 21).
const MAX_SNAPPY_RATIO: usize = 32;

/// The frame's flag byte: how the record after it is stored.
const RAW: u8 = 0;
const SNAPPY: u8 = 1;

/// Whether and when to compress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Never.
    None,
    /// Snappy for records of at least this many bytes (below, the flag says raw).
    Snappy {
        /// The smallest record compressed.
        threshold: usize,
    },
}

/// Appends `record` to `out` behind its flag byte, snappy-compressed if `compression` says
/// so and it is long enough (and only if that makes it shorter: incompressible bytes go as
/// they are).
pub fn frame(record: &[u8], compression: Compression, out: &mut Vec<u8>) {
    if let Compression::Snappy { threshold } = compression {
        if record.len() >= threshold {
            if let Ok(packed) = snap::raw::Encoder::new().compress_vec(record) {
                if packed.len() < record.len() {
                    out.push(SNAPPY);
                    out.extend_from_slice(&packed);
                    return;
                }
            }
        }
    }
    out.push(RAW);
    out.extend_from_slice(record);
}

/// The record inside `frame` (as [`frame`] wrote it), decompressed if it was: refused before
/// decompressing if it claims more than `limit` bytes.
pub fn unframe(frame: &[u8], limit: usize) -> Result<std::borrow::Cow<'_, [u8]>, RecordError> {
    let (&flag, body) = frame.split_first().ok_or(RecordError::Empty)?;
    match flag {
        RAW => Ok(std::borrow::Cow::Borrowed(body)),
        SNAPPY => {
            let claimed = snap::raw::decompress_len(body).map_err(malformed)?;
            if claimed > limit {
                return Err(RecordError::TooLarge { claimed, limit });
            }
            // snappy's densest element, a 3-byte copy, emits at most 64 bytes: a claim past
            // 32 times the body is a lie, and decompress_vec would zero that much first.
            if claimed > body.len().saturating_mul(MAX_SNAPPY_RATIO) {
                return Err(malformed(format!(
                    "snappy claims {claimed} bytes from {}: more than {MAX_SNAPPY_RATIO} times",
                    body.len()
                )));
            }
            snap::raw::Decoder::new()
                .decompress_vec(body)
                .map(std::borrow::Cow::Owned)
                .map_err(malformed)
        }
        other => Err(RecordError::UnknownCompression(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn book_person() -> Person {
        // The book's `Person` (user_name, favourite_number, interests), filled in.
        Person {
            user_name: "Martin".into(),
            favourite_number: 1337,
            interests: vec!["daydreaming".into(), "hacking".into()],
            address: None,
        }
    }

    #[test]
    fn the_schema_parses() {
        assert!(apache_avro::Schema::parse_str(AVRO_SCHEMA).is_ok());
    }

    #[test]
    fn names_parse_and_print() {
        for f in Format::ALL {
            assert_eq!(f.to_string().parse::<Format>(), Ok(f));
        }
        assert!("xml".parse::<Format>().is_err());
    }

    fn strategy() -> impl Strategy<Value = Person> {
        // Any string: control characters, NUL and private-use included.
        let text = any::<String>;
        (
            text(),
            any::<i64>(),
            prop::collection::vec(text(), 0..40),
            prop::option::of((text(), text())),
        )
            .prop_map(|(user_name, favourite_number, interests, address)| Person {
                user_name,
                favourite_number,
                interests,
                address: address.map(|(street, city)| Address { street, city }),
            })
    }

    proptest! {
        /// Every format gives back what it was given: negative numbers through zigzag,
        /// empty and long lists, no address and a nested one, any Unicode.
        #[test]
        fn every_format_round_trips(p in strategy()) {
            for f in Format::ALL {
                let codec = RecordCodec::new(f);
                let mut out = Vec::new();
                codec.encode(&p, &mut out).expect("encodes");
                prop_assert_eq!(codec.decode(&out).expect("decodes"), p.clone(), "{}", f);
            }
        }

        /// Framed, with and without snappy, at any threshold: the record comes back.
        #[test]
        fn frames_round_trip(record in prop::collection::vec(any::<u8>(), 0..2000), threshold in 0usize..3000) {
            for compression in [Compression::None, Compression::Snappy { threshold }] {
                let mut out = Vec::new();
                frame(&record, compression, &mut out);
                let back = unframe(&out, 1 << 20).expect("unframes");
                prop_assert_eq!(back.as_ref(), &record[..]);
            }
        }

        /// What RECORD does, client to server and back, in every format and compression:
        /// the same record with its number one higher (wrapping), compressed when the
        /// request was.
        #[test]
        fn a_record_round_trips_through_the_answer(p in strategy(), threshold in 0usize..400) {
            for f in Format::ALL {
                let codec = RecordCodec::new(f);
                for compression in [Compression::None, Compression::Snappy { threshold }] {
                    let (mut scratch, mut request, mut reply) = (Vec::new(), Vec::new(), Vec::new());
                    codec.request(&p, compression, &mut scratch, &mut request).expect("encodes");
                    codec.answer(&request, 1 << 20, &mut reply).expect("answers");
                    let mut expected = p.clone();
                    expected.favourite_number = p.favourite_number.wrapping_add(1);
                    prop_assert_eq!(codec.reply(&reply, 1 << 20).expect("reads"), expected);
                    prop_assert!(reply[0] <= request[0], "{} {:?}: flag {} for {}", f, compression, reply[0], request[0]);
                }
            }
        }

        /// Arbitrary bytes never panic a decoder: an error or a record, nothing else.
        #[test]
        fn arbitrary_bytes_are_an_error_or_a_record(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            for f in Format::ALL {
                let _ = RecordCodec::new(f).decode(&bytes);
            }
            let _ = unframe(&bytes, 1 << 16);
        }
    }

    /// RECORD's answer refuses what cannot be read, with the error a client is told.
    #[test]
    fn an_answer_refuses_bad_frames() {
        let codec = RecordCodec::new(Format::Protobuf);
        let mut out = Vec::new();
        assert_eq!(
            codec.answer(&[7, 1, 2], 1 << 20, &mut out),
            Err(RecordError::UnknownCompression(7))
        );
        assert_eq!(
            codec.answer(&[], 1 << 20, &mut out),
            Err(RecordError::Empty)
        );
        // A snappy body claiming 2^30 bytes, in 6 bytes.
        let mut bomb = vec![SNAPPY];
        put_uvarint(&mut bomb, 1 << 30);
        bomb.push(0);
        assert_eq!(
            codec.answer(&bomb, 1 << 20, &mut out),
            Err(RecordError::TooLarge {
                claimed: 1 << 30,
                limit: 1 << 20
            })
        );
        assert!(matches!(
            codec.answer(&[RAW, 0xff, 0xff], 1 << 20, &mut out),
            Err(RecordError::Malformed(_))
        ));
        assert!(out.is_empty(), "nothing is written for a refused record");
    }

    /// The extremes of zigzag, and a list of 10 000 interests.
    #[test]
    fn extremes_round_trip() {
        for n in [i64::MIN, -1, 0, 1, i64::MAX] {
            let mut p = book_person();
            p.favourite_number = n;
            p.interests = (0..10_000).map(|i| format!("interest {i}")).collect();
            p.address = Some(Address {
                street: "1 Rue".into(),
                city: "Paris".into(),
            });
            for f in Format::ALL {
                let codec = RecordCodec::new(f);
                let mut out = Vec::new();
                codec.encode(&p, &mut out).expect("encodes");
                assert_eq!(codec.decode(&out).expect("decodes"), p, "{f} {n}");
            }
        }
    }

    /// A positional record claiming 2^32 interests in a few bytes is refused before anything
    /// is reserved; a truncated string and trailing bytes are errors.
    #[test]
    fn lying_lengths_are_refused() {
        let mut b = Vec::new();
        put_str(&mut b, "x");
        put_uvarint(&mut b, zigzag_encode(5));
        put_uvarint(&mut b, 1 << 32);
        let e = RecordCodec::new(Format::Positional).decode(&b);
        assert!(
            matches!(e, Err(RecordError::Malformed(ref m)) if m.contains("interests")),
            "{e:?}"
        );
        let mut b = Vec::new();
        put_uvarint(&mut b, 100);
        b.extend_from_slice(b"short");
        assert!(RecordCodec::new(Format::Positional).decode(&b).is_err());
        let mut b = Vec::new();
        encode_positional(&book_person(), &mut b);
        b.push(0);
        assert!(RecordCodec::new(Format::Positional).decode(&b).is_err());
    }

    /// An Avro datum of a few bytes claiming 60 million interests is refused before
    /// apache-avro reserves anything for them (the fuzzer's find: it asked for 3 GB).
    #[test]
    fn an_avro_count_past_the_bytes_left_is_refused() {
        let mut b = Vec::new();
        put_uvarint(&mut b, zigzag_encode(1));
        b.push(b'x');
        put_uvarint(&mut b, zigzag_encode(7));
        put_uvarint(&mut b, zigzag_encode(60_000_000));
        b.extend_from_slice(&[0, 0]);
        let e = RecordCodec::new(Format::Avro).decode(&b);
        assert!(
            matches!(e, Err(RecordError::Malformed(ref m)) if m.contains("interests")),
            "{e:?}"
        );
        // A negative count (a block with its size) is checked the same way.
        let mut b = Vec::new();
        put_uvarint(&mut b, zigzag_encode(0));
        put_uvarint(&mut b, zigzag_encode(7));
        put_uvarint(&mut b, zigzag_encode(-60_000_000));
        put_uvarint(&mut b, zigzag_encode(10));
        assert!(RecordCodec::new(Format::Avro).decode(&b).is_err());
    }

    /// More interests than [`MAX_INTERESTS`] are refused in every format, honest or not.
    #[test]
    fn too_many_interests_are_refused_in_every_format() {
        let mut p = book_person();
        p.interests = vec![String::new(); MAX_INTERESTS + 1];
        for f in Format::ALL {
            let codec = RecordCodec::new(f);
            let mut out = Vec::new();
            codec.encode(&p, &mut out).expect("encodes");
            let e = codec.decode(&out);
            assert!(
                matches!(e, Err(RecordError::Malformed(ref m)) if m.contains("65536")),
                "{f}: {e:?}"
            );
        }
    }

    /// A snappy frame whose header claims 3 GiB is refused by its claim, before a byte is
    /// decompressed; an unknown flag and an empty frame are errors of their own.
    #[test]
    fn a_decompression_bomb_is_refused_by_its_claim() {
        let mut bomb = vec![SNAPPY];
        put_uvarint(&mut bomb, 3 << 30);
        bomb.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(
            unframe(&bomb, 1 << 20),
            Err(RecordError::TooLarge {
                claimed: 3 << 30,
                limit: 1 << 20
            })
        );
        assert_eq!(
            unframe(&[7, 1, 2, 3], 1 << 20),
            Err(RecordError::UnknownCompression(7))
        );
        assert_eq!(unframe(&[], 1 << 20), Err(RecordError::Empty));
        // Within the limit, but more than snappy could make of 4 bytes: refused before the
        // claimed megabyte is zeroed.
        let mut liar = vec![SNAPPY];
        put_uvarint(&mut liar, 1 << 20);
        liar.extend_from_slice(&[0, 0, 0, 0]);
        let e = unframe(&liar, 1 << 21);
        assert!(
            matches!(e, Err(RecordError::Malformed(ref m)) if m.contains("32 times")),
            "{e:?}"
        );
        // Below the threshold, or incompressible, a record goes raw.
        let mut out = Vec::new();
        frame(b"abc", Compression::Snappy { threshold: 10 }, &mut out);
        assert_eq!(out[0], RAW);
        let mut out = Vec::new();
        frame(
            &[b'a'; 1000],
            Compression::Snappy { threshold: 10 },
            &mut out,
        );
        assert_eq!(out[0], SNAPPY);
        assert!(out.len() < 100, "1000 equal bytes compress: {}", out.len());
    }

    /// A connection's Avro schema must be this codec's, up to whitespace; another field or
    /// type is a mismatch, and so is none at all.
    #[test]
    fn an_avro_schema_mismatch_is_refused() {
        let spaced = AVRO_SCHEMA.replace('\n', " ");
        assert!(RecordCodec::agreed(Format::Avro, Some(&spaced)).is_ok());
        let other = AVRO_SCHEMA.replace("\"long\"", "\"int\"");
        assert_eq!(
            RecordCodec::agreed(Format::Avro, Some(&other)).err(),
            Some(RecordError::SchemaMismatch)
        );
        assert_eq!(
            RecordCodec::agreed(Format::Avro, None).err(),
            Some(RecordError::SchemaMismatch)
        );
        assert!(
            RecordCodec::agreed(Format::Json, None).is_ok(),
            "JSON needs no schema"
        );
        assert_eq!(
            RecordCodec::agreed(Format::Protobuf, Some(AVRO_SCHEMA)).err(),
            Some(RecordError::UnexpectedSchema(Format::Protobuf))
        );
        // A schema apache-avro's own parser panics on (apache/avro-rs#547) is a mismatch
        // here, not a crash: the peer's schema never reaches that parser.
        let hostile = r#"{"type":"record","name":"R","aliases":[":"],"fields":[]}"#;
        assert_eq!(
            RecordCodec::agreed(Format::Avro, Some(hostile)).err(),
            Some(RecordError::SchemaMismatch)
        );
        assert_eq!(
            RecordCodec::agreed(Format::Avro, Some("not json")).err(),
            Some(RecordError::SchemaMismatch)
        );
    }

    fn hex(bytes: &[u8]) -> String {
        bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// A record of the book's `Person` in each format, byte for byte: the fixtures
    /// docs/protocol.md shows ("Records").
    #[test]
    fn the_books_record_byte_for_byte() {
        let fixtures = [
            (
                Format::Positional,
                "06 4d 61 72 74 69 6e f2 14 02 0b 64 61 79 64 72 65 61 6d 69 6e 67 07 68 61 63 6b \
                 69 6e 67 00",
            ),
            (
                Format::Protobuf,
                "0a 06 4d 61 72 74 69 6e 10 f2 14 1a 0b 64 61 79 64 72 65 61 6d 69 6e 67 1a 07 68 \
                 61 63 6b 69 6e 67",
            ),
            (
                Format::Avro,
                "0c 4d 61 72 74 69 6e f2 14 04 16 64 61 79 64 72 65 61 6d 69 6e 67 0e 68 61 63 6b \
                 69 6e 67 00 00",
            ),
        ];
        for (f, expected) in fixtures {
            let mut out = Vec::new();
            RecordCodec::new(f)
                .encode(&book_person(), &mut out)
                .expect("encodes");
            assert_eq!(hex(&out), expected, "{f}");
        }
        let mut json = Vec::new();
        RecordCodec::new(Format::Json)
            .encode(&book_person(), &mut json)
            .expect("encodes");
        assert_eq!(
            String::from_utf8(json).expect("UTF-8"),
            r#"{"user_name":"Martin","favourite_number":1337,"interests":["daydreaming","hacking"],"address":null}"#
        );
    }

    /// What structure costs in bytes, for the book's record: JSON names every field,
    /// protobuf a one-byte key per field, Avro and positional nothing.
    #[test]
    fn sizes_order_as_the_book_says() {
        let p = book_person();
        let size = |f| {
            let mut out = Vec::new();
            RecordCodec::new(f).encode(&p, &mut out).expect("encodes");
            out.len()
        };
        let (pos, json, pb, avro) = (
            size(Format::Positional),
            size(Format::Json),
            size(Format::Protobuf),
            size(Format::Avro),
        );
        assert!(
            json > pb && pb > avro,
            "json {json} protobuf {pb} avro {avro}"
        );
        assert!(
            avro <= pos + 1 && pos <= avro + 1,
            "positional {pos} avro {avro}"
        );
    }
}
