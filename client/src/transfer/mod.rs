//! Sending files peer to peer: over QUIC, on the UDP path the connectivity checks select
//! (direct, or through the TURN relay), with each side's certificate pinned by the
//! fingerprint in its offer or answer.
//!
//! - [`proto`]: the offer, the answer and the stream header, as typed values with their
//!   own parse and serialize, independent of what carries them (signaling, or a direct
//!   LAN channel).
//! - [`path`] and [`socket`]: the checks until a pair is selected, then that path as a
//!   socket for quinn (TURN wrapping included).
//! - [`quic`]: the identities, the pinning verifier, and the two ends of a transfer.
//! - [`store`]: the receiving folder: resumable partial files, no overwriting.
//! - [`progress`]: a bar with rate and ETA on a terminal, plain lines otherwise.
//!
//! One transfer, by either channel:
//!
//! ```text
//!  sender                                             receiver
//!  Side::new, offer(files)  ── TransferOffer ──▶      Side::new, Inbox::prepare each file
//!                           ◀── TransferAnswer ──     answer(replies: accept at offset | decline)
//!  Side::connect(Caller)     connectivity checks      Side::connect(Callee)
//!  quic::send               ═══ QUIC, pinned ═══▶     quic::receive
//! ```

pub mod path;
pub mod progress;
pub mod proto;
pub mod quic;
pub mod socket;
pub mod store;

use std::fs::File;
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use magpie_media::ice::turn::{TurnClient, TurnConfig};
use magpie_media::ice::{Candidate, CheckerConfig};
use magpie_media::netsim::NetSim;
use magpie_media::srtp::exchange::{KeyPair, Role, SafetyCode};
use sha2::{Digest, Sha256};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use self::proto::{
    CertFingerprint, FileInfo, ImageFormat, ImageInfo, Reply, SafeName, Sha256Digest,
    TransferAnswer, TransferOffer, VERSION,
};
use self::quic::QuicIdentity;
use self::socket::PathSocket;
use crate::engine::{self, now};

