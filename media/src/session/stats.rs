//! The session's statistics, a plain struct returned by `Session::stats`.

use std::collections::VecDeque;
use std::time::Duration;

use crate::jitter::audio::AudioPlayoutStats;
use crate::jitter::video::VideoPlayoutStats;
use crate::recv::RecvCounters;
use crate::recv::nack::NackCounters;
use crate::send::SendCounters;

/// Latency samples kept per kind for percentiles.
const LATENCY_SAMPLES: usize = 10_000;

/// Capture-to-playout latency percentiles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencyStats {
    /// Samples behind the percentiles (the most recent ones).
    pub samples: usize,
    /// Median.
    pub p50: Duration,
    /// 95th percentile.
    pub p95: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Maximum.
    pub max: Duration,
}

/// A bounded window of latency samples.
#[derive(Debug, Default)]
pub(crate) struct LatencyWindow(VecDeque<Duration>);

impl LatencyWindow {
    pub(crate) fn push(&mut self, d: Duration) {
        if self.0.len() == LATENCY_SAMPLES {
            self.0.pop_front();
        }
        self.0.push_back(d);
    }

    pub(crate) fn stats(&self) -> LatencyStats {
        let mut v: Vec<Duration> = self.0.iter().copied().collect();
        v.sort();
        let at = |q: f64| {
            v.get(((v.len().saturating_sub(1)) as f64 * q).round() as usize)
                .copied()
                .unwrap_or_default()
        };
        LatencyStats {
            samples: v.len(),
            p50: at(0.5),
            p95: at(0.95),
            p99: at(0.99),
            max: v.last().copied().unwrap_or_default(),
        }
    }
}

/// One incoming stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecvStreamStats {
    /// Packet counters (loss before recovery is `counters.lost` plus recovered).
    pub counters: RecvCounters,
    /// RFC 3550 interarrival jitter.
    pub jitter: Duration,
    /// NACK generator counters.
    pub nack: NackCounters,
    /// Average received bitrate since the stream began, bits per second.
    pub bitrate_bps: u64,
}

/// Datagrams dropped before reaching a stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropStats {
    /// Not RTP or RTCP (RFC 5761 / 7983 demultiplexing).
    pub foreign: u64,
    /// RTP that did not parse.
    pub malformed_rtp: u64,
    /// RTCP that did not parse.
    pub malformed_rtcp: u64,
    /// RTP with an unknown payload type or SSRC.
    pub unknown_stream: u64,
    /// RTP whose payload broke its format.
    pub bad_payload: u64,
}

/// Everything measured, both directions.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stats {
    /// Smoothed round-trip time from RTCP LSR/DLSR.
    pub rtt: Option<Duration>,
    /// Current video bitrate target.
    pub target_bitrate_bps: u64,
    /// Steady loss the bitrate controller has learned.
    pub steady_loss: f64,
    /// Our audio stream, sent.
    pub send_audio: SendCounters,
    /// Our video stream, sent.
    pub send_video: SendCounters,
    /// Average sent bitrate (media + RTX) since the session began.
    pub send_bitrate_bps: u64,
    /// Loss fraction the peer last reported for our audio.
    pub peer_audio_loss: f32,
    /// Loss fraction the peer last reported for our video.
    pub peer_video_loss: f32,
    /// Keyframes the peer asked us for.
    pub keyframes_requested_by_peer: u64,
    /// The peer's audio, received.
    pub recv_audio: RecvStreamStats,
    /// The peer's video, received.
    pub recv_video: RecvStreamStats,
    /// Audio playout (jitter buffer) figures.
    pub audio_playout: AudioPlayoutStats,
    /// Video frame buffer figures, freezes included.
    pub video_playout: VideoPlayoutStats,
    /// Audio capture-to-playout latency.
    pub audio_latency: LatencyStats,
    /// Video capture-to-emit latency (decode and render not included).
    pub video_latency: LatencyStats,
    /// Datagrams dropped before any stream.
    pub dropped: DropStats,
}
