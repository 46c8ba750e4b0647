//! RTCP: our closed enum of the packets the core uses, parsed from and built into
//! compound packets (RFC 3550 §6.1) with the `rtcp` crate.
//!
//! We split a compound packet ourselves by the common header's length field and hand
//! only the packet types we use to the crate, one length-checked slice at a time;
//! everything else (XR, APP, ...) is skipped unparsed. Transport-cc feedback is ours
//! (`super::tcc`).

use bytes::Bytes;
use rtcp::goodbye::Goodbye;
use rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtcp::receiver_report::ReceiverReport;
use rtcp::reception_report::ReceptionReport;
use rtcp::sender_report::SenderReport;
use rtcp::source_description::{
    SdesType, SourceDescription, SourceDescriptionChunk, SourceDescriptionItem,
};
use rtcp::transport_feedbacks::transport_layer_nack::{
    TransportLayerNack, nack_pairs_from_sequence_numbers,
};
use webrtc_util::marshal::{Marshal, Unmarshal};

use super::WireError;
use crate::types::Ssrc;

const PT_SR: u8 = 200;
const PT_RR: u8 = 201;
const PT_SDES: u8 = 202;
const PT_BYE: u8 = 203;
const PT_RTPFB: u8 = 205;
const PT_PSFB: u8 = 206;
const FMT_NACK: u8 = 1;
const FMT_PLI: u8 = 1;
const FMT_FIR: u8 = 4;
/// Application-layer feedback (RFC 4585 §6.4), of which we know REMB.
const FMT_ALFB: u8 = 15;
const REMB_ID: &[u8; 4] = b"REMB";

/// One reception report block (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlock {
    /// The source this block reports on.
    pub ssrc: Ssrc,
    /// Fraction lost since the previous report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative packets lost (24 bits).
    pub total_lost: u32,
    /// Extended highest sequence number received.
    pub highest_seq: u32,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the last SR's NTP time (LSR).
    pub lsr: u32,
    /// Delay since that SR, in 1/65536 s (DLSR).
    pub dlsr: u32,
}

/// The RTCP packets the core sends and understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rtcp {
    /// Sender report.
    SenderReport {
        /// Sender.
        ssrc: Ssrc,
        /// NTP time of the report.
        ntp: u64,
        /// RTP time matching `ntp`.
        rtp_time: u32,
        /// Packets sent.
        packets: u32,
        /// Payload octets sent.
        octets: u32,
        /// Reception reports.
        reports: Vec<ReportBlock>,
    },
    /// Receiver report.
    ReceiverReport {
        /// Reporter.
        ssrc: Ssrc,
        /// Reception reports.
        reports: Vec<ReportBlock>,
    },
    /// Generic NACK (RFC 4585 §6.2.1).
    Nack {
        /// Who asks.
        sender: Ssrc,
        /// The stream the packets belong to.
        media: Ssrc,
        /// Missing wire sequence numbers.
        seqs: Vec<u16>,
    },
    /// Picture loss indication (RFC 4585 §6.3.1); FIR (RFC 5104) is read as one too.
    Pli {
        /// Who asks.
        sender: Ssrc,
        /// The video stream that needs a keyframe.
        media: Ssrc,
    },
    /// Receiver estimated maximum bitrate (draft-alvestrand-rmcat-remb): the rate the
    /// receiver's congestion control allows for the streams in `ssrcs`.
    Remb {
        /// Who estimates.
        sender: Ssrc,
        /// The estimate, bits per second (18-bit mantissa, 6-bit exponent on the wire).
        bitrate_bps: u64,
        /// The streams it covers.
        ssrcs: Vec<Ssrc>,
    },
    /// Transport-wide congestion control feedback: what came of each packet we sent.
    TransportFeedback(super::tcc::TransportFeedback),
    /// Source description carrying the CNAME (required in compound packets).
    Cname {
        /// The source.
        ssrc: Ssrc,
        /// Canonical name.
        cname: Bytes,
    },
    /// The sources are leaving.
    Goodbye {
        /// Who leaves.
        ssrcs: Vec<Ssrc>,
    },
}

