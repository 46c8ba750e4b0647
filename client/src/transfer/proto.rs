//! The messages of a file transfer, independent of what carries them.
//!
//! A transfer starts with an offer ([`TransferOffer`]: the files, each with its name,
//! size, SHA-256 and, for an image, its format and dimensions) and an answer
//! ([`TransferAnswer`]: for each file, accepted from an offset, or declined). Over a
//! signaling server they travel as the `offer` of `invite` and the `answer` of `accept`,
//! passed on untouched as call descriptions are; any other channel (a direct LAN
//! connection) can carry the same JSON with [`TransferOffer::to_bytes`] and
//! [`TransferOffer::parse`]. Like a call's description, each carries its side's X25519
//! key and candidates, and now also the SHA-256 fingerprint of the self-signed
//! certificate its QUIC endpoint presents: both descriptions are hashed into the key
//! exchange's transcript, so the connectivity-check credentials and the safety code bind
//! the fingerprints, and each QUIC endpoint accepts only the certificate named in the
//! other's description.
//!
//! Then, on the QUIC connection, one bidirectional stream per accepted file: the sender
//! writes a [`StreamHeader`] (which file, from which offset, how many bytes follow) and
//! the bytes, and finishes the stream; the receiver answers one [`Verdict`] byte once
//! it has checked the whole file's SHA-256.
//!
//! ```json
//! {"version": 1, "key": "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a",
//!  "candidates": [{"addr": "192.168.1.20:50432", "type": "host"}],
//!  "fingerprint": "2A:75:0B:1C:5E:87:16:1D:9F:EA:91:6A:55:13:8C:3B:42:D7:0D:2C:31:44:5D:03:9E:E8:60:0A:8D:F1:12:70",
//!  "files": [{"name": "photo.jpg", "size": 1200000,
//!             "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
//!             "image": {"format": "jpeg", "width": 1920, "height": 1080}}]}
//! ```

use std::fmt;

use magpie_media::ice::Candidate;
use magpie_media::srtp::exchange::PublicKey;
use magpie_signaling::proto::FileMeta;
pub use magpie_signaling::proto::{
    FileName as SafeName, ImageFormat, ImageInfo, InvalidFileName, Sha256Digest,
};
use magpie_signaling::tls::Fingerprint;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The version of these messages; another is refused with a clear error.
pub const VERSION: u32 = 1;
/// Files one offer may carry.
pub const MAX_FILES: usize = 64;
/// The ALPN protocol of the QUIC connection.
pub const ALPN: &[u8] = b"magpie-file/1";

/// Why a message or a name is refused.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// Not JSON of the expected shape.
    #[error("not a file offer or answer: {0}")]
    Json(#[from] serde_json::Error),
    /// Another version of these messages.
    #[error("the peer speaks file transfer version {0}, this client version {VERSION}")]
    Version(u32),
    /// A file name that could write outside the folder, or hide what it is.
    #[error(transparent)]
    Name(#[from] InvalidFileName),
    /// A field out of its range.
    #[error("the peer's file transfer message has an invalid {0}")]
    Invalid(&'static str),
    /// The candidates cannot be used.
    #[error(transparent)]
    Candidates(#[from] crate::offer::Error),
}

/// A certificate fingerprint as it travels: OpenSSL's colon-separated hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertFingerprint(pub Fingerprint);

impl Serialize for CertFingerprint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for CertFingerprint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map(Self).map_err(serde::de::Error::custom)
    }
}

/// One file offered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    /// Its name, without any directory.
    pub name: SafeName,
    /// Its size in bytes.
    pub size: u64,
    /// The SHA-256 of its content, which the receiver checks at the end.
    pub sha256: Sha256Digest,
    /// Present for a PNG, JPEG or GIF.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageInfo>,
}

impl FileInfo {
    /// How a chat line describes it: `photo.jpg (1.2 MB, image 1920x1080)`.
    pub fn describe(&self) -> String {
        match self.image {
            Some(i) => format!(
                "{} ({}, image {}x{})",
                self.name,
                human_size(self.size),
                i.width,
                i.height
            ),
            None => format!("{} ({})", self.name, human_size(self.size)),
        }
    }
}

impl From<FileMeta> for FileInfo {
    fn from(meta: FileMeta) -> Self {
        let FileMeta {
            name,
            size,
            sha256,
            image,
        } = meta;
        Self {
            name,
            size,
            sha256,
            image,
        }
    }
}

impl From<FileInfo> for FileMeta {
    fn from(info: FileInfo) -> Self {
        let FileInfo {
            name,
            size,
            sha256,
            image,
        } = info;
        Self {
            name,
            size,
            sha256,
            image,
        }
    }
}

