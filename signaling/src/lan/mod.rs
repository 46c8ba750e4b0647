//! The direct channel between two clients on one LAN, with no server between them.
//!
//! `magpie call NAME@lan` finds NAME by mDNS and opens a TCP connection to the control
//! listener NAME announced. Over it the two clients exchange what they would otherwise
//! exchange through the server (a call's offer and answer, hangup, chat, and later file
//! offers), as typed [`Message`]s. With no server to vouch for either side, the channel
//! authenticates itself:
//!
//! - Each client has a long-term **identity**: an Ed25519 key pair kept in its config
//!   directory ([`Identity`]). Its public half ([`IdentityKey`]) is what a peer
//!   remembers (trust on first use), and what mDNS announces a [`Fingerprint`] of.
//! - Each connection runs a handshake ([`Channel`]): fresh X25519 keys from both sides,
//!   HKDF-SHA256 over the transcript, then each side signs the transcript with its
//!   identity key (SIGMA-style: the signature binds the identity to this exchange's
//!   ephemeral keys). From then on every line is sealed with ChaCha20-Poly1305, one key
//!   a direction, the nonce a counter.
//! - A six-digit [`PairingCode`] comes out of the same exchange. The first time two
//!   people talk, they compare it (as with a call's safety code); a man in the middle
//!   holds two different exchanges and shows them two different codes. After that the
//!   peer's identity key is pinned and checked on every contact: a stranger cannot sign
//!   with it.
//! - The initiator **commits** to its hello before it sees the responder's (the
//!   responder gets a SHA-256 of it first, the hello itself last). Without that, a man in
//!   the middle could finish one side's handshake, then try a million keys of its own on
//!   the other until both codes matched. With it, neither of its two handshakes lets it
//!   choose its key after seeing the honest side's, so the codes agree by chance only,
//!   one time in a million.
//!
//! ```text
//! initiator -> responder  {"type":"commit","version":1,"hash":"<SHA-256 of hello_i>"}
//! responder -> initiator  {"type":"hello","version":1,"name":"bob","identity":"<hex>","ephemeral":"<hex>"}
//! initiator -> responder  hello_i (the line whose hash was committed to)
//! transcript = SHA-256("magpie lan v1" || u64be(len) || commit || u64be(len) || hello_r
//!                                     || u64be(len) || hello_i)     (lines as sent)
//! prk        = HKDF-Extract(salt = transcript, ikm = X25519(e_i, e_r))
//! keys       = HKDF-Expand(prk, "magpie lan initiator" | "magpie lan responder", 32)
//! code       = HKDF-Expand(prk, "magpie lan code", 4) mod 10^6
//! both       -> sealed {"type":"auth","signature": Ed25519(identity, label || transcript)}
//! then       -> sealed messages: {"type":"offer","description":{...}}, ...
//! ```
//!
//! A sealed line is base64 of ChaCha20-Poly1305 ciphertext and tag; the nonce is the
//! line's number in its direction. Every line is at most [`MAX_LINE`] bytes (the
//! [`LineCodec`](crate::codec::LineCodec) splits them), and every line is admitted or
//! refused in [`Channel::handle_input`], which counts refusals by reason
//! ([`Refusals`]). A refusal closes the channel: after a forged or garbled line the
//! stream cannot be trusted again.

mod handshake;

use std::fmt;
use std::str::FromStr;

use magpie_media::srtp::exchange::PublicKey;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use sha2::{Digest, Sha256};

pub use handshake::{Channel, Event, Peer};

/// The version of the direct channel; a peer with another is refused with a clear error.
pub const VERSION: u32 = 1;
/// The longest line either side accepts, newline excluded: a call's description (at most
/// 16 KiB as JSON) sealed and in base64 fits with room to spare.
pub const MAX_LINE: usize = 64 * 1024;
/// The mDNS service type clients announce themselves under.
pub const SERVICE_TYPE: &str = "_magpie._udp.local.";

