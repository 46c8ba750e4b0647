//! The receive side of one incoming stream: sequence tracking (loss, reordering,
//! duplicates), RFC 3550 interarrival jitter, and the reception report we send back.
//! The NACK generator lives in [`nack`]; video tail-loss detection in [`tail`].

pub mod nack;
pub mod tail;
pub mod tcc;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::clock::{WallClock, to_ntp_short};
use crate::types::{Extender, SeqNo, Ssrc};
use crate::wire::ReportBlock;

/// How far ahead a sequence number may jump before we treat the stream as restarted
/// rather than as that many lost packets (RFC 3550 A.1 `MAX_DROPOUT`).
const MAX_DROPOUT: u64 = 3000;
/// How far behind the highest a packet may be and still count (`MAX_MISORDER`).
const MAX_MISORDER: u64 = 1000;
/// Consecutive in-order packets a sequence jump needs before the stream follows it
/// (RFC 3550 A.1 `MIN_SEQUENTIAL` is 2; one more packet than a blind forger is
/// likely to get in between two of the live stream's costs nothing).
pub const PROBATION: u32 = 4;

/// Receive counters of one stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RecvCounters {
    /// Distinct media packets received, originals and retransmissions, and those
    /// recovered from redundancy or FEC.
    pub packets: u64,
    /// Datagram bytes received (duplicates included).
    pub bytes: u64,
    /// Packets expected from the sequence range seen.
    pub expected: u64,
    /// Packets missing after retransmission (expected minus received).
    pub lost: u64,
    /// Packets the network lost, before any retransmission repaired them: what RTCP
    /// reports, so the sender's bitrate control and FEC see the link's real loss.
    pub lost_before_recovery: u64,
    /// Copies of packets already received (dropped).
    pub duplicates: u64,
    /// Packets that arrived after a later one.
    pub reordered: u64,
    /// Missing packets later filled by a retransmission.
    pub recovered_rtx: u64,
    /// Missing packets whose payload a later packet carried as redundancy (RFC 2198).
    pub recovered_red: u64,
    /// Missing packets rebuilt from FEC.
    pub recovered_fec: u64,
    /// Originals that arrived after a packet rebuilt from redundancy or FEC stood in for
    /// them: reordered or late, not lost (counted as received, not as duplicates).
    pub after_repair: u64,
    /// Packets too far from the expected sequence to count (dropped).
    pub out_of_window: u64,
    /// Stream restarts (sequence jumps beyond `MAX_DROPOUT` that survived probation).
    pub resyncs: u64,
    /// Packets held back on probation after a sequence jump (dropped).
    pub probation: u64,
}

/// What one packet told the tracker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// Extended sequence number.
    pub seq: SeqNo,
    /// Extended RTP timestamp.
    pub ts: u64,
    /// Sequence numbers newly found missing, `start..end`.
    pub gap: Option<(SeqNo, SeqNo)>,
    /// The original of a packet that redundancy or FEC already rebuilt: counted, but its
    /// payload is already in the buffers.
    pub after_repair: bool,
}

/// Why a packet was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Seen before.
    Duplicate,
    /// Far outside the sequence window.
    OutOfWindow,
    /// A sequence jump not (yet) trusted: see [`PROBATION`].
    Probation,
}

/// How a packet came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Original,
    Rtx,
    Fec,
}

/// A sequence jump under test: the wire sequence number the next packet must carry,
/// and how many consecutive packets have followed it so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Probation {
    next: u16,
    count: u32,
}

/// Tracks one incoming stream.
#[derive(Debug)]
pub struct RecvStream {
    ssrc: Ssrc,
    rate: u32,
    seqs: Extender<16>,
    tss: Extender<32>,
    base: Option<u64>,
    highest: u64,
    /// Sequence numbers received recently, for duplicate detection.
    seen: BTreeSet<u64>,
    /// Those of them rebuilt from redundancy or FEC, whose originals have not come.
    repaired: BTreeSet<u64>,
    counters: RecvCounters,
    /// RFC 3550 jitter in timestamp units, and the previous transit time.
    jitter: f64,
    last_transit: Option<f64>,
    first_arrival: Option<Instant>,
    /// Distinct packets received in their original transmission.
    originals: u64,
    /// Expected and original counts at the previous report, for the fraction lost.
    prior: (u64, u64),
    /// The fraction lost in the interval of the last report, once there was one.
    last_fraction: Option<f32>,
    /// Packets expected before the last resync, so `expected` stays cumulative.
    expected_before: u64,
    /// A sequence jump being tested before the stream follows it.
    probation: Option<Probation>,
    /// Middle NTP bits of the last SR received from this source, and when.
    last_sr: Option<(u32, Instant)>,
}

