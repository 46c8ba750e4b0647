//! The rate controller of GCC (draft-ietf-rmcat-gcc-02 §5.5, with libwebrtc's
//! `AimdRateControl` refinements): increase while the delay is steady, multiplicatively
//! while the link's capacity is unknown and additively once an overuse has shown it; on
//! overuse, cut to 85 % of what actually arrives; hold while a queue drains. The capacity
//! is forgotten when what arrives leaves it by more than three deviations.

use std::time::{Duration, Instant};

use super::trendline::Usage;

/// The controller's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RateState {
    /// Keep the rate.
    Hold,
    /// Raise it.
    Increase,
    /// Cut it (for one update; then hold).
    Decrease,
}

/// What the controller did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AimdCounters {
    /// Cuts on overuse.
    pub decreases: u64,
    /// Updates that raised the rate multiplicatively (no capacity known).
    pub multiplicative_increases: u64,
    /// Updates that raised the rate additively (below a known capacity).
    pub additive_increases: u64,
    /// Updates spent holding.
    pub holds: u64,
}

/// AIMD rate control over the delay signal.
#[derive(Debug, Clone)]
pub struct Aimd {
    rate_bps: Option<f64>,
    min_bps: f64,
    max_bps: f64,
    state: RateState,
    last_update: Option<Instant>,
    last_decrease: Option<Instant>,
    /// The incoming rate at past overuses (the link's capacity), smoothed, and its
    /// normalized variance: increases turn additive near it.
    capacity: Option<f64>,
    capacity_var: f64,
    counters: AimdCounters,
}

impl Aimd {
    /// The cut on overuse, times the incoming rate.
    pub const BETA: f64 = 0.85;
    /// The least a cut keeps of the incoming rate, however long the queue.
    const MIN_BETA: f64 = 0.5;
    /// A cut aims to empty the queue the receiver sees within this,
    const DRAIN_TIME: Duration = Duration::from_secs(1);
    /// when the queue stands at least this long (a shorter one is jitter, or drains at
    /// GCC's pace).
    const DRAINED_FROM: Duration = Duration::from_millis(60);
    /// Multiplicative increase per second.
    const ETA: f64 = 1.08;
    /// Bits in a typical video packet, for the additive increase.
    const PACKET_BITS: f64 = 1200.0 * 8.0;

    /// A controller within `[min_bps, max_bps]`; it has no rate until the first update
    /// with a measured incoming rate.
    pub fn new(min_bps: u64, max_bps: u64) -> Self {
        Self {
            rate_bps: None,
            min_bps: min_bps as f64,
            max_bps: max_bps.max(min_bps) as f64,
            state: RateState::Hold,
            last_update: None,
            last_decrease: None,
            capacity: None,
            capacity_var: 0.4,
            counters: AimdCounters::default(),
        }
    }

    /// The estimate, once there is one.
    pub fn rate_bps(&self) -> Option<u64> {
        self.rate_bps.map(|r| r as u64)
    }

    /// The state after the last update.
    pub fn state(&self) -> RateState {
        self.state
    }

    /// Counters.
    pub fn counters(&self) -> AimdCounters {
        self.counters
    }

