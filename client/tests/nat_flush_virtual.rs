//! The NAT lab's scenario (e) with routers that answer ICMP, in virtual time (no
//! sockets, no sleeps, deterministic): two call endpoints behind NATs modelled on
//! Linux masquerade with conntrack, the real TURN relay core of magpie-server, and
//! mid-call both NATs forget every mapping. The call must go on within 2 s.
//!
//! The NAT model: an outgoing datagram reuses its flow's mapping or makes one, keeping
//! the host's port unless that public port towards that remote is taken; an incoming
//! datagram passes only on a flow the host opened towards its sender. One that does
//! not is answered with ICMP and leaves an unreplied flow behind, which takes that
//! port towards that remote: the host's own next datagram there gets a new port. So
//! after the flush, whatever reaches a router before its host speaks (the peer's
//! media, the relay's traffic) moves the host to new ports, and which ones depends on
//! packet order: the test flushes at several phases of the 20 ms media clock.
//!
//! Signaling plays no part after the call starts: a NAT that forgot its mappings
//! answers the server's next TCP segment with a reset, so recovery has to happen on
//! the media path (the relay's allocations move with their clients, RFC 8016).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod virtual_net;

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use magpie_media::call::{Endpoint, Output};
use magpie_media::ice::{Candidate, CandidateKind, CheckerConfig, Path};
use virtual_net::{VirtualRelay, addr, agreed_sessions, creds};

/// One hop (home to home, home to server): the lab's wire and `--sim delay`.
const HOP: Duration = Duration::from_millis(25);
const FLUSH_AT: Duration = Duration::from_secs(4);

/// One flow through a NAT: the public port, the remote, and whether the host opened
/// it (`false`: an unsolicited arrival answered with ICMP).
struct Flow {
    port: u16,
    remote: SocketAddr,
    outgoing: bool,
}

/// A home router doing masquerade over conntrack. See the module docs.
struct Nat {
    public: IpAddr,
    host: SocketAddr,
    flows: Vec<Flow>,
    next_port: u16,
}

impl Nat {
    fn new(public: &str, host: &str) -> Self {
        Self {
            public: public.parse().unwrap(),
            host: addr(host),
            flows: Vec::new(),
            next_port: 30_000,
        }
    }

    /// The public source of the host's datagram to `to`.
    fn outgoing(&mut self, to: SocketAddr) -> SocketAddr {
        if let Some(f) = self.flows.iter().find(|f| f.outgoing && f.remote == to) {
            return SocketAddr::new(self.public, f.port);
        }
        let taken = |flows: &[Flow], port| flows.iter().any(|f| f.port == port && f.remote == to);
        let mut port = self.host.port();
        while taken(&self.flows, port) {
            port = self.next_port;
            self.next_port += 1;
        }
        self.flows.push(Flow {
            port,
            remote: to,
            outgoing: true,
        });
        SocketAddr::new(self.public, port)
    }

    /// Whether a datagram from `from` to public `port` reaches the host.
    fn incoming(&mut self, from: SocketAddr, port: u16) -> bool {
        let flow = |f: &&Flow| f.port == port && f.remote == from;
        match self.flows.iter().find(flow) {
            Some(f) => f.outgoing,
            None => {
                self.flows.push(Flow {
                    port,
                    remote: from,
                    outgoing: false,
                });
                false
            }
        }
    }
}

struct Side {
    endpoint: Endpoint,
    nat: Nat,
    played: Vec<Duration>,
    paths: Vec<(Duration, Path)>,
}

struct Net {
    start: Instant,
    now: Instant,
    a: Side,
    b: Side,
    relay: VirtualRelay,
    in_flight: VecDeque<(Instant, SocketAddr, SocketAddr, Vec<u8>)>,
    /// Relay addresses allocated before the call, handed to the peer by signaling.
    trickled: Vec<(char, SocketAddr)>,
}

impl Net {
    fn new() -> Self {
        let start = Instant::now();
        let relay = VirtualRelay::new(start, addr("203.0.113.1:3478"));
        let (sa, sb) = agreed_sessions(start);
        let (nat_a, nat_b) = (
            Nat::new("203.0.113.10", "10.0.1.2:1000"),
            Nat::new("203.0.113.20", "10.0.2.2:2000"),
        );
        // Host and server-reflexive candidates (the NAT keeps the host's port).
        let listed = |nat: &Nat| {
            vec![
                Candidate::host(nat.host),
                Candidate::new(
                    SocketAddr::new(nat.public, nat.host.port()),
                    CandidateKind::Srflx,
                ),
            ]
        };
        let ca = CheckerConfig::new(creds("a"), creds("b"), listed(&nat_b)).build(start, [1; 12]);
        let cb = CheckerConfig::new(creds("b"), creds("a"), listed(&nat_a))
            .set_controlling(false)
            .build(start, [2; 12]);
        let mut a = Endpoint::new(sa, ca, 300_000);
        let mut b = Endpoint::new(sb, cb, 300_000);
        for (endpoint, user, salt) in [(&mut a, "alice", 3), (&mut b, "bob", 4)] {
            endpoint.set_turn(start, relay.turn(start, user, salt));
        }
        let side = |endpoint, nat| Side {
            endpoint,
            nat,
            played: Vec::new(),
            paths: Vec::new(),
        };
        Self {
            start,
            now: start,
            a: side(a, nat_a),
            b: side(b, nat_b),
            relay,
            in_flight: VecDeque::new(),
            trickled: Vec::new(),
        }
    }

