//! YUV4MPEG2 (Y4M) files, 4:2:0 only: a reader and a writer that stamps wall-clock times
//! into `X` parameters (`XMAGPIE_START` in the header, `XMAGPIE_T` on each frame).

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::Error;
use crate::codec::I420Frame;
use crate::probe::WallTime;

const MAGIC: &str = "YUV4MPEG2";
/// The longest header line we accept: real ones are under 100 bytes.
const MAX_LINE: u64 = 1024;

/// A Y4M file opened for reading.
pub struct Y4mReader {
    input: BufReader<File>,
    path: PathBuf,
    width: u32,
    height: u32,
    fps: f32,
    start: Option<WallTime>,
}

impl Y4mReader {
    /// Opens and parses the stream header.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let file = File::open(path).map_err(|e| Error::Io {
            path: path.to_owned(),
            source: e,
        })?;
        let mut input = BufReader::new(file);
        let bad = |reason: &'static str| Error::Y4m {
            path: path.to_owned(),
            reason,
        };
        let line = read_line(&mut input, path)?.ok_or_else(|| bad("empty file"))?;
        let mut fields = line.split(' ');
        if fields.next() != Some(MAGIC) {
            return Err(bad("not a YUV4MPEG2 file"));
        }
        let (mut width, mut height, mut fps, mut start) = (None, None, 30.0f32, None);
        for field in fields {
            let (tag, value) = field.split_at(field.len().min(1));
            match tag {
                "W" => width = value.parse().ok(),
                "H" => height = value.parse().ok(),
                "F" => {
                    let (n, d) = value.split_once(':').ok_or_else(|| bad("bad frame rate"))?;
                    let (n, d): (f32, f32) = (
                        n.parse().map_err(|_| bad("bad frame rate"))?,
                        d.parse().map_err(|_| bad("bad frame rate"))?,
                    );
                    if n <= 0.0 || d <= 0.0 {
                        return Err(bad("bad frame rate"));
                    }
                    fps = n / d;
                }
                "C" if !value.starts_with("420") => {
                    return Err(bad("only 4:2:0 chroma is supported"));
                }
                "I" if value != "p" && value != "?" => {
                    return Err(bad("only progressive video is supported"));
                }
                "X" => {
                    if let Some(us) = value.strip_prefix("MAGPIE_START=") {
                        start = us.parse().ok().map(WallTime::from_micros);
                    }
                }
                _ => {}
            }
        }
        let (Some(width), Some(height)) = (width, height) else {
            return Err(bad("missing W or H"));
        };
        I420Frame::black(width, height).map_err(|_| bad("unsupported picture size"))?;
        Ok(Self {
            input,
            path: path.to_owned(),
            width,
            height,
            fps,
            start,
        })
    }

    /// Picture width.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Picture height.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Frames per second from the header (30 if absent).
    pub fn fps(&self) -> f32 {
        self.fps
    }

    /// `XMAGPIE_START` from the header: when the first frame was shown.
    pub fn start(&self) -> Option<WallTime> {
        self.start
    }

    /// The next frame and its `XMAGPIE_T` time, or `None` at the end.
    pub fn next_frame(&mut self) -> Result<Option<(I420Frame, Option<WallTime>)>, Error> {
        let Some(line) = read_line(&mut self.input, &self.path)? else {
            return Ok(None);
        };
        let mut fields = line.split(' ');
        if fields.next() != Some("FRAME") {
            return Err(Error::Y4m {
                path: self.path.clone(),
                reason: "frame header missing",
            });
        }
        let shown = fields
            .filter_map(|f| f.strip_prefix("XMAGPIE_T="))
            .find_map(|us| us.parse().ok())
            .map(WallTime::from_micros);
        let len = self.width as usize * self.height as usize * 3 / 2;
        let mut data = vec![0; len];
        self.input.read_exact(&mut data).map_err(|e| Error::Io {
            path: self.path.clone(),
            source: e,
        })?;
        let frame = I420Frame::from_bytes(self.width, self.height, data)
            .expect("the buffer was sized from the validated header");
        Ok(Some((frame, shown)))
    }
}

impl std::fmt::Debug for Y4mReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Y4mReader")
            .field("path", &self.path)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("fps", &self.fps)
            .finish_non_exhaustive()
    }
}

