//! RFC 2198 (RED) parsing of arbitrary payloads, and the build/parse round trip of
//! arbitrary frames: whatever a built payload keeps must parse back unchanged.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use magpie_media::payload::red;
use magpie_media::types::Pt;

fuzz_target!(|data: &[u8]| {
    let payload = Bytes::copy_from_slice(data);
    if let Ok(parsed) = red::parse(&payload) {
        assert!(!parsed.primary.is_empty());
        assert!(parsed.redundant.len() <= red::MAX_BLOCKS);
        let carried: usize = parsed.redundant.iter().map(|b| b.data.len()).sum();
        assert!(carried + parsed.primary.len() < data.len());
    }

    // Frames separated by 0xfe; the first is the primary, the rest earlier frames at
    // offsets taken from their first two bytes.
    let mut frames = data.split(|&b| b == 0xfe).filter(|f| !f.is_empty());
    let Some(primary) = frames.next() else {
        return;
    };
    let blocks: Vec<(u32, Bytes)> = frames
        .map(|f| {
            let offset = u32::from(u16::from_be_bytes([f[0], *f.get(1).unwrap_or(&0)]));
            (offset, Bytes::copy_from_slice(f))
        })
        .collect();
    let max = 64 + usize::from(data[0]) * 4;
    let built = red::build(Pt(111), primary, &blocks, max);
    let parsed = red::parse(&built).expect("a built payload parses");
    assert_eq!(&parsed.primary[..], primary);
    for b in &parsed.redundant {
        assert!(blocks.iter().any(|(o, d)| *o == b.offset && *d == b.data));
    }
});
