//! The channel's state machine: the handshake, then sealed messages. Sans-IO: lines in,
//! lines out, the randomness passed in.

use std::collections::VecDeque;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::BytesMut;
use hkdf::Hkdf;
use magpie_media::srtp::exchange::PublicKey;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use x25519_dalek::StaticSecret;

use super::{Identity, IdentityKey, LanError, MAX_LINE, Message, PairingCode, Refusals, VERSION};
use crate::codec::LineCodec;
use crate::proto::UserName;

/// Domain separation of the transcript hash.
const TRANSCRIPT_LABEL: &[u8] = b"magpie lan v1";
/// What each side signs before the transcript: a signature cannot be reflected back as
/// the other side's.
const AUTH_INITIATOR: &[u8] = b"magpie lan auth initiator\0";
const AUTH_RESPONDER: &[u8] = b"magpie lan auth responder\0";

/// Who the peer is, as its handshake proved: it holds the private half of `identity`.
/// The name is what it calls itself; the caller checks it against whom it meant to reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The name in its hello.
    pub name: UserName,
    /// Its long-term key, proved by its signature over this handshake.
    pub identity: IdentityKey,
}

/// What a line brought.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The handshake finished: who the peer is, and the code to compare on first contact.
    Established {
        /// The peer.
        peer: Peer,
        /// The pairing code of this exchange.
        code: PairingCode,
    },
    /// A message from the peer.
    Message(Message),
}

/// The lines sent in the clear.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
enum Clear {
    /// The SHA-256 of the initiator's hello (32 bytes in hex).
    Commit { version: u32, hash: PublicKey },
    /// Who a side is and its ephemeral X25519 key.
    Hello {
        version: u32,
        name: UserName,
        identity: IdentityKey,
        ephemeral: PublicKey,
    },
}

/// The first sealed line of each side.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
enum Auth {
    /// Ed25519 over the side's label and the transcript, base64.
    Auth { signature: String },
}

/// Any line's version, to tell another version from garbage.
#[derive(Deserialize)]
struct Versioned {
    version: u32,
}

enum State {
    /// Initiator: commitment sent; waits for the responder's hello.
    Committed {
        commit: Vec<u8>,
        hello: Vec<u8>,
        secret: StaticSecret,
    },
    /// Responder: waits for the commitment.
    AwaitCommit {
        hello: Vec<u8>,
        secret: StaticSecret,
    },
    /// Responder: hello sent; waits for the hello committed to.
    AwaitHello {
        commit: Vec<u8>,
        hash: [u8; 32],
        hello: Vec<u8>,
        secret: StaticSecret,
    },
    /// Keys derived, own signature sent; waits for the peer's.
    AwaitAuth {
        peer: Peer,
        code: PairingCode,
        transcript: [u8; 32],
    },
    Established,
    /// A line was refused: nothing more is taken.
    Failed,
}

/// One side's sealing and opening keys, and the line counters that are the nonces.
struct Keys {
    seal: LessSafeKey,
    open: LessSafeKey,
    sealed: u64,
    opened: u64,
}

/// One end of a direct channel: feed it what the socket reads ([`Channel::handle_input`]),
/// write out what [`Channel::poll_transmit`] gives.
pub struct Channel {
    initiator: bool,
    identity: Identity,
    codec: LineCodec,
    state: State,
    keys: Option<Keys>,
    out: VecDeque<Vec<u8>>,
    refusals: Refusals,
}

impl Channel {
    /// The side that connects: it speaks first, with its commitment. `random` is the
    /// ephemeral secret, fresh for every connection.
    pub fn initiator(identity: Identity, name: UserName, random: [u8; 32]) -> Self {
        let secret = StaticSecret::from(random);
        let hello = hello_line(&identity, name, &secret);
        let commit = encode(&Clear::Commit {
            version: VERSION,
            hash: PublicKey::from(sha256(&hello)),
        });
        let mut channel = Self::new(true, identity, State::Failed);
        channel.push(&commit);
        channel.state = State::Committed {
            commit,
            hello,
            secret,
        };
        channel
    }

    /// The side that accepted the connection.
    pub fn responder(identity: Identity, name: UserName, random: [u8; 32]) -> Self {
        let secret = StaticSecret::from(random);
        let hello = hello_line(&identity, name, &secret);
        Self::new(false, identity, State::AwaitCommit { hello, secret })
    }

    fn new(initiator: bool, identity: Identity, state: State) -> Self {
        Self {
            initiator,
            identity,
            codec: LineCodec::new(MAX_LINE),
            state,
            keys: None,
            out: VecDeque::new(),
            refusals: Refusals::default(),
        }
    }

