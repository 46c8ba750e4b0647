//! The call loop: one task that owns the endpoint and the socket shell. Each turn it
//! waits for one input — a datagram, the merged timer, an encoded frame, a report from
//! the pipeline, or the signal to stop — feeds it in, and acts on every output.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use magpie_media::call::{
    AudioReceiverStats, Endpoint, EndpointCounters, Output, Report, VideoReceiverStats,
};
use magpie_media::ice::{Candidate, CandidateKind, Path};
use magpie_media::probe::{Detection, WallTime};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::pipeline::{self, Encoded, Pipeline};
use super::shell::{MAX_DATAGRAM, Shell};
use super::{EndCause, Error, Outcome, RunOptions, Trickle};
use crate::offer::SessionDescription;
use crate::status::StatusLine;
use magpie_media::srtp::exchange::SafetyCode;

/// The most waiting datagrams taken in before the timers, each time they are due.
const DRAIN_BEFORE_TIMERS: usize = 64;

/// The SSRCs of both sides, as the descriptions announced them (the live statistics
/// carry them, so a reader can tell the streams apart).
#[derive(Debug, Clone, Default, Serialize)]
pub(super) struct Tracks {
    local: StreamIds,
    remote: StreamIds,
}

#[derive(Debug, Clone, Default, Serialize)]
struct StreamIds {
    audio: Option<u32>,
    audio_rtx: Option<u32>,
    video: Option<u32>,
    video_rtx: Option<u32>,
}

impl Tracks {
    pub(super) fn new(local: &SessionDescription, remote: &SessionDescription) -> Self {
        Self {
            local: StreamIds::of(local),
            remote: StreamIds::of(remote),
        }
    }
}

impl StreamIds {
    fn of(d: &SessionDescription) -> Self {
        Self {
            audio: d.audio.as_ref().map(|a| a.ssrc),
            audio_rtx: d.audio.as_ref().and_then(|a| a.rtx).map(|r| r.ssrc),
            video: d.video.as_ref().map(|v| v.ssrc),
            video_rtx: d.video.as_ref().and_then(|v| v.rtx).map(|r| r.ssrc),
        }
    }
}

/// The path media took: the summary's `path` object (read by scripts/nat-lab).
#[derive(Debug, Clone, Serialize)]
pub struct PathSummary {
    /// `direct` or `relayed` (through our relay or the peer's).
    pub kind: &'static str,
    /// The peer's address on the path, as our side sends to it.
    pub remote: SocketAddr,
    /// The relay in use: our TURN server, or the peer's relayed address; `null` direct.
    pub relay: Option<SocketAddr>,
    /// Times the call moved to another pair after the first.
    pub switches: u64,
    /// Milliseconds from accept to the first path selected.
    pub selected_ms: Option<u64>,
    /// Milliseconds from accept to the first decoded audio played.
    pub first_audio_ms: Option<u64>,
}

impl std::fmt::Display for PathSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.relay {
            Some(relay) => write!(f, "path: relayed via {relay}")?,
            None => write!(f, "path: direct to {}", self.remote)?,
        }
        if self.switches > 0 {
            write!(f, " ({} switches)", self.switches)?;
        }
        Ok(())
    }
}

/// One line of `--stats-jsonl`.
#[derive(Serialize)]
struct LiveStats<'a> {
    elapsed_secs: f64,
    local: SocketAddr,
    path: Option<Path>,
    tracks: &'a Tracks,
    endpoint: EndpointCounters,
    stats: magpie_media::Stats,
    audio_slots_late: u64,
    report: Report,
}

/// What the pipeline reported so far.
#[derive(Default)]
struct Received {
    audio: AudioReceiverStats,
    audio_detections: Vec<Detection>,
    audio_late: u64,
    video: Option<(VideoReceiverStats, Vec<Detection>)>,
}

pub(super) struct Call {
    endpoint: Endpoint,
    shell: Shell,
    pipeline: Pipeline,
    base: (Instant, WallTime),
    /// The peer's audio frame: the playout clock's period.
    frame: Duration,
    /// When to pull the next slot for the playout clock.
    next_pull: Option<Instant>,
    tracks: Tracks,
    /// When the first path was selected, and when the first decoded audio played.
    selected_at: Option<Instant>,
    first_audio_at: Option<Instant>,
    received: Received,
    media_since: Option<Instant>,
    status: Option<StatusLine>,
    safety_code: SafetyCode,
    /// `--stats-jsonl`: where, and the writer (stdout for `-`).
    jsonl: Option<(PathBuf, Box<dyn Write + Send>)>,
    options: RunOptions,
    started: Instant,
    slots_dropped: u64,
    /// A slot is queued for the playout clock and not yet taken: at most one is, so that
    /// each slot plays at the tick it was pulled for (see [`Call::pull`]).
    slot_queued: bool,
    /// The user closed the video window: hang up.
    window_closed: bool,
}

