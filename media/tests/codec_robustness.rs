//! Bytes from the network never panic the edges: decoders, parsers and detectors get
//! arbitrary input and must answer with a value or a typed error.
#![allow(clippy::unwrap_used)]

use proptest::collection::vec;
use proptest::prelude::*;

use magpie_media::codec::{AudioChannels, H264Decoder, OpusDecoder, is_keyframe, nal_units};
use magpie_media::probe::{AudioMarkerDetector, MarkerSchedule, VideoMarkerDetector, WallTime};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn nal_splitting_never_panics_and_loses_no_payload(bytes in vec(any::<u8>(), 0..512)) {
        let total: usize = nal_units(&bytes).map(<[u8]>::len).sum();
        prop_assert!(total <= bytes.len());
        let _ = is_keyframe(&bytes);
    }

    #[test]
    fn opus_decoder_answers_any_packet(packet in vec(any::<u8>(), 1..1500)) {
        let mut dec = OpusDecoder::new(AudioChannels::Mono).unwrap();
        if let Ok(pcm) = dec.decode(&packet) {
            prop_assert!(pcm.len() <= 5760);
        }
        prop_assert!(dec.conceal(960).is_ok());
    }

    #[test]
    fn h264_decoder_answers_any_access_unit(body in vec(any::<u8>(), 0..2000), kind in 0u8..32) {
        let mut dec = H264Decoder::new().unwrap();
        let au: Vec<u8> = [0, 0, 0, 1, 0x60 | kind].into_iter().chain(body).collect();
        let _ = dec.decode(&au);
        let _ = dec.decode(&au);
    }

    #[test]
    fn audio_detector_finds_nothing_in_noise(samples in vec(any::<i16>(), 0..20_000)) {
        let period = std::time::Duration::from_secs(1);
        let schedule = MarkerSchedule::new(WallTime::from_micros(0), period).unwrap();
        let mut detector = AudioMarkerDetector::new(schedule, 1);
        let found = detector.push(&samples, WallTime::from_micros(0));
        prop_assert!(found.is_empty());
    }
}

#[test]
fn video_detector_ignores_random_pictures() {
    use magpie_media::codec::I420Frame;
    let mut detector = VideoMarkerDetector::new();
    let mut seed = 7u32;
    for _ in 0..20 {
        let bytes: Vec<u8> = (0..320 * 240 * 3 / 2)
            .map(|_| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                (seed >> 24) as u8
            })
            .collect();
        let frame = I420Frame::from_bytes(320, 240, bytes).unwrap();
        assert!(detector.push(&frame, WallTime::from_micros(0)).is_none());
    }
    assert_eq!(detector.unreadable(), 20);
}
