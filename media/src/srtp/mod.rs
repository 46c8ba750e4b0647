//! Media encryption: SRTP and SRTCP (RFC 3711) with AEAD_AES_128_GCM (RFC 7714), and the
//! end-to-end key exchange that keys them ([`exchange`]).
//!
//! The profile is AEAD_AES_128_GCM: one AES pass encrypts and authenticates (GHASH runs on
//! the CPU's carry-less multiply), the tag is 16 bytes, and the RTP header stays readable
//! but authenticated. AES_CM_128_HMAC_SHA1_80 would work too but costs an AES-CTR pass
//! plus an HMAC-SHA1 pass per packet. The cipher is `webrtc-srtp`'s `Context`, which works
//! on byte buffers and never does IO; it keeps the rollover counters and the replay
//! windows per SSRC.
//!
//! [`Srtp`] is the session's pair of contexts: one protects what we send with our
//! [`MasterKey`], the other checks and decrypts what the peer sends with its key. A
//! datagram that fails authentication or arrives twice is an [`SrtpError`], counted by
//! the session and dropped. Before any bytes reach the crate they are checked for the
//! layouts that would make it read past its input, so hostile datagrams never panic.

pub mod exchange;

use std::fmt;

use bytes::Bytes;
use thiserror::Error;
use webrtc_srtp::context::Context;
use webrtc_srtp::option::{srtcp_replay_protection, srtp_replay_protection};
use webrtc_srtp::protection_profile::ProtectionProfile;

use crate::wire::{self, Kind};

/// Master key length of AEAD_AES_128_GCM (RFC 7714 §12).
pub const KEY_LEN: usize = 16;
/// Master salt length of AEAD_AES_128_GCM (RFC 7714 §12).
pub const SALT_LEN: usize = 12;
/// The authentication tag each SRTP and SRTCP packet carries.
pub const TAG_LEN: usize = 16;
/// The SRTCP index (E flag and 31 bits) after the tag.
const SRTCP_INDEX_LEN: usize = 4;
/// RTCP header and sender SSRC, which SRTCP leaves in clear.
const RTCP_CLEAR_LEN: usize = 8;
/// Packets per SSRC the replay window remembers (RFC 3711 §3.3.2 asks for at least 64).
/// A keyframe's burst and the network's reordering must fit: WebRTC uses 1024 for video.
const REPLAY_WINDOW: usize = 1024;

/// One direction's SRTP master key and salt (RFC 3711 §8.2).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct MasterKey {
    /// The master key.
    pub key: [u8; KEY_LEN],
    /// The master salt.
    pub salt: [u8; SALT_LEN],
}

impl MasterKey {
    /// Splits `KEY_LEN + SALT_LEN` bytes into key and salt.
    pub fn from_bytes(bytes: [u8; KEY_LEN + SALT_LEN]) -> Self {
        let mut key = [0; KEY_LEN];
        let mut salt = [0; SALT_LEN];
        key.copy_from_slice(&bytes[..KEY_LEN]);
        salt.copy_from_slice(&bytes[KEY_LEN..]);
        Self { key, salt }
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Key material never reaches a log.
        f.write_str("MasterKey(..)")
    }
}

/// The keys of one call: ours for what we send, the peer's for what we receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SrtpKeys {
    /// Protects every RTP, RTX and RTCP packet we send.
    pub send: MasterKey,
    /// Checks and decrypts every packet the peer sends.
    pub receive: MasterKey,
}

impl SrtpKeys {
    /// The same keys seen from the peer.
    pub fn mirrored(self) -> Self {
        Self {
            send: self.receive,
            receive: self.send,
        }
    }
}

/// Why a datagram was not protected or admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SrtpError {
    /// The authentication tag does not match: tampered, forged, or another key.
    #[error("SRTP authentication failed")]
    Auth,
    /// The packet index was seen before, or is older than the replay window.
    #[error("SRTP replay")]
    Replay,
    /// Too short for a header and tag, or a header that does not parse.
    #[error("malformed SRTP/SRTCP packet")]
    Malformed,
    /// A packet of ours could not be protected (a malformed packet, or 2^48 packets on
    /// one SSRC).
    #[error("could not protect a packet")]
    Protect,
}

