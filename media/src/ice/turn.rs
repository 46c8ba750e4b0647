//! A TURN client (RFC 8656) over UDP, sans-IO: one allocation on one server, for the
//! call's one socket.
//!
//! It allocates with the long-term credential mechanism (RFC 8489 §9.2): the first
//! Allocate goes out without credentials, the server answers 401 with a REALM and a
//! NONCE, and the request is repeated with USERNAME, REALM, NONCE and
//! MESSAGE-INTEGRITY; a 438 (stale nonce) repeats it with the new nonce (a few times at
//! most). It refreshes the allocation before it expires, installs a permission
//! (CreatePermission) and binds a channel (ChannelBind) for each peer address the call
//! asks for, and refreshes them. A peer the server refuses (403) is reported once and
//! not asked for again; addresses no relay can reach (loopback, link-local) are never
//! asked for. When the call's path goes silent, [`TurnClient::probe`] asks the server
//! whether the allocation still stands (a NAT that forgot our mapping moves us to a new
//! port, where the server knows no allocation). The Allocate asks for a mobility ticket
//! (RFC 8016) and every Refresh carries it, so a server that supports mobility (ours)
//! moves the allocation to our new port instead, keeping the relayed address the peer
//! knows ([`TurnEvent::Moved`]); a server that refuses it (coturn without `--mobility`
//! answers 405) is asked again without. Without a ticket, [`TurnClient::reallocate`]
//! makes a new allocation after one was lost.
//!
//! Data to a peer goes out as ChannelData once the channel is bound, as a Send
//! indication before ([`TurnClient::wrap`]); data from the server comes back as
//! ChannelData or Data indications and [`TurnClient::handle_datagram`] unwraps it into
//! the peer's address and the payload. Requests and their responses go through the
//! `stun` crate's codec; ChannelData and the two indications' attributes are read by
//! hand, since they carry every relayed media packet.
//!
//! Time comes in as arguments; datagrams for the server come out of
//! [`TurnClient::poll_transmit`], what happened out of [`TurnClient::poll_event`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use stun::attributes::{
    ATTR_CHANNEL_NUMBER, ATTR_DATA, ATTR_LIFETIME, ATTR_NONCE, ATTR_REALM,
    ATTR_REQUESTED_TRANSPORT, ATTR_USERNAME, ATTR_XOR_PEER_ADDRESS, ATTR_XOR_RELAYED_ADDRESS,
};
use stun::error_code::ErrorCodeAttribute;
use stun::fingerprint::FINGERPRINT;
use stun::integrity::MessageIntegrity;
use stun::message::{
    CLASS_ERROR_RESPONSE, CLASS_INDICATION, CLASS_REQUEST, CLASS_SUCCESS_RESPONSE, Getter,
    METHOD_ALLOCATE, METHOD_CHANNEL_BIND, METHOD_CREATE_PERMISSION, METHOD_REFRESH, METHOD_SEND,
    Message, MessageType, Method, Setter,
};
use stun::textattrs::TextAttribute;
use stun::xoraddr::XorMappedAddress;
use tracing::{debug, trace};

use self::config::MAX_REALM_OR_NONCE;
pub use self::config::TurnConfig;
pub use self::outputs::{Relayed, TurnCounters, TurnError, TurnEvent, TurnFailure, TurnTransmit};
use self::wire::{add_peer, lifetime, ticket};
pub use self::wire::{data_indication, relayable};

mod config;
mod outputs;
mod wire;

/// MOBILITY-TICKET (RFC 8016 §3.1): empty in an Allocate, it asks the server for a
/// ticket; the server's ticket in a Refresh from a new 5-tuple moves the allocation
/// there (our NAT gave us a new port), keeping its relayed address, permissions and
/// channels.
pub const ATTR_MOBILITY_TICKET: stun::attributes::AttrType = stun::attributes::AttrType(0x8030);

/// The first channel number (RFC 8656 §12).
const FIRST_CHANNEL: u16 = 0x4000;
/// The last channel number RFC 8656 allows.
const LAST_CHANNEL: u16 = 0x4fff;
/// REQUESTED-TRANSPORT: UDP (RFC 8656 §18.7), then three reserved bytes.
const UDP: [u8; 4] = [17, 0, 0, 0];

