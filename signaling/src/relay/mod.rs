//! A TURN relay (RFC 8656) over UDP, for peers that cannot reach each other directly.
//!
//! # Design
//!
//! [`Relay`] is the sans-IO core: it never opens a socket or reads the clock. The shell
//! ([`serve`]) owns the UDP sockets that clients talk to (one per forwarding thread, on one
//! port) and one relayed socket per allocation, and feeds the core, which its threads
//! share under a lock:
//!
//! ```text
//! relay.handle_client(now, from, datagram)   // on the TURN port; returns a datagram for a
//!                                            // peer (Send indication, ChannelData) to send
//!                                            // from the allocation's relayed socket
//! relay.handle_peer(now, id, from, buf, ..)  // on a relayed socket; writes a Data indication
//!                                            // or ChannelData in place, for the client
//! relay.handle_bound(now, id, result)        // after an `Event::Bind`
//! relay.handle_timeout(now)
//! relay.poll_transmit() / poll_event() / poll_timeout()
//! ```
//!
//! Relayed data never allocates: the client-to-peer payload is a slice of the received
//! datagram, and the peer-to-client header is written into room left in front of the
//! payload ([`HEADROOM`]). Requests (Allocate, Refresh, CreatePermission, ChannelBind)
//! are rare and use the `stun` and `turn` crates' message codec.
//!
//! Authentication is the long-term credential mechanism with TURN REST credentials
//! ([`auth`]); a request without credentials gets a short 401 with a realm and a
//! stateless nonce, and nothing else, so the relay cannot amplify a spoofed request.
//! Every refusal is counted by [`Refusal`].

pub mod auth;
mod core;
mod peers;
mod shell;
pub mod wire;

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

pub use core::{AllocationId, Event, Forward, Relay, Transmit};
pub use peers::CallPeers;
pub use shell::{ServeConfig, TURN_RCVBUF, bind, serve};
pub use wire::{HEADROOM, TAILROOM};

/// The relay's settings.
#[derive(Clone)]
pub struct Config {
    pub(crate) realm: String,
    pub(crate) secret: auth::Secret,
    pub(crate) public_ip: Option<IpAddr>,
    pub(crate) default_lifetime: Duration,
    pub(crate) max_lifetime: Duration,
    pub(crate) permission_lifetime: Duration,
    pub(crate) channel_lifetime: Duration,
    pub(crate) nonce_lifetime: Duration,
    pub(crate) max_allocations: usize,
    pub(crate) max_allocations_per_user: usize,
    pub(crate) max_permissions: usize,
    pub(crate) user_rate: u64,
    pub(crate) user_burst: u64,
    pub(crate) allow_loopback_peers: bool,
    pub(crate) call_peers: Option<CallPeers>,
    pub(crate) nonce_key: [u8; 32],
}

impl Config {
    /// A relay checking credentials against `secret`, with the defaults below.
    pub fn new(secret: auth::Secret) -> Self {
        Self {
            realm: "magpie".into(),
            secret,
            // The bound address is advertised unless the server is behind port forwarding.
            public_ip: None,
            // RFC 8656 §3.7: 10 minutes by default; we cap what a client may ask for at an
            // hour, as coturn's `max-allocate-lifetime` does.
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            // RFC 8656 §9 and §12: fixed at 300 s and 600 s.
            permission_lifetime: Duration::from_secs(300),
            channel_lifetime: Duration::from_secs(600),
            // A call keeps its nonce for 10 minutes, then gets one 438 and a new one.
            nonce_lifetime: Duration::from_secs(600),
            // A relayed socket is a file descriptor and about 10 KiB; 10,000 of them fit
            // any machine this runs on.
            max_allocations: 10_000,
            // A call needs one per media path; a handful covers reconnects and two devices.
            max_allocations_per_user: 8,
            // The media of one call is a few hundred peer addresses at most.
            max_permissions: 64,
            // 4 Mbit/s each way covers 720p video with FEC; a 1 s burst absorbs keyframes.
            user_rate: 1_000_000,
            user_burst: 1_000_000,
            // Relaying to the server's own loopback would expose local services.
            allow_loopback_peers: false,
            // A relay on its own relays for anyone with credentials; magpie-server gives
            // it the hub's directory, so a user relays only to their call peer.
            call_peers: None,
            nonce_key: [0; 32],
        }
    }

    /// The secret credentials are checked with (signaling mints them with it too).
    pub fn secret(&self) -> &auth::Secret {
        &self.secret
    }

    /// The REALM (RFC 8489 §14.9), part of the credential key.
    pub fn set_realm(mut self, realm: impl Into<String>) -> Self {
        self.realm = realm.into();
        self
    }

    /// The address XOR-RELAYED-ADDRESS advertises instead of the bound one, for a server
    /// behind port forwarding (the relayed port range must be forwarded unchanged).
    pub fn set_public_ip(mut self, ip: Option<IpAddr>) -> Self {
        self.public_ip = ip;
        self
    }

    /// Most allocations in all.
    pub fn set_max_allocations(mut self, max: usize) -> Self {
        self.max_allocations = max;
        self
    }

    /// Most allocations one user may hold at once (486 beyond).
    pub fn set_max_allocations_per_user(mut self, max: usize) -> Self {
        self.max_allocations_per_user = max;
        self
    }

