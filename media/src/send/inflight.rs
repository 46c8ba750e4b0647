//! The send side of transport-wide congestion control: every packet that leaves gets a
//! transport-wide sequence number, and what the peer's feedback has not yet reported on
//! is in flight. The congestion window holds video and retransmissions while the bytes
//! in flight reach what the estimate carries in one feedback round trip and a margin
//! ([`WINDOW_MARGIN`]); audio is never held, nor is a probe cluster (one cut short
//! measures nothing).
//!
//! Why a window beside the estimate: the estimate comes back as feedback, through the
//! reverse path's queue. When the capacity of both directions drops at once (the lab's
//! 2.5 → 0.5 Mbit/s step), that queue fills as fast as the forward one, and a REMB cut
//! reached the sender 400-500 ms after the drop, everything sent over the new capacity
//! in between lost at the full drop-tail queue. The window needs no feedback to act: its
//! absence is the signal. Acknowledgements stop keeping pace within a round trip, the
//! window fills, and the sender then sends as fast as the peer reports arrivals (as
//! libwebrtc's congestion window does with transport feedback). While acknowledgements
//! come at well under the estimate, the session pushes the encoder's target down to
//! their rate (`session::rate`), so video does not pile up behind the window.
//!
//! Where the peer's feedback is itself lost at random ([`InFlight::lossy_return`]),
//! bytes in flight grow with every run of lost feedbacks on a path that carries all we
//! send, so the session holds video only while the feedback also shows a queue or has
//! been silent longer than its loss explains (`Session::hold_for_window`).
//!
//! Bounded: a packet not reported on after [`MAX_AGE`] leaves the window (a peer whose
//! feedback stopped holds video for at most that long per window), and at most
//! [`MAX_SENT`] packets are remembered.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::wire::TransportFeedback;
use crate::wire::tcc::REFERENCE_UNIT_US;

/// What the window allows over one feedback round trip at the estimate.
pub const WINDOW_MARGIN: Duration = Duration::from_millis(100);
/// Feedback round trips are remembered this long; the window uses the least.
const RTT_MEMORY: Duration = Duration::from_secs(1);
/// One-way delays are remembered this long for their least (the path's own delay).
const OWD_MEMORY: Duration = Duration::from_secs(10);
/// The acknowledgement rate is measured over this long.
const ACK_RATE_WINDOW: Duration = Duration::from_millis(250);
/// Sends are remembered this long, for the rate they went at a round trip ago.
const SENT_MEMORY: Duration = Duration::from_millis(1500);
/// A packet not reported on after this long no longer counts as in flight.
pub const MAX_AGE: Duration = Duration::from_secs(1);
/// The most packets remembered (several seconds at any rate a call sends).
const MAX_SENT: usize = 8192;
/// The least window: a few full packets, so a slow call is never stopped by it alone.
const MIN_WINDOW: usize = 4 * 1200;
/// The feedback loss is smoothed over about this many of the peer's feedbacks (2.5 s of
/// them at its 50 ms interval).
const FEEDBACK_LOSS_MEMORY: f64 = 50.0;
/// Losses beside arrivals that all met less queue than this are the path's own, not a
/// queue's overflow: a drop-tail queue drops only when full, its length later (the lab's
/// are 100-200 ms), and 10 ms of jitter spreads one-way delays by some 20 ms.
const QUEUE_FREE: Duration = Duration::from_millis(40);
/// The packets the path's own loss is first told on: a few hundred milliseconds of a
/// call, within some 4 points at 10 % loss.
const MIN_PATH_REPORTED: u64 = 50;
/// The loss of feedback, and of the path, from which a return path is lossy (see
/// `InFlight::lossy_return`).
const LOSSY: f64 = 0.05;
/// A gap in the feedback's count wider than this is a restart or a reordering, not loss.
const MAX_COUNT_GAP: u8 = 64;

/// Counters of the transport-cc send side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct InFlightCounters {
    /// Packets sent with a transport-wide sequence number.
    pub sent: u64,
    /// Feedback packets taken in.
    pub feedbacks: u64,
    /// Packets the peer reported received.
    pub received: u64,
    /// Packets the peer reported not received.
    pub lost: u64,
    /// Packets no feedback reported on (it was lost) before a later one passed them.
    pub unreported: u64,
    /// Packets that left the window by age, not by feedback.
    pub expired: u64,
    /// Feedback refused: it named sequence numbers we never sent.
    pub refused: u64,
    /// Times the window closed (the bytes in flight reached it).
    pub closed: u64,
}

