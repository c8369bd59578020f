//! WebRTC with webrtc-rs: peer connections with one reliable ordered DataChannel, non-trickle
//! offers and answers (the WebTorrent tracker protocol carries one complete SDP each way), and
//! the DataChannel's reader and writer tasks that feed the node loop.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rtc::ice::mdns::MulticastDnsMode;
use rtc::peer_connection::configuration::setting_engine::SctpMaxMessageSize;
use swarmcdn_core::node::{DrainReports, PeerEvent};
use tokio::sync::{Notify, mpsc, watch};
use webrtc::data_channel::{DataChannel, DataChannelEvent, RTCDataChannelInit};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceGatheringState, RTCIceServer, RTCPeerConnectionState, RTCSessionDescription,
    SettingEngineBuilder,
};

use crate::driver::{ConnId, Input};

/// WebRTC settings.
#[derive(Debug, Clone)]
pub struct RtcConfig {
    /// Local UDP addresses to gather host candidates on (`IP:0` picks a port per connection).
    pub udp_addrs: Vec<String>,
    /// STUN/TURN servers (`stun:host:port`), none by default.
    pub ice_servers: Vec<String>,
    /// Bytes a DataChannel may hold unsent before `send` waits.
    pub send_buffer_limit: usize,
    /// SCTP receive window.
    pub receive_window: u32,
    /// The largest DataChannel message accepted and advertised.
    pub max_message: u32,
    /// How long ICE gathering may take before the description is sent as it is.
    pub gather_timeout: Duration,
    /// Test helper: flip a byte in every segment chunk sent (a lying peer for tests).
    pub corrupt_uploads: bool,
}

impl Default for RtcConfig {
    fn default() -> Self {
        Self {
            udp_addrs: vec!["0.0.0.0:0".into()],
            ice_servers: Vec::new(),
            send_buffer_limit: 4 << 20,
            receive_window: 4 << 20,
            max_message: 256 << 10,
            gather_timeout: Duration::from_secs(5),
            corrupt_uploads: false,
        }
    }
}

/// The DataChannel label.
pub const LABEL: &str = "swarmcdn";

/// A peer connection, shared between the node loop and its tasks.
pub type Pc = Arc<dyn PeerConnection>;
/// A DataChannel.
pub type Dc = Arc<dyn DataChannel>;

struct Handler {
    conn: ConnId,
    gathered: watch::Sender<bool>,
    inputs: mpsc::Sender<Input>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, s: RTCIceGatheringState) {
        if s == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(true);
        }
    }

    async fn on_data_channel(&self, dc: Arc<dyn DataChannel>) {
        // Never block the connection's driver: the node loop may be busy.
        let inputs = self.inputs.clone();
        let conn = self.conn;
        tokio::spawn(async move {
            let _ = inputs.send(Input::Channel { conn, dc }).await;
        });
    }

    async fn on_connection_state_change(&self, s: RTCPeerConnectionState) {
        if matches!(
            s,
            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed
        ) {
            let inputs = self.inputs.clone();
            let conn = self.conn;
            tokio::spawn(async move {
                let _ = inputs.send(Input::ConnFailed { conn }).await;
            });
        }
    }
}

/// A new peer connection whose events go to the node loop under `conn`.
async fn new_pc(
    config: &RtcConfig,
    conn: ConnId,
    inputs: mpsc::Sender<Input>,
) -> anyhow::Result<(Pc, watch::Receiver<bool>)> {
    let (gathered, gathered_rx) = watch::channel(false);
    let se = SettingEngineBuilder::new()
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        .with_sctp_max_message_size(SctpMaxMessageSize::Bounded(config.max_message))
        .with_sctp_max_receive_buffer_size(config.receive_window)
        .build();
    let mut rc = RTCConfigurationBuilder::new();
    if !config.ice_servers.is_empty() {
        rc = rc.with_ice_servers(vec![RTCIceServer {
            urls: config.ice_servers.clone(),
            ..Default::default()
        }]);
    }
    let pc = PeerConnectionBuilder::new()
        .with_configuration(rc.build())
        .with_setting_engine(se)
        .with_handler(Arc::new(Handler {
            conn,
            gathered,
            inputs,
        }))
        .with_udp_addrs(config.udp_addrs.clone())
        .with_data_channel_send_buffer_limit(config.send_buffer_limit)
        .build()
        .await?;
    Ok((Arc::new(pc), gathered_rx))
}

