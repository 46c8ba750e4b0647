//! The peer's abs-send-time values on our clock.
//!
//! The 24-bit value wraps every 64 s and is on the peer's clock. Only differences matter
//! to the delay gradient (the offset between the clocks cancels in the delay over the
//! least seen), so each value is unwrapped next to the last one and placed on our clock
//! as an offset from the first one's arrival, less a second: a send time then never lies
//! after its arrival unless a queue shrank by more than that.

use std::time::{Duration, Instant};

use crate::wire::AbsSendTime;

/// How far before the first arrival the first send time is put.
const LEAD: Duration = Duration::from_secs(1);

/// Unwraps the peer's send times onto our clock.
#[derive(Debug, Clone, Default)]
pub struct SendTimes {
    /// The first value (unwrapped, in 2^-18 s steps) and where it was put.
    origin: Option<(i64, Instant)>,
    /// The latest value, unwrapped.
    last: Option<i64>,
}

impl SendTimes {
    /// The send time `time`, of a packet that arrived at `now`, on our clock.
    pub fn instant(&mut self, now: Instant, time: AbsSendTime) -> Instant {
        let raw = time.0 & (AbsSendTime::RANGE - 1);
        let range = i64::from(AbsSendTime::RANGE);
        let unwrapped = match self.last {
            None => i64::from(raw),
            Some(last) => {
                // The step from the last, taken as the nearer way round the 24-bit circle.
                let half = range / 2;
                let mut step = i64::from(raw) - last.rem_euclid(range);
                if step >= half {
                    step -= range;
                } else if step < -half {
                    step += range;
                }
                last + step
            }
        };
        // A reordered packet's value does not move the reference back.
        if self.last.is_none_or(|last| unwrapped > last) {
            self.last = Some(unwrapped);
        }
        let (first, at) = *self
            .origin
            .get_or_insert_with(|| (unwrapped, now.checked_sub(LEAD).unwrap_or(now)));
        let steps = unwrapped - first;
        let offset = Duration::from_nanos(
            (steps.unsigned_abs()).saturating_mul(1_000_000_000) / AbsSendTime::PER_SECOND,
        );
        if steps >= 0 {
            at + offset
        } else {
            at.checked_sub(offset).unwrap_or(at)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_instant;

    #[test]
    fn send_times_keep_their_spacing_across_the_wrap() {
        let t0 = test_instant() + Duration::from_secs(10);
        let mut s = SendTimes::default();
        let step = AbsSendTime::PER_SECOND as u32 / 100; // 10 ms, less 1.7 µs
        let start = AbsSendTime::RANGE - 3 * step;
        let first = s.instant(t0, AbsSendTime(start));
        // Six packets 10 ms apart, across the 64 s wrap, arriving whenever.
        for i in 1..6u32 {
            let raw = (start + i * step) % AbsSendTime::RANGE;
            let at = s.instant(t0 + Duration::from_millis(500), AbsSendTime(raw));
            let apart = at - first;
            assert!(
                apart.abs_diff(Duration::from_millis(10 * u64::from(i)))
                    < Duration::from_micros(50),
                "{i}: {apart:?}"
            );
        }
        // A reordered packet from before the first lands before it.
        let early = s.instant(t0, AbsSendTime(start - step));
        assert!((first - early).abs_diff(Duration::from_millis(10)) < Duration::from_micros(50));
        // And the first is a second before its arrival.
        assert_eq!(first, t0 - LEAD);
    }
}
