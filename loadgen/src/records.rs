//! `--op record`: what each request's record is, and how its reply is checked.
//!
//! Each request carries the book's `Person` ([`echolab_protocol::record`]) in the format the
//! connection's HELLO agreed; the server decodes it, adds 1 to its number and encodes it
//! back. So both sides pay for the structure on every request, as they do in real RPC, and
//! the reply proves the server read the record: its number is the request's plus one, the
//! rest unchanged.
//!
//! The request's number comes from its id, negated for odd ids, so zigzag carries negative
//! numbers as often as positive ones; with the id the binary reply carries, it ties a reply to
//! its request. Three shapes
//! (`--record`): the book's record, the same with a nested address, and a large one with 512
//! interests. Two kinds of content (`--entropy`): words from a small vocabulary, which snappy
//! compresses well, or random letters and digits of the same lengths, which it cannot (snappy
//! finds repeats; it does no entropy coding).

use clap::ValueEnum;
use echolab_protocol::record::{Address, Compression, Format, Person, RecordCodec};
use serde::Serialize;

/// `--record`: the record's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    /// The book's `Person`: a name, a number, two interests (about 30 to 80 bytes).
    Book,
    /// The book's record with a nested `Address` message.
    Nested,
    /// A name, a number, 512 interests of 6 to 22 bytes, and an address (about 7 to 8 KB).
    Large,
}

/// `--entropy`: what the record's strings are made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Entropy {
    /// Words from a vocabulary of sixteen: repetitive, as real records often are.
    Low,
    /// Random letters and digits, of the same lengths as the words.
    High,
}

/// `--compress`: whether records are snappy-compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compress {
    /// Never.
    None,
    /// Records of at least `--compress-threshold` bytes.
    Snappy,
}

/// `--compress-threshold` when none is given: below a few hundred bytes snappy saves little
/// and its frame's header eats part of that (docs/protocol.md, "Records").
pub const DEFAULT_THRESHOLD: usize = 256;

/// What `--op record` sends: the parameters of the run's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RecordSpec {
    /// How records are laid out.
    pub format: Format,
    /// Their shape.
    pub shape: Shape,
    /// Their content.
    pub entropy: Entropy,
    /// Whether they are compressed.
    pub compress: Compress,
    /// The smallest record compressed, in bytes (with `compress` snappy).
    pub threshold: usize,
}

impl Default for RecordSpec {
    fn default() -> Self {
        RecordSpec {
            format: Format::Positional,
            shape: Shape::Book,
            entropy: Entropy::Low,
            compress: Compress::None,
            threshold: DEFAULT_THRESHOLD,
        }
    }
}

impl RecordSpec {
    /// The compression each request asks for.
    pub fn compression(&self) -> Compression {
        match self.compress {
            Compress::None => Compression::None,
            Compress::Snappy => Compression::Snappy {
                threshold: self.threshold,
            },
        }
    }

    /// The record every request carries, before its number is set.
    pub fn template(&self) -> Person {
        let mut text = Text::new(self.entropy);
        let mut p = Person {
            user_name: text.word(0),
            favourite_number: 0,
            interests: vec![text.word(1), text.word(2)],
            address: None,
        };
        if self.shape != Shape::Book {
            p.address = Some(Address {
                street: text.word(3),
                city: text.word(4),
            });
        }
        if self.shape == Shape::Large {
            p.interests = (0..512).map(|i| text.word(i)).collect();
        }
        p
    }
}

/// The number request `id` carries: its last three decimal digits, negated when the id is
/// odd. Small, as a favourite number is (the book's is 1337): a run's ids carry the slot in
/// their high bits, and a number of 2^40 would weigh 6 bytes as a varint where the book's
/// weighs 2.
pub fn number(id: u64) -> i64 {
    let n = (id % 1000) as i64;
    if id % 2 == 1 {
        -n
    } else {
        n
    }
}

/// The record strings of one run: the vocabulary's words, or random ones of their lengths.
struct Text {
    entropy: Entropy,
    /// xorshift64*'s state: a fixed seed, so two runs send the same records.
    state: u64,
}

/// Sixteen words, 6 to 22 bytes long: the first three are the book's record.
const VOCABULARY: [&str; 16] = [
    "Martin",
    "daydreaming",
    "hacking",
    "742 Evergreen Terrace",
    "Springfield",
    "compilers",
    "sailing",
    "chess openings",
    "mountain biking",
    "functional programming",
    "jazz piano",
    "bread baking",
    "astronomy",
    "operating systems",
    "birdwatching",
    "linguistics",
];

impl Text {
    fn new(entropy: Entropy) -> Text {
        Text {
            entropy,
            state: 0x9e37_79b9_7f4a_7c15,
        }
    }

