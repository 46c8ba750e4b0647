//! TURN requests: authentication (long-term credentials with TURN REST user names) and
//! Allocate, Refresh, CreatePermission, ChannelBind. Rare next to relayed data, so they use
//! the `stun` and `turn` crates' message codec.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use magpie_media::ice::turn::ATTR_MOBILITY_TICKET;
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
use tracing::debug;
use turn::proto::lifetime::Lifetime;
use turn::proto::relayaddr::RelayedAddress;

use super::allocation::{Allocation, Channel, User};
use super::{AllocationId, Event, Relay, Transmit};
use crate::pii::Pii;
use crate::relay::Refusal;
use crate::relay::auth::{NonceCheck, split_username};
use crate::relay::wire;

/// MOBILITY-TICKET with its value, for a response.
struct MobilityTicket([u8; 16]);

impl Setter for MobilityTicket {
    fn add_to(&self, m: &mut Message) -> Result<(), stun::Error> {
        m.add(ATTR_MOBILITY_TICKET, &self.0);
        Ok(())
    }
}

/// A refused request: why, and the error response.
pub(super) struct Refused(pub(super) Refusal, pub(super) ErrorCodeAttribute);

/// What authentication gave a request.
struct Auth {
    username: Box<str>,
    user: Box<str>,
    key: [u8; 16],
}

impl Relay {
    /// Answers the Allocate of `id` once its relayed socket is bound (or is not).
    pub(super) fn allocated(&mut self, now: Instant, id: AllocationId, bound: Option<SocketAddr>) {
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
        for ip in [bound.ip(), advertised.ip()] {
            if !self.own_ips.contains(&ip) {
                self.own_ips.push(ip);
            }
        }
        let lifetime = allocation.lifetime;
        allocation.expires = now + lifetime;
        let mobility = allocation.mobility;
        debug!(?id, client = %Pii(client), relayed = %advertised, "allocated");
        let mut attrs: Vec<Box<dyn Setter>> = vec![
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
        if mobility {
            attrs.push(Box::new(MobilityTicket(self.new_ticket(id))));
        }
        let response = self.respond(client, &request, Ok(()), attrs, Some(&key));
        if let Some(allocation) = self.allocations.get_mut(&id) {
            allocation.response = response;
        }
    }

    pub(super) fn request(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
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
                None if method == METHOD_REFRESH && m.contains(ATTR_MOBILITY_TICKET) => {
                    self.move_allocation(now, from, &m, &auth)
                }
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
        let key = crate::relay::auth::long_term_key(&username, &self.config.realm, &password);
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
        // RFC 8016 §3.1: an empty MOBILITY-TICKET asks for mobility.
        let mobility = match m.get(ATTR_MOBILITY_TICKET).as_deref() {
            Err(_) => false,
            Ok([]) => true,
            Ok(_) => return Err(Refused(Refusal::BadRequest, error(400, "Bad Request"))),
        };
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
                mobility,
                ticket: None,
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

    /// RFC 8016 §3.2: a Refresh from a 5-tuple without an allocation, carrying the
    /// ticket of one made with the same credentials, moves that allocation here (the
    /// client's NAT gave it a new port): relayed address, permissions and channels stay,
    /// what comes for the client goes to `from` from now on, and a new ticket replaces
    /// the one used. Nothing else moves an allocation, so a ticket seen on the way is of
    /// no use without the credentials.
    fn move_allocation(
        &mut self,
        now: Instant,
        from: SocketAddr,
        m: &Message,
        auth: &Auth,
    ) -> Result<Option<Vec<Box<dyn Setter>>>, Refused> {
        let mismatch = || Refused(Refusal::NoAllocation, error(437, "Allocation Mismatch"));
        let ticket: [u8; 16] = m
            .get(ATTR_MOBILITY_TICKET)
            .ok()
            .and_then(|t| t.try_into().ok())
            .ok_or_else(mismatch)?;
        let id = *self.by_ticket.get(&ticket).ok_or_else(mismatch)?;
        let allocation = self.allocations.get_mut(&id).ok_or_else(mismatch)?;
        if allocation.username != auth.username {
            return Err(Refused(
                Refusal::CredentialsMismatch,
                error(441, "Wrong Credentials"),
            ));
        }
        let old = std::mem::replace(&mut allocation.client, from);
        self.by_client.remove(&old);
        self.by_client.insert(from, id);
        self.stats.moves += 1;
        debug!(?id, from = %Pii(old), to = %Pii(from), "allocation moved");
        let ticket = self.new_ticket(id);
        // Then it is refreshed (or deleted, with LIFETIME 0) as any Refresh does.
        let mut attrs = self.refresh(now, id, m)?.unwrap_or_default();
        attrs.push(Box::new(MobilityTicket(ticket)));
        Ok(Some(attrs))
    }

    /// A new mobility ticket for allocation `id`, in place of its old one.
    fn new_ticket(&mut self, id: AllocationId) -> [u8; 16] {
        self.issued += 1;
        let ticket = self.tickets.issue(id.0, self.issued);
        if let Some(allocation) = self.allocations.get_mut(&id)
            && let Some(old) = allocation.ticket.replace(ticket)
        {
            self.by_ticket.remove(&old);
        }
        self.by_ticket.insert(ticket, id);
        ticket
    }

    /// Every XOR-PEER-ADDRESS in `m`, checked against the relay's rules.
    fn peers(&self, id: AllocationId, m: &Message) -> Result<Vec<SocketAddr>, Refused> {
        let user = self.allocations.get(&id).map_or("", |a| &*a.user);
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
            if !self.in_call(user, peer.ip()) {
                return Err(Refused(Refusal::OutsideCall, error(403, "Forbidden")));
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

    /// PROTO-RELAY.md item 3: `user` may relay to where its current call peer signals
    /// from, or to this relay itself (the peer's own allocation). Without a directory of
    /// call peers (a relay run on its own), to anyone.
    fn in_call(&self, user: &str, ip: IpAddr) -> bool {
        let Some(directory) = &self.config.call_peers else {
            return true;
        };
        self.own_ips.contains(&ip) || directory.peer_ip(user) == Some(ip)
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
        let peers = self.peers(id, m)?;
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
        let peers = self.peers(id, m)?;
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

pub(super) fn error(code: u16, reason: &str) -> ErrorCodeAttribute {
    ErrorCodeAttribute {
        code: ErrorCode(code),
        reason: reason.as_bytes().to_vec(),
    }
}