async fn gathered_sdp(
    pc: &Pc,
    mut gathered: watch::Receiver<bool>,
    timeout: Duration,
) -> anyhow::Result<String> {
    // Non-trickle: wait until every candidate is in the description.
    let _ = tokio::time::timeout(timeout, gathered.wait_for(|g| *g)).await;
    let desc = pc
        .local_description()
        .await
        .ok_or_else(|| anyhow::anyhow!("no local description"))?;
    Ok(desc.sdp)
}

/// Makes an offer: a connection, its DataChannel and the complete SDP.
pub async fn make_offer(
    config: &RtcConfig,
    conn: ConnId,
    inputs: mpsc::Sender<Input>,
) -> anyhow::Result<(Pc, Dc, String)> {
    let (pc, gathered) = new_pc(config, conn, inputs).await?;
    let result = async {
        let dc = pc
            .create_data_channel(
                LABEL,
                Some(RTCDataChannelInit {
                    ordered: true,
                    ..Default::default()
                }),
            )
            .await?;
        let offer = pc.create_offer(None).await?;
        pc.set_local_description(offer).await?;
        let sdp = gathered_sdp(&pc, gathered, config.gather_timeout).await?;
        anyhow::Ok((dc, sdp))
    }
    .await;
    match result {
        Ok((dc, sdp)) => Ok((pc, dc, sdp)),
        Err(e) => {
            let _ = pc.close().await;
            Err(e)
        }
    }
}

/// Answers a remote offer: a connection and the complete answer SDP. Its DataChannel arrives
/// later as [`Input::Channel`].
pub async fn make_answer(
    config: &RtcConfig,
    conn: ConnId,
    inputs: mpsc::Sender<Input>,
    offer_sdp: String,
) -> anyhow::Result<(Pc, String)> {
    let (pc, gathered) = new_pc(config, conn, inputs).await?;
    let result = async {
        pc.set_remote_description(RTCSessionDescription::offer(offer_sdp)?)
            .await?;
        let answer = pc.create_answer(None).await?;
        pc.set_local_description(answer).await?;
        gathered_sdp(&pc, gathered, config.gather_timeout).await
    }
    .await;
    match result {
        Ok(sdp) => Ok((pc, sdp)),
        Err(e) => {
            let _ = pc.close().await;
            Err(e)
        }
    }
}

/// Applies the remote answer to an offer this side made.
pub async fn apply_answer(pc: &Pc, sdp: String) -> anyhow::Result<()> {
    pc.set_remote_description(RTCSessionDescription::answer(sdp)?)
        .await?;
    Ok(())
}

/// Messages waiting in a channel's writer before the connection counts as stuck.
pub const WRITER_QUEUE: usize = 512;

/// Starts the DataChannel's reader (events to the node loop) and writer (messages from the
/// node loop, with send-buffer back-pressure and `Drained` reports). Returns the writer's
/// queue. When the queue's sender is dropped, the writer sends what is queued, waits a little
/// for it to leave, and closes the connection.
pub fn start_channel(
    conn: ConnId,
    pc: Pc,
    dc: Dc,
    inputs: mpsc::Sender<Input>,
    low_threshold: u32,
    corrupt: bool,
    tasks: &tokio_util::task::TaskTracker,
) -> mpsc::Sender<Bytes> {
    let (tx, rx) = mpsc::channel::<Bytes>(WRITER_QUEUE);
    let low = Arc::new(Notify::new());
    tokio::spawn(read_channel(conn, dc.clone(), inputs.clone(), low.clone()));
    // On `tasks`: its owner waits for the writer to close the connection when it stops.
    tasks.spawn(write_channel(
        conn,
        pc,
        dc,
        rx,
        inputs,
        low,
        low_threshold,
        corrupt,
    ));
    tx
}

