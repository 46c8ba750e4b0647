//! One direction's SRTP/SRTCP transform, AEAD_AES_128_GCM (RFC 7714), in place over the
//! caller's buffer.
//!
//! - Session keys and salts come from the master key and salt by the AES-CM PRF of
//!   RFC 3711 §4.3.3 with a key derivation rate of 0 (RFC 7714 §11).
//! - SRTP (RFC 7714 §8): the IV is `00 00 || SSRC || ROC || SEQ` XOR the session salt;
//!   the RTP header (with its CSRCs and extension) is the associated data, the payload is
//!   encrypted, the 16-byte tag follows it. The rollover counter is guessed from the
//!   sequence number as RFC 3711 §3.3.1 describes.
//! - SRTCP (RFC 7714 §9): the IV is `00 00 || SSRC || 00 00 || 0 || index` XOR the session
//!   salt; the first 8 bytes and the `E || index` word are the associated data, the rest
//!   is encrypted; tag, then the `E || index` word, follow it.
//!
//! The AEAD is `ring`'s AES-GCM (its assembly, with the CPU's AES and carry-less multiply
//! instructions, as in TLS), which encrypts and authenticates in one pass over a mutable
//! slice: nothing is allocated per packet. The replay windows are `webrtc-util`'s, keyed by
//! sequence number for SRTP and by index for SRTCP, as `webrtc-srtp` keys them; the
//! rollover guess is the one `webrtc-srtp` makes, so the two interoperate packet for
//! packet (the tests below check it both ways).
//!
//! State for an SSRC the peer sends is created only once a packet on it authenticates, so
//! forged packets on made-up SSRCs cost no memory.

use std::collections::HashMap;

use aes::Aes128;
use aes::cipher::{BlockEncrypt, KeyInit};
use bytes::BytesMut;
use ring::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use webrtc_util::replay_detector::{ReplayDetector, WrappedSlidingWindowDetector};

use super::{KEY_LEN, MasterKey, REPLAY_WINDOW, SALT_LEN, SRTCP_INDEX_LEN, SrtpError};

/// RFC 3711 §4.3.2 key derivation labels.
const LABEL_SRTP_ENCRYPTION: u8 = 0x00;
const LABEL_SRTP_SALT: u8 = 0x02;
const LABEL_SRTCP_ENCRYPTION: u8 = 0x03;
const LABEL_SRTCP_SALT: u8 = 0x05;
/// The largest SRTCP index (31 bits); the next one is 0 again.
const MAX_SRTCP_INDEX: u32 = 0x7fff_ffff;
/// The E flag of the `E || SRTCP index` word: the packet is encrypted.
const SRTCP_E_FLAG: u32 = 0x8000_0000;
/// The RTCP header and sender SSRC, which SRTCP leaves in clear.
pub(super) const RTCP_CLEAR_LEN: usize = 8;
/// The largest sequence number, which the SRTP replay window wraps at.
const MAX_SEQ: u64 = u16::MAX as u64;
const SEQ_MEDIAN: u16 = 1 << 15;

/// One key's session keys and salts, and the state of every SSRC it has seen.
pub(super) struct Context {
    srtp: LessSafeKey,
    srtcp: LessSafeKey,
    srtp_salt: [u8; SALT_LEN],
    srtcp_salt: [u8; SALT_LEN],
    /// Whether packets are checked against a replay window (the receiving side).
    replay: bool,
    rtp: HashMap<u32, RtpState>,
    rtcp: HashMap<u32, RtcpState>,
}

impl Context {
    /// The contexts of `master`; `replay` keeps a replay window per SSRC.
    pub(super) fn new(master: &MasterKey, replay: bool) -> Self {
        let key = |label| {
            let unbound = UnboundKey::new(&AES_128_GCM, &prf(master, label))
                .expect("AES-128-GCM to take a 16-byte key");
            LessSafeKey::new(unbound)
        };
        let salt = |label| {
            let mut salt = [0; SALT_LEN];
            salt.copy_from_slice(&prf(master, label)[..SALT_LEN]);
            salt
        };
        Self {
            srtp: key(LABEL_SRTP_ENCRYPTION),
            srtcp: key(LABEL_SRTCP_ENCRYPTION),
            srtp_salt: salt(LABEL_SRTP_SALT),
            srtcp_salt: salt(LABEL_SRTCP_SALT),
            replay,
            rtp: HashMap::new(),
            rtcp: HashMap::new(),
        }
    }

