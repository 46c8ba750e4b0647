//! Probing for capacity upward (libwebrtc's `ProbeController` and the pacer's probe
//! clusters): short bursts of padding sent at a multiple of the rate the sender holds to,
//! which the receiver times (`cc::probe`) and, when the path carried more than its
//! estimate, takes as its new estimate.
//!
//! A call's first cluster goes once media flows and the peer's first estimate came, at
//! three times that estimate (libwebrtc: three times the start rate, from the start; see
//! `Session::start_probing` for why ours waits). Where libwebrtc sends a second at six
//! times right behind it, this one waits for the first's result: a cluster whose result
//! came back near its rate (libwebrtc's "probe further", at least 70 % of it, within a
//! second) is followed by one at twice the new estimate, up to the most the sender may
//! send, and so on while they succeed. A 6x burst into a 300 kbit/s link (11 kB: 0.3 s
//! of it) would overflow a 200 ms queue; on a wide link the chain reaches the same rates
//! one round trip later.
//!
//! A cluster lasts at least [`MIN_DURATION`] and [`MIN_PACKETS`] packets, the call's first
//! (and its one repeat) [`FIRST_DURATION`]; its packets are padding-only RTP on the video
//! RTX stream (see `SendStream::padding`), each at most [`MAX_PADDING`] bytes of padding
//! (RTP's padding count is one byte).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The least length of a cluster (libwebrtc's 15 ms)...
pub const MIN_DURATION: Duration = Duration::from_millis(15);
/// ...and its least number of packets (libwebrtc's 5).
pub const MIN_PACKETS: u32 = 5;
/// The length of the call's first cluster (and of its one repeat): the one that lifts
/// the estimate from the rate media happened to have at the start (often under half
/// what the path carries) toward what it can carry. Jitter spreads a cluster's arrivals
/// by up to twice its mean (20 ms on the lab's 10 ms paths), which a 15 ms cluster
/// measured as a bottleneck: with 20 % loss beside it, the chain ended at half the
/// cluster's rate, and the estimate climbed 8 % a second from there while the send
/// budget refused the repairs the loss needed. With a 40 ms first cluster the lab's 20 %
/// row froze 2.2 times a minute where it froze 3.0 (48 seeds). Every cluster at 30 or
/// 40 ms gained less there (2.5, against 2.1 for the first alone, over 24 seeds) and
/// queued on the capacity-limited links (audio p95 up 20 ms on the 1 Mbit/s link), so
/// the clusters after the first keep libwebrtc's 15 ms.
/// See the README, "Landed (session 21)".
pub const FIRST_DURATION: Duration = Duration::from_millis(40);
/// The most padding one packet carries (the padding count is a byte).
pub const MAX_PADDING: usize = u8::MAX as usize;
/// The first cluster's rate, times the start rate.
const INITIAL_SCALE: f64 = 3.0;
/// A successful cluster's successor, times the new estimate.
const FURTHER_SCALE: f64 = 2.0;
/// A cluster succeeded when the estimate came back at least this share of its rate...
const FURTHER_SHARE: f64 = 0.7;
/// ...within this of its end.
const RESULT_WAIT: Duration = Duration::from_secs(1);
/// The least delivered share the success share is scaled by (see
/// [`ProbeController::on_estimate`]): a path that loses more is not probed further on
/// the strength of a cluster it delivered under half of.
const MIN_DELIVERED: f64 = 0.5;
/// A further cluster goes only this far above the estimate at least: near the maximum
/// there is nothing left to find.
const MIN_GAIN: f64 = 1.1;
/// With no cluster sent for this long, and no fall of the estimate ever, a chain starts
/// again from the estimate (see [`ProbeController::on_estimate`]).
pub const REPROBE_AFTER: Duration = Duration::from_secs(3);

/// A packet of padding the sender is to send now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbePacket {
    /// The cluster's id (the packet's RTP timestamp).
    pub cluster: u32,
    /// Bytes of padding, at least 1.
    pub padding: u8,
}

