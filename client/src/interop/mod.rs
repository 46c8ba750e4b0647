//! Plain RTP for other tools, described by SDP: `magpie stream` sends what ffplay,
//! ffmpeg and GStreamer play, and `magpie play` plays what ffmpeg sends.
//!
//! Both drive the same parts a call does: the capture, encode, decode and playout
//! threads of [`crate::engine::pipeline`], and one media [`Session`] per RTP stream (the
//! packetizers, the jitter buffer and the frame buffer), with a plain agreement: **no
//! encryption**. That is the one thing these commands do that a call never does, so
//! both say it on stderr when they start. Each medium has its own port (audio on PORT,
//! video on PORT+2, as ffmpeg does) and its RTCP on the port above, unless the
//! description says `a=rtcp-mux`.

mod play;
mod stream;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use magpie_media::types::{Pt, Ssrc};
use magpie_media::{Agreement, KindAgreement, Session, Track};

pub use self::play::play;
pub use self::stream::stream;

/// The warning both commands print first.
const PLAIN_WARNING: &str = "WARNING: plain RTP, NOT ENCRYPTED: anyone on the path can watch \
                             and listen, and send media in the sender's name. Use `magpie \
                             call` for a private call.";

/// `magpie stream`: send media as plain RTP, described by an SDP file.
#[derive(Debug, Clone, Args)]
pub struct StreamArgs {
    /// Where the receiver listens: audio goes to PORT, video to PORT+2 (RTCP to the
    /// port above each).
    #[arg(long, value_name = "HOST:PORT")]
    pub to: String,
    /// Write the description here (for `ffplay -protocol_whitelist file,udp,rtp -i
    /// PATH`); without it, it is printed on stdout.
    #[arg(long, value_name = "PATH")]
    pub sdp: Option<PathBuf>,
    /// Audio source: tone | wav:PATH | mic[:NAME] | none.
    #[arg(long, value_name = "SOURCE", default_value = "tone")]
    pub audio_in: String,
    /// Video source: pattern | y4m:PATH | camera[:N] | none.
    #[arg(long, value_name = "SOURCE", default_value = "pattern")]
    pub video_in: String,
    /// Video width in pixels.
    #[arg(long, default_value_t = 640)]
    pub width: u32,
    /// Video height in pixels.
    #[arg(long, default_value_t = 480)]
    pub height: u32,
    /// Video frames per second.
    #[arg(long, default_value_t = 30)]
    pub fps: u32,
    /// H.264 bitrate in kbit/s (no feedback adapts it: nothing comes back).
    #[arg(long, value_name = "KBPS", default_value_t = 1000)]
    pub video_bitrate_kbps: u32,
    /// Opus bitrate in kbit/s.
    #[arg(long, value_name = "KBPS", default_value_t = 32)]
    pub audio_bitrate_kbps: u32,
    /// Send stereo audio.
    #[arg(long)]
    pub stereo: bool,
    /// A keyframe this often, so a receiver that starts late (or loses a packet: nobody
    /// can ask for a keyframe over plain RTP) gets a picture within this time.
    #[arg(long, value_name = "SECS", default_value_t = 2)]
    pub keyframe_secs: u32,
    /// Stop after this many seconds [default: at Ctrl-C, or the end of a file source].
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// The local UDP address to send from [default: 0.0.0.0:0].
    #[arg(long, value_name = "ADDR:PORT")]
    pub bind: Option<SocketAddr>,
}