    /// Encrypts the RTP packet in `buf` (its header `header_len` bytes) and appends the
    /// tag.
    pub(super) fn protect_rtp(
        &mut self,
        buf: &mut BytesMut,
        header_len: usize,
    ) -> Result<(), SrtpError> {
        let (ssrc, seq) = rtp_ids(buf);
        let state = self.rtp.entry(ssrc).or_insert_with(|| RtpState::new(false));
        let guess = state.guess(seq);
        if guess.exhausted {
            // 2^48 packets on one SSRC: the IV would repeat.
            return Err(SrtpError::Protect);
        }
        let nonce = rtp_nonce(&self.srtp_salt, ssrc, guess.roc, seq);
        let (aad, payload) = buf.split_at_mut(header_len);
        let tag = self
            .srtp
            .seal_in_place_separate_tag(nonce, Aad::from(aad), payload)
            .map_err(|_| SrtpError::Protect)?;
        buf.extend_from_slice(tag.as_ref());
        state.advance(seq, guess.diff);
        Ok(())
    }

    /// Checks and decrypts the SRTP packet in `buf` (header `header_len` bytes, then at
    /// least a tag) and removes the tag. The replay window and the rollover counter move
    /// only for a packet that authenticates.
    pub(super) fn unprotect_rtp(
        &mut self,
        buf: &mut BytesMut,
        header_len: usize,
    ) -> Result<(), SrtpError> {
        let (ssrc, seq) = rtp_ids(buf);
        let mut fresh = None;
        let state = match self.rtp.get_mut(&ssrc) {
            Some(state) => state,
            None => fresh.insert(RtpState::new(self.replay)),
        };
        let guess = state.guess(seq);
        if let Some(window) = &mut state.replay
            && !window.check(u64::from(seq))
        {
            return Err(SrtpError::Replay);
        }
        let nonce = rtp_nonce(&self.srtp_salt, ssrc, guess.roc, seq);
        let (aad, sealed) = buf.split_at_mut(header_len);
        let plain_len = self
            .srtp
            .open_in_place(nonce, Aad::from(aad), sealed)
            .map_err(|_| SrtpError::Auth)?
            .len();
        buf.truncate(header_len + plain_len);
        if let Some(window) = &mut state.replay {
            window.accept();
        }
        state.advance(seq, guess.diff);
        if let Some(state) = fresh {
            self.rtp.insert(ssrc, state);
        }
        Ok(())
    }

    /// Encrypts the RTCP packet in `buf` (at least [`RTCP_CLEAR_LEN`] bytes) under the
    /// sender SSRC's next index and appends the tag and the `E || index` word.
    pub(super) fn protect_rtcp(&mut self, buf: &mut BytesMut) -> Result<(), SrtpError> {
        let ssrc = rtcp_ssrc(buf);
        let state = self
            .rtcp
            .entry(ssrc)
            .or_insert_with(|| RtcpState::new(false));
        // The first index is 1, as webrtc-srtp counts; after 2^31 - 1 it wraps to 0.
        state.index = if state.index >= MAX_SRTCP_INDEX {
            0
        } else {
            state.index + 1
        };
        let word = (state.index | SRTCP_E_FLAG).to_be_bytes();
        let nonce = rtcp_nonce(&self.srtcp_salt, ssrc, state.index);
        let aad = rtcp_aad(buf, word);
        let tag = self
            .srtcp
            .seal_in_place_separate_tag(nonce, Aad::from(aad), &mut buf[RTCP_CLEAR_LEN..])
            .map_err(|_| SrtpError::Protect)?;
        buf.extend_from_slice(tag.as_ref());
        buf.extend_from_slice(&word);
        Ok(())
    }