    /// Word `i`: the vocabulary's, or as many random letters and digits.
    fn word(&mut self, i: usize) -> String {
        let w = VOCABULARY[i % VOCABULARY.len()];
        match self.entropy {
            Entropy::Low => w.to_string(),
            Entropy::High => (0..w.len()).map(|_| self.alphanumeric()).collect(),
        }
    }

    fn alphanumeric(&mut self) -> char {
        const SET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        let r = self.state.wrapping_mul(0x2545_f491_4f6c_dd1d);
        char::from(SET[(r >> 32) as usize % SET.len()])
    }
}

/// A run's records: the codec, the compression, and the template each request fills in.
#[derive(Debug)]
pub struct Records {
    spec: RecordSpec,
    codec: RecordCodec,
    template: Person,
}

/// Per-thread buffers for encoding records, so a request allocates nothing of its own: the
/// template's copy (whose number each request sets) and the encoded record before framing.
#[derive(Debug, Default)]
pub struct RecordScratch {
    person: Option<Person>,
    encoded: Vec<u8>,
}

impl Records {
    /// The records `spec` describes.
    pub fn new(spec: RecordSpec) -> Records {
        Records {
            spec,
            codec: RecordCodec::new(spec.format),
            template: spec.template(),
        }
    }

    /// Its parameters.
    pub fn spec(&self) -> &RecordSpec {
        &self.spec
    }

    /// Appends request `id`'s record frame (the payload of its RECORD) to `out`.
    pub fn request(
        &self,
        id: u64,
        scratch: &mut RecordScratch,
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        let p = scratch.person.get_or_insert_with(|| self.template.clone());
        p.favourite_number = number(id);
        self.codec
            .request(p, self.spec.compression(), &mut scratch.encoded, out)
            .map_err(|e| e.to_string())
    }

    /// Checks a RECORD reply's payload against request `id`: the template with the number
    /// plus one. `None` if it is right, else what is wrong.
    pub fn check(&self, id: u64, payload: &[u8], limit: usize) -> Option<String> {
        let got = match self.codec.reply(payload, limit) {
            Ok(p) => p,
            Err(e) => return Some(format!("the reply to {id} is not a record: {e}")),
        };
        let expected = number(id).wrapping_add(1);
        let t = &self.template;
        if got.favourite_number != expected {
            Some(format!(
                "the reply to {id} has number {} where {expected} was expected",
                got.favourite_number
            ))
        } else if got.user_name != t.user_name
            || got.interests != t.interests
            || got.address != t.address
        {
            Some(format!(
                "the reply to {id} is not the record sent (its strings differ)"
            ))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_alternate_sign_and_stay_in_range() {
        assert_eq!(number(0), 0);
        assert_eq!(number(1), -1);
        assert_eq!(number(2), 2);
        assert_eq!(number(1337), -337);
        assert!(
            number((5 << 40) | 2).abs() < 1000,
            "small, whatever the slot"
        );
    }

    #[test]
    fn entropy_keeps_lengths_and_changes_compressibility() {
        let spec = |entropy| RecordSpec {
            shape: Shape::Large,
            entropy,
            ..RecordSpec::default()
        };
        let (low, high) = (
            spec(Entropy::Low).template(),
            spec(Entropy::High).template(),
        );
        assert_eq!(low.interests.len(), 512);
        let lens = |p: &Person| p.interests.iter().map(String::len).collect::<Vec<_>>();
        assert_eq!(lens(&low), lens(&high));
        let packed = |p: &Person| {
            let mut raw = Vec::new();
            RecordCodec::new(Format::Positional)
                .encode(p, &mut raw)
                .expect("encodes");
            let mut framed = Vec::new();
            echolab_protocol::record::frame(
                &raw,
                Compression::Snappy { threshold: 0 },
                &mut framed,
            );
            framed.len() as f64 / raw.len() as f64
        };
        assert!(packed(&low) < 0.2, "low entropy packs to {}", packed(&low));
        assert!(
            packed(&high) > 0.9,
            "high entropy packs to {}",
            packed(&high)
        );
    }

    #[test]
    fn a_reply_checks_against_its_request() {
        for format in Format::ALL {
            for shape in [Shape::Book, Shape::Nested, Shape::Large] {
                let r = Records::new(RecordSpec {
                    format,
                    shape,
                    compress: Compress::Snappy,
                    ..RecordSpec::default()
                });
                let (mut scratch, mut req, mut reply) =
                    (RecordScratch::default(), Vec::new(), Vec::new());
                r.request(7, &mut scratch, &mut req).expect("encodes");
                RecordCodec::new(format)
                    .answer(&req, 1 << 20, &mut reply)
                    .expect("answers");
                assert_eq!(r.check(7, &reply, 1 << 20), None, "{format} {shape:?}");
                let why = r.check(9, &reply, 1 << 20).expect("another id's reply");
                assert!(why.contains("number -6 where -8"), "{why}");
                // The request itself, echoed, has the old number.
                assert!(r.check(7, &req, 1 << 20).is_some());
            }
        }
    }
}
