//! Finding a UDP path to the peer: connectivity checks over STUN, sans-IO.
//!
//! Each side sends its UDP candidates (every local address with the socket's port, plus
//! what the server saw) in the offer or answer, together with a short-term credential
//! (ufrag and password). Both sides then send STUN Binding requests to every candidate
//! of the other, authenticated with MESSAGE-INTEGRITY and FINGERPRINT as ICE does
//! (RFC 8445 §7.2), and answer the requests they receive. The first candidate whose
//! check is answered becomes the path. A request that arrives from an address the peer
//! did not list (a NAT's mapping) adds that address as a candidate, so a peer behind a
//! NAT is reached on the address its packets come from.
//!
//! Once a path is chosen the checker keeps asking for consent (RFC 7675) at a slow
//! pace; when no answer has come for [`CheckerConfig::set_consent_timeout`], the path is
//! declared lost, which is how a call notices that the peer vanished without a word.
//!
//! STUN, RTP and RTCP share the socket. A STUN message starts with a byte below 4
//! (RFC 7983), RTP and RTCP with a byte from 128 to 191, so
//! [`Checker::handle_datagram`] takes only what is STUN and hands the rest back.
//!
//! Like the media core, the checker never touches a socket or the clock: datagrams and
//! time come in as arguments, and datagrams to send come out of
//! [`Checker::poll_transmit`].
//!
//! Address discovery uses STUN too, without credentials: the signaling server answers a
//! plain Binding request with the address it came from. Both sides of that exchange,
//! [`binding_request`], [`binding_response`] and [`parse_binding_response`], are here so
//! that the server's responder and the client's discovery share them.

mod binding;
pub mod turn;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
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

pub use self::binding::{binding_request, binding_response, parse_binding_response};

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

/// How the checker behaves. Defaults suit a call set up over the Internet.
#[derive(Clone)]
pub struct CheckerConfig {
    pub(crate) local: Credentials,
    pub(crate) remote: Credentials,
    pub(crate) remote_candidates: Vec<SocketAddr>,
    pub(crate) pacing: Duration,
    pub(crate) initial_rto: Duration,
    pub(crate) max_rto: Duration,
    pub(crate) timeout: Duration,
    pub(crate) consent_interval: Duration,
    pub(crate) consent_timeout: Duration,
    pub(crate) controlling: bool,
}

impl CheckerConfig {
    /// Checks from `local` towards a peer known as `remote` at `remote_candidates`.
    pub fn new(
        local: Credentials,
        remote: Credentials,
        remote_candidates: Vec<SocketAddr>,
    ) -> Self {
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
            // RFC 7675 §5.1 suggests 5 s on average; calls want to notice a lost peer
            // sooner, so consent is asked for every second.
            consent_interval: Duration::from_secs(1),
            // RFC 7675 says 30 s; a caller waiting that long on a dead call hangs up by
            // hand, so a call gives up after 6 s of silence.
            consent_timeout: Duration::from_secs(6),
            // RFC 8445 §6.1.1: the caller controls; the callee says so with
            // `set_controlling(false)`.
            controlling: true,
        }
    }

    /// The gap between two checks sent to different candidates.
    pub fn set_pacing(mut self, pacing: Duration) -> Self {
        self.pacing = pacing;
        self
    }

    /// How long to wait for a path before giving up.
    pub fn set_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How often consent is asked for once a path is chosen.
    pub fn set_consent_interval(mut self, interval: Duration) -> Self {
        self.consent_interval = interval;
        self
    }

    /// How long the path may go unanswered before it is declared lost.
    pub fn set_consent_timeout(mut self, timeout: Duration) -> Self {
        self.consent_timeout = timeout;
        self
    }

    /// Whether this side picks the path (RFC 8445 §6.1.1: the caller does). The
    /// controlling side selects the first candidate whose check is answered and nominates
    /// it (USE-CANDIDATE); the controlled side selects only what it is nominated, so both
    /// sides send on the same pair of addresses and each admits the other's source.
    pub fn set_controlling(mut self, controlling: bool) -> Self {
        self.controlling = controlling;
        self
    }

    /// Starts checking at `now`. `salt` makes this checker's transaction ids its own;
    /// the shell passes random bytes, tests pass fixed ones.
    pub fn build(self, now: Instant, salt: [u8; 12]) -> Checker {
        let candidates = self
            .remote_candidates
            .iter()
            .enumerate()
            .map(|(i, &addr)| Candidate::new(addr, now + self.pacing * i as u32))
            .collect();
        Checker {
            deadline: now + self.timeout,
            config: self,
            candidates,
            selected: None,
            last_answer: now,
            next_consent: now,
            failed: false,
            salt,
            next_tid: 0,
            nomination: None,
            pending: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            now,
        }
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
            consent_timeout,
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
            .field("consent_timeout", consent_timeout)
            .field("controlling", controlling)
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
}

