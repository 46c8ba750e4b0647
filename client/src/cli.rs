//! The command line of `magpie`: every command, every flag, with examples in `--help`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{FileConfig, MediaDefaults};

/// Magpie: low-latency audio/video calls that hold up on bad networks.
#[derive(Debug, Parser)]
#[command(name = "magpie", version, propagate_version = true)]
#[command(after_help = "Examples:
  magpie --server chat.example.org:7400 --user alice register
  magpie -s chat.example.org:7400 -u alice who
  MAGPIE_PASSWORD=secret magpie --user alice call bob
  magpie --user bob answer --auto-answer --audio-out wav:heard.wav --video-out y4m:seen.y4m
  magpie demo --sim loss=10%,delay=25ms --duration 20")]
pub struct Cli {
    /// The signaling server, HOST:PORT [default: 127.0.0.1:7400].
    #[arg(short, long, env = "MAGPIE_SERVER", global = true)]
    pub server: Option<String>,
    /// The user to log in as.
    #[arg(short, long, env = "MAGPIE_USER", global = true)]
    pub user: Option<String>,
    /// Say more: -v shows what the media libraries report, -vv debugging detail
    /// (RUST_LOG, when set, wins).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// The config file [default: <config dir>/magpie/config.toml]. Servers' pinned TLS
    /// fingerprints are kept in `known_servers` beside it.
    #[arg(long, env = "MAGPIE_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Verify the server's TLS certificate against the CA certificates in this PEM file
    /// [default: the system's roots, else the fingerprint pinned on first connection].
    #[arg(long, env = "MAGPIE_CA", value_name = "PEM", global = true)]
    pub ca: Option<PathBuf>,
    /// Talk to the server in plain TCP, without TLS (only for a server run with --plain).
    #[arg(long, env = "MAGPIE_PLAIN", global = true, conflicts_with = "ca")]
    pub plain: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create an account on the server (the password comes from MAGPIE_PASSWORD or a prompt).
    #[command(after_help = "Example:\n  MAGPIE_PASSWORD=secret magpie --user alice register")]
    Register,
    /// Call a user and talk until Ctrl-C, a hangup or --duration. NAME@lan calls NAME on
    /// the LAN, with no server (see `magpie lan`).
    #[command(after_help = "Examples:
  magpie --user alice call bob
  magpie --user alice call bob@lan          (no server: bob runs `magpie answer --lan`)
  magpie --user alice call bob --audio-in tone --video-in pattern --duration 30 \\
      --stats-json alice.json --sim loss=5%")]
    Call {
        /// Who to call.
        callee: String,
        /// Media and call options.
        #[command(flatten)]
        call: CallArgs,
    },
    /// Wait for calls; ask before taking one, or take it at once with --auto-answer.
    /// With --lan, wait for calls on the LAN, with no server: announce yourself by mDNS.
    #[command(after_help = "Examples:
  magpie --user bob answer --auto-answer --video-out window
  magpie --user bob answer --lan              (no server: people on the LAN call bob@lan)")]
    Answer {
        /// Wait for calls from the LAN instead of the server: announce this user by mDNS
        /// (`_magpie._udp.local`) and take calls on a direct control listener.
        #[arg(long)]
        lan: bool,
        /// With --lan, the direct control listener's address [default: 0.0.0.0:0, every
        /// interface, a free port].
        #[arg(long, value_name = "ADDR:PORT", requires = "lan")]
        lan_listen: Option<SocketAddr>,
        /// Take incoming calls without asking.
        #[arg(long)]
        auto_answer: bool,
        /// Answer one call, then exit with its outcome (for scripts); otherwise wait for
        /// the next call, and log in again when the server restarts.
        #[arg(long)]
        once: bool,
        /// Media and call options.
        #[command(flatten)]
        call: CallArgs,
        /// What to do with files offered meanwhile.
        #[command(flatten)]
        receive: ReceiveArgs,
    },
    /// Send a message; with no USER and TEXT, chat interactively and show what arrives.
    #[command(after_help = "Examples:
  magpie --user alice chat bob 'are you free at six?'
  magpie --user alice chat            (interactive: type 'bob: hello', Ctrl-D to leave)")]
    Chat {
        /// Who to write to.
        to: Option<String>,
        /// What to say.
        text: Option<String>,
    },
    /// Send files to a user, peer to peer (QUIC over the path the checks select); to a
    /// user who is offline, leave them on the server (up to its size limit) for their
    /// next login.
    #[command(after_help = "Examples:
  magpie --user alice send bob photo.jpg notes.pdf
  magpie --user alice send bob big.iso        (run it again after a drop: it resumes)
  magpie --user alice send bob photo.jpg      (bob offline: left on the server for him)")]
    Send {
        /// Who to send to.
        to: String,
        /// The files.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// When the receiver is offline, fail instead of leaving the files on the server.
        #[arg(long)]
        no_leave: bool,
        /// Transfer options.
        #[command(flatten)]
        transfer: TransferArgs,
        /// Sending on the LAN (TO@lan).
        #[command(flatten)]
        lan: LanArgs,
    },
    /// Wait for files; show each offer (name, size, type) and ask before taking it. Files
    /// left on the server while you were offline come first.
    #[command(after_help = "Examples:
  magpie --user bob receive --to ~/Downloads
  magpie --user bob receive --to inbox --yes --once     (scripts: take the next offer)")]
    Receive {
        /// Options of the receiving side.
        #[command(flatten)]
        receive: ReceiveArgs,
        /// Receive one offer, then exit with its outcome.
        #[arg(long)]
        once: bool,
        /// Transfer options.
        #[command(flatten)]
        transfer: TransferArgs,
    },
    /// List the users online now.
    #[command(after_help = "Example:\n  magpie -u alice who")]
    Who,
    /// Show your recent calls, missed ones included.
    #[command(after_help = "Example:\n  magpie --user alice history --limit 50")]
    History {
        /// How many calls to show.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// List the people on the LAN who wait for calls (`magpie answer --lan`): name,
    /// address, port, key fingerprint, and whether you already trust their key.
    #[command(after_help = "Example:\n  magpie lan --wait 5")]
    Lan {
        /// How long to listen for answers, in seconds.
        #[arg(long, value_name = "SECS", default_value_t = 2.0, value_parser = wait_secs)]
        wait: f64,
    },
    /// List microphones, speakers and cameras on this machine.
    #[command(after_help = "Example:\n  magpie devices")]
    Devices,
    /// Send media as PLAIN, UNENCRYPTED RTP to HOST:PORT, described by an SDP file that
    /// ffplay, ffmpeg and GStreamer play. Only for tools that cannot join a call: anyone
    /// on the path can watch and listen.
    #[command(after_help = "Examples:
  magpie stream --to 127.0.0.1:5004 --sdp out.sdp
  ffplay -protocol_whitelist file,udp,rtp -i out.sdp
  gst-launch-1.0 filesrc location=out.sdp ! sdpdemux ! decodebin ! autovideosink
  magpie stream --to 192.0.2.7:5004 --sdp out.sdp --video-in y4m:clip.y4m --audio-in none

Audio goes to PORT, video to PORT+2, RTCP to the port above each. NOT ENCRYPTED.")]
    Stream(crate::interop::StreamArgs),
    /// Receive and play PLAIN, UNENCRYPTED RTP described by an SDP file, e.g. what
    /// `ffmpeg -f rtp ... -sdp_file in.sdp` sends (Opus audio, H.264 video).
    #[command(after_help = "Examples:
  magpie play in.sdp
  magpie play in.sdp --audio-out wav:heard.wav --video-out y4m:seen.y4m
  ffmpeg -re -i clip.y4m -c:v libx264 -profile:v baseline -tune zerolatency \\
      -f rtp rtp://127.0.0.1:5004 -sdp_file in.sdp

The decoder takes H.264 constrained baseline (-profile:v baseline). NOT ENCRYPTED.")]
    Play(crate::interop::PlayArgs),
    /// Start a server on loopback and call between two clients with synthetic media, then
    /// print both directions' summaries.
    #[command(after_help = "Examples:
  magpie demo
  magpie demo --sim loss=20%,delay=25ms,jitter=5ms --duration 30 --stats-json demo.json")]
    Demo {
        /// Media and call options for both clients. Defaults: 10 s, 5% loss each way,
        /// tone and pattern in, nothing out.
        #[command(flatten)]
        call: CallArgs,
    },
}

/// Options of a call, shared by `call`, `answer` and `demo`.
#[derive(Debug, Clone, Default, Args)]
pub struct CallArgs {
    /// Media sources, sinks and codec settings.
    #[command(flatten)]
    pub media: MediaArgs,
    /// Hang up after this many seconds.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Write the end-of-call summary as JSON here.
    #[arg(long, value_name = "PATH")]
    pub stats_json: Option<PathBuf>,
    /// Write live statistics here once a second, one JSON object a line: counters by
    /// reason, the path, both sides' SSRCs and the report so far (`-`: stdout).
    #[arg(long, value_name = "PATH")]
    pub stats_jsonl: Option<PathBuf>,
    /// No live status line.
    #[arg(long)]
    pub quiet: bool,
    /// Impair this client's outgoing datagrams, e.g. loss=10%,delay=25ms,jitter=5ms,burst=4.
    #[arg(long, value_name = "SPEC")]
    pub sim: Option<String>,
    /// The local UDP address for media [default: 0.0.0.0:0, every interface].
    #[arg(long, value_name = "ADDR:PORT")]
    pub bind: Option<SocketAddr>,
    /// Print no summary at the end (the demo prints both sides' itself).
    #[arg(long, hide = true)]
    pub no_summary: bool,
    /// A TURN relay to use instead of the server's, e.g. coturn: turn:HOST:PORT (UDP).
    #[arg(long, value_name = "turn:HOST:PORT", value_parser = turn_url, requires_all = ["turn_user", "turn_pass"])]
    pub turn: Option<String>,
    /// The user name for --turn.
    #[arg(long, value_name = "USER", env = "MAGPIE_TURN_USER")]
    pub turn_user: Option<String>,
    /// The password for --turn.
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "MAGPIE_TURN_PASS",
        hide_env_values = true
    )]
    pub turn_pass: Option<String>,
    /// Send media only through the relay, never directly (WebRTC's
    /// iceTransportPolicy "relay"): hides this machine's addresses from the peer.
    #[arg(long, conflicts_with = "no_relay")]
    pub relay_only: bool,
    /// Use no relay, even when the server offers one.
    #[arg(long)]
    pub no_relay: bool,
    /// Calls on the LAN.
    #[command(flatten)]
    pub lan: LanArgs,
}

