//! The connectivity checker: pairs, their checks in priority order, nomination,
//! consent, and moving to another working pair when the selected one dies.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use stun::attributes::{ATTR_USE_CANDIDATE, ATTR_USERNAME};
use stun::fingerprint::FingerprintAttr;
use stun::integrity::MessageIntegrity;
use stun::message::{
    BINDING_REQUEST, BINDING_SUCCESS, Getter, MESSAGE_HEADER_SIZE, Message, Setter,
};
use stun::textattrs::TextAttribute;
use stun::xoraddr::XorMappedAddress;
use tracing::{debug, trace};

use super::candidate::{Candidate, CandidateKind, Path, pair_priority};
use super::turn::relayable;
use super::{Credentials, Error, Event, Transmit};

/// How the checker behaves. Defaults suit a call set up over the Internet.
#[derive(Clone)]
pub struct CheckerConfig {
    pub(crate) local: Credentials,
    pub(crate) remote: Credentials,
    pub(crate) remote_candidates: Vec<Candidate>,
    pub(crate) pacing: Duration,
    pub(crate) initial_rto: Duration,
    pub(crate) max_rto: Duration,
    pub(crate) timeout: Duration,
    pub(crate) consent_interval: Duration,
    pub(crate) keepalive_interval: Duration,
    pub(crate) consent_timeout: Duration,
    pub(crate) switch_after: Duration,
    pub(crate) relay_wait: Duration,
    pub(crate) direct: bool,
    pub(crate) controlling: bool,
}

impl CheckerConfig {
    /// Checks from `local` towards a peer known as `remote` at `remote_candidates`.
    pub fn new(local: Credentials, remote: Credentials, remote_candidates: Vec<Candidate>) -> Self {
        Self {
            local,
            remote,
            remote_candidates,
            // RFC 8445 §14.2 paces checks at 50 ms for a single stream; a call's two
            // streams share one socket, so one pace serves them.
            pacing: Duration::from_millis(20),
            // RFC 8445 §14.3: the first retransmission after 3 RTT at the least; 100 ms
            // covers continental paths, and backing off keeps slow links in reach.
            initial_rto: Duration::from_millis(100),
            max_rto: Duration::from_millis(800),
            // "If no path answers within a few seconds, the call ends" (the client's
            // promise to the user).
            timeout: Duration::from_secs(5),
            // RFC 7675 §5.1 suggests 5 s on average; calls want to notice a lost path
            // sooner, so consent on the selected pair is asked for every 200 ms (five
            // small datagrams a second next to fifty media packets): a path is declared
            // dead only after five checks in a row go unanswered, which a link losing
            // 10 % each way does by chance a few times an hour (0.19^5 per check; three
            // checks in 1.5 s, as before, some 40 times an hour).
            consent_interval: Duration::from_millis(200),
            // The other working pairs are only kept alive (and their NAT mappings open)
            // to be ready for a move: twice a second is enough.
            keepalive_interval: Duration::from_millis(500),
            // RFC 7675 says 30 s; a caller waiting that long on a dead call hangs up by
            // hand, so a call gives up after 6 s of silence on every pair.
            consent_timeout: Duration::from_secs(6),
            // Five consent checks unanswered: the path is dead, move to another pair
            // that still answers (the 2 s promise for a path that dies mid-call, with
            // room for the new path's first media to play).
            switch_after: Duration::from_millis(1000),
            // A relayed pair that answers waits this long for a direct one, which costs
            // the server nothing and usually a shorter route.
            relay_wait: Duration::from_millis(300),
            direct: true,
            // RFC 8445 §6.1.1: the caller controls; the callee says so with
            // `set_controlling(false)`.
            controlling: true,
        }
    }

    /// The gap between two checks sent to different pairs.
    pub fn set_pacing(mut self, pacing: Duration) -> Self {
        self.pacing = pacing;
        self
    }

    /// How long to wait for a path before giving up.
    pub fn set_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How often consent is asked for on the selected pair.
    pub fn set_consent_interval(mut self, interval: Duration) -> Self {
        self.consent_interval = interval;
        self
    }

    /// How often every other working pair is kept alive.
    pub fn set_keepalive_interval(mut self, interval: Duration) -> Self {
        self.keepalive_interval = interval;
        self
    }

    /// How long the path may go unanswered, with no other pair to move to, before it
    /// is declared lost.
    pub fn set_consent_timeout(mut self, timeout: Duration) -> Self {
        self.consent_timeout = timeout;
        self
    }

