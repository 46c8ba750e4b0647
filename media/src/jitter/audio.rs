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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
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
    pub level: Duration,
    /// Current target level.
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
        let mut next = next;
        if may_adjust && self.level_filtered > target + 1.5 && self.frames.contains_key(&(next + 1))
        {
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
