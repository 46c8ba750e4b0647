//! The call harness: two sessions joined by a seeded `netsim` in each direction,
//! driven in virtual time (always to the earliest deadline among the peers, their
//! media clocks and the links; no sleeps), with synthetic frames that identify
//! themselves so the receiver can tell exactly which frames played and when.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use magpie_media::netsim::{Datagram, NetSim, NetSimConfig, NetSimStats};
use magpie_media::types::Ssrc;
use magpie_media::wire::{self, Kind};
use magpie_media::{Agreement, Event, Playout, Session, SessionConfig, Stats, Track};

pub const AUDIO_FRAME: Duration = Duration::from_millis(20);
/// ~30 fps.
pub const VIDEO_FRAME: Duration = Duration::from_micros(33_333);
pub const AUDIO_BYTES: usize = 80;
pub const KEYFRAME_BYTES: usize = 25_000;
pub const DELTA_BYTES: usize = 3_000;
/// A periodic keyframe every 3 s, plus those the peer requests.
pub const KEYFRAME_EVERY: u32 = 90;
/// A keyframe of an encoder that follows the target is this many delta frames.
pub const KEYFRAME_DELTAS: usize = 6;

/// Sets up logging once (off unless `RUST_LOG` is set).
pub fn init_log() {
    use std::sync::Once;
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        if std::env::var("RUST_LOG").is_ok() {
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .init();
        }
    });
}

/// The base instant of a virtual-time run (the only clock read, for a starting point).
#[allow(clippy::disallowed_methods)]
pub fn start_instant() -> Instant {
    Instant::now()
}

/// An audio frame carrying its id: `A` + 8 hex digits + filler.
pub fn audio_frame(id: u32) -> Vec<u8> {
    let mut f = format!("A{id:08x}").into_bytes();
    f.resize(AUDIO_BYTES, b'.');
    f
}

pub fn audio_id(data: &[u8]) -> Option<u32> {
    let hex = std::str::from_utf8(data.get(1..9)?).ok()?;
    u32::from_str_radix(hex, 16).ok()
}

/// An Annex-B access unit carrying its id in every NAL unit, free of start-code
/// emulation (ids are hex text, filler bytes are non-zero).
pub fn video_frame(id: u32, keyframe: bool) -> Vec<u8> {
    sized_video_frame(id, keyframe, DELTA_BYTES, KEYFRAME_BYTES)
}

/// [`video_frame`] with delta frames of `delta` bytes and keyframes of `key`.
pub fn sized_video_frame(id: u32, keyframe: bool, delta: usize, key: usize) -> Vec<u8> {
    let mut au = Vec::new();
    let mut nal = |header: u8, len: usize| {
        au.extend_from_slice(&[0, 0, 0, 1, header]);
        au.extend_from_slice(format!("{id:08x}").as_bytes());
        au.extend((0..len).map(|i| (i % 250) as u8 + 1));
    };
    if keyframe {
        nal(0x67, 12);
        nal(0x68, 4);
        nal(0x65, key);
    } else {
        nal(0x41, delta);
    }
    au
}

/// The id in the first NAL unit of an Annex-B access unit.
pub fn video_id(au: &[u8]) -> Option<u32> {
    let start = au.windows(3).position(|w| w == [0, 0, 1])? + 4;
    let hex = std::str::from_utf8(au.get(start..start + 8)?).ok()?;
    u32::from_str_radix(hex, 16).ok()
}

/// One end of the call: a session plus a synthetic encoder and playout clock.
pub struct Peer {
    pub session: Session,
    pub addr: SocketAddr,
    video: bool,
    next_audio: Instant,
    audio_sent: u32,
    next_video: Instant,
    video_sent: u32,
    force_keyframe: bool,
    pub keyframes_sent: u32,
    next_pull: Instant,
    /// Frame id → capture instant, for what this peer sent.
    pub audio_capture: BTreeMap<u32, Instant>,
    pub video_capture: BTreeMap<u32, Instant>,
    /// What this peer received from the other: id → playout instant.
    pub audio_played: BTreeMap<u32, Instant>,
    pub audio_fec: u32,
    pub audio_conceal: u32,
    /// Slots that played two frames time-compressed.
    pub audio_accelerated: u32,
    pub video_shown: BTreeMap<u32, Instant>,
    pub video_order_ok: bool,
    last_video_id: Option<u32>,
    pub max_capture_error: Duration,
    pub bitrate_events: u32,
    /// The video target the session last announced; frames follow it when
    /// `follow_target`.
    pub target_bps: u64,
    follow_target: bool,
    pub keyframe_requests: u32,
    /// Audio frames played that the peer never sent (a stranger's).
    pub foreign_played: u32,
    pub peer_left: bool,
}

