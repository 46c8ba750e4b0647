//! `losslab`: calls over a matrix of impaired links; writes a Markdown table, a JSON file
//! and SVG plots.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::{Parser, ValueEnum};
use magpie_benches::lab::output::{LabReport, Row, Tolerance};
use magpie_benches::lab::real_time::Binaries;
use magpie_benches::lab::{
    self, Capacity, Condition, EngineKind, LabMedia, LossProfile, Matrix, Progress, RateStep,
    Summary,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Engines {
    /// In process, virtual time: deterministic, two conditions at a time.
    Virtual,
    /// `magpie-server` and two `magpie` clients over loopback UDP, one condition at a
    /// time, in real time.
    Real,
    /// Both, and compare them.
    Both,
}

/// The Magpie loss/latency lab: runs calls over a matrix of link conditions and reports
/// latency (p50/p95/p99), residual loss, concealment, freezes, retransmission overhead
/// and MOS for each.
///
/// The default matrix is the full one: loss 0, 1, 5, 10, 20 % and a bursty
/// Gilbert-Elliott profile (`ge` = 5 % in bursts of 4), RTT 20, 50, 100, 300 ms, jitter
/// 0, 10, 30 ms, NACK on/off x FEC on/off: 288 conditions of 20 s, about 4.5 min on the
/// virtual engine on two cores (6 CPU-minutes). Pick subsets with the list flags. The
/// virtual engine is deterministic: a condition gives the same figures for the same
/// seed, whatever else the matrix holds.
///
/// The real engine runs the `magpie` and `magpie-server` binaries found next to this
/// executable (`cargo run --release -p magpie-benches` builds into the same directory);
/// when they are missing it builds them with `cargo build --release -p magpie-client -p
/// magpie-signaling` (unless --no-build).
#[derive(Debug, Parser)]
#[command(
    name = "losslab",
    after_help = "Examples:
  cargo run --release -p magpie-benches --bin losslab
  cargo run --release -p magpie-benches --bin losslab -- --rtt 50 --jitter 10 --fec on
  cargo run --release -p magpie-benches --bin losslab -- --engine both --loss 5 --rtt 50 \\
      --jitter 10 --nack on --fec on --duration 30
  cargo run --release -p magpie-benches --bin losslab -- --smoke"
)]
struct Args {
    /// Which engine runs the matrix.
    #[arg(long, value_enum, default_value_t = Engines::Virtual)]
    engine: Engines,
    /// The tiny CI matrix: loss 0 and 10 %, RTT 50 ms, jitter 10 ms, FEC on, NACK on/off,
    /// 4 s calls at 160x120 (the list flags still narrow it).
    #[arg(long)]
    smoke: bool,
    /// Loss profiles: percentages, `ge` (5 % in bursts of 4) or `geLOSS/BURST`.
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    loss: Option<Vec<LossProfile>>,
    /// Round-trip times, ms.
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    rtt: Option<Vec<u32>>,
    /// Jitter, ms.
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    jitter: Option<Vec<u32>>,
    /// NACK settings: on, off or on,off.
    #[arg(long, value_delimiter = ',', value_name = "LIST", value_parser = on_off)]
    nack: Option<Vec<bool>>,
    /// FEC settings: on, off or on,off.
    #[arg(long, value_delimiter = ',', value_name = "LIST", value_parser = on_off)]
    fec: Option<Vec<bool>>,
    /// RFC 2198 audio redundancy: on, off or on,off [default: on].
    #[arg(long, value_delimiter = ',', value_name = "LIST", value_parser = on_off)]
    red: Option<Vec<bool>>,
    /// Bottleneck rates, kbit/s, each direction (`none` for unlimited): a capacity
    /// axis of the matrix, with a drop-tail queue of --queue-ms.
    #[arg(long, value_delimiter = ',', value_name = "LIST", value_parser = capacity_kbps)]
    capacity_kbps: Option<Vec<Option<u32>>>,
    /// Rate changes of the bottleneck, KBPS@SECONDS (at most two: a drop and a return),
    /// e.g. `500@10s` or `500@8s,2500@14s`.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "LIST",
        requires = "capacity_kbps"
    )]
    capacity_step: Option<Vec<RateStep>>,
    /// The bottleneck's drop-tail queue, ms at its rate.
    #[arg(long, value_name = "MS", default_value_t = Capacity::DEFAULT_QUEUE_MS)]
    queue_ms: u32,
    /// Only the capacity-limited conditions of the full matrix (300 kbit/s, 1 and 2.5
    /// Mbit/s, 2.5 Mbit/s dropping to 500 kbit/s at 8 s and back at 14 s).
    #[arg(long, conflicts_with_all = ["capacity_kbps", "smoke"])]
    capacity_matrix: bool,
    /// Delay-based congestion control (REMB and the send budget) on or off in every
    /// condition [default: on where the link has a capacity, the session's default (on)
    /// elsewhere].
    #[arg(long, value_name = "on|off", value_parser = on_off)]
    delay_bwe: Option<bool>,
    /// Seconds of media per condition [default: 20, 4 with --smoke].
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Seed of the virtual engine (the links and the sessions).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Threads for the virtual engine [default: the number of cores].
    #[arg(long)]
    threads: Option<usize>,
    /// Video width [default: 320, 160 with --smoke].
    #[arg(long)]
    width: Option<u32>,
    /// Video height [default: 240, 120 with --smoke].
    #[arg(long)]
    height: Option<u32>,
    /// Video frame rate.
    #[arg(long, default_value_t = 15)]
    fps: u32,
    /// Starting video bitrate, kbit/s.
    #[arg(long, default_value_t = 300)]
    video_bitrate_kbps: u32,
    /// Audio only.
    #[arg(long)]
    no_video: bool,
    /// Where the report goes.
    #[arg(long, default_value = "target/losslab")]
    out: PathBuf,
    /// Do not build `magpie` and `magpie-server` when they are missing.
    #[arg(long)]
    no_build: bool,
}

