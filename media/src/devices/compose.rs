//! What the call window shows, drawn into a 0RGB frame buffer without a display: the
//! peer's picture, a small self-view in the bottom-right corner (picture in picture),
//! and an optional overlay of text lines (the call's statistics) in a tiny built-in
//! bitmap font. Pure, so it is tested on machines with no display.

use crate::codec::I420Frame;

/// The self-view's width as a fraction of the window's: a quarter.
const SELF_VIEW_DIVISOR: u32 = 4;
/// Pixels between the self-view and the window's edges.
const MARGIN: u32 = 8;
/// Each font pixel drawn as a square this many pixels wide.
const FONT_SCALE: u32 = 2;
/// Glyph cell: 3x5 pixels, one column and one row of spacing.
const GLYPH_W: u32 = 3;
const GLYPH_H: u32 = 5;
const TEXT_COLOUR: u32 = 0x00ff_ffff;
const SELF_VIEW_BORDER: u32 = 0x00ff_ffff;

/// Where the self-view goes in a `canvas` of this size: its top-left corner and its size,
/// a quarter of the width at the self-view's own aspect ratio, in the bottom-right
/// corner; `None` when the canvas is too small to hold one.
pub fn self_view_rect(canvas: (u32, u32), view: (u32, u32)) -> Option<(u32, u32, u32, u32)> {
    let (cw, ch) = canvas;
    let w = cw / SELF_VIEW_DIVISOR;
    let h = (u64::from(w) * u64::from(view.1) / u64::from(view.0.max(1))) as u32;
    if w < 16 || h < 16 || w + 2 * MARGIN > cw || h + 2 * MARGIN > ch {
        return None;
    }
    Some((cw - w - MARGIN, ch - h - MARGIN, w, h))
}

/// Draws the window's picture into `out` (0RGB, `remote`'s size): the peer's frame, the
/// self-view over its bottom-right corner, and the overlay lines over its top-left.
pub fn compose(
    remote: &I420Frame,
    self_view: Option<&I420Frame>,
    overlay: &[String],
    out: &mut Vec<u32>,
) {
    remote.to_0rgb(out);
    let canvas = (remote.width(), remote.height());
    if let Some(view) = self_view
        && let Some(rect) = self_view_rect(canvas, (view.width(), view.height()))
    {
        blit_scaled(view, rect, canvas.0, out);
    }
    draw_text(overlay, canvas, out);
}

/// Nearest-neighbour scaling of `view` into `rect` of a canvas `stride` pixels wide, with
/// a one-pixel border.
fn blit_scaled(
    view: &I420Frame,
    (x0, y0, w, h): (u32, u32, u32, u32),
    stride: u32,
    out: &mut [u32],
) {
    let mut pixels = Vec::new();
    view.to_0rgb(&mut pixels);
    let (vw, vh) = (view.width(), view.height());
    for y in 0..h {
        for x in 0..w {
            let border = x == 0 || y == 0 || x == w - 1 || y == h - 1;
            let colour = if border {
                SELF_VIEW_BORDER
            } else {
                let sx = x * vw / w;
                let sy = y * vh / h;
                pixels[(sy * vw + sx) as usize]
            };
            out[((y0 + y) * stride + x0 + x) as usize] = colour;
        }
    }
}

