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

/// Opus and H.264 encoders and decoders (impure edge: wraps C libraries).
pub mod codec;
/// Media sources and sinks: synthetic, files, microphone, speaker, camera, window.
pub mod devices;
/// Timing markers in synthetic media and their detectors, for end-to-end latency.
pub mod probe;