#[derive(Debug, Clone, Copy)]
struct Sent {
    seq: u64,
    at: Instant,
    len: usize,
}

/// The packets in flight.
#[derive(Debug, Default)]
pub struct InFlight {
    next_seq: u64,
    sent: VecDeque<Sent>,
    bytes: usize,
    /// When the first packet left: send times count from it, in µs.
    epoch: Option<Instant>,
    /// The least one-way delay of each feedback (receiver's clock less ours, µs) over
    /// the last [`OWD_MEMORY`]: what a packet took over their least is the forward
    /// queue (and jitter). Aged, so neither the two clocks' drift nor one feedback's
    /// odd arrival time moves the window for the rest of the call.
    least_owds: VecDeque<(Instant, i64)>,
    /// Each feedback's round trip less the forward queue it reported, over the last
    /// [`RTT_MEMORY`]: (when, how long).
    base_rtts: VecDeque<(Instant, Duration)>,
    /// (when feedback said so, bytes received): the rate acknowledgements come at.
    acked: VecDeque<(Instant, usize)>,
    /// (when, bytes) of what was sent over the last [`SENT_MEMORY`].
    sends: VecDeque<(Instant, usize)>,
    /// The newest packet of the last feedback that reported any received: when it was
    /// sent, and the forward queue it met (its one-way delay over the least).
    forward_queue: Option<(Instant, Duration)>,
    /// When the first feedback came.
    first_feedback: Option<Instant>,
    /// The count of the last feedback taken in, and when it came.
    last_feedback: Option<(u8, Instant)>,
    /// The share of the peer's feedback lost on the way (from the gaps in its count),
    /// smoothed over [`FEEDBACK_LOSS_MEMORY`] feedbacks.
    feedback_loss: f64,
    /// Feedbacks counted into `feedback_loss` (taken in or lost), up to its memory:
    /// until then it is their plain mean.
    feedback_slots: f64,
    /// Packets received and lost, of feedbacks that saw no queue (see
    /// [`Self::delivered_share`]).
    path_delivered: (u64, u64),
    closed: bool,
    counters: InFlightCounters,
}

impl InFlight {
    /// Nothing sent yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets what is in flight (no feedback will come on it), keeping the counters.
    pub fn clear(&mut self) {
        *self = Self {
            counters: self.counters,
            ..Self::default()
        };
    }

    /// Numbers a packet of `len` bytes leaving `now`; returns its wire sequence number.
    pub fn on_send(&mut self, now: Instant, len: usize) -> u16 {
        self.epoch.get_or_insert(now);
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.sent.len() == MAX_SENT
            && let Some(old) = self.sent.pop_front()
        {
            self.bytes -= old.len;
            self.counters.expired += 1;
        }
        self.sent.push_back(Sent { seq, at: now, len });
        self.sends.push_back((now, len));
        forget_older(&mut self.sends, now, SENT_MEMORY, 0);
        self.bytes += len;
        self.counters.sent += 1;
        seq as u16
    }

