//! What a capacity-limited link did to one direction of a call: how much of the
//! bottleneck the call used, how long its packets queued, what the queue dropped, and
//! how soon the queue came back down after the rate fell.

use std::time::{Duration, Instant};

use magpie_media::netsim::NetSim;
use serde::{Deserialize, Serialize};

use super::condition::Capacity;

/// Utilization and queueing are measured from this long after the start: the sender's
/// rate search (GCC's ramp-up) is not the steady state (issue 13: "after 5 s").
pub const WARM_UP: Duration = Duration::from_secs(5);
/// "Back under 150 ms of queueing" (issue 13).
pub const RECOVERED_BELOW: Duration = Duration::from_millis(150);

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
    /// From the first rate drop until the last datagram that queued 150 ms or more, ms
    /// (0 when none did; `None` without a drop).
    pub recovery_ms: Option<f64>,
}

impl BottleneckStats {
    /// The figures of `sim` from its first input to `end`.
    pub fn of(sim: &NetSim, capacity: &Capacity, end: Instant) -> Option<Self> {
        let origin = sim.origin()?;
        let warm = origin + WARM_UP;
        let log = sim.queue_log();
        let after: Vec<_> = log.iter().filter(|s| s.departed >= warm).collect();
        let bits: f64 = after.iter().map(|s| s.bytes as f64 * 8.0).sum();
        let possible = sim.capacity_bits(warm, end.max(warm))?;
        let mut delays: Vec<f64> = after.iter().map(|s| s.delay.as_secs_f64() * 1e3).collect();
        delays.sort_by(f64::total_cmp);
        let at = |q: f64| {
            delays
                .get(((delays.len().saturating_sub(1)) as f64 * q).round() as usize)
                .copied()
                .unwrap_or(0.0)
        };
        let stats = sim.stats();
        let drops_after = sim.drop_log().iter().filter(|t| **t >= warm).count();
        let recovery_ms = capacity.first_drop().map(|drop| {
            let step = origin + Duration::from_millis(u64::from(drop.at_ms));
            log.iter()
                .filter(|s| s.departed >= step && s.delay >= RECOVERED_BELOW)
                .map(|s| (s.departed - step).as_secs_f64() * 1e3)
                .fold(0.0, f64::max)
        });
        Some(Self {
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
        })
    }

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
        }
    }
}
