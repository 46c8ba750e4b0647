//! One call endpoint, sans-IO: the connectivity checks, the media session, and the
//! policy that turns what the session reports into what the encoders and decoders should
//! do. The client, the lab and the tests all drive this one type, so they share every
//! line of the policy.
//!
//! ```text
//!   handle_datagram(now, from, bytes)
//!     from the TURN server? ──yes──▶ ice::turn::TurnClient ──▶ (peer, payload) ──┐
//!     └──no──▶ (from, bytes) ───────────────────────────────────────────────────┤
//!                                          ┌─────────────────────────────────────┘
//!                                          ▼
//!                                        STUN? ──yes──▶ ice::Checker
//!                                          └──no───▶ Session (admits only the path's
//!                                                    RTP/RTCP on agreed SSRCs, and only
//!                                                    on the path's leg: relayed or not)
//!   poll_output() ◀── policy ◀── Session events, Checker events, TURN events
//! ```
//!
//! [`Endpoint::handle_datagram`] is the one place where every datagram from the network
//! is admitted or refused: what comes from the configured TURN server is unwrapped by
//! the TURN client (ChannelData, Data indications) into the peer's address and payload,
//! and then goes through the same admission as a direct datagram: STUN to the checker
//! (which authenticates it), everything else to the session, which admits only RTP and
//! RTCP from the selected path on the agreed streams. Each refusal is counted by reason.
//! What is sent on a relayed path is wrapped for the TURN server on the way out.
//!
//! The policy: a keyframe request from the peer forces a keyframe; the bitrate target
//! reaches the video encoder only when it moved by more than [`BITRATE_HYSTERESIS`] (an
//! encoder change is not free); the peer's loss reports set the Opus encoder's expected
//! loss, which sizes its in-band FEC, with a floor of 1 % (libopus sends no FEC at 0 %)
//! and only when the figure changes.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{debug, info};

use crate::Error;
use crate::ice::turn::{TurnClient, TurnCounters, TurnEvent};
use crate::ice::{self, Candidate, Checker, Path};
use crate::session::{Agreement, Event, Playout, Session, SessionError, Stats, Transmit};

/// A bitrate change smaller than this share of the current one is not passed on to the
/// video encoder.
pub const BITRATE_HYSTERESIS: f64 = 0.15;

/// The selected path unanswered this long (three consent checks) makes the endpoint ask
/// its TURN server whether our allocation still stands: a NAT that forgot its mappings
/// may have moved us to a new port, where the server knows no allocation of ours.
const PROBE_RELAY_AFTER: Duration = Duration::from_millis(600);

/// What the endpoint asks of the application.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Output {
    /// A decodable video access unit (Annex-B), in decode order.
    VideoFrame {
        /// Annex-B byte stream.
        data: Bytes,
        /// When the peer captured it, on our clock.
        capture_time: Option<Instant>,
        /// Whether it is a keyframe.
        keyframe: bool,
    },
    /// Make the next encoded picture a keyframe.
    ForceKeyframe,
    /// Set the video encoder's bitrate, bits per second.
    VideoBitrate(u64),
    /// Set the Opus encoder's expected packet loss, percent (1 to 100).
    AudioExpectedLoss(u8),
    /// Start (`true`) or stop encoding a lower-bitrate copy of each audio frame for
    /// [`Endpoint::send_audio_with_copy`]: later packets repeat the copies while the
    /// peer reports loss (RFC 2198 redundancy; see [`super::AudioSender::set_copy`]).
    AudioCopy(bool),
    /// Connectivity checks found the path, or moved the call to another one because
    /// the first died: media flows there from now on.
    PathSelected(Path),
    /// Our TURN allocation is up: this is our relay candidate (tell the peer).
    RelayAllocated(SocketAddr),
    /// The TURN allocation failed or was lost; the call goes on without it.
    RelayFailed(ice::turn::TurnFailure),
    /// No candidate of the peer answered in time: the call cannot carry media.
    NoPath,
    /// The path stopped answering consent checks.
    PathLost,
    /// The peer said goodbye on the media path (RTCP BYE naming its stream).
    PeerLeft,
}

/// What the endpoint counted beyond the session's own statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct EndpointCounters {
    /// STUN messages the checker refused (malformed, unauthenticated, unknown).
    pub stun_refused: u64,
    /// Encoded audio frames dropped because no path was up yet (sending them later
    /// would only play them late).
    pub audio_before_path: u64,
    /// Encoded video frames dropped for the same reason.
    pub video_before_path: u64,
    /// Keyframes forced on the peer's or the decoder's request.
    pub keyframes_forced: u64,
    /// Bitrate changes passed on to the video encoder.
    pub bitrate_changes: u64,
    /// Media that came on the other leg than the path's (direct while the path is
    /// relayed, or the reverse): refused.
    pub wrong_leg: u64,
    /// Times the path moved to another pair after the first selection.
    pub path_switches: u64,
    /// What the TURN client counted (refusals of what the server sent, data dropped
    /// before a permission, retransmissions).
    pub turn: TurnCounters,
}