/// The session's SRTP state: one context each way. Public for the benchmarks and the
/// fuzzers; a call uses it through the session.
pub struct Srtp {
    keys: SrtpKeys,
    tx: Context,
    rx: Context,
}

impl Srtp {
    /// Contexts for `keys`: `send` protects, `receive` checks with a replay window.
    pub fn new(keys: SrtpKeys) -> Self {
        let context = |k: &MasterKey, replay: bool| {
            let (rtp, rtcp) = if replay {
                (
                    Some(srtp_replay_protection(REPLAY_WINDOW)),
                    Some(srtcp_replay_protection(REPLAY_WINDOW)),
                )
            } else {
                (None, None)
            };
            Context::new(&k.key, &k.salt, ProtectionProfile::AeadAes128Gcm, rtp, rtcp)
                .expect("AEAD_AES_128_GCM to take a 16-byte key and a 12-byte salt")
        };
        Self {
            keys,
            tx: context(&keys.send, false),
            rx: context(&keys.receive, true),
        }
    }

    /// The keys of the contexts.
    pub fn keys(&self) -> &SrtpKeys {
        &self.keys
    }

    /// Protects one datagram of ours (RTP or RTCP, as [`wire::classify`] tells).
    pub fn protect(&mut self, datagram: &[u8]) -> Result<Bytes, SrtpError> {
        let protected = match wire::classify(datagram) {
            Kind::Rtp => {
                // The crate's header parser reads past hostile layouts: never ours, but
                // this takes any bytes.
                wire::rtp_header_len(datagram).map_err(|_| SrtpError::Protect)?;
                self.tx.encrypt_rtp(datagram)
            }
            Kind::Rtcp if datagram.len() >= RTCP_CLEAR_LEN => self.tx.encrypt_rtcp(datagram),
            _ => return Err(SrtpError::Protect),
        };
        protected.map_err(|_| SrtpError::Protect)
    }

    /// Checks and decrypts one datagram from the peer, of the kind the demultiplexer
    /// found. The replay window moves only for packets that authenticate.
    pub fn unprotect(&mut self, kind: Kind, datagram: &[u8]) -> Result<Bytes, SrtpError> {
        let result = match kind {
            Kind::Rtp => {
                let header = wire::rtp_header_len(datagram).map_err(|_| SrtpError::Malformed)?;
                if datagram.len() < header + TAG_LEN {
                    return Err(SrtpError::Malformed);
                }
                self.rx.decrypt_rtp(datagram)
            }
            Kind::Rtcp => {
                // The crate reads the sender SSRC and the trailing index unchecked.
                if datagram.len() < RTCP_CLEAR_LEN + TAG_LEN + SRTCP_INDEX_LEN {
                    return Err(SrtpError::Malformed);
                }
                self.rx.decrypt_rtcp(datagram)
            }
            Kind::Foreign => return Err(SrtpError::Malformed),
        };
        result.map_err(|e| match e {
            webrtc_srtp::Error::SrtpSsrcDuplicated(..)
            | webrtc_srtp::Error::SrtcpSsrcDuplicated(..) => SrtpError::Replay,
            webrtc_srtp::Error::ErrTooShortRtp
            | webrtc_srtp::Error::ErrTooShortRtcp
            | webrtc_srtp::Error::Util(_)
            | webrtc_srtp::Error::Rtcp(_) => SrtpError::Malformed,
            _ => SrtpError::Auth,
        })
    }
}

