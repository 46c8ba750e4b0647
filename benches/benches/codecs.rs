//! Per-frame cost of the codecs: Opus 20 ms encode and decode, and H.264 encode and decode at
//! 640x480 and 1280x720 on the moving test pattern (P frames in steady state, a keyframe per
//! 30 frames on decode).
//!
//! Moved here from `magpie-media` so every figure of the README comes from one crate.
//!
//! Run: `cargo bench -p magpie-benches --bench codecs`
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use magpie_media::codec::{
    AudioChannels, H264Config, H264Decoder, I420Frame, OpusConfig, OpusDecoder,
};
use magpie_media::devices::{PatternGenerator, ToneGenerator};
use magpie_media::probe::WallTime;

fn opus(c: &mut Criterion) {
    let mut tone =
        ToneGenerator::new(AudioChannels::Mono, Duration::from_secs(1)).expect("a valid period");
    let frames: Vec<Vec<i16>> = (0..50).map(|_| tone.next_frame(960)).collect();
    let mut enc = OpusConfig::default().build().expect("default opus config");
    let packets: Vec<Vec<u8>> = frames
        .iter()
        .map(|f| enc.encode(f).expect("encode").expect("no DTX"))
        .collect();
    let mut i = 0;
    c.bench_function("opus_encode_20ms_mono_32k_fec", |b| {
        b.iter(|| {
            i = (i + 1) % frames.len();
            black_box(enc.encode(&frames[i]).expect("encode"))
        })
    });
    let mut dec = OpusDecoder::new(AudioChannels::Mono).expect("decoder");
    let mut j = 0;
    c.bench_function("opus_decode_20ms_mono", |b| {
        b.iter(|| {
            j = (j + 1) % packets.len();
            black_box(dec.decode(&packets[j]).expect("decode"))
        })
    });
}

fn h264_at(c: &mut Criterion, width: u32, height: u32, bitrate: u32) {
    let mut pattern = PatternGenerator::new(width, height).expect("pattern size");
    let frames: Vec<I420Frame> = (0..30)
        .map(|i| pattern.next_frame(WallTime::from_micros(i * 33_333)))
        .collect();
    let config = H264Config::default()
        .set_resolution(width, height)
        .set_bitrate(bitrate)
        .set_keyframe_interval(0);
    let mut enc = config.build().expect("encoder");
    let aus: Vec<Vec<u8>> = frames
        .iter()
        .enumerate()
        .filter_map(|(i, f)| {
            if i == 0 {
                enc.request_keyframe();
            }
            enc.encode(f).expect("encode").map(|au| au.data)
        })
        .collect();
    // Rate control skips frames it has no bits for; say how many, so the per-call cost can
    // also be read per coded frame.
    eprintln!(
        "h264 {width}x{height} @ {} kbit/s: {} of {} frames coded",
        bitrate / 1000,
        aus.len(),
        frames.len()
    );
    let mut i = 0;
    c.bench_function(
        &format!("h264_encode_{width}x{height}_{}k", bitrate / 1000),
        |b| {
            b.iter(|| {
                i = (i + 1) % frames.len();
                black_box(enc.encode(&frames[i]).expect("encode"))
            })
        },
    );
    let mut dec = H264Decoder::new().expect("decoder");
    let mut j = 0;
    c.bench_function(&format!("h264_decode_{width}x{height}"), |b| {
        b.iter(|| {
            let au = &aus[j];
            j = (j + 1) % aus.len();
            black_box(dec.decode(au).expect("decode"))
        })
    });
}

fn h264(c: &mut Criterion) {
    h264_at(c, 640, 480, 1_000_000);
    h264_at(c, 1280, 720, 2_500_000);
}

criterion_group! {
    name = codecs;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = opus, h264
}
criterion_main!(codecs);
