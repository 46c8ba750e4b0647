//! The media pipeline threads: capture and encode, decode and play. They talk to the
//! call loop only through bounded, non-blocking queues, so no thread ever waits on
//! another to make progress, and dropping the [`Pipeline`] stops and joins every one.
//!
//! ```text
//!  capture ─▶ encode-audio ──Encoded──▶ ┐
//!  capture ─▶ encode-video ──Encoded──▶ ├─ call loop ─ Slot ─▶ playout clock (decode, play)
//!                          ◀─Control── ┘            ─ Unit ─▶ decode-video (decode, show)
//!                                       ◀──────── Report ──────── both
//! ```
//!
//! Audio playout is driven by the sink's clock (the speaker's callback, or a thread that
//! ticks in real time for files). Each time it plays a slot it reports when, and the
//! call loop pulls the next slot from the jitter buffer [`PULL_LEAD`] before that slot
//! is due and queues it. The playout clock never waits on the loop for long: a slot that
//! is not there within [`SLOT_WAIT`] is concealed and counted as late.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use magpie_media::Playout;
use magpie_media::call::{
    AudioReceiver, AudioReceiverStats, AudioSender, VideoReceiver, VideoReceiverStats, VideoSender,
};
use magpie_media::codec::{AudioChannels, FrameDuration, I420Frame};
use magpie_media::devices::{
    AudioCapture, AudioPlayout, AudioSinkSpec, VideoCapture, VideoSink, VideoSinkSpec,
};
use magpie_media::probe::{Detection, WallTime};
use tokio::sync::mpsc;
use tracing::{trace, warn};

use super::Error;

/// How long before a playout slot is due the call loop pulls it from the jitter buffer:
/// tokio's timers tick in milliseconds, and the playout thread must find the slot
/// queued when it wakes.
pub(crate) const PULL_LEAD: Duration = Duration::from_millis(4);
/// How long a pipeline thread waits for input before it checks whether to stop.
const POLL: Duration = Duration::from_millis(50);
/// How long the playout clock waits for a slot the call loop is late with (a busy
/// machine) before it conceals instead. Half a frame: the device's buffer absorbs it.
const SLOT_WAIT: Duration = Duration::from_millis(10);

/// A frame encoded on an encode thread, on its way to the session.
pub(crate) struct Encoded {
    pub(crate) data: Vec<u8>,
    /// Audio: the lower-bitrate copy that later packets repeat (RFC 2198), when asked.
    pub(crate) copy: Option<Vec<u8>>,
    pub(crate) captured_at: WallTime,
    pub(crate) keyframe: bool,
}

/// What the call loop tells the video encoder.
pub(crate) enum VideoControl {
    Keyframe,
    Bitrate(u64),
}

/// What the call loop tells the audio encoder.
pub(crate) enum AudioControl {
    ExpectedLoss(u8),
    Copy(bool),
}

/// What the playout and decode threads tell the call loop.
pub(crate) enum Report {
    /// The audio sink played a slot: when (on this host's clock), and what the receiver
    /// has counted since.
    AudioPlayed {
        at: Instant,
        stats: AudioReceiverStats,
        detections: Vec<Detection>,
        /// Slots that found no audio queued in time, so far.
        late: u64,
        /// Whether this slot was one the call loop queued (false: none was there in
        /// time, and the slot was concealed or silent).
        took: bool,
    },
    /// The video decoder took a unit.
    VideoShown {
        stats: VideoReceiverStats,
        detections: Vec<Detection>,
        /// The decoder lost its picture and waits for a keyframe.
        lost: bool,
    },
    /// A sink failed for good: the call cannot go on.
    Failed(String),
    /// The user closed the window: hang up.
    WindowClosed,
}

/// The sources, sinks and encoders a pipeline starts from. A call has all of them;
/// `magpie stream` only sends and `magpie play` only receives.
pub(crate) struct Parts {
    pub(crate) audio: Option<(AudioCapture, AudioSender)>,
    pub(crate) video: Option<(VideoCapture, VideoSender)>,
    pub(crate) audio_sink: Option<AudioSinkParts>,
    pub(crate) video_sink: Option<(VideoSinkSpec, Option<u32>, VideoReceiver)>,
}

/// Where received audio goes, how it is decoded, and its format.
pub(crate) struct AudioSinkParts {
    pub(crate) spec: AudioSinkSpec,
    pub(crate) receiver: AudioReceiver,
    pub(crate) format: (AudioChannels, FrameDuration),
}

