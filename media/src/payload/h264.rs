//! H.264 over RTP (RFC 6184), non-interleaved mode: single NAL unit packets, STAP-A
//! aggregates of small NAL units (SPS + PPS, typically) and FU-A fragments of large ones.
//!
//! Access units come in and go out as Annex-B byte streams (start codes
//! `00 00 00 01` / `00 00 01`), the form OpenH264 produces and consumes.

use bytes::Bytes;

use super::PayloadError;

const STAP_A: u8 = 24;
const FU_A: u8 = 28;
const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// Splits an Annex-B byte stream into NAL units (start codes and trailing zero bytes
/// removed; empty units skipped).
pub fn split_annexb(stream: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= stream.len() {
        if stream[i] == 0 && stream[i + 1] == 0 && stream[i + 2] == 1 {
            starts.push((i, i + 3));
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut nals = Vec::with_capacity(starts.len());
    for (k, &(_, begin)) in starts.iter().enumerate() {
        let end = starts.get(k + 1).map_or(stream.len(), |&(sc, _)| sc);
        let mut nal = &stream[begin..end];
        while let [rest @ .., 0] = nal {
            nal = rest;
        }
        if !nal.is_empty() {
            nals.push(nal);
        }
    }
    if starts.is_empty() {
        // No start code at all: treat the whole buffer as one NAL unit.
        let mut nal = stream;
        while let [rest @ .., 0] = nal {
            nal = rest;
        }
        if !nal.is_empty() {
            nals.push(nal);
        }
    }
    nals
}

/// Packetizes one access unit into RTP payloads of at most `mtu` bytes each (`mtu` is
/// clamped to at least 3 so a fragment always carries data).
pub fn packetize(access_unit: &[u8], mtu: usize) -> Vec<Bytes> {
    let mtu = mtu.max(3);
    let nals = split_annexb(access_unit);
    let mut out = Vec::new();
    let mut i = 0;
    while i < nals.len() {
        // Aggregate as many following small NAL units as fit in one STAP-A.
        let mut size = 1;
        let mut j = i;
        while j < nals.len() && size + 2 + nals[j].len() <= mtu && nals[j].len() <= 0xffff {
            size += 2 + nals[j].len();
            j += 1;
        }
        if j - i >= 2 {
            let nri = nals[i..j].iter().map(|n| n[0] & 0x60).max().unwrap_or(0);
            let mut p = Vec::with_capacity(size);
            p.push(nri | STAP_A);
            for nal in &nals[i..j] {
                p.extend_from_slice(&(nal.len() as u16).to_be_bytes());
                p.extend_from_slice(nal);
            }
            out.push(Bytes::from(p));
            i = j;
            continue;
        }
        let nal = nals[i];
        if nal.len() <= mtu {
            out.push(Bytes::copy_from_slice(nal));
        } else {
            fragment(nal, mtu, &mut out);
        }
        i += 1;
    }
    out
}

/// FU-A: evenly sized fragments of `nal` (its header byte is carried in FU headers).
fn fragment(nal: &[u8], mtu: usize, out: &mut Vec<Bytes>) {
    let header = nal[0];
    let data = &nal[1..];
    let room = mtu - 2;
    let count = data.len().div_ceil(room);
    let chunk = data.len().div_ceil(count);
    for (k, piece) in data.chunks(chunk).enumerate() {
        let mut fu_header = header & 0x1f;
        if k == 0 {
            fu_header |= 0x80;
        }
        if k + 1 == count {
            fu_header |= 0x40;
        }
        let mut p = Vec::with_capacity(piece.len() + 2);
        p.push((header & 0xe0) | FU_A);
        p.push(fu_header);
        p.extend_from_slice(piece);
        out.push(Bytes::from(p));
    }
}

/// What the first NAL unit of a payload tells about where it sits in a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketInfo {
    /// The payload begins a NAL unit (not an FU-A continuation).
    pub begins_nal: bool,
    /// The first NAL unit is a parameter set (SPS/PPS): keyframes begin with one.
    pub begins_with_parameter_set: bool,
    /// The payload carries (part of) an IDR slice or a parameter set.
    pub keyframe: bool,
}

/// Inspects a payload without copying it.
pub fn inspect(payload: &[u8]) -> Result<PacketInfo, PayloadError> {
    let &first = payload.first().ok_or(PayloadError::Empty)?;
    if first & 0x80 != 0 {
        return Err(PayloadError::ForbiddenBit);
    }
    let key = |t: u8| matches!(t, NAL_IDR | NAL_SPS | NAL_PPS);
    let param = |t: u8| matches!(t, NAL_SPS | NAL_PPS);
    match first & 0x1f {
        t @ 1..=23 => Ok(PacketInfo {
            begins_nal: true,
            begins_with_parameter_set: param(t),
            keyframe: key(t),
        }),
        STAP_A => {
            let types = stap_a_units(payload)?
                .iter()
                .map(|n| n[0] & 0x1f)
                .collect::<Vec<_>>();
            Ok(PacketInfo {
                begins_nal: true,
                begins_with_parameter_set: types.first().is_some_and(|&t| param(t)),
                keyframe: types.into_iter().any(key),
            })
        }
        FU_A => {
            let &fu = payload.get(1).ok_or(PayloadError::Empty)?;
            Ok(PacketInfo {
                begins_nal: fu & 0x80 != 0,
                begins_with_parameter_set: false,
                keyframe: key(fu & 0x1f),
            })
        }
        t => Err(PayloadError::UnsupportedNal(t)),
    }
}

fn stap_a_units(payload: &[u8]) -> Result<Vec<&[u8]>, PayloadError> {
    let mut units = Vec::new();
    let mut rest = &payload[1..];
    while !rest.is_empty() {
        let [a, b, tail @ ..] = rest else {
            return Err(PayloadError::TruncatedAggregate);
        };
        let len = usize::from(u16::from_be_bytes([*a, *b]));
        if len == 0 || len > tail.len() {
            return Err(PayloadError::TruncatedAggregate);
        }
        units.push(&tail[..len]);
        rest = &tail[len..];
    }
    if units.is_empty() {
        return Err(PayloadError::TruncatedAggregate);
    }
    Ok(units)
}

/// Rebuilds an Annex-B access unit from the payloads of one frame, in sequence order.
#[derive(Debug, Default)]
pub struct Depacketizer {
    out: Vec<u8>,
    in_fragment: bool,
}

impl Depacketizer {
    /// An empty access unit.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one payload.
    pub fn push(&mut self, payload: &[u8]) -> Result<(), PayloadError> {
        let &first = payload.first().ok_or(PayloadError::Empty)?;
        if first & 0x80 != 0 {
            return Err(PayloadError::ForbiddenBit);
        }
        match first & 0x1f {
            1..=23 => {
                self.expect_no_fragment()?;
                self.out.extend_from_slice(&START_CODE);
                self.out.extend_from_slice(payload);
            }
            STAP_A => {
                self.expect_no_fragment()?;
                for nal in stap_a_units(payload)? {
                    self.out.extend_from_slice(&START_CODE);
                    self.out.extend_from_slice(nal);
                }
            }
            FU_A => {
                let [_, fu, data @ ..] = payload else {
                    return Err(PayloadError::Empty);
                };
                let (start, end) = (fu & 0x80 != 0, fu & 0x40 != 0);
                if start {
                    self.expect_no_fragment()?;
                    self.out.extend_from_slice(&START_CODE);
                    self.out.push((first & 0xe0) | (fu & 0x1f));
                    self.in_fragment = true;
                } else if !self.in_fragment {
                    return Err(PayloadError::FragmentOrder);
                }
                self.out.extend_from_slice(data);
                if end {
                    self.in_fragment = false;
                }
            }
            t => return Err(PayloadError::UnsupportedNal(t)),
        }
        Ok(())
    }

    fn expect_no_fragment(&self) -> Result<(), PayloadError> {
        if self.in_fragment {
            return Err(PayloadError::FragmentOrder);
        }
        Ok(())
    }

    /// The finished access unit; an unfinished fragment is an error.
    pub fn finish(self) -> Result<Vec<u8>, PayloadError> {
        self.expect_no_fragment()?;
        if self.out.is_empty() {
            return Err(PayloadError::Empty);
        }
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn au(nals: &[&[u8]]) -> Vec<u8> {
        nals.iter()
            .flat_map(|n| START_CODE.iter().chain(n.iter()).copied())
            .collect()
    }

    fn round_trip(access_unit: &[u8], mtu: usize) -> Vec<u8> {
        let mut d = Depacketizer::new();
        for p in packetize(access_unit, mtu) {
            assert!(p.len() <= mtu);
            d.push(&p).unwrap();
        }
        d.finish().unwrap()
    }

    #[test]
    fn small_nals_share_one_stap_a() {
        let sps = [0x67, 1, 2, 3];
        let pps = [0x68, 4, 5];
        let idr = [0x65, 9, 9, 9];
        let input = au(&[&sps, &pps, &idr]);
        let packets = packetize(&input, 1200);
        assert_eq!(packets.len(), 1);
        assert_eq!(packets[0][0] & 0x1f, STAP_A);
        let info = inspect(&packets[0]).unwrap();
        assert!(info.keyframe && info.begins_with_parameter_set);
        assert_eq!(round_trip(&input, 1200), input);
    }

    #[test]
    fn large_nal_becomes_fu_a_fragments_within_mtu() {
        let mut idr = vec![0x65];
        idr.extend((0..5000u32).map(|i| (i % 251) as u8 + 1));
        let input = au(&[&idr]);
        let packets = packetize(&input, 1200);
        assert_eq!(packets.len(), 5);
        assert!(packets.iter().all(|p| p[0] & 0x1f == FU_A));
        assert_eq!(round_trip(&input, 1200), input);
    }

    #[test]
    fn three_byte_start_codes_and_single_nal_packets() {
        let input = [0, 0, 1, 0x41, 7, 7, 0, 0, 1, 0x41, 8, 8];
        let packets = packetize(&input, 6);
        assert_eq!(packets.len(), 2);
        assert_eq!(round_trip(&input, 6), au(&[&[0x41, 7, 7], &[0x41, 8, 8]]));
    }

    #[test]
    fn fragment_without_start_is_rejected() {
        let mut d = Depacketizer::new();
        assert_eq!(
            d.push(&[0x7c, 0x05, 1, 2]),
            Err(PayloadError::FragmentOrder)
        );
        let mut d = Depacketizer::new();
        d.push(&[0x7c, 0x85, 1, 2]).unwrap();
        assert_eq!(d.finish(), Err(PayloadError::FragmentOrder));
    }

    #[test]
    fn garbage_aggregates_are_errors() {
        assert_eq!(
            inspect(&[0x18, 0, 9, 1]),
            Err(PayloadError::TruncatedAggregate)
        );
        assert_eq!(inspect(&[0x18]), Err(PayloadError::TruncatedAggregate));
        assert_eq!(inspect(&[0x80]), Err(PayloadError::ForbiddenBit));
        assert_eq!(inspect(&[0x1e]), Err(PayloadError::UnsupportedNal(30)));
        assert_eq!(inspect(&[]), Err(PayloadError::Empty));
    }

    proptest! {
        #[test]
        fn packetize_then_depacketize_preserves_every_nal_unit(
            nals in proptest::collection::vec(
                (prop_oneof![Just(0x67u8), Just(0x68), Just(0x65), Just(0x41), Just(0x06)],
                 proptest::collection::vec(1u8..=255, 0..3000)),
                1..6,
            ),
            mtu in 3usize..1500,
        ) {
            let mut input = Vec::new();
            for (header, body) in &nals {
                input.extend_from_slice(&START_CODE);
                input.push(*header);
                input.extend_from_slice(body);
            }
            let packets = packetize(&input, mtu);
            let mut d = Depacketizer::new();
            for p in &packets {
                prop_assert!(p.len() <= mtu);
                d.push(p).unwrap();
            }
            prop_assert_eq!(d.finish().unwrap(), input);
        }
    }
}
