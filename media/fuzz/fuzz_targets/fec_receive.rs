//! The video FEC receiver fed arbitrary media and FEC packets: refusals are errors,
//! never panics, and every FEC packet is either admitted or counted as malformed.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use magpie_media::fec::{FecReceiver, MediaPacket};
use magpie_media::types::SeqNo;

fuzz_target!(|data: &[u8]| {
    let mut rx = FecReceiver::new();
    let mut fec = 0u64;
    // Chunks separated by 0xfe: a chunk starting with an even byte is a media packet
    // (its next two bytes the sequence number), any other a FEC payload.
    for chunk in data.split(|&b| b == 0xfe) {
        match chunk {
            [kind, a, b, rest @ ..] if kind % 2 == 0 => rx.push_media(MediaPacket {
                seq: SeqNo(u64::from(u16::from_be_bytes([*a, *b])) + 65_536),
                ts: u32::from(*kind),
                marker: kind & 2 != 0,
                pt: 96,
                payload: Bytes::copy_from_slice(rest),
            }),
            [_, rest @ ..] => {
                fec += 1;
                let _ = rx.push_fec(&Bytes::copy_from_slice(rest));
            }
            [] => {}
        }
        while let Some(p) = rx.poll_recovered() {
            assert!(p.payload.len() <= data.len());
        }
    }
    let c = rx.counters();
    assert_eq!(c.packets + c.malformed, fec);
});
