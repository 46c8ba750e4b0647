//! Capture: each source runs on its own thread (or device callback) and hands frames to the
//! encoder through a [`DropOldestQueue`], so a slow encoder drops stale frames instead of
//! building latency.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::queue::DropOldestQueue;
use super::synth::{PatternGenerator, ToneGenerator};
use super::timing::{TimingRecord, source_sidecar};
use super::wav::WavSource;
use super::y4m::Y4mReader;
use super::{AudioFrame, AudioSourceSpec, Error, VideoFrame, VideoSourceSpec, camera, sound};
use crate::codec::{AudioChannels, FrameDuration, SAMPLE_RATE};
use crate::probe::{MarkerSchedule, WallTime};

/// Audio capture settings.
#[derive(Clone)]
pub struct AudioCaptureConfig {
    pub(crate) channels: AudioChannels,
    pub(crate) frame: FrameDuration,
    pub(crate) queue_frames: usize,
    pub(crate) marker_period: Duration,
}

impl Default for AudioCaptureConfig {
    fn default() -> Self {
        Self {
            // Voice calls are mono.
            channels: AudioChannels::Mono,
            // One Opus frame per queue item.
            frame: FrameDuration::Ms20,
            // 100 ms of slack before the oldest frame goes: rides out a scheduler hiccup,
            // never lets the encoder fall far behind.
            queue_frames: 5,
            // One marker a second: 180 ms of each second carries the probe.
            marker_period: Duration::from_secs(1),
        }
    }
}

impl AudioCaptureConfig {
    /// Mono or stereo.
    pub fn set_channels(mut self, channels: AudioChannels) -> Self {
        self.channels = channels;
        self
    }

    /// Frame length handed to the encoder.
    pub fn set_frame(mut self, frame: FrameDuration) -> Self {
        self.frame = frame;
        self
    }

    /// Frames the queue holds before dropping the oldest.
    pub fn set_queue_frames(mut self, frames: usize) -> Self {
        self.queue_frames = frames;
        self
    }

    /// Time between audio markers of the `tone` source.
    pub fn set_marker_period(mut self, period: Duration) -> Self {
        self.marker_period = period;
        self
    }
}

impl std::fmt::Debug for AudioCaptureConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            channels,
            frame,
            queue_frames,
            marker_period,
        } = self;
        f.debug_struct("AudioCaptureConfig")
            .field("channels", channels)
            .field("frame", frame)
            .field("queue_frames", queue_frames)
            .field("marker_period", marker_period)
            .finish()
    }
}

/// The consumer's end of a capture: its queue, its stop flag and its thread, if any.
struct Feed<T> {
    queue: Arc<DropOldestQueue<T>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl<T> Feed<T> {
    fn recv_timeout(&self, timeout: Duration) -> Option<T> {
        self.queue.pop_timeout(timeout)
    }

    fn is_finished(&self) -> bool {
        self.queue.is_closed() && self.queue.is_empty()
    }

    fn dropped(&self) -> u64 {
        self.queue.dropped()
    }
}

impl<T> Drop for Feed<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.queue.close();
        if let Some(h) = self.thread.take() {
            let _ = h.join();
        }
    }
}

/// A running audio source.
pub struct AudioCapture {
    feed: Feed<AudioFrame>,
    /// A microphone's stream runs while it lives.
    _stream: Option<cpal::Stream>,
    started_at: WallTime,
    schedule: Option<MarkerSchedule>,
}

