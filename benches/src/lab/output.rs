//! The lab's report: a Markdown table, a JSON file and SVG plots, and the comparison of
//! the two engines.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::plot::{self, Axes, Series};
use super::{Condition, EngineKind, LabMedia, LossProfile, Measured, Summary};

/// One condition's result on one engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Which engine.
    pub engine: EngineKind,
    /// The condition.
    pub condition: Condition,
    /// The impairment each direction ran under (`--sim` syntax).
    pub sim: String,
    /// The mean of the two directions.
    pub summary: Summary,
    /// Both endpoints' full reports.
    pub measured: Measured,
    /// Wall-clock seconds the run took.
    pub wall_secs: f64,
}

/// How far the engines may differ and still agree.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Tolerance {
    /// Audio and video latency p50, ms.
    pub latency_p50_ms: f64,
    /// Audio concealment (all concealed slots), percentage points.
    pub residual_points: f64,
}

impl Default for Tolerance {
    fn default() -> Self {
        Self {
            latency_p50_ms: 20.0,
            residual_points: 1.0,
        }
    }
}

/// One condition run on both engines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agreement {
    /// The condition.
    pub condition: Condition,
    /// Real minus virtual, audio latency p50, ms.
    pub audio_p50_diff_ms: f64,
    /// Real minus virtual, video latency p50, ms.
    pub video_p50_diff_ms: f64,
    /// Real minus virtual, audio concealment (concealed slots, percent), points.
    pub audio_concealed_diff: f64,
    /// Real minus virtual, audio link loss before recovery, points (a sanity check of
    /// the two `netsim` instances).
    pub audio_link_loss_diff: f64,
    /// Within the tolerance.
    pub agree: bool,
}

impl Agreement {
    /// Compares the two engines' rows for one condition.
    pub fn of(
        virtual_row: &Summary,
        real_row: &Summary,
        condition: Condition,
        t: Tolerance,
    ) -> Self {
        let audio = real_row.audio_latency_ms[0] - virtual_row.audio_latency_ms[0];
        let video = real_row.video_latency_ms[0] - virtual_row.video_latency_ms[0];
        // Compare all concealed slots: lost media and the jitter buffer's stretching.
        let residual = real_row.audio_concealed_percent - virtual_row.audio_concealed_percent;
        let video_ok = video.is_nan() || video.abs() <= t.latency_p50_ms;
        Self {
            condition,
            audio_p50_diff_ms: audio,
            video_p50_diff_ms: video,
            audio_concealed_diff: residual,
            audio_link_loss_diff: real_row.audio_link_loss_percent
                - virtual_row.audio_link_loss_percent,
            agree: audio.abs() <= t.latency_p50_ms
                && video_ok
                && residual.abs() <= t.residual_points,
        }
    }
}

/// Everything a run produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabReport {
    /// The command line that produced it.
    pub command: String,
    /// The run's seed.
    pub seed: u64,
    /// What the endpoints sent.
    pub media: LabMedia,
    /// Wall-clock seconds per engine.
    pub wall_secs: Vec<(EngineKind, f64)>,
    /// Every result.
    pub rows: Vec<Row>,
    /// Conditions failed, with the reason.
    pub failures: Vec<(EngineKind, Condition, String)>,
    /// The tolerance the engines were compared with.
    pub tolerance: Tolerance,
    /// Conditions run on both engines.
    pub agreement: Vec<Agreement>,
}

impl LabReport {
    /// Pairs up conditions run on both engines.
    pub fn compare(&mut self) {
        let tolerance = self.tolerance;
        self.agreement = self
            .rows
            .iter()
            .filter(|r| r.engine == EngineKind::Virtual)
            .filter_map(|v| {
                self.rows
                    .iter()
                    .find(|r| r.engine == EngineKind::Real && r.condition == v.condition)
                    .map(|r| Agreement::of(&v.summary, &r.summary, v.condition, tolerance))
            })
            .collect();
    }