impl Peer {
    fn new(
        session: Session,
        addr: SocketAddr,
        start: Instant,
        offset: Duration,
        video: bool,
        follow_target: bool,
    ) -> Self {
        Self {
            target_bps: session.stats().target_bitrate_bps,
            follow_target,
            session,
            addr,
            video,
            next_audio: start + offset,
            audio_sent: 0,
            next_video: start + offset + Duration::from_millis(3),
            video_sent: 0,
            force_keyframe: false,
            keyframes_sent: 0,
            next_pull: start + offset + Duration::from_millis(7),
            audio_capture: BTreeMap::new(),
            video_capture: BTreeMap::new(),
            audio_played: BTreeMap::new(),
            audio_fec: 0,
            audio_conceal: 0,
            audio_accelerated: 0,
            video_shown: BTreeMap::new(),
            video_order_ok: true,
            last_video_id: None,
            max_capture_error: Duration::ZERO,
            bitrate_events: 0,
            keyframe_requests: 0,
            foreign_played: 0,
            peer_left: false,
        }
    }

    fn next_deadline(&self) -> Instant {
        let mut t = self.next_audio.min(self.next_pull);
        if self.video {
            t = t.min(self.next_video);
        }
        if let Some(s) = self.session.poll_timeout() {
            t = t.min(s.at);
        }
        t
    }

    /// Runs everything due at `now` on this peer's side.
    fn step(&mut self, now: Instant, remote_capture: &Captures) {
        // Like the client: nothing is sent before the connectivity checks selected a
        // path; the capture clocks run on regardless.
        let ready = self.session.path().is_some();
        if now >= self.next_audio && !ready {
            self.next_audio += AUDIO_FRAME;
        }
        if self.video && now >= self.next_video && !ready {
            self.next_video += VIDEO_FRAME;
        }
        if now >= self.next_audio {
            let id = self.audio_sent;
            self.session.send_audio(now, &audio_frame(id), now).unwrap();
            self.audio_capture.insert(id, now);
            self.audio_sent += 1;
            self.next_audio += AUDIO_FRAME;
        }
        if self.video && now >= self.next_video {
            let id = self.video_sent;
            let key = id.is_multiple_of(KEYFRAME_EVERY) || std::mem::take(&mut self.force_keyframe);
            self.keyframes_sent += u32::from(key);
            let frame = if self.follow_target {
                // An encoder on target: a delta frame is the target's share of a frame
                // interval (less its NAL header), a keyframe several.
                let delta = (self.target_bps as f64 * VIDEO_FRAME.as_secs_f64() / 8.0) as usize;
                let delta = delta.saturating_sub(16).max(100);
                sized_video_frame(id, key, delta, delta * KEYFRAME_DELTAS)
            } else {
                video_frame(id, key)
            };
            self.session.send_video(now, &frame, now, key).unwrap();
            self.video_capture.insert(id, now);
            self.video_sent += 1;
            self.next_video += VIDEO_FRAME;
        }
        if now >= self.next_pull {
            match self.session.pull_audio(now) {
                Playout::Frame { data, capture_time } => {
                    let id = audio_id(&data).unwrap();
                    self.foreign_played += u32::from(id >= STRANGER_IDS);
                    self.note_capture(remote_capture.audio.get(&id), capture_time);
                    self.audio_played.entry(id).or_insert(now);
                }
                Playout::Accelerate {
                    data,
                    then,
                    capture_time,
                } => {
                    // Both frames play, time-compressed into the slot.
                    let id = audio_id(&data).unwrap();
                    self.note_capture(remote_capture.audio.get(&id), capture_time);
                    for id in [id, audio_id(&then).unwrap()] {
                        self.foreign_played += u32::from(id >= STRANGER_IDS);
                        self.audio_played.entry(id).or_insert(now);
                    }
                    self.audio_accelerated += 1;
                }
                Playout::Fec { next, .. } => {
                    let id = audio_id(&next).unwrap() - 1;
                    self.audio_fec += 1;
                    self.audio_played.entry(id).or_insert(now);
                }
                Playout::Conceal => self.audio_conceal += 1,
                _ => {}
            }
            self.next_pull += AUDIO_FRAME;
        }
        if self.session.poll_timeout().is_some_and(|t| t.at <= now) {
            self.session.handle_timeout(now);
        }
        while let Some(event) = self.session.poll_event() {
            match event {
                Event::VideoFrame {
                    data, capture_time, ..
                } => {
                    let id = video_id(&data).unwrap();
                    if self.last_video_id.is_some_and(|last| id <= last) {
                        self.video_order_ok = false;
                    }
                    self.last_video_id = Some(id);
                    self.note_capture(remote_capture.video.get(&id), capture_time);
                    self.video_shown.insert(id, now);
                }
                Event::KeyframeRequested => {
                    self.force_keyframe = true;
                    self.keyframe_requests += 1;
                }
                Event::TargetBitrate { bps } => {
                    self.bitrate_events += 1;
                    self.target_bps = bps;
                }
                Event::PeerLeft => self.peer_left = true,
                _ => {}
            }
        }
    }