    /// Takes in the peer's feedback: everything up to its last packet leaves the window
    /// (received, lost, or passed unreported). Refused, and counted, when it names a
    /// packet not sent yet. Returns whether it was taken.
    pub fn on_feedback(&mut self, now: Instant, fb: &TransportFeedback) -> bool {
        let Some(newest) = self.next_seq.checked_sub(1) else {
            self.counters.refused += 1;
            return false;
        };
        // The base, unwrapped next to the newest sent (feedback is about the past).
        let mut base = (newest & !0xffff) | u64::from(fb.base_seq);
        if base > newest {
            match base.checked_sub(1 << 16) {
                Some(b) => base = b,
                None => {
                    self.counters.refused += 1;
                    return false;
                }
            }
        }
        let end = base + fb.arrivals.len() as u64;
        if end > self.next_seq {
            self.counters.refused += 1;
            return false;
        }
        self.counters.feedbacks += 1;
        self.count_feedback(now, fb.count);
        let epoch = self.epoch.unwrap_or(now);
        let reference = i64::from(fb.reference) * REFERENCE_UNIT_US;
        // Each packet's one-way delay (on two clocks: only its changes mean anything),
        // and its round trip less the forward queue it met.
        let mut samples = Vec::new();
        // The newest packet received: (when it was sent, its one-way delay).
        let mut newest: Option<(Instant, i64)> = None;
        let (mut received, mut lost) = (0u64, 0u64);
        while let Some(p) = self.sent.front().copied().filter(|p| p.seq < end) {
            self.sent.pop_front();
            self.bytes -= p.len;
            let Some(report) = p.seq.checked_sub(base).map(|i| fb.arrivals[i as usize]) else {
                self.counters.unreported += 1;
                continue;
            };
            match report {
                Some(arrival) => {
                    received += 1;
                    self.counters.received += 1;
                    self.acked.push_back((now, p.len));
                    let sent_us = p.at.saturating_duration_since(epoch).as_micros() as i64;
                    let owd = reference + arrival - sent_us;
                    samples.push((now.saturating_duration_since(p.at), owd));
                    newest = Some((p.at, owd));
                }
                None => {
                    lost += 1;
                    self.counters.lost += 1;
                }
            }
        }
        if let Some(least) = samples.iter().map(|(_, owd)| *owd).min() {
            // Only a later one no larger can be the least from here on.
            while self.least_owds.back().is_some_and(|(_, l)| *l >= least) {
                self.least_owds.pop_back();
            }
            self.least_owds.push_back((now, least));
        }
        forget_older(&mut self.least_owds, now, OWD_MEMORY, 0);
        // The longest, as the oldest packet of a feedback waited for it too.
        let least = self.least_owds.front().map_or(0, |(_, l)| *l);
        if let Some((sent, owd)) = newest {
            let queue = u64::try_from(owd - least).unwrap_or(0);
            self.forward_queue = Some((sent, Duration::from_micros(queue)));
        }
        // What a feedback whose arrivals all met next to no queue lost, the path lost
        // (see `delivered_share`).
        let most_queue = samples.iter().map(|(_, owd)| owd - least).max();
        if most_queue.is_some_and(|q| q < QUEUE_FREE.as_micros() as i64) {
            self.path_delivered.0 += received;
            self.path_delivered.1 += lost;
        }
        let base = samples
            .iter()
            .map(|(rtt, owd)| {
                let queue = u64::try_from(owd - least).unwrap_or(0);
                rtt.saturating_sub(Duration::from_micros(queue))
            })
            .max();
        if let Some(base) = base {
            self.base_rtts.push_back((now, base));
        }
        forget_older(&mut self.base_rtts, now, RTT_MEMORY, 1);
        forget_older(&mut self.acked, now, ACK_RATE_WINDOW, 0);
        true
    }

    /// Takes the count of a feedback that came at `now`: the ones missing before it were
    /// lost on the way.
    fn count_feedback(&mut self, now: Instant, count: u8) {
        let missing = self.last_feedback.map_or(0, |(last, _)| {
            let gap = count.wrapping_sub(last).wrapping_sub(1);
            if gap > MAX_COUNT_GAP { 0 } else { gap }
        });
        for lost in std::iter::repeat_n(1.0, usize::from(missing)).chain([0.0]) {
            self.feedback_slots = (self.feedback_slots + 1.0).min(FEEDBACK_LOSS_MEMORY);
            self.feedback_loss += (lost - self.feedback_loss) / self.feedback_slots;
        }
        self.first_feedback.get_or_insert(now);
        self.last_feedback = Some((count, now));
    }

    /// The peer restarted: its feedback counts from zero again, and the jump is no loss.
    pub fn restart_feedback_count(&mut self) {
        self.last_feedback = self.last_feedback.map(|(_, at)| (u8::MAX, at));
    }

    /// The share of the peer's feedback lost on the way, smoothed (0 before any).
    pub fn feedback_loss(&self) -> f64 {
        self.feedback_loss
    }

    /// The share of what we send that the path itself delivers (1 before any
    /// feedback tells): of the packets reported on by feedbacks whose arrivals all met
    /// less than [`QUEUE_FREE`] of queue, the share received. Those losses are the
    /// path's own (random) loss; a queue's overflow comes with the queue, and does not
    /// count (the lab's 300 kbit/s link, entered at 1 Mbit/s, drops at a full queue).
    pub fn delivered_share(&self) -> f64 {
        let (received, lost) = self.path_delivered;
        if received + lost == 0 {
            1.0
        } else {
            received as f64 / (received + lost) as f64
        }
    }

