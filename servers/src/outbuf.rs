//! A connection's output buffer: replies encoded and not yet taken by the kernel.
//!
//! A blocking handler writes the whole buffer at once and empties it. An event loop writes
//! only what the socket takes without blocking (and what its write budget allows), so it must
//! keep the rest, and remember how much of the buffer already went, for the next turn. Both
//! hold memory the same way, which is why the buffer is one type: once everything has been
//! sent it is emptied and shrunk back to [`OutBuf::KEEP`], so a burst of large replies does
//! not pin its memory for the connection's life; and while a client keeps taking output but
//! never quite catches up, the part already sent is dropped once it is half the buffer, so
//! the buffer does not grow for ever at its front while replies are appended at its back.

use std::io::{self, Write};

use crate::READ_CHUNK;

/// Replies waiting to be sent: `bytes[sent..]` is what is left.
#[derive(Debug, Default)]
pub struct OutBuf {
    bytes: Vec<u8>,
    sent: usize,
}

impl OutBuf {
    /// The capacity an emptied buffer keeps: the replies to one read's worth of requests fit
    /// without growing it again, and a thousand idle connections still cost little.
    pub const KEEP: usize = READ_CHUNK;

    /// Bytes appended and not yet written.
    pub fn pending(&self) -> usize {
        self.bytes.len() - self.sent
    }

    /// Whether nothing waits to be sent.
    pub fn is_empty(&self) -> bool {
        self.pending() == 0
    }

    /// The vector to encode replies into (the codecs append to a `Vec<u8>`). Append only:
    /// what is already there belongs to the buffer, sent or not.
    pub fn appender(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }

    /// Writes to a nonblocking `w` until it would block (`WouldBlock`), everything is sent,
    /// or `limit` bytes have gone; returns how many went. write(2) returns `EINTR` only
    /// before anything was written, so `Interrupted` is simply retried.
    pub fn write_to(&mut self, w: &mut impl Write, limit: usize) -> io::Result<usize> {
        let mut written = 0;
        while self.sent < self.bytes.len() && written < limit {
            let end = self
                .bytes
                .len()
                .min(self.sent.saturating_add(limit - written));
            match w.write(&self.bytes[self.sent..end]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.sent += n;
                    written += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.reclaim();
        Ok(written)
    }

    /// Writes everything to a blocking `w` (`write_all`, which retries `EINTR` itself). On an
    /// error, how much went is unknown: the caller closes the connection.
    pub fn write_all_to(&mut self, w: &mut impl Write) -> io::Result<()> {
        w.write_all(&self.bytes[self.sent..])?;
        self.sent = self.bytes.len();
        self.reclaim();
        Ok(())
    }

    /// The memory policy of the module docs, after each write.
    fn reclaim(&mut self) {
        if self.sent == self.bytes.len() {
            self.bytes.clear();
            self.sent = 0;
            self.bytes.shrink_to(Self::KEEP);
        } else if self.sent >= Self::KEEP && self.sent * 2 >= self.bytes.len() {
            // Moving the unsent rest to the front is cheap, amortised, once it is at most half.
            self.bytes.drain(..self.sent);
            self.sent = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `room` bytes in all, then would block.
    struct Socket {
        taken: Vec<u8>,
        room: usize,
    }

    impl Write for Socket {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.room);
            self.taken.extend_from_slice(&buf[..n]);
            self.room -= n;
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn keeps_what_the_writer_did_not_take_and_respects_the_limit() {
        let mut out = OutBuf::default();
        out.appender().extend_from_slice(b"hello world");
        let mut sock = Socket {
            taken: Vec::new(),
            room: 100,
        };
        assert_eq!(out.write_to(&mut sock, 5).ok(), Some(5));
        assert_eq!(out.pending(), 6);
        sock.room = 3;
        assert_eq!(out.write_to(&mut sock, usize::MAX).ok(), Some(3));
        assert_eq!(out.pending(), 3);
        out.appender().extend_from_slice(b"!");
        sock.room = 100;
        assert_eq!(out.write_to(&mut sock, usize::MAX).ok(), Some(4));
        assert!(out.is_empty());
        assert_eq!(sock.taken, b"hello world!");
    }

    #[test]
    fn gives_memory_back() {
        let mut out = OutBuf::default();
        out.appender().resize(8 * OutBuf::KEEP, b'x');
        let mut sock = Socket {
            taken: Vec::new(),
            room: 5 * OutBuf::KEEP,
        };
        // Over half sent: the sent part is dropped, the rest moved to the front.
        assert!(out.write_to(&mut sock, usize::MAX).is_ok());
        assert_eq!(out.pending(), 3 * OutBuf::KEEP);
        assert_eq!(out.bytes.len(), 3 * OutBuf::KEEP);
        // All sent: emptied and shrunk.
        assert!(out.write_all_to(&mut Vec::new()).is_ok());
        assert!(out.is_empty());
        assert!(out.bytes.capacity() <= OutBuf::KEEP);
    }
}
