//! What the virtual-time call tests share: two audio-only sessions agreed with each
//! other, ICE credentials, and the real TURN relay core of magpie-server on a
//! simulated server address (allocation, forwarding both ways, bound ports).

use std::net::SocketAddr;
use std::time::Instant;

use magpie_media::Session;
use magpie_media::ice::Credentials;
use magpie_media::ice::turn::{TurnClient, TurnConfig};
use magpie_media::{Agreement, SessionConfig};
use magpie_signaling::relay::{self, AllocationId, HEADROOM, Relay, TAILROOM, auth::Secret};

/// The relay's wall clock (credentials' expiry), fixed.
pub const UNIX_NOW: u64 = 1_764_000_000;

pub fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub fn creds(name: &str) -> Credentials {
    Credentials {
        ufrag: format!("{name}frag"),
        pwd: format!("{name}-password-of-22+chars"),
    }
}

/// Two audio-only sessions (seeds 1 and 2), each holding the agreement with the other.
pub fn agreed_sessions(start: Instant) -> (Session, Session) {
    let session = |seed| {
        SessionConfig::new()
            .set_seed(seed)
            .set_video(false)
            .build(start)
    };
    let (mut a, mut b) = (session(1), session(2));
    let (ab, ba) = (Agreement::between(&a, &b), Agreement::between(&b, &a));
    a.set_agreement(ab).unwrap();
    b.set_agreement(ba).unwrap();
    (a, b)
}

/// A datagram on the simulated network: from, to, bytes.
pub type Datagram = (SocketAddr, SocketAddr, Vec<u8>);

/// The relay core at `server`; relayed ports are 50,000 + the allocation's number on
/// the server's address.
pub struct VirtualRelay {
    pub relay: Relay,
    pub server: SocketAddr,
    secret: Secret,
    /// Relayed addresses by allocation.
    relayed: Vec<(AllocationId, SocketAddr)>,
}

impl VirtualRelay {
    pub fn new(start: Instant, server: SocketAddr) -> Self {
        let secret = Secret::new(b"virtual-relay-secret");
        let config = relay::Config::new(secret.clone()).set_nonce_key([4; 32]);
        let relay = Relay::new(config, tokio::time::Instant::from_std(start), UNIX_NOW);
        Self {
            relay,
            server,
            secret,
            relayed: Vec::new(),
        }
    }

    /// A TURN client for `user` with credentials as signaling hands them out.
    pub fn turn(&self, start: Instant, user: &str, salt: u8) -> TurnClient {
        let c = self.secret.credentials(user, UNIX_NOW + 600);
        TurnConfig::new(self.server, c.username, c.password).build(start, [salt; 12])
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.relay
            .handle_timeout(tokio::time::Instant::from_std(now));
    }

    /// A datagram to `to`: what the relay forwards, when `to` is one of its addresses
    /// (the server's or a relayed one) and the relay admits it.
    pub fn deliver(
        &mut self,
        now: Instant,
        from: SocketAddr,
        to: SocketAddr,
        bytes: &[u8],
    ) -> Option<Datagram> {
        let now = tokio::time::Instant::from_std(now);
        if to == self.server {
            let f = self.relay.handle_client(now, from, bytes)?;
            let (id, peer, payload) = (f.allocation, f.peer, f.payload.to_vec());
            let relayed = self.relayed.iter().find(|(i, _)| *i == id).unwrap().1;
            return Some((relayed, peer, payload));
        }
        let &(id, _) = self.relayed.iter().find(|(_, a)| *a == to)?;
        let mut buf = vec![0u8; HEADROOM + bytes.len() + TAILROOM];
        let range = HEADROOM..HEADROOM + bytes.len();
        buf[range.clone()].copy_from_slice(bytes);
        let (client, range) = self.relay.handle_peer(now, id, from, &mut buf, range)?;
        Some((self.server, client, buf[range].to_vec()))
    }

    /// Binds the ports the relay asks for and takes what it sends.
    pub fn drain(&mut self, now: Instant) -> Vec<Datagram> {
        let now = tokio::time::Instant::from_std(now);
        while let Some(event) = self.relay.poll_event() {
            if let relay::Event::Bind(id) = event {
                let bound = SocketAddr::new(self.server.ip(), 50_000 + id.0 as u16);
                self.relayed.push((id, bound));
                self.relay.handle_bound(now, id, Some(bound));
            }
        }
        let mut out = Vec::new();
        while let Some(t) = self.relay.poll_transmit() {
            out.push((self.server, t.destination, t.contents));
        }
        out
    }
}
