//! The audio timing marker: a sync burst and an FSK-coded index, found again to the sample.

use std::collections::VecDeque;
use std::f32::consts::TAU;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::debug;

use super::{Detection, Error, WallTime};

const RATE: f32 = 48_000.0;
/// The sync burst: a 20 ms linear chirp from 600 Hz to 3 kHz, inside the band Opus codes as
/// speech (SILK). Its 2.4 kHz sweep gives a matched-filter peak a fraction of a millisecond
/// wide, so the marker's start is found to the sample even when the codec smears its edges.
const SYNC_LOW_HZ: f32 = 600.0;
const SYNC_HIGH_HZ: f32 = 3_000.0;
const SYNC_LEN: usize = 960;
/// Bit tones: 1 kHz for 0, 1.5 kHz for 1; 500 Hz apart, four Goertzel bins at 8 ms.
const BIT_HZ: [f32; 2] = [1_000.0, 1_500.0];
const SLOT_LEN: usize = 480;
const SLOTS: usize = 16;
/// The part of a bit slot read by the detector: its middle 8 ms, clear of transitions.
const BIT_WINDOW: usize = 384;
/// A slot whose winning tone leads by less than this share of the two tones' power is
/// uncertain: when the check fails, the single least certain bit is flipped and the check
/// tried again. Opus can be slow to follow a lone tone change after a long run (seen after
/// recovering a loss from FEC), which this repairs.
const UNCERTAIN: f32 = 0.6;
/// A slot whose winning tone carries less than this share of the window's energy (a
/// clean tone carries 0.5) is weak: the codec smeared it. It mostly still names its bit
/// (about 19 weak slots in 20 through Opus at 32 kbit/s with in-band FEC, in markers
/// every 200 ms), but it is the first the check's retry flips.
const WEAK_SHARE: f32 = 0.1;
/// More weak slots than this and the burst is not read: no marker carries them.
const MAX_WEAK: usize = 2;
const ID_BITS: u32 = 12;
const ID_MODULUS: u64 = 1 << ID_BITS;
/// Coarse search step: a sixth of a millisecond, well inside the chirp's correlation peak.
const HOP: usize = 8;
/// Normalised correlation with the chirp (1 for a perfect copy) that starts a fine search.
const SYNC_THRESHOLD: f32 = 0.25;
/// How far past the first coarse hit the fine search looks for the true peak: 10 ms, so a
/// sidelobe crossing the threshold first cannot pull the estimate early.
const FINE_SPAN: usize = 480;
/// Normalised correlation the peak itself must reach.
const PEAK_THRESHOLD: f32 = 0.35;
/// Peak amplitude of the marker tones, as a fraction of full scale.
const AMPLITUDE: f32 = 0.3;
/// How far (48 kHz samples) a marker may stray from where the previous one puts it: a
/// jitter buffer moves its delay by far less than this between two markers (250 ms),
/// while a misread index (the 4-bit check passes one wrong payload in 16) lands whole
/// periods away.
const MAX_STRAY: i64 = 12_000;
/// Consecutive markers that must agree with each other, against the previous one, before
/// the detector accepts that playout really jumped (a stream restart).
const REANCHOR_AFTER: u32 = 2;

/// The audio marker waveform.
#[derive(Debug, Clone, Copy)]
pub struct AudioMarker;

impl AudioMarker {
    /// Length of one marker in samples at 48 kHz (180 ms).
    pub const LEN: usize = SYNC_LEN + SLOTS * SLOT_LEN;

    /// The 16 bits marker `index` carries: its low 12 bits, then a 4-bit check.
    pub fn payload(index: u64) -> u16 {
        let id = (index % ID_MODULUS) as u16;
        (id << 4) | check(id)
    }

    /// Sample `n` (0-based, below [`AudioMarker::LEN`]) of marker `index`, in -1..=1.
    pub fn sample(index: u64, n: usize) -> f32 {
        if n < SYNC_LEN {
            return AMPLITUDE * chirp(n);
        }
        let freq = {
            let slot = ((n - SYNC_LEN) / SLOT_LEN).min(SLOTS - 1);
            let bit = (Self::payload(index) >> (SLOTS - 1 - slot)) & 1;
            BIT_HZ[usize::from(bit)]
        };
        AMPLITUDE * (TAU * freq * n as f32 / RATE).sin()
    }
}

