//! What a capacity-limited link did to the traffic through it: how much of the
//! bottleneck was used, how long datagrams queued, what the full queue dropped, and how
//! soon the queue came back down after the rate fell. Computed from the link's own logs
//! ([`NetSim::queue_log`], [`NetSim::drop_log`]), so the virtual-time lab and a real
//! client sending through `--sim` report the same figures.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::NetSim;

/// One direction's bottleneck figures.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BottleneckStats {
    /// Bits that left the bottleneck after the warm-up over the bits it could carry
    /// then, percent.
    pub utilization_percent: f64,
    /// Queueing delay (waiting plus serialization at the bottleneck) of the datagrams
    /// that left after the warm-up, ms: p50 and p95.
    pub queue_delay_ms: [f64; 2],
    /// The largest queueing delay after the warm-up, ms.
    pub queue_delay_max_ms: f64,
    /// Datagrams the full queue dropped over those sent, whole call, percent (random
    /// link loss excluded: this is the loss our own sending caused).
    pub self_inflicted_loss_percent: f64,
    /// The same from the warm-up on: dropped over dropped and carried after it (the
    /// start, above the capacity until the first estimate, left out).
    #[serde(default)]
    pub self_inflicted_loss_after_warm_up_percent: f64,
    /// From the first rate drop until the last datagram that queued `recovered_below`
    /// or more, ms (0 when none did; `None` without a drop).
    pub recovery_ms: Option<f64>,
    /// What the full queue dropped from the first rate drop on, and when (`None`
    /// without a drop): how much of the loss came while the senders could not yet know
    /// of the drop.
    #[serde(default)]
    pub drops_after_rate_drop: Option<StepDrops>,
}

/// The datagrams a full queue dropped from a rate drop on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepDrops {
    /// How many.
    pub datagrams: u64,
    /// When the first and the last of them were dropped, ms after the rate drop (`None`
    /// when there were none).
    pub span_ms: Option<[f64; 2]>,
}

impl StepDrops {
    /// Both directions' drops: the sum, over the earliest first and the latest last.
    fn merge(a: Self, b: Self) -> Self {
        Self {
            datagrams: a.datagrams + b.datagrams,
            span_ms: match (a.span_ms, b.span_ms) {
                (Some([f1, l1]), Some([f2, l2])) => Some([f1.min(f2), l1.max(l2)]),
                (x, y) => x.or(y),
            },
        }
    }
}

impl BottleneckStats {
    /// Utilization and queueing count from this long after the link's first input: a
    /// sender's rate search (GCC's ramp-up) is not the steady state (issue 13: "after
    /// 5 s").
    pub const WARM_UP: Duration = Duration::from_secs(5);
    /// A queue is recovered from a rate drop once nothing queues this long (issue 13:
    /// "back under 150 ms of queueing").
    pub const RECOVERED_BELOW: Duration = Duration::from_millis(150);

    /// The mean of two directions (the slower recovery, the larger maximum).
    pub fn mean(a: &Self, b: &Self) -> Self {
        let m = |x: f64, y: f64| (x + y) / 2.0;
        Self {
            utilization_percent: m(a.utilization_percent, b.utilization_percent),
            queue_delay_ms: [
                m(a.queue_delay_ms[0], b.queue_delay_ms[0]),
                m(a.queue_delay_ms[1], b.queue_delay_ms[1]),
            ],
            queue_delay_max_ms: a.queue_delay_max_ms.max(b.queue_delay_max_ms),
            self_inflicted_loss_percent: m(
                a.self_inflicted_loss_percent,
                b.self_inflicted_loss_percent,
            ),
            self_inflicted_loss_after_warm_up_percent: m(
                a.self_inflicted_loss_after_warm_up_percent,
                b.self_inflicted_loss_after_warm_up_percent,
            ),
            recovery_ms: match (a.recovery_ms, b.recovery_ms) {
                (Some(x), Some(y)) => Some(x.max(y)),
                (x, y) => x.or(y),
            },
            drops_after_rate_drop: match (a.drops_after_rate_drop, b.drops_after_rate_drop) {
                (Some(x), Some(y)) => Some(StepDrops::merge(x, y)),
                (x, y) => x.or(y),
            },
        }
    }
}

