//! The loss/latency lab: calls over a matrix of impaired links, on two engines.
//!
//! - [`virtual_time`]: two endpoints with real codecs in one process, joined by `netsim`,
//!   in virtual time. Deterministic; seconds per condition.
//! - [`real_time`]: `magpie-server` and two `magpie` processes on loopback, impairing
//!   what they send with `--sim`, in real time.
//!
//! Both produce the same [`Report`] per endpoint (the client's end-of-call report), so
//! their figures mean the same thing. [`Summary`] folds the two directions of a call into
//! one table row; [`output`] writes the Markdown table, the JSON and the SVG plots.

pub mod capacity;
pub mod condition;
pub mod output;
pub mod plot;
pub mod real_time;
pub mod virtual_time;

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use magpie_media::call::Report;
use serde::{Deserialize, Serialize};

pub use self::capacity::BottleneckStats;
pub use self::condition::{Capacity, Condition, LossProfile, Matrix, RateStep};

/// What each endpoint sends, and for how long.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct LabMedia {
    /// Media time per condition.
    pub duration: Duration,
    /// Send video too.
    pub video: bool,
    /// Video width.
    pub width: u32,
    /// Video height.
    pub height: u32,
    /// Video frame rate.
    pub fps: u32,
    /// Starting video bitrate, kbit/s.
    pub video_bitrate_kbps: u32,
    /// Opus bitrate, kbit/s.
    pub audio_bitrate_kbps: u32,
    /// One audio timing marker per period (virtual engine; the client uses 1 s).
    pub marker_period: Duration,
    /// Delay-based congestion control on or off in every condition (virtual engine);
    /// `None`: on where the link has a capacity, the session's default elsewhere.
    #[serde(default)]
    pub delay_bwe: Option<bool>,
}

impl Default for LabMedia {
    fn default() -> Self {
        Self {
            // 100 audio and 300 video latency samples per direction; 288 calls of 20 s
            // with the video below took 5.9 CPU-minutes, 4 min 17 s on two cores.
            duration: Duration::from_secs(20),
            video: true,
            // QVGA at 15 fps: real H.264 work at a cost that fits 288 conditions.
            width: 320,
            height: 240,
            fps: 15,
            video_bitrate_kbps: 300,
            // The client's default.
            audio_bitrate_kbps: 32,
            // The shortest the tone allows: 5 latency samples a second.
            marker_period: Duration::from_millis(200),
            delay_bwe: None,
        }
    }
}

impl std::fmt::Debug for LabMedia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            duration,
            video,
            width,
            height,
            fps,
            video_bitrate_kbps,
            audio_bitrate_kbps,
            marker_period,
            delay_bwe,
        } = self;
        f.debug_struct("LabMedia")
            .field("duration", duration)
            .field("video", video)
            .field("width", width)
            .field("height", height)
            .field("fps", fps)
            .field("video_bitrate_kbps", video_bitrate_kbps)
            .field("audio_bitrate_kbps", audio_bitrate_kbps)
            .field("marker_period", marker_period)
            .field("delay_bwe", delay_bwe)
            .finish()
    }
}

/// Which engine measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EngineKind {
    /// In process, virtual time.
    Virtual,
    /// Real processes over loopback UDP.
    Real,
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Virtual => "virtual",
            Self::Real => "real",
        })
    }
}

/// What the simulated links did: the virtual engine's two links, or the real engine's
/// two clients' `--sim`, each reported in its `--stats-json`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LinkStats {
    /// Datagrams A handed to its link.
    pub a_to_b_sent: u64,
    /// Of those, lost.
    pub a_to_b_lost: u64,
    /// Datagrams B handed to its link.
    pub b_to_a_sent: u64,
    /// Of those, lost.
    pub b_to_a_lost: u64,
    /// The bottleneck from A to B, on a capacity-limited link.
    #[serde(default)]
    pub a_to_b_bottleneck: Option<BottleneckStats>,
    /// The bottleneck from B to A.
    #[serde(default)]
    pub b_to_a_bottleneck: Option<BottleneckStats>,
}

