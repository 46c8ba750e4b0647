//! The delay-gradient part of GCC (draft-ietf-rmcat-gcc-02 §5.3-5.4, as libwebrtc's
//! `TrendlineEstimator` does it): the slope of the smoothed accumulated one-way delay
//! variation over the last groups, and an overuse detector whose threshold adapts to it.

use std::collections::VecDeque;
use std::time::Duration;

/// What the delay gradient says about the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Usage {
    /// Delay steady: the queue neither grows nor shrinks.
    Normal,
    /// Delay growing: we send more than the bottleneck carries.
    Overuse,
    /// Delay falling: a queue drains.
    Underuse,
}

/// Trendline over inter-group delay variation, with the adaptive threshold.
#[derive(Debug, Clone)]
pub struct Trendline {
    /// Delay variations summed since the start, ms.
    accumulated: f64,
    /// `accumulated`, exponentially smoothed.
    smoothed: f64,
    /// (arrival since the first group ms, smoothed delay ms), the regression window.
    window: VecDeque<(f64, f64)>,
    /// Groups seen, capped: the trend is scaled by it while the window fills.
    deltas: u32,
    /// The last trend computed, scaled (ms).
    modified_trend: f64,
    threshold: f64,
    /// How long the trend has been over the threshold, ms.
    overuse_time: f64,
    overuse_count: u32,
    previous_trend: f64,
    usage: Usage,
}

impl Default for Trendline {
    fn default() -> Self {
        Self {
            accumulated: 0.0,
            smoothed: 0.0,
            window: VecDeque::new(),
            deltas: 0,
            modified_trend: 0.0,
            threshold: Self::INITIAL_THRESHOLD,
            overuse_time: 0.0,
            overuse_count: 0,
            previous_trend: 0.0,
            usage: Usage::Normal,
        }
    }
}

impl Trendline {
    /// Groups in the regression (libwebrtc's default).
    const WINDOW: usize = 20;
    /// Groups needed before a slope is computed.
    const MIN_POINTS: usize = 5;
    const SMOOTHING: f64 = 0.9;
    /// Scales the slope into the threshold's units (libwebrtc `kDefaultTrendlineThresholdGain`).
    const GAIN: f64 = 4.0;
    const MAX_DELTAS: u32 = 60;
    /// The adaptive threshold (draft §5.4): start, bounds and the gains up and down.
    const INITIAL_THRESHOLD: f64 = 12.5;
    const MIN_THRESHOLD: f64 = 6.0;
    const MAX_THRESHOLD: f64 = 600.0;
    const K_UP: f64 = 0.0087;
    const K_DOWN: f64 = 0.039;
    /// An outlier this far beyond the threshold does not move it.
    const MAX_ADAPT_OFFSET: f64 = 15.0;
    /// Overuse must last this long (ms) before it is signalled.
    const OVERUSE_TIME: f64 = 10.0;

    /// The current signal.
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// The last scaled trend, ms.
    pub fn trend(&self) -> f64 {
        self.modified_trend
    }

    /// The current adaptive threshold, ms.
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// One group's delay variation: `send_delta` between its send time and the previous
    /// group's, `arrival_delta` between their arrivals, `arrival` the group's arrival
    /// since the first group. Returns the new signal.
    pub fn update(
        &mut self,
        send_delta: Duration,
        arrival_delta: Duration,
        arrival: Duration,
    ) -> Usage {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let variation = ms(arrival_delta) - ms(send_delta);
        self.deltas = (self.deltas + 1).min(Self::MAX_DELTAS);
        self.accumulated += variation;
        self.smoothed =
            Self::SMOOTHING * self.smoothed + (1.0 - Self::SMOOTHING) * self.accumulated;
        self.window.push_back((ms(arrival), self.smoothed));
        if self.window.len() > Self::WINDOW {
            self.window.pop_front();
        }
        let mut trend = self.previous_trend;
        // libwebrtc waits for a full window; a queue filling at the start of a call
        // (a start rate above the capacity) is over before that, so a few groups do
        // (the trend is scaled by how many there are, which damps the early ones).
        if self.window.len() >= Self::MIN_POINTS
            && let Some(slope) = slope(&self.window)
        {
            trend = slope;
        }
        self.detect(trend, ms(arrival_delta).min(100.0));
        self.usage
    }