    /// The path's own loss (1 less [`Self::delivered_share`]), once feedbacks without a
    /// queue have reported on [`MIN_PATH_REPORTED`] packets (`None` before).
    pub fn path_loss(&self) -> Option<f64> {
        let (received, lost) = self.path_delivered;
        (received + lost >= MIN_PATH_REPORTED).then(|| 1.0 - self.delivered_share())
    }

    /// How long since the last feedback came (`None` before any).
    pub fn silence(&self, now: Instant) -> Option<Duration> {
        self.last_feedback
            .map(|(_, at)| now.saturating_duration_since(at))
    }

    /// Whether the peer's feedback is lost at random on its way: [`LOSSY`] or more of it
    /// lost, and the path's own loss (`path_loss`) as high or not yet known. A queue
    /// that overflows drops feedback too, but there the path's own loss is low.
    pub fn lossy_return(&self) -> bool {
        self.feedback_loss >= LOSSY && self.path_loss().is_none_or(|l| l >= LOSSY)
    }

    /// Whether what we send is lost at random and known to be: the feedback as well as
    /// the path's own loss (`path_loss`, measured) [`LOSSY`] or more. Unlike
    /// [`Self::lossy_return`], a path whose loss is not yet known is not: early in a
    /// call a queue that overflows drops feedback before any path loss is measured.
    pub fn random_loss(&self) -> bool {
        self.feedback_loss >= LOSSY && self.path_loss().is_some_and(|l| l >= LOSSY)
    }

    /// Whether the newest packet of the last feedback that reported any received met
    /// a queue: [`QUEUE_FREE`] or more, beyond what jitter explains.
    pub fn queue_seen(&self) -> bool {
        self.forward_queue.is_some_and(|(_, q)| q >= QUEUE_FREE)
    }

    /// The newest packet of the last feedback that reported any received: when it was
    /// sent and the forward queue it met (`None` before any feedback reported one).
    pub fn forward_queue(&self) -> Option<(Instant, Duration)> {
        self.forward_queue
    }

    /// The rate acknowledgements of received bytes came at over the last
    /// [`ACK_RATE_WINDOW`], bit/s: what the window lets out while it is full.
    pub fn ack_rate(&self, now: Instant) -> u64 {
        let bytes: usize = self
            .acked
            .iter()
            .filter(|(at, _)| now.saturating_duration_since(*at) <= ACK_RATE_WINDOW)
            .map(|(_, len)| len)
            .sum();
        (bytes as f64 * 8.0 / ACK_RATE_WINDOW.as_secs_f64()) as u64
    }

    /// The rate what is acknowledged now was sent at: over [`ACK_RATE_WINDOW`], a
    /// feedback round trip ago (the least of the window's), bit/s. Acknowledgements
    /// that keep pace with it are a path that carries what is sent; far fewer, one
    /// that stopped carrying it (an application that sends less than the estimate
    /// allows sends and hears back alike).
    ///
    /// `None` until feedback has come for [`ACK_RATE_WINDOW`]: before, the window of
    /// acknowledgements holds the time before the first, and a call's start read as
    /// acknowledgements at a fifth of what was sent.
    pub fn sent_rate_a_round_trip_ago(&self, now: Instant) -> Option<u64> {
        let first = self.first_feedback?;
        if now.saturating_duration_since(first) < ACK_RATE_WINDOW {
            return None;
        }
        let rtt = self.base_rtts.iter().map(|(_, b)| *b).min()?;
        let end = now.checked_sub(rtt)?;
        let start = end.checked_sub(ACK_RATE_WINDOW)?;
        let bytes: usize = self
            .sends
            .iter()
            .filter(|(at, _)| (start..end).contains(at))
            .map(|(_, len)| len)
            .sum();
        Some((bytes as f64 * 8.0 / ACK_RATE_WINDOW.as_secs_f64()) as u64)
    }

    /// Lets packets older than [`MAX_AGE`] out of the window.
    pub fn expire(&mut self, now: Instant) {
        while let Some(p) = self
            .sent
            .front()
            .copied()
            .filter(|p| now.saturating_duration_since(p.at) >= MAX_AGE)
        {
            self.sent.pop_front();
            self.bytes -= p.len;
            self.counters.expired += 1;
        }
    }

