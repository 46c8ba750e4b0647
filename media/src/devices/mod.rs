//! Media sources and sinks, named by the short strings the client's flags take.
//!
//! | kind         | names                                          |
//! |--------------|------------------------------------------------|
//! | audio source | `tone`, `wav:PATH`, `mic`, `mic:NAME`          |
//! | video source | `pattern`, `y4m:PATH`, `camera`, `camera:INDEX`|
//! | audio sink   | `speaker`, `speaker:NAME`, `wav:PATH`, `null`  |
//! | video sink   | `window`, `y4m:PATH`, `null`                   |
//!
//! Capture runs on its own thread or device callback and hands frames over through a
//! bounded queue that drops the oldest ([`AudioCapture`], [`VideoCapture`]). Audio playout
//! pulls from the receiver at the device's pace ([`AudioPlayout`]). Files record the
//! wall-clock time of their first sample (see [`timing`]) so the latency between two files
//! can be measured by anyone. This is an impure edge: it spawns threads and reads the clock.
//!
//! [`AudioCapture`]: crate::devices::AudioCapture
//! [`VideoCapture`]: crate::devices::VideoCapture
//! [`AudioPlayout`]: crate::devices::AudioPlayout
//! [`timing`]: crate::devices::timing

mod camera;
mod capture;
pub mod compose;
mod playout;
mod queue;
mod resample;
mod sound;
mod spec;
mod synth;
pub mod timing;
mod wav;
mod y4m;

use std::fmt;
use std::path::PathBuf;

pub use self::camera::{CameraEntry, convert as convert_camera_buffer};
pub use self::capture::{AudioCapture, AudioCaptureConfig, VideoCapture, VideoCaptureConfig};
pub use self::playout::{AudioPlayout, VideoSink, WindowSink};
pub use self::queue::DropOldestQueue;
pub use self::spec::{AudioSinkSpec, AudioSourceSpec, VideoSinkSpec, VideoSourceSpec};
pub use self::synth::{PatternGenerator, ToneGenerator};
pub use self::wav::{WavSink, WavSource};
pub use self::y4m::{Y4mReader, Y4mWriter};
use crate::codec::I420Frame;
use crate::probe::WallTime;

