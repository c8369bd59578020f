//! SwarmCDN peer node: the operator's seed (pulls segments from the origin, signs their
//! digests, serves viewers over WebRTC DataChannels) and a headless viewer, both driving
//! `swarmcdn_core::node` with tokio, webrtc-rs and hyper.
//!
//! - [`hls`]: playlist parsing (m3u8-rs) into segments with URLs and byte ranges.
//! - [`http`]: the origin client.
//! - [`puller`]: follows a stream's media playlists.
//! - [`tracker`]: the tracker WebSocket client.
//! - [`rtc`]: peer connections and DataChannels.
//! - [`driver`]: the node loop that ties them to the core.
//! - [`viewer`]: the headless player.
//! - [`seed`]: the seed service with its metrics endpoint.
//! - [`mesh`]: the seed mesh over libp2p (one origin pull per segment per fleet).

pub mod bench;
pub mod config;
pub mod driver;
pub mod hls;
pub mod http;
pub mod mesh;
pub mod puller;
pub mod rtc;
pub mod seed;
pub mod tracker;
pub mod viewer;

/// A new random peer id.
pub fn random_peer_id() -> anyhow::Result<swarmcdn_core::ids::PeerId> {
    let mut r = [0u8; 12];
    getrandom::fill(&mut r).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(swarmcdn_core::ids::PeerId::generate(r))
}
