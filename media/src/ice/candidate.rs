//! Candidates, their types and priorities (RFC 8445 §5.1.2), and the path a pair
//! becomes.

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// How a candidate was found; it decides the candidate's priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CandidateKind {
    /// An address of a local interface.
    Host,
    /// The address a STUN server saw (a NAT's mapping).
    Srflx,
    /// An address learned from an incoming check (RFC 8445 §7.3.1.3).
    Prflx,
    /// An address on a TURN relay.
    Relay,
}

impl CandidateKind {
    /// RFC 8445 §5.1.2.2's recommended type preferences.
    pub fn type_preference(self) -> u32 {
        match self {
            Self::Host => 126,
            Self::Prflx => 110,
            Self::Srflx => 100,
            Self::Relay => 0,
        }
    }
}

/// A transport address at which a side may be reached, with how it was found. On the
/// wire: `{"addr": "192.0.2.1:5000", "type": "host"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Candidate {
    /// The address.
    pub addr: SocketAddr,
    /// How it was found.
    #[serde(rename = "type")]
    pub kind: CandidateKind,
}

impl Candidate {
    /// A host candidate.
    pub fn host(addr: SocketAddr) -> Self {
        Self {
            addr,
            kind: CandidateKind::Host,
        }
    }

    /// A candidate of `kind`.
    pub fn new(addr: SocketAddr, kind: CandidateKind) -> Self {
        Self { addr, kind }
    }

    /// RFC 8445 §5.1.2.1 for component 1, with a local preference that favours the
    /// candidates listed first (`index` 0 is the most preferred).
    pub fn priority(&self, index: usize) -> u32 {
        let local = 65_535u32.saturating_sub(u32::try_from(index).unwrap_or(u32::MAX));
        (self.kind.type_preference() << 24) + (local << 8) + (256 - 1)
    }
}

/// The pair media flows on: the peer's address, and whether we reach it through our
/// TURN allocation (then datagrams go to the TURN server, wrapped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Path {
    /// The peer's address as seen from our side (its host, reflexive or relayed one).
    pub remote: SocketAddr,
    /// Whether our side sends and receives through our relay.
    pub relayed: bool,
}

impl Path {
    /// A path straight from our socket to `remote`.
    pub fn direct(remote: SocketAddr) -> Self {
        Self {
            remote,
            relayed: false,
        }
    }

    /// A path through our relay to `remote`.
    pub fn via_relay(remote: SocketAddr) -> Self {
        Self {
            remote,
            relayed: true,
        }
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.relayed {
            write!(f, "{} via our relay", self.remote)
        } else {
            write!(f, "{}", self.remote)
        }
    }
}

/// RFC 8445 §6.1.2.3: the pair's priority from the controlling side's candidate `g`
/// and the controlled side's `d`, so both sides order pairs alike.
pub fn pair_priority(g: u32, d: u32) -> u64 {
    let (g, d) = (u64::from(g), u64::from(d));
    (1 << 32) * g.min(d) + 2 * g.max(d) + u64::from(g > d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_beats_reflexive_beats_relay_and_pairs_order_alike_on_both_sides() {
        let addr: SocketAddr = "192.0.2.1:1".parse().unwrap();
        let host = Candidate::host(addr).priority(0);
        let srflx = Candidate::new(addr, CandidateKind::Srflx).priority(0);
        let relay = Candidate::new(addr, CandidateKind::Relay).priority(0);
        assert!(host > srflx && srflx > relay);
        assert_eq!(host, (126 << 24) + (65_535 << 8) + 255);
        assert!(Candidate::host(addr).priority(1) < host);
        assert!(pair_priority(host, host) > pair_priority(host, relay));
        assert!(pair_priority(srflx, srflx) > pair_priority(host, relay));
        assert_ne!(pair_priority(host, relay), pair_priority(relay, host));
    }

    #[test]
    fn candidates_read_and_write_their_wire_form() {
        let json = r#"{"addr":"198.51.100.1:3478","type":"relay"}"#;
        let c: Candidate = serde_json::from_str(json).unwrap();
        assert_eq!(c.kind, CandidateKind::Relay);
        assert_eq!(serde_json::to_string(&c).unwrap(), json);
        assert!(serde_json::from_str::<Candidate>(r#"{"addr":"1.2.3.4:5","type":"x"}"#).is_err());
    }
}
