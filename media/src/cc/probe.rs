//! The receiver's measure of the sender's probe clusters (libwebrtc's
//! `ProbeBitrateEstimator`): a cluster is a short burst of padding sent well above the
//! estimate (`send::probe`). Each probe packet carries its send time (abs-capture-time)
//! and its cluster's id (its RTP timestamp), so both rates are known: the result is the
//! lower, and, where the burst arrived clearly slower than it left (a bottleneck), a
//! little under what arrived.
//!
//! The sender's media keeps flowing beside the padding (libwebrtc's pacer makes its media
//! part of the cluster; ours carries capture times, not send times), so both rates count
//! the media that arrived while the cluster did: what arrived is what the path carried
//! then (at a bottleneck the padding gets only its share of the link), and what was sent
//! is the padding's send rate plus that media.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Packets of a cluster needed for a result (libwebrtc: 80 % of the sender's least 5).
pub const MIN_PACKETS: u32 = 4;
/// A cluster sent or received over longer than this is not a burst: no result.
pub const MAX_SPREAD: Duration = Duration::from_secs(1);
/// A cluster arriving faster than this times its send rate was measured wrongly.
const MAX_RATIO: f64 = 2.0;
/// Arriving under this share of the send rate, the path was saturated by the burst...
const SATURATED_BELOW: f64 = 0.9;
/// ...and the result is this share of what arrived.
const SATURATED_SHARE: f64 = 0.95;
/// Clusters are forgotten this long after their last packet.
const KEEP: Duration = Duration::from_secs(1);
/// At most this many clusters are tracked at once (a peer cannot grow the list).
const MAX_CLUSTERS: usize = 8;

/// One cluster as received so far.
#[derive(Debug, Clone, Copy)]
struct Cluster {
    id: u32,
    first_send: Instant,
    last_send: Instant,
    first_arrival: Instant,
    last_arrival: Instant,
    packets: u32,
    bytes: usize,
    /// The size of the packet sent last and of the one that arrived first: a rate over
    /// n packets' span counts n - 1 of them.
    last_send_bytes: usize,
    first_arrival_bytes: usize,
    /// Other packets' bytes (the sender's media) arrived since the cluster's first, and
    /// as of its last so far.
    others: usize,
    others_at_last: usize,
}

/// What the estimator saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProbeCounters {
    /// Probe packets measured.
    pub packets: u64,
    /// Clusters that gave a result (counted once each).
    pub clusters: u64,
    /// Measurements refused: too spread out, or arriving implausibly faster than sent.
    /// A cluster is measured again at each of its packets from the fourth on, so this
    /// counts packets whose measure was refused, not clusters.
    pub rejected: u64,
}

/// The receive side of probing.
#[derive(Debug, Clone, Default)]
pub struct ProbeEstimator {
    clusters: VecDeque<(Cluster, bool)>,
    counters: ProbeCounters,
}

impl ProbeEstimator {
    /// A probe packet of `cluster` sent at `send` (the sender's clock) and `bytes` long
    /// arrived at `now`: the cluster's rate, bit/s, once it has enough packets and its
    /// measure is valid.
    pub fn on_packet(
        &mut self,
        now: Instant,
        cluster: u32,
        send: Instant,
        bytes: usize,
    ) -> Option<u64> {
        self.counters.packets += 1;
        self.clusters
            .retain(|(c, _)| now.saturating_duration_since(c.last_arrival) < KEEP);
        let index = match self.clusters.iter().position(|(c, _)| c.id == cluster) {
            Some(i) => i,
            None => {
                if self.clusters.len() >= MAX_CLUSTERS {
                    self.clusters.pop_front();
                }
                self.clusters.push_back((
                    Cluster {
                        id: cluster,
                        first_send: send,
                        last_send: send,
                        first_arrival: now,
                        last_arrival: now,
                        packets: 0,
                        bytes: 0,
                        last_send_bytes: bytes,
                        first_arrival_bytes: bytes,
                        others: 0,
                        others_at_last: 0,
                    },
                    false,
                ));
                self.clusters.len() - 1
            }
        };
        let (c, counted) = &mut self.clusters[index];
        if send < c.first_send {
            c.first_send = send;
        }
        if send >= c.last_send {
            c.last_send = send;
            c.last_send_bytes = bytes;
        }
        c.last_arrival = c.last_arrival.max(now);
        c.others_at_last = c.others;
        c.packets = c.packets.saturating_add(1);
        c.bytes = c.bytes.saturating_add(bytes);
        if c.packets < MIN_PACKETS {
            return None;
        }
        let Some(rate) = Self::rate(c) else {
            self.counters.rejected += 1;
            return None;
        };
        if !*counted {
            *counted = true;
            self.counters.clusters += 1;
        }
        Some(rate)
    }

    /// Another packet (not a probe) of `bytes` arrived at `now`: it counts in the
    /// clusters under way.
    pub fn on_other(&mut self, now: Instant, bytes: usize) {
        for (c, _) in &mut self.clusters {
            if now > c.first_arrival && now.saturating_duration_since(c.last_arrival) < KEEP {
                c.others = c.others.saturating_add(bytes);
            }
        }
    }

