//! Delay-based congestion control, receiver side (GCC, draft-ietf-rmcat-gcc-02 §5):
//! packets are grouped by their send time, each group's one-way delay variation feeds
//! the [`Trendline`] estimator and its overuse detector, and the [`Aimd`] controller turns
//! the signal and the incoming rate into an estimate, which goes back to the sender in
//! RTCP REMB. The sender takes the lower of it and its loss-based target.
//!
//! The delay is timed on every packet the peer sends when it stamps each with its send
//! time as it leaves (the abs-send-time extension, asked for in the agreement): video,
//! retransmissions and FEC as well as audio, so a queue shows within a few packets.
//! A peer that does not is probed with its audio: each packet's send time is its capture
//! time (the abs-capture-time extension), as audio leaves unpaced a fixed framing delay
//! after capture, 50 times a second, through the same bottleneck queue as the video. The rate
//! is of everything the peer sends (audio, video, retransmissions, FEC, redundancy): the
//! sender holds all of it to the estimate (`send::budget`).
//!
//! The sender probes for more (`send::probe`): short bursts of padding above the
//! estimate, each stamped with its send time; [`ProbeEstimator`] times them, and a
//! cluster that got through faster than the estimate sets it (libwebrtc's
//! `SetEstimate`), reported at once.

pub mod aimd;
pub mod probe;
pub mod send_time;
pub mod trendline;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tracing::debug;

pub use self::aimd::{Aimd, AimdCounters, RateState};
pub use self::probe::{ProbeCounters, ProbeEstimator};
pub use self::send_time::SendTimes;
pub use self::trendline::{Trendline, Usage};

/// Packets sent within this of a group's first belong to it (libwebrtc's burst time).
const GROUP_SPAN: Duration = Duration::from_millis(5);
/// The incoming rate is measured over this window.
const RATE_WINDOW: Duration = Duration::from_millis(500);
/// The first incoming rate (and estimate) comes after this much of the window: a call
/// that starts above the path's capacity fills a 200 ms queue in well under 100 ms, and
/// every packet beyond is lost until the sender hears the estimate.
const FIRST_RATE: Duration = Duration::from_millis(200);
/// A drop of the estimate by this fraction is reported at once, not at the next report.
pub(crate) const URGENT_DROP: f64 = 0.03;
/// A standing queue beyond this is overuse even when the delay no longer grows: a full
/// drop-tail queue holds the delay flat at its length, which GCC's gradient alone reads
/// as "normal" while the queue drops packets.
const STANDING_QUEUE: Duration = Duration::from_millis(40);
/// A rising delay with less than this standing queue is not overuse: it is the queue
/// one large frame makes on its way through, or jitter. Over a path with 10 ms of jitter
/// the 20-point trend crosses GCC's least threshold (6 ms) on noise alone, and this
/// encoder's frames (0.5-30 kB) each fill a 1 Mbit/s link for up to a quarter second.
const MIN_QUEUE: Duration = Duration::from_millis(20);
/// The standing queue is the least queueing delay over this last stretch (CoDel's
/// distinction, RFC 8289: a queue that empties within an interval is a passing burst; the
/// least delay over the interval is what stands). A large frame's queue drains before the
/// next large one, so its least is near zero, while one that never drains shows whole;
/// jitter only adds delay, so the least also leaves it out. The stretch covers a few
/// frames (30 fps); longer ones held more queue before a drop was seen (see the README).
const STANDING_WINDOW: Duration = Duration::from_millis(150);
/// While a queue stands, the rate a cut keeps a share of is what arrived over this
/// last stretch (see [`DelayBasedBwe::rate_for_control`]).
const BUSY_WINDOW: Duration = Duration::from_millis(150);

/// The incoming link's collapse (see [`DelayBasedBwe::take_collapse`]) is read over the
/// packets timed within this last stretch: at 500 kbit/s some four video packets and
/// four of audio.
const COLLAPSE_WINDOW: Duration = Duration::from_millis(80);
/// The fewest packets a collapse is read from: on a slower link the stretch is as long
/// as they take.
const COLLAPSE_PACKETS: usize = 4;
/// Every packet of the stretch met at least this much queue: the link was busy
/// throughout (10 ms of jitter alone spreads one-way delays by some 20 ms).
const COLLAPSE_QUEUE_MS: f64 = 30.0;
/// ... and the queue grew by at least this much over it: what arrives is not a queue
/// that stands at the link's rate but one filling.
const COLLAPSE_GROWTH_MS: f64 = 30.0;
/// ... while what arrived came at under this share of what the link carried: the
/// estimate, and no more than what arrived over the last half second. A busy link that
/// did not change delivers at its rate, which neither exceeds; the lab's 2.5 → 0.5
/// Mbit/s step arrived at 20-30 % of it. (Against the estimate alone, a probe's result
/// above the link, 6.7 Mbit/s a second into a call on the 2.5 Mbit/s one, read the next
/// large frames' queues as collapses in 2 calls of 8.)
const COLLAPSE_SHARE: f64 = 0.35;

