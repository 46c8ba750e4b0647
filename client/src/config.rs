//! Defaults a user keeps in a file, so that everyday commands stay short.
//!
//! The file is TOML at `$XDG_CONFIG_HOME/magpie/config.toml` (on Linux, usually
//! `~/.config/magpie/config.toml`), or wherever `--config`/`MAGPIE_CONFIG` points. A
//! flag given on the command line, or its `MAGPIE_*` environment variable, wins over
//! the file; the file wins over the built-in default. Every key is optional:
//!
//! ```toml
//! server = "magpie.example.org:7400"
//! user = "alice"
//! # Trust only servers whose certificate chains to this CA (default: the system's
//! # roots, else the certificate pinned in `known_servers` beside this file).
//! ca = "/etc/magpie/ca.pem"
//! # Plain TCP, no TLS: only for a server run with --plain.
//! plain = false
//!
//! [media]
//! audio_in = "mic"
//! audio_out = "speaker"
//! video_in = "camera:0"
//! video_out = "window"
//! width = 1280
//! height = 720
//! fps = 30
//! video_bitrate_kbps = 1500
//! opus_frame_ms = 20
//! nack = true
//! fec = true
//! delay_bwe = true
//! ```

use std::path::{Path, PathBuf};
use std::{fs, io};

use serde::Deserialize;

/// What the config file holds. Unknown keys are an error, so a typo does not pass
/// silently.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The signaling server, `HOST:PORT`.
    pub server: Option<String>,
    /// The user name to log in as.
    pub user: Option<String>,
    /// `--ca`: a PEM file of CA certificates to verify the server against.
    pub ca: Option<PathBuf>,
    /// `--plain` when true: talk to the server in plain TCP.
    pub plain: Option<bool>,
    /// Media defaults for `call`, `answer` and `demo`.
    #[serde(default)]
    pub media: MediaDefaults,
}

/// Media defaults from the config file; each is used when its flag is not given.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaDefaults {
    /// `--audio-in`.
    pub audio_in: Option<String>,
    /// `--audio-out`.
    pub audio_out: Option<String>,
    /// `--video-in`.
    pub video_in: Option<String>,
    /// `--video-out`.
    pub video_out: Option<String>,
    /// `--width`.
    pub width: Option<u32>,
    /// `--height`.
    pub height: Option<u32>,
    /// `--fps`.
    pub fps: Option<u32>,
    /// `--video-bitrate-kbps`.
    pub video_bitrate_kbps: Option<u32>,
    /// `--audio-bitrate-kbps`.
    pub audio_bitrate_kbps: Option<u32>,
    /// `--opus-frame-ms`.
    pub opus_frame_ms: Option<u32>,
    /// `--no-nack` when false.
    pub nack: Option<bool>,
    /// `--no-fec` when false.
    pub fec: Option<bool>,
    /// `--delay-bwe`.
    pub delay_bwe: Option<bool>,
}

/// A config file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file exists but cannot be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The file is not valid TOML, or has keys Magpie does not know.
    #[error("config file {path} is invalid")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and column.
        #[source]
        source: toml::de::Error,
    },
}

impl FileConfig {
    /// The default location: `<config dir>/magpie/config.toml`, if the platform has a
    /// config directory.
    pub fn default_path() -> Option<PathBuf> {
        dirs::config_dir().map(|dir| dir.join("magpie").join("config.toml"))
    }

    /// Loads `path`. A file that does not exist is an empty config when `required` is
    /// false (the default location), and an error when the user named it.
    pub fn load(path: &Path, required: bool) -> Result<Self, Error> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !required => {
                return Ok(Self::default());
            }
            Err(source) => {
                return Err(Error::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        Self::parse(&text).map_err(|source| Error::Parse {
            path: path.to_owned(),
            source,
        })
    }

    fn parse(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_optional() {
        assert_eq!(FileConfig::parse("").unwrap(), FileConfig::default());
    }

    #[test]
    fn the_documented_example_parses() {
        let example: String = include_str!("config.rs")
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| l.trim_start_matches("//!").trim_start())
            .collect::<Vec<_>>()
            .join("\n");
        let config = FileConfig::parse(&example).unwrap();
        assert_eq!(config.user.as_deref(), Some("alice"));
        assert_eq!(config.media.video_in.as_deref(), Some("camera:0"));
        assert_eq!(config.media.width, Some(1280));
        assert_eq!(config.media.fec, Some(true));
        assert_eq!(config.plain, Some(false));
        assert!(config.ca.is_some());
    }

    #[test]
    fn a_typo_is_an_error_that_names_the_key() {
        let err = FileConfig::parse("sever = \"x:1\"").unwrap_err();
        assert!(err.to_string().contains("sever"), "{err}");
    }

    #[test]
    fn a_missing_default_file_is_empty_but_a_named_one_is_an_error() {
        let dir = std::env::temp_dir().join(format!("magpie-config-test-{}", std::process::id()));
        let missing = dir.join("nope.toml");
        assert_eq!(
            FileConfig::load(&missing, false).unwrap(),
            FileConfig::default()
        );
        assert!(matches!(
            FileConfig::load(&missing, true),
            Err(Error::Read { .. })
        ));
    }

    #[test]
    fn a_file_on_disk_is_read() {
        let path = std::env::temp_dir().join(format!("magpie-config-{}.toml", std::process::id()));
        fs::write(
            &path,
            "server = \"127.0.0.1:7400\"\n[media]\nnack = false\n",
        )
        .unwrap();
        let config = FileConfig::load(&path, true).unwrap();
        fs::remove_file(&path).unwrap();
        assert_eq!(config.server.as_deref(), Some("127.0.0.1:7400"));
        assert_eq!(config.media.nack, Some(false));
    }
}