    /// How long the selected path may go unanswered before the controlling side moves
    /// the call to another pair that still answers.
    pub fn set_switch_after(mut self, after: Duration) -> Self {
        self.switch_after = after;
        self
    }

    /// Whether pairs from our own socket are checked; `false` sends everything through
    /// the relay (WebRTC's `iceTransportPolicy: "relay"`).
    pub fn set_direct(mut self, direct: bool) -> Self {
        self.direct = direct;
        self
    }

    /// Whether this side picks the path (RFC 8445 §6.1.1: the caller does). The
    /// controlling side selects the best pair whose check is answered and nominates it
    /// (USE-CANDIDATE); the controlled side selects only what it is nominated, so both
    /// sides send on the same pair of addresses and each admits the other's source.
    pub fn set_controlling(mut self, controlling: bool) -> Self {
        self.controlling = controlling;
        self
    }

    /// Starts checking at `now`. `salt` makes this checker's transaction ids its own;
    /// the shell passes random bytes, tests pass fixed ones.
    pub fn build(self, now: Instant, salt: [u8; 12]) -> Checker {
        let remotes = self.remote_candidates.clone();
        let mut checker = Checker {
            deadline: now + self.timeout,
            config: self,
            remotes: Vec::new(),
            relay_base: false,
            relay_server: None,
            relay_refused: Vec::new(),
            pairs: Vec::new(),
            selected: None,
            failed: false,
            switches: 0,
            salt,
            next_tid: 0,
            nomination: None,
            pending: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            start: now,
            next_slot: now,
            now,
        };
        checker.add_remote_candidates(now, &remotes);
        checker
    }
}

impl fmt::Debug for CheckerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            local,
            remote,
            remote_candidates,
            pacing,
            initial_rto,
            max_rto,
            timeout,
            consent_interval,
            keepalive_interval,
            consent_timeout,
            switch_after,
            relay_wait,
            direct,
            controlling,
        } = self;
        f.debug_struct("CheckerConfig")
            .field("local", local)
            .field("remote", remote)
            .field("remote_candidates", remote_candidates)
            .field("pacing", pacing)
            .field("initial_rto", initial_rto)
            .field("max_rto", max_rto)
            .field("timeout", timeout)
            .field("consent_interval", consent_interval)
            .field("keepalive_interval", keepalive_interval)
            .field("consent_timeout", consent_timeout)
            .field("switch_after", switch_after)
            .field("relay_wait", relay_wait)
            .field("direct", direct)
            .field("controlling", controlling)
            .finish()
    }
}

/// Connectivity checks towards one peer. See the module docs.
pub struct Checker {
    config: CheckerConfig,
    /// The peer's candidates, the ones it listed first (most preferred) first.
    remotes: Vec<Candidate>,
    /// Whether our relay is allocated: pairs through it are checked too.
    relay_base: bool,
    /// The address of our relay's server, once allocated (which peers it can reach).
    relay_server: Option<IpAddr>,
    /// Peers our relay refused to relay to: no pair through the relay towards them.
    relay_refused: Vec<IpAddr>,
    pairs: Vec<PairState>,
    /// The index of the selected pair.
    selected: Option<usize>,
    deadline: Instant,
    failed: bool,
    switches: u32,
    salt: [u8; 12],
    next_tid: u64,
    /// The controlling side's nomination of its selected pair, repeated until answered.
    nomination: Option<Nomination>,
    /// Transactions in flight: id to the pair it checks and when it was sent.
    pending: HashMap<[u8; 12], (usize, Instant)>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    start: Instant,
    /// When the next newly added pair may send its first check (pacing).
    next_slot: Instant,
    now: Instant,
}

impl fmt::Debug for Checker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checker")
            .field("pairs", &self.pairs.len())
            .field("selected", &self.selected())
            .field("failed", &self.failed)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

/// One candidate pair and its checks.
#[derive(Debug, Clone)]
struct PairState {
    path: Path,
    remote_kind: CandidateKind,
    priority: u64,
    /// When to send the next check; `None` once the pair gave up.
    next_send: Option<Instant>,
    rto: Duration,
    /// Unanswered pairs stop being checked then.
    give_up: Instant,
    /// When a check on this pair was last answered.
    last_answer: Option<Instant>,
    /// When the latest check that was answered had been sent: the pair worked then.
    answered_sent: Option<Instant>,
    /// When the oldest check sent since the last answer went out: if the pair died,
    /// it died before then.
    unanswered_since: Option<Instant>,
}

