//! Finding people on the LAN: mDNS/DNS-SD (RFC 6762/6763) with `mdns-sd`.
//!
//! A client that waits for LAN calls announces the service instance `NAME._magpie._udp.local.`
//! (the instance name is the user's name) on every interface, with the port of its direct
//! control listener (TCP) in the SRV record and a TXT record of:
//!
//! - `v`: the direct channel's version ([`magpie_signaling::lan::VERSION`]);
//! - `ctl`: `tcp`, the control channel's transport;
//! - `fp`: the SHA-256 of its identity key, 64 hex digits.
//!
//! What mDNS says is unauthenticated: anyone on the segment can announce any name. It only
//! tells where to connect; who answers is proved by the channel's handshake and checked
//! against the key pinned for the name.

use std::collections::BTreeMap;
use std::net::{SocketAddr, SocketAddrV6};
use std::time::Duration;

use magpie_signaling::lan::{Fingerprint, IdentityKey, SERVICE_TYPE, VERSION};
use magpie_signaling::proto::UserName;
use mdns_sd::{ScopedIp, ServiceDaemon, ServiceEvent, ServiceInfo};
use tracing::debug;

/// mDNS could not be used.
#[derive(Debug, thiserror::Error)]
#[error("mDNS: {0}")]
pub struct DiscoveryError(#[from] mdns_sd::Error);

/// One person found on the LAN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The instance name: the user's name.
    pub name: UserName,
    /// The direct control listener's addresses, IPv4 first (an IPv6 link-local one with
    /// the interface it was heard on).
    pub addrs: Vec<SocketAddr>,
    /// The identity key's fingerprint from the TXT record, if well formed.
    pub fingerprint: Option<Fingerprint>,
    /// The protocol version from the TXT record.
    pub version: Option<u32>,
}

impl Found {
    /// Adds the addresses of a later answer from the same instance.
    fn merge(&mut self, later: Found) {
        for addr in later.addrs {
            if !self.addrs.contains(&addr) {
                self.addrs.push(addr);
            }
        }
        self.addrs.sort_by_key(|a| (a.is_ipv6(), *a));
    }
}

/// An announcement that lasts as long as this value: dropping it says goodbye on the LAN.
pub struct Announcement {
    daemon: ServiceDaemon,
    fullname: String,
}

impl Announcement {
    /// Announces `name` with its control listener's `port` and identity.
    pub fn new(name: &UserName, port: u16, identity: IdentityKey) -> Result<Self, DiscoveryError> {
        let daemon = ServiceDaemon::new()?;
        let fingerprint = identity.fingerprint();
        // A host name of our own: two people on one machine must not share A records.
        let host = format!("magpie-{}.local.", &fingerprint.to_string()[..16]);
        let txt = [
            ("v", VERSION.to_string()),
            ("ctl", "tcp".to_owned()),
            ("fp", fingerprint.to_string()),
        ];
        let info = ServiceInfo::new(SERVICE_TYPE, name.as_str(), &host, (), port, &txt[..])?
            .enable_addr_auto();
        let fullname = info.get_fullname().to_owned();
        daemon.register(info)?;
        debug!(%fullname, port, "announced on the LAN");
        Ok(Self { daemon, fullname })
    }
}

impl Drop for Announcement {
    fn drop(&mut self) {
        // Best effort: the goodbye packets go out before the daemon stops.
        if let Ok(done) = self.daemon.unregister(&self.fullname) {
            let _ = done.recv_timeout(Duration::from_millis(500));
        }
        let _ = self.daemon.shutdown();
    }
}

/// Everyone who answers within `wait`, by name.
pub async fn browse(wait: Duration) -> Result<Vec<Found>, DiscoveryError> {
    let mut found: BTreeMap<UserName, Found> = BTreeMap::new();
    search(wait, |f| {
        match found.get_mut(&f.name) {
            Some(known) => known.merge(f),
            None => {
                found.insert(f.name.clone(), f);
            }
        }
        false
    })
    .await?;
    Ok(found.into_values().collect())
}

/// `name`, as soon as it answers with an IPv4 address (or, failing one, with whatever it
/// gave by `wait`), or `None` after `wait`.
pub async fn resolve(name: &UserName, wait: Duration) -> Result<Option<Found>, DiscoveryError> {
    let mut hit: Option<Found> = None;
    search(wait, |f| {
        if &f.name != name {
            return false;
        }
        match &mut hit {
            Some(known) => known.merge(f),
            None => hit = Some(f),
        }
        // Addresses may come in several answers: IPv6 link-local alone is a poor start.
        hit.as_ref()
            .is_some_and(|h| h.addrs.iter().any(SocketAddr::is_ipv4))
    })
    .await?;
    Ok(hit)
}

/// Browses for up to `wait`, giving each resolved instance to `each` until it says stop.
async fn search(wait: Duration, mut each: impl FnMut(Found) -> bool) -> Result<(), DiscoveryError> {
    let daemon = ServiceDaemon::new()?;
    let events = daemon.browse(SERVICE_TYPE)?;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let event = tokio::select! {
            event = events.recv_async() => event,
            () = tokio::time::sleep_until(deadline) => break,
        };
        let Ok(event) = event else { break };
        if let ServiceEvent::ServiceResolved(service) = event
            && let Some(found) = parse(&service)
            && each(found)
        {
            break;
        }
    }
    let _ = daemon.stop_browse(SERVICE_TYPE);
    let _ = daemon.shutdown();
    Ok(())
}

/// What a resolved instance tells, if it is one of ours with a valid name.
fn parse(service: &mdns_sd::ResolvedService) -> Option<Found> {
    let instance = service
        .fullname
        .strip_suffix(SERVICE_TYPE)?
        .strip_suffix('.')?;
    let Ok(name) = UserName::parse(instance) else {
        debug!(instance, "an instance whose name is no user name: skipped");
        return None;
    };
    let port = service.port;
    let mut addrs: Vec<SocketAddr> = service
        .addresses
        .iter()
        .map(|a| match a {
            // Link-local IPv6 needs the interface it was heard on to connect.
            ScopedIp::V6(v6) => SocketAddrV6::new(*v6.addr(), port, 0, v6.scope_id().index).into(),
            other => SocketAddr::new(other.to_ip_addr(), port),
        })
        .collect();
    addrs.sort_by_key(|a| (a.is_ipv6(), *a));
    Some(Found {
        name,
        addrs,
        fingerprint: service
            .get_property_val_str("fp")
            .and_then(|fp| fp.parse().ok()),
        version: service
            .get_property_val_str("v")
            .and_then(|v| v.parse().ok()),
    })
}
