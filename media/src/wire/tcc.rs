//! Transport-wide congestion control feedback (draft-holmer-rmcat-transport-wide-cc-
//! extensions-01): the receiver tells the sender, for every transport-wide sequence
//! number in a range, whether the packet came and when.
//!
//! Built and parsed by hand: the `rtcp` crate's parser trusts the status count (a
//! 20-byte packet may claim 65,535 packets and get them allocated) and overflows its
//! count on a full last chunk. The tests read our builder's output with the crate's
//! parser, and the crate's (padded) output with ours, so the two agree on the format.

use super::WireError;
use crate::types::Ssrc;

/// The FMT of transport-cc feedback in an RTPFB packet (PT 205).
pub const FMT_TCC: u8 = 15;
/// The reference time counts in these (64 ms).
pub const REFERENCE_UNIT_US: i64 = 64_000;
/// Receive deltas count in these (250 µs).
pub const DELTA_UNIT_US: i64 = 250;
/// The most packets one feedback may report on: more is refused when parsed, and the
/// builder never writes more (a feedback that long would not fit a datagram anyway).
pub const MAX_STATUSES: usize = 4096;
/// The most packets a run-length chunk carries (13 bits).
const MAX_RUN: usize = 8191;
/// The fixed part after the common header: two SSRCs, base, count, reference, fb count.
const FIXED: usize = 4 + 16;

/// One transport-cc feedback packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportFeedback {
    /// Who sends the feedback.
    pub sender: Ssrc,
    /// A media source of the peer's (informational: the numbers are transport-wide).
    pub media: Ssrc,
    /// The transport-wide sequence number of the first packet reported on.
    pub base_seq: u16,
    /// The reference time, in 64 ms units, 24 bits around.
    pub reference: u32,
    /// This feedback's own count, 8 bits around (to tell a lost feedback).
    pub count: u8,
    /// One entry per packet from `base_seq` on: its arrival, in µs after the reference
    /// time, or `None` when it did not come. The wire keeps arrivals to 250 µs.
    pub arrivals: Vec<Option<i64>>,
}

/// A packet status symbol (two bits on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Symbol {
    NotReceived,
    Small,
    Large,
}

impl Symbol {
    fn bits(self) -> u16 {
        match self {
            Self::NotReceived => 0,
            Self::Small => 1,
            Self::Large => 2,
        }
    }

    fn from_bits(bits: u16) -> Result<Self, WireError> {
        match bits {
            0 => Ok(Self::NotReceived),
            1 => Ok(Self::Small),
            2 => Ok(Self::Large),
            _ => Err(WireError::Malformed("transport-cc status")),
        }
    }
}

impl TransportFeedback {
    /// Whether every arrival can be written: in order of sequence number, each within
    /// a 250 µs step of ±8.19 s of the previous (the first of the reference). The
    /// builder of the receive side ends a feedback before a packet that would not fit.
    pub fn delta_fits(previous_us: i64, arrival_us: i64) -> bool {
        let step = quantize(arrival_us) - quantize(previous_us);
        (i64::from(i16::MIN)..=i64::from(i16::MAX)).contains(&step)
    }

