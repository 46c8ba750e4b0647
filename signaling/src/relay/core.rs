//! The sans-IO relay: allocations, permissions, channels, credentials, quotas.
//!
//! This file holds the core's state and its data path (ChannelData, Send and Data
//! indications), which runs for every relayed datagram; [`request`] answers the TURN
//! requests (Allocate, Refresh, CreatePermission, ChannelBind) and [`allocation`] keeps one
//! allocation's permissions, channels and its user's token bucket.

mod allocation;
mod request;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, trace};

use self::allocation::{Allocation, User};
use super::auth::{Nonces, Tickets};
use super::wire::{self, Kind};
use super::{Config, Refusal, Stats};

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
    tickets: Tickets,
    /// Mobility tickets handed out, to the allocation each names.
    by_ticket: HashMap<[u8; 16], AllocationId>,
    /// Tickets issued so far (each one's serial).
    issued: u64,
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
    /// The addresses relayed sockets are bound at and advertised at: a peer there is
    /// another allocation of this relay.
    own_ips: Vec<IpAddr>,
}

/// Expiry is checked once a second: lifetimes are minutes long.
const SWEEP: Duration = Duration::from_secs(1);

impl Relay {
    /// A relay with no allocations, at `now`, when the wall clock reads `unix_now`.
    pub fn new(config: Config, now: Instant, unix_now: u64) -> Self {
        let nonces = Nonces::new(&config.nonce_key);
        let tickets = Tickets::new(&config.nonce_key);
        Self {
            config,
            nonces,
            tickets,
            by_ticket: HashMap::new(),
            issued: 0,
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
            own_ips: Vec::new(),
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
        self.allocated(now, id, bound);
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

    pub(super) fn unix(&self, now: Instant) -> u64 {
        self.epoch.1 + now.saturating_duration_since(self.epoch.0).as_secs()
    }

    pub(super) fn refuse<T>(&mut self, reason: Refusal) -> Option<T> {
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

    pub(super) fn remove(&mut self, id: AllocationId, release: bool) {
        let Some(allocation) = self.allocations.remove(&id) else {
            return;
        };
        self.by_client.remove(&allocation.client);
        if let Some(ticket) = allocation.ticket {
            self.by_ticket.remove(&ticket);
        }
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
}

#[cfg(test)]
mod tests;