/// A group of packets with (nearly) one send time.
#[derive(Debug, Clone, Copy)]
struct Group {
    send: Instant,
    first_arrival: Instant,
}

/// What the estimator saw and did, for the session's stats.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DelayBweStats {
    /// The estimate, bit/s (0 before the first).
    pub estimate_bps: u64,
    /// The rate arriving, bit/s.
    pub incoming_bps: u64,
    /// Groups measured.
    pub groups: u64,
    /// Groups after which the detector said overuse, normal, underuse.
    pub overuse: u64,
    /// See `overuse`.
    pub normal: u64,
    /// See `overuse`.
    pub underuse: u64,
    /// Groups signalled as overuse because the queueing delay stood above
    /// `STANDING_QUEUE` (a full queue the gradient cannot see).
    #[serde(default)]
    pub standing_queue: u64,
    /// Groups the gradient called overuse with less than `MIN_QUEUE` queued: taken as
    /// normal.
    #[serde(default)]
    pub overuse_without_queue: u64,
    /// Times the incoming link was seen to collapse (see
    /// [`DelayBasedBwe::take_collapse`]).
    #[serde(default)]
    pub incoming_collapses: u64,
    /// The controller's cuts and increases.
    pub rate: AimdCounters,
    /// The last scaled delay trend and the threshold it is held to, ms.
    pub trend_ms: f64,
    /// See `trend_ms`.
    pub threshold_ms: f64,
    /// Estimates sent back (REMB).
    pub reports_sent: u64,
    /// The sender's probe clusters measured.
    #[serde(default)]
    pub probe: ProbeCounters,
    /// Probe results that raised the estimate.
    #[serde(default)]
    pub probe_raises: u64,
    /// Probe results above the estimate left unused: they came while a queue stood.
    #[serde(default)]
    pub probe_ignored: u64,
}

/// The receiver's delay-based estimator.
#[derive(Debug, Clone)]
pub struct DelayBasedBwe {
    trendline: Trendline,
    aimd: Aimd,
    group: Option<Group>,
    previous: Option<Group>,
    first_arrival: Option<Instant>,
    /// (arrival, bytes) within the rate window.
    arrivals: VecDeque<(Instant, usize)>,
    window_bytes: usize,
    /// The estimate last sent, to spot a drop worth an immediate report.
    sent: Option<u64>,
    /// The least one-way delay seen (arrival minus send time, clock offset included).
    base_delay: Option<Duration>,
    /// The excesses over it (arrival, ms) that may yet be the least within
    /// [`STANDING_WINDOW`]: each is less than every later one, so the front is the least
    /// (a monotonic queue), the standing queue.
    queue_window: VecDeque<(Instant, f64)>,
    /// (arrival, queueing delay in ms) of the packets timed over the last
    /// [`COLLAPSE_WINDOW`], and at least the last [`COLLAPSE_PACKETS`].
    recent: VecDeque<(Instant, f64)>,
    /// The share of what it carried that the incoming link delivers, when it collapsed
    /// and the session has not yet taken it.
    collapse: Option<f64>,
    /// Whether a collapse may be told: not again until a packet met less queue than
    /// [`COLLAPSE_QUEUE_MS`].
    collapse_armed: bool,
    probe: ProbeEstimator,
    /// A probe raised the estimate since the last report: report it at once.
    probe_raised: bool,
    stats: DelayBweStats,
}

impl DelayBasedBwe {
    /// An estimator bounded to `[min_bps, max_bps]`.
    pub fn new(min_bps: u64, max_bps: u64) -> Self {
        Self {
            trendline: Trendline::default(),
            aimd: Aimd::new(min_bps, max_bps),
            group: None,
            previous: None,
            first_arrival: None,
            arrivals: VecDeque::new(),
            window_bytes: 0,
            sent: None,
            base_delay: None,
            queue_window: VecDeque::new(),
            recent: VecDeque::new(),
            collapse: None,
            collapse_armed: true,
            probe: ProbeEstimator::default(),
            probe_raised: false,
            stats: DelayBweStats::default(),
        }
    }

    /// A packet arrived at `now`: `bytes` count in the incoming rate (0 for one that is
    /// not part of the estimated stream), and `send`, its send time when it has a usable
    /// one, feeds the delay gradient. (The sender's probes come through
    /// [`Self::on_probe`].)
    pub fn on_packet(&mut self, now: Instant, send: Option<Instant>, bytes: usize, rtt: Duration) {
        self.probe.on_other(now, bytes);
        self.count_arrival(now, bytes);
        let Some(send) = send else {
            return;
        };
        self.on_send_time(now, send, rtt);
        self.check_collapse(now);
    }