/// `magpie play`: receive and play the plain RTP streams an SDP file describes.
#[derive(Debug, Clone, Args)]
pub struct PlayArgs {
    /// The description of what arrives: ffmpeg's `-sdp_file`, or what it printed.
    pub sdp: PathBuf,
    /// Audio sink: speaker[:NAME] | wav:PATH | null.
    #[arg(long, value_name = "SINK", default_value = "speaker")]
    pub audio_out: String,
    /// Video sink: window | y4m:PATH | null.
    #[arg(long, value_name = "SINK", default_value = "window")]
    pub video_out: String,
    /// The video frame rate of a Y4M sink [default: the description's a=framerate, else
    /// measured from the first frames].
    #[arg(long)]
    pub fps: Option<u32>,
    /// Stop after this many seconds [default: at Ctrl-C, or when the media stops].
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Stop when every stream that started has said goodbye (RTCP BYE) or sent nothing
    /// for this long.
    #[arg(long, value_name = "SECS", default_value_t = 3.0)]
    pub idle_secs: f64,
    /// Write what arrived and was played as JSON here.
    #[arg(long, value_name = "PATH")]
    pub stats_json: Option<PathBuf>,
}

/// Why streaming or playing failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The description cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file cannot be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The description cannot be used.
    #[error("{path}: {source}")]
    Sdp {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: magpie_media::sdp::SdpError,
    },
    /// The description names a multicast group, which these commands do not join.
    #[error("{0}: multicast is not supported; send to a unicast address")]
    Multicast(std::net::IpAddr),
    /// `--audio-in none --video-in none`: a stream of nothing.
    #[error("nothing to send: --audio-in and --video-in are both none")]
    NothingToSend,
    /// `--to` does not name one address.
    #[error("--to {0}: expected HOST:PORT, with PORT+3 under 65536")]
    Destination(String),
    /// A port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Where.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The sockets failed.
    #[error("socket: {0}")]
    Socket(#[source] std::io::Error),
    /// A source, sink or codec cannot be used.
    #[error(transparent)]
    Media(#[from] crate::engine::Error),
    /// The session refused what was set up (a bug: the agreement is built here).
    #[error("media session: {0}")]
    Session(#[from] magpie_media::Error),
}

impl From<magpie_media::devices::Error> for Error {
    fn from(e: magpie_media::devices::Error) -> Self {
        Self::Media(e.into())
    }
}

impl From<magpie_media::codec::Error> for Error {
    fn from(e: magpie_media::codec::Error) -> Self {
        Self::Media(e.into())
    }
}

/// The plain agreement of a session that carries one medium one way. `send` is the
/// session's own track; `receive` the peer's (for a sender, a track nobody sends on:
/// plain RTP receivers send only reports). No NACK, FEC or keyframe requests: other
/// tools neither send RTX nor answer PLIs.
fn one_way(session: &Session, video: bool, receive: Track) -> Agreement {
    let kind = |send: Track| KindAgreement {
        send: Track { rtx: None, ..send },
        receive,
        nack: false,
    };
    Agreement {
        audio: (!video).then(|| kind(session.audio_track())),
        video: session.video_track().filter(|_| video).map(kind),
        fec: false,
        red: None,
        pli: false,
        remote_capture_ext_id: CAPTURE_EXT_ID,
        send_time_ext_id: None,
        remote_send_time_ext_id: None,
        transport_seq_ext_id: None,
        remote_transport_seq_ext_id: None,
        srtp: None,
        video_fec: None,
    }
}

/// The abs-capture-time extension id our packets carry (other tools skip it).
const CAPTURE_EXT_ID: u8 = 1;

/// A track no one sends on, for the receive side of a send-only session: an SSRC that
/// is none of the session's own.
fn silent_track(session: &Session, pt: Pt) -> Track {
    let ours = [
        Some(session.audio_ssrc()),
        Some(session.audio_rtx_ssrc()),
        session.video_ssrc(),
        session.video_rtx_ssrc(),
    ];
    let ssrc = (1..)
        .map(Ssrc)
        .find(|s| !ours.contains(&Some(*s)))
        .expect("four SSRCs leave others free");
    Track {
        pt,
        ssrc,
        rtx: None,
    }
}

/// Where RTCP for a stream goes: the RTP address with `a=rtcp-mux`, else the port above
/// (RFC 3550 §11).
fn rtcp_destination(rtp: SocketAddr, mux: bool) -> SocketAddr {
    if mux {
        rtp
    } else {
        SocketAddr::new(rtp.ip(), rtp.port().wrapping_add(1))
    }
}