/// Options of calls and transfers on the LAN (`NAME@lan`, `answer --lan`).
#[derive(Debug, Clone, Args)]
pub struct LanArgs {
    /// LAN: trust a new peer's key without asking whether the pairing codes match (for
    /// scripts; a changed key is refused all the same).
    #[arg(long)]
    pub trust: bool,
    /// LAN: how long to look for NAME on the LAN, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 3.0, value_parser = wait_secs)]
    pub lan_wait: f64,
}

impl Default for LanArgs {
    fn default() -> Self {
        Self {
            trust: false,
            // As the flag's default: mDNS answers within a second on a quiet LAN.
            lan_wait: 3.0,
        }
    }
}

/// A wait in seconds: positive, at most an hour.
fn wait_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs <= 3600.0 => Ok(secs),
        _ => Err(format!(
            "{s:?}: expected seconds, more than 0 and at most 3600"
        )),
    }
}

/// Options of a file transfer, on either side.
#[derive(Debug, Clone, Default, Args)]
pub struct TransferArgs {
    /// The local UDP address for the transfer [default: 0.0.0.0:0].
    #[arg(long, value_name = "ADDR:PORT")]
    pub bind: Option<SocketAddr>,
    /// Use no relay, even when the server offers one.
    #[arg(long)]
    pub no_relay: bool,
    /// Send only through the relay, never directly (hides this machine's addresses).
    #[arg(long, conflicts_with = "no_relay")]
    pub relay_only: bool,
    /// No progress bar or lines.
    #[arg(long)]
    pub quiet: bool,
    /// Impair what this side sends on the path, e.g. delay=10ms,loss=1% (as for calls).
    #[arg(long, value_name = "SPEC")]
    pub sim: Option<String>,
}

