//! Sample-rate and channel conversion for files and sound devices, on `rubato`'s FFT
//! resampler (band-limited, fixed latency, fast enough for a device callback).

use rubato::{FftFixedIn, Resampler};

use super::Error;

/// Input frames per resampler chunk: 10 ms at 48 kHz.
pub(crate) const CHUNK: usize = 480;

/// Streaming conversion of planar `f32` audio between two rates.
pub(crate) struct Resample {
    inner: Option<FftFixedIn<f32>>,
    pending: Vec<Vec<f32>>,
    /// Output frames still to discard: the resampler's own delay.
    skip: usize,
}

impl Resample {
    pub(crate) fn new(from: u32, to: u32, channels: usize) -> Result<Self, Error> {
        let inner = if from == to {
            None
        } else {
            Some(FftFixedIn::<f32>::new(
                from as usize,
                to as usize,
                CHUNK,
                2,
                channels,
            )?)
        };
        let skip = inner.as_ref().map_or(0, |r| r.output_delay());
        Ok(Self {
            inner,
            pending: vec![Vec::new(); channels],
            skip,
        })
    }

    /// Converts more input; returns whatever output is ready, planar.
    pub(crate) fn push(&mut self, input: &[Vec<f32>]) -> Result<Vec<Vec<f32>>, Error> {
        let Some(r) = self.inner.as_mut() else {
            return Ok(input.to_vec());
        };
        for (p, i) in self.pending.iter_mut().zip(input) {
            p.extend_from_slice(i);
        }
        let mut planar = vec![Vec::new(); self.pending.len()];
        while self.pending[0].len() >= r.input_frames_next() {
            let n = r.input_frames_next();
            let chunk = r.process(&self.pending, None)?;
            for ((p, o), c) in planar.iter_mut().zip(chunk).zip(&mut self.pending) {
                p.extend(o);
                c.drain(..n);
            }
        }
        let skip = self.skip.min(planar[0].len());
        self.skip -= skip;
        for p in &mut planar {
            p.drain(..skip);
        }
        Ok(planar)
    }
}

/// Mixes interleaved input of `from` channels to planar `to` channels: down to mono by
/// averaging, otherwise output channel `c` takes input channel `c % from`.
pub(crate) fn remix(interleaved: &[f32], from: usize, to: usize) -> Vec<Vec<f32>> {
    let from = from.max(1);
    let frames = interleaved.chunks_exact(from);
    if to <= 1 {
        return vec![
            frames
                .map(|f| f.iter().sum::<f32>() / from as f32)
                .collect(),
        ];
    }
    (0..to)
        .map(|c| frames.clone().map(|f| f[c % from]).collect())
        .collect()
}

/// Interleaves planar `f32` into `i16`.
pub(crate) fn interleave(planar: &[Vec<f32>], out: &mut Vec<i16>) {
    let frames = planar.first().map_or(0, Vec::len);
    for i in 0..frames {
        for ch in planar {
            out.push((ch[i].clamp(-1.0, 1.0) * 32767.0).round() as i16);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remix_averages_to_mono_and_spreads_to_more_channels() {
        let stereo = [0.2, 0.4, -0.2, -0.4];
        assert_eq!(remix(&stereo, 2, 1), vec![vec![0.3f32, -0.3]]);
        let mono = [0.5, -0.5];
        assert_eq!(
            remix(&mono, 1, 2),
            vec![vec![0.5f32, -0.5], vec![0.5, -0.5]]
        );
        assert_eq!(remix(&stereo, 2, 3)[2], vec![0.2f32, -0.2]);
    }

    #[test]
    fn resampling_keeps_the_duration_and_the_tone() {
        let mut r = Resample::new(48_000, 44_100, 1).unwrap();
        let tone: Vec<f32> = (0..48_000)
            .map(|n| (n as f32 * 1_000.0 * std::f32::consts::TAU / 48_000.0).sin() * 0.5)
            .collect();
        let out: Vec<f32> = tone
            .chunks(1_000)
            .flat_map(|c| r.push(&[c.to_vec()]).unwrap().remove(0))
            .collect();
        // All but the resampler's delay comes out.
        assert!((43_000..=44_100).contains(&out.len()), "{}", out.len());
        let body = &out[2_000..42_000];
        let crossings = body
            .windows(2)
            .filter(|w| (w[0] < 0.0) != (w[1] < 0.0))
            .count();
        // 1 kHz: two zero crossings a millisecond, 40 000 samples at 44.1 kHz.
        assert!((1_808..=1_820).contains(&crossings), "{crossings}");
    }
}
