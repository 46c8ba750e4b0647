//! The lab's smoke matrix on the virtual engine: it runs, its figures make sense, and the
//! same seed gives the same figures.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use magpie_benches::lab::output::{LabReport, Row, Tolerance};
use magpie_benches::lab::{self, EngineKind, LabMedia, Matrix, Measured, Summary};

/// Small and short: the figures are coarse, the run is quick in the test profile.
fn media() -> LabMedia {
    LabMedia {
        duration: Duration::from_secs(6),
        width: 160,
        height: 120,
        ..LabMedia::default()
    }
}

fn smoke() -> Vec<Measured> {
    let conditions = Matrix::smoke().conditions();
    lab::run_virtual_matrix(&conditions, &media(), 1, 2, &|_| {})
        .into_iter()
        .map(Result::unwrap)
        .collect()
}

fn check(m: &Measured) {
    let c = m.condition;
    let s = Summary::of(m);
    let link = m.link.unwrap();
    let what = format!("{c}: {s:?}");
    // Every latency was measured on decoded media, and includes at least the link's
    // one-way delay.
    for report in [&m.a, &m.b] {
        assert!(report.audio.latency.samples >= 10, "{what}");
        assert!(
            report.video.as_ref().unwrap().latency.samples >= 10,
            "{what}"
        );
    }
    // Every video frame received is shown or dropped for a named reason; the virtual
    // engine decodes each frame as it is emitted, so none is in flight.
    for report in [&m.a, &m.b] {
        let v = report.video.as_ref().unwrap();
        assert_eq!(v.unaccounted(), 0, "{what}: {v:?}");
        assert_eq!(v.in_flight, 0, "{what}: {v:?}");
        assert!(
            v.received >= v.frames && v.frames >= v.decoded,
            "{what}: {v:?}"
        );
        if c.loss.percent() > 0.0 && !c.nack {
            assert!(v.dropped_incomplete > 0, "{what}: {v:?}");
        }
    }
    let one_way = c.one_way_delay().as_secs_f64() * 1000.0;
    assert!(
        s.audio_latency_ms[0] > one_way && s.audio_latency_ms[0] < 400.0,
        "{what}"
    );
    assert!(
        s.video_latency_ms[0] > one_way && s.video_latency_ms[0] < 600.0,
        "{what}"
    );
    assert!(s.audio_latency_ms[0] <= s.audio_latency_ms[1], "{what}");
    assert!(s.audio_latency_ms[1] <= s.audio_latency_ms[2], "{what}");
    assert!(s.mos > 1.0 && s.mos <= 4.5, "{what}");
    if !c.nack {
        assert_eq!(s.rtx_overhead_percent, 0.0, "{what}");
    }
    if c.loss.percent() == 0.0 {
        // A clean link: nothing lost, nothing repaired, no media concealed.
        assert_eq!((link.a_to_b_lost, link.b_to_a_lost), (0, 0));
        assert_eq!(s.audio_link_loss_percent, 0.0, "{what}");
        assert_eq!(s.audio_residual_loss_percent, 0.0, "{what}");
        assert_eq!(s.video_residual_loss_percent, 0.0, "{what}");
        assert_eq!(s.audio_fec_percent, 0.0, "{what}");
        assert_eq!(s.rtx_overhead_percent, 0.0, "{what}");
        assert!(s.mos > 4.0, "{what}");
        if !c.nack {
            // Without a retransmission allowance the buffer need not grow either.
            assert_eq!(s.audio_concealed_percent, 0.0, "{what}");
        }
        return;
    }
    let sent = (link.a_to_b_sent + link.b_to_a_sent) as f64;
    let lost = (link.a_to_b_lost + link.b_to_a_lost) as f64 * 100.0 / sent;
    assert!((5.0..15.0).contains(&lost), "link lost {lost} %: {what}");
    assert!(s.audio_link_loss_percent > 5.0, "{what}");
    // FEC and RED repair most audio loss (with NACK, retransmission gets there first
    // and they cover what it misses); with NACK as well, residual loss is a small
    // fraction of the link's.
    if !c.nack {
        // (FEC and RED: redundancy covers the first second too, before the first report.)
        assert!(s.audio_fec_percent + s.audio_red_percent > 1.0, "{what}");
    }
    assert!(
        s.audio_residual_loss_percent < s.audio_link_loss_percent / 3.0,
        "{what}"
    );
    if c.nack {
        assert!(
            s.audio_residual_loss_percent < s.audio_link_loss_percent / 10.0,
            "{what}"
        );
        assert!(s.rtx_overhead_percent > 1.0, "{what}");
        assert!(
            m.a.audio.recovered_rtx + m.b.audio.recovered_rtx > 0,
            "{what}"
        );
        let video = m.b.video.as_ref().unwrap();
        assert!(
            video.residual_loss_percent < video.loss_before_recovery_percent / 5.0,
            "{what}"
        );
    }
}

fn report_of(results: Vec<Measured>) -> LabReport {
    let mut report = LabReport {
        command: "test".into(),
        seed: 1,
        media: media(),
        wall_secs: vec![(EngineKind::Virtual, 0.0)],
        rows: results
            .into_iter()
            .map(|m| Row {
                engine: EngineKind::Virtual,
                condition: m.condition,
                sim: m.condition.sim_spec(),
                summary: Summary::of(&m),
                measured: m,
                wall_secs: 0.0,
            })
            .collect(),
        failures: Vec::new(),
        tolerance: Tolerance::default(),
        agreement: Vec::new(),
    };
    report.compare();
    report
}

#[test]
fn the_smoke_matrix_makes_sense_is_reproducible_and_is_reported() {
    let results = smoke();
    assert_eq!(results.len(), 4);
    for m in &results {
        check(m);
    }

    // Same seed, same figures, whichever thread ran the condition.
    let lossy = &results[2];
    assert!(lossy.condition.loss.percent() > 0.0 && lossy.condition.nack);
    let again =
        lab::virtual_time::run(&lossy.condition, &media(), lossy.condition.seed(1)).unwrap();
    assert_eq!(&again, lossy);
    assert_eq!(again.audio_latency_ms, lossy.audio_latency_ms);
    assert_eq!(again.video_latency_ms, lossy.video_latency_ms);
    // Another seed, another draw of the link.
    let other =
        lab::virtual_time::run(&lossy.condition, &media(), lossy.condition.seed(2)).unwrap();
    assert_ne!(other.link, lossy.link);

    // The report: a table row per condition, JSON that reads back, and the plots.
    let report = report_of(results);
    assert!(report.agreement.is_empty(), "one engine only");
    let dir = std::env::temp_dir().join(format!("losslab-test-{}", std::process::id()));
    let files = report.write(&dir).unwrap();
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert_eq!(md.matches("| virtual |").count(), 4, "{md}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["rows"].as_array().unwrap().len(), 4);
    for name in [
        "cdf-audio-nack-fec.svg",
        "cdf-video-fec.svg",
        "residual-vs-loss.svg",
    ] {
        assert!(files.contains(&dir.join(name)), "{name} in {files:?}");
        assert!(
            std::fs::read_to_string(dir.join(name))
                .unwrap()
                .contains("<svg")
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