/// Draws `lines` from the top-left corner on a darkened box, as far as they fit.
fn draw_text(lines: &[String], (cw, ch): (u32, u32), out: &mut [u32]) {
    if lines.is_empty() {
        return;
    }
    let advance = (GLYPH_W + 1) * FONT_SCALE;
    let line_h = (GLYPH_H + 2) * FONT_SCALE;
    let longest = lines.iter().map(|l| l.chars().count()).max().unwrap_or(0) as u32;
    let box_w = (longest * advance + 2 * FONT_SCALE).min(cw);
    let box_h = (lines.len() as u32 * line_h + FONT_SCALE).min(ch);
    for y in 0..box_h {
        for x in 0..box_w {
            let p = &mut out[(y * cw + x) as usize];
            // Half brightness: the picture stays visible under the text.
            *p = (*p >> 1) & 0x007f_7f7f;
        }
    }
    for (row, line) in lines.iter().enumerate() {
        let top = FONT_SCALE + row as u32 * line_h;
        for (col, c) in line.chars().enumerate() {
            let left = FONT_SCALE + col as u32 * advance;
            if left + advance > cw || top + GLYPH_H * FONT_SCALE > ch {
                break;
            }
            let glyph = glyph(c);
            for gy in 0..GLYPH_H {
                for gx in 0..GLYPH_W {
                    if glyph >> ((GLYPH_H - 1 - gy) * GLYPH_W + (GLYPH_W - 1 - gx)) & 1 == 1 {
                        for dy in 0..FONT_SCALE {
                            for dx in 0..FONT_SCALE {
                                let x = left + gx * FONT_SCALE + dx;
                                let y = top + gy * FONT_SCALE + dy;
                                out[(y * cw + x) as usize] = TEXT_COLOUR;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A 3x5 glyph: five rows of three bits, top row first, left pixel the high bit.
/// Lower case is drawn as upper case; what has no glyph is a question mark.
fn glyph(c: char) -> u16 {
    let rows: [u8; 5] = match c.to_ascii_uppercase() {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        'A' => [2, 5, 7, 5, 5],
        'B' => [6, 5, 6, 5, 6],
        'C' => [3, 4, 4, 4, 3],
        'D' => [6, 5, 5, 5, 6],
        'E' => [7, 4, 6, 4, 7],
        'F' => [7, 4, 6, 4, 4],
        'G' => [3, 4, 5, 5, 3],
        'H' => [5, 5, 7, 5, 5],
        'I' => [7, 2, 2, 2, 7],
        'J' => [1, 1, 1, 5, 2],
        'K' => [5, 5, 6, 5, 5],
        'L' => [4, 4, 4, 4, 7],
        'M' => [5, 7, 7, 5, 5],
        'N' => [6, 5, 5, 5, 5],
        'O' => [2, 5, 5, 5, 2],
        'P' => [6, 5, 6, 4, 4],
        'Q' => [2, 5, 5, 6, 3],
        'R' => [6, 5, 6, 5, 5],
        'S' => [3, 4, 2, 1, 6],
        'T' => [7, 2, 2, 2, 2],
        'U' => [5, 5, 5, 5, 7],
        'V' => [5, 5, 5, 5, 2],
        'W' => [5, 5, 7, 7, 5],
        'X' => [5, 5, 2, 5, 5],
        'Y' => [5, 5, 2, 2, 2],
        'Z' => [7, 1, 2, 4, 7],
        ' ' => [0, 0, 0, 0, 0],
        '.' => [0, 0, 0, 0, 2],
        ',' => [0, 0, 0, 2, 4],
        ':' => [0, 2, 0, 2, 0],
        '/' => [1, 1, 2, 4, 4],
        '%' => [5, 1, 2, 4, 5],
        '-' => [0, 0, 7, 0, 0],
        '+' => [0, 2, 7, 2, 0],
        '(' => [1, 2, 2, 2, 1],
        ')' => [4, 2, 2, 2, 4],
        '=' => [0, 7, 0, 7, 0],
        '_' => [0, 0, 0, 0, 7],
        '\'' => [2, 2, 0, 0, 0],
        '|' => [2, 2, 2, 2, 2],
        '<' => [1, 2, 4, 2, 1],
        '>' => [4, 2, 1, 2, 4],
        _ => [7, 1, 2, 0, 2],
    };
    rows.iter()
        .fold(0, |acc, &r| (acc << GLYPH_W) | u16::from(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(w: u32, h: u32, luma: u8) -> I420Frame {
        let mut f = I420Frame::black(w, h).unwrap();
        let (y, u, v) = f.planes_mut();
        y.fill(luma);
        u.fill(128);
        v.fill(128);
        f
    }

    #[test]
    fn the_self_view_sits_in_the_bottom_right_corner_at_a_quarter_width() {
        assert_eq!(
            self_view_rect((640, 480), (640, 480)),
            Some((472, 352, 160, 120))
        );
        // A wide camera in a tall window keeps its own aspect ratio.
        assert_eq!(
            self_view_rect((480, 640), (1280, 720)),
            Some((352, 565, 120, 67))
        );
        assert_eq!(
            self_view_rect((64, 48), (640, 480)),
            None,
            "too small to hold one"
        );
        assert_eq!(self_view_rect((640, 480), (0, 0)), None);
    }

    #[test]
    fn the_self_view_is_drawn_over_the_peer_inside_its_border() {
        let remote = filled(320, 240, 16);
        let me = filled(160, 120, 235);
        let mut out = Vec::new();
        compose(&remote, Some(&me), &[], &mut out);
        let (x, y, w, h) = self_view_rect((320, 240), (160, 120)).unwrap();
        let at = |px: u32, py: u32| out[(py * 320 + px) as usize];
        let bright = |p: u32| (p & 0xff) > 200;
        assert!(bright(at(x + w / 2, y + h / 2)), "the self-view inside");
        assert_eq!(at(x, y), SELF_VIEW_BORDER);
        assert!(!bright(at(x - 1, y + h / 2)), "the peer outside");
        assert!(!bright(at(10, 10)));
        // Without a self-view, the corner is the peer's.
        compose(&remote, None, &[], &mut out);
        assert!(!bright(out[((y + h / 2) * 320 + x + w / 2) as usize]));
    }

    #[test]
    fn the_overlay_writes_its_text_and_only_when_asked() {
        let remote = filled(320, 240, 128);
        let mut plain = Vec::new();
        compose(&remote, None, &[], &mut plain);
        let mut with = Vec::new();
        compose(
            &remote,
            None,
            &["RTT 12 MS".into(), "LOSS 1%".into()],
            &mut with,
        );
        let white = |buf: &[u32]| buf.iter().filter(|&&p| p == TEXT_COLOUR).count();
        assert_eq!(white(&plain), 0);
        // "RTT 12 MS" and "LOSS 1%": each lit font pixel is FONT_SCALE² screen pixels.
        let lit: u32 = "RTT12MSLOSS1%".chars().map(|c| glyph(c).count_ones()).sum();
        assert_eq!(white(&with) as u32, lit * FONT_SCALE * FONT_SCALE);
        // The '1' of "12": its top row is the middle pixel only (0b010).
        let left = FONT_SCALE + 4 * (GLYPH_W + 1) * FONT_SCALE;
        let row = |x: u32| with[(FONT_SCALE * 320 + x) as usize];
        assert_ne!(row(left), TEXT_COLOUR);
        assert_eq!(row(left + FONT_SCALE), TEXT_COLOUR);
        // Under the box the picture is dimmed, outside it untouched.
        assert!(with[(20 * 320 + 1) as usize] < plain[(20 * 320 + 1) as usize]);
        assert_eq!(
            with[(200 * 320 + 300) as usize],
            plain[(200 * 320 + 300) as usize]
        );
    }

    #[test]
    fn text_too_long_for_the_window_is_cut_not_a_panic() {
        let remote = filled(32, 16, 0);
        let mut out = Vec::new();
        let long = ["x".repeat(500), "é€".into(), String::new()];
        compose(&remote, None, &long, &mut out);
        assert_eq!(out.len(), 32 * 16);
        assert_eq!(glyph('é'), glyph('?'));
    }
}
