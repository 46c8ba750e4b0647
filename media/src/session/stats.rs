//! The session's statistics, a plain struct returned by `Session::stats`.

use std::collections::VecDeque;
use std::time::Duration;

use serde::Serialize;

use crate::jitter::audio::AudioPlayoutStats;
use crate::jitter::video::VideoPlayoutStats;
use crate::recv::RecvCounters;
use crate::recv::nack::NackCounters;
use crate::send::SendCounters;

/// Latency samples kept per kind for percentiles.
const LATENCY_SAMPLES: usize = 10_000;

/// Capture-to-playout latency percentiles; durations serialize as milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LatencyStats {
    /// Samples behind the percentiles (the most recent ones).
    pub samples: usize,
    /// Median.
    #[serde(serialize_with = "ms")]
    pub p50: Duration,
    /// 95th percentile.
    #[serde(serialize_with = "ms")]
    pub p95: Duration,
    /// 99th percentile.
    #[serde(serialize_with = "ms")]
    pub p99: Duration,
    /// Maximum.
    #[serde(serialize_with = "ms")]
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RecvStreamStats {
    /// Packet counters (loss before recovery is `counters.lost` plus recovered).
    pub counters: RecvCounters,
    /// RFC 3550 interarrival jitter (milliseconds in JSON).
    #[serde(serialize_with = "ms")]
    pub jitter: Duration,
    /// NACK generator counters.
    pub nack: NackCounters,
    /// Average received bitrate since the stream began, bits per second.
    pub bitrate_bps: u64,
}

/// Datagrams refused before reaching a stream, by reason. Every incoming datagram is
/// admitted or refused in one place (`Session::handle_datagram`); these say why.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Refused {
    /// Not RTP or RTCP (RFC 5761 / 7983 demultiplexing).
    pub foreign: u64,
    /// Arrived before a path to the peer was selected.
    pub before_path: u64,
    /// Came from another source address than the selected path.
    pub foreign_source: u64,
    /// RTP that did not parse.
    pub malformed_rtp: u64,
    /// RTCP that did not parse.
    pub malformed_rtcp: u64,
    /// RTP whose SSRC was not agreed (or no agreement yet).
    pub unknown_ssrc: u64,
    /// RTP on an agreed SSRC with another payload type than agreed for it.
    pub unknown_pt: u64,
    /// RTP held back on probation after a sequence jump.
    pub probation: u64,
    /// RTCP packets (within a compound) sent from, or about, an SSRC that is not the
    /// peer's (sender) or ours (media): a BYE naming a stranger, a forged NACK or PLI.
    pub rtcp_foreign_ssrc: u64,
    /// RTCP feedback for something not agreed: a PLI without `pli`, a NACK for a kind
    /// without `nack`.
    pub rtcp_not_agreed: u64,
    /// RTP whose payload broke its format (an RTX packet without its sequence number,
    /// an Opus payload that does not depacketize).
    pub bad_payload: u64,
    /// SRTP or SRTCP whose authentication tag did not verify: tampered, forged, or sent
    /// with other keys.
    pub srtp_auth: u64,
    /// SRTP or SRTCP whose packet index was already seen or fell behind the replay
    /// window: a replay (or a duplicate from the network).
    pub srtp_replay: u64,
    /// RED payloads (RFC 2198) that broke the format, carried another payload type than
    /// the agreed Opus one, or a block at an offset that is not whole frames back.
    pub bad_red: u64,
    /// Transport-cc feedback that named packets we never sent.
    pub bad_feedback: u64,
}

impl Refused {
    /// Everything refused.
    pub fn total(&self) -> u64 {
        let Self {
            foreign,
            before_path,
            foreign_source,
            malformed_rtp,
            malformed_rtcp,
            unknown_ssrc,
            unknown_pt,
            probation,
            rtcp_foreign_ssrc,
            rtcp_not_agreed,
            bad_payload,
            srtp_auth,
            srtp_replay,
            bad_red,
            bad_feedback,
        } = *self;
        foreign
            + before_path
            + foreign_source
            + malformed_rtp
            + malformed_rtcp
            + unknown_ssrc
            + unknown_pt
            + probation
            + rtcp_foreign_ssrc
            + rtcp_not_agreed
            + bad_payload
            + srtp_auth
            + srtp_replay
            + bad_red
            + bad_feedback
    }
}

