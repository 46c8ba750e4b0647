//! The end-of-call summary a person reads: one block per direction (what this side sent,
//! then what arrived from the peer, audio and video apart), each rated, and one word for
//! the whole call.
//!
//! Each block is its own struct with its own `Display`; [`Summary`] holds them in order.
//! To add a block (the media path, a safety code, RED counters): write its struct and
//! `Display`, add a field to [`Summary`], build it in [`Summary::new`] and write it in
//! `Summary`'s `Display`.

use std::fmt;

use magpie_media::call::{
    AudioReport, LatencyReport, LatencySource, Report, SentReport, VideoReport,
};

/// Percentiles over fewer samples than this are marked as such.
const FEW_SAMPLES: usize = 10;
/// Calls shorter than this are not judged.
const TOO_SHORT_SECS: f64 = 2.0;

/// The whole summary.
#[derive(Debug, Clone)]
pub struct Summary<'a> {
    /// Who, why it ended, how long, the round trip.
    pub header: Header<'a>,
    /// What this side sent.
    pub sent: Sent<'a>,
    /// The audio that arrived.
    pub audio: ReceivedAudio<'a>,
    /// The video that arrived, in a video call.
    pub video: Option<ReceivedVideo<'a>>,
    /// One word.
    pub verdict: Verdict,
}

impl<'a> Summary<'a> {
    /// Builds the blocks from `report`; `fps` is the frame rate the peer said it sends.
    pub fn new(
        user: &'a str,
        peer: &'a str,
        cause: String,
        report: &'a Report,
        fps: Option<u32>,
    ) -> Self {
        let video = report.video.as_ref().map(|v| ReceivedVideo {
            video: v,
            duration_secs: report.duration_secs,
            nominal_fps: fps,
        });
        let audio = ReceivedAudio {
            audio: &report.audio,
            mos: report.quality.mos,
            r: report.quality.r,
        };
        let verdict = Verdict::new(
            report.duration_secs,
            report.quality.mos,
            video.as_ref().map(ReceivedVideo::rating),
        );
        Self {
            header: Header {
                peer,
                cause,
                duration_secs: report.duration_secs,
                rtt_ms: report.rtt_ms,
            },
            sent: Sent {
                user,
                sent: &report.sent,
            },
            audio,
            video,
            verdict,
        }
    }
}

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.header)?;
        writeln!(f, "{}", self.sent)?;
        writeln!(f, "received from {}:", self.header.peer)?;
        writeln!(f, "{}", self.audio)?;
        if let Some(video) = &self.video {
            writeln!(f, "{video}")?;
        }
        write!(f, "{}", self.verdict)
    }
}

/// Who, why it ended, how long, the round trip.
#[derive(Debug, Clone)]
pub struct Header<'a> {
    peer: &'a str,
    cause: String,
    duration_secs: f64,
    rtt_ms: Option<f64>,
}

impl fmt::Display for Header<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rtt = self.rtt_ms.map_or("-".to_owned(), |r| format!("{r:.0} ms"));
        write!(
            f,
            "call with {} ended: {} ({:.1} s, round trip {rtt})",
            self.peer, self.cause, self.duration_secs
        )
    }
}

/// What this side sent.
#[derive(Debug, Clone)]
pub struct Sent<'a> {
    user: &'a str,
    sent: &'a SentReport,
}

impl fmt::Display for Sent<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.sent;
        write!(
            f,
            "sent by {}:\n  media               {:.0} kbit/s (target {:.0}), {} audio and {} video \
             packets, retransmissions {:.1} % on top, {} keyframes asked by the peer",
            self.user,
            s.bitrate_kbps,
            s.target_bitrate_kbps,
            s.audio_packets,
            s.video_packets,
            s.rtx_overhead_percent,
            s.keyframes_requested_by_peer
        )
    }
}

/// The audio that arrived, rated by MOS.
#[derive(Debug, Clone)]
pub struct ReceivedAudio<'a> {
    audio: &'a AudioReport,
    mos: f64,
    r: f64,
}

