//! Real encoder output shared by the benchmarks.

use std::time::Duration;

use magpie_media::codec::{AudioChannels, H264Config, OpusConfig};
use magpie_media::devices::{PatternGenerator, ToneGenerator};
use magpie_media::probe::WallTime;

/// One 20 ms mono Opus frame of a tone, once the encoder has settled.
pub fn opus_frame() -> Vec<u8> {
    let mut tone =
        ToneGenerator::new(AudioChannels::Mono, Duration::from_secs(1)).expect("a valid period");
    let mut enc = OpusConfig::default().build().expect("default opus config");
    (0..10)
        .filter_map(|_| enc.encode(&tone.next_frame(960)).expect("encode"))
        .last()
        .expect("a tone is never DTX silence")
}

/// A 1280x720 IDR access unit (Annex-B) of the moving test pattern, at 2.5 Mbit/s.
pub fn keyframe_720p() -> Vec<u8> {
    let mut pattern = PatternGenerator::new(1280, 720).expect("pattern size");
    let mut enc = H264Config::default()
        .set_resolution(1280, 720)
        .set_bitrate(2_500_000)
        .build()
        .expect("encoder");
    enc.request_keyframe();
    let au = enc
        .encode(&pattern.next_frame(WallTime::from_micros(0)))
        .expect("encode")
        .expect("a requested keyframe is never skipped");
    assert!(au.keyframe, "the first frame after a request is an IDR");
    au.data
}
