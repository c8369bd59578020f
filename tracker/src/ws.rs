//! The server side of a WebSocket connection (RFC 6455), as the tracker needs it.
//!
//! Reading: the socket is read 16 KiB at a time into a per-thread scratch buffer, and only
//! the bytes read are copied into the connection's own buffer, which is empty (and
//! unallocated) whenever no frame is partly received: an idle connection holds no read buffer.
//! Frames are unmasked in place and a message that came in one frame is handed out as a slice
//! of that buffer, never copied again. Writing: the tracker's frames are encoded once
//! ([`crate::frame`]) and written as they are.
//!
//! Checked as RFC 6455 §5 requires of a server: client frames are masked, reserved bits are
//! clear (no extension is negotiated), control frames are short and whole, continuations
//! belong to a message. A message's size is checked against the limit from each frame header,
//! before its payload is buffered, for the whole message (fragments included).

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, ReadBuf};

/// Bytes read from the socket at once.
pub(crate) const SCRATCH: usize = 16 * 1024;

thread_local! {
    static SCRATCH_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH].into_boxed_slice());
}

/// Close codes the tracker sends (RFC 6455 §7.4.1).
pub(crate) mod close_code {
    /// Normal closure.
    pub(crate) const NORMAL: u16 = 1000;
    /// Going away (shutdown).
    pub(crate) const AWAY: u16 = 1001;
    /// Protocol error.
    pub(crate) const PROTOCOL: u16 = 1002;
    /// A text message that is not UTF-8.
    pub(crate) const INVALID: u16 = 1007;
    /// Policy violation (a flood).
    pub(crate) const POLICY: u16 = 1008;
    /// Message too big.
    pub(crate) const SIZE: u16 = 1009;
    /// Try again later (the client did not keep up).
    pub(crate) const AGAIN: u16 = 1013;
}

/// What the client sent.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A whole data message (text or binary: the tracker reads both as JSON text).
    Message(Bytes),
    /// A ping, with its payload: the pong echoes it.
    Ping(Bytes),
    /// A pong (it counts against the message rate like any frame).
    Pong,
    /// The client's close frame, with its status code if it gave one.
    Close(Option<u16>),
}

/// Why the client's stream cannot be read further.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WsError {
    /// A message over the size limit (close code 1009).
    #[error("message too large")]
    TooLarge,
    /// A frame RFC 6455 does not allow (close code 1002).
    #[error("protocol error: {0}")]
    Protocol(&'static str),
}

/// Decodes the frames a client sends.
#[derive(Debug)]
pub struct Decoder {
    /// Received, not yet decoded. Empty and unallocated whenever no frame is partly received.
    buf: BytesMut,
    /// The fragments of a message so far, with `fragmented` set.
    fragments: Vec<u8>,
    fragmented: bool,
    max_message: usize,
}

