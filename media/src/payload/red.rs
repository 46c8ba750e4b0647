//! RTP payload for redundant audio data (RFC 2198), carrying Opus.
//!
//! A RED payload is a list of block headers followed by the blocks themselves. Every
//! header but the last is four bytes: F=1, the block's payload type (7 bits), its
//! timestamp offset behind the packet's RTP timestamp (14 bits) and its length (10 bits).
//! The last header is one byte, F=0 and the payload type of the primary block, whose
//! length is what remains:
//!
//! ```text
//!  0                   1                   2                   3
//! |1|   block PT  |  timestamp offset         |   block length    |  (redundant)
//! |0|   block PT  |                                                  (primary)
//! ```
//!
//! Redundant blocks have no sequence numbers: the receiver places them by their media
//! time. This sender puts the oldest block first, as RFC 2198 §3 recommends.
//!
//! The payload comes from the network: [`parse`] never panics, bounds the number of
//! blocks, and refuses with a [`PayloadError`] whatever breaks the format.

use bytes::{BufMut, Bytes, BytesMut};

use super::PayloadError;
use crate::types::Pt;

/// Redundant blocks accepted in one payload at most (this sender puts at most 3).
pub const MAX_BLOCKS: usize = 8;
/// The largest timestamp offset a header can carry (14 bits).
pub const MAX_OFFSET: u32 = (1 << 14) - 1;
/// The largest redundant block a header can describe (10 bits).
pub const MAX_BLOCK_LEN: usize = (1 << 10) - 1;

/// One redundant block: an earlier frame, `offset` ticks before the packet's timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The block's payload type.
    pub pt: Pt,
    /// How many RTP ticks before the packet's timestamp the block's media starts.
    pub offset: u32,
    /// The block.
    pub data: Bytes,
}

/// A parsed RED payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Red {
    /// The primary block's payload type.
    pub pt: Pt,
    /// The primary block: this packet's own frame.
    pub primary: Bytes,
    /// Earlier frames, in the order they were carried.
    pub redundant: Vec<Block>,
}

/// Builds a RED payload from the primary frame and the earlier frames to repeat
/// (`(offset in ticks, frame)`, oldest first), all of payload type `pt`, within `max`
/// bytes. Blocks that do not fit a header (too old, too long), the budget or the
/// [`MAX_BLOCKS`] a parser accepts are left out, the oldest first; the primary block
/// always goes in (found by the `red_parse` fuzz target: more than 8 blocks built a
/// payload the parser refused).
pub fn build(pt: Pt, primary: &[u8], redundant: &[(u32, Bytes)], max: usize) -> Bytes {
    let usable: Vec<&(u32, Bytes)> = redundant
        .iter()
        .filter(|(offset, data)| {
            *offset <= MAX_OFFSET && !data.is_empty() && data.len() <= MAX_BLOCK_LEN
        })
        .collect();
    // Drop the oldest blocks until everything fits.
    let size = |blocks: &[&(u32, Bytes)]| {
        1 + primary.len() + blocks.iter().map(|(_, d)| 4 + d.len()).sum::<usize>()
    };
    // At most MAX_BLOCKS (what a parser accepts), the newest.
    let mut first = usable.len().saturating_sub(MAX_BLOCKS);
    while first < usable.len() && size(&usable[first..]) > max {
        first += 1;
    }
    let blocks = &usable[first..];
    let mut out = BytesMut::with_capacity(size(blocks));
    for (offset, data) in blocks {
        let word =
            (1u32 << 31) | (u32::from(pt.0 & 0x7f) << 24) | (offset << 10) | data.len() as u32;
        out.put_u32(word);
    }
    out.put_u8(pt.0 & 0x7f);
    for (_, data) in blocks {
        out.put_slice(data);
    }
    out.put_slice(primary);
    out.freeze()
}