/// Parses a compound RTCP packet. Unknown packet types are skipped; a malformed known
/// one fails the whole datagram.
pub fn parse_rtcp(data: &[u8]) -> Result<Vec<Rtcp>, WireError> {
    let mut out = Vec::new();
    let mut rest = data;
    if rest.is_empty() {
        return Err(WireError::Truncated { len: 0, need: 4 });
    }
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(WireError::Truncated {
                len: rest.len(),
                need: 4,
            });
        }
        let version = rest[0] >> 6;
        if version != 2 {
            return Err(WireError::Version(version));
        }
        let len = (usize::from(u16::from_be_bytes([rest[2], rest[3]])) + 1) * 4;
        if rest.len() < len {
            return Err(WireError::Truncated {
                len: rest.len(),
                need: len,
            });
        }
        let (packet, tail) = rest.split_at(len);
        rest = tail;
        parse_one(packet, &mut out)?;
    }
    Ok(out)
}

/// The least length a packet of this type and count needs; the `rtcp` crate reads
/// past shorter buffers (and panics), so they are rejected here first.
fn min_len(pt: u8, fmt: u8) -> usize {
    let count = usize::from(fmt);
    match pt {
        PT_SR => 28 + 24 * count,
        PT_RR => 8 + 24 * count,
        PT_BYE => 4 + 4 * count,
        PT_RTPFB | PT_PSFB => 12,
        _ => 4,
    }
}

/// Checks the layout details the `rtcp` crate trusts: padding, FCI sizes, the BYE
/// reason length.
fn check_layout(packet: &[u8]) -> Result<(), WireError> {
    let (pt, fmt) = (packet[1], packet[0] & 0x1f);
    let need = min_len(pt, fmt);
    if packet.len() < need {
        return Err(WireError::Truncated {
            len: packet.len(),
            need,
        });
    }
    let mut body = packet.len();
    if packet[0] & 0x20 != 0 {
        let pad = usize::from(packet[packet.len() - 1]);
        if pad == 0 || body < need + pad {
            return Err(WireError::Padding);
        }
        // RFC 3550 padding is whole words, but the `rtcp` crate itself writes a BYE
        // with a count of 3 for 4 bytes: round the body down to a word boundary.
        body = (body - pad) & !3;
    }
    let malformed = Err(WireError::Malformed("RTCP layout"));
    match (pt, fmt) {
        (PT_RTPFB, FMT_NACK) if !(body - 12).is_multiple_of(4) => return malformed,
        (PT_PSFB, FMT_FIR) if !(body - 12).is_multiple_of(8) => return malformed,
        (PT_BYE, _) if body > need => {
            // Optional reason: a length byte and that many bytes.
            let reason = usize::from(packet[need]);
            if need + 1 + reason > body {
                return malformed;
            }
        }
        _ => {}
    }
    Ok(())
}

