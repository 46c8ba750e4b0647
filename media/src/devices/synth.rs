//! Synthetic media that carries timing markers: the `tone` and `pattern` sources.
//!
//! The generators are pure (no clock, no thread): the capture thread paces them in real
//! time, and tests and benches pull from them directly.

use std::f32::consts::TAU;
use std::time::Duration;

use crate::codec::{AudioChannels, I420Frame, SAMPLE_RATE};
use crate::probe::{AudioMarker, Error as ProbeError, MarkerSchedule, VideoMarker, WallTime};

/// Frequency of the tone between markers.
const TONE_HZ: f32 = 440.0;
/// Its amplitude: -30 dBFS, 20 dB under the markers (a quiet room behind a talker).
/// At the markers' own level (it was -10 dBFS), Opus at 32 kbit/s with in-band FEC on
/// coded the sync chirp that follows 0.8 s of steady tone worse and worse: after ten
/// seconds its correlation with the template fell from 0.8 to 0.3-0.45, so the detector
/// lost a third of the markers and placed some up to 3 ms off (a marker a second, 1 %
/// expected loss or more). With the tone 20 dB down every marker reads, to the sample.
const TONE_AMPLITUDE: f32 = 0.03;

/// A 440 Hz tone with an audio timing marker at the start of every period.
#[derive(Debug, Clone)]
pub struct ToneGenerator {
    channels: AudioChannels,
    period: Duration,
    period_samples: u64,
    next: u64,
}

impl ToneGenerator {
    /// A generator with one marker every `marker_period` (at least 200 ms).
    pub fn new(channels: AudioChannels, marker_period: Duration) -> Result<Self, ProbeError> {
        let schedule = MarkerSchedule::new(WallTime::from_micros(0), marker_period)?;
        Ok(Self {
            channels,
            period: marker_period,
            period_samples: schedule.period_samples(),
            next: 0,
        })
    }

    /// The marker schedule, given the wall-clock time of the first sample.
    pub fn schedule(&self, start: WallTime) -> MarkerSchedule {
        MarkerSchedule {
            start,
            period: self.period,
        }
    }

    /// The next `samples` samples per channel, interleaved.
    pub fn next_frame(&mut self, samples: usize) -> Vec<i16> {
        let mut out = Vec::with_capacity(samples * self.channels.count());
        for _ in 0..samples {
            let n = self.next;
            self.next += 1;
            let (k, off) = (n / self.period_samples, (n % self.period_samples) as usize);
            let v = if off < AudioMarker::LEN {
                AudioMarker::sample(k, off)
            } else {
                let phase = (n % u64::from(SAMPLE_RATE)) as f32 / SAMPLE_RATE as f32;
                TONE_AMPLITUDE * (TAU * TONE_HZ * phase).sin()
            };
            let s = (v * 32767.0) as i16;
            out.extend(std::iter::repeat_n(s, self.channels.count()));
        }
        out
    }
}

/// 75 % colour bars (BT.601 studio range): Y, U, V.
const BARS: [(u8, u8, u8); 8] = [
    (180, 128, 128),
    (162, 44, 142),
    (131, 156, 44),
    (112, 72, 58),
    (84, 184, 198),
    (65, 100, 212),
    (35, 212, 114),
    (16, 128, 128),
];

/// A moving test pattern: scrolling colour bars, a bouncing white box, and the timing
/// barcode (frame number and emission time) across the top.
#[derive(Debug, Clone)]
pub struct PatternGenerator {
    width: u32,
    height: u32,
    next: u32,
}

impl PatternGenerator {
    /// A generator of `width` x `height` frames (even, at least 128x64).
    pub fn new(width: u32, height: u32) -> Result<Self, ProbeError> {
        let mut probe = I420Frame::black(width, height)
            .map_err(|_| ProbeError::PictureTooSmall { width, height })?;
        VideoMarker {
            frame_number: 0,
            emitted_at: WallTime::from_micros(0),
        }
        .stamp(&mut probe)?;
        Ok(Self {
            width,
            height,
            next: 0,
        })
    }

