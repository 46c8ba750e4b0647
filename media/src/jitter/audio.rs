//! The adaptive audio playout buffer, after WebRTC's NetEQ.
//!
//! The playout clock pulls one frame per frame duration. The buffer answers with the
//! next frame, with "decode the missing frame from the next packet's in-band FEC" when
//! only its successor is here, or with "conceal".
//!
//! Its target level (how much audio is held beyond the frame being played) is the 95th
//! percentile of the relative arrival delay of recent packets, plus, when NACK is on,
//! the time one retransmission round needs; clamped to `[min, max]`. Below target it
//! lets the level build by stretching once on an underrun; well above target (after a
//! delay spike) it catches up by dropping frames instead of letting delay grow.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::types::{MediaTime, SeqNo};

/// Relative delays remembered for the percentile: 10 s of 20 ms frames.
const DELAY_WINDOW: usize = 500;
/// Pulls between two level adjustments.
const ADJUST_EVERY: u32 = 5;
/// Pulls between two drops while the excess over target is small.
const SLOW_DROP_EVERY: u32 = 25;
/// An excess (in frames) that counts as a delay spike, shed at the fast rate.
const SPIKE_FRAMES: f64 = 4.0;
/// Frames held at most, whatever the target (bounds memory after a stall).
const MAX_FRAMES: usize = 500;

/// What the playout clock gets for one frame slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Playout {
    /// The frame; decode it.
    Frame {
        /// The Opus packet.
        data: Bytes,
        /// When the sender captured it, on our clock (if the extension was present).
        capture_time: Option<Instant>,
    },
    /// The frame is missing but the next one is here: decode this slot from `next`'s
    /// in-band FEC (Opus `decode(.., fec = true)`); `next` is played normally later.
    Fec {
        /// The *next* frame's Opus packet.
        next: Bytes,
        /// Capture time of the missing frame, estimated from its successor.
        capture_time: Option<Instant>,
    },
    /// Nothing usable: run packet loss concealment.
    Conceal,
    /// Playout has not started (or stopped after a long silence): play silence.
    Silence,
}

/// Audio playout statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct AudioPlayoutStats {
    /// Frames played from their own packet.
    pub played: u64,
    /// Frames decoded from the next packet's FEC.
    pub fec: u64,
    /// Frame slots concealed because the frame was lost.
    pub concealed: u64,
    /// Slots concealed to let the buffer grow (underrun or stretching), no frame lost.
    pub stretched: u64,
    /// Frames dropped to catch up after a delay spike.
    pub dropped: u64,
    /// Frames that arrived after their slot had passed.
    pub late: u64,
    /// Current buffer level (audio held beyond the frame being played).
    #[serde(serialize_with = "crate::session::stats::ms")]
    pub level: Duration,
    /// Current target level.
    #[serde(serialize_with = "crate::session::stats::ms")]
    pub target: Duration,
}

#[derive(Debug)]
struct Entry {
    data: Bytes,
    ts: u64,
    capture: Option<Instant>,
}

/// The audio jitter buffer.
#[derive(Debug)]
pub struct AudioBuffer {
    frame: Duration,
    frame_ticks: u64,
    min: Duration,
    max: Duration,
    fec: bool,
    frames: BTreeMap<SeqNo, Entry>,
    /// Next sequence number to play; `None` before playout starts.
    next: Option<SeqNo>,
    /// When the previous pull happened, to predict slot times.
    last_pull: Option<Instant>,
    /// Transit times (arrival − media time) of recent original packets, seconds.
    transits: VecDeque<f64>,
    first_arrival: Option<Instant>,
    /// Extra delay for one retransmission round (0 when NACK is off).
    rtx_round: Duration,
    /// Smoothed level, in frames.
    level_filtered: f64,
    /// Consecutive pulls that found the buffer empty.
    empty_pulls: u32,
    /// Pulls since the level was last adjusted (drop or stretch).
    since_adjust: u32,
    stats: AudioPlayoutStats,
}

impl AudioBuffer {
    /// A buffer for frames of `frame` duration, a target within `[min, max]`, and
    /// whether the decoder can use in-band FEC from the next frame.
    pub fn new(frame: Duration, min: Duration, max: Duration, fec: bool) -> Self {
        let frame = frame.max(Duration::from_millis(1));
        Self {
            frame,
            frame_ticks: MediaTime::from_duration(frame, MediaTime::AUDIO_RATE).ticks(),
            min,
            max: max.max(min),
            fec,
            frames: BTreeMap::new(),
            next: None,
            last_pull: None,
            transits: VecDeque::new(),
            first_arrival: None,
            rtx_round: Duration::ZERO,
            level_filtered: 0.0,
            empty_pulls: 0,
            since_adjust: 0,
            stats: AudioPlayoutStats::default(),
        }
    }