impl PairState {
    /// Whether media on this pair goes through a relay, ours or the peer's.
    fn through_relay(&self) -> bool {
        self.path.relayed || self.remote_kind == CandidateKind::Relay
    }
}

/// A nomination in flight: which pair, the transaction that carries it, and when to
/// repeat it.
struct Nomination {
    pair: usize,
    tid: [u8; 12],
    next_send: Instant,
    rto: Duration,
    answered: bool,
}

/// The USE-CANDIDATE attribute (RFC 8445 §7.1.2): empty, it nominates the pair.
struct UseCandidate;

impl Setter for UseCandidate {
    fn add_to(&self, m: &mut Message) -> Result<(), stun::Error> {
        m.add(ATTR_USE_CANDIDATE, &[]);
        Ok(())
    }
}

/// Transactions remembered at most; older ones are forgotten, and a late answer to one
/// of them is refused as unknown.
const MAX_PENDING: usize = 256;
/// Pairs kept at most: peer-reflexive addresses are learned only from authenticated
/// checks, but a peer behind a NAT that changes its port often should not grow this
/// without bound.
const MAX_PAIRS: usize = 64;

impl Checker {
    /// The path in use, once a pair was selected.
    pub fn selected(&self) -> Option<Path> {
        self.selected.map(|i| self.pairs[i].path)
    }

    /// How many times the path moved to another pair after the first selection.
    pub fn switches(&self) -> u32 {
        self.switches
    }

    /// The peer's candidates known so far (listed, trickled and learned).
    pub fn remote_candidates(&self) -> &[Candidate] {
        &self.remotes
    }

    /// Whether `bytes` is a STUN message (RFC 7983: first byte 0 to 3, magic cookie).
    pub fn is_stun(bytes: &[u8]) -> bool {
        bytes.first().is_some_and(|&b| b < 4) && stun::message::is_message(bytes)
    }

    /// Adds candidates the peer found late (trickle), and checks them like the others.
    pub fn add_remote_candidates(&mut self, now: Instant, candidates: &[Candidate]) {
        self.advance(now);
        if self.failed {
            return;
        }
        let mut added = false;
        for &candidate in candidates {
            if let Some(known) = self.remotes.iter_mut().find(|c| c.addr == candidate.addr) {
                // A check from it came first and made it peer-reflexive: it is what the
                // peer says it is. The peer's relayed address, learned from the
                // relay's forwarded check before the signaled candidate, otherwise
                // read as a direct path for the whole call (client/tests/relay.rs, now
                // and then).
                if known.kind == CandidateKind::Prflx && candidate.kind != CandidateKind::Prflx {
                    known.kind = candidate.kind;
                    for pair in self
                        .pairs
                        .iter_mut()
                        .filter(|p| p.path.remote == candidate.addr)
                    {
                        pair.remote_kind = candidate.kind;
                    }
                }
                continue;
            }
            self.remotes.push(candidate);
            let index = self.remotes.len() - 1;
            if self.config.direct {
                added |= self.add_pair(index, false);
            }
            if self.relay_base {
                added |= self.add_pair(index, true);
            }
        }
        if added && self.selected.is_none() {
            // New pairs deserve their full time, even when they come late.
            self.deadline = self.deadline.max(now + self.config.timeout);
        }
    }

    /// Our relay, on the TURN server at `server`, is allocated: checks go through it
    /// towards every candidate it can reach too.
    pub fn add_relay_base(&mut self, now: Instant, server: IpAddr) {
        self.advance(now);
        if self.relay_base || self.failed {
            return;
        }
        self.relay_base = true;
        self.relay_server = Some(server);
        let mut added = false;
        for index in 0..self.remotes.len() {
            added |= self.add_pair(index, true);
        }
        if added && self.selected.is_none() {
            self.deadline = self.deadline.max(now + self.config.timeout);
        }
    }

    /// How long the selected pair has gone unanswered, once there is one.
    pub fn silence(&self, now: Instant) -> Option<Duration> {
        let last = self.pairs[self.selected?].last_answer?;
        Some(now.saturating_duration_since(last))
    }

