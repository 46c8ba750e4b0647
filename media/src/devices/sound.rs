//! Microphones and speakers through `cpal`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{FromSample, Sample, SampleFormat, SizedSample, StreamConfig};
use tracing::{debug, warn};

use super::queue::DropOldestQueue;
use super::resample::{CHUNK, Resample, interleave, remix};
use super::{AudioFrame, Error};
use crate::codec::{AudioChannels, FrameDuration, SAMPLE_RATE};
use crate::probe::WallTime;

/// The host's audio inputs (or outputs) as (id, name): the id is what `mic:ID` and
/// `speaker:ID` take most reliably; the name matches too.
pub(crate) fn names(inputs: bool) -> Result<Vec<(String, String)>, Error> {
    library_messages(|| {
        Ok(devices(inputs)?
            .iter()
            .map(|d| (device_id(d), device_name(d)))
            .collect())
    })
}

/// Runs `f` with what alsa-lib prints (on a machine without a sound card, eight lines of
/// `ALSA lib confmisc.c ...` for every device opened) logged through `tracing` at info
/// level, shown with `-v`, instead of written over the terminal.
#[cfg(target_os = "linux")]
fn library_messages<T>(f: impl FnOnce() -> T) -> T {
    // The handler is alsa-lib's thread-local one: this thread's calls in `f` use it.
    let Ok(buffer) = alsa::Output::local_error_handler() else {
        return f();
    };
    let out = f();
    let text = buffer.borrow().to_string();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        tracing::info!(target: "alsa", "{line}");
    }
    out
}

#[cfg(not(target_os = "linux"))]
fn library_messages<T>(f: impl FnOnce() -> T) -> T {
    f()
}

/// The host's real devices: ALSA's `null` plugin, which discards everything, is left out.
fn devices(inputs: bool) -> Result<Vec<cpal::Device>, Error> {
    let host = cpal::default_host();
    let all: Vec<cpal::Device> = if inputs {
        host.input_devices().map_err(Error::audio)?.collect()
    } else {
        host.output_devices().map_err(Error::audio)?.collect()
    };
    Ok(all.into_iter().filter(|d| device_id(d) != "null").collect())
}

fn device_id(device: &cpal::Device) -> String {
    device.id().map(|id| id.id().to_owned()).unwrap_or_default()
}

impl Error {
    /// A device that exists but failed: busy, unplugged mid-call, no permission.
    fn device(device: &cpal::Device, e: impl Into<cpal::Error>) -> Self {
        Self::AudioDevice {
            device: device_name(device),
            source: e.into(),
        }
    }
}

fn device_name(device: &cpal::Device) -> String {
    device
        .description()
        .map(|d| d.name().to_owned())
        .unwrap_or_else(|_| device.to_string())
}

fn find(inputs: bool, name: Option<&str>) -> Result<cpal::Device, Error> {
    let host = cpal::default_host();
    let what = if inputs {
        "audio input"
    } else {
        "audio output"
    };
    let missing = || Error::NoSuchDevice {
        what,
        name: name.unwrap_or("default").to_owned(),
    };
    let Some(name) = name else {
        let default = if inputs {
            host.default_input_device()
        } else {
            host.default_output_device()
        };
        return default.ok_or_else(missing);
    };
    let mut devices = devices(inputs)?;
    let lower = name.to_lowercase();
    let position = devices
        .iter()
        .position(|d| device_id(d) == name || device_name(d) == name)
        .or_else(|| {
            devices
                .iter()
                .position(|d| device_name(d).to_lowercase().contains(&lower))
        });
    position.map(|i| devices.swap_remove(i)).ok_or_else(missing)
}

/// Starts capturing from a microphone into `queue`, as 48 kHz frames.
pub(crate) fn open_mic(
    name: Option<&str>,
    channels: AudioChannels,
    frame: FrameDuration,
    queue: Arc<DropOldestQueue<AudioFrame>>,
) -> Result<cpal::Stream, Error> {
    library_messages(|| open_mic_loudly(name, channels, frame, queue))
}

fn open_mic_loudly(
    name: Option<&str>,
    channels: AudioChannels,
    frame: FrameDuration,
    queue: Arc<DropOldestQueue<AudioFrame>>,
) -> Result<cpal::Stream, Error> {
    let device = find(true, name)?;
    let config = device
        .default_input_config()
        .map_err(|e| Error::device(&device, e))?;
    let format = config.sample_format();
    let config: StreamConfig = config.config();
    debug!(device = %device_name(&device), ?config, ?format, "opening microphone");
    let framer = Framer::new(&config, channels, frame, queue)?;
    let stream = match format {
        SampleFormat::F32 => build_input::<f32>(&device, &config, framer),
        SampleFormat::I16 => build_input::<i16>(&device, &config, framer),
        SampleFormat::I32 => build_input::<i32>(&device, &config, framer),
        SampleFormat::U16 => build_input::<u16>(&device, &config, framer),
        other => {
            return Err(Error::UnsupportedFormat {
                device: device_name(&device),
                format: format!("{other:?}"),
            });
        }
    }?;
    stream.play().map_err(|e| Error::device(&device, e))?;
    Ok(stream)
}