/// One call endpoint. See the module docs.
#[derive(Debug)]
pub struct Endpoint {
    session: Session,
    checker: Checker,
    turn: Option<TurnClient>,
    path: Option<Path>,
    /// The latest time seen, for the TURN client's permissions asked for on the way out.
    now: Option<Instant>,
    video_bitrate: Option<u64>,
    audio_loss_percent: Option<u8>,
    /// Whether the audio encoder was asked for copies.
    audio_copy: bool,
    outputs: VecDeque<Output>,
    counters: EndpointCounters,
}

impl Endpoint {
    /// Joins a session and the checks that find its path. `video_bitrate` is what the
    /// video encoder starts at (the hysteresis compares against it).
    pub fn new(session: Session, checker: Checker, video_bitrate: u64) -> Self {
        Self {
            session,
            checker,
            turn: None,
            path: None,
            now: None,
            video_bitrate: Some(video_bitrate),
            audio_loss_percent: None,
            audio_copy: false,
            outputs: VecDeque::new(),
            counters: EndpointCounters::default(),
        }
    }

    /// What both sides agreed, from the offer and the answer: the session admits only
    /// these streams.
    pub fn set_agreement(&mut self, agreement: Agreement) -> Result<(), SessionError> {
        self.session.set_agreement(agreement)
    }

    /// Relays through `turn` (allocating or allocated): its relay becomes a base for
    /// checks once allocated, and what comes from its server is unwrapped.
    pub fn set_turn(&mut self, now: Instant, turn: TurnClient) {
        let allocated = turn.relayed().is_some();
        let server = turn.server().ip();
        self.turn = Some(turn);
        if allocated {
            // Allocated before the call started (its event went to whoever drove it).
            self.checker.add_relay_base(now, server);
            self.permit_all(now);
        }
        self.drain(now);
    }

    /// Candidates the peer found late (trickle): checked like the others.
    pub fn add_remote_candidates(&mut self, now: Instant, candidates: &[Candidate]) {
        self.checker.add_remote_candidates(now, candidates);
        self.permit_all(now);
        self.drain(now);
    }

    /// Asks our relay to accept traffic from every candidate of the peer, so its checks
    /// towards our relay candidate get through.
    fn permit_all(&mut self, now: Instant) {
        if let Some(turn) = &mut self.turn {
            for c in self.checker.remote_candidates() {
                turn.permit(now, c.addr);
            }
        }
    }