    fn note_capture(&mut self, truth: Option<&Instant>, told: Option<Instant>) {
        if let (Some(&truth), Some(told)) = (truth, told) {
            let err = if told > truth {
                told - truth
            } else {
                truth - told
            };
            self.max_capture_error = self.max_capture_error.max(err);
        }
    }
}

#[derive(Default)]
struct Captures {
    audio: BTreeMap<u32, Instant>,
    video: BTreeMap<u32, Instant>,
}

/// Audio frame ids from this one up are a stranger's, never the peer's.
pub const STRANGER_IDS: u32 = 0xdead_0000;

/// Which end of the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

/// What an attacker on the network knows when it forges: the SSRCs in the clear, and
/// the last RTP datagrams the peer sent the victim.
pub struct Sniffed<'a> {
    /// The victim's own tracks (audio, video): what forged feedback is about.
    pub victim: (Track, Option<Track>),
    /// The peer's tracks: whose SSRCs forged media or reports claim.
    pub peer: (Track, Option<Track>),
    /// The last audio and video RTP datagrams from the peer to the victim.
    pub audio: Option<&'a [u8]>,
    pub video: Option<&'a [u8]>,
    /// The audio RTP datagram from the peer to the victim [`REPLAY_LAG`] packets before
    /// the last: one that has surely arrived already (what a replay resends).
    pub audio_earlier: Option<&'a [u8]>,
    /// The last video RTP datagram the victim sent (what a forged NACK would name).
    pub victim_video: Option<&'a [u8]>,
    /// A fresh random number for each injection.
    pub noise: u64,
    /// How many injections this attack made before this one.
    pub round: u32,
}

/// How many audio packets [`Sniffed::audio_earlier`] lags the last one (160 ms at 20 ms
/// frames: more than the link's delay and jitter).
pub const REPLAY_LAG: usize = 8;

/// Datagrams sent to one end from an attacker's socket, from `at` on, every `every`.
#[derive(Clone, Debug)]
pub struct Attack {
    pub target: Side,
    /// From the path's address (spoofed: the peer's own address) or a third one.
    pub spoofed: bool,
    pub at: Duration,
    pub every: Duration,
    pub until: Duration,
    pub forge: fn(&Sniffed<'_>) -> Vec<Vec<u8>>,
}

/// The attacker's own address.
pub const ATTACKER: &str = "127.0.0.1:40666";

/// A scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub link: String,
    pub seconds: u64,
    pub video: bool,
    pub seed: u64,
    pub config: fn(SessionConfig) -> SessionConfig,
    /// When the connectivity checks select the path (both ends at once).
    pub path_after: Duration,
    pub attacks: Vec<Attack>,
    /// Plain RTP and RTCP instead of SRTP: for the tests of the admission checks behind
    /// SRTP, which hand-craft packets.
    pub plain: bool,
    /// Video frames follow the session's target bitrate (otherwise fixed sizes).
    pub follow_target: bool,
}

impl Scenario {
    pub fn new(link: &str) -> Self {
        Self {
            link: link.to_owned(),
            seconds: 60,
            video: true,
            seed: 1,
            config: |c| c,
            path_after: Duration::ZERO,
            attacks: Vec::new(),
            plain: false,
            follow_target: false,
        }
    }

    pub fn with_seed(&self, seed: u64) -> Self {
        Self {
            seed,
            ..self.clone()
        }
    }
}

