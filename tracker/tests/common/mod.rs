//! A tracker on loopback and WebSocket clients for the tests.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use swarmcdn_core::ids::{PeerId, SwarmId};
use swarmcdn_core::tracker_proto::{
    Announce, AnnounceEvent, FromTracker, Offer, OfferId, SessionDescription, ToTracker,
};
use swarmcdn_tracker::{Config, Tracker};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

pub const WAIT: Duration = Duration::from_secs(5);

pub struct Server {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn start(mut config: Config) -> Server {
    config.listen = "127.0.0.1:0".parse().unwrap();
    let tracker = Tracker::bind(config).await.unwrap();
    let addr = tracker.local_addr();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(tracker.run(shutdown.clone()));
    Server {
        addr,
        shutdown,
        task: Some(task),
    }
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Self {
        let (ws, _) = tokio::time::timeout(
            WAIT,
            tokio_tungstenite::connect_async(format!("ws://{addr}/announce")),
        )
        .await
        .expect("connect in time")
        .expect("connect");
        Self { ws }
    }

    pub async fn send(&mut self, msg: &ToTracker) {
        self.ws.send(Message::text(msg.to_json())).await.unwrap();
    }

    /// Sends `msgs` in one write (the tracker reads them together).
    #[allow(dead_code)]
    pub async fn send_together(&mut self, msgs: &[ToTracker]) {
        for msg in msgs {
            self.ws.feed(Message::text(msg.to_json())).await.unwrap();
        }
        self.ws.flush().await.unwrap();
    }

    pub async fn send_raw(&mut self, text: &str) {
        self.ws.send(Message::text(text.to_owned())).await.unwrap();
    }

    /// The next tracker message (panics on timeout or close).
    pub async fn recv(&mut self) -> FromTracker {
        loop {
            let m = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a message in time")
                .expect("the connection is open")
                .expect("no error");
            if let Message::Text(t) = m {
                return FromTracker::from_json(t.as_bytes()).expect("a valid tracker message");
            }
        }
    }

    /// Waits until the server closes the connection; returns its close frame.
    pub async fn closed(&mut self) -> Option<CloseFrame> {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("closed in time")
            {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// No message arrives within a short while.
    pub async fn silent(&mut self) -> bool {
        tokio::time::timeout(Duration::from_millis(300), self.ws.next())
            .await
            .is_err()
    }
}

pub fn swarm(n: u8) -> SwarmId {
    SwarmId([n; 20])
}

pub fn peer(n: u8) -> PeerId {
    let mut id = [n; 20];
    id[..8].copy_from_slice(b"-SC0001-");
    PeerId(id)
}

pub fn announce(s: u8, p: u8, offers: u8) -> ToTracker {
    ToTracker::Announce(Announce {
        event: Some(AnnounceEvent::Started),
        offers: (0..offers)
            .map(|k| Offer {
                offer_id: OfferId([k.wrapping_add(p.wrapping_mul(16)); 20]),
                offer: SessionDescription::offer(format!("v=0\r\no=offer {p}/{k}\r\n")),
            })
            .collect(),
        ..Announce::new(swarm(s), peer(p))
    })
}

pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_get_with(addr, path, "").await
}

/// A GET with `headers` (each line ending in `\r\n`) added to the request head.
pub async fn http_get_with(addr: SocketAddr, path: &str, headers: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: t\r\n{headers}connection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