impl RecvStream {
    /// A tracker for `ssrc` on a clock of `rate` Hz.
    pub fn new(ssrc: Ssrc, rate: u32) -> Self {
        Self {
            ssrc,
            rate,
            seqs: Extender::new(),
            tss: Extender::new(),
            base: None,
            highest: 0,
            seen: BTreeSet::new(),
            repaired: BTreeSet::new(),
            counters: RecvCounters::default(),
            jitter: 0.0,
            last_transit: None,
            first_arrival: None,
            originals: 0,
            prior: (0, 0),
            last_fraction: None,
            expected_before: 0,
            probation: None,
            last_sr: None,
        }
    }

    /// The tracked source.
    pub fn ssrc(&self) -> Ssrc {
        self.ssrc
    }

    /// Counters.
    pub fn counters(&self) -> RecvCounters {
        self.counters
    }

    /// The highest extended sequence number received, once any was.
    pub fn highest(&self) -> Option<SeqNo> {
        self.base.map(|_| SeqNo(self.highest))
    }

    /// Interarrival jitter.
    pub fn jitter(&self) -> Duration {
        Duration::from_secs_f64(self.jitter / f64::from(self.rate))
    }

    /// Records one packet. `original` is false for a retransmission, which is kept out
    /// of the jitter estimate. `len` is the datagram length.
    ///
    /// A packet far outside the sequence window (a jump beyond `MAX_DROPOUT` ahead or
    /// `MAX_MISORDER` behind) is not trusted on its own: the stream follows the jump only
    /// after [`PROBATION`] consecutive original packets in the new range, and any packet
    /// inside the current window meanwhile (the live stream going on) cancels the test.
    /// So a forged packet with a jumped sequence number cannot resync a live stream.
    pub fn on_packet(
        &mut self,
        now: Instant,
        seq: u16,
        ts: u32,
        original: bool,
        len: usize,
    ) -> Result<Arrival, Reject> {
        let via = if original { Via::Original } else { Via::Rtx };
        self.record(now, seq, ts, via, len)
    }

    /// Records one packet rebuilt from FEC (see [`RecvStream::on_packet`]): a recovery,
    /// and should its original still arrive, that is reordering, not a duplicate.
    pub fn on_rebuilt(
        &mut self,
        now: Instant,
        seq: u16,
        ts: u32,
        len: usize,
    ) -> Result<Arrival, Reject> {
        self.record(now, seq, ts, Via::Fec, len)
    }

    fn record(
        &mut self,
        now: Instant,
        seq: u16,
        ts: u32,
        via: Via,
        len: usize,
    ) -> Result<Arrival, Reject> {
        let original = via == Via::Original;
        let ext = self.seqs.peek(u64::from(seq));
        let Some(base) = self.base else {
            self.counters.bytes += len as u64;
            return Ok(self.start(now, ext, ts));
        };
        let ahead = ext > self.highest + MAX_DROPOUT;
        let behind = ext + MAX_MISORDER < self.highest;
        if ahead || behind {
            return self.on_jump(now, seq, ts, original, len);
        }
        self.counters.bytes += len as u64;
        // The live stream goes on: whatever jump was on probation was not a restart.
        self.probation = None;
        if ext < base {
            self.counters.out_of_window += 1;
            return Err(Reject::OutOfWindow);
        }
        if !self.seen.insert(ext) {
            if original && self.repaired.remove(&ext) {
                // Rebuilt before it came: it was held up, not lost.
                self.originals += 1;
                self.counters.reordered += 1;
                self.counters.after_repair += 1;
                self.update_lost();
                return Ok(Arrival {
                    seq: SeqNo(ext),
                    ts: self.tss.extend(u64::from(ts)),
                    gap: None,
                    after_repair: true,
                });
            }
            self.counters.duplicates += 1;
            return Err(Reject::Duplicate);
        }
        self.seqs.extend(u64::from(seq));
        let ts = self.tss.extend(u64::from(ts));
        self.counters.packets += 1;
        if original {
            self.originals += 1;
            // In order only (as libwebrtc does): a packet older than one already here was
            // reordered or held back, and its transit says nothing about the jitter the
            // playout has to absorb; counted, it would let anyone who replays a lost
            // packet late widen the allowances the jitter feeds.
            if ext > self.highest {
                self.update_jitter(now, ts);
            }
        }
        let mut gap = None;
        match via {
            Via::Original => {}
            // Every retransmission that fills a hole is a recovery, including one for the
            // newest packet (audio tail loss is NACKed before a later packet shows the
            // gap, so on a short RTT the resend arrives before its successor).
            Via::Rtx => self.counters.recovered_rtx += 1,
            Via::Fec => {
                self.counters.recovered_fec += 1;
                self.repaired.insert(ext);
            }
        }
        if ext > self.highest {
            if ext > self.highest + 1 {
                gap = Some((SeqNo(self.highest + 1), SeqNo(ext)));
            }
            self.highest = ext;
        } else if original {
            self.counters.reordered += 1;
        }
        self.forget_old();
        self.update_lost();
        Ok(Arrival {
            seq: SeqNo(ext),
            ts,
            gap,
            after_repair: false,
        })
    }

