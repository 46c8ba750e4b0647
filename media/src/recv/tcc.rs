//! The receive side of transport-wide congestion control: every admitted packet's
//! transport-wide sequence number and arrival time, reported back to its sender in
//! transport-cc feedback ([`TransportFeedback`]) every [`FEEDBACK_INTERVAL`].
//!
//! The sender learns from it what is still in flight (see `send::inflight`): what it
//! sent that has not been reported on, received or lost. Sequence numbers come from
//! authenticated packets of the peer's agreed streams only, and memory is bounded: a
//! jump beyond [`MAX_JUMP`] (up to half the number space ahead) starts afresh rather
//! than reporting thousands of packets as lost, so at most that many arrivals wait; a
//! peer that restarted (a new stream in the agreement) starts a new record.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::types::{Extender, Ssrc};
use crate::wire::TransportFeedback;
use crate::wire::tcc::REFERENCE_UNIT_US;

/// How often feedback goes back while packets come (libwebrtc sends it every 50-250 ms
/// by its rate; the sender's window reacts to it, so the shortest).
pub const FEEDBACK_INTERVAL: Duration = Duration::from_millis(50);
/// The most packets one feedback reports on: with every delta large, 400 statuses are
/// about 1 kB, so a feedback fits a datagram; the rest go in the next.
const MAX_PER_FEEDBACK: usize = 400;
/// A sequence number this far past the next one to report restarts the record, so at
/// most this many arrivals wait (a feedback goes every 50 ms).
const MAX_JUMP: u64 = 1000;

/// Counters of the transport-cc receive side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct FeedbackCounters {
    /// Packets with a transport-wide sequence number recorded.
    pub recorded: u64,
    /// Feedback packets built.
    pub feedbacks: u64,
    /// Packets that came after their sequence number was reported on (late, or a
    /// duplicate): not reported again.
    pub late: u64,
    /// Restarts on a jump in the sequence numbers.
    pub restarts: u64,
}

/// Arrivals waiting to be reported.
#[derive(Debug)]
pub struct ArrivalRecord {
    epoch: Instant,
    extender: Extender<16>,
    /// The first sequence number the next feedback reports on.
    next: Option<u64>,
    arrivals: BTreeMap<u64, Instant>,
    next_feedback: Option<Instant>,
    count: u8,
    counters: FeedbackCounters,
}