    /// Takes whole lines out of `buf` until one brings an [`Event`] or none is left.
    /// An error refuses the line, counts it, and closes the channel.
    pub fn handle_input(&mut self, buf: &mut BytesMut) -> Result<Option<Event>, LanError> {
        loop {
            let line = match self.codec.decode(buf) {
                Ok(Some(line)) => line,
                Ok(None) => return Ok(None),
                Err(_) => return Err(self.refuse(LanError::TooLong)),
            };
            match self.admit(&line) {
                Ok(Some(event)) => return Ok(Some(event)),
                Ok(None) => {}
                Err(e) => return Err(self.refuse(e)),
            }
        }
    }

    /// Seals `message` for the peer. Only once [`Event::Established`] came out.
    pub fn send(&mut self, message: &Message) -> Result<(), LanError> {
        if !matches!(self.state, State::Established) {
            return Err(LanError::NotEstablished);
        }
        let json = serde_json::to_vec(message).expect("messages serialize");
        self.seal(&json);
        Ok(())
    }

    /// The next line to write, newline included.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front()
    }

    /// Lines refused so far.
    pub fn refusals(&self) -> Refusals {
        self.refusals
    }

    /// Whether the handshake finished and nothing was refused since.
    pub fn is_established(&self) -> bool {
        matches!(self.state, State::Established)
    }

    fn refuse(&mut self, error: LanError) -> LanError {
        self.refusals.count(&error);
        self.state = State::Failed;
        self.keys = None;
        self.out.clear();
        error
    }

    /// Admits or refuses one line. Whatever refuses it leaves the state `Failed`.
    fn admit(&mut self, line: &[u8]) -> Result<Option<Event>, LanError> {
        match std::mem::replace(&mut self.state, State::Failed) {
            State::Committed {
                commit,
                hello,
                secret,
            } => {
                let peer = parse_hello(line)?;
                self.push(&hello);
                self.agree(&secret, peer, [&commit, line, &hello])?;
                Ok(None)
            }
            State::AwaitCommit { hello, secret } => {
                let hash = match parse_clear(line)? {
                    Clear::Commit { hash, .. } => *hash.as_bytes(),
                    Clear::Hello { .. } => return Err(LanError::Unexpected("hello")),
                };
                self.push(&hello);
                self.state = State::AwaitHello {
                    commit: line.to_vec(),
                    hash,
                    hello,
                    secret,
                };
                Ok(None)
            }
            State::AwaitHello {
                commit,
                hash,
                hello,
                secret,
            } => {
                if sha256(line) != hash {
                    return Err(LanError::Commitment);
                }
                let peer = parse_hello(line)?;
                self.agree(&secret, peer, [&commit, &hello, line])?;
                Ok(None)
            }
            State::AwaitAuth {
                peer,
                code,
                transcript,
            } => {
                let plain = self.open(line)?;
                let Auth::Auth { signature } =
                    serde_json::from_slice(&plain).map_err(LanError::Malformed)?;
                let signature = BASE64.decode(signature).map_err(|_| LanError::Signature)?;
                let label = if self.initiator {
                    AUTH_RESPONDER
                } else {
                    AUTH_INITIATOR
                };
                if !peer
                    .identity
                    .verify(&[label, &transcript].concat(), &signature)
                {
                    return Err(LanError::Signature);
                }
                self.state = State::Established;
                Ok(Some(Event::Established { peer, code }))
            }
            State::Established => {
                let plain = self.open(line)?;
                let message = serde_json::from_slice(&plain).map_err(LanError::Malformed)?;
                self.state = State::Established;
                Ok(Some(Event::Message(message)))
            }
            State::Failed => Err(LanError::NotEstablished),
        }
    }

    /// Derives the keys and the code from the exchange, sends this side's signature, and
    /// waits for the peer's.
    fn agree(
        &mut self,
        secret: &StaticSecret,
        (peer, ephemeral): (Peer, PublicKey),
        lines: [&[u8]; 3],
    ) -> Result<(), LanError> {
        let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(*ephemeral.as_bytes()));
        // A low-order key makes the shared secret all zeros, known to anyone.
        if !shared.was_contributory() {
            return Err(LanError::WeakKey);
        }
        let transcript = transcript(lines);
        let hk = Hkdf::<Sha256>::new(Some(&transcript), shared.as_bytes());
        let key = |label: &str| {
            let mut bytes = [0; 32];
            hk.expand(label.as_bytes(), &mut bytes)
                .expect("HKDF-SHA256 to expand to 32 bytes");
            LessSafeKey::new(
                UnboundKey::new(&CHACHA20_POLY1305, &bytes).expect("a 32-byte ChaCha20 key"),
            )
        };
        let (initiator, responder) = (key("magpie lan initiator"), key("magpie lan responder"));
        let mut code = [0; 4];
        hk.expand(b"magpie lan code", &mut code)
            .expect("HKDF-SHA256 to expand to 4 bytes");
        let code = PairingCode(u32::from_be_bytes(code) % 1_000_000);
        let (seal, open, label) = if self.initiator {
            (initiator, responder, AUTH_INITIATOR)
        } else {
            (responder, initiator, AUTH_RESPONDER)
        };
        self.keys = Some(Keys {
            seal,
            open,
            sealed: 0,
            opened: 0,
        });
        let signature = self.identity.sign(&[label, &transcript].concat());
        let auth = serde_json::to_vec(&Auth::Auth {
            signature: BASE64.encode(signature),
        })
        .expect("auth serializes");
        self.seal(&auth);
        self.state = State::AwaitAuth {
            peer,
            code,
            transcript,
        };
        Ok(())
    }

    fn seal(&mut self, plain: &[u8]) {
        let keys = self.keys.as_mut().expect("keys before sealing");
        let nonce = nonce(keys.sealed);
        keys.sealed = keys
            .sealed
            .checked_add(1)
            .expect("fewer than 2^64 lines on one channel");
        let mut buf = plain.to_vec();
        keys.seal
            .seal_in_place_append_tag(nonce, Aad::empty(), &mut buf)
            .expect("ChaCha20-Poly1305 seals any line under 256 GiB");
        let mut line = BASE64.encode(buf).into_bytes();
        line.push(b'\n');
        self.out.push_back(line);
    }

    fn open(&mut self, line: &[u8]) -> Result<Vec<u8>, LanError> {
        let keys = self.keys.as_mut().ok_or(LanError::NotEstablished)?;
        let mut buf = BASE64.decode(line).map_err(|_| LanError::Undecryptable)?;
        let nonce = nonce(keys.opened);
        let len = keys
            .open
            .open_in_place(nonce, Aad::empty(), &mut buf)
            .map_err(|_| LanError::Undecryptable)?
            .len();
        keys.opened += 1;
        buf.truncate(len);
        Ok(buf)
    }

    fn push(&mut self, line: &[u8]) {
        let mut line = line.to_vec();
        line.push(b'\n');
        self.out.push_back(line);
    }
}

