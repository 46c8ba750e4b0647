//! One frame through two whole media sessions in virtual time (no sockets): the sender's
//! `send_*` + `handle_timeout` + `poll_transmit` (packetize, RTX history, pacer), the
//! receiver's `handle_datagram` + `poll_event`/`pull_audio` (parse, receive statistics,
//! NACK bookkeeping, jitter buffer, depacketize), and the RTCP each side sends back.
//! The per-module figures are in `rtp.rs`; this is what a frame costs end to end.
//!
//! Run: `cargo bench -p magpie-benches --bench session`
#![allow(missing_docs)]

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use magpie_media::{Agreement, Event, Session, SessionConfig};

use common::{keyframe_720p, opus_frame};

mod common;

/// Virtual addresses: nothing is bound, the datagrams are handed over in memory.
const SENDER: &str = "127.0.0.1:5000";
const RECEIVER: &str = "127.0.0.1:5002";

struct Pair {
    tx: Session,
    rx: Session,
    tx_addr: SocketAddr,
    rx_addr: SocketAddr,
    now: Instant,
}

impl Pair {
    fn new() -> Self {
        let now = Instant::now();
        let wall = SystemTime::now();
        // Bitrate high enough that the pacer never holds a 720p keyframe back for long.
        let config = |seed| {
            SessionConfig::new()
                .set_seed(seed)
                .set_wall_clock(now, wall)
                .set_bitrate(20_000_000, 1_000_000, 50_000_000)
        };
        let tx_addr: SocketAddr = SENDER.parse().expect("a literal address");
        let rx_addr: SocketAddr = RECEIVER.parse().expect("a literal address");
        let mut tx = config(1).build(now);
        let mut rx = config(2).build(now);
        tx.set_agreement(Agreement::between(&tx, &rx))
            .expect("two sessions of one config agree");
        rx.set_agreement(Agreement::between(&rx, &tx))
            .expect("two sessions of one config agree");
        tx.set_path(rx_addr);
        rx.set_path(tx_addr);
        Self {
            tx,
            rx,
            tx_addr,
            rx_addr,
            now,
        }
    }

    /// Delivers everything both sides want to send now; returns the video frames received.
    fn exchange(&mut self) -> usize {
        let now = self.now;
        self.tx.handle_timeout(now);
        while let Some(t) = self.tx.poll_transmit() {
            self.rx.handle_datagram(now, self.tx_addr, &t.contents);
        }
        self.rx.handle_timeout(now);
        while let Some(t) = self.rx.poll_transmit() {
            self.tx.handle_datagram(now, self.rx_addr, &t.contents);
        }
        while self.tx.poll_event().is_some() {}
        let mut frames = 0;
        while let Some(event) = self.rx.poll_event() {
            frames += usize::from(matches!(event, Event::VideoFrame { .. }));
        }
        frames
    }

    /// Moves virtual time to the next deadline of either side (the sender paces packets
    /// out, the receiver paces complete frames), but no later than `limit`.
    fn advance(&mut self, limit: Instant) -> bool {
        let next = [self.tx.poll_timeout(), self.rx.poll_timeout()]
            .into_iter()
            .flatten()
            .map(|t| t.at)
            .fold(limit, Instant::min);
        self.now = self.now.max(next);
        self.now < limit
    }
}

fn video(c: &mut Criterion) {
    let au = keyframe_720p();
    let mut pair = Pair::new();
    let mut group = c.benchmark_group("session");
    group.throughput(Throughput::Bytes(au.len() as u64));
    group.bench_function("video_720p_keyframe_send_to_frame", |b| {
        b.iter(|| {
            let frame_interval = Duration::from_millis(33);
            let start = pair.now + frame_interval;
            pair.now = start;
            pair.tx
                .send_video(start, &au, start, true)
                .expect("video is enabled");
            let mut frames = pair.exchange();
            // The pacer spreads the frame's packets out: follow its deadlines.
            while frames == 0 && pair.advance(start + Duration::from_secs(1)) {
                frames += pair.exchange();
            }
            assert_eq!(
                frames, 1,
                "the keyframe reaches the receiver within a second"
            );
        })
    });
    group.finish();
}

fn audio(c: &mut Criterion) {
    let frame = opus_frame();
    let mut pair = Pair::new();
    let mut played = 0u64;
    let mut group = c.benchmark_group("session");
    group.throughput(Throughput::Elements(1));
    group.bench_function("audio_20ms_send_to_playout", |b| {
        b.iter(|| {
            pair.now += Duration::from_millis(20);
            let now = pair.now;
            pair.tx.send_audio(now, &frame, now).expect("fits the MTU");
            pair.exchange();
            played += pair.rx.pull_audio(now).frames().count() as u64;
        })
    });
    group.finish();
    eprintln!("session audio: {played} frames played");
}

criterion_group! {
    name = session;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = video, audio
}
criterion_main!(session);
