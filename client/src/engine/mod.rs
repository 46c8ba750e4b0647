//! The media engine of one call, in three parts:
//!
//! - [`shell`]: the socket shell: the one UDP socket and the impairment simulator on its
//!   way out. What arrives goes to the call's sans-IO [`Endpoint`], which runs the
//!   connectivity checks and admits or refuses every datagram in one place.
//! - [`pipeline`]: capture and encode threads, the video decode thread and the audio
//!   playout clock, joined to the loop by bounded queues that never block.
//! - [`call`]: the short loop that waits for a datagram, a timer, an encoded frame or a
//!   pipeline report, feeds it to the endpoint, and acts on every output.
//!
//! ```text
//!  capture ─▶ encode ─┐                               ┌─▶ decode + show ─▶ video sink
//!                     ├─▶ call loop: Endpoint + shell ┤
//!  capture ─▶ encode ─┘       (one task)              └─▶ playout clock ─▶ audio sink
//! ```
//!
//! Every queue is bounded and drops rather than builds up latency: capture queues drop
//! their oldest frame, the encoded-frame queues the newest when the loop is behind, and
//! the decoder's queue a unit (the decoder then waits for a keyframe and the endpoint
//! asks the peer for one). Every error path drops the pipeline, which stops and joins
//! every thread.

mod call;
pub(crate) mod pipeline;
mod shell;

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime};

use magpie_media::call::{
    AudioReceiver, AudioSender, Endpoint, Report, VideoReceiver, VideoSender,
};
use magpie_media::codec::{
    AudioChannels, AudioEncoder, FrameDuration, H264Config, H264Encoder, OpusConfig, VideoEncoder,
};
use magpie_media::devices::{
    AudioCapture, AudioCaptureConfig, AudioSinkSpec, AudioSourceSpec, VideoCapture,
    VideoCaptureConfig, VideoSinkSpec, VideoSourceSpec,
};
use magpie_media::ice::turn::{TurnClient, TurnConfig, TurnEvent, TurnFailure};
use magpie_media::ice::{Candidate, CandidateKind, CheckerConfig};
use magpie_media::netsim::{NetSim, NetSimConfig};
use magpie_media::probe::{MarkerSchedule, WallTime};
use magpie_media::srtp::exchange::{ExchangeError, KeyPair, Role, SafetyCode};
use magpie_media::{Session, SessionConfig};
use magpie_signaling::stun_server;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use self::call::{Call, Tracks};
pub use self::call::{PathSummary, now};
pub(crate) use self::call::{instant_of, recv_opt};
use self::pipeline::{AudioSinkParts, Parts, Pipeline};
use self::shell::Shell;
use crate::cli::MediaSettings;
use crate::offer::{
    AudioDescription, Rtx, SessionDescription, VERSION, VideoDescription, canonical,
};

/// RTP payload types, the same on both sides (checked in the agreement).
const AUDIO_PT: u8 = 111;
const AUDIO_RTX_PT: u8 = 112;
/// RFC 2198 redundancy for audio.
const AUDIO_RED_PT: u8 = 110;
const VIDEO_PT: u8 = 96;
const VIDEO_RTX_PT: u8 = 97;
/// The abs-capture-time extension id.
const CAPTURE_EXT_ID: u8 = 1;
/// The extension id we ask the peer to stamp abs-send-time in (with `--delay-bwe`): in
/// the description only, as the session stamps in the id the peer's description names.
const SEND_TIME_EXT_ID: u8 = 2;
/// The id we ask the peer to stamp transport-wide sequence numbers in (`--delay-bwe`).
const TRANSPORT_CC_EXT_ID: u8 = 3;
/// The audio marker period of the `tone` source (the devices' default).
const MARKER_PERIOD: Duration = Duration::from_secs(1);
/// How long to wait for the server's STUN answer: RFC 5389 retransmits at 500 ms, so
/// this allows a second try, and a server without STUN delays a call by no more.
const STUN_WAIT: Duration = Duration::from_millis(1500);

