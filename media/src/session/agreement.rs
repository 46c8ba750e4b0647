//! What both sides agreed that the media path needs, and the errors of setting it.
//!
//! The application derives an [`Agreement`] from the offer and the answer (signaling is
//! not the core's business) and hands it to [`Session::set_agreement`]. From then on the
//! session knows its peer: which SSRCs and payload types it sends, which header
//! extension id carries its capture times, and what was agreed for NACK, RTX, FEC and
//! keyframe requests. Anything else arriving on the socket is refused and counted.

use thiserror::Error;

use super::Session;
use crate::srtp::{KEY_LEN, MasterKey, SALT_LEN, SrtpKeys};
use crate::types::{Pt, Ssrc};

/// One RTP stream as agreed: its payload type and SSRC, and its RTX stream (RFC 4588).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Track {
    /// The media payload type.
    pub pt: Pt,
    /// The media SSRC.
    pub ssrc: Ssrc,
    /// The RTX payload type and SSRC, when retransmissions were agreed.
    pub rtx: Option<(Pt, Ssrc)>,
}

/// One kind of media (audio or video), seen from this side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindAgreement {
    /// What this side sends: must be the session's own track.
    pub send: Track,
    /// What the peer sends.
    pub receive: Track,
    /// Generic NACK (RFC 4585) both ways.
    pub nack: bool,
}

/// RFC 2198 redundancy for audio, as agreed: the RED payload type each side sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedAgreement {
    /// The payload type of our RED packets.
    pub send: Pt,
    /// The payload type of the peer's RED packets (admitted on its audio SSRC beside
    /// the plain Opus one).
    pub receive: Pt,
}

/// Video FEC as agreed ([`crate::fec`]): each side sends its parity packets on its
/// video RTX SSRC under its own payload type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FecAgreement {
    /// The payload type of the FEC packets we send.
    pub send_pt: Pt,
    /// The payload type of the FEC packets the peer sends.
    pub receive_pt: Pt,
}

/// Everything both sides agreed that the media path needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreement {
    /// Audio, if both sides have it.
    pub audio: Option<KindAgreement>,
    /// Video, if both sides have it.
    pub video: Option<KindAgreement>,
    /// Opus in-band FEC both ways.
    pub fec: bool,
    /// RFC 2198 redundancy for audio both ways, when both offered it.
    pub red: Option<RedAgreement>,
    /// Keyframe requests (PLI) both ways.
    pub pli: bool,
    /// The RFC 8285 one-byte extension id the *peer* uses for abs-capture-time in its
    /// packets (1..=14).
    pub remote_capture_ext_id: u8,
    /// The one-byte extension id (1..=14) we stamp abs-send-time in as each packet
    /// leaves: the peer estimates the delay of what we send and asked for it. `None`
    /// sends no send times.
    pub send_time_ext_id: Option<u8>,
    /// The id (1..=14) the peer stamps abs-send-time in: we estimate the delay of what
    /// it sends and asked for it. `None`: we time its audio's capture times instead.
    pub remote_send_time_ext_id: Option<u8>,
    /// The id (1..=14) we stamp transport-wide sequence numbers in: the peer sends us
    /// transport-cc feedback on every packet, and our congestion window follows it.
    /// `None`: no window.
    pub transport_seq_ext_id: Option<u8>,
    /// The id (1..=14) the peer stamps transport-wide sequence numbers in: we send it
    /// transport-cc feedback. `None`: none.
    pub remote_transport_seq_ext_id: Option<u8>,
    /// The SRTP keys every datagram is protected with, both ways (see [`crate::srtp`]).
    /// `None` sends and admits plain RTP and RTCP: only for interoperating with tools
    /// that have no keys, and only when the application says so explicitly.
    pub srtp: Option<SrtpKeys>,
    /// Video FEC both ways; it needs video RTX both ways (its packets use that SSRC).
    pub video_fec: Option<FecAgreement>,
}

