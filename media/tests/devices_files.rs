//! Files, synthetic sources, real-time capture and playout, and device listing on a
//! machine with no sound card, camera or display.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use magpie_media::codec::{AudioChannels, FrameDuration};
use magpie_media::devices::timing::{TimingRecord, measure_wav, measure_y4m, sink_sidecar};
use magpie_media::devices::{
    AudioCapture, AudioCaptureConfig, AudioPlayout, AudioSinkSpec, AudioSourceSpec, Error,
    PatternGenerator, ToneGenerator, VideoCapture, VideoCaptureConfig, VideoSink, VideoSinkSpec,
    VideoSourceSpec, WavSink, WavSource, Y4mReader, Y4mWriter, list_devices,
};
use magpie_media::probe::{AudioMarkerDetector, VideoMarker, WallTime};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("magpie-devices-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn wav_round_trip_is_exact_and_records_its_start() {
    let dir = scratch("wav");
    let path = dir.join("tone.wav");
    let mut tone = ToneGenerator::new(AudioChannels::Mono, Duration::from_millis(500)).unwrap();
    let frames: Vec<Vec<i16>> = (0..60).map(|_| tone.next_frame(960)).collect();
    let emitted = WallTime::from_micros(1_700_000_000_000_000);
    // The sink played the first sample 250 ms after the source emitted it.
    let start = emitted.plus(Duration::from_millis(250));
    {
        let mut sink = WavSink::create(&path, AudioChannels::Mono).unwrap();
        for (i, f) in frames.iter().enumerate() {
            let at = start.plus(Duration::from_millis(20 * i as u64));
            sink.write(f, at).unwrap();
        }
    }
    let record = TimingRecord::read(&sink_sidecar(&path)).unwrap();
    let facts = (record.first_sample(), record.rate, record.channels);
    assert_eq!(facts, (start, 48_000.0, Some(1)));
    // Anyone can measure the latency from the file, its sidecar and the source's schedule.
    let found = measure_wav(&path, tone.schedule(emitted)).unwrap();
    let markers: Vec<u64> = found.iter().map(|d| d.marker).collect();
    assert_eq!(markers, vec![0, 1, 2]);
    assert!(
        found.iter().all(|d| (d.latency_us - 250_000).abs() <= 21),
        "{found:?}"
    );
    let mut source = WavSource::open(&path, AudioChannels::Mono).unwrap();
    let read: Vec<Vec<i16>> = std::iter::from_fn(|| source.next_frame(960).unwrap()).collect();
    assert_eq!(read.len(), frames.len());
    let first_mismatch = read.iter().zip(&frames).position(|(a, b)| a != b);
    assert_eq!(first_mismatch, None);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn wav_at_44k1_stereo_is_resampled_to_48k_mono() {
    let dir = scratch("resample");
    let path = dir.join("in.wav");
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 44_100,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&path, spec).unwrap();
    for n in 0..44_100 {
        let s = ((n as f32 * 1_000.0 * std::f32::consts::TAU / 44_100.0).sin() * 10_000.0) as i16;
        w.write_sample(s).unwrap();
        w.write_sample(s).unwrap();
    }
    w.finalize().unwrap();
    let mut source = WavSource::open(&path, AudioChannels::Mono).unwrap();
    let out: Vec<i16> = std::iter::from_fn(|| source.next_frame(960).unwrap())
        .flatten()
        .collect();
    // One second in, one second (plus padding to whole frames) out.
    assert!(
        (48_000..48_000 + 2 * 960).contains(&out.len()),
        "{}",
        out.len()
    );
    // Still a 1 kHz sine of the same level: 2 zero crossings a millisecond.
    let body = &out[4_800..43_200];
    let crossings = body.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
    assert!((1_590..=1_610).contains(&crossings), "{crossings}");
    let peak = body.iter().map(|s| s.unsigned_abs()).max().unwrap();
    assert!((9_500..=10_500).contains(&peak), "{peak}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn y4m_round_trip_is_exact_and_carries_show_times() {
    let dir = scratch("y4m");
    let path = dir.join("pattern.y4m");
    let mut pattern = PatternGenerator::new(320, 240).unwrap();
    let start = WallTime::from_micros(1_700_000_000_000_000);
    let frames: Vec<_> = (0..5)
        .map(|i| pattern.next_frame(start.plus(Duration::from_millis(33 * i))))
        .collect();
    {
        let mut w = Y4mWriter::create(&path, Some(30)).unwrap();
        for (i, f) in frames.iter().enumerate() {
            w.write(f, start.plus(Duration::from_millis(100 + 33 * i as u64)))
                .unwrap();
        }
        let wrong = PatternGenerator::new(640, 480).unwrap().next_frame(start);
        assert!(matches!(w.write(&wrong, start), Err(Error::Y4m { .. })));
    }
    let mut r = Y4mReader::open(&path).unwrap();
    assert_eq!((r.width(), r.height(), r.fps()), (320, 240, 30.0));
    assert_eq!(r.start(), Some(start.plus(Duration::from_millis(100))));
    for (i, f) in frames.iter().enumerate() {
        let (read, shown) = r.next_frame().unwrap().unwrap();
        assert_eq!(&read, f);
        assert_eq!(
            shown,
            Some(start.plus(Duration::from_millis(100 + 33 * i as u64)))
        );
        assert_eq!(VideoMarker::read(&read).unwrap().frame_number, i as u32);
    }
    assert!(r.next_frame().unwrap().is_none());
    // Each frame was shown 100 ms after it was emitted.
    let found = measure_y4m(&path).unwrap();
    assert_eq!(found.len(), 5);
    assert!(found.iter().all(|d| d.latency_us == 100_000), "{found:?}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn broken_files_are_typed_errors_naming_the_file() {
    let dir = scratch("broken");
    let cases: [(&str, &[u8]); 6] = [
        ("a.y4m", b"YUV4MPEG2 W320 H240 C422\n"),
        ("b.y4m", b"YUV4MPEG2 H240\n"),
        ("c.y4m", b"RIFF"),
        ("d.y4m", &[b'Y'; 5000]),
        // A hostile size must not allocate gigabytes.
        ("g.y4m", b"YUV4MPEG2 W8192 H4000000000\n"),
        ("h.y4m", b"YUV4MPEG2 W320 H240 F30:0\n"),
    ];
    for (name, bytes) in cases {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = Y4mReader::open(&path).unwrap_err().to_string();
        assert!(err.contains(name), "{err}");
    }
    let truncated = dir.join("e.y4m");
    std::fs::write(&truncated, b"YUV4MPEG2 W4 H2\nFRAME\n123").unwrap();
    assert!(Y4mReader::open(&truncated).unwrap().next_frame().is_err());
    let not_wav = dir.join("f.wav");
    std::fs::write(&not_wav, b"hello").unwrap();
    assert!(
        WavSource::open(&not_wav, AudioChannels::Mono)
            .unwrap_err()
            .to_string()
            .contains("f.wav")
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn device_listing_on_a_bare_machine_says_so() {
    let list = list_devices();
    let text = list.to_string();
    println!("{text}");
    assert!(
        text.contains("audio inputs") && text.contains("audio outputs") && text.contains("cameras")
    );
    let kinds = [
        ("audio inputs: none found", list.audio_inputs.is_empty()),
        ("audio outputs: none found", list.audio_outputs.is_empty()),
        ("cameras: none found", list.cameras.is_empty()),
    ];
    for (line, empty) in kinds {
        assert_eq!(text.contains(line), empty, "{text}");
    }
}

#[test]
fn missing_devices_are_errors_naming_what_was_asked_for() {
    let config = AudioCaptureConfig::default();
    let err = AudioCapture::open(&"mic:no such microphone".parse().unwrap(), &config).unwrap_err();
    assert!(err.to_string().contains("no such microphone"), "{err}");
    let err = VideoCapture::open(&"camera:7".parse().unwrap(), &VideoCaptureConfig::default())
        .unwrap_err();
    assert!(err.to_string().contains('7'), "{err}");
    let err = AudioPlayout::open(
        &"speaker:no such speaker".parse().unwrap(),
        AudioChannels::Mono,
        FrameDuration::Ms20,
        |_, _| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("no such speaker"), "{err}");
    // With no capture device at all, even the default microphone is a clear error.
    let devices = list_devices();
    if devices.audio_inputs.is_empty() {
        let err = AudioCapture::open(&"mic".parse().unwrap(), &config).unwrap_err();
        println!("mic on this machine: {err}");
        assert!(matches!(
            err,
            Error::NoSuchDevice { .. } | Error::AudioDevice { .. }
        ));
    }
    if devices.cameras.is_empty() {
        let err = VideoCapture::open(&"camera".parse().unwrap(), &VideoCaptureConfig::default());
        assert!(err.unwrap_err().to_string().contains("camera"));
    }
    if std::env::var_os("DISPLAY").is_none() && std::env::var_os("WAYLAND_DISPLAY").is_none() {
        assert!(matches!(
            VideoSink::open(&VideoSinkSpec::Window, Some(30)),
            Err(Error::NoDisplay)
        ));
    }
}

#[test]
fn tone_capture_runs_in_real_time_and_feeds_a_wav_playout() {
    let config = AudioCaptureConfig::default().set_marker_period(Duration::from_millis(300));
    let capture = AudioCapture::open(&AudioSourceSpec::Tone, &config).unwrap();
    let schedule = capture.marker_schedule().unwrap();
    assert_eq!(schedule.start, capture.started_at());
    let first = capture.recv_timeout(Duration::from_secs(2)).unwrap();
    assert_eq!(first.samples.len(), 960);
    assert_eq!(first.captured_at, capture.started_at());

    // Play the capture straight into a WAV file through the playout clock.
    let dir = scratch("playout");
    let path = dir.join("out.wav");
    let capture = Arc::new(Mutex::new(capture));
    let detections = Arc::new(Mutex::new(Vec::new()));
    let (c, d) = (capture.clone(), detections.clone());
    let mut detector = AudioMarkerDetector::new(schedule, 1);
    let playout = AudioPlayout::open(
        &AudioSinkSpec::Wav(path.clone()),
        AudioChannels::Mono,
        FrameDuration::Ms20,
        move |buf, at| {
            // Silence when nothing is ready: the file records it as played.
            if let Some(frame) = c.lock().unwrap().recv_timeout(Duration::from_millis(5)) {
                buf.copy_from_slice(&frame.samples);
            }
            d.lock().unwrap().extend(detector.push(buf, at));
        },
    )
    .unwrap();
    let deadline = Duration::from_secs(5);
    let mut waited = Duration::ZERO;
    while detections.lock().unwrap().is_empty() && waited < deadline {
        std::thread::sleep(Duration::from_millis(50));
        waited += Duration::from_millis(50);
    }
    drop(playout);
    let found = detections.lock().unwrap().clone();
    println!("live tone -> wav playout: {found:?}");
    assert!(!found.is_empty(), "no marker made it through the live path");
    assert!(found.iter().all(|d| d.latency_us >= 0));
    let record = TimingRecord::read(&sink_sidecar(&path)).unwrap();
    assert_eq!(record.role, "sink");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_consumer_that_falls_behind_loses_the_oldest_frames() {
    let config = VideoCaptureConfig::default()
        .set_resolution(160, 120)
        .set_fps(100)
        .set_queue_frames(2);
    let capture = VideoCapture::open(&VideoSourceSpec::Pattern, &config).unwrap();
    let mut waited = Duration::ZERO;
    while capture.dropped() == 0 && waited < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
        waited += Duration::from_millis(20);
    }
    assert!(capture.dropped() > 0);
    let a = capture.recv_timeout(Duration::from_secs(1)).unwrap();
    let b = capture.recv_timeout(Duration::from_secs(1)).unwrap();
    assert!(b.number > a.number && a.number >= capture.dropped());
}

#[test]
fn file_sources_play_in_real_time_to_the_end_and_record_their_start() {
    let dir = scratch("file-sources");
    let wav = dir.join("in.wav");
    let mut sink = WavSink::create(&wav, AudioChannels::Mono).unwrap();
    sink.write(&vec![1_000i16; 960 * 10], WallTime::now())
        .unwrap();
    sink.finish().unwrap();
    let capture = AudioCapture::open(
        &AudioSourceSpec::Wav(wav.clone()),
        &AudioCaptureConfig::default(),
    )
    .unwrap();
    let mut frames = Vec::new();
    while !capture.is_finished() {
        if let Some(f) = capture.recv_timeout(Duration::from_secs(2)) {
            frames.push(f);
        }
    }
    assert_eq!(frames.len(), 10);
    assert!(frames.iter().all(|f| f.samples.iter().all(|&s| s == 1_000)));
    let record = TimingRecord::read(&magpie_media::devices::timing::source_sidecar(&wav)).unwrap();
    assert_eq!(
        (record.role.as_str(), record.first_sample()),
        ("source", capture.started_at())
    );

    let y4m = dir.join("in.y4m");
    let mut writer = Y4mWriter::create(&y4m, Some(50)).unwrap();
    let mut pattern = PatternGenerator::new(320, 240).unwrap();
    for _ in 0..5 {
        writer
            .write(&pattern.next_frame(WallTime::now()), WallTime::now())
            .unwrap();
    }
    drop(writer);
    let config = VideoCaptureConfig::default().set_resolution(160, 120);
    let capture = VideoCapture::open(&VideoSourceSpec::Y4m(y4m), &config).unwrap();
    let mut numbers = Vec::new();
    while !capture.is_finished() {
        if let Some(f) = capture.recv_timeout(Duration::from_secs(2)) {
            assert_eq!((f.image.width(), f.image.height()), (160, 120));
            numbers.push(f.number);
        }
    }
    assert_eq!(numbers, vec![0, 1, 2, 3, 4]);
    std::fs::remove_dir_all(dir).unwrap();
}
