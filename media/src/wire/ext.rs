//! Two RTP header extensions of libwebrtc's:
//! - abs-capture-time (`http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time`):
//!   the NTP time at which the frame was captured, so the receiver can measure
//!   capture-to-playout latency;
//! - abs-send-time (`http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time`): the
//!   time the packet left its sender (after pacing), so the receiver can time the
//!   delay of every packet, not only of those sent the moment they were made.

use bytes::Bytes;

/// A 64-bit NTP capture timestamp (32.32 fixed point).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbsCaptureTime(pub u64);

impl AbsCaptureTime {
    /// Reads the 8-byte form, or the 16-byte form with a clock offset (ignored).
    pub fn parse(payload: &[u8]) -> Option<Self> {
        if payload.len() != 8 && payload.len() != 16 {
            return None;
        }
        let mut b = [0u8; 8];
        b.copy_from_slice(&payload[..8]);
        Some(Self(u64::from_be_bytes(b)))
    }

    /// The 8-byte form (no clock offset).
    pub fn to_bytes(self) -> Bytes {
        Bytes::copy_from_slice(&self.0.to_be_bytes())
    }
}

/// A send time: the low 24 bits of the NTP time in 6.18 fixed point (64 s around,
/// 3.8 µs a step).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbsSendTime(pub u32);

impl AbsSendTime {
    /// Steps a second.
    pub const PER_SECOND: u64 = 1 << 18;
    /// Steps before the value wraps (64 s).
    pub const RANGE: u32 = 1 << 24;

    /// The send time of the 32.32 NTP time `ntp`.
    pub fn from_ntp(ntp: u64) -> Self {
        Self(((ntp >> 14) & 0x00ff_ffff) as u32)
    }

    /// Reads the 3-byte form.
    pub fn parse(payload: &[u8]) -> Option<Self> {
        match payload {
            [a, b, c] => Some(Self(u32::from_be_bytes([0, *a, *b, *c]))),
            _ => None,
        }
    }

    /// The 3-byte form.
    pub fn to_bytes(self) -> [u8; 3] {
        let [_, a, b, c] = self.0.to_be_bytes();
        [a, b, c]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_send_time_keeps_six_bits_of_seconds_and_eighteen_of_fraction() {
        // 70.5 s: 70 mod 64 = 6 whole seconds, a half.
        let ntp = (70u64 << 32) | (1 << 31);
        let t = AbsSendTime::from_ntp(ntp);
        assert_eq!(t.0, (6 << 18) | (1 << 17));
        assert_eq!(AbsSendTime::parse(&t.to_bytes()), Some(t));
        assert_eq!(AbsSendTime::parse(&[1, 2]), None);
        assert_eq!(AbsSendTime::parse(&[1, 2, 3, 4]), None);
    }

    #[test]
    fn parses_both_lengths_and_rejects_others() {
        let t = AbsCaptureTime(42);
        assert_eq!(AbsCaptureTime::parse(&t.to_bytes()), Some(t));
        let mut long = t.to_bytes().to_vec();
        long.extend_from_slice(&[0; 8]);
        assert_eq!(AbsCaptureTime::parse(&long), Some(t));
        assert_eq!(AbsCaptureTime::parse(&[1, 2, 3]), None);
    }
}