impl Agreement {
    /// The agreement `ours` would reach with `theirs` when both are our own sessions and
    /// every feature both have configured is on: for tests, the lab and the fuzzer,
    /// which have no signaling. A real client derives it from the offer and the answer.
    ///
    /// Media is encrypted with keys drawn from the two sessions' seeds, so both get
    /// mirror images: secret from nobody who knows the seeds, which is all a test
    /// needs. A real client's keys come from [`crate::srtp::exchange`].
    pub fn between(ours: &Session, theirs: &Session) -> Self {
        let nack = ours.config.nack && theirs.config.nack;
        let kind = |send: Track, receive: Track| KindAgreement {
            send: Track {
                rtx: send.rtx.filter(|_| nack),
                ..send
            },
            receive: Track {
                rtx: receive.rtx.filter(|_| nack),
                ..receive
            },
            nack,
        };
        let video = match (ours.video_track(), theirs.video_track()) {
            (Some(send), Some(receive)) => Some(kind(send, receive)),
            _ => None,
        };
        let rtx_both = video.is_some_and(|v| v.send.rtx.is_some() && v.receive.rtx.is_some());
        let video_fec = (rtx_both && ours.config.video_fec && theirs.config.video_fec).then_some(
            FecAgreement {
                send_pt: ours.config.video_fec_pt,
                receive_pt: theirs.config.video_fec_pt,
            },
        );
        Self {
            audio: Some(kind(ours.audio_track(), theirs.audio_track())),
            video,
            fec: ours.config.audio_fec && theirs.config.audio_fec,
            red: (ours.config.audio_red && theirs.config.audio_red).then_some(RedAgreement {
                send: ours.config.audio_red_pt,
                receive: theirs.config.audio_red_pt,
            }),
            pli: true,
            remote_capture_ext_id: theirs.config.capture_ext_id,
            send_time_ext_id: theirs
                .config
                .delay_bwe
                .then_some(theirs.config.send_time_ext_id),
            remote_send_time_ext_id: ours
                .config
                .delay_bwe
                .then_some(ours.config.send_time_ext_id),
            transport_seq_ext_id: theirs
                .config
                .delay_bwe
                .then_some(theirs.config.transport_seq_ext_id),
            remote_transport_seq_ext_id: ours
                .config
                .delay_bwe
                .then_some(ours.config.transport_seq_ext_id),
            srtp: Some(SrtpKeys {
                send: seeded_key(ours.config.seed, theirs.config.seed),
                receive: seeded_key(theirs.config.seed, ours.config.seed),
            }),
            video_fec,
        }
    }

    /// The same agreement without encryption (see [`Agreement::srtp`]).
    pub fn plain(self) -> Self {
        Self { srtp: None, ..self }
    }

    /// Every SSRC the peer sends on, main and RTX.
    pub(super) fn remote_ssrcs(&self) -> impl Iterator<Item = Ssrc> + '_ {
        [&self.audio, &self.video]
            .into_iter()
            .flatten()
            .flat_map(|k| [Some(k.receive.ssrc), k.receive.rtx.map(|(_, s)| s)])
            .flatten()
    }
}