/// What went wrong before the bytes flowed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file to send cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file to send has a name the receiver would refuse, or is not a file.
    #[error("cannot send {0}: {1}")]
    NotSendable(std::path::PathBuf, String),
    /// The socket, candidates or relay.
    #[error(transparent)]
    Engine(#[from] engine::Error),
    /// The key exchange failed.
    #[error("the key exchange failed: {0}")]
    KeyExchange(#[from] magpie_media::srtp::exchange::ExchangeError),
    /// No path.
    #[error(transparent)]
    Path(#[from] path::PathError),
    /// QUIC.
    #[error(transparent)]
    Transfer(#[from] quic::TransferError),
}

/// One side of a transfer before the path is up: its socket and candidates, its
/// exchange key and its QUIC identity.
pub struct Side {
    socket: UdpSocket,
    keys: KeyPair,
    identity: QuicIdentity,
    candidates: Vec<Candidate>,
    turn: Option<TurnClient>,
    sim: Option<NetSim>,
    /// Only the relay may carry the transfer.
    relay_only: bool,
}

impl Side {
    /// Binds the socket at `bind` and gathers its candidates (with `stun`, the server
    /// reflexive one too; none but the relay's with `relay_only`).
    pub async fn new(
        bind: SocketAddr,
        stun: Option<SocketAddr>,
        relay_only: bool,
    ) -> Result<Self, Error> {
        let socket = UdpSocket::bind(bind)
            .await
            .map_err(|source| engine::Error::Bind { addr: bind, source })?;
        let candidates = engine::gather(&socket, stun, relay_only).await?;
        Ok(Self {
            socket,
            keys: KeyPair::from_random(rand::random()),
            identity: QuicIdentity::generate()?,
            candidates,
            turn: None,
            sim: None,
            relay_only,
        })
    }

    /// Impairs what this side sends once the path is up (`--sim`, as for calls: the
    /// labs add delay this way, kernel netem being absent).
    pub fn set_sim(&mut self, sim: NetSim) {
        self.sim = Some(sim);
    }

    /// Allocates on a TURN relay; returns the relay candidate, which joins this side's
    /// description when it is made after this.
    pub async fn allocate_relay(&mut self, config: TurnConfig) -> Result<Candidate, Error> {
        let (turn, candidate) = engine::allocate(&self.socket, config).await?;
        self.turn = Some(turn);
        self.candidates.push(candidate);
        Ok(candidate)
    }

    /// The sender's offer of `files`.
    pub fn offer(&self, files: Vec<FileInfo>) -> TransferOffer {
        TransferOffer {
            version: VERSION,
            key: self.keys.public(),
            candidates: self.candidates.clone(),
            fingerprint: CertFingerprint(self.identity.fingerprint()),
            files,
        }
    }

    /// The receiver's answer.
    pub fn answer(&self, replies: Vec<Reply>) -> TransferAnswer {
        TransferAnswer {
            version: VERSION,
            key: self.keys.public(),
            candidates: self.candidates.clone(),
            fingerprint: CertFingerprint(self.identity.fingerprint()),
            replies,
        }
    }

    /// Derives the checks' credentials and the safety code from both messages (exactly
    /// as exchanged), runs the checks, and returns the path as a socket for QUIC with
    /// this side's identity. The sender is the [`Role::Caller`] (it controls the checks).
    pub async fn connect(
        self,
        role: Role,
        offer: &TransferOffer,
        answer: &TransferAnswer,
        trickle: &mut mpsc::Receiver<Vec<Candidate>>,
    ) -> Result<Connected, Error> {
        let remote = match role {
            Role::Caller => (&answer.key, &answer.candidates),
            Role::Callee => (&offer.key, &offer.candidates),
        };
        let derived = self
            .keys
            .derive(role, remote.0, &offer.to_bytes(), &answer.to_bytes())?;
        let checker = CheckerConfig::new(derived.local_ice, derived.remote_ice, remote.1.clone())
            .set_controlling(role == Role::Caller)
            .set_direct(!self.relay_only)
            .build(now(), rand::random());
        if self.relay_only && self.turn.is_none() {
            return Err(engine::Error::NoRelay("no relay was allocated".into()).into());
        }
        let socket = path::establish(self.socket, checker, self.turn, trickle, self.sim).await?;
        Ok(Connected {
            socket,
            identity: self.identity,
            safety_code: derived.safety_code,
        })
    }
}

/// A side whose path is up.
pub struct Connected {
    /// The path, as a socket for QUIC.
    pub socket: Arc<PathSocket>,
    /// This side's QUIC identity (its fingerprint went into its message).
    pub identity: QuicIdentity,
    /// The code both people can compare.
    pub safety_code: SafetyCode,
}

/// Describes a file to offer: its name (checked as the receiver will), size, SHA-256,
/// and for a PNG, JPEG or GIF its dimensions.
pub fn describe_file(path: &Path) -> Result<FileInfo, Error> {
    let read_err = |source| Error::Read {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if !meta.is_file() {
        return Err(Error::NotSendable(
            path.to_owned(),
            "not a regular file".into(),
        ));
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::NotSendable(path.to_owned(), "the name is not UTF-8".into()))?;
    let name =
        SafeName::parse(name).map_err(|e| Error::NotSendable(path.to_owned(), e.to_string()))?;
    let mut file = File::open(path).map_err(read_err)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut head = Vec::new();
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(read_err)?;
        if n == 0 {
            break;
        }
        if head.len() < 16 {
            head.extend_from_slice(&buf[..n.min(16)]);
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok(FileInfo {
        name,
        size,
        sha256: Sha256Digest(hasher.finalize().into()),
        image: image_info(path, &head),
    })
}

/// The format from the magic bytes, and the dimensions from the header.
pub fn image_info(path: &Path, head: &[u8]) -> Option<ImageInfo> {
    let format = image_format(head)?;
    let size = imagesize::size(path).ok()?;
    Some(ImageInfo {
        format,
        width: u32::try_from(size.width).ok()?,
        height: u32::try_from(size.height).ok()?,
    })
}

/// PNG, JPEG or GIF, from a file's first bytes.
pub fn image_format(head: &[u8]) -> Option<ImageFormat> {
    if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(ImageFormat::Png)
    } else if head.starts_with(&[0xff, 0xd8, 0xff]) {
        Some(ImageFormat::Jpeg)
    } else if head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a") {
        Some(ImageFormat::Gif)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal PNG header: signature and IHDR with the given size.
    fn png(width: u32, height: u32) -> Vec<u8> {
        let mut b = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        b.extend_from_slice(&width.to_be_bytes());
        b.extend_from_slice(&height.to_be_bytes());
        b.extend_from_slice(&[8, 6, 0, 0, 0, 0, 0, 0, 0]);
        b
    }

    #[test]
    fn images_are_told_by_their_magic_bytes_and_show_their_size() {
        let dir = tempfile::tempdir().unwrap();
        let photo = dir.path().join("photo.png");
        std::fs::write(&photo, png(1920, 1080)).unwrap();
        let info = describe_file(&photo).unwrap();
        assert_eq!(
            info.image,
            Some(ImageInfo {
                format: ImageFormat::Png,
                width: 1920,
                height: 1080
            })
        );
        assert!(
            info.describe().ends_with("image 1920x1080)"),
            "{}",
            info.describe()
        );
        // The name says .jpg; the bytes say PNG: the bytes win.
        let lying = dir.path().join("lying.jpg");
        std::fs::write(&lying, png(2, 3)).unwrap();
        assert_eq!(
            describe_file(&lying).unwrap().image.unwrap().format,
            ImageFormat::Png
        );
        // A text file is no image, whatever its name.
        let text = dir.path().join("fake.gif");
        std::fs::write(&text, b"hello").unwrap();
        assert_eq!(describe_file(&text).unwrap().image, None);
        assert_eq!(
            image_format(&[0xff, 0xd8, 0xff, 0xe0]),
            Some(ImageFormat::Jpeg)
        );
        assert_eq!(image_format(b"GIF89a.."), Some(ImageFormat::Gif));
        assert_eq!(image_format(b"GIF"), None);
    }

    #[test]
    fn a_truncated_image_header_is_no_image_rather_than_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let cut = dir.path().join("cut.png");
        std::fs::write(&cut, &png(10, 10)[..12]).unwrap();
        assert_eq!(describe_file(&cut).unwrap().image, None);
    }

    #[test]
    fn a_file_is_described_by_its_hash_and_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.txt");
        std::fs::write(&path, b"abc").unwrap();
        let info = describe_file(&path).unwrap();
        assert_eq!(info.size, 3);
        assert_eq!(
            info.sha256.to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(
            describe_file(dir.path()).is_err(),
            "a directory is not sent"
        );
    }
}
