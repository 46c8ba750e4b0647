//! WAV files: a reader that converts any rate and channel count to 48 kHz (see
//! [`super::resample`]), and a 16-bit writer that records when its first sample played.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};

use hound::{SampleFormat, WavSpec};
use tracing::debug;

use super::Error;
use super::resample::{CHUNK, Resample, interleave, remix};
use super::timing::{TimingRecord, sink_sidecar};
use crate::codec::{AudioChannels, SAMPLE_RATE};
use crate::probe::WallTime;

/// Reads a WAV file of any rate, depth and channel count as 48 kHz `i16` frames.
pub struct WavSource {
    reader: hound::WavReader<BufReader<File>>,
    spec: WavSpec,
    channels: AudioChannels,
    resampler: Resample,
    ready: Vec<i16>,
    eof: bool,
    path: PathBuf,
    /// Frames read from the file and frames produced at 48 kHz, to trim the flush.
    frames_in: u64,
    frames_out: u64,
}

impl WavSource {
    /// Opens `path`, converting to `channels` at 48 kHz.
    pub fn open(path: &Path, channels: AudioChannels) -> Result<Self, Error> {
        let reader = hound::WavReader::open(path).map_err(|e| Error::Wav {
            path: path.to_owned(),
            source: e,
        })?;
        let spec = reader.spec();
        debug!(path = %path.display(), ?spec, "wav source");
        Ok(Self {
            reader,
            spec,
            channels,
            resampler: Resample::new(spec.sample_rate, SAMPLE_RATE, channels.count())?,
            ready: Vec::new(),
            eof: false,
            path: path.to_owned(),
            frames_in: 0,
            frames_out: 0,
        })
    }

    /// The file's own format.
    pub fn spec(&self) -> WavSpec {
        self.spec
    }

    /// The next `samples` per channel, interleaved; the last frame is padded with silence,
    /// and `None` follows it.
    pub fn next_frame(&mut self, samples: usize) -> Result<Option<Vec<i16>>, Error> {
        let want = samples * self.channels.count();
        while self.ready.len() < want && !self.eof {
            self.fill()?;
        }
        if self.ready.is_empty() {
            return Ok(None);
        }
        let mut frame: Vec<i16> = self.ready.drain(..want.min(self.ready.len())).collect();
        frame.resize(want, 0);
        Ok(Some(frame))
    }

    fn fill(&mut self) -> Result<(), Error> {
        let n = CHUNK * 4 * usize::from(self.spec.channels);
        let err = |e| Error::Wav {
            path: self.path.clone(),
            source: e,
        };
        let raw: Vec<f32> = match self.spec.sample_format {
            SampleFormat::Float => self
                .reader
                .samples::<f32>()
                .take(n)
                .collect::<Result<_, _>>()
                .map_err(err)?,
            SampleFormat::Int => {
                let scale = 2f32.powi(i32::from(self.spec.bits_per_sample) - 1);
                self.reader
                    .samples::<i32>()
                    .take(n)
                    .map(|s| s.map(|v| v as f32 / scale))
                    .collect::<Result<_, _>>()
                    .map_err(err)?
            }
        };
        let mut planar = remix(&raw, usize::from(self.spec.channels), self.channels.count());
        self.frames_in += planar[0].len() as u64;
        if raw.len() < n {
            self.eof = true;
            // Flush the resampler with silence as long as its delay; trimmed below.
            for p in &mut planar {
                p.extend(std::iter::repeat_n(0.0, CHUNK * 4));
            }
        }
        let mut out = self.resampler.push(&planar)?;
        let expected =
            (self.frames_in * u64::from(SAMPLE_RATE)).div_ceil(u64::from(self.spec.sample_rate));
        let keep = (expected.saturating_sub(self.frames_out) as usize).min(out[0].len());
        for p in &mut out {
            p.truncate(keep);
        }
        self.frames_out += keep as u64;
        interleave(&out, &mut self.ready);
        Ok(())
    }
}

impl std::fmt::Debug for WavSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WavSource")
            .field("path", &self.path)
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

/// Writes 16-bit 48 kHz WAV, and `PATH.timing.json` with the time the first sample played.
pub struct WavSink {
    writer: Option<hound::WavWriter<BufWriter<File>>>,
    path: PathBuf,
    channels: AudioChannels,
    started: bool,
}

impl WavSink {
    /// Creates (truncates) `path`.
    pub fn create(path: &Path, channels: AudioChannels) -> Result<Self, Error> {
        let spec = WavSpec {
            channels: channels.count() as u16,
            sample_rate: SAMPLE_RATE,
            bits_per_sample: 16,
            sample_format: SampleFormat::Int,
        };
        let writer = hound::WavWriter::create(path, spec).map_err(|e| Error::Wav {
            path: path.to_owned(),
            source: e,
        })?;
        Ok(Self {
            writer: Some(writer),
            path: path.to_owned(),
            channels,
            started: false,
        })
    }

    /// Appends what was played, first sample at `played_at`.
    pub fn write(&mut self, samples: &[i16], played_at: WallTime) -> Result<(), Error> {
        if !self.started {
            self.started = true;
            TimingRecord {
                media: "audio".into(),
                role: "sink".into(),
                first_sample_unix_us: played_at.as_micros(),
                rate: f64::from(SAMPLE_RATE),
                channels: Some(self.channels.count() as u16),
                markers: None,
            }
            .write(&sink_sidecar(&self.path))?;
        }
        let writer = self.writer.as_mut().ok_or(Error::Closed)?;
        for &s in samples {
            writer.write_sample(s).map_err(|e| Error::Wav {
                path: self.path.clone(),
                source: e,
            })?;
        }
        Ok(())
    }

    /// Finishes the file (fixes up the header); also done on drop.
    pub fn finish(&mut self) -> Result<(), Error> {
        if let Some(writer) = self.writer.take() {
            writer.finalize().map_err(|e| Error::Wav {
                path: self.path.clone(),
                source: e,
            })?;
        }
        Ok(())
    }
}

impl Drop for WavSink {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            tracing::warn!(error = %e, "finishing the wav file failed");
        }
    }
}

impl std::fmt::Debug for WavSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WavSink")
            .field("path", &self.path)
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}