/// What went wrong with the media of a call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A source, sink or flag is unusable.
    #[error("{0}")]
    Device(#[from] magpie_media::devices::Error),
    /// A codec could not be set up.
    #[error("codec: {0}")]
    Codec(#[from] magpie_media::codec::Error),
    /// A media setting cannot work.
    #[error(transparent)]
    Settings(#[from] crate::cli::SettingsError),
    /// No microphone: say what to use instead.
    #[error(
        "cannot open the microphone: {0}\n  no microphone here? send a tone with --audio-in tone \
         or a file with --audio-in wav:PATH; `magpie devices` lists what this machine has"
    )]
    NoMicrophone(#[source] Box<magpie_media::devices::Error>),
    /// The `--sim` spec does not parse.
    #[error("--sim: {0}")]
    Sim(#[from] magpie_media::netsim::NetSimParseError),
    /// The UDP socket could not be opened.
    #[error("cannot open the media socket on {addr}: {source}")]
    Bind {
        /// Where.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Local addresses could not be listed.
    #[error("cannot list local addresses: {0}")]
    Interfaces(#[source] std::io::Error),
    /// The media socket failed.
    #[error("media socket: {0}")]
    Socket(#[source] std::io::Error),
    /// The peer's description cannot be used.
    #[error("{0}")]
    Offer(#[from] crate::offer::Error),
    /// The key exchange failed (the peer's key is weak).
    #[error("the key exchange failed: {0}")]
    KeyExchange(#[from] ExchangeError),
    /// The media session refused the agreement.
    #[error("media session: {0}")]
    Agreement(#[from] magpie_media::SessionError),
    /// No candidate answered.
    #[error("no UDP path to the peer: none of its {0} addresses answered within 5 s")]
    NoPath(usize),
    /// `--relay-only` and the relay could not be had.
    #[error("--relay-only: no relay: {0}")]
    NoRelay(String),
    /// A media thread could not start.
    #[error("cannot start a media thread: {0}")]
    Thread(#[source] std::io::Error),
    /// A sink could not be opened.
    #[error("cannot open the {what} {spec}: {source}")]
    SinkOpen {
        /// `audio sink` or `video sink`.
        what: &'static str,
        /// The sink as given.
        spec: String,
        /// Why (boxed: the name beside it would make every call's error large).
        #[source]
        source: Box<magpie_media::devices::Error>,
    },
    /// A sink failed during the call.
    #[error("{0}")]
    Sink(String),
    /// The live statistics file cannot be written.
    #[error("cannot write {path}: {source}")]
    StatsFile {
        /// Where.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Why media stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndCause {
    /// `--duration` elapsed.
    Duration,
    /// The local user hung up (Ctrl-C).
    Local,
    /// The peer hung up (signaling, or RTCP BYE).
    Remote(String),
    /// The peer stopped answering on the media path.
    PathLost,
}

impl std::fmt::Display for EndCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Duration => write!(f, "the set duration elapsed"),
            Self::Local => write!(f, "you hung up"),
            Self::Remote(reason) => write!(f, "the peer hung up ({reason})"),
            Self::PathLost => write!(f, "the peer stopped answering on the media path"),
        }
    }
}

/// The end of a call's media: why, and everything measured.
#[derive(Debug)]
pub struct Outcome {
    /// Why it ended.
    pub cause: EndCause,
    /// What was measured.
    pub report: Report,
    /// The session's own statistics at the end, refusals by reason included.
    pub stats: magpie_media::Stats,
    /// What the endpoint counted (STUN refused, frames dropped before the path, ...).
    pub endpoint: magpie_media::call::EndpointCounters,
    /// The path media took, if one was found.
    pub path: Option<PathSummary>,
    /// The code both people can read to each other (the same on both sides when
    /// nobody swapped the keys).
    pub safety_code: SafetyCode,
    /// What `--sim` did to the datagrams we sent, when it was given.
    pub sim: Option<magpie_media::netsim::NetSimStats>,
    /// `--sim` with a rate: our outgoing bottleneck's utilization, queueing, drops and
    /// recovery (see [`magpie_media::netsim::BottleneckStats`]).
    pub bottleneck: Option<magpie_media::netsim::BottleneckStats>,
}

/// Candidates exchanged with the peer through signaling while the call runs.
#[derive(Debug)]
pub struct Trickle {
    /// The peer's late candidates (its relay, trickled; a relay it allocated again).
    pub incoming: mpsc::Receiver<Vec<Candidate>>,
    /// Ours found during the call, for signaling to pass on: a relay allocated again
    /// after the first was lost (our NAT moved us to another port, where the TURN server
    /// knows no allocation of ours). The peer cannot learn it otherwise when its own
    /// mappings moved too: our checks through the new relay go to its old addresses.
    pub outgoing: mpsc::Sender<Vec<Candidate>>,
}

impl Trickle {
    /// A call with nobody to trickle to (on the LAN every candidate is in the
    /// descriptions): nothing comes in, and what goes out is dropped.
    pub fn none() -> Self {
        let (_, incoming) = mpsc::channel(1);
        let (outgoing, _) = mpsc::channel(1);
        Self { incoming, outgoing }
    }
}

/// Options for running the media.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// No live status line.
    pub quiet: bool,
    /// Impair outgoing datagrams.
    pub sim: Option<String>,
    /// Write the live statistics here once a second, one JSON object a line.
    pub stats_jsonl: Option<std::path::PathBuf>,
    /// When the call was accepted (the caller: `accepted` arrived; the callee: it sent
    /// `accept`): the zero of the path's `selected_ms` and `first_audio_ms`.
    pub accepted_at: Instant,
    /// Who the call is with (the video window's title).
    pub peer: Option<String>,
}

impl RunOptions {
    /// The options a call's flags give, for a call accepted at `accepted_at`.
    pub fn new(call: &crate::cli::CallArgs, accepted_at: Instant) -> Self {
        Self {
            duration: call.duration.map(Duration::from_secs_f64),
            quiet: call.quiet,
            sim: call.sim.clone(),
            stats_jsonl: call.stats_jsonl.clone(),
            accepted_at,
            peer: None,
        }
    }
}

/// Ends a running call's media, once: the first cause given is the one reported.
#[derive(Debug)]
pub struct Stop(Option<oneshot::Sender<EndCause>>);

impl Stop {
    /// A stopper, and the receiver [`Prepared::run`] takes.
    pub fn new() -> (Self, oneshot::Receiver<EndCause>) {
        let (tx, rx) = oneshot::channel();
        (Self(Some(tx)), rx)
    }

    /// Stops the media for `cause`, unless it was stopped already.
    pub fn stop(&mut self, cause: EndCause) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(cause);
        }
    }
}

/// Media that is ready to flow: sources open, socket bound, session built. Opening
/// devices before the call is placed means a missing camera is reported before the peer's
/// phone rings.
pub struct Prepared {
    settings: MediaSettings,
    socket: UdpSocket,
    session: Session,
    base: (Instant, WallTime),
    audio_capture: AudioCapture,
    video_capture: Option<VideoCapture>,
    audio_sink: AudioSinkSpec,
    video_sink: Option<VideoSinkSpec>,
    description: SessionDescription,
    /// This call's ephemeral X25519 key pair: its public half is in `description`.
    keys: KeyPair,
    /// The caller controls the connectivity checks (it nominates the path); the callee,
    /// who answers, is controlled.
    controlling: bool,
    /// Media only through the relay (`--relay-only`).
    relay_only: bool,
    /// The relay allocation, once made.
    turn: Option<TurnClient>,
}

impl Prepared {
    /// Opens the sources, binds the socket at `bind` and describes it all. With `stun`
    /// (the signaling server, which answers STUN on its port), the address the server
    /// sees the socket at becomes a candidate too: the one a peer outside our NAT can use.
    pub async fn new(
        settings: MediaSettings,
        bind: SocketAddr,
        stun: Option<SocketAddr>,
        relay_only: bool,
    ) -> Result<Self, Error> {
        let (channels, frame) = audio_format(settings.stereo, settings.opus_frame_ms);
        let audio_source = AudioSourceSpec::from_str(&settings.audio_in)?;
        let audio_sink = AudioSinkSpec::from_str(&settings.audio_out)?;
        let video = settings.video_in != "none";
        let video_source = video
            .then(|| VideoSourceSpec::from_str(&settings.video_in))
            .transpose()?;
        let video_sink = video
            .then(|| VideoSinkSpec::from_str(&settings.video_out))
            .transpose()?;

        let audio_capture = AudioCapture::open(
            &audio_source,
            &AudioCaptureConfig::default()
                .set_channels(channels)
                .set_frame(frame)
                .set_marker_period(MARKER_PERIOD),
        )?;
        let video_capture = video_source
            .map(|source| {
                VideoCapture::open(
                    &source,
                    &VideoCaptureConfig::default()
                        .set_resolution(settings.width, settings.height)
                        .set_fps(settings.fps),
                )
            })
            .transpose()?;

        let socket = UdpSocket::bind(bind)
            .await
            .map_err(|source| Error::Bind { addr: bind, source })?;
        let candidates = gather(&socket, stun, relay_only).await?;

        #[allow(clippy::disallowed_methods)] // reason: the shell reads the clock, once
        let base = (Instant::now(), SystemTime::now());
        let session = SessionConfig::new()
            .set_seed(rand::random())
            .set_wall_clock(base.0, base.1)
            .set_video(video)
            .set_audio_frame(frame.duration())
            .set_payload_types(AUDIO_PT, AUDIO_RTX_PT, VIDEO_PT, VIDEO_RTX_PT)
            .set_capture_ext_id(CAPTURE_EXT_ID)
            .set_nack(settings.nack)
            .set_audio_fec(settings.fec)
            .set_audio_red(settings.red)
            .set_red_payload_type(AUDIO_RED_PT)
            .set_video_fec(settings.fec)
            .set_start_bitrate(u64::from(settings.video_bitrate_kbps) * 1000)
            .set_delay_bwe(settings.delay_bwe)
            .build(base.0);
        let base = (base.0, WallTime::from_micros(wall_micros(base.1)));

        let marker_epoch_us = audio_capture.marker_schedule().map(|s| s.start.as_micros());
        let keys = KeyPair::from_random(rand::random());
        let description = SessionDescription {
            version: VERSION,
            key: keys.public(),
            candidates,
            audio: Some(AudioDescription {
                codec: "opus".into(),
                payload_type: AUDIO_PT,
                clock_rate: 48_000,
                channels: channels.count() as u8,
                frame_ms: settings.opus_frame_ms,
                ssrc: session.audio_ssrc().0,
                fec: settings.fec,
                dtx: settings.dtx,
                nack: settings.nack,
                rtx: settings.nack.then_some(Rtx {
                    payload_type: AUDIO_RTX_PT,
                    ssrc: session.audio_rtx_ssrc().0,
                }),
                marker_epoch_us,
                red: settings.red.then_some(AUDIO_RED_PT),
            }),
            video: session.video_track().map(|track| VideoDescription {
                codec: "H264".into(),
                payload_type: VIDEO_PT,
                clock_rate: 90_000,
                profile_level_id: "42e01f".into(),
                packetization_mode: 1,
                ssrc: track.ssrc.0,
                nack: settings.nack,
                pli: true,
                rtx: track.rtx.filter(|_| settings.nack).map(|(_, ssrc)| Rtx {
                    payload_type: VIDEO_RTX_PT,
                    ssrc: ssrc.0,
                }),
                width: settings.width,
                height: settings.height,
                fps: settings.fps,
                fec: session
                    .video_fec_pt()
                    .filter(|_| settings.nack)
                    .map(|pt| pt.0),
            }),
            abs_capture_time_id: CAPTURE_EXT_ID,
            abs_send_time_id: settings.delay_bwe.then_some(SEND_TIME_EXT_ID),
            transport_cc_id: settings.delay_bwe.then_some(TRANSPORT_CC_EXT_ID),
        };
        info!(local = ?socket.local_addr().ok(), video, "media ready");
        Ok(Self {
            settings,
            socket,
            session,
            base,
            audio_capture,
            video_capture,
            audio_sink,
            video_sink,
            description,
            keys,
            controlling: true,
            relay_only,
            turn: None,
        })
    }

    /// Allocates on the TURN server of `config` over the media socket. With
    /// `in_description` (the callee, before it answers) the relay candidate joins this
    /// side's description; otherwise (the caller, whose offer went out already) the
    /// description stays as it was sent, since both sides derive the call's keys from the
    /// descriptions exactly as exchanged. Returns the candidate, to be sent to the peer
    /// with `candidates` when it is not in the description.
    pub async fn allocate_relay(
        &mut self,
        config: TurnConfig,
        in_description: bool,
    ) -> Result<Candidate, Error> {
        let (turn, candidate) = allocate(&self.socket, config).await?;
        if in_description {
            self.description.candidates.push(candidate);
        }
        self.turn = Some(turn);
        Ok(candidate)
    }

    /// Whether only the relay may carry media.
    pub fn relay_only(&self) -> bool {
        self.relay_only
    }

    /// This side's description, for the offer or the answer.
    pub fn description(&self) -> &SessionDescription {
        &self.description
    }

    /// Limits this side to what the peer's offer supports (the callee does this before
    /// answering).
    pub fn answer(&mut self, offer: &SessionDescription) -> Result<SessionDescription, Error> {
        self.description = self.description.clone().answer(offer)?;
        self.controlling = false;
        Ok(self.description.clone())
    }

    /// Runs the media with the peer described by `remote` until `stop` fires, the peer
    /// leaves, the path is lost or the duration elapses.
    pub async fn run(
        self,
        remote: SessionDescription,
        options: RunOptions,
        stop: oneshot::Receiver<EndCause>,
        trickle: Trickle,
    ) -> Result<Outcome, Error> {
        let agreement = crate::offer::Agreement::new(&self.description, &remote)?;
        let sim = options
            .sim
            .as_deref()
            .map(NetSimConfig::from_str)
            .transpose()?;
        let Self {
            settings,
            socket,
            mut session,
            base,
            audio_capture,
            video_capture,
            audio_sink,
            video_sink,
            description,
            keys,
            controlling,
            relay_only,
            turn,
        } = self;
        if relay_only && turn.is_none() {
            return Err(Error::NoRelay("no relay was allocated".into()));
        }
        // The caller's description is the offer; both hash offer then answer.
        let (role, offer, answer) = if controlling {
            (Role::Caller, &description, &remote)
        } else {
            (Role::Callee, &remote, &description)
        };
        let derived = keys.derive(role, &remote.key, &canonical(offer), &canonical(answer))?;
        let safety_code = derived.safety_code;
        eprintln!(
            "safety code {safety_code}: read it to your peer; the same code on both sides \
             means nobody swapped the call's keys"
        );
        let video = agreement.video.is_some();
        let tracks = Tracks::new(&description, &remote);
        let parts = parts(
            &settings,
            &remote,
            (audio_capture, audio_sink),
            video_capture.zip(video_sink).filter(|_| video),
        )?;
        // The pipeline opens the sinks: a sink that cannot open fails the call here, and
        // whatever was started is stopped again (dropping a pipeline joins its threads).
        let pipeline = Pipeline::start(parts)?;
        // The session admits only the streams agreed here, once a path is selected.
        session.set_agreement(agreement.media(derived.srtp))?;
        let now = now();
        let checker = CheckerConfig::new(
            derived.local_ice,
            derived.remote_ice,
            remote.candidates.clone(),
        )
        .set_controlling(controlling)
        .set_direct(!relay_only)
        .build(now, rand::random());
        let mut endpoint = Endpoint::new(
            session,
            checker,
            u64::from(settings.video_bitrate_kbps) * 1000,
        );
        if let Some(turn) = turn {
            endpoint.set_turn(now, turn);
        }
        let netsim = sim.map(|config| NetSim::new(config.set_seed(rand::random())));
        let shell = Shell::new(socket, netsim)?;
        let frame = match remote.audio.as_ref().map(|a| a.frame_ms) {
            Some(10) => Duration::from_millis(10),
            _ => Duration::from_millis(20),
        };
        let call = Call::new(
            endpoint,
            shell,
            pipeline,
            base,
            frame,
            tracks,
            options,
            safety_code,
        )?;
        call.run(stop, trickle).await
    }
}

/// The candidates of `socket`: its host addresses and, with `stun` (the signaling
/// server, which answers STUN on its port), the address the server sees it at: the one a
/// peer outside our NAT can use. None with `relay_only` (only the relay is offered, once
/// allocated). Room is left for the relay candidate.
pub async fn gather(
    socket: &UdpSocket,
    stun: Option<SocketAddr>,
    relay_only: bool,
) -> Result<Vec<Candidate>, Error> {
    let local = socket.local_addr().map_err(Error::Socket)?;
    let mut candidates: Vec<Candidate> = crate::candidates::gather(local)
        .map_err(Error::Interfaces)?
        .into_iter()
        .map(Candidate::host)
        .collect();
    if let Some(server) = stun.filter(|_| !relay_only) {
        match stun_server::discover(socket, server, STUN_WAIT).await {
            Ok(mapped)
                if !candidates.iter().any(|c| c.addr == mapped)
                    && !mapped.ip().is_unspecified() =>
            {
                info!(%mapped, "server-reflexive candidate");
                candidates.push(Candidate::new(mapped, CandidateKind::Srflx));
            }
            Ok(_) => {}
            Err(e) => debug!(error = %e, "no server-reflexive address"),
        }
    }
    if relay_only {
        candidates.clear();
    }
    candidates.truncate(crate::offer::MAX_CANDIDATES - 1);
    Ok(candidates)
}

/// Allocates on the TURN server of `config` over `socket`; returns the client, which
/// keeps the allocation, and the relay candidate.
pub async fn allocate(
    socket: &UdpSocket,
    config: TurnConfig,
) -> Result<(TurnClient, Candidate), Error> {
    let server = config.server();
    let mut turn = config.build(now(), rand::random());
    let mut buf = vec![0u8; shell::MAX_DATAGRAM];
    let relayed = loop {
        while let Some(t) = turn.poll_transmit() {
            if let Err(e) = socket.send_to(&t.contents, t.destination).await {
                debug!(error = %e, "send to the TURN server");
            }
        }
        match turn.poll_event() {
            Some(TurnEvent::Allocated { relayed, .. }) => break relayed,
            Some(TurnEvent::Failed(why)) => return Err(no_relay(&why)),
            Some(TurnEvent::PeerRefused(_) | TurnEvent::Moved) => continue,
            None => {}
        }
        let Some(deadline) = turn.poll_timeout() else {
            return Err(no_relay(&TurnFailure::Timeout));
        };
        tokio::select! {
            received = socket.recv_from(&mut buf) => match received {
                Ok((len, from)) if from == server => {
                    if let Err(e) = turn.handle_datagram(now(), &buf[..len]) {
                        debug!(error = %e, "TURN datagram refused");
                    }
                }
                // Nothing else is expected before the call: the peer starts its
                // checks only once the call is accepted.
                Ok((_, from)) => debug!(%from, "datagram before the call: dropped"),
                Err(e) => debug!(error = %e, "recv"),
            },
            () = tokio::time::sleep_until(deadline.into()) => turn.handle_timeout(now()),
        }
    };
    info!(%relayed, %server, "relay candidate");
    Ok((turn, Candidate::new(relayed, CandidateKind::Relay)))
}

fn no_relay(why: &TurnFailure) -> Error {
    warn!(%why, "no relay");
    Error::NoRelay(why.to_string())
}

/// Builds the encoders and receivers the pipeline runs.
fn parts(
    settings: &MediaSettings,
    remote: &SessionDescription,
    (audio_capture, audio_sink): (AudioCapture, AudioSinkSpec),
    video: Option<(VideoCapture, VideoSinkSpec)>,
) -> Result<Parts, Error> {
    let (channels, frame) = audio_format(settings.stereo, settings.opus_frame_ms);
    let opus = OpusConfig::default()
        .set_channels(channels)
        .set_frame(frame)
        .set_bitrate(settings.audio_bitrate_kbps * 1000)
        .set_fec(settings.fec)
        .set_dtx(settings.dtx)
        .build()?;
    let audio_sender = AudioSender::new(AudioEncoder::Opus(opus));

    let remote_audio = remote.audio.as_ref();
    let schedule = remote_audio
        .and_then(|a| a.marker_epoch_us)
        .and_then(|us| MarkerSchedule::new(WallTime::from_micros(us), MARKER_PERIOD).ok());
    let remote_format = audio_format(
        remote_audio.is_some_and(|a| a.channels == 2),
        remote_audio.map_or(20, |a| a.frame_ms),
    );
    let audio_receiver = AudioReceiver::new(remote_format.0, remote_format.1.samples(), schedule)?;

    let (video, video_sink) = match video {
        Some((capture, sink)) => {
            let h264 = H264Encoder::new(
                H264Config::default()
                    .set_resolution(settings.width, settings.height)
                    .set_fps(settings.fps as f32)
                    .set_bitrate(settings.video_bitrate_kbps * 1000),
            )?;
            let sender = VideoSender::new(
                VideoEncoder::H264(h264),
                u64::from(settings.video_bitrate_kbps) * 1000,
            );
            let fps = remote.video.as_ref().map(|v| v.fps);
            (
                Some((capture, sender)),
                Some((sink, fps, VideoReceiver::new()?)),
            )
        }
        None => (None, None),
    };
    Ok(Parts {
        audio: Some((audio_capture, audio_sender)),
        video,
        audio_sink: Some(AudioSinkParts {
            spec: audio_sink,
            receiver: audio_receiver,
            format: remote_format,
        }),
        video_sink,
    })
}

pub(crate) fn audio_format(stereo: bool, frame_ms: u32) -> (AudioChannels, FrameDuration) {
    let channels = if stereo {
        AudioChannels::Stereo
    } else {
        AudioChannels::Mono
    };
    let frame = if frame_ms == 10 {
        FrameDuration::Ms10
    } else {
        FrameDuration::Ms20
    };
    (channels, frame)
}

pub(crate) fn wall_micros(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