/// The allocation's life.
#[derive(Debug, Clone, Copy)]
enum State {
    Allocating {
        deadline: Instant,
    },
    Allocated {
        relayed: SocketAddr,
        refresh_at: Instant,
    },
    Failed,
}

/// What a transaction asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Allocate,
    Refresh,
    /// Deallocation (Refresh with LIFETIME 0).
    Release,
    Permission(IpAddr),
    Bind(SocketAddr, u16),
}

struct Pending {
    kind: Kind,
    /// How many 438 (stale nonce) answers led to this request.
    stale: u8,
    request: Vec<u8>,
    next_send: Instant,
    rto: Duration,
    attempts: u32,
}

/// The allocation is probed at most this often while the path through it is silent.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// Allocations made again after a loss, at most, in one call (each one leaves a stale
/// allocation on the server until its lifetime runs out).
const MAX_REALLOCATIONS: u32 = 3;
/// Attempts per request: RFC 8489 §6.2.1's Rc = 7.
const ATTEMPTS: u32 = 7;
/// A request answered 438 (stale nonce) this many times in a row with a fresh nonce
/// each time is given up: a server that never accepts its own nonces would otherwise
/// be asked forever.
const MAX_STALE: u8 = 3;
/// Permissions last 300 s (RFC 8656 §9); refreshed a minute early.
const PERMISSION_REFRESH: Duration = Duration::from_secs(240);
/// Channels last 600 s (RFC 8656 §12); refreshed a minute early.
const CHANNEL_REFRESH: Duration = Duration::from_secs(540);

#[derive(Debug, Clone, Copy)]
struct Permission {
    installed: bool,
    refresh_at: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Channel {
    number: u16,
    bound: bool,
    refresh_at: Instant,
}

/// A TURN client. See the module docs.
pub struct TurnClient {
    config: TurnConfig,
    state: State,
    realm: Option<String>,
    nonce: Option<String>,
    salt: [u8; 12],
    next_tid: u64,
    permissions: HashMap<IpAddr, Permission>,
    channels: HashMap<SocketAddr, Channel>,
    /// Peers the server refused a permission or channel for (403 Forbidden: coturn's
    /// denied peer ranges, our relay's peers outside the call): not asked for again,
    /// so one refused candidate costs one request, not one per check.
    refused: HashSet<IpAddr>,
    /// Peers asked for before the allocation was up.
    wanted: Vec<SocketAddr>,
    pending: HashMap<[u8; 12], Pending>,
    transmits: VecDeque<TurnTransmit>,
    events: VecDeque<TurnEvent>,
    counters: TurnCounters,
    /// When the allocation was last probed (see [`TurnClient::probe`]).
    last_probe: Option<Instant>,
    /// Whether Allocate asks for a mobility ticket (until a server refuses it).
    mobility: bool,
    /// The server's mobility ticket for our allocation: a Refresh that carries it
    /// from a new 5-tuple moves the allocation there.
    ticket: Option<Vec<u8>>,
    /// Whether the allocation was lost after it was made (not refused, not closed).
    lost: bool,
    /// Allocations made again after one was lost.
    reallocations: u32,
    now: Instant,
}

impl fmt::Debug for TurnClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnClient")
            .field("server", &self.config.server)
            .field("state", &self.state)
            .field("permissions", &self.permissions.len())
            .field("channels", &self.channels.len())
            .finish_non_exhaustive()
    }
}

impl TurnClient {
    /// The server this client talks to: only datagrams from it are TURN.
    pub fn server(&self) -> SocketAddr {
        self.config.server
    }

    /// The relayed address, once allocated.
    pub fn relayed(&self) -> Option<SocketAddr> {
        match self.state {
            State::Allocated { relayed, .. } => Some(relayed),
            _ => None,
        }
    }

    /// Whether the allocation failed or was lost.
    pub fn is_failed(&self) -> bool {
        matches!(self.state, State::Failed)
    }

