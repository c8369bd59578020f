//! The frames the tracker sends, encoded once and written as they are.
//!
//! What the tracker sends (replies, relayed offers and answers, failures) is encoded by the
//! worker straight into a frame buffer, after room for the header, and the connection task
//! writes the frames of a batch with one vectored write: a message is never copied after
//! encoding. Pongs and close frames are made the same way.
//!
//! Server frames are not masked (RFC 6455 §5.1), so a frame is its header and the text.

use std::io::{self, IoSlice};

use swarmcdn_core::tracker_proto::FromTracker;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Room for the longest header: FIN and opcode, 127, and a 64-bit length.
const ROOM: usize = 10;

const OP_TEXT: u8 = 0x1;
const OP_CLOSE: u8 = 0x8;
const OP_PONG: u8 = 0xA;

/// Most frames written by one call: more wait for the next.
pub(crate) const MAX_BATCH: usize = 64;

/// One unfragmented frame, header included.
#[derive(Debug)]
pub(crate) struct Frame {
    buf: Vec<u8>,
    /// Where the header starts in `buf` (0, 6 or 8: the header ends at `ROOM`).
    start: u8,
}

impl Frame {
    /// A frame (FIN set, `opcode`) of the payload `write` appends.
    fn encode(opcode: u8, capacity: usize, write: impl FnOnce(&mut Vec<u8>)) -> Self {
        let mut buf = Vec::with_capacity(ROOM + capacity);
        buf.extend_from_slice(&[0; ROOM]);
        write(&mut buf);
        let len = buf.len() - ROOM;
        let start = if len < 126 {
            buf[ROOM - 1] = len as u8;
            ROOM - 2
        } else if let Ok(len) = u16::try_from(len) {
            buf[ROOM - 3] = 126;
            buf[ROOM - 2..ROOM].copy_from_slice(&len.to_be_bytes());
            ROOM - 4
        } else {
            buf[1] = 127;
            buf[2..ROOM].copy_from_slice(&(len as u64).to_be_bytes());
            0
        };
        buf[start] = 0x80 | opcode;
        Self {
            buf,
            start: start as u8,
        }
    }

    /// A message of the tracker, as JSON text.
    pub(crate) fn message(msg: &FromTracker) -> Self {
        // Room for a relayed offer with a short SDP without growing; longer ones grow once
        // or twice.
        Self::encode(OP_TEXT, 500, |b| msg.write_json(b))
    }

    /// Text as it is.
    #[cfg(test)]
    pub(crate) fn text(text: &str) -> Self {
        Self::encode(OP_TEXT, text.len(), |b| {
            b.extend_from_slice(text.as_bytes())
        })
    }

    /// A close frame with a status code and a reason (at most 123 bytes, cut at a character
    /// boundary if longer).
    pub(crate) fn close(code: u16, reason: &str) -> Self {
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        Self::encode(OP_CLOSE, 2 + end, |b| {
            b.extend_from_slice(&code.to_be_bytes());
            b.extend_from_slice(&reason.as_bytes()[..end]);
        })
    }

    /// The pong answering a ping with this payload (at most 125 bytes, as the decoder checks).
    pub(crate) fn pong(payload: &[u8]) -> Self {
        Self::encode(OP_PONG, payload.len(), |b| b.extend_from_slice(payload))
    }

    /// The frame's bytes, header first.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[usize::from(self.start)..]
    }

    /// The frame's text.
    #[cfg(test)]
    pub(crate) fn payload(&self) -> &str {
        std::str::from_utf8(&self.buf[ROOM..]).expect("frames hold text")
    }
}

