//! The end-of-call report: every figure DESIGN.md's "What is measured" names, for one
//! endpoint (what it sent, and what it received and played).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{AudioReceiverStats, VideoReceiverStats};
use crate::probe::{Detection, LatencySummary, MarkerCounts};
use crate::quality::Impairments;
use crate::session::LatencyStats;
use crate::session::Stats;

/// Where a latency figure comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LatencySource {
    /// Timing markers found in the decoded media as it was played or shown: true
    /// mouth-to-ear and glass-to-glass latency.
    Probe,
    /// The capture-time header extension, read when the frame left the jitter buffer,
    /// plus the codec's algorithmic delay (Opus look-ahead, [`OPUS_LOOKAHEAD`], for
    /// audio): used with real devices and files. The output device's own buffer is not
    /// included.
    CaptureTime,
    /// Nothing to measure with.
    None,
}

/// Latency percentiles, milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatencyReport {
    /// Where the figures come from.
    pub source: LatencySource,
    /// How many samples.
    pub samples: usize,
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Maximum.
    #[serde(default)]
    pub max_ms: f64,
    /// Probe samples left out of the percentiles as warm-up (the first second of
    /// markers, while the buffers settle), and the largest of them.
    #[serde(default)]
    pub warmup_samples: usize,
    /// The largest warm-up latency.
    #[serde(default)]
    pub warmup_max_ms: f64,
}

/// Opus's algorithmic delay at 48 kHz (312 samples: 2.5 ms look-ahead plus 4 ms delay
/// compensation in the encoder): decoded audio plays this much after the capture time
/// its packet carries.
pub const OPUS_LOOKAHEAD: Duration = Duration::from_micros(6_500);

/// How much of the start of a call the audio percentiles leave out.
pub const AUDIO_WARMUP: Duration = Duration::from_secs(1);