/// What the receiving side of a transfer does with offers (`receive`, and `answer`).
#[derive(Debug, Clone, Args)]
pub struct ReceiveArgs {
    /// The folder files go to (created if missing); nothing in it is ever overwritten.
    #[arg(long = "to", value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,
    /// Take every file offered without asking (scripts).
    #[arg(long)]
    pub yes: bool,
    /// Decline files larger than this many bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 4 << 30)]
    pub max_size: u64,
}

/// `turn:HOST:PORT`, optionally with `?transport=udp`; gives back `HOST:PORT`.
pub fn turn_url(s: &str) -> Result<String, String> {
    let rest = s
        .strip_prefix("turn:")
        .ok_or_else(|| format!("{s:?}: expected turn:HOST:PORT"))?;
    let rest = match rest.split_once('?') {
        Some((addr, "transport=udp")) => addr,
        Some((_, query)) => return Err(format!("{s:?}: only UDP is supported, not {query}")),
        None => rest,
    };
    match rest.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(rest.to_owned())
        }
        _ => Err(format!("{s:?}: expected turn:HOST:PORT")),
    }
}

/// Media sources, sinks and codec settings. Each falls back on the config file, then on
/// the built-in default.
#[derive(Debug, Clone, Default, Args)]
pub struct MediaArgs {
    /// Audio source: tone | wav:PATH | mic[:NAME] [default: mic].
    #[arg(long, value_name = "SOURCE")]
    pub audio_in: Option<String>,
    /// Audio sink: speaker[:NAME] | wav:PATH | null [default: speaker].
    #[arg(long, value_name = "SINK")]
    pub audio_out: Option<String>,
    /// Video source: pattern | y4m:PATH | camera[:N] | none [default: camera].
    #[arg(long, value_name = "SOURCE")]
    pub video_in: Option<String>,
    /// Video sink: window | y4m:PATH | null [default: window].
    #[arg(long, value_name = "SINK")]
    pub video_out: Option<String>,
    /// Video width in pixels [default: 640].
    #[arg(long)]
    pub width: Option<u32>,
    /// Video height in pixels [default: 480].
    #[arg(long)]
    pub height: Option<u32>,
    /// Video frames per second [default: 30].
    #[arg(long)]
    pub fps: Option<u32>,
    /// Starting video bitrate in kbit/s; adapts to the link from there [default: 1000].
    #[arg(long, value_name = "KBPS")]
    pub video_bitrate_kbps: Option<u32>,
    /// Opus bitrate in kbit/s [default: 32].
    #[arg(long, value_name = "KBPS")]
    pub audio_bitrate_kbps: Option<u32>,
    /// Opus frame duration, 10 or 20 ms [default: 20].
    #[arg(long, value_name = "MS", value_parser = opus_frame_ms)]
    pub opus_frame_ms: Option<u32>,
    /// Send stereo audio.
    #[arg(long)]
    pub stereo: bool,
    /// Do not ask for retransmissions (NACK/RTX).
    #[arg(long)]
    pub no_nack: bool,
    /// Do not use forward error correction (Opus in-band FEC, video XOR parity).
    #[arg(long)]
    pub no_fec: bool,
    /// Do not offer audio redundancy (RFC 2198), which repeats earlier frames while
    /// the peer reports loss.
    #[arg(long)]
    pub no_red: bool,
    /// Opus discontinuous transmission: send almost nothing during silence.
    #[arg(long)]
    pub dtx: bool,
    /// Delay-based congestion control: estimate the path's capacity from how the
    /// peer's packets queue (GCC, sent back in REMB) and hold all we send to the peer's
    /// estimate, on top of the loss rule [default: the media core's, on].
    #[arg(long, value_name = "on|off", value_parser = on_off)]
    pub delay_bwe: Option<bool>,
}