/// What was probed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProbeSendCounters {
    /// Clusters started.
    pub clusters: u64,
    /// Of those, the ones that followed a successful one.
    pub further: u64,
    /// The rate of the last cluster, bit/s.
    pub last_rate_bps: u64,
    /// Chains started again after [`REPROBE_AFTER`] without a cluster, the estimate
    /// never having fallen.
    #[serde(default)]
    pub reprobes: u64,
}

/// A cluster being sent.
#[derive(Debug, Clone, Copy)]
struct Cluster {
    id: u32,
    rate_bps: u64,
    /// Padding per packet, and packets left.
    padding: u8,
    left: u32,
    next_at: Instant,
}

/// The send side of probing.
#[derive(Debug, Clone)]
pub struct ProbeController {
    max_bps: u64,
    /// Packet overhead besides the padding (RTP header, extension, SRTP tag): the
    /// cluster's rate is of whole datagrams.
    overhead: usize,
    started: bool,
    pending: VecDeque<(u64, Duration)>,
    active: Option<Cluster>,
    next_id: u32,
    /// The rate of the last cluster and when it ended, until its result comes.
    awaiting: Option<(u64, Instant)>,
    /// While the first cluster may be sent again: the rate probing started from, and the
    /// highest estimate heard since its cluster ended.
    first: Option<(u64, u64)>,
    /// When the last cluster ended.
    last_end: Option<Instant>,
    /// The last estimate heard, and whether an estimate ever fell.
    last_estimate: Option<u64>,
    fell: bool,
    counters: ProbeSendCounters,
}

impl ProbeController {
    /// A controller that probes up to `max_bps`; datagrams carry `overhead` bytes beside
    /// their padding.
    pub fn new(max_bps: u64, overhead: usize) -> Self {
        Self {
            max_bps,
            overhead,
            started: false,
            pending: VecDeque::new(),
            active: None,
            next_id: 1,
            awaiting: None,
            first: None,
            last_end: None,
            last_estimate: None,
            fell: false,
            counters: ProbeSendCounters::default(),
        }
    }

    /// Whether the call's first cluster was asked for.
    pub fn started(&self) -> bool {
        self.started
    }

    /// Probing may begin, from `start_bps`: the first cluster goes (once a call).
    pub fn start(&mut self, start_bps: u64) {
        if self.started {
            return;
        }
        self.started = true;
        self.first = Some((start_bps, 0));
        self.queue((start_bps as f64 * INITIAL_SCALE) as u64, FIRST_DURATION);
    }

    /// The last estimate heard (`None` before the first): what the session's tests
    /// check the prober heard.
    #[cfg(test)]
    pub(crate) fn last_estimate(&self) -> Option<u64> {
        self.last_estimate
    }

