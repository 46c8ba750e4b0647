//! One media session per call: one audio and (optionally) one video stream each way,
//! RTP and RTCP multiplexed on one socket (RFC 5761).
//!
//! # Run loop
//!
//! ```text
//! loop {
//!     wait for: a datagram | an encoded frame | the playout clock | poll_timeout()
//!     feed it:  handle_datagram(now, from, bytes) | send_audio / send_video
//!               | pull_audio(now) | handle_timeout(now)
//!     drain:    while let Some(t) = poll_transmit() { socket.send_to(..) }
//!               while let Some(e) = poll_event()    { decode / reconfigure }
//! }
//! ```
//!
//! Outputs do not depend on the order of the polls: every input queues its outputs.

mod agreement;
mod config;
mod event;
mod rate;
mod receive;
mod rtcp;
pub(crate) mod stats;
mod streams;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use tracing::{debug, trace};

pub use self::agreement::{
    Agreement, FecAgreement, KindAgreement, RedAgreement, SessionError, Track,
};
pub use self::config::SessionConfig;
pub use self::event::{Event, Playout, Reason, Timeout, Transmit};
use self::stats::LatencyWindow;
pub use self::stats::{LatencyStats, PaddingReceived, RecvStreamStats, Refused, Stats};
use self::streams::{Incoming, MediaKind, Streams};
use crate::Error;
use crate::cc::{DelayBasedBwe, SendTimes};
use crate::clock::WallClock;
use crate::fec::{self, FecReceiver};
use crate::jitter::audio::AudioBuffer;
use crate::jitter::video::FrameBuffer;
use crate::payload::{h264, opus};
use crate::recv::nack::NackGenerator;
use crate::recv::tail::TailWatch;
use crate::recv::tcc::{ArrivalRecord, FEEDBACK_INTERVAL};
use crate::rng::Rng;
use crate::send::budget::{Protection, SendBudget};
use crate::send::bwe::LossBasedBwe;
use crate::send::inflight::InFlight;
use crate::send::pacer::{Class, Pacer};
use crate::send::probe::ProbeController;
use crate::send::red::RedSender;
use crate::send::{FrameMeta, SendStream, StreamParams};
use crate::srtp::{MAX_OVERHEAD, Srtp};
use crate::types::{MediaTime, Pt, Ssrc};
use crate::wire;

/// The most events or unpaced datagrams queued before the oldest are dropped (an
/// application that never polls must not grow memory without bound).
const MAX_QUEUE: usize = 4096;
/// Slack in the audio retransmission allowance for processing and pacing.
const AUDIO_RTX_MARGIN: Duration = Duration::from_millis(10);
/// Audio packets a report of the peer must cover before redundancy follows its loss
/// rate (a second of 20 ms frames; until then the link is unknown and protected).
const RED_EVIDENCE: u16 = 50;
/// The longest between two of our estimates to the peer (REMB), beside those its
/// drops and probes send at once and those that go with each report (libwebrtc sends
/// REMB every 200 ms). With one a report only (every 0.5-1.5 s), a path losing 20 % at
/// random kept the peer without one for 2-3 s several times a call, and the peer, taking
/// the silence for a full queue, halved what it sent (real engine, 640x480).
const ESTIMATE_INTERVAL: Duration = Duration::from_millis(250);
/// Audio packets the path's jitter estimate must rest on before a video frame's missing
/// end is chased on it (a second of 20 ms frames).
const JITTER_EVIDENCE: u64 = 50;
/// The peer's video loss from which every video retransmission leaves twice: at 20 %
/// loss one retransmission in five is lost and costs another round trip (two in a row, a
/// freeze); two copies make it one in twenty-five. In the lab (640x480, 20 % loss) the
/// retransmitted bytes rose from 15-20 % of the media bytes to 26-30 %.
const RTX_TWICE_LOSS: f32 = 0.05;
/// Packets of the peer's streams seen before their loss stands for our video's (see
/// `Session::protect_before_reports`): about half a second of audio.
const PRIOR_MIN_PACKETS: u64 = 20;
/// Bytes set aside at a time for protected datagrams: a dozen of full size.
const PROTECTED_BLOCK: usize = 16 * 1024;
/// What a video FEC datagram adds to the longest payload it protects: the RTP header
/// (12), the FEC header (10) and the long ULP header (8) of RFC 5109.
const FEC_OVERHEAD: usize = 30;
/// The most a delay-based estimate may be (libwebrtc's `AimdRateControl` default).
const MAX_ESTIMATE_BPS: u64 = 30_000_000;
/// What we may send beside the video at its maximum (audio, protection, RTCP and SRTP),
/// as a share of the video's maximum: probes go up to the sum (libwebrtc probes up to
/// the maximum of all its streams together).
const BESIDE_VIDEO: f64 = 0.25;

/// The most we may send in all when the video's maximum is `video_max`.
fn most_sent(video_max: u64) -> u64 {
    (video_max as f64 * (1.0 + BESIDE_VIDEO)) as u64
}

/// A probe's RTP header (12) and its abs-capture-time extension (16).
const PROBE_HEADER: usize = 28;

