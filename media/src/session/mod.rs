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

mod config;
mod event;
mod rtcp;
mod stats;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant, UNIX_EPOCH};

use bytes::Bytes;
use tracing::{debug, trace};

pub use self::config::SessionConfig;
pub use self::event::{Event, Playout, Reason, Timeout, Transmit};
use self::stats::LatencyWindow;
pub use self::stats::{DropStats, LatencyStats, RecvStreamStats, Stats};
use crate::Error;
use crate::clock::WallClock;
use crate::jitter::audio::AudioBuffer;
use crate::jitter::video::FrameBuffer;
use crate::payload::{h264, opus};
use crate::recv::RecvStream;
use crate::recv::nack::NackGenerator;
use crate::rng::Rng;
use crate::send::bwe::LossBasedBwe;
use crate::send::pacer::{Class, Pacer};
use crate::send::{FrameMeta, SendStream, StreamParams};
use crate::types::{MediaTime, Pt, Ssrc};
use crate::wire::{self, Kind, RtpPacket};

/// The most events or unpaced datagrams queued before the oldest are dropped (an
/// application that never polls must not grow memory without bound).
const MAX_QUEUE: usize = 4096;
/// Silence after which a new SSRC may take over an incoming stream.
const SSRC_TIMEOUT: Duration = Duration::from_secs(2);
/// Slack in the audio retransmission allowance for processing and pacing.
const AUDIO_RTX_MARGIN: Duration = Duration::from_millis(10);

/// One incoming stream: sequence tracking and its NACK generator.
#[derive(Debug)]
struct Incoming {
    stream: RecvStream,
    nack: NackGenerator,
    rtx_ssrc: Option<Ssrc>,
    started: Instant,
    /// When the last packet of this stream (original or RTX) arrived.
    last_seen: Instant,
}

