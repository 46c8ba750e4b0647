//! The impairment description and its short string form,
//! e.g. `loss=10%,delay=25ms,jitter=5ms,burst=4`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use thiserror::Error;

/// A bad impairment string.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum NetSimParseError {
    /// A key this simulator does not know.
    #[error(
        "unknown impairment `{0}` (known: loss, burst, delay, jitter, reorder, dup, rate, step, \
         queue, seed)"
    )]
    UnknownKey(String),
    /// A key given without `=value`.
    #[error("`{0}` needs a value, e.g. `{0}=...`")]
    MissingValue(String),
    /// A value that does not parse for its key.
    #[error("bad value `{value}` for `{key}`: expected {expected}")]
    BadValue {
        /// The key.
        key: String,
        /// The value given.
        value: String,
        /// What would have been accepted.
        expected: &'static str,
    },
}

/// How a simulated link impairs datagrams. Defaults to a perfect link.
#[derive(Clone, PartialEq)]
pub struct NetSimConfig {
    /// Long-run fraction of datagrams lost, `0.0..=1.0`.
    pub(crate) loss: f64,
    /// Mean loss burst length in datagrams; `Some` selects the Gilbert-Elliott model.
    pub(crate) burst: Option<f64>,
    /// Fixed one-way delay.
    pub(crate) delay: Duration,
    /// Mean extra delay, drawn uniformly from `[0, 2 × jitter]` for each datagram.
    pub(crate) jitter: Duration,
    /// Whether jitter may reorder datagrams (otherwise the link stays FIFO).
    pub(crate) reorder: bool,
    /// Fraction of datagrams delivered twice.
    pub(crate) duplicate: f64,
    /// Bottleneck rate in bits per second; `None` for unlimited.
    pub(crate) rate_bps: Option<u64>,
    /// Rate changes of the bottleneck: from this long after the link's first input on,
    /// it runs at this many bits per second. Sorted by time.
    pub(crate) rate_steps: Vec<(Duration, u64)>,
    /// Longest queueing delay before the bottleneck drops (tail drop).
    pub(crate) queue: Duration,
    /// The most bytes the bottleneck queue holds, when sized in bytes rather than time.
    pub(crate) queue_bytes: Option<usize>,
    /// RNG seed.
    pub(crate) seed: u64,
}

impl Default for NetSimConfig {
    fn default() -> Self {
        Self {
            loss: 0.0,
            burst: None,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            reorder: false,
            duplicate: 0.0,
            rate_bps: None,
            rate_steps: Vec::new(),
            // A typical home-router buffer: ~200 ms at the bottleneck rate.
            queue: Duration::from_millis(200),
            queue_bytes: None,
            seed: 0,
        }
    }
}

impl NetSimConfig {
    /// Random (or, with [`Self::set_burst`], bursty) loss fraction.
    pub fn set_loss(mut self, fraction: f64) -> Self {
        self.loss = fraction.clamp(0.0, 1.0);
        self
    }
    /// Mean loss burst length (Gilbert-Elliott); `None` for independent loss.
    pub fn set_burst(mut self, mean_len: Option<f64>) -> Self {
        self.burst = mean_len.map(|b| b.max(1.0));
        self
    }
    /// One-way delay.
    pub fn set_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
    /// Mean jitter.
    pub fn set_jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }
    /// Whether jitter may reorder.
    pub fn set_reorder(mut self, reorder: bool) -> Self {
        self.reorder = reorder;
        self
    }
    /// Duplication fraction.
    pub fn set_duplicate(mut self, fraction: f64) -> Self {
        self.duplicate = fraction.clamp(0.0, 1.0);
        self
    }
    /// Bottleneck rate.
    pub fn set_rate(mut self, bps: Option<u64>) -> Self {
        self.rate_bps = bps.filter(|&r| r > 0);
        self
    }
    /// Bottleneck queue length, as a delay at the current rate.
    pub fn set_queue(mut self, queue: Duration) -> Self {
        self.queue = queue;
        self.queue_bytes = None;
        self
    }
    /// Bottleneck queue length in bytes (instead of a delay).
    pub fn set_queue_bytes(mut self, bytes: usize) -> Self {
        self.queue_bytes = Some(bytes.max(1));
        self
    }
    /// Adds a rate change: `at` after the link's first input, the bottleneck runs at
    /// `bps` (a link without a rate gets one from then on).
    pub fn add_rate_step(mut self, at: Duration, bps: u64) -> Self {
        self.rate_steps.push((at, bps.max(1)));
        self.rate_steps.sort_by_key(|(at, _)| *at);
        self
    }
    /// The bottleneck rate `since` the link's first input, `None` when unlimited.
    pub fn rate_at(&self, since: Duration) -> Option<u64> {
        self.rate_steps
            .iter()
            .rev()
            .find(|(at, _)| *at <= since)
            .map(|(_, bps)| *bps)
            .or(self.rate_bps)
    }
    /// The rate changes, as (time after the first input, bits per second).
    pub fn rate_steps(&self) -> &[(Duration, u64)] {
        &self.rate_steps
    }
    /// RNG seed.
    pub fn set_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    /// The configured one-way delay.
    pub fn delay(&self) -> Duration {
        self.delay
    }
}