/// A call's media session. See the module docs for the run loop.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    clock: WallClock,
    rng: Rng,
    start: Instant,
    now: Instant,
    /// The peer's address once the connectivity checks selected it: the only source
    /// admitted and the only destination.
    path: Option<SocketAddr>,
    /// What was agreed with the peer; `None` refuses every RTP packet.
    agreement: Option<Agreement>,
    /// The SRTP contexts of the agreed keys; `None` before an agreement (nothing is sent
    /// or admitted) and when the agreement is explicitly plain.
    srtp: Option<Srtp>,
    /// Where datagrams are protected: each one is split off as it leaves, so one
    /// allocation serves many (it is reclaimed once the datagrams sent from it are gone).
    protected: BytesMut,
    /// Where a received datagram is checked and decrypted, reused for every one.
    unprotected: BytesMut,
    /// Where outgoing packets get their send time (split off as `protected` is).
    stamped: BytesMut,
    audio_tx: SendStream,
    /// RFC 2198 redundancy for our audio, when agreed.
    red_tx: Option<RedSender>,
    video_tx: Option<SendStream>,
    audio_frames: u64,
    last_video_ticks: Option<u64>,
    pacer: Pacer,
    /// Probe clusters for capacity (under delay-based control).
    probe: ProbeController,
    bwe: LossBasedBwe,
    /// The estimate of the peer's send rate from its delay gradient (what we send back
    /// in REMB).
    delay_bwe: DelayBasedBwe,
    /// The peer's send times on our clock.
    send_times: SendTimes,
    /// The peer's estimate of our send rate (its REMB), and how many came.
    peer_estimate: Option<u64>,
    remb_received: u64,
    /// What everything we send is held to under delay-based control (see `rate`): the
    /// peer's estimate, a modest start before the first, halved whenever the estimates
    /// stop coming, cut when the path collapses; `None` without delay-based control
    /// (nothing is held).
    held_estimate: Option<u64>,
    /// When the peer's last estimate came (or delay-based control started, or the held
    /// estimate was last halved).
    feedback_at: Instant,
    /// Halvings of the held estimate for want of feedback.
    feedback_timeouts: u64,
    /// Feedback timeouts without a halving: acknowledgements kept pace.
    estimates_missed: u64,
    /// While a cut for a collapsed path stands (see `rate`): the held estimate before
    /// it, and when it was last cut.
    collapse: Option<(u64, Instant)>,
    /// Cuts of the held estimate for a collapsed path.
    collapse_cuts: u64,
    /// Reports on our video received: a peer that reports but never estimates does not
    /// run delay-based control, and nothing is held.
    video_reports: u64,
    /// The video target last announced: the lower of the loss-based target and the
    /// peer's estimate less what audio and protection take of it (see `rate`).
    target_bps: u64,
    /// Holds everything sent to the peer's estimate, protection by priority.
    budget: SendBudget,
    /// What was sent by the last video report; the rates since the one before.
    rate_mark: rate::RateMark,
    /// Audio frames' own datagrams (redundancy and retransmissions aside), bit/s.
    audio_bps: u64,
    /// Protection wanted (sent or refused by the budget): retransmissions, video FEC,
    /// audio redundancy, bit/s.
    protection_bps: u64,
    /// Everything sent, bit/s, over the same interval.
    sent_bps: u64,
    /// What no stream counts: RTCP, and SRTP's tags (bytes, and bit/s over the same
    /// interval).
    overhead_bytes: u64,
    overhead_bps: u64,
    /// The peer's streams, keyed by SSRC.
    streams: Streams,
    jitter: AudioBuffer,
    frames: FrameBuffer,
    rtt: Option<Duration>,
    rtt_var: Duration,
    /// The newest audio packet (extended sequence number) and when it arrived: audio
    /// is periodic, so a packet overdue by more than the jitter allowance is NACKed
    /// before a later one reveals the gap (tail-loss detection).
    audio_newest: Option<(crate::types::SeqNo, Instant)>,
    /// The newest original video packet: a frame left without its end is NACKed before
    /// a later packet reveals the gap (see [`TailWatch`]).
    video_tail: TailWatch,
    next_rtcp: Instant,
    /// When our last estimate went to the peer.
    estimate_sent_at: Option<Instant>,
    events: VecDeque<Event>,
    unpaced: VecDeque<Bytes>,
    refused: Refused,
    /// Datagrams dropped because no path was selected yet.
    unsent: u64,
    /// Datagrams dropped because no keys were agreed yet (or protecting failed).
    unsent_without_keys: u64,
    audio_latency: LatencyWindow,
    video_latency: LatencyWindow,
    peer_audio_loss: f32,
    /// Whether a report of the peer rested on enough of our audio ([`RED_EVIDENCE`]
    /// packets) for redundancy to follow it.
    red_known_link: bool,
    peer_video_loss: f32,
    keyframes_requested_by_peer: u64,
    /// The peer asked for a keyframe since we last sent one: the next supersedes the
    /// video still waiting to leave (see `send_video`).
    keyframe_asked: bool,
    /// Rebuilds the peer's lost video packets from its FEC packets.
    fec_rx: FecReceiver,
    /// Whether video FEC was agreed (and is on in our config).
    fec_on: bool,
    /// The payload type of the FEC packets we send, when agreed.
    fec_tx_pt: Option<Pt>,
    /// The peer's video loss, smoothed over reports: what FEC protects against.
    fec_loss: f32,
    /// Whether the peer reported on our video yet; until then our video is protected
    /// against the loss we see on what the peer sends (see `protect_before_reports`).
    video_reported: bool,
    /// Padding-only packets received (the peer's probes), and their bytes.
    padding_received: PaddingReceived,
    /// What we sent that the peer's transport-cc feedback has not reported on: the
    /// congestion window (see `send::inflight`).
    in_flight: InFlight,
    /// The peer's packets' transport-wide sequence numbers, for our feedback.
    arrivals: ArrivalRecord,
    /// Whether the congestion window is full (video held, the encoder pushed back).
    window_full: bool,
    /// When the target last followed the full window, and the feedbacks taken in then.
    window_applied: Option<(Instant, u64)>,
}

