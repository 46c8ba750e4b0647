//! The UDP candidates a client offers: where the peer may reach its one media socket.

use std::io;
use std::net::{IpAddr, SocketAddr};

/// The addresses at which a socket bound to `local` can be reached: `local` itself when
/// it names an address, or every address of the machine's interfaces in `local`'s family
/// when it is unspecified (`0.0.0.0` or `[::]`). Loopback comes last, so a peer on
/// another machine tries the addresses that can work for it first. IPv6 link-local
/// addresses are left out: they need a scope that a peer cannot know.
pub fn gather(local: SocketAddr) -> io::Result<Vec<SocketAddr>> {
    if !local.ip().is_unspecified() {
        return Ok(vec![local]);
    }
    let mut addrs: Vec<IpAddr> = if_addrs::get_if_addrs()?
        .into_iter()
        .map(|iface| iface.ip())
        .filter(|ip| ip.is_ipv4() == local.is_ipv4())
        .filter(|ip| !is_v6_link_local(ip))
        .collect();
    addrs.sort_by_key(|ip| ip.is_loopback());
    addrs.dedup();
    Ok(addrs
        .into_iter()
        .map(|ip| SocketAddr::new(ip, local.port()))
        .collect())
}

fn is_v6_link_local(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_address_is_the_only_candidate() {
        let local: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        assert_eq!(gather(local).unwrap(), vec![local]);
    }

    #[test]
    fn unspecified_lists_interfaces_with_loopback_last_and_the_port_kept() {
        let all = gather("0.0.0.0:4000".parse().unwrap()).unwrap();
        assert!(all.iter().all(|a| a.port() == 4000 && a.is_ipv4()));
        assert!(all.iter().any(|a| a.ip().is_loopback()), "{all:?}");
        let first_loopback = all.iter().position(|a| a.ip().is_loopback()).unwrap();
        assert!(
            all[first_loopback..].iter().all(|a| a.ip().is_loopback()),
            "{all:?}"
        );
    }

    #[test]
    fn link_local_v6_is_recognised() {
        assert!(is_v6_link_local(&"fe80::1".parse().unwrap()));
        assert!(!is_v6_link_local(&"2001:db8::1".parse().unwrap()));
        assert!(!is_v6_link_local(&"127.0.0.1".parse().unwrap()));
    }
}
