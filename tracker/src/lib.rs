//! SwarmCDN tracker.
//!
//! A WebTorrent-compatible WebSocket tracker that groups the viewers of one stream into swarms
//! and relays their WebRTC signaling. The protocol types live in
//! [`swarmcdn_core::tracker_proto`]; the server (tokio + hyper, `run(config, shutdown)`) is built
//! on top of them by the tracker issue. Today this crate only re-exports the protocol it will
//! speak, so that the workspace layout is in place.

pub use swarmcdn_core::tracker_proto;