/// One call under one condition: both endpoints' reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    /// The condition.
    pub condition: Condition,
    /// What A measured: B → A media, and what A sent.
    pub a: Report,
    /// What B measured: A → B media, and what B sent.
    pub b: Report,
    /// Every audio latency sample of both directions, ms (empty for the real engine,
    /// whose clients report percentiles only).
    #[serde(skip)]
    pub audio_latency_ms: Vec<f64>,
    /// Every video latency sample of both directions, ms.
    #[serde(skip)]
    pub video_latency_ms: Vec<f64>,
    /// What the links did.
    pub link: Option<LinkStats>,
}

/// A table row: the mean of the two directions of one call.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Audio mouth-to-ear latency, ms: p50, p95, p99.
    pub audio_latency_ms: [f64; 3],
    /// Video glass-to-glass latency, ms: p50, p95, p99 (`NaN` without video).
    pub video_latency_ms: [f64; 3],
    /// Audio packets lost on the link before recovery, percent.
    pub audio_link_loss_percent: f64,
    /// Audio slots concealed, percent: lost media plus slots the jitter buffer
    /// stretched to grow its delay.
    pub audio_concealed_percent: f64,
    /// Audio that never played, percent: concealed slots less stretched ones.
    pub audio_residual_loss_percent: f64,
    /// Audio slots recovered from FEC, percent.
    pub audio_fec_percent: f64,
    /// Audio slots played from a later packet's redundancy (RFC 2198), percent.
    #[serde(default)]
    pub audio_red_percent: f64,
    /// Largest audio latency after the warm-up, ms.
    #[serde(default)]
    pub audio_latency_max_ms: f64,
    /// Largest audio latency in the first second (left out of the percentiles), ms.
    #[serde(default)]
    pub audio_warmup_max_ms: f64,
    /// Audio frames the jitter buffer dropped, per direction.
    #[serde(default)]
    pub audio_dropped: f64,
    /// Audio slots that played two frames time-compressed (the buffer shedding delay),
    /// per direction.
    #[serde(default)]
    pub audio_accelerated: f64,
    /// Redundancy bytes over the audio frames' bytes, percent.
    #[serde(default)]
    pub red_overhead_percent: f64,
    /// Audio packets repaired by retransmission, per direction.
    pub audio_recovered_rtx: f64,
    /// Video packets still missing after retransmission, percent.
    pub video_residual_loss_percent: f64,
    /// Video freezes per minute.
    pub video_freezes_per_min: f64,
    /// Share of time frozen, percent.
    pub video_frozen_percent: f64,
    /// Retransmitted bytes over media bytes, percent.
    pub rtx_overhead_percent: f64,
    /// E-model MOS of the audio.
    pub mos: f64,
    /// The bottleneck, both directions folded (capacity-limited links).
    #[serde(default)]
    pub bottleneck: Option<BottleneckStats>,
    /// Everything sent (audio, video, retransmissions, FEC), kbit/s, per direction.
    #[serde(default)]
    pub sent_kbps: f64,
}

