//! SwarmCDN simulations.
//!
//! A discrete-event simulator in virtual time that runs the production peer state machine
//! (`core::node::Node`) for every simulated viewer and the production swarm registry
//! (`core::registry::Registry`) as the tracker, so every simulated byte is scheduled by
//! production code; around them, models of access links, NAT and ICE, churn, players and an
//! elastic CDN (`docs/simulations.md`).
//!
//! - [`kernel`]: the event queue (timing wheel + overflow heap), deterministic.
//! - [`model`]: capacities, NAT classes, churn, random streams, offload bounds.
//! - [`scenario`]: the TOML scenario files.
//! - [`sim`]: one run.
//! - [`metrics`], [`report`], [`plot`]: counters, summaries over seeds, CSV, JSON, SVG.

pub mod kernel;
pub mod metrics;
pub mod model;
pub mod plot;
pub mod report;
pub mod scenario;
pub mod sim;
