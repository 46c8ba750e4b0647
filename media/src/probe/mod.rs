//! Timing probes: markers carried inside the synthetic media, and detectors that find them
//! again in decoded media, so mouth-to-ear and glass-to-glass latency are observed on what
//! was actually played, through codecs, loss, concealment and jitter buffers.
//!
//! - Audio ([`AudioMarker`]): every period (1 s by default) the `tone` source replaces its
//!   440 Hz tone (at -30 dBFS, 20 dB under the markers) for 180 ms: a 20 ms sync chirp
//!   (600 Hz to 3 kHz), then 16 slots of 10 ms, each a 1 kHz (bit 0) or 1.5 kHz (bit 1)
//!   tone, carrying the marker's index (12 bits, modulo 4096) and a 4-bit check. Marker
//!   `k` starts at sample `k * period` of the source, so its emission time is the source's
//!   recorded start time plus `k * period` ([`MarkerSchedule`]). The detector finds the
//!   chirp to the sample with a matched filter (normalised correlation), reads the bits
//!   with Goertzel filters, and when the check fails retries with its single least
//!   reliable bit flipped. A marker it cannot read is missed, never misreported, and
//!   counted by reason ([`MarkerCounts`]).
//! - Video (`VideoMarker`): the top of every `pattern` frame is a barcode of four rows of
//!   32 cells: the frame number, the emission wall-clock time in microseconds (two words)
//!   and a check word. The frame carries its own emission time. It paints and reads
//!   decoded pictures, so it comes with the `codecs` feature.
//!
//! A receiver feeds decoded samples and frames with the wall-clock time they were played
//! or shown, and gets back a [`Detection`] per marker: its identity and its latency.
//!
//! [`AudioMarker`]: crate::probe::AudioMarker
//! [`MarkerSchedule`]: crate::probe::MarkerSchedule
//! [`MarkerCounts`]: crate::probe::MarkerCounts
//! [`Detection`]: crate::probe::Detection

mod audio;
#[cfg(feature = "codecs")]
mod video;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use self::audio::{AudioMarker, AudioMarkerDetector, MarkerCounts, MarkerSchedule};
#[cfg(feature = "codecs")]
pub use self::video::{VideoMarker, VideoMarkerDetector};

/// Errors from the probes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The picture is too small to carry the barcode.
    #[error("a {width}x{height} picture is too small for the timing barcode")]
    PictureTooSmall {
        /// Width of the picture.
        width: u32,
        /// Height of the picture.
        height: u32,
    },
    /// A marker period too short to hold one marker.
    #[error("marker period {0:?} is shorter than one marker (180 ms)")]
    PeriodTooShort(Duration),
}

/// Wall-clock time: microseconds since the Unix epoch.
///
/// Latency between two processes or machines is only as good as their clock agreement;
/// on one machine (the lab, a loopback call) it is exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WallTime(u64);

impl WallTime {
    /// From microseconds since the Unix epoch.
    pub const fn from_micros(micros: u64) -> Self {
        Self(micros)
    }

    /// Microseconds since the Unix epoch.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// The system's wall clock now.
    // reason: probes timestamp real playout; an edge, not the core
    #[allow(clippy::disallowed_methods)]
    pub fn now() -> Self {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Self(since.as_micros() as u64)
    }

    /// This time plus a duration.
    pub fn plus(self, d: Duration) -> Self {
        Self(self.0.saturating_add(d.as_micros() as u64))
    }

    /// Signed microseconds from `earlier` to `self`.
    pub fn micros_since(self, earlier: Self) -> i64 {
        self.0 as i64 - earlier.0 as i64
    }
}

/// One marker found in played media.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detection {
    /// Which marker: the audio marker index or the video frame number.
    pub marker: u64,
    /// When the source emitted it.
    pub emitted_at: WallTime,
    /// When the sink played (audio) or showed (video) it.
    pub played_at: WallTime,
    /// `played_at - emitted_at` in microseconds: mouth-to-ear or glass-to-glass latency.
    pub latency_us: i64,
}

impl Detection {
    fn new(marker: u64, emitted_at: WallTime, played_at: WallTime) -> Self {
        Self {
            marker,
            emitted_at,
            played_at,
            latency_us: played_at.micros_since(emitted_at),
        }
    }
}

/// Percentiles of a set of latencies, the way call summaries report them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencySummary {
    /// How many detections.
    pub count: usize,
    /// Median, microseconds.
    pub p50_us: i64,
    /// 95th percentile, microseconds.
    pub p95_us: i64,
    /// 99th percentile, microseconds.
    pub p99_us: i64,
    /// Maximum, microseconds.
    pub max_us: i64,
}

impl LatencySummary {
    /// Summarises detections; `None` when there are none.
    pub fn of(detections: &[Detection]) -> Option<Self> {
        let mut v: Vec<i64> = detections.iter().map(|d| d.latency_us).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let pick = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        Some(Self {
            count: v.len(),
            p50_us: pick(0.5),
            p95_us: pick(0.95),
            p99_us: pick(0.99),
            max_us: v[v.len() - 1],
        })
    }

    /// Summarises the detections emitted `warmup` or more after the first one, and
    /// apart those emitted before (the start of a call, while buffers settle).
    pub fn after_warmup(
        detections: &[Detection],
        warmup: Duration,
    ) -> (Option<Self>, Option<Self>) {
        let Some(first) = detections.iter().map(|d| d.emitted_at).min() else {
            return (None, None);
        };
        let cut = first.as_micros().saturating_add(warmup.as_micros() as u64);
        let (early, steady): (Vec<Detection>, Vec<Detection>) = detections
            .iter()
            .copied()
            .partition(|d| d.emitted_at.as_micros() < cut);
        (Self::of(&steady), Self::of(&early))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_time_arithmetic_is_signed() {
        let a = WallTime::from_micros(1_000);
        let b = a.plus(Duration::from_millis(2));
        assert_eq!(b.micros_since(a), 2_000);
        assert_eq!(a.micros_since(b), -2_000);
        assert!(WallTime::now().as_micros() > 1_600_000_000_000_000);
    }

    #[test]
    fn summary_picks_percentiles() {
        let t = WallTime::from_micros(0);
        let d: Vec<Detection> = (1..=100)
            .map(|i| Detection::new(i, t, t.plus(Duration::from_micros(i))))
            .collect();
        let s = LatencySummary::of(&d).unwrap();
        assert_eq!((s.count, s.p50_us, s.p95_us, s.p99_us), (100, 51, 95, 99));
        assert!(LatencySummary::of(&[]).is_none());
    }
}
