//! SwarmCDN browser client.
//!
//! The core compiled to `wasm32-unknown-unknown` with wasm-bindgen. The wasm-client issue drives
//! the core's peer state machine here with the browser's RTCPeerConnection, WebSocket and fetch,
//! and wraps it as an hls.js loader. Today it exports the protocol versions, which is enough for
//! the build pipeline (cargo build for wasm32, then wasm-bindgen-cli) to be exercised end to end.

use wasm_bindgen::prelude::wasm_bindgen;

/// The peer wire protocol version this client speaks (see `docs/protocol.md`).
#[wasm_bindgen(js_name = wireProtocolVersion)]
pub fn wire_protocol_version() -> u8 {
    swarmcdn_core::wire::PROTOCOL_VERSION
}
