//! How much audio redundancy (RFC 2198) to send: none on a clean link, earlier frames
//! repeated as loss grows, within a bitrate budget.
//!
//! The *distance* is how far back RED repeats frames: 1 is the previous frame, 2 the one
//! before. Opus in-band FEC (when agreed) already covers the previous frame at a lower
//! quality, so RED repeats only what lies beyond it; and since a repeated frame is a
//! whole Opus packet with its own FEC, a block 2 back also repairs the frame 3 back:
//! with FEC, one block of distance 2 (100 % of the audio bitrate) lets a frame be
//! recovered from any of the 3 packets after it. The distance follows the loss the peer
//! reports (RTCP receiver reports) and the burst length its NACK lists show:
//!
//! | loss           | distance | blocks with FEC | blocks without |
//! |----------------|----------|-----------------|----------------|
//! | < 1 % (off below 0.5 %) | 0 | none         | none           |
//! | 1 – 3 %        | 1        | none (FEC)      | n−1            |
//! | 3 – 15 %, bursts < 3 | 2  | n−2             | n−1, n−2       |
//! | ≥ 15 % or bursts ≥ 3 | 3  | n−2, n−3        | n−1, n−2, n−3  |
//!
//! Distance 2 starts at 3 %, not later: with FEC, distance 1 sends nothing, and FEC
//! alone leaves about loss² unrepaired (0.1 % at 3 %), beyond which the peer's buffer
//! would have to hold a retransmission round. A distance is left only when the loss
//! falls to 70 % of the threshold that set it, so a rate hovering at a threshold does
//! not switch redundancy (and the peer's playout target with it) on and off.
//!
//! Until the peer has reported on a second of our audio, the link is unknown: the
//! distance is at least 2 (one block with FEC), as for 3-15 % loss. A call on a lossy
//! link otherwise ran on FEC alone for its first one or two seconds (the first report
//! with a loss rate comes a report interval in, plus half an RTT), and a frame lost
//! with its successor then was lost for good: a retransmission round does not fit the
//! peer's buffer at the start, nor at all at a long RTT. On a clean link the first real
//! report turns it off; it costs about a second of half-bitrate copies.
//!
//! Blocks beyond the budget (a multiple of the primary frame's size) are left out, the
//! farthest first.
//!
//! What a block repeats is the frame's *copy* when the encoder made one: the same audio
//! from a second encoder at half the bitrate (`call::AudioSender`), as RFC 2198's
//! secondary encodings and Opus's own FEC are lower-rate encodings. A repair fills one
//! lost slot, as an FEC repair does, and one repeated frame a packet then costs about
//! half the audio bitrate instead of all of it plus the RED headers. The session asks the encoder for
//! copies while [`RedSender::repeats`]; a packet sent before the first copy repeats the
//! frame itself.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::payload::red;
use crate::types::Pt;

/// The farthest an earlier frame is repeated.
pub const MAX_DISTANCE: u8 = 3;
/// NACKed sequence numbers remembered to find loss bursts (a NACK list often names one
/// packet at a time, as each is found missing).
const NACK_MEMORY: usize = 64;
/// Bytes of a redundant block's header (RFC 2198 §3).
const BLOCK_HEADER: usize = 4;
/// Loss that turns redundancy on, and the loss below which it goes off again.
const ON_LOSS: f64 = 0.01;
const OFF_LOSS: f64 = 0.005;
/// A distance is kept until the loss falls to this share of the loss that set it.
const STEP_DOWN: f64 = 0.7;
/// The distance while the link is unknown (no report on enough of our audio yet).
const UNKNOWN_LINK_DISTANCE: u8 = 2;

/// Redundancy the send budget left out of one packet: blocks, and their bytes with
/// their headers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shortfall {
    /// Blocks left out.
    pub blocks: u64,
    /// Their bytes.
    pub bytes: usize,
}

/// The RED sender of one audio stream.
#[derive(Debug)]
pub struct RedSender {
    pt: Pt,
    opus_pt: Pt,
    frame_ticks: u64,
    fec: bool,
    /// Redundant bytes allowed per primary byte.
    budget: f64,
    /// The latest frames sent (ticks, frame), newest last.
    recent: VecDeque<(u64, Bytes)>,
    /// Loss fraction, smoothed over reports.
    loss: f64,
    /// Mean burst length (lost packets per burst), from the NACKs remembered.
    burst: f64,
    /// Distinct sequence numbers NACKed recently, oldest first.
    nacked: VecDeque<u16>,
    distance: u8,
    /// Whether the link is known: the peer reported on enough of our audio, or the
    /// unknown link is not protected.
    heard: bool,
    /// Whether the peer's loss report came (see [`Self::on_path_loss`]).
    reported: bool,
}