    /// `bytes` arrived at `now`: the incoming rate.
    fn count_arrival(&mut self, now: Instant, bytes: usize) {
        self.first_arrival.get_or_insert(now);
        if bytes > 0 {
            self.arrivals.push_back((now, bytes));
            self.window_bytes += bytes;
        }
        while let Some(&(at, b)) = self.arrivals.front() {
            if now.saturating_duration_since(at) < RATE_WINDOW {
                break;
            }
            self.arrivals.pop_front();
            self.window_bytes -= b;
        }
    }

    /// The peer's clock changed (a new agreement replaced its streams: it restarted):
    /// the delays timed so far are on the old one. The least delay, the groups and the
    /// standing queue start again; the estimate and the incoming rate are kept. (Were
    /// the least delay kept across a clock that went back, every later packet would
    /// look queued and cut the estimate for good.)
    pub fn restart_timing(&mut self) {
        self.base_delay = None;
        self.queue_window.clear();
        self.recent.clear();
        self.group = None;
        self.previous = None;
    }

    /// The one-way delay of a packet sent at `send` that arrived at `now`, over the least
    /// seen: its queueing delay, and the least of those over [`STANDING_WINDOW`].
    fn sample_queue(&mut self, now: Instant, send: Instant) {
        // A send time after the arrival is a clock offset; it cancels in the excess.
        let delay = now.saturating_duration_since(send);
        let base = *self.base_delay.get_or_insert(delay);
        let base = base.min(delay);
        self.base_delay = Some(base);
        let excess = (delay - base).as_secs_f64() * 1e3;
        while self.queue_window.back().is_some_and(|&(_, e)| e >= excess) {
            self.queue_window.pop_back();
        }
        self.queue_window.push_back((now, excess));
        self.recent.push_back((now, excess));
        while self
            .queue_window
            .front()
            .is_some_and(|&(at, _)| now.saturating_duration_since(at) > STANDING_WINDOW)
        {
            self.queue_window.pop_front();
        }
    }

    /// Whether the incoming link collapsed, after the packet just timed at `now`: over
    /// the last [`COLLAPSE_WINDOW`] (and [`COLLAPSE_PACKETS`]) every packet met a queue,
    /// the queue grew, and what arrived (from the second packet on: the spacing of
    /// packets out of a busy link is its rate) came at under [`COLLAPSE_SHARE`] of what
    /// the link carried. Told once, until a packet meets no such queue.
    fn check_collapse(&mut self, now: Instant) {
        while self.recent.len() > COLLAPSE_PACKETS
            && self
                .recent
                .front()
                .is_some_and(|&(at, _)| now.saturating_duration_since(at) > COLLAPSE_WINDOW)
        {
            self.recent.pop_front();
        }
        let Some(&(_, excess)) = self.recent.back() else {
            return;
        };
        if excess < COLLAPSE_QUEUE_MS {
            self.collapse_armed = true;
            return;
        }
        // What the link carried: the estimate, and no more than what came over the last
        // half second.
        let (Some(estimate), Some(average)) = (self.estimate_bps(), self.incoming_bps(now)) else {
            return;
        };
        let carried = (estimate as f64).min(average);
        let Some(&(first, first_excess)) = self.recent.front() else {
            return;
        };
        let span = now.saturating_duration_since(first).as_secs_f64();
        if !self.collapse_armed
            || self.recent.len() < COLLAPSE_PACKETS
            || span <= 0.0
            || excess - first_excess < COLLAPSE_GROWTH_MS
            || self.recent.iter().any(|&(_, e)| e < COLLAPSE_QUEUE_MS)
        {
            return;
        }
        // Everything that came through the link, probes and packets without a send
        // time too (the peer's probes fill it at the start of a call).
        let delivered: usize = self
            .arrivals
            .iter()
            .rev()
            .take_while(|&&(at, _)| at > first)
            .map(|&(_, b)| b)
            .sum();
        let rate = delivered as f64 * 8.0 / span;
        let share = rate / carried;
        if share >= COLLAPSE_SHARE {
            return;
        }
        debug!(
            rate,
            estimate,
            average,
            share,
            queue_ms = excess,
            packets = self.recent.len(),
            "the incoming link collapsed"
        );
        self.collapse_armed = false;
        self.collapse = Some(share);
        self.stats.incoming_collapses += 1;
    }

    /// The share of what it carried that the incoming link delivers, once, when it
    /// collapsed since the last call (see `check_collapse`): a queue filling at several
    /// times its rate, as when the link's capacity falls to a fraction. The estimate
    /// goes on as GCC's (the peer hears a cut only through the queue it is filling, so
    /// cutting it sooner bought nothing on the lab's drop); the session takes the
    /// collapse as one of its own way out too (see `Session::on_incoming_collapse`).
    pub fn take_collapse(&mut self) -> Option<f64> {
        self.collapse.take()
    }

    /// Whether a queue stands on the way ([`MIN_QUEUE`] or more over the last
    /// [`STANDING_WINDOW`]): the path is at its capacity.
    pub fn queue_stands(&self) -> bool {
        self.queue_ms() >= MIN_QUEUE.as_secs_f64() * 1e3
    }

