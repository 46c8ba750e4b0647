//! The offer and the answer: what each side sends, what it can do, and where it listens.
//!
//! They travel through signaling as JSON objects that the server passes on untouched
//! (`invite {to, offer}` and `accept {call_id, answer}`). Both are a
//! [`SessionDescription`]; the answer is the callee's own description, with every
//! optional feature limited to what the offer supports. Each side then derives the same
//! [`Agreement`] from the two descriptions, so neither has to trust the other's
//! arithmetic.
//!
//! A description is input from the network: [`SessionDescription::validate`] checks it
//! before anything uses it.
//!
//! Each carries its side's ephemeral X25519 public key (`key`). The media keys, the
//! connectivity-check credentials and the safety code come from the exchange of these
//! keys and from both descriptions ([`magpie_media::srtp::exchange`]), so nothing in a
//! description lets the server that carries it decrypt, inject or answer for the media.
//! The transcript is each description in its canonical form ([`canonical`]), computed
//! from what a side sent and what it parsed: a changed byte in any field changes keys,
//! credentials and code.
//!
//! ```json
//! {
//!   "version": 3,
//!   "key": "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a",
//!   "candidates": [{"addr": "192.168.1.20:50432", "type": "host"},
//!                  {"addr": "203.0.113.7:61002", "type": "srflx"},
//!                  {"addr": "198.51.100.1:50011", "type": "relay"}],
//!   "audio": {"codec": "opus", "payload_type": 111, "clock_rate": 48000, "channels": 1,
//!             "frame_ms": 20, "ssrc": 2914711093, "fec": true, "dtx": false,
//!             "nack": true, "rtx": {"payload_type": 112, "ssrc": 2914711094},
//!             "marker_epoch_us": 1795560000000000, "red": 110},
//!   "video": {"codec": "H264", "payload_type": 96, "clock_rate": 90000,
//!             "profile_level_id": "42e01f", "packetization_mode": 1,
//!             "ssrc": 3735928559, "nack": true, "pli": true,
//!             "rtx": {"payload_type": 97, "ssrc": 3735928560},
//!             "width": 640, "height": 480, "fps": 30},
//!   "abs_capture_time_id": 1,
//!   "abs_send_time_id": 2,
//!   "transport_cc_id": 3
//! }
//! ```

use std::net::SocketAddr;

use magpie_media::ice::Candidate;
use magpie_media::srtp::SrtpKeys;
use magpie_media::srtp::exchange::PublicKey;
use magpie_media::types::{Pt, Ssrc};
use magpie_media::{FecAgreement, KindAgreement, RedAgreement, Track};
use serde::{Deserialize, Serialize};

/// The version of this format; a peer with another version is refused with a clear error.
/// Version 2: the RTX stream carries its SSRC (the receiver no longer learns it from
/// the first retransmission, which anyone could send). Version 3: an X25519 key (`key`)
/// instead of ICE credentials in clear, and media is SRTP; candidates are typed
/// (`{"addr", "type": "host"|"srflx"|"relay"}`), and the list may be empty when the
/// candidates come later through signaling (`candidates`, trickle).
pub const VERSION: u32 = 3;
/// Candidates accepted at most: a machine with more interfaces than this lists the first.
pub const MAX_CANDIDATES: usize = 16;

/// One side's description of its media.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionDescription {
    /// [`VERSION`].
    pub version: u32,
    /// This side's ephemeral X25519 public key for this call.
    pub key: PublicKey,
    /// Where this side's media socket can be reached, and how each address was found.
    pub candidates: Vec<Candidate>,
    /// The audio stream this side sends and receives; `None` for no audio.
    pub audio: Option<AudioDescription>,
    /// The video stream this side sends and receives; `None` for an audio-only call.
    pub video: Option<VideoDescription>,
    /// The RTP header extension id of abs-capture-time, which carries each frame's
    /// capture time so the receiver can measure latency.
    pub abs_capture_time_id: u8,
    /// When this side estimates the delay of what it receives (`--delay-bwe`), the RTP
    /// header extension id it asks the peer to stamp each packet's send time in
    /// (abs-send-time); absent from older descriptions.
    #[serde(default)]
    pub abs_send_time_id: Option<u8>,
    /// When this side estimates (`--delay-bwe`), the RTP header extension id it asks the
    /// peer to stamp each packet's transport-wide sequence number in
    /// (draft-holmer-rmcat-transport-wide-cc-extensions-01): it sends transport-cc
    /// feedback on every packet, and the peer's congestion window follows it. Absent
    /// from older descriptions.
    #[serde(default)]
    pub transport_cc_id: Option<u8>,
}