    /// Our relay was allocated again (the first one was lost): every pair through it
    /// that worked, or still tries, is checked at once instead of at its next turn.
    pub fn restart_relayed(&mut self, now: Instant) {
        self.advance(now);
        let mut at = self.now;
        for p in self.pairs.iter_mut().filter(|p| p.path.relayed) {
            if p.last_answer.is_some() || p.next_send.is_some() {
                p.next_send = Some(at);
                at += self.config.pacing;
            }
        }
    }

    /// Our relay refused to relay to `ip` (its server answered 403): the pairs through
    /// it towards that address stop being checked, unless one already answered.
    pub fn refuse_relayed(&mut self, now: Instant, ip: IpAddr) {
        self.advance(now);
        if self.relay_refused.contains(&ip) {
            return;
        }
        self.relay_refused.push(ip);
        for p in &mut self.pairs {
            if p.path.relayed && p.path.remote.ip() == ip && p.last_answer.is_none() {
                p.next_send = None;
            }
        }
    }

    fn add_pair(&mut self, remote: usize, relayed: bool) -> bool {
        if self.pairs.len() >= MAX_PAIRS {
            return false;
        }
        let candidate = self.remotes[remote];
        if relayed
            && (!self
                .relay_server
                .is_some_and(|server| relayable(candidate.addr.ip(), server))
                || self.relay_refused.contains(&candidate.addr.ip()))
        {
            // No relay reaches a loopback or link-local address, and a refused peer
            // stays refused.
            return false;
        }
        let path = Path {
            remote: candidate.addr,
            relayed,
        };
        if self.pairs.iter().any(|p| p.path == path) {
            return false;
        }
        let local_kind = if relayed {
            CandidateKind::Relay
        } else {
            CandidateKind::Host
        };
        let local = Candidate::new(candidate.addr, local_kind).priority(0);
        let theirs = candidate.priority(remote);
        let priority = if self.config.controlling {
            pair_priority(local, theirs)
        } else {
            pair_priority(theirs, local)
        };
        let at = self.next_slot.max(self.now);
        self.next_slot = at + self.config.pacing;
        self.pairs.push(PairState {
            path,
            remote_kind: candidate.kind,
            priority,
            next_send: Some(at),
            rto: Duration::ZERO,
            give_up: self.now + self.config.timeout,
            last_answer: None,
            answered_sent: None,
            unanswered_since: None,
        });
        true
    }

