//! Where files record the wall-clock time of their first sample.
//!
//! - WAV (sink and source): a sidecar `PATH.timing.json` beside the file (the sidecar of a
//!   source is `PATH.source-timing.json`), holding a [`TimingRecord`].
//! - Y4M sink: in the stream header as `XMAGPIE_START=<µs since the Unix epoch>`, and on each
//!   frame header as `XMAGPIE_T=<µs>`, the time that frame was shown. Y4M readers ignore
//!   `X` parameters. A Y4M source writes the same sidecar as a WAV source.
//!
//! With the first-sample time of two files, the latency between them is the offset at which
//! their contents match plus the difference of their start times.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Error;
use super::wav::WavSource;
use super::y4m::Y4mReader;
use crate::codec::AudioChannels;
use crate::probe::{AudioMarkerDetector, Detection, MarkerSchedule, VideoMarkerDetector, WallTime};

/// The wall-clock facts of one media file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimingRecord {
    /// What the file is: `"audio"` or `"video"`.
    pub media: String,
    /// `"source"` (read and sent) or `"sink"` (received and played).
    pub role: String,
    /// When the first sample or frame was emitted (source) or played (sink), µs since epoch.
    pub first_sample_unix_us: u64,
    /// Samples per second (audio) or frames per second (video).
    pub rate: f64,
    /// Audio channels, when audio.
    pub channels: Option<u16>,
    /// The audio marker schedule of a synthetic source, when there is one.
    pub markers: Option<MarkerSchedule>,
}

impl TimingRecord {
    /// The first sample's wall-clock time.
    pub fn first_sample(&self) -> WallTime {
        WallTime::from_micros(self.first_sample_unix_us)
    }

    /// Writes the record as pretty JSON to `path`.
    pub fn write(&self, path: &Path) -> Result<(), Error> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| Error::Json {
            path: path.to_owned(),
            source: e,
        })?;
        std::fs::write(path, json).map_err(|e| Error::Io {
            path: path.to_owned(),
            source: e,
        })
    }

    /// Reads a record written by [`TimingRecord::write`].
    pub fn read(path: &Path) -> Result<Self, Error> {
        let bytes = std::fs::read(path).map_err(|e| Error::Io {
            path: path.to_owned(),
            source: e,
        })?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Json {
            path: path.to_owned(),
            source: e,
        })
    }
}

/// Finds the audio markers in a WAV recording made by a sink, using its sidecar for the
/// playout time of each sample, and the source's marker schedule for their emission.
pub fn measure_wav(path: &Path, schedule: MarkerSchedule) -> Result<Vec<Detection>, Error> {
    let start = TimingRecord::read(&sink_sidecar(path))?.first_sample();
    let mut source = WavSource::open(path, AudioChannels::Mono)?;
    let mut detector = AudioMarkerDetector::new(schedule, 1);
    let mut found = Vec::new();
    let mut played = 0u64;
    while let Some(block) = source.next_frame(960)? {
        let at = start.plus(std::time::Duration::from_micros(
            played * 1_000_000 / 48_000,
        ));
        found.extend(detector.push(&block, at));
        played += block.len() as u64;
    }
    Ok(found)
}

/// Finds the video markers in a Y4M recording made by a sink (each frame carries the time
/// it was shown, each `pattern` picture the time it was emitted).
pub fn measure_y4m(path: &Path) -> Result<Vec<Detection>, Error> {
    let mut reader = Y4mReader::open(path)?;
    let mut detector = VideoMarkerDetector::new();
    let mut found = Vec::new();
    while let Some((frame, shown)) = reader.next_frame()? {
        let Some(shown) = shown else { continue };
        found.extend(detector.push(&frame, shown));
    }
    Ok(found)
}

/// The sidecar of a sink file: `PATH.timing.json`.
pub fn sink_sidecar(media: &Path) -> PathBuf {
    suffixed(media, ".timing.json")
}

/// The sidecar of a source file: `PATH.source-timing.json`.
pub fn source_sidecar(media: &Path) -> PathBuf {
    suffixed(media, ".source-timing.json")
}

fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_json() {
        let dir = std::env::temp_dir().join(format!("magpie-timing-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let media = dir.join("out.wav");
        let record = TimingRecord {
            media: "audio".into(),
            role: "sink".into(),
            first_sample_unix_us: 1_763_000_000_000_000,
            rate: 48_000.0,
            channels: Some(1),
            markers: None,
        };
        record.write(&sink_sidecar(&media)).unwrap();
        assert_eq!(sink_sidecar(&media), dir.join("out.wav.timing.json"));
        assert_eq!(TimingRecord::read(&sink_sidecar(&media)).unwrap(), record);
        let err = TimingRecord::read(&dir.join("missing.json")).unwrap_err();
        assert!(err.to_string().contains("missing.json"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
