//! Address discovery: answers STUN Binding requests (RFC 5389) on UDP with the
//! requester's reflexive address (XOR-MAPPED-ADDRESS), so a client behind NAT learns
//! the public address and port its packets come from. The client side is here too:
//! [`binding_request`] and [`parse_binding_response`] are sans-IO, and
//! [`discover`] runs them on a socket with retransmissions.

use std::future::Future;
use std::net::SocketAddr;

use std::time::Duration;

use stun::agent::TransactionId;
use stun::fingerprint::FINGERPRINT;
use stun::message::{BINDING_REQUEST, BINDING_SUCCESS, Getter, Message, Setter, is_message};
use stun::xoraddr::XorMappedAddress;
use tokio::net::UdpSocket;
use tokio::time::{Instant, timeout_at};
use tracing::{debug, info, trace, warn};

/// The Binding success response to `datagram` from `from`, or `None` if the datagram
/// is not a well-formed Binding request (it is then ignored, as RFC 5389 §7.3 asks).
pub fn binding_response(datagram: &[u8], from: SocketAddr) -> Option<Vec<u8>> {
    if !is_message(datagram) {
        return None;
    }
    let mut request = Message::new();
    request.raw = datagram.to_vec();
    request.decode().ok()?;
    if request.typ != BINDING_REQUEST {
        return None;
    }
    let mut response = Message::new();
    let mapped = XorMappedAddress {
        ip: from.ip(),
        port: from.port(),
    };
    let setters: [Box<dyn Setter>; 4] = [
        Box::new(request),
        Box::new(BINDING_SUCCESS),
        Box::new(mapped),
        Box::new(FINGERPRINT),
    ];
    response.build(&setters).ok()?;
    Some(response.raw)
}

/// A Binding request with a fresh random transaction id: the id (to match the
/// response) and the datagram to send.
pub fn binding_request() -> ([u8; 12], Vec<u8>) {
    let mut request = Message::new();
    let id = TransactionId::new();
    let setters: [Box<dyn Setter>; 2] = [Box::new(id), Box::new(BINDING_REQUEST)];
    request
        .build(&setters)
        .expect("a transaction id and a message type always build a 20-byte header");
    (id.0, request.raw)
}

/// The reflexive address in a Binding success response to the request with
/// `transaction_id`, or `None` for any other datagram.
pub fn parse_binding_response(datagram: &[u8], transaction_id: [u8; 12]) -> Option<SocketAddr> {
    if !is_message(datagram) {
        return None;
    }
    let mut response = Message::new();
    response.raw = datagram.to_vec();
    response.decode().ok()?;
    if response.typ != BINDING_SUCCESS || response.transaction_id.0 != transaction_id {
        return None;
    }
    let mut mapped = XorMappedAddress::default();
    mapped.get_from(&response).ok()?;
    Some(SocketAddr::new(mapped.ip, mapped.port))
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
    let (id, request) = binding_request();
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
        let Some(response) = binding_response(&buf[..len], from) else {
            trace!(%from, len, "not a binding request");
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
    fn binding_request_gets_the_reflexive_address() {
        let (id, request) = binding_request();
        let from: SocketAddr = "203.0.113.7:40123".parse().unwrap();
        let response = binding_response(&request, from).unwrap();
        assert_eq!(parse_binding_response(&response, id), Some(from));
        assert_eq!(
            parse_binding_response(&response, [0; 12]),
            None,
            "another transaction"
        );
        assert_eq!(
            parse_binding_response(&request, id),
            None,
            "a request is no response"
        );
    }

    #[test]
    fn other_datagrams_are_ignored() {
        let from: SocketAddr = "[::1]:5000".parse().unwrap();
        assert_eq!(binding_response(b"", from), None);
        assert_eq!(binding_response(&[0u8; 20], from), None);
        let mut truncated = binding_request().1;
        truncated[3] = 200; // claims attributes that are not there
        assert_eq!(binding_response(&truncated, from), None);
    }
}