fn parse_one(packet: &[u8], out: &mut Vec<Rtcp>) -> Result<(), WireError> {
    let fmt = packet[0] & 0x1f;
    // Transport-cc feedback is ours to parse, and its content need not end on a word:
    // a padded one (the `rtcp` crate and libwebrtc pad it) goes in whole, its parser
    // reading no further than its count says.
    if packet[1] == PT_RTPFB && fmt == super::tcc::FMT_TCC {
        check_layout(packet)?;
        out.push(Rtcp::TransportFeedback(
            super::tcc::TransportFeedback::parse(packet)?,
        ));
        return Ok(());
    }
    if matches!(packet[1], PT_SR | PT_RR | PT_BYE | PT_RTPFB | PT_PSFB) {
        check_layout(packet)?;
    }
    // The crate mishandles padding (it panics on padded FIRs): strip it here and hand
    // over an unpadded packet.
    let unpadded;
    let packet = if packet[0] & 0x20 != 0 {
        let pad = usize::from(packet[packet.len() - 1]);
        let body = packet
            .len()
            .checked_sub(pad)
            .map(|b| b & !3)
            .filter(|&b| b >= 4)
            .ok_or(WireError::Padding)?;
        let mut copy = packet[..body].to_vec();
        copy[0] &= !0x20;
        let words = u16::try_from(body / 4 - 1).map_err(|_| WireError::Padding)?;
        copy[2..4].copy_from_slice(&words.to_be_bytes());
        unpadded = copy;
        &unpadded[..]
    } else {
        packet
    };
    let mut buf = packet;
    let malformed = |what| move |_| WireError::Malformed(what);
    match packet[1] {
        PT_SR => {
            let sr = SenderReport::unmarshal(&mut buf).map_err(malformed("SR"))?;
            out.push(Rtcp::SenderReport {
                ssrc: Ssrc(sr.ssrc),
                ntp: sr.ntp_time,
                rtp_time: sr.rtp_time,
                packets: sr.packet_count,
                octets: sr.octet_count,
                reports: sr.reports.iter().map(block_from).collect(),
            });
        }
        PT_RR => {
            let rr = ReceiverReport::unmarshal(&mut buf).map_err(malformed("RR"))?;
            out.push(Rtcp::ReceiverReport {
                ssrc: Ssrc(rr.ssrc),
                reports: rr.reports.iter().map(block_from).collect(),
            });
        }
        PT_BYE => {
            let bye = Goodbye::unmarshal(&mut buf).map_err(malformed("BYE"))?;
            out.push(Rtcp::Goodbye {
                ssrcs: bye.sources.into_iter().map(Ssrc).collect(),
            });
        }
        PT_RTPFB if fmt == FMT_NACK => {
            let nack = TransportLayerNack::unmarshal(&mut buf).map_err(malformed("NACK"))?;
            out.push(Rtcp::Nack {
                sender: Ssrc(nack.sender_ssrc),
                media: Ssrc(nack.media_ssrc),
                seqs: nack.nacks.iter().flat_map(|p| p.packet_list()).collect(),
            });
        }
        PT_PSFB if fmt == FMT_PLI => {
            let pli = PictureLossIndication::unmarshal(&mut buf).map_err(malformed("PLI"))?;
            out.push(Rtcp::Pli {
                sender: Ssrc(pli.sender_ssrc),
                media: Ssrc(pli.media_ssrc),
            });
        }
        PT_PSFB if fmt == FMT_FIR => {
            let fir = FullIntraRequest::unmarshal(&mut buf).map_err(malformed("FIR"))?;
            for entry in &fir.fir {
                out.push(Rtcp::Pli {
                    sender: Ssrc(fir.sender_ssrc),
                    media: Ssrc(entry.ssrc),
                });
            }
        }
        PT_PSFB if fmt == FMT_ALFB => {
            if let Some(remb) = parse_remb(packet)? {
                out.push(remb);
            }
        }
        // SDES is parsed only for its presence; we key streams by SSRC, not CNAME.
        PT_SDES => {}
        _ => {}
    }
    Ok(())
}

/// A REMB, by hand: the `rtcp` crate reads the SSRC list past the end of a short packet.
/// Other application-layer feedback is skipped (`Ok(None)`).
fn parse_remb(packet: &[u8]) -> Result<Option<Rtcp>, WireError> {
    let word = |at: usize| {
        u32::from_be_bytes([packet[at], packet[at + 1], packet[at + 2], packet[at + 3]])
    };
    if packet.len() < 16 || &packet[12..16] != REMB_ID {
        return Ok(None);
    }
    if packet.len() < 20 {
        return Err(WireError::Truncated {
            len: packet.len(),
            need: 20,
        });
    }
    let count = usize::from(packet[16]);
    let need = 20 + 4 * count;
    if packet.len() < need {
        return Err(WireError::Truncated {
            len: packet.len(),
            need,
        });
    }
    let exp = u32::from(packet[17] >> 2);
    let mantissa = u64::from(word(16) & 0x3_ffff);
    // An exponent this large overflows 64 bits: no real link, so saturate.
    let bitrate_bps = mantissa
        .checked_shl(exp)
        .filter(|b| b >> exp == mantissa)
        .unwrap_or(u64::MAX);
    Ok(Some(Rtcp::Remb {
        sender: Ssrc(word(4)),
        bitrate_bps,
        ssrcs: (0..count).map(|i| Ssrc(word(20 + 4 * i))).collect(),
    }))
}