    /// The next frame, stamped as emitted at `emitted_at`.
    pub fn next_frame(&mut self, emitted_at: WallTime) -> I420Frame {
        let n = self.next;
        self.next = self.next.wrapping_add(1);
        let (w, h) = (self.width as usize, self.height as usize);
        let mut frame = I420Frame::black(self.width, self.height)
            .expect("dimensions were validated in PatternGenerator::new");
        let strip = VideoMarker::strip_height(self.height) as usize;
        let shift = (n as usize * 4) % w;
        let bar = |x: usize| BARS[((x + shift) % w) * BARS.len() / w];
        let (y, u, v) = frame.planes_mut();
        // Texture that moves with the bars (motion search can follow it) plus a little
        // noise that changes every frame (as a camera sensor's does): real work for the
        // encoder, unlike flat bars.
        for r in strip..h {
            for x in 0..w {
                let texture = (hash(((x + shift) % w) as u32, r as u32, 0) % 25) as i32 - 12;
                let noise = (hash(x as u32, r as u32, n.wrapping_add(1)) % 7) as i32 - 3;
                y[r * w + x] = (i32::from(bar(x).0) + texture + noise).clamp(16, 235) as u8;
            }
        }
        for r in strip / 2..h / 2 {
            for c in 0..w / 2 {
                let (_, cu, cv) = bar(c * 2);
                u[r * (w / 2) + c] = cu;
                v[r * (w / 2) + c] = cv;
            }
        }
        // The box bounces between the strip and the bottom, left and right.
        let size = (h / 8).max(8) & !1;
        let travel = |span: usize, speed: usize| {
            let span = span.max(1);
            let p = (n as usize * speed) % (2 * span);
            if p < span { p } else { 2 * span - p }
        };
        let bx = travel(w - size, 6) & !1;
        let by = (strip + travel(h - strip - size, 3)) & !1;
        for r in by..by + size {
            y[r * w + bx..r * w + bx + size].fill(235);
        }
        for r in by / 2..(by + size) / 2 {
            u[r * (w / 2) + bx / 2..r * (w / 2) + (bx + size) / 2].fill(128);
            v[r * (w / 2) + bx / 2..r * (w / 2) + (bx + size) / 2].fill(128);
        }
        VideoMarker {
            frame_number: n,
            emitted_at,
        }
        .stamp(&mut frame)
        .expect("size was validated in PatternGenerator::new");
        frame
    }
}

/// A cheap integer hash (a few rounds of xorshift-multiply) for deterministic texture.
fn hash(x: u32, y: u32, t: u32) -> u32 {
    let mut h =
        x.wrapping_mul(0x9e37_79b9) ^ y.wrapping_mul(0x85eb_ca6b) ^ t.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 15;
    h = h.wrapping_mul(0x2c1b_3c6d);
    h ^= h >> 12;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tone_carries_a_marker_at_each_period_start() {
        let mut tone =
            ToneGenerator::new(AudioChannels::Stereo, Duration::from_millis(500)).unwrap();
        let audio = tone.next_frame(24_000 + 10);
        assert_eq!(audio.len(), (24_000 + 10) * 2);
        // Channels are identical; marker 1 starts at sample 24 000.
        assert_eq!(audio[2 * 24_005], audio[2 * 24_005 + 1]);
        let expected = (AudioMarker::sample(1, 5) * 32767.0) as i16;
        assert_eq!(audio[2 * 24_005], expected);
    }

    #[test]
    fn pattern_frames_move_and_carry_their_number() {
        let mut pattern = PatternGenerator::new(640, 480).unwrap();
        let a = pattern.next_frame(WallTime::from_micros(1));
        let b = pattern.next_frame(WallTime::from_micros(2));
        assert_ne!(a.y()[200 * 640..], b.y()[200 * 640..]);
        let marker = VideoMarker::read(&b).unwrap();
        assert_eq!((marker.frame_number, marker.emitted_at.as_micros()), (1, 2));
        assert!(PatternGenerator::new(32, 16).is_err());
    }
}
