//! Protocol newtypes: SSRCs, payload types, extended sequence numbers and media time.
//!
//! The wire carries 16-bit sequence numbers and 32-bit timestamps that wrap. Everything
//! above the boundary module works with the extended 64-bit values produced here, so
//! wraparound is handled in exactly one place ([`Extender`]).

use std::fmt;
use std::ops::{Add, Sub};
use std::time::Duration;

/// A synchronization source identifier (RFC 3550 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ssrc(pub u32);

impl fmt::Display for Ssrc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#010x}", self.0)
    }
}

/// An RTP payload type (7 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pt(pub u8);

/// An extended RTP sequence number: the wire's `u16` plus the count of wraparounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SeqNo(pub u64);

impl SeqNo {
    /// The 16 bits that go on the wire.
    pub fn wire(self) -> u16 {
        self.0 as u16
    }

    /// The next sequence number.
    pub fn next(self) -> SeqNo {
        SeqNo(self.0.wrapping_add(1))
    }

    /// The previous sequence number, or `None` below zero.
    pub fn prev(self) -> Option<SeqNo> {
        self.0.checked_sub(1).map(SeqNo)
    }

    /// How many sequence numbers `self` is ahead of `other` (negative when behind).
    pub fn delta(self, other: SeqNo) -> i64 {
        self.0.wrapping_sub(other.0) as i64
    }
}

impl fmt::Display for SeqNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Add<u64> for SeqNo {
    type Output = SeqNo;
    fn add(self, rhs: u64) -> SeqNo {
        SeqNo(self.0.wrapping_add(rhs))
    }
}

/// Extends a wrapping counter of `BITS` bits (16 for sequence numbers, 32 for RTP
/// timestamps) into a monotonic `u64` timeline, choosing for each wire value the
/// extended value nearest the highest one seen so far (RFC 3550 Appendix A.1).
#[derive(Debug, Clone, Copy, Default)]
pub struct Extender<const BITS: u32> {
    highest: Option<u64>,
}

impl<const BITS: u32> Extender<BITS> {
    const RANGE: u64 = 1 << BITS;

    /// A fresh extender; the first value starts the timeline one wrap above zero, so a
    /// value from just before the first one still extends without going negative.
    pub fn new() -> Self {
        Self { highest: None }
    }

    /// The highest extended value seen.
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }

    /// Extends `wire` (only its low `BITS` bits are used) and updates the highest value.
    pub fn extend(&mut self, wire: u64) -> u64 {
        let extended = self.peek(wire);
        if self.highest.is_none_or(|h| extended > h) {
            self.highest = Some(extended);
        }
        extended
    }

    /// Extends `wire` without recording it.
    pub fn peek(&self, wire: u64) -> u64 {
        let wire = wire & (Self::RANGE - 1);
        let Some(highest) = self.highest else {
            return Self::RANGE + wire;
        };
        let half = Self::RANGE / 2;
        let base = highest & !(Self::RANGE - 1);
        let candidate = base + wire;
        if candidate > highest + half {
            // Belongs to the previous cycle (arrived late across a wrap).
            candidate.saturating_sub(Self::RANGE).max(wire)
        } else if candidate + half < highest {
            // The counter wrapped forward.
            candidate + Self::RANGE
        } else {
            candidate
        }
    }
}

/// A time on a media clock: a tick count and the clock's rate in Hz.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MediaTime {
    ticks: u64,
    rate: u32,
}

impl MediaTime {
    /// Opus always runs at 48 kHz on the wire (RFC 7587 §4.1).
    pub const AUDIO_RATE: u32 = 48_000;
    /// Video RTP clock (RFC 6184 §5.1).
    pub const VIDEO_RATE: u32 = 90_000;

    /// A media time of `ticks` at `rate` Hz.
    pub fn new(ticks: u64, rate: u32) -> Self {
        Self {
            ticks,
            rate: rate.max(1),
        }
    }

    /// The duration `d` expressed on a clock of `rate` Hz.
    pub fn from_duration(d: Duration, rate: u32) -> Self {
        let ticks = (d.as_nanos() * u128::from(rate) / 1_000_000_000) as u64;
        Self::new(ticks, rate)
    }

    /// The tick count.
    pub fn ticks(self) -> u64 {
        self.ticks
    }

    /// The clock rate in Hz.
    pub fn rate(self) -> u32 {
        self.rate
    }

    /// The 32 bits that go on the wire.
    pub fn wire(self) -> u32 {
        self.ticks as u32
    }

    /// This time as a duration since tick zero.
    pub fn as_duration(self) -> Duration {
        let nanos = u128::from(self.ticks) * 1_000_000_000 / u128::from(self.rate);
        Duration::from_nanos(nanos.min(u128::from(u64::MAX)) as u64)
    }
}

impl Add<Duration> for MediaTime {
    type Output = MediaTime;
    fn add(self, rhs: Duration) -> MediaTime {
        let add = MediaTime::from_duration(rhs, self.rate).ticks;
        MediaTime::new(self.ticks.wrapping_add(add), self.rate)
    }
}

impl Sub for MediaTime {
    type Output = Duration;
    /// The (saturating) duration between two times on the same clock.
    fn sub(self, rhs: MediaTime) -> Duration {
        MediaTime::new(self.ticks.saturating_sub(rhs.ticks), self.rate).as_duration()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn seq_extends_across_forward_wrap() {
        let mut e = Extender::<16>::new();
        let a = e.extend(65_534);
        let b = e.extend(65_535);
        let c = e.extend(0);
        let d = e.extend(1);
        assert_eq!([b - a, c - b, d - c], [1, 1, 1]);
    }

    #[test]
    fn late_packet_from_before_wrap_extends_backwards() {
        let mut e = Extender::<16>::new();
        let a = e.extend(65_530);
        let b = e.extend(3);
        let late = e.extend(65_533);
        assert!(late > a && late < b);
        assert_eq!(e.highest(), Some(b));
    }

    #[test]
    fn timestamp_extends_across_u32_wrap() {
        let mut e = Extender::<32>::new();
        let a = e.extend(u64::from(u32::MAX - 959));
        let b = e.extend(0);
        assert_eq!(b - a, 960);
    }

    #[test]
    fn media_time_round_trips_durations() {
        let t = MediaTime::from_duration(Duration::from_millis(20), MediaTime::AUDIO_RATE);
        assert_eq!(t.ticks(), 960);
        assert_eq!(t.as_duration(), Duration::from_millis(20));
        let later = t + Duration::from_millis(20);
        assert_eq!(later - t, Duration::from_millis(20));
    }

    proptest! {
        #[test]
        fn extension_recovers_any_step_below_half_range(
            start in any::<u16>(),
            steps in proptest::collection::vec(-1000i32..3000, 1..200),
        ) {
            let mut e = Extender::<16>::new();
            let mut truth = 1_000_000i64 + i64::from(start);
            let base = e.extend(truth as u64 & 0xffff) as i64 - truth;
            let mut highest = truth;
            for step in steps {
                // Stay within a half range of the highest value seen.
                let next = (truth + i64::from(step)).max(highest - 30_000);
                truth = next;
                highest = highest.max(truth);
                let got = e.extend(truth as u64 & 0xffff) as i64;
                prop_assert_eq!(got - base, truth);
            }
        }

        #[test]
        fn seq_delta_is_antisymmetric(a in any::<u32>(), b in any::<u32>()) {
            let (a, b) = (SeqNo(u64::from(a)), SeqNo(u64::from(b)));
            prop_assert_eq!(a.delta(b), -b.delta(a));
            prop_assert_eq!(a + (b.0) , SeqNo(a.0 + b.0));
        }
    }
}
