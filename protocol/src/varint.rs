//! Unsigned LEB128 varints (protobuf's encoding) and zigzag, the protocol's integer forms.
//!
//! Most integers on the wire are small (request ids count up from 1, `arg` is 0 for ECHO), so
//! spending 8 bytes on each would waste most of a 16-byte request. A varint spends 7 bits of
//! every byte on the value and the high bit on "another byte follows": values below 128 take
//! one byte, a full `u64` takes ten. Zigzag maps signed values onto unsigned ones so that small
//! negative numbers stay short too (`-1` becomes `1`, not `u64::MAX`); v1 has no signed field
//! yet, but the book's protocol chapter describes both, and the next field will want it.
//!
//! This is protobuf's varint, *not* HdrHistogram's 9-byte variant: a tenth byte is allowed,
//! and may only carry the single bit that a `u64` has left (bit 63).

use std::fmt;

/// The longest varint a `u64` can need: ceil(64 / 7) bytes.
pub const MAX_VARINT_LEN: usize = 10;

/// Why a varint could not be read. The field name is attached by the caller
/// (see [`crate::ProtocolError::Varint`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarintError {
    /// The input ended while the last byte read still had its continuation bit set.
    Truncated,
    /// The tenth byte has its continuation bit set: no `u64` needs an eleventh byte.
    TooLong,
    /// The tenth byte carries more than bit 63, so the value does not fit in a `u64`.
    Overflow,
}

impl fmt::Display for VarintError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VarintError::Truncated => "truncated varint (body ended inside it)",
            VarintError::TooLong => "varint longer than 10 bytes",
            VarintError::Overflow => "varint value exceeds u64::MAX",
        })
    }
}

impl std::error::Error for VarintError {}

