//! SwarmCDN end-to-end test support and the test/demo HLS origin.
//!
//! [`origin`] serves the sample media in `tests/media` as HLS VOD and as a looping live
//! stream, with byte ranges, CORS and request/byte counters that end-to-end tests read to
//! measure origin egress. The `swarmcdn-origin` binary runs it on its own (the demo and the
//! browser tests start it as a process).

pub mod origin;