/// The unit-amplitude sync chirp at sample `n`: phase 2π(f0·t + (f1-f0)·t²/2T).
fn chirp(n: usize) -> f32 {
    let t = n as f32 / RATE;
    let span = SYNC_LEN as f32 / RATE;
    let phase = SYNC_LOW_HZ * t + (SYNC_HIGH_HZ - SYNC_LOW_HZ) * t * t / (2.0 * span);
    (TAU * phase).sin()
}

fn check(id: u16) -> u16 {
    ((id ^ (id >> 4) ^ (id >> 8)) & 0xf) ^ 0x5
}

/// When a source emitted its audio markers: marker `k` starts `k * period` after `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkerSchedule {
    /// Wall-clock time of the source's first sample.
    pub start: WallTime,
    /// Time from one marker to the next.
    pub period: Duration,
}

impl MarkerSchedule {
    /// A schedule; the period must hold a whole marker.
    pub fn new(start: WallTime, period: Duration) -> Result<Self, Error> {
        if period < Duration::from_millis(200) {
            return Err(Error::PeriodTooShort(period));
        }
        Ok(Self { start, period })
    }

    /// Samples (at 48 kHz) from one marker to the next.
    pub fn period_samples(&self) -> u64 {
        (self.period.as_micros() as u64 * 48) / 1000
    }

    /// When marker `k` was emitted.
    pub fn emitted_at(&self, k: u64) -> WallTime {
        self.start
            .plus(Duration::from_micros(k * (self.period.as_micros() as u64)))
    }
}

/// Why a sync burst gave no detection, counted once per burst (see
/// [`AudioMarkerDetector::counts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unread {
    /// More than [`MAX_WEAK`] slots held neither bit tone (concealment, or not a marker).
    NoTones,
    /// The bits failed the 4-bit check, also with the least reliable one flipped.
    Check,
}

/// What the detector made of the sync bursts it found: every burst is read, unread for a
/// named reason, or read and rejected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkerCounts {
    /// Markers read and accepted (the detections).
    pub read: u64,
    /// Bursts whose bit slots held no tones (more than two slots without either tone):
    /// concealed audio, or a chirp-like sound that is no marker.
    pub unread_no_tones: u64,
    /// Bursts whose bits failed the check: more than one bit garbled.
    pub unread_check: u64,
    /// Markers read whose index disagreed with where the markers around them played (a
    /// misread index that passed the check).
    pub rejected: u64,
}

/// Finds audio markers in played audio and reports their latency.
///
/// Feed it every block the sink plays, in order, with the wall-clock time its first sample
/// was played. It keeps about 0.4 s of audio.
#[derive(Debug)]
pub struct AudioMarkerDetector {
    schedule: MarkerSchedule,
    channels: usize,
    /// Mono samples, scaled to -1..=1; `buf[0]` is stream sample `buf_start`.
    buf: Vec<f32>,
    buf_start: u64,
    /// Next stream sample to try as a marker start.
    scan: u64,
    /// (stream sample, when it was played), one per block fed.
    anchors: VecDeque<(u64, WallTime)>,
    /// The sync chirp, the matched filter's template.
    template: Vec<f32>,
    /// The last accepted marker and the stream sample it started at.
    last: Option<(u64, u64)>,
    /// Markers rejected in a row, the latest of them, and how many were rejected in all.
    strays: u32,
    stray: Option<(u64, u64)>,
    counts: MarkerCounts,
    /// The stream sample of the last burst counted as unread: the scan comes back to
    /// the same burst from a little further on, and it is counted once.
    last_unread: Option<u64>,
}