impl Session {
    pub(crate) fn new(config: SessionConfig, now: Instant) -> Self {
        let mut rng = Rng::new(config.seed);
        let clock = match config.wall_clock {
            Some((instant, wall)) => WallClock::new(instant, wall),
            None => WallClock::new(now, UNIX_EPOCH),
        };
        let params = |pt: Pt, rtx_pt: Pt, rate: u32, rng: &mut Rng| {
            let (first_seq, first_ts) = config
                .initial_rtp
                .unwrap_or_else(|| ((rng.u32() & 0x7fff) as u16, rng.u32()));
            StreamParams {
                ssrc: Ssrc(rng.u32()),
                pt,
                rtx_ssrc: Ssrc(rng.u32()),
                rtx_pt,
                rate,
                first_seq,
                first_ts,
                ext_id: config.capture_ext_id,
                history: config.rtx_history,
                rtx_twice: rate == MediaTime::AUDIO_RATE,
            }
        };
        let audio_tx = SendStream::new(params(
            config.audio_pt,
            config.audio_rtx_pt,
            MediaTime::AUDIO_RATE,
            &mut rng,
        ));
        let video_tx = config.video.then(|| {
            SendStream::new(params(
                config.video_pt,
                config.video_rtx_pt,
                MediaTime::VIDEO_RATE,
                &mut rng,
            ))
        });
        let bwe = LossBasedBwe::new(
            config.start_bitrate,
            config.min_bitrate,
            config.max_bitrate,
            config.max_steady_loss,
        );
        // The estimate is of all the peer sends, whose maximum we do not know: bounded as
        // libwebrtc's `AimdRateControl` is by default, and by 1.5 times what arrives.
        // (Bounded by our video maximum, it held a peer whose video maximum is 2 Mbit/s
        // to 2 Mbit/s in all, audio and protection included, under it.)
        let delay_bwe = DelayBasedBwe::new(config.min_bitrate, MAX_ESTIMATE_BPS);
        let pacer = Pacer::new(
            (config.start_bitrate as f64 * config.pacing_factor) as u64,
            Duration::from_millis(5),
            // Media is real-time: a queue older than this is drained faster than the
            // pacing rate rather than delaying every frame behind it.
            Duration::from_millis(100),
        );
        let jitter = AudioBuffer::new(
            config.audio_frame,
            config.audio_min_delay,
            config.audio_max_delay,
            config.audio_fec,
        );
        let frames = FrameBuffer::new(config.video_max_wait, config.pli_interval);
        // An early first report, so RTT is measured within the first few hundred ms.
        let first_rtcp = now + config.rtcp_interval / 10;
        debug!(audio_ssrc = %audio_tx.params().ssrc, "media session built");
        // A probe's packet beside its padding: RTP header and abs-capture-time, as the
        // receiver measures it (decrypted) and the send budget spends it. Counting the
        // SRTP tag too (and SRTCP's index, which RTP never carries) paced each cluster
        // at ~93 % of its nominal rate as measured, ~82 % for the smallest packets.
        let probe = ProbeController::new(most_sent(config.max_bitrate), PROBE_HEADER);
        let mut session = Self {
            clock,
            rng,
            start: now,
            now,
            path: None,
            agreement: None,
            srtp: None,
            protected: BytesMut::new(),
            unprotected: BytesMut::new(),
            stamped: BytesMut::new(),
            audio_tx,
            red_tx: None,
            video_tx,
            audio_frames: 0,
            last_video_ticks: None,
            pacer,
            probe,
            target_bps: bwe.target_bps(),
            bwe,
            delay_bwe,
            send_times: SendTimes::default(),
            peer_estimate: None,
            remb_received: 0,
            held_estimate: None,
            feedback_at: now,
            feedback_timeouts: 0,
            estimates_missed: 0,
            collapse: None,
            collapse_cuts: 0,
            video_reports: 0,
            budget: SendBudget::unlimited(),
            rate_mark: rate::RateMark::new(now),
            audio_bps: 0,
            protection_bps: 0,
            sent_bps: 0,
            overhead_bytes: 0,
            overhead_bps: 0,
            streams: Streams::default(),
            jitter,
            frames,
            rtt: None,
            rtt_var: Duration::ZERO,
            audio_newest: None,
            video_tail: TailWatch::new(),
            next_rtcp: first_rtcp,
            estimate_sent_at: None,
            events: VecDeque::new(),
            unpaced: VecDeque::new(),
            refused: Refused::default(),
            unsent: 0,
            unsent_without_keys: 0,
            audio_latency: LatencyWindow::default(),
            video_latency: LatencyWindow::default(),
            peer_audio_loss: 0.0,
            red_known_link: false,
            peer_video_loss: 0.0,
            keyframes_requested_by_peer: 0,
            keyframe_asked: false,
            fec_rx: FecReceiver::new(),
            fec_on: false,
            fec_tx_pt: None,
            fec_loss: 0.0,
            video_reported: false,
            padding_received: PaddingReceived::default(),
            in_flight: InFlight::new(),
            arrivals: ArrivalRecord::new(now),
            window_full: false,
            window_applied: None,
            config,
        };
        session.update_rtx_round();
        session
    }

    /// Sizes the protection of our video for the peer's `loss`: its FEC, and whether
    /// each retransmission leaves twice.
    fn protect_video_against(&mut self, loss: f32) {
        self.fec_loss = loss;
        if let Some(video) = self.video_tx.as_mut() {
            video.set_rtx_twice(loss >= RTX_TWICE_LOSS);
        }
    }

    /// Until the peer's first report on our video, protects it against the loss of the
    /// peer's streams coming in: the peer's first report comes 0.5-1.5 s after its
    /// first (and a report lost on the way costs another second), and in the lab at
    /// 20 % loss half the freezes came in those first two seconds, unprotected (each
    /// retransmission sent once, no FEC). A path that loses what comes in most likely
    /// loses what goes out; a clean one costs nothing.
    ///
    /// Not under delay-based control before the peer's first estimate: the loss coming
    /// in then is mostly the peer's queue overflowing at its start, not a lossy path,
    /// and FEC sized on it filled our own queue before the estimate could come back
    /// (media/tests/capacity.rs at 300 kbit/s: the estimates of both sides dropped for
    /// 17 s of 20).
    fn protect_before_reports(&mut self) {
        if self.video_reported || (self.held_estimate.is_some() && self.peer_estimate.is_none()) {
            return;
        }
        let (expected, lost) = self.streams.iter().fold((0, 0), |(e, l), rx| {
            let c = rx.stream.counters();
            (e + c.expected, l + c.lost_before_recovery)
        });
        if expected >= PRIOR_MIN_PACKETS {
            self.protect_video_against(lost as f32 / expected as f32);
        }
    }