    /// The packet, padded to a word (RTCP length is in words).
    pub fn marshal(&self) -> Result<Vec<u8>, WireError> {
        let n = self.arrivals.len();
        if n == 0 || n > MAX_STATUSES {
            return Err(WireError::Serialize("transport-cc status count"));
        }
        // Symbols and deltas, each delta from the previous arrival in whole 250 µs.
        let mut symbols = Vec::with_capacity(n);
        let mut deltas = Vec::new();
        let mut previous = 0i64;
        for arrival in &self.arrivals {
            let Some(at) = arrival else {
                symbols.push(Symbol::NotReceived);
                continue;
            };
            let q = quantize(*at);
            let step = q - previous;
            previous = q;
            if (0..=255).contains(&step) {
                symbols.push(Symbol::Small);
                deltas.push(step as u8);
            } else {
                let step =
                    i16::try_from(step).map_err(|_| WireError::Serialize("transport-cc delta"))?;
                symbols.push(Symbol::Large);
                deltas.extend_from_slice(&step.to_be_bytes());
            }
        }
        let mut out = Vec::with_capacity(FIXED + n / 3 + deltas.len() + 4);
        out.extend_from_slice(&[0x80 | FMT_TCC, 205, 0, 0]);
        out.extend_from_slice(&self.sender.0.to_be_bytes());
        out.extend_from_slice(&self.media.0.to_be_bytes());
        out.extend_from_slice(&self.base_seq.to_be_bytes());
        out.extend_from_slice(&(n as u16).to_be_bytes());
        let reference = (self.reference & 0x00ff_ffff) << 8 | u32::from(self.count);
        out.extend_from_slice(&reference.to_be_bytes());
        let mut i = 0;
        while i < n {
            let run = symbols[i..]
                .iter()
                .take_while(|s| **s == symbols[i])
                .count();
            if run >= 7 || i + run == n {
                // Run length: T=0, two bits of symbol, 13 of length.
                let run = run.min(MAX_RUN);
                let chunk = symbols[i].bits() << 13 | run as u16;
                out.extend_from_slice(&chunk.to_be_bytes());
                i += run;
            } else {
                // Status vector of seven two-bit symbols: T=1, S=1. Past the count the
                // symbols are zero ("not received"), which a reader ignores.
                let mut chunk = 0xc000u16;
                for (k, s) in symbols[i..].iter().take(7).enumerate() {
                    chunk |= s.bits() << (12 - 2 * k);
                }
                out.extend_from_slice(&chunk.to_be_bytes());
                i += 7;
            }
        }
        out.extend_from_slice(&deltas);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        let words = u16::try_from(out.len() / 4 - 1)
            .map_err(|_| WireError::Serialize("transport-cc length"))?;
        out[2..4].copy_from_slice(&words.to_be_bytes());
        Ok(out)
    }

    /// Parses one transport-cc packet (its common header included; RTCP padding after
    /// the deltas is left unread). Refuses a count over [`MAX_STATUSES`], a reserved
    /// symbol, and chunks or deltas that run past the packet.
    pub fn parse(packet: &[u8]) -> Result<Self, WireError> {
        if packet.len() < FIXED {
            return Err(WireError::Truncated {
                len: packet.len(),
                need: FIXED,
            });
        }
        let u16_at = |at: usize| u16::from_be_bytes([packet[at], packet[at + 1]]);
        let u32_at = |at: usize| {
            u32::from_be_bytes([packet[at], packet[at + 1], packet[at + 2], packet[at + 3]])
        };
        let n = usize::from(u16_at(14));
        if n == 0 || n > MAX_STATUSES {
            return Err(WireError::Malformed("transport-cc status count"));
        }
        let mut symbols = Vec::with_capacity(n);
        let mut at = FIXED;
        while symbols.len() < n {
            let Some(bytes) = packet.get(at..at + 2) else {
                return Err(WireError::Truncated {
                    len: packet.len(),
                    need: at + 2,
                });
            };
            at += 2;
            let chunk = u16::from_be_bytes([bytes[0], bytes[1]]);
            let left = n - symbols.len();
            if chunk & 0x8000 == 0 {
                let symbol = Symbol::from_bits(chunk >> 13 & 3)?;
                let run = usize::from(chunk & 0x1fff).min(left);
                symbols.extend(std::iter::repeat_n(symbol, run));
                if run == 0 {
                    return Err(WireError::Malformed("transport-cc empty run"));
                }
            } else if chunk & 0x4000 == 0 {
                // Fourteen one-bit symbols: received (small delta) or not.
                for k in 0..14.min(left) {
                    symbols.push(if chunk >> (13 - k) & 1 == 1 {
                        Symbol::Small
                    } else {
                        Symbol::NotReceived
                    });
                }
            } else {
                for k in 0..7.min(left) {
                    symbols.push(Symbol::from_bits(chunk >> (12 - 2 * k) & 3)?);
                }
            }
        }
        let mut arrivals = Vec::with_capacity(n);
        let mut time = 0i64;
        for symbol in symbols {
            let step = match symbol {
                Symbol::NotReceived => {
                    arrivals.push(None);
                    continue;
                }
                Symbol::Small => packet.get(at).map(|b| (i64::from(*b), 1)),
                Symbol::Large => packet
                    .get(at..at + 2)
                    .map(|b| (i64::from(i16::from_be_bytes([b[0], b[1]])), 2)),
            };
            let Some((step, len)) = step else {
                return Err(WireError::Truncated {
                    len: packet.len(),
                    need: at + 2,
                });
            };
            at += len;
            time += step * DELTA_UNIT_US;
            arrivals.push(Some(time));
        }
        let reference = u32_at(16);
        Ok(Self {
            sender: Ssrc(u32_at(4)),
            media: Ssrc(u32_at(8)),
            base_seq: u16_at(12),
            reference: reference >> 8,
            count: reference as u8,
            arrivals,
        })
    }
}

