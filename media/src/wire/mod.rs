//! The boundary to the `rtp` and `rtcp` crates.
//!
//! Their types (`rtp::packet::Packet`, `Box<dyn rtcp::packet::Packet>`) and errors
//! (`util::Error`) stop here: the rest of the crate sees [`RtpPacket`], [`Rtcp`] and
//! [`WireError`]. Before bytes reach a crate parser they are checked for the layouts
//! that make those parsers read past their input, so hostile datagrams produce a
//! [`WireError`] instead of a panic.

mod ext;
mod rtcp_wire;
pub mod tcc;

use bytes::Bytes;
use thiserror::Error;
use util::marshal::{Marshal, Unmarshal};
use webrtc_util as util;

pub use ext::{AbsCaptureTime, AbsSendTime};
pub use rtcp_wire::{ReportBlock, Rtcp, build_rtcp, parse_rtcp};
pub use tcc::TransportFeedback;

use crate::types::{Pt, Ssrc};

/// RTP header length without CSRCs or extensions.
const FIXED_HEADER: usize = 12;
/// RFC 8285 one-byte header extension profile.
const PROFILE_ONE_BYTE: u16 = 0xBEDE;
/// RFC 8285 two-byte header extension profile (0x100 plus 4 "appbits").
const PROFILE_TWO_BYTE_MASK: u16 = 0xFFF0;
const PROFILE_TWO_BYTE: u16 = 0x1000;

/// Why a datagram could not be parsed.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// Shorter than the header it claims.
    #[error("datagram truncated: {len} bytes, need {need}")]
    Truncated {
        /// Bytes present.
        len: usize,
        /// Bytes the header requires.
        need: usize,
    },
    /// The version field is not 2.
    #[error("unsupported RTP/RTCP version {0}")]
    Version(u8),
    /// An RFC 8285 header extension element runs past its block or uses id 15.
    #[error("malformed RTP header extension")]
    HeaderExtension,
    /// The padding count is zero or exceeds the payload.
    #[error("malformed RTP padding")]
    Padding,
    /// The `rtp` or `rtcp` crate rejected the packet.
    #[error("malformed {0} packet")]
    Malformed(&'static str),
    /// A packet we built could not be serialized (a bug in the caller's values).
    #[error("could not serialize {0} packet")]
    Serialize(&'static str),
}

/// What a datagram on the shared socket is (RFC 5761 §4, RFC 7983).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An RTP packet.
    Rtp,
    /// An RTCP (compound) packet.
    Rtcp,
    /// Not RTP/RTCP (STUN, DTLS, garbage).
    Foreign,
}

/// Classifies a datagram by its first two bytes.
pub fn classify(data: &[u8]) -> Kind {
    match data {
        [b0, b1, ..] if (128..=191).contains(b0) => {
            if (192..=223).contains(b1) {
                Kind::Rtcp
            } else {
                Kind::Rtp
            }
        }
        _ => Kind::Foreign,
    }
}

/// The parts of an RTP header the core uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpHeader {
    /// Marker bit: last packet of a video frame (RFC 6184 §5.1).
    pub marker: bool,
    /// Payload type.
    pub pt: Pt,
    /// Wire sequence number.
    pub seq: u16,
    /// Wire timestamp.
    pub timestamp: u32,
    /// Sender SSRC.
    pub ssrc: Ssrc,
    /// abs-capture-time, if present.
    pub capture: Option<AbsCaptureTime>,
}

/// A parsed RTP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpPacket {
    /// Header fields.
    pub header: RtpHeader,
    /// Payload, padding removed.
    pub payload: Bytes,
    /// The P bit: the packet carried padding (RFC 3550 §5.1).
    pub padded: bool,
    /// abs-send-time, if asked for and present.
    pub send_time: Option<AbsSendTime>,
    /// The transport-wide sequence number (draft-holmer-rmcat-transport-wide-cc-
    /// extensions-01), if asked for and present.
    pub transport_seq: Option<u16>,
}

/// The one-byte header extension ids a receiver reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtIds {
    /// abs-capture-time.
    pub capture: u8,
    /// abs-send-time, when asked for.
    pub send_time: Option<u8>,
    /// The transport-wide sequence number, when asked for.
    pub transport_seq: Option<u8>,
}

/// Parses an RTP packet, reading abs-capture-time from one-byte extension `ext_id`.
pub fn parse_rtp(data: &[u8], ext_id: u8) -> Result<RtpPacket, WireError> {
    parse_rtp_with(data, ext_id, None)
}