/// How many bytes [`put_uvarint`] writes for `value`.
///
/// ```
/// use echolab_protocol::varint::uvarint_len;
/// assert_eq!(uvarint_len(0), 1);
/// assert_eq!(uvarint_len(127), 1);
/// assert_eq!(uvarint_len(128), 2);
/// assert_eq!(uvarint_len(u64::MAX), 10);
/// ```
pub fn uvarint_len(value: u64) -> usize {
    // Bits needed (at least one, so that 0 takes a byte), seven per byte, rounded up.
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Appends `value` as an unsigned LEB128 varint.
///
/// ```
/// use echolab_protocol::varint::put_uvarint;
/// let mut out = Vec::new();
/// put_uvarint(&mut out, 300);
/// assert_eq!(out, [0xAC, 0x02]);
/// ```
pub fn put_uvarint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads an unsigned LEB128 varint from the start of `buf`.
///
/// Returns the value and how many bytes it took. The caller knows whether more bytes could
/// still arrive; inside a complete frame body, [`VarintError::Truncated`] means malformed.
///
/// ```
/// use echolab_protocol::varint::{get_uvarint, VarintError};
/// assert_eq!(get_uvarint(&[0xAC, 0x02, 0xFF]), Ok((300, 2)));
/// assert_eq!(get_uvarint(&[0x80]), Err(VarintError::Truncated));
/// ```
pub fn get_uvarint(buf: &[u8]) -> Result<(u64, usize), VarintError> {
    let mut value: u64 = 0;
    for (i, &byte) in buf.iter().enumerate() {
        if i == MAX_VARINT_LEN - 1 {
            // The tenth byte holds bit 63 and nothing else.
            if byte & 0x80 != 0 {
                return Err(VarintError::TooLong);
            }
            if byte > 1 {
                return Err(VarintError::Overflow);
            }
        }
        value |= u64::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    Err(VarintError::Truncated)
}

/// Maps a signed value onto an unsigned one so that small magnitudes stay small:
/// 0, -1, 1, -2, 2 ... become 0, 1, 2, 3, 4 ...
///
/// ```
/// use echolab_protocol::varint::{zigzag_encode, zigzag_decode};
/// assert_eq!(zigzag_encode(-1), 1);
/// assert_eq!(zigzag_encode(1), 2);
/// assert_eq!(zigzag_encode(i64::MIN), u64::MAX);
/// assert_eq!(zigzag_decode(zigzag_encode(-12345)), -12345);
/// ```
pub fn zigzag_encode(value: i64) -> u64 {
    // The arithmetic shift smears the sign bit over all 64 bits: XOR with it flips the
    // magnitude of negative numbers, and the shifted-in low bit records the sign.
    ((value << 1) ^ (value >> 63)) as u64
}

/// The inverse of [`zigzag_encode`].
pub fn zigzag_decode(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

/// Appends `value` zigzag-encoded as a varint: the protocol's signed integer form.
pub fn put_svarint(out: &mut Vec<u8>, value: i64) {
    put_uvarint(out, zigzag_encode(value));
}

/// Reads a zigzag varint written by [`put_svarint`].
pub fn get_svarint(buf: &[u8]) -> Result<(i64, usize), VarintError> {
    get_uvarint(buf).map(|(v, n)| (zigzag_decode(v), n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        put_uvarint(&mut out, v);
        out
    }

    #[test]
    fn boundaries_encode_to_the_protobuf_bytes() {
        assert_eq!(encode(0), [0x00]);
        assert_eq!(encode(1), [0x01]);
        assert_eq!(encode(127), [0x7F]);
        assert_eq!(encode(128), [0x80, 0x01]);
        assert_eq!(encode(16_383), [0xFF, 0x7F]);
        assert_eq!(encode(16_384), [0x80, 0x80, 0x01]);
        assert_eq!(
            encode(u64::MAX),
            [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]
        );
    }

    #[test]
    fn len_matches_encoding_at_every_7_bit_boundary() {
        for shift in 0..64 {
            for v in [1u64 << shift, (1u64 << shift) - 1, (1u64 << shift) + 1] {
                assert_eq!(uvarint_len(v), encode(v).len(), "value {v}");
                assert_eq!(get_uvarint(&encode(v)), Ok((v, encode(v).len())));
            }
        }
    }

    #[test]
    fn eleventh_byte_is_too_long() {
        let mut bytes = vec![0xFF; 10];
        bytes.push(0x01);
        assert_eq!(get_uvarint(&bytes), Err(VarintError::TooLong));
    }

    #[test]
    fn tenth_byte_above_one_overflows() {
        let mut bytes = vec![0xFF; 9];
        bytes.push(0x02);
        assert_eq!(get_uvarint(&bytes), Err(VarintError::Overflow));
        // ...whereas 0x01 there is exactly u64::MAX.
        bytes[9] = 0x01;
        assert_eq!(get_uvarint(&bytes), Ok((u64::MAX, 10)));
    }

    #[test]
    fn non_minimal_encodings_are_accepted() {
        // protobuf accepts padded varints (0x80 0x00 is 0); so do we, within 10 bytes.
        assert_eq!(get_uvarint(&[0x80, 0x00]), Ok((0, 2)));
    }

    #[test]
    fn truncated_inputs() {
        assert_eq!(get_uvarint(&[]), Err(VarintError::Truncated));
        assert_eq!(get_uvarint(&[0xFF, 0xFF]), Err(VarintError::Truncated));
    }

    #[test]
    fn zigzag_table() {
        let table = [
            (0i64, 0u64),
            (-1, 1),
            (1, 2),
            (-2, 3),
            (2, 4),
            (i64::MAX, u64::MAX - 1),
            (i64::MIN, u64::MAX),
        ];
        for (s, u) in table {
            assert_eq!(zigzag_encode(s), u);
            assert_eq!(zigzag_decode(u), s);
        }
        let mut out = Vec::new();
        put_svarint(&mut out, -64);
        assert_eq!(out, [0x7F]);
        assert_eq!(get_svarint(&out), Ok((-64, 1)));
    }
}