/// The running threads and the ends of their queues the call loop holds.
pub(crate) struct Pipeline {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    playout: Option<AudioPlayout>,
    pub(crate) audio_in: Option<mpsc::Receiver<Encoded>>,
    pub(crate) video_in: Option<mpsc::Receiver<Encoded>>,
    pub(crate) reports: mpsc::UnboundedReceiver<Report>,
    audio_control: std_mpsc::Sender<AudioControl>,
    video_control: Option<std_mpsc::Sender<VideoControl>>,
    /// Slots for the playout clock, with when each was pulled from the jitter buffer.
    slots: std_mpsc::SyncSender<(Playout, Instant)>,
    units: Option<std_mpsc::SyncSender<Bytes>>,
    /// Units that could not be queued for the decoder since it last looked: it must not
    /// decode the next delta frame as if nothing were missing, and counts them.
    unit_skipped: Arc<AtomicU64>,
    /// The source's frame rate, once the loop learns it (0 until then): for a Y4M sink
    /// opened without one.
    video_rate: Arc<AtomicU32>,
    /// What a window sink shows beside the peer: title, self-view, statistics.
    window: Arc<Mutex<WindowInfo>>,
}

/// What the call loop and the video encoder give a window sink to show beside the peer's
/// picture (nothing uses it for other sinks).
#[derive(Default)]
pub(crate) struct WindowInfo {
    /// The title: the peer's name and the call time.
    pub(crate) title: Option<String>,
    /// The statistics the overlay shows while the S key has it on.
    pub(crate) overlay: Vec<String>,
    /// The local picture, scaled down, for the self-view.
    pub(crate) self_view: Option<I420Frame>,
    /// Whether the sink is a window (the encoder keeps a self-view only then).
    pub(crate) wanted: bool,
}

impl Pipeline {
    /// Opens the sinks and starts every thread. On an error, whatever was started is
    /// stopped again before this returns.
    pub(crate) fn start(parts: Parts) -> Result<Self, Error> {
        let Parts {
            audio,
            video,
            audio_sink,
            video_sink,
        } = parts;
        let (reports_tx, reports) = mpsc::unbounded_channel();
        let (audio_control, audio_control_rx) = std_mpsc::channel();
        let (slots, slots_rx) = std_mpsc::sync_channel(2);
        let mut pipeline = Self {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            playout: None,
            audio_in: None,
            video_in: None,
            reports,
            audio_control,
            video_control: None,
            slots,
            units: None,
            unit_skipped: Arc::new(AtomicU64::new(0)),
            video_rate: Arc::new(AtomicU32::new(0)),
            window: Arc::default(),
        };
        // Sinks first: they are what most often cannot open (no display, a bad path),
        // and nothing has to be undone when they fail.
        if let Some((spec, fps, receiver)) = video_sink {
            pipeline.start_video_sink(spec, fps, receiver, reports_tx.clone())?;
        }
        if let Some(sink) = audio_sink {
            pipeline.playout = Some(start_audio_playout(sink, slots_rx, reports_tx)?);
        }
        if let Some((capture, sender)) = audio {
            let (tx, rx) = mpsc::channel(8);
            let stop = pipeline.stop.clone();
            pipeline.threads.push(spawn("encode-audio", move || {
                encode_audio(capture, sender, audio_control_rx, tx, &stop);
            })?);
            pipeline.audio_in = Some(rx);
        }
        if let Some((capture, sender)) = video {
            let (tx, rx) = mpsc::channel(4);
            let (control, control_rx) = std_mpsc::channel();
            let stop = pipeline.stop.clone();
            let window = pipeline.window.clone();
            pipeline.threads.push(spawn("encode-video", move || {
                encode_video(capture, sender, control_rx, tx, &window, &stop);
            })?);
            pipeline.video_in = Some(rx);
            pipeline.video_control = Some(control);
        }
        Ok(pipeline)
    }

