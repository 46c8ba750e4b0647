//! The relay's hot-path wire format, by hand and without allocation: ChannelData
//! (RFC 8656 §12.4), the attributes of a Send indication (§11.4) and the Data
//! indication (§11.6) written in place in front of a payload. Requests and their
//! responses, which are rare, go through the `stun`/`turn` crates instead.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;

/// The STUN magic cookie (RFC 8489 §5).
pub const MAGIC_COOKIE: u32 = 0x2112_a442;
/// STUN message header size.
pub const HEADER: usize = 20;
/// Send indication: method 0x006, class indication.
pub const SEND_INDICATION: u16 = 0x0016;
/// Data indication: method 0x007, class indication.
pub const DATA_INDICATION: u16 = 0x0017;
/// XOR-PEER-ADDRESS.
pub const ATTR_XOR_PEER_ADDRESS: u16 = 0x0012;
/// DATA.
pub const ATTR_DATA: u16 = 0x0013;
/// Channel numbers a client may bind. RFC 8656 §12 narrowed them to 0x4000-0x4FFF,
/// but RFC 5766 clients (coturn's own `turnutils_uclient` among them) pick from
/// 0x4000-0x7FFE, and every number in that range is ChannelData by its first two
/// bits, so we accept RFC 5766's range.
pub const CHANNELS: std::ops::RangeInclusive<u16> = 0x4000..=0x7ffe;

/// Room a buffer needs in front of a peer's payload for [`data_indication`]: the
/// header, XOR-PEER-ADDRESS for IPv6 (4 + 20) and the DATA attribute header.
pub const HEADROOM: usize = HEADER + 24 + 4;
/// Room a buffer needs after a peer's payload: DATA is padded to 4 bytes.
pub const TAILROOM: usize = 3;

/// What the first two bits of a datagram on the TURN port say it is (RFC 8656 §12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A STUN message (first two bits 00).
    Stun,
    /// A ChannelData message (first two bits 01).
    ChannelData,
    /// Anything else.
    Other,
}

/// Classifies a datagram by its first byte.
pub fn kind(datagram: &[u8]) -> Kind {
    match datagram.first().map(|b| b >> 6) {
        Some(0) => Kind::Stun,
        Some(1) => Kind::ChannelData,
        _ => Kind::Other,
    }
}

/// A ChannelData message: the channel number and where its application data lies.
/// Over UDP the padding is optional, so the datagram may be longer than the data.
pub fn channel_data(datagram: &[u8]) -> Option<(u16, Range<usize>)> {
    let header: [u8; 4] = datagram.get(..4)?.try_into().ok()?;
    let channel = u16::from_be_bytes([header[0], header[1]]);
    let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    if datagram.len() < 4 + len {
        return None;
    }
    Some((channel, 4..4 + len))
}

/// Writes a ChannelData header in the 4 bytes before `payload` in `buf` and returns the
/// message's range (unpadded: padding is optional over UDP).
pub fn write_channel_data(
    buf: &mut [u8],
    channel: u16,
    payload: Range<usize>,
) -> Option<Range<usize>> {
    let start = payload.start.checked_sub(4)?;
    let len = u16::try_from(payload.len()).ok()?;
    let header = buf.get_mut(start..start + 4)?;
    header[..2].copy_from_slice(&channel.to_be_bytes());
    header[2..].copy_from_slice(&len.to_be_bytes());
    Some(start..payload.end)
}