/// Reads one `\n`-terminated header line of bounded length; `None` at a clean end of file.
fn read_line(input: &mut BufReader<File>, path: &Path) -> Result<Option<String>, Error> {
    let mut line = Vec::new();
    let n = input
        .by_ref()
        .take(MAX_LINE)
        .read_until(b'\n', &mut line)
        .map_err(|e| Error::Io {
            path: path.to_owned(),
            source: e,
        })?;
    if n == 0 {
        return Ok(None);
    }
    if line.pop() != Some(b'\n') {
        return Err(Error::Y4m {
            path: path.to_owned(),
            reason: "header line too long or truncated",
        });
    }
    String::from_utf8(line).map(Some).map_err(|_| Error::Y4m {
        path: path.to_owned(),
        reason: "header is not text",
    })
}

/// How many frames a writer with no given rate holds to measure it (one second at 30 fps:
/// show times jitter by the decoder's pace, and only a span this long averages it out).
const MEASURE_FRAMES: usize = 30;
/// The rate written when none was given and too few frames came to measure one.
const FALLBACK_FPS: u32 = 30;
/// The longest freeze filled with repeats, in seconds: a longer gap (a clock jump, a
/// call on hold for hours) is not worth gigabytes of copies.
const MAX_FREEZE_SECS: u32 = 600;

/// Writes I420 frames to a Y4M file as they are shown, at the nominal frame rate: through
/// a freeze the last frame is repeated once a frame interval (tagged `XMAGPIE_REPEAT`),
/// so a player (ffmpeg, which times Y4M frames by the header's rate alone) sees the true
/// duration. The header keeps the source's rate: given at creation, or set with
/// [`Y4mWriter::set_fps`] by a caller that knows it (from RTP timestamps, say) before the
/// first frames are written, or failing both measured from the first frames' show times.
pub struct Y4mWriter {
    output: BufWriter<File>,
    path: PathBuf,
    /// The nominal rate; `None` until measured.
    fps: Option<u32>,
    size: Option<(u32, u32)>,
    /// Frames held while the rate is measured.
    held: Vec<(I420Frame, WallTime)>,
    /// The last frame written, and when it was shown.
    last: Option<I420Frame>,
    /// The first frame's show time and the slot the next frame goes in: the file's
    /// timeline, which stays within about a frame of the show times.
    timeline: Option<(WallTime, u64)>,
    header_written: bool,
    repeats: u64,
}

impl Y4mWriter {
    /// Creates (truncates) `path`. `fps` is the source's rate; `None` measures it from the
    /// first frames. The header waits for the first frame, which fixes the size.
    pub fn create(path: &Path, fps: Option<u32>) -> Result<Self, Error> {
        let file = File::create(path).map_err(|e| Error::Io {
            path: path.to_owned(),
            source: e,
        })?;
        Ok(Self {
            output: BufWriter::new(file),
            path: path.to_owned(),
            fps: fps.map(|f| f.clamp(1, 240)),
            size: None,
            held: Vec::new(),
            last: None,
            timeline: None,
            header_written: false,
            repeats: 0,
        })
    }

    /// Appends a frame shown at `shown_at`, after repeats of the previous one for as many
    /// frame intervals as it was frozen. Every frame must have the first frame's size.
    pub fn write(&mut self, frame: &I420Frame, shown_at: WallTime) -> Result<(), Error> {
        let size = (frame.width(), frame.height());
        match self.size {
            None => self.size = Some(size),
            Some(first) if first != size => {
                return Err(Error::Y4m {
                    path: self.path.clone(),
                    reason: "frame size changed mid-stream",
                });
            }
            Some(_) => {}
        }
        let Some(fps) = self.fps else {
            self.held.push((frame.clone(), shown_at));
            if self.held.len() >= MEASURE_FRAMES {
                self.release_held()?;
            }
            return Ok(());
        };
        self.emit(fps, frame, shown_at)
    }

    /// Sets the source's frame rate, if none was given and the header is not written yet
    /// (frames held to measure it are written at this rate).
    pub fn set_fps(&mut self, fps: u32) {
        if self.fps.is_none() {
            self.fps = Some(fps.clamp(1, 240));
            let held = std::mem::take(&mut self.held);
            for (frame, at) in held {
                if let Err(e) = self.emit(fps, &frame, at) {
                    tracing::warn!(error = %e, "writing the y4m file failed");
                }
            }
        }
    }

    /// Repeats of the last frame written so far (freezes filled).
    pub fn repeats(&self) -> u64 {
        self.repeats
    }

