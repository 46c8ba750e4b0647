//! SRTP (AEAD_AES_128_GCM, RFC 7714) on the media core's own contexts: protect one
//! 1,200-byte RTP packet (the session's MTU) with the sender's keys, then check and
//! decrypt it with the receiver's, as every datagram of a call is, each into a buffer
//! reused from packet to packet as the session reuses its own. Each iteration uses a new
//! sequence number, so the receiver's replay window moves as in a call. Target (issue
//! 10): protect + unprotect ≤ 2 µs.
//!
//! Run: `cargo bench -p magpie-benches --bench srtp`
#![allow(missing_docs)]

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use magpie_media::srtp::{MasterKey, Srtp, SrtpKeys};
use magpie_media::types::{Pt, Ssrc};
use magpie_media::wire::{AbsCaptureTime, Kind, RtpHeader, build_rtp};

/// The session's RTP MTU (DESIGN.md): the largest packet it sends.
const PACKET: usize = 1200;

fn packet(seq: u16) -> Vec<u8> {
    let header = RtpHeader {
        marker: false,
        pt: Pt(96),
        seq,
        timestamp: 90_000,
        ssrc: Ssrc(0x5eed),
        capture: Some(AbsCaptureTime(0xe000_0000_0000_0000)),
    };
    // Header (12) + abs-capture-time extension (16) + payload = the MTU, before the tag.
    let payload: Vec<u8> = (0..PACKET - 28).map(|i| i as u8).collect();
    let d = build_rtp(&header, &payload, 1)
        .expect("valid header")
        .to_vec();
    assert_eq!(d.len(), PACKET);
    d
}

fn srtp(c: &mut Criterion) {
    let keys = SrtpKeys {
        send: MasterKey::from_bytes([0x11; 28]),
        receive: MasterKey::from_bytes([0x22; 28]),
    };
    let mut tx = Srtp::new(keys);
    let mut rx = Srtp::new(keys.mirrored());
    // One packet per sequence number, rewritten in place (the header's seq field).
    let mut plain = packet(0);
    let mut seq = 0u16;
    let mut group = c.benchmark_group("srtp");
    group.throughput(Throughput::Bytes(PACKET as u64));
    let (mut sealed, mut opened) = (BytesMut::new(), BytesMut::new());
    group.bench_function("protect+unprotect 1200 B (AES-128-GCM)", |b| {
        b.iter(|| {
            seq = seq.wrapping_add(1);
            plain[2..4].copy_from_slice(&seq.to_be_bytes());
            tx.protect_into(black_box(&plain), &mut sealed)
                .expect("our packet protects");
            rx.unprotect_into(Kind::Rtp, &sealed, &mut opened)
                .expect("it authenticates");
            black_box(&opened);
        });
    });
    let mut seq = 0u16;
    let mut tx = Srtp::new(keys);
    group.bench_function("protect 1200 B (AES-128-GCM)", |b| {
        b.iter(|| {
            seq = seq.wrapping_add(1);
            plain[2..4].copy_from_slice(&seq.to_be_bytes());
            tx.protect_into(black_box(&plain), &mut sealed)
                .expect("our packet protects");
            black_box(&sealed);
        });
    });
    group.finish();
}

criterion_group!(benches, srtp);
criterion_main!(benches);
