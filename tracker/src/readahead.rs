//! Large socket reads for small read buffers.
//!
//! A connection's WebSocket reader asks for at most its read buffer's size per read (1 KiB:
//! the buffer is allocated for every connection, idle or not), so an announce with ten offers
//! (about 4 KB) took four `recv` calls. [`ReadAhead`] reads up to [`SCRATCH`] bytes at once
//! into a per-thread scratch buffer, hands the reader what it asked for and keeps the rest for
//! the next reads. The rest is held only while it lasts: an idle connection holds nothing.

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

/// A stream whose reads are at least [`SCRATCH`] bytes long at the socket.
#[derive(Debug)]
pub(crate) struct ReadAhead<S> {
    inner: S,
    /// Read from the socket, not yet handed out. Empty (and unallocated) most of the time.
    rest: BytesMut,
}

impl<S> ReadAhead<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self {
            inner,
            rest: BytesMut::new(),
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
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        SCRATCH_BUF.with_borrow_mut(|scratch| {
            let mut big = ReadBuf::new(scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut big) {
                Poll::Ready(Ok(())) => {
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

    /// Small reads get every byte in order; the socket is read in large pieces; nothing is
    /// held once all is handed out.
    #[tokio::test]
    async fn small_reads_see_every_byte_in_order() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let data: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
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
        // 40 000 bytes in pieces of at most 16 KiB, and the end of the stream.
        assert_eq!(r.inner.reads, 4);
        assert_eq!(r.rest.capacity(), 0);
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
