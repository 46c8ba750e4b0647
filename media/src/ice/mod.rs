//! Finding a UDP path to the peer: connectivity checks over STUN, sans-IO.
//!
//! Each side sends its typed candidates ([`Candidate`]: host addresses with the socket's
//! port, what the server saw, and the address of its TURN allocation) in the offer or
//! answer, or later through signaling (trickle), together with a short-term credential
//! (ufrag and password). Each side pairs its bases (its own socket, and its relay once
//! allocated: [`turn`]) with every candidate of the other, orders the pairs by RFC 8445
//! priority, and sends STUN Binding requests on them, paced and from both ends at once
//! (so endpoint-independent NATs open), authenticated with MESSAGE-INTEGRITY and
//! FINGERPRINT (RFC 8445 §7.2); it answers the requests it receives. A request that
//! arrives from an address the peer did not list (a NAT's mapping) becomes a
//! peer-reflexive candidate, and a request on a pair not yet answered triggers our own
//! check on it at once, so a NAT that answered our first check with ICMP gets a second
//! chance once the other side's packets have opened the way.
//!
//! The controlling side (the caller) selects the best answered pair, a relayed one only
//! after [`CheckerConfig`]'s short wait for a direct one, and nominates it; the
//! controlled side takes what it is nominated. Consent (RFC 7675) keeps running on the
//! selected pair and keep-alives on the other working ones; when the selected pair goes
//! silent the controlling side moves to the best pair that still answers, the relay
//! included, and only when none does is the path declared lost.
//!
//! STUN, RTP and RTCP share the socket. A STUN message starts with a byte below 4
//! (RFC 7983), RTP and RTCP with a byte from 128 to 191, so
//! [`Checker::handle_datagram`] takes only what is STUN and hands the rest back.
//!
//! Like the media core, the checker and the TURN client never touch a socket or the
//! clock: datagrams and time come in as arguments, and datagrams to send come out of
//! [`Checker::poll_transmit`].
//!
//! Address discovery uses STUN too, without credentials: the signaling server answers a
//! plain Binding request with the address it came from. Both sides of that exchange,
//! [`binding_request`], [`binding_response`] and [`parse_binding_response`], are here so
//! that the server's responder and the client's discovery share them.

mod binding;
mod candidate;
mod checker;
pub mod turn;

use std::fmt;
use std::net::SocketAddr;

pub use self::binding::{binding_request, binding_response, parse_binding_response};
pub use self::candidate::{Candidate, CandidateKind, Path, pair_priority};
pub use self::checker::{Checker, CheckerConfig};

/// A short-term credential: the ufrag names a side, the password keys its checks.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Credentials {
    /// The username fragment, sent in the clear.
    pub ufrag: String,
    /// The password, which keys MESSAGE-INTEGRITY.
    pub pwd: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("ufrag", &self.ufrag)
            .field("pwd", &"..")
            .finish()
    }
}

/// A datagram the checker wants sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub destination: SocketAddr,
    /// The STUN message.
    pub contents: Vec<u8>,
    /// Whether it goes through our relay (wrapped, to the TURN server) rather than
    /// straight from our socket.
    pub relayed: bool,
}

/// What happened to the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A pair was selected (first, or instead of one that died): media goes there from
    /// now on.
    Selected(Path),
    /// No candidate answered before the timeout.
    Failed,
    /// The chosen path stopped answering for longer than the consent timeout.
    PathLost,
}

/// STUN input that was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bytes look like STUN but do not decode.
    #[error("malformed STUN message")]
    Malformed(#[source] stun::Error),
    /// A request or response whose credentials are not this call's.
    #[error("STUN message failed authentication")]
    Unauthenticated,
    /// A response to no request of ours.
    #[error("STUN response to an unknown transaction")]
    UnknownTransaction,
    /// A STUN method or class the checker does not handle.
    #[error("unexpected STUN message type")]
    Unexpected,
}

/// The transaction id number `n` of a checker or TURN client salted with `salt`:
/// distinct for each `n`, and unguessable when the salt is random.
pub(crate) fn transaction_id(salt: [u8; 12], n: u64) -> [u8; 12] {
    let mut tid = salt;
    for (t, c) in tid.iter_mut().zip(n.to_be_bytes()) {
        *t ^= c;
    }
    tid
}