fn build_input<T>(
    device: &cpal::Device,
    config: &StreamConfig,
    mut framer: Framer,
) -> Result<cpal::Stream, Error>
where
    T: SizedSample + Send + 'static,
    f32: FromSample<T>,
{
    let mut scratch = Vec::new();
    device
        .build_input_stream::<T, _, _>(
            *config,
            move |data: &[T], _| {
                scratch.clear();
                scratch.extend(data.iter().map(|&s| f32::from_sample(s)));
                framer.push(&scratch);
            },
            |e| warn!(error = %e, "microphone stream error"),
            None,
        )
        .map_err(|e| Error::device(device, e))
}

/// Cuts device audio into 48 kHz frames and queues them, in the capture callback.
struct Framer {
    device_channels: usize,
    channels: AudioChannels,
    frame_len: usize,
    resampler: Resample,
    pending: Vec<i16>,
    queue: Arc<DropOldestQueue<AudioFrame>>,
}

impl Framer {
    fn new(
        config: &StreamConfig,
        channels: AudioChannels,
        frame: FrameDuration,
        queue: Arc<DropOldestQueue<AudioFrame>>,
    ) -> Result<Self, Error> {
        Ok(Self {
            device_channels: usize::from(config.channels),
            channels,
            frame_len: frame.samples() * channels.count(),
            resampler: Resample::new(config.sample_rate, SAMPLE_RATE, channels.count())?,
            pending: Vec::new(),
            queue,
        })
    }

    fn push(&mut self, interleaved: &[f32]) {
        let planar = remix(interleaved, self.device_channels, self.channels.count());
        match self.resampler.push(&planar) {
            Ok(out) => interleave(&out, &mut self.pending),
            Err(e) => warn!(error = %e, "microphone resampling failed"),
        }
        let now = WallTime::now();
        while self.pending.len() >= self.frame_len {
            // The frame's first sample was captured as long ago as the samples queued
            // behind it take to play.
            let behind = (self.pending.len() / self.channels.count()) as u64;
            let captured_at = WallTime::from_micros(
                now.as_micros()
                    .saturating_sub(behind * 1_000_000 / u64::from(SAMPLE_RATE)),
            );
            let samples: Vec<i16> = self.pending.drain(..self.frame_len).collect();
            self.queue.push(AudioFrame {
                samples,
                captured_at,
            });
        }
    }
}

/// Plays to a speaker: the device's callback pulls `pull(buf, played_at)` at its own pace.
///
/// The receiver always deals in 48 kHz frames of its own channel count; when the device
/// cannot take that, the callback converts to the device's own rate and channels.
pub(crate) fn open_speaker<F>(
    name: Option<&str>,
    channels: AudioChannels,
    pull: F,
) -> Result<cpal::Stream, Error>
where
    F: FnMut(&mut [i16], WallTime) + Send + 'static,
{
    library_messages(|| open_speaker_loudly(name, channels, pull))
}

fn open_speaker_loudly<F>(
    name: Option<&str>,
    channels: AudioChannels,
    pull: F,
) -> Result<cpal::Stream, Error>
where
    F: FnMut(&mut [i16], WallTime) + Send + 'static,
{
    let device = find(false, name)?;
    let wanted = channels.count() as u16;
    let native = device
        .supported_output_configs()
        .map_err(|e| Error::device(&device, e))?
        .filter(|c| {
            c.channels() == wanted
                && c.min_sample_rate() <= SAMPLE_RATE
                && SAMPLE_RATE <= c.max_sample_rate()
        })
        .map(|c| c.sample_format())
        .collect::<Vec<_>>();
    let (config, format) = match [SampleFormat::F32, SampleFormat::I16]
        .into_iter()
        .find(|f| native.contains(f))
    {
        Some(format) => {
            let config = StreamConfig {
                channels: wanted,
                sample_rate: SAMPLE_RATE,
                buffer_size: cpal::BufferSize::Default,
            };
            (config, format)
        }
        None => {
            let default = device
                .default_output_config()
                .map_err(|e| Error::device(&device, e))?;
            (default.config(), default.sample_format())
        }
    };
    debug!(device = %device_name(&device), ?config, ?format, "opening speaker");
    let feeder = Feeder::new(pull, channels.count(), &config)?;
    let stream = match format {
        SampleFormat::F32 => build_output::<f32, F>(&device, &config, feeder),
        SampleFormat::I16 => build_output::<i16, F>(&device, &config, feeder),
        SampleFormat::I32 => build_output::<i32, F>(&device, &config, feeder),
        other => {
            return Err(Error::UnsupportedFormat {
                device: device_name(&device),
                format: format!("{other:?}"),
            });
        }
    }?;
    stream.play().map_err(|e| Error::device(&device, e))?;
    Ok(stream)
}