    /// A missing packet whose payload arrived as redundancy in a later one (RFC 2198).
    /// It counts as recovered, like a retransmission, and as seen: should its original
    /// still arrive (late, or replayed by someone on the path), that is a duplicate.
    /// The network still lost it, so it stays in `lost_before_recovery`, which is what
    /// the sender sizes its redundancy by. Returns whether `seq` was missing.
    pub fn on_recovered(&mut self, seq: SeqNo) -> bool {
        let Some(base) = self.base else {
            return false;
        };
        if seq.0 < base || seq.0 >= self.highest || !self.seen.insert(seq.0) {
            return false;
        }
        self.repaired.insert(seq.0);
        self.forget_old();
        self.counters.packets += 1;
        self.counters.recovered_red += 1;
        self.update_lost();
        true
    }

    /// Bounds the duplicate detection to the sequence window.
    fn forget_old(&mut self) {
        while self.seen.len() > 2 * MAX_MISORDER as usize {
            self.seen.pop_first();
        }
        if let Some(&oldest) = self.seen.first() {
            while self.repaired.first().is_some_and(|&s| s < oldest) {
                self.repaired.pop_first();
            }
        }
    }

    /// The original packet just recorded came too late to be played: it stays received
    /// (a copy of it is a duplicate), but the network as good as lost it, so it counts
    /// in `lost_before_recovery` (what RTCP reports) like a packet that never came.
    pub fn on_too_late(&mut self) {
        self.originals = self.originals.saturating_sub(1);
        self.update_lost();
    }

    /// A packet far outside the window: a step of probation, or the resync it earns.
    fn on_jump(
        &mut self,
        now: Instant,
        seq: u16,
        ts: u32,
        original: bool,
        len: usize,
    ) -> Result<Arrival, Reject> {
        if !original {
            // A retransmission proves nothing about where the stream is.
            self.counters.out_of_window += 1;
            return Err(Reject::OutOfWindow);
        }
        let count = match self.probation {
            Some(p) if p.next == seq => p.count + 1,
            _ => 1,
        };
        if count < PROBATION {
            self.probation = Some(Probation {
                next: seq.wrapping_add(1),
                count,
            });
            self.counters.probation += 1;
            return Err(Reject::Probation);
        }
        // A restarted stream: follow it without NACKing the thousands in between. The
        // packets held on probation are not replayed: the newest one starts the stream.
        self.counters.resyncs += 1;
        self.expected_before = self.counters.expected;
        self.probation = None;
        self.seqs = Extender::new();
        self.seen.clear();
        self.repaired.clear();
        self.base = None;
        self.counters.bytes += len as u64;
        Ok(self.start(now, self.seqs.peek(u64::from(seq)), ts))
    }

    fn start(&mut self, now: Instant, ext: u64, ts: u32) -> Arrival {
        let ext = self.seqs.extend(ext & 0xffff);
        let ts = self.tss.extend(u64::from(ts));
        self.base = Some(ext);
        self.highest = ext;
        self.seen.insert(ext);
        self.counters.packets += 1;
        self.originals += 1;
        self.update_jitter(now, ts);
        self.update_lost();
        Arrival {
            seq: SeqNo(ext),
            ts,
            gap: None,
            after_repair: false,
        }
    }

    fn update_lost(&mut self) {
        let expected = self.expected_before + self.base.map_or(0, |b| self.highest + 1 - b);
        self.counters.expected = expected;
        self.counters.lost = expected.saturating_sub(self.counters.packets);
        self.counters.lost_before_recovery = expected.saturating_sub(self.originals);
    }

