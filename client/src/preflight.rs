//! Everything about a call's settings that can be checked before anyone's phone rings:
//! the settings themselves, `--sim`, the media socket, the sources and the sinks. The
//! caller runs it before inviting, the callee before it starts waiting, so a bad flag
//! is the user's own error at once rather than a dead call for the peer (issue 14, item 2).

use std::net::SocketAddr;
use std::str::FromStr;

use magpie_media::codec::{AudioChannels, FrameDuration};
use magpie_media::devices::{
    AudioCapture, AudioCaptureConfig, AudioPlayout, AudioSinkSpec, AudioSourceSpec, VideoCapture,
    VideoCaptureConfig, VideoSink, VideoSinkSpec, VideoSourceSpec,
};
use magpie_media::netsim::NetSimConfig;

use crate::cli::MediaSettings;
use crate::engine::Error;

/// Checks `settings`, `sim` and `bind` by using them: each source and sink is opened and
/// closed again, the socket bound and released. Opening a sink that writes a file creates
/// it (empty); the call truncates it when it starts.
pub fn check(settings: &MediaSettings, sim: Option<&str>, bind: SocketAddr) -> Result<(), Error> {
    settings.check()?;
    if let Some(sim) = sim {
        NetSimConfig::from_str(sim)?;
    }
    drop(std::net::UdpSocket::bind(bind).map_err(|source| Error::Bind { addr: bind, source })?);

    let channels = if settings.stereo {
        AudioChannels::Stereo
    } else {
        AudioChannels::Mono
    };
    let frame = if settings.opus_frame_ms == 10 {
        FrameDuration::Ms10
    } else {
        FrameDuration::Ms20
    };
    let audio_source = AudioSourceSpec::from_str(&settings.audio_in)?;
    let audio_sink = AudioSinkSpec::from_str(&settings.audio_out)?;
    let config = AudioCaptureConfig::default()
        .set_channels(channels)
        .set_frame(frame);
    drop(AudioCapture::open(&audio_source, &config).map_err(no_microphone(&audio_source))?);
    let playout = AudioPlayout::open(&audio_sink, channels, frame, |_, _| {});
    drop(playout.map_err(|e| sink_error("audio sink", &audio_sink, e))?);

    if settings.video_in == "none" {
        return Ok(());
    }
    let video_source = VideoSourceSpec::from_str(&settings.video_in)?;
    let video_sink = VideoSinkSpec::from_str(&settings.video_out)?;
    let config = VideoCaptureConfig::default()
        .set_resolution(settings.width, settings.height)
        .set_fps(settings.fps);
    drop(VideoCapture::open(&video_source, &config)?);
    let sink = VideoSink::open(&video_sink, Some(settings.fps));
    drop(sink.map_err(|e| sink_error("video sink", &video_sink, e))?);
    Ok(())
}

fn sink_error(
    what: &'static str,
    spec: &dyn std::fmt::Display,
    source: magpie_media::devices::Error,
) -> Error {
    Error::SinkOpen {
        what,
        spec: spec.to_string(),
        source: Box::new(source),
    }
}

/// A microphone that cannot open says what to use instead.
fn no_microphone(
    spec: &AudioSourceSpec,
) -> impl FnOnce(magpie_media::devices::Error) -> Error + use<> {
    let mic = matches!(spec, AudioSourceSpec::Mic(_));
    move |source| {
        if mic {
            Error::NoMicrophone(Box::new(source))
        } else {
            Error::Device(source)
        }
    }
}