/// An RTX stream (RFC 4588): retransmissions on their own SSRC and payload type, both
/// announced here so the receiver admits only them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rtx {
    /// The RTX payload type.
    pub payload_type: u8,
    /// The RTX SSRC, distinct from every other SSRC of the description.
    pub ssrc: u32,
}

/// The audio stream: Opus (RFC 7587).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AudioDescription {
    /// Always `opus`.
    pub codec: String,
    /// The RTP payload type, 96 to 127.
    pub payload_type: u8,
    /// Always 48000 (RFC 7587 §4.1).
    pub clock_rate: u32,
    /// 1 or 2.
    pub channels: u8,
    /// Frame duration, 10 or 20 ms.
    pub frame_ms: u32,
    /// The sender's SSRC.
    pub ssrc: u32,
    /// Opus in-band FEC.
    pub fec: bool,
    /// Opus DTX.
    pub dtx: bool,
    /// Generic NACK (RFC 4585).
    pub nack: bool,
    /// Retransmissions, when NACK is on.
    pub rtx: Option<Rtx>,
    /// When the sender's `tone` source emits its first timing marker (microseconds since
    /// the Unix epoch); present only with synthetic audio. The receiver's probe needs it
    /// to tell each marker's emission time.
    pub marker_epoch_us: Option<u64>,
    /// The payload type of this side's RFC 2198 redundant audio (RED carrying Opus),
    /// 96 to 127, when it offers redundancy; absent from older descriptions.
    #[serde(default)]
    pub red: Option<u8>,
}

/// The video stream: H.264 (RFC 6184), constrained baseline, packetization mode 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VideoDescription {
    /// Always `H264`.
    pub codec: String,
    /// The RTP payload type, 96 to 127.
    pub payload_type: u8,
    /// Always 90000.
    pub clock_rate: u32,
    /// `42e01f`: constrained baseline, level 3.1.
    pub profile_level_id: String,
    /// 1: single NAL unit, STAP-A and FU-A.
    pub packetization_mode: u8,
    /// The sender's SSRC.
    pub ssrc: u32,
    /// Generic NACK.
    pub nack: bool,
    /// Picture loss indication (keyframe requests).
    pub pli: bool,
    /// Retransmissions, when NACK is on.
    pub rtx: Option<Rtx>,
    /// The resolution the sender captures at.
    pub width: u32,
    /// The resolution the sender captures at.
    pub height: u32,
    /// The frame rate the sender captures at.
    pub fps: u32,
    /// The payload type of the sender's video FEC packets (XOR parity, sent on its RTX
    /// SSRC), when it offers FEC; needs `rtx`. Absent from older descriptions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fec: Option<u8>,
}

/// A description that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Another version of this format.
    #[error("the peer speaks session description version {0}, this client version {VERSION}")]
    Version(u32),
    /// A codec this client does not have.
    #[error("the peer offers codec {0:?}, which this client does not support")]
    Codec(String),
    /// A field out of its range.
    #[error("the peer's description has an invalid {0}")]
    Invalid(&'static str),
    /// Neither audio nor video in common.
    #[error("the two sides have no media in common")]
    NothingInCommon,
}