/// Serializes a duration as milliseconds (f64), for the JSON stats.
pub(crate) fn ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

/// Serializes an optional duration as milliseconds (f64) or null.
pub(crate) fn opt_ms<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&(d.as_secs_f64() * 1000.0)),
        None => s.serialize_none(),
    }
}

/// Padding-only RTP packets admitted (on an agreed RTX stream): the peer's probes for
/// capacity. They carry no media and count in no stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PaddingReceived {
    /// Packets.
    pub packets: u64,
    /// Their datagram bytes.
    pub bytes: u64,
}

/// Everything measured, both directions. Serializes (durations as milliseconds) so a
/// client can write live stats as JSON lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Stats {
    /// Smoothed round-trip time from RTCP LSR/DLSR (milliseconds in JSON).
    #[serde(serialize_with = "opt_ms")]
    pub rtt: Option<Duration>,
    /// Current video bitrate target.
    pub target_bitrate_bps: u64,
    /// The loss-based part of it (GCC's loss rule).
    pub loss_target_bps: u64,
    /// The peer's delay-based estimate of our send rate (its REMB), once one came.
    pub peer_estimate_bps: Option<u64>,
    /// REMB packets admitted from the peer.
    pub remb_received: u64,
    /// What everything we send is held to under delay-based control: the peer's
    /// estimate, the start estimate before the first, halved on each feedback timeout.
    pub held_estimate_bps: Option<u64>,
    /// Times the held estimate was halved because no estimate came from the peer.
    pub feedback_timeouts: u64,
    /// Times no estimate came from the peer for a feedback timeout while its transport
    /// feedback acknowledged what was sent: the estimates were lost on the way, and
    /// what is held was kept.
    #[serde(default)]
    pub estimates_missed: u64,
    /// Times the held estimate was cut to what the path delivers because the
    /// congestion window found it collapsed (before the peer's estimate could say so).
    pub collapse_cuts: u64,
    /// The probe clusters we sent for capacity (their packets are in
    /// `send_video.padding_*`).
    pub probe: crate::send::probe::ProbeSendCounters,
    /// The peer's padding-only packets (its probes) admitted.
    pub padding_received: PaddingReceived,
    /// Our delay-based estimate of the peer's send rate, and what its detector and rate
    /// controller did.
    pub delay_bwe: crate::cc::DelayBweStats,
    /// Protection the send budget refused (it holds all we send to the peer's
    /// estimate), by class.
    pub budget: crate::send::budget::BudgetCounters,
    /// Transport-cc, our side as sender: the packets we numbered, what the peer's
    /// feedback reported of them, and the congestion window's closings.
    pub in_flight: crate::send::inflight::InFlightCounters,
    /// Transport-cc, our side as receiver: the peer's numbered packets and our feedback.
    pub transport_feedback: crate::recv::tcc::FeedbackCounters,
    /// Steady loss the bitrate controller has learned.
    pub steady_loss: f64,
    /// Our audio stream, sent.
    pub send_audio: SendCounters,
    /// How far back our audio packets repeat earlier frames now (RFC 2198; 0: none).
    pub red_distance: u8,
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
    /// Video FEC received: packets, media packets rebuilt, refusals.
    pub video_fec: crate::fec::FecCounters,
    /// Audio capture-to-playout latency.
    pub audio_latency: LatencyStats,
    /// Video capture-to-emit latency (decode and render not included).
    pub video_latency: LatencyStats,
    /// Datagrams refused before any stream, by reason.
    pub refused: Refused,
    /// Datagrams dropped unsent because no path to the peer was selected yet.
    pub unsent_before_path: u64,
    /// Datagrams dropped unsent because no keys were agreed yet (nothing leaves in
    /// clear unless the agreement says so), or protecting one failed.
    pub unsent_without_keys: u64,
}
