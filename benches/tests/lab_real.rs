//! The real-time engine, once: `magpie-server` and two `magpie` clients on loopback
//! (the debug builds `cargo test --workspace` makes next to this test), a short clean
//! call, and both clients' reports read back. No timing is asserted.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use magpie_benches::lab::real_time::{self, Binaries};
use magpie_benches::lab::{Condition, LabMedia, LossProfile};

#[test]
fn a_real_call_on_loopback_reports_both_directions() {
    let scratch = std::env::temp_dir().join(format!("losslab-real-{}", std::process::id()));
    let bins = Binaries::locate(scratch.clone(), false)
        .expect("magpie and magpie-server are built next to the tests by `cargo test --workspace`");
    let condition = Condition {
        loss: LossProfile::Random { percent: 0.0 },
        rtt_ms: 20,
        jitter_ms: 0,
        nack: true,
        fec: true,
        red: true,
        capacity: None,
    };
    let media = LabMedia {
        duration: Duration::from_secs(3),
        width: 160,
        height: 120,
        ..LabMedia::default()
    };
    let measured = real_time::run(&condition, &media, &bins).unwrap();
    // Each client's `--sim` (delay only here) counted what it sent; no rate, no
    // bottleneck.
    let link = measured.link.unwrap();
    assert!(link.a_to_b_sent > 0 && link.b_to_a_sent > 0, "{link:?}");
    assert_eq!((link.a_to_b_lost, link.b_to_a_lost), (0, 0), "{link:?}");
    assert_eq!(link.a_to_b_bottleneck, None);
    assert_eq!(link.b_to_a_bottleneck, None);
    for report in [&measured.a, &measured.b] {
        assert!(report.audio.frames > 0, "{report:?}");
        assert!(report.sent.audio_packets > 0, "{report:?}");
        assert!(report.video.as_ref().unwrap().frames > 0, "{report:?}");
        assert_eq!(report.audio.loss_before_recovery_percent, 0.0, "{report:?}");
        assert_eq!(report.sent.rtx_bytes, 0, "a clean link needs no repair");
    }
    std::fs::remove_dir_all(&scratch).unwrap();
}