    /// Checks and decrypts the SRTCP packet in `buf` (at least the clear part, a tag and
    /// the index word) and removes the tag and the word. A packet whose E flag is clear
    /// (sent unencrypted) fails authentication: we never send one.
    pub(super) fn unprotect_rtcp(&mut self, buf: &mut BytesMut) -> Result<(), SrtpError> {
        let ssrc = rtcp_ssrc(buf);
        let end = buf.len() - SRTCP_INDEX_LEN;
        let word = u32::from_be_bytes([buf[end], buf[end + 1], buf[end + 2], buf[end + 3]]);
        let index = word & MAX_SRTCP_INDEX;
        let mut fresh = None;
        let state = match self.rtcp.get_mut(&ssrc) {
            Some(state) => state,
            None => fresh.insert(RtcpState::new(self.replay)),
        };
        if let Some(window) = &mut state.replay
            && !window.check(u64::from(index))
        {
            return Err(SrtpError::Replay);
        }
        if word & SRTCP_E_FLAG == 0 {
            return Err(SrtpError::Auth);
        }
        let nonce = rtcp_nonce(&self.srtcp_salt, ssrc, index);
        let aad = rtcp_aad(buf, word.to_be_bytes());
        let plain_len = self
            .srtcp
            .open_in_place(nonce, Aad::from(aad), &mut buf[RTCP_CLEAR_LEN..end])
            .map_err(|_| SrtpError::Auth)?
            .len();
        buf.truncate(RTCP_CLEAR_LEN + plain_len);
        if let Some(window) = &mut state.replay {
            window.accept();
        }
        if let Some(state) = fresh {
            self.rtcp.insert(ssrc, state);
        }
        Ok(())
    }
}

/// What one SSRC's packets have moved its packet index to (RFC 3711 §3.3.1).
struct RtpState {
    /// The highest index seen: rollover counter (32 bits) and sequence number (16).
    index: u64,
    /// Whether a packet has set the index yet.
    started: bool,
    replay: Option<WrappedSlidingWindowDetector>,
}

/// A rollover counter guessed for a sequence number, and how far it moves the index.
struct Guess {
    roc: u32,
    diff: i64,
    /// The counter would pass 2^32: the SSRC's packets are used up.
    exhausted: bool,
}

impl RtpState {
    fn new(replay: bool) -> Self {
        Self {
            index: 0,
            started: false,
            replay: replay.then(|| WrappedSlidingWindowDetector::new(REPLAY_WINDOW, MAX_SEQ)),
        }
    }

    /// The rollover counter of `seq`: the one that puts it nearest the highest index.
    fn guess(&self, seq: u16) -> Guess {
        let roc = (self.index >> 16) as u32;
        let last = self.index as u16;
        let ahead = i64::from(seq) - i64::from(last);
        let (roc_guess, diff) = if !self.started || self.index <= u64::from(SEQ_MEDIAN) {
            // Nothing seen yet, or still in the first half of the first cycle.
            (roc, if self.started { ahead } else { 0 })
        } else if last < SEQ_MEDIAN && ahead > i64::from(SEQ_MEDIAN) {
            // Far ahead of a low sequence number: a late packet of the previous cycle.
            (roc.wrapping_sub(1), ahead - (1 << 16))
        } else if last >= SEQ_MEDIAN && last - SEQ_MEDIAN > seq {
            // Far behind a high sequence number: the next cycle has begun.
            (roc.wrapping_add(1), ahead + (1 << 16))
        } else {
            (roc, ahead)
        };
        Guess {
            roc: roc_guess,
            diff,
            exhausted: roc_guess == 0 && roc == u32::MAX,
        }
    }

    /// Records a protected or authenticated packet.
    fn advance(&mut self, seq: u16, diff: i64) {
        if self.started {
            self.index = self.index.wrapping_add_signed(diff);
        } else {
            self.index |= u64::from(seq);
            self.started = true;
        }
    }
}

/// One SSRC's SRTCP index (sending) and replay window (receiving).
struct RtcpState {
    index: u32,
    replay: Option<WrappedSlidingWindowDetector>,
}

impl RtcpState {
    fn new(replay: bool) -> Self {
        Self {
            index: 0,
            replay: replay.then(|| {
                WrappedSlidingWindowDetector::new(REPLAY_WINDOW, u64::from(MAX_SRTCP_INDEX))
            }),
        }
    }
}