impl SessionDescription {
    /// Checks everything a peer could get wrong or forge.
    pub fn validate(&self) -> Result<(), Error> {
        if self.version != VERSION {
            return Err(Error::Version(self.version));
        }
        validate_candidates(&self.candidates)?;
        if !(1..=14).contains(&self.abs_capture_time_id) {
            return Err(Error::Invalid("abs_capture_time_id"));
        }
        if self
            .abs_send_time_id
            .is_some_and(|id| !(1..=14).contains(&id) || id == self.abs_capture_time_id)
        {
            return Err(Error::Invalid("abs_send_time_id"));
        }
        if self.transport_cc_id.is_some_and(|id| {
            !(1..=14).contains(&id)
                || id == self.abs_capture_time_id
                || Some(id) == self.abs_send_time_id
        }) {
            return Err(Error::Invalid("transport_cc_id"));
        }
        let mut pts = Vec::new();
        let mut ssrcs = Vec::new();
        if let Some(audio) = &self.audio {
            if !audio.codec.eq_ignore_ascii_case("opus") {
                return Err(Error::Codec(audio.codec.clone()));
            }
            if audio.clock_rate != 48_000 {
                return Err(Error::Invalid("audio.clock_rate"));
            }
            if !(1..=2).contains(&audio.channels) {
                return Err(Error::Invalid("audio.channels"));
            }
            if ![10, 20].contains(&audio.frame_ms) {
                return Err(Error::Invalid("audio.frame_ms"));
            }
            pts.push(audio.payload_type);
            pts.extend(audio.red);
            ssrcs.push(audio.ssrc);
            if let Some(rtx) = audio.rtx {
                pts.push(rtx.payload_type);
                ssrcs.push(rtx.ssrc);
            }
        }
        if let Some(video) = &self.video {
            if !video.codec.eq_ignore_ascii_case("h264") {
                return Err(Error::Codec(video.codec.clone()));
            }
            if video.clock_rate != 90_000 {
                return Err(Error::Invalid("video.clock_rate"));
            }
            if video.packetization_mode != 1 {
                return Err(Error::Invalid("video.packetization_mode"));
            }
            let even = |n: u32| n.is_multiple_of(2);
            if !(16..=4096).contains(&video.width) || !even(video.width) {
                return Err(Error::Invalid("video.width"));
            }
            if !(16..=4096).contains(&video.height) || !even(video.height) {
                return Err(Error::Invalid("video.height"));
            }
            if !(1..=120).contains(&video.fps) {
                return Err(Error::Invalid("video.fps"));
            }
            pts.push(video.payload_type);
            ssrcs.push(video.ssrc);
            if let Some(rtx) = video.rtx {
                pts.push(rtx.payload_type);
                ssrcs.push(rtx.ssrc);
            }
            if let Some(fec) = video.fec {
                if video.rtx.is_none() {
                    return Err(Error::Invalid("video.fec"));
                }
                pts.push(fec);
            }
        }
        // RFC 5761 §4: with RTP and RTCP on one port, payload types 64-95 would collide
        // with RTCP packet types; dynamic types are 96-127.
        if pts.iter().any(|pt| !(96..=127).contains(pt)) {
            return Err(Error::Invalid("payload_type"));
        }
        if has_duplicates(&mut pts) {
            return Err(Error::Invalid("payload_type"));
        }
        if has_duplicates(&mut ssrcs) {
            return Err(Error::Invalid("ssrc"));
        }
        Ok(())
    }

    /// The callee's answer: `self` (the callee's own description) limited to what
    /// `offer` supports. A stream the offer lacks is dropped; a feature is kept only when
    /// both have it.
    pub fn answer(mut self, offer: &SessionDescription) -> Result<Self, Error> {
        offer.validate()?;
        self.audio = match (self.audio, &offer.audio) {
            (Some(mut mine), Some(theirs)) => {
                mine.fec &= theirs.fec;
                mine.red = mine.red.filter(|_| theirs.red.is_some());
                mine.nack &= theirs.nack;
                mine.rtx = mine.rtx.filter(|_| mine.nack && theirs.rtx.is_some());
                Some(mine)
            }
            _ => None,
        };
        self.video = match (self.video, &offer.video) {
            (Some(mut mine), Some(theirs)) => {
                mine.nack &= theirs.nack;
                mine.pli &= theirs.pli;
                mine.rtx = mine.rtx.filter(|_| mine.nack && theirs.rtx.is_some());
                mine.fec = mine
                    .fec
                    .filter(|_| mine.rtx.is_some() && theirs.fec.is_some());
                Some(mine)
            }
            _ => None,
        };
        if self.audio.is_none() && self.video.is_none() {
            return Err(Error::NothingInCommon);
        }
        Ok(self)
    }
}

/// Checks a list of candidates from the peer (in a description, or trickled): at most
/// [`MAX_CANDIDATES`], none unreachable by construction (port 0, an unspecified or a
/// multicast address).
pub fn validate_candidates(candidates: &[Candidate]) -> Result<(), Error> {
    if candidates.len() > MAX_CANDIDATES {
        return Err(Error::Invalid("candidates"));
    }
    let unusable =
        |a: &SocketAddr| a.port() == 0 || a.ip().is_unspecified() || a.ip().is_multicast();
    if candidates.iter().any(|c| unusable(&c.addr)) {
        return Err(Error::Invalid("candidates"));
    }
    Ok(())
}

/// A description in the form both sides hash into the transcript: its JSON with the
/// fields in declaration order, as the sender serialized it and as the receiver
/// re-serializes what it parsed.
pub fn canonical(description: &SessionDescription) -> Vec<u8> {
    serde_json::to_vec(description).expect("descriptions serialize")
}

fn has_duplicates(values: &mut [impl Ord]) -> bool {
    values.sort_unstable();
    values.windows(2).any(|w| w[0] == w[1])
}