    /// Takes a datagram that arrived at `now` from `from` on our own socket. Returns
    /// `Ok(false)` when it is not STUN (it is media: pass it on), `Ok(true)` when the
    /// checker consumed it.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<bool, Error> {
        self.handle(now, Path::direct(from), bytes)
    }

    /// Takes a datagram that our relay passed on from `from`.
    pub fn handle_relayed(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<bool, Error> {
        self.handle(now, Path::via_relay(from), bytes)
    }

    fn handle(&mut self, now: Instant, from: Path, bytes: &[u8]) -> Result<bool, Error> {
        if !Self::is_stun(bytes) {
            return Ok(false);
        }
        self.advance(now);
        let mut msg = Message::new();
        let length = bytes
            .get(2..4)
            .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]) as usize);
        let end = (MESSAGE_HEADER_SIZE + length).min(bytes.len());
        msg.raw = bytes[..end].to_vec();
        msg.decode().map_err(Error::Malformed)?;
        FingerprintAttr
            .check(&msg)
            .map_err(|_| Error::Unauthenticated)?;
        if msg.typ == BINDING_REQUEST {
            self.handle_request(from, msg)?;
        } else if msg.typ == BINDING_SUCCESS {
            self.handle_response(from, msg)?;
        } else {
            return Err(Error::Unexpected);
        }
        Ok(true)
    }

    fn handle_request(&mut self, from: Path, mut msg: Message) -> Result<(), Error> {
        // RFC 8445 §7.3: USERNAME is "<our ufrag>:<their ufrag>", keyed with our password.
        let expected = format!("{}:{}", self.config.local.ufrag, self.config.remote.ufrag);
        let username =
            TextAttribute::get_from_as(&msg, ATTR_USERNAME).map_err(|_| Error::Unauthenticated)?;
        if username.text != expected {
            return Err(Error::Unauthenticated);
        }
        MessageIntegrity::new_short_term_integrity(self.config.local.pwd.clone())
            .check(&mut msg)
            .map_err(|_| Error::Unauthenticated)?;
        let pair = self.pair_for(from);
        if let Some(i) = pair
            && self.pairs[i].last_answer.is_none()
            && !self.failed
        {
            // A triggered check (RFC 8445 §7.3.1.4): the peer reached us on this pair,
            // so our check on it now likely opens our NAT the same way.
            let p = &mut self.pairs[i];
            p.next_send = Some(p.next_send.map_or(self.now, |t| t.min(self.now)));
            p.give_up = p.give_up.max(self.now + self.config.timeout);
        }
        if let Some(i) = pair
            && !self.config.controlling
            && !self.failed
            && msg.contains(ATTR_USE_CANDIDATE)
            && self.selected != Some(i)
        {
            // Nominated: the pair the controlling side sends on is ours too.
            debug!(path = %from, "path nominated");
            self.select(i);
        }
        let response = self.encode(
            BINDING_SUCCESS,
            msg.transaction_id.0,
            &[&XorMappedAddress {
                ip: from.remote.ip(),
                port: from.remote.port(),
            }],
            &self.config.local.pwd,
            None,
        );
        trace!(to = %from, "binding response");
        self.transmits.push_back(Transmit {
            destination: from.remote,
            contents: response,
            relayed: from.relayed,
        });
        Ok(())
    }

    /// The pair a check from `from` belongs to; an unknown address becomes a
    /// peer-reflexive candidate (a NAT's mapping of the peer) with its own pair.
    fn pair_for(&mut self, from: Path) -> Option<usize> {
        if let Some(i) = self.pairs.iter().position(|p| p.path == from) {
            return Some(i);
        }
        let index = match self.remotes.iter().position(|c| c.addr == from.remote) {
            Some(index) => index,
            None => {
                debug!(candidate = %from.remote, "peer-reflexive candidate");
                self.remotes
                    .push(Candidate::new(from.remote, CandidateKind::Prflx));
                self.remotes.len() - 1
            }
        };
        // The peer reached us on this leg, so check it even if we would not on our own
        // (a relay-only side still answers on its relay).
        if !self.add_pair(index, from.relayed) {
            return None;
        }
        let i = self.pairs.len() - 1;
        self.pairs[i].next_send = Some(self.now);
        Some(i)
    }

    fn handle_response(&mut self, from: Path, mut msg: Message) -> Result<(), Error> {
        let Some(&(i, sent)) = self.pending.get(&msg.transaction_id.0) else {
            return Err(Error::UnknownTransaction);
        };
        if self.pairs[i].path != from {
            // RFC 8445 §7.2.5.2.1: a response must come from where the request went.
            return Err(Error::UnknownTransaction);
        }
        MessageIntegrity::new_short_term_integrity(self.config.remote.pwd.clone())
            .check(&mut msg)
            .map_err(|_| Error::Unauthenticated)?;
        let mut mapped = XorMappedAddress::default();
        if mapped.get_from(&msg).is_ok() {
            trace!(from = %from, mapped = %mapped, "binding success");
        }
        self.pending.remove(&msg.transaction_id.0);
        if let Some(n) = &mut self.nomination
            && n.tid == msg.transaction_id.0
        {
            n.answered = true;
        }
        let now = self.now;
        let p = &mut self.pairs[i];
        if p.last_answer.is_none() {
            debug!(path = %p.path, "pair answered");
            // From now on it is kept alive at the keep-alive pace.
            p.next_send = Some(now + self.config.keepalive_interval);
        }
        p.last_answer = Some(now);
        p.answered_sent = Some(p.answered_sent.map_or(sent, |t| t.max(sent)));
        if p.unanswered_since.is_some_and(|t| t <= sent) {
            p.unanswered_since = None;
        }
        self.maybe_select(now);
        if let Some(selected) = self.selected {
            // A pair answering while the selected one is silent may be where to go.
            self.keep_consent(now, selected);
        }
        Ok(())
    }

    /// The controlling side selects the best answered pair: at once when it is direct,
    /// after [`CheckerConfig::relay_wait`] when it goes through a relay.
    fn maybe_select(&mut self, now: Instant) {
        if self.selected.is_some() || self.failed || !self.config.controlling {
            return;
        }
        let Some(best) = self.best_working(now, None) else {
            return;
        };
        if self.pairs[best].through_relay() && now < self.start + self.config.relay_wait {
            return;
        }
        debug!(path = %self.pairs[best].path, "path selected");
        self.select(best);
        self.nominate(best);
    }

    /// The highest-priority pair answered within [`CheckerConfig::switch_after`], other
    /// than `except` (the selected pair, gone silent). When there is one, only a pair
    /// whose answered check was sent after the selected pair's first unanswered one
    /// counts: whatever killed the selected pair (a NAT that forgot its mappings, a
    /// network change) usually killed the others at the same moment, and an answer to
    /// a check sent before then says nothing about now. A move to such a pair would sit
    /// on a dead pair for a whole [`CheckerConfig::switch_after`] (a new selection gets
    /// that long to answer) while a pair that came back waits.
    fn best_working(&self, now: Instant, except: Option<usize>) -> Option<usize> {
        let dead_since = except.and_then(|i| self.pairs[i].unanswered_since);
        self.pairs
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != except)
            .filter(|(_, p)| {
                p.last_answer
                    .is_some_and(|t| now.saturating_duration_since(t) < self.config.switch_after)
                    && dead_since.is_none_or(|dead| p.answered_sent.is_some_and(|s| s > dead))
            })
            .max_by_key(|(_, p)| p.priority)
            .map(|(i, _)| i)
    }

    fn select(&mut self, i: usize) {
        if self.selected.is_some() {
            self.switches += 1;
        }
        self.selected = Some(i);
        let now = self.now;
        let p = &mut self.pairs[i];
        // Consent runs from here: a pair nominated before it answered us gets the full
        // consent timeout.
        p.last_answer = Some(p.last_answer.map_or(now, |t| t.max(now)));
        p.next_send = Some(now + self.config.consent_interval);
        self.events.push_back(Event::Selected(p.path));
    }

    /// Tells the controlled side which pair it is (RFC 8445 §8.1.1).
    fn nominate(&mut self, pair: usize) {
        let tid = self.send_check_with(pair, true);
        self.nomination = Some(Nomination {
            pair,
            tid,
            next_send: self.now + self.config.initial_rto,
            rto: self.config.initial_rto,
            answered: false,
        });
    }

    /// Repeats an unanswered nomination, backing off as checks do.
    fn repeat_nomination(&mut self, now: Instant) {
        let Some(n) = &self.nomination else {
            return;
        };
        if n.answered || now < n.next_send || Some(n.pair) != self.selected {
            return;
        }
        let (pair, rto) = (n.pair, (n.rto * 2).min(self.config.max_rto));
        let tid = self.send_check_with(pair, true);
        self.nomination = Some(Nomination {
            pair,
            tid,
            next_send: now + rto,
            rto,
            answered: false,
        });
    }

    /// Advances time: sends due checks, selects, switches, gives up.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        if self.failed {
            return;
        }
        match self.selected {
            None if now >= self.deadline => {
                debug!("no candidate answered");
                self.failed = true;
                self.events.push_back(Event::Failed);
                return;
            }
            None => self.maybe_select(now),
            Some(i) => {
                self.repeat_nomination(now);
                if !self.keep_consent(now, i) {
                    return;
                }
            }
        }
        self.check_pairs(now);
    }

    /// Consent on the selected pair: moves to another working pair when it is silent
    /// for [`CheckerConfig::switch_after`] (the controlling side decides), gives up
    /// after [`CheckerConfig::consent_timeout`]. `false` once the path is lost.
    fn keep_consent(&mut self, now: Instant, i: usize) -> bool {
        let silent = self.pairs[i]
            .last_answer
            .map_or(Duration::MAX, |t| now.saturating_duration_since(t));
        if silent >= self.config.switch_after
            && self.config.controlling
            && let Some(next) = self.best_working(now, Some(i))
        {
            debug!(from = %self.pairs[i].path, to = %self.pairs[next].path, "path moved");
            self.select(next);
            self.nominate(next);
            return true;
        }
        if silent >= self.config.consent_timeout {
            debug!(path = %self.pairs[i].path, "consent lost");
            self.failed = true;
            self.selected = None;
            self.events.push_back(Event::PathLost);
            return false;
        }
        true
    }

    fn check_pairs(&mut self, now: Instant) {
        let (initial, max) = (self.config.initial_rto, self.config.max_rto);
        let (consent, keepalive) = (self.config.consent_interval, self.config.keepalive_interval);
        let selected = self.selected;
        let mut due = Vec::new();
        for (i, p) in self.pairs.iter_mut().enumerate() {
            let Some(at) = p.next_send.filter(|&at| at <= now) else {
                continue;
            };
            if p.last_answer.is_some() {
                // Consent on the selected pair, keep-alive on the others that work.
                let pace = if selected == Some(i) {
                    consent
                } else {
                    keepalive
                };
                p.next_send = Some(now + pace);
            } else if now >= p.give_up {
                p.next_send = None;
                continue;
            } else {
                p.rto = if p.rto.is_zero() {
                    initial
                } else {
                    (p.rto * 2).min(max)
                };
                p.next_send = Some(at.max(now) + p.rto);
            }
            due.push(i);
        }
        for i in due {
            self.send_check(i);
        }
    }

    fn send_check(&mut self, pair: usize) {
        // The controlling side keeps nominating its path in every consent check, so a
        // controlled side that missed the first nomination still learns it.
        let nominate = self.config.controlling && self.selected == Some(pair);
        self.send_check_with(pair, nominate);
    }

    fn send_check_with(&mut self, pair: usize, nominate: bool) -> [u8; 12] {
        let tid = self.transaction_id();
        if self.pending.len() >= MAX_PENDING {
            self.pending.clear();
        }
        self.pending.insert(tid, (pair, self.now));
        let p = &mut self.pairs[pair];
        p.unanswered_since = p.unanswered_since.or(Some(self.now));
        let username = TextAttribute::new(
            ATTR_USERNAME,
            format!("{}:{}", self.config.remote.ufrag, self.config.local.ufrag),
        );
        let attrs: &[&dyn Setter] = if nominate { &[&UseCandidate] } else { &[] };
        let contents = self.encode(
            BINDING_REQUEST,
            tid,
            attrs,
            &self.config.remote.pwd,
            Some(username),
        );
        let path = self.pairs[pair].path;
        trace!(to = %path, nominate, "binding request");
        self.transmits.push_back(Transmit {
            destination: path.remote,
            contents,
            relayed: path.relayed,
        });
        tid
    }

    fn encode(
        &self,
        typ: stun::message::MessageType,
        tid: [u8; 12],
        attrs: &[&dyn Setter],
        pwd: &str,
        username: Option<TextAttribute>,
    ) -> Vec<u8> {
        let mut msg = Message::new();
        msg.set_type(typ);
        msg.transaction_id = stun::agent::TransactionId(tid);
        msg.write_header();
        let mut setters: Vec<&dyn Setter> = attrs.to_vec();
        if let Some(username) = &username {
            setters.push(username);
        }
        let integrity = MessageIntegrity::new_short_term_integrity(pwd.to_owned());
        setters.push(&integrity);
        setters.push(&FingerprintAttr);
        for setter in setters {
            setter
                .add_to(&mut msg)
                .expect("our own attributes are within STUN's size limits");
        }
        msg.raw
    }

    fn transaction_id(&mut self) -> [u8; 12] {
        self.next_tid += 1;
        super::transaction_id(self.salt, self.next_tid - 1)
    }

    fn advance(&mut self, now: Instant) {
        // Time never runs backwards inside the checker (str0m ignores stale inputs too).
        self.now = self.now.max(now);
    }

    /// The next datagram to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next thing that happened to the path.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Checker::handle_timeout`] wants to be called next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.failed {
            return None;
        }
        let checks = self.pairs.iter().filter_map(|p| p.next_send);
        let path = match self.selected {
            None => {
                // The end of the relay wait is when the controlling side may select a
                // relayed pair; once past, or on the controlled side (which waits for a
                // nomination), it is no deadline: left in the past, it would have the
                // driver call again at once, over and over.
                let relay_wait = (self.config.controlling
                    && self.pairs.iter().any(|p| p.last_answer.is_some()))
                .then_some(self.start + self.config.relay_wait)
                .filter(|&at| at > self.now);
                [Some(self.deadline), relay_wait]
            }
            Some(i) => {
                let nomination = self
                    .nomination
                    .as_ref()
                    .filter(|n| !n.answered && Some(n.pair) == self.selected)
                    .map(|n| n.next_send);
                let last = self.pairs[i].last_answer.unwrap_or(self.now);
                let switch = last + self.config.switch_after;
                // Past the switch time with nowhere to go, the next check's answer or
                // the consent timeout is what can change anything.
                let silence = if self.config.controlling && switch > self.now {
                    switch.min(last + self.config.consent_timeout)
                } else {
                    last + self.config.consent_timeout
                };
                [nomination, Some(silence)]
            }
        };
        checks.chain(path.into_iter().flatten()).min()
    }
}

#[cfg(test)]
mod tests;