/// Receive-side figures for one direction.
#[derive(Debug, Clone)]
pub struct Direction {
    pub audio_sent: usize,
    pub audio_played: usize,
    pub audio_in_budget: usize,
    pub audio_fec: u32,
    pub audio_conceal: u32,
    /// Slots that played two frames time-compressed.
    pub audio_accelerated: u32,
    /// The first few audio frames that never played (for diagnosis).
    pub audio_missing: Vec<u32>,
    pub audio_latency: [Duration; 3],
    pub video_sent: usize,
    pub video_shown: usize,
    pub video_in_budget: usize,
    pub video_latency: [Duration; 3],
    pub video_order_ok: bool,
    pub max_capture_error: Duration,
    pub stats: Stats,
}

impl Direction {
    pub fn audio_played_pct(&self) -> f64 {
        100.0 * self.audio_in_budget as f64 / self.audio_sent.max(1) as f64
    }
    pub fn video_played_pct(&self) -> f64 {
        100.0 * self.video_in_budget as f64 / self.video_sent.max(1) as f64
    }
}

/// What a run measured: `a_to_b` is what B received from A.
#[derive(Debug)]
pub struct Outcome {
    pub a_to_b: Direction,
    pub b_to_a: Direction,
    pub a: Stats,
    pub b: Stats,
    pub keyframes_requested: u32,
    pub max_in_flight: usize,
    /// Audio frames each end played that its peer never sent.
    pub foreign_played: u32,
    /// Whether either end saw the other leave.
    pub peer_left: bool,
    /// What each link did (A→B, B→A), and every datagram's queueing delay at a
    /// bottleneck (time since the start of the call, delay).
    pub links: [NetSimStats; 2],
    pub queue_delays: [Vec<(Duration, Duration)>; 2],
    /// When the full bottleneck queue dropped a datagram (time since the start).
    pub queue_drops: [Vec<Duration>; 2],
    /// Every 500 ms: (time since the start, bytes A had handed its link, A's target,
    /// the estimate A had from B).
    pub trace_a: Vec<(Duration, u64, u64, Option<u64>)>,
}

/// Audio budget: capture to playout.
pub const AUDIO_BUDGET: Duration = Duration::from_millis(200);
/// Video budget: capture to a decodable frame.
pub const VIDEO_BUDGET: Duration = Duration::from_millis(400);