impl fmt::Display for ReceivedAudio<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let a = self.audio;
        writeln!(
            f,
            "  audio               MOS {:.2} (R {:.1}, ITU-T G.107), {:.0} kbit/s",
            self.mos, self.r, a.bitrate_kbps
        )?;
        writeln!(
            f,
            "    loss              {:.2} % on the link, {:.3} % after recovery \
             ({} FEC, {} redundancy, {} RTX, {} concealed of {} frames; {} stretched to \
             grow the buffer)",
            a.loss_before_recovery_percent,
            a.residual_loss_percent,
            a.fec,
            a.red,
            a.recovered_rtx,
            a.concealed.saturating_sub(a.stretched),
            a.frames,
            a.stretched
        )?;
        if a.accelerated > 0 {
            writeln!(
                f,
                "    sped up           {} slots played two frames each, to bring the delay \
                 down",
                a.accelerated
            )?;
        }
        if a.dropped > 0 {
            writeln!(
                f,
                "    dropped           {} frames to keep the delay down ({} at the start)",
                a.dropped, a.dropped_at_start
            )?;
        }
        writeln!(
            f,
            "    jitter            {:.1} ms, jitter buffer {:.0} ms",
            a.jitter_ms, a.jitter_buffer_ms
        )?;
        write!(f, "    latency           {}", Latency(&a.latency))
    }
}

/// How the video held up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoRating {
    /// Near the nominal frame rate, freezes under 1 % of the time.
    Smooth,
    /// At least half the frame rate, freezes under 5 % of the time.
    Choppy,
    /// Worse.
    Frozen,
}

/// The video that arrived, rated by frame rate and freezes.
#[derive(Debug, Clone)]
pub struct ReceivedVideo<'a> {
    video: &'a VideoReport,
    duration_secs: f64,
    nominal_fps: Option<u32>,
}

impl ReceivedVideo<'_> {
    fn fps(&self) -> f64 {
        if self.duration_secs > 0.0 {
            self.video.decoded as f64 / self.duration_secs
        } else {
            0.0
        }
    }

    fn frozen_percent(&self) -> f64 {
        if self.duration_secs > 0.0 {
            self.video.freeze_ms / (self.duration_secs * 10.0)
        } else {
            0.0
        }
    }

    /// The rating: the frame rate against the nominal one, and the time spent frozen.
    pub fn rating(&self) -> VideoRating {
        let ratio = self
            .nominal_fps
            .map_or(1.0, |n| self.fps() / f64::from(n.max(1)));
        let frozen = self.frozen_percent();
        if ratio >= 0.8 && frozen < 1.0 {
            VideoRating::Smooth
        } else if ratio >= 0.5 && frozen < 5.0 {
            VideoRating::Choppy
        } else {
            VideoRating::Frozen
        }
    }
}

impl fmt::Display for ReceivedVideo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.video;
        let rating = match self.rating() {
            VideoRating::Smooth => "smooth",
            VideoRating::Choppy => "choppy",
            VideoRating::Frozen => "often frozen",
        };
        let nominal = self
            .nominal_fps
            .map_or(String::new(), |n| format!(" of {n}"));
        writeln!(
            f,
            "  video               {rating}: {:.1} fps{nominal}, {} freezes ({:.0} ms, {:.1} % \
             of the call), {:.0} kbit/s",
            self.fps(),
            v.freezes,
            v.freeze_ms,
            self.frozen_percent(),
            v.bitrate_kbps
        )?;
        writeln!(
            f,
            "    loss              {:.2} % on the link, {:.3} % after recovery ({} RTX), \
             {} dropped, {} keyframes ({} asked)",
            v.loss_before_recovery_percent,
            v.residual_loss_percent,
            v.recovered_rtx,
            v.dropped,
            v.keyframes,
            v.keyframe_requests
        )?;
        write!(f, "    latency           {}", Latency(&v.latency))
    }
}

/// Percentiles, marked when they rest on a handful of samples.
struct Latency<'a>(&'a LatencyReport);

impl fmt::Display for Latency<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = self.0;
        if l.source != LatencySource::None && l.samples < FEW_SAMPLES {
            return write!(
                f,
                "p50 {:.0} ms, highest {:.0} ms (few samples: {}, no finer percentiles)",
                l.p50_ms, l.p99_ms, l.samples
            );
        }
        write!(f, "{l}")
    }
}

/// One word for the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Clear audio (MOS 4.0 or more) and smooth video.
    Good,
    /// MOS 3.6 or more, video not often frozen.
    Fair,
    /// MOS 3.1 or more.
    Poor,
    /// Worse.
    Bad,
    /// Under two seconds of media: nothing to judge.
    TooShort,
}