fn on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("expected on or off, not {s:?}")),
    }
}

fn opus_frame_ms(s: &str) -> Result<u32, String> {
    match s {
        "10" => Ok(10),
        "20" => Ok(20),
        _ => Err(format!("Opus frames here are 10 or 20 ms, not {s:?}")),
    }
}

/// The media settings of a call once flags, the config file and defaults are merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSettings {
    /// Audio source spec.
    pub audio_in: String,
    /// Audio sink spec.
    pub audio_out: String,
    /// Video source spec, `none` for an audio-only call.
    pub video_in: String,
    /// Video sink spec.
    pub video_out: String,
    /// Video width.
    pub width: u32,
    /// Video height.
    pub height: u32,
    /// Video frame rate.
    pub fps: u32,
    /// Starting video bitrate, kbit/s.
    pub video_bitrate_kbps: u32,
    /// Opus bitrate, kbit/s.
    pub audio_bitrate_kbps: u32,
    /// Opus frame duration in ms.
    pub opus_frame_ms: u32,
    /// Stereo audio.
    pub stereo: bool,
    /// NACK and RTX on.
    pub nack: bool,
    /// Opus in-band FEC on.
    pub fec: bool,
    /// RFC 2198 audio redundancy offered.
    pub red: bool,
    /// Opus DTX on.
    pub dtx: bool,
    /// Delay-based congestion control on.
    pub delay_bwe: bool,
}

