//! The end-to-end key exchange: the server that carries the offer and the answer never
//! holds a media key.
//!
//! Each side draws an ephemeral X25519 key pair for the call and puts its public key in
//! its description. Once both descriptions are known, each side computes the X25519
//! shared secret and runs HKDF-SHA256 (RFC 5869) over it, salted with the hash of the
//! transcript: both descriptions exactly as the caller sent and received them, caller's
//! first. Out of it come:
//!
//! - the SRTP master key and salt of each direction ([`SrtpKeys`]);
//! - the connectivity-check credentials of each side ([`Credentials`]), so the checks are
//!   keyed by the exchange rather than by passwords the server could read;
//! - a [`SafetyCode`] of six digits. A server that swaps the public keys in transit
//!   (a man in the middle) leaves the two sides with different shared secrets and
//!   different transcripts, so their codes differ; two people who read their codes to
//!   each other and hear the same one know that nobody swapped them.
//!
//! ```text
//! transcript = SHA-256("magpie e2e v1" || u64be(len offer) || offer
//!                                      || u64be(len answer) || answer)
//! prk        = HKDF-Extract(salt = transcript, ikm = X25519(ours, theirs))
//! caller's SRTP key+salt = HKDF-Expand(prk, "magpie srtp caller", 28)
//! callee's SRTP key+salt = HKDF-Expand(prk, "magpie srtp callee", 28)
//! caller's ICE ufrag+pwd = HKDF-Expand(prk, "magpie ice caller", 20), hex
//! callee's ICE ufrag+pwd = HKDF-Expand(prk, "magpie ice callee", 20), hex
//! safety code            = HKDF-Expand(prk, "magpie safety code", 4) mod 10^6
//! ```
//!
//! Like the rest of the core this module draws no randomness: the caller passes the
//! secret's random bytes in.

use std::fmt;
use std::str::FromStr;

use hkdf::Hkdf;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use thiserror::Error;
use x25519_dalek::StaticSecret;

use super::{KEY_LEN, MasterKey, SALT_LEN, SrtpKeys};
use crate::ice::Credentials;

/// Domain separation for the transcript hash: another protocol's hash never matches.
const TRANSCRIPT_LABEL: &[u8] = b"magpie e2e v1";
/// Digits in the safety code.
const SAFETY_DIGITS: u32 = 6;

/// Which end of the call this side is: the caller's description is the offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Sent the offer.
    Caller,
    /// Sent the answer.
    Callee,
}

/// An X25519 public key as it travels in a description: 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// The key's 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl From<[u8; 32]> for PublicKey {
    fn from(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

/// A key field that is not 64 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("an X25519 public key is 64 hex digits")]
pub struct KeyFieldError;

impl FromStr for PublicKey {
    type Err = KeyFieldError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits = s.as_bytes();
        if digits.len() != 64 {
            return Err(KeyFieldError);
        }
        let mut key = [0u8; 32];
        for (byte, pair) in key.iter_mut().zip(digits.chunks_exact(2)) {
            let nibble = |c: u8| (c as char).to_digit(16).ok_or(KeyFieldError);
            *byte = (nibble(pair[0])? << 4 | nibble(pair[1])?) as u8;
        }
        Ok(Self(key))
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// This side's ephemeral key pair, one per call.
pub struct KeyPair {
    secret: StaticSecret,
    public: PublicKey,
}

impl KeyPair {
    /// A key pair from 32 random bytes (the caller draws them from the OS).
    pub fn from_random(bytes: [u8; 32]) -> Self {
        let secret = StaticSecret::from(bytes);
        let public = PublicKey(x25519_dalek::PublicKey::from(&secret).to_bytes());
        Self { secret, public }
    }

    /// The public key to put in the description.
    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// Derives everything the call needs from the peer's public key and the two
    /// descriptions as sent and received (`offer` is always the caller's).
    pub fn derive(
        &self,
        role: Role,
        peer: &PublicKey,
        offer: &[u8],
        answer: &[u8],
    ) -> Result<Derived, ExchangeError> {
        let shared = self
            .secret
            .diffie_hellman(&x25519_dalek::PublicKey::from(peer.0));
        // A low-order public key makes the shared secret all zeros, known to anyone.
        if !shared.was_contributory() {
            return Err(ExchangeError::WeakKey);
        }
        let hk = Hkdf::<Sha256>::new(Some(&transcript(offer, answer)), shared.as_bytes());
        let expand = |label: &str, out: &mut [u8]| {
            hk.expand(label.as_bytes(), out)
                .expect("HKDF-SHA256 to expand to fewer than 255 blocks");
        };
        let master = |label| {
            let mut bytes = [0; KEY_LEN + SALT_LEN];
            expand(label, &mut bytes);
            MasterKey::from_bytes(bytes)
        };
        let ice = |label| {
            let mut bytes = [0u8; 20];
            expand(label, &mut bytes);
            Credentials {
                ufrag: hex(&bytes[..4]),
                pwd: hex(&bytes[4..]),
            }
        };
        let (caller, callee) = (master("magpie srtp caller"), master("magpie srtp callee"));
        let (caller_ice, callee_ice) = (ice("magpie ice caller"), ice("magpie ice callee"));
        let mut code = [0u8; 4];
        expand("magpie safety code", &mut code);
        let safety_code = SafetyCode(u32::from_be_bytes(code) % 10u32.pow(SAFETY_DIGITS));
        Ok(match role {
            Role::Caller => Derived {
                srtp: SrtpKeys {
                    send: caller,
                    receive: callee,
                },
                local_ice: caller_ice,
                remote_ice: callee_ice,
                safety_code,
            },
            Role::Callee => Derived {
                srtp: SrtpKeys {
                    send: callee,
                    receive: caller,
                },
                local_ice: callee_ice,
                remote_ice: caller_ice,
                safety_code,
            },
        })
    }
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// Why no keys could be derived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ExchangeError {
    /// The peer's public key is of low order: the shared secret would be public.
    #[error("the peer's key exchange key is weak (low order)")]
    WeakKey,
}

/// What one side derives from the exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derived {
    /// The SRTP keys, from this side's point of view.
    pub srtp: SrtpKeys,
    /// The credential this side's connectivity checks answer to.
    pub local_ice: Credentials,
    /// The credential the peer's checks answer to.
    pub remote_ice: Credentials,
    /// The code both people read to each other.
    pub safety_code: SafetyCode,
}

/// Six digits both sides show; they match only when nobody swapped the keys.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SafetyCode(u32);

impl fmt::Display for SafetyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Two groups of three digits: easier to read aloud.
        write!(f, "{:03} {:03}", self.0 / 1000, self.0 % 1000)
    }
}