    /// Asks the server at once whether our allocation still stands (a Refresh), at most
    /// once a second. Called when the path went silent: a NAT that forgot our mapping
    /// gives our next packets a new port, the server holds no allocation for that
    /// 5-tuple, and the answer (437, or a new nonce and then 437) says so; the
    /// allocation is then lost ([`TurnFailure::Lost`]) and [`TurnClient::reallocate`]
    /// can make a new one.
    pub fn probe(&mut self, now: Instant) {
        self.advance(now);
        let refreshing = self.pending.values().any(|p| p.kind == Kind::Refresh);
        if !matches!(self.state, State::Allocated { .. })
            || refreshing
            || self.last_probe.is_some_and(|t| now < t + PROBE_EVERY)
        {
            return;
        }
        debug!("probing the allocation");
        self.last_probe = Some(now);
        self.request(Kind::Refresh);
    }

    /// After the allocation was lost, allocates again from scratch (a new 401 dance,
    /// since the server sees a new 5-tuple): permissions and channels are asked for
    /// anew by whoever drives the client, on [`TurnEvent::Allocated`]. At most
    /// [`MAX_REALLOCATIONS`] times; `false` when not lost or out of attempts.
    pub fn reallocate(&mut self, now: Instant) -> bool {
        self.advance(now);
        if !self.lost || self.reallocations >= MAX_REALLOCATIONS {
            return false;
        }
        self.lost = false;
        self.reallocations += 1;
        debug!(attempt = self.reallocations, "allocating again");
        self.state = State::Allocating {
            deadline: now + self.config.timeout,
        };
        self.realm = None;
        self.nonce = None;
        self.permissions.clear();
        self.channels.clear();
        self.pending.clear();
        self.last_probe = None;
        self.request(Kind::Allocate);
        true
    }

    /// What the client counted.
    pub fn counters(&self) -> TurnCounters {
        self.counters
    }

    /// Asks the server to relay to and from `peer`: a permission for its IP and a
    /// channel for the address. Before the allocation is up the peer is remembered.
    /// An address no relay can reach (see [`relayable`]) and a peer the server refused
    /// already are not asked for.
    pub fn permit(&mut self, now: Instant, peer: SocketAddr) {
        self.advance(now);
        if !relayable(peer.ip(), self.config.server.ip()) || self.refused.contains(&peer.ip()) {
            return;
        }
        match self.state {
            State::Allocating { .. } => {
                if !self.wanted.contains(&peer) {
                    self.wanted.push(peer);
                }
            }
            State::Allocated { .. } => self.install(peer),
            State::Failed => {}
        }
    }

    fn install(&mut self, peer: SocketAddr) {
        if !self.permissions.contains_key(&peer.ip()) {
            self.permissions.insert(
                peer.ip(),
                Permission {
                    installed: false,
                    refresh_at: self.now + PERMISSION_REFRESH,
                },
            );
            self.request(Kind::Permission(peer.ip()));
        }
        if !self.channels.contains_key(&peer) {
            let Some(number) = self.free_channel() else {
                return;
            };
            self.channels.insert(
                peer,
                Channel {
                    number,
                    bound: false,
                    refresh_at: self.now + CHANNEL_REFRESH,
                },
            );
            self.request(Kind::Bind(peer, number));
        }
    }

    fn free_channel(&self) -> Option<u16> {
        let used = self.channels.len();
        let number = FIRST_CHANNEL.checked_add(u16::try_from(used).ok()?)?;
        (number <= LAST_CHANNEL).then_some(number)
    }

    /// Wraps `payload` for `peer`: ChannelData once its channel is bound, a Send
    /// indication once its permission is installed, else `None` (dropped and counted:
    /// the server would drop it anyway).
    pub fn wrap(&mut self, peer: SocketAddr, payload: &[u8]) -> Option<Vec<u8>> {
        if let Some(channel) = self.channels.get(&peer).filter(|c| c.bound) {
            let len = u16::try_from(payload.len()).ok()?;
            let mut out = Vec::with_capacity(4 + payload.len());
            out.extend_from_slice(&channel.number.to_be_bytes());
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(payload);
            return Some(out);
        }
        if !self
            .permissions
            .get(&peer.ip())
            .is_some_and(|p| p.installed)
        {
            self.counters.unpermitted += 1;
            return None;
        }
        let mut msg = Message::new();
        msg.typ = MessageType::new(METHOD_SEND, CLASS_INDICATION);
        msg.transaction_id.0 = self.transaction_id();
        msg.write_header();
        let address = XorMappedAddress {
            ip: peer.ip(),
            port: peer.port(),
        };
        address.add_to_as(&mut msg, ATTR_XOR_PEER_ADDRESS).ok()?;
        msg.add(ATTR_DATA, payload);
        Some(msg.raw)
    }