/// A REMB, by hand (the crate's takes an `f32` rate and would round it).
fn remb(sender: Ssrc, bitrate_bps: u64, ssrcs: &[Ssrc]) -> Bytes {
    let ssrcs = &ssrcs[..ssrcs.len().min(255)];
    let mut exp = 0u32;
    let mut mantissa = bitrate_bps;
    while mantissa > 0x3_ffff {
        mantissa >>= 1;
        exp += 1;
    }
    let mut out = Vec::with_capacity(20 + 4 * ssrcs.len());
    out.push(0x80 | FMT_ALFB);
    out.push(PT_PSFB);
    out.extend_from_slice(&((4 + ssrcs.len()) as u16).to_be_bytes());
    out.extend_from_slice(&sender.0.to_be_bytes());
    // The media SSRC is unused by REMB and zero.
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(REMB_ID);
    out.push(ssrcs.len() as u8);
    let packed = (exp << 18) | mantissa as u32;
    out.extend_from_slice(&packed.to_be_bytes()[1..]);
    for ssrc in ssrcs {
        out.extend_from_slice(&ssrc.0.to_be_bytes());
    }
    Bytes::from(out)
}

fn block_from(r: &ReceptionReport) -> ReportBlock {
    ReportBlock {
        ssrc: Ssrc(r.ssrc),
        fraction_lost: r.fraction_lost,
        total_lost: r.total_lost,
        highest_seq: r.last_sequence_number,
        jitter: r.jitter,
        lsr: r.last_sender_report,
        dlsr: r.delay,
    }
}

fn block_to(b: &ReportBlock) -> ReceptionReport {
    ReceptionReport {
        ssrc: b.ssrc.0,
        fraction_lost: b.fraction_lost,
        total_lost: b.total_lost.min(0x7f_ffff),
        last_sequence_number: b.highest_seq,
        jitter: b.jitter,
        last_sender_report: b.lsr,
        delay: b.dlsr,
    }
}

/// Serializes packets into one compound datagram.
pub fn build_rtcp(packets: &[Rtcp]) -> Result<Bytes, WireError> {
    let mut out = Vec::new();
    for p in packets {
        let bytes = match p {
            Rtcp::SenderReport {
                ssrc,
                ntp,
                rtp_time,
                packets,
                octets,
                reports,
            } => SenderReport {
                ssrc: ssrc.0,
                ntp_time: *ntp,
                rtp_time: *rtp_time,
                packet_count: *packets,
                octet_count: *octets,
                reports: reports.iter().take(31).map(block_to).collect(),
                profile_extensions: Bytes::new(),
            }
            .marshal()
            .map_err(|_| WireError::Serialize("SR"))?,
            Rtcp::ReceiverReport { ssrc, reports } => ReceiverReport {
                ssrc: ssrc.0,
                reports: reports.iter().take(31).map(block_to).collect(),
                profile_extensions: Bytes::new(),
            }
            .marshal()
            .map_err(|_| WireError::Serialize("RR"))?,
            Rtcp::Nack {
                sender,
                media,
                seqs,
            } => TransportLayerNack {
                sender_ssrc: sender.0,
                media_ssrc: media.0,
                nacks: nack_pairs_from_sequence_numbers(seqs),
            }
            .marshal()
            .map_err(|_| WireError::Serialize("NACK"))?,
            Rtcp::Pli { sender, media } => PictureLossIndication {
                sender_ssrc: sender.0,
                media_ssrc: media.0,
            }
            .marshal()
            .map_err(|_| WireError::Serialize("PLI"))?,
            Rtcp::Cname { ssrc, cname } => SourceDescription {
                chunks: vec![SourceDescriptionChunk {
                    source: ssrc.0,
                    items: vec![SourceDescriptionItem {
                        sdes_type: SdesType::SdesCname,
                        text: cname.slice(..cname.len().min(255)),
                    }],
                }],
            }
            .marshal()
            .map_err(|_| WireError::Serialize("SDES"))?,
            Rtcp::Goodbye { ssrcs } => goodbye(ssrcs),
            Rtcp::TransportFeedback(fb) => Bytes::from(fb.marshal()?),
            Rtcp::Remb {
                sender,
                bitrate_bps,
                ssrcs,
            } => remb(*sender, *bitrate_bps, ssrcs),
        };
        debug_assert_eq!(bytes.len() % 4, 0, "RTCP packets are 32-bit aligned");
        out.extend_from_slice(&bytes);
    }
    Ok(Bytes::from(out))
}

