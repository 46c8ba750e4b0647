//! Opus over RTP (RFC 7587): one Opus packet per RTP payload, unchanged, on a 48 kHz
//! clock whatever the codec's internal rate. The payload is opaque to us: the codec
//! decodes it, and its in-band FEC (LBRR) data lets the *next* packet stand in for a
//! lost one (see `jitter::audio`).

use bytes::Bytes;

use super::PayloadError;

/// Packs one encoded Opus frame into an RTP payload of at most `max` bytes.
pub fn packetize(frame: &[u8], max: usize) -> Result<Bytes, PayloadError> {
    if frame.is_empty() {
        return Err(PayloadError::Empty);
    }
    if frame.len() > max {
        return Err(PayloadError::TooLarge {
            len: frame.len(),
            max,
        });
    }
    Ok(Bytes::copy_from_slice(frame))
}

/// The Opus packet carried by an RTP payload. An empty payload is invalid (RFC 7587 §4.2:
/// a packet carries at least the TOC byte).
pub fn depacketize(payload: Bytes) -> Result<Bytes, PayloadError> {
    if payload.is_empty() {
        return Err(PayloadError::Empty);
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_pass_through_unchanged() {
        let p = packetize(b"\x78opus", 1200).unwrap();
        assert_eq!(depacketize(p).unwrap(), Bytes::from_static(b"\x78opus"));
    }

    #[test]
    fn empty_and_oversized_frames_are_rejected() {
        assert_eq!(packetize(b"", 10), Err(PayloadError::Empty));
        assert!(matches!(
            packetize(&[1; 11], 10),
            Err(PayloadError::TooLarge { .. })
        ));
        assert_eq!(depacketize(Bytes::new()), Err(PayloadError::Empty));
    }
}