    /// Whether the decoder may use in-band FEC from the next frame (only when the peer
    /// agreed to send it).
    pub fn set_fec(&mut self, fec: bool) {
        self.fec = fec;
    }

    /// Forgets the stream (the peer restarted it), keeping the statistics.
    pub fn reset(&mut self) {
        let stats = self.stats;
        let rtx_round = self.rtx_round;
        *self = Self::new(self.frame, self.min, self.max, self.fec);
        self.stats = stats;
        self.rtx_round = rtx_round;
    }

    /// Sets the time one retransmission round needs (RTT plus detection), or zero.
    pub fn set_rtx_round(&mut self, round: Duration) {
        self.rtx_round = round;
    }

    /// Statistics.
    pub fn stats(&self) -> AudioPlayoutStats {
        let mut s = self.stats;
        s.level = self.level();
        s.target = self.target();
        s
    }

    /// Adds a frame. `original` is false for a retransmission (kept out of the delay
    /// estimate: its extra round trip is accounted for separately). Returns false if
    /// the frame came too late or is a duplicate.
    pub fn push(
        &mut self,
        now: Instant,
        seq: SeqNo,
        ts: u64,
        data: Bytes,
        capture: Option<Instant>,
        original: bool,
    ) -> bool {
        if self.next.is_some_and(|n| seq < n) {
            self.stats.late += 1;
            return false;
        }
        if original {
            let first = *self.first_arrival.get_or_insert(now);
            let arrival = now.saturating_duration_since(first).as_secs_f64();
            let media = ts as f64 / f64::from(MediaTime::AUDIO_RATE);
            self.transits.push_back(arrival - media);
            if self.transits.len() > DELAY_WINDOW {
                self.transits.pop_front();
            }
        }
        if self.frames.contains_key(&seq) {
            return false;
        }
        self.frames.insert(seq, Entry { data, ts, capture });
        while self.frames.len() > MAX_FRAMES {
            self.frames.pop_first();
            self.stats.dropped += 1;
        }
        true
    }

    /// The target level: the 95th percentile of relative arrival delay plus one
    /// retransmission round, clamped to the configured range.
    pub fn target(&self) -> Duration {
        let p95 = percentile_above_min(&self.transits, 0.95);
        (Duration::from_secs_f64(p95) + self.rtx_round).clamp(self.min, self.max)
    }

    /// Audio held beyond the next frame: newest frame's time minus the next one's.
    pub fn level(&self) -> Duration {
        let (Some(next), Some((&newest, _))) = (self.next, self.frames.last_key_value()) else {
            return Duration::ZERO;
        };
        self.frame * newest.delta(next).max(0) as u32
    }

    /// When the slot of `seq` will be played, if playout is running.
    pub fn deadline(&self, seq: SeqNo) -> Option<Instant> {
        let (next, last) = (self.next?, self.last_pull?);
        let ahead = u32::try_from(seq.delta(next).max(0)).ok()?;
        Some(last + self.frame * (ahead + 1))
    }