    /// The path the connectivity checks selected: from now on only datagrams from
    /// `path` are admitted (others are counted as `foreign_source`) and everything is
    /// sent there. Before a path is set nothing is admitted, played or sent. Calling it
    /// again moves the call to the new address (a path change).
    pub fn set_path(&mut self, path: SocketAddr) {
        if self.path != Some(path) {
            debug!(%path, "media path set");
            // A collapse of the old path says nothing of the new one.
            self.forget_collapse();
        }
        self.path = Some(path);
    }

    /// The selected path, if any.
    pub fn path(&self) -> Option<SocketAddr> {
        self.path
    }

    /// What was agreed with the peer, if set.
    pub fn agreement(&self) -> Option<&Agreement> {
        self.agreement.as_ref()
    }

    /// Our audio SSRC (also the RTCP sender SSRC).
    pub fn audio_ssrc(&self) -> Ssrc {
        self.audio_tx.params().ssrc
    }

    /// Our audio RTX SSRC (RFC 4588), to announce in the offer.
    pub fn audio_rtx_ssrc(&self) -> Ssrc {
        self.audio_tx.params().rtx_ssrc
    }

    /// Our video SSRC, if video is on.
    pub fn video_ssrc(&self) -> Option<Ssrc> {
        self.video_tx.as_ref().map(|v| v.params().ssrc)
    }

    /// Our video RTX SSRC, if video is on.
    pub fn video_rtx_ssrc(&self) -> Option<Ssrc> {
        self.video_tx.as_ref().map(|v| v.params().rtx_ssrc)
    }

    /// The payload type of our video FEC packets, to announce in the offer; `None` when
    /// video FEC is off in the config.
    pub fn video_fec_pt(&self) -> Option<Pt> {
        self.config
            .video_fec
            .then_some(self.config.video_fec_pt)
            .filter(|_| self.video_tx.is_some())
    }

    /// The audio track this session sends (payload types and SSRCs drawn from the seed).
    pub fn audio_track(&self) -> Track {
        track(&self.audio_tx)
    }

    /// The video track this session sends, if video is on.
    pub fn video_track(&self) -> Option<Track> {
        self.video_tx.as_ref().map(track)
    }

    /// Whether `kind` may be sent: before an agreement both may (the path gate still
    /// holds them), after it only what was agreed.
    fn may_send(&self, kind: MediaKind) -> Result<(), SessionError> {
        if self.path.is_none() {
            return Err(SessionError::NoPath);
        }
        match (kind, &self.agreement) {
            (_, None) => Ok(()),
            (MediaKind::Audio, Some(a)) if a.audio.is_none() => {
                Err(SessionError::NotAgreed("audio"))
            }
            (MediaKind::Video, Some(a)) if a.video.is_none() => {
                Err(SessionError::NotAgreed("video"))
            }
            _ => Ok(()),
        }
    }

    /// The smoothed RTT, or the configured initial guess before the first measurement.
    pub fn rtt(&self) -> Duration {
        self.rtt.unwrap_or(self.config.initial_rtt)
    }

    fn advance_to(&mut self, now: Instant) -> Instant {
        // Time never goes backwards inside the session.
        self.now = self.now.max(now);
        self.now
    }