impl RedSender {
    /// A sender of RED packets of payload type `pt` carrying Opus frames (payload type
    /// `opus_pt`) of `frame_ticks`; `fec` when Opus in-band FEC was agreed; `budget`
    /// redundant bytes per primary byte at most.
    pub fn new(pt: Pt, opus_pt: Pt, frame_ticks: u64, fec: bool, budget: f64) -> Self {
        Self {
            pt,
            opus_pt,
            frame_ticks: frame_ticks.max(1),
            fec,
            budget: budget.max(0.0),
            recent: VecDeque::new(),
            loss: 0.0,
            burst: 1.0,
            nacked: VecDeque::new(),
            distance: UNKNOWN_LINK_DISTANCE,
            heard: false,
            reported: false,
        }
    }

    /// Whether an unknown link (no report on enough of our audio yet) is protected, as
    /// it is by default and in every call; tests turn it off to start on a known link.
    /// (Under delay-based control it once did not: copies sent blindly took the room
    /// video needed to find a narrow link's capacity, the lab's 300 kbit/s link 72 %
    /// used against 76 %. With that control on by default, session 22 measured it
    /// again, virtual engine, 640x480: unprotected, a lossy call's first frames rest on
    /// Opus's FEC alone, and audio that never played rose by 0.27 points at 300 kbit/s
    /// and 0.09 at 20 % loss; protected, the 300 kbit/s link is used as much, 83.9 %
    /// against 83.7 %.)
    #[cfg(test)]
    pub(crate) fn protect_unknown_link(mut self, protect: bool) -> Self {
        self.heard = !protect;
        self.update();
        self
    }

    /// The RED payload type.
    pub fn pt(&self) -> Pt {
        self.pt
    }

    /// Whether Opus in-band FEC covers distance 1.
    pub fn fec(&self) -> bool {
        self.fec
    }

    /// The current distance.
    pub fn distance(&self) -> u8 {
        self.distance
    }

    /// Whether packets carry earlier frames at the current distance (with FEC,
    /// distance 1 is FEC's and sends none).
    pub fn repeats(&self) -> bool {
        self.distance >= self.first_block()
    }

    /// The nearest earlier frame a block repeats: the one FEC does not cover.
    fn first_block(&self) -> u8 {
        if self.fec { 2 } else { 1 }
    }

    /// The peer reported `fraction` of our audio lost since its last report, a report
    /// that rests on enough of our audio to tell the link (the session's call: a
    /// second of it); the first one ends the protection of an unknown link.
    pub fn on_loss_report(&mut self, fraction: f32) {
        self.heard = true;
        self.reported = true;
        let f = f64::from(fraction).clamp(0.0, 1.0);
        // Rise fast, fall slowly: a clean report in the middle of a lossy stretch must
        // not turn the protection off.
        let weight = if f > self.loss { 0.5 } else { 0.25 };
        self.loss += (f - self.loss) * weight;
        self.update();
    }

    /// The path's own loss, measured on everything we send from the peer's transport
    /// feedback (`InFlight::path_loss`), before its first loss report on our audio
    /// comes (a second in): until then it is the loss the distance follows, and it
    /// tells the link, so it ends the protection of an unknown link too (some 300 ms
    /// in, where the first report would have ended it a second in). (Session 18, when
    /// an unknown link under delay-based control was not protected: on a link losing
    /// 10 % at random the audio went unprotected for the call's first second, the
    /// receiver's buffer then waited a retransmission round for the rest of the
    /// warm-up, and the lab's mouth-to-ear p95 rose from 127 to 155 ms.) Transport
    /// feedback comes every 50 ms, and counts only losses that no queue explains, so a
    /// start above a narrow link's capacity (losses at a full queue) soon stops the
    /// copies.
    pub fn on_path_loss(&mut self, loss: f64) {
        if self.reported {
            return;
        }
        self.heard = true;
        self.loss = loss.clamp(0.0, 1.0);
        self.update();
    }