/// Bytes as a person reads them: `512 B`, `1.2 MB`, `3.4 GB` (powers of 1000).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 999.95 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The sender's offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferOffer {
    /// [`VERSION`].
    pub version: u32,
    /// The sender's ephemeral X25519 public key for this transfer.
    pub key: PublicKey,
    /// Where the sender's socket can be reached.
    pub candidates: Vec<Candidate>,
    /// The SHA-256 of the certificate the sender's QUIC endpoint presents.
    pub fingerprint: CertFingerprint,
    /// The files, in the order they are sent.
    pub files: Vec<FileInfo>,
}

/// What the receiver says about one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "lowercase")]
pub enum Reply {
    /// Send it, starting at `offset` (the bytes before it are already here).
    Accept {
        /// Bytes the receiver already has from an earlier, broken transfer.
        offset: u64,
    },
    /// Do not send it.
    Decline,
}

/// The receiver's answer: one reply per offered file, in the offer's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferAnswer {
    /// [`VERSION`].
    pub version: u32,
    /// The receiver's ephemeral X25519 public key.
    pub key: PublicKey,
    /// Where the receiver's socket can be reached.
    pub candidates: Vec<Candidate>,
    /// The SHA-256 of the certificate the receiver's QUIC endpoint presents.
    pub fingerprint: CertFingerprint,
    /// One per offered file.
    pub replies: Vec<Reply>,
}

impl TransferOffer {
    /// Whether a description carried by signaling is a file offer rather than a call's.
    pub fn is_offer(value: &serde_json::Value) -> bool {
        value.get("files").is_some()
    }

    /// Parses and checks an offer from the peer.
    pub fn parse(bytes: &[u8]) -> Result<Self, ProtoError> {
        let offer: Self = serde_json::from_slice(bytes)?;
        offer.validate()?;
        Ok(offer)
    }

    /// [`TransferOffer::parse`] of a JSON value (as signaling hands it over).
    pub fn from_value(value: serde_json::Value) -> Result<Self, ProtoError> {
        let offer: Self = serde_json::from_value(value)?;
        offer.validate()?;
        Ok(offer)
    }

    /// Checks what serde cannot: the version, the counts and the candidates.
    pub fn validate(&self) -> Result<(), ProtoError> {
        if self.version != VERSION {
            return Err(ProtoError::Version(self.version));
        }
        if self.files.is_empty() || self.files.len() > MAX_FILES {
            return Err(ProtoError::Invalid("files"));
        }
        crate::offer::validate_candidates(&self.candidates)?;
        Ok(())
    }

    /// The canonical bytes: what both sides hash into the transcript and what another
    /// channel carries.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("offers serialize")
    }

    /// The total size of the files.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

impl TransferAnswer {
    /// Parses and checks an answer to `offer`.
    pub fn parse(bytes: &[u8], offer: &TransferOffer) -> Result<Self, ProtoError> {
        let answer: Self = serde_json::from_slice(bytes)?;
        answer.validate(offer)?;
        Ok(answer)
    }

    /// [`TransferAnswer::parse`] of a JSON value.
    pub fn from_value(value: serde_json::Value, offer: &TransferOffer) -> Result<Self, ProtoError> {
        let answer: Self = serde_json::from_value(value)?;
        answer.validate(offer)?;
        Ok(answer)
    }

    /// Checks the answer against the offer: a reply per file, offsets within the files.
    pub fn validate(&self, offer: &TransferOffer) -> Result<(), ProtoError> {
        if self.version != VERSION {
            return Err(ProtoError::Version(self.version));
        }
        if self.replies.len() != offer.files.len() {
            return Err(ProtoError::Invalid("replies"));
        }
        let beyond = |(reply, file): (&Reply, &FileInfo)| matches!(reply, Reply::Accept { offset } if *offset > file.size);
        if self.replies.iter().zip(&offer.files).any(beyond) {
            return Err(ProtoError::Invalid("offset"));
        }
        crate::offer::validate_candidates(&self.candidates)?;
        Ok(())
    }

    /// The canonical bytes (see [`TransferOffer::to_bytes`]).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("answers serialize")
    }
}

/// What starts each file's stream: which file, from where, how much follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamHeader {
    /// The file's index in the offer.
    pub index: u16,
    /// The offset of the first byte that follows.
    pub offset: u64,
    /// How many bytes follow.
    pub length: u64,
}

/// The stream header's magic, so a stray stream is told from ours.
const HEADER_MAGIC: [u8; 4] = *b"MGF1";

impl StreamHeader {
    /// Its size on the wire.
    pub const LEN: usize = 4 + 2 + 8 + 8;