impl NetSim {
    /// The bottleneck's figures from the link's first input to `end`, utilization and
    /// queueing counted from `warm_up` after that input, and recovery measured from the
    /// first rate step that lowers the rate to the last datagram that queued
    /// `recovered_below` or more. `None` for a link without a rate, or one that has seen
    /// nothing.
    pub fn bottleneck_stats(
        &self,
        end: Instant,
        warm_up: Duration,
        recovered_below: Duration,
    ) -> Option<BottleneckStats> {
        let origin = self.origin()?;
        let warm = origin + warm_up;
        let log = self.queue_log();
        let after: Vec<_> = log.iter().filter(|s| s.departed >= warm).collect();
        let bits: f64 = after.iter().map(|s| s.bytes as f64 * 8.0).sum();
        let possible = self.capacity_bits(warm, end.max(warm))?;
        let mut delays: Vec<f64> = after.iter().map(|s| s.delay.as_secs_f64() * 1e3).collect();
        delays.sort_by(f64::total_cmp);
        let at = |q: f64| {
            delays
                .get(((delays.len().saturating_sub(1)) as f64 * q).round() as usize)
                .copied()
                .unwrap_or(0.0)
        };
        let stats = self.stats();
        let drops_after = self.drop_log().iter().filter(|t| **t >= warm).count();
        let step = self.first_rate_drop().map(|drop| origin + drop);
        let recovery_ms = step.map(|step| {
            log.iter()
                .filter(|s| s.departed >= step && s.delay >= recovered_below)
                .map(|s| (s.departed - step).as_secs_f64() * 1e3)
                .fold(0.0, f64::max)
        });
        let drops_after_rate_drop = step.map(|step| {
            let ms: Vec<f64> = self
                .drop_log()
                .iter()
                .filter(|t| **t >= step)
                .map(|t| (*t - step).as_secs_f64() * 1e3)
                .collect();
            StepDrops {
                datagrams: ms.len() as u64,
                span_ms: ms.first().zip(ms.last()).map(|(f, l)| [*f, *l]),
            }
        });
        Some(BottleneckStats {
            utilization_percent: if possible > 0.0 {
                bits * 100.0 / possible
            } else {
                0.0
            },
            queue_delay_ms: [at(0.5), at(0.95)],
            queue_delay_max_ms: delays.last().copied().unwrap_or(0.0),
            self_inflicted_loss_percent: stats.queue_drops as f64 * 100.0
                / stats.sent.max(1) as f64,
            self_inflicted_loss_after_warm_up_percent: drops_after as f64 * 100.0
                / (drops_after + after.len()).max(1) as f64,
            recovery_ms,
            drops_after_rate_drop,
        })
    }

