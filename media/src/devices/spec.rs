//! Short source and sink names, as the client's flags take them, parsed into closed enums.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use super::Error;

/// Where call audio comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioSourceSpec {
    /// `tone`: a 440 Hz tone carrying timing markers.
    Tone,
    /// `wav:PATH`: a WAV file of any rate and channel count, converted to 48 kHz.
    Wav(PathBuf),
    /// `mic` or `mic:NAME`: the default or a named capture device.
    Mic(Option<String>),
}

/// Where call video comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoSourceSpec {
    /// `pattern`: a moving test pattern carrying frame numbers and timing markers.
    Pattern,
    /// `y4m:PATH`: a YUV4MPEG2 file (4:2:0).
    Y4m(PathBuf),
    /// `camera` or `camera:INDEX`: the first or a numbered camera.
    Camera(Option<u32>),
}

/// Where received audio goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioSinkSpec {
    /// `speaker` or `speaker:NAME`: the default or a named output device.
    Speaker(Option<String>),
    /// `wav:PATH`: a 16-bit WAV recording of exactly what was played.
    Wav(PathBuf),
    /// `null`: played into nothing, at the pace of a device.
    Null,
}

/// Where received video goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoSinkSpec {
    /// `window`: a desktop window (X11, or Wayland through XWayland or natively).
    Window,
    /// `y4m:PATH`: a YUV4MPEG2 recording of exactly what was shown.
    Y4m(PathBuf),
    /// `null`: shown to nobody.
    Null,
}

/// Splits `kind:arg`; the argument may itself contain colons (paths, device names).
fn split(spec: &str) -> (&str, Option<&str>) {
    match spec.split_once(':') {
        Some((kind, arg)) => (kind, Some(arg)),
        None => (spec, None),
    }
}

fn bad(what: &'static str, spec: &str, expected: &'static str) -> Error {
    Error::BadSpec {
        what,
        spec: spec.to_owned(),
        expected,
    }
}

fn path(
    what: &'static str,
    spec: &str,
    arg: Option<&str>,
    expected: &'static str,
) -> Result<PathBuf, Error> {
    match arg {
        Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
        _ => Err(bad(what, spec, expected)),
    }
}

fn name(
    what: &'static str,
    spec: &str,
    arg: Option<&str>,
    expected: &'static str,
) -> Result<Option<String>, Error> {
    match arg {
        None => Ok(None),
        Some("") => Err(bad(what, spec, expected)),
        Some(n) => Ok(Some(n.to_owned())),
    }
}

const AUDIO_SOURCES: &str = "tone, wav:PATH, mic or mic:NAME";
const VIDEO_SOURCES: &str = "pattern, y4m:PATH, camera or camera:INDEX";
const AUDIO_SINKS: &str = "speaker or speaker:NAME, wav:PATH, null";
const VIDEO_SINKS: &str = "window, y4m:PATH, null";

impl FromStr for AudioSourceSpec {
    type Err = Error;

    fn from_str(spec: &str) -> Result<Self, Error> {
        const WHAT: &str = "audio source";
        match split(spec) {
            ("tone", None) => Ok(Self::Tone),
            ("wav", arg) => Ok(Self::Wav(path(WHAT, spec, arg, AUDIO_SOURCES)?)),
            ("mic", arg) => Ok(Self::Mic(name(WHAT, spec, arg, AUDIO_SOURCES)?)),
            _ => Err(bad(WHAT, spec, AUDIO_SOURCES)),
        }
    }
}

impl FromStr for VideoSourceSpec {
    type Err = Error;

    fn from_str(spec: &str) -> Result<Self, Error> {
        const WHAT: &str = "video source";
        match split(spec) {
            ("pattern", None) => Ok(Self::Pattern),
            ("y4m", arg) => Ok(Self::Y4m(path(WHAT, spec, arg, VIDEO_SOURCES)?)),
            ("camera", None) => Ok(Self::Camera(None)),
            ("camera", Some(index)) => index
                .parse()
                .map(|i| Self::Camera(Some(i)))
                .map_err(|_| bad(WHAT, spec, VIDEO_SOURCES)),
            _ => Err(bad(WHAT, spec, VIDEO_SOURCES)),
        }
    }
}