    fn t(&self) -> Duration {
        self.now - self.start
    }

    fn flush(&mut self) {
        self.a.nat.flows.clear();
        self.b.nat.flows.clear();
    }

    fn run_until(&mut self, end: Duration) {
        while self.t() < end {
            let now = self.now;
            let t = self.t();
            if t.as_millis().is_multiple_of(20) {
                for side in [&mut self.a, &mut self.b] {
                    side.endpoint
                        .send_audio(now, &[0xfc, 1, 2, 3], now)
                        .unwrap();
                    for _ in side.endpoint.pull_audio(now).frames() {
                        side.played.push(t);
                    }
                }
            }
            self.a.endpoint.handle_timeout(now);
            self.b.endpoint.handle_timeout(now);
            self.relay.handle_timeout(now);
            self.drain();
            while self.in_flight.front().is_some_and(|m| m.0 <= now) {
                let (_, from, to, bytes) = self.in_flight.pop_front().unwrap();
                self.deliver(from, to, bytes);
                self.drain();
            }
            self.now += Duration::from_millis(1);
        }
    }

    fn send(&mut self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        self.in_flight.push_back((self.now + HOP, from, to, bytes));
    }

    fn deliver(&mut self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        let now = self.now;
        for side in [&mut self.a, &mut self.b] {
            if to.ip() == side.nat.public {
                if side.nat.incoming(from, to.port()) {
                    side.endpoint.handle_datagram(now, from, &bytes);
                }
                return;
            }
        }
        if let Some((from, to, bytes)) = self.relay.deliver(now, from, to, &bytes) {
            self.send(from, to, bytes);
        }
        // Anything else (a private address of the other home) goes nowhere.
    }

    /// Moves every output of the endpoints and the relay onto the network.
    fn drain(&mut self) {
        let now = self.now;
        let t = self.t();
        for (from, to, bytes) in self.relay.drain(now) {
            self.send(from, to, bytes);
        }
        let mut out = Vec::new();
        for side in [&mut self.a, &mut self.b] {
            while let Some(t) = side.endpoint.poll_transmit() {
                out.push((side.nat.outgoing(t.destination), t.destination, t.contents));
            }
        }
        for (from, to, bytes) in out {
            self.send(from, to, bytes.to_vec());
        }
        let mut trickle = Vec::new();
        for (name, side) in [('a', &mut self.a), ('b', &mut self.b)] {
            while let Some(output) = side.endpoint.poll_output() {
                match output {
                    Output::RelayAllocated(relayed) if t < Duration::from_millis(500) => {
                        trickle.push((name, relayed));
                    }
                    Output::PathSelected(path) => side.paths.push((t, path)),
                    Output::NoPath | Output::PathLost => panic!("{name} lost the call at {t:?}"),
                    _ => {}
                }
            }
        }
        // Signaling passes the relay candidates found while the peer rings.
        for (name, relayed) in trickle {
            let c = Candidate::new(relayed, CandidateKind::Relay);
            let peer = if name == 'a' {
                &mut self.b
            } else {
                &mut self.a
            };
            peer.endpoint.add_remote_candidates(now, &[c]);
            self.trickled.push((name, relayed));
        }
    }
}

#[test]
fn a_call_survives_both_nats_forgetting_their_mappings_at_any_phase() {
    // Flushed at ten phases of the 20 ms media clock and the checks' timers.
    let mut moves = Vec::new();
    for phase in 0..10u64 {
        let mut net = Net::new();
        let flush = FLUSH_AT + Duration::from_millis(7 * phase);
        net.run_until(flush);
        assert_eq!(net.trickled.len(), 2, "both relays allocated and trickled");
        let first = net.a.paths[0].1;
        assert!(!first.relayed, "phase {phase}: direct first, {first:?}");
        assert!(net.a.played.len() > 150 && net.b.played.len() > 150);
        let relays = (net.a.endpoint.relay(), net.b.endpoint.relay());
        net.flush();
        net.run_until(flush + Duration::from_secs(4));

        for (name, side) in [('a', &net.a), ('b', &net.b)] {
            // Audio plays again within 2 s of the flush, and then without a gap.
            let resumed = side
                .played
                .iter()
                .find(|t| **t > flush + Duration::from_millis(200))
                .copied();
            let resumed = resumed.unwrap_or_else(|| {
                panic!("phase {phase}: {name} never played again: {:?}", side.paths)
            });
            assert!(
                resumed - flush <= Duration::from_secs(2),
                "phase {phase}: {name} played again {:?} after the flush; paths {:?}",
                resumed - flush,
                side.paths
            );
            let after = side.played.iter().filter(|t| **t > resumed).count();
            assert!(
                after as u128 * 20
                    >= (flush + Duration::from_secs(4) - resumed).as_millis() * 9 / 10,
                "phase {phase}: {name} played {after} frames after {resumed:?}"
            );
        }
        // The relays the peers know still work: moved, not made again.
        assert_eq!(
            (net.a.endpoint.relay(), net.b.endpoint.relay()),
            relays,
            "phase {phase}"
        );
        moves.push(net.relay.relay.stats().moves);
    }
    // Some phases cost both sides their relay's 5-tuple (the case that ended calls
    // when a lost allocation was made again at an address the peer never learned).
    assert!(moves.contains(&2), "allocations moved per phase: {moves:?}");
}
