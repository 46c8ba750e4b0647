//! The timing probes through real codecs, loss, FEC and concealment, with a known delay
//! inserted between emission and playout: the measured latency must equal it.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use magpie_media::codec::{AudioChannels, H264Config, H264Decoder, OpusConfig, OpusDecoder};
use magpie_media::devices::{PatternGenerator, ToneGenerator};
use magpie_media::probe::{
    AudioMarkerDetector, Detection, LatencySummary, VideoMarkerDetector, WallTime,
};

const FRAME: usize = 960;
/// Audio tolerance: 1 ms (48 samples). Measured error: within ±0.2 ms of the inserted delay
/// plus the codec's own delay (see the test output).
const AUDIO_TOLERANCE_US: i64 = 1_000;

fn frame_time(start: WallTime, frame: usize) -> WallTime {
    start.plus(Duration::from_micros(frame as u64 * 20_000))
}

/// Plays 4 s of the tone through Opus, losing some frames, and checks every marker.
fn audio_through_opus(lost: &[usize], use_fec: bool) -> (Vec<Detection>, i64) {
    audio_through_opus_after(Duration::from_millis(87), lost, use_fec)
}

fn audio_through_opus_after(
    delay: Duration,
    lost: &[usize],
    use_fec: bool,
) -> (Vec<Detection>, i64) {
    let start = WallTime::from_micros(1_700_000_000_000_000);
    let mut tone = ToneGenerator::new(AudioChannels::Mono, Duration::from_millis(500)).unwrap();
    let mut enc = OpusConfig::default()
        .set_packet_loss_percent(10)
        .build()
        .unwrap();
    let codec_delay_us = enc.lookahead().unwrap() as i64 * 1_000_000 / 48_000;
    let packets: Vec<Vec<u8>> = (0..200)
        .map(|_| enc.encode(&tone.next_frame(FRAME)).unwrap().unwrap())
        .collect();

    let mut dec = OpusDecoder::new(AudioChannels::Mono).unwrap();
    let mut detector = AudioMarkerDetector::new(tone.schedule(start), 1);
    let mut found = Vec::new();
    for (i, packet) in packets.iter().enumerate() {
        let pcm = if lost.contains(&i) {
            match packets.get(i + 1) {
                Some(next) if use_fec => dec.decode_fec(next, FRAME).unwrap(),
                _ => dec.conceal(FRAME).unwrap(),
            }
        } else {
            dec.decode(packet).unwrap()
        };
        // The sink plays frame i `delay` after the source emitted it.
        found.extend(detector.push(&pcm, frame_time(start, i).plus(delay)));
    }
    let expected = delay.as_micros() as i64 + codec_delay_us;
    (found, expected)
}

#[test]
fn audio_markers_measure_the_inserted_delay_through_opus() {
    let (found, expected) = audio_through_opus(&[], false);
    let markers: Vec<u64> = found.iter().map(|d| d.marker).collect();
    assert_eq!(markers, (0..8).collect::<Vec<_>>());
    for d in &found {
        println!(
            "marker {}: latency {} us (expected {expected})",
            d.marker, d.latency_us
        );
        assert!(
            (d.latency_us - expected).abs() <= AUDIO_TOLERANCE_US,
            "{d:?}"
        );
    }
    let summary = LatencySummary::of(&found).unwrap();
    println!("{summary:?}");
}

#[test]
fn audio_markers_survive_fec_recovery_and_never_lie_under_concealment() {
    // Frames 26 and 51 hold marker bits (markers every 25 frames, 9 frames long).
    let lost = [3, 26, 51, 77, 130];
    let (with_fec, expected) = audio_through_opus(&lost, true);
    let recovered: Vec<u64> = with_fec.iter().map(|d| d.marker).collect();
    println!("with FEC: {recovered:?}");
    assert_eq!(recovered, (0..8).collect::<Vec<_>>());
    assert!(
        with_fec
            .iter()
            .all(|d| (d.latency_us - expected).abs() <= AUDIO_TOLERANCE_US)
    );

    // Concealment may cost the markers it garbles, but what is found is still right.
    let (concealed, expected) = audio_through_opus(&lost, false);
    println!(
        "with PLC: {:?}",
        concealed.iter().map(|d| d.marker).collect::<Vec<_>>()
    );
    assert!(concealed.len() >= 5);
    for d in &concealed {
        assert!(d.marker < 8);
        assert!(
            (d.latency_us - expected).abs() <= AUDIO_TOLERANCE_US,
            "{d:?}"
        );
    }
}