    /// Bytes per second one user may relay in both directions, and the burst above it.
    pub fn set_user_bandwidth(mut self, rate: u64, burst: u64) -> Self {
        self.user_rate = rate;
        self.user_burst = burst;
        self
    }

    /// Whether peers may be loopback addresses (tests on one machine).
    pub fn set_allow_loopback_peers(mut self, allow: bool) -> Self {
        self.allow_loopback_peers = allow;
        self
    }

    /// Permissions only towards the allocating user's current call peer, as `peers` (the
    /// hub's directory) knows it, or this relay's own addresses (403 otherwise).
    pub fn set_call_peers(mut self, peers: CallPeers) -> Self {
        self.call_peers = Some(peers);
        self
    }

    /// The key for stateless nonces: random, drawn by the shell.
    pub fn set_nonce_key(mut self, key: [u8; 32]) -> Self {
        self.nonce_key = key;
        self
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            realm,
            secret: _,
            public_ip,
            default_lifetime,
            max_lifetime,
            permission_lifetime,
            channel_lifetime,
            nonce_lifetime,
            max_allocations,
            max_allocations_per_user,
            max_permissions,
            user_rate,
            user_burst,
            allow_loopback_peers,
            call_peers,
            nonce_key: _,
        } = self;
        f.debug_struct("relay::Config")
            .field("realm", realm)
            .field("public_ip", public_ip)
            .field("default_lifetime", default_lifetime)
            .field("max_lifetime", max_lifetime)
            .field("permission_lifetime", permission_lifetime)
            .field("channel_lifetime", channel_lifetime)
            .field("nonce_lifetime", nonce_lifetime)
            .field("max_allocations", max_allocations)
            .field("max_allocations_per_user", max_allocations_per_user)
            .field("max_permissions", max_permissions)
            .field("user_rate", user_rate)
            .field("user_burst", user_burst)
            .field("allow_loopback_peers", allow_loopback_peers)
            .field("call_peers", call_peers)
            .finish_non_exhaustive()
    }
}

/// Why a datagram was refused or dropped. Each is counted ([`Stats::refusals`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// Not STUN or ChannelData, or a STUN message that does not parse (dropped).
    Malformed,
    /// A STUN message the relay does not handle: a response, an unknown indication or
    /// method (400 for a request, dropped otherwise).
    Unsupported,
    /// A request without MESSAGE-INTEGRITY (401 with realm and nonce).
    Unauthenticated,
    /// A request missing an attribute it needs, or with a bad one (400).
    BadRequest,
    /// A nonce that is stale or not ours (438 with a new one).
    StaleNonce,
    /// A user name that is not `expiry:user`, or a wrong password (401).
    WrongCredentials,
    /// REST credentials past their expiry (401).
    ExpiredCredentials,
    /// Credentials other than the ones that made the allocation (441).
    CredentialsMismatch,
    /// A request or data for an allocation that does not exist (437, or dropped).
    NoAllocation,
    /// An Allocate from a client that already has an allocation (437).
    AllocationExists,
    /// REQUESTED-TRANSPORT other than UDP (442), or an IPv6 family (440).
    UnsupportedTransport,
    /// The user has as many allocations as allowed (486).
    UserQuota,
    /// The relay has as many allocations as allowed, or no port to bind (508).
    Capacity,
    /// A peer address the relay does not relay to: loopback, multicast, unspecified (403).
    ForbiddenPeer,
    /// A peer address where the user's call peer is not, nor this relay (403).
    OutsideCall,
    /// Too many permissions on one allocation (508).
    TooManyPermissions,
    /// Data to or from a peer without a permission (dropped).
    NoPermission,
    /// ChannelData on a channel that is not bound (dropped).
    UnboundChannel,
    /// Data over the user's bandwidth (dropped).
    Bandwidth,
}

impl Refusal {
    /// Every reason, in the order of [`Stats::refusals`].
    pub const ALL: [Refusal; 19] = [
        Self::Malformed,
        Self::Unsupported,
        Self::Unauthenticated,
        Self::BadRequest,
        Self::StaleNonce,
        Self::WrongCredentials,
        Self::ExpiredCredentials,
        Self::CredentialsMismatch,
        Self::NoAllocation,
        Self::AllocationExists,
        Self::UnsupportedTransport,
        Self::UserQuota,
        Self::Capacity,
        Self::ForbiddenPeer,
        Self::OutsideCall,
        Self::TooManyPermissions,
        Self::NoPermission,
        Self::UnboundChannel,
        Self::Bandwidth,
    ];

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// What the relay has done.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams relayed from clients to peers, and their payload bytes.
    pub to_peers: (u64, u64),
    /// Datagrams relayed from peers to clients, and their payload bytes.
    pub to_clients: (u64, u64),
    /// Allocations now.
    pub allocations: usize,
    /// Allocations moved to a client's new 5-tuple with a mobility ticket (RFC 8016).
    pub moves: u64,
    /// Refusals by reason, in the order of [`Refusal::ALL`].
    pub refusals: [u64; Refusal::ALL.len()],
}

impl Stats {
    /// How many times the relay refused for `reason`.
    pub fn refused(&self, reason: Refusal) -> u64 {
        self.refusals[reason.index()]
    }

    /// The count of every refusal.
    pub fn total_refused(&self) -> u64 {
        self.refusals.iter().sum()
    }
}