/// What both sides agreed on, seen from one of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreement {
    /// Audio, if both sides have it.
    pub audio: Option<StreamAgreement>,
    /// Video, if both sides have it.
    pub video: Option<StreamAgreement>,
    /// Opus in-band FEC, on when both support it.
    pub fec: bool,
    /// RFC 2198 audio redundancy when both offer it: (our RED payload type, the peer's).
    pub red: Option<(u8, u8)>,
    /// Keyframe requests, on when both support them.
    pub pli: bool,
    /// The header extension id the peer puts abs-capture-time in.
    pub remote_capture_ext_id: u8,
    /// The header extension id the peer asked us to stamp send times in, unless our
    /// capture times use it.
    pub send_time_ext_id: Option<u8>,
    /// The header extension id we asked the peer to stamp send times in, unless its
    /// capture times use it.
    pub remote_send_time_ext_id: Option<u8>,
    /// The header extension id the peer asked us to stamp transport-wide sequence
    /// numbers in (it sends us transport-cc feedback), unless another of ours uses it.
    pub transport_seq_ext_id: Option<u8>,
    /// The header extension id we asked the peer to stamp transport-wide sequence
    /// numbers in (we send it feedback), unless another of its uses it.
    pub remote_transport_seq_ext_id: Option<u8>,
    /// Video FEC both ways, when both offer it and RTX is on: the payload types of
    /// our FEC packets and of the peer's.
    pub video_fec: Option<(u8, u8)>,
}

/// One kind of media: what this side sends and what it receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamAgreement {
    /// This side's payload type and SSRC, and its RTX stream.
    pub send: (u8, u32, Option<Rtx>),
    /// The peer's payload type and SSRC, and its RTX stream.
    pub receive: (u8, u32, Option<Rtx>),
    /// NACK and retransmission, on when both support them.
    pub nack: bool,
}

impl Agreement {
    /// Derives the agreement from this side's description and the peer's. Both sides get
    /// mirror images of the same agreement.
    pub fn new(local: &SessionDescription, remote: &SessionDescription) -> Result<Self, Error> {
        remote.validate()?;
        let audio = match (&local.audio, &remote.audio) {
            (Some(l), Some(r)) => Some(stream(
                (l.payload_type, l.ssrc, l.rtx),
                (r.payload_type, r.ssrc, r.rtx),
                l.nack && r.nack,
            )),
            _ => None,
        };
        let video = match (&local.video, &remote.video) {
            (Some(l), Some(r)) => Some(stream(
                (l.payload_type, l.ssrc, l.rtx),
                (r.payload_type, r.ssrc, r.rtx),
                l.nack && r.nack,
            )),
            _ => None,
        };
        if audio.is_none() && video.is_none() {
            return Err(Error::NothingInCommon);
        }
        let fec = matches!((&local.audio, &remote.audio), (Some(l), Some(r)) if l.fec && r.fec);
        let pli = matches!((&local.video, &remote.video), (Some(l), Some(r)) if l.pli && r.pli);
        let red = match (&local.audio, &remote.audio) {
            (Some(l), Some(r)) => l.red.zip(r.red),
            _ => None,
        };
        let rtx_both = video
            .as_ref()
            .is_some_and(|v| v.send.2.is_some() && v.receive.2.is_some());
        let video_fec = match (&local.video, &remote.video) {
            (Some(l), Some(r)) if rtx_both => l.fec.zip(r.fec),
            _ => None,
        };
        Ok(Self {
            audio,
            video,
            fec,
            red,
            pli,
            remote_capture_ext_id: remote.abs_capture_time_id,
            send_time_ext_id: remote
                .abs_send_time_id
                .filter(|&id| id != local.abs_capture_time_id),
            remote_send_time_ext_id: local
                .abs_send_time_id
                .filter(|&id| id != remote.abs_capture_time_id),
            transport_seq_ext_id: remote.transport_cc_id.filter(|&id| {
                id != local.abs_capture_time_id && Some(id) != remote.abs_send_time_id
            }),
            remote_transport_seq_ext_id: local.transport_cc_id.filter(|&id| {
                id != remote.abs_capture_time_id && Some(id) != local.abs_send_time_id
            }),
            video_fec,
        })
    }
}