impl Call {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        endpoint: Endpoint,
        shell: Shell,
        pipeline: Pipeline,
        base: (Instant, WallTime),
        frame: Duration,
        tracks: Tracks,
        options: RunOptions,
        safety_code: SafetyCode,
    ) -> Result<Self, Error> {
        let jsonl = match &options.stats_jsonl {
            Some(path) if path.as_os_str() == "-" => Some((
                path.clone(),
                Box::new(std::io::stdout()) as Box<dyn Write + Send>,
            )),
            Some(path) => {
                let file = File::create(path).map_err(|source| Error::StatsFile {
                    path: path.clone(),
                    source,
                })?;
                Some((
                    path.clone(),
                    Box::new(BufWriter::new(file)) as Box<dyn Write + Send>,
                ))
            }
            None => None,
        };
        let video = pipeline.has_video().then(Default::default);
        Ok(Self {
            endpoint,
            shell,
            pipeline,
            base,
            frame,
            next_pull: None,
            tracks,
            selected_at: None,
            first_audio_at: None,
            received: Received {
                video,
                ..Default::default()
            },
            media_since: None,
            status: (!options.quiet).then(|| StatusLine::new().with_safety_code(safety_code)),
            safety_code,
            jsonl,
            options,
            started: now(),
            slots_dropped: 0,
            slot_queued: false,
            window_closed: false,
        })
    }

    pub(super) async fn run(
        mut self,
        mut stop: oneshot::Receiver<EndCause>,
        trickle: Trickle,
    ) -> Result<Outcome, Error> {
        let Trickle {
            mut incoming,
            outgoing,
        } = trickle;
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let end_at = self.options.duration.map(|d| self.started + d);
        let mut next_status = self.started + Duration::from_secs(1);
        let cause = loop {
            let deadline = [
                Some(next_status),
                self.endpoint.poll_timeout(),
                self.shell.poll_timeout(),
                self.next_pull,
                end_at,
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(next_status);
            tokio::select! {
                cause = &mut stop => break cause.unwrap_or(EndCause::Local),
                (len, from) = self.shell.recv(&mut buf) => {
                    self.endpoint.handle_datagram(now(), from, &buf[..len]);
                }
                _ = tokio::time::sleep_until(deadline.into()) => {
                    // Datagrams that came while the loop ran late are taken in before
                    // the timers: `select!` picks among ready branches at random, and a
                    // timer run first would find their packets overdue and NACK them
                    // (a clean call under CPU load drew retransmissions). Bounded, so a
                    // flood cannot hold the timers off.
                    for _ in 0..DRAIN_BEFORE_TIMERS {
                        let Some((len, from)) = self.shell.try_recv(&mut buf) else {
                            break;
                        };
                        self.endpoint.handle_datagram(now(), from, &buf[..len]);
                    }
                    let now = now();
                    self.endpoint.handle_timeout(now);
                    self.shell.handle_timeout(now).await;
                    if self.next_pull.is_some_and(|at| now >= at) {
                        self.pull(now);
                    }
                    if end_at.is_some_and(|end| now >= end) {
                        break EndCause::Duration;
                    }
                    if now >= next_status {
                        next_status = now + Duration::from_secs(1);
                        self.tick(now)?;
                    }
                }
                Some(frame) = recv_opt(&mut self.pipeline.audio_in) => {
                    let capture = self.instant(frame.captured_at);
                    let copy = frame.copy.as_deref();
                    if let Err(e) =
                        self.endpoint.send_audio_with_copy(now(), &frame.data, copy, capture)
                    {
                        warn!(error = %e, "send audio");
                    }
                }
                Some(frame) = recv_opt(&mut self.pipeline.video_in) => self.send_video(frame),
                Some(report) = self.pipeline.reports.recv() => self.handle_report(report)?,
                Some(candidates) = incoming.recv() => {
                    debug!(count = candidates.len(), "late candidates from the peer");
                    self.endpoint.add_remote_candidates(now(), &candidates);
                }
            }
            if let Some(cause) = self.drain(&outgoing).await? {
                break cause;
            }
            if self.window_closed {
                break EndCause::Local;
            }
        };
        if self.endpoint.path().is_some() && cause != EndCause::PathLost {
            // Say goodbye on the media path too (RTCP BYE), past the simulator.
            self.endpoint.close(now());
            while let Some(t) = self.endpoint.poll_transmit() {
                self.shell.send_now(t.destination, &t.contents).await;
            }
        }
        Ok(self.finish(cause))
    }

    fn send_video(&mut self, frame: Encoded) {
        let capture = self.instant(frame.captured_at);
        if let Err(e) = self
            .endpoint
            .send_video(now(), &frame.data, capture, frame.keyframe)
        {
            warn!(error = %e, "send video");
        }
    }

    /// Pulls the next slot for the playout clock and queues it, unless one is still
    /// queued: a slot pulled after its tick gave up on it (the tick played concealment)
    /// is played at the next tick, and that tick's own pull is skipped. Otherwise the
    /// queue would stay one slot deeper for the rest of the call, and every slot would
    /// play a frame later than the jitter buffer knows. The buffer sees the skipped
    /// pull as one more frame held, which it drops once its excess passes its drop
    /// threshold (two frames over its target).
    fn pull(&mut self, now: Instant) {
        self.next_pull = None;
        if self.slot_queued {
            debug!("a slot is still queued for the playout clock: pull skipped");
            return;
        }
        let slot = self.endpoint.pull_audio(now);
        if self.pipeline.queue_slot(slot, now) {
            self.slot_queued = true;
        } else {
            self.slots_dropped += 1;
        }
    }

    fn handle_report(&mut self, report: pipeline::Report) -> Result<(), Error> {
        match report {
            pipeline::Report::AudioPlayed {
                at,
                stats,
                detections,
                late,
                took,
            } => {
                if took {
                    self.slot_queued = false;
                }
                // The next slot is due one frame after this one; pull it a little early.
                self.next_pull = Some(at + self.frame - pipeline::PULL_LEAD);
                if self.first_audio_at.is_none() && stats.decoded + stats.fec > 0 {
                    self.first_audio_at = Some(at);
                }
                self.received.audio = stats;
                self.received.audio_detections.extend(detections);
                self.received.audio_late = late;
            }
            pipeline::Report::VideoShown {
                stats,
                detections,
                lost,
            } => {
                if lost {
                    self.endpoint.handle_decoder_lost(now());
                }
                if let Some((s, d)) = &mut self.received.video {
                    *s = stats;
                    d.extend(detections);
                }
            }
            pipeline::Report::Failed(message) => return Err(Error::Sink(message)),
            pipeline::Report::WindowClosed => self.window_closed = true,
        }
        Ok(())
    }

    /// Sends what the endpoint wants sent and acts on its outputs; our candidates found
    /// during the call go to `trickle` (signaling passes them on to the peer).
    async fn drain(
        &mut self,
        trickle: &mpsc::Sender<Vec<Candidate>>,
    ) -> Result<Option<EndCause>, Error> {
        let now = now();
        while let Some(t) = self.endpoint.poll_transmit() {
            self.shell.send(now, t).await;
        }
        self.shell.handle_timeout(now).await;
        while let Some(output) = self.endpoint.poll_output() {
            match output {
                Output::VideoFrame { data, .. } => {
                    if !self.pipeline.queue_unit(data) {
                        // The decoder will wait for a keyframe: ask for one now.
                        self.endpoint.handle_decoder_lost(now);
                    }
                }
                Output::ForceKeyframe => self.pipeline.force_keyframe(),
                Output::VideoBitrate(bps) => self.pipeline.set_video_bitrate(bps),
                Output::AudioExpectedLoss(percent) => {
                    self.pipeline.set_audio_expected_loss(percent);
                }
                Output::AudioCopy(on) => self.pipeline.set_audio_copy(on),
                Output::PathSelected(path) => {
                    if self.selected_at.is_none() {
                        self.selected_at = Some(now);
                        self.media_since = Some(now);
                    }
                    if let Some(summary) = self.path_summary() {
                        debug!(%path, "path: {summary}");
                    }
                }
                Output::NoPath => {
                    let known = self.endpoint.remote_candidates().len();
                    return Err(Error::NoPath(known));
                }
                Output::RelayAllocated(relayed) => {
                    // Our relay was allocated again (the first was lost): the peer's
                    // candidate for it is stale.
                    info!(%relayed, "relay allocated again: telling the peer");
                    let candidate = Candidate::new(relayed, CandidateKind::Relay);
                    if trickle.try_send(vec![candidate]).is_err() {
                        debug!("no signaling to pass the new relay candidate on");
                    }
                }
                Output::PathLost => return Ok(Some(EndCause::PathLost)),
                Output::PeerLeft => {
                    return Ok(Some(EndCause::Remote("goodbye on the media path".into())));
                }
                other => debug!(?other, "endpoint output"),
            }
        }
        Ok(None)
    }

    /// Once a second: the status line and the live statistics.
    fn tick(&mut self, now: Instant) -> Result<(), Error> {
        let stats = self.endpoint.stats();
        let path = self.path_summary().map(|p| p.to_string());
        if let Some(status) = &mut self.status {
            let line = status.update(
                now,
                path.as_deref(),
                &stats,
                &self.received.audio_detections,
            );
            let talked = self.media_since.map_or(0, |t| (now - t).as_secs());
            let peer = self.options.peer.as_deref().unwrap_or("call");
            let title = format!("Magpie - {peer} - {}:{:02}", talked / 60, talked % 60);
            let overlay = line.split(" | ").map(str::to_owned).collect();
            self.pipeline.set_window_text(title, overlay);
        }
        if self.jsonl.is_none() {
            return Ok(());
        }
        let line = LiveStats {
            elapsed_secs: (now - self.started).as_secs_f64(),
            local: self.shell.local(),
            path: self.endpoint.path(),
            tracks: &self.tracks,
            endpoint: self.endpoint.counters(),
            stats,
            audio_slots_late: self.received.audio_late,
            report: self.report(now),
        };
        if let Some((path, out)) = &mut self.jsonl {
            let mut bytes = serde_json::to_vec(&line).map_err(std::io::Error::from);
            if let Ok(bytes) = &mut bytes {
                bytes.push(b'\n');
            }
            let written = bytes
                .and_then(|bytes| out.write_all(&bytes))
                .and_then(|()| out.flush());
            written.map_err(|source| Error::StatsFile {
                path: path.clone(),
                source,
            })?;
        }
        Ok(())
    }

    fn report(&self, now: Instant) -> Report {
        let duration = self.media_since.map_or(Duration::ZERO, |since| now - since);
        let r = &self.received;
        let mut stats = self.endpoint.stats();
        // A slot the playout clock concealed because the loop's slot came late lost no
        // frame: the slot played at the next tick (see `Call::pull`). It is a stretch.
        stats.audio_playout.stretched += r.audio_late;
        Report::new(
            duration,
            &stats,
            (r.audio, &r.audio_detections),
            r.video.as_ref().map(|(s, d)| (*s, d.as_slice())),
        )
    }

    fn finish(mut self, cause: EndCause) -> Outcome {
        if let Some(status) = &mut self.status {
            status.clear();
        }
        // The last few slots' reports.
        while let Ok(report) = self.pipeline.reports.try_recv() {
            if let Err(e) = self.handle_report(report) {
                debug!(error = %e, "after the call");
            }
        }
        let now = now();
        let report = self.report(now);
        if self.slots_dropped > 0 || self.received.audio_late > 0 {
            debug!(
                dropped = self.slots_dropped,
                late = self.received.audio_late,
                "playout slots"
            );
        }
        // Dropping the pipeline stops and joins its threads.
        Outcome {
            cause,
            report,
            stats: self.endpoint.stats(),
            endpoint: self.endpoint.counters(),
            path: self.path_summary(),
            safety_code: self.safety_code,
            sim: self.shell.sim_stats(),
            bottleneck: self.shell.bottleneck(now),
        }
    }

    /// Which path media takes, for the status line and the summary.
    fn path_summary(&self) -> Option<PathSummary> {
        let path = self.endpoint.path()?;
        let peer_relay = self
            .endpoint
            .remote_candidates()
            .iter()
            .any(|c| c.addr == path.remote && c.kind == CandidateKind::Relay);
        let since = |t: Option<Instant>| {
            t.map(|t| {
                t.saturating_duration_since(self.options.accepted_at)
                    .as_millis() as u64
            })
        };
        let (kind, relay) = if path.relayed {
            ("relayed", self.endpoint.turn_server())
        } else if peer_relay {
            // Through the peer's relay: its relayed address is the relay's IP.
            ("relayed", Some(path.remote))
        } else {
            ("direct", None)
        };
        Some(PathSummary {
            kind,
            remote: path.remote,
            relay,
            switches: self.endpoint.counters().path_switches,
            selected_ms: since(self.selected_at),
            first_audio_ms: since(self.first_audio_at),
        })
    }

    /// Maps a wall-clock capture time onto the session's clock.
    fn instant(&self, t: WallTime) -> Instant {
        instant_of(self.base, t)
    }
}

/// Maps a wall-clock time onto the clock of `base` (an instant and the wall time then).
pub(crate) fn instant_of((instant, wall): (Instant, WallTime), t: WallTime) -> Instant {
    let offset = t.micros_since(wall);
    if offset >= 0 {
        instant + Duration::from_micros(offset as u64)
    } else {
        instant
            .checked_sub(Duration::from_micros(offset.unsigned_abs()))
            .unwrap_or(instant)
    }
}

/// The shell's clock (tokio's, so paused-time tests see the same time).
pub fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

pub(crate) async fn recv_opt<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