/// Parses an RTP packet, reading abs-capture-time from one-byte extension `capture_id`
/// and, when `send_time_id` is given, abs-send-time from that one.
pub fn parse_rtp_with(
    data: &[u8],
    capture_id: u8,
    send_time_id: Option<u8>,
) -> Result<RtpPacket, WireError> {
    parse_rtp_ext(
        data,
        ExtIds {
            capture: capture_id,
            send_time: send_time_id,
            transport_seq: None,
        },
    )
}

/// Parses an RTP packet, reading the header extensions `ids` names.
pub fn parse_rtp_ext(data: &[u8], ids: ExtIds) -> Result<RtpPacket, WireError> {
    check_rtp_layout(data)?;
    let mut buf = data;
    let packet =
        rtp::packet::Packet::unmarshal(&mut buf).map_err(|_| WireError::Malformed("RTP"))?;
    let h = &packet.header;
    let element = |id: u8| {
        h.extensions
            .iter()
            .find(move |e| e.id == id && h.extension_profile == PROFILE_ONE_BYTE)
    };
    let capture = element(ids.capture).and_then(|e| AbsCaptureTime::parse(&e.payload));
    let send_time = ids
        .send_time
        .and_then(element)
        .and_then(|e| AbsSendTime::parse(&e.payload));
    let transport_seq = ids
        .transport_seq
        .and_then(element)
        .and_then(|e| match e.payload[..] {
            [a, b] => Some(u16::from_be_bytes([a, b])),
            _ => None,
        });
    Ok(RtpPacket {
        header: RtpHeader {
            marker: h.marker,
            pt: Pt(h.payload_type),
            seq: h.sequence_number,
            timestamp: h.timestamp,
            ssrc: Ssrc(h.ssrc),
            capture,
        },
        payload: packet.payload,
        padded: h.padding,
        send_time,
        transport_seq,
    })
}

/// Adds abs-send-time `time` as one-byte extension `id` (1..=14) to an RTP datagram we
/// built (before it is protected), as it leaves (see [`add_extensions`]).
pub fn add_send_time(
    datagram: &[u8],
    id: u8,
    time: AbsSendTime,
    out: &mut bytes::BytesMut,
) -> Result<(), WireError> {
    if !(1..=14).contains(&id) {
        return Err(WireError::Serialize("abs-send-time id"));
    }
    add_extensions(datagram, &[(id, &time.to_bytes())], out)
}

/// Adds one-byte header extension elements (id 1..=14, 1-16 bytes each) to an RTP
/// datagram we built (before it is protected), as it leaves: a word or two more in its
/// one-byte extension block, or a block of its own where it had none (zero bytes pad
/// the elements to a word, RFC 8285 §4.2). The payload and padding follow unchanged.
/// Video FEC covers payloads, not extensions, so it is unaffected.
pub fn add_extensions(
    datagram: &[u8],
    elements: &[(u8, &[u8])],
    out: &mut bytes::BytesMut,
) -> Result<(), WireError> {
    let mut added = Vec::with_capacity(12);
    for (id, data) in elements {
        if !(1..=14).contains(id) || !(1..=16).contains(&data.len()) {
            return Err(WireError::Serialize("header extension element"));
        }
        added.push((id << 4) | (data.len() as u8 - 1));
        added.extend_from_slice(data);
    }
    while added.len() % 4 != 0 {
        added.push(0);
    }
    let end = rtp_header_len(datagram)?;
    let base = FIXED_HEADER + usize::from(datagram[0] & 0x0f) * 4;
    let new_words = u16::try_from(added.len() / 4).map_err(|_| WireError::HeaderExtension)?;
    out.reserve(datagram.len() + added.len() + 4);
    if datagram[0] & 0x10 == 0 {
        out.extend_from_slice(&datagram[..base]);
        out[0] |= 0x10;
        out.extend_from_slice(&PROFILE_ONE_BYTE.to_be_bytes());
        out.extend_from_slice(&new_words.to_be_bytes());
    } else {
        let profile = u16::from_be_bytes([datagram[base], datagram[base + 1]]);
        if profile != PROFILE_ONE_BYTE {
            return Err(WireError::HeaderExtension);
        }
        let words = u16::from_be_bytes([datagram[base + 2], datagram[base + 3]]);
        let words = words
            .checked_add(new_words)
            .ok_or(WireError::HeaderExtension)?;
        out.extend_from_slice(&datagram[..base + 2]);
        out.extend_from_slice(&words.to_be_bytes());
        out.extend_from_slice(&datagram[base + 4..end]);
    }
    out.extend_from_slice(&added);
    out.extend_from_slice(&datagram[end..]);
    Ok(())
}

