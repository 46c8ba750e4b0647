//! Address discovery: answers STUN Binding requests (RFC 5389) on UDP with the
//! requester's reflexive address (XOR-MAPPED-ADDRESS), so a client behind NAT learns
//! the public address and port its packets come from.

use std::future::Future;
use std::net::SocketAddr;

use stun::fingerprint::FINGERPRINT;
use stun::message::{BINDING_REQUEST, BINDING_SUCCESS, Message, Setter, is_message};
use stun::xoraddr::XorMappedAddress;
use tokio::net::UdpSocket;
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
    use stun::agent::TransactionId;
    use stun::message::Getter;

    use super::*;

    fn binding_request() -> Message {
        let mut msg = Message::new();
        let setters: [Box<dyn Setter>; 2] =
            [Box::new(TransactionId::new()), Box::new(BINDING_REQUEST)];
        msg.build(&setters).unwrap();
        msg
    }

    #[test]
    fn binding_request_gets_the_reflexive_address() {
        let request = binding_request();
        let from: SocketAddr = "203.0.113.7:40123".parse().unwrap();
        let raw = binding_response(&request.raw, from).unwrap();
        let mut response = Message::new();
        response.raw = raw;
        response.decode().unwrap();
        assert_eq!(response.typ, BINDING_SUCCESS);
        assert_eq!(response.transaction_id, request.transaction_id);
        let mut mapped = XorMappedAddress::default();
        mapped.get_from(&response).unwrap();
        assert_eq!(SocketAddr::new(mapped.ip, mapped.port), from);
    }

    #[test]
    fn other_datagrams_are_ignored() {
        let from: SocketAddr = "[::1]:5000".parse().unwrap();
        assert_eq!(binding_response(b"", from), None);
        assert_eq!(binding_response(&[0u8; 20], from), None);
        let mut truncated = binding_request().raw;
        truncated[3] = 200; // claims attributes that are not there
        assert_eq!(binding_response(&truncated, from), None);
    }
}