    /// One update at `now` with the detector's signal, the rate arriving (`None` while
    /// not yet measured) and the queueing delay the receiver sees; `rtt` paces the cuts
    /// and the additive increase.
    pub fn update(
        &mut self,
        now: Instant,
        usage: Usage,
        incoming_bps: Option<f64>,
        queue: Duration,
        rtt: Duration,
    ) -> Option<u64> {
        let dt = self
            .last_update
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t))
            .min(Duration::from_secs(1));
        self.last_update = Some(now);
        let incoming = incoming_bps?;
        let rate = *self
            .rate_bps
            .get_or_insert(incoming.clamp(self.min_bps, self.max_bps));
        self.state = match (usage, self.state) {
            (Usage::Overuse, _) => RateState::Decrease,
            (Usage::Underuse, _) => RateState::Hold,
            (Usage::Normal, RateState::Hold | RateState::Increase) => RateState::Increase,
            (Usage::Normal, RateState::Decrease) => RateState::Hold,
        };
        let next = match self.state {
            RateState::Hold => {
                self.counters.holds += 1;
                rate
            }
            RateState::Increase => {
                if self
                    .capacity
                    .is_some_and(|c| incoming > c + 3.0 * self.capacity_std(c))
                {
                    // Far above what the link carried before: it changed; forget it.
                    self.capacity = None;
                }
                let increased = if self.capacity.is_some() {
                    self.counters.additive_increases += 1;
                    let response = rtt.as_secs_f64() + 0.1;
                    rate + (Self::PACKET_BITS / response).max(1000.0) * dt.as_secs_f64()
                } else {
                    self.counters.multiplicative_increases += 1;
                    rate * Self::ETA.powf(dt.as_secs_f64())
                };
                // Never far above what actually arrives: an encoder that does not use
                // its rate must not earn an unbounded one. Nor does an increase lower
                // the rate (libwebrtc's `AimdRateControl`): a probe's result stands
                // while the encoder climbs to it.
                let limit = 1.5 * incoming + 10_000.0;
                if rate < limit {
                    increased.min(limit)
                } else {
                    rate
                }
            }
            RateState::Decrease => {
                let reduce_again = self.last_decrease.is_none_or(|t| {
                    now.saturating_duration_since(t)
                        >= rtt.clamp(Duration::from_millis(10), Duration::from_millis(200))
                }) || incoming < 0.5 * rate;
                if reduce_again {
                    self.counters.decreases += 1;
                    self.last_decrease = Some(now);
                    self.learn_capacity(incoming);
                    (Self::drain_factor(queue) * incoming).min(rate)
                } else {
                    rate
                }
            }
        };
        let next = next.clamp(self.min_bps, self.max_bps);
        self.rate_bps = Some(next);
        Some(next as u64)
    }

    /// Sets the rate to a probe's result (libwebrtc's `SetEstimate`); the first rate, if
    /// there was none.
    pub fn set_estimate(&mut self, rate_bps: u64) -> u64 {
        let rate = (rate_bps as f64).clamp(self.min_bps, self.max_bps);
        self.rate_bps = Some(rate);
        rate as u64
    }

    /// What a cut keeps of the incoming rate: GCC's β, less what drains the queue the
    /// receiver sees within [`Self::DRAIN_TIME`] (a queue of `q` holds `q × incoming`
    /// bits), at least [`Self::MIN_BETA`]. GCC's 0.85 stops the queue growing but
    /// leaves only 15 % of the link to empty it: 200 ms of queue takes 1.3 s to drain,
    /// plus the detection and the feedback, where issue 13 asks for 2 s in all.
    /// (libwebrtc's send side drains the same queue by holding the encoder back while
    /// more than a window of data is in flight; over REMB the sender cannot see what is
    /// in flight, but the receiver sees the queue.)
    fn drain_factor(queue: Duration) -> f64 {
        if queue < Self::DRAINED_FROM {
            return Self::BETA;
        }
        (Self::BETA - queue.as_secs_f64() / Self::DRAIN_TIME.as_secs_f64()).max(Self::MIN_BETA)
    }

    /// The capacity's standard deviation in bit/s (the variance is normalized in
    /// kbit/s, as libwebrtc keeps it).
    fn capacity_std(&self, capacity: f64) -> f64 {
        (self.capacity_var * capacity / 1000.0).sqrt() * 1000.0
    }

    fn learn_capacity(&mut self, incoming: f64) {
        if self
            .capacity
            .is_some_and(|c| incoming < c - 3.0 * self.capacity_std(c))
        {
            // Far below what the link carried before: it changed; start over.
            self.capacity = None;
        }
        let alpha = 0.05;
        let c = match self.capacity {
            None => incoming,
            Some(c) => (1.0 - alpha) * c + alpha * incoming,
        };
        let (c_kbps, error_kbps) = (c.max(1.0) / 1000.0, (c - incoming) / 1000.0);
        self.capacity_var = ((1.0 - alpha) * self.capacity_var
            + alpha * error_kbps * error_kbps / c_kbps)
            .clamp(0.4, 2.5);
        self.capacity = Some(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_instant;

    const RTT: Duration = Duration::from_millis(50);
    /// No queue standing.
    const Q0: Duration = Duration::ZERO;

    #[test]
    fn a_standing_queue_deepens_the_cut_to_drain_it_within_a_second() {
        let t0 = test_instant();
        let mut aimd = Aimd::new(50_000, 5_000_000);
        aimd.update(t0, Usage::Normal, Some(500_000.0), Q0, RTT);
        // 200 ms of queue at 500 kbit/s holds 100 kbit: the cut leaves 20 % of the
        // link to drain it (in 1 s) on top of GCC's 15 %.
        let queue = Duration::from_millis(200);
        let cut = aimd.update(t0 + RTT, Usage::Overuse, Some(500_000.0), queue, RTT);
        assert!(cut.unwrap().abs_diff(325_000) <= 1, "{cut:?}");
        // However long the queue, a cut keeps half of what arrives.
        let t = t0 + RTT * 3;
        let cut = aimd.update(
            t,
            Usage::Overuse,
            Some(300_000.0),
            Duration::from_secs(2),
            RTT,
        );
        assert_eq!(cut, Some(150_000));
    }

    #[test]
    fn steady_delay_ramps_up_multiplicatively_to_the_cap_of_what_arrives() {
        let t0 = test_instant();
        let mut aimd = Aimd::new(50_000, 5_000_000);
        let mut incoming = 500_000.0;
        let mut rate = 0;
        for i in 0..100 {
            let now = t0 + Duration::from_millis(100 * i);
            rate = aimd
                .update(now, Usage::Normal, Some(incoming), Q0, RTT)
                .unwrap();
            // The sender follows the estimate.
            incoming = rate as f64;
        }
        // 10 s at 8 %/s: about 2.16 times the start.
        assert!(rate > 1_000_000, "{rate}");
        assert_eq!(aimd.state(), RateState::Increase);
        assert!(aimd.counters().multiplicative_increases > 90);
    }

    #[test]
    fn overuse_cuts_to_85_percent_of_what_arrives_at_most_once_an_rtt() {
        let t0 = test_instant();
        let mut aimd = Aimd::new(50_000, 5_000_000);
        aimd.update(t0, Usage::Normal, Some(1_000_000.0), Q0, RTT);
        let cut = aimd.update(t0 + RTT, Usage::Overuse, Some(800_000.0), Q0, RTT);
        assert_eq!(cut, Some(680_000));
        // Again within the RTT: held.
        let held = aimd.update(t0 + RTT + RTT / 2, Usage::Overuse, Some(790_000.0), Q0, RTT);
        assert_eq!(held, Some(680_000));
        assert_eq!(aimd.counters().decreases, 1);
        // Underuse holds while the queue drains; normal then increases again.
        let t = t0 + RTT * 3;
        assert_eq!(
            aimd.update(t, Usage::Underuse, Some(700_000.0), Q0, RTT),
            Some(680_000)
        );
        assert_eq!(aimd.state(), RateState::Hold);
        let up = aimd
            .update(t + RTT, Usage::Normal, Some(700_000.0), Q0, RTT)
            .unwrap();
        assert!(up > 680_000);
    }

    #[test]
    fn near_a_known_capacity_the_increase_is_additive() {
        let t0 = test_instant();
        let mut aimd = Aimd::new(50_000, 5_000_000);
        aimd.update(t0, Usage::Normal, Some(1_000_000.0), Q0, RTT);
        aimd.update(t0 + RTT, Usage::Overuse, Some(1_000_000.0), Q0, RTT);
        let mut now = t0 + RTT;
        let mut rate = 0;
        for _ in 0..10 {
            now += Duration::from_millis(100);
            rate = aimd
                .update(now, Usage::Normal, Some(900_000.0), Q0, RTT)
                .unwrap();
        }
        // 1 s additive from 850 kbit/s: about one packet per (RTT + 100 ms), 64 kbit/s.
        assert!((880_000..950_000).contains(&rate), "{rate}");
        assert!(aimd.counters().additive_increases >= 9);
    }

    #[test]
    fn a_probe_result_stands_while_less_arrives() {
        let t0 = test_instant();
        let mut aimd = Aimd::new(50_000, 5_000_000);
        aimd.update(t0, Usage::Normal, Some(1_000_000.0), Q0, RTT);
        assert_eq!(aimd.set_estimate(2_400_000), 2_400_000);
        // 1 Mbit/s still arrives (the encoder has not climbed yet): no increase beyond
        // 1.5 times it, but no fall to it either.
        let mut now = t0;
        for _ in 0..10 {
            now += Duration::from_millis(100);
            let rate = aimd.update(now, Usage::Normal, Some(1_000_000.0), Q0, RTT);
            assert_eq!(rate, Some(2_400_000));
        }
        // A cut still follows what arrives.
        let cut = aimd.update(now + RTT, Usage::Overuse, Some(2_000_000.0), Q0, RTT);
        assert_eq!(cut, Some(1_700_000));
        // And a probe result is bounded by the configured range.
        assert_eq!(aimd.set_estimate(9_000_000), 5_000_000);
    }

    #[test]
    fn no_rate_before_the_incoming_rate_is_measured() {
        let mut aimd = Aimd::new(50_000, 5_000_000);
        assert_eq!(
            aimd.update(test_instant(), Usage::Overuse, None, Q0, RTT),
            None
        );
        assert_eq!(aimd.rate_bps(), None);
    }
}