    fn push_event(&mut self, event: Event) {
        if self.events.len() >= MAX_QUEUE {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    fn push_unpaced(&mut self, datagram: Bytes) {
        if self.unpaced.len() >= MAX_QUEUE {
            self.unpaced.pop_front();
        }
        self.unpaced.push_back(datagram);
    }

    /// Sends one encoded Opus frame captured at `capture_time`.
    pub fn send_audio(
        &mut self,
        now: Instant,
        frame: &[u8],
        capture_time: Instant,
    ) -> Result<(), Error> {
        self.send_audio_with_copy(now, frame, None, capture_time)
    }

    /// Whether later packets repeat earlier audio frames now (RFC 2198 redundancy
    /// beyond what Opus FEC covers): the encoder should then make a lower-bitrate
    /// `copy` of each frame for [`Session::send_audio_with_copy`].
    pub fn repeats_audio(&self) -> bool {
        self.red_tx.as_ref().is_some_and(RedSender::repeats)
    }

    /// Sends one encoded Opus frame captured at `capture_time`, with the copy of it
    /// (the same audio encoded at a lower bitrate) that later packets are to repeat
    /// instead of the frame itself.
    pub fn send_audio_with_copy(
        &mut self,
        now: Instant,
        frame: &[u8],
        copy: Option<&[u8]>,
        capture_time: Instant,
    ) -> Result<(), Error> {
        let now = self.advance_to(now);
        self.may_send(MediaKind::Audio)?;
        let payload = opus::packetize(frame, self.config.mtu)?;
        let ticks = self.audio_frames * self.jitter.frame_ticks();
        let meta = FrameMeta {
            ticks,
            capture: capture_time,
            capture_ntp: self.clock.ntp(capture_time),
        };
        let mtu = self.config.mtu;
        let copy = copy.map(Bytes::copy_from_slice);
        let room = self.budget.room(now, Protection::AudioRed);
        let red = match self.red_tx.as_mut() {
            Some(r) => {
                let pt = r.pt();
                let (red, short) = r.payload(ticks, &payload, copy.as_ref(), (mtu, room));
                if short.blocks > 0 {
                    self.budget
                        .refused(Protection::AudioRed, short.blocks, short.bytes);
                }
                red.map(|p| (pt, p))
            }
            None => None,
        };
        trace!(
            target: "audio_timing",
            frame = self.audio_frames,
            age_us = now.saturating_duration_since(capture_time).as_micros() as u64,
            "audio frame sent"
        );
        let d = self.audio_tx.packetize_audio(now, meta, payload, red)?;
        self.budget.spend(now, d.len());
        self.pacer.push(Class::Audio, d);
        self.audio_frames += 1;
        Ok(())
    }

    /// Sends one H.264 access unit (Annex-B) captured at `capture_time`.
    pub fn send_video(
        &mut self,
        now: Instant,
        access_unit: &[u8],
        capture_time: Instant,
        keyframe: bool,
    ) -> Result<(), Error> {
        let now = self.advance_to(now);
        self.may_send(MediaKind::Video)?;
        self.protect_before_reports();
        let mtu = self.config.mtu;
        let Some(video) = self.video_tx.as_mut() else {
            return Err(Error::VideoDisabled);
        };
        let payloads = h264::packetize(access_unit, mtu);
        if payloads.is_empty() {
            return Err(crate::payload::PayloadError::Empty.into());
        }
        let since = capture_time.saturating_duration_since(self.start);
        let mut ticks = MediaTime::from_duration(since, MediaTime::VIDEO_RATE).ticks();
        if let Some(last) = self.last_video_ticks {
            // Distinct frames need distinct timestamps (RFC 6184 §5.1).
            ticks = ticks.max(last + 1);
        }
        self.last_video_ticks = Some(ticks);
        let meta = FrameMeta {
            ticks,
            capture: capture_time,
            capture_ntp: self.clock.ntp(capture_time),
        };
        let first = video.next_seq();
        trace!(keyframe, len = access_unit.len(), %first, packets = payloads.len(), ticks, "video frame");
        if keyframe && std::mem::take(&mut self.keyframe_asked) {
            // The peer asked for this keyframe: its buffer skipped to the next one and
            // decodes nothing before it. The frames still waiting in the pacer (after a
            // capacity drop, a backlog of a second or more, which held the keyframe
            // behind it as long) and their repairs would only arrive to be thrown away.
            // An earlier keyframe still leaving is kept, and resent from.
            let (packets, bytes, leaving) = self.pacer.drop_superseded();
            video.supersede_before(leaving.unwrap_or(first), packets, bytes);
            // The send budget paid for them as they were made; they never leave.
            self.budget.refund(now, bytes as usize);
            if packets > 0 {
                debug!(packets, bytes, "queued video superseded by a keyframe");
            }
        }
        let protected = self.fec_tx_pt.map(|pt| (pt, payloads.clone()));
        for d in video.packetize(now, meta, payloads)? {
            self.budget.spend(now, d.len());
            if keyframe {
                self.pacer.push_keyframe(first, d);
            } else {
                self.pacer.push(Class::Video, d);
            }
        }
        if let Some((pt, payloads)) = protected {
            let loss = self.fec_loss;
            // As many parity packets as the budget has room for, the groups' in order;
            // a parity packet is about as long as the longest it protects.
            let size = payloads.iter().map(Bytes::len).max().unwrap_or(0) + FEC_OVERHEAD;
            let mut room = self.budget.room(now, Protection::VideoFec);
            let mut refused = 0;
            let parity = |n| {
                let wanted = fec::parity_count(n, loss, keyframe);
                let fits = wanted.min(room / size);
                room -= fits * size;
                refused += wanted - fits;
                fits
            };
            let fec = video.protect(pt, first, meta, &payloads, parity);
            trace!(%first, parity = fec.len(), refused, "video fec");
            for d in fec {
                if self.budget.admit(now, Protection::VideoFec, d.len()) {
                    self.pacer.push(Class::Video, d);
                }
            }
            if refused > 0 {
                self.budget
                    .refused(Protection::VideoFec, refused as u64, refused * size);
            }
        }
        self.start_probing();
        Ok(())
    }

    /// Media flows and the peer's first estimate came: under delay-based control, and
    /// where the peer takes our video RTX (the probes' stream), the call's first probe
    /// cluster goes, at a multiple of that estimate (see `send::probe`).
    ///
    /// Not before the first estimate, as libwebrtc does from its start: ours starts at
    /// the configured bitrate (1 Mbit/s in the lab), and a 3 Mbit/s burst beside it into
    /// a 300 kbit/s link kept both directions' queues full, which dropped the estimates
    /// (REMB) that would have slowed the senders: in one lab call (seed 2) the first
    /// reached its sender after 2 s, and 24 % of what was sent was lost (5 % without
    /// probes).
    pub(super) fn start_probing(&mut self) {
        let rtx = self
            .agreement
            .and_then(|a| a.video)
            .is_some_and(|k| k.send.rtx.is_some());
        let media = self.video_tx.as_ref().is_some_and(SendStream::has_sent);
        if self.probe.started() || !rtx || !media || !self.config.probe || !self.delay_control() {
            return;
        }
        let Some(rate) = self.peer_estimate else {
            return;
        };
        debug!(rate, "probing from the first estimate");
        self.probe.start(rate);
    }

    /// The next probe packet, if one is due: padding on the video RTX stream stamped
    /// with its send time, spent from the send budget (it is sent above the estimate on
    /// purpose, briefly; what follows it waits the longer). Past the congestion window
    /// too: it counts in flight, but a cluster the window cut short measured nothing
    /// (held, the 2.5 Mbit/s link's use fell from 82 to 70 % and 84 to 74 % in two
    /// seeds of eight).
    fn poll_probe(&mut self) -> Option<Bytes> {
        let now = self.now;
        let packet = self.probe.poll(now)?;
        let ntp = self.clock.ntp(now);
        let video = self.video_tx.as_mut()?;
        match video.padding(packet.cluster, ntp, packet.padding) {
            Ok(d) => {
                self.budget.spend(now, d.len());
                Some(d)
            }
            Err(e) => {
                debug!(error = %e, "could not build a probe");
                None
            }
        }
    }

    /// The playout clock asks for the next audio frame slot. Silence until a path is
    /// selected.
    #[must_use]
    pub fn pull_audio(&mut self, now: Instant) -> Playout {
        let now = self.advance_to(now);
        if self.path.is_none() {
            return Playout::Silence;
        }
        let playout = self.jitter.pull(now);
        if let Some(c) = playout.capture_time() {
            self.audio_latency.push(now.saturating_duration_since(c));
        }
        playout
    }

    /// The video decoder lost its picture: ask the peer for a keyframe, no more often
    /// than the PLI interval allows.
    pub fn request_keyframe(&mut self, now: Instant) {
        let now = self.advance_to(now);
        self.frames.handle_decoder_lost(now);
        self.drain_video(now);
    }

    /// Runs timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.advance_to(now);
        self.update_rtx_round();
        let rtt = self.rtt();
        let mut nacks = Vec::new();
        self.check_feedback(now);
        self.detect_overdue_audio(now);
        self.detect_overdue_video(now);
        for rx in self.streams.iter_mut() {
            // Video only, and not under delay-based control: the copies are outside the
            // send budget, and on a narrow lossy link (media/tests/capacity.rs) they
            // pushed what was sent 10-20 % over the estimate, and audio's extra requests
            // were refused before the video's FEC.
            let lossy = rx.kind == MediaKind::Video
                && !self.config.delay_bwe
                && rx.stream.recent_loss() >= NackGenerator::LOSSY;
            rx.nack.set_copies(if lossy { 2 } else { 1 });
            let seqs = rx.nack.poll_nack(now, rtt);
            if !seqs.is_empty() {
                nacks.push((rx.stream.ssrc(), seqs));
            }
        }
        for (media, seqs) in nacks {
            self.send_nack(media, &seqs);
        }
        self.frames.handle_timeout(now);
        self.drain_video(now);
        self.send_transport_feedback(now);
        if self.estimate_due_at().is_some_and(|at| now >= at) {
            // The next is due an interval on, whether or not this one can go.
            self.estimate_sent_at = Some(now);
            self.send_estimate();
        }
        if now >= self.next_rtcp {
            self.send_reports(now);
            // RFC 3550 §6.3.1: dither the interval to [0.5, 1.5] × to avoid sync.
            let factor = 0.5 + self.rng.unit();
            self.next_rtcp = now + self.config.rtcp_interval.mul_f64(factor);
        }
        self.hold_for_window();
    }

    /// When the packet after the newest audio packet becomes overdue: one frame after
    /// the newest arrived, plus the jitter allowance. At most three frames are chased
    /// this way; a longer silence is the peer pausing, not loss.
    fn audio_overdue_at(&self) -> Option<(crate::types::SeqNo, Instant)> {
        let (newest, at) = self.audio_newest?;
        let rx = self.streams.kind(MediaKind::Audio)?;
        if !rx.nack_on {
            return None;
        }
        let allowance = rx.nack.reorder_allowance() + self.audio_jitter_allowance();
        let frame = self.config.audio_frame;
        let awaited = rx.nack.awaited_after(newest);
        let next = u32::try_from(awaited).ok().filter(|&k| k < 3)?;
        Some((
            newest + u64::from(next) + 1,
            at + frame * (next + 1) + allowance,
        ))
    }

    /// When the packet after the newest video packet becomes overdue, if that packet
    /// did not end its frame (see [`TailWatch`]). The path's jitter is the audio's:
    /// audio leaves unpaced as it is encoded, while a video frame's packets spread
    /// over the pacing and would make the video stream's own jitter that of the pacer.
    fn video_overdue_at(&self) -> Option<(crate::types::SeqNo, Instant)> {
        let rx = self.streams.kind(MediaKind::Video)?;
        let newest = self.video_tail.newest()?;
        // Only while nothing newer came (a retransmission or FEC rebuild of a later
        // one, say) and the next one is not awaited already.
        if !rx.nack_on || rx.stream.highest() != Some(newest) || rx.nack.awaited_after(newest) > 0 {
            return None;
        }
        // On a path seen reordering, an overdue packet is mostly a late one: its NACK
        // would only draw a duplicate (media/tests/robustness.rs, reordering).
        if rx.nack.reorder_allowance() > self.config.nack_reorder_allowance {
            return None;
        }
        // Not before the jitter estimate rests on a second of audio: from zero, it reads
        // a packet held back by the path's jitter as lost (a clean link's first frames
        // drew retransmissions).
        let audio = self.streams.kind(MediaKind::Audio)?;
        if audio.stream.counters().packets < JITTER_EVIDENCE {
            return None;
        }
        let allowance = rx.nack.reorder_allowance() + self.audio_jitter_allowance();
        self.video_tail.overdue(allowance)
    }

    fn detect_overdue_video(&mut self, now: Instant) {
        let Some((seq, due)) = self.video_overdue_at() else {
            return;
        };
        if due > now {
            return;
        }
        self.video_tail.chased();
        let deadline = now + self.config.video_max_wait;
        if let Some(rx) = self.streams.kind_mut(MediaKind::Video) {
            trace!(%seq, "video packet overdue");
            rx.nack.on_gap(now, seq, seq + 1, |_| Some(deadline));
        }
    }

    fn audio_reorder_allowance(&self) -> Duration {
        self.streams
            .kind(MediaKind::Audio)
            .map_or(self.config.nack_reorder_allowance, |rx| {
                rx.nack.reorder_allowance()
            })
    }

    fn audio_jitter_allowance(&self) -> Duration {
        self.streams
            .kind(MediaKind::Audio)
            .map_or(Duration::ZERO, |rx| rx.stream.jitter() * 2)
    }

    fn detect_overdue_audio(&mut self, now: Instant) {
        // At most three frames are chased (see `audio_overdue_at`); the bound also
        // guarantees termination should the generator refuse an entry.
        for _ in 0..3 {
            let Some((seq, due)) = self.audio_overdue_at() else {
                return;
            };
            if due > now {
                return;
            }
            let jitter = &self.jitter;
            let Some(rx) = self.streams.kind_mut(MediaKind::Audio) else {
                return;
            };
            trace!(%seq, "audio packet overdue");
            rx.nack.on_gap(now, seq, seq + 1, |s| jitter.deadline(s));
        }
    }

    /// The audio buffer's allowance for one retransmission round: a missing packet is
    /// found overdue one jitter allowance after its expected arrival (see
    /// `audio_overdue_at`), NACKed after the reorder allowance, and its retransmission
    /// takes an RTT, plus the RTT's variation (RFC 6298) as margin.
    fn update_rtx_round(&mut self) {
        let nack = match self.streams.kind(MediaKind::Audio) {
            Some(rx) => rx.nack_on,
            None => self.config.nack,
        };
        let round = if nack {
            self.rtt()
                + self.rtt_var
                + self.audio_reorder_allowance()
                + self.audio_jitter_allowance()
                + AUDIO_RTX_MARGIN
        } else {
            Duration::ZERO
        };
        self.jitter.set_rtx_round(round);
    }

    /// The next datagram to send.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        loop {
            // Unpaced datagrams are RTCP: no stream counts them.
            let (contents, counted) = match self.unpaced.pop_front() {
                Some(d) => (d, 0),
                None => {
                    // Probes keep their own pace (their cluster's rate), beside the
                    // pacer's.
                    // The 4-8 bytes of a send time count as overhead, as SRTP's tag.
                    match self.poll_probe() {
                        Some(d) => {
                            let len = d.len();
                            (self.stamp(d, false), len)
                        }
                        None => {
                            self.hold_for_window();
                            let d = self.pacer.poll(self.now)?;
                            let len = d.len();
                            (self.stamp(d, true), len)
                        }
                    }
                }
            };
            let Some(destination) = self.path else {
                self.unsent += 1;
                trace!("no path yet; datagram dropped");
                continue;
            };
            if let Some(contents) = self.protect(contents) {
                let overhead = contents.len().saturating_sub(counted);
                self.overhead_bytes += overhead as u64;
                // RTCP (transport-cc feedback every 50 ms among it) and SRTP's tags load
                // the link as media does: the send budget pays for them, so protection
                // makes room (the peer's estimate counts RTP only; unpaid, what left
                // ran 11 % over the estimate on a 300 kbit/s link).
                self.budget.spend(self.now, overhead);
                return Some(Transmit {
                    destination,
                    contents,
                });
            }
        }
    }

    /// Stamps an RTP datagram as it leaves, where the peer asked: with its send time,
    /// now (`send_time`: paced packets; it estimates the delay of every packet it gets
    /// from us), and its transport-wide sequence number (every packet: its feedback
    /// tells what is in flight).
    fn stamp(&mut self, datagram: Bytes, send_time: bool) -> Bytes {
        let agreement = self.agreement;
        let send_time_id = agreement
            .and_then(|a| a.send_time_ext_id)
            .filter(|_| send_time);
        // Only what can leave is numbered (no path yet: it is dropped).
        let seq_id = agreement
            .and_then(|a| a.transport_seq_ext_id)
            .filter(|_| self.path.is_some());
        if send_time_id.is_none() && seq_id.is_none() {
            return datagram;
        }
        if self.stamped.capacity() < datagram.len() + 12 {
            self.stamped.reserve(PROTECTED_BLOCK);
        }
        let time = wire::AbsSendTime::from_ntp(self.clock.ntp(self.now)).to_bytes();
        let seq = seq_id.map(|_| {
            self.in_flight
                .on_send(self.now, datagram.len())
                .to_be_bytes()
        });
        let both;
        let elements: &[(u8, &[u8])] = match (send_time_id, seq_id.zip(seq.as_ref())) {
            (Some(t), Some((s, seq))) => {
                both = [(t, &time[..]), (s, &seq[..])];
                &both
            }
            (Some(t), None) => &[(t, &time[..])],
            (None, Some((s, seq))) => &[(s, &seq[..])],
            (None, None) => &[],
        };
        match wire::add_extensions(&datagram, elements, &mut self.stamped) {
            Ok(()) => self.stamped.split().freeze(),
            Err(e) => {
                // Only our own packets are stamped: this is a bug, not the network's.
                self.stamped.clear();
                debug!(error = %e, "send time not stamped");
                datagram
            }
        }
    }

    /// The congestion window (see `send::inflight`): video and retransmissions wait
    /// while what the peer has not reported on exceeds what the estimate carries in a
    /// feedback round trip and a margin. Only where the peer sends transport-cc feedback
    /// and under an estimate.
    ///
    /// Where the peer's feedback is lost at random on the way (`InFlight::lossy_return`),
    /// bytes in flight alone are no sign of a congested path, and the window holds only
    /// while something else shows one: the last feedback saw our packets queue, or the
    /// feedback has been silent longer than its loss explains (`rate::feedback_stopped`).
    /// At 20 % loss the loss rule lets video and its protection climb to some 3.5 Mbit/s
    /// under a 4 Mbit/s estimate, and two or three feedbacks lost in a row left the
    /// window full on a path with no queue: 3-15 closings a call (lab, 640x480), each
    /// holding the repairs the loss needed and pushing the encoder down to what the late
    /// acknowledgements showed, often the least, where it skipped frames. Elsewhere bytes
    /// in flight stay the signal: on the lab's 2.5 → 0.5 Mbit/s drop they close the
    /// window before any feedback can tell of the drop (waiting for a queue or a silence
    /// there lost 1.70 % after the warm-up against 1.13 %).
    ///
    /// The send budget hears the same: while nothing shows congestion and the path's
    /// own loss is measured as random, protection may borrow more (see `send::budget`).
    fn hold_for_window(&mut self) {
        self.in_flight.expire(self.now);
        let congested = !self.in_flight.lossy_return()
            || self.in_flight.queue_seen()
            || self.feedback_stopped(self.now);
        let full = self.in_flight.is_full(self.held_estimate, congested);
        self.budget
            .set_random_loss(!congested && self.in_flight.random_loss());
        self.pacer.set_held(full);
        // The encoder's target follows the window (see `rate`): when it closes, opens,
        // and while it stays closed, as acknowledgements come or fail to (each
        // feedback interval).
        let feedbacks = self.in_flight.counters().feedbacks;
        let due = self
            .window_applied
            .is_none_or(|(at, n)| n != feedbacks || self.now >= at + FEEDBACK_INTERVAL);
        if full != self.window_full || (full && due) {
            self.window_full = full;
            self.window_applied = full.then_some((self.now, feedbacks));
            self.apply_target(self.now);
        }
    }

    /// Protects one outgoing datagram with the agreed keys. Nothing leaves in clear
    /// unless the agreement says so: before an agreement, datagrams are dropped.
    fn protect(&mut self, datagram: Bytes) -> Option<Bytes> {
        let result = match (&mut self.srtp, &self.agreement) {
            (Some(srtp), _) => {
                // Room for a burst of full-size datagrams, so most need no allocation.
                if self.protected.capacity() < datagram.len() + MAX_OVERHEAD {
                    self.protected.reserve(PROTECTED_BLOCK);
                }
                srtp.protect_into(&datagram, &mut self.protected)
                    .map(|()| self.protected.split().freeze())
            }
            (None, Some(a)) if a.srtp.is_none() => Ok(datagram),
            (None, _) => {
                self.unsent_without_keys += 1;
                trace!("no keys agreed yet; datagram dropped");
                return None;
            }
        };
        match result {
            Ok(protected) => Some(protected),
            Err(e) => {
                self.unsent_without_keys += 1;
                debug!(error = %e, "datagram dropped");
                None
            }
        }
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call `handle_timeout` next, and why.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Timeout> {
        let nack = self
            .streams
            .iter()
            .filter_map(|rx| rx.nack.poll_timeout())
            .chain(self.audio_overdue_at().map(|(_, at)| at))
            .chain(self.video_overdue_at().map(|(_, at)| at))
            .min();
        // While the window is full, the oldest packet in flight leaving it by age.
        let window = self
            .window_full
            .then(|| self.in_flight.next_expiry())
            .flatten();
        let probe = self.probe.poll_timeout(self.now);
        let candidates = [
            (self.pacer.poll_timeout(self.now), Reason::Pacer),
            (window, Reason::Pacer),
            (self.arrivals.poll_timeout(), Reason::Rtcp),
            (probe, Reason::Pacer),
            (nack, Reason::Nack),
            (self.frames.poll_timeout(), Reason::VideoBuffer),
            (Some(self.next_rtcp), Reason::Rtcp),
            (self.estimate_due_at(), Reason::Rtcp),
        ];
        candidates
            .into_iter()
            .filter_map(|(at, reason)| at.map(|at| Timeout { at, reason }))
            .min_by_key(|t| t.at)
    }

    /// Ends the call: queues an RTCP BYE (RFC 3550 §6.6) for our streams, sent by the
    /// next `poll_transmit`. Media sent afterwards is still sent; stop sending first.
    pub fn close(&mut self, now: Instant) {
        let now = self.advance_to(now);
        self.send_goodbye(now);
    }

    /// Everything measured so far.
    pub fn stats(&self) -> Stats {
        let elapsed = self
            .now
            .saturating_duration_since(self.start)
            .as_secs_f64()
            .max(1e-3);
        let rx_stats = |rx: Option<&Incoming>| {
            rx.map_or_else(RecvStreamStats::default, |rx| {
                let secs = self
                    .now
                    .saturating_duration_since(rx.started.unwrap_or(self.now))
                    .as_secs_f64()
                    .max(1e-3);
                let counters = rx.stream.counters();
                RecvStreamStats {
                    counters,
                    jitter: rx.stream.jitter(),
                    nack: rx.nack.counters(),
                    bitrate_bps: (counters.bytes as f64 * 8.0 / secs) as u64,
                }
            })
        };
        let send_audio = self.audio_tx.counters();
        let send_video = self
            .video_tx
            .as_ref()
            .map(SendStream::counters)
            .unwrap_or_default();
        let sent_bytes = send_audio.bytes
            + send_audio.rtx_bytes
            + send_video.bytes
            + send_video.rtx_bytes
            + send_video.fec_bytes;
        Stats {
            rtt: self.rtt,
            target_bitrate_bps: self.target_bps,
            loss_target_bps: self.bwe.target_bps(),
            peer_estimate_bps: self.peer_estimate,
            remb_received: self.remb_received,
            held_estimate_bps: self.held_estimate,
            probe: self.probe.counters(),
            padding_received: self.padding_received,
            feedback_timeouts: self.feedback_timeouts,
            estimates_missed: self.estimates_missed,
            collapse_cuts: self.collapse_cuts,
            delay_bwe: self.delay_bwe.stats(),
            budget: self.budget.counters(),
            in_flight: self.in_flight.counters(),
            transport_feedback: self.arrivals.counters(),
            steady_loss: self.bwe.baseline(),
            send_audio,
            red_distance: self.red_tx.as_ref().map_or(0, RedSender::distance),
            send_video,
            send_bitrate_bps: (sent_bytes as f64 * 8.0 / elapsed) as u64,
            peer_audio_loss: self.peer_audio_loss,
            peer_video_loss: self.peer_video_loss,
            keyframes_requested_by_peer: self.keyframes_requested_by_peer,
            recv_audio: rx_stats(self.streams.kind(MediaKind::Audio)),
            recv_video: rx_stats(self.streams.kind(MediaKind::Video)),
            audio_playout: self.jitter.stats(),
            video_playout: self.frames.stats(),
            video_fec: self.fec_rx.counters(),
            audio_latency: self.audio_latency.stats(),
            video_latency: self.video_latency.stats(),
            refused: self.refused,
            unsent_before_path: self.unsent,
            unsent_without_keys: self.unsent_without_keys,
        }
    }
}

fn track(stream: &SendStream) -> Track {
    let p = stream.params();
    Track {
        pt: p.pt,
        ssrc: p.ssrc,
        rtx: Some((p.rtx_pt, p.rtx_ssrc)),
    }
}