impl AudioMarkerDetector {
    /// A detector for audio with `channels` interleaved channels (it reads the first).
    pub fn new(schedule: MarkerSchedule, channels: usize) -> Self {
        Self {
            schedule,
            channels: channels.max(1),
            buf: Vec::new(),
            buf_start: 0,
            scan: 0,
            anchors: VecDeque::new(),
            template: (0..SYNC_LEN).map(chirp).collect(),
            last: None,
            strays: 0,
            stray: None,
            counts: MarkerCounts::default(),
            last_unread: None,
        }
    }

    /// Markers whose index disagreed with where the markers around them were played
    /// (misread indices), left out of the detections.
    pub fn rejected(&self) -> u64 {
        self.counts.rejected
    }

    /// Every sync burst found so far, by what became of it.
    pub fn counts(&self) -> MarkerCounts {
        self.counts
    }

    /// Whether marker `marker` starting at stream sample `sample` is where `prev` puts
    /// it: later, and whole periods on within [`MAX_STRAY`].
    fn consistent(&self, prev: (u64, u64), marker: u64, sample: u64) -> bool {
        let (m, at) = prev;
        if marker <= m {
            return false;
        }
        let periods = i64::try_from(marker - m).unwrap_or(i64::MAX);
        let expected = periods.saturating_mul(self.schedule.period_samples() as i64);
        let actual = sample as i64 - at as i64;
        (actual - expected).abs() <= MAX_STRAY
    }

    /// The index check beyond the payload's 4 bits: a marker must sit where the last
    /// accepted one says. A run of markers that agree among themselves but not with the
    /// last accepted one re-anchors the chain (playout restarted).
    fn accept(&mut self, marker: u64, sample: u64) -> bool {
        let ok = self
            .last
            .is_none_or(|prev| self.consistent(prev, marker, sample));
        if ok {
            self.last = Some((marker, sample));
            self.strays = 0;
            self.stray = None;
            return true;
        }
        self.strays = match self.stray {
            Some(prev) if self.consistent(prev, marker, sample) => self.strays + 1,
            _ => 1,
        };
        self.stray = Some((marker, sample));
        if self.strays > REANCHOR_AFTER {
            debug!(marker, "audio markers re-anchored");
            self.last = Some((marker, sample));
            self.strays = 0;
            self.stray = None;
            return true;
        }
        self.counts.rejected += 1;
        debug!(
            marker,
            "audio marker index disagrees with its neighbours; rejected"
        );
        false
    }

    /// Feeds one played block; returns the markers completed by it.
    pub fn push(&mut self, samples: &[i16], played_at: WallTime) -> Vec<Detection> {
        let end = self.buf_start + self.buf.len() as u64;
        self.anchors.push_back((end, played_at));
        self.buf.extend(
            samples
                .chunks_exact(self.channels)
                .map(|frame| f32::from(frame[0]) / 32768.0),
        );
        let mut found = Vec::new();
        let end = self.buf_start + self.buf.len() as u64;
        // A candidate needs a fine search span and a whole marker after it.
        let need = (FINE_SPAN + AudioMarker::LEN) as u64;
        let template_energy = energy(&self.template);
        let e_template_sqrt = template_energy.sqrt();
        while self.scan + need <= end {
            let at = (self.scan - self.buf_start) as usize;
            let window = &self.buf[at..at + SYNC_LEN];
            let e = energy(window) * template_energy;
            if e <= f32::EPSILON || dot(window, &self.template) / e.sqrt() < SYNC_THRESHOLD {
                self.scan += HOP as u64;
                continue;
            }
            let (best, peak) = (at..at + FINE_SPAN)
                .map(|p| {
                    let w = &self.buf[p..p + SYNC_LEN];
                    (
                        p,
                        dot(w, &self.template)
                            / (e_template_sqrt * (energy(w) + f32::EPSILON).sqrt()),
                    )
                })
                .fold((at, f32::MIN), |a, b| if b.1 > a.1 { b } else { a });
            if peak < PEAK_THRESHOLD {
                self.scan += (FINE_SPAN / 2) as u64;
                continue;
            }
            let sample = self.buf_start + best as u64;
            match read_payload(&self.buf[best..best + AudioMarker::LEN]) {
                Ok(id) => {
                    let detection = self.detection(id, sample);
                    if detection.latency_us < -self.max_early_us() {
                        // Played before it was emitted: a misread index that passed the
                        // check. The chain below catches one among others; the first of
                        // a short call has no others (a 4 s call reads 1-3 markers, and
                        // one such made a NAT-lab call report -3.9 s).
                        self.counts.rejected += 1;
                        debug!(
                            marker = detection.marker,
                            "audio marker played before its emission"
                        );
                    } else if self.accept(detection.marker, sample) {
                        self.counts.read += 1;
                        found.push(detection);
                    }
                    self.scan = sample + AudioMarker::LEN as u64;
                }
                Err(why) => {
                    let again = self
                        .last_unread
                        .is_some_and(|at| sample.abs_diff(at) < AudioMarker::LEN as u64);
                    if !again {
                        match why {
                            Unread::NoTones => self.counts.unread_no_tones += 1,
                            Unread::Check => self.counts.unread_check += 1,
                        }
                        debug!(sample, ?why, peak, "sync without a valid payload");
                    }
                    self.last_unread = Some(sample);
                    self.scan += (FINE_SPAN / 2) as u64;
                }
            }
        }
        self.trim();
        found
    }