/// `FromStr`, `Display` and serde for a 32-byte newtype: 64 lowercase hex digits, as an X25519
/// key is written.
macro_rules! hex32 {
    ($name:ident) => {
        impl FromStr for $name {
            type Err = KeyFieldError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let key: PublicKey = s.parse().map_err(|_| KeyFieldError)?;
                Ok(Self(*key.as_bytes()))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                PublicKey::from(self.0).fmt(f)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

hex32!(IdentityKey);
hex32!(Fingerprint);

/// A client's long-term LAN identity: an Ed25519 key pair.
#[derive(Clone)]
pub struct Identity {
    seed: [u8; 32],
    public: IdentityKey,
}

impl Identity {
    /// The identity whose private key is `seed` (32 random bytes the caller draws and
    /// keeps).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let pair = Ed25519KeyPair::from_seed_unchecked(&seed).expect("any 32 bytes are a seed");
        let mut public = [0; 32];
        public.copy_from_slice(pair.public_key().as_ref());
        Self {
            seed,
            public: IdentityKey(public),
        }
    }

    /// The public key peers pin.
    pub fn public(&self) -> IdentityKey {
        self.public
    }

    /// The private seed, to be stored.
    pub fn seed(&self) -> &[u8; 32] {
        &self.seed
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        let pair = Ed25519KeyPair::from_seed_unchecked(&self.seed).expect("a valid seed");
        pair.sign(message).as_ref().to_vec()
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// An Ed25519 public key: 64 lowercase hex digits on the wire and in `lan-peers`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdentityKey([u8; 32]);

impl IdentityKey {
    /// The key's SHA-256, which mDNS announces and people compare.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint(Sha256::digest(self.0).into())
    }

    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(message, signature)
            .is_ok()
    }
}

impl From<[u8; 32]> for IdentityKey {
    fn from(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdentityKey({self})")
    }
}

/// A key field that is not 64 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a key is 64 hex digits")]
pub struct KeyFieldError;

/// The SHA-256 of an [`IdentityKey`]: in full (64 hex digits) in the mDNS TXT record,
/// shortened ([`Fingerprint::short`]) for people.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The first 8 bytes in four groups, `3f9a:0c12:d4e5:7b21`: enough to tell two keys
    /// apart at a glance.
    pub fn short(&self) -> String {
        self.0[..8]
            .chunks(2)
            .map(|pair| format!("{:02x}{:02x}", pair[0], pair[1]))
            .collect::<Vec<_>>()
            .join(":")
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", self.short())
    }
}

/// Six digits both people see on the first contact; the same on both sides only when
/// nobody stands between them.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PairingCode(u32);

impl PairingCode {
    /// Whether `typed` is this code, with or without the space (`123 456`, `123456`).
    pub fn matches(&self, typed: &str) -> bool {
        let digits: String = typed.chars().filter(|c| !c.is_whitespace()).collect();
        digits.len() == 6 && digits.parse::<u32>().ok() == Some(self.0)
    }
}

impl fmt::Display for PairingCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:03} {:03}", self.0 / 1000, self.0 % 1000)
    }
}

impl fmt::Debug for PairingCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PairingCode({self})")
    }
}

impl Serialize for PairingCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What the two clients say to each other once the channel is up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Message {
    /// A call: the caller's session description (the client's `SessionDescription`,
    /// validated there, as when it comes through the server).
    Offer {
        /// The caller's description.
        description: Value,
    },
    /// The call is taken: the callee's description.
    Answer {
        /// The callee's description.
        description: Value,
    },
    /// The call (or transfer) is declined.
    Reject {
        /// Why, for the other person to read.
        reason: String,
    },
    /// The call ended on this side.
    Hangup {
        /// Why.
        reason: String,
    },
    /// A chat line typed during a call.
    Text {
        /// The line.
        text: String,
    },
    /// A file transfer's own message (offer, accept, ...), carried as the transfer
    /// module defines it.
    Transfer {
        /// The transfer message.
        body: Value,
    },
}

/// A line the channel refused, or a channel that cannot go on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LanError {
    /// A line over [`MAX_LINE`].
    #[error("a line longer than {MAX_LINE} bytes")]
    TooLong,
    /// Not a message of this protocol.
    #[error("not a message of the LAN protocol: {0}")]
    Malformed(#[source] serde_json::Error),
    /// A message that has no place here (a hello twice, a message before the handshake).
    #[error("unexpected {0} at this point of the handshake")]
    Unexpected(&'static str),
    /// Another version of the protocol.
    #[error("the peer speaks LAN protocol version {0}, this client version {VERSION}")]
    Version(u32),
    /// The initiator's hello is not the one it committed to.
    #[error("the peer's hello does not match the commitment it sent first")]
    Commitment,
    /// The peer's ephemeral key is of low order.
    #[error("the peer's key exchange key is weak (low order)")]
    WeakKey,
    /// A sealed line that does not open: tampered with, replayed, or not from the peer.
    #[error("a line failed authentication (tampered with, replayed, or not from the peer)")]
    Undecryptable,
    /// The peer cannot sign with the identity key it claims.
    #[error("the peer's signature does not verify: it does not hold the key it claims")]
    Signature,
    /// Sending before the handshake finished, or after the channel failed.
    #[error("the channel is not established")]
    NotEstablished,
}

/// Lines refused, by reason. The channel closes after one; a listener adds up its
/// connections' counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Refusals {
    /// Lines over [`MAX_LINE`].
    pub too_long: u64,
    /// Not JSON, or not a message of this protocol.
    pub malformed: u64,
    /// Out of order.
    pub unexpected: u64,
    /// Another protocol version.
    pub version: u64,
    /// A hello that breaks its commitment.
    pub commitment: u64,
    /// A weak ephemeral key.
    pub weak_key: u64,
    /// Sealed lines that do not open.
    pub undecryptable: u64,
    /// Signatures that do not verify.
    pub signature: u64,
}

