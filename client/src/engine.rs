//! The media engine of one call: capture and encode threads, one task that owns the
//! UDP socket and the media session, and decode and playout threads.
//!
//! ```text
//!  capture ─▶ encode thread ─┐                          ┌─▶ decode + show thread ─▶ video sink
//!                            ├─▶ session task (socket) ─┤
//!  capture ─▶ encode thread ─┘        ▲                 └─◀ playout thread (pulls) ─▶ audio sink
//! ```
//!
//! Every queue is bounded and drops rather than builds up latency: capture queues drop
//! their oldest frame, the encoded-frame channels drop the newest when the task is
//! behind, and the video display queue drops an access unit (the session's frame
//! buffer then asks for a keyframe as for any other loss). The task is the shell of the
//! sans-IO session: it waits for a datagram, a timer or a frame, feeds it in, and
//! drains every output, as DESIGN.md describes.

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc as std_mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use magpie_media::call::{AudioReceiver, AudioSender, Report, VideoReceiver, VideoSender};
use magpie_media::codec::{
    AudioChannels, AudioEncoder, FrameDuration, H264Config, H264Encoder, OpusConfig, VideoEncoder,
};
use magpie_media::devices::{
    AudioCapture, AudioCaptureConfig, AudioPlayout, AudioSinkSpec, AudioSourceSpec, VideoCapture,
    VideoCaptureConfig, VideoSink, VideoSinkSpec, VideoSourceSpec,
};
use magpie_media::netsim::{Datagram, NetSim, NetSimConfig};
use magpie_media::probe::{MarkerSchedule, WallTime};
use magpie_media::{Event, Playout, Session, SessionConfig};
use magpie_signaling::stun_server;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::cli::MediaSettings;
use crate::connectivity::{self, CheckerConfig, Credentials};
use crate::offer::{AudioDescription, Rtx, SessionDescription, VERSION, VideoDescription};
use crate::status::StatusLine;

/// RTP payload types, the same on both sides (checked in the agreement).
const AUDIO_PT: u8 = 111;
const AUDIO_RTX_PT: u8 = 112;
const VIDEO_PT: u8 = 96;
const VIDEO_RTX_PT: u8 = 97;
/// The abs-capture-time extension id.
const CAPTURE_EXT_ID: u8 = 1;
/// The audio marker period of the `tone` source (the devices' default).
const MARKER_PERIOD: Duration = Duration::from_secs(1);
/// How long to wait for the server's STUN answer: RFC 5389 retransmits at 500 ms, so
/// this allows a second try, and a server without STUN delays a call by no more.
const STUN_WAIT: Duration = Duration::from_millis(1500);
/// The largest datagram we accept.
const MAX_DATAGRAM: usize = 2048;