/// Writes `frames` whole, with as few (vectored) writes as the socket takes, then flushes.
pub(crate) async fn write_all<W: AsyncWrite + Unpin>(
    io: &mut W,
    frames: &[Frame],
) -> io::Result<()> {
    // The next frame to write and how much of it is written.
    let (mut next, mut done) = (0, 0);
    while next < frames.len() {
        let mut slices = [IoSlice::new(&[]); MAX_BATCH];
        let mut n = 0;
        for (i, f) in frames[next..].iter().take(MAX_BATCH).enumerate() {
            let bytes = f.as_bytes();
            slices[i] = IoSlice::new(if i == 0 { &bytes[done..] } else { bytes });
            n += 1;
        }
        let mut written = io.write_vectored(&slices[..n]).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while next < frames.len() {
            let left = frames[next].as_bytes().len() - done;
            if written < left {
                done += written;
                break;
            }
            written -= left;
            next += 1;
            done = 0;
        }
    }
    io.flush().await
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use futures_util::StreamExt;
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::Role;

    use super::*;

    /// The three header sizes, read back by tungstenite as a client reads them.
    #[tokio::test]
    async fn frames_of_every_header_size_read_back_as_sent() {
        let texts = [
            "",
            "x",
            &"a".repeat(125),
            &"b".repeat(126),
            &"c".repeat(65_535),
            &"é".repeat(40_000),
        ];
        let frames: Vec<Frame> = texts.iter().map(|t| Frame::text(t)).collect();
        for (f, t) in frames.iter().zip(texts) {
            assert_eq!(f.payload(), t);
        }
        let (mut server, client) = tokio::io::duplex(1 << 20);
        write_all(&mut server, &frames).await.unwrap();
        drop(server);
        let mut ws = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        for t in texts {
            match ws.next().await.unwrap().unwrap() {
                Message::Text(got) => assert_eq!(got.as_str(), t),
                other => panic!("{other:?}"),
            }
        }
    }

    /// A writer that takes a few bytes per call, and sometimes is not ready.
    struct Trickle {
        got: Vec<u8>,
        step: usize,
        calls: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.calls += 1;
            if self.calls.is_multiple_of(3) {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let n = buf.len().min(self.step);
            self.got.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let step = self.step;
            let mut left = step;
            let mut first = true;
            for b in bufs {
                if left == 0 {
                    break;
                }
                if first {
                    first = false;
                    match self.as_mut().poll_write(cx, &b[..b.len().min(left)]) {
                        Poll::Ready(Ok(n)) => left -= n,
                        other => return other,
                    }
                } else {
                    let n = b.len().min(left);
                    self.got.extend_from_slice(&b[..n]);
                    left -= n;
                }
            }
            Poll::Ready(Ok(step - left))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Partial writes of any size, across frame boundaries, and more frames than one call
    /// takes: every byte goes out once, in order.
    #[tokio::test]
    async fn partial_writes_resume_where_they_stopped() {
        let frames: Vec<Frame> = (0..150)
            .map(|i| Frame::text(&format!("message {i} {}", "z".repeat(i * 7))))
            .collect();
        let want: Vec<u8> = frames.iter().flat_map(|f| f.as_bytes().to_vec()).collect();
        for step in [1, 2, 3, 7, 64, 1000, 1 << 20] {
            let mut w = Trickle {
                got: Vec::new(),
                step,
                calls: 0,
            };
            write_all(&mut w, &frames).await.unwrap();
            assert_eq!(w.got, want, "step {step}");
        }
    }

    /// Pongs and close frames, as a client (tungstenite) reads them.
    #[tokio::test]
    async fn control_frames_read_back_as_sent() {
        let (mut server, client) = tokio::io::duplex(1 << 16);
        let mut client = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        let long = "é".repeat(100);
        let frames = [
            Frame::pong(b"p"),
            Frame::text("reply"),
            Frame::close(1009, &long),
        ];
        write_all(&mut server, &frames).await.unwrap();
        assert_eq!(
            client.next().await.unwrap().unwrap(),
            Message::Pong(Bytes::from_static(b"p"))
        );
        assert_eq!(
            client.next().await.unwrap().unwrap(),
            Message::text("reply")
        );
        match client.next().await.unwrap().unwrap() {
            Message::Close(Some(c)) => {
                assert_eq!(u16::from(c.code), 1009);
                // Cut at a character boundary, within the 123 bytes a reason may take.
                assert_eq!(c.reason.as_str(), "é".repeat(61));
            }
            other => panic!("{other:?}"),
        }
    }
}
