//! The NACK generator (RFC 4585 generic NACK).
//!
//! A gap is NACKed as soon as it is seen plus a small reorder allowance. Each request
//! is sent twice, a few milliseconds apart, because a lost NACK costs a whole round
//! trip and NACKs are tiny (the sender resends at most once per half RTT, so the copy
//! costs no extra retransmission); on a lossy link three times (see
//! [`NackGenerator::set_copies`]). An unanswered request is repeated one RTT (plus a
//! margin) later, up to a retry limit, and the packet
//! is given up once a retransmission requested now could no longer arrive before its
//! playout deadline.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tracing::{debug, trace};

use crate::types::SeqNo;

/// The longest the first NACK waits for reordering to resolve itself.
const MAX_REORDER_ALLOWANCE: Duration = Duration::from_millis(40);
/// The most packets tracked as missing; a longer outage is not worth NACKing.
const MAX_MISSING: usize = 1000;

#[derive(Debug, Clone, Copy)]
struct Missing {
    /// When the gap was seen.
    found: Instant,
    next_send: Instant,
    /// Requests made (a request and its copies count once).
    sent: u32,
    /// When the last request was made, while copies of it are still due.
    copy_of: Option<Instant>,
    /// Copies of the last request still due.
    copies_due: u32,
    deadline: Option<Instant>,
}

/// NACK generator counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct NackCounters {
    /// Sequence numbers requested (each request counted).
    pub requested: u64,
    /// Missing packets that arrived.
    pub recovered: u64,
    /// Missing packets given up: retry limit, deadline, or overflow.
    pub given_up: u64,
}

/// Tracks missing packets of one stream and decides when to ask for them.
#[derive(Debug)]
pub struct NackGenerator {
    reorder_allowance: Duration,
    /// The longest recent wait for a reordered (not lost) packet; decays slowly. The
    /// allowance follows it, so a reordering path does not draw spurious NACKs.
    observed_reorder: Duration,
    /// Delay of the redundant copy of the first request.
    first_repeat: Duration,
    /// Copies of each request after the first (none when `first_repeat` is zero).
    copies: u32,
    max_retries: u32,
    missing: BTreeMap<SeqNo, Missing>,
    counters: NackCounters,
}

impl NackGenerator {
    /// A generator waiting `reorder_allowance` before the first request, repeating it
    /// once after `first_repeat`, and asking at most `max_retries` times per packet.
    pub fn new(reorder_allowance: Duration, first_repeat: Duration, max_retries: u32) -> Self {
        Self {
            reorder_allowance,
            observed_reorder: Duration::ZERO,
            first_repeat,
            copies: 1,
            max_retries: max_retries.max(1),
            missing: BTreeMap::new(),
            counters: NackCounters::default(),
        }
    }

    /// Counters.
    pub fn counters(&self) -> NackCounters {
        self.counters
    }

    /// How many copies follow each request, `first_repeat` apart: one by default, two
    /// on a link that loses `LOSSY` or more (the session sets it from the stream's
    /// loss). Two copies of a request lost cost a round trip; at 20 % loss that is one
    /// request in 25 (in the lab, 640x480 at 20 % loss, most of the freezes left), with
    /// three copies one in 125. A copy is a few dozen bytes, but outside the send
    /// budget: on a lossy 300 kbit/s link (`media/tests/capacity.rs`) they pushed what
    /// was sent 10-20 % over the estimate, so the session asks for them only for video
    /// and only while delay-based control is off.
    pub fn set_copies(&mut self, copies: u32) {
        self.copies = copies;
    }

    /// The loss from which a request gets two copies.
    pub const LOSSY: f32 = 0.05;

    /// Packets being waited for.
    pub fn len(&self) -> usize {
        self.missing.len()
    }