    /// The header's bytes.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[..4].copy_from_slice(&HEADER_MAGIC);
        out[4..6].copy_from_slice(&self.index.to_be_bytes());
        out[6..14].copy_from_slice(&self.offset.to_be_bytes());
        out[14..22].copy_from_slice(&self.length.to_be_bytes());
        out
    }

    /// Parses a header and checks it against the offer and what was accepted: a known
    /// file, the offset the receiver asked for, exactly the rest of the file.
    pub fn parse(
        bytes: &[u8],
        offer: &TransferOffer,
        replies: &[Reply],
    ) -> Result<Self, ProtoError> {
        let bytes: &[u8; Self::LEN] = bytes
            .get(..Self::LEN)
            .and_then(|b| b.try_into().ok())
            .ok_or(ProtoError::Invalid("stream header"))?;
        if bytes[..4] != HEADER_MAGIC {
            return Err(ProtoError::Invalid("stream header"));
        }
        let header = Self {
            index: u16::from_be_bytes([bytes[4], bytes[5]]),
            offset: u64::from_be_bytes(bytes[6..14].try_into().expect("8 bytes")),
            length: u64::from_be_bytes(bytes[14..22].try_into().expect("8 bytes")),
        };
        let file = offer
            .files
            .get(usize::from(header.index))
            .ok_or(ProtoError::Invalid("stream file index"))?;
        match replies.get(usize::from(header.index)) {
            Some(Reply::Accept { offset }) if *offset == header.offset => {}
            Some(Reply::Accept { .. }) => return Err(ProtoError::Invalid("stream offset")),
            _ => return Err(ProtoError::Invalid("stream for a declined file")),
        }
        if header.offset.checked_add(header.length) != Some(file.size) {
            return Err(ProtoError::Invalid("stream length"));
        }
        Ok(header)
    }
}

/// The receiver's last word on a file's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Stored, and its SHA-256 matched.
    Stored = 0,
    /// The whole file's SHA-256 did not match the offer: the partial file was removed.
    HashMismatch = 1,
    /// The receiver could not write it (a full disk): the partial file is kept.
    WriteFailed = 2,
    /// The stream broke the protocol.
    Refused = 3,
}

impl Verdict {
    /// Reads a verdict byte.
    pub fn from_byte(byte: u8) -> Option<Self> {
        [
            Self::Stored,
            Self::HashMismatch,
            Self::WriteFailed,
            Self::Refused,
        ]
        .into_iter()
        .find(|v| *v as u8 == byte)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Stored => "stored and verified",
            Self::HashMismatch => "the SHA-256 did not match",
            Self::WriteFailed => "the receiver could not write it (full disk?)",
            Self::Refused => "the receiver refused the stream",
        })
    }
}

#[cfg(test)]
mod tests {
    use magpie_media::srtp::exchange::KeyPair;

    use super::*;

    fn offer() -> TransferOffer {
        TransferOffer {
            version: VERSION,
            key: KeyPair::from_random([3; 32]).public(),
            candidates: vec![Candidate::host("127.0.0.1:5000".parse().unwrap())],
            fingerprint: CertFingerprint(Fingerprint::of(b"cert")),
            files: vec![
                FileInfo {
                    name: SafeName::parse("photo.jpg").unwrap(),
                    size: 1_200_000,
                    sha256: Sha256Digest([7; 32]),
                    image: Some(ImageInfo {
                        format: ImageFormat::Jpeg,
                        width: 1920,
                        height: 1080,
                    }),
                },
                FileInfo {
                    name: SafeName::parse("notes.txt").unwrap(),
                    size: 10,
                    sha256: Sha256Digest([8; 32]),
                    image: None,
                },
            ],
        }
    }

