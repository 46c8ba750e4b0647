//! The checker in virtual time: two checkers joined by a scripted network.

use super::*;
use crate::ice::{Candidate, CandidateKind, Path};
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

fn hosts(addrs: Vec<SocketAddr>) -> Vec<Candidate> {
    addrs.into_iter().map(Candidate::host).collect()
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
    fn new(a_lists: Vec<SocketAddr>, b_lists: Vec<SocketAddr>, reachable: Vec<SocketAddr>) -> Self {
        let start = crate::test_instant();
        let a = CheckerConfig::new(creds("a"), creds("b"), hosts(b_lists)).build(start, [1; 12]);
        let b = CheckerConfig::new(creds("b"), creds("a"), hosts(a_lists)).build(start, [2; 12]);
        Self::with(a, b, reachable, start)
    }

    /// A controls, B is controlled, as a caller and a callee are.
    fn controlled(
        a_lists: Vec<SocketAddr>,
        b_lists: Vec<SocketAddr>,
        reachable: Vec<SocketAddr>,
    ) -> Self {
        let start = crate::test_instant();
        let a = CheckerConfig::new(creds("a"), creds("b"), hosts(b_lists)).build(start, [1; 12]);
        let b = CheckerConfig::new(creds("b"), creds("a"), hosts(a_lists))
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
                // A handled timer moves on: a deadline left behind `now` would make a
                // driver spin (handle, poll, handle...) until something else happens.
                if let Some(at) = checker.poll_timeout() {
                    assert!(
                        at > self.now,
                        "{side}: timer stuck {:?} behind",
                        self.now - at
                    );
                }
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
fn a_controlled_side_waiting_for_a_late_nomination_does_not_spin() {
    // 200 ms each way: the controlled side hears answers (from 400 ms) after the relay
    // wait has run out (300 ms) and its nomination only at 600 ms. The relay wait is the
    // controlling side's; the controlled side has no timer to fire meanwhile.
    let (a_addr, b_addr) = (addr("127.0.0.1:1000"), addr("127.0.0.2:2000"));
    let mut pair = Pair::controlled(vec![a_addr], vec![b_addr], vec![a_addr, b_addr]);
    pair.delay = Duration::from_millis(200);
    pair.run_until(Duration::from_millis(900));
    assert!(
        pair.events
            .iter()
            .any(|(_, side, e)| *side == 'b' && matches!(e, Event::Selected(_))),
        "{:?}",
        pair.events
    );
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
        selected.contains(&('a', Event::Selected(Path::direct(b_addr)))),
        "{selected:?}"
    );
    assert!(
        selected.contains(&('b', Event::Selected(Path::direct(a_addr)))),
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
    assert_eq!(a[0].1, Event::Selected(Path::direct(b_addr)));
    // B's own checks were answered first, but it waits for A's nomination, which
    // names the address A sends from: both sides use one pair.
    assert_eq!(b[0].1, Event::Selected(Path::direct(a_addr)));
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

/// A lists nothing reachable (say, only a private address behind a NAT), but B's
/// requests reach A, and A's requests come from A's real address: a second of checks.
fn a_unlisted_but_reachable() -> (Pair, SocketAddr, SocketAddr) {
    let a_addr = addr("127.0.0.1:1000");
    let b_addr = addr("127.0.0.2:2000");
    let mut pair = Pair::new(
        vec![addr("127.0.0.9:9")],
        vec![b_addr],
        vec![a_addr, b_addr],
    );
    pair.run_until(Duration::from_secs(1));
    (pair, a_addr, b_addr)
}

#[test]
fn peer_reflexive_address_is_learned_from_requests() {
    let (pair, a_addr, b_addr) = a_unlisted_but_reachable();
    let sides: Vec<_> = pair.events.iter().map(|(_, side, e)| (*side, *e)).collect();
    assert!(
        sides.contains(&('a', Event::Selected(Path::direct(b_addr)))),
        "{sides:?}"
    );
    assert!(
        sides.contains(&('b', Event::Selected(Path::direct(a_addr)))),
        "{sides:?}"
    );
}

#[test]
fn a_peer_reflexive_address_the_peer_then_signals_takes_the_signaled_kind() {
    // B hears A's checks from an address it was not told of (A's relayed address,
    // its check forwarded by the relay before the candidate came by signaling).
    let (mut pair, a_addr, _) = a_unlisted_but_reachable();
    let kind = |c: &Checker| {
        c.remote_candidates()
            .iter()
            .find(|c| c.addr == a_addr)
            .map(|c| c.kind)
    };
    assert_eq!(kind(&pair.b), Some(CandidateKind::Prflx));
    let selected = pair.b.selected.unwrap();
    assert!(!pair.b.pairs[selected].through_relay());
    // Then the candidate comes: the path is through the peer's relay.
    let now = pair.now;
    pair.b
        .add_remote_candidates(now, &[relay_candidate(a_addr)]);
    assert_eq!(kind(&pair.b), Some(CandidateKind::Relay));
    assert!(pair.b.pairs[selected].through_relay());
    assert_eq!(
        pair.b.remote_candidates().len(),
        2,
        "no second candidate for it"
    );
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
    let mut c = CheckerConfig::new(creds("a"), creds("b"), hosts(vec![addr("127.0.0.9:9")]))
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
    let mut a = CheckerConfig::new(creds("a"), creds("b"), hosts(vec![b_addr])).build(now, [1; 12]);
    // An attacker knows A's ufrag but not its password.
    let mut evil = CheckerConfig::new(
        creds("b"),
        Credentials {
            ufrag: "aufrag".into(),
            pwd: "guessed-password-xxxxx".into(),
        },
        hosts(vec![addr("127.0.0.1:1000")]),
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
        let mut a = CheckerConfig::new(creds("a"), creds("b"), hosts(vec![addr("127.0.0.2:2")]))
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
        let mut b = CheckerConfig::new(creds("b"), creds("a"), hosts(vec![addr("127.0.0.1:1")]))
            .build(now, [2; 12]);
        let mut a = CheckerConfig::new(creds("a"), creds("b"), hosts(vec![addr("127.0.0.2:2")]))
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

/// A network of two checkers where A may also send through a relay at `relay`. A link
/// is a (from, to) pair of addresses; `blocked` links drop what is sent on them.
struct World {
    a: Checker,
    b: Checker,
    a_addr: SocketAddr,
    b_addr: SocketAddr,
    relay: SocketAddr,
    blocked: Vec<(SocketAddr, SocketAddr)>,
    /// B's NAT drops what comes from an address B has not sent to yet (a NAT whose
    /// router answers with ICMP loses the first checks the same way).
    b_nat: bool,
    b_sent_to: Vec<SocketAddr>,
    delay: Duration,
    in_flight: Vec<(Instant, SocketAddr, SocketAddr, bool, Vec<u8>)>,
    now: Instant,
    start: Instant,
    events: Vec<(Duration, char, Event)>,
}

impl World {
    fn new(a: CheckerConfig, b: CheckerConfig) -> Self {
        let start = crate::test_instant();
        Self {
            a: a.build(start, [1; 12]),
            b: b.set_controlling(false).build(start, [2; 12]),
            a_addr: addr("10.0.0.1:1000"),
            b_addr: addr("10.0.0.2:2000"),
            relay: addr("192.0.2.1:50000"),
            blocked: Vec::new(),
            b_nat: false,
            b_sent_to: Vec::new(),
            delay: Duration::from_millis(25),
            in_flight: Vec::new(),
            now: start,
            start,
            events: Vec::new(),
        }
    }

    fn run_until(&mut self, end: Duration) {
        while self.now < self.start + end {
            self.a.handle_timeout(self.now);
            self.b.handle_timeout(self.now);
            while let Some(t) = self.a.poll_transmit() {
                let from = if t.relayed { self.relay } else { self.a_addr };
                self.send(from, t.destination, t.contents);
            }
            while let Some(t) = self.b.poll_transmit() {
                assert!(!t.relayed);
                self.b_sent_to.push(t.destination);
                self.send(self.b_addr, t.destination, t.contents);
            }
            for (side, checker) in [('a', &mut self.a), ('b', &mut self.b)] {
                while let Some(e) = checker.poll_event() {
                    self.events.push((self.now - self.start, side, e));
                }
            }
            let now = self.now;
            let (due, rest): (Vec<_>, Vec<_>) = self.in_flight.drain(..).partition(|m| m.0 <= now);
            self.in_flight = rest;
            for (_, from, to, _, bytes) in due {
                if to == self.relay {
                    // Our relay passes it to A, naming the sender.
                    assert!(self.a.handle_relayed(now, from, &bytes).unwrap());
                } else if to == self.a_addr {
                    assert!(self.a.handle_datagram(now, from, &bytes).unwrap());
                } else if to == self.b_addr {
                    if self.b_nat && !self.b_sent_to.contains(&from) {
                        continue;
                    }
                    assert!(self.b.handle_datagram(now, from, &bytes).unwrap());
                }
            }
            self.now += Duration::from_millis(1);
        }
    }

    fn send(&mut self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        if !self.blocked.contains(&(from, to)) {
            self.in_flight
                .push((self.now + self.delay, from, to, false, bytes));
        }
    }

    fn selected(&self, side: char) -> Vec<(Duration, Path)> {
        self.events
            .iter()
            .filter(|(_, s, _)| *s == side)
            .filter_map(|(t, _, e)| match e {
                Event::Selected(p) => Some((*t, *p)),
                _ => None,
            })
            .collect()
    }
}

fn world(a_lists: Vec<Candidate>, b_lists: Vec<Candidate>) -> World {
    World::new(
        CheckerConfig::new(creds("a"), creds("b"), b_lists),
        CheckerConfig::new(creds("b"), creds("a"), a_lists),
    )
}

fn relay_candidate(addr: SocketAddr) -> Candidate {
    Candidate::new(addr, CandidateKind::Relay)
}

#[test]
fn the_relay_carries_the_call_when_no_direct_pair_answers() {
    let (a_addr, b_addr, relay) = (
        addr("10.0.0.1:1000"),
        addr("10.0.0.2:2000"),
        addr("192.0.2.1:50000"),
    );
    let mut w = world(
        vec![Candidate::host(a_addr), relay_candidate(relay)],
        vec![Candidate::host(b_addr)],
    );
    // Neither host reaches the other directly; both reach the relay.
    w.blocked = vec![(a_addr, b_addr), (b_addr, a_addr)];
    w.a.add_relay_base(w.now, w.relay.ip());
    w.run_until(Duration::from_secs(2));
    let a = w.selected('a');
    let b = w.selected('b');
    assert_eq!(a.len(), 1, "{:?}", w.events);
    assert_eq!(a[0].1, Path::via_relay(b_addr));
    assert_eq!(b.len(), 1, "{:?}", w.events);
    assert_eq!(b[0].1, Path::direct(relay));
    // Selected after the short wait for a direct pair, well within a second.
    assert!(a[0].0 >= Duration::from_millis(300) && a[0].0 < Duration::from_millis(500));
}

#[test]
fn a_direct_pair_wins_over_a_relay_that_answered_first() {
    let (a_addr, b_addr, relay) = (
        addr("10.0.0.1:1000"),
        addr("10.0.0.2:2000"),
        addr("192.0.2.1:50000"),
    );
    // B lists its host last and after a useless address, so the relayed pair answers
    // first; A still takes the direct one.
    let mut w = world(
        vec![Candidate::host(a_addr), relay_candidate(relay)],
        vec![Candidate::host(addr("10.9.9.9:9")), Candidate::host(b_addr)],
    );
    w.a.add_relay_base(w.now, w.relay.ip());
    w.run_until(Duration::from_secs(2));
    let a = w.selected('a');
    assert_eq!(a.len(), 1, "{:?}", w.events);
    assert_eq!(a[0].1, Path::direct(b_addr));
    assert_eq!(w.selected('b')[0].1, Path::direct(a_addr));
}

#[test]
fn a_nat_that_drops_the_first_checks_opens_once_the_peer_checks_back() {
    let (a_addr, b_addr) = (addr("10.0.0.1:1000"), addr("10.0.0.2:2000"));
    // B's checks are paced behind three dead candidates of A, so A's first checks reach
    // B's NAT before B has sent anything and are dropped; B's check then triggers A's
    // retry at once instead of waiting out the backoff.
    let dead = |i| Candidate::host(SocketAddr::from(([10, 9, 9, i], 9)));
    let mut w = world(
        vec![dead(1), dead(2), dead(3), Candidate::host(a_addr)],
        vec![Candidate::host(b_addr)],
    );
    w.b_nat = true;
    w.run_until(Duration::from_secs(1));
    let a = w.selected('a');
    assert_eq!(a.len(), 1, "{:?}", w.events);
    assert_eq!(a[0].1, Path::direct(b_addr));
    // B's first check to A leaves at 60 ms and reaches A at 85 ms; A's triggered check
    // goes at once and is answered one round trip later, long before A's own backoff
    // (100, 200, 400 ms) would have retried.
    assert!(a[0].0 <= Duration::from_millis(150), "{a:?}");
}

#[test]
fn late_candidates_join_the_running_checks() {
    let (a_addr, b_addr) = (addr("10.0.0.1:1000"), addr("10.0.0.2:2000"));
    // The caller's offer had no candidates at all (relay-only, allocated after invite).
    let mut w = world(vec![], vec![Candidate::host(b_addr)]);
    w.blocked = vec![(a_addr, b_addr), (b_addr, a_addr)];
    w.run_until(Duration::from_millis(500));
    assert!(w.events.is_empty(), "{:?}", w.events);
    let relay = w.relay;
    w.a.add_relay_base(w.now, w.relay.ip());
    w.b.add_remote_candidates(w.now, &[relay_candidate(relay)]);
    w.run_until(Duration::from_secs(2));
    assert_eq!(
        w.selected('a'),
        vec![(w.selected('a')[0].0, Path::via_relay(b_addr))]
    );
    assert_eq!(w.selected('b')[0].1, Path::direct(relay));
}

/// A call on the direct path after 3 s, A with a relay: the world and the addresses of
/// A, B and A's relay.
fn direct_call_beside_a_relay() -> (World, SocketAddr, SocketAddr, SocketAddr) {
    let (a_addr, b_addr, relay) = (
        addr("10.0.0.1:1000"),
        addr("10.0.0.2:2000"),
        addr("192.0.2.1:50000"),
    );
    let mut w = world(
        vec![Candidate::host(a_addr), relay_candidate(relay)],
        vec![Candidate::host(b_addr)],
    );
    w.a.add_relay_base(w.now, w.relay.ip());
    w.run_until(Duration::from_secs(3));
    assert_eq!(w.selected('a')[0].1, Path::direct(b_addr));
    (w, a_addr, b_addr, relay)
}

#[test]
fn a_path_that_dies_mid_call_moves_to_the_relay_within_two_seconds() {
    let (mut w, a_addr, b_addr, relay) = direct_call_beside_a_relay();
    // The NAT's mapping is gone: nothing passes directly any more.
    w.blocked = vec![(a_addr, b_addr), (b_addr, a_addr)];
    let died = w.now - w.start;
    w.run_until(Duration::from_secs(12));
    let a = w.selected('a');
    let b = w.selected('b');
    assert_eq!(a.len(), 2, "{:?}", w.events);
    assert_eq!(a[1].1, Path::via_relay(b_addr));
    assert_eq!(b.last().unwrap().1, Path::direct(relay));
    // The last good consent answer came at most one consent interval before the path
    // died; both sides are on the relay within 2 s of it.
    let last_good = died - Duration::from_millis(500);
    assert!(a[1].0 - last_good <= Duration::from_secs(2), "{a:?}");
    assert!(
        b.last().unwrap().0 - last_good <= Duration::from_secs(2),
        "{b:?}"
    );
    assert_eq!(w.a.switches(), 1);
    assert!(
        !w.events.iter().any(|(_, _, e)| *e == Event::PathLost),
        "{:?}",
        w.events
    );
}

#[test]
fn with_no_pair_left_the_path_is_lost() {
    let (a_addr, b_addr) = (addr("10.0.0.1:1000"), addr("10.0.0.2:2000"));
    let mut w = world(vec![Candidate::host(a_addr)], vec![Candidate::host(b_addr)]);
    w.run_until(Duration::from_secs(2));
    w.blocked = vec![(a_addr, b_addr), (b_addr, a_addr)];
    w.run_until(Duration::from_secs(12));
    let lost: Vec<_> = w
        .events
        .iter()
        .filter(|(_, s, e)| *s == 'a' && *e == Event::PathLost)
        .collect();
    assert_eq!(lost.len(), 1, "{:?}", w.events);
    assert_eq!(w.a.poll_timeout(), None);
}

#[test]
fn relay_only_checks_nothing_from_its_own_socket() {
    let b_addr = addr("10.0.0.2:2000");
    let now = crate::test_instant();
    let mut a = CheckerConfig::new(creds("a"), creds("b"), vec![Candidate::host(b_addr)])
        .set_direct(false)
        .build(now, [1; 12]);
    a.handle_timeout(now);
    assert_eq!(a.poll_transmit(), None);
    a.add_relay_base(now, addr("192.0.2.1:3478").ip());
    a.handle_timeout(now);
    let t = a.poll_transmit().unwrap();
    assert!(t.relayed && t.destination == b_addr);
}

#[test]
fn a_peer_the_relay_refuses_is_no_longer_checked_through_it() {
    let (refused, open) = (addr("10.0.2.2:2000"), addr("203.0.113.20:2000"));
    let loopback = addr("127.0.0.1:2000");
    let now = crate::test_instant();
    let mut a = CheckerConfig::new(
        creds("a"),
        creds("b"),
        vec![
            Candidate::host(refused),
            Candidate::host(loopback),
            Candidate::new(open, CandidateKind::Srflx),
        ],
    )
    .set_direct(false)
    .build(now, [1; 12]);
    a.add_relay_base(now, addr("192.0.2.1:3478").ip());
    a.refuse_relayed(now, refused.ip());
    let mut sent = Vec::new();
    let mut t = now;
    while t < now + Duration::from_secs(2) {
        a.handle_timeout(t);
        while let Some(x) = a.poll_transmit() {
            sent.push(x.destination);
        }
        t += Duration::from_millis(10);
    }
    // No relay reaches a loopback address, and the refused peer is left alone; the
    // open one is still checked, with backoff.
    assert!(!sent.contains(&loopback), "{sent:?}");
    assert!(!sent.contains(&refused), "{sent:?}");
    assert!(sent.iter().filter(|d| **d == open).count() >= 3, "{sent:?}");
}

#[test]
fn a_nat_that_remaps_the_peer_mid_call_moves_the_path_within_a_second() {
    // The lab's scenario (e) with routers that answer ICMP: both NATs forget their
    // mappings, the direct path stays dead, and B's NAT gives B a new public port.
    // B's consent checks reach A through A's relay from the new port; A learns it,
    // checks back, and moves the call there.
    let (mut w, a_addr, b_addr, relay) = direct_call_beside_a_relay();
    let remapped = addr("10.0.0.2:2999");
    w.b_addr = remapped;
    w.blocked = vec![(a_addr, remapped), (remapped, a_addr), (a_addr, b_addr)];
    let flushed = w.now - w.start;
    w.run_until(Duration::from_secs(8));
    let a = w.selected('a');
    assert_eq!(a.len(), 2, "{:?}", w.events);
    assert_eq!(a[1].1, Path::via_relay(remapped));
    assert!(a[1].0 - flushed <= Duration::from_millis(1200), "{a:?}");
    assert_eq!(w.selected('b').last().unwrap().1, Path::direct(relay));
    assert!(
        !w.events.iter().any(|(_, _, e)| *e == Event::PathLost),
        "{:?}",
        w.events
    );
}

#[test]
fn a_pair_whose_first_checks_fail_is_retried_until_the_path_opens() {
    // What a router answering with ICMP does to the first checks: nothing arrives for
    // 700 ms. The pair is not given up on (ICMP never reaches the checker, and a lost
    // check is retried with backoff while the check list runs), so it is selected once
    // the path opens, with no relay to fall back on.
    let (a_addr, b_addr) = (addr("10.0.0.1:1000"), addr("10.0.0.2:2000"));
    let mut w = world(vec![Candidate::host(a_addr)], vec![Candidate::host(b_addr)]);
    w.blocked = vec![(a_addr, b_addr), (b_addr, a_addr)];
    w.run_until(Duration::from_millis(700));
    assert!(w.events.is_empty(), "{:?}", w.events);
    w.blocked.clear();
    w.run_until(Duration::from_secs(3));
    let a = w.selected('a');
    assert_eq!(a.len(), 1, "{:?}", w.events);
    assert_eq!(a[0].1, Path::direct(b_addr));
    // Backoff after 100, 200, 400 ms: the retry at 1500 ms at the latest finds it.
    assert!(a[0].0 <= Duration::from_millis(1600), "{a:?}");
    assert_eq!(w.selected('b')[0].1, Path::direct(a_addr));
}

#[test]
fn a_path_that_dies_with_every_other_pair_moves_only_to_one_that_answers_again() {
    // A NAT that forgets its mappings kills every pair at once; the relayed one comes
    // back 1.5 s later (the relay's allocation moved to the NAT's new port). A must not
    // move to a pair whose last answer predates the silence: that move would hold it on
    // a dead pair for a full switch time while the revived one waits. Flushed at ten
    // phases of the consent and keep-alive timers.
    for phase in 0..10u64 {
        let (mut w, a_addr, b_addr, relay) = direct_call_beside_a_relay();
        w.run_until(Duration::from_millis(3000 + 53 * phase));
        let everything = vec![
            (a_addr, b_addr),
            (b_addr, a_addr),
            (relay, b_addr),
            (b_addr, relay),
        ];
        w.blocked = everything;
        let flushed = w.now - w.start;
        let back = flushed + Duration::from_millis(1500);
        w.run_until(back);
        w.blocked = vec![(a_addr, b_addr), (b_addr, a_addr)];
        w.run_until(back + Duration::from_secs(3));
        let a = w.selected('a');
        assert_eq!(a.len(), 2, "phase {phase}: {:?}", w.events);
        assert_eq!(a[1].1, Path::via_relay(b_addr), "phase {phase}");
        // The move waits for the revived pair's answer: its next keep-alive (every
        // 500 ms) and one round trip.
        assert!(
            a[1].0 > back,
            "phase {phase}: moved at {:?} to a dead pair",
            a[1].0
        );
        assert!(
            a[1].0 - back <= Duration::from_millis(600),
            "phase {phase}: {a:?}"
        );
        assert_eq!(w.selected('b').last().unwrap().1, Path::direct(relay));
        assert!(
            !w.events.iter().any(|(_, _, e)| *e == Event::PathLost),
            "phase {phase}: {:?}",
            w.events
        );
    }
}
