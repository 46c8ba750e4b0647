//! Calls over a capacity-limited link (netsim's bottleneck with a drop-tail queue), with
//! delay-based congestion control on and a synthetic encoder that follows its target:
//! what a sender puts on the link is held to the estimate its peer sends back (the send
//! budget: media, retransmissions, FEC and audio redundancy together), so the queue
//! stays short and drops next to nothing, while the link is still used. Several seeds,
//! the assertions on each. Print the figures with `cargo test -p magpie-media --test
//! capacity -- --nocapture`. A call on a 2.5 Mbit/s link reaches 80 % of it within 3 s:
//! the sender probes for capacity (`send::probe`, `cc::probe`).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Outcome, Scenario, run};

const SEEDS: [u64; 3] = [1, 2, 3];
/// The rate search is not the steady state (issue 13: "after 5 s"); the first REMB
/// comes about a second in, after a start at 1 Mbit/s.
const WARM_UP: Duration = Duration::from_secs(8);

/// The bits A handed its link from `from` on, and the integral of the estimate it held
/// over the same time, from the trace.
fn sent_and_allowed(o: &Outcome, from: Duration) -> (f64, f64) {
    let trace: Vec<_> = o.trace_a.iter().filter(|s| s.0 >= from).collect();
    let (first, last) = (trace[0], trace[trace.len() - 1]);
    let sent = (last.1 - first.1) as f64 * 8.0;
    let allowed: f64 = trace
        .windows(2)
        .map(|w| w[0].3.unwrap_or(0) as f64 * (w[1].0 - w[0].0).as_secs_f64())
        .sum();
    (sent, allowed)
}

/// What the full queue dropped of A's datagrams after `from`, percent of those that
/// reached it then.
fn loss_after(o: &Outcome, from: Duration) -> f64 {
    let dropped = o.queue_drops[0].iter().filter(|t| **t >= from).count();
    let carried = o.queue_delays[0].iter().filter(|(t, _)| *t >= from).count();
    dropped as f64 * 100.0 / (dropped + carried).max(1) as f64
}

/// The p95 of the queueing delays of A's datagrams that left the bottleneck after `from`.
fn queue_p95(o: &Outcome, from: Duration) -> Duration {
    let mut d: Vec<Duration> = o.queue_delays[0]
        .iter()
        .filter(|(at, _)| *at >= from)
        .map(|(_, d)| *d)
        .collect();
    d.sort();
    d[(d.len() - 1) * 95 / 100]
}

#[test]
fn at_300_kbits_everything_sent_stays_within_the_estimate_and_the_queue_short() {
    for seed in SEEDS {
        let scenario = Scenario {
            seconds: 30,
            follow_target: true,
            config: |c| c.set_delay_bwe(true),
            ..Scenario::new("rate=300kbit,queue=200ms,delay=25ms,jitter=5ms").with_seed(seed)
        };
        let o = run(&scenario);
        let (sent, allowed) = sent_and_allowed(&o, WARM_UP);
        let secs = (scenario.seconds as f64) - WARM_UP.as_secs_f64() - 0.5;
        let p95 = queue_p95(&o, WARM_UP);
        let loss = loss_after(&o, WARM_UP);
        let link = o.links[0];
        let what = format!(
            "seed {seed}: sent {:.0} kbit/s, estimate {:.0} kbit/s, queue p95 {p95:?}, \
             queue drops {loss:.2} % after the warm-up, {} in all of {}, budget {:?}, \
             target {} bit/s",
            sent / secs / 1e3,
            allowed / secs / 1e3,
            link.queue_drops,
            link.sent,
            o.a.budget,
            o.a.target_bitrate_bps,
        );
        println!("{what}");
        // Everything sent (media, RTX, FEC, RED) within the estimate, and the estimate
        // near the capacity. The tolerance is what the budget does not count (RTCP,
        // SRTP's tags: ~4 % at this rate) and the encoder's overshoot (its keyframes).
        assert!(sent <= allowed * 1.1, "{what}");
        assert!(allowed <= 300_000.0 * secs * 1.2, "{what}");
        // The link still used: at least 80 % of it (issue 13's target).
        assert!(sent >= 0.8 * 300_000.0 * secs, "{what}");
        // No queue standing full (without the budget it stood at the full 200 ms and
        // dropped over half of what was sent), and little self-inflicted loss after the
        // warm-up (the call starts at 1 Mbit/s, over three times the capacity). Of
        // issue 13's targets, loss ≤ 1 % is met by seeds 1-3 (0 % after the warm-up),
        // queueing p95 ≤ 100 ms by none (127/114/123 ms): this encoder's keyframes are
        // six frames at once.
        assert!(p95 < Duration::from_millis(190), "{what}");
        assert!(loss <= 2.0, "{what}");
        // The video played on: most frames shown (92-95 % over the seeds; not all within the 400 ms
        // budget: at this rate a keyframe alone takes 0.2-0.4 s of the link).
        let d = &o.a_to_b;
        let what = format!(
            "{what}; video shown {}/{}, in budget {:.1} %",
            d.video_shown,
            d.video_sent,
            d.video_played_pct()
        );
        println!("{what}");
        assert!(d.video_shown as f64 >= 0.85 * d.video_sent as f64, "{what}");
    }
}