/// What went wrong with the media of a call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A source, sink or flag is unusable.
    #[error("{0}")]
    Device(#[from] magpie_media::devices::Error),
    /// A codec could not be set up.
    #[error("codec: {0}")]
    Codec(#[from] magpie_media::codec::Error),
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
    /// The media session refused the agreement.
    #[error("media session: {0}")]
    Agreement(#[from] magpie_media::SessionError),
    /// No candidate answered.
    #[error("no UDP path to the peer: none of its {0} addresses answered within 5 s")]
    NoPath(usize),
    /// A media thread could not start.
    #[error("cannot start a media thread: {0}")]
    Thread(#[source] std::io::Error),
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
}

impl Prepared {
    /// Opens the sources, binds the socket at `bind` and describes it all. With `stun`
    /// (the signaling server, which answers STUN on its port), the address the server
    /// sees the socket at becomes a candidate too: the one a peer outside our NAT can use.
    pub async fn new(
        settings: MediaSettings,
        bind: SocketAddr,
        stun: Option<SocketAddr>,
    ) -> Result<Self, Error> {
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
        let local = socket.local_addr().map_err(Error::Socket)?;
        let mut candidates = crate::candidates::gather(local).map_err(Error::Interfaces)?;
        if let Some(server) = stun {
            match stun_server::discover(&socket, server, STUN_WAIT).await {
                Ok(mapped) if !candidates.contains(&mapped) && !mapped.ip().is_unspecified() => {
                    info!(%mapped, "server-reflexive candidate");
                    candidates.push(mapped);
                }
                Ok(_) => {}
                Err(e) => debug!(error = %e, "no server-reflexive address"),
            }
        }
        candidates.truncate(crate::offer::MAX_CANDIDATES);

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
            .set_start_bitrate(u64::from(settings.video_bitrate_kbps) * 1000)
            .build(base.0);
        let base = (base.0, WallTime::from_micros(wall_micros(base.1)));

        let marker_epoch_us = audio_capture.marker_schedule().map(|s| s.start.as_micros());
        let description = SessionDescription {
            version: VERSION,
            ice: Credentials {
                ufrag: random_token(8),
                pwd: random_token(24),
            },
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
            }),
            abs_capture_time_id: CAPTURE_EXT_ID,
        };
        info!(%local, video, "media ready");
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
        })
    }

    /// This side's description, for the offer or the answer.
    pub fn description(&self) -> &SessionDescription {
        &self.description
    }

    /// Limits this side to what the peer's offer supports (the callee does this before
    /// answering).
    pub fn answer(&mut self, offer: &SessionDescription) -> Result<SessionDescription, Error> {
        self.description = self.description.clone().answer(offer)?;
        Ok(self.description.clone())
    }

    /// Runs the media with the peer described by `remote` until `stop` fires, the peer
    /// leaves, the path is lost or the duration elapses.
    pub async fn run(
        mut self,
        remote: SessionDescription,
        options: RunOptions,
        stop: oneshot::Receiver<EndCause>,
    ) -> Result<Outcome, Error> {
        let agreement = crate::offer::Agreement::new(&self.description, &remote)?;
        // The session admits only the streams agreed here, once a path is selected.
        self.session.set_agreement((&agreement).into())?;
        let sim = options
            .sim
            .as_deref()
            .map(NetSimConfig::from_str)
            .transpose()?;
        Engine::start(self, remote, agreement.video.is_some(), sim, options)?
            .run(stop)
            .await
    }
}