/// What happened to the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A check to this address was answered: media goes there from now on.
    Selected(SocketAddr),
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

/// Connectivity checks towards one peer. See the module docs.
pub struct Checker {
    config: CheckerConfig,
    candidates: Vec<Candidate>,
    selected: Option<SocketAddr>,
    /// When the selected path last answered a check.
    last_answer: Instant,
    next_consent: Instant,
    deadline: Instant,
    failed: bool,
    salt: [u8; 12],
    next_tid: u64,
    /// The controlling side's nomination of its selected path, repeated until answered.
    nomination: Option<Nomination>,
    /// Transactions in flight: id to the address it was sent to.
    pending: HashMap<[u8; 12], SocketAddr>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    now: Instant,
}

impl fmt::Debug for Checker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checker")
            .field("candidates", &self.candidates.len())
            .field("selected", &self.selected)
            .field("failed", &self.failed)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

/// A nomination in flight: where, the transaction that carries it, and when to repeat.
struct Nomination {
    to: SocketAddr,
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

struct Candidate {
    addr: SocketAddr,
    next_send: Instant,
    rto: Duration,
}

impl Candidate {
    fn new(addr: SocketAddr, next_send: Instant) -> Self {
        Self {
            addr,
            next_send,
            rto: Duration::ZERO,
        }
    }
}

/// Transactions remembered at most; older ones are forgotten, and a late answer to one
/// of them is refused as unknown.
const MAX_PENDING: usize = 256;

impl Checker {
    /// The path in use, once one answered.
    pub fn selected(&self) -> Option<SocketAddr> {
        self.selected
    }

    /// Whether `bytes` is a STUN message (RFC 7983: first byte 0 to 3, magic cookie).
    pub fn is_stun(bytes: &[u8]) -> bool {
        bytes.first().is_some_and(|&b| b < 4) && stun::message::is_message(bytes)
    }

    /// Takes a datagram that arrived at `now` from `from`. Returns `Ok(false)` when it is
    /// not STUN (it is media: pass it on), `Ok(true)` when the checker consumed it.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<bool, Error> {
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

    fn handle_request(&mut self, from: SocketAddr, mut msg: Message) -> Result<(), Error> {
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
        if !self.candidates.iter().any(|c| c.addr == from) && self.selected.is_none() {
            debug!(candidate = %from, "peer-reflexive candidate");
            self.candidates.push(Candidate::new(from, self.now));
        }
        if !self.config.controlling
            && !self.failed
            && msg.contains(ATTR_USE_CANDIDATE)
            && self.selected != Some(from)
        {
            // Nominated: the pair the controlling side sends on is ours too.
            debug!(path = %from, "path nominated");
            self.select(from);
        }
        let response = self.encode(
            BINDING_SUCCESS,
            msg.transaction_id.0,
            &[&XorMappedAddress {
                ip: from.ip(),
                port: from.port(),
            }],
            &self.config.local.pwd,
            None,
        );
        trace!(to = %from, "binding response");
        self.transmits.push_back(Transmit {
            destination: from,
            contents: response,
        });
        Ok(())
    }

