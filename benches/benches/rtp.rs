//! The per-packet work of the media core, on its public modules (no sockets, virtual time):
//!
//! - RTP packetize and depacketize: an encoded 20 ms Opus frame, and a 1280x720 H.264
//!   keyframe straight out of OpenH264 (RFC 6184 single NAL / FU-A under the 1200-byte MTU),
//!   each with the abs-capture-time extension the session adds;
//! - jitter buffers: one 20 ms frame into and out of the adaptive audio buffer, and one
//!   720p keyframe's packets into the video frame buffer until the frame comes out;
//! - the NACK generator (with the receive tracker that finds the gaps) on a 200 packet/s
//!   stream with 10 % seeded random loss, 50 ms RTT, retransmissions lost at 10 % too.
//!
//! Run: `cargo bench -p magpie-benches --bench rtp`
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use magpie_media::jitter::audio::{AudioBuffer, Origin};
use magpie_media::jitter::video::FrameBuffer;
use magpie_media::payload::{h264, opus};
use magpie_media::recv::RecvStream;
use magpie_media::recv::nack::NackGenerator;
use magpie_media::types::{Pt, SeqNo, Ssrc};
use magpie_media::wire::{AbsCaptureTime, RtpHeader, build_rtp, parse_rtp};

use common::{keyframe_720p, opus_frame};

mod common;

/// The session's RTP MTU (DESIGN.md) and abs-capture-time extension id.
const MTU: usize = 1200;
const EXT_ID: u8 = 1;

fn header(seq: u16, timestamp: u32, marker: bool) -> RtpHeader {
    RtpHeader {
        marker,
        pt: Pt(96),
        seq,
        timestamp,
        ssrc: Ssrc(0x5eed),
        capture: Some(AbsCaptureTime(0xe000_0000_0000_0000)),
    }
}

/// Payloads of one access unit as RTP datagrams, as the session sends them.
fn video_datagrams(au: &[u8], first_seq: u16, timestamp: u32) -> Vec<Bytes> {
    let payloads = h264::packetize(au, MTU - 40);
    let last = payloads.len() - 1;
    payloads
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let seq = first_seq.wrapping_add(i as u16);
            build_rtp(&header(seq, timestamp, i == last), p, EXT_ID).expect("valid header")
        })
        .collect()
}

fn rtp_opus(c: &mut Criterion) {
    let frame = opus_frame();
    let mut group = c.benchmark_group("rtp_opus");
    group.throughput(Throughput::Elements(1));
    let mut seq = 0u16;
    group.bench_function("packetize_20ms", |b| {
        b.iter(|| {
            seq = seq.wrapping_add(1);
            let payload = opus::packetize(black_box(&frame), MTU).expect("fits");
            build_rtp(&header(seq, u32::from(seq) * 960, false), &payload, EXT_ID)
                .expect("valid header")
        })
    });
    let datagram = build_rtp(&header(7, 7 * 960, false), &frame, EXT_ID).expect("valid header");
    group.bench_function("depacketize_20ms", |b| {
        b.iter(|| {
            let packet = parse_rtp(black_box(&datagram), EXT_ID).expect("valid RTP");
            opus::depacketize(packet.payload).expect("non-empty")
        })
    });
    group.finish();
}

fn rtp_h264(c: &mut Criterion) {
    let au = keyframe_720p();
    let datagrams = video_datagrams(&au, 1, 3000);
    eprintln!(
        "h264 720p keyframe: {} bytes in {} RTP packets",
        au.len(),
        datagrams.len()
    );
    let mut group = c.benchmark_group("rtp_h264_720p_keyframe");
    group.throughput(Throughput::Bytes(au.len() as u64));
    group.bench_function("packetize", |b| {
        b.iter(|| video_datagrams(black_box(&au), 1, 3000))
    });
    group.bench_function("depacketize", |b| {
        b.iter(|| {
            let mut depacketizer = h264::Depacketizer::new();
            for datagram in &datagrams {
                let packet = parse_rtp(black_box(datagram), EXT_ID).expect("valid RTP");
                depacketizer.push(&packet.payload).expect("valid payload");
            }
            depacketizer.finish().expect("a whole access unit")
        })
    });
    group.finish();
}