    /// The Markdown report: the conditions, the table, the agreement.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let m = &self.media;
        let _ = writeln!(s, "# Magpie loss/latency lab\n");
        let _ = writeln!(s, "Command: `{}`  ", self.command);
        let _ = writeln!(
            s,
            "Each call: {:.0} s, Opus {} kbit/s 20 ms mono, {}; seed {}.  ",
            m.duration.as_secs_f64(),
            m.audio_bitrate_kbps,
            if m.video {
                format!(
                    "H.264 {}x{} at {} fps starting at {} kbit/s",
                    m.width, m.height, m.fps, m.video_bitrate_kbps
                )
            } else {
                "no video".into()
            },
            self.seed
        );
        let _ = writeln!(
            s,
            "Each figure is the mean of the call's two directions. Latency is mouth-to-ear \
             (audio) and glass-to-glass (video), measured on timing markers in the decoded \
             media, codec included. Audio residual is media that never played (concealed \
             slots less those the jitter buffer inserted to grow its delay); audio \
             concealed is every concealed slot; video residual is packets still missing \
             after retransmission. Freezes follow the WebRTC definition. RTT is the \
             link's fixed delay; jitter adds a uniform `[0, 2 x jitter]` delay on top.\n"
        );
        for (engine, secs) in &self.wall_secs {
            let _ = writeln!(s, "Wall time, {engine} engine: {secs:.0} s.  ");
        }
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "| engine | loss | RTT ms | jitter ms | recovery | audio p50/p95/p99/max ms | \
             audio warm-up max ms | video p50/p95/p99 ms | audio link loss % | \
             audio residual % | audio concealed % | FEC-repaired % | RED-repaired % | \
             audio dropped/sped up | video residual % | freezes/min | frozen % | RTX overhead % | \
             RED overhead % | MOS |"
        );
        let _ = writeln!(s, "|{}", "---|".repeat(20));
        for r in &self.rows {
            let c = &r.condition;
            let x = &r.summary;
            let trio = |v: [f64; 3]| {
                if v[0].is_nan() {
                    "-".to_owned()
                } else {
                    format!("{:.0}/{:.0}/{:.0}", v[0], v[1], v[2])
                }
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {}/{:.0} | {:.0} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1}/{:.1} | {:.2} | {:.1} | {:.1} | {:.1} | {:.0} | {:.2} |",
                r.engine,
                c.loss,
                c.rtt_ms,
                c.jitter_ms,
                c.recovery(),
                trio(x.audio_latency_ms),
                x.audio_latency_max_ms,
                x.audio_warmup_max_ms,
                trio(x.video_latency_ms),
                x.audio_link_loss_percent,
                x.audio_residual_loss_percent,
                x.audio_concealed_percent,
                x.audio_fec_percent,
                x.audio_red_percent,
                x.audio_dropped,
                x.audio_accelerated,
                x.video_residual_loss_percent,
                x.video_freezes_per_min,
                x.video_frozen_percent,
                x.rtx_overhead_percent,
                x.red_overhead_percent,
                x.mos,
            );
        }
        self.capacity_table(&mut s);
        if !self.agreement.is_empty() {
            let t = self.tolerance;
            let _ = writeln!(
                s,
                "\n## Engine agreement\n\nTolerance: latency p50 within {} ms (audio and video), \
                 audio concealment within {} point. Differences are real minus virtual.\n",
                t.latency_p50_ms, t.residual_points
            );
            let _ = writeln!(
                s,
                "| condition | audio p50 ms | video p50 ms | audio concealed points | audio link loss points | agree |\n|---|---|---|---|---|---|"
            );
            for a in &self.agreement {
                let _ = writeln!(
                    s,
                    "| {} | {:+.1} | {:+.1} | {:+.2} | {:+.2} | {} |",
                    a.condition,
                    a.audio_p50_diff_ms,
                    a.video_p50_diff_ms,
                    a.audio_concealed_diff,
                    a.audio_link_loss_diff,
                    if a.agree { "yes" } else { "NO" }
                );
            }
        }
        if !self.failures.is_empty() {
            let _ = writeln!(s, "\n## Failures\n");
            for (engine, c, why) in &self.failures {
                let _ = writeln!(s, "- {engine}, {c}: {why}");
            }
        }
        s
    }

    /// The capacity-limited rows: how much of the bottleneck the call used and how long
    /// its packets queued (both directions folded; recovery is the slower one's).
    fn capacity_table(&self, s: &mut String) {
        let rows: Vec<_> = self
            .rows
            .iter()
            .filter_map(|r| Some((r, r.condition.capacity?, r.summary.bottleneck?)))
            .collect();
        if rows.is_empty() {
            return;
        }
        let _ = writeln!(
            s,
            "\n## Capacity-limited links\n\nUtilization and queueing delay count from {} s \
             after the start (the rate search before it is not the steady state); the \
             queueing delay is a datagram's time in the bottleneck, waiting and being sent. \
             Self-inflicted loss is what the full queue dropped over what was sent, the \
             whole call and after the warm-up. Recovery is from the first rate drop to the last datagram that \
             queued {} ms or more.\n",
            super::capacity::WARM_UP.as_secs(),
            super::capacity::RECOVERED_BELOW.as_millis()
        );
        let _ = writeln!(
            s,
            "| engine | capacity | loss | recovery | video p50/p95/p99 ms | freezes/min | \
             sent kbit/s | utilization % | queue p50/p95/max ms | self-inflicted loss % \
             (call/after warm-up) | recovery ms | dropped from the rate drop (first-last ms) |\n|{}",
            "---|".repeat(12)
        );
        for (r, capacity, b) in rows {
            let x = &r.summary;
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {:.0}/{:.0}/{:.0} | {:.1} | {:.0} | {:.1} | {:.0}/{:.0}/{:.0} | {:.2}/{:.2} | {} | {} |",
                r.engine,
                capacity,
                r.condition.loss,
                r.condition.recovery(),
                x.video_latency_ms[0],
                x.video_latency_ms[1],
                x.video_latency_ms[2],
                x.video_freezes_per_min,
                x.sent_kbps,
                b.utilization_percent,
                b.queue_delay_ms[0],
                b.queue_delay_ms[1],
                b.queue_delay_max_ms,
                b.self_inflicted_loss_percent,
                b.self_inflicted_loss_after_warm_up_percent,
                b.recovery_ms
                    .map_or("-".to_owned(), |ms| format!("{ms:.0}")),
                b.drops_after_rate_drop
                    .map_or("-".to_owned(), |d| match d.span_ms {
                        Some([first, last]) => format!("{} ({first:.0}-{last:.0})", d.datagrams),
                        None => "0".to_owned(),
                    }),
            );
        }
    }

    /// Writes `report.md`, `report.json` and the plots into `dir`; returns the files.
    pub fn write(&self, dir: &Path) -> Result<Vec<std::path::PathBuf>> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let md = dir.join("report.md");
        std::fs::write(&md, self.markdown())?;
        let json = dir.join("report.json");
        std::fs::write(&json, serde_json::to_vec_pretty(self)?)?;
        let mut files = vec![md, json];
        files.extend(self.plots(dir)?);
        Ok(files)
    }

    /// The slice the plots show: RTT 50 ms and jitter 10 ms when the run has them,
    /// else the first of each.
    fn reference(&self) -> Option<(u32, u32)> {
        let first = self.rows.first()?.condition;
        let has = |f: &dyn Fn(&Condition) -> bool| self.rows.iter().any(|r| f(&r.condition));
        let rtt = if has(&|c| c.rtt_ms == 50) {
            50
        } else {
            first.rtt_ms
        };
        let jitter = if has(&|c| c.jitter_ms == 10) {
            10
        } else {
            first.jitter_ms
        };
        Some((rtt, jitter))
    }

    fn plots(&self, dir: &Path) -> Result<Vec<std::path::PathBuf>> {
        let Some((rtt, jitter)) = self.reference() else {
            return Ok(Vec::new());
        };
        let mut files = Vec::new();
        let virtual_rows: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| r.engine == EngineKind::Virtual)
            .collect();
        for (recovery, nack, fec) in [
            ("nack-fec", true, true),
            ("nack", true, false),
            ("fec", false, true),
            ("none", false, false),
        ] {
            let slice: Vec<&&Row> = virtual_rows
                .iter()
                .filter(|r| {
                    let c = &r.condition;
                    (c.rtt_ms, c.jitter_ms, c.nack, c.fec) == (rtt, jitter, nack, fec)
                })
                .collect();
            if slice.is_empty() {
                continue;
            }
            for (media, samples) in [
                (
                    "audio",
                    (|r: &Row| r.measured.audio_latency_ms.clone()) as fn(&Row) -> Vec<f64>,
                ),
                ("video", |r: &Row| r.measured.video_latency_ms.clone()),
            ] {
                let series: Vec<Series> = slice
                    .iter()
                    .map(|r| Series {
                        label: format!("loss {}", r.condition.loss),
                        points: plot::cdf(&samples(r)),
                    })
                    .filter(|s| !s.points.is_empty())
                    .collect();
                if series.is_empty() {
                    continue;
                }
                let path = dir.join(format!("cdf-{media}-{recovery}.svg"));
                let title = format!(
                    "{media} latency CDF, RTT {rtt} ms, jitter {jitter} ms, {}",
                    slice[0].condition.recovery()
                );
                plot::lines(
                    &path,
                    Axes {
                        title: &title,
                        x: "latency (ms)",
                        y: "fraction of markers",
                    },
                    &series,
                )?;
                files.push(path);
            }
        }
        // Residual loss against link loss: by recovery at the reference RTT, and by RTT
        // with everything on.
        let random = |r: &&&Row| matches!(r.condition.loss, LossProfile::Random { .. });
        let residual = |filter: &dyn Fn(&Condition) -> bool| -> Vec<(f64, f64)> {
            let mut points: Vec<(f64, f64)> = virtual_rows
                .iter()
                .filter(random)
                .filter(|r| filter(&r.condition))
                .map(|r| {
                    (
                        r.condition.loss.percent(),
                        r.summary.audio_residual_loss_percent,
                    )
                })
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            points
        };
        let mut by_recovery = Vec::new();
        for (label, nack, fec) in [
            ("NACK+FEC", true, true),
            ("NACK", true, false),
            ("FEC", false, true),
            ("none", false, false),
        ] {
            let points =
                residual(&|c| (c.rtt_ms, c.jitter_ms, c.nack, c.fec) == (rtt, jitter, nack, fec));
            if points.len() > 1 {
                by_recovery.push(Series {
                    label: label.into(),
                    points,
                });
            }
        }
        let mut rtts: Vec<u32> = virtual_rows.iter().map(|r| r.condition.rtt_ms).collect();
        rtts.sort_unstable();
        rtts.dedup();
        let by_rtt: Vec<Series> = rtts
            .iter()
            .map(|&t| Series {
                label: format!("RTT {t} ms"),
                points: residual(&|c| {
                    (c.rtt_ms, c.jitter_ms, c.nack, c.fec) == (t, jitter, true, true)
                }),
            })
            .filter(|s| s.points.len() > 1)
            .collect();
        for (name, title, series) in [
            (
                "residual-vs-loss.svg",
                format!("residual audio loss vs link loss, RTT {rtt} ms, jitter {jitter} ms"),
                by_recovery,
            ),
            (
                "residual-vs-loss-by-rtt.svg",
                format!("residual audio loss vs link loss, NACK+FEC, jitter {jitter} ms"),
                by_rtt,
            ),
        ] {
            if series.is_empty() {
                continue;
            }
            let path = dir.join(name);
            plot::lines(
                &path,
                Axes {
                    title: &title,
                    x: "link loss each way (%)",
                    y: "residual audio loss (%)",
                },
                &series,
            )?;
            files.push(path);
        }
        Ok(files)
    }
}