impl fmt::Debug for NetSimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            loss,
            burst,
            delay,
            jitter,
            reorder,
            duplicate,
            rate_bps,
            rate_steps,
            queue,
            queue_bytes,
            seed,
        } = self;
        f.debug_struct("NetSimConfig")
            .field("loss", loss)
            .field("burst", burst)
            .field("delay", delay)
            .field("jitter", jitter)
            .field("reorder", reorder)
            .field("duplicate", duplicate)
            .field("rate_bps", rate_bps)
            .field("rate_steps", rate_steps)
            .field("queue", queue)
            .field("queue_bytes", queue_bytes)
            .field("seed", seed)
            .finish()
    }
}

impl FromStr for NetSimConfig {
    type Err = NetSimParseError;

    /// Parses `key=value` pairs separated by commas. Keys: `loss` and `dup` (`10%` or
    /// `0.1`), `burst` (mean burst length), `delay`, `jitter` and `queue` (`25ms`, `1s`,
    /// `500us`; `queue` also takes bytes: `30000bytes`, `64kB`), `reorder` (flag, or
    /// `=true/false`), `rate` (`2mbit`, `500kbit`, `64000` bits/s), `step` (a rate change,
    /// `500kbit@10s`, repeatable) and `seed`. An empty string or `none` is a perfect link.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut config = Self::default();
        let s = s.trim();
        if s.is_empty() || s.eq_ignore_ascii_case("none") {
            return Ok(config);
        }
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (key, value) = match item.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim())),
                None => (item, None),
            };
            let need = || value.ok_or_else(|| NetSimParseError::MissingValue(key.to_owned()));
            let bad = |expected| NetSimParseError::BadValue {
                key: key.to_owned(),
                value: value.unwrap_or_default().to_owned(),
                expected,
            };
            match key {
                "loss" => config.loss = fraction(need()?).ok_or_else(|| bad(PERCENT))?,
                "dup" | "duplicate" => {
                    config.duplicate = fraction(need()?).ok_or_else(|| bad(PERCENT))?;
                }
                "burst" => {
                    let b: f64 = need()?.parse().map_err(|_| bad("a burst length >= 1"))?;
                    if !(1.0..=1e6).contains(&b) {
                        return Err(bad("a burst length >= 1"));
                    }
                    config.burst = Some(b);
                }
                "delay" => config.delay = duration(need()?).ok_or_else(|| bad(DURATION))?,
                "jitter" => config.jitter = duration(need()?).ok_or_else(|| bad(DURATION))?,
                "queue" => {
                    let v = need()?;
                    match bytes(v) {
                        Some(b) => config.queue_bytes = Some(b),
                        None => config.queue = duration(v).ok_or_else(|| bad(QUEUE))?,
                    }
                }
                "step" => {
                    let (r, at) = need()?.split_once('@').ok_or_else(|| bad(STEP))?;
                    let r = rate(r.trim()).ok_or_else(|| bad(STEP))?;
                    let at = duration(at.trim()).ok_or_else(|| bad(STEP))?;
                    config = config.add_rate_step(at, r);
                }
                "reorder" => {
                    config.reorder = match value {
                        None | Some("true" | "yes" | "1") => true,
                        Some("false" | "no" | "0") => false,
                        Some(_) => return Err(bad("true or false")),
                    };
                }
                "rate" => config.rate_bps = Some(rate(need()?).ok_or_else(|| bad(RATE))?),
                "seed" => config.seed = need()?.parse().map_err(|_| bad("an integer"))?,
                _ => return Err(NetSimParseError::UnknownKey(key.to_owned())),
            }
        }
        Ok(config)
    }
}

const PERCENT: &str = "a fraction such as `10%` or `0.1`";
const DURATION: &str = "a duration such as `25ms`, `1s` or `500us`";
const RATE: &str = "a positive rate such as `2mbit`, `500kbit` or `64000`";
const QUEUE: &str = "a delay such as `100ms` or a size such as `30000bytes` or `64kB`";
const STEP: &str = "a rate and a time after the start, such as `500kbit@10s`";

