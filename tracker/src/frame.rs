//! The tracker's own messages as WebSocket text frames, encoded once and written as they are.
//!
//! tungstenite reads every frame from the client and answers its pings and closes; what the
//! tracker sends (replies, relayed offers and answers, failures) is encoded by the worker
//! straight into a frame buffer, after room for the header, and the connection task writes
//! the frames of a batch with one vectored write. A message is never copied after encoding
//! (through tungstenite, each went into a `Bytes` and was copied into its write buffer).
//!
//! Server frames are not masked (RFC 6455 §5.1), so a frame is its header and the text.

use std::io::{self, IoSlice};

use swarmcdn_core::tracker_proto::FromTracker;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Room for the longest header: FIN and opcode, 127, and a 64-bit length.
const ROOM: usize = 10;

/// Most frames written by one call: more wait for the next.
pub(crate) const MAX_BATCH: usize = 64;

/// One unfragmented text frame, header included.
#[derive(Debug)]
pub(crate) struct TextFrame {
    buf: Vec<u8>,
    /// Where the header starts in `buf` (0, 6 or 8: the header ends at `ROOM`).
    start: u8,
}

impl TextFrame {
    /// A frame of the text `write` appends (it must append UTF-8).
    fn encode(capacity: usize, write: impl FnOnce(&mut Vec<u8>)) -> Self {
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
        buf[start] = 0x81; // FIN, text
        Self {
            buf,
            start: start as u8,
        }
    }

    /// A message of the tracker, as JSON text.
    pub(crate) fn message(msg: &FromTracker) -> Self {
        // Room for a relayed offer with a short SDP without growing; longer ones grow once
        // or twice.
        Self::encode(500, |b| msg.write_json(b))
    }

    /// Text as it is.
    #[cfg(test)]
    pub(crate) fn text(text: &str) -> Self {
        Self::encode(text.len(), |b| b.extend_from_slice(text.as_bytes()))
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
    frames: &[TextFrame],
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

    use futures_util::{SinkExt, StreamExt};
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
        let frames: Vec<TextFrame> = texts.iter().map(|t| TextFrame::text(t)).collect();
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
        let frames: Vec<TextFrame> = (0..150)
            .map(|i| TextFrame::text(&format!("message {i} {}", "z".repeat(i * 7))))
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

    /// Frames written after tungstenite's own (a pong) arrive whole and in order.
    #[tokio::test]
    async fn our_frames_follow_tungstenites() {
        let (server, client) = tokio::io::duplex(1 << 16);
        let mut server = WebSocketStream::from_raw_socket(server, Role::Server, None).await;
        let mut client = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        client
            .send(Message::Ping(b"p".to_vec().into()))
            .await
            .unwrap();
        client.send(Message::text("hello")).await.unwrap();
        // The server reads the ping (queuing its pong) and the text.
        while !matches!(server.next().await.unwrap().unwrap(), Message::Text(_)) {}
        server.flush().await.unwrap();
        write_all(server.get_mut(), &[TextFrame::text("reply")])
            .await
            .unwrap();
        assert!(matches!(
            client.next().await.unwrap().unwrap(),
            Message::Pong(_)
        ));
        match client.next().await.unwrap().unwrap() {
            Message::Text(t) => assert_eq!(t.as_str(), "reply"),
            other => panic!("{other:?}"),
        }
    }
}