fn wall_micros(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Letters and digits from the OS's random source: ICE credentials (RFC 8445 §5.3 wants
/// at least 24 bits for the ufrag and 128 for the password; these carry 47 and 142).
fn random_token(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// A frame encoded on an encode thread, on its way to the session.
struct Encoded {
    data: Vec<u8>,
    captured_at: WallTime,
    keyframe: bool,
}

enum VideoControl {
    Keyframe,
    Bitrate(u64),
}

/// The running engine.
struct Engine {
    socket: UdpSocket,
    session: Session,
    base: (Instant, WallTime),
    checker: connectivity::Checker,
    candidates: usize,
    netsim: Option<NetSim>,
    local: SocketAddr,
    path: Option<SocketAddr>,
    media_since: Option<Instant>,
    audio_rx: mpsc::Receiver<Encoded>,
    video_rx: Option<mpsc::Receiver<Encoded>>,
    pull_rx: mpsc::Receiver<oneshot::Sender<Playout>>,
    audio_loss_tx: std_mpsc::Sender<f32>,
    video_ctl_tx: Option<std_mpsc::Sender<VideoControl>>,
    frames_tx: Option<std_mpsc::SyncSender<Bytes>>,
    audio_receiver: Arc<Mutex<AudioReceiver>>,
    video_receiver: Option<Arc<Mutex<VideoReceiver>>>,
    threads: Vec<JoinHandle<()>>,
    stop_threads: Arc<AtomicBool>,
    playout: Option<AudioPlayout>,
    status: Option<StatusLine>,
    options: RunOptions,
    dropped_video_units: u64,
}

impl Engine {
    fn start(
        prepared: Prepared,
        remote: SessionDescription,
        video: bool,
        sim: Option<NetSimConfig>,
        options: RunOptions,
    ) -> Result<Self, Error> {
        let Prepared {
            settings,
            socket,
            session,
            base,
            audio_capture,
            video_capture,
            audio_sink,
            video_sink,
            description,
        } = prepared;
        let local = socket.local_addr().map_err(Error::Socket)?;
        let stop_threads = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
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

        // Audio: capture -> encode thread -> task.
        let opus = OpusConfig::default()
            .set_channels(channels)
            .set_frame(frame)
            .set_bitrate(settings.audio_bitrate_kbps * 1000)
            .set_fec(settings.fec)
            .set_dtx(settings.dtx)
            .build()?;
        let mut audio_sender = AudioSender::new(AudioEncoder::Opus(opus));
        let (audio_tx, audio_rx) = mpsc::channel::<Encoded>(8);
        let (audio_loss_tx, audio_loss_rx) = std_mpsc::channel::<f32>();
        let stop = stop_threads.clone();
        threads.push(spawn("encode-audio", move || {
            while !stop.load(Ordering::Relaxed) {
                while let Ok(fraction) = audio_loss_rx.try_recv() {
                    if let Err(e) = audio_sender.handle_loss(fraction) {
                        warn!(error = %e, "opus: cannot set the expected loss");
                    }
                }
                let Some(frame) = audio_capture.recv_timeout(Duration::from_millis(50)) else {
                    if audio_capture.is_finished() {
                        break;
                    }
                    continue;
                };
                match audio_sender.encode(&frame.samples) {
                    Ok(Some(data)) => {
                        let encoded = Encoded {
                            data,
                            captured_at: frame.captured_at,
                            keyframe: false,
                        };
                        if audio_tx.try_send(encoded).is_err() && audio_tx.is_closed() {
                            break;
                        }
                    }
                    Ok(None) => {}
                    Err(e) => warn!(error = %e, "opus encode failed"),
                }
            }
        })?);

        // Video: capture -> encode thread -> task.
        let (video_rx, video_ctl_tx) = match (video, video_capture) {
            (true, Some(capture)) => {
                let h264 = H264Encoder::new(
                    H264Config::default()
                        .set_resolution(settings.width, settings.height)
                        .set_fps(settings.fps as f32)
                        .set_bitrate(settings.video_bitrate_kbps * 1000),
                )?;
                let mut sender = VideoSender::new(
                    VideoEncoder::H264(h264),
                    u64::from(settings.video_bitrate_kbps) * 1000,
                );
                let (tx, rx) = mpsc::channel::<Encoded>(4);
                let (ctl_tx, ctl_rx) = std_mpsc::channel::<VideoControl>();
                let stop = stop_threads.clone();
                threads.push(spawn("encode-video", move || {
                    while !stop.load(Ordering::Relaxed) {
                        while let Ok(ctl) = ctl_rx.try_recv() {
                            match ctl {
                                VideoControl::Keyframe => sender.request_keyframe(),
                                VideoControl::Bitrate(bps) => sender.handle_target_bitrate(bps),
                            }
                        }
                        let Some(frame) = capture.recv_timeout(Duration::from_millis(50)) else {
                            if capture.is_finished() {
                                break;
                            }
                            continue;
                        };
                        match sender.encode(&frame.image) {
                            Ok(Some(unit)) => {
                                let encoded = Encoded {
                                    data: unit.data,
                                    captured_at: frame.captured_at,
                                    keyframe: unit.keyframe,
                                };
                                if tx.try_send(encoded).is_err() && tx.is_closed() {
                                    break;
                                }
                            }
                            Ok(None) => {}
                            Err(e) => warn!(error = %e, "h264 encode failed"),
                        }
                    }
                })?);
                (Some(rx), Some(ctl_tx))
            }
            _ => (None, None),
        };

        // Audio playout: the sink's clock pulls a slot from the task, decodes, plays.
        let remote_audio = remote.audio.as_ref();
        let schedule = remote_audio
            .and_then(|a| a.marker_epoch_us)
            .and_then(|us| MarkerSchedule::new(WallTime::from_micros(us), MARKER_PERIOD).ok());
        let remote_channels = match remote_audio.map(|a| a.channels) {
            Some(2) => AudioChannels::Stereo,
            _ => AudioChannels::Mono,
        };
        let remote_frame = match remote_audio.map(|a| a.frame_ms) {
            Some(10) => FrameDuration::Ms10,
            _ => FrameDuration::Ms20,
        };
        let audio_receiver = Arc::new(Mutex::new(AudioReceiver::new(
            remote_channels,
            remote_frame.samples(),
            schedule,
        )?));
        let (pull_tx, pull_rx) = mpsc::channel::<oneshot::Sender<Playout>>(2);
        let receiver = audio_receiver.clone();
        let playout = AudioPlayout::open(
            &audio_sink,
            remote_channels,
            remote_frame,
            move |buf, at| {
                let (tx, rx) = oneshot::channel();
                let playout = if pull_tx.blocking_send(tx).is_ok() {
                    rx.blocking_recv().unwrap_or(Playout::Silence)
                } else {
                    Playout::Silence
                };
                if let Ok(mut receiver) = receiver.lock() {
                    receiver.play(playout, buf, at);
                }
            },
        )?;

        // Video: task -> decode and show thread.
        let (frames_tx, video_receiver) = match (video, video_sink) {
            (true, Some(sink_spec)) => {
                let fps = remote.video.as_ref().map_or(30, |v| v.fps);
                let receiver = Arc::new(Mutex::new(VideoReceiver::new()?));
                let (tx, rx) = std_mpsc::sync_channel::<Bytes>(8);
                let shared = receiver.clone();
                // A window belongs to the thread that opened it: open the sink there, and
                // hear back whether that worked.
                let (opened_tx, opened_rx) = std_mpsc::channel();
                threads.push(spawn("decode-video", move || {
                    let mut sink = match VideoSink::open(&sink_spec, fps) {
                        Ok(sink) => {
                            let _ = opened_tx.send(Ok(()));
                            sink
                        }
                        Err(e) => {
                            let _ = opened_tx.send(Err(e));
                            return;
                        }
                    };
                    while let Ok(unit) = rx.recv() {
                        let Ok(mut receiver) = shared.lock() else {
                            break;
                        };
                        if let Some(picture) = receiver.decode(&unit) {
                            match sink.show(&picture) {
                                Ok(shown_at) => receiver.shown(&picture, shown_at),
                                Err(e) => warn!(error = %e, "video sink failed"),
                            }
                        }
                    }
                })?);
                match opened_rx.recv() {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(e.into()),
                    Err(_) => {
                        return Err(Error::Thread(std::io::Error::other(
                            "video sink thread died",
                        )));
                    }
                }
                (Some(tx), Some(receiver))
            }
            _ => (None, None),
        };

        #[allow(clippy::disallowed_methods)] // reason: the shell reads the clock
        let now = Instant::now();
        let checker = CheckerConfig::new(
            description.ice.clone(),
            remote.ice.clone(),
            remote.candidates.clone(),
        )
        .build(now, rand::random());
        let netsim = sim.map(|config| NetSim::new(config.set_seed(rand::random())));
        let status = (!options.quiet).then(StatusLine::new);
        Ok(Self {
            socket,
            session,
            base,
            checker,
            candidates: remote.candidates.len(),
            netsim,
            local,
            path: None,
            media_since: None,
            audio_rx,
            video_rx,
            pull_rx,
            audio_loss_tx,
            video_ctl_tx,
            frames_tx,
            audio_receiver,
            video_receiver,
            threads,
            stop_threads,
            playout: Some(playout),
            status,
            options,
            dropped_video_units: 0,
        })
    }

    async fn run(mut self, mut stop: oneshot::Receiver<EndCause>) -> Result<Outcome, Error> {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let started = now();
        let end_at = self.options.duration.map(|d| started + d);
        let mut next_status = started + Duration::from_secs(1);
        let result: Result<EndCause, Error> = loop {
            let mut deadline = next_status;
            for t in [
                self.session.poll_timeout().map(|t| t.at),
                self.checker.poll_timeout(),
                self.netsim.as_ref().and_then(NetSim::poll_timeout),
                end_at,
            ]
            .into_iter()
            .flatten()
            {
                deadline = deadline.min(t);
            }
            let ready = self.path.is_some();
            tokio::select! {
                cause = &mut stop => break Ok(cause.unwrap_or(EndCause::Local)),
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((len, from)) => self.handle_datagram(from, &buf[..len]),
                    // ICMP errors from a candidate that does not listen surface here on
                    // Linux; they say nothing about the path in use.
                    Err(e) => debug!(error = %e, "recv"),
                },
                _ = tokio::time::sleep_until(deadline.into()) => {
                    let now = now();
                    self.session.handle_timeout(now);
                    self.checker.handle_timeout(now);
                    if let Some(sim) = &mut self.netsim {
                        sim.handle_timeout(now);
                    }
                    if end_at.is_some_and(|end| now >= end) {
                        break Ok(EndCause::Duration);
                    }
                    if now >= next_status {
                        next_status = now + Duration::from_secs(1);
                        self.print_status(now);
                    }
                }
                Some(frame) = self.audio_rx.recv(), if ready => {
                    let capture = self.instant(frame.captured_at);
                    if let Err(e) = self.session.send_audio(now(), &frame.data, capture) {
                        warn!(error = %e, "send audio");
                    }
                }
                Some(frame) = recv_opt(&mut self.video_rx), if ready => {
                    let capture = self.instant(frame.captured_at);
                    if let Err(e) = self.session.send_video(now(), &frame.data, capture, frame.keyframe) {
                        warn!(error = %e, "send video");
                    }
                }
                Some(reply) = self.pull_rx.recv() => {
                    let playout = if ready { self.session.pull_audio(now()) } else { Playout::Silence };
                    let _ = reply.send(playout);
                }
            }
            if let Some(cause) = self.drain().await? {
                break Ok(cause);
            }
        };
        let cause = result?;
        if self.path.is_some() && cause != EndCause::PathLost {
            // Say goodbye on the media path too (RTCP BYE), straight to the socket: the
            // simulator's delay would outlive us.
            self.session.close(now());
            while let Some(t) = self.session.poll_transmit() {
                self.transmit(t.destination, &t.contents).await;
            }
        }
        Ok(self.finish(cause))
    }

    fn handle_datagram(&mut self, from: SocketAddr, bytes: &[u8]) {
        let now = now();
        match self.checker.handle_datagram(now, from, bytes) {
            Ok(true) => {}
            Ok(false) => self.session.handle_datagram(now, from, bytes),
            Err(e) => debug!(error = %e, %from, "STUN datagram refused"),
        }
    }

    /// Sends and acts on everything the checker, the session and the simulator have.
    async fn drain(&mut self) -> Result<Option<EndCause>, Error> {
        let now = now();
        while let Some(t) = self.checker.poll_transmit() {
            self.send(now, t.destination, t.contents).await;
        }
        while let Some(event) = self.checker.poll_event() {
            match event {
                connectivity::Event::Selected(path) => {
                    info!(%path, "media path selected");
                    self.path = Some(path);
                    self.media_since = Some(now);
                    self.session.set_path(path);
                }
                connectivity::Event::Failed => return Err(Error::NoPath(self.candidates)),
                connectivity::Event::PathLost => return Ok(Some(EndCause::PathLost)),
            }
        }
        while let Some(t) = self.session.poll_transmit() {
            self.send(now, t.destination, t.contents.to_vec()).await;
        }
        if let Some(sim) = &mut self.netsim {
            sim.handle_timeout(now);
            let mut out = Vec::new();
            while let Some(d) = sim.poll_datagram() {
                out.push(d);
            }
            for d in out {
                self.transmit(d.to, &d.data).await;
            }
        }
        while let Some(event) = self.session.poll_event() {
            match event {
                Event::VideoFrame { data, .. } => {
                    if let Some(tx) = &self.frames_tx
                        && tx.try_send(data).is_err()
                    {
                        self.dropped_video_units += 1;
                    }
                }
                Event::KeyframeRequested => {
                    if let Some(tx) = &self.video_ctl_tx {
                        let _ = tx.send(VideoControl::Keyframe);
                    }
                }
                Event::TargetBitrate { bps } => {
                    if let Some(tx) = &self.video_ctl_tx {
                        let _ = tx.send(VideoControl::Bitrate(bps));
                    }
                }
                Event::AudioLoss { fraction } => {
                    let _ = self.audio_loss_tx.send(fraction);
                }
                Event::PeerLeft => {
                    return Ok(Some(EndCause::Remote("goodbye on the media path".into())));
                }
                _ => {}
            }
        }
        Ok(None)
    }

    /// Sends through the simulator when there is one.
    async fn send(&mut self, now: Instant, to: SocketAddr, data: Vec<u8>) {
        match &mut self.netsim {
            Some(sim) => sim.handle_datagram(
                now,
                Datagram {
                    from: self.local,
                    to,
                    data,
                },
            ),
            None => self.transmit(to, &data).await,
        }
    }

    async fn transmit(&self, to: SocketAddr, data: &[u8]) {
        if let Err(e) = self.socket.send_to(data, to).await {
            // A candidate of the wrong family or an unreachable one: the checker tries
            // the others, and the path in use is judged by its answers.
            debug!(error = %e, %to, "send");
        }
    }

    /// Maps a wall-clock capture time onto the session's clock.
    fn instant(&self, t: WallTime) -> Instant {
        let (instant, wall) = self.base;
        let offset = t.micros_since(wall);
        if offset >= 0 {
            instant + Duration::from_micros(offset as u64)
        } else {
            instant
                .checked_sub(Duration::from_micros(offset.unsigned_abs()))
                .unwrap_or(instant)
        }
    }

    fn print_status(&mut self, now: Instant) {
        let Some(status) = &mut self.status else {
            return;
        };
        let stats = self.session.stats();
        let detections = self
            .audio_receiver
            .lock()
            .map(|r| r.detections().to_vec())
            .unwrap_or_default();
        status.update(now, self.path.is_some(), &stats, &detections);
    }

    fn report(&self, now: Instant) -> Report {
        let duration = self.media_since.map_or(Duration::ZERO, |since| now - since);
        let stats = self.session.stats();
        let audio = self
            .audio_receiver
            .lock()
            .map(|r| (r.stats(), r.detections().to_vec()));
        let (audio_stats, audio_detections) = audio.unwrap_or_default();
        let video = self.video_receiver.as_ref().map(|r| {
            r.lock()
                .map(|r| (r.stats(), r.detections().to_vec()))
                .unwrap_or_default()
        });
        Report::new(
            duration,
            &stats,
            (audio_stats, &audio_detections),
            video.as_ref().map(|(s, d)| (*s, d.as_slice())),
        )
    }

    fn finish(mut self, cause: EndCause) -> Outcome {
        if let Some(status) = &mut self.status {
            status.clear();
        }
        let report = self.report(now());
        self.stop_threads.store(true, Ordering::Relaxed);
        // Stop pulling first: the playout thread may be waiting on this task.
        self.pull_rx.close();
        while let Ok(reply) = self.pull_rx.try_recv() {
            let _ = reply.send(Playout::Silence);
        }
        drop(self.playout.take());
        self.frames_tx = None;
        self.audio_rx.close();
        if let Some(rx) = &mut self.video_rx {
            rx.close();
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        if self.dropped_video_units > 0 {
            debug!(
                dropped = self.dropped_video_units,
                "video units dropped before decode"
            );
        }
        Outcome { cause, report }
    }
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

async fn recv_opt<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, Error> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(Error::Thread)
}