    #[test]
    fn the_documented_example_parses() {
        let example: String = include_str!("proto.rs")
            .lines()
            .skip_while(|l| !l.starts_with("//! ```json"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| l.trim_start_matches("//!"))
            .collect();
        let offer = TransferOffer::parse(example.as_bytes()).unwrap();
        assert_eq!(
            offer.files[0].describe(),
            "photo.jpg (1.2 MB, image 1920x1080)"
        );
    }

    #[test]
    fn an_offer_and_an_answer_survive_their_bytes() {
        let offer = offer();
        assert_eq!(TransferOffer::parse(&offer.to_bytes()).unwrap(), offer);
        let answer = TransferAnswer {
            version: VERSION,
            key: KeyPair::from_random([4; 32]).public(),
            candidates: vec![],
            fingerprint: CertFingerprint(Fingerprint::of(b"other")),
            replies: vec![Reply::Accept { offset: 4096 }, Reply::Decline],
        };
        assert_eq!(
            TransferAnswer::parse(&answer.to_bytes(), &offer).unwrap(),
            answer
        );
        assert!(TransferOffer::is_offer(
            &serde_json::to_value(&offer).unwrap()
        ));
    }

    #[test]
    fn an_offer_with_a_bad_name_is_refused_when_parsed() {
        let mut json = serde_json::to_value(offer()).unwrap();
        json["files"][1]["name"] = "../../.bashrc".into();
        let err = TransferOffer::from_value(json).unwrap_err();
        assert!(err.to_string().contains("path separator"), "{err}");
    }

    #[test]
    fn bad_offers_and_answers_are_refused() {
        let mut o = offer();
        o.version = 2;
        assert!(matches!(o.validate(), Err(ProtoError::Version(2))));
        let mut o = offer();
        o.files.clear();
        assert!(o.validate().is_err());
        let o = offer();
        let answer = |replies| TransferAnswer {
            version: VERSION,
            key: KeyPair::from_random([4; 32]).public(),
            candidates: vec![],
            fingerprint: CertFingerprint(Fingerprint::of(b"other")),
            replies,
        };
        assert!(answer(vec![Reply::Decline]).validate(&o).is_err());
        let beyond = vec![Reply::Accept { offset: 11 }, Reply::Decline];
        let mut swapped = beyond.clone();
        swapped.reverse();
        assert!(answer(swapped).validate(&o).is_err());
        assert!(
            answer(vec![Reply::Accept { offset: 1_200_000 }, Reply::Decline])
                .validate(&o)
                .is_ok()
        );
        let mut json = serde_json::to_value(offer()).unwrap();
        json["files"][0]["sha256"] = "zz".into();
        assert!(TransferOffer::from_value(json).is_err());
    }

    #[test]
    fn stream_headers_round_trip_and_are_checked_against_the_answer() {
        let o = offer();
        let replies = [Reply::Accept { offset: 100 }, Reply::Decline];
        let header = StreamHeader {
            index: 0,
            offset: 100,
            length: 1_200_000 - 100,
        };
        assert_eq!(
            StreamHeader::parse(&header.encode(), &o, &replies).unwrap(),
            header
        );
        let refused = |h: StreamHeader| StreamHeader::parse(&h.encode(), &o, &replies);
        assert!(
            refused(StreamHeader {
                offset: 0,
                ..header
            })
            .is_err()
        );
        assert!(
            refused(StreamHeader {
                length: 5,
                ..header
            })
            .is_err()
        );
        assert!(
            refused(StreamHeader {
                index: 1,
                offset: 0,
                length: 10
            })
            .is_err()
        );
        assert!(refused(StreamHeader { index: 9, ..header }).is_err());
        let overflow = StreamHeader {
            offset: u64::MAX,
            length: 2,
            ..header
        };
        assert!(
            StreamHeader::parse(
                &overflow.encode(),
                &o,
                &[Reply::Accept { offset: u64::MAX }]
            )
            .is_err()
        );
        assert!(StreamHeader::parse(&header.encode()[..10], &o, &replies).is_err());
        let mut bad_magic = header.encode();
        bad_magic[0] = b'X';
        assert!(StreamHeader::parse(&bad_magic, &o, &replies).is_err());
    }

    #[test]
    fn sizes_read_like_a_person_writes_them() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(999), "999 B");
        assert_eq!(human_size(1_200_000), "1.2 MB");
        assert_eq!(human_size(52_428_800), "52.4 MB");
        assert_eq!(human_size(999_990), "1.0 MB");
        assert_eq!(human_size(u64::MAX), "18446.7 PB");
    }

    #[test]
    fn verdicts_round_trip_through_their_byte() {
        for v in [
            Verdict::Stored,
            Verdict::HashMismatch,
            Verdict::WriteFailed,
            Verdict::Refused,
        ] {
            assert_eq!(Verdict::from_byte(v as u8), Some(v));
        }
        assert_eq!(Verdict::from_byte(200), None);
    }

    proptest::proptest! {
        /// Bytes from the network never panic the parsers: arbitrary bytes, and valid
        /// messages with bytes flipped, give a message or an error.
        #[test]
        fn arbitrary_bytes_never_panic_the_parsers(bytes in proptest::collection::vec(0u8..=255, 0..512)) {
            let o = offer();
            let _ = TransferOffer::parse(&bytes);
            let _ = TransferAnswer::parse(&bytes, &o);
            let replies = [Reply::Accept { offset: 0 }, Reply::Accept { offset: 3 }];
            let _ = StreamHeader::parse(&bytes, &o, &replies);
            let _ = SafeName::parse(&String::from_utf8_lossy(&bytes));
        }

        #[test]
        fn a_mutated_offer_parses_or_is_refused(at in 0usize..2000, byte in 0u8..=255) {
            let mut bytes = offer().to_bytes();
            let i = at % bytes.len();
            bytes[i] = byte;
            if let Ok(parsed) = TransferOffer::parse(&bytes) {
                for f in &parsed.files {
                    SafeName::parse(f.name.as_str()).unwrap();
                }
            }
        }
    }
}