/// Why the session refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The agreement's `send` track is not the one this session sends.
    #[error("the agreed {0} send track is not this session's")]
    NotOurTrack(&'static str),
    /// The agreement names video but this session was built without it.
    #[error("video was agreed but this session carries none")]
    NoVideo,
    /// Two of the peer's streams share an SSRC, or one collides with ours.
    #[error("the peer's SSRC {0} is used twice")]
    DuplicateSsrc(Ssrc),
    /// A payload type outside 0..=127, or in 64..=95 where it collides with RTCP
    /// packet types on a shared socket (RFC 5761 §4).
    #[error("payload type {0} cannot be used")]
    InvalidPt(u8),
    /// The abs-capture-time extension id is outside 1..=14 (RFC 8285 one-byte form).
    #[error("header extension id {0} is outside 1..=14")]
    InvalidExtId(u8),
    /// One header extension id carries two extensions in one direction.
    #[error("header extension id {0} is agreed for two extensions")]
    ExtIdClash(u8),
    /// Media of a kind that was not agreed.
    #[error("{0} was not agreed with the peer")]
    NotAgreed(&'static str),
    /// Nothing may be sent before the connectivity checks selected a path.
    #[error("no path to the peer has been selected")]
    NoPath,
}

impl Session {
    /// Sets what was agreed with the peer. Checks that the `send` tracks are ours, then
    /// builds the incoming streams keyed by the peer's SSRCs (main and RTX). Until an
    /// agreement is set every RTP packet is refused. Setting a new agreement (a
    /// renegotiation, a peer that restarted) keeps the incoming streams whose SSRC and
    /// kind did not change and starts the others afresh.
    pub fn set_agreement(&mut self, agreement: Agreement) -> Result<(), SessionError> {
        let ids = [
            Some(agreement.remote_capture_ext_id),
            agreement.send_time_ext_id,
            agreement.remote_send_time_ext_id,
            agreement.transport_seq_ext_id,
            agreement.remote_transport_seq_ext_id,
        ];
        if let Some(id) = ids.into_iter().flatten().find(|id| !(1..=14).contains(id)) {
            return Err(SessionError::InvalidExtId(id));
        }
        // What we send carries our capture times, the send times and the transport-wide
        // numbers; what the peer sends, its own three: each set must be distinct.
        let ours = [
            Some(self.config.capture_ext_id),
            agreement.send_time_ext_id,
            agreement.transport_seq_ext_id,
        ];
        let theirs = [
            Some(agreement.remote_capture_ext_id),
            agreement.remote_send_time_ext_id,
            agreement.remote_transport_seq_ext_id,
        ];
        for set in [ours, theirs] {
            let ids: Vec<u8> = set.into_iter().flatten().collect();
            if let Some(id) = ids
                .iter()
                .enumerate()
                .find_map(|(i, id)| ids[..i].contains(id).then_some(*id))
            {
                return Err(SessionError::ExtIdClash(id));
            }
        }
        if let Some(audio) = &agreement.audio {
            check_send(&audio.send, &self.audio_track(), "audio")?;
        }
        if let Some(video) = &agreement.video {
            let ours = self.video_track().ok_or(SessionError::NoVideo)?;
            check_send(&video.send, &ours, "video")?;
        }
        let mut seen = vec![self.audio_ssrc(), self.audio_rtx_ssrc()];
        seen.extend(self.video_ssrc());
        seen.extend(self.video_rtx_ssrc());
        for ssrc in agreement.remote_ssrcs() {
            if seen.contains(&ssrc) {
                return Err(SessionError::DuplicateSsrc(ssrc));
            }
            seen.push(ssrc);
        }
        if let Some(red) = agreement.red {
            let audio = agreement.audio.map(|k| k.receive);
            let clash = audio.is_some_and(|t| {
                t.pt == red.receive || t.rtx.is_some_and(|(pt, _)| pt == red.receive)
            });
            if red.receive.0 > 127 || (64..=95).contains(&red.receive.0) || clash {
                return Err(SessionError::InvalidPt(red.receive.0));
            }
            if red.send == self.audio_track().pt {
                return Err(SessionError::InvalidPt(red.send.0));
            }
        }
        let fec_pts = agreement.video_fec.map(|f| [f.send_pt, f.receive_pt]);
        for k in [&agreement.audio, &agreement.video].into_iter().flatten() {
            for pt in [Some(k.receive.pt), k.receive.rtx.map(|(pt, _)| pt)]
                .into_iter()
                .flatten()
                .chain(fec_pts.into_iter().flatten())
            {
                if pt.0 > 127 || (64..=95).contains(&pt.0) {
                    return Err(SessionError::InvalidPt(pt.0));
                }
            }
        }
        if let (Some(fec), Some(video)) = (agreement.video_fec, &agreement.video) {
            // Parity and retransmissions share the RTX SSRC: their payload types differ.
            let rtx_pts = [video.send.rtx, video.receive.rtx].map(|r| r.map(|(pt, _)| pt));
            if rtx_pts[0] == Some(fec.send_pt) || rtx_pts[1] == Some(fec.receive_pt) {
                return Err(SessionError::InvalidPt(fec.receive_pt.0));
            }
        }
        self.apply_agreement(agreement);
        Ok(())
    }
}

/// The test key of the direction from the session seeded `from` to the one seeded `to`.
fn seeded_key(from: u64, to: u64) -> MasterKey {
    let mut rng = crate::rng::Rng::new(from ^ to.rotate_left(32) ^ 0x5eed_5a17_0000_0001);
    let mut bytes = [0u8; KEY_LEN + SALT_LEN];
    for chunk in bytes.chunks_mut(4) {
        chunk.copy_from_slice(&rng.u32().to_be_bytes()[..chunk.len()]);
    }
    MasterKey::from_bytes(bytes)
}

fn check_send(agreed: &Track, ours: &Track, kind: &'static str) -> Result<(), SessionError> {
    let rtx_ok = agreed.rtx.is_none() || agreed.rtx == ours.rtx;
    if agreed.pt != ours.pt || agreed.ssrc != ours.ssrc || !rtx_ok {
        return Err(SessionError::NotOurTrack(kind));
    }
    Ok(())
}
