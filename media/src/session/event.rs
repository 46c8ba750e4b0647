//! What a session hands back: datagrams to send, events, and its next deadline.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;

pub use crate::jitter::audio::Playout;

/// A datagram to send on the call's one UDP socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to.
    pub destination: SocketAddr,
    /// The datagram.
    pub contents: Bytes,
}

/// Something the application should act on.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A decodable video access unit (Annex-B), in decode order.
    VideoFrame {
        /// Annex-B byte stream.
        data: Bytes,
        /// When the peer captured it, on our clock.
        capture_time: Option<Instant>,
        /// Whether it is a keyframe.
        keyframe: bool,
        /// Extended 90 kHz RTP timestamp.
        rtp_time: u64,
    },
    /// The peer lost video and asks for a keyframe: force one from the encoder.
    KeyframeRequested,
    /// The video bitrate target changed: reconfigure the encoder.
    TargetBitrate {
        /// Bits per second.
        bps: u64,
    },
    /// The peer reported this fraction of our audio lost (0..=1): set the Opus
    /// encoder's expected packet loss so its in-band FEC matches.
    AudioLoss {
        /// Fraction lost over the last report interval.
        fraction: f32,
    },
    /// The peer said goodbye (RTCP BYE).
    PeerLeft,
}

/// Why the session wants `handle_timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A paced packet may leave.
    Pacer,
    /// A NACK is due (first request or a repeat).
    Nack,
    /// A video frame's retransmission deadline, or a keyframe request repeat.
    VideoBuffer,
    /// A regular RTCP report is due.
    Rtcp,
}

/// The session's next deadline and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeout {
    /// When to call `handle_timeout`.
    pub at: Instant,
    /// Why.
    pub reason: Reason,
}