fn hello_line(identity: &Identity, name: UserName, secret: &StaticSecret) -> Vec<u8> {
    encode(&Clear::Hello {
        version: VERSION,
        name,
        identity: identity.public(),
        ephemeral: PublicKey::from(x25519_dalek::PublicKey::from(secret).to_bytes()),
    })
}

fn encode(line: &Clear) -> Vec<u8> {
    serde_json::to_vec(line).expect("handshake lines serialize")
}

fn parse_clear(line: &[u8]) -> Result<Clear, LanError> {
    match serde_json::from_slice::<Clear>(line) {
        Ok(Clear::Commit { version, .. } | Clear::Hello { version, .. }) if version != VERSION => {
            Err(LanError::Version(version))
        }
        Ok(clear) => Ok(clear),
        Err(e) => match serde_json::from_slice::<Versioned>(line) {
            Ok(Versioned { version }) if version != VERSION => Err(LanError::Version(version)),
            _ => Err(LanError::Malformed(e)),
        },
    }
}

fn parse_hello(line: &[u8]) -> Result<(Peer, PublicKey), LanError> {
    match parse_clear(line)? {
        Clear::Hello {
            name,
            identity,
            ephemeral,
            ..
        } => Ok((Peer { name, identity }, ephemeral)),
        Clear::Commit { .. } => Err(LanError::Unexpected("commit")),
    }
}