impl Decoder {
    /// A decoder refusing messages (whole, fragments included) larger than `max_message`.
    pub fn new(max_message: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            fragments: Vec::new(),
            fragmented: false,
            max_message,
        }
    }

    /// Adds bytes received from the client.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete message, ping or close from what was received, `None` if more bytes
    /// are needed. After an error the stream must not be read further.
    pub fn decode(&mut self) -> Result<Option<Incoming>, WsError> {
        loop {
            let Some((opcode, fin, header, len, mask)) = self.header()? else {
                return Ok(None);
            };
            if self.buf.len() - header < len {
                // Not reserved from the declared length: a client announcing a large frame
                // and sending little of it holds only what it sent.
                return Ok(None);
            }
            self.buf.advance(header);
            let mut payload = self.buf.split_to(len);
            if self.buf.is_empty() {
                // Nothing partly received: the next read starts a buffer of its own, and
                // this one lives only as long as the payload handed out.
                self.buf = BytesMut::new();
            }
            unmask(&mut payload, mask);
            match opcode {
                OP_TEXT | OP_BINARY if self.fragmented => {
                    return Err(WsError::Protocol("a new message inside a fragmented one"));
                }
                OP_TEXT | OP_BINARY if fin => return Ok(Some(Incoming::Message(payload.freeze()))),
                OP_TEXT | OP_BINARY => {
                    self.fragmented = true;
                    self.fragments.extend_from_slice(&payload);
                }
                OP_CONTINUATION if !self.fragmented => {
                    return Err(WsError::Protocol("a continuation frame without a message"));
                }
                OP_CONTINUATION => {
                    self.fragments.extend_from_slice(&payload);
                    if fin {
                        self.fragmented = false;
                        let whole = std::mem::take(&mut self.fragments);
                        return Ok(Some(Incoming::Message(whole.into())));
                    }
                }
                OP_CLOSE => {
                    return match payload.len() {
                        0 => Ok(Some(Incoming::Close(None))),
                        1 => Err(WsError::Protocol("a close frame with a one-byte payload")),
                        _ => Ok(Some(Incoming::Close(Some(payload.get_u16())))),
                    };
                }
                OP_PING => return Ok(Some(Incoming::Ping(payload.freeze()))),
                OP_PONG => return Ok(Some(Incoming::Pong)),
                _ => return Err(WsError::Protocol("an unknown opcode")),
            }
        }
    }

    /// The header at the start of the buffer, checked: (opcode, FIN, header length, payload
    /// length, masking key), or `None` if it is not all received yet.
    #[allow(clippy::type_complexity)]
    fn header(&self) -> Result<Option<(u8, bool, usize, usize, [u8; 4])>, WsError> {
        let b = &self.buf[..];
        let [b0, b1, ..] = *b else {
            return Ok(None);
        };
        if b0 & 0x70 != 0 {
            return Err(WsError::Protocol("reserved bits set"));
        }
        if b1 & 0x80 == 0 {
            return Err(WsError::Protocol("an unmasked client frame"));
        }
        let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0F);
        let (ext, len) = match b1 & 0x7F {
            126 => {
                let Some(l) = b.get(2..4) else {
                    return Ok(None);
                };
                (2, u64::from(u16::from_be_bytes([l[0], l[1]])))
            }
            127 => {
                let Some(l) = b.get(2..10) else {
                    return Ok(None);
                };
                let len = u64::from_be_bytes(l.try_into().expect("eight bytes"));
                if len >> 63 != 0 {
                    return Err(WsError::Protocol("a payload length with its top bit set"));
                }
                (8, len)
            }
            n => (0, u64::from(n)),
        };
        if opcode & 0x08 != 0 {
            if !fin {
                return Err(WsError::Protocol("a fragmented control frame"));
            }
            if len > 125 {
                return Err(WsError::Protocol("a control frame over 125 bytes"));
            }
        } else {
            let so_far = if self.fragmented {
                self.fragments.len()
            } else {
                0
            } as u64;
            if so_far + len > self.max_message as u64 {
                return Err(WsError::TooLarge);
            }
        }
        let header = 2 + ext + 4;
        let Some(m) = b.get(header - 4..header) else {
            return Ok(None);
        };
        let mask = [m[0], m[1], m[2], m[3]];
        Ok(Some((opcode, fin, header, len as usize, mask)))
    }

    /// Reads from `io` into the buffer: `Ok(0)` at the end of the stream.
    pub(crate) fn poll_fill<S: AsyncRead + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut S,
    ) -> Poll<io::Result<usize>> {
        SCRATCH_BUF.with_borrow_mut(|scratch| {
            let mut rb = ReadBuf::new(scratch);
            ready!(Pin::new(io).poll_read(cx, &mut rb))?;
            let got = rb.filled();
            self.extend(got);
            Poll::Ready(Ok(got.len()))
        })
    }

    /// The next message, ping or close, reading from `io` as needed; `None` at the end of the
    /// stream. Cancel safe: what was read stays in the buffer.
    pub(crate) async fn next<S: AsyncRead + Unpin>(
        &mut self,
        io: &mut S,
    ) -> Result<Option<Incoming>, NextError> {
        std::future::poll_fn(|cx| {
            loop {
                if let Some(incoming) = self.decode()? {
                    return Poll::Ready(Ok(Some(incoming)));
                }
                if ready!(self.poll_fill(cx, io)).map_err(NextError::Io)? == 0 {
                    return Poll::Ready(Ok(None));
                }
            }
        })
        .await
    }
}

