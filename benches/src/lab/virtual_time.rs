//! The virtual-time engine: two call endpoints in one process, with real codecs, joined
//! by one seeded [`NetSim`] each way, driven always to the earliest deadline among the
//! sessions, the links, the capture clocks and the playout clocks. No sleeps, no thread,
//! no clock read after the first: the same seed gives the same figures.
//!
//! Each peer is what the client's engine is, minus the sockets and the threads: the same
//! sans-IO [`Endpoint`] (connectivity checks, session and policy), an [`AudioSender`] fed by a [`ToneGenerator`] and a [`VideoSender`] fed
//! by a [`PatternGenerator`] (paced like the client's capture threads: the frame covering
//! `[t, t + period)` is stamped `t` and handed over at `t + period`), an [`AudioReceiver`]
//! pulled every 20 ms like the client's playout clock, and a [`VideoReceiver`] that
//! decodes and "shows" each frame the moment the session emits it.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Result, bail};
use magpie_media::call::{
    AudioReceiver, AudioSender, Endpoint, Output, Report, VideoReceiver, VideoSender,
};
use magpie_media::codec::{
    AudioChannels, AudioEncoder, FrameDuration, H264Config, H264Encoder, OpusConfig, VideoEncoder,
};
use magpie_media::devices::{PatternGenerator, ToneGenerator};
use magpie_media::ice::{Candidate, CheckerConfig, Credentials};
use magpie_media::netsim::{Datagram, NetSim};
use magpie_media::probe::WallTime;
use magpie_media::{Agreement, SessionConfig};
use tracing::{debug, info_span};

use super::{Condition, LabMedia, LinkStats, Measured, capacity};

/// The wall-clock time virtual time starts at (any fixed value: it only has to be the
/// same in every run).
const WALL_START_SECS: u64 = 1_800_000_000;
/// B starts its clocks this long after A, so the two ends are not in lockstep.
const B_OFFSET: Duration = Duration::from_millis(11);
/// The playout clock ticks this long after the capture clock (an arbitrary phase, as
/// between a real microphone and speaker).
const PULL_PHASE: Duration = Duration::from_millis(7);
/// Steps without virtual time moving before the run is declared stuck.
const MAX_SPINS: u32 = 100_000;

thread_local! {
    /// The virtual time of the call running on this thread, from its start: what the
    /// lab's log stamps its lines with (see [`elapsed`]).
    static ELAPSED: std::cell::Cell<Option<Duration>> = const { std::cell::Cell::new(None) };
}

/// The virtual time of the call running on this thread, from its start (`None` outside
/// one): a log line says when in the call it happened, not when the lab wrote it.
pub fn elapsed() -> Option<Duration> {
    ELAPSED.with(std::cell::Cell::get)
}

/// The mapping from virtual instants to wall-clock time, shared by both ends (the
/// sessions get the same pair through `set_wall_clock`).
#[derive(Debug, Clone, Copy)]
struct Clock {
    base: Instant,
    wall: WallTime,
}

impl Clock {
    fn wall(&self, at: Instant) -> WallTime {
        self.wall.plus(at.saturating_duration_since(self.base))
    }
}

/// One call endpoint and its media.
struct Peer {
    addr: SocketAddr,
    endpoint: Endpoint,
    audio_tx: AudioSender,
    tone: ToneGenerator,
    /// The wall-clock time of the tone's first sample.
    tone_start: Instant,
    video_tx: Option<(VideoSender, PatternGenerator)>,
    audio_rx: AudioReceiver,
    video_rx: Option<VideoReceiver>,
    audio_frame: Duration,
    video_frame: Duration,
    audio_captured: u32,
    video_captured: u32,
    pulls: u32,
    pcm: Vec<i16>,
    errors: u64,
}

impl Peer {
    fn next_audio(&self) -> Instant {
        self.tone_start + self.audio_frame * (self.audio_captured + 1)
    }

    fn next_video(&self) -> Option<Instant> {
        self.video_tx
            .as_ref()
            .map(|_| self.tone_start + self.video_frame * (self.video_captured + 1))
    }

    fn next_pull(&self) -> Instant {
        self.tone_start + PULL_PHASE + self.audio_frame * self.pulls
    }

