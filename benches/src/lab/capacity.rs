//! What a capacity-limited link did to one direction of a call: how much of the
//! bottleneck the call used, how long its packets queued, what the queue dropped, and
//! how soon the queue came back down after the rate fell. The figures are the
//! simulator's own ([`NetSim::bottleneck_stats`]), so the virtual engine's links and the
//! real engine's clients (each reporting its own `--sim` in its `--stats-json`) measure
//! them the same way.

use std::time::{Duration, Instant};

pub use magpie_media::netsim::BottleneckStats;
use magpie_media::netsim::NetSim;

/// Utilization and queueing are measured from this long after the start: the sender's
/// rate search (GCC's ramp-up) is not the steady state (issue 13: "after 5 s").
pub const WARM_UP: Duration = BottleneckStats::WARM_UP;
/// "Back under 150 ms of queueing" (issue 13).
pub const RECOVERED_BELOW: Duration = BottleneckStats::RECOVERED_BELOW;

/// The figures of `sim` from its first input to `end` (`None` without a rate).
pub fn of(sim: &NetSim, end: Instant) -> Option<BottleneckStats> {
    sim.bottleneck_stats(end, WARM_UP, RECOVERED_BELOW)
}
