//! A capacity-limited link on the virtual engine: the sender starts above the
//! bottleneck; the receiver's delay-based estimator must see the queue, cut its
//! estimate below the capacity and get it to the sender, whose video target follows.
//!
//! The send budget holds retransmissions, FEC and audio redundancy to the estimate, so
//! the queue no longer stands full.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use magpie_benches::lab::{self, LabMedia, Matrix, Summary};

#[test]
fn a_sender_above_the_bottleneck_backs_off_and_keeps_the_queue_short() {
    let media = LabMedia {
        duration: Duration::from_secs(15),
        width: 320,
        height: 240,
        fps: 15,
        // Twice the capacity: the queue fills at once unless the rate comes down.
        video_bitrate_kbps: 600,
        ..LabMedia::default()
    };
    // The matrix's 300 kbit/s link: 200 ms drop-tail queue, RTT 50 ms, jitter 10 ms.
    let condition = Matrix::capacity_conditions()[0];
    assert_eq!(condition.capacity.map(|c| c.kbps), Some(300));
    let m = lab::virtual_time::run(&condition, &media, condition.seed(1)).unwrap();
    let s = Summary::of(&m);
    let b = s.bottleneck.unwrap();
    let what = format!("{s:?}");
    for report in [&m.a, &m.b] {
        // The receiver saw the queue grow and stand, and cut its estimate.
        let bwe = report.sent.delay_bwe;
        let sent = &report.sent;
        let what = format!("{bwe:?} {sent:?}");
        assert!(bwe.overuse > 0 && bwe.rate.decreases > 0, "{what}");
        assert!(bwe.standing_queue > 0, "{what}");
        // The sender heard an estimate near the capacity, not the start rate, and its
        // video target follows it.
        assert!(sent.peer_estimate_kbps > 100.0, "{what}");
        assert!(sent.peer_estimate_kbps < 1.1 * 300.0, "{what}");
        assert!(
            sent.target_bitrate_kbps <= sent.peer_estimate_kbps,
            "{what}"
        );
    }
    // The queue no longer stands full (issue 13: queueing p95 ≤ 100 ms, self-inflicted
    // loss ≤ 1 % after the warm-up; 61 ms and 0 % here), and the link is used. Before
    // the send budget the full queue made the utilization 99.9 % at a p95 over 200 ms
    // and 55 % loss; now it is 81.9 % here (82.8 % and 79 ms before session 13's window).
    assert!(b.queue_delay_ms[1] <= 100.0, "{what}");
    assert!(b.self_inflicted_loss_after_warm_up_percent <= 1.0, "{what}");
    assert!(b.utilization_percent > 75.0, "{what}");
    assert!(b.queue_delay_ms[0] > 0.0, "{what}");
}

#[test]
fn a_collapse_of_both_directions_is_held_by_the_congestion_window() {
    let media = LabMedia {
        width: 320,
        height: 240,
        fps: 15,
        video_bitrate_kbps: 1000,
        ..LabMedia::default()
    };
    // The matrix's drop: 2.5 Mbit/s both ways, 500 kbit/s from 8 s to 14 s, 200 ms
    // drop-tail queues. Both queues fill at once, so the estimate's way back (a REMB
    // through the reverse queue) takes 400-500 ms; the congestion window acts on the
    // acknowledgements that stop coming (issue 13: self-inflicted loss ≤ 1 % after the
    // warm-up; at 640x480 over eight seeds 1.5 % with the window, 5.4 % without).
    let condition = Matrix::capacity_conditions()[3];
    let drop = condition.capacity.and_then(|c| c.steps[0]).unwrap();
    assert_eq!((drop.kbps, drop.at_ms), (500, 8000));
    let m = lab::virtual_time::run(&condition, &media, condition.seed(1)).unwrap();
    let s = Summary::of(&m);
    let b = s.bottleneck.unwrap();
    let what = format!("{s:?}");
    for report in [&m.a, &m.b] {
        // Each side numbered its packets, heard feedback on nearly all of them, and
        // its window closed when the acknowledgements stopped.
        let w = report.sent.in_flight;
        let f = report.sent.transport_feedback;
        assert!(w.sent > 1000 && w.received + w.lost + w.unreported > w.sent * 9 / 10);
        assert!(w.closed > 0 && w.refused == 0, "{w:?}");
        assert!(f.feedbacks > 200, "{f:?}");
    }
    // Measured (320x240 at 15 fps, seed 1): 2.9 % after the warm-up with the window,
    // 5.4 % on session 12's code; the queue back under 150 ms in 0.6 s (0.9 s).
    assert!(b.self_inflicted_loss_after_warm_up_percent < 4.0, "{what}");
    assert!(b.recovery_ms.unwrap() < 800.0, "{what}");
}
