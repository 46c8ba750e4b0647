//! Magpie media: everything about one call's media streams.
//!
//! # Design
//!
//! The heart of this crate is a set of sans-IO state machines. They never open a
//! socket, spawn a thread, sleep or read the clock: time comes in as an argument
//! (`now: Instant`), packets come in as bytes, and everything they want done comes
//! out of `poll_*` calls. The same code therefore runs under a real UDP socket and
//! under a simulated network in virtual time, deterministic and faster than real
//! time. `clippy.toml` forbids `Instant::now` and `SystemTime::now` in this crate;
//! only the impure edges (devices and probes) may read the clock, and they say so.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

// The sans-IO core (media-core). Keep these lines together.
pub mod clock;
pub mod error;
pub mod jitter;
pub mod payload;
pub mod recv;
pub mod send;
pub mod session;
pub mod types;
pub mod wire;

pub use error::Error;
pub use session::{Event, Playout, Session, SessionConfig, Stats, Timeout, Transmit};
pub mod netsim;
pub mod quality;
mod rng;

/// An arbitrary base instant for unit tests (the core itself never reads the clock).
#[cfg(test)]
#[allow(clippy::disallowed_methods)]
pub(crate) fn test_instant() -> std::time::Instant {
    std::time::Instant::now()
}

// The impure edges (media-edges). Keep these lines together.
/// Opus and H.264 encoders and decoders (impure edge: wraps C libraries).
pub mod codec;
/// Media sources and sinks: synthetic, files, microphone, speaker, camera, window.
pub mod devices;
/// Timing markers in synthetic media and their detectors, for end-to-end latency.
pub mod probe;

// Joins the two for one call endpoint; used by the client and the lab.
pub mod call;