impl fmt::Debug for Srtp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Srtp")
            .field("profile", &"AEAD_AES_128_GCM")
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Pt, Ssrc};
    use crate::wire::{Rtcp, RtpHeader, build_rtcp, build_rtp, parse_rtp};

    fn keys() -> SrtpKeys {
        SrtpKeys {
            send: MasterKey::from_bytes([7; KEY_LEN + SALT_LEN]),
            receive: MasterKey::from_bytes([9; KEY_LEN + SALT_LEN]),
        }
    }

    fn rtp(seq: u16) -> Bytes {
        let header = RtpHeader {
            marker: false,
            pt: Pt(111),
            seq,
            timestamp: 960 * u32::from(seq),
            ssrc: Ssrc(0x1234_5678),
            capture: None,
        };
        build_rtp(&header, b"an opus frame, in clear", 1).unwrap()
    }

    #[test]
    fn a_packet_round_trips_and_its_payload_is_not_in_clear() {
        let (mut alice, mut bob) = (Srtp::new(keys()), Srtp::new(keys().mirrored()));
        let plain = rtp(10);
        let sent = alice.protect(&plain).unwrap();
        assert_eq!(sent.len(), plain.len() + TAG_LEN);
        assert_eq!(sent[..12], plain[..12], "the header stays readable");
        assert!(!sent.windows(8).any(|w| w == b"an opus "));
        let got = bob.unprotect(Kind::Rtp, &sent).unwrap();
        assert_eq!(got, plain);
        assert_eq!(
            &parse_rtp(&got, 1).unwrap().payload[..],
            b"an opus frame, in clear"
        );
    }

    #[test]
    fn tampered_replayed_and_foreign_keyed_packets_are_refused() {
        let (mut alice, mut bob) = (Srtp::new(keys()), Srtp::new(keys().mirrored()));
        let sent = alice.protect(&rtp(10)).unwrap();
        for i in [1, 12, sent.len() / 2, sent.len() - 1] {
            let mut bad = sent.to_vec();
            bad[i] ^= 0x01;
            assert_eq!(
                bob.unprotect(Kind::Rtp, &bad),
                Err(SrtpError::Auth),
                "byte {i}"
            );
        }
        // A tampered copy did not move the window: the genuine packet still passes once.
        assert!(bob.unprotect(Kind::Rtp, &sent).is_ok());
        assert_eq!(bob.unprotect(Kind::Rtp, &sent), Err(SrtpError::Replay));
        // Our own keys are not the peer's: a reflected packet fails authentication.
        let mine = alice.protect(&rtp(11)).unwrap();
        assert_eq!(alice.unprotect(Kind::Rtp, &mine), Err(SrtpError::Auth));
    }

    #[test]
    fn rtcp_round_trips_and_replays_are_refused() {
        let (mut alice, mut bob) = (Srtp::new(keys()), Srtp::new(keys().mirrored()));
        let plain = build_rtcp(&[Rtcp::Pli {
            sender: Ssrc(1),
            media: Ssrc(2),
        }])
        .unwrap();
        let sent = alice.protect(&plain).unwrap();
        assert_eq!(wire::classify(&sent), Kind::Rtcp);
        assert_eq!(bob.unprotect(Kind::Rtcp, &sent).unwrap(), plain);
        assert_eq!(bob.unprotect(Kind::Rtcp, &sent), Err(SrtpError::Replay));
        let mut bad = alice.protect(&plain).unwrap().to_vec();
        bad[10] ^= 0x80;
        assert_eq!(bob.unprotect(Kind::Rtcp, &bad), Err(SrtpError::Auth));
    }

    #[test]
    fn reordering_within_the_window_is_admitted() {
        let (mut alice, mut bob) = (Srtp::new(keys()), Srtp::new(keys().mirrored()));
        let sent: Vec<Bytes> = (0..600u16)
            .map(|s| alice.protect(&rtp(65_300u16.wrapping_add(s))).unwrap())
            .collect();
        // The first, then the newest across the sequence number wrap, then the rest.
        assert!(bob.unprotect(Kind::Rtp, &sent[0]).is_ok());
        assert!(bob.unprotect(Kind::Rtp, &sent[599]).is_ok());
        for d in &sent[1..599] {
            assert!(bob.unprotect(Kind::Rtp, d).is_ok());
        }
    }

    #[test]
    fn short_and_hostile_datagrams_are_errors_not_panics() {
        let mut bob = Srtp::new(keys());
        for len in 0..40 {
            let d: Vec<u8> = (0..len).map(|i| 0x80 | i as u8).collect();
            assert!(bob.unprotect(Kind::Rtp, &d).is_err());
            assert!(bob.unprotect(Kind::Rtcp, &d).is_err());
        }
        // An extension element claiming more than the block holds.
        let mut d = vec![0x90, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1];
        d.extend_from_slice(&[0xBE, 0xDE, 0x00, 0x01, 0x1f, 0, 0, 0]);
        d.extend_from_slice(&[0; 20]);
        assert_eq!(bob.unprotect(Kind::Rtp, &d), Err(SrtpError::Malformed));
    }
}