    /// The peer NACKed `seqs`: runs of consecutive numbers among the packets NACKed
    /// recently are loss bursts.
    pub fn on_nack(&mut self, seqs: &[u16]) {
        for &seq in seqs {
            if !self.nacked.contains(&seq) {
                self.nacked.push_back(seq);
            }
        }
        while self.nacked.len() > NACK_MEMORY {
            self.nacked.pop_front();
        }
        // Distances back from the newest, so wrapping does not matter.
        let Some(&newest) = self.nacked.back() else {
            return;
        };
        let mut back: Vec<u16> = self
            .nacked
            .iter()
            .map(|&s| newest.wrapping_sub(s))
            .collect();
        back.sort_unstable();
        let runs = 1 + back.windows(2).filter(|w| w[1] != w[0] + 1).count();
        self.burst = back.len() as f64 / runs as f64;
        self.update();
    }

    fn update(&mut self) {
        let on = if self.distance == 0 {
            self.loss >= ON_LOSS
        } else {
            self.loss >= OFF_LOSS
        };
        // Each step up has its threshold; a step down waits until the loss (or burst
        // length) falls to `STEP_DOWN` of it, so a loss rate hovering at a threshold
        // does not flip the distance (and the peer's playout target with it) to and fro.
        let reaches = |d: u8, loss: f64, burst: f64| {
            let keep = if self.distance >= d { STEP_DOWN } else { 1.0 };
            self.loss >= loss * keep || self.burst >= burst * keep
        };
        let distance = if !on {
            0
        } else if reaches(3, 0.15, 3.0) {
            3
        } else if reaches(2, 0.03, 2.0) {
            2
        } else {
            1
        };
        self.distance = if self.heard {
            distance
        } else {
            distance.max(UNKNOWN_LINK_DISTANCE)
        };
    }

    /// The earlier frames to carry with the frame at `ticks` of `len` bytes, as
    /// (offset in ticks, frame), oldest first, with the blocks and bytes the send
    /// budget's `room` (bytes, headers included) left out, the farthest first.
    fn blocks(&self, ticks: u64, len: usize, room: usize) -> (Vec<(u32, Bytes)>, Shortfall) {
        let first = u64::from(self.first_block());
        let mut blocks = Vec::new();
        let mut short = Shortfall::default();
        let mut spent = 0usize;
        let mut paid = 0usize;
        let allowed = (len as f64 * self.budget) as usize;
        for k in first..=u64::from(self.distance) {
            let want = ticks.checked_sub(k * self.frame_ticks);
            let Some((t, data)) = self.recent.iter().find(|(t, _)| Some(*t) == want) else {
                continue;
            };
            if spent + data.len() > allowed {
                break;
            }
            spent += data.len();
            // The block's header and its share of the RED payload's.
            let cost = data.len() + BLOCK_HEADER + usize::from(paid == 0 && short.blocks == 0);
            if short.blocks > 0 || paid + cost > room {
                short.blocks += 1;
                short.bytes += cost;
                continue;
            }
            paid += cost;
            let offset = u32::try_from(ticks - t).unwrap_or(u32::MAX);
            blocks.push((offset, data.clone()));
        }
        blocks.reverse();
        (blocks, short)
    }