/// Parses a RED payload. The primary block must not be empty (an Opus packet has at
/// least its TOC byte); empty redundant blocks are skipped.
pub fn parse(payload: &Bytes) -> Result<Red, PayloadError> {
    let mut headers = Vec::new();
    let mut at = 0usize;
    let primary_pt = loop {
        let Some(&first) = payload.get(at) else {
            return Err(PayloadError::TruncatedRed);
        };
        if first & 0x80 == 0 {
            at += 1;
            break Pt(first & 0x7f);
        }
        if headers.len() == MAX_BLOCKS {
            return Err(PayloadError::TooManyRedBlocks);
        }
        let Some(word) = payload.get(at..at + 4) else {
            return Err(PayloadError::TruncatedRed);
        };
        let word = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        let pt = Pt(((word >> 24) & 0x7f) as u8);
        let offset = (word >> 10) & MAX_OFFSET;
        let len = (word & 0x3ff) as usize;
        headers.push((pt, offset, len));
        at += 4;
    };
    let mut redundant = Vec::with_capacity(headers.len());
    for (pt, offset, len) in headers {
        let end = at + len;
        if end > payload.len() {
            return Err(PayloadError::TruncatedRed);
        }
        if len > 0 {
            redundant.push(Block {
                pt,
                offset,
                data: payload.slice(at..end),
            });
        }
        at = end;
    }
    if at >= payload.len() {
        return Err(PayloadError::Empty);
    }
    Ok(Red {
        pt: primary_pt,
        primary: payload.slice(at..),
        redundant,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const PT: Pt = Pt(111);

    #[test]
    fn a_packet_with_two_earlier_frames_parses_back() {
        let older = Bytes::from_static(b"\x78older");
        let prev = Bytes::from_static(b"\x78prev");
        let p = build(
            PT,
            b"\x78now",
            &[(1920, older.clone()), (960, prev.clone())],
            1200,
        );
        // Two 4-byte headers, the primary's 1-byte header, then the blocks in order.
        assert_eq!(p.len(), 4 + 4 + 1 + older.len() + prev.len() + 4);
        assert_eq!(&p[..4], &[0x80 | 111, 0x1e, 0x00, 0x06]);
        let red = parse(&p).unwrap();
        assert_eq!(red.primary, Bytes::from_static(b"\x78now"));
        assert_eq!(red.pt, PT);
        let blocks: Vec<_> = red.redundant.iter().map(|b| (b.offset, &b.data)).collect();
        assert_eq!(blocks, vec![(1920, &older), (960, &prev)]);
    }

    #[test]
    fn no_redundancy_is_a_one_byte_header() {
        let p = build(PT, b"\x78now", &[], 1200);
        assert_eq!(&p[..], b"\x6f\x78now");
        assert!(parse(&p).unwrap().redundant.is_empty());
    }

    #[test]
    fn blocks_that_do_not_fit_are_left_out_oldest_first() {
        let big = Bytes::from(vec![1u8; 600]);
        let p = build(PT, &[2u8; 100], &[(1920, big.clone()), (960, big)], 800);
        let red = parse(&p).unwrap();
        assert_eq!(red.redundant.len(), 1);
        assert_eq!(red.redundant[0].offset, 960);
        // A block too old for 14 bits is left out too.
        let p = build(
            PT,
            b"\x78",
            &[(MAX_OFFSET + 1, Bytes::from_static(b"x"))],
            1200,
        );
        assert!(parse(&p).unwrap().redundant.is_empty());
    }

    #[test]
    fn broken_payloads_are_refused_by_reason() {
        assert_eq!(parse(&Bytes::new()), Err(PayloadError::TruncatedRed));
        // A redundant header cut short, then one whose block runs past the end.
        assert_eq!(
            parse(&Bytes::from_static(&[0xef, 0, 0])),
            Err(PayloadError::TruncatedRed)
        );
        assert_eq!(
            parse(&Bytes::from_static(&[0xef, 0, 0x0f, 0x05, 0x6f, 1])),
            Err(PayloadError::TruncatedRed)
        );
        // Headers only: no primary block.
        assert_eq!(
            parse(&Bytes::from_static(&[0x6f])),
            Err(PayloadError::Empty)
        );
        let many: Vec<u8> = std::iter::repeat_n([0xef, 0, 0, 0], MAX_BLOCKS + 1)
            .flatten()
            .chain([0x6f, 1])
            .collect();
        assert_eq!(
            parse(&Bytes::from(many)),
            Err(PayloadError::TooManyRedBlocks)
        );
    }

    #[test]
    fn more_blocks_than_a_parser_accepts_keeps_the_newest() {
        let blocks: Vec<(u32, Bytes)> = (1..=12u32)
            .map(|k| (k * 960, Bytes::from(vec![k as u8; 2])))
            .rev()
            .collect();
        let red = parse(&build(PT, b"\x78", &blocks, 1200)).unwrap();
        assert_eq!(red.redundant.len(), MAX_BLOCKS);
        assert_eq!(red.redundant.last().unwrap().offset, 960);
    }

    proptest! {
        #[test]
        fn round_trip(
            primary in proptest::collection::vec(any::<u8>(), 1..300),
            blocks in proptest::collection::vec(
                (0u32..=MAX_OFFSET, proptest::collection::vec(any::<u8>(), 1..300)),
                0..4,
            ),
        ) {
            let blocks: Vec<(u32, Bytes)> =
                blocks.into_iter().map(|(o, d)| (o, Bytes::from(d))).collect();
            let p = build(PT, &primary, &blocks, 1200);
            let red = parse(&p).unwrap();
            prop_assert_eq!(&red.primary[..], &primary[..]);
            let got: Vec<(u32, Bytes)> =
                red.redundant.into_iter().map(|b| (b.offset, b.data)).collect();
            // Whatever was kept is the newest suffix of what was asked for.
            prop_assert!(got.len() <= blocks.len());
            prop_assert_eq!(&got[..], &blocks[blocks.len() - got.len()..]);
            prop_assert!(p.len() <= 1200);
        }

        #[test]
        fn any_bytes_parse_or_are_refused(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let data = Bytes::from(data);
            if let Ok(red) = parse(&data) {
                let carried: usize = red.redundant.iter().map(|b| b.data.len()).sum();
                prop_assert!(!red.primary.is_empty());
                prop_assert!(carried + red.primary.len() < data.len());
            }
        }
    }
}