impl AudioCapture {
    /// Opens a source and starts capturing.
    pub fn open(spec: &AudioSourceSpec, config: &AudioCaptureConfig) -> Result<Self, Error> {
        let queue = Arc::new(DropOldestQueue::new(config.queue_frames));
        let stop = Arc::new(AtomicBool::new(false));
        let started_at = WallTime::now();
        let samples = config.frame.samples();
        let (thread, stream, schedule) = match spec {
            AudioSourceSpec::Tone => {
                let mut tone = ToneGenerator::new(config.channels, config.marker_period)?;
                let schedule = tone.schedule(started_at);
                let next = move || Some(tone.next_frame(samples));
                let thread = paced(
                    "tone",
                    config.frame.duration(),
                    queue.clone(),
                    stop.clone(),
                    next,
                    audio_frame,
                    started_at,
                )?;
                (Some(thread), None, Some(schedule))
            }
            AudioSourceSpec::Wav(path) => {
                let mut wav = WavSource::open(path, config.channels)?;
                record_source(
                    path,
                    "audio",
                    started_at,
                    f64::from(SAMPLE_RATE),
                    Some(config.channels),
                );
                let next = move || match wav.next_frame(samples) {
                    Ok(frame) => frame,
                    Err(e) => {
                        warn!(error = %e, "wav source failed");
                        None
                    }
                };
                let thread = paced(
                    "wav",
                    config.frame.duration(),
                    queue.clone(),
                    stop.clone(),
                    next,
                    audio_frame,
                    started_at,
                )?;
                (Some(thread), None, None)
            }
            AudioSourceSpec::Mic(name) => {
                let stream = sound::open_mic(
                    name.as_deref(),
                    config.channels,
                    config.frame,
                    queue.clone(),
                )?;
                (None, Some(stream), None)
            }
        };
        info!(source = %spec, started_at = started_at.as_micros(), "audio capture started");
        Ok(Self {
            feed: Feed {
                queue,
                stop,
                thread,
            },
            _stream: stream,
            started_at,
            schedule,
        })
    }

    /// The next captured frame, waiting up to `timeout`. `None` on timeout or at the end of
    /// a file (see [`AudioCapture::is_finished`]).
    pub fn recv_timeout(&self, timeout: Duration) -> Option<AudioFrame> {
        self.feed.recv_timeout(timeout)
    }

    /// True when a file source has delivered everything.
    pub fn is_finished(&self) -> bool {
        self.feed.is_finished()
    }

    /// Frames dropped because the consumer fell behind.
    pub fn dropped(&self) -> u64 {
        self.feed.dropped()
    }

    /// Wall-clock time of the first sample.
    pub fn started_at(&self) -> WallTime {
        self.started_at
    }

    /// The marker schedule of a `tone` source, for the receiver's detector.
    pub fn marker_schedule(&self) -> Option<MarkerSchedule> {
        self.schedule
    }
}

impl std::fmt::Debug for AudioCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioCapture")
            .field("started_at", &self.started_at)
            .field("schedule", &self.schedule)
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

fn audio_frame(samples: Vec<i16>, captured_at: WallTime, _: u64) -> AudioFrame {
    AudioFrame {
        samples,
        captured_at,
    }
}

fn video_frame(image: crate::codec::I420Frame, captured_at: WallTime, number: u64) -> VideoFrame {
    VideoFrame {
        image,
        captured_at,
        number,
    }
}

/// Writes a source's sidecar; a read-only directory only costs a warning.
fn record_source(
    path: &std::path::Path,
    media: &str,
    at: WallTime,
    rate: f64,
    channels: Option<AudioChannels>,
) {
    let record = TimingRecord {
        media: media.into(),
        role: "source".into(),
        first_sample_unix_us: at.as_micros(),
        rate,
        channels: channels.map(|c| c.count() as u16),
        markers: None,
    };
    if let Err(e) = record.write(&source_sidecar(path)) {
        warn!(error = %e, "could not record the source's start time");
    }
}

/// Runs `next` on its own thread once per `period`, in real time, like a device would:
/// the frame covering `[start + n·period, start + (n+1)·period)` is handed over at its end.
fn paced<T, R, F>(
    name: &str,
    period: Duration,
    queue: Arc<DropOldestQueue<R>>,
    stop: Arc<AtomicBool>,
    mut next: F,
    wrap: fn(T, WallTime, u64) -> R,
    wall: WallTime,
) -> Result<JoinHandle<()>, Error>
where
    T: Send + 'static,
    R: Send + 'static,
    F: FnMut() -> Option<T> + Send + 'static,
{
    #[allow(clippy::disallowed_methods)] // reason: a capture thread runs in real time
    let epoch = Instant::now();
    std::thread::Builder::new()
        .name(format!("capture-{name}"))
        .spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let Some(item) = next() else {
                    debug!("source finished");
                    break;
                };
                let offset = period * (n as u32);
                let due = epoch + offset + period;
                #[allow(clippy::disallowed_methods)] // reason: pacing to the wall clock
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                queue.push(wrap(item, wall.plus(offset), n));
                n += 1;
            }
            queue.close();
        })
        .map_err(Error::Thread)
}

