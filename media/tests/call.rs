//! Two sessions in a call over a simulated link, in virtual time.
//!
//! Budgets: audio must play within 200 ms of capture, video must be decodable within
//! 400 ms of capture; frames later than that count as not played. Print the figures
//! with `cargo test -p magpie-media --test call -- --nocapture`.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Scenario, report, run};

#[test]
fn clean_link_plays_everything() {
    let o = run(&Scenario::new("delay=25ms,jitter=2ms"));
    report("clean", &o);
    for d in [&o.a_to_b, &o.b_to_a] {
        assert_eq!(d.audio_in_budget, d.audio_sent);
        assert_eq!(d.video_in_budget, d.video_sent);
        assert!(d.video_order_ok);
        assert!(d.max_capture_error < Duration::from_micros(10));
    }
    let rtt = o.a.rtt.unwrap();
    assert!(
        rtt > Duration::from_millis(45) && rtt < Duration::from_millis(60),
        "{rtt:?}"
    );
}

#[test]
fn ten_percent_loss_at_50ms_rtt_meets_the_targets() {
    let o = run(&Scenario::new("loss=10%,delay=25ms,jitter=5ms"));
    report("loss10", &o);
    for d in [&o.a_to_b, &o.b_to_a] {
        assert!(d.audio_played_pct() >= 99.9, "{d:?}");
        assert!(d.video_played_pct() >= 99.0, "{d:?}");
        assert!(d.video_order_ok);
        assert!(d.stats.recv_audio.counters.recovered_rtx > 0);
        assert!(d.stats.recv_video.counters.recovered_rtx > 0);
        // Transport latency (capture to playout, codec excluded) stays well inside the
        // budget: the buffer holds one repair round, no more.
        assert!(d.audio_latency[2] <= Duration::from_millis(170), "{d:?}");
    }
    // Steady random loss must not starve the video bitrate.
    assert!(
        o.a.target_bitrate_bps >= 800_000,
        "{}",
        o.a.target_bitrate_bps
    );
}

#[test]
fn five_and_twenty_percent_loss() {
    let o = run(&Scenario::new("loss=5%,delay=25ms,jitter=5ms"));
    report("loss5", &o);
    for d in [&o.a_to_b, &o.b_to_a] {
        assert!(d.audio_played_pct() >= 99.9, "{d:?}");
        assert!(d.video_played_pct() >= 99.0, "{d:?}");
    }
    let o = run(&Scenario::new("loss=20%,delay=25ms,jitter=5ms"));
    report("loss20", &o);
    for d in [&o.a_to_b, &o.b_to_a] {
        // Graceful: most media still plays, delay stays bounded, no stall.
        assert!(d.audio_played_pct() >= 99.0, "{d:?}");
        assert!(d.video_played_pct() >= 90.0, "{d:?}");
        assert!(d.audio_latency[2] <= common::AUDIO_BUDGET);
        assert!(d.stats.audio_playout.level <= Duration::from_millis(200));
    }
    assert!(
        o.a.target_bitrate_bps >= 300_000,
        "{}",
        o.a.target_bitrate_bps
    );
}

#[test]
fn bursty_loss_degrades_gracefully() {
    let o = run(&Scenario::new("loss=10%,burst=6,delay=25ms,jitter=5ms"));
    report("burst", &o);
    for d in [&o.a_to_b, &o.b_to_a] {
        // Bursts of ~6 packets (120 ms of audio) outrun FEC: concealment and a little
        // extra delay are expected, a stall or unbounded delay is not.
        assert!(d.audio_played as f64 >= 0.95 * d.audio_sent as f64, "{d:?}");
        assert!(d.audio_played_pct() >= 90.0, "{d:?}");
        assert!(d.audio_latency[2] <= Duration::from_millis(300), "{d:?}");
        assert!(d.audio_conceal > 0);
        assert!(d.video_played_pct() >= 90.0, "{d:?}");
        assert!(d.video_order_ok);
        assert!(d.stats.audio_playout.level <= Duration::from_millis(250));
    }
    assert!(o.keyframes_requested > 0);
    assert!(o.max_in_flight < 500, "{}", o.max_in_flight);
}

#[test]
fn audio_only_call_works() {
    let mut s = Scenario::new("loss=10%,delay=25ms,jitter=5ms");
    s.video = false;
    let o = run(&s);
    report("audio-only", &o);
    assert!(o.a_to_b.audio_played_pct() >= 99.9);
    assert_eq!(o.a_to_b.video_sent, 0);
}
