//! One call endpoint: the sans-IO [`Endpoint`] (connectivity checks, the session, and
//! the policy that turns what the session reports into what the encoders should do),
//! the encoders that feed it and the decoders and timing probes that take what it hands
//! back, and the report of what was measured.
//!
//! Nothing here reads the clock: playout and display times come in as arguments. So the
//! real client, which runs the endpoint in its call loop and the senders and receivers
//! on its pipeline threads, and the loss/latency lab, which runs them all in virtual
//! time, share every line of it, and their figures mean the same thing.
//!
//! The module belongs to the core; the senders, receivers and `Report` wrap the codecs
//! and exist only with the `codecs` feature.
//!
//! [`Playout`]: crate::Playout
//! [`Stats`]: crate::Stats

#[cfg(feature = "codecs")]
mod accelerate;
#[cfg(feature = "codecs")]
mod audio;
mod endpoint;
#[cfg(feature = "codecs")]
mod report;
#[cfg(feature = "codecs")]
mod video;

#[cfg(feature = "codecs")]
pub use self::audio::{
    AudioReceiver, AudioReceiverStats, AudioSender, COPY_BITRATE_SHARE, COPY_MIN_BPS, EncodedAudio,
};
pub use self::endpoint::{BITRATE_HYSTERESIS, Endpoint, EndpointCounters, Output};
#[cfg(feature = "codecs")]
pub use self::report::{
    AudioReport, LatencyReport, LatencySource, QualityReport, Report, SentReport, VideoReport,
};
#[cfg(feature = "codecs")]
pub use self::video::{VideoReceiver, VideoReceiverStats, VideoSender};

