//! What the TURN client hands out: events, failures, refusals, counters, relayed data
//! and datagrams for the server.

use std::net::{IpAddr, SocketAddr};

/// What happened to the allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnEvent {
    /// The server relays for us at `relayed`; it sees us at `mapped`.
    Allocated {
        /// The relayed transport address: our relay candidate.
        relayed: SocketAddr,
        /// Our address as the server saw it (a server-reflexive candidate).
        mapped: Option<SocketAddr>,
    },
    /// The server refused or did not answer: no relay for this call.
    Failed(TurnFailure),
    /// A permission or channel for this peer was refused (e.g. 403: the server relays
    /// only to the call's peer).
    PeerRefused(IpAddr),
    /// The server moved the allocation to our new 5-tuple (our NAT gave us a new port)
    /// with its mobility ticket: same relayed address, permissions and channels.
    Moved,
}

/// Why the allocation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TurnFailure {
    /// The server did not answer in time.
    #[error("the TURN server did not answer")]
    Timeout,
    /// Our credentials were refused (401 with credentials, 441).
    #[error("the TURN server refused the credentials")]
    Unauthorized,
    /// Another error code.
    #[error("the TURN server answered error {0}")]
    Refused(u16),
    /// A refresh failed: the allocation is gone.
    #[error("the TURN allocation was lost")]
    Lost,
}

/// A datagram from the server that the client did not accept.
#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    /// Not STUN, not ChannelData, or cut short.
    #[error("malformed TURN datagram")]
    Malformed,
    /// A response to no request of ours.
    #[error("TURN response to an unknown transaction")]
    UnknownTransaction,
    /// A success response without valid MESSAGE-INTEGRITY.
    #[error("TURN response failed authentication")]
    Unauthenticated,
    /// ChannelData on a channel we did not bind, or a message we do not handle.
    #[error("unexpected TURN message")]
    Unexpected,
}

/// What the client counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TurnCounters {
    /// Datagrams from the server refused by [`TurnClient::handle_datagram`].
    pub refused: u64,
    /// Datagrams for a peer dropped because no permission was installed yet.
    pub unpermitted: u64,
    /// Requests retransmitted.
    pub retransmits: u64,
}

/// Data relayed from a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relayed<'a> {
    /// The peer that sent it to our relayed address.
    pub peer: SocketAddr,
    /// What it sent.
    pub payload: &'a [u8],
}

/// A datagram for the TURN server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnTransmit {
    /// The server.
    pub destination: SocketAddr,
    /// The message.
    pub contents: Vec<u8>,
}
