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
//! ```json
//! {
//!   "version": 2,
//!   "ice": {"ufrag": "Xk3f", "pwd": "q1w2e3r4t5y6u7i8o9p0as"},
//!   "candidates": ["192.168.1.20:50432", "127.0.0.1:50432"],
//!   "audio": {"codec": "opus", "payload_type": 111, "clock_rate": 48000, "channels": 1,
//!             "frame_ms": 20, "ssrc": 2914711093, "fec": true, "dtx": false,
//!             "nack": true, "rtx": {"payload_type": 112, "ssrc": 2914711094},
//!             "marker_epoch_us": 1795560000000000},
//!   "video": {"codec": "H264", "payload_type": 96, "clock_rate": 90000,
//!             "profile_level_id": "42e01f", "packetization_mode": 1,
//!             "ssrc": 3735928559, "nack": true, "pli": true,
//!             "rtx": {"payload_type": 97, "ssrc": 3735928560},
//!             "width": 640, "height": 480, "fps": 30},
//!   "abs_capture_time_id": 1
//! }
//! ```

use std::net::SocketAddr;

use magpie_media::ice::Credentials;
use magpie_media::types::{Pt, Ssrc};
use magpie_media::{FecAgreement, KindAgreement, Track};
use serde::{Deserialize, Serialize};

/// The version of this format; a peer with another version is refused with a clear error.
/// Version 2: the RTX stream carries its SSRC (the receiver no longer learns it from
/// the first retransmission, which anyone could send).
pub const VERSION: u32 = 2;
/// Candidates accepted at most: a machine with more interfaces than this lists the first.
pub const MAX_CANDIDATES: usize = 16;

/// One side's description of its media.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionDescription {
    /// [`VERSION`].
    pub version: u32,
    /// The credential for connectivity checks.
    pub ice: Credentials,
    /// Where this side's media socket can be reached.
    pub candidates: Vec<SocketAddr>,
    /// The audio stream this side sends and receives; `None` for no audio.
    pub audio: Option<AudioDescription>,
    /// The video stream this side sends and receives; `None` for an audio-only call.
    pub video: Option<VideoDescription>,
    /// The RTP header extension id of abs-capture-time, which carries each frame's
    /// capture time so the receiver can measure latency.
    pub abs_capture_time_id: u8,
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
        let ice = &self.ice;
        // RFC 8445 §5.3: ufrag at least 4 characters, password at least 22.
        if !(4..=256).contains(&ice.ufrag.len()) || ice.ufrag.contains(':') {
            return Err(Error::Invalid("ice.ufrag"));
        }
        if !(22..=256).contains(&ice.pwd.len()) {
            return Err(Error::Invalid("ice.pwd"));
        }
        if self.candidates.is_empty() || self.candidates.len() > MAX_CANDIDATES {
            return Err(Error::Invalid("candidates"));
        }
        if self
            .candidates
            .iter()
            .any(|c| c.port() == 0 || c.ip().is_unspecified())
        {
            return Err(Error::Invalid("candidates"));
        }
        if !(1..=14).contains(&self.abs_capture_time_id) {
            return Err(Error::Invalid("abs_capture_time_id"));
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
    /// Keyframe requests, on when both support them.
    pub pli: bool,
    /// The header extension id the peer puts abs-capture-time in.
    pub remote_capture_ext_id: u8,
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
            pli,
            remote_capture_ext_id: remote.abs_capture_time_id,
            video_fec,
        })
    }
}

impl From<&Agreement> for magpie_media::Agreement {
    /// What the media session needs of the agreement: the peer's streams it admits, ours
    /// it sends, and the features both have.
    fn from(a: &Agreement) -> Self {
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
        Self {
            audio: a.audio.as_ref().map(kind),
            video: a.video.as_ref().map(kind),
            fec: a.fec,
            pli: a.pli,
            remote_capture_ext_id: a.remote_capture_ext_id,
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
    use super::*;

    fn description(name: &str, ssrc_base: u32, video: bool) -> SessionDescription {
        SessionDescription {
            version: VERSION,
            ice: Credentials {
                ufrag: format!("{name}frag"),
                pwd: format!("{name}-password-twenty-two"),
            },
            candidates: vec!["127.0.0.1:5000".parse().unwrap()],
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
        refused(|d| d.ice.pwd = "short".into(), "ice.pwd");
        refused(|d| d.ice.ufrag = "a:bc".into(), "ice.ufrag");
        refused(|d| d.candidates.clear(), "candidates");
        refused(
            |d| d.candidates = vec!["0.0.0.0:5".parse().unwrap()],
            "candidates",
        );
        let many = vec!["127.0.0.1:5".parse().unwrap(); MAX_CANDIDATES + 1];
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
        let at_alice = magpie_media::Agreement::from(&Agreement::new(&offer, &answer).unwrap());
        let at_bob = magpie_media::Agreement::from(&Agreement::new(&answer, &offer).unwrap());
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
    }

    #[test]
    fn video_fec_is_agreed_only_when_both_offer_it_with_rtx() {
        let offer = description("alice", 10, true);
        let mut bob = description("bob", 20, true);
        bob.video.as_mut().unwrap().fec = Some(119);
        let answer = bob.clone().answer(&offer).unwrap();
        let at_alice = magpie_media::Agreement::from(&Agreement::new(&offer, &answer).unwrap());
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