#[cfg(all(test, feature = "devices"))]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::Playout;
    use crate::codec::{AudioChannels, AudioEncoder, OpusConfig};
    use crate::devices::ToneGenerator;
    use crate::probe::{Detection, WallTime};
    use crate::session::Stats;

    /// 5 s of a tone with a marker every 500 ms, Opus-coded expecting `loss_percent`,
    /// and a receiver with the tone's marker schedule from the returned start.
    #[allow(clippy::unwrap_used)] // reason: a test helper; a failure is the test's
    fn tone_through_opus(loss_percent: u8) -> (Vec<Bytes>, AudioReceiver, WallTime) {
        let mut sender =
            AudioSender::new(AudioEncoder::Opus(OpusConfig::default().build().unwrap()));
        sender.set_expected_loss(loss_percent).unwrap();
        let mut tone = ToneGenerator::new(AudioChannels::Mono, Duration::from_millis(500)).unwrap();
        let start = WallTime::from_micros(1_700_000_000_000_000);
        let schedule = tone.schedule(start);
        let n = sender.samples_per_frame();
        let receiver = AudioReceiver::new(AudioChannels::Mono, n, Some(schedule)).unwrap();
        let packets = (0..250)
            .map(|_| Bytes::from(sender.encode(&tone.next_frame(n)).unwrap().unwrap().frame))
            .collect();
        (packets, receiver, start)
    }

    /// Tone through Opus into the receiver, delivered `delay` after capture, with every
    /// 50th frame lost and the one after it carrying FEC.
    #[test]
    fn audio_receiver_measures_the_inserted_delay_and_counts_repairs() {
        let (packets, mut receiver, start) = tone_through_opus(10);
        let delay = Duration::from_millis(60);
        let mut out = vec![0i16; receiver.frame_len()];
        for (i, packet) in packets.iter().enumerate() {
            let playout = match (i % 50, i % 100) {
                (10, 10) => Playout::Conceal,
                (10, _) => Playout::Fec {
                    next: packets[i + 1].clone(),
                    capture_time: None,
                },
                _ => Playout::Frame {
                    data: packet.clone(),
                    capture_time: None,
                },
            };
            let played_at = start.plus(Duration::from_millis(20) * i as u32 + delay);
            receiver.play(playout, &mut out, played_at);
        }
        let stats = receiver.stats();
        assert_eq!((stats.fec, stats.concealed, stats.decoded), (2, 3, 245));
        let detections = receiver.detections();
        assert!(detections.len() >= 8, "{} markers found", detections.len());
        // Mouth-to-ear includes the codec: libopus's VoIP encoder looks 6.5 ms ahead
        // (312 samples at 48 kHz), and the probe sees it.
        let expected = delay + Duration::from_micros(6_500);
        for d in detections {
            let error_us = (d.latency_us - expected.as_micros() as i64).abs();
            assert!(
                error_us <= 1_000,
                "marker {} off by {error_us} us",
                d.marker
            );
        }

        let report = Report::new(
            Duration::from_secs(5),
            &Stats::default(),
            (stats, detections),
            None,
        );
        assert_eq!(report.audio.latency.source, LatencySource::Probe);
        assert!((report.audio.latency.p50_ms - 66.5).abs() <= 1.0);
        assert!(
            (report.audio.residual_loss_percent - 1.2).abs() < 1e-9,
            "3 of 250"
        );
        assert!(report.quality.mos > 4.0 && report.quality.mos < 4.5);
    }

    /// Tone through Opus, every 25th slot playing two frames at once (between the
    /// markers, which start every 25 frames): each marker after one plays a frame
    /// (20 ms) earlier than the one before it, and none is lost.
    #[test]
    fn a_slot_that_plays_two_frames_sheds_a_frame_of_delay_and_keeps_the_audio() {
        let (packets, mut receiver, start) = tone_through_opus(0);
        let delay = Duration::from_millis(100);
        let mut out = vec![0i16; receiver.frame_len()];
        let (mut i, mut slot) = (0, 0u32);
        while i < packets.len() {
            let playout = if i % 25 == 12 {
                i += 2;
                Playout::Accelerate {
                    data: packets[i - 2].clone(),
                    then: packets[i - 1].clone(),
                    capture_time: None,
                }
            } else {
                i += 1;
                Playout::Frame {
                    data: packets[i - 1].clone(),
                    capture_time: None,
                }
            };
            let played_at = start.plus(Duration::from_millis(20) * slot + delay);
            receiver.play(playout, &mut out, played_at);
            slot += 1;
        }
        let stats = receiver.stats();
        assert_eq!(
            (stats.accelerated, stats.decoded, stats.concealed),
            (10, 240, 0)
        );
        let detections = receiver.detections();
        assert_eq!(detections.len(), 10, "{detections:?}");
        for d in detections {
            // Marker m starts frame 25 m, after m slots that played two frames.
            let expected = delay.as_micros() as i64 + 6_500 - 20_000 * d.marker as i64;
            let error_us = (d.latency_us - expected).abs();
            assert!(
                error_us <= 1_000,
                "marker {} off by {error_us} us",
                d.marker
            );
        }
    }

    /// Plays 5 s of the tone with a marker every 200 ms, the frame that starts each
    /// marker lost and its slot filled by `repair`; returns the markers found.
    #[allow(clippy::unwrap_used)] // reason: a test helper; a failure is the test's
    fn markers_found_with(
        repair: impl Fn(usize, &[Bytes], &[Bytes]) -> Playout,
    ) -> (usize, Vec<Detection>) {
        let mut sender =
            AudioSender::new(AudioEncoder::Opus(OpusConfig::default().build().unwrap()));
        sender.set_expected_loss(10).unwrap();
        sender.set_copy(true).unwrap();
        assert!(sender.copies());
        let period = Duration::from_millis(200);
        let mut tone = ToneGenerator::new(AudioChannels::Mono, period).unwrap();
        let start = WallTime::from_micros(1_700_000_000_000_000);
        let n = sender.samples_per_frame();
        let mut receiver =
            AudioReceiver::new(AudioChannels::Mono, n, Some(tone.schedule(start))).unwrap();
        let (frames, copies): (Vec<Bytes>, Vec<Bytes>) = (0..250)
            .map(|_| {
                let audio = sender.encode(&tone.next_frame(n)).unwrap().unwrap();
                (Bytes::from(audio.frame), Bytes::from(audio.copy.unwrap()))
            })
            .unzip();
        let bytes = |v: &[Bytes]| v.iter().map(Bytes::len).sum::<usize>();
        // The copies cost about half the frames' bytes.
        assert!(
            bytes(&copies) * 10 <= bytes(&frames) * 6,
            "copies {} B, frames {} B",
            bytes(&copies),
            bytes(&frames)
        );
        let mut out = vec![0i16; receiver.frame_len()];
        let mut lost = 0;
        for i in 0..frames.len() {
            // A marker starts every 10 frames (200 ms of 20 ms frames).
            let playout = if i % 10 == 0 && i > 0 {
                lost += 1;
                repair(i, &frames, &copies)
            } else {
                Playout::Frame {
                    data: frames[i].clone(),
                    capture_time: None,
                }
            };
            let played_at = start.plus(Duration::from_millis(20) * i as u32);
            receiver.play(playout, &mut out, played_at);
        }
        (lost, receiver.detections().to_vec())
    }

    /// The redundancy copies are a second encoder's output at half the bitrate: the
    /// decoder plays them in the frame's slot, marker and all, as it plays Opus FEC.
    #[test]
    fn a_lost_frame_played_from_its_lower_bitrate_copy_keeps_its_marker() {
        let frame = |data: &Bytes| Playout::Frame {
            data: data.clone(),
            capture_time: None,
        };
        let (lost, intact) = markers_found_with(|i, frames, _| frame(&frames[i]));
        let (_, copied) = markers_found_with(|i, _, copies| frame(&copies[i]));
        let (_, concealed) = markers_found_with(|_, _, _| Playout::Conceal);
        let (_, fec) = markers_found_with(|i, frames, _| Playout::Fec {
            next: frames[i + 1].clone(),
            capture_time: None,
        });
        assert_eq!(lost, 24);
        // The copies start as many markers as Opus FEC's repairs do (one short of the
        // intact stream here), where they were played: the codec's 6.5 ms look-ahead,
        // give or take the sync peak's spread in a lower-rate coding.
        assert_eq!(intact.len(), 25);
        assert!(
            copied.len() >= fec.len().min(24),
            "{} markers from copies, {} with FEC",
            copied.len(),
            fec.len()
        );
        for d in &copied {
            let error_us = (d.latency_us - 6_500).abs();
            assert!(
                error_us <= 2_000,
                "marker {} off by {error_us} us",
                d.marker
            );
        }
        // Concealing the same frames instead loses the markers they started.
        assert!(
            concealed.len() * 2 < copied.len(),
            "{} concealed",
            concealed.len()
        );
    }

    #[test]
    fn a_corrupt_packet_is_concealed_not_fatal() {
        let mut receiver = AudioReceiver::new(AudioChannels::Mono, 960, None).unwrap();
        let mut out = vec![1i16; receiver.frame_len()];
        let garbage = Bytes::from_static(&[0xff; 3]);
        receiver.play(
            Playout::Frame {
                data: garbage,
                capture_time: None,
            },
            &mut out,
            WallTime::from_micros(0),
        );
        let stats = receiver.stats();
        assert_eq!((stats.decode_errors, stats.concealed), (1, 1));
    }

    #[test]
    fn slots_the_jitter_buffer_stretched_are_not_counted_as_lost() {
        let mut stats = Stats::default();
        stats.audio_playout.stretched = 2;
        let audio = AudioReceiverStats {
            decoded: 97,
            concealed: 3,
            ..Default::default()
        };
        let report = Report::new(Duration::from_secs(2), &stats, (audio, &[]), None);
        assert_eq!((report.audio.concealed, report.audio.stretched), (3, 2));
        assert!(
            (report.audio.residual_loss_percent - 1.0).abs() < 1e-9,
            "1 lost of 100"
        );
    }

    #[test]
    fn the_video_report_counts_retransmissions_and_fec_each_once() {
        let mut stats = Stats::default();
        stats.recv_video.counters.recovered_rtx = 72;
        stats.recv_video.counters.recovered_fec = 80;
        stats.video_fec.recovered = 80;
        let report = Report::new(
            Duration::from_secs(2),
            &stats,
            (AudioReceiverStats::default(), &[]),
            Some((VideoReceiverStats::default(), &[])),
        );
        let video = report.video.expect("a video call reports video");
        assert_eq!((video.recovered_rtx, video.recovered_fec), (72, 80));
    }

    #[test]
    fn a_report_without_media_says_latency_was_not_measured() {
        let report = Report::new(
            Duration::ZERO,
            &Stats::default(),
            (AudioReceiverStats::default(), &[]),
            None,
        );
        assert_eq!(report.audio.latency.source, LatencySource::None);
        assert_eq!(report.audio.residual_loss_percent, 0.0);
        assert!(report.to_string().contains("not measured"));
    }
}
