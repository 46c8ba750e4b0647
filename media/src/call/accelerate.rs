//! Time-scale compression of decoded audio: two frames played in one frame's time, as
//! NetEQ's accelerate does, so the jitter buffer sheds a frame of delay without
//! skipping any audio.
//!
//! The method is WSOLA (waveform-similarity overlap-add): the output frame is built from
//! five Hann windows at a hop of a quarter frame, the input read at twice that hop, and
//! each window's place in the input shifted (within a quarter frame) to where the
//! waveform best continues the previous window's, so periodic sound (voice, tones) keeps
//! its pitch and phase and only its tempo doubles, for one frame. The first window reads
//! the input's first samples and the last its last, so the output joins the frame
//! played before it and the one played after it without a seam. Every stretch of the
//! input is read by a window: nothing is skipped, only shortened.

/// Windows in one output frame (each a half-window hop apart, the first and last half
/// outside the frame).
const HOPS: usize = 4;
/// A hop shorter than this (samples per channel) leaves too little to align on: the two
/// frames are cross-faded instead.
const MIN_HOP: usize = 16;

/// Compresses `input`, two frames of `channels` interleaved channels, into `out`, one
/// frame (`input.len() == 2 * out.len()`); `out` is filled with silence when the sizes
/// do not fit.
pub(crate) fn compress_two_frames(input: &[i16], channels: usize, out: &mut [i16]) {
    out.fill(0);
    if channels == 0 || input.len() != 2 * out.len() || !out.len().is_multiple_of(channels) {
        return;
    }
    let n = out.len() / channels;
    let hop = n / HOPS;
    if hop < MIN_HOP || !n.is_multiple_of(HOPS) {
        cross_fade(input, channels, n, out);
        return;
    }
    let mono: Vec<f32> = input
        .chunks_exact(channels)
        .map(|s| s.iter().map(|&v| f32::from(v)).sum())
        .collect();
    let starts = window_starts(&mono, hop);
    let window = hann(2 * hop);
    let mut acc = vec![0f32; n * channels];
    for (k, &start) in starts.iter().enumerate() {
        // Window k plays output samples [k * hop - hop, k * hop + hop) from input
        // samples [start, start + 2 * hop), `start` counted from `hop` before the
        // input (window 0 plays only its second half, from the input's first sample).
        for (j, &w) in window.iter().enumerate() {
            let (Some(i), Some(src)) =
                ((k * hop + j).checked_sub(hop), (start + j).checked_sub(hop))
            else {
                continue;
            };
            if i >= n {
                break;
            }
            for c in 0..channels {
                acc[i * channels + c] += w * f32::from(input[src * channels + c]);
            }
        }
    }
    for (o, v) in out.iter_mut().zip(acc) {
        *o = v.round().clamp(f32::from(i16::MIN), f32::from(i16::MAX)) as i16;
    }
}

/// Where each of the `HOPS + 1` windows reads, in samples per channel counted from `hop`
/// before the input (`mono` is the input's channel sum, `2 * HOPS * hop` long).
///
/// Window 0 starts there, so its second half plays the input's first samples; the last
/// window's first half plays its last. Those between sit near twice their place in the
/// output, moved by up to half a hop to where they best continue the window before (and,
/// for the one before the last, best lead into the last).
fn window_starts(mono: &[f32], hop: usize) -> [usize; HOPS + 1] {
    let len = mono.len();
    // The input sample a window start (offset by `hop`) reads first.
    let at = |start: usize| start - hop;
    let mut starts = [0usize; HOPS + 1];
    starts[HOPS] = len; // its first half plays input [len - hop, len)
    let last_half = &mono[len - hop..];
    let shift = hop / 2;
    for k in 1..HOPS {
        // The window is centred on output sample k * hop, which is input sample
        // 2 * k * hop at the even tempo: its start, offset by `hop`, is that.
        let nominal = 2 * k * hop;
        // Where the previous window's second half reads (it plays over this one's first
        // half): this one should start with what continues it.
        let follow = starts[k - 1];
        let mut best = (f32::NEG_INFINITY, nominal);
        for start in nominal - shift..=nominal + shift {
            let from = at(start);
            let mut score = similarity(&mono[follow..follow + hop], &mono[from..from + hop]);
            if k == HOPS - 1 {
                // The last window is fixed: this one must also lead into it.
                score += similarity(&mono[from + hop..from + 2 * hop], last_half);
            }
            // Ties (silence) go to the nominal place: the tempo stays even.
            let score = score - 1e-6 * start.abs_diff(nominal) as f32;
            if score > best.0 {
                best = (score, start);
            }
        }
        starts[k] = best.1;
    }
    starts
}