/// The AES-CM PRF of RFC 3711 §4.3.3 with a key derivation rate of 0: AES under the
/// master key of the master salt (96 bits, padded with zeros to a block) with `label`
/// XORed in at byte 7. One block is enough for a 16-byte key and a 12-byte salt.
fn prf(master: &MasterKey, label: u8) -> [u8; KEY_LEN] {
    let aes = Aes128::new(&master.key.into());
    let mut block = [0u8; KEY_LEN];
    block[..SALT_LEN].copy_from_slice(&master.salt);
    block[7] ^= label;
    let mut block = block.into();
    aes.encrypt_block(&mut block);
    block.into()
}

/// The SSRC and sequence number of an RTP packet whose header is known to be whole.
fn rtp_ids(packet: &[u8]) -> (u32, u16) {
    let ssrc = u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]);
    (ssrc, u16::from_be_bytes([packet[2], packet[3]]))
}

/// The sender SSRC of an RTCP packet at least [`RTCP_CLEAR_LEN`] long.
fn rtcp_ssrc(packet: &[u8]) -> u32 {
    u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]])
}

fn rtp_nonce(salt: &[u8; SALT_LEN], ssrc: u32, roc: u32, seq: u16) -> Nonce {
    let mut iv = [0u8; SALT_LEN];
    iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
    iv[6..10].copy_from_slice(&roc.to_be_bytes());
    iv[10..12].copy_from_slice(&seq.to_be_bytes());
    salted(iv, salt)
}

fn rtcp_nonce(salt: &[u8; SALT_LEN], ssrc: u32, index: u32) -> Nonce {
    let mut iv = [0u8; SALT_LEN];
    iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
    iv[8..12].copy_from_slice(&index.to_be_bytes());
    salted(iv, salt)
}

fn salted(mut iv: [u8; SALT_LEN], salt: &[u8; SALT_LEN]) -> Nonce {
    iv.iter_mut().zip(salt).for_each(|(b, s)| *b ^= s);
    Nonce::assume_unique_for_key(iv)
}

/// SRTCP's associated data: the clear header and sender SSRC, then `E || index`.
fn rtcp_aad(packet: &[u8], word: [u8; 4]) -> [u8; RTCP_CLEAR_LEN + 4] {
    let mut aad = [0u8; RTCP_CLEAR_LEN + 4];
    aad[..RTCP_CLEAR_LEN].copy_from_slice(&packet[..RTCP_CLEAR_LEN]);
    aad[RTCP_CLEAR_LEN..].copy_from_slice(&word);
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rollover_guess_follows_rfc_3711_around_the_wrap() {
        let mut state = RtpState::new(false);
        let g = state.guess(65_530);
        assert_eq!((g.roc, g.diff), (0, 0));
        state.advance(65_530, g.diff);
        // The next cycle begins.
        let g = state.guess(3);
        assert_eq!((g.roc, g.diff), (1, 9));
        state.advance(3, g.diff);
        assert_eq!(state.index, (1 << 16) | 3);
        // A late packet of the previous cycle does not move the index back a cycle.
        let g = state.guess(65_533);
        assert_eq!((g.roc, g.diff), (0, -6));
        // The last packet of the last cycle can be guessed, the one after it not.
        state.index = (u64::from(u32::MAX) << 16) | 65_000;
        assert!(!state.guess(65_535).exhausted);
        assert!(state.guess(2).exhausted);
    }

    #[test]
    fn only_packets_that_authenticate_make_state_for_their_ssrc() {
        let key = MasterKey::from_bytes([3; KEY_LEN + SALT_LEN]);
        let (mut tx, mut rx) = (Context::new(&key, false), Context::new(&key, true));
        let mut packet = BytesMut::from(&[0x80, 96, 0, 7, 0, 0, 0, 1, 0, 0, 0, 42][..]);
        packet.extend_from_slice(b"payload");
        let mut sealed = packet.clone();
        tx.protect_rtp(&mut sealed, 12).unwrap();
        for ssrc in (0..100u8).filter(|&s| s != 42) {
            let mut forged = sealed.clone();
            forged[11] = ssrc;
            assert_eq!(rx.unprotect_rtp(&mut forged, 12), Err(SrtpError::Auth));
        }
        assert!(rx.rtp.is_empty());
        rx.unprotect_rtp(&mut sealed, 12).unwrap();
        assert_eq!(sealed, packet);
        assert_eq!(rx.rtp.len(), 1);
    }
}
