//! SwarmCDN simulations.
//!
//! A discrete-event simulator in virtual time that will run the core's peer state machine for
//! every simulated viewer and the core's swarm registry as the tracker, to measure offload,
//! playback quality and origin load at scale. The simulations issue fills this crate; today it
//! holds the layout only.

pub use swarmcdn_core::ids;