impl LatencyReport {
    /// Probe detections when there are any (those of the first `warmup`, if given,
    /// reported apart), else the capture-time figures plus `codec_delay`.
    fn new(
        detections: &[Detection],
        capture: LatencyStats,
        warmup: Option<Duration>,
        codec_delay: Duration,
    ) -> Self {
        let us_ms = |us: i64| us as f64 / 1000.0;
        let (steady, early) = match warmup {
            Some(w) => LatencySummary::after_warmup(detections, w),
            None => (LatencySummary::of(detections), None),
        };
        if let Some(s) = steady.or(early) {
            let early = early.filter(|_| steady.is_some());
            return Self {
                source: LatencySource::Probe,
                samples: s.count,
                p50_ms: us_ms(s.p50_us),
                p95_ms: us_ms(s.p95_us),
                p99_ms: us_ms(s.p99_us),
                max_ms: us_ms(s.max_us),
                warmup_samples: early.map_or(0, |e| e.count),
                warmup_max_ms: early.map_or(0.0, |e| us_ms(e.max_us)),
            };
        }
        let (source, codec_delay) = if capture.samples > 0 {
            (LatencySource::CaptureTime, codec_delay)
        } else {
            (LatencySource::None, Duration::ZERO)
        };
        Self {
            source,
            samples: capture.samples,
            p50_ms: ms(capture.p50 + codec_delay),
            p95_ms: ms(capture.p95 + codec_delay),
            p99_ms: ms(capture.p99 + codec_delay),
            max_ms: ms(capture.max + codec_delay),
            warmup_samples: 0,
            warmup_max_ms: 0.0,
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

fn kbps(bits_per_second: u64) -> f64 {
    bits_per_second as f64 / 1000.0
}

/// What this endpoint sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentReport {
    /// Average sending bitrate, media and retransmissions.
    pub bitrate_kbps: f64,
    /// The video bitrate target at the end.
    pub target_bitrate_kbps: f64,
    /// Audio packets.
    pub audio_packets: u64,
    /// Video packets.
    pub video_packets: u64,
    /// Media bytes (datagrams, originals only).
    pub media_bytes: u64,
    /// Retransmitted bytes (RTX datagrams).
    pub rtx_bytes: u64,
    /// Retransmitted bytes over media bytes. Opus FEC travels inside the audio packets,
    /// so its cost is part of the audio bitrate rather than counted here.
    pub rtx_overhead_percent: f64,
    /// Video FEC bytes (datagrams) over media bytes.
    #[serde(default)]
    pub fec_overhead_percent: f64,
    /// Keyframes the peer asked for.
    pub keyframes_requested_by_peer: u64,
    /// Video packets (media, FEC, retransmissions) made but dropped unsent from the
    /// pacer, superseded by a keyframe the peer asked for; `video_packets` counts the
    /// media among them.
    #[serde(default)]
    pub superseded_packets: u64,
    /// Their datagram bytes.
    #[serde(default)]
    pub superseded_bytes: u64,
    /// Audio packets that carried earlier frames again (RFC 2198).
    #[serde(default)]
    pub red_packets: u64,
    /// Redundancy's bytes (RED headers and repeated frames) over the audio frames'
    /// own bytes, percent.
    #[serde(default)]
    pub red_overhead_percent: f64,
    /// The peer's delay-based estimate of our send rate at the end (its last REMB),
    /// kbit/s; 0 when none came.
    #[serde(default)]
    pub peer_estimate_kbps: f64,
    /// Our delay-based estimator of what the peer sends: what its detector said and what
    /// its rate controller did.
    #[serde(default)]
    pub delay_bwe: crate::cc::DelayBweStats,
    /// Protection the send budget refused, by class (it holds all this endpoint sends
    /// to the peer's estimate).
    #[serde(default)]
    pub budget: crate::send::budget::BudgetCounters,
    /// Transport-cc as sender: packets numbered, what the peer's feedback said of
    /// them, and the congestion window's closings.
    #[serde(default)]
    pub in_flight: crate::send::inflight::InFlightCounters,
    /// Transport-cc as receiver: the peer's numbered packets and our feedback on them.
    #[serde(default)]
    pub transport_feedback: crate::recv::tcc::FeedbackCounters,
}

/// The audio this endpoint received and played.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudioReport {
    /// Playout slots since playout began.
    pub frames: u64,
    /// Slots played from their own packet.
    pub decoded: u64,
    /// Slots recovered from in-band FEC.
    pub fec: u64,
    /// Lost frames played from a later packet's redundancy (RFC 2198).
    #[serde(default)]
    pub red: u64,
    /// Slots that played two frames time-compressed into one: the jitter buffer
    /// catching up to a lower target without skipping audio.
    #[serde(default)]
    pub accelerated: u64,
    /// Frames the jitter buffer dropped (never played): a lost slot skipped while
    /// catching up, audio older than the target when playout started, overflow, a
    /// stream reset.
    #[serde(default)]
    pub dropped: u64,
    /// Of `dropped`, frames dropped when playout started (captured before the path
    /// was up).
    #[serde(default)]
    pub dropped_at_start: u64,
    /// Slots concealed: media that never played, plus the slots the jitter buffer
    /// inserted on purpose to grow its delay (`stretched`).
    pub concealed: u64,
    /// Slots the jitter buffer concealed to grow its delay, with no media lost.
    #[serde(default)]
    pub stretched: u64,
    /// Packets the network lost before any recovery, percent of those expected.
    pub loss_before_recovery_percent: f64,
    /// Packets repaired by retransmission.
    pub recovered_rtx: u64,
    /// Media that never played (concealed slots less stretched ones), percent of all
    /// slots: loss after NACK and FEC.
    pub residual_loss_percent: f64,
    /// RFC 3550 interarrival jitter.
    pub jitter_ms: f64,
    /// Jitter-buffer delay at the end (audio held beyond the frame playing).
    pub jitter_buffer_ms: f64,
    /// Frames that arrived after their slot.
    pub late: u64,
    /// Average receive bitrate.
    pub bitrate_kbps: f64,
    /// Mouth-to-ear latency.
    pub latency: LatencyReport,
    /// The probe's markers: read, or found and not read, by reason (a marker whose
    /// sync burst was never found is in none of them).
    #[serde(default)]
    pub markers: MarkerCounts,
}

/// The video this endpoint received and showed.
///
/// Every frame is accounted for: `received` = `frames` + `dropped` + `pending`, and
/// `frames` = `decoded` + `decode_errors` + `waiting_for_keyframe` + `decoder_behind` +
/// `no_picture` + `in_flight` ([`VideoReport::unaccounted`] is zero).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoReport {
    /// Frames of which at least one packet reached the frame buffer.
    #[serde(default)]
    pub received: u64,
    /// Frames the frame buffer emitted.
    pub frames: u64,
    /// Pictures decoded and shown.
    pub decoded: u64,
    /// Keyframes received.
    pub keyframes: u64,
    /// Frames the frame buffer discarded: the sum of the three reasons below.
    pub dropped: u64,
    /// Given up incomplete (a packet never came in time).
    #[serde(default)]
    pub dropped_incomplete: u64,
    /// Complete but not depacketizable.
    #[serde(default)]
    pub dropped_undecodable: u64,
    /// Evicted from a full buffer or forgotten at a stream restart.
    #[serde(default)]
    pub dropped_overflow: u64,
    /// Held in the frame buffer when the report was made.
    #[serde(default)]
    pub pending: u64,
    /// Emitted delta frames the decoder passed over while it waited for a keyframe.
    #[serde(default)]
    pub waiting_for_keyframe: u64,
    /// Emitted frames that never reached the decoder because it was behind.
    #[serde(default)]
    pub decoder_behind: u64,
    /// Emitted frames the decoder took without giving a picture back.
    #[serde(default)]
    pub no_picture: u64,
    /// Emitted frames still queued for the decoder when the report was made.
    #[serde(default)]
    pub in_flight: u64,
    /// Keyframe requests sent.
    pub keyframe_requests: u64,
    /// Freezes (WebRTC definition).
    pub freezes: u64,
    /// Time spent frozen.
    pub freeze_ms: f64,
    /// Packets the network lost before any recovery, percent of those expected.
    pub loss_before_recovery_percent: f64,
    /// Packets repaired by retransmission.
    pub recovered_rtx: u64,
    /// Packets rebuilt from FEC.
    #[serde(default)]
    pub recovered_fec: u64,
    /// Packets still missing after retransmission, percent of those expected.
    pub residual_loss_percent: f64,
    /// Access units the decoder refused.
    pub decode_errors: u64,
    /// Average receive bitrate.
    pub bitrate_kbps: f64,
    /// Glass-to-glass latency.
    pub latency: LatencyReport,
}