impl fmt::Debug for SafetyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SafetyCode({self})")
    }
}

impl Serialize for SafetyCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

fn transcript(offer: &[u8], answer: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(TRANSCRIPT_LABEL);
    for part in [offer, answer] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs() -> (KeyPair, KeyPair) {
        (KeyPair::from_random([1; 32]), KeyPair::from_random([2; 32]))
    }

    #[test]
    fn both_sides_derive_mirror_images() {
        let (alice, bob) = pairs();
        let at_alice = alice
            .derive(Role::Caller, &bob.public(), b"offer", b"answer")
            .unwrap();
        let at_bob = bob
            .derive(Role::Callee, &alice.public(), b"offer", b"answer")
            .unwrap();
        assert_eq!(at_alice.srtp, at_bob.srtp.mirrored());
        assert_ne!(at_alice.srtp.send, at_alice.srtp.receive);
        assert_eq!(at_alice.local_ice, at_bob.remote_ice);
        assert_eq!(at_alice.remote_ice, at_bob.local_ice);
        assert_ne!(at_alice.local_ice, at_alice.remote_ice);
        assert_eq!(at_alice.safety_code, at_bob.safety_code);
        // RFC 8445 §5.3: a ufrag of at least 4 characters, a password of at least 22.
        assert_eq!(at_alice.local_ice.ufrag.len(), 8);
        assert_eq!(at_alice.local_ice.pwd.len(), 32);
    }

    #[test]
    fn another_transcript_or_key_gives_other_keys_and_another_code() {
        let (alice, bob) = pairs();
        let base = alice
            .derive(Role::Caller, &bob.public(), b"offer", b"answer")
            .unwrap();
        let edited = alice
            .derive(Role::Caller, &bob.public(), b"offer", b"answer ")
            .unwrap();
        // Moving a byte from one description to the other changes the transcript too.
        let shifted = alice
            .derive(Role::Caller, &bob.public(), b"offe", b"ranswer")
            .unwrap();
        let mallory = KeyPair::from_random([3; 32]);
        let swapped = alice
            .derive(Role::Caller, &mallory.public(), b"offer", b"answer")
            .unwrap();
        for other in [edited, shifted, swapped] {
            assert_ne!(other.srtp, base.srtp);
            assert_ne!(other.local_ice, base.local_ice);
            assert_ne!(other.safety_code, base.safety_code);
        }
    }

    #[test]
    fn a_low_order_key_is_refused() {
        let (alice, _) = pairs();
        let zero = PublicKey::from([0; 32]);
        assert_eq!(
            alice.derive(Role::Caller, &zero, b"o", b"a"),
            Err(ExchangeError::WeakKey)
        );
    }

    #[test]
    fn the_key_field_round_trips_and_rejects_anything_but_64_hex_digits() {
        let key = KeyPair::from_random([5; 32]).public();
        let text = key.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<PublicKey>(), Ok(key));
        assert_eq!(text.to_uppercase().parse::<PublicKey>(), Ok(key));
        let json = serde_json::to_string(&key).unwrap();
        assert_eq!(serde_json::from_str::<PublicKey>(&json).unwrap(), key);
        for bad in [
            "",
            "00",
            &text[1..],
            &format!("{text}0"),
            &format!("g{}", &text[1..]),
        ] {
            assert_eq!(bad.parse::<PublicKey>(), Err(KeyFieldError), "{bad}");
        }
        let non_ascii = format!("é{}", &text[2..]);
        assert_eq!(non_ascii.parse::<PublicKey>(), Err(KeyFieldError));
        assert!(serde_json::from_str::<PublicKey>("12").is_err());
    }

    #[test]
    fn the_safety_code_shows_six_digits_in_two_groups() {
        assert_eq!(SafetyCode(7).to_string(), "000 007");
        assert_eq!(SafetyCode(123_456).to_string(), "123 456");
        assert_eq!(
            serde_json::to_string(&SafetyCode(42)).unwrap(),
            "\"000 042\""
        );
    }
}
