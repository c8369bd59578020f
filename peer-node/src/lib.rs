//! SwarmCDN seed node (`peer-node`).
//!
//! A native process run by the operator: it follows HLS streams at the origin, signs the digest
//! of every segment it pulls ([`swarmcdn_core::integrity`]), joins the tracker as a seed and
//! serves viewers over WebRTC DataChannels with the [`swarmcdn_core::wire`] protocol. It also has
//! a headless viewer mode. The seed-node issue fills this crate; today it holds the layout only.

pub use swarmcdn_core::{integrity, wire};