    fn detect(&mut self, trend: f64, dt: f64) {
        let modified = f64::from(self.deltas) * trend * Self::GAIN;
        self.modified_trend = modified;
        if modified > self.threshold {
            if self.overuse_time == 0.0 {
                // First sample over: assume it has been over for half the interval.
                self.overuse_time = dt / 2.0;
            } else {
                self.overuse_time += dt;
            }
            self.overuse_count += 1;
            if self.overuse_time > Self::OVERUSE_TIME
                && self.overuse_count > 1
                && trend >= self.previous_trend
            {
                self.overuse_time = 0.0;
                self.overuse_count = 0;
                self.usage = Usage::Overuse;
            }
        } else if modified < -self.threshold {
            self.overuse_time = 0.0;
            self.overuse_count = 0;
            self.usage = Usage::Underuse;
        } else {
            self.overuse_time = 0.0;
            self.overuse_count = 0;
            self.usage = Usage::Normal;
        }
        self.previous_trend = trend;
        self.adapt_threshold(modified, dt);
    }

    fn adapt_threshold(&mut self, modified: f64, dt: f64) {
        if modified.abs() > self.threshold + Self::MAX_ADAPT_OFFSET {
            return;
        }
        let k = if modified.abs() < self.threshold {
            Self::K_DOWN
        } else {
            Self::K_UP
        };
        self.threshold += k * (modified.abs() - self.threshold) * dt;
        self.threshold = self
            .threshold
            .clamp(Self::MIN_THRESHOLD, Self::MAX_THRESHOLD);
    }
}

/// Least-squares slope of `points`, `None` when they share one x.
fn slope(points: &VecDeque<(f64, f64)>) -> Option<f64> {
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(num, den), (x, y)| {
        (num + (x - mx) * (y - my), den + (x - mx) * (x - mx))
    });
    (den > 0.0).then(|| num / den)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds groups sent every 33 ms whose arrivals spread by `extra_ms` more each.
    fn feed(t: &mut Trendline, groups: u32, extra_ms: f64, at: &mut Duration) -> Vec<Usage> {
        let send = Duration::from_millis(33);
        let arrival = Duration::from_secs_f64((33.0 + extra_ms) / 1e3);
        (0..groups)
            .map(|_| {
                *at += arrival;
                t.update(send, arrival, *at)
            })
            .collect()
    }

    #[test]
    fn a_steady_delay_is_normal() {
        let mut t = Trendline::default();
        let mut at = Duration::ZERO;
        let signals = feed(&mut t, 200, 0.0, &mut at);
        assert!(signals.iter().all(|u| *u == Usage::Normal));
    }

    #[test]
    fn a_growing_delay_is_overuse_and_a_draining_one_underuse() {
        let mut t = Trendline::default();
        let mut at = Duration::ZERO;
        feed(&mut t, 40, 0.0, &mut at);
        // The queue grows 3 ms a group (about 10 % over capacity).
        let growing = feed(&mut t, 30, 3.0, &mut at);
        assert!(growing.contains(&Usage::Overuse), "{growing:?}");
        let draining = feed(&mut t, 30, -3.0, &mut at);
        assert!(draining.contains(&Usage::Underuse), "{draining:?}");
        assert_eq!(*draining.last().unwrap(), Usage::Underuse);
    }

    #[test]
    fn the_threshold_rises_with_noise_and_stays_in_bounds() {
        let mut t = Trendline::default();
        let mut at = Duration::ZERO;
        for i in 0..500 {
            // Jitter of ±8 ms around a steady delay.
            let extra = if i % 2 == 0 { 8.0 } else { -8.0 };
            feed(&mut t, 1, extra, &mut at);
        }
        assert!((Trendline::MIN_THRESHOLD..=Trendline::MAX_THRESHOLD).contains(&t.threshold()));
        assert_ne!(t.usage(), Usage::Overuse);
    }
}