impl Summary {
    /// Folds both directions of a call.
    pub fn of(m: &Measured) -> Self {
        let reports = [&m.a, &m.b];
        let mean = |f: &dyn Fn(&Report) -> f64| reports.iter().map(|r| f(r)).sum::<f64>() / 2.0;
        let video = |f: &dyn Fn(&magpie_media::call::VideoReport, f64) -> f64| {
            mean(&|r: &Report| {
                r.video
                    .as_ref()
                    .map_or(f64::NAN, |v| f(v, r.duration_secs.max(1e-3)))
            })
        };
        Self {
            audio_latency_ms: [
                mean(&|r| r.audio.latency.p50_ms),
                mean(&|r| r.audio.latency.p95_ms),
                mean(&|r| r.audio.latency.p99_ms),
            ],
            video_latency_ms: [
                video(&|v, _| v.latency.p50_ms),
                video(&|v, _| v.latency.p95_ms),
                video(&|v, _| v.latency.p99_ms),
            ],
            audio_link_loss_percent: mean(&|r| r.audio.loss_before_recovery_percent),
            audio_concealed_percent: mean(&|r| {
                r.audio.concealed as f64 * 100.0 / r.audio.frames.max(1) as f64
            }),
            audio_residual_loss_percent: mean(&|r| r.audio.residual_loss_percent),
            audio_fec_percent: mean(&|r| r.audio.fec as f64 * 100.0 / r.audio.frames.max(1) as f64),
            audio_recovered_rtx: mean(&|r| r.audio.recovered_rtx as f64),
            audio_red_percent: mean(&|r| r.audio.red as f64 * 100.0 / r.audio.frames.max(1) as f64),
            audio_latency_max_ms: reports
                .iter()
                .map(|r| r.audio.latency.max_ms)
                .fold(f64::NAN, f64::max),
            audio_warmup_max_ms: reports
                .iter()
                .map(|r| r.audio.latency.warmup_max_ms)
                .fold(f64::NAN, f64::max),
            audio_dropped: mean(&|r| r.audio.dropped as f64),
            audio_accelerated: mean(&|r| r.audio.accelerated as f64),
            red_overhead_percent: mean(&|r| r.sent.red_overhead_percent),
            video_residual_loss_percent: video(&|v, _| v.residual_loss_percent),
            video_freezes_per_min: video(&|v, secs| v.freezes as f64 * 60.0 / secs),
            video_frozen_percent: video(&|v, secs| v.freeze_ms / 10.0 / secs),
            rtx_overhead_percent: mean(&|r| r.sent.rtx_overhead_percent),
            mos: mean(&|r| r.quality.mos),
            bottleneck: m
                .link
                .and_then(|l| match (l.a_to_b_bottleneck, l.b_to_a_bottleneck) {
                    (Some(a), Some(b)) => Some(BottleneckStats::mean(&a, &b)),
                    (a, b) => a.or(b),
                }),
            sent_kbps: mean(&|r| r.sent.bitrate_kbps),
        }
    }
}

/// Runs one condition on an engine.
pub fn run_one(
    engine: EngineKind,
    condition: &Condition,
    media: &LabMedia,
    seed: u64,
    real: &real_time::Binaries,
) -> Result<Measured> {
    match engine {
        EngineKind::Virtual => virtual_time::run(condition, media, condition.seed(seed)),
        EngineKind::Real => real_time::run(condition, media, real),
    }
}

/// A finished condition, for progress display.
#[derive(Debug)]
pub struct Progress<'a> {
    /// How many are done, this one included.
    pub done: usize,
    /// How many in all.
    pub total: usize,
    /// This one.
    pub condition: &'a Condition,
    /// Its outcome.
    pub result: &'a Result<Measured>,
    /// How long it took.
    pub took: Duration,
}

/// Runs `conditions` on the virtual engine on `threads` threads, calling `progress` as
/// each finishes; results come back in the order of `conditions`.
pub fn run_virtual_matrix(
    conditions: &[Condition],
    media: &LabMedia,
    seed: u64,
    threads: usize,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> Vec<Result<Measured>> {
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<Measured>>>> =
        Mutex::new((0..conditions.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(condition) = conditions.get(i) else {
                        break;
                    };
                    #[allow(clippy::disallowed_methods)] // reason: progress display only
                    let started = Instant::now();
                    let result = virtual_time::run(condition, media, condition.seed(seed));
                    progress(Progress {
                        done: done.fetch_add(1, Ordering::Relaxed) + 1,
                        total: conditions.len(),
                        condition,
                        result: &result,
                        took: started.elapsed(),
                    });
                    if let Ok(mut slots) = results.lock() {
                        slots[i] = Some(result);
                    }
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(anyhow::anyhow!("a worker thread died"))))
        .collect()
}
