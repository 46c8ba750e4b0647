//! The STUN Binding codec for address discovery (RFC 5389 §7): a request, the server's
//! success response carrying the requester's reflexive address (XOR-MAPPED-ADDRESS),
//! and reading that address back. The signaling server answers with it and the client
//! asks with it; unlike the connectivity checks it carries no credentials.
//!
//! Pure functions on the `stun` crate: no socket, no clock, no randomness (the caller
//! draws the transaction id).

use std::net::SocketAddr;

use stun::agent::TransactionId;
use stun::fingerprint::FINGERPRINT;
use stun::message::{BINDING_REQUEST, BINDING_SUCCESS, Getter, Message, Setter, is_message};
use stun::xoraddr::XorMappedAddress;

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

/// A Binding request with `transaction_id`, which the caller draws at random (RFC 5389
/// §6) and keeps to match the response.
pub fn binding_request(transaction_id: [u8; 12]) -> Vec<u8> {
    let mut request = Message::new();
    let setters: [Box<dyn Setter>; 2] = [
        Box::new(TransactionId(transaction_id)),
        Box::new(BINDING_REQUEST),
    ];
    request
        .build(&setters)
        .expect("a transaction id and a message type always build a 20-byte header");
    request.raw
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

#[cfg(test)]
mod tests {
    use super::*;

    const ID: [u8; 12] = [0x5e, 0xed, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10];

    #[test]
    fn binding_request_gets_the_reflexive_address() {
        let request = binding_request(ID);
        let from: SocketAddr = "203.0.113.7:40123".parse().unwrap();
        let response = binding_response(&request, from).unwrap();
        assert_eq!(parse_binding_response(&response, ID), Some(from));
        assert_eq!(
            parse_binding_response(&response, [0; 12]),
            None,
            "another transaction"
        );
        assert_eq!(
            parse_binding_response(&request, ID),
            None,
            "a request is no response"
        );
    }

    #[test]
    fn an_ipv6_requester_learns_its_ipv6_address() {
        let from: SocketAddr = "[2001:db8::7]:5004".parse().unwrap();
        let response = binding_response(&binding_request(ID), from).unwrap();
        assert_eq!(parse_binding_response(&response, ID), Some(from));
    }

    #[test]
    fn other_datagrams_are_ignored() {
        let from: SocketAddr = "[::1]:5000".parse().unwrap();
        assert_eq!(binding_response(b"", from), None);
        assert_eq!(binding_response(&[0u8; 20], from), None);
        let mut truncated = binding_request(ID);
        truncated[3] = 200; // claims attributes that are not there
        assert_eq!(binding_response(&truncated, from), None);
        let response = binding_response(&binding_request(ID), from).unwrap();
        assert_eq!(
            binding_response(&response, from),
            None,
            "a response is no request"
        );
    }
}