/// A BYE with no reason (RFC 3550 §6.6), written by hand: the `rtcp` crate writes an empty
/// reason as a zero length byte followed by RTCP padding, which Wireshark flags as
/// malformed ("Reason string is not NULL padded"). Without a reason there is nothing to
/// pad, and at most 31 sources fit the count.
fn goodbye(ssrcs: &[Ssrc]) -> Bytes {
    let sources = &ssrcs[..ssrcs.len().min(31)];
    let mut out = Vec::with_capacity(4 + 4 * sources.len());
    out.push(0x80 | sources.len() as u8);
    out.push(PT_BYE);
    out.extend_from_slice(&(sources.len() as u16).to_be_bytes());
    for ssrc in sources {
        out.extend_from_slice(&ssrc.0.to_be_bytes());
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Kind, classify};

    #[test]
    fn remb_round_trips_with_its_mantissa_and_exponent() {
        for bps in [0, 1, 262_143, 262_144, 1_234_567, 2_500_000, 30_000_000] {
            let packet = Rtcp::Remb {
                sender: Ssrc(5),
                bitrate_bps: bps,
                ssrcs: vec![Ssrc(9), Ssrc(10)],
            };
            let wire = build_rtcp(std::slice::from_ref(&packet)).unwrap();
            let [
                Rtcp::Remb {
                    sender,
                    bitrate_bps,
                    ssrcs,
                },
            ] = &parse_rtcp(&wire).unwrap()[..]
            else {
                panic!("not one REMB");
            };
            assert_eq!((*sender, ssrcs.clone()), (Ssrc(5), vec![Ssrc(9), Ssrc(10)]));
            // 18 bits of mantissa: within 2^-17 of the rate.
            assert!(bps - bitrate_bps <= bps >> 17, "{bps} -> {bitrate_bps}");
        }
    }

    #[test]
    fn a_remb_shorter_than_its_ssrc_count_is_refused_and_other_alfb_skipped() {
        let wire = build_rtcp(&[Rtcp::Remb {
            sender: Ssrc(5),
            bitrate_bps: 1_000_000,
            ssrcs: vec![Ssrc(9)],
        }])
        .unwrap();
        let mut short = wire.to_vec();
        short[16] = 3;
        assert!(matches!(
            parse_rtcp(&short),
            Err(WireError::Truncated { .. })
        ));
        let mut other = wire.to_vec();
        other[12..16].copy_from_slice(b"XXXX");
        assert!(parse_rtcp(&other).unwrap().is_empty());
        let mut huge = wire.to_vec();
        huge[17] = 0xff;
        assert!(parse_rtcp(&huge).is_ok());
        // Every truncation (with the length field following it) and every byte set to
        // every value parses or fails cleanly.
        for cut in 4..wire.len() {
            let mut t = wire[..cut].to_vec();
            t[2..4].copy_from_slice(&((cut / 4).saturating_sub(1) as u16).to_be_bytes());
            let _ = parse_rtcp(&t);
        }
        for at in 0..wire.len() {
            for v in 0..=255u8 {
                let mut t = wire.to_vec();
                t[at] = v;
                let _ = parse_rtcp(&t);
            }
        }
    }

    #[test]
    fn compound_round_trips() {
        let block = ReportBlock {
            ssrc: Ssrc(7),
            fraction_lost: 25,
            total_lost: 1000,
            highest_seq: 70_000,
            jitter: 44,
            lsr: 0x1234_5678,
            dlsr: 655,
        };
        let packets = vec![
            Rtcp::SenderReport {
                ssrc: Ssrc(1),
                ntp: 0xdead_beef_0000_0001,
                rtp_time: 96_000,
                packets: 10,
                octets: 1000,
                reports: vec![block],
            },
            Rtcp::Cname {
                ssrc: Ssrc(1),
                cname: Bytes::from_static(b"magpie"),
            },
            Rtcp::Nack {
                sender: Ssrc(1),
                media: Ssrc(9),
                seqs: vec![65_534, 65_535, 0, 3, 40],
            },
            Rtcp::Pli {
                sender: Ssrc(1),
                media: Ssrc(9),
            },
        ];
        let bytes = build_rtcp(&packets).unwrap();
        assert_eq!(classify(&bytes), Kind::Rtcp);
        let parsed = parse_rtcp(&bytes).unwrap();
        let expected: Vec<_> = packets
            .into_iter()
            .filter(|p| !matches!(p, Rtcp::Cname { .. }))
            .collect();
        assert_eq!(parsed, expected);
    }

    #[test]
    fn truncated_compound_is_an_error() {
        let bytes = build_rtcp(&[Rtcp::ReceiverReport {
            ssrc: Ssrc(1),
            reports: vec![],
        }])
        .unwrap();
        let err = parse_rtcp(&bytes[..bytes.len() - 2]).unwrap_err();
        assert!(matches!(err, WireError::Truncated { .. }));
    }

    #[test]
    fn short_feedback_packets_are_errors_not_panics() {
        // Found by fuzzing: a NACK whose length covers only the header.
        let bytes = [0xa1, 0xcd, 0x00, 0x01, 0xcb, 0x00, 0x80, 0x00];
        assert!(matches!(
            parse_rtcp(&bytes),
            Err(WireError::Truncated { .. })
        ));
        let sr_claiming_reports = [0x81, 200, 0x00, 0x01, 0, 0, 0, 1];
        assert!(parse_rtcp(&sr_claiming_reports).is_err());
        // A FIR whose entries are not whole 8-byte units.
        let mut fir = vec![0x84, 0xce, 0x00, 0x03, 0, 0, 0, 1, 0, 0, 0, 2];
        fir.extend_from_slice(&[0, 0, 0, 3]);
        assert!(parse_rtcp(&fir).is_err());
        // A BYE whose reason runs past the packet; padding larger than the packet.
        assert!(parse_rtcp(&[0x81, 0xcb, 0, 2, 0, 0, 0, 1, 9, b'x', 0, 0]).is_err());
        assert!(parse_rtcp(&[0xa0, 0xc9, 0, 1, 0, 0, 0, 1, 0, 0, 0, 99]).is_err());
        // A padded FIR (the crate panicked on it); padding is stripped before parsing.
        let mut padded = vec![0xa4, 0xce, 0x00, 0x05, 0, 0, 0, 1, 0, 0, 0, 2];
        padded.extend_from_slice(&[0, 0, 0, 9, 1, 0, 0, 0, 0, 0, 0, 4]);
        assert_eq!(
            parse_rtcp(&padded).unwrap(),
            vec![Rtcp::Pli {
                sender: Ssrc(1),
                media: Ssrc(9)
            }]
        );
    }

    #[test]
    fn our_own_goodbye_parses() {
        let bye = Rtcp::Goodbye {
            ssrcs: vec![Ssrc(1), Ssrc(2)],
        };
        let bytes = build_rtcp(std::slice::from_ref(&bye)).unwrap();
        assert_eq!(parse_rtcp(&bytes).unwrap(), vec![bye]);
    }

    #[test]
    fn a_goodbye_has_no_padding_and_no_reason_to_pad() {
        let bye = Rtcp::Goodbye {
            ssrcs: vec![Ssrc(0x0102_0304)],
        };
        let bytes = build_rtcp(std::slice::from_ref(&bye)).unwrap();
        // V=2, P=0, SC=1; PT 203; length 1 word after the header; the SSRC. Nothing after.
        assert_eq!(&bytes[..], &[0x81, 203, 0, 1, 1, 2, 3, 4]);
    }

    #[test]
    fn a_goodbye_with_a_null_padded_reason_parses() {
        // What other stacks send: SC=1, a 5-byte reason, NULL-padded to the word.
        let mut bytes = vec![0x81, 203, 0, 3, 0, 0, 0, 9, 5];
        bytes.extend_from_slice(b"bye!!");
        bytes.extend_from_slice(&[0, 0]);
        assert_eq!(
            parse_rtcp(&bytes).unwrap(),
            vec![Rtcp::Goodbye {
                ssrcs: vec![Ssrc(9)]
            }]
        );
    }

    #[test]
    fn unknown_packet_types_are_skipped() {
        // An APP packet (PT 204) of one word, then an RR.
        let mut bytes = vec![0x80, 204, 0, 1, 0, 0, 0, 5];
        bytes.extend_from_slice(
            &build_rtcp(&[Rtcp::ReceiverReport {
                ssrc: Ssrc(3),
                reports: vec![],
            }])
            .unwrap(),
        );
        let parsed = parse_rtcp(&bytes).unwrap();
        assert_eq!(parsed.len(), 1);
    }
}