    /// Whether no packet is awaited.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty()
    }

    /// Registers the missing range `start..end`; `deadline` gives each packet's playout
    /// deadline, if known.
    pub fn on_gap(
        &mut self,
        now: Instant,
        start: SeqNo,
        end: SeqNo,
        deadline: impl Fn(SeqNo) -> Option<Instant>,
    ) {
        let count = end.delta(start).max(0) as u64;
        // Only the newest packets of a very long gap are worth asking for.
        let skip = count.saturating_sub(MAX_MISSING as u64);
        self.counters.given_up += skip;
        for i in skip..count {
            let seq = start + i;
            // A packet already awaited (e.g. found missing by timeout) keeps its state.
            let allowance = self.reorder_allowance();
            self.missing.entry(seq).or_insert_with(|| Missing {
                found: now,
                next_send: now + allowance,
                sent: 0,
                copy_of: None,
                copies_due: 0,
                deadline: deadline(seq),
            });
        }
        while self.missing.len() > MAX_MISSING {
            self.missing.pop_first();
            self.counters.given_up += 1;
        }
    }

    /// Forgets every missing packet (the stream resynchronized).
    pub fn clear(&mut self) {
        self.counters.given_up += self.missing.len() as u64;
        self.missing.clear();
    }

    /// How many consecutive packets right after `newest` are already awaited.
    pub fn awaited_after(&self, newest: SeqNo) -> u64 {
        let mut k = 0;
        while self.missing.contains_key(&(newest + k + 1)) {
            k += 1;
        }
        k
    }

    /// The wait before a gap is first NACKed: the configured allowance, or the
    /// reordering recently observed if longer, at most `MAX_REORDER_ALLOWANCE`.
    pub fn reorder_allowance(&self) -> Duration {
        self.reorder_allowance
            .max(self.observed_reorder)
            .min(MAX_REORDER_ALLOWANCE)
    }

    /// A packet arrived at `now`; `original` is false for a retransmission. Returns
    /// whether it had been missing.
    pub fn on_received(&mut self, now: Instant, seq: SeqNo, original: bool) -> bool {
        // Decay the reordering estimate by 1/64 per packet: ~1 s of audio to halve it.
        self.observed_reorder -= self.observed_reorder / 64;
        let Some(m) = self.missing.remove(&seq) else {
            return false;
        };
        self.counters.recovered += 1;
        if original {
            let waited = now.saturating_duration_since(m.found);
            self.observed_reorder = self.observed_reorder.max(waited + waited / 4);
        }
        true
    }

    /// Stops waiting for packets before `seq` (their frames were skipped or played).
    pub fn forget_before(&mut self, seq: SeqNo) {
        let keep = self.missing.split_off(&seq);
        self.counters.given_up += self.missing.len() as u64;
        self.missing = keep;
    }

    /// The sequence numbers to request at `now`. Each is asked for again `rtt` plus a
    /// margin later; packets past their retry limit or deadline are dropped.
    pub fn poll_nack(&mut self, now: Instant, rtt: Duration) -> Vec<SeqNo> {
        let resend_after = rtt + rtt / 4 + Duration::from_millis(5);
        let mut out = Vec::new();
        let max_retries = self.max_retries;
        let first_repeat = self.first_repeat;
        let copies = self.copies;
        let before = self.missing.len();
        self.missing.retain(|&seq, m| {
            if m.next_send > now {
                return true;
            }
            if m.deadline.is_some_and(|d| now + rtt / 2 > d) {
                debug!(%seq, sent = m.sent, "missing packet can no longer make its deadline");
                return false;
            }
            if let Some(requested) = m.copy_of {
                m.copies_due = m.copies_due.saturating_sub(1);
                m.next_send = if m.copies_due == 0 {
                    m.copy_of = None;
                    (requested + resend_after).max(now)
                } else {
                    now + first_repeat
                };
                out.push(seq);
                return true;
            }
            if m.sent >= max_retries {
                debug!(%seq, sent = m.sent, "giving up on missing packet");
                return false;
            }
            m.sent += 1;
            if first_repeat.is_zero() || copies == 0 {
                m.next_send = now + resend_after;
            } else {
                m.copy_of = Some(now);
                m.copies_due = copies;
                m.next_send = now + first_repeat;
            }
            out.push(seq);
            true
        });
        self.counters.given_up += (before - self.missing.len()) as u64;
        self.counters.requested += out.len() as u64;
        if !out.is_empty() {
            trace!(count = out.len(), "nack");
        }
        out
    }

    /// When the next request is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.missing.values().map(|m| m.next_send).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_instant;

    const RTT: Duration = Duration::from_millis(50);

    #[test]
    fn nacks_after_the_reorder_allowance_then_every_rtt() {
        let t0 = test_instant();
        let mut g = NackGenerator::new(Duration::from_millis(5), RTT * 2, 10);
        g.on_gap(t0, SeqNo(10), SeqNo(12), |_| None);
        assert!(g.poll_nack(t0, RTT).is_empty());
        let t1 = g.poll_timeout().unwrap();
        assert_eq!(t1 - t0, Duration::from_millis(5));
        assert_eq!(g.poll_nack(t1, RTT), vec![SeqNo(10), SeqNo(11)]);
        assert!(g.poll_nack(t1 + RTT, RTT).is_empty());
        assert!(g.on_received(t1, SeqNo(10), false));
        let t2 = g.poll_timeout().unwrap();
        assert!(t2 - t1 > RTT);
        assert_eq!(g.poll_nack(t2, RTT), vec![SeqNo(11)]);
    }

    #[test]
    fn each_request_is_sent_twice() {
        let t0 = test_instant();
        let mut g = NackGenerator::new(Duration::ZERO, Duration::from_millis(10), 10);
        g.on_gap(t0, SeqNo(7), SeqNo(8), |_| None);
        assert_eq!(g.poll_nack(t0, RTT), vec![SeqNo(7)]);
        let t1 = g.poll_timeout().unwrap();
        assert_eq!(t1 - t0, Duration::from_millis(10));
        assert_eq!(g.poll_nack(t1, RTT), vec![SeqNo(7)]);
        let t2 = g.poll_timeout().unwrap();
        assert!(t2 - t0 > RTT);
        assert_eq!(g.poll_nack(t2, RTT), vec![SeqNo(7)]);
        assert_eq!(g.poll_timeout().unwrap() - t2, Duration::from_millis(10));
    }

    #[test]
    fn on_a_lossy_link_each_request_is_sent_three_times() {
        let t0 = test_instant();
        let repeat = Duration::from_millis(10);
        let mut g = NackGenerator::new(Duration::ZERO, repeat, 10);
        g.set_copies(2);
        g.on_gap(t0, SeqNo(7), SeqNo(8), |_| None);
        let mut asked = Vec::new();
        while let Some(t) = g.poll_timeout().filter(|t| *t < t0 + RTT * 3) {
            if !g.poll_nack(t, RTT).is_empty() {
                asked.push(t - t0);
            }
        }
        // Three copies 10 ms apart, then the retry one RTT (plus a margin) after the
        // first, and its two copies.
        let retry = RTT + RTT / 4 + Duration::from_millis(5);
        let expected = [
            Duration::ZERO,
            repeat,
            repeat * 2,
            retry,
            retry + repeat,
            retry + repeat * 2,
        ];
        assert_eq!(asked[..6], expected);
    }

    #[test]
    fn reordering_raises_the_allowance_and_it_decays() {
        let t0 = test_instant();
        let mut g = NackGenerator::new(Duration::from_millis(5), RTT, 10);
        g.on_gap(t0, SeqNo(1), SeqNo(2), |_| None);
        // The "missing" original shows up 16 ms later: reordering, not loss.
        assert!(g.on_received(t0 + Duration::from_millis(16), SeqNo(1), true));
        assert_eq!(g.reorder_allowance(), Duration::from_millis(20));
        for s in 2..400 {
            g.on_received(t0, SeqNo(s), true);
        }
        assert_eq!(g.reorder_allowance(), Duration::from_millis(5));
    }

    #[test]
    fn stops_at_the_retry_limit() {
        let t0 = test_instant();
        let mut g = NackGenerator::new(Duration::ZERO, Duration::ZERO, 3);
        g.on_gap(t0, SeqNo(1), SeqNo(2), |_| None);
        let mut asked = 0;
        while let Some(t) = g.poll_timeout() {
            asked += g.poll_nack(t, RTT).len();
        }
        assert_eq!(asked, 3);
        assert_eq!(g.counters().given_up, 1);
    }

    #[test]
    fn gives_up_when_the_deadline_cannot_be_met() {
        let t0 = test_instant();
        let mut g = NackGenerator::new(Duration::ZERO, RTT, 10);
        let deadline = t0 + Duration::from_millis(60);
        g.on_gap(t0, SeqNo(1), SeqNo(2), |_| Some(deadline));
        assert_eq!(g.poll_nack(t0, RTT).len(), 1);
        // The next request would be due after the deadline: the packet is dropped.
        let t = g.poll_timeout().unwrap();
        assert!(g.poll_nack(t, RTT).is_empty());
        assert_eq!(g.len(), 0);
    }

    #[test]
    fn huge_gap_does_not_hang_or_grow_without_bound() {
        let t0 = test_instant();
        let mut g = NackGenerator::new(Duration::ZERO, RTT, 10);
        g.on_gap(t0, SeqNo(0), SeqNo(u64::MAX / 2), |_| None);
        assert_eq!(g.len(), MAX_MISSING);
        assert_eq!(g.poll_nack(t0, RTT).len(), MAX_MISSING);
    }
}