/// A call's media session. See the module docs for the run loop.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    clock: WallClock,
    rng: Rng,
    start: Instant,
    now: Instant,
    remote: Option<SocketAddr>,
    audio_tx: SendStream,
    video_tx: Option<SendStream>,
    audio_frames: u64,
    last_video_ticks: Option<u64>,
    pacer: Pacer,
    bwe: LossBasedBwe,
    audio_rx: Option<Incoming>,
    video_rx: Option<Incoming>,
    jitter: AudioBuffer,
    frames: FrameBuffer,
    rtt: Option<Duration>,
    rtt_var: Duration,
    /// The newest audio packet (extended sequence number) and when it arrived: audio
    /// is periodic, so a packet overdue by more than the jitter allowance is NACKed
    /// before a later one reveals the gap (tail-loss detection).
    audio_newest: Option<(crate::types::SeqNo, Instant)>,
    next_rtcp: Instant,
    events: VecDeque<Event>,
    unpaced: VecDeque<Bytes>,
    dropped: DropStats,
    audio_latency: LatencyWindow,
    video_latency: LatencyWindow,
    peer_audio_loss: f32,
    peer_video_loss: f32,
    keyframes_requested_by_peer: u64,
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
        let mut session = Self {
            clock,
            rng,
            start: now,
            now,
            remote: None,
            audio_tx,
            video_tx,
            audio_frames: 0,
            last_video_ticks: None,
            pacer,
            bwe,
            audio_rx: None,
            video_rx: None,
            jitter,
            frames,
            rtt: None,
            rtt_var: Duration::ZERO,
            audio_newest: None,
            next_rtcp: first_rtcp,
            events: VecDeque::new(),
            unpaced: VecDeque::new(),
            dropped: DropStats::default(),
            audio_latency: LatencyWindow::default(),
            video_latency: LatencyWindow::default(),
            peer_audio_loss: 0.0,
            peer_video_loss: 0.0,
            keyframes_requested_by_peer: 0,
            config,
        };
        session.update_rtx_round();
        session
    }

    /// Where datagrams go. Until it is set, the source of the first valid datagram
    /// from the peer is used.
    pub fn set_remote(&mut self, remote: SocketAddr) {
        self.remote = Some(remote);
    }

    /// Our audio SSRC (also the RTCP sender SSRC).
    pub fn audio_ssrc(&self) -> Ssrc {
        self.audio_tx.params().ssrc
    }

    /// Our video SSRC, if video is on.
    pub fn video_ssrc(&self) -> Option<Ssrc> {
        self.video_tx.as_ref().map(|v| v.params().ssrc)
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

    /// Feeds one datagram received from `from`.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let now = self.advance_to(now);
        match wire::classify(data) {
            Kind::Foreign => {
                self.dropped.foreign += 1;
                trace!(len = data.len(), "foreign datagram dropped");
            }
            Kind::Rtcp => match wire::parse_rtcp(data) {
                Ok(packets) => {
                    self.remote.get_or_insert(from);
                    self.handle_rtcp(now, packets);
                }
                Err(e) => {
                    self.dropped.malformed_rtcp += 1;
                    debug!(error = %e, "malformed RTCP dropped");
                }
            },
            Kind::Rtp => match wire::parse_rtp(data, self.config.capture_ext_id) {
                Ok(packet) => {
                    if self.handle_rtp(now, packet, data.len()) {
                        self.remote.get_or_insert(from);
                    }
                }
                Err(e) => {
                    self.dropped.malformed_rtp += 1;
                    debug!(error = %e, "malformed RTP dropped");
                }
            },
        }
    }

    /// Routes an RTP packet to its stream; false if it belongs to none.
    fn handle_rtp(&mut self, now: Instant, packet: RtpPacket, len: usize) -> bool {
        let pt = packet.header.pt;
        let c = &self.config;
        let (is_video, is_rtx) = if pt == c.audio_pt {
            (false, false)
        } else if pt == c.audio_rtx_pt {
            (false, true)
        } else if pt == c.video_pt && c.video {
            (true, false)
        } else if pt == c.video_rtx_pt && c.video {
            (true, true)
        } else {
            self.dropped.unknown_stream += 1;
            return false;
        };
        let reorder = c.nack_reorder_allowance;
        let retries = c.nack_max_retries;
        let repeat = c.nack_first_repeat;
        let rate = if is_video {
            MediaTime::VIDEO_RATE
        } else {
            MediaTime::AUDIO_RATE
        };
        let slot = if is_video {
            &mut self.video_rx
        } else {
            &mut self.audio_rx
        };
        let ssrc = packet.header.ssrc;
        // A new SSRC on a stream silent for a while is the peer restarting it (a new
        // encoder, a rejoin): follow it. Otherwise a stranger's packets are ignored.
        let restarted = slot.as_ref().is_some_and(|rx| {
            !is_rtx
                && rx.stream.ssrc() != ssrc
                && now.saturating_duration_since(rx.last_seen) > SSRC_TIMEOUT
        });
        if restarted {
            debug!(%ssrc, video = is_video, "peer restarted its stream");
            *slot = None;
            if is_video {
                self.frames.reset();
            } else {
                self.jitter.reset();
                self.audio_newest = None;
            }
        }
        let slot = if is_video {
            &mut self.video_rx
        } else {
            &mut self.audio_rx
        };
        let incoming = match slot {
            Some(incoming) => incoming,
            None if !is_rtx => slot.insert(Incoming {
                stream: RecvStream::new(ssrc, rate),
                nack: NackGenerator::new(reorder, repeat, retries),
                rtx_ssrc: None,
                started: now,
                last_seen: now,
            }),
            None => {
                // Retransmission before any original: nothing to attach it to.
                self.dropped.unknown_stream += 1;
                return false;
            }
        };
        let (seq, payload) = if is_rtx {
            if *incoming.rtx_ssrc.get_or_insert(ssrc) != ssrc {
                self.dropped.unknown_stream += 1;
                return false;
            }
            let [a, b, rest @ ..] = &packet.payload[..] else {
                self.dropped.bad_payload += 1;
                return true;
            };
            let osn = u16::from_be_bytes([*a, *b]);
            let offset = packet.payload.len() - rest.len();
            (osn, packet.payload.slice(offset..))
        } else {
            if incoming.stream.ssrc() != ssrc {
                self.dropped.unknown_stream += 1;
                return false;
            }
            (packet.header.seq, packet.payload.clone())
        };
        incoming.last_seen = now;
        let resyncs = incoming.stream.counters().resyncs;
        let arrival = incoming
            .stream
            .on_packet(now, seq, packet.header.timestamp, !is_rtx, len);
        if incoming.stream.counters().resyncs != resyncs {
            // The sequence jumped: what was missing before is meaningless now.
            incoming.nack.clear();
            if !is_video {
                self.audio_newest = None;
            }
        }
        let Ok(arrival) = arrival else {
            return true;
        };
        incoming.nack.on_received(now, arrival.seq, !is_rtx);
        let capture = packet.header.capture.and_then(|c| self.clock.instant(c.0));
        if let Some((start, end)) = arrival.gap.filter(|_| self.config.nack) {
            if is_video {
                let deadline = now + self.config.video_max_wait;
                incoming.nack.on_gap(now, start, end, |_| Some(deadline));
            } else {
                let jitter = &self.jitter;
                incoming
                    .nack
                    .on_gap(now, start, end, |s| jitter.deadline(s));
            }
        }
        if is_video {
            self.frames.push(
                now,
                arrival.seq,
                arrival.ts,
                packet.header.marker,
                payload,
                capture,
            );
            self.drain_video(now);
        } else {
            if !is_rtx && self.audio_newest.is_none_or(|(s, _)| arrival.seq > s) {
                self.audio_newest = Some((arrival.seq, now));
            }
            match opus::depacketize(payload) {
                Ok(frame) => {
                    self.jitter
                        .push(now, arrival.seq, arrival.ts, frame, capture, !is_rtx);
                }
                Err(_) => self.dropped.bad_payload += 1,
            }
        }
        true
    }

    /// Moves decodable video frames to events and sends a PLI if the buffer wants one.
    fn drain_video(&mut self, now: Instant) {
        while let Some(frame) = self.frames.poll_frame() {
            if let Some(c) = frame.capture_time {
                self.video_latency.push(now.saturating_duration_since(c));
            }
            self.push_event(Event::VideoFrame {
                data: frame.data,
                capture_time: frame.capture_time,
                keyframe: frame.keyframe,
                rtp_time: frame.rtp_time,
            });
        }
        if let (Some(from), Some(rx)) = (self.frames.wanted_from(), self.video_rx.as_mut()) {
            rx.nack.forget_before(from);
        }
        if self.frames.take_keyframe_request() {
            self.send_pli();
        }
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
        let now = self.advance_to(now);
        let payload = opus::packetize(frame, self.config.mtu)?;
        let ticks = self.audio_frames * self.jitter.frame_ticks();
        let meta = FrameMeta {
            ticks,
            capture: capture_time,
            capture_ntp: self.clock.ntp(capture_time),
        };
        for d in self.audio_tx.packetize(now, meta, vec![payload])? {
            self.pacer.push(Class::Audio, d);
        }
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
        trace!(keyframe, len = access_unit.len(), "video frame");
        for d in video.packetize(now, meta, payloads)? {
            self.pacer.push(Class::Video, d);
        }

        Ok(())
    }

    /// The playout clock asks for the next audio frame slot.
    #[must_use]
    pub fn pull_audio(&mut self, now: Instant) -> Playout {
        let now = self.advance_to(now);
        let playout = self.jitter.pull(now);
        if let Playout::Frame {
            capture_time: Some(c),
            ..
        }
        | Playout::Fec {
            capture_time: Some(c),
            ..
        } = playout
        {
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
        self.detect_overdue_audio(now);
        for rx in [&mut self.audio_rx, &mut self.video_rx]
            .into_iter()
            .flatten()
        {
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
        if now >= self.next_rtcp {
            self.send_reports(now);
            // RFC 3550 §6.3.1: dither the interval to [0.5, 1.5] × to avoid sync.
            let factor = 0.5 + self.rng.unit();
            self.next_rtcp = now + self.config.rtcp_interval.mul_f64(factor);
        }
    }

    /// When the packet after the newest audio packet becomes overdue: one frame after
    /// the newest arrived, plus the jitter allowance. At most three frames are chased
    /// this way; a longer silence is the peer pausing, not loss.
    fn audio_overdue_at(&self) -> Option<(crate::types::SeqNo, Instant)> {
        if !self.config.nack {
            return None;
        }
        let (newest, at) = self.audio_newest?;
        let rx = self.audio_rx.as_ref()?;
        let allowance = rx.nack.reorder_allowance() + self.audio_jitter_allowance();
        let frame = self.config.audio_frame;
        let awaited = rx.nack.awaited_after(newest);
        let next = u32::try_from(awaited).ok().filter(|&k| k < 3)?;
        Some((
            newest + u64::from(next) + 1,
            at + frame * (next + 1) + allowance,
        ))
    }

    fn audio_reorder_allowance(&self) -> Duration {
        self.audio_rx
            .as_ref()
            .map_or(self.config.nack_reorder_allowance, |rx| {
                rx.nack.reorder_allowance()
            })
    }

    fn audio_jitter_allowance(&self) -> Duration {
        self.audio_rx
            .as_ref()
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
            let Some(rx) = self.audio_rx.as_mut() else {
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
        let round = if self.config.nack {
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
            let contents = match self.unpaced.pop_front() {
                Some(d) => d,
                None => self.pacer.poll(self.now)?,
            };
            if let Some(destination) = self.remote {
                return Some(Transmit {
                    destination,
                    contents,
                });
            }
            trace!("no remote address yet; datagram dropped");
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
        let nack = [&self.audio_rx, &self.video_rx]
            .into_iter()
            .flatten()
            .filter_map(|rx| rx.nack.poll_timeout())
            .chain(self.audio_overdue_at().map(|(_, at)| at))
            .min();
        let candidates = [
            (self.pacer.poll_timeout(self.now), Reason::Pacer),
            (nack, Reason::Nack),
            (self.frames.poll_timeout(), Reason::VideoBuffer),
            (Some(self.next_rtcp), Reason::Rtcp),
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
        let rx_stats = |rx: &Option<Incoming>| {
            rx.as_ref().map_or_else(RecvStreamStats::default, |rx| {
                let secs = self
                    .now
                    .saturating_duration_since(rx.started)
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
        let sent_bytes =
            send_audio.bytes + send_audio.rtx_bytes + send_video.bytes + send_video.rtx_bytes;
        Stats {
            rtt: self.rtt,
            target_bitrate_bps: self.bwe.target_bps(),
            steady_loss: self.bwe.baseline(),
            send_audio,
            send_video,
            send_bitrate_bps: (sent_bytes as f64 * 8.0 / elapsed) as u64,
            peer_audio_loss: self.peer_audio_loss,
            peer_video_loss: self.peer_video_loss,
            keyframes_requested_by_peer: self.keyframes_requested_by_peer,
            recv_audio: rx_stats(&self.audio_rx),
            recv_video: rx_stats(&self.video_rx),
            audio_playout: self.jitter.stats(),
            video_playout: self.frames.stats(),
            audio_latency: self.audio_latency.stats(),
            video_latency: self.video_latency.stats(),
            dropped: self.dropped,
        }
    }
}