    /// The rate of a cluster with enough packets, if its measure is valid.
    fn rate(c: &Cluster) -> Option<u64> {
        let send = c.last_send.saturating_duration_since(c.first_send);
        let receive = c.last_arrival.saturating_duration_since(c.first_arrival);
        if send.is_zero() || receive.is_zero() || send > MAX_SPREAD || receive > MAX_SPREAD {
            return None;
        }
        let bps = |bytes: usize, d: Duration| bytes as f64 * 8.0 / d.as_secs_f64();
        let padding_sent = bps(c.bytes.saturating_sub(c.last_send_bytes), send);
        let padding = c.bytes.saturating_sub(c.first_arrival_bytes);
        if bps(padding, receive) > MAX_RATIO * padding_sent {
            return None;
        }
        let others = bps(c.others_at_last, receive);
        let send_bps = padding_sent + others;
        let receive_bps = bps(padding + c.others_at_last, receive);
        let rate = if receive_bps < SATURATED_BELOW * send_bps {
            SATURATED_SHARE * receive_bps
        } else {
            send_bps.min(receive_bps)
        };
        Some(rate as u64)
    }

    /// Counters.
    pub fn counters(&self) -> ProbeCounters {
        self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_instant;

    const SIZE: usize = 300;

    /// Feeds `n` packets of cluster `id` sent every `send_gap` and arriving every
    /// `arrival_gap` (after a 30 ms path); returns the last result.
    fn cluster(
        p: &mut ProbeEstimator,
        id: u32,
        n: u32,
        send_gap: Duration,
        arrival_gap: Duration,
    ) -> Option<u64> {
        let t0 = test_instant();
        let mut result = None;
        for i in 0..n {
            let send = t0 + send_gap * i;
            let arrival = t0 + Duration::from_millis(30) + arrival_gap * i;
            result = p.on_packet(arrival, id, send, SIZE);
        }
        result
    }

    #[test]
    fn a_cluster_through_a_bottleneck_measures_what_arrived() {
        let mut p = ProbeEstimator::default();
        // Sent at 2.4 Mbit/s (300 bytes a millisecond), arriving at 600 kbit/s.
        let ms = Duration::from_millis;
        let rate = cluster(&mut p, 1, 10, ms(1), ms(4)).unwrap();
        // Saturated: 95 % of the 600 kbit/s that arrived.
        assert!(rate.abs_diff(570_000) <= 1, "{rate}");
        assert_eq!(p.counters().clusters, 1);
    }

    #[test]
    fn a_cluster_the_path_carried_whole_measures_its_send_rate() {
        let mut p = ProbeEstimator::default();
        let ms = Duration::from_millis;
        // Sent and arriving at 2.4 Mbit/s (a little bunched on arrival).
        let rate = cluster(&mut p, 7, 8, ms(1), Duration::from_micros(950)).unwrap();
        assert!(rate.abs_diff(2_400_000) <= 1, "{rate}");
    }

    #[test]
    fn media_arriving_with_a_cluster_counts_in_what_the_path_carried() {
        let mut p = ProbeEstimator::default();
        let t0 = test_instant();
        let ms = Duration::from_millis;
        // Padding sent at 2.4 Mbit/s, arriving at 1.2 (every 2 ms) with 300 bytes of
        // media between each two: the link carried 2.4 Mbit/s, half of it media. Sent:
        // 2.4 of padding and the 1.2 of media that arrived, so the link was saturated.
        let mut result = None;
        for i in 0..10u32 {
            let arrival = t0 + ms(30) + ms(2) * i;
            if i > 0 {
                p.on_other(arrival - ms(1), SIZE);
            }
            result = p.on_packet(arrival, 1, t0 + ms(1) * i, SIZE);
        }
        // Nothing before the cluster's first packet or after its last counts.
        p.on_other(t0, 10_000);
        let rate = result.unwrap();
        assert!(rate.abs_diff(2_280_000) <= 1, "{rate}");
    }

    #[test]
    fn too_few_packets_give_no_result() {
        let mut p = ProbeEstimator::default();
        let ms = Duration::from_millis;
        assert_eq!(cluster(&mut p, 1, MIN_PACKETS - 1, ms(1), ms(1)), None);
        assert_eq!(p.counters().clusters, 0);
        // Packets of other clusters do not make up the count.
        assert_eq!(cluster(&mut p, 2, MIN_PACKETS - 1, ms(1), ms(1)), None);
        assert_eq!(p.counters().packets, u64::from(MIN_PACKETS - 1) * 2);
    }

    #[test]
    fn a_cluster_spread_over_more_than_a_second_gives_no_result() {
        let mut p = ProbeEstimator::default();
        let ms = Duration::from_millis;
        // Arriving over 1.2 s (a path that held it back): not a measure of the burst.
        assert_eq!(cluster(&mut p, 1, MIN_PACKETS, ms(1), ms(400)), None);
        // Sent over 1.2 s.
        assert_eq!(cluster(&mut p, 2, MIN_PACKETS, ms(400), ms(1)), None);
        assert!(p.counters().rejected >= 2, "{:?}", p.counters());
        assert_eq!(p.counters().clusters, 0);
    }

    #[test]
    fn arriving_far_faster_than_sent_is_refused() {
        let mut p = ProbeEstimator::default();
        let ms = Duration::from_millis;
        assert_eq!(cluster(&mut p, 1, 6, ms(10), ms(1)), None);
        // Sent at one instant: no send rate to measure against.
        assert_eq!(cluster(&mut p, 2, 6, Duration::ZERO, ms(1)), None);
        assert_eq!(p.counters().clusters, 0);
    }

    #[test]
    fn the_clusters_kept_are_bounded() {
        let mut p = ProbeEstimator::default();
        let t0 = test_instant();
        for id in 0..1000 {
            p.on_packet(t0, id, t0, SIZE);
        }
        assert!(p.clusters.len() <= MAX_CLUSTERS);
    }
}
