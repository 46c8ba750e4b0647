//! Who may be relayed to: the hub's side of the relay's permission rule.
//!
//! The relay grants a permission (CreatePermission, ChannelBind) only for an IP where the
//! allocating user's current call peer is (PROTO-RELAY.md item 3). The hub knows calls and
//! which IP each user's signaling connection comes from; the relay knows the user from the
//! REST user name (`expiry:user`). [`CallPeers`] is the one value between them:
//!
//! ```text
//! hub:   online(user, ip) / offline(user)       on login and logout
//!        pair(caller, callee) / unpair(a, b)    when a call starts ringing / ends
//! relay: peer_ip(user) -> Option<IpAddr>        on each permission request
//! ```
//!
//! Writes happen on call and login changes, reads on permission requests (both rare next
//! to relayed data), so a plain mutex is enough; the data path never touches it.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// The shared directory of call peers. Clones share one directory.
#[derive(Clone, Default)]
pub struct CallPeers {
    inner: Arc<Mutex<Directory>>,
}

#[derive(Debug, Default)]
struct Directory {
    /// Each online user's signaling connection IP.
    ips: HashMap<Box<str>, IpAddr>,
    /// Each party of a live call (ringing or answered) -> the other party.
    peers: HashMap<Box<str>, Box<str>>,
}

impl CallPeers {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// `user` is online, signaling from `ip`.
    pub fn online(&self, user: &str, ip: IpAddr) {
        self.with(|d| d.ips.insert(user.into(), ip));
    }

    /// `user` is offline.
    pub fn offline(&self, user: &str) {
        self.with(|d| d.ips.remove(user));
    }

    /// `a` and `b` are in a call with each other.
    pub fn pair(&self, a: &str, b: &str) {
        self.with(|d| {
            d.peers.insert(a.into(), b.into());
            d.peers.insert(b.into(), a.into());
        });
    }

    /// The call between `a` and `b` is over. A newer call of either is left alone.
    pub fn unpair(&self, a: &str, b: &str) {
        self.with(|d| {
            for (one, other) in [(a, b), (b, a)] {
                if d.peers.get(one).is_some_and(|p| &**p == other) {
                    d.peers.remove(one);
                }
            }
        });
    }

    /// The signaling IP of `user`'s current call peer, if `user` is in a call and the
    /// peer is online.
    pub fn peer_ip(&self, user: &str) -> Option<IpAddr> {
        self.with(|d| d.peers.get(user).and_then(|peer| d.ips.get(peer)).copied())
    }

    fn with<T>(&self, f: impl FnOnce(&mut Directory) -> T) -> T {
        // The directory holds no invariant a panicking writer could break halfway.
        let mut directory = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut directory)
    }
}

impl fmt::Debug for CallPeers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (users, pairs) = self.with(|d| (d.ips.len(), d.peers.len() / 2));
        f.debug_struct("CallPeers")
            .field("online", &users)
            .field("calls", &pairs)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_user_in_a_call_sees_the_peers_signaling_ip_and_nobody_else_does() {
        let peers = CallPeers::new();
        peers.online("alice", ip("198.51.100.1"));
        peers.online("bob", ip("198.51.100.2"));
        peers.online("carol", ip("198.51.100.3"));
        assert_eq!(peers.peer_ip("alice"), None, "no call yet");
        peers.pair("alice", "bob");
        assert_eq!(peers.peer_ip("alice"), Some(ip("198.51.100.2")));
        assert_eq!(peers.peer_ip("bob"), Some(ip("198.51.100.1")));
        assert_eq!(peers.peer_ip("carol"), None);
        peers.offline("bob");
        assert_eq!(peers.peer_ip("alice"), None, "the peer went offline");
    }

    #[test]
    fn ending_an_old_call_leaves_a_newer_one() {
        let peers = CallPeers::new();
        for (user, addr) in [
            ("alice", "10.0.0.1"),
            ("bob", "10.0.0.2"),
            ("carol", "10.0.0.3"),
        ] {
            peers.online(user, ip(addr));
        }
        peers.pair("alice", "bob");
        peers.unpair("alice", "bob");
        assert_eq!(peers.peer_ip("alice"), None);
        peers.pair("alice", "carol");
        // A late end of the first call (already unpaired) must not touch the second.
        peers.unpair("alice", "bob");
        assert_eq!(peers.peer_ip("alice"), Some(ip("10.0.0.3")));
        assert_eq!(peers.peer_ip("carol"), Some(ip("10.0.0.1")));
    }
}