/// `us` in whole 250 µs steps (rounded down).
fn quantize(us: i64) -> i64 {
    us.div_euclid(DELTA_UNIT_US)
}

#[cfg(test)]
mod tests {
    use super::*;
    use webrtc_util::marshal::Unmarshal;

    fn feedback(arrivals: Vec<Option<i64>>) -> TransportFeedback {
        TransportFeedback {
            sender: Ssrc(1),
            media: Ssrc(2),
            base_seq: 65_530,
            reference: 0x12_3456,
            count: 7,
            arrivals,
        }
    }

    #[test]
    fn runs_vectors_and_both_delta_sizes_survive_a_round_trip() {
        // A run of 20 received close together, a lost run, a mix (small, lost, large,
        // negative), and a long lost tail ending in one arrival.
        let mut arrivals: Vec<Option<i64>> = (0..20).map(|i| Some(i * 1_000)).collect();
        arrivals.extend([None; 9]);
        arrivals.extend([Some(30_000), None, Some(200_000), Some(150_000), None]);
        arrivals.extend([None; 40]);
        arrivals.push(Some(8_000_000));
        let fb = feedback(arrivals);
        let bytes = fb.marshal().unwrap();
        assert_eq!(bytes.len() % 4, 0);
        assert_eq!(TransportFeedback::parse(&bytes).unwrap(), fb);
        // Through the compound parser too.
        let parsed = crate::wire::parse_rtcp(&bytes).unwrap();
        assert_eq!(parsed, vec![crate::wire::Rtcp::TransportFeedback(fb)]);
    }

    #[test]
    fn the_rtcp_crate_reads_what_we_write() {
        use rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
        let arrivals = vec![
            Some(250),
            Some(500),
            None,
            Some(80_000),
            Some(79_750),
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            Some(100_000),
        ];
        let fb = feedback(arrivals.clone());
        let bytes = fb.marshal().unwrap();
        let theirs = TransportLayerCc::unmarshal(&mut &bytes[..]).unwrap();
        assert_eq!(theirs.sender_ssrc, 1);
        assert_eq!(theirs.base_sequence_number, 65_530);
        assert_eq!(theirs.packet_status_count, arrivals.len() as u16);
        assert_eq!(theirs.reference_time, 0x12_3456);
        assert_eq!(theirs.fb_pkt_count, 7);
        // Their deltas are each from the previous arrival, in µs.
        let mut time = 0;
        let times: Vec<i64> = theirs
            .recv_deltas
            .iter()
            .map(|d| {
                time += d.delta;
                time
            })
            .collect();
        let ours: Vec<i64> = arrivals.into_iter().flatten().collect();
        assert_eq!(times, ours);
    }