fn build_output<T, F>(
    device: &cpal::Device,
    config: &StreamConfig,
    mut feeder: Feeder<F>,
) -> Result<cpal::Stream, Error>
where
    T: SizedSample + FromSample<f32> + Send + 'static,
    F: FnMut(&mut [i16], WallTime) + Send + 'static,
{
    let mut scratch = Vec::new();
    device
        .build_output_stream::<T, _, _>(
            *config,
            move |data: &mut [T], info| {
                let ts = info.timestamp();
                let ahead = ts.playback.saturating_duration_since(ts.callback);
                scratch.clear();
                scratch.resize(data.len(), 0.0f32);
                feeder.fill(&mut scratch, WallTime::now().plus(ahead));
                for (d, &s) in data.iter_mut().zip(&scratch) {
                    *d = T::from_sample(s);
                }
            },
            |e| warn!(error = %e, "speaker stream error"),
            None,
        )
        .map_err(|e| Error::device(device, e))
}

/// Pulls 10 ms blocks of 48 kHz audio from the receiver and converts them to what the
/// device plays, keeping track of when each block's first sample will be heard.
struct Feeder<F> {
    pull: F,
    channels: usize,
    device_channels: usize,
    device_rate: u32,
    resample: Resample,
    block: Vec<i16>,
    /// Converted samples (interleaved, device channels) not yet handed to the device.
    ready: VecDeque<f32>,
    /// 48 kHz frames pulled so far, and device frames handed to the device so far.
    pulled: u64,
    played: u64,
}

impl<F: FnMut(&mut [i16], WallTime)> Feeder<F> {
    fn new(pull: F, channels: usize, config: &StreamConfig) -> Result<Self, Error> {
        Ok(Self {
            pull,
            channels,
            device_channels: usize::from(config.channels).max(1),
            device_rate: config.sample_rate,
            resample: Resample::new(SAMPLE_RATE, config.sample_rate, channels)?,
            block: vec![0; CHUNK * channels],
            ready: VecDeque::new(),
            pulled: 0,
            played: 0,
        })
    }

    /// Fills one device buffer; `out[0]` is heard at `out_at`.
    fn fill(&mut self, out: &mut [f32], out_at: WallTime) {
        while self.ready.len() < out.len() {
            // The block's first sample lands at this device frame, heard this much later
            // than `out[0]`.
            let lands = self.pulled * u64::from(self.device_rate) / u64::from(SAMPLE_RATE);
            let later = lands.saturating_sub(self.played) * 1_000_000 / u64::from(self.device_rate);
            self.block.fill(0);
            (self.pull)(&mut self.block, out_at.plus(Duration::from_micros(later)));
            self.pulled += CHUNK as u64;
            let as_f32: Vec<f32> = self.block.iter().map(|&s| f32::from(s) / 32768.0).collect();
            let planar = remix(&as_f32, self.channels, self.channels);
            match self.resample.push(&planar) {
                Ok(converted) => {
                    let frames = converted.first().map_or(0, Vec::len);
                    let (ours, theirs) = (self.channels, self.device_channels);
                    let samples =
                        (0..frames * theirs).map(|k| converted[(k % theirs) % ours][k / theirs]);
                    self.ready.extend(samples);
                }
                Err(e) => {
                    warn!(error = %e, "speaker resampling failed");
                    break;
                }
            }
        }
        for slot in out.iter_mut() {
            *slot = self.ready.pop_front().unwrap_or(0.0);
        }
        self.played += (out.len() / self.device_channels) as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feeder_converts_to_the_device_and_dates_each_block() {
        let config = StreamConfig {
            channels: 2,
            sample_rate: 44_100,
            buffer_size: cpal::BufferSize::Default,
        };
        let times = Arc::new(std::sync::Mutex::new(Vec::new()));
        let t = times.clone();
        let pull = move |buf: &mut [i16], at: WallTime| {
            buf.fill(8_000);
            t.lock().unwrap().push(at.as_micros());
        };
        let mut feeder = Feeder::new(pull, 1, &config).unwrap();
        let start = WallTime::from_micros(1_000_000);
        let mut out = vec![0.0f32; 2 * 441];
        for i in 0..20u64 {
            feeder.fill(&mut out, start.plus(Duration::from_millis(10 * i)));
        }
        // Both device channels carry the mono signal once the resampler has filled up.
        assert!((out[0] - 8_000.0 / 32768.0).abs() < 0.01 && out[0] == out[1]);
        // Block k of 10 ms is heard 10·k ms after the first: the dates follow the device.
        let times = times.lock().unwrap();
        for (k, &at) in times.iter().enumerate() {
            let expected = 1_000_000 + 10_000 * k as u64;
            assert!(
                at.abs_diff(expected) <= 100,
                "block {k}: {at} vs {expected}"
            );
        }
    }
}
