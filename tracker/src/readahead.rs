//! Large socket reads for small read buffers, and text frames read as binary.
//!
//! A connection's WebSocket reader asks for at most its read buffer's size per read (1 KiB:
//! the buffer is allocated for every connection, idle or not), so an announce with ten offers
//! (about 4 KB) took four `recv` calls. [`ReadAhead`] reads up to [`SCRATCH`] bytes at once
//! into a per-thread scratch buffer, hands the reader what it asked for and keeps the rest for
//! the next reads. The rest is held only while it lasts: an idle connection holds nothing.
//!
//! It also marks every text frame from the client as binary ([`TextAsBinary`]) on its way to
//! tungstenite, which checks the UTF-8 of text messages with the standard library's scalar
//! check (a tenth of the tracker's CPU on announces whose binary-string ids interleave
//! multi-byte characters with ASCII) and has no way to skip it. The tracker checks the
//! message itself, with SIMD ([`simdutf8`]), and treats text and binary messages alike.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes read from the socket at once.
pub(crate) const SCRATCH: usize = 16 * 1024;

thread_local! {
    static SCRATCH_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH].into_boxed_slice());
}

/// A stream whose reads are at least [`SCRATCH`] bytes long at the socket, and whose text
/// frames read as binary.
#[derive(Debug)]
pub(crate) struct ReadAhead<S> {
    inner: S,
    /// Read from the socket, not yet handed out. Empty (and unallocated) most of the time.
    rest: BytesMut,
    frames: TextAsBinary,
}

impl<S> ReadAhead<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self {
            inner,
            rest: BytesMut::new(),
            frames: TextAsBinary::default(),
        }
    }

    /// Hands out what is kept, freeing it once all is handed out.
    fn take_rest(&mut self, buf: &mut ReadBuf<'_>) {
        let n = self.rest.len().min(buf.remaining());
        buf.put_slice(&self.rest[..n]);
        self.rest.advance(n);
        if self.rest.is_empty() {
            self.rest = BytesMut::new();
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.rest.is_empty() {
            this.take_rest(buf);
            return Poll::Ready(Ok(()));
        }
        if buf.remaining() >= SCRATCH {
            let before = buf.filled().len();
            let r = Pin::new(&mut this.inner).poll_read(cx, buf);
            if let Poll::Ready(Ok(())) = r {
                this.frames.mark(&mut buf.filled_mut()[before..]);
            }
            return r;
        }
        SCRATCH_BUF.with_borrow_mut(|scratch| {
            let mut big = ReadBuf::new(scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut big) {
                Poll::Ready(Ok(())) => {
                    this.frames.mark(big.filled_mut());
                    let got = big.filled();
                    let n = got.len().min(buf.remaining());
                    buf.put_slice(&got[..n]);
                    if n < got.len() {
                        this.rest = BytesMut::from(&got[n..]);
                    }
                    Poll::Ready(Ok(()))
                }
                other => other,
            }
        })
    }
}

/// Follows the frames of a client's WebSocket stream (RFC 6455 §5.2) and turns each text
/// frame's opcode (1) into binary's (2); continuation, binary and control frames pass as they
/// are. It reads only the headers' lengths, so a malformed stream (which tungstenite refuses
/// and closes) is followed as far as it goes and never panics.
#[derive(Debug, Default)]
pub struct TextAsBinary {
    /// In a header: the payload length read so far. In a payload: the bytes still to pass.
    left: u64,
    /// The current header's bytes seen so far (0: at a frame's start or in its payload).
    seen: u8,
    /// The current header's second byte (mask bit and length code).
    b1: u8,
}

impl TextAsBinary {
    const TEXT: u8 = 0x1;
    const BINARY: u8 = 0x2;

    /// Marks the text frames that start in `bytes`, the next bytes of the stream.
    pub fn mark(&mut self, bytes: &mut [u8]) {
        let mut i = 0;
        while i < bytes.len() {
            if self.seen == 0 && self.left > 0 {
                let n = self.left.min((bytes.len() - i) as u64);
                self.left -= n;
                i += n as usize;
                continue;
            }
            let b = bytes[i];
            match self.seen {
                0 if b & 0x0F == Self::TEXT => bytes[i] = (b & 0xF0) | Self::BINARY,
                0 => {}
                1 => {
                    self.b1 = b;
                    self.left = match b & 0x7F {
                        126 | 127 => 0,
                        n => u64::from(n),
                    };
                }
                // The extended length, big-endian (the mask key after it is skipped).
                n if usize::from(n) < 2 + self.ext_len() => {
                    self.left = (self.left << 8) | u64::from(b);
                }
                _ => {}
            }
            self.seen += 1;
            i += 1;
            if self.seen >= 2 && usize::from(self.seen) == self.header_len() {
                // The payload's length is in `left`.
                self.seen = 0;
            }
        }
    }

    /// Bytes of extended payload length in the current header.
    fn ext_len(&self) -> usize {
        match self.b1 & 0x7F {
            126 => 2,
            127 => 8,
            _ => 0,
        }
    }