/// Normalised cross-correlation of two equal stretches (1 for the same waveform, 0 when
/// either is silent).
fn similarity(a: &[f32], b: &[f32]) -> f32 {
    let (mut ab, mut aa, mut bb) = (0f32, 0f32, 0f32);
    for (&x, &y) in a.iter().zip(b) {
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa <= f32::EPSILON || bb <= f32::EPSILON {
        0.0
    } else {
        ab / (aa * bb).sqrt()
    }
}

/// A periodic Hann window of `len` samples: copies a half-window apart sum to one.
fn hann(len: usize) -> Vec<f32> {
    (0..len)
        .map(|j| 0.5 - 0.5 * (std::f32::consts::TAU * j as f32 / len as f32).cos())
        .collect()
}

/// The fallback for frames too short to align: the first frame fades into the second.
fn cross_fade(input: &[i16], channels: usize, n: usize, out: &mut [i16]) {
    for i in 0..n {
        let w = (i as f32 + 0.5) / n as f32;
        for c in 0..channels {
            let a = f32::from(input[i * channels + c]);
            let b = f32::from(input[(i + n) * channels + c]);
            out[i * channels + c] = ((1.0 - w) * a + w * b).round() as i16;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame of 20 ms at 48 kHz, per channel.
    const N: usize = 960;

    fn tone(hz: f32, len: usize, channels: usize) -> Vec<i16> {
        (0..len)
            .flat_map(|i| {
                let v = (8000.0 * (std::f32::consts::TAU * hz * i as f32 / 48_000.0).sin()) as i16;
                std::iter::repeat_n(v, channels)
            })
            .collect()
    }

    fn rms(x: &[i16]) -> f32 {
        (x.iter().map(|&v| f32::from(v).powi(2)).sum::<f32>() / x.len() as f32).sqrt()
    }

    /// Sign changes per sample: twice the frequency over the sample rate.
    fn crossings(x: &[i16]) -> f32 {
        let c = x.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
        c as f32 / x.len() as f32
    }

    #[test]
    fn a_tone_keeps_its_pitch_and_level_and_joins_its_neighbours() {
        for hz in [110.0, 220.0, 440.0, 1000.0] {
            // Three frames of the tone: two compressed, the third played after them.
            let x = tone(hz, 3 * N, 1);
            let mut out = vec![0; N];
            compress_two_frames(&x[..2 * N], 1, &mut out);
            // Same pitch (not twice the frequency) and the same level.
            let (a, b) = (crossings(&out), crossings(&x[..2 * N]));
            assert!(
                (a - b).abs() < 0.1 * b,
                "{hz} Hz: {a} vs {b} crossings per sample"
            );
            let (a, b) = (rms(&out), rms(&x));
            assert!((a - b).abs() < 0.1 * b, "{hz} Hz: rms {a} vs {b}");
            // It starts where the first frame starts, and the next frame follows on.
            assert_eq!(out[0], x[0]);
            let step = (i32::from(x[2 * N]) - i32::from(out[N - 1])).abs();
            let natural = (i32::from(x[2 * N]) - i32::from(x[2 * N - 1])).abs();
            assert!(
                step <= natural + 2,
                "{hz} Hz: seam {step} against {natural}"
            );
        }
    }

    #[test]
    fn no_window_joins_out_of_phase_on_a_steady_tone() {
        // 440 Hz: a whole number of periods does not fit a hop, so only windows moved
        // into phase avoid the dips that cancelling halves leave.
        let x = tone(440.0, 2 * N, 1);
        let mut out = vec![0; N];
        compress_two_frames(&x, 1, &mut out);
        let peak = |s: &[i16]| s.iter().map(|v| v.unsigned_abs()).max().unwrap();
        for chunk in out.chunks(N / 8) {
            assert!(peak(chunk) > 7000, "a dip: peak {}", peak(chunk));
        }
    }

    #[test]
    fn channels_are_compressed_alike() {
        let x = tone(300.0, 2 * N, 2);
        let mut out = vec![0; 2 * N];
        compress_two_frames(&x, 2, &mut out);
        assert!(out.chunks_exact(2).all(|s| s[0] == s[1]));
        assert!(rms(&out) > 5000.0);
    }

    #[test]
    fn sizes_that_do_not_fit_give_silence_and_short_frames_a_cross_fade() {
        let mut out = vec![7; N];
        compress_two_frames(&tone(440.0, N, 1), 1, &mut out);
        assert!(out.iter().all(|&v| v == 0));
        compress_two_frames(&tone(440.0, 2 * N, 1), 0, &mut out);
        assert!(out.iter().all(|&v| v == 0));
        // 2.5 ms at 8 kHz: 20 samples, a hop of 5 is too short to align on.
        let x: Vec<i16> = (0..40).map(|i| if i < 20 { 1000 } else { -1000 }).collect();
        let mut out = vec![0; 20];
        compress_two_frames(&x, 1, &mut out);
        assert!(out[0] > 900 && out[19] < -900);
    }

    #[test]
    fn full_scale_noise_does_not_overflow() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let x: Vec<i16> = (0..2 * N)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                if seed & 1 == 0 { i16::MAX } else { i16::MIN }
            })
            .collect();
        let mut out = vec![0; N];
        compress_two_frames(&x, 1, &mut out);
        // Whatever the input, the frame starts on the input's first sample.
        assert_eq!(out[0], x[0]);
    }
}