impl ArrivalRecord {
    /// A record whose reference times count from `epoch`.
    pub fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            extender: Extender::new(),
            next: None,
            arrivals: BTreeMap::new(),
            next_feedback: None,
            count: 0,
            counters: FeedbackCounters::default(),
        }
    }

    /// Forgets every number and arrival (the peer restarted: its numbers start again),
    /// keeping the counters.
    pub fn restart(&mut self, now: Instant) {
        let counters = FeedbackCounters {
            restarts: self.counters.restarts + 1,
            ..self.counters
        };
        *self = Self::new(now);
        self.counters = counters;
    }

    /// Records one packet's transport-wide sequence number, arrived `now`.
    pub fn on_packet(&mut self, now: Instant, wire_seq: u16) {
        let seq = self.extender.extend(u64::from(wire_seq));
        let next = *self.next.get_or_insert(seq);
        if seq < next || self.arrivals.contains_key(&seq) {
            self.counters.late += 1;
            return;
        }
        if seq - next > MAX_JUMP {
            // Start afresh at the jump rather than report a thousand losses.
            self.counters.restarts += 1;
            self.arrivals.clear();
            self.next = Some(seq);
        }
        self.arrivals.insert(seq, now);
        self.counters.recorded += 1;
        self.next_feedback.get_or_insert(now + FEEDBACK_INTERVAL);
    }

    /// When feedback is due (`None` while nothing waits).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next_feedback.filter(|_| !self.arrivals.is_empty())
    }

    /// The feedback due at `now`, if any: every sequence number from the first not
    /// yet reported to the highest received, as received (with its arrival) or not.
    pub fn poll_feedback(
        &mut self,
        now: Instant,
        sender: Ssrc,
        media: Ssrc,
    ) -> Option<TransportFeedback> {
        if self.next_feedback.is_none_or(|at| now < at) {
            return None;
        }
        let first = self.next?;
        let (&highest, _) = self.arrivals.last_key_value()?;
        let (_, &first_arrival) = self.arrivals.first_key_value()?;
        let reference = (first_arrival
            .saturating_duration_since(self.epoch)
            .as_micros() as i64)
            / REFERENCE_UNIT_US;
        let base_us = reference * REFERENCE_UNIT_US;
        let mut arrivals = Vec::new();
        let mut previous = base_us;
        let mut end = first;
        for seq in first..=highest {
            if arrivals.len() == MAX_PER_FEEDBACK {
                break;
            }
            let Some(at) = self.arrivals.get(&seq) else {
                arrivals.push(None);
                end = seq + 1;
                continue;
            };
            let us = at.saturating_duration_since(self.epoch).as_micros() as i64;
            if !TransportFeedback::delta_fits(previous, us) {
                // Reordered by more than 8 s: the rest goes in the next feedback.
                break;
            }
            previous = us;
            arrivals.push(Some(us - base_us));
            end = seq + 1;
        }
        // Trailing losses are not reported: they may yet come.
        while arrivals.last() == Some(&None) {
            arrivals.pop();
            end -= 1;
        }
        if arrivals.is_empty() {
            self.next_feedback = Some(now + FEEDBACK_INTERVAL);
            return None;
        }
        self.arrivals = self.arrivals.split_off(&end);
        self.next = Some(end);
        // The next comes an interval after this one, or after the next packet.
        self.next_feedback = (!self.arrivals.is_empty()).then_some(now + FEEDBACK_INTERVAL);
        let count = self.count;
        self.count = self.count.wrapping_add(1);
        self.counters.feedbacks += 1;
        Some(TransportFeedback {
            sender,
            media,
            base_seq: first as u16,
            reference: (reference as u32) & 0x00ff_ffff,
            count,
            arrivals,
        })
    }

    /// The counters.
    pub fn counters(&self) -> FeedbackCounters {
        self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_instant;

    const MS: Duration = Duration::from_millis(1);

    fn poll(r: &mut ArrivalRecord, now: Instant) -> Option<TransportFeedback> {
        r.poll_feedback(now, Ssrc(1), Ssrc(2))
    }

    #[test]
    fn reports_every_packet_once_across_the_wrap_with_losses_and_reordering() {
        let t0 = test_instant();
        let mut r = ArrivalRecord::new(t0);
        // 65,533 .. 65,535, 0, 2 (1 lost), then 4 before 3.
        let order = [65_533u16, 65_534, 65_535, 0, 2, 4, 3];
        for (i, seq) in order.into_iter().enumerate() {
            r.on_packet(t0 + MS * (10 * i as u32 + 1), seq);
        }
        assert_eq!(r.poll_timeout(), Some(t0 + MS + FEEDBACK_INTERVAL));
        assert!(poll(&mut r, t0 + MS * 50).is_none());
        let fb = poll(&mut r, t0 + MS * 80).unwrap();
        assert_eq!(fb.base_seq, 65_533);
        let got: Vec<Option<i64>> = fb.arrivals.clone();
        // Reference is 0 (the first came 1 ms in): arrivals in µs from it.
        assert_eq!(
            got,
            vec![
                Some(1_000),
                Some(11_000),
                Some(21_000),
                Some(31_000),
                None,
                Some(41_000),
                Some(61_000),
                Some(51_000)
            ]
        );
        // Nothing more until another packet; a late 1 is not reported again.
        assert!(r.poll_timeout().is_none());
        r.on_packet(t0 + MS * 90, 1);
        assert_eq!(r.counters().late, 1);
        r.on_packet(t0 + MS * 100, 5);
        let fb = poll(&mut r, t0 + MS * 150).unwrap();
        assert_eq!((fb.base_seq, fb.arrivals.len(), fb.count), (5, 1, 1));
    }

    #[test]
    fn trailing_losses_wait_and_a_forged_jump_costs_no_memory() {
        let t0 = test_instant();
        let mut r = ArrivalRecord::new(t0);
        r.on_packet(t0, 10);
        r.on_packet(t0 + MS, 12);
        let fb = poll(&mut r, t0 + MS * 60).unwrap();
        assert_eq!(fb.arrivals, vec![Some(0), None, Some(1_000)]);
        // A jump of 30,000 starts afresh: one packet reported, not 30,000 losses.
        r.on_packet(t0 + MS * 70, 30_013);
        let fb = poll(&mut r, t0 + MS * 130).unwrap();
        assert_eq!((fb.base_seq, fb.arrivals.len()), (30_013, 1));
        assert_eq!(r.counters().restarts, 1);
        // However many packets come between feedbacks, at most MAX_JUMP wait.
        for i in 0..10_000u16 {
            r.on_packet(t0 + MS * 200, 30_014u16.wrapping_add(i.wrapping_mul(7)));
        }
        assert!(
            r.arrivals.len() <= MAX_JUMP as usize + 1,
            "{}",
            r.arrivals.len()
        );
        let fb = poll(&mut r, t0 + MS * 300).unwrap();
        assert!(fb.arrivals.len() <= MAX_PER_FEEDBACK);
        // A peer that restarted numbers from 0 again: after a restart of the record its
        // packets are reported, not counted late.
        let before = r.counters();
        r.restart(t0 + MS * 400);
        r.on_packet(t0 + MS * 400, 0);
        let fb = poll(&mut r, t0 + MS * 460).unwrap();
        assert_eq!((fb.base_seq, fb.arrivals.len()), (0, 1));
        let after = r.counters();
        assert_eq!(
            (after.restarts, after.late),
            (before.restarts + 1, before.late)
        );
        assert_eq!(after.recorded, before.recorded + 1);
    }
}