    /// The standing queue, ms: the least queueing delay over [`STANDING_WINDOW`] up to
    /// the last packet timed (0 before the first).
    fn queue_ms(&self) -> f64 {
        self.queue_window.front().map_or(0.0, |&(_, e)| e)
    }

    /// A packet sent at `send` arrived at `now`: the queue and the delay gradient.
    fn on_send_time(&mut self, now: Instant, send: Instant, rtt: Duration) {
        self.sample_queue(now, send);
        match self.group {
            None => {
                self.group = Some(Group {
                    send,
                    first_arrival: now,
                });
            }
            // Older than the group (reordered or a late packet of an earlier one).
            Some(g) if send < g.send => {}
            Some(g) if send <= g.send + GROUP_SPAN => {}
            Some(g) => {
                if let Some(p) = self.previous {
                    self.on_group(now, p, g, rtt);
                }
                self.previous = Some(g);
                self.group = Some(Group {
                    send,
                    first_arrival: now,
                });
            }
        }
    }

    /// A probe packet of `cluster` sent at `send` and `bytes` long arrived at `now`
    /// (see [`ProbeEstimator`]): it counts in the incoming rate, and when its cluster's
    /// rate is above the estimate (or there is none yet) and no queue stands, the
    /// estimate jumps to it (libwebrtc's `SetEstimate`) and is reported at once.
    pub fn on_probe(&mut self, now: Instant, cluster: u32, send: Instant, bytes: usize) {
        self.count_arrival(now, bytes);
        let Some(rate) = self.probe.on_packet(now, cluster, send, bytes) else {
            return;
        };
        if self.estimate_bps().is_some_and(|e| rate <= e) {
            return;
        }
        // Not while the path is overused (libwebrtc applies a probe only then): a queue
        // is standing, and the burst measured the link it fills, not room beside it.
        if self.aimd.state() == RateState::Decrease
            || self.queue_ms() > MIN_QUEUE.as_secs_f64() * 1e3
        {
            self.stats.probe_ignored += 1;
            return;
        }
        let set = self.aimd.set_estimate(rate);
        debug!(rate, set, cluster, "probe raised the estimate");
        self.stats.estimate_bps = set;
        self.stats.probe_raises += 1;
        self.probe_raised = true;
    }

    fn on_group(&mut self, now: Instant, previous: Group, group: Group, rtt: Duration) {
        let send_delta = group.send - previous.send;
        let arrival_delta = group
            .first_arrival
            .saturating_duration_since(previous.first_arrival);
        let since = group
            .first_arrival
            .saturating_duration_since(self.first_arrival.unwrap_or(group.first_arrival));
        let mut usage = self.trendline.update(send_delta, arrival_delta, since);
        if self.queue_ms() > STANDING_QUEUE.as_secs_f64() * 1e3 && usage != Usage::Underuse {
            usage = Usage::Overuse;
            self.stats.standing_queue += 1;
        } else if usage == Usage::Overuse && self.queue_ms() < MIN_QUEUE.as_secs_f64() * 1e3 {
            usage = Usage::Normal;
            self.stats.overuse_without_queue += 1;
        }
        self.stats.groups += 1;
        match usage {
            Usage::Overuse => self.stats.overuse += 1,
            Usage::Normal => self.stats.normal += 1,
            Usage::Underuse => self.stats.underuse += 1,
        }
        let incoming = self.rate_for_control(now);
        let queue = Duration::from_secs_f64(self.queue_ms().max(0.0) / 1e3);
        let decreases = self.aimd.counters().decreases;
        if let Some(rate) = self.aimd.update(now, usage, incoming, queue, rtt) {
            self.stats.estimate_bps = rate;
            if self.aimd.counters().decreases > decreases {
                debug!(
                    rate,
                    incoming,
                    queue_ms = self.queue_ms(),
                    trend = self.trendline.trend(),
                    threshold = self.trendline.threshold(),
                    "delay-based cut"
                );
            }
        }
    }

    /// The rate arriving, once [`FIRST_RATE`] of arrivals has been seen (over what was
    /// seen until the window is full).
    fn incoming_bps(&self, now: Instant) -> Option<f64> {
        let seen = now.saturating_duration_since(self.first_arrival?);
        (seen >= FIRST_RATE)
            .then(|| self.window_bytes as f64 * 8.0 / seen.min(RATE_WINDOW).as_secs_f64())
    }