/// A byte count: `30000bytes` or `64kB` (`None` for anything else, e.g. a duration).
fn bytes(v: &str) -> Option<usize> {
    let (num, scale) = if let Some(n) = v.strip_suffix("bytes") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix("kB") {
        (n, 1e3)
    } else {
        return None;
    };
    let b = num.trim().parse::<f64>().ok()? * scale;
    (b.is_finite() && (1.0..1e10).contains(&b)).then_some(b as usize)
}

fn fraction(v: &str) -> Option<f64> {
    let f = match v.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().ok()? / 100.0,
        None => v.parse::<f64>().ok()?,
    };
    (0.0..=1.0).contains(&f).then_some(f)
}

fn duration(v: &str) -> Option<Duration> {
    let (num, scale) = if let Some(n) = v.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = v.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1.0)
    } else {
        return None;
    };
    let secs = num.trim().parse::<f64>().ok()? * scale;
    (secs.is_finite() && (0.0..=3600.0).contains(&secs)).then(|| Duration::from_secs_f64(secs))
}

fn rate(v: &str) -> Option<u64> {
    let lower = v.to_ascii_lowercase();
    let (num, scale) = [
        ("mbit", 1e6),
        ("mbps", 1e6),
        ("kbit", 1e3),
        ("kbps", 1e3),
        ("bps", 1.0),
    ]
    .iter()
    .find_map(|(suffix, scale)| lower.strip_suffix(suffix).map(|n| (n.to_owned(), *scale)))
    .unwrap_or((lower.clone(), 1.0));
    let bps = num.trim().parse::<f64>().ok()? * scale;
    (bps.is_finite() && (1.0..1e12).contains(&bps)).then_some(bps as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let c: NetSimConfig = "loss=10%,delay=25ms,jitter=5ms,burst=4".parse().unwrap();
        assert_eq!(c.loss, 0.1);
        assert_eq!(c.delay, Duration::from_millis(25));
        assert_eq!(c.jitter, Duration::from_millis(5));
        assert_eq!(c.burst, Some(4.0));
    }

    #[test]
    fn parses_rates_flags_and_fractions() {
        let c: NetSimConfig = "rate=2mbit, queue=50ms, reorder, dup=0.01, seed=9"
            .parse()
            .unwrap();
        assert_eq!(c.rate_bps, Some(2_000_000));
        assert_eq!(c.queue, Duration::from_millis(50));
        assert!(c.reorder);
        assert_eq!(c.duplicate, 0.01);
        assert_eq!(c.seed, 9);
        assert_eq!("".parse::<NetSimConfig>().unwrap(), NetSimConfig::default());
    }

    #[test]
    fn errors_name_the_key_and_the_expected_form() {
        let e = "loss=110%".parse::<NetSimConfig>().unwrap_err();
        assert!(e.to_string().contains("`loss`") && e.to_string().contains("10%"));
        assert_eq!(
            "lose=1%".parse::<NetSimConfig>().unwrap_err(),
            NetSimParseError::UnknownKey("lose".into())
        );
        assert_eq!(
            "delay".parse::<NetSimConfig>().unwrap_err(),
            NetSimParseError::MissingValue("delay".into())
        );
        assert!("delay=25".parse::<NetSimConfig>().is_err());
        assert!("rate=fast".parse::<NetSimConfig>().is_err());
        assert!("burst=0.5".parse::<NetSimConfig>().is_err());
        for bad in [
            "step=500kbit",
            "step=fast@1s",
            "step=1mbit@soon",
            "queue=lots",
        ] {
            let e = bad.parse::<NetSimConfig>().unwrap_err();
            assert!(matches!(e, NetSimParseError::BadValue { .. }), "{bad}: {e}");
        }
    }

    #[test]
    fn rate_steps_and_byte_queues_parse_and_apply_in_time_order() {
        let c: NetSimConfig = "rate=2500kbit,step=2500kbit@20s,step=500kbit@10s,queue=64kB"
            .parse()
            .unwrap();
        assert_eq!(c.queue_bytes, Some(64_000));
        let at = Duration::from_secs;
        assert_eq!(c.rate_at(at(0)), Some(2_500_000));
        assert_eq!(c.rate_at(at(10)), Some(500_000));
        assert_eq!(c.rate_at(at(15)), Some(500_000));
        assert_eq!(c.rate_at(at(25)), Some(2_500_000));
        assert_eq!(c.rate_steps().len(), 2);
        let q: NetSimConfig = "queue=30000bytes".parse().unwrap();
        assert_eq!(q.queue_bytes, Some(30_000));
        assert_eq!(NetSimConfig::default().rate_at(at(5)), None);
    }
}