    /// The peer's estimate came at `now`: if it shows the last cluster got through,
    /// probe further.
    ///
    /// The first cluster is sent once more, at three times the estimate, when no estimate
    /// within [`RESULT_WAIT`] of it rose even [`MIN_GAIN`] above the rate probing started
    /// from: the peer took no measure of it (`cc::ProbeEstimator` refuses a cluster too
    /// spread out or arriving implausibly faster than sent), where one that measured a
    /// narrow path would have moved
    /// the estimate at least to the rate media already had. (libwebrtc sends a second
    /// initial cluster at once, at six times the start.)
    ///
    /// Once probing is idle, a chain starts again at twice the estimate (up to the
    /// maximum) when no cluster went for [`REPROBE_AFTER`] and the estimate has never
    /// fallen. A chain ends at the first cluster that falls short, and one can fall
    /// short for no fault of the path: 10 ms of jitter spreads a 15 ms cluster's
    /// arrivals by up to 20 ms (the first cluster is longer for this; see
    /// [`FIRST_DURATION`]), and the lab's 2.5 Mbit/s link measured 0.7 of a
    /// 1.1 Mbit/s cluster. The estimate then climbed at 8 % a second from there, and one
    /// direction used 1.3 of the link's 2.5 Mbit/s over the call. Once the estimate has
    /// fallen, a cut has shown the path's capacity, and a cluster at twice the estimate
    /// is one into a full link: tried after any 3 s without a fall, such chains lost
    /// packets on the 1 Mbit/s link (0.68 % in one seed) and, after the drop to
    /// 500 kbit/s, held a 150 ms queue 4.7 s. (libwebrtc probes periodically only while
    /// the encoder leaves the estimate unused.)
    ///
    /// `delivered` is the share of what we send that the path delivers (from the peer's
    /// transport feedback; 1 without): a cluster's result counts only the bytes that
    /// arrived, so under random loss it comes back that much short of a cluster the path
    /// carried whole, and the share it must reach is taken down with it (to no less than
    /// half of [`FURTHER_SHARE`]). At 20 % random loss, 0.66 of a cluster came back in
    /// one direction of the lab's seed 8 (640x480, delay-based control on); the chain
    /// ended there, the estimate stayed at 1.5 times what arrived (540 kbit/s) for 4 s,
    /// and the send budget refused the repairs the loss needed.
    pub fn on_estimate(&mut self, now: Instant, estimate_bps: u64, delivered: f64) {
        self.fell |= self.last_estimate.is_some_and(|e| estimate_bps < e);
        self.last_estimate = Some(estimate_bps);
        let Some((rate, ended)) = self.awaiting else {
            self.reprobe(now, estimate_bps);
            return;
        };
        if now.saturating_duration_since(ended) > RESULT_WAIT {
            self.awaiting = None;
            if let Some((start, heard)) = self.first.take()
                && (heard as f64) < start as f64 * MIN_GAIN
            {
                self.queue((estimate_bps as f64 * INITIAL_SCALE) as u64, FIRST_DURATION);
            }
            return;
        }
        if let Some((_, heard)) = &mut self.first {
            *heard = (*heard).max(estimate_bps);
        }
        let share = FURTHER_SHARE * delivered.clamp(MIN_DELIVERED, 1.0);
        if (estimate_bps as f64) < share * rate as f64 {
            return;
        }
        self.awaiting = None;
        self.first = None;
        let rate = ((estimate_bps as f64 * FURTHER_SCALE) as u64).min(self.max_bps);
        if rate as f64 > estimate_bps as f64 * MIN_GAIN {
            self.counters.further += 1;
            self.queue(rate, MIN_DURATION);
        }
    }

    /// Starts a chain again from `estimate_bps` (see [`Self::on_estimate`]).
    fn reprobe(&mut self, now: Instant, estimate_bps: u64) {
        let idle = self.started && self.active.is_none() && self.pending.is_empty();
        let quiet = self
            .last_end
            .is_some_and(|t| now.saturating_duration_since(t) >= REPROBE_AFTER);
        if !idle || !quiet || self.fell {
            return;
        }
        let rate = ((estimate_bps as f64 * FURTHER_SCALE) as u64).min(self.max_bps);
        if rate as f64 > estimate_bps as f64 * MIN_GAIN {
            self.counters.reprobes += 1;
            self.queue(rate, MIN_DURATION);
        }
    }

    fn queue(&mut self, rate_bps: u64, duration: Duration) {
        let rate = rate_bps.min(self.max_bps);
        if rate > 0 && self.pending.len() < 4 {
            self.pending.push_back((rate, duration));
        }
    }