/// Errors from sources and sinks.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A source or sink name that does not parse.
    #[error("bad {what} {spec:?}: expected one of {expected}")]
    BadSpec {
        /// Which kind of name.
        what: &'static str,
        /// What was given.
        spec: String,
        /// The accepted forms.
        expected: &'static str,
    },
    /// The device asked for is not there (unplugged, misnamed, or none at all).
    #[error("no {what} named {name:?} (run the device listing to see what there is)")]
    NoSuchDevice {
        /// Which kind of device.
        what: &'static str,
        /// The name or index asked for (`default` or `any` when none was given).
        name: String,
    },
    /// The audio system could not be asked (no sound server, no ALSA ...).
    #[error("audio system: {0}")]
    Audio(#[source] cpal::Error),
    /// An audio device that exists refused (busy, unplugged mid-call, no permission ...).
    #[error("audio device {device:?}: {source}")]
    AudioDevice {
        /// The device's name.
        device: String,
        /// Why.
        #[source]
        source: cpal::Error,
    },
    /// The device offers no format we can use.
    #[error("device {device:?} offers no usable format ({format})")]
    UnsupportedFormat {
        /// The device.
        device: String,
        /// What was needed or offered.
        format: String,
    },
    /// The camera system failed to list cameras.
    #[error("camera: {0}")]
    Camera(#[source] nokhwa::NokhwaError),
    /// A camera that exists could not be opened (in use, unplugged, no permission).
    #[error("camera {index} could not be opened: {source}")]
    CameraUnavailable {
        /// The camera index.
        index: u32,
        /// Why.
        #[source]
        source: nokhwa::NokhwaError,
    },
    /// A camera frame in a format we cannot convert.
    #[error("camera frame: {0}")]
    CameraFormat(&'static str),
    /// An MJPEG camera frame that does not decode.
    #[error("camera frame: {0}")]
    Jpeg(#[source] zune_jpeg::errors::DecodeErrors),
    /// A window sink was asked for but there is no desktop session.
    #[error("no display for a video window: DISPLAY and WAYLAND_DISPLAY are unset (try y4m:PATH)")]
    NoDisplay,
    /// The window system refused.
    #[error("window: {0}")]
    Window(#[source] minifb::Error),
    /// The user closed the video window.
    #[error("the video window was closed")]
    WindowClosed,
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A WAV file could not be read or written.
    #[error("{path}: {source}")]
    Wav {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: hound::Error,
    },
    /// A Y4M file that is not one we can read.
    #[error("{path}: {reason}")]
    Y4m {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
    /// A timing sidecar that is not valid JSON.
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The resampler could not be set up for this rate.
    #[error("resampler: {0}")]
    ResamplerSetup(#[from] rubato::ResamplerConstructionError),
    /// The resampler failed.
    #[error("resampler: {0}")]
    Resample(#[from] rubato::ResampleError),
    /// A thread could not be started.
    #[error("could not start a thread: {0}")]
    Thread(#[source] std::io::Error),
    /// A sink was used after it was finished.
    #[error("the sink is closed")]
    Closed,
    /// A picture did not fit.
    #[error(transparent)]
    Codec(#[from] crate::codec::Error),
    /// The synthetic source's markers could not be set up.
    #[error(transparent)]
    Probe(#[from] crate::probe::Error),
}

impl Error {
    fn audio(e: impl Into<cpal::Error>) -> Self {
        Self::Audio(e.into())
    }
}

/// One frame of captured audio: interleaved 48 kHz samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioFrame {
    /// The samples, one frame's worth.
    pub samples: Vec<i16>,
    /// When the first sample was captured (emitted, for synthetic and file sources).
    pub captured_at: WallTime,
}

/// One captured picture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoFrame {
    /// The picture, at the configured size.
    pub image: I420Frame,
    /// When it was captured.
    pub captured_at: WallTime,
    /// Its number in the capture, from 0.
    pub number: u64,
}

/// The devices present on this machine.
#[derive(Debug, Clone, Default)]
pub struct DeviceList {
    /// Audio capture devices as (id, name); `mic:NAME` takes either.
    pub audio_inputs: Vec<(String, String)>,
    /// Audio playback devices as (id, name); `speaker:NAME` takes either.
    pub audio_outputs: Vec<(String, String)>,
    /// Cameras, by the indices `camera:INDEX` takes.
    pub cameras: Vec<CameraEntry>,
    /// Why a kind of device could not be listed (no sound server, no V4L ...).
    pub problems: Vec<String>,
}

/// Lists audio inputs, audio outputs and cameras. Never fails: a subsystem that cannot be
/// asked is reported in [`DeviceList::problems`].
pub fn list_devices() -> DeviceList {
    let mut list = DeviceList::default();
    match sound::names(true) {
        Ok(n) => list.audio_inputs = n,
        Err(e) => list.problems.push(format!("audio inputs: {e}")),
    }
    match sound::names(false) {
        Ok(n) => list.audio_outputs = n,
        Err(e) => list.problems.push(format!("audio outputs: {e}")),
    }
    match camera::cameras() {
        Ok(c) => list.cameras = c,
        Err(e) => list.problems.push(format!("cameras: {e}")),
    }
    list
}

impl fmt::Display for DeviceList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let section = |f: &mut fmt::Formatter<'_>, title: &str, names: Vec<String>, none: &str| {
            if names.is_empty() {
                writeln!(f, "{title}: none found ({none})")
            } else {
                writeln!(f, "{title}:")?;
                names.iter().try_for_each(|n| writeln!(f, "  {n}"))
            }
        };
        let quote = |v: &[(String, String)], kind: &str| {
            v.iter()
                .map(|(id, name)| format!("{kind}:{id}  {name}"))
                .collect()
        };
        section(
            f,
            "audio inputs",
            quote(&self.audio_inputs, "mic"),
            "use tone or wav:PATH",
        )?;
        section(
            f,
            "audio outputs",
            quote(&self.audio_outputs, "speaker"),
            "use wav:PATH or null",
        )?;
        let cams = self
            .cameras
            .iter()
            .map(|c| format!("camera:{}  {}", c.index, c.name))
            .collect();
        section(f, "cameras", cams, "use pattern or y4m:PATH")?;
        self.problems
            .iter()
            .try_for_each(|p| writeln!(f, "note: {p}"))
    }
}