fn percentiles(mut v: Vec<Duration>) -> [Duration; 3] {
    v.sort();
    let at = |q: f64| {
        v.get(((v.len().saturating_sub(1)) as f64 * q).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    [at(0.5), at(0.95), at(0.99)]
}

fn direction(sender: &Peer, receiver: &Peer, cutoff: Instant) -> Direction {
    let audio: Vec<_> = sender
        .audio_capture
        .iter()
        .filter(|(_, t)| **t < cutoff)
        .collect();
    let audio_lat: Vec<Duration> = audio
        .iter()
        .filter_map(|(id, cap)| receiver.audio_played.get(id).map(|p| *p - **cap))
        .collect();
    let video: Vec<_> = sender
        .video_capture
        .iter()
        .filter(|(_, t)| **t < cutoff)
        .collect();
    let video_lat: Vec<Duration> = video
        .iter()
        .filter_map(|(id, cap)| receiver.video_shown.get(id).map(|p| *p - **cap))
        .collect();
    Direction {
        audio_sent: audio.len(),
        audio_played: audio_lat.len(),
        audio_in_budget: audio_lat.iter().filter(|l| **l <= AUDIO_BUDGET).count(),
        audio_fec: receiver.audio_fec,
        audio_conceal: receiver.audio_conceal,
        audio_accelerated: receiver.audio_accelerated,
        audio_missing: audio
            .iter()
            .map(|(id, _)| **id)
            .filter(|id| !receiver.audio_played.contains_key(id))
            .take(10)
            .collect(),
        audio_latency: percentiles(audio_lat),
        video_sent: video.len(),
        video_shown: video_lat.len(),
        video_in_budget: video_lat.iter().filter(|l| **l <= VIDEO_BUDGET).count(),
        video_latency: percentiles(video_lat),
        video_order_ok: receiver.video_order_ok,
        max_capture_error: receiver.max_capture_error,
        stats: receiver.session.stats(),
    }
}

/// Runs a call and returns what each side received.
pub fn run(scenario: &Scenario) -> Outcome {
    init_log();
    let start = start_instant();
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let link: NetSimConfig = scenario.link.parse().unwrap();
    let mut ab = NetSim::new(link.clone().set_seed(scenario.seed * 2 + 1));
    let mut ba = NetSim::new(link.set_seed(scenario.seed * 2 + 2));
    let config = |seed| {
        (scenario.config)(
            SessionConfig::new()
                .set_seed(seed)
                .set_video(scenario.video)
                .set_wall_clock(start, wall),
        )
    };
    let addr_a: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let addr_b: SocketAddr = "127.0.0.1:40002".parse().unwrap();
    let mut sa = config(scenario.seed * 10 + 1).build(start);
    let mut sb = config(scenario.seed * 10 + 2).build(start);
    let (ab_agreement, ba_agreement) = (Agreement::between(&sa, &sb), Agreement::between(&sb, &sa));
    let keep = |a: Agreement| if scenario.plain { a.plain() } else { a };
    sa.set_agreement(keep(ab_agreement)).unwrap();
    sb.set_agreement(keep(ba_agreement)).unwrap();
    let path_at = start + scenario.path_after;
    if scenario.path_after.is_zero() {
        sa.set_path(addr_b);
        sb.set_path(addr_a);
    }
    let mut attacks: Vec<(Attack, Instant, u32)> = scenario
        .attacks
        .iter()
        .map(|at| (at.clone(), start + at.at, 0))
        .collect();
    let attacker: SocketAddr = ATTACKER.parse().unwrap();
    let mut noise = scenario.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    // The last audio and video RTP datagrams seen on each link (A->B, B->A).
    let mut sniffed: [[Option<Vec<u8>>; 2]; 2] = Default::default();
    // The last audio RTP datagrams on each link, oldest first.
    let mut audio_history: [std::collections::VecDeque<Vec<u8>>; 2] = Default::default();
    let follow = scenario.follow_target;
    let mut a = Peer::new(sa, addr_a, start, Duration::ZERO, scenario.video, follow);
    let mut b = Peer::new(
        sb,
        addr_b,
        start,
        Duration::from_millis(11),
        scenario.video,
        follow,
    );
    let mut trace_a = Vec::new();
    let mut a_sent_bytes = 0u64;
    let mut next_sample = start;
    let end = start + Duration::from_secs(scenario.seconds);
    let mut now = start;
    let mut spins = 0u32;
    let mut max_in_flight = 0;
    loop {
        let next = [
            Some(a.next_deadline()),
            Some(b.next_deadline()),
            ab.poll_timeout(),
            ba.poll_timeout(),
            (a.session.path().is_none()).then_some(path_at),
            attacks.iter().map(|(_, at, _)| *at).min(),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap();
        if next > end {
            break;
        }
        if next <= now {
            spins += 1;
            assert!(spins < 100_000, "virtual time stalled at {:?}", now - start);
        } else {
            spins = 0;
        }
        now = now.max(next);
        if now >= path_at && a.session.path().is_none() {
            a.session.set_path(addr_b);
            b.session.set_path(addr_a);
        }
        for (attack, at, round) in attacks.iter_mut().filter(|(_, at, _)| *at <= now) {
            let (victim, peer, dir) = match attack.target {
                Side::A => (&mut a, &b, 1),
                Side::B => (&mut b, &a, 0),
            };
            let tracks = |s: &Session| (s.audio_track(), s.video_track());
            noise ^= noise << 13;
            noise ^= noise >> 7;
            noise ^= noise << 17;
            let view = Sniffed {
                victim: tracks(&victim.session),
                peer: tracks(&peer.session),
                audio: sniffed[dir][0].as_deref(),
                video: sniffed[dir][1].as_deref(),
                audio_earlier: (audio_history[dir].len() > REPLAY_LAG)
                    .then(|| audio_history[dir][0].as_slice()),
                victim_video: sniffed[1 - dir][1].as_deref(),
                noise,
                round: *round,
            };
            let from = if attack.spoofed { peer.addr } else { attacker };
            for d in (attack.forge)(&view) {
                victim.session.handle_datagram(now, from, &d);
            }
            *round += 1;
            *at += attack.every;
            if *at > start + attack.until {
                *at = end + Duration::from_secs(1);
            }
        }
        let captures_a = Captures {
            audio: std::mem::take(&mut a.audio_capture),
            video: std::mem::take(&mut a.video_capture),
        };
        let captures_b = Captures {
            audio: std::mem::take(&mut b.audio_capture),
            video: std::mem::take(&mut b.video_capture),
        };
        // Each peer logs in its own span.
        tracing::info_span!("peer", name = "A").in_scope(|| a.step(now, &captures_b));
        tracing::info_span!("peer", name = "B").in_scope(|| b.step(now, &captures_a));
        restore(&mut a, captures_a);
        restore(&mut b, captures_b);
        for (link, to) in [(&mut ab, &mut b), (&mut ba, &mut a)] {
            link.handle_timeout(now);
            while let Some(d) = link.poll_datagram() {
                to.session.handle_datagram(now, d.from, &d.data);
            }
        }
        for (dir, (from, link)) in [(&mut a, &mut ab), (&mut b, &mut ba)]
            .into_iter()
            .enumerate()
        {
            while let Some(t) = from.session.poll_transmit() {
                if wire::classify(&t.contents) == Kind::Rtp {
                    // An attacker tells the streams apart by the SSRC in the clear: audio
                    // packets carry RED's payload type as well as Opus's.
                    let ssrc = Ssrc(u32::from_be_bytes(t.contents[8..12].try_into().unwrap()));
                    let video = Some(ssrc) == from.session.video_track().map(|t| t.ssrc);
                    let audio = ssrc == from.session.audio_track().ssrc;
                    if audio || video {
                        sniffed[dir][usize::from(video)] = Some(t.contents.to_vec());
                    }
                    if audio {
                        let history = &mut audio_history[dir];
                        if history.len() > REPLAY_LAG {
                            history.pop_front();
                        }
                        history.push_back(t.contents.to_vec());
                    }
                }
                if dir == 0 {
                    a_sent_bytes += t.contents.len() as u64;
                }
                let d = Datagram {
                    from: from.addr,
                    to: t.destination,
                    data: t.contents.to_vec(),
                };
                link.handle_datagram(now, d);
            }
        }
        max_in_flight = max_in_flight.max(ab.in_flight() + ba.in_flight());
        while now >= next_sample {
            let stats = a.session.stats();
            trace_a.push((
                next_sample - start,
                a_sent_bytes,
                stats.target_bitrate_bps,
                stats.peer_estimate_bps,
            ));
            next_sample += Duration::from_millis(500);
        }
    }
    let drops = |link: &NetSim| {
        link.drop_log()
            .iter()
            .map(|t| t.saturating_duration_since(start))
            .collect()
    };
    let delays = |link: &NetSim| {
        link.queue_log()
            .iter()
            .map(|q| (q.departed.saturating_duration_since(start), q.delay))
            .collect()
    };
    // Frames captured in the last second may still be on their way.
    let cutoff = end - Duration::from_secs(1);
    Outcome {
        a_to_b: direction(&a, &b, cutoff),
        b_to_a: direction(&b, &a, cutoff),
        a: a.session.stats(),
        b: b.session.stats(),
        keyframes_requested: a.keyframe_requests + b.keyframe_requests,
        max_in_flight,
        foreign_played: a.foreign_played + b.foreign_played,
        peer_left: a.peer_left || b.peer_left,
        links: [ab.stats(), ba.stats()],
        queue_delays: [delays(&ab), delays(&ba)],
        queue_drops: [drops(&ab), drops(&ba)],
        trace_a,
    }
}

fn restore(peer: &mut Peer, captures: Captures) {
    let Captures {
        mut audio,
        mut video,
    } = captures;
    audio.append(&mut peer.audio_capture);
    video.append(&mut peer.video_capture);
    peer.audio_capture = audio;
    peer.video_capture = video;
}

/// One line per direction, for `--nocapture` runs.
pub fn report(name: &str, o: &Outcome) {
    for (dir, d, sender) in [("A->B", &o.a_to_b, &o.a), ("B->A", &o.b_to_a, &o.b)] {
        let ms = |l: &[Duration; 3]| {
            format!(
                "{}/{}/{} ms",
                l[0].as_millis(),
                l[1].as_millis(),
                l[2].as_millis()
            )
        };
        let s = &d.stats;
        println!(
            "{name} {dir}: audio played {:.2}% ({}/{}) fec {} rtx-recovered {} conceal {} latency p50/p95/p99 {} | \
             video played {:.2}% ({}/{}) rtx-recovered {} latency p50/p95/p99 {} freezes {} skips {} | \
             sender rtt {:?} target {} kbit/s keyframe requests {}",
            d.audio_played_pct(),
            d.audio_in_budget,
            d.audio_sent,
            d.audio_fec,
            s.recv_audio.counters.recovered_rtx,
            d.audio_conceal,
            ms(&d.audio_latency),
            d.video_played_pct(),
            d.video_in_budget,
            d.video_sent,
            s.recv_video.counters.recovered_rtx,
            ms(&d.video_latency),
            s.video_playout.freezes,
            s.video_playout.skips,
            sender.rtt,
            sender.target_bitrate_bps / 1000,
            s.video_playout.keyframe_requests,
        );
    }
}
