//! swarmcdn-core: the sans-IO heart of SwarmCDN.
//!
//! Everything here is plain data and pure functions: no sockets, no clocks, no global random
//! number generator, no async runtime. It builds for `wasm32-unknown-unknown` as well as for
//! native targets, so the browser client, the seed node, the tracker and the simulator all
//! share it.
//!
//! - [`ids`]: swarm, peer, rendition and segment ids, and how a swarm id is derived.
//! - [`tracker_proto`]: the WebTorrent WebSocket tracker protocol, with our extension fields.
//! - [`wire`]: the peer protocol spoken over a WebRTC DataChannel.
//! - [`integrity`]: signed segment digests, verified chunk by chunk.
//! - `master` (feature `playlist`): a stream's renditions as its playlist lists them.
//! - [`node`]: the peer state machine and its scheduler.
//! - [`registry`]: the tracker's swarm logic (membership, matching, offer relay), sync and buffer-out.
//! - [`rendezvous`]: which tracker instance a swarm lives on.
//! - [`time`]: the time type the shells pass in.
//! - [`token`]: signed, expiring join tokens the tracker can require.
//! - [`varint`]: the LEB128 varints both binary formats use.
//!
//! The formats are specified in `docs/protocol.md`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod ids;
pub mod integrity;
#[cfg(feature = "playlist")]
pub mod master;
pub mod mesh_proto;
pub mod node;
pub mod registry;
pub mod rendezvous;
pub mod time;
pub mod token;
pub mod tracker_proto;
pub mod varint;
pub mod wire;