    fn start_video_sink(
        &mut self,
        spec: VideoSinkSpec,
        fps: Option<u32>,
        mut receiver: VideoReceiver,
        reports: mpsc::UnboundedSender<Report>,
    ) -> Result<(), Error> {
        let (units, units_rx) = std_mpsc::sync_channel::<Bytes>(8);
        let skipped = self.unit_skipped.clone();
        let rate = self.video_rate.clone();
        let window = self.window.clone();
        if spec == VideoSinkSpec::Window {
            lock(&window).wanted = true;
        }
        // A window belongs to the thread that opened it: open the sink there, and hear
        // back whether that worked.
        let (opened_tx, opened_rx) = std_mpsc::channel();
        let name = spec.to_string();
        self.threads.push(spawn("decode-video", move || {
            let mut sink = match VideoSink::open(&spec, fps) {
                Ok(sink) => {
                    let _ = opened_tx.send(Ok(()));
                    sink
                }
                Err(e) => {
                    let _ = opened_tx.send(Err(e));
                    return;
                }
            };
            // Ends when the call loop drops its end of the queue.
            loop {
                let unit = match units_rx.recv_timeout(POLL) {
                    Ok(unit) => unit,
                    Err(std_mpsc::RecvTimeoutError::Timeout) => {
                        // Keep the window's events flowing while no frame comes.
                        if let Some(w) = sink.window()
                            && w.poll().is_err()
                        {
                            let _ = reports.send(Report::WindowClosed);
                            return;
                        }
                        continue;
                    }
                    Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
                };
                if let Some(w) = sink.window() {
                    let mut info = lock(&window);
                    if let Some(title) = info.title.take() {
                        w.set_title(&title);
                    }
                    w.set_overlay(info.overlay.clone());
                    w.set_self_view(info.self_view.take());
                }
                receiver.skip(skipped.swap(0, Ordering::Relaxed));
                let fps = rate.swap(0, Ordering::Relaxed);
                if fps > 0 {
                    sink.set_fps(fps);
                }
                let before = receiver.detections().len();
                if let Some(picture) = receiver.decode(&unit) {
                    match sink.show(&picture) {
                        Ok(shown_at) => receiver.shown(&picture, shown_at),
                        Err(magpie_media::devices::Error::WindowClosed) => {
                            let _ = reports.send(Report::WindowClosed);
                            return;
                        }
                        Err(e) => {
                            let _ = reports.send(Report::Failed(format!("video sink: {e}")));
                            return;
                        }
                    }
                }
                let report = Report::VideoShown {
                    stats: receiver.stats(),
                    detections: receiver.detections()[before..].to_vec(),
                    lost: receiver.needs_keyframe(),
                };
                if reports.send(report).is_err() {
                    return;
                }
            }
        })?);
        match opened_rx.recv() {
            Ok(Ok(())) => {
                self.units = Some(units);
                Ok(())
            }
            Ok(Err(source)) => Err(Error::SinkOpen {
                what: "video sink",
                spec: name,
                source: Box::new(source),
            }),
            Err(_) => Err(Error::Thread(std::io::Error::other(
                "the video sink thread died",
            ))),
        }
    }

    /// Whether video is decoded and shown.
    pub(crate) fn has_video(&self) -> bool {
        self.units.is_some()
    }

    /// Queues a slot pulled at `pulled_at` for the playout clock; false when the queue is
    /// full (the playout clock stalled), and the slot is dropped.
    pub(crate) fn queue_slot(&self, slot: Playout, pulled_at: Instant) -> bool {
        self.slots.try_send((slot, pulled_at)).is_ok()
    }

