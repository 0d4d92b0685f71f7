//! Length-prefixed framing, the one copy that binary v1 and the book's JSON protocol share: a
//! 4-byte body length, then the body.
//!
//! The two protocols delimit messages the same way and differ only in the prefix's byte order
//! (binary: big-endian, network order; JSON: little-endian, because the book packs it with
//! Python's native-order `struct.pack("I", ...)`). The byte order is therefore a parameter
//! here, not a reason for a second copy. That matters because the prefix is the one field a
//! receiver must distrust most: it decides how much a server buffers for a peer it knows
//! nothing about. The `max_frame` check lives in this file once, so tightening or fixing it
//! changes both protocols, and a reader auditing the limit has one place to read.
//!
//! The check is made on the four prefix bytes alone, before a single body byte is waited for,
//! so a prefix claiming 4 GiB costs the server four bytes, not four gigabytes. The encoders
//! apply the same limit, so a client refuses to send what its peer would refuse to read.
//!
//! Like the rest of the crate this is sans-IO: it finds bodies in a byte slice and appends
//! frames to a `Vec`; the caller owns the buffers and the socket.

use crate::ProtocolError;

/// Bytes in the length prefix.
pub const PREFIX_LEN: usize = 4;

/// The byte order of the length prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteOrder {
    /// Most significant byte first, network order: binary v1.
    Big,
    /// Least significant byte first: the book's JSON protocol.
    Little,
}

impl ByteOrder {
    fn read(self, prefix: [u8; PREFIX_LEN]) -> u32 {
        match self {
            ByteOrder::Big => u32::from_be_bytes(prefix),
            ByteOrder::Little => u32::from_le_bytes(prefix),
        }
    }

    fn write(self, len: u32) -> [u8; PREFIX_LEN] {
        match self {
            ByteOrder::Big => len.to_be_bytes(),
            ByteOrder::Little => len.to_le_bytes(),
        }
    }
}

/// A 4-byte length prefix in one byte order, and the largest body it lets through.
#[derive(Debug, Clone)]
pub struct LengthPrefix {
    order: ByteOrder,
    max_frame: usize,
}

impl LengthPrefix {
    /// Framing for bodies of `1..=max_frame` bytes. `max_frame` is capped at `u32::MAX`, the
    /// largest length the prefix can state, so every length that passes the check can be
    /// written without truncating.
    pub fn new(order: ByteOrder, max_frame: usize) -> Self {
        LengthPrefix {
            order,
            max_frame: max_frame.min(u32::MAX as usize),
        }
    }

    /// The largest body accepted or sent, in bytes.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Whether a body of `body_len` bytes is within `max_frame`. The only comparison with the
    /// limit: decoding and encoding both come through here.
    pub fn fits(&self, body_len: usize) -> bool {
        body_len <= self.max_frame
    }

    fn check(&self, body_len: usize) -> Result<(), ProtocolError> {
        if self.fits(body_len) {
            Ok(())
        } else {
            Err(ProtocolError::FrameTooLarge {
                len: body_len as u64,
                max: self.max_frame,
            })
        }
    }