    fn deadline(&self) -> Instant {
        [
            Some(self.next_audio()),
            self.next_video(),
            Some(self.next_pull()),
            self.endpoint.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
        .expect("an endpoint always has its capture clock")
    }

    /// Runs everything due at `now`: capture and encode, playout, timers, events.
    fn step(&mut self, now: Instant, clock: &Clock) -> Result<()> {
        while self.next_audio() <= now {
            let captured_at = self.tone_start + self.audio_frame * self.audio_captured;
            self.audio_captured += 1;
            let pcm = self.tone.next_frame(self.audio_tx.samples_per_frame());
            if let Some(audio) = self.audio_tx.encode(&pcm)? {
                self.endpoint.send_audio_with_copy(
                    now,
                    &audio.frame,
                    audio.copy.as_deref(),
                    captured_at,
                )?;
            }
        }
        while let Some(due) = self.next_video().filter(|due| *due <= now) {
            let captured_at = due - self.video_frame;
            self.video_captured += 1;
            let (sender, pattern) = self.video_tx.as_mut().expect("next_video implies video");
            let picture = pattern.next_frame(clock.wall(captured_at));
            if let Some(unit) = sender.encode(&picture)? {
                self.endpoint
                    .send_video(now, &unit.data, captured_at, unit.keyframe)?;
            }
        }
        while self.next_pull() <= now {
            let at = self.next_pull();
            self.pulls += 1;
            let playout = self.endpoint.pull_audio(at);
            self.audio_rx.play(playout, &mut self.pcm, clock.wall(at));
        }
        if self.endpoint.poll_timeout().is_some_and(|at| at <= now) {
            self.endpoint.handle_timeout(now);
        }
        self.drain_events(now, clock);
        Ok(())
    }

    /// Acts on the endpoint's outputs, as the client's call loop does.
    fn drain_events(&mut self, now: Instant, clock: &Clock) {
        while let Some(output) = self.endpoint.poll_output() {
            match output {
                Output::VideoFrame { data, .. } => {
                    let Some(rx) = &mut self.video_rx else {
                        continue;
                    };
                    if let Some(picture) = rx.decode(&data) {
                        rx.shown(&picture, clock.wall(now));
                    } else if rx.needs_keyframe() {
                        self.endpoint.handle_decoder_lost(now);
                    }
                }
                Output::ForceKeyframe => {
                    if let Some((sender, _)) = &mut self.video_tx {
                        sender.request_keyframe();
                    }
                }
                Output::VideoBitrate(bps) => {
                    if let Some((sender, _)) = &mut self.video_tx {
                        sender.set_bitrate(bps);
                    }
                }
                Output::AudioExpectedLoss(percent)
                    if self.audio_tx.set_expected_loss(percent).is_err() =>
                {
                    self.errors += 1;
                }
                Output::AudioCopy(on) if self.audio_tx.set_copy(on).is_err() => self.errors += 1,
                Output::NoPath | Output::PathLost => self.errors += 1,
                _ => {}
            }
        }
    }

    fn report(&self, duration: Duration) -> Report {
        Report::new(
            duration,
            &self.endpoint.stats(),
            (self.audio_rx.stats(), self.audio_rx.detections()),
            self.video_rx
                .as_ref()
                .map(|rx| (rx.stats(), rx.detections())),
        )
    }
}

/// The connectivity-check credentials of peer `name` (fixed: the lab is deterministic).
fn credentials(name: &str) -> Credentials {
    Credentials {
        ufrag: format!("lab{name}"),
        pwd: format!("magpie-lab-password-of-{name}"),
    }
}

#[allow(clippy::too_many_arguments)]
fn build_peer(
    condition: &Condition,
    media: &LabMedia,
    (addr, name): (SocketAddr, &str),
    (peer_addr, peer_name): (SocketAddr, &str),
    seed: u64,
    clock: &Clock,
    start: Instant,
    peer_tone: (&ToneGenerator, Instant),
) -> Result<Peer> {
    let frame = FrameDuration::Ms20;
    let defaults = SessionConfig::new();
    // Delay-based control where the link has a capacity, the session's default
    // elsewhere, unless the run says.
    let delay_bwe = media
        .delay_bwe
        .unwrap_or(condition.capacity.is_some() || defaults.delay_bwe());
    let session = defaults
        .set_seed(seed)
        .set_wall_clock(clock.base, SystemTime::UNIX_EPOCH + wall_offset(clock))
        .set_video(media.video)
        .set_audio_frame(frame.duration())
        .set_nack(condition.nack)
        .set_audio_fec(condition.fec)
        .set_audio_red(condition.red)
        .set_video_fec(condition.fec)
        .set_start_bitrate(u64::from(media.video_bitrate_kbps) * 1000)
        .set_delay_bwe(delay_bwe)
        .build(start);
    let opus = OpusConfig::default()
        .set_channels(AudioChannels::Mono)
        .set_frame(frame)
        .set_bitrate(media.audio_bitrate_kbps * 1000)
        .set_fec(condition.fec)
        .build()?;
    let video_tx = if media.video {
        let h264 = H264Encoder::new(
            H264Config::default()
                .set_resolution(media.width, media.height)
                .set_fps(media.fps as f32)
                .set_bitrate(media.video_bitrate_kbps * 1000),
        )?;
        Some((
            VideoSender::new(
                VideoEncoder::H264(h264),
                u64::from(media.video_bitrate_kbps) * 1000,
            ),
            PatternGenerator::new(media.width, media.height)?,
        ))
    } else {
        None
    };
    let (peer_tone, peer_start) = peer_tone;
    let schedule = peer_tone.schedule(clock.wall(peer_start));
    let audio_rx = AudioReceiver::new(AudioChannels::Mono, frame.samples(), Some(schedule))?;
    let video_rx = media.video.then(VideoReceiver::new).transpose()?;
    let pcm = vec![0; audio_rx.frame_len()];
    // A calls, so A controls the checks and nominates the path.
    let peer_candidates = vec![Candidate::host(peer_addr)];
    let checker = CheckerConfig::new(credentials(name), credentials(peer_name), peer_candidates)
        .set_controlling(name == "a")
        .build(start, seed.to_le_bytes().repeat(2)[..12].try_into()?);
    let endpoint = Endpoint::new(session, checker, u64::from(media.video_bitrate_kbps) * 1000);
    Ok(Peer {
        addr,
        endpoint,
        audio_tx: AudioSender::new(AudioEncoder::Opus(opus)),
        tone: ToneGenerator::new(AudioChannels::Mono, media.marker_period)?,
        tone_start: start,
        video_tx,
        audio_rx,
        video_rx,
        audio_frame: frame.duration(),
        video_frame: Duration::from_secs(1) / media.fps,
        audio_captured: 0,
        video_captured: 0,
        pulls: 0,
        pcm,
        errors: 0,
    })
}

fn wall_offset(clock: &Clock) -> Duration {
    Duration::from_micros(clock.wall.as_micros())
}

/// Runs one condition for `media.duration` of virtual time.
pub fn run(condition: &Condition, media: &LabMedia, seed: u64) -> Result<Measured> {
    #[allow(clippy::disallowed_methods)] // reason: a base for virtual time, read once
    let base = Instant::now();
    let clock = Clock {
        base,
        wall: WallTime::from_micros(WALL_START_SECS * 1_000_000),
    };
    let addr_a: SocketAddr = "127.0.0.1:40000".parse().expect("a valid literal");
    let addr_b: SocketAddr = "127.0.0.1:40002".parse().expect("a valid literal");
    let tone = ToneGenerator::new(AudioChannels::Mono, media.marker_period)?;
    let (start_a, start_b) = (base, base + B_OFFSET);
    let mut a = build_peer(
        condition,
        media,
        (addr_a, "a"),
        (addr_b, "b"),
        seed.wrapping_mul(10).wrapping_add(1),
        &clock,
        start_a,
        (&tone, start_b),
    )?;
    let mut b = build_peer(
        condition,
        media,
        (addr_b, "b"),
        (addr_a, "a"),
        seed.wrapping_mul(10).wrapping_add(2),
        &clock,
        start_b,
        (&tone, start_a),
    )?;
    // Both sides' descriptions, exchanged: the agreement each derives from the two.
    // Media is SRTP, with keys drawn from the seeds (a client's come from its key exchange).
    a.endpoint.set_agreement(Agreement::between(
        a.endpoint.session(),
        b.endpoint.session(),
    ))?;
    b.endpoint.set_agreement(Agreement::between(
        b.endpoint.session(),
        a.endpoint.session(),
    ))?;
    let mut ab = NetSim::new(condition.netsim(seed.wrapping_mul(2).wrapping_add(1))?);
    let mut ba = NetSim::new(condition.netsim(seed.wrapping_mul(2).wrapping_add(2))?);

    let end = base + media.duration;
    let mut now = base;
    let mut spins = 0u32;
    loop {
        let next = [
            Some(a.deadline()),
            Some(b.deadline()),
            ab.poll_timeout(),
            ba.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
        .expect("the endpoints always have a deadline");
        if next > end {
            break;
        }
        if next <= now {
            spins += 1;
            if spins > MAX_SPINS {
                // Say whose deadline does not move: a timer that handling does not clear.
                let timeout = |p: &Peer| {
                    let at = |t: Option<Instant>| t.map(|t| t.saturating_duration_since(base));
                    format!(
                        "audio {:?} video {:?} pull {:?} endpoint {:?} session {:?}",
                        at(Some(p.next_audio())),
                        at(p.next_video()),
                        at(Some(p.next_pull())),
                        at(p.endpoint.poll_timeout()),
                        p.endpoint
                            .session()
                            .poll_timeout()
                            .map(|t| (at(Some(t.at)), t.reason)),
                    )
                };
                bail!(
                    "virtual time stalled at {:?} (session timeouts: A {:?}, B {:?}; links {:?} {:?})",
                    now - base,
                    timeout(&a),
                    timeout(&b),
                    ab.poll_timeout().map(|t| t.saturating_duration_since(base)),
                    ba.poll_timeout().map(|t| t.saturating_duration_since(base)),
                );
            }
        } else {
            spins = 0;
            now = next;
            ELAPSED.with(|e| e.set(Some(now - base)));
        }
        // Arrivals first, so a frame completed by a datagram is shown at its arrival.
        for (link, to, name) in [(&mut ab, &mut b, "B"), (&mut ba, &mut a, "A")] {
            link.handle_timeout(now);
            info_span!("peer", name).in_scope(|| {
                while let Some(d) = link.poll_datagram() {
                    to.endpoint.handle_datagram(now, d.from, &d.data);
                }
            });
        }
        info_span!("peer", name = "A").in_scope(|| a.step(now, &clock))?;
        info_span!("peer", name = "B").in_scope(|| b.step(now, &clock))?;
        for (from, link) in [(&mut a, &mut ab), (&mut b, &mut ba)] {
            while let Some(t) = from.endpoint.poll_transmit() {
                link.handle_datagram(
                    now,
                    Datagram {
                        from: from.addr,
                        to: t.destination,
                        data: t.contents.to_vec(),
                    },
                );
            }
        }
    }
    debug!(errors = a.errors + b.errors, "virtual call over");
    ELAPSED.with(|e| e.set(None));
    let detections = |e: &Peer| -> (Vec<f64>, Vec<f64>) {
        let ms = |d: &magpie_media::probe::Detection| d.latency_us as f64 / 1000.0;
        (
            e.audio_rx.detections().iter().map(ms).collect(),
            e.video_rx
                .as_ref()
                .map(|rx| rx.detections().iter().map(ms).collect())
                .unwrap_or_default(),
        )
    };
    let (audio_a, video_a) = detections(&a);
    let (audio_b, video_b) = detections(&b);
    Ok(Measured {
        condition: *condition,
        a: a.report(media.duration),
        b: b.report(media.duration - B_OFFSET),
        audio_latency_ms: [audio_a, audio_b].concat(),
        video_latency_ms: [video_a, video_b].concat(),
        link: Some(LinkStats {
            a_to_b_sent: ab.stats().sent,
            a_to_b_lost: ab.stats().lost,
            b_to_a_sent: ba.stats().sent,
            b_to_a_lost: ba.stats().lost,
            a_to_b_bottleneck: capacity::of(&ab, end),
            b_to_a_bottleneck: capacity::of(&ba, end),
        }),
    })
}
