//! Cost of the timing probes on the receiving side: the audio marker detector over one
//! second of marked audio, and the video marker reader over one 640x480 picture.
//!
//! Run: `cargo bench -p magpie-media --bench probe`
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use magpie_media::codec::AudioChannels;
use magpie_media::devices::{PatternGenerator, ToneGenerator};
use magpie_media::probe::{AudioMarkerDetector, VideoMarker, WallTime};

fn probes(c: &mut Criterion) {
    let mut tone =
        ToneGenerator::new(AudioChannels::Mono, Duration::from_secs(1)).expect("a valid period");
    let second: Vec<Vec<i16>> = (0..50).map(|_| tone.next_frame(960)).collect();
    let schedule = tone.schedule(WallTime::from_micros(0));
    c.bench_function("audio_marker_detector_1s", |b| {
        b.iter(|| {
            let mut detector = AudioMarkerDetector::new(schedule, 1);
            let mut found = 0;
            for (i, frame) in second.iter().enumerate() {
                let at = WallTime::from_micros(i as u64 * 20_000);
                found += detector.push(frame, at).len();
            }
            black_box(found)
        })
    });
    let frame = PatternGenerator::new(640, 480)
        .expect("pattern size")
        .next_frame(WallTime::from_micros(1));
    c.bench_function("video_marker_read_640x480", |b| {
        b.iter(|| black_box(VideoMarker::read(&frame)))
    });
}

criterion_group! {
    name = probe;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = probes
}
criterion_main!(probe);