impl Agreement {
    /// What the media session needs of the agreement: the peer's streams it admits, ours
    /// it sends, the features both have, and the keys of the exchange.
    pub fn media(&self, srtp: SrtpKeys) -> magpie_media::Agreement {
        let a = self;
        let track = |(pt, ssrc, rtx): (u8, u32, Option<Rtx>)| Track {
            pt: Pt(pt),
            ssrc: Ssrc(ssrc),
            rtx: rtx.map(|r| (Pt(r.payload_type), Ssrc(r.ssrc))),
        };
        let kind = |k: &StreamAgreement| KindAgreement {
            send: track(k.send),
            receive: track(k.receive),
            nack: k.nack,
        };
        magpie_media::Agreement {
            audio: a.audio.as_ref().map(kind),
            video: a.video.as_ref().map(kind),
            fec: a.fec,
            red: a.red.map(|(send, receive)| RedAgreement {
                send: Pt(send),
                receive: Pt(receive),
            }),
            pli: a.pli,
            remote_capture_ext_id: a.remote_capture_ext_id,
            send_time_ext_id: a.send_time_ext_id,
            remote_send_time_ext_id: a.remote_send_time_ext_id,
            transport_seq_ext_id: a.transport_seq_ext_id,
            remote_transport_seq_ext_id: a.remote_transport_seq_ext_id,
            srtp: Some(srtp),
            video_fec: a.video_fec.map(|(send, receive)| FecAgreement {
                send_pt: Pt(send),
                receive_pt: Pt(receive),
            }),
        }
    }
}

fn stream(
    send: (u8, u32, Option<Rtx>),
    receive: (u8, u32, Option<Rtx>),
    nack: bool,
) -> StreamAgreement {
    let rtx_both = send.2.is_some() && receive.2.is_some() && nack;
    let keep = |(pt, ssrc, rtx): (u8, u32, Option<Rtx>)| (pt, ssrc, rtx.filter(|_| rtx_both));
    StreamAgreement {
        send: keep(send),
        receive: keep(receive),
        nack,
    }
}

#[cfg(test)]
mod tests {
    use magpie_media::srtp::exchange::KeyPair;
    use magpie_media::srtp::{MasterKey, SrtpKeys};

    use super::*;

    fn description(name: &str, ssrc_base: u32, video: bool) -> SessionDescription {
        SessionDescription {
            version: VERSION,
            key: KeyPair::from_random([name.len() as u8; 32]).public(),
            candidates: vec![Candidate::host("127.0.0.1:5000".parse().unwrap())],
            audio: Some(AudioDescription {
                codec: "opus".into(),
                payload_type: 111,
                clock_rate: 48_000,
                channels: 1,
                frame_ms: 20,
                ssrc: ssrc_base,
                fec: true,
                dtx: false,
                nack: true,
                rtx: Some(Rtx {
                    payload_type: 112,
                    ssrc: ssrc_base + 1,
                }),
                marker_epoch_us: None,
                red: Some(110),
            }),
            video: video.then(|| VideoDescription {
                codec: "H264".into(),
                payload_type: 96,
                clock_rate: 90_000,
                profile_level_id: "42e01f".into(),
                packetization_mode: 1,
                ssrc: ssrc_base + 2,
                nack: true,
                pli: true,
                rtx: Some(Rtx {
                    payload_type: 97,
                    ssrc: ssrc_base + 3,
                }),
                width: 640,
                height: 480,
                fps: 30,
                fec: Some(118),
            }),
            abs_capture_time_id: 1,
            abs_send_time_id: None,
            transport_cc_id: None,
        }
    }