    /// When the oldest packet in flight expires.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.sent.front().map(|p| p.at + MAX_AGE)
    }

    /// Bytes sent and not yet reported on.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The window at `rate_bps`: what that rate sends in a feedback round trip and
    /// [`WINDOW_MARGIN`]. The round trip is the least over the last [`RTT_MEMORY`] of
    /// each feedback's longest, less the forward queue that feedback reported: our own
    /// queue does not widen the window, and a reverse queue (acknowledgements late
    /// through no fault of ours) widens it only once it has stood a second. Right after
    /// a collapse of both directions, when the reverse queue grows fastest, the window
    /// stays as tight as before it (a window that followed the last round trip at
    /// once let a 2.5 → 0.5 Mbit/s drop lose 3.2 % after the warm-up against 1.7 %).
    /// `None` before any feedback (a peer that never sends it is never held).
    pub fn window(&self, rate_bps: u64) -> Option<usize> {
        let rtt = self.base_rtts.iter().map(|(_, b)| *b).min()?;
        let bytes = rate_bps as f64 / 8.0 * (rtt + WINDOW_MARGIN).as_secs_f64();
        Some((bytes as usize).max(MIN_WINDOW))
    }

    /// Whether the bytes in flight fill the window at `rate_bps` (`None`: no window).
    fn over(&self, rate_bps: Option<u64>) -> bool {
        rate_bps
            .and_then(|r| self.window(r))
            .is_some_and(|w| self.bytes >= w)
    }

    /// Whether the window at `rate_bps` is full, counting each closing; never while
    /// nothing shows the path `congested` (see `Session::hold_for_window`).
    pub fn is_full(&mut self, rate_bps: Option<u64>, congested: bool) -> bool {
        let full = congested && self.over(rate_bps);
        if full && !self.closed {
            self.counters.closed += 1;
        }
        self.closed = full;
        full
    }

    /// The counters.
    pub fn counters(&self) -> InFlightCounters {
        self.counters
    }
}

