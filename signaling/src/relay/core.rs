//! The sans-IO relay: allocations, permissions, channels, credentials, quotas.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::time::Duration;

use stun::attributes::{
    ATTR_CHANNEL_NUMBER, ATTR_LIFETIME, ATTR_MESSAGE_INTEGRITY, ATTR_NONCE, ATTR_REALM,
    ATTR_REQUESTED_ADDRESS_FAMILY, ATTR_REQUESTED_TRANSPORT, ATTR_USERNAME, ATTR_XOR_PEER_ADDRESS,
};
use stun::error_code::{ErrorCode, ErrorCodeAttribute};
use stun::fingerprint::FINGERPRINT;
use stun::integrity::MessageIntegrity;
use stun::message::{
    CLASS_ERROR_RESPONSE, CLASS_REQUEST, CLASS_SUCCESS_RESPONSE, METHOD_ALLOCATE, METHOD_BINDING,
    METHOD_CHANNEL_BIND, METHOD_CREATE_PERMISSION, METHOD_REFRESH, Message, MessageType, Setter,
};
use stun::textattrs::TextAttribute;
use stun::xoraddr::XorMappedAddress;
use tokio::time::Instant;
use tracing::{debug, trace};
use turn::proto::lifetime::Lifetime;
use turn::proto::relayaddr::RelayedAddress;

use super::auth::{NonceCheck, Nonces, split_username};
use super::wire::{self, Kind};
use super::{Config, Refusal, Stats};
use crate::pii::Pii;

/// One allocation, as the shell knows it: the key for its relayed socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AllocationId(pub u32);

/// A control datagram for a client (a response).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The client.
    pub destination: SocketAddr,
    /// The STUN message.
    pub contents: Vec<u8>,
}

/// Data for a peer, to send from the allocation's relayed socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward<'a> {
    /// Whose relayed socket sends it.
    pub allocation: AllocationId,
    /// Where to.
    pub peer: SocketAddr,
    /// The application data (a slice of the datagram received).
    pub payload: &'a [u8],
}

/// What the shell must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Bind a relayed socket for this allocation, then call [`Relay::handle_bound`].
    Bind(AllocationId),
    /// The allocation is gone: close its relayed socket.
    Release(AllocationId),
}

/// The relay core. See the [module docs](super).
#[derive(Debug)]
pub struct Relay {
    config: Config,
    nonces: Nonces,
    /// The wall clock at `epoch`, in Unix seconds: REST credentials and nonces expire
    /// in wall-clock time, which this derives from `now`.
    epoch: (Instant, u64),
    allocations: HashMap<AllocationId, Allocation>,
    by_client: HashMap<SocketAddr, AllocationId>,
    users: HashMap<Box<str>, User>,
    next_id: u32,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: Stats,
    next_sweep: Instant,
    indications: u64,
}

#[derive(Debug)]
struct Allocation {
    client: SocketAddr,
    /// The full REST user name (`expiry:user`), which later requests must repeat.
    username: Box<str>,
    /// The user part, for quotas.
    user: Box<str>,
    key: [u8; 16],
    /// `None` until the shell has bound the relayed socket.
    relayed: Option<SocketAddr>,
    /// The Allocate's transaction and, once answered, the answer (for retransmissions).
    transaction: [u8; 12],
    response: Option<Vec<u8>>,
    lifetime: Duration,
    expires: Instant,
    permissions: Vec<(IpAddr, Instant)>,
    channels: Vec<Channel>,
}

#[derive(Debug, Clone, Copy)]
struct Channel {
    number: u16,
    peer: SocketAddr,
    expires: Instant,
}

#[derive(Debug)]
struct User {
    allocations: usize,
    /// Token bucket in bytes.
    tokens: u64,
    refilled: Instant,
}

/// A refused request: why, and the error response.
struct Refused(Refusal, ErrorCodeAttribute);