    /// How far before its emission a marker may seem to play: half a period. Two clocks
    /// (sender's and receiver's) may disagree by a few ms; a misread index is whole
    /// periods out.
    fn max_early_us(&self) -> i64 {
        i64::try_from(self.schedule.period.as_micros() / 2).unwrap_or(i64::MAX)
    }

    fn detection(&self, id: u16, sample: u64) -> Detection {
        let played_at = self.time_of(sample);
        let elapsed = played_at.micros_since(self.schedule.start).max(0) as f64;
        let estimate = elapsed / self.schedule.period.as_micros() as f64;
        let wraps = ((estimate - f64::from(id)) / ID_MODULUS as f64)
            .round()
            .max(0.0) as u64;
        let marker = u64::from(id) + wraps * ID_MODULUS;
        let detection = Detection::new(marker, self.schedule.emitted_at(marker), played_at);
        debug!(
            marker,
            sample,
            latency_us = detection.latency_us,
            "audio marker"
        );
        detection
    }

    fn time_of(&self, sample: u64) -> WallTime {
        let (at, t) = self
            .anchors
            .iter()
            .rev()
            .find(|(at, _)| *at <= sample)
            .or(self.anchors.front())
            .copied()
            .unwrap_or((0, self.schedule.start));
        let micros = (sample.saturating_sub(at) * 1_000_000) / 48_000;
        t.plus(Duration::from_micros(micros))
    }

    fn trim(&mut self) {
        let drop = self.scan.saturating_sub(self.buf_start) as usize;
        let drop = drop.min(self.buf.len());
        self.buf.drain(..drop);
        self.buf_start += drop as u64;
        while self.anchors.len() > 1 && self.anchors[1].0 <= self.buf_start {
            self.anchors.pop_front();
        }
    }
}

