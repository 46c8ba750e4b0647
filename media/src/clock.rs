//! Wall-clock mapping: the core never reads the clock, so the shell hands it one
//! `(Instant, SystemTime)` pair taken at the same moment. From it the core derives NTP
//! time for RTCP sender reports and the abs-capture-time extension, and maps a peer's
//! NTP capture time back onto our `Instant` timeline to measure latency.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Seconds from the NTP era (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET_SECS: u64 = 2_208_988_800;

/// An `Instant` and the wall-clock time it corresponds to.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    instant: Instant,
    /// Wall time at `instant`, as a duration since the Unix epoch.
    since_unix: Duration,
}

impl WallClock {
    /// Pairs `instant` with the wall-clock time `wall` read at the same moment.
    pub fn new(instant: Instant, wall: SystemTime) -> Self {
        let since_unix = wall.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        Self {
            instant,
            since_unix,
        }
    }

    /// The 64-bit NTP timestamp (RFC 5905 §6, 32.32 fixed point) of `at`.
    pub fn ntp(&self, at: Instant) -> u64 {
        let unix = if at >= self.instant {
            self.since_unix + (at - self.instant)
        } else {
            self.since_unix.saturating_sub(self.instant - at)
        };
        let secs = unix.as_secs() + NTP_UNIX_OFFSET_SECS;
        let frac = (u64::from(unix.subsec_nanos()) << 32) / 1_000_000_000;
        (secs << 32) | frac
    }

    /// The middle 32 bits of the NTP timestamp of `at` (RFC 3550 §6.4.1, LSR/DLSR units).
    pub fn ntp_mid(&self, at: Instant) -> u32 {
        (self.ntp(at) >> 16) as u32
    }

    /// Maps an NTP timestamp back to an `Instant`; `None` if it lies before what an
    /// `Instant` can represent.
    pub fn instant(&self, ntp: u64) -> Option<Instant> {
        let secs = (ntp >> 32).checked_sub(NTP_UNIX_OFFSET_SECS)?;
        let nanos = ((ntp & 0xffff_ffff) * 1_000_000_000) >> 32;
        let unix = Duration::from_secs(secs) + Duration::from_nanos(nanos);
        if unix >= self.since_unix {
            self.instant.checked_add(unix - self.since_unix)
        } else {
            self.instant.checked_sub(self.since_unix - unix)
        }
    }
}

/// Converts a duration in 1/65536 s units (RFC 3550 DLSR) to a `Duration`.
pub fn from_ntp_short(units: u32) -> Duration {
    Duration::from_nanos((u64::from(units) * 1_000_000_000) >> 16)
}

/// Converts a duration to 1/65536 s units, saturating.
pub fn to_ntp_short(d: Duration) -> u32 {
    let units = (d.as_nanos() << 16) / 1_000_000_000;
    units.min(u128::from(u32::MAX)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ntp_round_trips_to_the_same_instant() {
        let base = crate::test_instant();
        let clock = WallClock::new(base, UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let at = base + Duration::from_millis(1234);
        let back = clock.instant(clock.ntp(at)).unwrap();
        let err = if back > at { back - at } else { at - back };
        assert!(err < Duration::from_micros(1));
    }

    #[test]
    fn short_ntp_units_round_trip() {
        let d = Duration::from_millis(250);
        let back = from_ntp_short(to_ntp_short(d));
        assert!(d - back < Duration::from_micros(20));
    }

    #[test]
    fn ntp_before_the_unix_epoch_maps_to_none_not_a_panic() {
        let clock = WallClock::new(crate::test_instant(), UNIX_EPOCH);
        assert!(clock.instant(5).is_none());
    }
}