    /// The next frame slot's content.
    pub fn pull(&mut self, now: Instant) -> Playout {
        self.last_pull = Some(now);
        let Some(next) = self.next else {
            return self.try_start(now);
        };
        let level = self.level();
        let frames = level.as_secs_f64() / self.frame.as_secs_f64();
        self.level_filtered += (frames - self.level_filtered) / 8.0;
        let target = self.target().as_secs_f64() / self.frame.as_secs_f64();

        // Adjust at most once per `ADJUST_EVERY` pulls, so the filter can follow.
        self.since_adjust += 1;
        let may_adjust = self.since_adjust >= ADJUST_EVERY;
        // Each drop costs a frame: shed a small excess slowly (the target itself moves
        // a little with every RTT sample), a large one (a delay spike) quickly.
        let excess = self.level_filtered - target;
        let may_drop = excess > SPIKE_FRAMES || self.since_adjust >= SLOW_DROP_EVERY;
        let mut next = next;
        if may_adjust && may_drop && excess > 2.0 && self.frames.contains_key(&(next + 1)) {
            // Catch up after a spike: drop the next frame while well above target.
            if self.frames.remove(&next).is_some() {
                self.stats.dropped += 1;
            }
            next = next + 1;
            self.level_filtered -= 1.0;
            self.since_adjust = 0;
        } else if may_adjust
            && self.level_filtered + 1.0 < target
            && self.frames.contains_key(&next)
        {
            // Below target (RTT or jitter grew): stretch one slot, losing nothing.
            self.stats.stretched += 1;
            self.level_filtered += 1.0;
            self.since_adjust = 0;
            return Playout::Conceal;
        }

        if let Some(e) = self.frames.remove(&next) {
            self.empty_pulls = 0;
            self.next = Some(next + 1);
            self.stats.played += 1;
            return Playout::Frame {
                data: e.data,
                capture_time: e.capture,
            };
        }
        if self.frames.is_empty() {
            // Underrun: nothing is lost yet, the next frame is just late. Hold the slot.
            self.empty_pulls += 1;
            self.next = Some(next);
            self.stats.stretched += 1;
            if self.empty_pulls * self.frame.as_millis() as u32 > 2000 {
                // Two seconds of nothing: the peer stopped; start over when it resumes.
                self.next = None;
                self.empty_pulls = 0;
                return Playout::Silence;
            }
            return Playout::Conceal;
        }
        self.empty_pulls = 0;
        self.next = Some(next + 1);
        if self.fec
            && let Some(e) = self.frames.get(&(next + 1))
        {
            self.stats.fec += 1;
            let capture_time = e.capture.and_then(|c| c.checked_sub(self.frame));
            return Playout::Fec {
                next: e.data.clone(),
                capture_time,
            };
        }
        self.stats.concealed += 1;
        Playout::Conceal
    }

    /// Starts playout once the oldest frame has waited the target.
    fn try_start(&mut self, now: Instant) -> Playout {
        let Some((&first, entry)) = self.frames.first_key_value() else {
            return Playout::Silence;
        };
        let Some(arrived) = self.first_arrival else {
            return Playout::Silence;
        };
        // The media time elapsed since the first original arrival tells how much audio
        // should be buffered by now; start when the newest data is `target` ahead.
        let newest_ts = self.frames.last_key_value().map_or(entry.ts, |(_, e)| e.ts);
        let held = Duration::from_secs_f64(
            newest_ts.saturating_sub(entry.ts) as f64 / f64::from(MediaTime::AUDIO_RATE),
        );
        let waited = now.saturating_duration_since(arrived);
        if held < self.target() && waited < self.target() + self.frame {
            return Playout::Silence;
        }
        self.next = Some(first);
        self.level_filtered = held.as_secs_f64() / self.frame.as_secs_f64();
        self.pull(now)
    }

    /// Frames held.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Ticks per frame on the 48 kHz clock.
    pub fn frame_ticks(&self) -> u64 {
        self.frame_ticks
    }
}