impl FromStr for AudioSinkSpec {
    type Err = Error;

    fn from_str(spec: &str) -> Result<Self, Error> {
        const WHAT: &str = "audio sink";
        match split(spec) {
            ("speaker", arg) => Ok(Self::Speaker(name(WHAT, spec, arg, AUDIO_SINKS)?)),
            ("wav", arg) => Ok(Self::Wav(path(WHAT, spec, arg, AUDIO_SINKS)?)),
            ("null", None) => Ok(Self::Null),
            _ => Err(bad(WHAT, spec, AUDIO_SINKS)),
        }
    }
}

impl FromStr for VideoSinkSpec {
    type Err = Error;

    fn from_str(spec: &str) -> Result<Self, Error> {
        const WHAT: &str = "video sink";
        match split(spec) {
            ("window", None) => Ok(Self::Window),
            ("y4m", arg) => Ok(Self::Y4m(path(WHAT, spec, arg, VIDEO_SINKS)?)),
            ("null", None) => Ok(Self::Null),
            _ => Err(bad(WHAT, spec, VIDEO_SINKS)),
        }
    }
}

fn opt(f: &mut fmt::Formatter<'_>, kind: &str, arg: Option<&dyn fmt::Display>) -> fmt::Result {
    match arg {
        Some(a) => write!(f, "{kind}:{a}"),
        None => f.write_str(kind),
    }
}

impl fmt::Display for AudioSourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tone => f.write_str("tone"),
            Self::Wav(p) => write!(f, "wav:{}", p.display()),
            Self::Mic(n) => opt(f, "mic", n.as_ref().map(|n| n as &dyn fmt::Display)),
        }
    }
}

impl fmt::Display for VideoSourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pattern => f.write_str("pattern"),
            Self::Y4m(p) => write!(f, "y4m:{}", p.display()),
            Self::Camera(i) => opt(f, "camera", i.as_ref().map(|i| i as &dyn fmt::Display)),
        }
    }
}

impl fmt::Display for AudioSinkSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Speaker(n) => opt(f, "speaker", n.as_ref().map(|n| n as &dyn fmt::Display)),
            Self::Wav(p) => write!(f, "wav:{}", p.display()),
            Self::Null => f.write_str("null"),
        }
    }
}

impl fmt::Display for VideoSinkSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Window => f.write_str("window"),
            Self::Y4m(p) => write!(f, "y4m:{}", p.display()),
            Self::Null => f.write_str("null"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_form_parses_and_prints_back() {
        for s in ["tone", "wav:/tmp/a b.wav", "mic", "mic:USB Audio: hw:1,0"] {
            assert_eq!(s.parse::<AudioSourceSpec>().unwrap().to_string(), s);
        }
        for s in ["pattern", "y4m:in.y4m", "camera", "camera:2"] {
            assert_eq!(s.parse::<VideoSourceSpec>().unwrap().to_string(), s);
        }
        for s in ["speaker", "speaker:HDMI", "wav:out.wav", "null"] {
            assert_eq!(s.parse::<AudioSinkSpec>().unwrap().to_string(), s);
        }
        for s in ["window", "y4m:out.y4m", "null"] {
            assert_eq!(s.parse::<VideoSinkSpec>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn device_names_keep_their_colons() {
        let spec: AudioSourceSpec = "mic:hw:CARD=USB,DEV=0".parse().unwrap();
        assert_eq!(spec, AudioSourceSpec::Mic(Some("hw:CARD=USB,DEV=0".into())));
    }

    #[test]
    fn bad_specs_name_the_input_and_the_choices() {
        for s in ["", "tone:x", "wav", "wav:", "mic:", "speaker"] {
            let err = s.parse::<AudioSourceSpec>().unwrap_err().to_string();
            assert!(
                err.contains(&format!("{s:?}")) && err.contains("wav:PATH"),
                "{err}"
            );
        }
        assert!("camera:front".parse::<VideoSourceSpec>().is_err());
        assert!("window:2".parse::<VideoSinkSpec>().is_err());
        assert!("null:x".parse::<AudioSinkSpec>().is_err());
        assert!("tone".parse::<AudioSinkSpec>().is_err());
    }
}