/// Why [`Decoder::next`] stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NextError {
    #[error(transparent)]
    Ws(#[from] WsError),
    #[error("reading: {0}")]
    Io(io::Error),
}

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// XORs the payload with the masking key (RFC 6455 §5.3), eight bytes at a time.
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = payload.chunks_exact_mut(8);
    for c in &mut chunks {
        let v = u64::from_ne_bytes(c.try_into().expect("eight bytes")) ^ wide;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: header, masking key, masked payload.
    fn frame(first: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut f = vec![first];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n < 65_536 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    const M: [u8; 4] = [0x12, 0x34, 0x56, 0x78];

    /// Text, binary, fragments with a ping and a pong between them, a close: the same
    /// events whatever the step the bytes arrive in.
    #[test]
    fn a_stream_decodes_the_same_in_any_steps() {
        let long = "x".repeat(300);
        let huge = "y".repeat(70_000);
        let mut stream = Vec::new();
        stream.extend(frame(0x81, b"hello", M));
        stream.extend(frame(0x82, long.as_bytes(), [1, 2, 3, 4]));
        stream.extend(frame(0x01, b"frag", M));
        stream.extend(frame(0x89, b"ping!", M));
        stream.extend(frame(0x00, b"men", M));
        stream.extend(frame(0x8A, b"pong", M));
        stream.extend(frame(0x80, b"ted", M));
        stream.extend(frame(0x81, huge.as_bytes(), M));
        stream.extend(frame(0x81, b"", M));
        stream.extend(frame(0x88, &[0x03, 0xE8, b'b', b'y', b'e'], M));
        let want = vec![
            Incoming::Message(Bytes::from_static(b"hello")),
            Incoming::Message(Bytes::from(long.clone())),
            Incoming::Ping(Bytes::from_static(b"ping!")),
            Incoming::Pong,
            Incoming::Message(Bytes::from_static(b"fragmented")),
            Incoming::Message(Bytes::from(huge.clone())),
            Incoming::Message(Bytes::new()),
            Incoming::Close(Some(1000)),
        ];
        for step in [1, 2, 3, 5, 7, 13, 100, 4096, stream.len()] {
            let mut d = Decoder::new(100_000);
            let mut got = Vec::new();
            for piece in stream.chunks(step) {
                d.extend(piece);
                while let Some(ev) = d.decode().unwrap() {
                    got.push(ev);
                }
            }
            assert_eq!(got, want, "step {step}");
            assert_eq!(d.buffered(), 0);
            assert_eq!(d.buf.capacity(), 0, "nothing held once all is decoded");
        }
    }

    #[test]
    fn messages_over_the_limit_are_refused_from_the_header() {
        // One frame: refused with only its header received.
        let mut d = Decoder::new(100);
        d.extend(&frame(0x81, &[b'a'; 101], M)[..8]);
        assert_eq!(d.decode(), Err(WsError::TooLarge));
        // At the limit: read.
        let mut d = Decoder::new(100);
        d.extend(&frame(0x81, &[b'a'; 100], M));
        assert!(matches!(d.decode(), Ok(Some(Incoming::Message(m))) if m.len() == 100));
        // Fragments: the whole message counts.
        let mut d = Decoder::new(100);
        d.extend(&frame(0x01, &[b'a'; 60], M));
        d.extend(&frame(0x00, &[b'a'; 41], M));
        assert_eq!(d.decode(), Err(WsError::TooLarge));
        // A 64-bit length far past memory: refused from the header.
        let mut d = Decoder::new(100);
        let mut h = vec![0x82, 0x80 | 127];
        h.extend_from_slice(&(1u64 << 40).to_be_bytes());
        d.extend(&h);
        assert_eq!(d.decode(), Err(WsError::TooLarge));
    }

    /// A frame announced long and sent short holds what was sent, not what was announced.
    #[test]
    fn a_partial_frame_holds_only_what_arrived() {
        let mut d = Decoder::new(1 << 20);
        d.extend(&frame(0x82, &[7; 60_000], M)[..100]);
        assert_eq!(d.decode(), Ok(None));
        assert!(d.buf.capacity() < 1024, "{}", d.buf.capacity());
    }

    #[test]
    fn frames_rfc_6455_forbids_are_protocol_errors() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("unmasked", vec![0x81, 0x01, b'a']),
            ("reserved bit", frame(0xC1, b"a", M)),
            ("unknown opcode", frame(0x83, b"a", M)),
            ("fragmented ping", frame(0x09, b"a", M)),
            ("long ping", frame(0x89, &[0; 126], M)),
            ("lone continuation", frame(0x80, b"a", M)),
            ("one-byte close", frame(0x88, b"a", M)),
            ("top length bit", {
                let mut h = vec![0x82, 0x80 | 127];
                h.extend_from_slice(&(1u64 << 63).to_be_bytes());
                h.extend_from_slice(&M);
                h
            }),
            ("new message inside a fragmented one", {
                let mut s = frame(0x01, b"a", M);
                s.extend(frame(0x81, b"b", M));
                s
            }),
        ];
        for (name, bytes) in cases {
            let mut d = Decoder::new(1000);
            d.extend(&bytes);
            let got = loop {
                match d.decode() {
                    Ok(Some(_)) => continue,
                    other => break other,
                }
            };
            assert!(matches!(got, Err(WsError::Protocol(_))), "{name}: {got:?}");
        }
    }

    #[test]
    fn unmasking_matches_the_rfc_bytewise() {
        for len in 0..40 {
            let data: Vec<u8> = (0..len as u8).map(|i| i.wrapping_mul(37)).collect();
            let mut fast = data.clone();
            unmask(&mut fast, M);
            let slow: Vec<u8> = data.iter().enumerate().map(|(i, b)| b ^ M[i % 4]).collect();
            assert_eq!(fast, slow, "len {len}");
        }
    }
}