/// Reads the 16 payload bits of a marker whose sync chirp starts at `marker[0]`.
///
/// A slot is weak when its winning tone carries less than [`WEAK_SHARE`] of the window's
/// energy: up to [`MAX_WEAK`] of them are read for what they say, and when the check
/// fails the least reliable slot (the weakest weak one, else the least certain one below
/// [`UNCERTAIN`]) is flipped and the check tried again.
fn read_payload(marker: &[f32]) -> Result<u16, Unread> {
    let mut payload = 0u16;
    let mut weak = 0;
    // (weak, share or certainty, slot) of the least reliable slot: a weak one before
    // any strong one, weak ones by their share, strong ones by their certainty.
    let mut least: Option<(bool, f32, usize)> = None;
    for slot in 0..SLOTS {
        let from = SYNC_LEN + slot * SLOT_LEN + (SLOT_LEN - BIT_WINDOW) / 2;
        let window = &marker[from..from + BIT_WINDOW];
        let (zero, one) = (power(window, BIT_HZ[0]), power(window, BIT_HZ[1]));
        let energy = energy(window) * BIT_WINDOW as f32;
        let share = zero.max(one) / (energy + f32::EPSILON);
        let is_weak = share < WEAK_SHARE;
        weak += usize::from(is_weak);
        let certainty = (zero - one).abs() / (zero + one + f32::EPSILON);
        // Weak slots sort by their share, the others by certainty.
        let key = (is_weak, if is_weak { share } else { certainty }, slot);
        let less_reliable =
            |(w, v, _): (bool, f32, usize)| (key.0 && !w) || (key.0 == w && key.1 < v);
        if least.is_none_or(less_reliable) {
            least = Some(key);
        }
        payload = (payload << 1) | u16::from(one > zero);
    }
    if weak > MAX_WEAK {
        return Err(Unread::NoTones);
    }
    let valid = |p: u16| (check(p >> 4) == p & 0xf).then_some(p >> 4);
    valid(payload)
        .or_else(|| {
            let (is_weak, certainty, slot) = least?;
            (is_weak || certainty < UNCERTAIN)
                .then(|| valid(payload ^ (1 << (SLOTS - 1 - slot))))
                .flatten()
        })
        .ok_or(Unread::Check)
}