    /// Takes one datagram from the network: the one place where each is admitted or
    /// refused.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        self.now = Some(self.now.map_or(now, |t| t.max(now)));
        match &mut self.turn {
            Some(turn) if from == turn.server() => match turn.handle_datagram(now, bytes) {
                Ok(Some(relayed)) => {
                    let (peer, payload) = (relayed.peer, relayed.payload);
                    self.admit(now, Path::via_relay(peer), payload);
                }
                Ok(None) => {}
                Err(e) => debug!(error = %e, "TURN datagram refused"),
            },
            _ => self.admit(now, Path::direct(from), bytes),
        }
        self.drain(now);
    }

    /// The admission of one datagram that arrived on `leg`.
    fn admit(&mut self, now: Instant, leg: Path, bytes: &[u8]) {
        if Checker::is_stun(bytes) {
            let checked = if leg.relayed {
                self.checker.handle_relayed(now, leg.remote, bytes)
            } else {
                self.checker.handle_datagram(now, leg.remote, bytes)
            };
            if let Err(e) = checked {
                self.counters.stun_refused += 1;
                debug!(error = %e, from = %leg, "STUN refused");
            }
        } else if self.path.is_some_and(|p| p.relayed != leg.relayed) {
            // The session admits the path's address; that address on the other leg is
            // not the path (a forgery, or a stale route).
            self.counters.wrong_leg += 1;
        } else {
            self.session.handle_datagram(now, leg.remote, bytes);
        }
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = Some(self.now.map_or(now, |t| t.max(now)));
        self.checker.handle_timeout(now);
        if let Some(turn) = &mut self.turn {
            if self
                .checker
                .silence(now)
                .is_some_and(|s| s >= PROBE_RELAY_AFTER)
            {
                turn.probe(now);
            }
            turn.handle_timeout(now);
        }
        self.session.handle_timeout(now);
        self.drain(now);
    }

    /// Sends one encoded Opus frame. Before a path is up it is dropped and counted.
    pub fn send_audio(
        &mut self,
        now: Instant,
        frame: &[u8],
        capture: Instant,
    ) -> Result<(), Error> {
        self.send_audio_with_copy(now, frame, None, capture)
    }

    /// Sends one encoded Opus frame with its lower-bitrate copy (made while the last
    /// [`Output::AudioCopy`] said so), which later packets repeat. Before a path is up
    /// it is dropped and counted.
    pub fn send_audio_with_copy(
        &mut self,
        now: Instant,
        frame: &[u8],
        copy: Option<&[u8]>,
        capture: Instant,
    ) -> Result<(), Error> {
        if self.path.is_none() {
            self.counters.audio_before_path += 1;
            return Ok(());
        }
        self.session.send_audio_with_copy(now, frame, copy, capture)
    }

    /// Sends one H.264 access unit. Before a path is up it is dropped and counted (the
    /// frame buffer of the peer then waits for the next keyframe, which the first
    /// picture after the path is up must be: see [`Output::ForceKeyframe`]).
    pub fn send_video(
        &mut self,
        now: Instant,
        access_unit: &[u8],
        capture: Instant,
        keyframe: bool,
    ) -> Result<(), Error> {
        if self.path.is_none() {
            self.counters.video_before_path += 1;
            return Ok(());
        }
        self.session.send_video(now, access_unit, capture, keyframe)
    }

    /// The playout clock asks for the next audio slot: silence until a path is up.
    #[must_use]
    pub fn pull_audio(&mut self, now: Instant) -> Playout {
        if self.path.is_none() {
            return Playout::Silence;
        }
        self.session.pull_audio(now)
    }

    /// The video decoder lost its picture (a corrupt unit, or one dropped before the
    /// decoder): ask the peer for a keyframe.
    pub fn handle_decoder_lost(&mut self, now: Instant) {
        self.session.request_keyframe(now);
        self.drain(now);
    }

    /// Ends the call: queues an RTCP BYE for our streams, and releases the relay.
    pub fn close(&mut self, now: Instant) {
        if self.path.is_some() {
            self.session.close(now);
        }
        if let Some(turn) = &mut self.turn {
            turn.close(now);
        }
    }

    /// The next datagram to send: the TURN client's and the checker's first (they keep
    /// the path alive), then the session's; wrapped for the TURN server when they go
    /// through the relay.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        loop {
            if let Some(t) = self.turn.as_mut().and_then(TurnClient::poll_transmit) {
                return Some(Transmit {
                    destination: t.destination,
                    contents: Bytes::from(t.contents),
                });
            }
            if let Some(t) = self.checker.poll_transmit() {
                if !t.relayed {
                    return Some(Transmit {
                        destination: t.destination,
                        contents: Bytes::from(t.contents),
                    });
                }
                if let Some(t) = self.wrap(t.destination, &t.contents) {
                    return Some(t);
                }
                continue;
            }
            let t = self.session.poll_transmit()?;
            match self.path {
                Some(path) if path.relayed => {
                    if let Some(t) = self.wrap(t.destination, &t.contents) {
                        return Some(t);
                    }
                }
                _ => return Some(t),
            }
        }
    }

    /// Wraps a datagram for `peer` to go through our relay; `None` (dropped, counted by
    /// the TURN client) until the relay has a permission for the peer.
    fn wrap(&mut self, peer: SocketAddr, payload: &[u8]) -> Option<Transmit> {
        let now = self.now?;
        let turn = self.turn.as_mut()?;
        turn.permit(now, peer);
        let contents = turn.wrap(peer, payload)?;
        Some(Transmit {
            destination: turn.server(),
            contents: Bytes::from(contents),
        })
    }

    /// The next thing for the application to do.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When to call [`Self::handle_timeout`] next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.checker.poll_timeout(),
            self.turn.as_ref().and_then(TurnClient::poll_timeout),
            self.session.poll_timeout().map(|t| t.at),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The path media flows on, once the checks found one.
    pub fn path(&self) -> Option<Path> {
        self.path
    }

    /// The peer's candidates known so far (listed, trickled, learned).
    pub fn remote_candidates(&self) -> &[Candidate] {
        self.checker.remote_candidates()
    }

    /// Our relay's address, once allocated.
    pub fn relay(&self) -> Option<SocketAddr> {
        self.turn.as_ref().and_then(TurnClient::relayed)
    }

    /// The TURN server, when the call has one.
    pub fn turn_server(&self) -> Option<SocketAddr> {
        self.turn.as_ref().map(TurnClient::server)
    }

    /// The media session (its SSRCs, its RTT).
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The session's statistics.
    pub fn stats(&self) -> Stats {
        self.session.stats()
    }

    /// What the endpoint itself counted.
    pub fn counters(&self) -> EndpointCounters {
        EndpointCounters {
            turn: self
                .turn
                .as_ref()
                .map(TurnClient::counters)
                .unwrap_or_default(),
            ..self.counters
        }
    }

    /// Moves what the checker and the session reported into outputs, through the policy.
    fn drain(&mut self, now: Instant) {
        while let Some(event) = self.turn.as_mut().and_then(TurnClient::poll_event) {
            match event {
                TurnEvent::Allocated { relayed, .. } => {
                    info!(%relayed, "relay allocated");
                    let server = self.turn.as_ref().map(TurnClient::server);
                    if let Some(server) = server {
                        self.checker.add_relay_base(now, server.ip());
                    }
                    self.checker.restart_relayed(now);
                    self.permit_all(now);
                    self.outputs.push_back(Output::RelayAllocated(relayed));
                }
                TurnEvent::Failed(why) => {
                    info!(%why, "no relay");
                    self.outputs.push_back(Output::RelayFailed(why));
                    // A lost allocation (our NAT moved us and the server could not
                    // move the allocation along, or forgot us) is made again; the
                    // peer learns the new relay address from signaling
                    // (`Output::RelayAllocated`), or from our checks through it (a
                    // peer-reflexive candidate) when its own addresses did not move.
                    if why == ice::turn::TurnFailure::Lost
                        && let Some(turn) = &mut self.turn
                    {
                        turn.reallocate(now);
                    }
                }
                TurnEvent::Moved => {
                    // Our NAT moved us and the server moved the allocation along: the
                    // relayed address the peer knows works again. Check every pair
                    // through it now rather than at its next keep-alive.
                    info!("relay allocation moved to our new address");
                    self.checker.restart_relayed(now);
                }
                TurnEvent::PeerRefused(ip) => {
                    debug!(%ip, "the relay refused a peer");
                    self.checker.refuse_relayed(now, ip);
                }
            }
        }
        while let Some(event) = self.checker.poll_event() {
            match event {
                ice::Event::Selected(path) => {
                    if self.path.is_some() {
                        self.counters.path_switches += 1;
                        info!(%path, "media path moved");
                    } else {
                        info!(%path, "media path selected");
                    }
                    self.path = Some(path);
                    self.session.set_path(path.remote);
                    // Whatever was encoded before the path went nowhere: start the
                    // peer's picture with a keyframe.
                    self.counters.keyframes_forced += 1;
                    self.outputs.push_back(Output::ForceKeyframe);
                    self.outputs.push_back(Output::PathSelected(path));
                }
                ice::Event::Failed => self.outputs.push_back(Output::NoPath),
                ice::Event::PathLost => self.outputs.push_back(Output::PathLost),
            }
        }
        while let Some(event) = self.session.poll_event() {
            match event {
                Event::VideoFrame {
                    data,
                    capture_time,
                    keyframe,
                    ..
                } => self.outputs.push_back(Output::VideoFrame {
                    data,
                    capture_time,
                    keyframe,
                }),
                Event::KeyframeRequested => {
                    self.counters.keyframes_forced += 1;
                    self.outputs.push_back(Output::ForceKeyframe);
                }
                Event::TargetBitrate { bps } => self.handle_target_bitrate(bps),
                Event::AudioLoss { fraction } => self.handle_audio_loss(fraction),
                Event::PeerLeft => self.outputs.push_back(Output::PeerLeft),
            }
        }
        let repeats = self.session.repeats_audio();
        if repeats != self.audio_copy {
            self.audio_copy = repeats;
            self.outputs.push_back(Output::AudioCopy(repeats));
        }
    }

    fn handle_target_bitrate(&mut self, bps: u64) {
        let current = self.video_bitrate.unwrap_or(0).max(1) as f64;
        if (bps as f64 - current).abs() / current >= BITRATE_HYSTERESIS {
            self.video_bitrate = Some(bps);
            self.counters.bitrate_changes += 1;
            self.outputs.push_back(Output::VideoBitrate(bps));
        }
    }

    fn handle_audio_loss(&mut self, fraction: f32) {
        let percent = (fraction.clamp(0.0, 1.0) * 100.0).ceil().clamp(1.0, 100.0) as u8;
        if self.audio_loss_percent != Some(percent) {
            self.audio_loss_percent = Some(percent);
            self.outputs.push_back(Output::AudioExpectedLoss(percent));
        }
    }
}