    /// RFC 3550 §6.4.1 / A.8: J += (|D| - J) / 16, in timestamp units.
    fn update_jitter(&mut self, now: Instant, ts: u64) {
        let first = *self.first_arrival.get_or_insert(now);
        let arrival = now.saturating_duration_since(first).as_secs_f64() * f64::from(self.rate);
        let transit = arrival - ts as f64;
        if let Some(last) = self.last_transit {
            let d = (transit - last).abs();
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.last_transit = Some(transit);
    }

    /// Notes a sender report from this source (for LSR/DLSR).
    pub fn on_sender_report(&mut self, now: Instant, ntp: u64) {
        self.last_sr = Some(((ntp >> 16) as u32, now));
    }

    /// The share of packets the network lost lately: over the last report's interval,
    /// or since the start before any report.
    pub fn recent_loss(&self) -> f32 {
        self.last_fraction.unwrap_or_else(|| {
            let c = &self.counters;
            if c.expected == 0 {
                0.0
            } else {
                c.lost_before_recovery as f32 / c.expected as f32
            }
        })
    }

    /// The report block for this source, and the fraction lost since the last one.
    pub fn report(&mut self, now: Instant, _clock: &WallClock) -> Option<ReportBlock> {
        self.base?;
        let expected = self.counters.expected;
        let received = self.originals;
        // `expected` is cumulative across resyncs, so this never goes backwards; saturate
        // anyway: a bogus fraction would halve the peer's bitrate.
        let expected_interval = expected.saturating_sub(self.prior.0);
        let received_interval = received.saturating_sub(self.prior.1);
        self.prior = (expected, received);
        let lost_interval = expected_interval.saturating_sub(received_interval);
        let fraction_lost = (lost_interval << 8)
            .checked_div(expected_interval)
            .map_or(0, |f| f.min(255) as u8);
        self.last_fraction = Some(f32::from(fraction_lost) / 256.0);
        let (lsr, dlsr) = self.last_sr.map_or((0, 0), |(mid, at)| {
            (mid, to_ntp_short(now.saturating_duration_since(at)))
        });
        Some(ReportBlock {
            ssrc: self.ssrc,
            fraction_lost,
            total_lost: self.counters.lost_before_recovery.min(0x7f_ffff) as u32,
            highest_seq: self.highest as u32,
            jitter: self.jitter as u32,
            lsr,
            dlsr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_instant;

    fn stream() -> RecvStream {
        RecvStream::new(Ssrc(5), 48_000)
    }

    #[test]
    fn gaps_duplicates_and_reordering_are_counted() {
        let t0 = test_instant();
        let mut s = stream();
        s.on_packet(t0, 65_534, 0, true, 100).unwrap();
        let a = s.on_packet(t0, 1, 960, true, 100).unwrap();
        assert_eq!(a.gap, Some((SeqNo(65_535 + 65_536), SeqNo(65_536 * 2 + 1))));
        assert_eq!(s.counters().lost, 2);
        s.on_packet(t0, 65_535, 0, false, 100).unwrap();
        s.on_packet(t0, 0, 0, true, 100).unwrap();
        assert_eq!(s.on_packet(t0, 0, 0, true, 100), Err(Reject::Duplicate));
        let c = s.counters();
        assert_eq!(
            (c.lost, c.duplicates, c.recovered_rtx, c.reordered),
            (0, 1, 1, 1)
        );
    }

    #[test]
    fn a_retransmission_of_the_newest_packet_counts_as_recovered() {
        let t0 = test_instant();
        let mut s = stream();
        s.on_packet(t0, 10, 0, true, 100).unwrap();
        // Packet 11 was lost; its resend arrives before packet 12 reveals the gap.
        s.on_packet(t0, 11, 960, false, 100).unwrap();
        s.on_packet(t0, 12, 1920, true, 100).unwrap();
        let c = s.counters();
        assert_eq!((c.recovered_rtx, c.lost, c.lost_before_recovery), (1, 0, 1));
    }

    #[test]
    fn huge_sequence_jump_resyncs_without_a_gap_after_probation() {
        let t0 = test_instant();
        let mut s = stream();
        s.on_packet(t0, 10, 0, true, 1).unwrap();
        for i in 0..PROBATION - 1 {
            let r = s.on_packet(t0, 30_000 + i as u16, 0, true, 1);
            assert_eq!(r, Err(Reject::Probation));
        }
        let a = s
            .on_packet(t0, 30_000 + PROBATION as u16 - 1, 0, true, 1)
            .unwrap();
        assert_eq!(a.gap, None);
        assert_eq!(s.counters().resyncs, 1);
        assert_eq!(s.counters().lost, 0);
        assert_eq!(s.counters().probation, u64::from(PROBATION - 1));
        // The new range goes on normally.
        let a = s
            .on_packet(t0, 30_000 + PROBATION as u16, 0, true, 1)
            .unwrap();
        assert_eq!(a.gap, None);
    }

    #[test]
    fn a_forged_jump_is_cancelled_by_the_live_stream() {
        let t0 = test_instant();
        let mut s = stream();
        for i in 0..100u16 {
            s.on_packet(t0, i, 0, true, 1).unwrap();
            if i % 10 == 5 {
                // Two forged packets 3500 ahead, between two live ones, every time.
                for f in 0..2 {
                    let r = s.on_packet(t0, i + 3500 + f, 0, true, 1);
                    assert_eq!(r, Err(Reject::Probation));
                }
            }
        }
        let c = s.counters();
        assert_eq!((c.resyncs, c.lost, c.packets), (0, 0, 100), "{c:?}");
        assert_eq!(c.probation, 20);
    }

    #[test]
    fn jumps_backwards_and_retransmissions_far_away_are_not_followed_alone() {
        let t0 = test_instant();
        let mut s = stream();
        s.on_packet(t0, 20_000, 0, true, 1).unwrap();
        assert_eq!(s.on_packet(t0, 10_000, 0, true, 1), Err(Reject::Probation));
        assert_eq!(
            s.on_packet(t0, 5_000, 0, false, 1),
            Err(Reject::OutOfWindow)
        );
        // Not consecutive: probation starts over each time.
        for seq in [1_000u16, 1_002, 1_004, 1_006, 1_008] {
            assert_eq!(s.on_packet(t0, seq, 0, true, 1), Err(Reject::Probation));
        }
        assert_eq!(s.counters().resyncs, 0);
    }

    #[test]
    fn report_after_a_resync_gives_a_sane_fraction_lost() {
        let t0 = test_instant();
        let clock = WallClock::new(t0, std::time::UNIX_EPOCH);
        let mut s = stream();
        // A long first life, reported on, so `prior` holds large counts.
        for i in 0..2_000u16 {
            s.on_packet(t0, i, 0, true, 1).unwrap();
        }
        assert_eq!(s.report(t0, &clock).unwrap().fraction_lost, 0);
        // The peer restarts 20 000 further on; a few packets of the new life, one lost.
        for i in (0..20u16).filter(|i| *i != 10) {
            let _ = s.on_packet(t0, 22_000 + i, 0, true, 1);
        }
        assert_eq!(s.counters().resyncs, 1);
        let r = s.report(t0, &clock).unwrap();
        // 17 expected since the resync (the newest probation packet starts the stream),
        // 16 received: 1/17 lost, not an underflow.
        assert_eq!(r.fraction_lost, (256 / 17) as u8);
        assert_eq!(r.total_lost, 1);
        assert_eq!(s.counters().lost, 1);
    }

    #[test]
    fn jitter_follows_rfc3550_for_steady_arrivals() {
        let t0 = test_instant();
        let mut s = stream();
        for i in 0..200u32 {
            // 20 ms frames arriving alternately 0 and 4 ms late.
            let late = if i % 2 == 0 { 0 } else { 4 };
            let at = t0 + Duration::from_millis(u64::from(i) * 20 + late);
            s.on_packet(at, i as u16, i * 960, true, 1).unwrap();
        }
        let j = s.jitter().as_secs_f64() * 1000.0;
        assert!((3.5..4.5).contains(&j), "{j}");
    }

    #[test]
    fn report_gives_fraction_lost_since_last_report() {
        let t0 = test_instant();
        let clock = WallClock::new(t0, std::time::UNIX_EPOCH);
        let mut s = stream();
        for i in (0..100u16).filter(|i| i % 4 != 3) {
            s.on_packet(t0, i, 0, true, 1).unwrap();
        }
        let r = s.report(t0, &clock).unwrap();
        // Highest is 98: 99 expected, 24 lost.
        assert_eq!(r.fraction_lost, (24 * 256 / 99) as u8);
        assert_eq!(r.total_lost, 24);
        let r = s.report(t0, &clock).unwrap();
        assert_eq!(r.fraction_lost, 0);
    }

    #[test]
    fn a_frame_recovered_from_redundancy_then_arriving_is_counted_once() {
        let t0 = test_instant();
        let mut s = stream();
        for seq in [10, 11, 13] {
            s.on_packet(t0, seq, u32::from(seq) * 960, true, 100)
                .unwrap();
        }
        let missing = SeqNo(s.highest - 1);
        assert!(s.on_recovered(missing));
        assert!(!s.on_recovered(missing), "recovered twice");
        let c = s.counters();
        assert_eq!((c.recovered_red, c.lost, c.lost_before_recovery), (1, 0, 1));
        // The original, late: counted as received (its payload is already buffered); the
        // session decides whether it came too late to count (see `on_too_late`).
        let late = s.on_packet(t0, 12, 12 * 960, true, 100).unwrap();
        assert!(late.after_repair);
        assert_eq!(s.counters().lost_before_recovery, 0);
        // A copy of it is a duplicate.
        assert_eq!(
            s.on_packet(t0, 12, 12 * 960, true, 100),
            Err(Reject::Duplicate)
        );
        assert_eq!(s.counters().duplicates, 1);
        // Nothing outside what was expected can be marked recovered.
        assert!(!s.on_recovered(SeqNo(s.highest + 1)));
        assert!(!s.on_recovered(SeqNo(0)));
    }

    #[test]
    fn an_original_too_late_to_play_counts_as_lost_to_the_sender() {
        let t0 = test_instant();
        let mut s = stream();
        for seq in [10, 11, 13, 14] {
            s.on_packet(t0, seq, u32::from(seq) * 960, true, 100)
                .unwrap();
        }
        assert_eq!(s.counters().lost_before_recovery, 1);
        s.on_packet(t0, 12, 12 * 960, true, 100).unwrap();
        assert_eq!(s.counters().lost_before_recovery, 0);
        s.on_too_late();
        assert_eq!(s.counters().lost_before_recovery, 1);
        assert_eq!(s.counters().lost, 0);
    }

    #[test]
    fn only_packets_in_order_feed_the_jitter() {
        let t0 = test_instant();
        let frame = Duration::from_millis(20);
        let mut s = stream();
        for i in 0..50u16 {
            if i != 30 {
                s.on_packet(t0 + frame * u32::from(i), i, u32::from(i) * 960, true, 100)
                    .unwrap();
            }
        }
        assert!(s.jitter() < Duration::from_micros(1), "{:?}", s.jitter());
        // Packet 30, 400 ms late (a replay of a lost packet, or reordering): counted, but
        // it does not widen the jitter the allowances are built on.
        s.on_packet(t0 + frame * 50, 30, 30 * 960, true, 100)
            .unwrap();
        assert_eq!(s.counters().reordered, 1);
        assert!(s.jitter() < Duration::from_micros(1), "{:?}", s.jitter());
    }

    #[test]
    fn a_packet_rebuilt_from_fec_then_arriving_was_reordered_not_lost() {
        let t0 = test_instant();
        let mut s = stream();
        for seq in [10, 11, 13] {
            s.on_packet(t0, seq, 0, true, 100).unwrap();
        }
        let rebuilt = s.on_rebuilt(t0, 12, 0, 100).unwrap();
        assert!(!rebuilt.after_repair);
        let c = s.counters();
        assert_eq!(
            (c.recovered_fec, c.recovered_rtx, c.lost_before_recovery),
            (1, 0, 1)
        );
        // The original, held up on the way: received, not a duplicate, not lost.
        let late = s.on_packet(t0, 12, 0, true, 100).unwrap();
        assert!(late.after_repair);
        let c = s.counters();
        assert_eq!(
            (c.after_repair, c.duplicates, c.lost_before_recovery),
            (1, 0, 0)
        );
        // A second copy is a duplicate.
        assert_eq!(s.on_packet(t0, 12, 0, true, 100), Err(Reject::Duplicate));
        // A retransmission of a rebuilt packet is a plain duplicate too.
        s.on_packet(t0, 15, 0, true, 100).unwrap();
        s.on_rebuilt(t0, 14, 0, 100).unwrap();
        assert_eq!(s.on_packet(t0, 14, 0, false, 100), Err(Reject::Duplicate));
        assert_eq!(s.counters().duplicates, 2);
    }
}