#[test]
fn protection_asked_for_beyond_the_estimate_is_refused_and_counted() {
    // 10 % random loss on a 300 kbit/s link: FEC, retransmissions and redundancy all
    // want more than the estimate leaves; the budget refuses the rest, FEC first.
    let scenario = Scenario {
        seconds: 20,
        follow_target: true,
        config: |c| c.set_delay_bwe(true),
        ..Scenario::new("rate=300kbit,queue=200ms,loss=10%,delay=25ms,jitter=5ms")
    };
    let o = run(&scenario);
    let (sent, allowed) = sent_and_allowed(&o, WARM_UP);
    let b = o.a.budget;
    let what = format!("sent {sent}, allowed {allowed}, {b:?}");
    println!("{what}");
    assert!(sent <= allowed * 1.1, "{what}");
    assert!(b.video_fec_refused > 0 && b.refused_bytes > 0, "{what}");
    // Audio comes first: its retransmissions are refused least.
    assert!(b.audio_rtx_refused <= b.video_fec_refused, "{what}");
}

#[test]
fn probing_finds_a_wide_links_capacity_within_seconds() {
    // 2.5 Mbit/s, the configured maximum, from a start at 1 Mbit/s. Without probes the
    // estimate grew 8 % a second: about 2 Mbit/s only near the end of a 20 s call. With
    // them (issue 13: "probing finds capacity upward"), what A sends from 3 s on uses at
    // least 80 % of the link, the queue stays short and drops nothing to speak of.
    let from = Duration::from_secs(3);
    for seed in SEEDS {
        let scenario = Scenario {
            seconds: 10,
            follow_target: true,
            config: |c| c.set_delay_bwe(true),
            ..Scenario::new("rate=2500kbit,queue=200ms,delay=25ms,jitter=5ms").with_seed(seed)
        };
        let o = run(&scenario);
        let (sent, allowed) = sent_and_allowed(&o, from);
        let secs = (scenario.seconds as f64) - from.as_secs_f64() - 0.5;
        let p95 = queue_p95(&o, from);
        let loss = loss_after(&o, from);
        let what = format!(
            "seed {seed}: sent {:.0} kbit/s, estimate {:.0} kbit/s, queue p95 {p95:?}, \
             queue drops {loss:.2} % after {from:?}, probes sent {:?}, measured by B {:?} \
             (raised its estimate {} times), padding B received {:?}",
            sent / secs / 1e3,
            allowed / secs / 1e3,
            o.a.probe,
            o.b.delay_bwe.probe,
            o.b.delay_bwe.probe_raises,
            o.b.padding_received,
        );
        println!("{what}");
        assert!(sent >= 0.8 * 2_500_000.0 * secs, "{what}");
        assert!(
            o.a.probe.clusters >= 1 && o.b.delay_bwe.probe_raises >= 1,
            "{what}"
        );
        // Every probe packet A sent reached B as padding, none as media.
        assert_eq!(
            o.b.padding_received.packets, o.a.send_video.padding_packets,
            "{what}"
        );
        // The queue: 113-141 ms at p95 over the seeds, the link being the configured
        // maximum, so the estimate climbs to it and the standing queue cuts it back; no
        // drops. Issue 13 asks ≤ 100 ms: not met here, a known gap (README), so this
        // holds the queue to 150 ms, against a regression to a standing full queue.
        assert!(p95 < Duration::from_millis(150), "{what}");
        assert!(loss <= 1.0, "{what}");
    }
}