    /// Measures the rate from the held frames and writes them.
    fn release_held(&mut self) -> Result<(), Error> {
        let times: Vec<WallTime> = self.held.iter().map(|(_, t)| *t).collect();
        let fps = measured_fps(&times).unwrap_or(FALLBACK_FPS);
        self.fps = Some(fps);
        for (frame, at) in std::mem::take(&mut self.held) {
            self.emit(fps, &frame, at)?;
        }
        Ok(())
    }

    fn emit(&mut self, fps: u32, frame: &I420Frame, shown_at: WallTime) -> Result<(), Error> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |e| Error::Io { path, source: e }
        };
        if !self.header_written {
            let header = format!(
                "{MAGIC} W{} H{} F{fps}:1 Ip A1:1 C420jpeg XMAGPIE_START={}\n",
                frame.width(),
                frame.height(),
                shown_at.as_micros()
            );
            let written = self.output.write_all(header.as_bytes());
            written.map_err(io(&self.path))?;
            self.header_written = true;
        }
        let interval = 1_000_000 / u64::from(fps);
        let (start, next) = *self.timeline.get_or_insert((shown_at, 0));
        let repeats = freeze_repeats(start, next, shown_at, fps);
        if let Some(last) = self.last.as_ref().filter(|_| repeats > 0) {
            for k in 0..repeats {
                let slot = start.plus(std::time::Duration::from_micros(interval * (next + k)));
                let line = format!("FRAME XMAGPIE_T={} XMAGPIE_REPEAT=1\n", slot.as_micros());
                let written = self
                    .output
                    .write_all(line.as_bytes())
                    .and_then(|()| self.output.write_all(last.as_bytes()));
                written.map_err(io(&self.path))?;
                self.repeats += 1;
            }
        }
        let written = writeln!(self.output, "FRAME XMAGPIE_T={}", shown_at.as_micros())
            .and_then(|()| self.output.write_all(frame.as_bytes()));
        written.map_err(io(&self.path))?;
        self.last = Some(frame.clone());
        self.timeline = Some((start, next + repeats + 1));
        Ok(())
    }

    /// Flushes buffered frames to disk (frames held to measure the rate are written at
    /// the rate their times give, or 30 fps with fewer than two).
    pub fn flush(&mut self) -> Result<(), Error> {
        if !self.held.is_empty() {
            self.release_held()?;
        }
        self.output.flush().map_err(|e| Error::Io {
            path: self.path.clone(),
            source: e,
        })
    }
}

/// How many repeats of the last frame go before a frame shown at `at`, on a timeline
/// that began at `start` and whose next slot is `next`: as many as bring the frame within
/// one slot of its show time. Frames shown a little late (jitter) are not repeated
/// before; a freeze is filled.
fn freeze_repeats(start: WallTime, next: u64, at: WallTime, fps: u32) -> u64 {
    let interval = 1_000_000 / i64::from(fps.max(1));
    let due = (at.micros_since(start) + interval / 2).div_euclid(interval);
    let lag = due - next as i64;
    let cap = i64::from(fps) * i64::from(MAX_FREEZE_SECS);
    (lag - 1).clamp(0, cap) as u64
}

/// The frame rate the show times give, in whole frames per second: the mean gap between
/// them (jitter averages out over the span), leaving out gaps over 2.5 median gaps (a
/// freeze says nothing of the rate); `None` with fewer than two distinct times.
fn measured_fps(times: &[WallTime]) -> Option<u32> {
    let mut gaps: Vec<i64> = times
        .windows(2)
        .map(|w| w[1].micros_since(w[0]))
        .filter(|&g| g > 0)
        .collect();
    gaps.sort_unstable();
    let median = *gaps.get(gaps.len() / 2)?;
    let kept: Vec<i64> = gaps.into_iter().filter(|&g| g * 2 <= median * 5).collect();
    let mean = kept.iter().sum::<i64>() as f64 / kept.len() as f64;
    Some((1e6 / mean).round().clamp(1.0, 240.0) as u32)
}

impl Drop for Y4mWriter {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::warn!(error = %e, "flushing the y4m file failed");
        }
    }
}