/// Video capture settings.
#[derive(Clone)]
pub struct VideoCaptureConfig {
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) fps: u32,
    pub(crate) queue_frames: usize,
}

impl Default for VideoCaptureConfig {
    fn default() -> Self {
        Self {
            // The encoder's default: VGA at 30 fps.
            width: 640,
            height: 480,
            fps: 30,
            // Two frames: a late encoder always gets the newest picture.
            queue_frames: 2,
        }
    }
}

impl VideoCaptureConfig {
    /// Output picture size; sources are scaled to it.
    pub fn set_resolution(mut self, width: u32, height: u32) -> Self {
        self.width = width;
        self.height = height;
        self
    }

    /// Frames per second of `pattern` (cameras get their closest mode, Y4M files keep theirs).
    pub fn set_fps(mut self, fps: u32) -> Self {
        self.fps = fps.max(1);
        self
    }

    /// Frames the queue holds before dropping the oldest.
    pub fn set_queue_frames(mut self, frames: usize) -> Self {
        self.queue_frames = frames;
        self
    }
}

impl std::fmt::Debug for VideoCaptureConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            width,
            height,
            fps,
            queue_frames,
        } = self;
        f.debug_struct("VideoCaptureConfig")
            .field("width", width)
            .field("height", height)
            .field("fps", fps)
            .field("queue_frames", queue_frames)
            .finish()
    }
}

/// A running video source.
pub struct VideoCapture {
    feed: Feed<VideoFrame>,
    started_at: WallTime,
}

impl VideoCapture {
    /// Opens a source and starts capturing.
    pub fn open(spec: &VideoSourceSpec, config: &VideoCaptureConfig) -> Result<Self, Error> {
        let queue = Arc::new(DropOldestQueue::new(config.queue_frames));
        let stop = Arc::new(AtomicBool::new(false));
        let started_at = WallTime::now();
        let (w, h) = (config.width, config.height);
        let period = Duration::from_secs(1) / config.fps;
        let thread = match spec {
            VideoSourceSpec::Pattern => {
                let mut pattern = PatternGenerator::new(w, h)?;
                let mut n = 0u32;
                // The barcode carries the time the frame is due, the moment a camera would
                // have exposed it.
                let next = move || {
                    let at = started_at.plus(period * n);
                    n += 1;
                    Some(pattern.next_frame(at))
                };
                paced(
                    "pattern",
                    period,
                    queue.clone(),
                    stop.clone(),
                    next,
                    video_frame,
                    started_at,
                )?
            }
            VideoSourceSpec::Y4m(path) => {
                let mut y4m = Y4mReader::open(path)?;
                // A file plays at its own frame rate.
                let fps = y4m.fps();
                let period = Duration::from_secs_f64(1.0 / f64::from(fps));
                record_source(path, "video", started_at, f64::from(fps), None);
                let next = move || match y4m.next_frame() {
                    Ok(Some((frame, _))) => frame.scaled(w, h).ok(),
                    Ok(None) => None,
                    Err(e) => {
                        warn!(error = %e, "y4m source failed");
                        None
                    }
                };
                paced(
                    "y4m",
                    period,
                    queue.clone(),
                    stop.clone(),
                    next,
                    video_frame,
                    started_at,
                )?
            }
            VideoSourceSpec::Camera(index) => {
                camera::open(*index, w, h, config.fps, queue.clone(), stop.clone())?
            }
        };
        info!(source = %spec, started_at = started_at.as_micros(), "video capture started");
        Ok(Self {
            feed: Feed {
                queue,
                stop,
                thread: Some(thread),
            },
            started_at,
        })
    }

    /// The next captured frame, waiting up to `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<VideoFrame> {
        self.feed.recv_timeout(timeout)
    }

    /// True when a file source has delivered everything, or the camera stopped.
    pub fn is_finished(&self) -> bool {
        self.feed.is_finished()
    }

    /// Frames dropped because the consumer fell behind.
    pub fn dropped(&self) -> u64 {
        self.feed.dropped()
    }

    /// Wall-clock time capture started.
    pub fn started_at(&self) -> WallTime {
        self.started_at
    }
}

impl std::fmt::Debug for VideoCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoCapture")
            .field("started_at", &self.started_at)
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}
