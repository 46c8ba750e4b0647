//! What the H.264 encoder makes of the test pattern at a fixed bitrate: the spread of its
//! frame sizes, which is what a bottleneck and the delay-based controller see.
//!
//! Encodes `--frames` frames of the synthetic pattern (the lab's and the demo's video
//! source) with the call's encoder settings at each `--bitrate-kbps` and each
//! `--min-qp` (OpenH264's QP floor; 0 leaves QP to its rate control), with no bitrate
//! changes, and prints one line per pair: frames made and skipped by the rate control,
//! the bitrate made, and the frame sizes (mean, median, p95, max, and how many were over
//! four times the mean). The first second (the keyframe and the rate control's start) is
//! left out of the sizes.
//!
//! `cargo run --release -p magpie-benches --bin encoder_sizes -- --bitrate-kbps 600,2000
//! --min-qp 0,22,24`

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use magpie_media::codec::H264Config;
use magpie_media::devices::PatternGenerator;
use magpie_media::probe::WallTime;

#[derive(Parser, Debug)]
#[command(about = "Frame sizes of the H.264 encoder on the test pattern at a fixed bitrate")]
struct Args {
    /// Picture width.
    #[arg(long, default_value_t = 640)]
    width: u32,
    /// Picture height.
    #[arg(long, default_value_t = 480)]
    height: u32,
    /// Frames per second.
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// Target bitrates, kbit/s.
    #[arg(long, value_delimiter = ',', default_value = "600,2000")]
    bitrate_kbps: Vec<u32>,
    /// QP floors (0-51).
    #[arg(long, value_delimiter = ',', default_value = "0")]
    min_qp: Vec<u8>,
    /// Frames to encode (at least two seconds' worth).
    #[arg(long, default_value_t = 600)]
    frames: u32,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.fps > 0, "--fps must be at least 1");
    anyhow::ensure!(
        args.frames >= 2 * args.fps,
        "--frames must cover at least two seconds ({} frames)",
        2 * args.fps
    );
    let interval = Duration::from_secs(1) / args.fps;
    for &kbps in &args.bitrate_kbps {
        for &min_qp in &args.min_qp {
            let mut encoder = H264Config::default()
                .set_resolution(args.width, args.height)
                .set_fps(args.fps as f32)
                .set_bitrate(kbps.saturating_mul(1000))
                .set_min_qp(min_qp)
                .build()
                .context("starting the encoder")?;
            let mut pattern = PatternGenerator::new(args.width, args.height)
                .context("the pattern at this size")?;
            let (mut sizes, mut skipped) = (Vec::new(), 0u32);
            for i in 0..args.frames {
                let at = interval * i;
                let frame = pattern.next_frame(WallTime::from_micros(at.as_micros() as u64));
                match encoder.encode_at(&frame, at).context("encoding")? {
                    Some(unit) if i >= args.fps => sizes.push(unit.data.len()),
                    Some(_) => {}
                    None => skipped += 1,
                }
            }
            sizes.sort_unstable();
            let n = sizes.len().max(1);
            let mean = sizes.iter().sum::<usize>() as f64 / n as f64;
            let at = |q: f64| {
                sizes
                    .get(((n - 1) as f64 * q) as usize)
                    .copied()
                    .unwrap_or(0)
            };
            let seconds = f64::from(args.frames - args.fps) / f64::from(args.fps);
            println!(
                "{kbps} kbit/s, QP floor {min_qp}: {} frames, {skipped} skipped, {:.0} kbit/s \
                 made; bytes mean {mean:.0} median {} p95 {} max {}; {} over 4x the mean",
                sizes.len(),
                sizes.iter().sum::<usize>() as f64 * 8.0 / seconds / 1000.0,
                at(0.5),
                at(0.95),
                at(1.0),
                sizes.iter().filter(|&&s| s as f64 > 4.0 * mean).count(),
            );
        }
    }
    Ok(())
}