    /// When (after the first input) the first rate step below the starting rate comes.
    fn first_rate_drop(&self) -> Option<Duration> {
        let start = self.config.rate_bps?;
        self.config
            .rate_steps
            .iter()
            .find(|(_, bps)| *bps < start)
            .map(|(at, _)| *at)
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::netsim::Datagram;
    use crate::test_instant;

    /// `bytes`-long datagrams handed to `sim` at `at`, after releasing what is due.
    fn send(sim: &mut NetSim, at: Instant, count: usize, bytes: usize) {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        sim.handle_timeout(at);
        while sim.poll_datagram().is_some() {}
        for _ in 0..count {
            let data = vec![0; bytes];
            sim.handle_datagram(
                at,
                Datagram {
                    from: addr,
                    to: addr,
                    data,
                },
            );
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn utilization_queueing_and_drops_come_from_what_the_bottleneck_carried() {
        // 800 kbit/s: a 1000-byte datagram takes 10 ms. The queue holds two of them (the
        // one being sent counts).
        let mut sim = NetSim::new("rate=800kbit,queue=2000bytes".parse().unwrap());
        let t0 = test_instant();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        // Before the warm-up: three at once, the third dropped; they queue 10 and 20 ms.
        send(&mut sim, t0, 3, 1000);
        // From the warm-up (100 ms) on: one every 20 ms, 100..=480 ms (20), each alone in
        // the queue (10 ms); at 200 ms two more come with it: one waits behind it (20 ms),
        // the other finds the queue full.
        for i in 0..20 {
            let extra = if i == 5 { 2 } else { 0 };
            send(&mut sim, ms(100 + 20 * i), 1 + extra, 1000);
        }
        let end = ms(500);
        sim.handle_timeout(end);
        let warm_up = Duration::from_millis(100);
        let b = sim
            .bottleneck_stats(end, warm_up, BottleneckStats::RECOVERED_BELOW)
            .unwrap();
        // 21 datagrams of 8000 bits left after 100 ms, of 400 ms at 800 kbit/s possible.
        assert!(
            close(b.utilization_percent, 21.0 * 8000.0 * 100.0 / 320_000.0),
            "{b:?}"
        );
        // Twenty queued 10 ms, one 20 ms: p50 and p95 are 10 ms, the largest 20 ms.
        assert!(close(b.queue_delay_ms[0], 10.0), "{b:?}");
        assert!(close(b.queue_delay_ms[1], 10.0), "{b:?}");
        assert!(close(b.queue_delay_max_ms, 20.0), "{b:?}");
        // 2 of 25 dropped; after the warm-up 1 dropped and 21 carried.
        assert!(close(b.self_inflicted_loss_percent, 8.0), "{b:?}");
        assert!(
            close(b.self_inflicted_loss_after_warm_up_percent, 100.0 / 22.0),
            "{b:?}"
        );
        assert_eq!(b.recovery_ms, None, "no rate step, no recovery");
        assert_eq!(sim.stats().queue_drops, 2);
    }

    #[test]
    fn recovery_runs_from_the_rate_drop_to_the_last_long_queueing() {
        // 800 kbit/s, then 400 kbit/s from 1 s on (1000 bytes take 20 ms), back up at 2 s.
        let config = "rate=800kbit,step=400kbit@1s,step=800kbit@2s,queue=1s";
        let mut sim = NetSim::new(config.parse().unwrap());
        let t0 = test_instant();
        send(&mut sim, t0, 1, 1000);
        // Ten at the drop: the k-th leaves 20k ms later, so the 8th (160 ms) is the first
        // to queue 150 ms or more and the 10th (200 ms) the last.
        let drop = t0 + Duration::from_secs(1);
        send(&mut sim, drop, 10, 1000);
        let end = t0 + Duration::from_secs(3);
        sim.handle_timeout(end);
        let delays: Vec<_> = sim.queue_log().iter().map(|s| s.delay).collect();
        assert_eq!(delays.last(), Some(&Duration::from_millis(200)));
        let b = sim
            .bottleneck_stats(end, Duration::ZERO, BottleneckStats::RECOVERED_BELOW)
            .unwrap();
        assert_eq!(b.recovery_ms, Some(200.0));
        // With a higher bar nothing queued long enough: recovered at once.
        let b = sim
            .bottleneck_stats(end, Duration::ZERO, Duration::from_millis(250))
            .unwrap();
        assert_eq!(b.recovery_ms, Some(0.0));
        // 11 datagrams over 1 s at 800 kbit/s, 1 s at 400 and 1 s at 800.
        assert!(
            close(b.utilization_percent, 11.0 * 8000.0 * 100.0 / 2_000_000.0),
            "{b:?}"
        );
    }

    #[test]
    fn drops_from_the_rate_drop_on_are_counted_with_their_times() {
        // 800 kbit/s (1000 bytes take 10 ms), 400 kbit/s from 1 s on (20 ms); a
        // datagram is admitted while what waits takes at most 50 ms to send.
        let config = "rate=800kbit,step=400kbit@1s,queue=50ms";
        let mut sim = NetSim::new(config.parse().unwrap());
        let t0 = test_instant();
        send(&mut sim, t0, 1, 1000);
        // Before the drop: six admitted (0-50 ms of waiting), four dropped.
        send(&mut sim, t0 + Duration::from_millis(100), 10, 1000);
        // At the drop and half a second after it: three admitted (0-40 ms), seven
        // dropped each time.
        let drop = t0 + Duration::from_secs(1);
        send(&mut sim, drop, 10, 1000);
        send(&mut sim, drop + Duration::from_millis(500), 10, 1000);
        let end = t0 + Duration::from_secs(2);
        sim.handle_timeout(end);
        assert_eq!(sim.stats().queue_drops, 18);
        let b = sim
            .bottleneck_stats(end, Duration::ZERO, BottleneckStats::RECOVERED_BELOW)
            .unwrap();
        assert_eq!(
            b.drops_after_rate_drop,
            Some(StepDrops {
                datagrams: 14,
                span_ms: Some([0.0, 500.0]),
            })
        );
        // Without a rate drop there is nothing to count from.
        let mut flat = NetSim::new("rate=800kbit,queue=50ms".parse().unwrap());
        send(&mut flat, t0, 10, 1000);
        flat.handle_timeout(end);
        let b = flat
            .bottleneck_stats(end, Duration::ZERO, BottleneckStats::RECOVERED_BELOW)
            .unwrap();
        assert_eq!(flat.stats().queue_drops, 4);
        assert_eq!(b.drops_after_rate_drop, None);
    }

    #[test]
    fn a_link_without_a_rate_or_input_has_no_bottleneck() {
        let t0 = test_instant();
        let mut sim = NetSim::new("loss=10%".parse().unwrap());
        send(&mut sim, t0, 5, 100);
        let (w, r) = (BottleneckStats::WARM_UP, BottleneckStats::RECOVERED_BELOW);
        assert_eq!(
            sim.bottleneck_stats(t0 + Duration::from_secs(10), w, r),
            None
        );
        let idle = NetSim::new("rate=1mbit".parse().unwrap());
        assert_eq!(idle.bottleneck_stats(t0, w, r), None);
    }

    #[test]
    fn the_mean_of_two_directions_keeps_the_worse_maximum_and_recovery() {
        // Utilization, queue p50, p95 and max, loss whole call and after the warm-up.
        let stats =
            |[u, p50, p95, max, loss, after]: [f64; 6], recovery_ms, drops| BottleneckStats {
                utilization_percent: u,
                queue_delay_ms: [p50, p95],
                queue_delay_max_ms: max,
                self_inflicted_loss_percent: loss,
                self_inflicted_loss_after_warm_up_percent: after,
                recovery_ms,
                drops_after_rate_drop: drops,
            };
        let drops = |datagrams, span_ms| Some(StepDrops { datagrams, span_ms });
        let a = stats(
            [80.0, 10.0, 40.0, 90.0, 1.0, 0.5],
            Some(300.0),
            drops(3, Some([20.0, 240.0])),
        );
        let b = stats(
            [60.0, 20.0, 60.0, 120.0, 3.0, 1.5],
            None,
            drops(5, Some([10.0, 180.0])),
        );
        let m = BottleneckStats::mean(&a, &b);
        assert_eq!(m.utilization_percent, 70.0);
        assert_eq!(m.queue_delay_ms, [15.0, 50.0]);
        assert_eq!(m.queue_delay_max_ms, 120.0);
        assert_eq!(m.self_inflicted_loss_percent, 2.0);
        assert_eq!(m.self_inflicted_loss_after_warm_up_percent, 1.0);
        assert_eq!(m.recovery_ms, Some(300.0));
        // Drops add up; the span runs from the earlier first to the later last.
        assert_eq!(m.drops_after_rate_drop, drops(8, Some([10.0, 240.0])));
        let none = stats([0.0; 6], None, drops(0, None));
        let m = BottleneckStats::mean(&a, &none);
        assert_eq!(m.drops_after_rate_drop, drops(3, Some([20.0, 240.0])));
    }
}
