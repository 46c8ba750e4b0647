//! Two call endpoints and the real TURN relay core of magpie-server, joined by a
//! simulated network in virtual time (no sockets, no sleeps, deterministic): a call
//! that starts direct keeps going through the relay when the direct path dies, within
//! 2 s of the last good consent answer, and nothing else takes the path meanwhile.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod virtual_net;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use magpie_media::call::{Endpoint, Output};
use magpie_media::ice::{Candidate, CandidateKind, CheckerConfig, Path};
use virtual_net::{VirtualRelay, addr, agreed_sessions, creds};

const DELAY: Duration = Duration::from_millis(10);

struct Net {
    start: Instant,
    now: Instant,
    a: Endpoint,
    b: Endpoint,
    relay: VirtualRelay,
    a_host: SocketAddr,
    b_host: SocketAddr,
    /// Direct A<->B traffic is dropped (the NAT's mapping is gone).
    direct_dead: bool,
    in_flight: VecDeque<(Instant, SocketAddr, SocketAddr, Vec<u8>)>,
    /// Audio frames played at each side, by virtual time.
    a_played: Vec<Duration>,
    b_played: Vec<Duration>,
    a_paths: Vec<(Duration, Path)>,
    b_paths: Vec<(Duration, Path)>,
}

impl Net {
    fn new() -> Self {
        let start = Instant::now();
        let (a_host, b_host, server) = (
            addr("10.0.0.1:1000"),
            addr("10.0.0.2:2000"),
            addr("192.0.2.1:3478"),
        );
        let relay = VirtualRelay::new(start, server);
        let (sa, sb) = agreed_sessions(start);
        let ca = CheckerConfig::new(creds("a"), creds("b"), vec![Candidate::host(b_host)])
            .build(start, [1; 12]);
        let cb = CheckerConfig::new(creds("b"), creds("a"), vec![Candidate::host(a_host)])
            .set_controlling(false)
            .build(start, [2; 12]);
        let mut a = Endpoint::new(sa, ca, 300_000);
        let b = Endpoint::new(sb, cb, 300_000);
        // A has a relay: credentials as signaling hands them out.
        a.set_turn(start, relay.turn(start, "alice", 3));
        Self {
            start,
            now: start,
            a,
            b,
            relay,
            a_host,
            b_host,
            direct_dead: false,
            in_flight: VecDeque::new(),
            a_played: Vec::new(),
            b_played: Vec::new(),
            a_paths: Vec::new(),
            b_paths: Vec::new(),
        }
    }

    fn t(&self) -> Duration {
        self.now - self.start
    }

    fn send(&mut self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        let direct = [self.a_host, self.b_host];
        if self.direct_dead && direct.contains(&from) && direct.contains(&to) {
            return;
        }
        self.in_flight
            .push_back((self.now + DELAY, from, to, bytes));
    }