/// What authentication gave a request.
struct Auth {
    username: Box<str>,
    user: Box<str>,
    key: [u8; 16],
}

/// Expiry is checked once a second: lifetimes are minutes long.
const SWEEP: Duration = Duration::from_secs(1);

impl Relay {
    /// A relay with no allocations, at `now`, when the wall clock reads `unix_now`.
    pub fn new(config: Config, now: Instant, unix_now: u64) -> Self {
        let nonces = Nonces::new(&config.nonce_key);
        Self {
            config,
            nonces,
            epoch: (now, unix_now),
            allocations: HashMap::new(),
            by_client: HashMap::new(),
            users: HashMap::new(),
            next_id: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            next_sweep: now + SWEEP,
            indications: 0,
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        Stats {
            allocations: self.allocations.len(),
            ..self.stats.clone()
        }
    }

    /// A datagram from `from` on the TURN port. Returns data to relay to a peer; responses
    /// come out of [`poll_transmit`](Self::poll_transmit).
    pub fn handle_client<'a>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &'a [u8],
    ) -> Option<Forward<'a>> {
        match wire::kind(datagram) {
            Kind::ChannelData => self.channel_data(now, from, datagram),
            Kind::Stun if wire::send_indication(datagram).is_some() => {
                self.send_indication(now, from, datagram)
            }
            Kind::Stun => {
                self.request(now, from, datagram);
                None
            }
            Kind::Other => self.refuse(Refusal::Malformed),
        }
    }

    /// A datagram from `from` on allocation `id`'s relayed socket. Its payload lies at
    /// `payload` in `buf`, with [`HEADROOM`](super::HEADROOM) bytes before it and
    /// [`TAILROOM`](super::TAILROOM) after. Writes the message for the client around it
    /// and returns the client and the message's range, or `None` when it is dropped.
    pub fn handle_peer(
        &mut self,
        now: Instant,
        id: AllocationId,
        from: SocketAddr,
        buf: &mut [u8],
        payload: Range<usize>,
    ) -> Option<(SocketAddr, Range<usize>)> {
        let Some(allocation) = self.allocations.get(&id) else {
            return self.refuse(Refusal::NoAllocation);
        };
        if !allocation.permitted(now, from.ip()) {
            return self.refuse(Refusal::NoPermission);
        }
        let client = allocation.client;
        let channel = allocation
            .channels
            .iter()
            .find(|c| c.peer == from && c.expires > now)
            .map(|c| c.number);
        let len = payload.len();
        if !self.spend(now, id, len) {
            return self.refuse(Refusal::Bandwidth);
        }
        let range = match channel {
            Some(number) => wire::write_channel_data(buf, number, payload),
            None => {
                self.indications += 1;
                wire::data_indication(buf, from, payload, self.indications)
            }
        };
        let Some(range) = range else {
            return self.refuse(Refusal::Malformed);
        };
        self.stats.to_clients.0 += 1;
        self.stats.to_clients.1 += len as u64;
        Some((client, range))
    }

    /// The shell bound allocation `id`'s relayed socket at `bound` (the local address),
    /// or could not (`None`): answers the Allocate.
    pub fn handle_bound(&mut self, now: Instant, id: AllocationId, bound: Option<SocketAddr>) {
        let Some(allocation) = self.allocations.get_mut(&id) else {
            // Gone meanwhile; the shell's socket is released by the Release event.
            return;
        };
        let client = allocation.client;
        let mut request = Message::new();
        request.typ = MessageType::new(METHOD_ALLOCATE, CLASS_REQUEST);
        request.transaction_id.0 = allocation.transaction;
        let key = allocation.key;
        let Some(bound) = bound else {
            self.remove(id, false);
            self.stats.refusals[Refusal::Capacity.index()] += 1;
            let code = error(508, "Insufficient Capacity");
            self.respond(client, &request, Err(code), vec![], Some(&key));
            return;
        };
        let advertised = SocketAddr::new(self.config.public_ip.unwrap_or(bound.ip()), bound.port());
        allocation.relayed = Some(advertised);
        let lifetime = allocation.lifetime;
        allocation.expires = now + lifetime;
        debug!(?id, client = %Pii(client), relayed = %advertised, "allocated");
        let attrs: Vec<Box<dyn Setter>> = vec![
            Box::new(RelayedAddress {
                ip: advertised.ip(),
                port: advertised.port(),
            }),
            Box::new(Lifetime(lifetime)),
            Box::new(XorMappedAddress {
                ip: client.ip(),
                port: client.port(),
            }),
        ];
        let response = self.respond(client, &request, Ok(()), attrs, Some(&key));
        if let Some(allocation) = self.allocations.get_mut(&id) {
            allocation.response = response;
        }
    }

    /// Expires allocations, permissions and channels whose time has come.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now + SWEEP;
        let expired: Vec<AllocationId> = self
            .allocations
            .iter()
            .filter(|(_, a)| a.expires <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            debug!(?id, "allocation expired");
            self.remove(id, true);
        }
        for allocation in self.allocations.values_mut() {
            allocation.permissions.retain(|(_, expires)| *expires > now);
            allocation.channels.retain(|c| c.expires > now);
        }
    }

    /// The next response to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next thing the shell must do.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.allocations.is_empty()).then_some(self.next_sweep)
    }

    fn unix(&self, now: Instant) -> u64 {
        self.epoch.1 + now.saturating_duration_since(self.epoch.0).as_secs()
    }

    fn refuse<T>(&mut self, reason: Refusal) -> Option<T> {
        trace!(?reason, "refused");
        self.stats.refusals[reason.index()] += 1;
        None
    }

    fn channel_data<'a>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &'a [u8],
    ) -> Option<Forward<'a>> {
        let Some((number, data)) = wire::channel_data(datagram) else {
            return self.refuse(Refusal::Malformed);
        };
        let Some(&id) = self.by_client.get(&from) else {
            return self.refuse(Refusal::NoAllocation);
        };
        let allocation = self.allocations.get(&id)?;
        let Some(peer) = allocation
            .channels
            .iter()
            .find(|c| c.number == number && c.expires > now)
            .map(|c| c.peer)
        else {
            return self.refuse(Refusal::UnboundChannel);
        };
        self.forward(now, id, peer, &datagram[data])
    }

    fn send_indication<'a>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &'a [u8],
    ) -> Option<Forward<'a>> {
        let (peer, data) = wire::send_indication(datagram)?;
        let Some(&id) = self.by_client.get(&from) else {
            return self.refuse(Refusal::NoAllocation);
        };
        self.forward(now, id, peer, &datagram[data])
    }

    fn forward<'a>(
        &mut self,
        now: Instant,
        id: AllocationId,
        peer: SocketAddr,
        payload: &'a [u8],
    ) -> Option<Forward<'a>> {
        let allocation = self.allocations.get(&id)?;
        if allocation.relayed.is_none() || !allocation.permitted(now, peer.ip()) {
            return self.refuse(Refusal::NoPermission);
        }
        if !self.spend(now, id, payload.len()) {
            return self.refuse(Refusal::Bandwidth);
        }
        self.stats.to_peers.0 += 1;
        self.stats.to_peers.1 += payload.len() as u64;
        Some(Forward {
            allocation: id,
            peer,
            payload,
        })
    }

    /// Takes `len` bytes from the token bucket of allocation `id`'s user.
    fn spend(&mut self, now: Instant, id: AllocationId, len: usize) -> bool {
        let Some(user) = self.allocations.get(&id).map(|a| &a.user) else {
            return false;
        };
        let Some(bucket) = self.users.get_mut(user) else {
            return false;
        };
        let elapsed = now.saturating_duration_since(bucket.refilled);
        let earned = elapsed.as_nanos() * u128::from(self.config.user_rate) / 1_000_000_000;
        if earned > 0 {
            let earned = u64::try_from(earned).unwrap_or(u64::MAX);
            bucket.tokens = bucket
                .tokens
                .saturating_add(earned)
                .min(self.config.user_burst);
            bucket.refilled = now;
        }
        let len = len as u64;
        if bucket.tokens < len {
            return false;
        }
        bucket.tokens -= len;
        true
    }

    fn request(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let mut m = Message::new();
        m.raw.clear();
        m.raw.extend_from_slice(datagram);
        if m.decode().is_err() {
            self.refuse::<()>(Refusal::Malformed);
            return;
        }
        if m.typ.class != CLASS_REQUEST {
            self.refuse::<()>(Refusal::Unsupported);
            return;
        }
        if m.typ.method == METHOD_BINDING {
            if let Some(reply) = magpie_media::ice::binding_response(datagram, from) {
                self.transmits.push_back(Transmit {
                    destination: from,
                    contents: reply,
                });
            }
            return;
        }
        let known = [
            METHOD_ALLOCATE,
            METHOD_REFRESH,
            METHOD_CREATE_PERMISSION,
            METHOD_CHANNEL_BIND,
        ];
        if !known.contains(&m.typ.method) {
            self.refuse::<()>(Refusal::Unsupported);
            self.respond(from, &m, Err(error(400, "")), vec![], None);
            return;
        }
        let auth = match self.authenticate(now, from, &mut m) {
            Ok(auth) => auth,
            Err((Refused(reason, code), challenge)) => {
                self.refuse::<()>(reason);
                let mut attrs: Vec<Box<dyn Setter>> = vec![];
                if challenge {
                    let nonce = self.nonce(now, from);
                    attrs.push(Box::new(TextAttribute::new(
                        ATTR_REALM,
                        self.config.realm.clone(),
                    )));
                    attrs.push(Box::new(TextAttribute::new(ATTR_NONCE, nonce)));
                }
                self.respond(from, &m, Err(code), attrs, None);
                return;
            }
        };
        let result = match m.typ.method {
            METHOD_ALLOCATE => self.allocate(now, from, &m, &auth),
            method => match self.by_client.get(&from).copied() {
                None => Err(Refused(
                    Refusal::NoAllocation,
                    error(437, "Allocation Mismatch"),
                )),
                Some(id)
                    if self.allocations.get(&id).map(|a| &a.username) != Some(&auth.username) =>
                {
                    let _ = id;
                    Err(Refused(
                        Refusal::CredentialsMismatch,
                        error(441, "Wrong Credentials"),
                    ))
                }
                Some(id) if method == METHOD_REFRESH => self.refresh(now, id, &m),
                Some(id) if method == METHOD_CREATE_PERMISSION => self.permit(now, id, &m),
                Some(id) => self.bind_channel(now, id, &m),
            },
        };
        match result {
            Ok(None) => {}
            Ok(Some(attrs)) => {
                self.respond(from, &m, Ok(()), attrs, Some(&auth.key));
            }
            Err(Refused(reason, code)) => {
                self.refuse::<()>(reason);
                self.respond(from, &m, Err(code), vec![], Some(&auth.key));
            }
        }
    }

    fn nonce(&self, now: Instant, client: SocketAddr) -> String {
        let expiry = self.unix(now) + self.config.nonce_lifetime.as_secs();
        self.nonces.issue(client, expiry)
    }

    /// RFC 8489 §9.2.4 with REST user names. On failure: the reason, the error, and
    /// whether to add a realm and fresh nonce.
    fn authenticate(
        &self,
        now: Instant,
        from: SocketAddr,
        m: &mut Message,
    ) -> Result<Auth, (Refused, bool)> {
        let Ok(integrity) = m.get(ATTR_MESSAGE_INTEGRITY) else {
            return Err((
                Refused(Refusal::Unauthenticated, error(401, "Unauthorized")),
                true,
            ));
        };
        let text = |attr| TextAttribute::get_from_as(m, attr).map(|t| t.text);
        let (Ok(username), Ok(_realm), Ok(nonce)) =
            (text(ATTR_USERNAME), text(ATTR_REALM), text(ATTR_NONCE))
        else {
            return Err((
                Refused(Refusal::BadRequest, error(400, "Bad Request")),
                false,
            ));
        };
        let unix = self.unix(now);
        if self.nonces.check(&nonce, from, unix) != NonceCheck::Fresh {
            return Err((
                Refused(Refusal::StaleNonce, error(438, "Stale Nonce")),
                true,
            ));
        }
        let Some((expiry, user)) = split_username(&username) else {
            return Err((
                Refused(Refusal::WrongCredentials, error(401, "Unauthorized")),
                true,
            ));
        };
        if expiry <= unix {
            return Err((
                Refused(Refusal::ExpiredCredentials, error(401, "Unauthorized")),
                true,
            ));
        }
        if integrity.len() != 20 {
            return Err((
                Refused(Refusal::BadRequest, error(400, "Bad Request")),
                false,
            ));
        }
        let password = self.config.secret.password(&username);
        let key = super::auth::long_term_key(&username, &self.config.realm, &password);
        if MessageIntegrity(key.to_vec()).check(m).is_err() {
            return Err((
                Refused(Refusal::WrongCredentials, error(401, "Unauthorized")),
                true,
            ));
        }
        Ok(Auth {
            user: user.into(),
            username: username.into(),
            key,
        })
    }

    fn allocate(
        &mut self,
        now: Instant,
        from: SocketAddr,
        m: &Message,
        auth: &Auth,
    ) -> Result<Option<Vec<Box<dyn Setter>>>, Refused> {
        if let Some(id) = self.by_client.get(&from) {
            let allocation = &self.allocations[id];
            if allocation.transaction != m.transaction_id.0 {
                return Err(Refused(
                    Refusal::AllocationExists,
                    error(437, "Allocation Mismatch"),
                ));
            }
            // A retransmission: the same answer again, or none while the socket is bound.
            if let Some(response) = allocation.response.clone() {
                self.transmits.push_back(Transmit {
                    destination: from,
                    contents: response,
                });
            }
            return Ok(None);
        }
        match m.get(ATTR_REQUESTED_TRANSPORT).as_deref() {
            Ok([17, _, _, _]) => {}
            Ok([_, _, _, _]) => {
                let code = error(442, "Unsupported Transport Protocol");
                return Err(Refused(Refusal::UnsupportedTransport, code));
            }
            _ => return Err(Refused(Refusal::BadRequest, error(400, "Bad Request"))),
        }
        if let Ok(family) = m.get(ATTR_REQUESTED_ADDRESS_FAMILY)
            && family.first() != Some(&0x01)
        {
            let code = error(440, "Address Family not Supported");
            return Err(Refused(Refusal::UnsupportedTransport, code));
        }
        let lifetime = self.lifetime(m)?.max(self.config.default_lifetime);
        let held = self.users.get(&auth.user).map_or(0, |u| u.allocations);
        if held >= self.config.max_allocations_per_user {
            return Err(Refused(
                Refusal::UserQuota,
                error(486, "Allocation Quota Reached"),
            ));
        }
        if self.allocations.len() >= self.config.max_allocations {
            return Err(Refused(
                Refusal::Capacity,
                error(508, "Insufficient Capacity"),
            ));
        }
        let id = AllocationId(self.next_id);
        self.next_id = self.next_id.wrapping_add(1);
        let burst = self.config.user_burst;
        let user = self.users.entry(auth.user.clone()).or_insert(User {
            allocations: 0,
            tokens: burst,
            refilled: now,
        });
        user.allocations += 1;
        self.by_client.insert(from, id);
        self.allocations.insert(
            id,
            Allocation {
                client: from,
                username: auth.username.clone(),
                user: auth.user.clone(),
                key: auth.key,
                relayed: None,
                transaction: m.transaction_id.0,
                response: None,
                lifetime,
                // Until bound; an unanswered bind must not hold a quota for long.
                expires: now + Duration::from_secs(30),
                permissions: Vec::new(),
                channels: Vec::new(),
            },
        );
        self.events.push_back(Event::Bind(id));
        Ok(None)
    }

    /// The LIFETIME asked for, capped; the default when absent.
    fn lifetime(&self, m: &Message) -> Result<Duration, Refused> {
        match m.get(ATTR_LIFETIME).as_deref() {
            Err(_) => Ok(self.config.default_lifetime),
            Ok(&[a, b, c, d]) => {
                let asked = Duration::from_secs(u32::from_be_bytes([a, b, c, d]).into());
                Ok(asked.min(self.config.max_lifetime))
            }
            Ok(_) => Err(Refused(Refusal::BadRequest, error(400, "Bad Request"))),
        }
    }

    fn refresh(
        &mut self,
        now: Instant,
        id: AllocationId,
        m: &Message,
    ) -> Result<Option<Vec<Box<dyn Setter>>>, Refused> {
        let lifetime = self.lifetime(m)?;
        if lifetime.is_zero() {
            debug!(?id, "allocation deleted");
            self.remove(id, true);
        } else if let Some(allocation) = self.allocations.get_mut(&id) {
            allocation.expires = now + lifetime;
        }
        Ok(Some(vec![Box::new(Lifetime(lifetime))]))
    }

    /// Every XOR-PEER-ADDRESS in `m`, checked against the relay's rules.
    fn peers(&self, m: &Message) -> Result<Vec<SocketAddr>, Refused> {
        let mut peers = Vec::new();
        for attr in m
            .attributes
            .0
            .iter()
            .filter(|a| a.typ == ATTR_XOR_PEER_ADDRESS)
        {
            let Some(peer) = wire::xor_address(&attr.value, &m.transaction_id.0) else {
                return Err(Refused(Refusal::BadRequest, error(400, "Bad Request")));
            };
            if !self.allowed_peer(peer.ip()) {
                return Err(Refused(Refusal::ForbiddenPeer, error(403, "Forbidden")));
            }
            if !peer.is_ipv4() {
                let code = error(443, "Peer Address Family Mismatch");
                return Err(Refused(Refusal::UnsupportedTransport, code));
            }
            peers.push(peer);
        }
        if peers.is_empty() {
            return Err(Refused(Refusal::BadRequest, error(400, "Bad Request")));
        }
        Ok(peers)
    }

    fn allowed_peer(&self, ip: IpAddr) -> bool {
        let never = ip.is_unspecified()
            || ip.is_multicast()
            || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
        !never && (self.config.allow_loopback_peers || !ip.is_loopback())
    }

    fn permit(
        &mut self,
        now: Instant,
        id: AllocationId,
        m: &Message,
    ) -> Result<Option<Vec<Box<dyn Setter>>>, Refused> {
        let peers = self.peers(m)?;
        let expires = now + self.config.permission_lifetime;
        let max = self.config.max_permissions;
        let allocation = self.allocations.get_mut(&id).ok_or(Refused(
            Refusal::NoAllocation,
            error(437, "Allocation Mismatch"),
        ))?;
        for peer in peers {
            allocation.install_permission(peer.ip(), expires, max)?;
        }
        Ok(Some(vec![]))
    }

    fn bind_channel(
        &mut self,
        now: Instant,
        id: AllocationId,
        m: &Message,
    ) -> Result<Option<Vec<Box<dyn Setter>>>, Refused> {
        let bad = Refused(Refusal::BadRequest, error(400, "Bad Request"));
        let number = match m.get(ATTR_CHANNEL_NUMBER).as_deref() {
            Ok(&[a, b, _, _]) => u16::from_be_bytes([a, b]),
            _ => return Err(bad),
        };
        if !wire::CHANNELS.contains(&number) {
            return Err(bad);
        }
        let peers = self.peers(m)?;
        let [peer] = peers[..] else {
            return Err(bad);
        };
        let channel_expires = now + self.config.channel_lifetime;
        let permission_expires = now + self.config.permission_lifetime;
        let max = self.config.max_permissions;
        let allocation = self.allocations.get_mut(&id).ok_or(Refused(
            Refusal::NoAllocation,
            error(437, "Allocation Mismatch"),
        ))?;
        // RFC 8656 §12.2: a channel is bound to one peer, a peer to one channel.
        let clash = allocation
            .channels
            .iter()
            .any(|c| (c.number == number) != (c.peer == peer));
        if clash {
            return Err(bad);
        }
        allocation.install_permission(peer.ip(), permission_expires, max)?;
        match allocation.channels.iter_mut().find(|c| c.number == number) {
            Some(channel) => channel.expires = channel_expires,
            None => allocation.channels.push(Channel {
                number,
                peer,
                expires: channel_expires,
            }),
        }
        Ok(Some(vec![]))
    }

    fn remove(&mut self, id: AllocationId, release: bool) {
        let Some(allocation) = self.allocations.remove(&id) else {
            return;
        };
        self.by_client.remove(&allocation.client);
        if let Some(user) = self.users.get_mut(&allocation.user) {
            user.allocations = user.allocations.saturating_sub(1);
            if user.allocations == 0 {
                self.users.remove(&allocation.user);
            }
        }
        if release {
            self.events.push_back(Event::Release(id));
        }
    }

    /// Queues a response to `request`; returns its bytes.
    fn respond(
        &mut self,
        to: SocketAddr,
        request: &Message,
        result: Result<(), ErrorCodeAttribute>,
        attrs: Vec<Box<dyn Setter>>,
        key: Option<&[u8; 16]>,
    ) -> Option<Vec<u8>> {
        let class = if result.is_ok() {
            CLASS_SUCCESS_RESPONSE
        } else {
            CLASS_ERROR_RESPONSE
        };
        let mut m = Message::new();
        m.typ = MessageType::new(request.typ.method, class);
        m.transaction_id = request.transaction_id;
        m.write_header();
        let built = (|| {
            if let Err(code) = result {
                code.add_to(&mut m)?;
            }
            for attr in &attrs {
                attr.add_to(&mut m)?;
            }
            if let Some(key) = key {
                MessageIntegrity(key.to_vec()).add_to(&mut m)?;
                FINGERPRINT.add_to(&mut m)?;
            }
            Ok::<_, stun::Error>(())
        })();
        if let Err(err) = built {
            debug!(%err, "cannot encode a response");
            return None;
        }
        self.transmits.push_back(Transmit {
            destination: to,
            contents: m.raw.clone(),
        });
        Some(m.raw)
    }
}

impl Allocation {
    fn permitted(&self, now: Instant, ip: IpAddr) -> bool {
        self.permissions
            .iter()
            .any(|(p, expires)| *p == ip && *expires > now)
    }

    fn install_permission(
        &mut self,
        ip: IpAddr,
        expires: Instant,
        max: usize,
    ) -> Result<(), Refused> {
        if let Some(existing) = self.permissions.iter_mut().find(|(p, _)| *p == ip) {
            existing.1 = expires;
            return Ok(());
        }
        if self.permissions.len() >= max {
            return Err(Refused(
                Refusal::TooManyPermissions,
                error(508, "Insufficient Capacity"),
            ));
        }
        self.permissions.push((ip, expires));
        Ok(())
    }
}

fn error(code: u16, reason: &str) -> ErrorCodeAttribute {
    ErrorCodeAttribute {
        code: ErrorCode(code),
        reason: reason.as_bytes().to_vec(),
    }
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