/// Built-in defaults for a person's call: real devices.
pub const PERSON_DEFAULTS: [&str; 4] = ["mic", "speaker", "camera", "window"];
/// Built-in defaults for the demo: synthetic media that carries timing markers, and no
/// devices, so it runs anywhere.
pub const DEMO_DEFAULTS: [&str; 4] = ["tone", "null", "pattern", "null"];

impl MediaArgs {
    /// Merges flags over the config file over `defaults` (audio in, audio out, video in,
    /// video out).
    pub fn resolve(&self, file: &MediaDefaults, defaults: [&str; 4]) -> MediaSettings {
        let pick = |flag: &Option<String>, file: &Option<String>, default: &str| {
            flag.clone()
                .or_else(|| file.clone())
                .unwrap_or_else(|| default.to_owned())
        };
        let [audio_in, audio_out, video_in, video_out] = defaults;
        MediaSettings {
            audio_in: pick(&self.audio_in, &file.audio_in, audio_in),
            audio_out: pick(&self.audio_out, &file.audio_out, audio_out),
            video_in: pick(&self.video_in, &file.video_in, video_in),
            video_out: pick(&self.video_out, &file.video_out, video_out),
            width: self.width.or(file.width).unwrap_or(640),
            height: self.height.or(file.height).unwrap_or(480),
            fps: self.fps.or(file.fps).unwrap_or(30),
            video_bitrate_kbps: self
                .video_bitrate_kbps
                .or(file.video_bitrate_kbps)
                .unwrap_or(1000),
            audio_bitrate_kbps: self
                .audio_bitrate_kbps
                .or(file.audio_bitrate_kbps)
                .unwrap_or(32),
            opus_frame_ms: self.opus_frame_ms.or(file.opus_frame_ms).unwrap_or(20),
            stereo: self.stereo,
            nack: !self.no_nack && file.nack.unwrap_or(true),
            fec: !self.no_fec && file.fec.unwrap_or(true),
            red: !self.no_red,
            dtx: self.dtx,
            delay_bwe: self
                .delay_bwe
                .or(file.delay_bwe)
                .unwrap_or_else(|| magpie_media::SessionConfig::new().delay_bwe()),
        }
    }
}