fn capacity_kbps(s: &str) -> Result<Option<u32>, String> {
    match s {
        "none" | "unlimited" => Ok(None),
        _ => match s.parse::<u32>() {
            Ok(k) if k > 0 => Ok(Some(k)),
            _ => Err(format!("`{s}`: expected a rate in kbit/s or `none`")),
        },
    }
}

fn on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" | "true" | "yes" => Ok(true),
        "off" | "false" | "no" => Ok(false),
        _ => Err(format!("`{s}`: expected on or off")),
    }
}

/// Stamps log lines with the virtual time of the call that wrote them (milliseconds from
/// its start), or the wall clock outside a virtual call.
struct LabTime;

impl tracing_subscriber::fmt::time::FormatTime for LabTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        match lab::virtual_time::elapsed() {
            Some(t) => write!(w, "v{:>10.3}", t.as_secs_f64() * 1000.0),
            None => tracing_subscriber::fmt::time::SystemTime.format_time(w),
        }
    }
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_timer(LabTime)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut matrix = if args.smoke {
        Matrix::smoke()
    } else {
        Matrix::full()
    };
    if let Some(v) = &args.loss {
        matrix.loss.clone_from(v);
    }
    if let Some(v) = &args.rtt {
        matrix.rtt_ms.clone_from(v);
    }
    if let Some(v) = &args.jitter {
        matrix.jitter_ms.clone_from(v);
    }
    if let Some(v) = &args.nack {
        matrix.nack.clone_from(v);
    }
    if let Some(v) = &args.fec {
        matrix.fec.clone_from(v);
    }
    if let Some(v) = &args.red {
        matrix.red.clone_from(v);
    }
    let narrowed = [
        args.loss.is_some(),
        args.rtt.is_some(),
        args.jitter.is_some(),
        args.nack.is_some(),
        args.fec.is_some(),
        args.red.is_some(),
        args.capacity_kbps.is_some(),
    ];
    if narrowed.into_iter().any(|n| n) {
        // The list flags pick the conditions; the full matrix's extras go.
        matrix.extra.clear();
    }
    if let Some(v) = &args.capacity_kbps {
        let steps = args.capacity_step.clone().unwrap_or_default();
        if steps.len() > 2 {
            bail!("at most two --capacity-step entries (a drop and a return)");
        }
        matrix.capacity = v
            .iter()
            .map(|kbps| {
                kbps.map(|kbps| Capacity {
                    kbps,
                    queue_ms: args.queue_ms,
                    steps: [steps.first().copied(), steps.get(1).copied()],
                })
            })
            .collect();
    }
    if args.capacity_matrix {
        matrix.extra = Matrix::capacity_conditions()
            .into_iter()
            .map(|mut c| {
                if let Some(cap) = c.capacity.as_mut() {
                    cap.queue_ms = args.queue_ms;
                }
                c
            })
            .collect();
        matrix.loss.clear();
    }
    let conditions = matrix.conditions();
    if conditions.is_empty() {
        bail!("the matrix is empty");
    }
    let defaults = LabMedia::default();
    let media = LabMedia {
        duration: Duration::from_secs_f64(args.duration.unwrap_or(if args.smoke {
            4.0
        } else {
            defaults.duration.as_secs_f64()
        })),
        video: !args.no_video,
        width: args
            .width
            .unwrap_or(if args.smoke { 160 } else { defaults.width }),
        height: args
            .height
            .unwrap_or(if args.smoke { 120 } else { defaults.height }),
        fps: args.fps,
        video_bitrate_kbps: args.video_bitrate_kbps,
        delay_bwe: args.delay_bwe,
        ..defaults
    };
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, std::num::NonZero::get));
    let mut report = LabReport {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        seed: args.seed,
        media: media.clone(),
        wall_secs: Vec::new(),
        rows: Vec::new(),
        failures: Vec::new(),
        tolerance: Tolerance::default(),
        agreement: Vec::new(),
    };
    let engines: &[EngineKind] = match args.engine {
        Engines::Virtual => &[EngineKind::Virtual],
        Engines::Real => &[EngineKind::Real],
        Engines::Both => &[EngineKind::Virtual, EngineKind::Real],
    };
    for &engine in engines {
        eprintln!(
            "losslab: {} conditions on the {engine} engine, {:.0} s each{}",
            conditions.len(),
            media.duration.as_secs_f64(),
            if engine == EngineKind::Virtual {
                format!(", {threads} threads")
            } else {
                String::new()
            }
        );
        #[allow(clippy::disallowed_methods)] // reason: wall time of the run, for the report
        let started = Instant::now();
        let results: Vec<(Condition, Result<lab::Measured>, f64)> = match engine {
            EngineKind::Virtual => {
                let took = std::sync::Mutex::new(vec![0.0; conditions.len()]);
                let results = lab::run_virtual_matrix(
                    &conditions,
                    &media,
                    args.seed,
                    threads,
                    &|p: Progress<'_>| {
                        show(&p);
                        if let (Ok(mut took), Some(i)) = (
                            took.lock(),
                            conditions.iter().position(|c| c == p.condition),
                        ) {
                            took[i] = p.took.as_secs_f64();
                        }
                    },
                );
                let took = took.into_inner().unwrap_or_default();
                conditions
                    .iter()
                    .zip(results)
                    .zip(took)
                    .map(|((c, r), t)| (*c, r, t))
                    .collect()
            }
            EngineKind::Real => {
                let bins = Binaries::locate(args.out.join("real"), !args.no_build)?;
                eprintln!(
                    "losslab: using {} and {}",
                    bins.client.display(),
                    bins.server.display()
                );
                let mut out = Vec::new();
                for (i, c) in conditions.iter().enumerate() {
                    #[allow(clippy::disallowed_methods)] // reason: progress display
                    let t = Instant::now();
                    let result = lab::real_time::run(c, &media, &bins);
                    show(&Progress {
                        done: i + 1,
                        total: conditions.len(),
                        condition: c,
                        result: &result,
                        took: t.elapsed(),
                    });
                    out.push((*c, result, t.elapsed().as_secs_f64()));
                }
                out
            }
        };
        report
            .wall_secs
            .push((engine, started.elapsed().as_secs_f64()));
        for (condition, result, wall_secs) in results {
            match result {
                Ok(measured) => report.rows.push(Row {
                    engine,
                    condition,
                    sim: condition.sim_spec(),
                    summary: Summary::of(&measured),
                    measured,
                    wall_secs,
                }),
                Err(e) => report.failures.push((engine, condition, format!("{e:#}"))),
            }
        }
        eprintln!(
            "losslab: {engine} engine done in {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
    report.compare();
    let files = report.write(&args.out)?;
    println!("{}", report.markdown());
    eprintln!("losslab: wrote");
    for f in files {
        eprintln!("  {}", f.display());
    }
    if !report.failures.is_empty() {
        bail!("{} conditions failed", report.failures.len());
    }
    Ok(())
}

fn show(p: &Progress<'_>) {
    let width = p.total.to_string().len();
    match p.result {
        Ok(m) => {
            let s = Summary::of(m);
            let bottleneck = s.bottleneck.map_or_else(String::new, |b| {
                format!(
                    "  use {:.0} % queue p95 {:.0} ms drops {:.2} %",
                    b.utilization_percent, b.queue_delay_ms[1], b.self_inflicted_loss_percent
                )
            });
            eprintln!(
                "[{:>width$}/{}] {:<40} {:>5.1} s  audio p50 {:>4.0} ms residual {:>5.2} %  \
                 video p50 {:>4.0} ms  MOS {:.2}{bottleneck}",
                p.done,
                p.total,
                p.condition.to_string(),
                p.took.as_secs_f64(),
                s.audio_latency_ms[0],
                s.audio_residual_loss_percent,
                s.video_latency_ms[0],
                s.mos
            );
        }
        Err(e) => eprintln!(
            "[{:>width$}/{}] {:<40} FAILED: {e:#}",
            p.done,
            p.total,
            p.condition.to_string()
        ),
    }
}