/// The E-model's rating of the audio heard.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QualityReport {
    /// R-factor, 0 to 100.
    pub r: f64,
    /// Mean opinion score, 1 to 4.5.
    pub mos: f64,
}

/// Everything one endpoint measured in a call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// How long media flowed.
    pub duration_secs: f64,
    /// Smoothed round-trip time.
    pub rtt_ms: Option<f64>,
    /// What was sent.
    pub sent: SentReport,
    /// Audio received.
    pub audio: AudioReport,
    /// Video received, in a video call.
    pub video: Option<VideoReport>,
    /// Quality of the audio received.
    pub quality: QualityReport,
}

impl Report {
    /// Builds the report from the session's statistics and the receivers' counters.
    pub fn new(
        duration: Duration,
        stats: &Stats,
        audio: (AudioReceiverStats, &[Detection]),
        video: Option<(VideoReceiverStats, &[Detection])>,
    ) -> Self {
        let (audio_rx, audio_detections) = audio;
        let sent = SentReport {
            bitrate_kbps: kbps(stats.send_bitrate_bps),
            target_bitrate_kbps: kbps(stats.target_bitrate_bps),
            audio_packets: stats.send_audio.packets,
            video_packets: stats.send_video.packets,
            media_bytes: stats.send_audio.bytes + stats.send_video.bytes,
            rtx_bytes: stats.send_audio.rtx_bytes + stats.send_video.rtx_bytes,
            rtx_overhead_percent: percent(
                stats.send_audio.rtx_bytes + stats.send_video.rtx_bytes,
                stats.send_audio.bytes + stats.send_video.bytes,
            ),
            keyframes_requested_by_peer: stats.keyframes_requested_by_peer,
            superseded_packets: stats.send_video.superseded_packets,
            superseded_bytes: stats.send_video.superseded_bytes,
            red_packets: stats.send_audio.red_packets,
            red_overhead_percent: percent(
                stats.send_audio.red_bytes,
                stats.send_audio.payload_bytes,
            ),
            fec_overhead_percent: percent(
                stats.send_video.fec_bytes,
                stats.send_audio.bytes + stats.send_video.bytes,
            ),
            peer_estimate_kbps: kbps(stats.peer_estimate_bps.unwrap_or(0)),
            delay_bwe: stats.delay_bwe,
            budget: stats.budget,
            in_flight: stats.in_flight,
            transport_feedback: stats.transport_feedback,
        };
        let a = &stats.recv_audio;
        let frames = audio_rx.decoded + audio_rx.fec + audio_rx.concealed;
        // The receiver conceals every slot the jitter buffer gives it nothing for; the
        // session knows which of those were inserted to grow the buffer, not lost.
        let stretched = stats.audio_playout.stretched.min(audio_rx.concealed);
        let audio = AudioReport {
            frames,
            decoded: audio_rx.decoded,
            fec: audio_rx.fec,
            red: stats.audio_playout.red,
            accelerated: audio_rx.accelerated,
            dropped: stats.audio_playout.dropped,
            dropped_at_start: stats.audio_playout.dropped_at_start,
            concealed: audio_rx.concealed,
            stretched,
            loss_before_recovery_percent: percent(
                a.counters.lost_before_recovery,
                a.counters.expected,
            ),
            recovered_rtx: a.counters.recovered_rtx,
            residual_loss_percent: percent(audio_rx.concealed - stretched, frames),
            jitter_ms: ms(a.jitter),
            jitter_buffer_ms: ms(stats.audio_playout.level),
            late: stats.audio_playout.late,
            bitrate_kbps: kbps(a.bitrate_bps),
            markers: audio_rx.markers,
            latency: LatencyReport::new(
                audio_detections,
                stats.audio_latency,
                Some(AUDIO_WARMUP),
                OPUS_LOOKAHEAD,
            ),
        };
        let video = video.map(|(video_rx, detections)| {
            let v = &stats.recv_video;
            let p = &stats.video_playout;
            VideoReport {
                received: p.received,
                frames: p.frames,
                decoded: video_rx.decoded,
                keyframes: p.keyframes,
                dropped: p.dropped,
                dropped_incomplete: p.dropped_incomplete,
                dropped_undecodable: p.dropped_undecodable,
                dropped_overflow: p.dropped_overflow,
                pending: p.pending,
                waiting_for_keyframe: video_rx.waiting_for_keyframe,
                decoder_behind: video_rx.skipped,
                no_picture: video_rx.no_picture,
                in_flight: p.frames.saturating_sub(video_rx.total()),
                keyframe_requests: p.keyframe_requests,
                freezes: p.freezes,
                freeze_ms: ms(p.freeze_time),
                loss_before_recovery_percent: percent(
                    v.counters.lost_before_recovery,
                    v.counters.expected,
                ),
                // The stream counts each way a hole was filled on its own: a packet
                // rebuilt from FEC is never also counted as a retransmission.
                recovered_rtx: v.counters.recovered_rtx,
                recovered_fec: v.counters.recovered_fec,
                residual_loss_percent: percent(v.counters.lost, v.counters.expected),
                decode_errors: video_rx.decode_errors,
                bitrate_kbps: kbps(v.bitrate_bps),
                latency: LatencyReport::new(detections, stats.video_latency, None, Duration::ZERO),
            }
        });
        let rating = Impairments::new(audio.latency.p50_ms, audio.residual_loss_percent).rate();
        Self {
            duration_secs: duration.as_secs_f64(),
            rtt_ms: stats.rtt.map(ms),
            sent,
            audio,
            video,
            quality: QualityReport {
                r: rating.r,
                mos: rating.mos,
            },
        }
    }
}

