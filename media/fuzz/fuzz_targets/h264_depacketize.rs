//! H.264 depacketization of arbitrary payload sequences, and packetization of
//! arbitrary access units (whose round trip must preserve every NAL unit).
#![no_main]

use libfuzzer_sys::fuzz_target;
use magpie_media::payload::h264;

fuzz_target!(|data: &[u8]| {
    // Payloads separated by 0xff 0xfe markers.
    let mut depacketizer = h264::Depacketizer::new();
    for payload in data.split(|&b| b == 0xfe) {
        let _ = h264::inspect(payload);
        let _ = depacketizer.push(payload);
    }
    let _ = depacketizer.finish();

    let mtu = 3 + usize::from(data.first().copied().unwrap_or(0));
    let nals: Vec<Vec<u8>> = h264::split_annexb(data).into_iter().map(<[u8]>::to_vec).collect();
    let packets = h264::packetize(data, mtu);
    let mut d = h264::Depacketizer::new();
    let mut ok = true;
    for p in &packets {
        assert!(p.len() <= mtu);
        ok &= d.push(p).is_ok();
    }
    if ok && !packets.is_empty() {
        if let Ok(au) = d.finish() {
            let back: Vec<Vec<u8>> = h264::split_annexb(&au).into_iter().map(<[u8]>::to_vec).collect();
            // NAL units with a forbidden bit set cannot round trip; skip those inputs.
            if nals.iter().all(|n| n[0] & 0x80 == 0 && !matches!(n[0] & 0x1f, 0 | 24..=31)) {
                assert_eq!(back, nals);
            }
        }
    }
});