/// A media setting that cannot work, said with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// H.264 in 4:2:0 halves the colour planes: the picture must have even sides.
    #[error("--{which} {value}: video sides must be even (H.264 4:2:0 halves the colour planes)")]
    Odd {
        /// `width` or `height`.
        which: &'static str,
        /// The value given.
        value: u32,
    },
    /// A value outside what the codecs and devices take.
    #[error("--{which} {value}: must be between {min} and {max}")]
    Range {
        /// The flag, without dashes.
        which: &'static str,
        /// The value given.
        value: u32,
        /// The smallest accepted.
        min: u32,
        /// The largest accepted.
        max: u32,
    },
}

impl MediaSettings {
    /// Refuses settings the codecs would fail on later, in the middle of a call.
    pub fn check(&self) -> Result<(), SettingsError> {
        // H.264 level 5.1 tops out at 4096 pixels a side; 16 is one macroblock. Opus takes
        // 6 to 510 kbit/s (RFC 6716 §2.1.1). Video under 30 kbit/s is a slide show.
        let ranges = [
            ("width", self.width, 16, 4096),
            ("height", self.height, 16, 4096),
            ("fps", self.fps, 1, 120),
            ("video-bitrate-kbps", self.video_bitrate_kbps, 30, 50_000),
            ("audio-bitrate-kbps", self.audio_bitrate_kbps, 6, 510),
        ];
        for (which, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                return Err(SettingsError::Range {
                    which,
                    value,
                    min,
                    max,
                });
            }
        }
        for (which, value) in [("width", self.width), ("height", self.height)] {
            if value % 2 == 1 {
                return Err(SettingsError::Odd { which, value });
            }
        }
        Ok(())
    }
}

impl Cli {
    /// The server to use: the flag or `MAGPIE_SERVER`, then the config file, then
    /// `127.0.0.1:7400`.
    pub fn server(&self, file: &FileConfig) -> String {
        self.server
            .clone()
            .or_else(|| file.server.clone())
            .unwrap_or_else(|| "127.0.0.1:7400".to_owned())
    }

    /// The config file: the flag or `MAGPIE_CONFIG`, then the default location.
    pub fn config_path(&self) -> Option<PathBuf> {
        self.config.clone().or_else(FileConfig::default_path)
    }