/// Serializes an RTP packet; abs-capture-time goes in one-byte extension `ext_id` (1..=14).
pub fn build_rtp(header: &RtpHeader, payload: &[u8], ext_id: u8) -> Result<Bytes, WireError> {
    let extensions: Vec<rtp::header::Extension> = header
        .capture
        .filter(|_| (1..=14).contains(&ext_id))
        .map(|c| rtp::header::Extension {
            id: ext_id,
            payload: c.to_bytes(),
        })
        .into_iter()
        .collect();
    let packet = rtp::packet::Packet {
        header: rtp::header::Header {
            version: 2,
            padding: false,
            extension: !extensions.is_empty(),
            marker: header.marker,
            payload_type: header.pt.0 & 0x7f,
            sequence_number: header.seq,
            timestamp: header.timestamp,
            ssrc: header.ssrc.0,
            csrc: Vec::new(),
            extension_profile: PROFILE_ONE_BYTE,
            extensions,
            extensions_padding: 0,
        },
        payload: Bytes::copy_from_slice(payload),
    };
    packet.marshal().map_err(|_| WireError::Serialize("RTP"))
}

/// Serializes a padding-only RTP packet (RFC 3550 §5.1: P set, no payload, `padding`
/// bytes of padding whose last is their count), as a sender's probes are.
pub fn build_padding(header: &RtpHeader, padding: u8, ext_id: u8) -> Result<Bytes, WireError> {
    if padding == 0 {
        return Err(WireError::Padding);
    }
    let mut d = build_rtp(header, &[], ext_id)?.to_vec();
    d[0] |= 0x20;
    d.resize(d.len() + usize::from(padding) - 1, 0);
    d.push(padding);
    Ok(Bytes::from(d))
}

/// Checks the fixed header, CSRC list, extension block and padding against the datagram
/// length, so the `rtp` crate never reads past the end (it panics when an extension
/// element claims more bytes than remain).
fn check_rtp_layout(data: &[u8]) -> Result<(), WireError> {
    let pos = rtp_header_len(data)?;
    if data[0] & 0x20 != 0 {
        let payload = data.len() - pos;
        let pad = usize::from(data[data.len() - 1]);
        if payload == 0 || pad == 0 || pad > payload {
            return Err(WireError::Padding);
        }
    }
    Ok(())
}

/// The length of an RTP header (fixed part, CSRCs, extension block), checked against the
/// datagram as [`parse_rtp`] checks it, padding aside: under SRTP the padding is
/// encrypted, so only the header can be checked before decryption.
pub fn rtp_header_len(data: &[u8]) -> Result<usize, WireError> {
    let truncated = |need| WireError::Truncated {
        len: data.len(),
        need,
    };
    if data.len() < FIXED_HEADER {
        return Err(truncated(FIXED_HEADER));
    }
    let version = data[0] >> 6;
    if version != 2 {
        return Err(WireError::Version(version));
    }
    let mut pos = FIXED_HEADER + usize::from(data[0] & 0x0f) * 4;
    if data.len() < pos {
        return Err(truncated(pos));
    }
    if data[0] & 0x10 != 0 {
        if data.len() < pos + 4 {
            return Err(truncated(pos + 4));
        }
        let profile = u16::from_be_bytes([data[pos], data[pos + 1]]);
        let words = usize::from(u16::from_be_bytes([data[pos + 2], data[pos + 3]]));
        pos += 4;
        let end = pos + words * 4;
        if data.len() < end {
            return Err(truncated(end));
        }
        check_extension_elements(&data[pos..end], profile)?;
        pos = end;
    }
    Ok(pos)
}

