//! Raw media frames: planar I420 video and the quality metrics used to judge codecs.

use super::Error;

/// One planar YUV 4:2:0 picture (I420): a full-size Y plane, then U and V at half width and
/// half height, each plane tightly packed (stride = width). Width and height are even.
#[derive(Clone, PartialEq, Eq)]
pub struct I420Frame {
    width: u32,
    height: u32,
    data: Vec<u8>,
}

impl I420Frame {
    /// A black picture (Y 16, U and V 128, the studio-swing black of BT.601).
    pub fn black(width: u32, height: u32) -> Result<Self, Error> {
        let (y, c) = plane_sizes(width, height)?;
        let mut data = vec![16; y + 2 * c];
        data[y..].fill(128);
        Ok(Self {
            width,
            height,
            data,
        })
    }

    /// Wraps tightly packed I420 bytes; the length must be `w*h*3/2`.
    pub fn from_bytes(width: u32, height: u32, data: Vec<u8>) -> Result<Self, Error> {
        let (y, c) = plane_sizes(width, height)?;
        if data.len() != y + 2 * c {
            return Err(Error::FrameSize {
                expected: y + 2 * c,
                actual: data.len(),
            });
        }
        Ok(Self {
            width,
            height,
            data,
        })
    }

    /// Copies three planes with arbitrary strides (as decoders hand them out).
    pub fn from_strided(
        width: u32,
        height: u32,
        planes: [&[u8]; 3],
        strides: [usize; 3],
    ) -> Result<Self, Error> {
        let mut frame = Self::black(width, height)?;
        let (w, h) = (width as usize, height as usize);
        let dims = [(w, h), (w / 2, h / 2), (w / 2, h / 2)];
        let mut offset = 0;
        for ((plane, stride), (pw, ph)) in planes.iter().zip(strides).zip(dims) {
            if stride < pw || plane.len() < stride * (ph - 1) + pw {
                return Err(Error::FrameSize {
                    expected: stride * ph,
                    actual: plane.len(),
                });
            }
            for row in 0..ph {
                frame.data[offset + row * pw..offset + (row + 1) * pw]
                    .copy_from_slice(&plane[row * stride..row * stride + pw]);
            }
            offset += pw * ph;
        }
        Ok(frame)
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// All three planes, back to back.
    pub fn as_bytes(&self) -> &[u8] {
        &self.data
    }

    /// The luma plane.
    pub fn y(&self) -> &[u8] {
        &self.data[..self.luma_len()]
    }

    /// The blue-difference chroma plane.
    pub fn u(&self) -> &[u8] {
        let (y, c) = (self.luma_len(), self.chroma_len());
        &self.data[y..y + c]
    }

    /// The red-difference chroma plane.
    pub fn v(&self) -> &[u8] {
        let (y, c) = (self.luma_len(), self.chroma_len());
        &self.data[y + c..]
    }

    /// The three planes, writable.
    pub fn planes_mut(&mut self) -> (&mut [u8], &mut [u8], &mut [u8]) {
        let (y, c) = (self.luma_len(), self.chroma_len());
        let (luma, chroma) = self.data.split_at_mut(y);
        let (u, v) = chroma.split_at_mut(c);
        (luma, u, v)
    }

    fn luma_len(&self) -> usize {
        self.width as usize * self.height as usize
    }

    fn chroma_len(&self) -> usize {
        self.luma_len() / 4
    }

    /// Converts packed YUYV (YUY2, 4:2:2) to I420, averaging the chroma of row pairs.
    pub fn from_yuyv(width: u32, height: u32, yuyv: &[u8]) -> Result<Self, Error> {
        let mut frame = Self::black(width, height)?;
        let (w, h) = (width as usize, height as usize);
        if yuyv.len() < w * h * 2 {
            return Err(Error::FrameSize {
                expected: w * h * 2,
                actual: yuyv.len(),
            });
        }
        let (y, u, v) = frame.planes_mut();
        for row in 0..h {
            let src = &yuyv[row * w * 2..(row + 1) * w * 2];
            for (x, px) in src.chunks_exact(2).enumerate() {
                y[row * w + x] = px[0];
            }
        }
        for row in 0..h / 2 {
            let a = &yuyv[2 * row * w * 2..(2 * row + 1) * w * 2];
            let b = &yuyv[(2 * row + 1) * w * 2..(2 * row + 2) * w * 2];
            for col in 0..w / 2 {
                let i = col * 4;
                u[row * (w / 2) + col] = avg(a[i + 1], b[i + 1]);
                v[row * (w / 2) + col] = avg(a[i + 3], b[i + 3]);
            }
        }
        Ok(frame)
    }

    /// Converts interleaved 8-bit YCbCr 4:4:4 (as a JPEG decoder yields it) to I420.
    pub fn from_ycbcr444(width: u32, height: u32, ycbcr: &[u8]) -> Result<Self, Error> {
        let mut frame = Self::black(width, height)?;
        let (w, h) = (width as usize, height as usize);
        if ycbcr.len() < w * h * 3 {
            return Err(Error::FrameSize {
                expected: w * h * 3,
                actual: ycbcr.len(),
            });
        }
        let (y, u, v) = frame.planes_mut();
        for (dst, px) in y.iter_mut().zip(ycbcr.chunks_exact(3)) {
            *dst = px[0];
        }
        for row in 0..h / 2 {
            for col in 0..w / 2 {
                let at = |r: usize, c: usize, k: usize| u32::from(ycbcr[(r * w + c) * 3 + k]);
                let (r, c) = (row * 2, col * 2);
                let sum = |k| at(r, c, k) + at(r, c + 1, k) + at(r + 1, c, k) + at(r + 1, c + 1, k);
                u[row * (w / 2) + col] = ((sum(1) + 2) / 4) as u8;
                v[row * (w / 2) + col] = ((sum(2) + 2) / 4) as u8;
            }
        }
        Ok(frame)
    }

    /// Scales to another size with bilinear filtering (each plane on its own).
    pub fn scaled(&self, width: u32, height: u32) -> Result<Self, Error> {
        if (width, height) == (self.width, self.height) {
            return Ok(self.clone());
        }
        let mut out = Self::black(width, height)?;
        let (sw, sh) = (self.width as usize, self.height as usize);
        let (dw, dh) = (width as usize, height as usize);
        let (y, u, v) = out.planes_mut();
        scale_plane(self.y(), sw, sh, y, dw, dh);
        scale_plane(self.u(), sw / 2, sh / 2, u, dw / 2, dh / 2);
        scale_plane(self.v(), sw / 2, sh / 2, v, dw / 2, dh / 2);
        Ok(out)
    }

    /// Converts to 0RGB pixels (one `u32` each), the layout desktop framebuffers take.
    pub fn to_0rgb(&self, out: &mut Vec<u32>) {
        let w = self.width as usize;
        out.clear();
        out.reserve(self.luma_len());
        let (yp, up, vp) = (self.y(), self.u(), self.v());
        for (i, &luma) in yp.iter().enumerate() {
            let (row, col) = (i / w, i % w);
            let ci = (row / 2) * (w / 2) + col / 2;
            let y = (f32::from(luma) - 16.0) * 1.164;
            let (cb, cr) = (f32::from(up[ci]) - 128.0, f32::from(vp[ci]) - 128.0);
            let r = clamp_u8(y + 1.596 * cr);
            let g = clamp_u8(y - 0.392 * cb - 0.813 * cr);
            let b = clamp_u8(y + 2.017 * cb);
            out.push(u32::from(r) << 16 | u32::from(g) << 8 | u32::from(b));
        }
    }

    /// Peak signal-to-noise ratio of the luma plane against a reference, in dB
    /// (`f64::INFINITY` for identical pictures). Both must have the same size.
    pub fn psnr_luma(&self, reference: &Self) -> Result<f64, Error> {
        if (self.width, self.height) != (reference.width, reference.height) {
            return Err(Error::FrameSize {
                expected: reference.luma_len(),
                actual: self.luma_len(),
            });
        }
        let sse: f64 = self
            .y()
            .iter()
            .zip(reference.y())
            .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
            .sum();
        let mse = sse / self.luma_len() as f64;
        Ok(if mse == 0.0 {
            f64::INFINITY
        } else {
            10.0 * (255.0 * 255.0 / mse).log10()
        })
    }
}

impl std::fmt::Debug for I420Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("I420Frame")
            .field("width", &self.width)
            .field("height", &self.height)
            .finish_non_exhaustive()
    }
}

