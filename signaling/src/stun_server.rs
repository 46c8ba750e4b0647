//! Address discovery: answers STUN Binding requests (RFC 5389) on UDP with the
//! requester's reflexive address (XOR-MAPPED-ADDRESS), so a client behind NAT learns
//! the public address and port its packets come from. The client side is here too:
//! [`discover`] asks on a socket with retransmissions.
//!
//! The wire format is the media core's sans-IO binding codec
//! ([`magpie_media::ice::binding_response`] and its siblings), which the client's
//! connectivity checks sit beside; this module only adds the sockets.

use std::future::Future;
use std::net::SocketAddr;

use std::time::Duration;

use magpie_media::ice::{binding_request, binding_response, parse_binding_response};
use stun::agent::TransactionId;
use tokio::net::UdpSocket;
use tokio::time::{Instant, timeout_at};
use tracing::{debug, info, trace, warn};

/// What [`serve`] does with one datagram from `from`: the reply to send back, or `None`
/// when the datagram is not a Binding request and is ignored. Pure, and fuzzed
/// (`signaling/fuzz`, target `stun_binding`).
pub fn answer(datagram: &[u8], from: SocketAddr) -> Option<Vec<u8>> {
    let response = binding_response(datagram, from);
    if response.is_none() {
        trace!(%from, len = datagram.len(), "not a binding request");
    }
    response
}

/// Asks the STUN server at `server` which address `socket`'s packets come from.
/// Retransmits as RFC 5389 §7.2.1 says (500 ms, doubling) until `within` has passed.
/// Other datagrams arriving on `socket` meanwhile are dropped.
pub async fn discover(
    socket: &UdpSocket,
    server: SocketAddr,
    within: Duration,
) -> std::io::Result<SocketAddr> {
    let deadline = Instant::now() + within;
    let id = TransactionId::new().0;
    let request = binding_request(id);
    let mut rto = Duration::from_millis(500);
    let mut buf = vec![0u8; 1500];
    loop {
        socket.send_to(&request, server).await?;
        let resend_at = (Instant::now() + rto).min(deadline);
        rto *= 2;
        loop {
            match timeout_at(resend_at, socket.recv_from(&mut buf)).await {
                Ok(Ok((len, from))) if from == server => {
                    if let Some(mapped) = parse_binding_response(&buf[..len], id) {
                        return Ok(mapped);
                    }
                }
                Ok(Ok(_)) => {}
                Ok(Err(err)) => return Err(err),
                Err(_) => break,
            }
        }
        if Instant::now() >= deadline {
            let why = format!(
                "no STUN response from {server} within {} ms",
                within.as_millis()
            );
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, why));
        }
    }
}

/// Serves STUN on `socket` until `shutdown` completes.
pub async fn serve(socket: UdpSocket, shutdown: impl Future) {
    info!(addr = ?socket.local_addr().ok(), "answering STUN binding requests");
    let mut buf = vec![0u8; 1500];
    tokio::pin!(shutdown);
    loop {
        let (len, from) = tokio::select! {
            received = socket.recv_from(&mut buf) => match received {
                Ok(received) => received,
                Err(err) => {
                    // ICMP errors from earlier sends surface here; keep serving.
                    debug!(%err, "udp receive failed");
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Some(response) = answer(&buf[..len], from) else {
            continue;
        };
        if let Err(err) = socket.send_to(&response, from).await {
            warn!(%err, %from, "stun reply failed");
        }
    }
    debug!("stun stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binding_request_is_answered_with_its_source_address() {
        let id = TransactionId::new().0;
        let from: SocketAddr = "203.0.113.7:40123".parse().unwrap();
        let response = answer(&binding_request(id), from).unwrap();
        assert_eq!(parse_binding_response(&response, id), Some(from));
        assert_eq!(answer(b"GET / HTTP/1.1\r\n", from), None);
    }
}
