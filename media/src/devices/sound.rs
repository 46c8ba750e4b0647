//! Microphones and speakers through `cpal`.

use std::sync::Arc;

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{FromSample, Sample, SampleFormat, SizedSample, StreamConfig};
use tracing::{debug, warn};

use super::queue::DropOldestQueue;
use super::wav::{To48k, interleave, remix};
use super::{AudioFrame, Error};
use crate::codec::{AudioChannels, FrameDuration, SAMPLE_RATE};
use crate::probe::WallTime;

/// The host's audio inputs (or outputs) as (id, name): the id is what `mic:ID` and
/// `speaker:ID` take most reliably; the name matches too.
pub(crate) fn names(inputs: bool) -> Result<Vec<(String, String)>, Error> {
    Ok(devices(inputs)?
        .iter()
        .map(|d| (device_id(d), device_name(d)))
        .collect())
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
    let device = find(true, name)?;
    let config = device.default_input_config().map_err(Error::audio)?;
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
    stream.play().map_err(Error::audio)?;
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
        .map_err(Error::audio)
}

/// Cuts device audio into 48 kHz frames and queues them, in the capture callback.
struct Framer {
    device_channels: usize,
    channels: AudioChannels,
    frame_len: usize,
    resampler: To48k,
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
            resampler: To48k::new(config.sample_rate, channels.count())?,
            pending: Vec::new(),
            queue,
        })
    }

    fn push(&mut self, interleaved: &[f32]) {
        let planar = remix(interleaved, self.device_channels, self.channels);
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
pub(crate) fn open_speaker<F>(
    name: Option<&str>,
    channels: AudioChannels,
    pull: F,
) -> Result<cpal::Stream, Error>
where
    F: FnMut(&mut [i16], WallTime) + Send + 'static,
{
    let device = find(false, name)?;
    let wanted = channels.count() as u16;
    let supported = device
        .supported_output_configs()
        .map_err(Error::audio)?
        .filter(|c| {
            c.channels() == wanted
                && c.min_sample_rate() <= SAMPLE_RATE
                && SAMPLE_RATE <= c.max_sample_rate()
        })
        .map(|c| c.sample_format())
        .collect::<Vec<_>>();
    let format = [SampleFormat::I16, SampleFormat::F32]
        .into_iter()
        .find(|f| supported.contains(f))
        .ok_or_else(|| Error::UnsupportedFormat {
            device: device_name(&device),
            format: format!("48 kHz, {wanted} channel(s), i16 or f32"),
        })?;
    let config = StreamConfig {
        channels: wanted,
        sample_rate: SAMPLE_RATE,
        buffer_size: cpal::BufferSize::Default,
    };
    debug!(device = %device_name(&device), ?config, ?format, "opening speaker");
    let stream = match format {
        SampleFormat::I16 => build_output::<i16, F>(&device, &config, pull),
        _ => build_output::<f32, F>(&device, &config, pull),
    }?;
    stream.play().map_err(Error::audio)?;
    Ok(stream)
}

fn build_output<T, F>(
    device: &cpal::Device,
    config: &StreamConfig,
    mut pull: F,
) -> Result<cpal::Stream, Error>
where
    T: SizedSample + FromSample<i16> + Send + 'static,
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
                scratch.resize(data.len(), 0i16);
                pull(&mut scratch, WallTime::now().plus(ahead));
                for (d, &s) in data.iter_mut().zip(&scratch) {
                    *d = T::from_sample(s);
                }
            },
            |e| warn!(error = %e, "speaker stream error"),
            None,
        )
        .map_err(Error::audio)
}
