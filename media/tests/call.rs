//! Two sessions in a call over a simulated link, in virtual time, each scenario over
//! several seeds (of the links and the sessions) with the assertions on the aggregate:
//! one lucky or unlucky seed neither passes nor fails a test on its own.
//!
//! Budgets: audio must play within 200 ms of capture, video must be decodable within
//! 400 ms of capture; frames later than that count as not played. Print the figures
//! with `cargo test -p magpie-media --test call -- --nocapture`.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Direction, Outcome, Scenario, report, run};

const SEEDS: [u64; 4] = [1, 2, 3, 4];

/// Runs `scenario` once per seed.
fn runs(name: &str, scenario: &Scenario) -> Vec<Outcome> {
    SEEDS
        .iter()
        .map(|&seed| {
            let o = run(&scenario.with_seed(seed));
            report(&format!("{name}#{seed}"), &o);
            o
        })
        .collect()
}

/// Both directions of every run.
fn directions(outcomes: &[Outcome]) -> impl Iterator<Item = &Direction> {
    outcomes.iter().flat_map(|o| [&o.a_to_b, &o.b_to_a])
}

/// Audio and video played within budget over all runs and directions, in percent.
fn played_pct(outcomes: &[Outcome]) -> (f64, f64) {
    let (mut audio, mut audio_sent, mut video, mut video_sent) = (0, 0, 0, 0);
    for d in directions(outcomes) {
        audio += d.audio_in_budget;
        audio_sent += d.audio_sent;
        video += d.video_in_budget;
        video_sent += d.video_sent;
    }
    (
        100.0 * audio as f64 / audio_sent.max(1) as f64,
        100.0 * video as f64 / video_sent.max(1) as f64,
    )
}

/// The median over the runs of A's target bitrate.
fn median_target(outcomes: &[Outcome]) -> u64 {
    let mut v: Vec<u64> = outcomes.iter().map(|o| o.a.target_bitrate_bps).collect();
    v.sort_unstable();
    v[v.len() / 2]
}

#[test]
fn clean_link_plays_everything() {
    let runs = runs("clean", &Scenario::new("delay=25ms,jitter=2ms"));
    for d in directions(&runs) {
        assert_eq!(d.audio_in_budget, d.audio_sent);
        assert_eq!(d.video_in_budget, d.video_sent);
        assert!(d.video_order_ok);
        assert!(d.max_capture_error < Duration::from_micros(10));
    }
    for o in &runs {
        let rtt = o.a.rtt.unwrap();
        assert!(
            rtt > Duration::from_millis(45) && rtt < Duration::from_millis(60),
            "{rtt:?}"
        );
        assert_eq!(o.a.refused.total() + o.b.refused.total(), 0, "{o:?}");
    }
}

#[test]
fn ten_percent_loss_at_50ms_rtt_meets_the_targets() {
    let runs = runs("loss10", &Scenario::new("loss=10%,delay=25ms,jitter=5ms"));
    let (audio, video) = played_pct(&runs);
    assert!(audio >= 99.9, "{audio}");
    assert!(video >= 99.0, "{video}");
    for d in directions(&runs) {
        assert!(d.video_order_ok);
        assert!(d.stats.recv_audio.counters.recovered_rtx > 0);
        assert!(d.stats.recv_video.counters.recovered_rtx > 0);
        // Transport latency (capture to playout, codec excluded) stays well inside the
        // budget: the buffer holds one repair round, no more.
        assert!(d.audio_latency[2] <= Duration::from_millis(170), "{d:?}");
    }
    // Steady random loss must not starve the video bitrate.
    let target = median_target(&runs);
    assert!(target >= 800_000, "{target}");
}

#[test]
fn five_and_twenty_percent_loss() {
    let runs5 = runs("loss5", &Scenario::new("loss=5%,delay=25ms,jitter=5ms"));
    let (audio, video) = played_pct(&runs5);
    assert!(audio >= 99.9, "{audio}");
    assert!(video >= 99.0, "{video}");
    let runs20 = runs("loss20", &Scenario::new("loss=20%,delay=25ms,jitter=5ms"));
    // Graceful: most media still plays, delay stays bounded, no stall.
    let (audio, video) = played_pct(&runs20);
    assert!(audio >= 99.0, "{audio}");
    assert!(video >= 90.0, "{video}");
    for d in directions(&runs20) {
        assert!(d.audio_latency[2] <= common::AUDIO_BUDGET);
        assert!(d.stats.audio_playout.level <= Duration::from_millis(200));
    }
    let target = median_target(&runs20);
    assert!(target >= 300_000, "{target}");
}

#[test]
fn bursty_loss_degrades_gracefully() {
    let runs = runs(
        "burst",
        &Scenario::new("loss=10%,burst=6,delay=25ms,jitter=5ms"),
    );
    let (audio, video) = played_pct(&runs);
    // Bursts of ~6 packets (120 ms of audio) outrun FEC: concealment and a little
    // extra delay are expected, a stall or unbounded delay is not.
    assert!(audio >= 90.0, "{audio}");
    assert!(video >= 90.0, "{video}");
    let (played, sent) =
        directions(&runs).fold((0, 0), |(p, s), d| (p + d.audio_played, s + d.audio_sent));
    assert!(played as f64 >= 0.95 * sent as f64, "{played}/{sent}");
    for d in directions(&runs) {
        assert!(d.audio_latency[2] <= Duration::from_millis(300), "{d:?}");
        assert!(d.audio_conceal > 0);
        assert!(d.video_order_ok);
        assert!(d.stats.audio_playout.level <= Duration::from_millis(250));
    }
    // Bursts outrun repair, and the receivers ask for keyframes to resume from. Not in
    // every run: a hole that sits just before a keyframe already held needs no request
    // (the buffer skips to it), and with video FEC those are most of the holes left.
    assert!(runs.iter().map(|o| o.keyframes_requested).sum::<u32>() > 0);
    for o in &runs {
        assert!(o.max_in_flight < 500, "{}", o.max_in_flight);
    }
}

#[test]
fn audio_only_call_works() {
    let mut s = Scenario::new("loss=10%,delay=25ms,jitter=5ms");
    s.video = false;
    let runs = runs("audio-only", &s);
    let (audio, _) = played_pct(&runs);
    assert!(audio >= 99.9, "{audio}");
    for o in &runs {
        assert_eq!(o.a_to_b.video_sent, 0);
    }
}