/// A Send indication's peer address and data, found without copying. `None` for a
/// message that is not a well-formed Send indication with both attributes.
pub fn send_indication(datagram: &[u8]) -> Option<(SocketAddr, Range<usize>)> {
    let header = datagram.get(..HEADER)?;
    if u16::from_be_bytes([header[0], header[1]]) != SEND_INDICATION
        || u32::from_be_bytes([header[4], header[5], header[6], header[7]]) != MAGIC_COOKIE
    {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let body = datagram.get(HEADER..HEADER + len)?;
    let transaction: [u8; 12] = header[8..20].try_into().ok()?;
    let (mut peer, mut data) = (None, None);
    let mut at = 0;
    while at + 4 <= body.len() {
        let typ = u16::from_be_bytes([body[at], body[at + 1]]);
        let alen = usize::from(u16::from_be_bytes([body[at + 2], body[at + 3]]));
        let value = at + 4..at + 4 + alen;
        let value_bytes = body.get(value.clone())?;
        match typ {
            ATTR_XOR_PEER_ADDRESS if peer.is_none() => {
                peer = Some(xor_address(value_bytes, &transaction)?);
            }
            ATTR_DATA if data.is_none() => {
                data = Some(HEADER + value.start..HEADER + value.end);
            }
            _ => {}
        }
        at = value.end + (4 - alen % 4) % 4;
    }
    Some((peer?, data?))
}

/// Decodes an XOR-*-ADDRESS value (RFC 8489 §14.2).
pub fn xor_address(value: &[u8], transaction: &[u8; 12]) -> Option<SocketAddr> {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let port = u16::from_be_bytes([*value.get(2)?, *value.get(3)?]) ^ (MAGIC_COOKIE >> 16) as u16;
    let ip = match (value.get(1)?, value.len()) {
        (0x01, 8) => {
            let mut octets = [0u8; 4];
            for (i, octet) in octets.iter_mut().enumerate() {
                *octet = value[4 + i] ^ cookie[i];
            }
            IpAddr::V4(Ipv4Addr::from(octets))
        }
        (0x02, 20) => {
            let mut octets = [0u8; 16];
            for (i, octet) in octets.iter_mut().enumerate() {
                let key = if i < 4 { cookie[i] } else { transaction[i - 4] };
                *octet = value[4 + i] ^ key;
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Writes a Data indication carrying `payload` from `peer` around the payload, which
/// lies in `buf` after at least [`HEADROOM`] bytes and before at least [`TAILROOM`]
/// bytes. Returns the message's range in `buf`. The transaction id is derived from
/// `seq` (an indication's id only has to be distinct, RFC 8489 §6.3.2's "randomly
/// chosen" is for requests).
pub fn data_indication(
    buf: &mut [u8],
    peer: SocketAddr,
    payload: Range<usize>,
    seq: u64,
) -> Option<Range<usize>> {
    let data_len = u16::try_from(payload.len()).ok()?;
    let padding = (4 - payload.len() % 4) % 4;
    let (family, addr_len) = match peer {
        SocketAddr::V4(_) => (0x01u8, 8usize),
        SocketAddr::V6(_) => (0x02, 20),
    };
    let start = payload.start.checked_sub(HEADER + 4 + addr_len + 4)?;
    let end = payload.end + padding;
    if end > buf.len() {
        return None;
    }
    let body_len = u16::try_from(end - start - HEADER).ok()?;
    let mut transaction = [0u8; 12];
    transaction[..8].copy_from_slice(&seq.to_be_bytes());
    transaction[8..].copy_from_slice(b"mgpi");

    let mut at = start;
    let mut put = |bytes: &[u8]| {
        buf[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    put(&DATA_INDICATION.to_be_bytes());
    put(&body_len.to_be_bytes());
    put(&MAGIC_COOKIE.to_be_bytes());
    put(&transaction);
    put(&ATTR_XOR_PEER_ADDRESS.to_be_bytes());
    put(&(addr_len as u16).to_be_bytes());
    put(&[0, family]);
    put(&(peer.port() ^ (MAGIC_COOKIE >> 16) as u16).to_be_bytes());
    let cookie = MAGIC_COOKIE.to_be_bytes();
    match peer.ip() {
        IpAddr::V4(ip) => {
            let o = ip.octets();
            put(&[
                o[0] ^ cookie[0],
                o[1] ^ cookie[1],
                o[2] ^ cookie[2],
                o[3] ^ cookie[3],
            ]);
        }
        IpAddr::V6(ip) => {
            let mut o = ip.octets();
            for (i, octet) in o.iter_mut().enumerate() {
                *octet ^= if i < 4 { cookie[i] } else { transaction[i - 4] };
            }
            put(&o);
        }
    }
    put(&ATTR_DATA.to_be_bytes());
    put(&data_len.to_be_bytes());
    debug_assert_eq!(at, payload.start);
    buf[payload.end..end].fill(0);
    Some(start..end)
}

#[cfg(test)]
mod tests {
    use stun::message::{Getter, Message};
    use turn::proto::data::Data;
    use turn::proto::peeraddr::PeerAddress;

    use super::*;

    #[test]
    fn a_data_indication_decodes_with_the_stun_crate() {
        for peer in ["198.51.100.4:5000", "[2001:db8::7]:6000"] {
            let peer: SocketAddr = peer.parse().unwrap();
            let mut buf = vec![0u8; HEADROOM + 5 + TAILROOM];
            buf[HEADROOM..HEADROOM + 5].copy_from_slice(b"hello");
            let range = data_indication(&mut buf, peer, HEADROOM..HEADROOM + 5, 7).unwrap();
            let mut m = Message::new();
            m.raw = buf[range].to_vec();
            m.decode().unwrap();
            let mut addr = PeerAddress::default();
            addr.get_from(&m).unwrap();
            assert_eq!(SocketAddr::new(addr.ip, addr.port), peer);
            let mut data = Data::default();
            data.get_from(&m).unwrap();
            assert_eq!(data.0, b"hello");
        }
    }

    #[test]
    fn channel_data_round_trips_and_short_ones_are_refused() {
        let mut buf = [0u8; 10];
        buf[4..9].copy_from_slice(b"abcde");
        let range = write_channel_data(&mut buf, 0x4001, 4..9).unwrap();
        assert_eq!(channel_data(&buf[range]), Some((0x4001, 4..9)));
        assert_eq!(channel_data(&[0x40, 0x01, 0x00, 0x09, 1, 2]), None);
        assert_eq!(channel_data(&[0x40]), None);
        assert_eq!(write_channel_data(&mut buf, 0x4001, 2..9), None);
    }

    #[test]
    fn truncated_send_indications_are_refused() {
        let mut m = Message::new();
        m.typ = turn::proto::send_indication();
        m.new_transaction_id().unwrap();
        m.build(&[
            Box::new(PeerAddress {
                ip: "192.0.2.1".parse().unwrap(),
                port: 9,
            }),
            Box::new(Data(b"xyz".to_vec())),
        ])
        .unwrap();
        let (peer, data) = send_indication(&m.raw).unwrap();
        assert_eq!(peer, "192.0.2.1:9".parse().unwrap());
        assert_eq!(&m.raw[data], b"xyz");
        for cut in 0..m.raw.len() {
            let mut short = m.raw[..cut].to_vec();
            assert_eq!(send_indication(&short), None, "cut at {cut}");
            // A length field that lies about the body.
            if short.len() >= HEADER {
                short[3] = 0xff;
                assert_eq!(send_indication(&short), None);
            }
        }
    }
}