    /// When the next probe packet is due (`None`: no cluster waits).
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        match (&self.active, self.pending.is_empty()) {
            (Some(c), _) => Some(c.next_at),
            (None, false) => Some(now),
            (None, true) => None,
        }
    }

    /// The next probe packet, if one is due at `now`.
    pub fn poll(&mut self, now: Instant) -> Option<ProbePacket> {
        if self.active.is_none() {
            let (rate, duration) = self.pending.pop_front()?;
            self.active = Some(self.cluster(now, rate, duration));
        }
        let c = self.active.as_mut()?;
        if c.next_at > now {
            return None;
        }
        let packet = ProbePacket {
            cluster: c.id,
            padding: c.padding,
        };
        let bits = ((usize::from(c.padding) + self.overhead) * 8) as f64;
        c.next_at += Duration::from_secs_f64(bits / c.rate_bps as f64);
        c.left -= 1;
        if c.left == 0 {
            // A cluster at the maximum is the last (libwebrtc stops probing further
            // once a probe is capped): its result cannot call for a higher one.
            self.awaiting = (c.rate_bps < self.max_bps).then_some((c.rate_bps, now));
            self.active = None;
            self.last_end = Some(now);
        }
        Some(packet)
    }

    /// A cluster at `rate_bps` starting at `now`: at least `duration` of it in at least
    /// [`MIN_PACKETS`] packets.
    fn cluster(&mut self, now: Instant, rate_bps: u64, duration: Duration) -> Cluster {
        let bytes = (rate_bps as f64 / 8.0 * duration.as_secs_f64()).ceil() as usize;
        let per_packet = bytes
            .div_ceil(MIN_PACKETS as usize)
            .clamp(self.overhead + 1, MAX_PADDING + self.overhead);
        let padding = u8::try_from(per_packet - self.overhead).unwrap_or(u8::MAX);
        let packets = bytes.div_ceil(per_packet).max(MIN_PACKETS as usize) as u32;
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.counters.clusters += 1;
        self.counters.last_rate_bps = rate_bps;
        Cluster {
            id,
            rate_bps,
            padding,
            left: packets,
            next_at: now,
        }
    }

    /// Counters.
    pub fn counters(&self) -> ProbeSendCounters {
        self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_instant;

    const OVERHEAD: usize = 34;

    /// Sends everything due, stepping to each timeout; returns (when, packet).
    fn drain(p: &mut ProbeController, mut now: Instant) -> Vec<(Instant, ProbePacket)> {
        let mut out = Vec::new();
        while let Some(at) = p.poll_timeout(now) {
            now = now.max(at);
            while let Some(packet) = p.poll(now) {
                out.push((now, packet));
            }
        }
        out
    }

    /// A controller up to 5 Mbit/s that started from 1 Mbit/s, its first cluster sent;
    /// and when the cluster's last packet went.
    fn first_cluster_sent() -> (ProbeController, Instant) {
        let mut p = ProbeController::new(5_000_000, OVERHEAD);
        p.start(1_000_000);
        let end = drain(&mut p, test_instant()).last().unwrap().0;
        (p, end)
    }

    #[test]
    fn the_first_cluster_is_three_times_the_start_for_40_ms() {
        let t0 = test_instant();
        let mut p = ProbeController::new(5_000_000, OVERHEAD);
        assert_eq!(p.poll_timeout(t0), None);
        p.start(1_000_000);
        p.start(1_000_000);
        let sent = drain(&mut p, t0);
        let size = |s: &ProbePacket| usize::from(s.padding) + OVERHEAD;
        let bytes: usize = sent.iter().map(|(_, s)| size(s)).sum();
        let span = sent.last().unwrap().0 - sent[0].0;
        // 3 Mbit/s for 40 ms: 15 kB, in packets of at most 255 bytes of padding.
        assert!(bytes >= 15_000, "{bytes}");
        assert!(sent.iter().all(|(_, s)| s.cluster == 1));
        // Paced at 3 Mbit/s: the last packet leaves one packet's time before 40 ms.
        let rate = (bytes - size(&sent[0].1)) as f64 * 8.0 / span.as_secs_f64();
        assert!((rate - 3_000_000.0).abs() < 1_000.0, "{rate}");
        let packet = Duration::from_secs_f64((MAX_PADDING + OVERHEAD) as f64 * 8.0 / 3e6);
        assert!(span + packet >= FIRST_DURATION, "{span:?}");
        assert_eq!(p.counters().clusters, 1);
    }

    #[test]
    fn a_slow_cluster_still_has_five_packets() {
        let t0 = test_instant();
        let mut p = ProbeController::new(5_000_000, OVERHEAD);
        // 90 kbit/s for 40 ms: 450 bytes, five packets of 90, 8 ms apart.
        p.start(30_000);
        let sent = drain(&mut p, t0);
        assert_eq!(sent.len(), MIN_PACKETS as usize);
        assert!(sent.last().unwrap().0 - t0 >= Duration::from_millis(32));
    }

    #[test]
    fn only_the_first_cluster_and_its_repeat_are_long() {
        let ms = Duration::from_millis;
        let span = |sent: &[(Instant, ProbePacket)]| sent.last().unwrap().0 - sent[0].0;
        // A further cluster, at 4.8 Mbit/s: 15 ms.
        let (mut p, end) = first_cluster_sent();
        p.on_estimate(end + ms(60), 2_400_000, 1.0);
        let further = drain(&mut p, end);
        assert!(
            (ms(14)..MIN_DURATION).contains(&span(&further)),
            "{further:?}"
        );
        // The first one again (the peer took no measure of it): 40 ms.
        let (mut p, end) = first_cluster_sent();
        p.on_estimate(end + ms(1500), 1_000_000, 1.0);
        let again = drain(&mut p, end + ms(1500));
        assert!(
            (ms(39)..FIRST_DURATION).contains(&span(&again)),
            "{again:?}"
        );
    }

    #[test]
    fn a_successful_cluster_is_followed_by_one_at_twice_the_estimate_up_to_the_maximum() {
        let (mut p, end) = first_cluster_sent();
        // The estimate came back at 2.4 Mbit/s (over 70 % of 3): probe at 4.8.
        p.on_estimate(end + Duration::from_millis(60), 2_400_000, 1.0);
        assert_eq!(drain(&mut p, end)[0].1.cluster, 2);
        assert_eq!(p.counters().last_rate_bps, 4_800_000);
        // It came back at 4.5: the next is capped at the maximum, 5.
        p.on_estimate(end + Duration::from_millis(200), 4_500_000, 1.0);
        drain(&mut p, end);
        assert_eq!(p.counters().last_rate_bps, 5_000_000);
        // That cluster was capped at the maximum: it is the last, even when its result
        // leaves room (4 Mbit/s: twice it would be a capped 5, over 10 % above).
        p.on_estimate(end + Duration::from_millis(300), 4_000_000, 1.0);
        assert_eq!(p.poll_timeout(end), None);
        p.on_estimate(end + Duration::from_millis(400), 4_600_000, 1.0);
        assert_eq!(p.poll_timeout(end), None);
        assert_eq!((p.counters().clusters, p.counters().further), (3, 2));
    }

    #[test]
    fn a_cluster_that_fell_short_or_a_late_estimate_ends_the_probing() {
        let (mut p, end) = first_cluster_sent();
        // The path carried 1.2 of the 3 Mbit/s: that is its capacity, no further probe.
        p.on_estimate(end + Duration::from_millis(60), 1_200_000, 1.0);
        assert_eq!(p.poll_timeout(end), None);
        // A later estimate, however high, is not this cluster's result.
        p.on_estimate(end + Duration::from_secs(2), 3_000_000, 1.0);
        assert_eq!(p.poll_timeout(end), None);
        assert_eq!(p.counters().further, 0);
    }

    #[test]
    fn a_cluster_is_judged_on_what_the_paths_random_loss_lets_arrive() {
        // The 3 Mbit/s cluster came back at 1.9 (63 %): on a clean path it fell short.
        let (mut p, end) = first_cluster_sent();
        p.on_estimate(end + Duration::from_millis(60), 1_900_000, 1.0);
        assert_eq!(p.poll_timeout(end), None);
        // On one that loses a fifth at random, the cluster got through as far as any
        // could (0.7 of the 80 % delivered is 56 %): probe on at twice the estimate.
        let (mut p, end) = first_cluster_sent();
        p.on_estimate(end + Duration::from_millis(60), 1_900_000, 0.8);
        assert_eq!(p.counters().further, 1);
        assert_eq!(drain(&mut p, end)[0].1.cluster, 2);
        assert_eq!(p.counters().last_rate_bps, 3_800_000);
        // A path that delivers a fifth is taken as delivering half: a cluster must come
        // back at 35 % at least, and 1 of 3 (33 %) falls short.
        let (mut p, end) = first_cluster_sent();
        p.on_estimate(end + Duration::from_millis(60), 1_000_000, 0.2);
        assert_eq!(p.poll_timeout(end), None);
        assert_eq!(p.counters().further, 0);
    }

    #[test]
    fn a_chain_that_fell_short_starts_again_until_the_estimate_falls() {
        let (mut p, end) = first_cluster_sent();
        let ms = Duration::from_millis;
        // The 3 Mbit/s cluster measured 1.5 (jitter spread its arrivals): no further.
        p.on_estimate(end + ms(60), 1_500_000, 1.0);
        p.on_estimate(end + ms(1500), 1_600_000, 1.0);
        assert_eq!(p.poll_timeout(end), None);
        // Three seconds after it, the estimate having only climbed: a chain again, at
        // twice the estimate.
        p.on_estimate(end + REPROBE_AFTER - ms(1), 1_650_000, 1.0);
        assert_eq!(p.poll_timeout(end), None);
        p.on_estimate(end + REPROBE_AFTER, 1_700_000, 1.0);
        let again = drain(&mut p, end + REPROBE_AFTER);
        assert_eq!(again[0].1.cluster, 2);
        assert_eq!(p.counters().last_rate_bps, 3_400_000);
        assert_eq!(p.counters().reprobes, 1);
        // It got through: the chain goes on as the first one would have.
        let end = again.last().unwrap().0;
        p.on_estimate(end + ms(60), 3_000_000, 1.0);
        drain(&mut p, end);
        assert_eq!(p.counters().last_rate_bps, 5_000_000);
        // Once the estimate has fallen (a cut: the path's capacity showed), never
        // again.
        p.on_estimate(end + ms(200), 2_500_000, 1.0);
        p.on_estimate(end + ms(1500), 2_600_000, 1.0);
        p.on_estimate(end + REPROBE_AFTER * 3, 2_700_000, 1.0);
        assert_eq!(p.poll_timeout(end + REPROBE_AFTER * 3), None);
        assert_eq!(p.counters().reprobes, 1);
    }

    #[test]
    fn a_first_cluster_the_peer_took_no_measure_of_is_sent_once_more() {
        let (mut p, end) = first_cluster_sent();
        // The estimate does not move (the peer refused the measure)...
        p.on_estimate(end + Duration::from_millis(300), 1_020_000, 1.0);
        assert_eq!(p.poll_timeout(end), None);
        // ...so once the wait is over the first cluster goes again, at three times the
        // estimate now.
        let later = end + Duration::from_millis(1500);
        p.on_estimate(later, 1_050_000, 1.0);
        let again = drain(&mut p, later);
        assert_eq!(again[0].1.cluster, 2);
        assert_eq!(p.counters().last_rate_bps, 3_150_000);
        // Once only.
        let end = again.last().unwrap().0;
        p.on_estimate(end + Duration::from_millis(1500), 1_100_000, 1.0);
        assert_eq!(p.poll_timeout(end), None);
        assert_eq!(p.counters().clusters, 2);
    }
}