    /// Queues an access unit for the decoder; false when it is behind, and the unit is
    /// dropped (the decoder is told, and waits for a keyframe).
    pub(crate) fn queue_unit(&self, unit: Bytes) -> bool {
        let Some(units) = &self.units else {
            return true;
        };
        if units.try_send(unit).is_ok() {
            return true;
        }
        self.unit_skipped.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// Tells the video sink the source's frame rate (see [`VideoSink::set_fps`]).
    pub(crate) fn set_video_rate(&self, fps: u32) {
        self.video_rate.store(fps, Ordering::Relaxed);
    }

    /// The window's title and statistics overlay (ignored unless the sink is a window).
    pub(crate) fn set_window_text(&self, title: String, overlay: Vec<String>) {
        let mut info = lock(&self.window);
        info.title = Some(title);
        info.overlay = overlay;
    }

    pub(crate) fn force_keyframe(&self) {
        if let Some(control) = &self.video_control {
            let _ = control.send(VideoControl::Keyframe);
        }
    }

    pub(crate) fn set_video_bitrate(&self, bps: u64) {
        if let Some(control) = &self.video_control {
            let _ = control.send(VideoControl::Bitrate(bps));
        }
    }

    pub(crate) fn set_audio_expected_loss(&self, percent: u8) {
        let _ = self.audio_control.send(AudioControl::ExpectedLoss(percent));
    }

    pub(crate) fn set_audio_copy(&self, on: bool) {
        let _ = self.audio_control.send(AudioControl::Copy(on));
    }
}

impl Drop for Pipeline {
    /// Stops every thread and waits for it. Nothing here can block for long: the
    /// threads poll the stop flag at least every [`POLL`], and the decode thread ends
    /// when its queue closes.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.units = None;
        for rx in [&mut self.audio_in, &mut self.video_in]
            .into_iter()
            .flatten()
        {
            rx.close();
        }
        self.reports.close();
        // The sink's own clock thread stops when the playout is dropped.
        drop(self.playout.take());
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn start_audio_playout(
    sink: AudioSinkParts,
    slots: std_mpsc::Receiver<(Playout, Instant)>,
    reports: mpsc::UnboundedSender<Report>,
) -> Result<AudioPlayout, Error> {
    let AudioSinkParts {
        spec,
        mut receiver,
        format: (channels, frame),
    } = sink;
    let mut started = false;
    let mut late = 0u64;
    let playout = AudioPlayout::open(&spec, channels, frame, move |buf, played_at| {
        #[allow(clippy::disallowed_methods)] // reason: the playout clock's own time
        let at = Instant::now();
        let wait = if started { SLOT_WAIT } else { Duration::ZERO };
        let (slot, pulled_at) = match slots.recv_timeout(wait) {
            Ok((slot, pulled_at)) => {
                started |= !matches!(slot, Playout::Silence);
                (slot, Some(pulled_at))
            }
            Err(_) if started => {
                late += 1;
                (Playout::Conceal, None)
            }
            Err(_) => (Playout::Silence, None),
        };
        // What the trace below says of the slot, taken before the slot is played.
        let traced = (tracing::enabled!(target: "audio_timing", tracing::Level::TRACE) && started)
            .then(|| (slot.kind(), slot.capture_time()));
        let before = receiver.detections().len();
        receiver.play(slot, buf, played_at);
        if let Some((kind, capture)) = traced {
            // Per slot: how long it waited in the queue since the jitter buffer let it
            // go, and the frame's age (from capture) when its slot came up.
            let us = |d: Option<Duration>| d.map_or(-1, |d| d.as_micros() as i64);
            trace!(
                target: "audio_timing",
                slot = kind,
                queued_us = us(pulled_at.map(|p| at.saturating_duration_since(p))),
                age_us = us(capture.map(|c| at.saturating_duration_since(c))),
                played_in_us = played_at.micros_since(WallTime::now()),
                "audio slot played"
            );
        }
        let _ = reports.send(Report::AudioPlayed {
            at,
            stats: receiver.stats(),
            detections: receiver.detections()[before..].to_vec(),
            late,
            took: pulled_at.is_some(),
        });
    })
    .map_err(|source| Error::SinkOpen {
        what: "audio sink",
        spec: spec.to_string(),
        source: Box::new(source),
    })?;
    Ok(playout)
}

fn encode_audio(
    capture: AudioCapture,
    mut sender: AudioSender,
    control: std_mpsc::Receiver<AudioControl>,
    out: mpsc::Sender<Encoded>,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::Relaxed) {
        while let Ok(control) = control.try_recv() {
            let done = match control {
                AudioControl::ExpectedLoss(percent) => sender.set_expected_loss(percent),
                AudioControl::Copy(on) => sender.set_copy(on),
            };
            if let Err(e) = done {
                warn!(error = %e, "opus: cannot change the encoder");
            }
        }
        let Some(frame) = capture.recv_timeout(POLL) else {
            if capture.is_finished() {
                return;
            }
            continue;
        };
        match sender.encode(&frame.samples) {
            Ok(Some(audio)) => {
                let encoded = Encoded {
                    data: audio.frame,
                    copy: audio.copy,
                    captured_at: frame.captured_at,
                    keyframe: false,
                };
                if out.try_send(encoded).is_err() && out.is_closed() {
                    return;
                }
            }
            Ok(None) => {}
            Err(e) => warn!(error = %e, "opus encode failed"),
        }
    }
}

fn encode_video(
    capture: VideoCapture,
    mut sender: VideoSender,
    control: std_mpsc::Receiver<VideoControl>,
    out: mpsc::Sender<Encoded>,
    window: &Mutex<WindowInfo>,
    stop: &AtomicBool,
) {
    let mut frames = 0u64;
    while !stop.load(Ordering::Relaxed) {
        while let Ok(control) = control.try_recv() {
            match control {
                VideoControl::Keyframe => sender.request_keyframe(),
                VideoControl::Bitrate(bps) => sender.set_bitrate(bps),
            }
        }
        let Some(frame) = capture.recv_timeout(POLL) else {
            if capture.is_finished() {
                return;
            }
            continue;
        };
        frames += 1;
        // The self-view: a quarter-size copy, a few times a second.
        if frames.is_multiple_of(3) && lock(window).wanted {
            let (w, h) = (
                (frame.image.width() / 4) & !1,
                (frame.image.height() / 4) & !1,
            );
            if let Ok(small) = frame.image.scaled(w.max(2), h.max(2)) {
                lock(window).self_view = Some(small);
            }
        }
        match sender.encode(&frame.image) {
            Ok(Some(unit)) => {
                let encoded = Encoded {
                    data: unit.data,
                    copy: None,
                    captured_at: frame.captured_at,
                    keyframe: unit.keyframe,
                };
                if out.try_send(encoded).is_err() && out.is_closed() {
                    return;
                }
            }
            Ok(None) => {}
            Err(e) => warn!(error = %e, "h264 encode failed"),
        }
    }
}

/// The window information, even if a thread panicked holding it (it is plain data).
fn lock(window: &Mutex<WindowInfo>) -> std::sync::MutexGuard<'_, WindowInfo> {
    window
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, Error> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(Error::Thread)
}