impl VideoReport {
    /// Frames the counts do not explain: zero when every frame received was shown or
    /// dropped for a named reason (negative when something was counted twice).
    pub fn unaccounted(&self) -> i64 {
        let buffer = self.frames + self.dropped + self.pending;
        let reasons = self.dropped_incomplete + self.dropped_undecodable + self.dropped_overflow;
        let decoder = self.decoded
            + self.decode_errors
            + self.waiting_for_keyframe
            + self.decoder_behind
            + self.no_picture
            + self.in_flight;
        let signed = |a: u64, b: u64| a as i64 - b as i64;
        signed(self.received, buffer) + signed(self.dropped, reasons) + signed(self.frames, decoder)
    }
}

impl fmt::Display for LatencyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.source {
            LatencySource::None => write!(f, "not measured"),
            source => {
                write!(
                    f,
                    "p50 {:.0} ms  p95 {:.0} ms  p99 {:.0} ms  max {:.0} ms  ({} samples, {})",
                    self.p50_ms,
                    self.p95_ms,
                    self.p99_ms,
                    self.max_ms,
                    self.samples,
                    if source == LatencySource::Probe {
                        "probe"
                    } else {
                        "capture time"
                    }
                )?;
                if self.warmup_samples > 0 {
                    write!(
                        f,
                        "; first second apart: {} samples, max {:.0} ms",
                        self.warmup_samples, self.warmup_max_ms
                    )?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            duration_secs,
            rtt_ms,
            sent,
            audio,
            video,
            quality,
        } = self;
        let rtt = rtt_ms.map_or("-".to_owned(), |r| format!("{r:.0} ms"));
        writeln!(f, "  duration            {duration_secs:.1} s, RTT {rtt}")?;
        writeln!(
            f,
            "  sent                {:.0} kbit/s (target {:.0}), RTX overhead {:.1} %, \
             keyframes asked {}",
            sent.bitrate_kbps,
            sent.target_bitrate_kbps,
            sent.rtx_overhead_percent,
            sent.keyframes_requested_by_peer
        )?;
        writeln!(f, "  audio latency       {}", audio.latency)?;
        let m = audio.markers;
        if m.read + m.unread_no_tones + m.unread_check + m.rejected > 0 {
            writeln!(
                f,
                "  audio markers       {} read; unread: {} without tones, {} failing the \
                 check; {} rejected (index out of place)",
                m.read, m.unread_no_tones, m.unread_check, m.rejected
            )?;
        }
        writeln!(
            f,
            "  audio loss          {:.2} % on the link, {:.3} % after recovery \
             ({} FEC, {} RED, {} RTX, {} concealed of {} frames; {} stretched to grow the \
             buffer)",
            audio.loss_before_recovery_percent,
            audio.residual_loss_percent,
            audio.fec,
            audio.red,
            audio.recovered_rtx,
            audio.concealed.saturating_sub(audio.stretched),
            audio.frames,
            audio.stretched
        )?;
        writeln!(
            f,
            "  audio redundancy    {} packets repeated earlier frames, {:.0} % of the audio \
             bytes; buffer dropped {} frames ({} at the start), sped up {} slots",
            sent.red_packets,
            sent.red_overhead_percent,
            audio.dropped,
            audio.dropped_at_start,
            audio.accelerated
        )?;
        writeln!(
            f,
            "  audio jitter        {:.1} ms, jitter buffer {:.0} ms, {:.0} kbit/s",
            audio.jitter_ms, audio.jitter_buffer_ms, audio.bitrate_kbps
        )?;
        if let Some(v) = video {
            writeln!(f, "  video latency       {}", v.latency)?;
            writeln!(
                f,
                "  video loss          {:.2} % on the link, {:.3} % after recovery ({} RTX, \
                 {} FEC)",
                v.loss_before_recovery_percent,
                v.residual_loss_percent,
                v.recovered_rtx,
                v.recovered_fec
            )?;
            writeln!(
                f,
                "  video frames        {} shown, {} dropped, {} keyframes ({} asked), \
                 {} freezes ({:.0} ms), {:.0} kbit/s",
                v.decoded,
                v.dropped,
                v.keyframes,
                v.keyframe_requests,
                v.freezes,
                v.freeze_ms,
                v.bitrate_kbps
            )?;
            writeln!(
                f,
                "  video accounting    {} received = {} emitted + {} dropped ({} incomplete, \
                 {} undecodable, {} overflow) + {} pending; emitted = {} shown + {} decode \
                 errors + {} awaiting a keyframe + {} decoder behind + {} no picture + {} \
                 in flight",
                v.received,
                v.frames,
                v.dropped,
                v.dropped_incomplete,
                v.dropped_undecodable,
                v.dropped_overflow,
                v.pending,
                v.decoded,
                v.decode_errors,
                v.waiting_for_keyframe,
                v.decoder_behind,
                v.no_picture,
                v.in_flight
            )?;
        }
        write!(
            f,
            "  quality             R {:.1}, MOS {:.2} (ITU-T G.107)",
            quality.r, quality.mos
        )
    }
}