    /// Takes a datagram that came from the server. Returns the relayed data in it, if
    /// it carried any, or `Ok(None)` for a response the client consumed.
    pub fn handle_datagram<'a>(
        &mut self,
        now: Instant,
        bytes: &'a [u8],
    ) -> Result<Option<Relayed<'a>>, TurnError> {
        self.advance(now);
        let result = self.dispatch(bytes);
        if result.is_err() {
            self.counters.refused += 1;
        }
        result
    }

    fn dispatch<'a>(&mut self, bytes: &'a [u8]) -> Result<Option<Relayed<'a>>, TurnError> {
        match bytes.first().map(|b| b >> 6) {
            Some(1) => self.channel_data(bytes).map(Some),
            Some(0) => {
                if let Some(relayed) = data_indication(bytes) {
                    return self.permitted(relayed).map(Some);
                }
                self.response(bytes).map(|()| None)
            }
            _ => Err(TurnError::Malformed),
        }
    }

    fn channel_data<'a>(&self, bytes: &'a [u8]) -> Result<Relayed<'a>, TurnError> {
        let header: [u8; 4] = bytes
            .get(..4)
            .and_then(|h| h.try_into().ok())
            .ok_or(TurnError::Malformed)?;
        let number = u16::from_be_bytes([header[0], header[1]]);
        let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let payload = bytes.get(4..4 + len).ok_or(TurnError::Malformed)?;
        let peer = self
            .channels
            .iter()
            .find(|(_, c)| c.number == number && c.bound)
            .map(|(peer, _)| *peer)
            .ok_or(TurnError::Unexpected)?;
        Ok(Relayed { peer, payload })
    }

    /// Data from a peer we never asked for is not ours to take (the server should not
    /// have relayed it).
    fn permitted<'a>(&self, relayed: Relayed<'a>) -> Result<Relayed<'a>, TurnError> {
        if self.permissions.contains_key(&relayed.peer.ip()) {
            Ok(relayed)
        } else {
            Err(TurnError::Unexpected)
        }
    }

    fn response(&mut self, bytes: &[u8]) -> Result<(), TurnError> {
        let mut msg = Message::new();
        msg.raw = bytes.to_vec();
        msg.decode().map_err(|_| TurnError::Malformed)?;
        let Some(pending) = self.pending.get(&msg.transaction_id.0) else {
            return Err(TurnError::UnknownTransaction);
        };
        let kind = pending.kind;
        if msg.typ.method != method(kind) {
            return Err(TurnError::UnknownTransaction);
        }
        if msg.typ.class == CLASS_SUCCESS_RESPONSE {
            self.integrity()
                .ok_or(TurnError::Unauthenticated)?
                .check(&mut msg)
                .map_err(|_| TurnError::Unauthenticated)?;
            self.pending.remove(&msg.transaction_id.0);
            self.success(kind, &msg);
            Ok(())
        } else if msg.typ.class == CLASS_ERROR_RESPONSE {
            let mut code = ErrorCodeAttribute::default();
            code.get_from(&msg).map_err(|_| TurnError::Malformed)?;
            let code = code.code.0;
            // Errors other than the credential dance must carry integrity once we
            // have credentials; 401 and 438 cannot (they hand out the realm or nonce).
            if code != 401 && code != 438 && self.integrity().is_some() {
                self.integrity()
                    .ok_or(TurnError::Unauthenticated)?
                    .check(&mut msg)
                    .map_err(|_| TurnError::Unauthenticated)?;
            }
            let stale = self
                .pending
                .remove(&msg.transaction_id.0)
                .map_or(0, |p| p.stale);
            self.error(kind, stale, code, &msg);
            Ok(())
        } else {
            Err(TurnError::Unexpected)
        }
    }

    fn success(&mut self, kind: Kind, msg: &Message) {
        match kind {
            Kind::Allocate => {
                let mut relayed = XorMappedAddress::default();
                if relayed.get_from_as(msg, ATTR_XOR_RELAYED_ADDRESS).is_err() {
                    self.fail(TurnFailure::Refused(0));
                    return;
                }
                let relayed = SocketAddr::new(relayed.ip, relayed.port);
                let mut mapped = XorMappedAddress::default();
                let mapped = mapped
                    .get_from(msg)
                    .ok()
                    .map(|()| SocketAddr::new(mapped.ip, mapped.port));
                let lifetime = lifetime(msg).unwrap_or(self.config.lifetime);
                self.ticket = ticket(msg);
                debug!(%relayed, ?lifetime, mobility = self.ticket.is_some(), "relay allocated");
                self.state = State::Allocated {
                    relayed,
                    refresh_at: self.now + lifetime / 2,
                };
                self.events
                    .push_back(TurnEvent::Allocated { relayed, mapped });
                for peer in std::mem::take(&mut self.wanted) {
                    self.install(peer);
                }
            }
            Kind::Refresh => {
                if let State::Allocated { relayed, .. } = self.state {
                    let lifetime = lifetime(msg).unwrap_or(self.config.lifetime);
                    self.state = State::Allocated {
                        relayed,
                        refresh_at: self.now + lifetime / 2,
                    };
                    // A new ticket answers a Refresh that moved the allocation to the
                    // 5-tuple it came from.
                    if let Some(new) = ticket(msg).filter(|t| self.ticket.as_ref() != Some(t)) {
                        debug!("allocation moved to our new address");
                        self.ticket = Some(new);
                        self.events.push_back(TurnEvent::Moved);
                    }
                }
            }
            Kind::Release => {}
            Kind::Permission(ip) => {
                if let Some(p) = self.permissions.get_mut(&ip) {
                    p.installed = true;
                }
            }
            Kind::Bind(peer, number) => {
                if let Some(c) = self.channels.get_mut(&peer).filter(|c| c.number == number) {
                    c.bound = true;
                }
                // A bound channel installs the permission too (RFC 8656 §12.2).
                if let Some(p) = self.permissions.get_mut(&peer.ip()) {
                    p.installed = true;
                }
            }
        }
    }

    fn error(&mut self, kind: Kind, stale: u8, code: u16, msg: &Message) {
        // The server's realm and nonce go back into every later request: one longer than
        // a request may carry (RFC 8489 §14.9, §14.10) is treated as absent, so the
        // allocation fails instead of a request that cannot be built.
        let text = |attr| {
            TextAttribute::get_from_as(msg, attr)
                .ok()
                .filter(|t| t.text.len() <= MAX_REALM_OR_NONCE)
        };
        let (realm, nonce) = (text(ATTR_REALM), text(ATTR_NONCE));
        match (code, realm, nonce) {
            // The first 401 hands out realm and nonce; a 401 to a request that carried
            // them means the credentials are wrong.
            (401, Some(realm), Some(nonce)) if self.realm.is_none() => {
                self.realm = Some(realm.text);
                self.nonce = Some(nonce.text);
                self.request(kind);
                return;
            }
            // RFC 8489 §9.2.5: a stale nonce is replaced by the one in the answer (and
            // the realm, if it names one) and the request repeated as a new transaction,
            // its integrity computed afresh.
            (438, realm, Some(nonce)) if stale < MAX_STALE => {
                debug!(?kind, "stale nonce: repeating with the new one");
                if let Some(realm) = realm.filter(|_| self.realm.is_some()) {
                    self.realm = Some(realm.text);
                }
                self.nonce = Some(nonce.text);
                self.request_again(kind, stale + 1);
                return;
            }
            _ => {}
        }
        debug!(?kind, code, "TURN error");
        if kind == Kind::Allocate && self.mobility && code == 405 {
            // RFC 8016 §3.4: 405 Mobility Forbidden, from a server that does not offer
            // mobility (coturn without `--mobility`); one that does not know the
            // attribute ignores it (comprehension-optional). Ask once more without it.
            debug!(code, "allocating again without a mobility ticket");
            self.mobility = false;
            self.request(Kind::Allocate);
            return;
        }
        match kind {
            Kind::Allocate => self.fail(if code == 401 || code == 441 {
                TurnFailure::Unauthorized
            } else {
                TurnFailure::Refused(code)
            }),
            Kind::Refresh => self.fail(TurnFailure::Lost),
            Kind::Release => {}
            // RFC 8656 §6.3: 437 means the server holds no allocation for our 5-tuple
            // (our NAT gave us a new port, or the server forgot us): whatever we ask
            // next is refused the same way.
            Kind::Permission(_) | Kind::Bind(..) if code == 437 => self.fail(TurnFailure::Lost),
            Kind::Permission(ip) => {
                self.permissions.remove(&ip);
                self.refuse(ip);
            }
            Kind::Bind(peer, _) => {
                // The number stays taken so numbers are never reused for another peer.
                // The permission, if installed on its own, still carries Send
                // indications; a refused channel is not asked for again.
                if let Some(c) = self.channels.get_mut(&peer) {
                    c.bound = false;
                    c.refresh_at = self.now + CHANNEL_REFRESH;
                }
                self.refuse(peer.ip());
            }
        }
    }

    /// The server will not relay to `ip`: it is not asked for again, and whoever drives
    /// the client hears of it once (the checker stops checking through the relay
    /// towards it).
    fn refuse(&mut self, ip: IpAddr) {
        if self.refused.insert(ip) {
            self.events.push_back(TurnEvent::PeerRefused(ip));
        }
    }

    fn fail(&mut self, why: TurnFailure) {
        if !matches!(self.state, State::Failed) {
            debug!(%why, "relay failed");
            self.lost = why == TurnFailure::Lost && matches!(self.state, State::Allocated { .. });
            self.state = State::Failed;
            self.pending.clear();
            self.events.push_back(TurnEvent::Failed(why));
        }
    }

    fn integrity(&self) -> Option<MessageIntegrity> {
        let realm = self.realm.clone()?;
        Some(MessageIntegrity::new_long_term_integrity(
            self.config.username.clone(),
            realm,
            self.config.password.clone(),
        ))
    }

    /// Sends a new transaction for `kind`.
    fn request(&mut self, kind: Kind) {
        self.request_again(kind, 0);
    }

    /// Sends a new transaction for `kind`, the `stale`-th repetition after a 438.
    fn request_again(&mut self, kind: Kind, stale: u8) {
        let tid = self.transaction_id();
        let mut msg = Message::new();
        msg.typ = MessageType::new(method(kind), CLASS_REQUEST);
        msg.transaction_id.0 = tid;
        msg.write_header();
        match kind {
            Kind::Allocate => {
                msg.add(ATTR_REQUESTED_TRANSPORT, &UDP);
                let secs = u32::try_from(self.config.lifetime.as_secs()).unwrap_or(u32::MAX);
                msg.add(ATTR_LIFETIME, &secs.to_be_bytes());
                if self.mobility {
                    msg.add(ATTR_MOBILITY_TICKET, &[]);
                }
            }
            Kind::Refresh => {
                let secs = u32::try_from(self.config.lifetime.as_secs()).unwrap_or(u32::MAX);
                msg.add(ATTR_LIFETIME, &secs.to_be_bytes());
                if let Some(ticket) = &self.ticket {
                    msg.add(ATTR_MOBILITY_TICKET, ticket);
                }
            }
            Kind::Release => msg.add(ATTR_LIFETIME, &0u32.to_be_bytes()),
            Kind::Permission(ip) => add_peer(&mut msg, SocketAddr::new(ip, 0)),
            Kind::Bind(peer, number) => {
                let mut value = [0u8; 4];
                value[..2].copy_from_slice(&number.to_be_bytes());
                msg.add(ATTR_CHANNEL_NUMBER, &value);
                add_peer(&mut msg, peer);
            }
        }
        if let (Some(integrity), Some(realm), Some(nonce)) =
            (self.integrity(), &self.realm, &self.nonce)
        {
            let attrs: [&dyn Setter; 3] = [
                &TextAttribute::new(ATTR_USERNAME, self.config.username.clone()),
                &TextAttribute::new(ATTR_REALM, realm.clone()),
                &TextAttribute::new(ATTR_NONCE, nonce.clone()),
            ];
            for attr in attrs {
                attr.add_to(&mut msg)
                    .expect("credentials within STUN's attribute size");
            }
            integrity
                .add_to(&mut msg)
                .expect("integrity always fits a request");
        }
        FINGERPRINT
            .add_to(&mut msg)
            .expect("a fingerprint always fits");
        trace!(?kind, "TURN request");
        let rto = self.config.initial_rto;
        self.pending.insert(
            tid,
            Pending {
                kind,
                stale,
                request: msg.raw.clone(),
                next_send: self.now + rto,
                rto,
                attempts: 1,
            },
        );
        self.transmits.push_back(TurnTransmit {
            destination: self.config.server,
            contents: msg.raw,
        });
    }

    /// Releases the allocation (a Refresh with LIFETIME 0), once, without waiting.
    pub fn close(&mut self, now: Instant) {
        self.advance(now);
        if matches!(self.state, State::Allocated { .. }) {
            self.request(Kind::Release);
            self.state = State::Failed;
            self.pending.clear();
        }
    }

    /// Retransmits, refreshes, gives up.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        match self.state {
            State::Allocating { deadline } if now >= deadline => {
                self.fail(TurnFailure::Timeout);
                return;
            }
            State::Allocated {
                relayed,
                refresh_at,
            } if now >= refresh_at => {
                self.state = State::Allocated {
                    relayed,
                    refresh_at: now + self.config.lifetime / 2,
                };
                self.request(Kind::Refresh);
            }
            _ => {}
        }
        self.refresh_peers(now);
        let mut lost = Vec::new();
        for (tid, p) in &mut self.pending {
            if now < p.next_send {
                continue;
            }
            if p.attempts >= ATTEMPTS {
                lost.push((*tid, p.kind));
                continue;
            }
            p.attempts += 1;
            p.rto = (p.rto * 2).min(Duration::from_secs(2));
            p.next_send = now + p.rto;
            self.counters.retransmits += 1;
            self.transmits.push_back(TurnTransmit {
                destination: self.config.server,
                contents: p.request.clone(),
            });
        }
        for (tid, kind) in lost {
            self.pending.remove(&tid);
            match kind {
                Kind::Allocate => self.fail(TurnFailure::Timeout),
                Kind::Refresh => self.fail(TurnFailure::Lost),
                _ => {}
            }
        }
    }

    fn refresh_peers(&mut self, now: Instant) {
        if !matches!(self.state, State::Allocated { .. }) {
            return;
        }
        let due: Vec<IpAddr> = self
            .permissions
            .iter_mut()
            .filter(|(_, p)| p.installed && now >= p.refresh_at)
            .map(|(ip, p)| {
                p.refresh_at = now + PERMISSION_REFRESH;
                *ip
            })
            .collect();
        for ip in due {
            self.request(Kind::Permission(ip));
        }
        let due: Vec<(SocketAddr, u16)> = self
            .channels
            .iter_mut()
            .filter(|(_, c)| now >= c.refresh_at)
            .map(|(peer, c)| {
                c.refresh_at = now + CHANNEL_REFRESH;
                (*peer, c.number)
            })
            .collect();
        for (peer, number) in due {
            self.request(Kind::Bind(peer, number));
        }
    }

    /// The next datagram for the server.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<TurnTransmit> {
        self.transmits.pop_front()
    }

    /// The next thing that happened.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<TurnEvent> {
        self.events.pop_front()
    }

    /// When [`TurnClient::handle_timeout`] wants to be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let state = match self.state {
            State::Allocating { deadline } => Some(deadline),
            State::Allocated { refresh_at, .. } => Some(refresh_at),
            State::Failed => return None,
        };
        let peers = self
            .permissions
            .values()
            .filter(|p| p.installed)
            .map(|p| p.refresh_at)
            .chain(self.channels.values().map(|c| c.refresh_at));
        let retransmit = self.pending.values().map(|p| p.next_send);
        state.into_iter().chain(peers).chain(retransmit).min()
    }

    fn transaction_id(&mut self) -> [u8; 12] {
        self.next_tid += 1;
        super::transaction_id(self.salt, self.next_tid - 1)
    }

    fn advance(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }
}

fn method(kind: Kind) -> Method {
    match kind {
        Kind::Allocate => METHOD_ALLOCATE,
        Kind::Refresh | Kind::Release => METHOD_REFRESH,
        Kind::Permission(_) => METHOD_CREATE_PERMISSION,
        Kind::Bind(..) => METHOD_CHANNEL_BIND,
    }
}

#[cfg(test)]
mod tests;
