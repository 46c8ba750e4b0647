//! Playout: audio sinks pull from the receiver at the device's pace; video sinks show what
//! they are given and say when.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use minifb::{Key, KeyRepeat, Window, WindowOptions};
use tracing::{info, warn};

use super::wav::WavSink;
use super::y4m::Y4mWriter;
use super::{AudioSinkSpec, Error, VideoSinkSpec, sound};
use crate::codec::{AudioChannels, FrameDuration, I420Frame};
use crate::probe::WallTime;

/// A running audio sink. It calls the receiver's `pull(buf, played_at)` each time it needs
/// audio: from the device callback for a speaker, from a thread ticking every frame in real
/// time for files and `null`. `played_at` is when `buf[0]` reaches the listener.
pub struct AudioPlayout {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    _stream: Option<cpal::Stream>,
}

impl AudioPlayout {
    /// Opens a sink and starts pulling.
    ///
    /// Whatever `pull` writes is played and, for `wav:PATH`, recorded: silence and
    /// concealment included, so the file is exactly what a listener heard.
    pub fn open<F>(
        spec: &AudioSinkSpec,
        channels: AudioChannels,
        frame: FrameDuration,
        pull: F,
    ) -> Result<Self, Error>
    where
        F: FnMut(&mut [i16], WallTime) + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let (thread, stream) = match spec {
            AudioSinkSpec::Speaker(name) => (
                None,
                Some(sound::open_speaker(name.as_deref(), channels, pull)?),
            ),
            AudioSinkSpec::Wav(path) => {
                let mut wav = WavSink::create(path, channels)?;
                let thread = ticking(frame, channels, stop.clone(), pull, move |buf, at| {
                    if let Err(e) = wav.write(buf, at) {
                        warn!(error = %e, "wav sink write failed");
                    }
                })?;
                (Some(thread), None)
            }
            AudioSinkSpec::Null => (
                Some(ticking(frame, channels, stop.clone(), pull, |_, _| {})?),
                None,
            ),
        };
        info!(sink = %spec, "audio playout started");
        Ok(Self {
            stop,
            thread,
            _stream: stream,
        })
    }
}

impl Drop for AudioPlayout {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.thread.take() {
            let _ = h.join();
        }
    }
}

impl std::fmt::Debug for AudioPlayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioPlayout")
            .field("device", &self._stream.is_some())
            .finish_non_exhaustive()
    }
}

/// A real-time clock for sinks without one: one pull per frame period.
fn ticking<F, W>(
    frame: FrameDuration,
    channels: AudioChannels,
    stop: Arc<AtomicBool>,
    mut pull: F,
    mut write: W,
) -> Result<JoinHandle<()>, Error>
where
    F: FnMut(&mut [i16], WallTime) + Send + 'static,
    W: FnMut(&[i16], WallTime) + Send + 'static,
{
    std::thread::Builder::new()
        .name("playout-audio".into())
        .spawn(move || {
            let mut buf = vec![0i16; frame.samples() * channels.count()];
            #[allow(clippy::disallowed_methods)] // reason: a playout thread runs in real time
            let epoch = Instant::now();
            let wall = WallTime::now();
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let offset = frame.duration() * n;
                #[allow(clippy::disallowed_methods)] // reason: pacing to the wall clock
                let now = Instant::now();
                if epoch + offset > now {
                    std::thread::sleep(epoch + offset - now);
                }
                let at = wall.plus(offset);
                buf.fill(0);
                pull(&mut buf, at);
                write(&buf, at);
                n += 1;
            }
        })
        .map_err(Error::Thread)
}

/// Where decoded video is shown.
pub enum VideoSink {
    /// A desktop window.
    Window(Box<WindowSink>),
    /// A Y4M recording.
    Y4m(Y4mWriter),
    /// Nowhere.
    Null,
}

impl VideoSink {
    /// Opens a sink; `fps`, the source's frame rate, is written into a Y4M header (`None`:
    /// measured from the first frames).
    pub fn open(spec: &VideoSinkSpec, fps: Option<u32>) -> Result<Self, Error> {
        Ok(match spec {
            VideoSinkSpec::Window => Self::Window(Box::new(WindowSink::new("Magpie")?)),
            VideoSinkSpec::Y4m(path) => Self::Y4m(Y4mWriter::create(path, fps)?),
            VideoSinkSpec::Null => Self::Null,
        })
    }

    /// Tells the sink the source's frame rate, learnt after it opened (from RTP
    /// timestamps, say): a Y4M sink opened without one writes it into its header.
    pub fn set_fps(&mut self, fps: u32) {
        if let Self::Y4m(y) = self {
            y.set_fps(fps);
        }
    }