/// The `q` quantile of `values` minus their minimum (relative delay), in seconds.
fn percentile_above_min(values: &VecDeque<f64>, q: f64) -> f64 {
    if values.len() < 2 {
        return 0.0;
    }
    let mut sorted: Vec<f64> = values.iter().copied().collect();
    sorted.sort_by(f64::total_cmp);
    let min = sorted[0];
    let idx = ((sorted.len() - 1) as f64 * q).round() as usize;
    (sorted[idx.min(sorted.len() - 1)] - min).max(0.0)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::test_instant;

    const FRAME: Duration = Duration::from_millis(20);

    fn buffer() -> AudioBuffer {
        AudioBuffer::new(
            FRAME,
            Duration::from_millis(40),
            Duration::from_millis(200),
            true,
        )
    }

    fn frame(i: u64) -> Bytes {
        Bytes::from(i.to_be_bytes().to_vec())
    }

    fn id(data: &Bytes) -> u64 {
        u64::from_be_bytes(data[..8].try_into().unwrap())
    }

    /// Feeds frames `0..n` (except `lost`) at a steady cadence while pulling every
    /// frame duration; returns what each pull gave.
    fn run(n: u64, lost: &[u64]) -> Vec<Playout> {
        let t0 = test_instant();
        let mut b = buffer();
        let mut out = Vec::new();
        for i in 0..n + 20 {
            let now = t0 + FRAME * i as u32;
            if i < n && !lost.contains(&i) {
                b.push(now, SeqNo(i), i * 960, frame(i), None, true);
            }
            out.push(b.pull(now + FRAME / 2));
        }
        out
    }

    fn played(out: &[Playout]) -> Vec<u64> {
        out.iter()
            .filter_map(|p| match p {
                Playout::Frame { data, .. } => Some(id(data)),
                Playout::Fec { next, .. } => Some(id(next) - 1),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn plays_every_frame_in_order_after_the_target_delay() {
        let out = run(50, &[]);
        assert!(matches!(out[0], Playout::Silence));
        assert_eq!(played(&out), (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn missing_frame_is_decoded_from_the_next_frames_fec() {
        let out = run(50, &[10]);
        assert!(
            out.iter()
                .any(|p| matches!(p, Playout::Fec { next, .. } if id(next) == 11))
        );
        assert_eq!(played(&out), (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn two_missing_frames_give_fec_then_concealment() {
        let out = run(50, &[10, 11]);
        let p = played(&out);
        assert!(!p.contains(&10) && p.contains(&11));
        assert!(out.iter().any(|p| matches!(p, Playout::Conceal)));
    }

    #[test]
    fn target_adds_the_retransmission_round_within_bounds() {
        let mut b = buffer();
        assert_eq!(b.target(), Duration::from_millis(40));
        b.set_rtx_round(Duration::from_millis(100));
        assert_eq!(b.target(), Duration::from_millis(100));
        b.set_rtx_round(Duration::from_secs(1));
        assert_eq!(b.target(), Duration::from_millis(200));
    }

    #[test]
    fn target_follows_the_95th_percentile_of_arrival_delay() {
        let t0 = test_instant();
        let mut b = buffer();
        for i in 0..200u64 {
            // Every tenth frame arrives 60 ms late; the rest on time.
            let late = if i % 10 == 0 { 60 } else { 0 };
            let at = t0 + FRAME * i as u32 + Duration::from_millis(late);
            b.push(at, SeqNo(i), i * 960, frame(i), None, true);
        }
        assert_eq!(b.target(), Duration::from_millis(60));
    }

    #[test]
    fn catches_up_after_a_delay_spike_by_dropping() {
        let t0 = test_instant();
        let mut b = buffer();
        let mut now = t0;
        for i in 0..20u64 {
            now = t0 + FRAME * i as u32;
            b.push(now, SeqNo(i), i * 960, frame(i), None, true);
            let _ = b.pull(now);
        }
        // A 400 ms stall, then everything at once.
        now += Duration::from_millis(400);
        for i in 20..40u64 {
            b.push(now, SeqNo(i), i * 960, frame(i), None, true);
        }
        let level_after_spike = b.level();
        // Then steady arrivals again: only dropping brings the level down.
        for k in 0..60u32 {
            let at = now + FRAME * k;
            let seq = 40 + u64::from(k);
            b.push(at, SeqNo(seq), seq * 960, frame(seq), None, true);
            let _ = b.pull(at);
        }
        assert!(b.stats().dropped > 0);
        assert!(b.level() < level_after_spike, "{:?}", b.level());
    }

    #[test]
    fn late_frames_are_counted_not_played() {
        let t0 = test_instant();
        let mut b = buffer();
        let out = {
            for i in 0..10u64 {
                if i != 3 {
                    b.push(
                        t0 + FRAME * i as u32,
                        SeqNo(i),
                        i * 960,
                        frame(i),
                        None,
                        true,
                    );
                }
            }
            (0..10)
                .map(|k| b.pull(t0 + FRAME * 3 + FRAME * k))
                .collect::<Vec<_>>()
        };
        assert!(!played(&out).is_empty());
        assert!(!b.push(t0 + FRAME * 20, SeqNo(3), 3 * 960, frame(3), None, false));
        assert_eq!(b.stats().late, 1);
    }

    proptest! {
        #[test]
        fn playout_is_in_order_never_repeats_and_stays_bounded(
            ops in proptest::collection::vec((0u64..64, any::<bool>(), 0u8..3), 1..400),
        ) {
            let t0 = test_instant();
            let mut b = buffer();
            b.set_rtx_round(Duration::from_millis(60));
            let mut now = t0;
            let mut last: Option<u64> = None;
            let mut base = 0u64;
            for (offset, pull, dt) in ops {
                now += Duration::from_millis(u64::from(dt) * 10);
                let seq = base + offset;
                b.push(now, SeqNo(seq), seq * 960, frame(seq), None, offset % 3 != 0);
                if pull {
                    base += 1;
                    let got = match b.pull(now) {
                        Playout::Frame { data, .. } => Some(id(&data)),
                        Playout::Fec { next, .. } => Some(id(&next) - 1),
                        _ => None,
                    };
                    if let Some(g) = got {
                        prop_assert!(last.is_none_or(|l| g > l), "{g} after {last:?}");
                        last = Some(g);
                    }
                }
                prop_assert!(b.len() <= MAX_FRAMES);
                let t = b.target();
                prop_assert!(t >= Duration::from_millis(40) && t <= Duration::from_millis(200));
            }
        }
    }
}