fn jitter(c: &mut Criterion) {
    let frame = Bytes::from(opus_frame());
    let start = Instant::now();
    let mut group = c.benchmark_group("jitter");
    group.throughput(Throughput::Elements(1));
    let mut buffer = AudioBuffer::new(
        Duration::from_millis(20),
        Duration::from_millis(20),
        Duration::from_millis(400),
        true,
    );
    let mut n = 0u64;
    group.bench_function("audio_insert_pull_20ms", |b| {
        b.iter(|| {
            n += 1;
            let now = start + Duration::from_millis(20 * n);
            buffer.push(
                now,
                SeqNo(n),
                n * 960,
                frame.clone(),
                Some(now),
                Origin::Original,
            );
            black_box(buffer.pull(now))
        })
    });

    let au = keyframe_720p();
    let packets: Vec<Bytes> = h264::packetize(&au, MTU - 40);
    group.throughput(Throughput::Elements(packets.len() as u64));
    let mut buffer = FrameBuffer::new(Duration::from_millis(200), Duration::from_millis(500));
    let (mut seq, mut frames) = (0u64, 0u64);
    group.bench_function("video_insert_pull_720p_keyframe", |b| {
        b.iter(|| {
            frames += 1;
            let now = start + Duration::from_millis(33 * frames);
            let last = packets.len() - 1;
            for (i, payload) in packets.iter().enumerate() {
                seq += 1;
                buffer.push(
                    now,
                    SeqNo(seq),
                    frames * 3000,
                    i == last,
                    payload.clone(),
                    None,
                );
            }
            buffer.handle_timeout(now);
            buffer
                .poll_frame()
                .expect("a complete keyframe is decodable")
        })
    });
    group.finish();
}

/// A small seeded generator for the loss pattern (xorshift64*).
struct Lossy(u64);

impl Lossy {
    fn lost(&mut self, percent: u64) -> bool {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % 100 < percent
    }
}

/// Receives `count` packets at 5 ms spacing with 10 % loss and drives the NACK generator
/// as the session does; retransmissions answer each request one RTT later, also 10 % lost.
/// Returns the sequence numbers requested.
fn nack_run(start: Instant, count: u64, seed: u64) -> u64 {
    const RTT: Duration = Duration::from_millis(50);
    const SPACING: Duration = Duration::from_millis(5);
    let mut loss = Lossy(seed);
    let mut stream = RecvStream::new(Ssrc(1), 90_000);
    let mut nack = NackGenerator::new(Duration::from_millis(5), Duration::from_millis(5), 10);
    // Retransmissions in flight: (arrival time, wire seq).
    let mut rtx: Vec<(Instant, u16)> = Vec::new();
    let mut requested = 0;
    for i in 0..count {
        let now = start + SPACING * i as u32;
        let mut arrivals: Vec<(u16, bool)> = Vec::new();
        rtx.retain(|&(at, seq)| {
            if at <= now {
                arrivals.push((seq, false));
            }
            at > now
        });
        if !loss.lost(10) {
            arrivals.push((i as u16, true));
        }
        for (seq, original) in arrivals {
            let ts = u32::from(seq).wrapping_mul(450);
            let Ok(arrival) = stream.on_packet(now, seq, ts, original, MTU) else {
                continue;
            };
            nack.on_received(now, arrival.seq, original);
            if let Some((from, to)) = arrival.gap {
                nack.on_gap(now, from, to, |_| Some(now + Duration::from_millis(300)));
            }
        }
        if nack.poll_timeout().is_some_and(|t| t <= now) {
            for seq in nack.poll_nack(now, RTT) {
                requested += 1;
                if !loss.lost(10) {
                    rtx.push((now + RTT, seq.wire()));
                }
            }
        }
    }
    requested
}

fn nack(c: &mut Criterion) {
    let start = Instant::now();
    let mut group = c.benchmark_group("nack_generator_10pct_loss");
    const PACKETS: u64 = 1000;
    group.throughput(Throughput::Elements(PACKETS));
    eprintln!(
        "nack: {} requests for {PACKETS} packets at 10 % loss",
        nack_run(start, PACKETS, 0x5eed)
    );
    let mut seed = 0x5eed;
    group.bench_function("1000_packets_200pps_rtt50ms", |b| {
        b.iter_batched(
            || {
                seed += 1;
                seed
            },
            |seed| nack_run(start, PACKETS, seed),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group! {
    name = rtp;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = rtp_opus, rtp_h264, jitter, nack
}
criterion_main!(rtp);
