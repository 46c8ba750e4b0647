//! One allocation's state: its client, credentials, permissions and channels; and the
//! token bucket of the user it belongs to.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::time::Instant;

use super::request::{Refused, error};
use crate::relay::Refusal;

#[derive(Debug)]
pub(super) struct Allocation {
    pub(super) client: SocketAddr,
    /// The full REST user name (`expiry:user`), which later requests must repeat.
    pub(super) username: Box<str>,
    /// The user part, for quotas.
    pub(super) user: Box<str>,
    pub(super) key: [u8; 16],
    /// `None` until the shell has bound the relayed socket.
    pub(super) relayed: Option<SocketAddr>,
    /// The Allocate's transaction and, once answered, the answer (for retransmissions).
    pub(super) transaction: [u8; 12],
    pub(super) response: Option<Vec<u8>>,
    pub(super) lifetime: Duration,
    pub(super) expires: Instant,
    pub(super) permissions: Vec<(IpAddr, Instant)>,
    pub(super) channels: Vec<Channel>,
    /// Whether the client asked for mobility (RFC 8016), and its current ticket once
    /// the allocation is up.
    pub(super) mobility: bool,
    /// A MAC only the relay can make, naming this allocation; a new one after each move.
    pub(super) ticket: Option<[u8; 16]>,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Channel {
    pub(super) number: u16,
    pub(super) peer: SocketAddr,
    pub(super) expires: Instant,
}

#[derive(Debug)]
pub(super) struct User {
    pub(super) allocations: usize,
    /// Token bucket in bytes.
    pub(super) tokens: u64,
    pub(super) refilled: Instant,
}

impl Allocation {
    pub(super) fn permitted(&self, now: Instant, ip: IpAddr) -> bool {
        self.permissions
            .iter()
            .any(|(p, expires)| *p == ip && *expires > now)
    }

    pub(super) fn install_permission(
        &mut self,
        ip: IpAddr,
        expires: Instant,
        max: usize,
    ) -> Result<(), Refused> {
        if let Some(existing) = self.permissions.iter_mut().find(|(p, _)| *p == ip) {
            existing.1 = expires;
            return Ok(());
        }
        if self.permissions.len() >= max {
            return Err(Refused(
                Refusal::TooManyPermissions,
                error(508, "Insufficient Capacity"),
            ));
        }
        self.permissions.push((ip, expires));
        Ok(())
    }
}