    /// The payload for the frame at `ticks`: `None` to send it as plain Opus (no
    /// redundancy wanted, available or affordable), else a RED payload of at most `max`
    /// bytes whose redundancy (headers included) takes at most `room` bytes (the send
    /// budget's; the nearest blocks are kept). Remembers what the packets that follow
    /// are to repeat of it: its lower-bitrate `copy` when the encoder made one, else the
    /// frame itself. Also says what `room` left out.
    pub fn payload(
        &mut self,
        ticks: u64,
        frame: &Bytes,
        copy: Option<&Bytes>,
        (max, room): (usize, usize),
    ) -> (Option<Bytes>, Shortfall) {
        let (blocks, short) = self.blocks(ticks, frame.len(), room);
        self.recent
            .push_back((ticks, copy.unwrap_or(frame).clone()));
        while self.recent.len() > usize::from(MAX_DISTANCE) {
            self.recent.pop_front();
        }
        if blocks.is_empty() {
            return (None, short);
        }
        (Some(red::build(self.opus_pt, frame, &blocks, max)), short)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICKS: u64 = 960;

    fn frame(i: u64) -> Bytes {
        Bytes::from(vec![i as u8; 80])
    }

    /// Sends frames 0..n and returns the last payload.
    fn send(s: &mut RedSender, n: u64) -> Option<Bytes> {
        (0..n)
            .map(|i| s.payload(i * TICKS, &frame(i), None, (1200, usize::MAX)).0)
            .last()?
    }

    #[test]
    fn an_unknown_link_is_protected_until_the_first_report() {
        let mut s = RedSender::new(Pt(100), Pt(111), TICKS, true, 2.0);
        assert_eq!(s.distance(), 2);
        let red = red::parse(&send(&mut s, 3).unwrap()).unwrap();
        assert_eq!(red.redundant.len(), 1);
        // NACKs (runs of one) do not lower it before the first report either.
        s.on_nack(&[1, 5, 9]);
        assert_eq!(s.distance(), 2);
        s.on_loss_report(0.0);
        assert_eq!(s.distance(), 0);
        // Where delay-based control governs the start, nothing is sent blindly.
        let s = RedSender::new(Pt(100), Pt(111), TICKS, true, 2.0).protect_unknown_link(false);
        assert_eq!(s.distance(), 0);
    }

    #[test]
    fn the_paths_own_loss_sets_the_distance_until_the_first_report() {
        let mut s = RedSender::new(Pt(100), Pt(111), TICKS, true, 2.0).protect_unknown_link(false);
        // Transport feedback tells of a path losing a tenth, then a fifth, at random.
        s.on_path_loss(0.10);
        assert_eq!(s.distance(), 2);
        s.on_path_loss(0.20);
        assert_eq!(s.distance(), 3);
        // The peer's first report on our audio takes over (a fifth lost), and the
        // path's loss no longer moves the distance.
        s.on_loss_report(0.20);
        s.on_path_loss(0.0);
        assert_eq!(s.distance(), 3);
    }

    #[test]
    fn a_clean_link_sends_plain_opus() {
        let mut s = RedSender::new(Pt(100), Pt(111), TICKS, true, 2.0);
        s.on_loss_report(0.0);
        assert_eq!(s.distance(), 0);
        assert!(send(&mut s, 10).is_none());
    }

    #[test]
    fn ten_percent_loss_with_fec_repeats_the_frame_before_the_previous() {
        let mut s = RedSender::new(Pt(100), Pt(111), TICKS, true, 2.0);
        s.on_loss_report(0.1);
        s.on_loss_report(0.1);
        assert_eq!(s.distance(), 2);
        let red = red::parse(&send(&mut s, 10).unwrap()).unwrap();
        assert_eq!(red.primary, frame(9));
        assert_eq!(red.pt, Pt(111));
        let blocks: Vec<_> = red.redundant.iter().map(|b| (b.offset, &b.data)).collect();
        assert_eq!(blocks, vec![(2 * 960, &frame(7))]);
    }

    #[test]
    fn the_send_budget_keeps_the_nearest_blocks_and_counts_the_rest() {
        let mut s = RedSender::new(Pt(100), Pt(111), TICKS, false, 2.0);
        for _ in 0..4 {
            s.on_loss_report(0.2);
        }
        assert_eq!(s.distance(), 3);
        for i in 0..9 {
            s.payload(i * TICKS, &frame(i), None, (1200, usize::MAX));
        }
        // Room for one 80-byte block with its header and the payload's: the nearest
        // goes, the next is left out (RED's own byte budget allows two of the three).
        let (red, short) = s.payload(9 * TICKS, &frame(9), None, (1200, 85));
        let red = red::parse(&red.unwrap()).unwrap();
        let offsets: Vec<_> = red.redundant.iter().map(|b| b.offset).collect();
        assert_eq!(offsets, vec![960]);
        assert_eq!(
            short,
            Shortfall {
                blocks: 1,
                bytes: 84
            }
        );
        // No room: plain Opus, both blocks counted.
        let (red, short) = s.payload(10 * TICKS, &frame(10), None, (1200, 0));
        assert!(red.is_none());
        assert_eq!(
            short,
            Shortfall {
                blocks: 2,
                bytes: 85 + 84
            }
        );
    }

    #[test]
    fn without_fec_the_previous_frames_are_repeated_within_the_budget() {
        let mut s = RedSender::new(Pt(100), Pt(111), TICKS, false, 2.0);
        s.on_loss_report(0.1);
        s.on_loss_report(0.1);
        let red = red::parse(&send(&mut s, 10).unwrap()).unwrap();
        let offsets: Vec<_> = red.redundant.iter().map(|b| b.offset).collect();
        assert_eq!(offsets, vec![1920, 960]);
        // Half the budget: only the nearest frame.
        let mut s = RedSender::new(Pt(100), Pt(111), TICKS, false, 1.0);
        s.on_loss_report(0.1);
        s.on_loss_report(0.1);
        let red = red::parse(&send(&mut s, 10).unwrap()).unwrap();
        assert_eq!(red.redundant.len(), 1);
        assert_eq!(red.redundant[0].offset, 960);
    }

    #[test]
    fn bursts_reach_further_and_a_clean_link_turns_it_off() {
        let mut s = RedSender::new(Pt(100), Pt(111), TICKS, true, 2.0);
        s.on_loss_report(0.05);
        // Bursts of four, NACKed one packet at a time as each is found missing.
        for burst in 0..5u16 {
            for k in 0..4 {
                s.on_nack(&[burst * 30 + k]);
            }
        }
        assert_eq!(s.distance(), 3);
        let red = red::parse(&send(&mut s, 10).unwrap()).unwrap();
        assert_eq!(red.redundant.len(), 2);
        for _ in 0..30 {
            s.on_loss_report(0.0);
        }
        assert_eq!(s.distance(), 0);
        assert!(
            s.payload(10 * TICKS, &frame(10), None, (1200, usize::MAX))
                .0
                .is_none()
        );
    }

    #[test]
    fn a_loss_rate_hovering_at_a_threshold_keeps_the_distance() {
        let mut s = RedSender::new(Pt(100), Pt(111), TICKS, true, 2.0);
        for _ in 0..20 {
            s.on_loss_report(0.04);
        }
        assert_eq!(s.distance(), 2);
        // Reports swinging around 3 % (as a 5 % link's do over short intervals) keep it.
        for k in 0..40 {
            s.on_loss_report(if k % 2 == 0 { 0.02 } else { 0.035 });
            assert_eq!(s.distance(), 2, "report {k}");
        }
        // Well below, it steps down (FEC alone is enough).
        for _ in 0..30 {
            s.on_loss_report(0.015);
        }
        assert_eq!(s.distance(), 1);
    }

    #[test]
    fn the_lower_bitrate_copy_is_what_later_packets_repeat() {
        let mut s = RedSender::new(Pt(100), Pt(111), TICKS, true, 2.0);
        s.on_loss_report(0.0);
        assert!(!s.repeats());
        s.on_loss_report(0.1);
        s.on_loss_report(0.1);
        assert!(s.repeats());
        let copy = |i: u64| Bytes::from(vec![0x80 | i as u8; 40]);
        let mut last = None;
        for i in 0..10 {
            last = s
                .payload(i * TICKS, &frame(i), Some(&copy(i)), (1200, usize::MAX))
                .0;
        }
        let red = red::parse(&last.unwrap()).unwrap();
        // The packet's own frame goes whole; the frame two back as its 40-byte copy.
        assert_eq!(red.primary, frame(9));
        let blocks: Vec<_> = red.redundant.iter().map(|b| (b.offset, &b.data)).collect();
        assert_eq!(blocks, vec![(2 * 960, &copy(7))]);
        // With FEC, distance 1 is FEC's: no copies are needed then.
        let mut s = RedSender::new(Pt(100), Pt(111), TICKS, true, 2.0);
        for _ in 0..10 {
            s.on_loss_report(0.02);
        }
        assert_eq!(s.distance(), 1);
        assert!(!s.repeats());
    }

    #[test]
    fn a_gap_in_the_frames_sends_only_what_it_has() {
        let mut s = RedSender::new(Pt(100), Pt(111), TICKS, false, 2.0);
        s.on_loss_report(0.2);
        s.on_loss_report(0.2);
        assert!(
            s.payload(0, &frame(0), None, (1200, usize::MAX))
                .0
                .is_none()
        );
        // Frame 1 was never sent (the encoder skipped it): only frame 0 is repeated.
        let red = s.payload(2 * TICKS, &frame(2), None, (1200, usize::MAX)).0;
        let red = red::parse(&red.unwrap()).unwrap();
        let offsets: Vec<_> = red.redundant.iter().map(|b| b.offset).collect();
        assert_eq!(offsets, vec![1920]);
    }
}