fn transcript(lines: [&[u8]; 3]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(TRANSCRIPT_LABEL);
    for line in lines {
        h.update((line.len() as u64).to_be_bytes());
        h.update(line);
    }
    h.finalize().into()
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn nonce(counter: u64) -> Nonce {
    let mut bytes = [0; 12];
    bytes[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> UserName {
        UserName::parse(s).unwrap()
    }

    fn pair() -> (Channel, Channel) {
        let alice = Channel::initiator(Identity::from_seed([1; 32]), name("alice"), [11; 32]);
        let bob = Channel::responder(Identity::from_seed([2; 32]), name("bob"), [22; 32]);
        (alice, bob)
    }

    /// Moves every line from `from` to `to`; returns the events `to` saw.
    fn carry(from: &mut Channel, to: &mut Channel) -> Result<Vec<Event>, LanError> {
        let mut buf = BytesMut::new();
        while let Some(line) = from.poll_transmit() {
            buf.extend_from_slice(&line);
        }
        let mut events = Vec::new();
        while let Some(event) = to.handle_input(&mut buf)? {
            events.push(event);
        }
        Ok(events)
    }

    /// Runs the handshake to the end; returns what each side saw.
    fn handshake(a: &mut Channel, b: &mut Channel) -> (Vec<Event>, Vec<Event>) {
        let (mut at_a, mut at_b) = (Vec::new(), Vec::new());
        for _ in 0..4 {
            at_b.extend(carry(a, b).unwrap());
            at_a.extend(carry(b, a).unwrap());
        }
        (at_a, at_b)
    }

    fn established(events: &[Event]) -> (Peer, PairingCode) {
        match events {
            [Event::Established { peer, code }] => (peer.clone(), *code),
            other => panic!("expected one Established, got {other:?}"),
        }
    }

    #[test]
    fn both_sides_prove_who_they_are_and_see_the_same_code() {
        let (mut alice, mut bob) = pair();
        let (at_alice, at_bob) = handshake(&mut alice, &mut bob);
        let (bob_seen, code_a) = established(&at_alice);
        let (alice_seen, code_b) = established(&at_bob);
        assert_eq!(code_a, code_b);
        assert_eq!(bob_seen.name.as_str(), "bob");
        assert_eq!(bob_seen.identity, Identity::from_seed([2; 32]).public());
        assert_eq!(alice_seen.identity, Identity::from_seed([1; 32]).public());

        let offer = Message::Offer {
            description: serde_json::json!({"version": 3}),
        };
        alice.send(&offer).unwrap();
        alice.send(&Message::Text { text: "hi".into() }).unwrap();
        let got = carry(&mut alice, &mut bob).unwrap();
        assert_eq!(
            got,
            vec![
                Event::Message(offer),
                Event::Message(Message::Text { text: "hi".into() })
            ]
        );
        bob.send(&Message::Hangup {
            reason: "bye".into(),
        })
        .unwrap();
        let got = carry(&mut bob, &mut alice).unwrap();
        assert_eq!(
            got,
            vec![Event::Message(Message::Hangup {
                reason: "bye".into()
            })]
        );
        assert_eq!(alice.refusals().total() + bob.refusals().total(), 0);
    }

    #[test]
    fn nothing_is_sent_before_the_handshake_finishes() {
        let (mut alice, _) = pair();
        assert!(matches!(
            alice.send(&Message::Text { text: "x".into() }),
            Err(LanError::NotEstablished)
        ));
    }

    #[test]
    fn a_man_in_the_middle_shows_each_side_another_code() {
        // Mallory answers alice as "bob" and calls bob as "alice", with her own keys.
        let (mut alice, mut bob) = pair();
        let mallory = Identity::from_seed([9; 32]);
        let mut m_as_bob = Channel::responder(mallory.clone(), name("bob"), [33; 32]);
        let mut m_as_alice = Channel::initiator(mallory, name("alice"), [44; 32]);
        let (at_alice, _) = handshake(&mut alice, &mut m_as_bob);
        let (_, at_bob) = handshake(&mut m_as_alice, &mut bob);
        let (seen_by_alice, code_a) = established(&at_alice);
        let (seen_by_bob, code_b) = established(&at_bob);
        assert_ne!(code_a, code_b);
        // And the keys they would pin are hers, not the other person's.
        assert_ne!(
            seen_by_alice.identity,
            Identity::from_seed([2; 32]).public()
        );
        assert_ne!(seen_by_bob.identity, Identity::from_seed([1; 32]).public());
    }

    #[test]
    fn a_claimed_identity_without_its_private_key_is_refused() {
        // Mallory puts bob's public key in her hello but can only sign with her own.
        let (mut alice, _) = pair();
        let mut mallory = Channel::responder(Identity::from_seed([9; 32]), name("bob"), [33; 32]);
        if let State::AwaitCommit { hello, secret } = &mut mallory.state {
            *hello = hello_line(&Identity::from_seed([2; 32]), name("bob"), secret);
        }
        carry(&mut alice, &mut mallory).unwrap();
        carry(&mut mallory, &mut alice).unwrap();
        carry(&mut alice, &mut mallory).unwrap();
        let err = carry(&mut mallory, &mut alice).unwrap_err();
        assert!(matches!(err, LanError::Signature), "{err}");
        assert_eq!(alice.refusals().signature, 1);
    }

    #[test]
    fn a_hello_other_than_the_one_committed_to_is_refused() {
        let (mut alice, mut bob) = pair();
        carry(&mut alice, &mut bob).unwrap();
        carry(&mut bob, &mut alice).unwrap();
        // Swap alice's hello for another key's.
        let mut swapped = alice.poll_transmit().unwrap();
        let other = Channel::responder(Identity::from_seed([1; 32]), name("alice"), [99; 32]);
        if let State::AwaitCommit { hello, .. } = &other.state {
            swapped = [hello.as_slice(), b"\n"].concat();
        }
        let mut buf = BytesMut::from(&swapped[..]);
        assert!(matches!(
            bob.handle_input(&mut buf),
            Err(LanError::Commitment)
        ));
        assert_eq!(bob.refusals().commitment, 1);
    }

    #[test]
    fn tampered_and_replayed_sealed_lines_are_refused() {
        let (mut alice, mut bob) = pair();
        handshake(&mut alice, &mut bob);
        alice.send(&Message::Text { text: "one".into() }).unwrap();
        let line = alice.poll_transmit().unwrap();
        let mut flipped = line.clone();
        flipped[3] = if flipped[3] == b'A' { b'B' } else { b'A' };
        let mut buf = BytesMut::from(&flipped[..]);
        assert!(matches!(
            bob.handle_input(&mut buf),
            Err(LanError::Undecryptable)
        ));
        // A fresh pair: the genuine line opens once, its replay does not.
        let (mut alice, mut bob) = pair();
        handshake(&mut alice, &mut bob);
        alice.send(&Message::Text { text: "one".into() }).unwrap();
        let line = alice.poll_transmit().unwrap();
        let mut buf = BytesMut::from(&[line.as_slice(), &line].concat()[..]);
        assert!(bob.handle_input(&mut buf).unwrap().is_some());
        assert!(matches!(
            bob.handle_input(&mut buf),
            Err(LanError::Undecryptable)
        ));
        assert_eq!(bob.refusals().undecryptable, 1);
    }

    #[test]
    fn garbage_long_lines_and_other_versions_are_refused_and_counted() {
        let (_, mut bob) = pair();
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]);
        assert!(matches!(
            bob.handle_input(&mut buf),
            Err(LanError::Malformed(_))
        ));
        // Closed after a refusal: even a good line is not taken now.
        let (mut alice, _) = pair();
        let mut good = BytesMut::from(&alice.poll_transmit().unwrap()[..]);
        assert!(bob.handle_input(&mut good).is_err());
        assert_eq!(bob.refusals().malformed, 1);

        let (_, mut bob) = pair();
        let mut buf = BytesMut::from(&vec![b'x'; MAX_LINE + 2][..]);
        assert!(matches!(bob.handle_input(&mut buf), Err(LanError::TooLong)));
        assert_eq!(bob.refusals().too_long, 1);

        let (_, mut bob) = pair();
        let line = br#"{"type":"commit","version":2,"hash":"00"}"#;
        let mut buf = BytesMut::from(&[&line[..], b"\n"].concat()[..]);
        assert!(matches!(
            bob.handle_input(&mut buf),
            Err(LanError::Version(2))
        ));

        let (_, mut bob) = pair();
        let mut buf = BytesMut::from(&b"{\"type\":\"text\",\"text\":\"early\"}\n"[..]);
        assert!(bob.handle_input(&mut buf).is_err());
    }

    #[test]
    fn a_weak_ephemeral_key_is_refused() {
        let (mut alice, mut bob) = pair();
        carry(&mut alice, &mut bob).unwrap();
        let zero = encode(&Clear::Hello {
            version: VERSION,
            name: name("bob"),
            identity: Identity::from_seed([2; 32]).public(),
            ephemeral: PublicKey::from([0; 32]),
        });
        let mut buf = BytesMut::from(&[&zero[..], b"\n"].concat()[..]);
        assert!(matches!(
            alice.handle_input(&mut buf),
            Err(LanError::WeakKey)
        ));
    }

    #[test]
    fn lines_split_anywhere_give_the_same_events() {
        let (mut alice, mut bob) = pair();
        let mut at_bob = Vec::new();
        for _ in 0..4 {
            let mut bytes = Vec::new();
            while let Some(line) = alice.poll_transmit() {
                bytes.extend_from_slice(&line);
            }
            let mut buf = BytesMut::new();
            for byte in bytes {
                buf.extend_from_slice(&[byte]);
                while let Some(event) = bob.handle_input(&mut buf).unwrap() {
                    at_bob.push(event);
                }
            }
            carry(&mut bob, &mut alice).unwrap();
        }
        established(&at_bob);
    }
}
