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

/// Writes I420 frames to a Y4M file as they are shown.
pub struct Y4mWriter {
    output: BufWriter<File>,
    path: PathBuf,
    fps: u32,
    size: Option<(u32, u32)>,
}

impl Y4mWriter {
    /// Creates (truncates) `path`; the header waits for the first frame, which fixes the size.
    pub fn create(path: &Path, fps: u32) -> Result<Self, Error> {
        let file = File::create(path).map_err(|e| Error::Io {
            path: path.to_owned(),
            source: e,
        })?;
        Ok(Self {
            output: BufWriter::new(file),
            path: path.to_owned(),
            fps: fps.max(1),
            size: None,
        })
    }

    /// Appends a frame shown at `shown_at`. Every frame must have the first frame's size.
    pub fn write(&mut self, frame: &I420Frame, shown_at: WallTime) -> Result<(), Error> {
        let size = (frame.width(), frame.height());
        let io = |e| Error::Io {
            path: self.path.clone(),
            source: e,
        };
        match self.size {
            None => {
                let header = format!(
                    "{MAGIC} W{} H{} F{}:1 Ip A1:1 C420jpeg XMAGPIE_START={}\n",
                    size.0,
                    size.1,
                    self.fps,
                    shown_at.as_micros()
                );
                self.output.write_all(header.as_bytes()).map_err(io)?;
                self.size = Some(size);
            }
            Some(first) if first != size => {
                return Err(Error::Y4m {
                    path: self.path.clone(),
                    reason: "frame size changed mid-stream",
                });
            }
            Some(_) => {}
        }
        let io = |e| Error::Io {
            path: self.path.clone(),
            source: e,
        };
        writeln!(self.output, "FRAME XMAGPIE_T={}", shown_at.as_micros()).map_err(io)?;
        self.output.write_all(frame.as_bytes()).map_err(io)
    }

    /// Flushes buffered frames to disk.
    pub fn flush(&mut self) -> Result<(), Error> {
        self.output.flush().map_err(|e| Error::Io {
            path: self.path.clone(),
            source: e,
        })
    }
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
            .finish_non_exhaustive()
    }
}