    #[test]
    fn the_documented_example_is_valid() {
        let example: String = include_str!("offer.rs")
            .lines()
            .skip_while(|l| !l.starts_with("//! ```json"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| l.trim_start_matches("//!"))
            .collect();
        let offer: SessionDescription = serde_json::from_str(&example).unwrap();
        offer.validate().unwrap();
        assert!(offer.video.is_some());
    }

    #[test]
    fn a_description_survives_json() {
        let offer = description("alice", 10, true);
        let json = serde_json::to_value(&offer).unwrap();
        let back: SessionDescription = serde_json::from_value(json).unwrap();
        assert_eq!(back, offer);
    }

    #[test]
    fn features_are_on_only_when_both_sides_have_them() {
        let mut offer = description("alice", 10, true);
        offer.video.as_mut().unwrap().nack = false;
        offer.audio.as_mut().unwrap().fec = false;
        let answer = description("bob", 20, true).answer(&offer).unwrap();
        assert!(!answer.video.as_ref().unwrap().nack);
        assert_eq!(answer.video.as_ref().unwrap().rtx, None);
        assert!(!answer.audio.as_ref().unwrap().fec);
        assert!(answer.audio.as_ref().unwrap().nack);

        let at_alice = Agreement::new(&offer, &answer).unwrap();
        let at_bob = Agreement::new(&answer, &offer).unwrap();
        let (a_video, b_video) = (at_alice.video.unwrap(), at_bob.video.unwrap());
        assert!(!a_video.nack && !b_video.nack);
        assert_eq!(a_video.send, b_video.receive);
        assert_eq!(a_video.receive, b_video.send);
        assert!(!at_alice.fec && !at_bob.fec);
        assert!(
            at_alice.audio.unwrap().send.2.is_some(),
            "audio RTX stays on"
        );
    }

    #[test]
    fn an_audio_only_offer_gets_an_audio_only_answer() {
        let offer = description("alice", 10, false);
        let answer = description("bob", 20, true).answer(&offer).unwrap();
        assert!(answer.video.is_none());
        let agreement = Agreement::new(&answer, &offer).unwrap();
        assert!(agreement.audio.is_some() && agreement.video.is_none());
    }

    #[test]
    fn no_media_in_common_is_an_error() {
        let mut offer = description("alice", 10, false);
        offer.audio = None;
        offer.video = description("alice", 10, true).video;
        let mut mine = description("bob", 20, false);
        mine.video = None;
        assert_eq!(mine.answer(&offer), Err(Error::NothingInCommon));
    }

    fn refused(mutate: impl Fn(&mut SessionDescription), what: &str) {
        let mut bad = description("alice", 10, true);
        mutate(&mut bad);
        let err = bad.validate().unwrap_err();
        assert!(err.to_string().contains(what), "{what}: {err}");
    }

    #[test]
    fn forged_or_broken_descriptions_are_refused() {
        refused(|d| d.version = 1, "version 1");
        refused(|d| d.version = 2, "version 2");
        refused(
            |d| d.candidates = vec![Candidate::host("0.0.0.0:5".parse().unwrap())],
            "candidates",
        );
        refused(
            |d| d.candidates = vec![Candidate::host("224.0.0.1:5".parse().unwrap())],
            "candidates",
        );
        let many = vec![Candidate::host("127.0.0.1:5".parse().unwrap()); MAX_CANDIDATES + 1];
        refused(|d| d.candidates = many.clone(), "candidates");
        refused(|d| d.audio.as_mut().unwrap().codec = "g711".into(), "g711");
        refused(|d| d.audio.as_mut().unwrap().frame_ms = 15, "frame_ms");
        refused(
            |d| d.audio.as_mut().unwrap().payload_type = 72,
            "payload_type",
        );
        refused(
            |d| d.video.as_mut().unwrap().payload_type = 111,
            "payload_type",
        );
        refused(|d| d.video.as_mut().unwrap().ssrc = 10, "ssrc");
        refused(|d| d.video.as_mut().unwrap().width = 641, "video.width");
        refused(|d| d.video.as_mut().unwrap().fps = 0, "video.fps");
        refused(|d| d.abs_capture_time_id = 15, "abs_capture_time_id");
        // RTX SSRCs must be distinct from the media SSRCs and from each other.
        refused(
            |d| d.audio.as_mut().unwrap().rtx.as_mut().unwrap().ssrc = 10,
            "ssrc",
        );
        refused(
            |d| d.video.as_mut().unwrap().rtx.as_mut().unwrap().ssrc = 12,
            "ssrc",
        );
        refused(
            |d| d.video.as_mut().unwrap().rtx.as_mut().unwrap().ssrc = 11,
            "ssrc",
        );
        description("alice", 10, true).validate().unwrap();
    }

    #[test]
    fn candidates_may_come_later_but_untyped_ones_are_refused() {
        let mut offer = description("alice", 10, false);
        offer.candidates.clear();
        offer.validate().unwrap();
        let mut json = serde_json::to_value(description("alice", 10, false)).unwrap();
        json["candidates"] = serde_json::json!(["127.0.0.1:5000"]);
        assert!(serde_json::from_value::<SessionDescription>(json).is_err());
    }

    #[test]
    fn a_description_without_a_well_formed_key_does_not_parse() {
        let good = serde_json::to_value(description("alice", 10, true)).unwrap();
        for key in [
            serde_json::json!("abc"),
            serde_json::json!(7),
            serde_json::Value::Null,
        ] {
            let mut json = good.clone();
            json["key"] = key;
            assert!(serde_json::from_value::<SessionDescription>(json).is_err());
        }
        let mut json = good;
        json.as_object_mut().unwrap().remove("key");
        assert!(serde_json::from_value::<SessionDescription>(json).is_err());
    }

    #[test]
    fn the_canonical_form_survives_the_servers_json_round_trip() {
        // The server passes the description on as a JSON value (keys may come out in
        // another order): the receiver's canonical bytes are the sender's.
        let offer = description("alice", 10, true);
        let carried: serde_json::Value = serde_json::to_value(&offer).unwrap();
        let text = serde_json::to_string(&carried).unwrap();
        let received: SessionDescription = serde_json::from_str(&text).unwrap();
        assert_eq!(canonical(&received), canonical(&offer));
    }

    #[test]
    fn a_version_1_description_without_rtx_ssrcs_is_refused() {
        let mut json = serde_json::to_value(description("alice", 10, true)).unwrap();
        json["version"] = 1.into();
        json["audio"]["rtx"] = serde_json::json!({"payload_type": 112});
        assert!(serde_json::from_value::<SessionDescription>(json).is_err());
    }

    #[test]
    fn the_core_agreement_names_both_sides_rtx_ssrcs_and_the_peers_extension_id() {
        let offer = description("alice", 10, true);
        let mut answer = description("bob", 20, true).answer(&offer).unwrap();
        answer.abs_capture_time_id = 5;
        let keys = SrtpKeys {
            send: MasterKey::from_bytes([1; 28]),
            receive: MasterKey::from_bytes([2; 28]),
        };
        let at_alice = Agreement::new(&offer, &answer).unwrap().media(keys);
        let at_bob = Agreement::new(&answer, &offer)
            .unwrap()
            .media(keys.mirrored());
        assert_eq!(at_alice.srtp, Some(keys));
        let audio = at_alice.audio.unwrap();
        assert_eq!(audio.send.ssrc, Ssrc(10));
        assert_eq!(audio.send.rtx, Some((Pt(112), Ssrc(11))));
        assert_eq!(audio.receive.rtx, Some((Pt(112), Ssrc(21))));
        assert_eq!(
            at_alice.video.unwrap().receive.rtx,
            Some((Pt(97), Ssrc(23)))
        );
        assert_eq!(at_alice.audio.unwrap().send, at_bob.audio.unwrap().receive);
        assert_eq!(at_alice.video.unwrap().receive, at_bob.video.unwrap().send);
        assert!(at_alice.audio.unwrap().nack && at_alice.pli && at_alice.fec);
        // Each side reads the extension id the *other* side writes.
        assert_eq!(at_alice.remote_capture_ext_id, 5);
        assert_eq!(at_bob.remote_capture_ext_id, 1);
        // Neither estimates: no send times either way.
        assert_eq!(at_alice.send_time_ext_id, None);
        assert_eq!(at_alice.remote_send_time_ext_id, None);
    }

    /// What the media core is told on each side of `offer` and `answer`.
    fn media_both_ways(
        offer: &SessionDescription,
        answer: &SessionDescription,
    ) -> (magpie_media::Agreement, magpie_media::Agreement) {
        let keys = SrtpKeys {
            send: MasterKey::from_bytes([1; 28]),
            receive: MasterKey::from_bytes([2; 28]),
        };
        (
            Agreement::new(offer, answer).unwrap().media(keys),
            Agreement::new(answer, offer).unwrap().media(keys),
        )
    }

    #[test]
    fn send_times_go_to_a_peer_that_asked_for_them_in_the_id_it_named() {
        let mut offer = description("alice", 10, true);
        offer.abs_send_time_id = Some(2);
        let answer = description("bob", 20, true).answer(&offer).unwrap();
        let (at_alice, at_bob) = media_both_ways(&offer, &answer);
        // Alice estimates: Bob stamps in her id 2 and she reads it; not the other way.
        assert_eq!(at_bob.send_time_ext_id, Some(2));
        assert_eq!(at_alice.remote_send_time_ext_id, Some(2));
        assert_eq!(at_alice.send_time_ext_id, None);
        assert_eq!(at_bob.remote_send_time_ext_id, None);
        // An id the description's own capture times use, or outside the one-byte
        // form, is refused; an older description without the field parses to none.
        offer.abs_send_time_id = Some(1);
        assert!(matches!(
            offer.validate(),
            Err(Error::Invalid("abs_send_time_id"))
        ));
        offer.abs_send_time_id = Some(15);
        assert!(matches!(
            offer.validate(),
            Err(Error::Invalid("abs_send_time_id"))
        ));
        let mut json = serde_json::to_value(description("carol", 30, true)).unwrap();
        json.as_object_mut().unwrap().remove("abs_send_time_id");
        let old: SessionDescription = serde_json::from_value(json).unwrap();
        assert_eq!(old.abs_send_time_id, None);
        // A peer whose capture times use the id we asked for sends us no send times.
        offer.abs_send_time_id = Some(2);
        let mut clash = description("dave", 40, true).answer(&offer).unwrap();
        clash.abs_capture_time_id = 2;
        let at_alice = Agreement::new(&offer, &clash).unwrap();
        assert_eq!(at_alice.remote_send_time_ext_id, None);
    }

    #[test]
    fn transport_wide_numbers_go_to_a_peer_that_asked_for_them() {
        let mut offer = description("alice", 10, true);
        offer.abs_send_time_id = Some(2);
        offer.transport_cc_id = Some(3);
        let answer = description("bob", 20, true).answer(&offer).unwrap();
        let (at_alice, at_bob) = media_both_ways(&offer, &answer);
        // Alice asked: Bob numbers his packets in her id 3, she sends him feedback.
        assert_eq!(at_bob.transport_seq_ext_id, Some(3));
        assert_eq!(at_alice.remote_transport_seq_ext_id, Some(3));
        assert_eq!(at_alice.transport_seq_ext_id, None);
        assert_eq!(at_bob.remote_transport_seq_ext_id, None);
        // Its id may not be one of the description's other two, nor outside 1..=14.
        for bad in [1, 2, 15] {
            offer.transport_cc_id = Some(bad);
            assert!(matches!(
                offer.validate(),
                Err(Error::Invalid("transport_cc_id"))
            ));
        }
        // An older description has none.
        let mut json = serde_json::to_value(description("carol", 30, true)).unwrap();
        json.as_object_mut().unwrap().remove("transport_cc_id");
        let old: SessionDescription = serde_json::from_value(json).unwrap();
        assert_eq!(old.transport_cc_id, None);
    }

    #[test]
    fn redundancy_is_agreed_only_when_both_offer_it_and_an_old_peer_lacks_it() {
        let offer = description("alice", 10, false);
        let mut bob = description("bob", 20, false);
        bob.audio.as_mut().unwrap().red = Some(100);
        let answer = bob.clone().answer(&offer).unwrap();
        let keys = SrtpKeys {
            send: MasterKey::from_bytes([1; 28]),
            receive: MasterKey::from_bytes([2; 28]),
        };
        let at_alice = Agreement::new(&offer, &answer).unwrap().media(keys);
        let red = at_alice.red.unwrap();
        assert_eq!((red.send, red.receive), (Pt(110), Pt(100)));
        // A description without the field (an older client) offers none.
        let mut json = serde_json::to_value(&offer).unwrap();
        json["audio"].as_object_mut().unwrap().remove("red");
        let old: SessionDescription = serde_json::from_value(json).unwrap();
        assert_eq!(old.audio.as_ref().unwrap().red, None);
        let answer = bob.answer(&old).unwrap();
        assert_eq!(answer.audio.as_ref().unwrap().red, None);
        assert_eq!(Agreement::new(&old, &answer).unwrap().red, None);
        // Its payload type may not collide with another.
        refused(
            |d| d.audio.as_mut().unwrap().red = Some(111),
            "payload_type",
        );
        refused(|d| d.audio.as_mut().unwrap().red = Some(72), "payload_type");
    }

    #[test]
    fn video_fec_is_agreed_only_when_both_offer_it_with_rtx() {
        let offer = description("alice", 10, true);
        let mut bob = description("bob", 20, true);
        bob.video.as_mut().unwrap().fec = Some(119);
        let answer = bob.clone().answer(&offer).unwrap();
        let keys = SrtpKeys {
            send: MasterKey::from_bytes([1; 28]),
            receive: MasterKey::from_bytes([2; 28]),
        };
        let at_alice = Agreement::new(&offer, &answer).unwrap().media(keys);
        let fec = at_alice.video_fec.unwrap();
        assert_eq!((fec.send_pt, fec.receive_pt), (Pt(118), Pt(119)));
        // An older peer offers none: no FEC either way.
        let mut old = serde_json::to_value(description("carol", 30, true)).unwrap();
        old["video"].as_object_mut().unwrap().remove("fec");
        let old: SessionDescription = serde_json::from_value(old).unwrap();
        let answer = bob.clone().answer(&old).unwrap();
        assert_eq!(answer.video.as_ref().unwrap().fec, None);
        assert_eq!(Agreement::new(&old, &answer).unwrap().video_fec, None);
        // FEC rides on the RTX SSRC: without RTX it is refused.
        let mut bad = description("dave", 40, true);
        bad.video.as_mut().unwrap().rtx = None;
        assert_eq!(bad.validate(), Err(Error::Invalid("video.fec")));
    }
}
