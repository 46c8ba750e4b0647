//! The abs-capture-time RTP header extension
//! (`http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time`): the NTP time at
//! which the frame was captured, so the receiver can measure capture-to-playout latency.

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

#[cfg(test)]
mod tests {
    use super::*;

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