    /// The incoming rate the controller works from. While a queue stands
    /// ([`MIN_QUEUE`] or more), the bottleneck is busy and what arrived over the last
    /// [`BUSY_WINDOW`] is its capacity (libwebrtc's acknowledged-rate estimator measures
    /// 150 ms windows too). The 500 ms average is not: after a drop from 2.5 Mbit/s to
    /// 500 kbit/s it still holds the faster link, so the first cut kept far more than
    /// the link carries; and on a 1 Mbit/s link a large frame's queue came with
    /// 750-800 kbit/s averaged over the quieter frames around it, so each cut left the
    /// call at 600 kbit/s, to climb back by a packet per round trip.
    fn rate_for_control(&self, now: Instant) -> Option<f64> {
        let average = self.incoming_bps(now)?;
        if self.queue_ms() < MIN_QUEUE.as_secs_f64() * 1e3 {
            return Some(average);
        }
        let since = now.checked_sub(BUSY_WINDOW)?;
        if self.first_arrival.is_none_or(|first| first > since) {
            return Some(average);
        }
        let bytes: usize = self
            .arrivals
            .iter()
            .rev()
            .take_while(|(at, _)| *at > since)
            .map(|(_, b)| b)
            .sum();
        Some(bytes as f64 * 8.0 / BUSY_WINDOW.as_secs_f64())
    }

    /// The estimate, once there is one.
    pub fn estimate_bps(&self) -> Option<u64> {
        self.aimd.rate_bps()
    }