    fn handle_response(&mut self, from: SocketAddr, mut msg: Message) -> Result<(), Error> {
        let Some(&sent_to) = self.pending.get(&msg.transaction_id.0) else {
            return Err(Error::UnknownTransaction);
        };
        if sent_to != from {
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
        match self.selected {
            None if !self.failed && self.config.controlling => {
                debug!(path = %from, "path selected");
                self.select(from);
                self.nominate(from);
            }
            Some(path) if path == from => self.last_answer = self.now,
            _ => {}
        }
        Ok(())
    }

    fn select(&mut self, path: SocketAddr) {
        self.selected = Some(path);
        self.last_answer = self.now;
        self.next_consent = self.now + self.config.consent_interval;
        self.events.push_back(Event::Selected(path));
    }

    /// Tells the controlled side which pair it is (RFC 8445 §8.1.1).
    fn nominate(&mut self, to: SocketAddr) {
        let tid = self.send_check_with(to, true);
        self.nomination = Some(Nomination {
            to,
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
        if n.answered || now < n.next_send {
            return;
        }
        let (to, rto) = (n.to, (n.rto * 2).min(self.config.max_rto));
        let tid = self.send_check_with(to, true);
        self.nomination = Some(Nomination {
            to,
            tid,
            next_send: now + rto,
            rto,
            answered: false,
        });
    }

    /// Advances time: sends due checks, gives up when time is out.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        if self.failed {
            return;
        }
        match self.selected {
            None => self.check_candidates(now),
            Some(path) => {
                self.repeat_nomination(now);
                self.keep_consent(now, path);
            }
        }
    }

    fn check_candidates(&mut self, now: Instant) {
        if now >= self.deadline {
            debug!("no candidate answered");
            self.failed = true;
            self.events.push_back(Event::Failed);
            return;
        }
        let (initial, max) = (self.config.initial_rto, self.config.max_rto);
        let due: Vec<SocketAddr> = self
            .candidates
            .iter_mut()
            .filter(|c| c.next_send <= now)
            .map(|c| {
                c.rto = if c.rto.is_zero() {
                    initial
                } else {
                    (c.rto * 2).min(max)
                };
                c.next_send = now + c.rto;
                c.addr
            })
            .collect();
        for addr in due {
            self.send_check(addr);
        }
    }

    fn keep_consent(&mut self, now: Instant, path: SocketAddr) {
        if now.saturating_duration_since(self.last_answer) >= self.config.consent_timeout {
            debug!(path = %path, "consent lost");
            self.failed = true;
            self.selected = None;
            self.events.push_back(Event::PathLost);
            return;
        }
        if now >= self.next_consent {
            self.next_consent = now + self.config.consent_interval;
            self.send_check(path);
        }
    }

    fn send_check(&mut self, to: SocketAddr) {
        // The controlling side keeps nominating its path in every consent check, so a
        // controlled side that missed the first nomination still learns it.
        let nominate = self.config.controlling && self.selected == Some(to);
        self.send_check_with(to, nominate);
    }

    fn send_check_with(&mut self, to: SocketAddr, nominate: bool) -> [u8; 12] {
        let tid = self.transaction_id();
        if self.pending.len() >= MAX_PENDING {
            self.pending.clear();
        }
        self.pending.insert(tid, to);
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
        trace!(to = %to, nominate, "binding request");
        self.transmits.push_back(Transmit {
            destination: to,
            contents,
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
        let mut tid = self.salt;
        for (t, c) in tid.iter_mut().zip(self.next_tid.to_be_bytes()) {
            *t ^= c;
        }
        self.next_tid += 1;
        tid
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
        match self.selected {
            None => {
                let next_check = self.candidates.iter().map(|c| c.next_send).min();
                Some(next_check.map_or(self.deadline, |t| t.min(self.deadline)))
            }
            Some(_) => {
                let nomination = self
                    .nomination
                    .as_ref()
                    .filter(|n| !n.answered)
                    .map(|n| n.next_send);
                let consent = self
                    .next_consent
                    .min(self.last_answer + self.config.consent_timeout);
                Some(nomination.map_or(consent, |n| n.min(consent)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn creds(name: &str) -> Credentials {
        Credentials {
            ufrag: format!("{name}ufrag"),
            pwd: format!("{name}-password-of-22+ch"),
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Two checkers joined by a network that delivers to the listed addresses only,
    /// after `delay`. Returns the events each side saw, by virtual time.
    struct Pair {
        a: Checker,
        b: Checker,
        a_addr: SocketAddr,
        b_addr: SocketAddr,
        reachable: Vec<SocketAddr>,
        delay: Duration,
        in_flight: Vec<(Instant, SocketAddr, SocketAddr, Vec<u8>)>,
        now: Instant,
        events: Vec<(Duration, char, Event)>,
        start: Instant,
    }

    impl Pair {
        fn new(
            a_lists: Vec<SocketAddr>,
            b_lists: Vec<SocketAddr>,
            reachable: Vec<SocketAddr>,
        ) -> Self {
            let start = crate::test_instant();
            let a = CheckerConfig::new(creds("a"), creds("b"), b_lists).build(start, [1; 12]);
            let b = CheckerConfig::new(creds("b"), creds("a"), a_lists).build(start, [2; 12]);
            Self::with(a, b, reachable, start)
        }

        /// A controls, B is controlled, as a caller and a callee are.
        fn controlled(
            a_lists: Vec<SocketAddr>,
            b_lists: Vec<SocketAddr>,
            reachable: Vec<SocketAddr>,
        ) -> Self {
            let start = crate::test_instant();
            let a = CheckerConfig::new(creds("a"), creds("b"), b_lists).build(start, [1; 12]);
            let b = CheckerConfig::new(creds("b"), creds("a"), a_lists)
                .set_controlling(false)
                .build(start, [2; 12]);
            Self::with(a, b, reachable, start)
        }

        fn with(a: Checker, b: Checker, reachable: Vec<SocketAddr>, start: Instant) -> Self {
            Self {
                a,
                b,
                a_addr: addr("127.0.0.1:1000"),
                b_addr: addr("127.0.0.2:2000"),
                reachable,
                delay: Duration::from_millis(30),
                in_flight: Vec::new(),
                now: start,
                events: Vec::new(),
                start,
            }
        }

        fn run_until(&mut self, end: Duration) {
            while self.now < self.start + end {
                for (side, checker, from) in [
                    ('a', &mut self.a, self.a_addr),
                    ('b', &mut self.b, self.b_addr),
                ] {
                    checker.handle_timeout(self.now);
                    while let Some(t) = checker.poll_transmit() {
                        if self.reachable.contains(&t.destination) {
                            self.in_flight.push((
                                self.now + self.delay,
                                from,
                                t.destination,
                                t.contents,
                            ));
                        }
                    }
                    while let Some(e) = checker.poll_event() {
                        self.events.push((self.now - self.start, side, e));
                    }
                }
                let due: Vec<_> = {
                    let now = self.now;
                    let (due, rest) = self.in_flight.drain(..).partition(|m| m.0 <= now);
                    self.in_flight = rest;
                    due
                };
                for (_, from, to, bytes) in due {
                    // The receiving side sees the datagram from the sender's real address.
                    let checker = if to == self.a_addr {
                        &mut self.a
                    } else {
                        &mut self.b
                    };
                    assert!(checker.handle_datagram(self.now, from, &bytes).unwrap());
                }
                self.now += Duration::from_millis(1);
            }
        }
    }

    #[test]
    fn both_sides_select_the_reachable_candidate() {
        let a_addr = addr("127.0.0.1:1000");
        let b_addr = addr("127.0.0.2:2000");
        let unreachable = addr("127.0.0.9:9");
        let mut pair = Pair::new(
            vec![unreachable, a_addr],
            vec![unreachable, b_addr],
            vec![a_addr, b_addr],
        );
        pair.run_until(Duration::from_secs(1));
        let selected: Vec<_> = pair.events.iter().map(|(_, side, e)| (*side, *e)).collect();
        assert!(
            selected.contains(&('a', Event::Selected(b_addr))),
            "{selected:?}"
        );
        assert!(
            selected.contains(&('b', Event::Selected(a_addr))),
            "{selected:?}"
        );
        // One round trip after the first check reaches the reachable candidate.
        assert!(
            pair.events
                .iter()
                .all(|(t, _, _)| *t < Duration::from_millis(200))
        );
    }

    #[test]
    fn the_controlled_side_takes_the_pair_it_is_nominated() {
        let a_addr = addr("127.0.0.1:1000");
        let b_addr = addr("127.0.0.2:2000");
        let unreachable = addr("127.0.0.9:9");
        let mut pair = Pair::controlled(
            vec![unreachable, a_addr],
            vec![unreachable, b_addr],
            vec![a_addr, b_addr],
        );
        pair.run_until(Duration::from_secs(2));
        let at = |side: char| {
            pair.events
                .iter()
                .filter(|(_, s, _)| *s == side)
                .map(|(t, _, e)| (*t, *e))
                .collect::<Vec<_>>()
        };
        let (a, b) = (at('a'), at('b'));
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(b.len(), 1, "{b:?}");
        assert_eq!(a[0].1, Event::Selected(b_addr));
        // B's own checks were answered first, but it waits for A's nomination, which
        // names the address A sends from: both sides use one pair.
        assert_eq!(b[0].1, Event::Selected(a_addr));
        assert!(b[0].0 > a[0].0, "{a:?} {b:?}");
        // The nomination was answered, so it is not repeated.
        assert!(pair.a.nomination.as_ref().is_some_and(|n| n.answered));
    }

    #[test]
    fn a_controlled_side_never_selects_on_its_own_answers() {
        let a_addr = addr("127.0.0.1:1000");
        let b_addr = addr("127.0.0.2:2000");
        // A's checks never reach B, B's checks reach A and are answered.
        let mut pair = Pair::controlled(vec![a_addr], vec![b_addr], vec![a_addr]);
        pair.run_until(Duration::from_secs(6));
        let b: Vec<_> = pair.events.iter().filter(|(_, s, _)| *s == 'b').collect();
        assert_eq!(b.len(), 1, "{b:?}");
        assert_eq!(
            b[0].2,
            Event::Failed,
            "without a nomination there is no path"
        );
    }

    #[test]
    fn peer_reflexive_address_is_learned_from_requests() {
        // A lists nothing reachable (say, only a private address behind a NAT), but B's
        // requests reach A, and A's requests come from A's real address.
        let a_addr = addr("127.0.0.1:1000");
        let b_addr = addr("127.0.0.2:2000");
        let mut pair = Pair::new(
            vec![addr("127.0.0.9:9")],
            vec![b_addr],
            vec![a_addr, b_addr],
        );
        pair.run_until(Duration::from_secs(1));
        let sides: Vec<_> = pair.events.iter().map(|(_, side, e)| (*side, *e)).collect();
        assert!(sides.contains(&('a', Event::Selected(b_addr))), "{sides:?}");
        assert!(sides.contains(&('b', Event::Selected(a_addr))), "{sides:?}");
    }

    #[test]
    fn no_answer_fails_after_the_timeout() {
        let mut pair = Pair::new(vec![addr("127.0.0.9:9")], vec![addr("127.0.0.8:8")], vec![]);
        pair.run_until(Duration::from_secs(6));
        let failed: Vec<_> = pair
            .events
            .iter()
            .filter(|(_, _, e)| *e == Event::Failed)
            .collect();
        assert_eq!(failed.len(), 2, "{:?}", pair.events);
        assert!(failed.iter().all(|(t, _, _)| *t == Duration::from_secs(5)));
        assert_eq!(pair.a.poll_timeout(), None);
    }

    #[test]
    fn retransmissions_back_off_and_stay_bounded() {
        let now = crate::test_instant();
        let mut c = CheckerConfig::new(creds("a"), creds("b"), vec![addr("127.0.0.9:9")])
            .build(now, [0; 12]);
        let mut sent = Vec::new();
        let mut t = now;
        while let Some(next) = c.poll_timeout() {
            t = next;
            c.handle_timeout(t);
            while c.poll_transmit().is_some() {
                sent.push(t - now);
            }
        }
        let gaps: Vec<_> = sent.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.windows(2).all(|g| g[1] >= g[0]), "{gaps:?}");
        assert!(gaps.iter().all(|g| *g <= Duration::from_millis(800)));
        assert_eq!(t - now, Duration::from_secs(5));
        assert_eq!(c.poll_event(), Some(Event::Failed));
    }

    #[test]
    fn a_silent_peer_loses_the_path() {
        let a_addr = addr("127.0.0.1:1000");
        let b_addr = addr("127.0.0.2:2000");
        let mut pair = Pair::new(vec![a_addr], vec![b_addr], vec![a_addr, b_addr]);
        pair.run_until(Duration::from_secs(2));
        // B vanishes: nothing reaches it any more.
        pair.reachable = vec![a_addr];
        pair.run_until(Duration::from_secs(12));
        let lost: Vec<_> = pair
            .events
            .iter()
            .filter(|(_, side, e)| *side == 'a' && *e == Event::PathLost)
            .collect();
        assert_eq!(lost.len(), 1, "{:?}", pair.events);
        let at = lost[0].0;
        assert!(
            at >= Duration::from_secs(7) && at <= Duration::from_secs(9),
            "lost at {at:?}"
        );
    }

    #[test]
    fn wrong_credentials_are_refused_and_answer_nothing() {
        let now = crate::test_instant();
        let b_addr = addr("127.0.0.2:2000");
        let mut a = CheckerConfig::new(creds("a"), creds("b"), vec![b_addr]).build(now, [1; 12]);
        // An attacker knows A's ufrag but not its password.
        let mut evil = CheckerConfig::new(
            creds("b"),
            Credentials {
                ufrag: "aufrag".into(),
                pwd: "guessed-password-xxxxx".into(),
            },
            vec![addr("127.0.0.1:1000")],
        )
        .build(now, [3; 12]);
        evil.handle_timeout(now);
        let request = evil.poll_transmit().unwrap();
        assert!(matches!(
            a.handle_datagram(now, b_addr, &request.contents),
            Err(Error::Unauthenticated)
        ));
        a.handle_timeout(now);
        while let Some(t) = a.poll_transmit() {
            // Only A's own check goes out, no response to the forged request.
            assert!(Checker::is_stun(&t.contents));
            let mut m = Message::new();
            m.raw = t.contents;
            m.decode().unwrap();
            assert_eq!(m.typ, BINDING_REQUEST);
        }
    }

    #[test]
    fn media_is_handed_back() {
        let now = crate::test_instant();
        let mut a = CheckerConfig::new(creds("a"), creds("b"), vec![]).build(now, [1; 12]);
        let rtp = [0x80, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
        assert!(!a.handle_datagram(now, addr("127.0.0.1:1"), &rtp).unwrap());
        assert!(!a.handle_datagram(now, addr("127.0.0.1:1"), &[]).unwrap());
    }

    proptest! {
        #[test]
        fn garbage_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
            stun_header in any::<bool>(),
        ) {
            let now = crate::test_instant();
            let mut a = CheckerConfig::new(creds("a"), creds("b"), vec![addr("127.0.0.2:2")])
                .build(now, [1; 12]);
            let mut bytes = bytes;
            if stun_header && bytes.len() >= 20 {
                bytes[0] &= 0x03;
                bytes[4..8].copy_from_slice(&0x2112_A442u32.to_be_bytes());
            }
            let _ = a.handle_datagram(now, addr("127.0.0.2:2"), &bytes);
        }

        #[test]
        fn mutated_checks_never_panic(flips in proptest::collection::vec((20usize..120, any::<u8>()), 1..6)) {
            let now = crate::test_instant();
            let mut b = CheckerConfig::new(creds("b"), creds("a"), vec![addr("127.0.0.1:1")])
                .build(now, [2; 12]);
            let mut a = CheckerConfig::new(creds("a"), creds("b"), vec![addr("127.0.0.2:2")])
                .build(now, [1; 12]);
            b.handle_timeout(now);
            let mut request = b.poll_transmit().unwrap().contents;
            for (i, v) in flips {
                if let Some(byte) = request.get_mut(i) {
                    *byte = v;
                }
            }
            let _ = a.handle_datagram(now, addr("127.0.0.2:2"), &request);
        }
    }
}
