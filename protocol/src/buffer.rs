//! A read buffer that grows as bytes arrive, never by what a peer announces.
//!
//! Every reader in echolab (a blocking connection, an event-loop connection, a load-generator
//! connection) does the same dance: read whatever the kernel has into spare room at the end,
//! hand everything buffered to a decoder, drop the bytes of the messages it returned, and keep
//! the tail (half a frame) for next time. This type is that dance, written once, with no I/O
//! of its own: the caller does `read(buf.spare(n))` and reports how much landed.
//!
//! Memory is bounded by what actually arrived: a header claiming a 1 MiB body costs 4 bytes
//! until the body's bytes come. Decoders reject oversized headers before that, so a
//! connection's buffer never exceeds `max_frame` plus one read.

/// A byte buffer with a consumed prefix and spare room at the end.
#[derive(Debug, Default)]
pub struct ReadBuffer {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The capacity to shrink back to once a large message has been consumed.
    baseline: usize,
}

impl ReadBuffer {
    /// An empty buffer that will keep about `baseline` bytes of capacity when idle.
    pub fn new(baseline: usize) -> Self {
        ReadBuffer {
            buf: Vec::new(),
            start: 0,
            end: 0,
            baseline,
        }
    }

    /// The bytes received and not yet consumed.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// How many bytes are buffered.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Bytes of memory the buffer holds (for memory accounting in tests and stats).
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Spare room of at least `min` bytes to read into; pass its length to `read` and then
    /// call [`ReadBuffer::filled`] with what arrived.
    pub fn spare(&mut self, min: usize) -> &mut [u8] {
        if self.buf.len() - self.end < min {
            // Slide the unconsumed tail to the front before growing: a half frame left after
            // a big read should not make the buffer grow forever.
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.buf.len() - self.end < min {
                let want = (self.end + min).max(self.buf.len() * 2).max(self.baseline);
                self.buf
                    .resize(want.min(self.end + min.max(self.buf.len())), 0);
            }
        }
        &mut self.buf[self.end..]
    }

    /// Records that `n` bytes were written into the slice [`ReadBuffer::spare`] returned.
    ///
    /// # Panics
    /// If `n` is more than that slice's length: that would be a bug in the caller.
    pub fn filled(&mut self, n: usize) {
        assert!(
            self.end + n <= self.buf.len(),
            "filled more than the spare room"
        );
        self.end += n;
    }

    /// Appends bytes (for callers that already hold them, such as tests).
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.spare(bytes.len())[..bytes.len()].copy_from_slice(bytes);
        self.filled(bytes.len());
    }

    /// Drops the first `n` buffered bytes (a decoded message).
    pub fn consume(&mut self, n: usize) {
        assert!(n <= self.len(), "consumed more than is buffered");
        self.start += n;
        if self.start == self.end {
            // Empty: restart at the front, and give back memory a large message left behind.
            self.start = 0;
            self.end = 0;
            if self.buf.len() > self.baseline.max(1) * 4 {
                self.buf = vec![0; self.baseline];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_only_with_data_and_shrinks_back_when_drained() {
        let mut b = ReadBuffer::new(16);
        b.extend_from_slice(b"hello");
        assert_eq!(b.data(), b"hello");
        b.consume(2);
        assert_eq!(b.data(), b"llo");
        b.extend_from_slice(&[7; 1000]);
        assert_eq!(b.len(), 1003);
        assert!(b.capacity() < 4096, "{}", b.capacity());
        b.consume(1003);
        assert!(b.is_empty());
        assert_eq!(b.capacity(), 16);
    }

    #[test]
    fn spare_compacts_before_growing() {
        let mut b = ReadBuffer::new(8);
        b.extend_from_slice(b"abcdefgh");
        let cap = b.capacity();
        b.consume(6);
        let room = b.spare(6).len();
        assert!(room >= 6);
        assert_eq!(b.capacity(), cap, "compaction made room without growing");
        assert_eq!(b.data(), b"gh");
    }
}
