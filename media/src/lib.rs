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
//!
//! # The core, one module a concern
//!
//! - [`session`]: one [`Session`] per call, the face the client drives.
//! - [`wire`]: the boundary to the `rtp`/`rtcp` crates (RTP, compound RTCP, the
//!   abs-capture-time extension, RFC 5761 demultiplexing).
//! - [`payload`]: Opus (RFC 7587) and H.264 (RFC 6184) packetization.
//! - [`sdp`]: session descriptions for plain RTP interop (ffmpeg, GStreamer).
//! - [`send`]: RTX history (RFC 4588), pacer, loss-based bitrate control.
//! - [`cc`]: delay-based congestion control (GCC's trendline and AIMD), receiver side.
//! - [`recv`]: loss/reorder/duplicate tracking, RFC 3550 statistics, NACK generator.
//! - [`fec`]: XOR parity for video (RFC 5109 FEC header), its encoder and receiver.
//! - [`jitter`]: the adaptive audio playout buffer and the video frame buffer.
//! - [`netsim`]: a seeded impairment simulator for tests, `--sim` and benchmarks.
//! - [`srtp`]: SRTP/SRTCP (AEAD_AES_128_GCM) on every datagram of the session, and the
//!   end-to-end key exchange (X25519, HKDF) that keys it and the connectivity checks.
//! - [`ice`]: connectivity checks over STUN (RFC 8445 style) that find and keep the
//!   UDP path to the peer, and the STUN binding codec.
//! - [`types`], [`clock`]: newtypes (`Ssrc`, `SeqNo`, `MediaTime`) and wall-clock mapping.
//! - [`quality`]: the ITU-T G.107 E-model (R-factor and MOS) from latency and loss.
//! - [`call`]: one call endpoint's media. The module is core; its encoders, decoders
//!   and `call::Report` wrap the codecs and exist only with the `codecs` feature.
//!
//! The core needs no feature and links no C library or device API: build it with
//! `default-features = false` (a relay, an SFU, the signaling server's STUN responder).
//! Its [`Error`] names no edge; the edges keep their own error enums.
//!
//! # The impure edges, behind features
//!
//! Both are on by default; they sit beside the core and the core never imports them.
//!
//! - `codec` (feature `codecs`): Opus (libopus) and H.264 (OpenH264) encoders and
//!   decoders, with `codec::Error`.
//! - `devices` (feature `devices`, which turns on `codecs`): microphone, speaker,
//!   camera, window, WAV and Y4M files, the synthetic tone and pattern, with
//!   `devices::Error`.
//! - [`probe`]: timing markers and their detectors, with [`probe::Error`]. Always
//!   built, as it is pure but for reading the wall clock in [`probe::WallTime::now`];
//!   the video marker paints and reads decoded pictures, so it needs `codecs`.
//!
//! # Run loop
//!
//! ```no_run
//! # use std::time::{Instant, SystemTime};
//! # use magpie_media::{Event, Playout, SessionConfig};
//! # #[allow(clippy::disallowed_methods)]
//! # fn demo(
//! #     socket: std::net::UdpSocket,
//! #     peer: std::net::SocketAddr,
//! #     agreement: magpie_media::Agreement,
//! # ) {
//! let now = Instant::now();
//! let mut session = SessionConfig::new()
//!     .set_seed(0x5eed)
//!     .set_wall_clock(now, SystemTime::now())
//!     .build(now);
//! // What offer and answer agreed (built by the application), then the path the
//! // connectivity checks selected: only the peer's agreed streams, from that address,
//! // are admitted.
//! session.set_agreement(agreement).expect("an agreement naming our own tracks");
//! session.set_path(peer);
//! // Each turn: feed one input (a datagram, an encoded frame, the playout clock's
//! // pull, or a timeout), then drain every output.
//! session.handle_timeout(Instant::now());
//! while let Some(t) = session.poll_transmit() {
//!     let _ = socket.send_to(&t.contents, t.destination);
//! }
//! while let Some(event) = session.poll_event() {
//!     if let Event::KeyframeRequested = event { /* force an IDR */ }
//! }
//! match session.pull_audio(Instant::now()) {
//!     Playout::Frame { data, .. } => { /* opus decode(data) */ }
//!     Playout::Fec { next, .. } => { /* opus decode(next, fec = true) */ }
//!     Playout::Accelerate { data, then, .. } => { /* decode both, play time-compressed */ }
//!     _ => { /* decode(None): packet loss concealment, or silence */ }
//! }
//! let _next_wakeup = session.poll_timeout().map(|t| t.at);
//! # }
//! ```
#![deny(missing_docs)]
// Denied, not forbidden: `codec/h264_raw.rs` alone allows it, to reach OpenH264's
// bitrate and trace options (each block with its SAFETY comment).
#![deny(unsafe_code)]

// The sans-IO core (media-core). Keep these lines together.
pub mod cc;
pub mod clock;
pub mod error;
pub mod fec;
pub mod ice;
pub mod jitter;
pub mod payload;
pub mod recv;
pub mod sdp;
pub mod send;
pub mod session;
pub mod srtp;
pub mod types;
pub mod wire;

pub use error::Error;
pub use session::{
    Agreement, Event, FecAgreement, KindAgreement, Playout, RedAgreement, Refused, Session,
    SessionConfig, SessionError, Stats, Timeout, Track, Transmit,
};
#[doc(hidden)]
pub mod fuzzing;
pub mod netsim;
pub mod quality;
mod rng;
// End of the media-core lines.

/// An arbitrary base instant for unit tests (the core itself never reads the clock).
#[cfg(test)]
#[allow(clippy::disallowed_methods)]
pub(crate) fn test_instant() -> std::time::Instant {
    std::time::Instant::now()
}

// The impure edges (media-edges). Keep these lines together.
/// Opus and H.264 encoders and decoders (impure edge: wraps C libraries).
#[cfg(feature = "codecs")]
pub mod codec;
/// Media sources and sinks: synthetic, files, microphone, speaker, camera, window.
#[cfg(feature = "devices")]
pub mod devices;
/// Timing markers in synthetic media and their detectors, for end-to-end latency.
pub mod probe;

// One call endpoint's media: core, with its codec parts behind `codecs`. Used by the
// client and the lab.
pub mod call;