    /// The current header's length (once its second byte is known).
    fn header_len(&self) -> usize {
        let mask = if self.b1 & 0x80 != 0 { 4 } else { 0 };
        2 + self.ext_len() + mask
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A frame as a client sends it (masked), with the payload left unmasked: the marking
    /// reads only headers.
    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![first];
        match payload.len() {
            n @ 0..=125 => f.push(0x80 | n as u8),
            n @ 126..=65535 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&[1, 2, 3, 4]);
        f.extend_from_slice(payload);
        f
    }

    /// Small reads get every byte in order; the socket is read in large pieces; nothing is
    /// held once all is handed out.
    #[tokio::test]
    async fn small_reads_see_every_byte_in_order() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        // Binary frames pass unchanged.
        let mut data = Vec::new();
        let mut i = 0u32;
        while data.len() < 40_000 {
            let payload: Vec<u8> = (0..(i * 37) % 3000).map(|j| (j % 251) as u8).collect();
            data.extend(frame(0x82, &payload));
            i += 1;
        }
        client.write_all(&data).await.unwrap();
        drop(client);
        let mut r = ReadAhead::new(Counting {
            inner: server,
            reads: 0,
        });
        let mut got = Vec::new();
        let mut buf = [0u8; 1000];
        let mut reads = 0;
        loop {
            let n = r.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            reads += 1;
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, data);
        assert!(reads >= 40);
        // About 40 000 bytes in pieces of at most 16 KiB, and the end of the stream.
        assert_eq!(r.inner.reads, data.len().div_ceil(SCRATCH) + 1);
        assert_eq!(r.rest.capacity(), 0);
    }

    /// Text frames (opcode 1, with or without FIN) become binary (2) wherever the stream is
    /// cut; every other byte is left as it was, payloads that look like headers included.
    #[test]
    fn text_frames_read_as_binary_however_the_stream_is_cut() {
        let payloads: Vec<Vec<u8>> = vec![
            vec![],
            vec![0x81; 125],
            vec![0x81, 0x7F, 0xFF],
            vec![0x01; 126],
            vec![0x81; 70_000],
            b"{\"action\":\"announce\"}".to_vec(),
        ];
        let (mut sent, mut want) = (Vec::new(), Vec::new());
        // Text, binary, a fragmented text message (text without FIN, continuation, final
        // continuation), ping, pong, close, and a text frame without FIN then a ping between
        // its fragments.
        let firsts: [(u8, u8); 9] = [
            (0x81, 0x82),
            (0x82, 0x82),
            (0x01, 0x02),
            (0x00, 0x00),
            (0x80, 0x80),
            (0x89, 0x89),
            (0x8A, 0x8A),
            (0x88, 0x88),
            (0xC1, 0xC2),
        ];
        for (k, p) in payloads.iter().enumerate() {
            for (i, (first, marked)) in firsts.iter().enumerate() {
                let p = if i >= 5 && p.len() > 125 {
                    &p[..125]
                } else {
                    &p[..]
                };
                sent.extend(frame(*first, p));
                want.extend(frame(*marked, p));
                if (i + k) % 4 == 0 {
                    // An unmasked frame too (the marking does not check the mask bit).
                    let mut f = frame(*first, p);
                    let mut w = frame(*marked, p);
                    let at = if p.len() <= 125 {
                        2
                    } else if p.len() <= 65535 {
                        4
                    } else {
                        10
                    };
                    f[1] &= 0x7F;
                    w[1] &= 0x7F;
                    f.drain(at..at + 4);
                    w.drain(at..at + 4);
                    sent.extend(f);
                    want.extend(w);
                }
            }
        }
        for step in [1, 2, 3, 7, 13, 1000, 16 * 1024, sent.len()] {
            let mut marks = TextAsBinary::default();
            let mut got = sent.clone();
            for piece in got.chunks_mut(step) {
                marks.mark(piece);
            }
            assert!(got == want, "pieces of {step} bytes");
            assert_eq!((marks.seen, marks.left), (0, 0), "ends between frames");
        }
    }

    /// Bytes that are no WebSocket stream are followed without a panic.
    #[test]
    fn garbage_never_panics() {
        let mut marks = TextAsBinary::default();
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..10_000 {
            let mut piece = [0u8; 37];
            for b in &mut piece {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            marks.mark(&mut piece);
        }
        let mut max = [
            0x81, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4, 5,
        ];
        marks = TextAsBinary::default();
        marks.mark(&mut max);
        assert_eq!((marks.seen, marks.left), (0, u64::MAX - 1));
        assert_eq!(size_of::<TextAsBinary>(), 16);
    }

    struct Counting<S> {
        inner: S,
        reads: usize,
    }

    impl<S: AsyncRead + Unpin> AsyncRead for Counting<S> {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            let r = Pin::new(&mut this.inner).poll_read(cx, buf);
            if r.is_ready() {
                this.reads += 1;
            }
            r
        }
    }
}