    /// Whether to report the estimate now rather than with the next report: the first
    /// one, one that fell enough since the last, and one a probe raised enough.
    pub fn report_urgent(&self) -> bool {
        match (self.estimate_bps(), self.sent) {
            (Some(now), Some(sent)) => {
                let now = now as f64;
                now < sent as f64 * (1.0 - URGENT_DROP)
                    || (self.probe_raised && now > sent as f64 * (1.0 + URGENT_DROP))
            }
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    /// The estimate to report, marked as sent.
    pub fn take_report(&mut self) -> Option<u64> {
        let estimate = self.estimate_bps()?;
        self.sent = Some(estimate);
        self.probe_raised = false;
        self.stats.reports_sent += 1;
        Some(estimate)
    }

    /// What it saw and did.
    pub fn stats(&self) -> DelayBweStats {
        let last = self.arrivals.back().map(|(at, _)| *at);
        DelayBweStats {
            incoming_bps: last.and_then(|t| self.incoming_bps(t)).unwrap_or(0.0) as u64,
            rate: self.aimd.counters(),
            probe: self.probe.counters(),
            trend_ms: self.trendline.trend(),
            threshold_ms: self.trendline.threshold(),
            ..self.stats
        }
    }

    /// The controller's state.
    pub fn state(&self) -> RateState {
        self.aimd.state()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_instant;

    const RTT: Duration = Duration::from_millis(50);
    const FRAME: Duration = Duration::from_millis(33);

    #[test]
    fn a_peer_clock_that_went_back_is_no_queue_once_timing_restarts() {
        let t0 = test_instant() + Duration::from_secs(20);
        let feed = |bwe: &mut DelayBasedBwe, from: Duration, clock_back: Duration| {
            for i in 0..50u32 {
                let at = from + Duration::from_millis(20) * i;
                bwe.on_packet(
                    t0 + at + Duration::from_millis(30),
                    Some(t0 + at - clock_back),
                    200,
                    RTT,
                );
            }
        };
        let mut bwe = DelayBasedBwe::new(50_000, 10_000_000);
        feed(&mut bwe, Duration::ZERO, Duration::ZERO);
        assert!(bwe.queue_ms() < 1.0);
        // The peer restarts with a clock 5 s behind: the same path, no queue.
        bwe.restart_timing();
        feed(&mut bwe, Duration::from_secs(1), Duration::from_secs(5));
        assert!(bwe.queue_ms() < 1.0, "{}", bwe.queue_ms());
        // Not restarted, the same packets would read as 5 s of queue.
        let mut kept = DelayBasedBwe::new(50_000, 10_000_000);
        feed(&mut kept, Duration::ZERO, Duration::ZERO);
        feed(&mut kept, Duration::from_secs(1), Duration::from_secs(5));
        assert!(kept.queue_ms() > 4000.0, "{}", kept.queue_ms());
    }

    /// The standing queue the estimator reads when packets sent every `every` meet
    /// `queue_at` (ms of queueing at a time since the start, ms), for `secs`.
    fn standing_queue(every: Duration, secs: u64, queue_at: impl Fn(f64) -> f64) -> Vec<f64> {
        let t0 = test_instant();
        let mut bwe = DelayBasedBwe::new(50_000, 10_000_000);
        let mut seen = Vec::new();
        let mut at = Duration::ZERO;
        while at < Duration::from_secs(secs) {
            let queue = queue_at(at.as_secs_f64() * 1e3);
            let arrival =
                t0 + at + Duration::from_millis(20) + Duration::from_secs_f64(queue / 1e3);
            bwe.on_packet(arrival, Some(t0 + at), 200, RTT);
            seen.push(bwe.queue_ms());
            at += every;
        }
        seen
    }

    /// A large frame every 300 ms: its queue climbs to `peak` ms over 30 ms as it
    /// arrives and drains at 0.8 ms a ms (packets arrive in order); the link is idle the
    /// rest of the time.
    fn frame_queue(peak: f64) -> impl Fn(f64) -> f64 {
        move |ms| match ms % 300.0 {
            t if t < 100.0 => 0.0,
            t if t < 130.0 => peak * (t - 100.0) / 30.0,
            t => (peak - 0.8 * (t - 130.0)).max(0.0),
        }
    }

    #[test]
    fn a_frame_passing_through_is_no_standing_queue_but_a_queue_that_stays_is() {
        // Timed by audio (a packet every 20 ms) or by every packet of a call (every 2 ms):
        // 80 ms peaks never stand. (Smoothed over 190 ms, as the queue was, they read
        // up to 35 ms, over the 20 ms that lets the gradient cut.)
        for every in [Duration::from_millis(20), Duration::from_millis(2)] {
            let seen = standing_queue(every, 3, frame_queue(80.0));
            let most = seen.iter().copied().fold(0.0, f64::max);
            assert!(most < 1.0, "{every:?}: {most} ms");
            // The same frames, and after a second 45 ms more that never drains: that
            // stands, whole, once the window has passed.
            let frames = frame_queue(80.0);
            let seen = standing_queue(every, 3, |ms| {
                frames(ms) + if ms < 1000.0 { 0.0 } else { 45.0 }
            });
            let late = &seen[seen.len() * 2 / 3..];
            let least = late.iter().copied().fold(f64::MAX, f64::min);
            assert!(
                least > STANDING_QUEUE.as_secs_f64() * 1e3,
                "{every:?}: {least} ms"
            );
        }
    }

    #[test]
    fn a_queue_stands_once_it_has_not_drained_for_the_window() {
        // 300 ms of a path without a queue, then one of 30 ms that stays.
        let t0 = test_instant();
        let mut bwe = DelayBasedBwe::new(50_000, 10_000_000);
        for ms in (0..600u64).step_by(5) {
            let queue = if ms < 300 { 0 } else { 30 };
            let arrival = t0 + Duration::from_millis(ms + 20 + queue);
            bwe.on_packet(arrival, Some(t0 + Duration::from_millis(ms)), 200, RTT);
            match ms {
                ..300 => assert!(!bwe.queue_stands(), "{ms} ms"),
                450.. => assert!(bwe.queue_stands(), "{ms} ms"),
                _ => {}
            }
        }
    }

    /// A sender at `rate` (following the estimate when asked to) through a bottleneck
    /// with an unbounded queue: frames every 33 ms in packets of `packet` bytes (1000
    /// unless a test says otherwise).
    struct Link {
        bwe: DelayBasedBwe,
        now: Instant,
        link_free: Instant,
        rate: f64,
        packet: f64,
        /// Bytes the sender may send but has not (frames are whole packets).
        credit: f64,
    }

    impl Link {
        fn new(rate: f64) -> Self {
            let t0 = test_instant();
            Self {
                bwe: DelayBasedBwe::new(50_000, 10_000_000),
                now: t0,
                link_free: t0,
                rate,
                packet: 1000.0,
                credit: 0.0,
            }
        }

        /// Runs `frames` frames into `capacity`; returns the largest queueing delay.
        fn run(&mut self, frames: u32, capacity: f64, follow: bool) -> Duration {
            let mut worst = Duration::ZERO;
            for _ in 0..frames {
                let send = self.now;
                self.credit += self.rate * FRAME.as_secs_f64() / 8.0;
                let packets = (self.credit / self.packet).floor().max(1.0);
                self.credit -= packets * self.packet;
                for _ in 0..packets as u32 {
                    let start = self.link_free.max(send);
                    let done = start + Duration::from_secs_f64(self.packet * 8.0 / capacity);
                    self.link_free = done;
                    worst = worst.max(done - send);
                    self.bwe
                        .on_packet(done, Some(send), self.packet as usize, RTT);
                }
                self.now += FRAME;
                if follow && let Some(e) = self.bwe.estimate_bps() {
                    self.rate = e as f64;
                }
            }
            worst
        }
    }

    #[test]
    fn it_backs_off_while_the_delay_grows_and_holds_the_queue_down() {
        // 1.5 Mbit/s offered into 1 Mbit/s for a second: the queue grows a third of
        // each interval, to 500 ms.
        let mut link = Link::new(1_500_000.0);
        link.run(30, 1_000_000.0, false);
        let e = link.bwe.estimate_bps().expect("an estimate after 1 s");
        assert!(e < 1_000_000, "still {e} bit/s with the delay growing");
        assert!(link.bwe.stats().overuse > 0 && link.bwe.stats().rate.decreases > 0);
        // Following the estimate, the queue drains and stays short.
        link.run(300, 1_000_000.0, true);
        let worst = link.run(300, 1_000_000.0, true);
        assert!(worst < Duration::from_millis(150), "queue of {worst:?}");
        let e = link.bwe.estimate_bps().unwrap();
        assert!((600_000..1_200_000).contains(&e), "{e}");
    }

    #[test]
    fn it_ramps_up_while_the_link_has_room() {
        let mut link = Link::new(300_000.0);
        link.run(600, 5_000_000.0, true);
        let e = link.bwe.estimate_bps().unwrap();
        // 20 s at up to 8 % a second from 300 kbit/s.
        assert!(e > 800_000, "stuck at {e}");
        assert_eq!(link.bwe.stats().rate.decreases, 0);
    }

    #[test]
    fn after_a_capacity_drop_it_converges_to_the_new_rate() {
        let mut link = Link::new(300_000.0);
        link.run(600, 2_500_000.0, true);
        link.run(60, 500_000.0, true);
        let worst = link.run(150, 500_000.0, true);
        let e = link.bwe.estimate_bps().unwrap();
        assert!(e < 600_000, "{e}");
        assert!(worst < Duration::from_millis(150), "queue of {worst:?}");
    }

    #[test]
    fn the_first_cut_after_a_drop_is_to_the_new_link_not_the_old_average() {
        let mut link = Link::new(1_500_000.0);
        link.run(300, 5_000_000.0, false);
        let before = link.bwe.stats().rate.decreases;
        // The link falls to 500 kbit/s; the sender goes on at 1.5 Mbit/s (its feedback
        // is on the way) until the estimate first falls.
        let mut frames = 0;
        while link.bwe.stats().rate.decreases == before {
            link.run(1, 500_000.0, false);
            frames += 1;
            assert!(
                frames < 60,
                "no cut 2 s after the drop: {:?}",
                link.bwe.stats()
            );
        }
        // What arrives through the busy link is its rate: the cut keeps at most GCC's
        // 85 % of it. (Over the 500 ms average, which still held the 1.5 Mbit/s before
        // the drop, the first cut kept 813 kbit/s, 1.6 times the link.)
        let cut = link.bwe.estimate_bps().unwrap();
        assert!(cut <= 425_000, "cut to {cut} bit/s after {frames} frames");
    }

    /// A sender that has followed the estimate on a 2.5 Mbit/s link for 10 s.
    fn settled_at_2500() -> Link {
        let mut link = Link::new(3_000_000.0);
        link.run(300, 2_500_000.0, true);
        assert_eq!(link.bwe.take_collapse(), None);
        assert_eq!(link.bwe.stats().incoming_collapses, 0);
        link
    }

    /// Runs frames into `capacity`, the sender going on at its rate (its feedback is on
    /// the way), until a collapse is told, for at most `most` frames; returns the share
    /// and the frames it took.
    fn until_collapse(link: &mut Link, capacity: f64, most: u32) -> Option<(f64, u32)> {
        (1..=most).find_map(|frames| {
            link.run(1, capacity, false);
            link.bwe.take_collapse().map(|share| (share, frames))
        })
    }

    #[test]
    fn a_link_that_falls_to_a_fifth_is_told_as_a_collapse_before_gccs_cut() {
        let mut link = settled_at_2500();
        let estimate = link.bwe.estimate_bps().unwrap() as f64;
        let decreases = link.bwe.stats().rate.decreases;
        // The link falls to 500 kbit/s.
        let (share, frames) = until_collapse(&mut link, 500_000.0, 6)
            .expect("no collapse told 200 ms after the drop");
        // What came through the busy link, over what it carried before (the estimate
        // or the last half second's rate, the lower).
        let expected = 500_000.0 / estimate;
        assert!(
            (share - expected).abs() < 0.3 * expected,
            "share {share}, expected {expected}, after {frames} frames"
        );
        assert_eq!(
            link.bwe.stats().rate.decreases,
            decreases,
            "told before GCC's own cut"
        );
        // Told once while the queue stays.
        link.run(2, 500_000.0, false);
        assert_eq!(link.bwe.take_collapse(), None);
        assert_eq!(link.bwe.stats().incoming_collapses, 1);
        // The sender follows the estimate down and the queue drains. When the link
        // falls again, to a fifth of what the sender now sends, that is told again (in
        // 250-byte packets, which show it as soon at this rate).
        link.run(300, 500_000.0, true);
        assert_eq!(link.bwe.take_collapse(), None);
        link.packet = 250.0;
        let fifth = link.rate / 5.0;
        assert!(
            until_collapse(&mut link, fifth, 6).is_some(),
            "not told at {fifth}"
        );
        assert_eq!(link.bwe.stats().incoming_collapses, 2);
    }

    #[test]
    fn a_large_frame_through_a_busy_link_is_no_collapse() {
        let mut link = settled_at_2500();
        // A keyframe five times the others: a queue of some 150 ms fills and drains,
        // at the link's rate.
        let rate = link.rate;
        link.rate = rate * 5.0;
        let worst = link.run(1, 2_500_000.0, false);
        assert!(worst > Duration::from_millis(100), "queue of {worst:?}");
        link.rate = rate;
        link.run(60, 2_500_000.0, true);
        assert_eq!(link.bwe.take_collapse(), None);
        assert_eq!(link.bwe.stats().incoming_collapses, 0);
        // A link that falls by a third is GCC's to follow, not a collapse.
        link.run(60, 1_700_000.0, false);
        assert_eq!(link.bwe.take_collapse(), None);
        assert_eq!(link.bwe.stats().incoming_collapses, 0);
    }

    #[test]
    fn a_standing_full_queue_is_overuse_though_its_delay_is_flat() {
        let t0 = test_instant();
        let mut bwe = DelayBasedBwe::new(50_000, 10_000_000);
        let mut decreases = Vec::new();
        for i in 0..200u32 {
            let send = t0 + Duration::from_millis(20) * i;
            // 10 ms on the wire for 1 s, then a queue of 150 ms that stays full.
            let queue = if i < 50 { 0 } else { 150 };
            let arrival = send + Duration::from_millis(10 + queue);
            bwe.on_packet(arrival, None, 2000, RTT);
            bwe.on_packet(arrival, Some(send), 0, RTT);
            decreases.push(bwe.stats().rate.decreases);
        }
        assert!(bwe.stats().standing_queue > 50, "{:?}", bwe.stats());
        // Cut again and again (once an RTT at most) while the queue stands.
        assert!(decreases[199] > decreases[120] + 5, "{:?}", bwe.stats());
    }

    #[test]
    fn a_drop_is_urgent_and_reports_mark_it_sent() {
        let mut link = Link::new(1_500_000.0);
        link.run(20, 5_000_000.0, false);
        // The first estimate is urgent.
        assert!(link.bwe.report_urgent());
        assert!(link.bwe.take_report().is_some());
        assert!(!link.bwe.report_urgent());
        link.run(60, 700_000.0, false);
        assert!(link.bwe.report_urgent());
        link.bwe.take_report();
        assert!(!link.bwe.report_urgent());
    }

    #[test]
    fn a_probe_above_the_estimate_raises_it_and_is_reported_at_once() {
        // 1 Mbit/s for a second through a 5 Mbit/s link: an estimate near it.
        let mut link = Link::new(1_000_000.0);
        link.run(30, 5_000_000.0, false);
        let before = link.bwe.estimate_bps().unwrap();
        link.bwe.take_report();
        assert!(!link.bwe.report_urgent());
        // A cluster of 10 packets of 300 bytes sent 1 ms apart (2.4 Mbit/s), carried
        // whole.
        let t = link.now;
        for i in 0..10u32 {
            let send = t + Duration::from_millis(1) * i;
            link.bwe.on_probe(send + RTT / 2, 1, send, 300);
        }
        let after = link.bwe.estimate_bps().unwrap();
        assert!(
            before < 1_600_000 && after.abs_diff(2_400_000) <= 1,
            "{before} -> {after}"
        );
        assert!(link.bwe.report_urgent());
        assert_eq!(link.bwe.take_report(), Some(after));
        assert!(!link.bwe.report_urgent());
        // A cluster below the estimate changes nothing.
        let t = t + Duration::from_millis(100);
        for i in 0..10u32 {
            let send = t + Duration::from_millis(10) * i;
            link.bwe.on_probe(send + RTT / 2, 2, send, 300);
        }
        assert_eq!(link.bwe.estimate_bps(), Some(after));
        let stats = link.bwe.stats();
        // Raised once: the even cluster measured the same from its fourth packet on.
        assert_eq!((stats.probe_raises, stats.probe.clusters), (1, 2));
    }

    #[test]
    fn a_probe_while_a_queue_stands_is_ignored() {
        let t0 = test_instant();
        let mut bwe = DelayBasedBwe::new(50_000, 10_000_000);
        // 10 ms on the wire for 1 s, then a queue of 150 ms that stays.
        let mut now = t0;
        for i in 0..80u32 {
            let send = t0 + Duration::from_millis(20) * i;
            now = send + Duration::from_millis(if i < 50 { 10 } else { 160 });
            bwe.on_packet(now, None, 2000, RTT);
            bwe.on_packet(now, Some(send), 0, RTT);
        }
        let before = bwe.estimate_bps().unwrap();
        // A cluster that went through at 2.4 Mbit/s: more than the estimate, but the
        // queue says the link is full.
        for i in 0..10u32 {
            let send = now + Duration::from_millis(1) * i;
            bwe.on_probe(send + Duration::from_millis(160), 1, send, 300);
        }
        assert_eq!(bwe.estimate_bps(), Some(before));
        let stats = bwe.stats();
        assert!(
            stats.probe_ignored > 0 && stats.probe_raises == 0,
            "{stats:?}"
        );
    }

    #[test]
    fn packets_without_a_send_time_count_only_in_the_rate() {
        let t0 = test_instant();
        let mut bwe = DelayBasedBwe::new(50_000, 10_000_000);
        for i in 0..100 {
            bwe.on_packet(t0 + Duration::from_millis(10 * i), None, 1000, RTT);
        }
        assert_eq!(bwe.stats().groups, 0);
        assert_eq!(bwe.estimate_bps(), None);
        assert_eq!(bwe.stats().incoming_bps, 800_000);
    }
}