/// Signal-to-noise ratio of `test` against `reference` in dB, over the common length.
/// Silence against silence counts as a perfect match (`f64::INFINITY`).
pub fn snr_db(reference: &[i16], test: &[i16]) -> f64 {
    let (mut signal, mut noise) = (0.0f64, 0.0f64);
    for (&r, &t) in reference.iter().zip(test) {
        signal += f64::from(r).powi(2);
        noise += (f64::from(r) - f64::from(t)).powi(2);
    }
    if noise == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (signal / noise).log10()
    }
}

fn plane_sizes(width: u32, height: u32) -> Result<(usize, usize), Error> {
    // 8192 on a side is past any camera or level 6.2 H.264 picture, and keeps a hostile
    // header from asking for gigabytes.
    if width == 0
        || height == 0
        || width % 2 == 1
        || height % 2 == 1
        || width > 8192
        || height > 8192
    {
        return Err(Error::Dimensions { width, height });
    }
    let luma = width as usize * height as usize;
    Ok((luma, luma / 4))
}

fn avg(a: u8, b: u8) -> u8 {
    (u16::from(a) + u16::from(b)).div_ceil(2) as u8
}

fn clamp_u8(v: f32) -> u8 {
    v.round().clamp(0.0, 255.0) as u8
}

fn scale_plane(src: &[u8], sw: usize, sh: usize, dst: &mut [u8], dw: usize, dh: usize) {
    let fx = sw as f32 / dw as f32;
    let fy = sh as f32 / dh as f32;
    for row in 0..dh {
        let sy = ((row as f32 + 0.5) * fy - 0.5).clamp(0.0, (sh - 1) as f32);
        let (y0, ty) = (sy as usize, sy.fract());
        let y1 = (y0 + 1).min(sh - 1);
        for col in 0..dw {
            let sx = ((col as f32 + 0.5) * fx - 0.5).clamp(0.0, (sw - 1) as f32);
            let (x0, tx) = (sx as usize, sx.fract());
            let x1 = (x0 + 1).min(sw - 1);
            let p = |y: usize, x: usize| f32::from(src[y * sw + x]);
            let top = p(y0, x0) * (1.0 - tx) + p(y0, x1) * tx;
            let bottom = p(y1, x0) * (1.0 - tx) + p(y1, x1) * tx;
            dst[row * dw + col] = clamp_u8(top * (1.0 - ty) + bottom * ty);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_or_empty_dimensions_are_rejected() {
        assert!(I420Frame::black(641, 480).is_err());
        assert!(I420Frame::black(0, 480).is_err());
        assert!(I420Frame::black(640, 4_000_000_000).is_err());
        assert!(I420Frame::from_bytes(4, 4, vec![0; 5]).is_err());
    }

    #[test]
    fn yuyv_converts_luma_exactly_and_averages_chroma() {
        // 2x2 picture: two rows of one YUYV macropixel each.
        let yuyv = [10, 100, 20, 200, 30, 110, 40, 210];
        let frame = I420Frame::from_yuyv(2, 2, &yuyv).unwrap();
        assert_eq!(frame.y(), &[10, 20, 30, 40]);
        assert_eq!(frame.u(), &[105]);
        assert_eq!(frame.v(), &[205]);
    }

    #[test]
    fn scaling_a_flat_picture_keeps_it_flat() {
        let mut frame = I420Frame::black(64, 48).unwrap();
        frame.planes_mut().0.fill(200);
        let scaled = frame.scaled(32, 24).unwrap();
        assert!(scaled.y().iter().all(|&v| v == 200));
        assert!(scaled.u().iter().all(|&v| v == 128));
    }

    #[test]
    fn strided_planes_are_packed() {
        let y = [1u8, 2, 0, 0, 3, 4, 0, 0];
        let frame = I420Frame::from_strided(2, 2, [&y, &[5], &[6]], [4, 1, 1]).unwrap();
        assert_eq!(frame.as_bytes(), &[1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn psnr_is_infinite_for_identical_and_finite_for_noisy_pictures() {
        let a = I420Frame::black(16, 16).unwrap();
        assert_eq!(a.psnr_luma(&a).unwrap(), f64::INFINITY);
        let mut b = a.clone();
        b.planes_mut().0[0] = 116;
        let psnr = b.psnr_luma(&a).unwrap();
        assert!(psnr > 20.0 && psnr < 40.0, "{psnr}");
    }

    #[test]
    fn snr_of_a_scaled_copy_is_the_expected_figure() {
        let reference: Vec<i16> = (0..480).map(|i| ((i * 37) % 2000) as i16 - 1000).collect();
        let half: Vec<i16> = reference.iter().map(|s| s / 2).collect();
        let snr = snr_db(&reference, &half);
        assert!((snr - 6.02).abs() < 0.1, "{snr}");
    }
}