    /// The user to log in as, if any was given anywhere.
    pub fn user(&self, file: &FileConfig) -> Option<String> {
        self.user.clone().or_else(|| file.user.clone())
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_shows_an_example_in_help() {
        let mut cli = Cli::command();
        for sub in cli.get_subcommands_mut() {
            let help = sub.render_long_help().to_string();
            assert!(
                help.contains("Example"),
                "`magpie {}` has no example",
                sub.get_name()
            );
        }
    }

    #[test]
    fn a_call_with_media_flags_parses() {
        let cli = Cli::try_parse_from([
            "magpie",
            "--user",
            "alice",
            "call",
            "bob",
            "--audio-in",
            "tone",
            "--video-in",
            "none",
            "--sim",
            "loss=5%",
            "--duration",
            "2.5",
            "--no-nack",
            "--opus-frame-ms",
            "10",
        ])
        .unwrap();
        let Command::Call { callee, call } = cli.command else {
            panic!("not a call")
        };
        assert_eq!(callee, "bob");
        assert_eq!(call.duration, Some(2.5));
        assert_eq!(call.sim.as_deref(), Some("loss=5%"));
        let media = call
            .media
            .resolve(&MediaDefaults::default(), PERSON_DEFAULTS);
        assert_eq!(media.audio_in, "tone");
        assert_eq!(media.video_in, "none");
        assert_eq!(media.audio_out, "speaker");
        assert_eq!(media.opus_frame_ms, 10);
        assert!(!media.nack && media.fec);
    }

    #[test]
    fn a_bad_opus_frame_size_is_refused() {
        let err = Cli::try_parse_from(["magpie", "demo", "--opus-frame-ms", "15"]).unwrap_err();
        assert!(err.to_string().contains("15"), "{err}");
    }

    #[test]
    fn delay_based_control_is_set_by_flag_over_file_over_the_media_core() {
        let parse = |args: &[&str]| match Cli::try_parse_from(args).map(|c| c.command) {
            Ok(Command::Demo { call }) => call.media,
            other => panic!("{other:?}"),
        };
        let on = MediaDefaults {
            delay_bwe: Some(true),
            ..MediaDefaults::default()
        };
        let plain = parse(&["magpie", "demo"]);
        let default = magpie_media::SessionConfig::new().delay_bwe();
        assert_eq!(
            plain
                .resolve(&MediaDefaults::default(), DEMO_DEFAULTS)
                .delay_bwe,
            default
        );
        assert!(plain.resolve(&on, DEMO_DEFAULTS).delay_bwe);
        let off = parse(&["magpie", "demo", "--delay-bwe", "off"]);
        assert!(!off.resolve(&on, DEMO_DEFAULTS).delay_bwe);
        let err = Cli::try_parse_from(["magpie", "demo", "--delay-bwe", "maybe"]).unwrap_err();
        assert!(err.to_string().contains("on or off"), "{err}");
    }

    #[test]
    fn flags_win_over_the_file_which_wins_over_defaults() {
        let file = MediaDefaults {
            audio_in: Some("wav:in.wav".into()),
            video_in: Some("y4m:in.y4m".into()),
            width: Some(1280),
            nack: Some(false),
            ..MediaDefaults::default()
        };
        let args = MediaArgs {
            video_in: Some("pattern".into()),
            ..MediaArgs::default()
        };
        let media = args.resolve(&file, DEMO_DEFAULTS);
        assert_eq!(media.audio_in, "wav:in.wav");
        assert_eq!(media.video_in, "pattern");
        assert_eq!(media.audio_out, "null");
        assert_eq!(media.width, 1280);
        assert_eq!(media.height, 480);
        assert!(!media.nack);
    }

    #[test]
    fn odd_sizes_and_a_zero_frame_rate_are_refused_with_the_reason() {
        let base = MediaArgs::default().resolve(&MediaDefaults::default(), DEMO_DEFAULTS);
        assert_eq!(base.check(), Ok(()));
        let odd = MediaSettings {
            width: 641,
            ..base.clone()
        };
        let err = odd.check().unwrap_err().to_string();
        assert!(err.contains("641") && err.contains("even"), "{err}");
        let still = MediaSettings { fps: 0, ..base };
        let err = still.check().unwrap_err().to_string();
        assert!(
            err.contains("--fps 0") && err.contains("between 1"),
            "{err}"
        );
    }

    #[test]
    fn server_and_user_fall_back_on_the_file() {
        let cli = Cli::try_parse_from(["magpie", "history"]).unwrap();
        let file = FileConfig {
            server: Some("example.invalid:7400".into()),
            user: Some("carol".into()),
            ..FileConfig::default()
        };
        // MAGPIE_SERVER/MAGPIE_USER may be set in the environment of whoever runs the
        // tests; the fallback applies only when they are not.
        if std::env::var_os("MAGPIE_SERVER").is_none() {
            assert_eq!(cli.server(&file), "example.invalid:7400");
            assert_eq!(cli.server(&FileConfig::default()), "127.0.0.1:7400");
        }
        if std::env::var_os("MAGPIE_USER").is_none() {
            assert_eq!(cli.user(&file).as_deref(), Some("carol"));
        }
    }
}