    fn run_until(&mut self, end: Duration) {
        while self.t() < end {
            let now = self.now;
            if self.t().as_millis().is_multiple_of(20) {
                // Both talk, and both play out every 20 ms.
                self.a.send_audio(now, &[0xfc, 1, 2, 3], now).unwrap();
                self.b.send_audio(now, &[0xfc, 4, 5, 6], now).unwrap();
                for _ in self.a.pull_audio(now).frames() {
                    self.a_played.push(self.t());
                }
                for _ in self.b.pull_audio(now).frames() {
                    self.b_played.push(self.t());
                }
            }
            self.a.handle_timeout(now);
            self.b.handle_timeout(now);
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

    fn deliver(&mut self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        let now = self.now;
        if to == self.a_host {
            self.a.handle_datagram(now, from, &bytes);
        } else if to == self.b_host {
            self.b.handle_datagram(now, from, &bytes);
        } else if let Some((from, to, bytes)) = self.relay.deliver(now, from, to, &bytes) {
            self.send(from, to, bytes);
        }
    }

    /// Moves every output of the endpoints and the relay onto the network.
    fn drain(&mut self) {
        let now = self.now;
        for (from, to, bytes) in self.relay.drain(now) {
            self.send(from, to, bytes);
        }
        while let Some(t) = self.a.poll_transmit() {
            self.send(self.a_host, t.destination, t.contents.to_vec());
        }
        while let Some(t) = self.b.poll_transmit() {
            self.send(self.b_host, t.destination, t.contents.to_vec());
        }
        while let Some(output) = self.a.poll_output() {
            match output {
                // Trickle: B learns A's relay candidate through signaling.
                Output::RelayAllocated(relayed) => {
                    let c = Candidate::new(relayed, CandidateKind::Relay);
                    self.b.add_remote_candidates(now, &[c]);
                }
                Output::PathSelected(path) => self.a_paths.push((self.t(), path)),
                Output::NoPath | Output::PathLost => panic!("A lost the call at {:?}", self.t()),
                _ => {}
            }
        }
        while let Some(output) = self.b.poll_output() {
            match output {
                Output::PathSelected(path) => self.b_paths.push((self.t(), path)),
                Output::NoPath | Output::PathLost => panic!("B lost the call at {:?}", self.t()),
                _ => {}
            }
        }
    }
}

/// An RTP packet claiming to be B's audio, from wherever the forger sits.
fn forged_audio(net: &Net) -> Vec<u8> {
    let ssrc = net.b.session().audio_ssrc().0;
    let mut rtp = vec![0x80, 111, 0x12, 0x34, 0, 0, 0, 1];
    rtp.extend_from_slice(&ssrc.to_be_bytes());
    rtp.extend_from_slice(&[0xfc, 9, 9, 9]);
    rtp
}

#[test]
fn a_call_whose_direct_path_dies_goes_on_through_the_relay_within_two_seconds() {
    let mut net = Net::new();
    net.run_until(Duration::from_secs(3));
    // Direct first: the relay is there but costs the server nothing until needed.
    assert_eq!(
        net.a_paths,
        vec![(net.a_paths[0].0, Path::direct(net.b_host))]
    );
    assert_eq!(net.b_paths.last().unwrap().1, Path::direct(net.a_host));
    assert!(net.a.relay().is_some(), "A allocated its relay");
    let played_before = (net.a_played.len(), net.b_played.len());
    assert!(
        played_before.0 > 100 && played_before.1 > 100,
        "{played_before:?}"
    );

    // The direct path dies mid-call.
    net.direct_dead = true;
    let died = net.t();
    let refused_before = net.a.stats().refused.total();
    net.run_until(died + Duration::from_millis(500));
    // Meanwhile a forger sends B's stream from elsewhere, directly and through the
    // relay's address: A refuses both, and its path does not move to the forger.
    let forged = forged_audio(&net);
    let now = net.now;
    net.a
        .handle_datagram(now, addr("203.0.113.66:4000"), &forged);
    net.a.handle_datagram(now, net.relay.server, &forged);
    assert_eq!(net.a.path(), Some(Path::direct(net.b_host)));
    assert!(net.a.stats().refused.total() > refused_before);
    net.run_until(died + Duration::from_secs(6));

    let relay_path = Path::via_relay(net.b_host);
    let (switched_at, path) = *net.a_paths.last().unwrap();
    assert_eq!(path, relay_path, "{:?}", net.a_paths);
    assert_eq!(net.a_paths.len(), 2, "{:?}", net.a_paths);
    let a_relayed = net.a.relay().unwrap();
    let b_last = net.b_paths.last().unwrap();
    assert_eq!(b_last.1, Path::direct(a_relayed), "{:?}", net.b_paths);
    // The last good consent answer came at most one consent interval (500 ms) before
    // the path died; both sides are on the relay within 2 s of it.
    let last_good = died - Duration::from_millis(500);
    assert!(
        switched_at - last_good <= Duration::from_secs(2),
        "A at {switched_at:?}"
    );
    assert!(
        b_last.0 - last_good <= Duration::from_secs(2),
        "B at {:?}",
        b_last.0
    );
    // Audio flows both ways again, through the relay.
    let resumed = |played: &[Duration]| played.iter().filter(|t| **t > switched_at).count();
    assert!(
        resumed(&net.a_played) > 150,
        "A played {}",
        resumed(&net.a_played)
    );
    assert!(
        resumed(&net.b_played) > 150,
        "B played {}",
        resumed(&net.b_played)
    );
    assert_eq!(net.a.counters().path_switches, 1);
    // A datagram straight from B's host no longer belongs to the path (it is relayed).
    let now = net.now;
    let wrong_leg = net.a.counters().wrong_leg;
    let b_host = net.b_host;
    net.a.handle_datagram(now, b_host, &forged);
    assert_eq!(net.a.counters().wrong_leg, wrong_leg + 1);
    assert!(net.relay.relay.stats().to_peers.0 > 100 && net.relay.relay.stats().to_clients.0 > 100);
}
