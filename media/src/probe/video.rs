//! The video timing marker: a barcode of frame number, emission time and check word.

use tracing::debug;

use super::{Detection, Error, WallTime};
use crate::codec::I420Frame;

const COLS: u32 = 32;
const ROWS: u32 = 4;
/// Luma of a 1 and a 0 cell: studio white and black, far apart after any sane coding.
const WHITE: u8 = 235;
const BLACK: u8 = 16;
const THRESHOLD: u32 = 126;

/// What a `pattern` frame says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoMarker {
    /// The source's frame counter.
    pub frame_number: u32,
    /// When the source emitted (captured) the frame.
    pub emitted_at: WallTime,
}

impl VideoMarker {
    /// Height in pixels of the barcode strip at the top of a picture `height` tall.
    pub fn strip_height(height: u32) -> u32 {
        cell_height(height) * ROWS
    }

    /// Paints the barcode over the top of `frame`.
    pub fn stamp(&self, frame: &mut I420Frame) -> Result<(), Error> {
        let (cw, ch) = cells(frame)?;
        let words = self.words();
        let w = frame.width() as usize;
        let (y, u, v) = frame.planes_mut();
        for (row, word) in words.iter().enumerate() {
            for col in 0..COLS {
                let bit = (word >> (COLS - 1 - col)) & 1;
                let luma = if bit == 1 { WHITE } else { BLACK };
                for py in row * ch..(row + 1) * ch {
                    let from = py * w + col as usize * cw;
                    y[from..from + cw].fill(luma);
                }
            }
        }
        // Neutral chroma under the strip.
        let strip = ROWS as usize * ch / 2 * (w / 2);
        u[..strip].fill(128);
        v[..strip].fill(128);
        Ok(())
    }

    /// Reads the barcode back; `None` if it is absent or damaged.
    pub fn read(frame: &I420Frame) -> Option<Self> {
        let (cw, ch) = cells(frame).ok()?;
        let w = frame.width() as usize;
        let luma = frame.y();
        let mut words = [0u32; ROWS as usize];
        for (row, word) in words.iter_mut().enumerate() {
            for col in 0..COLS as usize {
                // Average the middle half of the cell, away from coding artefacts at edges.
                let (x0, y0) = (col * cw + cw / 4, row * ch + ch / 4);
                let (xs, ys) = ((cw / 2).max(1), (ch / 2).max(1));
                let sum: u32 = (y0..y0 + ys)
                    .flat_map(|py| luma[py * w + x0..py * w + x0 + xs].iter())
                    .map(|&p| u32::from(p))
                    .sum();
                let bit = u32::from(sum / (xs * ys) as u32 > THRESHOLD);
                *word = (*word << 1) | bit;
            }
        }
        if words[3] != check(&words[..3]) {
            return None;
        }
        Some(Self {
            frame_number: words[0],
            emitted_at: WallTime::from_micros(u64::from(words[1]) << 32 | u64::from(words[2])),
        })
    }

    fn words(&self) -> [u32; ROWS as usize] {
        let t = self.emitted_at.as_micros();
        let data = [self.frame_number, (t >> 32) as u32, t as u32];
        [data[0], data[1], data[2], check(&data)]
    }
}

/// FNV-1a over the data words.
fn check(words: &[u32]) -> u32 {
    words
        .iter()
        .flat_map(|w| w.to_be_bytes())
        .fold(0x811c_9dc5u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        })
}

fn cell_height(height: u32) -> u32 {
    ((height / 30).max(8) + 1) & !1
}

fn cells(frame: &I420Frame) -> Result<(usize, usize), Error> {
    let (w, h) = (frame.width(), frame.height());
    let (cw, ch) = (w / COLS, cell_height(h));
    if cw < 4 || ch * ROWS > h / 2 {
        return Err(Error::PictureTooSmall {
            width: w,
            height: h,
        });
    }
    Ok((cw as usize, ch as usize))
}

/// Finds video markers in shown frames and reports glass-to-glass latency.
///
/// Each frame number is reported once, when first shown: a frame held on screen through a
/// freeze is not a new observation.
#[derive(Debug, Default)]
pub struct VideoMarkerDetector {
    last: Option<u32>,
    unreadable: u64,
}

impl VideoMarkerDetector {
    /// A detector.
    pub fn new() -> Self {
        Self::default()
    }

    /// Looks at one shown frame.
    pub fn push(&mut self, frame: &I420Frame, shown_at: WallTime) -> Option<Detection> {
        let Some(marker) = VideoMarker::read(frame) else {
            self.unreadable += 1;
            return None;
        };
        if self.last == Some(marker.frame_number) {
            return None;
        }
        self.last = Some(marker.frame_number);
        let d = Detection::new(u64::from(marker.frame_number), marker.emitted_at, shown_at);
        debug!(
            frame = marker.frame_number,
            latency_us = d.latency_us,
            "video marker"
        );
        Some(d)
    }

    /// Frames shown whose barcode could not be read (damaged or not a pattern).
    pub fn unreadable(&self) -> u64 {
        self.unreadable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn barcode_round_trips_at_common_sizes() {
        for (w, h) in [(320, 240), (640, 480), (1280, 720)] {
            let mut frame = I420Frame::black(w, h).unwrap();
            let marker = VideoMarker {
                frame_number: 0xdead_beef,
                emitted_at: WallTime::from_micros(1_763_000_000_123_456),
            };
            marker.stamp(&mut frame).unwrap();
            assert_eq!(VideoMarker::read(&frame), Some(marker));
        }
    }

    #[test]
    fn damaged_or_missing_barcodes_read_as_none() {
        let mut frame = I420Frame::black(640, 480).unwrap();
        assert_eq!(VideoMarker::read(&frame), None);
        let marker = VideoMarker {
            frame_number: 7,
            emitted_at: WallTime::from_micros(42),
        };
        marker.stamp(&mut frame).unwrap();
        // Flip the first (most significant) cell of the frame number.
        let (y, _, _) = frame.planes_mut();
        for row in 0..16 {
            y[row * 640..row * 640 + 20].fill(WHITE);
        }
        assert_eq!(VideoMarker::read(&frame), None);
        let tiny = I420Frame::black(64, 32).unwrap();
        assert!(marker.stamp(&mut tiny.clone()).is_err());
        assert_eq!(VideoMarker::read(&tiny), None);
    }

    #[test]
    fn a_held_frame_is_reported_once() {
        let mut frame = I420Frame::black(640, 480).unwrap();
        let emitted = WallTime::from_micros(5_000_000);
        VideoMarker {
            frame_number: 3,
            emitted_at: emitted,
        }
        .stamp(&mut frame)
        .unwrap();
        let mut detector = VideoMarkerDetector::new();
        let d = detector
            .push(&frame, WallTime::from_micros(5_120_000))
            .unwrap();
        assert_eq!((d.marker, d.latency_us), (3, 120_000));
        assert!(
            detector
                .push(&frame, WallTime::from_micros(5_153_000))
                .is_none()
        );
        assert!(
            detector
                .push(&I420Frame::black(640, 480).unwrap(), emitted)
                .is_none()
        );
        assert_eq!(detector.unreadable(), 1);
    }
}