fn check_extension_elements(block: &[u8], profile: u16) -> Result<(), WireError> {
    let two_byte = profile & PROFILE_TWO_BYTE_MASK == PROFILE_TWO_BYTE;
    if profile != PROFILE_ONE_BYTE && !two_byte {
        // An RFC 3550 extension: one opaque block, already length-checked.
        return Ok(());
    }
    let mut i = 0;
    while i < block.len() {
        let b = block[i];
        if b == 0 {
            i += 1;
            continue;
        }
        let len = if two_byte {
            let len = *block.get(i + 1).ok_or(WireError::HeaderExtension)?;
            i += 2;
            usize::from(len)
        } else {
            if b >> 4 == 0x0f {
                return Err(WireError::HeaderExtension);
            }
            i += 1;
            usize::from(b & 0x0f) + 1
        };
        if i + len > block.len() {
            return Err(WireError::HeaderExtension);
        }
        i += len;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(capture: Option<AbsCaptureTime>) -> RtpHeader {
        RtpHeader {
            marker: true,
            pt: Pt(96),
            seq: 65_535,
            timestamp: 0xdead_beef,
            ssrc: Ssrc(0x1234_5678),
            capture,
        }
    }

    #[test]
    fn rtp_round_trips_with_capture_time() {
        let h = header(Some(AbsCaptureTime(0x0123_4567_89ab_cdef)));
        let bytes = build_rtp(&h, b"payload", 3).unwrap();
        assert_eq!(classify(&bytes), Kind::Rtp);
        let p = parse_rtp(&bytes, 3).unwrap();
        assert_eq!(p.header, h);
        assert_eq!(&p.payload[..], b"payload");
    }

    #[test]
    fn a_send_time_is_added_beside_the_capture_time_or_alone() {
        let t = AbsSendTime(0x00ab_cdef);
        for capture in [Some(AbsCaptureTime(0x0123_4567_89ab_cdef)), None] {
            let h = header(capture);
            let plain = build_rtp(&h, b"payload", 3).unwrap();
            let mut out = bytes::BytesMut::new();
            add_send_time(&plain, 4, t, &mut out).unwrap();
            // One word more in a block that was there, two for a new block.
            let grown = if capture.is_some() { 4 } else { 8 };
            assert_eq!(out.len(), plain.len() + grown);
            let p = parse_rtp_with(&out, 3, Some(4)).unwrap();
            assert_eq!(p.header, h);
            assert_eq!(p.send_time, Some(t));
            assert_eq!(&p.payload[..], b"payload");
            // Read without asking for it, the packet is what it was.
            assert_eq!(parse_rtp(&out, 3).unwrap().send_time, None);
        }
        // Padding stays at the end, where its count is.
        let padded = build_padding(&header(None), 40, 3).unwrap();
        let mut out = bytes::BytesMut::new();
        add_send_time(&padded, 4, t, &mut out).unwrap();
        let p = parse_rtp_with(&out, 3, Some(4)).unwrap();
        assert_eq!((p.payload.len(), p.padded, p.send_time), (0, true, Some(t)));
        // Ids outside the one-byte form, and a two-byte block, are refused.
        let mut out = bytes::BytesMut::new();
        assert!(add_send_time(&padded, 15, t, &mut out).is_err());
        let mut two = vec![0x90, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1];
        two.extend_from_slice(&[0x10, 0x00, 0x00, 0x01, 4, 2, 0, 0]);
        assert_eq!(
            add_send_time(&two, 4, t, &mut out),
            Err(WireError::HeaderExtension)
        );
    }

    #[test]
    fn rtp_without_extension_round_trips() {
        let h = header(None);
        let p = parse_rtp(&build_rtp(&h, b"x", 3).unwrap(), 3).unwrap();
        assert_eq!(p.header, h);
    }

    #[test]
    fn extension_element_past_block_end_is_an_error_not_a_panic() {
        // V=2 X=1, one-word extension whose element claims 16 bytes.
        let mut d = vec![0x90, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1];
        d.extend_from_slice(&[0xBE, 0xDE, 0x00, 0x01, 0x1f, 0, 0, 0]);
        assert_eq!(parse_rtp(&d, 1), Err(WireError::HeaderExtension));
        d.truncate(d.len() - 1);
        assert!(matches!(parse_rtp(&d, 1), Err(WireError::Truncated { .. })));
    }

    #[test]
    fn a_padding_only_packet_parses_to_an_empty_payload() {
        let header = RtpHeader {
            marker: false,
            pt: Pt(97),
            seq: 7,
            timestamp: 3,
            ssrc: Ssrc(9),
            capture: Some(AbsCaptureTime(1 << 40)),
        };
        let d = build_padding(&header, 255, 3).unwrap();
        // 12 bytes of header, 16 of extension (its header, one element of 8 bytes and its
        // id byte, padded to words).
        assert_eq!(d.len(), 12 + 16 + 255);
        let p = parse_rtp(&d, 3).unwrap();
        assert_eq!((p.header, p.payload.len()), (header.clone(), 0));
        assert_eq!(build_padding(&header, 0, 3), Err(WireError::Padding));
    }

    #[test]
    fn bad_padding_is_rejected() {
        let d = vec![0xA0, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 2, 9];
        assert_eq!(parse_rtp(&d, 1), Err(WireError::Padding));
    }

    #[test]
    fn demux_follows_rfc5761() {
        assert_eq!(classify(&[0x80, 200]), Kind::Rtcp);
        assert_eq!(classify(&[0x80, 0xe0]), Kind::Rtp); // marker + PT 96
        assert_eq!(classify(&[0x00, 0x01]), Kind::Foreign); // STUN
        assert_eq!(classify(&[0x80]), Kind::Foreign);
    }
}