/// The audio probe's accuracy over delays that are not whole samples or frames, with and
/// without loss: the worst error stays under a millisecond (measured: mean -0.12 ms,
/// worst 0.71 ms over 75 markers).
#[test]
fn audio_probe_accuracy_across_delays_and_loss() {
    let mut errors = Vec::new();
    for delay_us in [0, 1_234, 20_010, 87_000, 333_333] {
        for lost in [&[][..], &[26, 77, 101, 152]] {
            let (found, expected) =
                audio_through_opus_after(Duration::from_micros(delay_us), lost, true);
            let markers: Vec<u64> = found.iter().map(|d| d.marker).collect();
            println!("delay {delay_us} us, lost {lost:?}: {markers:?}");
            // Without loss every marker reads. With loss, Opus can take a few frames to
            // settle after an FEC recovery and garble a marker's bits: that marker is missed
            // (the check rejects it), never misread. Measured: 7 of 8 for this loss pattern.
            let needed = if lost.is_empty() { 8 } else { 7 };
            assert!(
                markers.len() >= needed && markers.iter().all(|&m| m < 8),
                "{markers:?}"
            );
            errors.extend(found.iter().map(|d| d.latency_us - expected));
        }
    }
    let worst = errors.iter().map(|e| e.abs()).max().unwrap();
    let mean = errors.iter().sum::<i64>() as f64 / errors.len() as f64;
    println!(
        "audio probe through Opus: {} markers, mean error {mean:.0} us, worst {worst} us",
        errors.len()
    );
    assert!(worst <= AUDIO_TOLERANCE_US);
}

#[test]
fn video_markers_measure_the_inserted_delay_through_h264_with_a_lost_frame() {
    let start = WallTime::from_micros(1_700_000_000_000_000);
    let delay = Duration::from_millis(143);
    let period = Duration::from_micros(33_333);
    let mut pattern = PatternGenerator::new(640, 480).unwrap();
    let mut enc = H264Config::default().build().unwrap();
    let mut dec = H264Decoder::new().unwrap();
    let mut detector = VideoMarkerDetector::new();
    let (mut shown, mut found) = (0, Vec::new());
    for i in 0..24u32 {
        let emitted = start.plus(period * i);
        let frame = pattern.next_frame(emitted);
        if i == 12 {
            enc.request_keyframe();
        }
        let Some(au) = enc.encode(&frame).unwrap() else {
            continue;
        };
        if i == 8 {
            dec.lost();
            continue;
        }
        if let Some(out) = dec.decode(&au.data).unwrap() {
            shown += 1;
            found.extend(detector.push(&out, emitted.plus(delay)));
        }
    }
    println!("{shown} frames shown, {} markers read", found.len());
    assert!(shown >= 12);
    assert_eq!(found.len(), shown, "every shown frame's barcode reads");
    assert!(found.iter().all(|d| !(8..12).contains(&d.marker)));
    for d in &found {
        assert_eq!(d.latency_us, delay.as_micros() as i64, "{d:?}");
    }
}

/// Every marker a clean link plays is read, and placed to the sample, over a call's
/// length: the tone through Opus at 32 kbit/s with in-band FEC sized for 1-20 % loss (as
/// the client's encoder runs once the peer reports any loss; the floor is 1 %), with a
/// marker a second (the client's period) and every 200 ms (the lab's). Before the fix,
/// the sync chirp after a second of steady tone at the markers' level decayed in the
/// codec, and a bit slot the codec weakened refused its marker, counted nowhere: 17-23 of
/// 30 markers a second were read, some up to 3 ms off, and about 80 % at 200 ms.
#[test]
fn every_marker_of_a_clean_call_is_read_through_opus_with_fec() {
    let start = WallTime::from_micros(1_700_000_000_000_000);
    for period_ms in [1_000u64, 200] {
        for loss in [1u8, 5, 20] {
            let period = Duration::from_millis(period_ms);
            let mut tone = ToneGenerator::new(AudioChannels::Mono, period).unwrap();
            let mut enc = OpusConfig::default()
                .set_packet_loss_percent(loss)
                .build()
                .unwrap();
            let codec_delay_us = enc.lookahead().unwrap() as i64 * 1_000_000 / 48_000;
            let mut dec = OpusDecoder::new(AudioChannels::Mono).unwrap();
            let mut detector = AudioMarkerDetector::new(tone.schedule(start), 1);
            let mut found = Vec::new();
            // 29.8 s: the last marker's bits end just inside it.
            for i in 0..1_490 {
                let packet = enc.encode(&tone.next_frame(FRAME)).unwrap().unwrap();
                let pcm = dec.decode(&packet).unwrap();
                found.extend(detector.push(&pcm, frame_time(start, i)));
            }
            let played = 29_800u64.div_ceil(period_ms);
            let markers: Vec<u64> = found.iter().map(|d| d.marker).collect();
            let worst = found
                .iter()
                .map(|d| (d.latency_us - codec_delay_us).abs())
                .max()
                .unwrap();
            let counts = detector.counts();
            println!(
                "period {period_ms} ms, loss {loss} %: {} of {played} read, worst {worst} us, \
                 {counts:?}",
                markers.len()
            );
            // Every marker played is read or counted unread by reason; nothing is misread.
            assert_eq!(counts.read, markers.len() as u64);
            assert_eq!(
                counts.read + counts.unread_no_tones + counts.unread_check + counts.rejected,
                played,
                "period {period_ms} loss {loss}: {markers:?}"
            );
            assert!(markers.iter().all(|&m| m < played));
            assert!(
                worst <= 200,
                "period {period_ms} loss {loss}: {worst} us off"
            );
            // A marker a second (the client's): every one read. Every 200 ms with FEC
            // sized for 20 % loss, one of 149 fails its check (measured), and is counted.
            let unread_allowed = if period_ms == 200 && loss == 20 { 1 } else { 0 };
            assert!(
                counts.read + unread_allowed >= played,
                "period {period_ms} loss {loss}: {counts:?}"
            );
        }
    }
}