    /// The body of the frame at the start of `buf`, or `None` while the prefix or the body
    /// is still partial (read more and call again with everything). The frame occupies
    /// [`PREFIX_LEN`] plus the body's length bytes of `buf`.
    ///
    /// A length of 0 or over `max_frame` is an error as soon as the prefix is complete: the
    /// stream can no longer be trusted, and waiting for the body would mean buffering it.
    pub fn split<'a>(&self, buf: &'a [u8]) -> Result<Option<&'a [u8]>, ProtocolError> {
        let Some(prefix) = buf.first_chunk::<PREFIX_LEN>() else {
            return Ok(None);
        };
        let len = self.order.read(*prefix) as usize;
        if len == 0 {
            return Err(ProtocolError::EmptyFrame {
                max: self.max_frame,
            });
        }
        self.check(len)?;
        Ok(buf.get(PREFIX_LEN..PREFIX_LEN + len))
    }

    /// Appends the prefix of a body of `body_len` bytes, which the caller appends next. For
    /// encoders that know the length up front: an oversized body is refused, with nothing
    /// written, before any of it is copied.
    pub fn put_prefix(&self, out: &mut Vec<u8>, body_len: usize) -> Result<(), ProtocolError> {
        self.check(body_len)?;
        // check() passed and max_frame <= u32::MAX, so this cannot truncate.
        out.extend_from_slice(&self.order.write(body_len as u32));
        Ok(())
    }

    /// Appends a frame whose body `body` writes straight into `out`, patching the prefix in
    /// afterwards. For encoders that only learn the length by serialising (JSON): the body is
    /// written once, in place, instead of into a scratch buffer and then copied. A body over
    /// `max_frame` is taken back out, leaving `out` as it was.
    pub fn put_frame(
        &self,
        out: &mut Vec<u8>,
        body: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), ProtocolError> {
        let start = out.len();
        let len = self.write_unpatched(out, body);
        if let Err(e) = self.check(len) {
            out.truncate(start);
            return Err(e);
        }
        self.patch(out, start, len);
        Ok(())
    }

    /// [`put_frame`](Self::put_frame) without the limit, for the one frame that must go out
    /// even when it is too long: a server's error reply, which is how the client learns what
    /// went wrong (under a tiny `--max-frame` even a status byte and an id may not fit).
    pub fn put_frame_unlimited(&self, out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
        let start = out.len();
        let len = self.write_unpatched(out, body);
        self.patch(out, start, len);
    }

    /// Writes a placeholder prefix and the body, returning the body's length.
    fn write_unpatched(&self, out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) -> usize {
        let start = out.len();
        out.extend_from_slice(&[0; PREFIX_LEN]);
        body(out);
        out.len() - start - PREFIX_LEN
    }

    fn patch(&self, out: &mut [u8], start: usize, len: usize) {
        // Unlimited error replies are a few dozen bytes, so `as u32` does not truncate in
        // practice; checked frames are at most max_frame <= u32::MAX.
        out[start..start + PREFIX_LEN].copy_from_slice(&self.order.write(len as u32));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 300;

    fn framing(order: ByteOrder) -> LengthPrefix {
        LengthPrefix::new(order, MAX)
    }

    #[test]
    fn the_byte_order_decides_how_the_prefix_is_read() {
        // 0x0000_0102 = 258 big-endian, 0x0201_0000 = 33_619_968 little-endian.
        let mut buf = vec![0, 0, 1, 2];
        buf.extend_from_slice(&[b'x'; 258]);
        let body = framing(ByteOrder::Big).split(&buf);
        assert_eq!(body, Ok(Some(&buf[PREFIX_LEN..])));
        assert_eq!(
            framing(ByteOrder::Little).split(&buf),
            Err(ProtocolError::FrameTooLarge {
                len: 0x0201_0000,
                max: MAX
            })
        );
        // The same length little-endian, with one byte past the frame left in the buffer.
        let mut buf = vec![2, 1, 0, 0];
        buf.extend_from_slice(&[b'y'; 259]);
        let Ok(Some(body)) = framing(ByteOrder::Little).split(&buf) else {
            panic!("little-endian 258 did not split")
        };
        assert_eq!(body.len(), 258);
    }

    #[test]
    fn the_encoders_write_the_prefix_in_the_byte_order() {
        for (order, prefix) in [
            (ByteOrder::Big, [0, 0, 1, 2]),
            (ByteOrder::Little, [2, 1, 0, 0]),
        ] {
            let f = framing(order);
            let body = [b'z'; 258];
            let mut known = vec![0xAA];
            f.put_prefix(&mut known, body.len()).unwrap();
            known.extend_from_slice(&body);
            let mut patched = vec![0xAA];
            f.put_frame(&mut patched, |out| out.extend_from_slice(&body))
                .unwrap();
            assert_eq!(known[1..5], prefix, "{order:?}");
            assert_eq!(patched, known, "{order:?}");
            assert_eq!(f.split(&known[1..]), Ok(Some(&body[..])), "{order:?}");
        }
    }

    #[test]
    fn an_oversized_length_is_refused_from_the_prefix_alone() {
        for order in [ByteOrder::Big, ByteOrder::Little] {
            let f = framing(order);
            // Only the prefix: the verdict does not wait for (or buffer) any of the body.
            let prefix = order.write(MAX as u32 + 1);
            assert_eq!(
                f.split(&prefix),
                Err(ProtocolError::FrameTooLarge {
                    len: MAX as u64 + 1,
                    max: MAX
                }),
                "{order:?}"
            );
            assert_eq!(
                f.split(&[0xFF; PREFIX_LEN]).map_err(|e| e.to_string()),
                Err("frame length 4294967295 exceeds max_frame 300".to_owned())
            );
            assert_eq!(
                f.split(&[0; PREFIX_LEN]),
                Err(ProtocolError::EmptyFrame { max: MAX })
            );
            // max_frame itself is a length, not an error; the body is just not here yet.
            assert_eq!(f.split(&order.write(MAX as u32)), Ok(None), "{order:?}");
        }
    }

    #[test]
    fn partial_prefixes_and_bodies_ask_for_more() {
        for order in [ByteOrder::Big, ByteOrder::Little] {
            let f = framing(order);
            let mut buf = order.write(3).to_vec();
            buf.extend_from_slice(b"abc");
            for end in 0..buf.len() {
                assert_eq!(f.split(&buf[..end]), Ok(None), "{order:?} prefix {end}");
            }
            assert_eq!(f.split(&buf), Ok(Some(&b"abc"[..])), "{order:?}");
        }
    }

    #[test]
    fn encoders_refuse_a_body_over_max_frame_and_write_nothing() {
        let f = framing(ByteOrder::Big);
        let mut out = vec![7];
        assert_eq!(
            f.put_prefix(&mut out, MAX + 1),
            Err(ProtocolError::FrameTooLarge {
                len: MAX as u64 + 1,
                max: MAX
            })
        );
        assert_eq!(
            f.put_frame(&mut out, |out| out.resize(out.len() + MAX + 1, 0)),
            Err(ProtocolError::FrameTooLarge {
                len: MAX as u64 + 1,
                max: MAX
            })
        );
        assert_eq!(out, [7]);
        // The error-reply path sends it anyway, with the true length.
        f.put_frame_unlimited(&mut out, |out| out.resize(out.len() + MAX + 1, 0));
        assert_eq!(out[1..5], (MAX as u32 + 1).to_be_bytes());
        assert_eq!(out.len(), 1 + PREFIX_LEN + MAX + 1);
    }

    #[test]
    fn max_frame_is_capped_at_what_the_prefix_can_state() {
        let f = LengthPrefix::new(ByteOrder::Big, usize::MAX);
        assert_eq!(f.max_frame(), u32::MAX as usize);
    }
}