    /// The window, when this sink is one.
    pub fn window(&mut self) -> Option<&mut WindowSink> {
        match self {
            Self::Window(w) => Some(w),
            _ => None,
        }
    }

    /// Shows a frame now; returns when it was shown (for a window: when the picture was
    /// handed to the display server, after the colour conversion).
    pub fn show(&mut self, frame: &I420Frame) -> Result<WallTime, Error> {
        match self {
            Self::Window(w) => {
                w.show(frame)?;
                Ok(WallTime::now())
            }
            Self::Y4m(y) => {
                let now = WallTime::now();
                y.write(frame, now)?;
                Ok(now)
            }
            Self::Null => Ok(WallTime::now()),
        }
    }
}

impl std::fmt::Debug for VideoSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Window(w) => f.debug_tuple("Window").field(w).finish(),
            Self::Y4m(y) => f.debug_tuple("Y4m").field(y).finish(),
            Self::Null => f.write_str("Null"),
        }
    }
}

/// A desktop window (X11 or Wayland, via `minifb`). It must be used on the thread that
/// created it. It shows the peer's picture with a small self-view in a corner and, while
/// the S key toggles it on, the call's statistics over the top (see [`super::compose`]);
/// the title is set by the caller (the peer's name and the call time).
pub struct WindowSink {
    title: String,
    window: Option<Window>,
    pixels: Vec<u32>,
    self_view: Option<I420Frame>,
    overlay: Vec<String>,
    show_overlay: bool,
}

impl WindowSink {
    /// Checks for a display; the window itself opens with the first frame, at its size.
    pub fn new(title: &str) -> Result<Self, Error> {
        let has_display = ["DISPLAY", "WAYLAND_DISPLAY"]
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()));
        if !has_display {
            return Err(Error::NoDisplay);
        }
        Ok(Self {
            title: title.to_owned(),
            window: None,
            pixels: Vec::new(),
            self_view: None,
            overlay: Vec::new(),
            show_overlay: false,
        })
    }

    /// Sets the title (the peer's name and the call time, say).
    pub fn set_title(&mut self, title: &str) {
        if self.title != title {
            self.title = title.to_owned();
            if let Some(w) = &mut self.window {
                w.set_title(title);
            }
        }
    }

    /// The local picture for the self-view (any size; it is scaled down).
    pub fn set_self_view(&mut self, frame: Option<I420Frame>) {
        self.self_view = frame;
    }

    /// The statistics lines the overlay shows while it is on.
    pub fn set_overlay(&mut self, lines: Vec<String>) {
        self.overlay = lines;
    }

    /// Draws a frame, scaled to the window if its size changed.
    pub fn show(&mut self, frame: &I420Frame) -> Result<(), Error> {
        if self.window.is_none() {
            let mut w = Window::new(
                &self.title,
                frame.width() as usize,
                frame.height() as usize,
                WindowOptions {
                    resize: true,
                    ..WindowOptions::default()
                },
            )
            .map_err(Error::Window)?;
            // The caller paces frames; minifb's own pacing would only add a sleep.
            w.set_target_fps(0);
            self.window = Some(w);
        }
        let window = self.window.as_mut().expect("the window was created above");
        if !window.is_open() {
            return Err(Error::WindowClosed);
        }
        if window.is_key_pressed(Key::S, KeyRepeat::No) {
            self.show_overlay = !self.show_overlay;
        }
        let overlay = if self.show_overlay {
            &self.overlay[..]
        } else {
            &[]
        };
        super::compose::compose(frame, self.self_view.as_ref(), overlay, &mut self.pixels);
        window
            .update_with_buffer(
                &self.pixels,
                frame.width() as usize,
                frame.height() as usize,
            )
            .map_err(Error::Window)
    }

    /// Handles the window's events while no frame comes (so closing it and the S key
    /// still work); an error once the user closed it.
    pub fn poll(&mut self) -> Result<(), Error> {
        match &mut self.window {
            Some(w) if !w.is_open() => Err(Error::WindowClosed),
            Some(w) => {
                w.update();
                if w.is_key_pressed(Key::S, KeyRepeat::No) {
                    self.show_overlay = !self.show_overlay;
                }
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// False once the user closed the window.
    pub fn is_open(&self) -> bool {
        self.window.as_ref().is_none_or(Window::is_open)
    }
}

impl std::fmt::Debug for WindowSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowSink")
            .field("title", &self.title)
            .field("open", &self.window.is_some())
            .finish_non_exhaustive()
    }
}