impl std::fmt::Debug for Y4mWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Y4mWriter")
            .field("path", &self.path)
            .field("fps", &self.fps)
            .field("size", &self.size)
            .field("repeats", &self.repeats)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> WallTime {
        WallTime::from_micros(1_000_000_000 + ms * 1000)
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("magpie-y4m-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    fn gray(luma: u8) -> I420Frame {
        let mut f = I420Frame::black(32, 16).unwrap();
        f.planes_mut().0.fill(luma);
        f
    }

    /// Reads a file back: its header rate, and each frame's first luma byte and time.
    fn read_back(path: &Path) -> (f32, Vec<(u8, u64)>) {
        let mut r = Y4mReader::open(path).unwrap();
        let mut frames = Vec::new();
        while let Some((f, t)) = r.next_frame().unwrap() {
            frames.push((f.y()[0], t.unwrap().as_micros()));
        }
        (r.fps(), frames)
    }

    #[test]
    fn a_freeze_is_filled_with_the_last_frame_at_the_nominal_rate() {
        let path = scratch("freeze.y4m");
        let mut w = Y4mWriter::create(&path, Some(25)).unwrap();
        for (k, ms) in [0, 40, 80].into_iter().enumerate() {
            w.write(&gray(k as u8), at(ms)).unwrap();
        }
        // 400 ms frozen: the frame shown at 80 ms stands for 120, 160, ... 400 ms, and
        // the next one takes the slot at 440 ms, within a slot of when it was shown.
        w.write(&gray(3), at(480)).unwrap();
        assert_eq!(w.repeats(), 8);
        drop(w);
        let (fps, frames) = read_back(&path);
        assert_eq!(fps, 25.0);
        assert_eq!(frames.len(), 12, "0.48 s at 25 fps");
        let lumas: Vec<u8> = frames.iter().map(|f| f.0).collect();
        assert_eq!(lumas, [0, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3]);
        assert_eq!(
            frames[3].1 - frames[2].1,
            40_000,
            "a repeat sits in its slot"
        );
    }

    #[test]
    fn jitter_neither_repeats_nor_drops_frames() {
        // Show times jittering by up to a frame around 25 fps: no repeats, one slot each.
        let path = scratch("jitter.y4m");
        let mut w = Y4mWriter::create(&path, Some(25)).unwrap();
        let mut t = 0;
        for k in 0..100u64 {
            let jitter = [0, 19, 36, 5, 30][k as usize % 5];
            w.write(&gray(k as u8), at(t + jitter)).unwrap();
            t += 40;
        }
        assert_eq!(w.repeats(), 0);
        assert_eq!(
            freeze_repeats(at(0), 2, at(61), 25),
            0,
            "a frame late by a slot"
        );
        assert_eq!(
            freeze_repeats(at(0), 2, at(141), 25),
            1,
            "one repeat, then its slot"
        );
        assert_eq!(freeze_repeats(at(100), 0, at(50), 25), 0, "time going back");
        let hours = at(100_000_000);
        assert_eq!(freeze_repeats(at(0), 1, hours, 30), 30 * 600, "capped");
    }

    #[test]
    fn without_a_given_rate_the_header_has_the_measured_one() {
        let path = scratch("measured.y4m");
        let mut w = Y4mWriter::create(&path, None).unwrap();
        // 1.2 s at 25 fps shown with up to 20 ms of jitter.
        let times: Vec<u64> = (0..30)
            .map(|k| k * 40 + [0, 19, 3, 14, 8][k as usize % 5])
            .collect();
        for (k, &ms) in times.iter().enumerate() {
            w.write(&gray(k as u8), at(ms)).unwrap();
        }
        drop(w);
        let (fps, frames) = read_back(&path);
        assert_eq!(fps, 25.0);
        assert_eq!(frames.len(), times.len());
        // Two frames are too few to measure from: written at the fallback rate.
        let short = scratch("short.y4m");
        let mut w = Y4mWriter::create(&short, None).unwrap();
        w.write(&gray(1), at(0)).unwrap();
        drop(w);
        assert_eq!(read_back(&short).0, FALLBACK_FPS as f32);
        assert_eq!(measured_fps(&[at(0), at(0)]), None);
        // A caller that knows the rate sets it before the frames are written.
        let told = scratch("told.y4m");
        let mut w = Y4mWriter::create(&told, None).unwrap();
        w.write(&gray(1), at(0)).unwrap();
        w.set_fps(24);
        w.write(&gray(2), at(42)).unwrap();
        drop(w);
        assert_eq!(
            read_back(&told),
            (24.0, vec![(1, 1_000_000_000), (2, 1_000_042_000)])
        );
    }
}
