//! SRTP (AEAD_AES_128_GCM, RFC 7714) on the media core's own contexts: protect one
//! 1,200-byte RTP packet (the session's MTU) with the sender's keys, then check and
//! decrypt it with the receiver's, as every datagram of a call is, each into a buffer
//! reused from packet to packet as the session reuses its own. Each iteration uses a new
//! sequence number, so the receiver's replay window moves as in a call. Target (issue
//! 10): protect + unprotect ≤ 2 µs. `webrtc-srtp`'s contexts, which the core used before
//! (they allocate per packet), run the same way beside them for comparison.
//!
//! Each runs twice: in wall time (group `srtp`), and in the CPU time of the benchmark's
//! thread (group `srtp-thread-cpu`, `CLOCK_THREAD_CPUTIME_ID`), which other processes on
//! a shared machine do not inflate.
//!
//! Run: `cargo bench -p magpie-benches --bench srtp`
#![allow(missing_docs)]

use std::hint::black_box;

use bytes::BytesMut;
use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
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

/// The CPU time of the calling thread, shown as durations.
struct ThreadCpu(WallTime);

fn thread_cpu_now() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

impl Measurement for ThreadCpu {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        thread_cpu_now()
    }
    fn end(&self, started: Duration) -> Duration {
        thread_cpu_now().saturating_sub(started)
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, v: &Duration) -> f64 {
        v.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        self.0.formatter()
    }
}

fn keys() -> SrtpKeys {
    SrtpKeys {
        send: MasterKey::from_bytes([0x11; 28]),
        receive: MasterKey::from_bytes([0x22; 28]),
    }
}

fn webrtc_srtp(key: &MasterKey, replay: bool) -> webrtc_srtp::context::Context {
    use webrtc_srtp::option::srtp_replay_protection;
    use webrtc_srtp::protection_profile::ProtectionProfile;
    let window = replay.then(|| srtp_replay_protection(1024));
    webrtc_srtp::context::Context::new(
        &key.key,
        &key.salt,
        ProtectionProfile::AeadAes128Gcm,
        window,
        None,
    )
    .expect("a 16-byte key and a 12-byte salt")
}

fn srtp<M: Measurement>(c: &mut Criterion<M>, name: &str) {
    let keys = keys();
    let mut tx = Srtp::new(keys);
    let mut rx = Srtp::new(keys.mirrored());
    // One packet per sequence number, rewritten in place (the header's seq field).
    let mut plain = packet(0);
    let mut seq = 0u16;
    let mut next = move |plain: &mut Vec<u8>| {
        seq = seq.wrapping_add(1);
        plain[2..4].copy_from_slice(&seq.to_be_bytes());
    };
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Bytes(PACKET as u64));
    let (mut sealed, mut opened) = (BytesMut::new(), BytesMut::new());
    group.bench_function("protect+unprotect 1200 B (AES-128-GCM)", |b| {
        b.iter(|| {
            next(&mut plain);
            tx.protect_into(black_box(&plain), &mut sealed)
                .expect("our packet protects");
            rx.unprotect_into(Kind::Rtp, &sealed, &mut opened)
                .expect("it authenticates");
            black_box(&opened);
        });
    });
    let mut tx = Srtp::new(keys);
    group.bench_function("protect 1200 B (AES-128-GCM)", |b| {
        b.iter(|| {
            next(&mut plain);
            tx.protect_into(black_box(&plain), &mut sealed)
                .expect("our packet protects");
            black_box(&sealed);
        });
    });
    let (mut tx, mut rx) = (
        webrtc_srtp(&keys.send, false),
        webrtc_srtp(&keys.send, true),
    );
    group.bench_function("webrtc-srtp protect+unprotect 1200 B (before)", |b| {
        b.iter(|| {
            next(&mut plain);
            let sent = tx.encrypt_rtp(black_box(&plain)).expect("it protects");
            black_box(rx.decrypt_rtp(&sent).expect("it authenticates"))
        });
    });
    group.finish();
}

fn wall(c: &mut Criterion) {
    srtp(c, "srtp");
}

fn thread_cpu(c: &mut Criterion<ThreadCpu>) {
    srtp(c, "srtp-thread-cpu");
}

criterion_group!(benches, wall);
criterion_group! {
    name = cpu;
    config = Criterion::default().with_measurement(ThreadCpu(WallTime));
    targets = thread_cpu
}
criterion_main!(benches, cpu);