    #[test]
    fn we_read_what_the_rtcp_crate_writes_padding_and_all() {
        use rtcp::transport_feedbacks::transport_layer_cc::{
            PacketStatusChunk, RecvDelta, RunLengthChunk, StatusChunkTypeTcc, SymbolTypeTcc,
            TransportLayerCc,
        };
        use webrtc_util::marshal::Marshal;
        // One packet received 1 ms after the reference: 23 bytes, padded to 24 with
        // the P bit set.
        let theirs = TransportLayerCc {
            sender_ssrc: 1,
            media_ssrc: 2,
            base_sequence_number: 7,
            packet_status_count: 1,
            reference_time: 5,
            fb_pkt_count: 3,
            packet_chunks: vec![PacketStatusChunk::RunLengthChunk(RunLengthChunk {
                type_tcc: StatusChunkTypeTcc::RunLengthChunk,
                packet_status_symbol: SymbolTypeTcc::PacketReceivedSmallDelta,
                run_length: 1,
            })],
            recv_deltas: vec![RecvDelta {
                type_tcc_packet: SymbolTypeTcc::PacketReceivedSmallDelta,
                delta: 1000,
            }],
        };
        let bytes = theirs.marshal().unwrap();
        assert_eq!((bytes.len(), bytes[0] & 0x20), (24, 0x20));
        let ours = crate::wire::parse_rtcp(&bytes).unwrap();
        assert_eq!(
            ours,
            vec![crate::wire::Rtcp::TransportFeedback(TransportFeedback {
                sender: Ssrc(1),
                media: Ssrc(2),
                base_seq: 7,
                reference: 5,
                count: 3,
                arrivals: vec![Some(1000)],
            })]
        );
    }

    #[test]
    fn arrivals_keep_to_a_quarter_millisecond_without_drift() {
        // 1,000 arrivals 333 µs apart: each step rounds, the sum must not wander.
        let arrivals: Vec<Option<i64>> = (0..1000).map(|i| Some(i * 333)).collect();
        let fb = feedback(arrivals.clone());
        let back = TransportFeedback::parse(&fb.marshal().unwrap()).unwrap();
        for (sent, got) in arrivals.iter().zip(&back.arrivals) {
            let (sent, got) = (sent.unwrap(), got.unwrap());
            assert!((0..DELTA_UNIT_US).contains(&(sent - got)), "{sent} {got}");
        }
        // A step beyond ±8.19 s does not fit.
        assert!(TransportFeedback::delta_fits(0, 8_000_000));
        assert!(!TransportFeedback::delta_fits(0, 9_000_000));
        assert!(feedback(vec![Some(0), Some(9_000_000)]).marshal().is_err());
    }

    #[test]
    fn a_hostile_feedback_is_refused_not_believed() {
        let good = feedback(vec![Some(0), None, Some(1_000)])
            .marshal()
            .unwrap();
        // A count far beyond what the packet holds, in one run-length chunk.
        let mut huge = good.clone();
        huge[14..16].copy_from_slice(&60_000u16.to_be_bytes());
        huge[20..22].copy_from_slice(&0x3fffu16.to_be_bytes());
        assert!(TransportFeedback::parse(&huge).is_err());
        // Received packets whose deltas are missing.
        let mut short = good.clone();
        short[20..22].copy_from_slice(&(0x2000u16 | 3).to_be_bytes());
        short.truncate(22);
        assert!(TransportFeedback::parse(&short).is_err());
        // The reserved symbol, and an empty run.
        let mut reserved = good.clone();
        reserved[20..22].copy_from_slice(&(0x6000u16 | 3).to_be_bytes());
        assert!(TransportFeedback::parse(&reserved).is_err());
        let mut empty = good;
        empty[20..22].copy_from_slice(&0u16.to_be_bytes());
        assert!(TransportFeedback::parse(&empty).is_err());
        // Every truncation of a real one fails cleanly.
        let real = feedback((0..30).map(|i| (i % 3 != 0).then_some(i * 700)).collect())
            .marshal()
            .unwrap();
        for len in 0..real.len() - 3 {
            let _ = TransportFeedback::parse(&real[..len]);
        }
    }
}