impl Verdict {
    /// Judges from the audio MOS (the thresholds are ITU-T G.107's user-satisfaction
    /// bands: R 80 / 70 / 60) and the video rating.
    pub fn new(duration_secs: f64, mos: f64, video: Option<VideoRating>) -> Self {
        if duration_secs < TOO_SHORT_SECS {
            return Self::TooShort;
        }
        let video = video.unwrap_or(VideoRating::Smooth);
        if mos >= 4.0 && video == VideoRating::Smooth {
            Self::Good
        } else if mos >= 3.6 && video != VideoRating::Frozen {
            Self::Fair
        } else if mos >= 3.1 {
            Self::Poor
        } else {
            Self::Bad
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let word = match self {
            Self::Good => "good",
            Self::Fair => "fair",
            Self::Poor => "poor",
            Self::Bad => "bad",
            Self::TooShort => "too short to judge",
        };
        write!(f, "verdict: {word}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verdict_follows_audio_and_video() {
        use VideoRating::*;
        assert_eq!(Verdict::new(10.0, 4.4, Some(Smooth)), Verdict::Good);
        assert_eq!(Verdict::new(10.0, 4.4, Some(Choppy)), Verdict::Fair);
        assert_eq!(Verdict::new(10.0, 4.4, Some(Frozen)), Verdict::Poor);
        assert_eq!(Verdict::new(10.0, 4.4, None), Verdict::Good);
        assert_eq!(Verdict::new(10.0, 3.0, Some(Smooth)), Verdict::Bad);
        assert_eq!(Verdict::new(1.0, 4.4, Some(Smooth)), Verdict::TooShort);
    }

    #[test]
    fn video_is_rated_by_frame_rate_and_freezes() {
        let latency = LatencyReport {
            source: LatencySource::None,
            samples: 0,
            p50_ms: 0.0,
            p95_ms: 0.0,
            p99_ms: 0.0,
            max_ms: 0.0,
            warmup_samples: 0,
            warmup_max_ms: 0.0,
        };
        let mut v = VideoReport {
            received: 290,
            frames: 290,
            decoded: 290,
            keyframes: 1,
            dropped: 0,
            dropped_incomplete: 0,
            dropped_undecodable: 0,
            dropped_overflow: 0,
            pending: 0,
            waiting_for_keyframe: 0,
            decoder_behind: 0,
            no_picture: 0,
            in_flight: 0,
            keyframe_requests: 0,
            freezes: 0,
            freeze_ms: 0.0,
            loss_before_recovery_percent: 0.0,
            recovered_rtx: 0,
            recovered_fec: 0,
            residual_loss_percent: 0.0,
            decode_errors: 0,
            bitrate_kbps: 300.0,
            latency,
        };
        let rated = |v: &VideoReport| {
            ReceivedVideo {
                video: v,
                duration_secs: 10.0,
                nominal_fps: Some(30),
            }
            .rating()
        };
        assert_eq!(rated(&v), VideoRating::Smooth);
        v.freeze_ms = 300.0; // 3 % of 10 s
        assert_eq!(rated(&v), VideoRating::Choppy);
        v.decoded = 100;
        assert_eq!(rated(&v), VideoRating::Frozen);
    }

    #[test]
    fn the_audio_lines_show_redundancy_and_frames_dropped_for_delay() {
        let latency = LatencyReport {
            source: LatencySource::Probe,
            samples: 40,
            p50_ms: 140.0,
            p95_ms: 150.0,
            p99_ms: 160.0,
            max_ms: 170.0,
            warmup_samples: 5,
            warmup_max_ms: 190.0,
        };
        let mut audio = AudioReport {
            frames: 500,
            decoded: 440,
            fec: 6,
            red: 48,
            accelerated: 0,
            dropped: 0,
            dropped_at_start: 0,
            concealed: 2,
            stretched: 1,
            loss_before_recovery_percent: 10.2,
            recovered_rtx: 3,
            residual_loss_percent: 0.2,
            jitter_ms: 4.0,
            jitter_buffer_ms: 60.0,
            late: 0,
            bitrate_kbps: 64.0,
            latency,
            markers: Default::default(),
        };
        let text = |a: &AudioReport| {
            ReceivedAudio {
                audio: a,
                mos: 4.3,
                r: 88.0,
            }
            .to_string()
        };
        let shown = text(&audio);
        assert!(
            shown.contains(
                "6 FEC, 48 redundancy, 3 RTX, 1 concealed of 500 frames; 1 stretched to grow"
            ),
            "{shown}"
        );
        assert!(shown.contains("first second apart: 5 samples"), "{shown}");
        assert!(!shown.contains("dropped"), "{shown}");
        audio.dropped = 3;
        audio.dropped_at_start = 2;
        let shown = text(&audio);
        assert!(
            shown.contains("dropped           3 frames to keep the delay down (2 at the start)"),
            "{shown}"
        );
    }

    #[test]
    fn few_latency_samples_say_so() {
        let l = LatencyReport {
            source: LatencySource::Probe,
            samples: 3,
            p50_ms: 80.0,
            p95_ms: 95.0,
            p99_ms: 99.0,
            max_ms: 120.0,
            warmup_samples: 0,
            warmup_max_ms: 0.0,
        };
        let text = Latency(&l).to_string();
        assert!(text.contains("few samples: 3"), "{text}");
    }
}