async fn read_channel(conn: ConnId, dc: Dc, inputs: mpsc::Sender<Input>, low: Arc<Notify>) {
    while let Some(ev) = dc.poll().await {
        let ev = match ev {
            DataChannelEvent::OnOpen => PeerEvent::Opened,
            DataChannelEvent::OnMessage(m) => {
                if m.is_string {
                    // The wire protocol is binary; text is a protocol error the core reports.
                    PeerEvent::Message(Bytes::new())
                } else {
                    PeerEvent::Message(m.data.freeze())
                }
            }
            DataChannelEvent::OnBufferedAmountLow => {
                low.notify_one();
                continue;
            }
            DataChannelEvent::OnClose | DataChannelEvent::OnError => break,
            _ => continue,
        };
        if inputs.send(Input::Peer { conn, ev }).await.is_err() {
            return;
        }
    }
    let _ = inputs
        .send(Input::Peer {
            conn,
            ev: PeerEvent::Closed,
        })
        .await;
}

#[allow(clippy::too_many_arguments)]
async fn write_channel(
    conn: ConnId,
    pc: Pc,
    dc: Dc,
    mut rx: mpsc::Receiver<Bytes>,
    inputs: mpsc::Sender<Input>,
    low: Arc<Notify>,
    low_threshold: u32,
    corrupt: bool,
) {
    let _ = dc.set_buffered_amount_low_threshold(low_threshold).await;
    // Drained reports are owed after sending: once the buffer is back at or under the low
    // threshold (the node counts what it queued and waits for these to send more), and once
    // it is empty (else the node counts the rest as queued for ever).
    let mut owed = DrainReports::default();
    loop {
        let msg = if owed.pending() {
            tokio::select! {
                m = rx.recv() => Some(m),
                () = low.notified() => None,
                () = tokio::time::sleep(Duration::from_millis(20)) => None,
            }
        } else {
            Some(rx.recv().await)
        };
        match msg {
            Some(Some(data)) => {
                let mut data = BytesMut::from(&data[..]);
                if corrupt {
                    corrupt_data_frame(&mut data);
                }
                if let Err(e) = dc.send(data).await {
                    tracing::debug!(conn = conn.0, error = %e, "DataChannel send failed");
                    break;
                }
                owed.sent();
            }
            Some(None) => {
                // The node loop let go of this connection: let queued bytes leave, then close.
                for _ in 0..25 {
                    if dc.outstanding_bytes().await.unwrap_or(0) == 0 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                break;
            }
            None => {}
        }
        if owed.pending() && rx.is_empty() {
            let buffered = dc.outstanding_bytes().await.unwrap_or(0) as u64;
            if let Some(ev) = owed.check(buffered, u64::from(low_threshold))
                && inputs.send(Input::Peer { conn, ev }).await.is_err()
            {
                break;
            }
        }
    }
    let _ = dc.close().await;
    let _ = pc.close().await;
}

/// Flips the last byte of every `Data` frame in a message (its payload ends the frame).
fn corrupt_data_frame(msg: &mut BytesMut) {
    let mut pos = 0usize;
    while pos < msg.len() {
        let mut rest: &[u8] = &msg[pos..];
        let Ok(len) = swarmcdn_core::varint::get(&mut rest) else {
            return;
        };
        let header = msg.len() - pos - rest.len();
        let Ok(len) = usize::try_from(len) else {
            return;
        };
        let end = pos + header + len;
        if len == 0 || end > msg.len() {
            return;
        }
        if rest[0] == swarmcdn_core::wire::kind::DATA && len > 1 + 64 {
            msg[end - 1] ^= 0xff;
        }
        pos = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use swarmcdn_core::ids::RenditionId;
    use swarmcdn_core::wire::{Frame, RequestId, SegmentRef, decode_message, encode_frames};

    #[test]
    fn corruption_hits_every_data_frame_and_nothing_else() {
        let seg = SegmentRef {
            rendition: RenditionId([3; 8]),
            sequence: 9,
        };
        let data = Frame::Data {
            id: RequestId(1),
            segment: seg,
            offset: 0,
            payload: Bytes::from(vec![7u8; 1000]),
        };
        let frames = vec![Frame::Fetching { segment: seg }, data.clone(), data];
        let mut msg = BytesMut::from(&encode_frames(&frames)[..]);
        corrupt_data_frame(&mut msg);
        let back = decode_message(&msg.freeze(), 1 << 20).unwrap();
        assert_eq!(back[0], frames[0]);
        for f in &back[1..] {
            let Frame::Data { payload: data, .. } = f else {
                panic!("{f:?}")
            };
            assert_eq!(data[999], 7 ^ 0xff);
            assert_eq!(data[..999], [7u8; 999]);
        }
    }
}