/// Drops the entries of `q` (oldest first) older than `memory` at `now`, keeping at
/// least `keep`.
fn forget_older<T>(q: &mut VecDeque<(Instant, T)>, now: Instant, memory: Duration, keep: usize) {
    while q.len() > keep
        && q.front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) > memory)
    {
        q.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_instant;
    use crate::types::Ssrc;

    const MS: Duration = Duration::from_millis(1);

    fn feedback(base_seq: u16, arrivals: Vec<Option<i64>>) -> TransportFeedback {
        TransportFeedback {
            sender: Ssrc(1),
            media: Ssrc(2),
            base_seq,
            reference: 0,
            count: 0,
            arrivals,
        }
    }

    #[test]
    fn feedback_takes_received_lost_and_unreported_packets_out_of_flight() {
        let t0 = test_instant();
        let mut f = InFlight::new();
        for i in 0..10u32 {
            assert_eq!(f.on_send(t0 + MS * i, 1000), i as u16);
        }
        assert_eq!(f.bytes(), 10_000);
        assert_eq!(f.window(1_000_000), None, "no window before any feedback");
        // Feedback on 2..=5 (0 and 1 were in a feedback that was lost): 3 lost. Each
        // came 25 ms after it left (the receiver's clock happens to match ours).
        let came = |i: i64| Some(i * 1000 + 25_000);
        assert!(f.on_feedback(
            t0 + MS * 60,
            &feedback(2, vec![came(2), None, came(4), came(5)])
        ));
        assert_eq!(f.bytes(), 4_000);
        let c = f.counters();
        assert_eq!((c.received, c.lost, c.unreported), (3, 1, 2));
        // The longest round trip of that feedback was packet 2's: 58 ms. At 1 Mbit/s the
        // window is (58 + 100) ms of it.
        assert_eq!(f.window(1_000_000), Some(19_750));
        // Feedback naming a packet never sent is refused and changes nothing.
        assert!(!f.on_feedback(t0 + MS * 70, &feedback(8, vec![Some(0); 3])));
        assert_eq!((f.bytes(), f.counters().refused), (4_000, 1));
        // A stale, reordered feedback moves nothing back.
        assert!(f.on_feedback(t0 + MS * 71, &feedback(0, vec![Some(0)])));
        assert_eq!(f.bytes(), 4_000);
    }

    #[test]
    fn the_paths_own_loss_is_what_feedbacks_without_a_queue_lost() {
        let t0 = test_instant();
        let mut f = InFlight::new();
        assert_eq!(f.delivered_share(), 1.0);
        // Ten packets a feedback, each arriving 25 ms after it left (and within 10 ms of
        // jitter), two of each ten lost: a random 20 %.
        let mut next = 0u16;
        let mut round = |f: &mut InFlight, at: u32| {
            let base = next;
            let arrivals = (0..10u32)
                .map(|i| {
                    let sent = f.on_send(t0 + MS * (at + i), 1000);
                    next = sent.wrapping_add(1);
                    let jitter = i64::from(i % 3) * 4_000;
                    ((i % 5) != 2).then_some(i64::from(at + i) * 1000 + 25_000 + jitter)
                })
                .collect();
            assert!(f.on_feedback(t0 + MS * (at + 60), &feedback(base, arrivals)));
        };
        for k in 0..4 {
            round(&mut f, 100 * k);
        }
        // 40 packets are too few to tell the path's loss by.
        assert_eq!(f.path_loss(), None);
        round(&mut f, 400);
        assert!((f.path_loss().unwrap() - 0.2).abs() < 1e-9);
        assert!(
            (f.delivered_share() - 0.8).abs() < 1e-9,
            "{}",
            f.delivered_share()
        );
        // A queue of 100 ms builds and overflows: half of each feedback lost, none of it
        // the path's own.
        let mut queued = 0;
        for k in 5..10 {
            let base = next;
            let arrivals = (0..10u32)
                .map(|i| {
                    let at = 100 * k + i;
                    next = f.on_send(t0 + MS * at, 1000).wrapping_add(1);
                    (i % 2 == 0).then_some(i64::from(at) * 1000 + 125_000)
                })
                .collect();
            assert!(f.on_feedback(t0 + MS * (100 * k + 160), &feedback(base, arrivals)));
            queued += 5;
        }
        assert_eq!(f.counters().lost, 10 + queued);
        assert!(
            (f.delivered_share() - 0.8).abs() < 1e-9,
            "{}",
            f.delivered_share()
        );
    }

    #[test]
    fn the_window_widens_with_the_reverse_queue_but_not_with_our_own() {
        let t0 = test_instant();
        let mut f = InFlight::new();
        // Packet 0 crosses an empty path: 25 ms each way, the feedback 25 ms back.
        f.on_send(t0, 1000);
        f.on_feedback(t0 + MS * 50, &feedback(0, vec![Some(25_000)]));
        assert_eq!(
            f.window(8_000_000),
            Some(150_000),
            "(50 + 100) ms at 1 MB/s"
        );
        // Packet 1 waits 200 ms in the forward queue: its round trip is 250 ms, but
        // the window stays what the path takes without our queue.
        f.on_send(t0 + MS * 100, 1000);
        f.on_feedback(t0 + MS * 350, &feedback(1, vec![Some(325_000)]));
        assert_eq!(f.window(8_000_000), Some(150_000));
        // Packet 2 crosses at once, but its feedback waits 200 ms in the reverse queue:
        // acknowledgements are late through no fault of ours. The window widens once
        // the reverse queue has stood a second, not at the first sign of it (a sudden
        // collapse fills both directions' queues at once).
        f.on_send(t0 + MS * 400, 1000);
        f.on_feedback(t0 + MS * 650, &feedback(2, vec![Some(425_000)]));
        assert_eq!(f.window(8_000_000), Some(150_000));
        f.on_send(t0 + MS * 1700, 1000);
        f.on_feedback(t0 + MS * 1950, &feedback(3, vec![Some(1_725_000)]));
        assert_eq!(f.window(8_000_000), Some(350_000));
        // Only packet 3's acknowledgement came within the last 250 ms.
        assert_eq!(f.ack_rate(t0 + MS * 1950), 1000 * 8 * 4);
    }

    #[test]
    fn the_forward_queue_is_the_newest_received_packets() {
        let t0 = test_instant();
        let mut f = InFlight::new();
        assert_eq!(f.forward_queue(), None);
        assert!(!f.queue_seen());
        // Packets 0 and 1 cross an empty path in 25 ms; 2 was lost.
        for i in 0..3u32 {
            f.on_send(t0 + MS * (10 * i), 1000);
        }
        f.on_feedback(
            t0 + MS * 60,
            &feedback(0, vec![Some(25_000), Some(35_000), None]),
        );
        assert_eq!(f.forward_queue(), Some((t0 + MS * 10, Duration::ZERO)));
        assert!(!f.queue_seen(), "no queue");
        // Packets 3, 4 and 5 wait 120, 60 and 90 ms in the forward queue: the newest
        // packet's is the queue now, neither the longest nor the shortest.
        f.on_send(t0 + MS * 100, 1000);
        f.on_send(t0 + MS * 110, 1000);
        f.on_send(t0 + MS * 120, 1000);
        f.on_feedback(
            t0 + MS * 300,
            &feedback(3, vec![Some(245_000), Some(195_000), Some(235_000)]),
        );
        assert_eq!(f.forward_queue(), Some((t0 + MS * 120, MS * 90)));
        assert!(f.queue_seen(), "90 ms is a queue");
        // A feedback that reports nothing received leaves it.
        f.on_send(t0 + MS * 310, 1000);
        f.on_feedback(t0 + MS * 400, &feedback(6, vec![None]));
        assert_eq!(f.forward_queue(), Some((t0 + MS * 120, MS * 90)));
        // A packet that crossed with 30 ms of jitter (under [`QUEUE_FREE`]) met none.
        f.on_send(t0 + MS * 410, 1000);
        f.on_feedback(t0 + MS * 500, &feedback(7, vec![Some(465_000)]));
        assert_eq!(f.forward_queue(), Some((t0 + MS * 410, MS * 30)));
        assert!(!f.queue_seen());
    }

    #[test]
    fn a_return_is_lossy_when_feedback_and_the_path_both_lose_at_random() {
        let t0 = test_instant();
        let mut f = InFlight::new();
        assert!(!f.lossy_return(), "nothing known");
        // Feedbacks of five packets each, every other feedback lost on the way; the
        // packets cross in 25 ms, with no queue, one in five lost when `lose`.
        let (mut count, mut at) = (0u8, 0u32);
        let mut round = |f: &mut InFlight, lose: bool| {
            let base = f.next_seq as u16;
            let arrivals = (0..5u32)
                .map(|i| {
                    f.on_send(t0 + MS * (at + i), 1000);
                    (!lose || i != 2).then_some(i64::from(at + i) * 1000 + 25_000)
                })
                .collect();
            let mut fb = feedback(base, arrivals);
            count = count.wrapping_add(2);
            fb.count = count;
            assert!(f.on_feedback(t0 + MS * (at + 40), &fb));
            at += 100;
        };
        // Before the path's loss is known, lost feedback is taken as random.
        for _ in 0..4 {
            round(&mut f, false);
        }
        assert!(f.feedback_loss() >= LOSSY && f.path_loss().is_none());
        assert!(f.lossy_return());
        assert!(!f.random_loss(), "the path's loss is not yet known");
        // A path that delivers all we send: the feedback lost is not random loss (a
        // queue on the way back drops it too), and bytes in flight stay the signal.
        for _ in 0..20 {
            round(&mut f, false);
        }
        assert_eq!(f.path_loss(), Some(0.0));
        assert!(!f.lossy_return() && !f.random_loss());
        // The path loses one in five of ours without a queue: now it is.
        for _ in 0..40 {
            round(&mut f, true);
        }
        assert!(f.path_loss().unwrap() >= LOSSY);
        assert!(f.lossy_return() && f.random_loss());
    }

    #[test]
    fn lost_feedback_shows_in_its_count_and_silence_in_its_time() {
        let t0 = test_instant();
        let mut f = InFlight::new();
        assert_eq!((f.feedback_loss(), f.silence(t0)), (0.0, None));
        let counted = |f: &mut InFlight, count: u8, at: Duration| {
            f.on_send(t0 + at - MS * 30, 1000);
            let base = (f.next_seq - 1) as u16;
            let mut fb = feedback(base, vec![Some(0)]);
            fb.count = count;
            assert!(f.on_feedback(t0 + at, &fb));
        };
        // Every feedback comes (the count runs on across its wrap): nothing lost.
        for i in 0..100u32 {
            counted(&mut f, (i + 200) as u8, MS * (50 * (i + 1)));
        }
        assert!(f.feedback_loss() < 0.001, "{}", f.feedback_loss());
        let last = MS * 5000;
        assert_eq!(f.silence(t0 + last + MS * 70), Some(MS * 70));
        // Then one in two is lost: the share climbs toward a half.
        let mut count = (99 + 200) as u8;
        for i in 0..150u32 {
            count = count.wrapping_add(2);
            counted(&mut f, count, last + MS * (100 * (i + 1)));
        }
        assert!(
            (0.45..0.5).contains(&f.feedback_loss()),
            "{}",
            f.feedback_loss()
        );
        // A count that jumps back (reordered) or far ahead is no loss.
        let before = f.feedback_loss();
        counted(&mut f, count.wrapping_sub(5), last + MS * 15_100);
        counted(&mut f, count.wrapping_add(100), last + MS * 15_150);
        assert!(f.feedback_loss() < before);
        // A restarted peer counts from zero (here from 230): no loss either, and the
        // silence runs on from its last feedback.
        counted(&mut f, 230, last + MS * 15_180);
        let before = f.feedback_loss();
        f.restart_feedback_count();
        assert_eq!(f.silence(t0 + last + MS * 15_200), Some(MS * 20));
        counted(&mut f, 0, last + MS * 15_200);
        assert!(f.feedback_loss() < before);
    }

    #[test]
    fn the_feedbacks_first_loss_is_the_plain_share_lost() {
        let t0 = test_instant();
        let mut f = InFlight::new();
        let mut count = 0u8;
        // A second into a call, one feedback in five lost: the share is the plain
        // share at once, not a smoothing's slow climb from zero (which read 0.07
        // there, and took a 230 ms silence at 20 % loss for a collapse).
        for i in 0..16u32 {
            count = count.wrapping_add(if i % 4 == 3 { 2 } else { 1 });
            f.on_send(t0 + MS * (50 * i), 1000);
            let mut fb = feedback((f.next_seq - 1) as u16, vec![Some(0)]);
            fb.count = count;
            assert!(f.on_feedback(t0 + MS * (50 * i + 30), &fb));
        }
        // 16 came and 4 were missed between them.
        assert!(
            (f.feedback_loss() - 0.2).abs() < 1e-9,
            "{}",
            f.feedback_loss()
        );
    }

    #[test]
    fn the_rate_sent_a_round_trip_ago_waits_for_a_window_of_acknowledgements() {
        let t0 = test_instant();
        let mut f = InFlight::new();
        for i in 0..40u32 {
            f.on_send(t0 + MS * (10 * i), 1250);
        }
        // The first feedback at 60 ms: acknowledgements have come for less than their
        // window, so what they come at against what was sent says nothing yet.
        f.on_feedback(t0 + MS * 60, &feedback(0, vec![Some(25_000); 4]));
        assert_eq!(f.sent_rate_a_round_trip_ago(t0 + MS * 300), None);
        // From 250 ms of feedback on, it is what left over 250 ms a round trip before.
        let rate = f.sent_rate_a_round_trip_ago(t0 + MS * 310);
        assert_eq!(rate, Some(1_000_000));
    }

    #[test]
    fn the_window_closes_when_acknowledgements_stop_and_opens_by_age() {
        let t0 = test_instant();
        let mut f = InFlight::new();
        f.on_send(t0, 1000);
        f.on_feedback(t0 + MS * 50, &feedback(0, vec![Some(0)]));
        // 500 kbit/s for (50 + 100) ms: 9,375 bytes.
        let rate = Some(500_000);
        let mut sent = 0;
        while !f.is_full(rate, true) {
            f.on_send(t0 + MS * 60, 1200);
            sent += 1;
        }
        assert_eq!(sent, 8);
        assert_eq!(f.counters().closed, 1);
        // Over the window, but nothing shows a congested path: not full, and no
        // closing counted.
        assert!(f.over(rate));
        assert!(!f.is_full(rate, false));
        assert!(f.is_full(rate, true));
        assert_eq!(f.counters().closed, 2);
        assert_eq!(f.next_expiry(), Some(t0 + MS * 60 + MAX_AGE));
        f.expire(t0 + MS * 60 + MAX_AGE);
        assert!(!f.is_full(rate, true));
        assert_eq!(f.counters().expired, 8);
        // No estimate, no window.
        for _ in 0..100 {
            f.on_send(t0 + MS * 1100, 1200);
        }
        assert!(!f.is_full(None, true));
    }

    #[test]
    fn sequence_numbers_unwrap_across_sixty_five_thousand() {
        let t0 = test_instant();
        let mut f = InFlight::new();
        for _ in 0..70_000u32 {
            f.on_send(t0, 100);
        }
        f.expire(t0 + MAX_AGE);
        assert_eq!(f.bytes(), 0);
        let wire = f.on_send(t0 + MAX_AGE, 100);
        assert_eq!(wire, (70_000u32 % 65_536) as u16);
        assert!(f.on_feedback(t0 + MAX_AGE + MS * 40, &feedback(wire, vec![Some(0)])));
        assert_eq!((f.bytes(), f.counters().received), (0, 1));
    }
}