/// |X(f)|² over the window (Goertzel).
fn power(x: &[f32], freq: f32) -> f32 {
    let coeff = 2.0 * (TAU * freq / RATE).cos();
    let (mut s1, mut s2) = (0.0f32, 0.0f32);
    for &v in x {
        let s0 = v + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - coeff * s1 * s2
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn energy(x: &[f32]) -> f32 {
    x.iter().map(|v| v * v).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERIOD: Duration = Duration::from_millis(500);

    /// A marker every 500 ms over a 440 Hz tone, then delayed by `delay` samples of silence.
    fn marked(len: usize, first_marker: u64, delay: usize) -> Vec<i16> {
        let period = 24_000;
        let mut out = vec![0i16; delay];
        out.extend((0..len).map(|n| {
            let (k, off) = ((n / period) as u64 + first_marker, n % period);
            let v = if off < AudioMarker::LEN {
                AudioMarker::sample(k, off)
            } else {
                0.3 * (TAU * 440.0 * n as f32 / RATE).sin()
            };
            (v * 32767.0) as i16
        }));
        out
    }

    fn run(
        detector: &mut AudioMarkerDetector,
        audio: &[i16],
        start: WallTime,
        block: usize,
    ) -> Vec<Detection> {
        audio
            .chunks(block)
            .enumerate()
            .flat_map(|(i, chunk)| {
                let t = start.plus(Duration::from_micros(
                    (i * block) as u64 * 1_000_000 / 48_000,
                ));
                detector.push(chunk, t)
            })
            .collect()
    }

    #[test]
    fn a_misread_index_is_rejected_and_a_real_jump_re_anchors() {
        let start = WallTime::from_micros(0);
        let schedule = MarkerSchedule::new(start, PERIOD).unwrap();
        let mut d = AudioMarkerDetector::new(schedule, 1);
        // Markers 0..4 in place, then one whose index reads 9 (a misread that passed the
        // check), then 6 and 7 in place again.
        let mut audio = marked(24_000 * 5, 0, 0);
        audio.extend(marked(24_000, 9, 0));
        audio.extend(marked(24_000 * 2, 6, 0));
        let found: Vec<u64> = run(&mut d, &audio, start, 960)
            .iter()
            .map(|x| x.marker)
            .collect();
        assert_eq!(found, vec![0, 1, 2, 3, 4, 6, 7]);
        assert_eq!(d.rejected(), 1);
        // Playout stalled for 2 s and went on (a restart): after a few markers that
        // agree with each other, they are taken, 2 s late. (A jump the other way, to
        // markers not yet emitted, is a misread: see the test below.)
        let mut jumped = marked(24_000 * 2, 0, 0);
        jumped.extend(marked(24_000 * 6, 2, 96_000));
        let mut d = AudioMarkerDetector::new(schedule, 1);
        let found = run(&mut d, &jumped, start, 960);
        let markers: Vec<u64> = found.iter().map(|x| x.marker).collect();
        assert_eq!(&markers[..2], &[0, 1]);
        assert!(markers.ends_with(&[5, 6, 7]), "{markers:?}");
        let late = found.last().unwrap().latency_us;
        assert!((late - 2_000_000).abs() <= 21, "{late}");
    }

    #[test]
    fn a_first_marker_played_before_its_emission_is_misread_and_rejected() {
        let start = WallTime::from_micros(0);
        let schedule = MarkerSchedule::new(start, PERIOD).unwrap();
        let mut d = AudioMarkerDetector::new(schedule, 1);
        // The first marker's index reads 4 where 0 was played (it would give a latency
        // of four periods below zero); 1..3 follow in place.
        let mut audio = marked(24_000, 4, 0);
        audio.extend(marked(24_000 * 3, 1, 0));
        let found = run(&mut d, &audio, start, 960);
        let markers: Vec<u64> = found.iter().map(|x| x.marker).collect();
        assert_eq!(markers, vec![1, 2, 3]);
        assert!(found.iter().all(|x| x.latency_us.abs() <= 21), "{found:?}");
        assert_eq!(d.rejected(), 1);
    }

    #[test]
    fn payload_check_rejects_single_bit_errors() {
        for index in [0u64, 1, 77, 4095, 4096, 123_456] {
            let payload = AudioMarker::payload(index);
            for bit in 0..16 {
                let corrupted = payload ^ (1 << bit);
                assert_ne!(
                    check(corrupted >> 4),
                    corrupted & 0xf,
                    "index {index} bit {bit}"
                );
            }
        }
    }

    #[test]
    fn known_delay_is_measured_to_the_sample() {
        let start = WallTime::from_micros(1_000_000_000);
        let schedule = MarkerSchedule::new(start, PERIOD).unwrap();
        // 37.5 ms of inserted delay.
        let audio = marked(48_000 * 3, 0, 1_800);
        let mut detector = AudioMarkerDetector::new(schedule, 1);
        let found = run(&mut detector, &audio, start, 960);
        let markers: Vec<u64> = found.iter().map(|d| d.marker).collect();
        assert_eq!(markers, vec![0, 1, 2, 3, 4, 5]);
        for d in found {
            assert!((d.latency_us - 37_500).abs() <= 21, "{d:?}");
        }
    }

    #[test]
    fn indices_past_the_modulus_unwrap_from_the_schedule() {
        let first = 5_000u64;
        let start = WallTime::from_micros(10_000_000_000);
        let schedule = MarkerSchedule::new(start, PERIOD).unwrap();
        let audio = marked(48_000, first, 0);
        let played = schedule.emitted_at(first);
        let mut detector = AudioMarkerDetector::new(schedule, 1);
        let found = run(&mut detector, &audio, played, 441);
        assert_eq!(
            found.iter().map(|d| d.marker).collect::<Vec<_>>(),
            vec![5_000, 5_001]
        );
        assert!(found.iter().all(|d| d.latency_us.abs() <= 21));
    }

    #[test]
    fn silence_noise_and_plain_tone_give_no_markers() {
        let schedule = MarkerSchedule::new(WallTime::from_micros(0), PERIOD).unwrap();
        let mut detector = AudioMarkerDetector::new(schedule, 2);
        let mut seed = 1u32;
        let noise: Vec<i16> = (0..96_000)
            .map(|i| {
                seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                if i < 30_000 {
                    0
                } else {
                    (seed >> 20) as i16 - 2048
                }
            })
            .collect();
        assert!(run(&mut detector, &noise, WallTime::from_micros(0), 960).is_empty());
        let tone: Vec<i16> = (0..96_000)
            .map(|n| ((n as f32 * 0.2).sin() * 9000.0) as i16)
            .collect();
        assert!(run(&mut detector, &tone, WallTime::from_micros(0), 960).is_empty());
    }

    #[test]
    fn short_periods_are_rejected() {
        assert!(MarkerSchedule::new(WallTime::from_micros(0), Duration::from_millis(100)).is_err());
    }
}