impl Refusals {
    /// Counts `error` under its reason.
    pub fn count(&mut self, error: &LanError) {
        let counter = match error {
            LanError::TooLong => &mut self.too_long,
            LanError::Malformed(_) => &mut self.malformed,
            LanError::Unexpected(_) | LanError::NotEstablished => &mut self.unexpected,
            LanError::Version(_) => &mut self.version,
            LanError::Commitment => &mut self.commitment,
            LanError::WeakKey => &mut self.weak_key,
            LanError::Undecryptable => &mut self.undecryptable,
            LanError::Signature => &mut self.signature,
        };
        *counter += 1;
    }

    /// Adds another count to this one.
    pub fn add(&mut self, other: &Refusals) {
        let Refusals {
            too_long,
            malformed,
            unexpected,
            version,
            commitment,
            weak_key,
            undecryptable,
            signature,
        } = *other;
        self.too_long += too_long;
        self.malformed += malformed;
        self.unexpected += unexpected;
        self.version += version;
        self.commitment += commitment;
        self.weak_key += weak_key;
        self.undecryptable += undecryptable;
        self.signature += signature;
    }

    /// All refusals.
    pub fn total(&self) -> u64 {
        let Refusals {
            too_long,
            malformed,
            unexpected,
            version,
            commitment,
            weak_key,
            undecryptable,
            signature,
        } = *self;
        too_long
            + malformed
            + unexpected
            + version
            + commitment
            + weak_key
            + undecryptable
            + signature
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_keys_survive_hex_and_fingerprints_are_stable() {
        let identity = Identity::from_seed([7; 32]);
        let key = identity.public();
        let back: IdentityKey = key.to_string().parse().unwrap();
        assert_eq!(back, key);
        assert_eq!(key.fingerprint(), back.fingerprint());
        assert_eq!(key.fingerprint().short().len(), 19);
        let other = Identity::from_seed([8; 32]).public();
        assert_ne!(other.fingerprint(), key.fingerprint());
        assert!("xyz".parse::<IdentityKey>().is_err());
        let fp: Fingerprint = key.fingerprint().to_string().parse().unwrap();
        assert_eq!(fp, key.fingerprint());
    }

    #[test]
    fn a_signature_verifies_only_with_its_key_and_message() {
        let identity = Identity::from_seed([1; 32]);
        let signature = identity.sign(b"transcript");
        assert!(identity.public().verify(b"transcript", &signature));
        assert!(!identity.public().verify(b"transcripT", &signature));
        let other = Identity::from_seed([2; 32]).public();
        assert!(!other.verify(b"transcript", &signature));
        assert!(!identity.public().verify(b"transcript", &signature[..10]));
    }

    #[test]
    fn pairing_codes_match_as_typed() {
        let code = PairingCode(12_345);
        assert_eq!(code.to_string(), "012 345");
        assert!(code.matches("012 345"));
        assert!(code.matches(" 012345 "));
        assert!(!code.matches("12345"));
        assert!(!code.matches("012 346"));
        assert!(!code.matches("y"));
    }

    #[test]
    fn messages_are_tagged_and_unknown_fields_refused() {
        let text = Message::Text { text: "hi".into() };
        let json = serde_json::to_string(&text).unwrap();
        assert_eq!(json, r#"{"type":"text","text":"hi"}"#);
        assert!(serde_json::from_str::<Message>(r#"{"type":"text","text":"a","x":1}"#).is_err());
        assert!(serde_json::from_str::<Message>(r#"{"type":"launch"}"#).is_err());
    }

    #[test]
    fn refusals_add_up_by_reason() {
        let mut a = Refusals::default();
        a.count(&LanError::TooLong);
        a.count(&LanError::Signature);
        let mut b = Refusals::default();
        b.count(&LanError::TooLong);
        b.add(&a);
        assert_eq!(b.too_long, 2);
        assert_eq!(b.signature, 1);
        assert_eq!(b.total(), 3);
    }
}
