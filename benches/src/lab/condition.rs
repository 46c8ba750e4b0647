//! The conditions a lab run covers: link loss, round-trip time, jitter and the recovery
//! switches, and the matrix built from them.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use magpie_media::netsim::{NetSimConfig, NetSimParseError};
use serde::{Deserialize, Serialize};

/// How the link loses datagrams.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum LossProfile {
    /// Independent loss of `percent` of datagrams.
    Random {
        /// Long-run loss, percent.
        percent: f64,
    },
    /// Gilbert-Elliott: `percent` long-run loss in bursts of `burst` datagrams on average.
    Bursty {
        /// Long-run loss, percent.
        percent: f64,
        /// Mean burst length, datagrams.
        burst: f64,
    },
}

impl LossProfile {
    /// The bursty profile of the default matrix: 5 % long-run loss in bursts of 4
    /// datagrams (80 ms of audio, more than one FEC frame can repair).
    pub const GILBERT_ELLIOTT: Self = Self::Bursty {
        percent: 5.0,
        burst: 4.0,
    };

    /// Long-run loss, percent.
    pub fn percent(&self) -> f64 {
        match *self {
            Self::Random { percent } | Self::Bursty { percent, .. } => percent,
        }
    }
}

impl fmt::Display for LossProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Random { percent } => write!(f, "{percent}%"),
            Self::Bursty { percent, burst } => write!(f, "ge{percent}/{burst}"),
        }
    }
}

/// A loss list entry that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("bad loss `{0}`: expected a percentage (`10`, `10%`), `ge` or `geLOSS/BURST` (`ge5/4`)")]
pub struct LossParseError(String);

impl FromStr for LossProfile {
    type Err = LossParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || LossParseError(s.to_owned());
        let number = |t: &str| -> Result<f64, LossParseError> {
            let v: f64 = t.trim_end_matches('%').parse().map_err(|_| bad())?;
            if (0.0..=100.0).contains(&v) {
                Ok(v)
            } else {
                Err(bad())
            }
        };
        let s = s.trim();
        if s == "ge" || s == "burst" {
            return Ok(Self::GILBERT_ELLIOTT);
        }
        if let Some(rest) = s.strip_prefix("ge") {
            let (percent, burst) = rest.split_once('/').ok_or_else(bad)?;
            let burst: f64 = burst.parse().map_err(|_| bad())?;
            if burst < 1.0 {
                return Err(bad());
            }
            return Ok(Self::Bursty {
                percent: number(percent)?,
                burst,
            });
        }
        Ok(Self::Random {
            percent: number(s)?,
        })
    }
}

/// A rate change of a capacity-limited link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateStep {
    /// The new rate, kbit/s.
    pub kbps: u32,
    /// When, ms after the call starts.
    pub at_ms: u32,
}

impl fmt::Display for RateStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}s", self.kbps, f64::from(self.at_ms) / 1000.0)
    }
}

/// A `--capacity-step` entry that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("bad rate step `{0}`: expected KBPS@SECONDS, e.g. `500@10s` or `500@10`")]
pub struct StepParseError(String);

impl FromStr for RateStep {
    type Err = StepParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || StepParseError(s.to_owned());
        let (kbps, at) = s.trim().split_once('@').ok_or_else(bad)?;
        let kbps: u32 = kbps.trim().parse().map_err(|_| bad())?;
        let secs: f64 = at.trim().trim_end_matches('s').parse().map_err(|_| bad())?;
        if kbps == 0 || !(0.0..=3600.0).contains(&secs) {
            return Err(bad());
        }
        Ok(Self {
            kbps,
            at_ms: (secs * 1000.0).round() as u32,
        })
    }
}

/// A bottleneck on the link: a rate, a drop-tail queue, and up to two rate changes
/// (a drop and a return).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    /// The rate at the start, kbit/s.
    pub kbps: u32,
    /// The drop-tail queue, as the time it takes to drain at the current rate.
    pub queue_ms: u32,
    /// Rate changes, in time order.
    pub steps: [Option<RateStep>; 2],
}

impl Capacity {
    /// A home router's buffer: 200 ms at the bottleneck rate (the simulator's default).
    pub const DEFAULT_QUEUE_MS: u32 = 200;

    /// The first rate step that lowers the rate, if any.
    pub fn first_drop(&self) -> Option<RateStep> {
        self.steps
            .iter()
            .flatten()
            .copied()
            .find(|s| s.kbps < self.kbps)
    }
}

impl fmt::Display for Capacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} kbit/s", self.kbps)?;
        for step in self.steps.iter().flatten() {
            write!(f, " then {step}")?;
        }
        Ok(())
    }
}

/// One point of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Condition {
    /// Loss, the same in both directions.
    pub loss: LossProfile,
    /// Round-trip time: each direction delays datagrams by half of it.
    pub rtt_ms: u32,
    /// Mean jitter: each datagram gets an extra delay drawn uniformly from
    /// `[0, 2 × jitter]` (so it also adds `jitter` to the mean one-way delay); the
    /// link stays FIFO, as the client's `--sim` does.
    pub jitter_ms: u32,
    /// Retransmission (NACK/RTX) on.
    pub nack: bool,
    /// Opus in-band FEC on.
    pub fec: bool,
    /// RFC 2198 audio redundancy offered (sent while loss is reported).
    #[serde(default)]
    pub red: bool,
    /// A bottleneck, the same both ways; `None` for unlimited.
    #[serde(default)]
    pub capacity: Option<Capacity>,
}

impl Condition {
    /// The impairment of one direction, in the `--sim` syntax both engines parse.
    pub fn sim_spec(&self) -> String {
        let delay = if self.rtt_ms.is_multiple_of(2) {
            format!("{}ms", self.rtt_ms / 2)
        } else {
            format!("{}us", u64::from(self.rtt_ms) * 500)
        };
        let mut spec = format!(
            "loss={}%,delay={delay},jitter={}ms",
            self.loss.percent(),
            self.jitter_ms
        );
        if let LossProfile::Bursty { burst, .. } = self.loss {
            spec.push_str(&format!(",burst={burst}"));
        }
        if let Some(c) = self.capacity {
            spec.push_str(&format!(",rate={}kbit,queue={}ms", c.kbps, c.queue_ms));
            for step in c.steps.iter().flatten() {
                spec.push_str(&format!(",step={}kbit@{}ms", step.kbps, step.at_ms));
            }
        }
        spec
    }

    /// The impairment of one direction, seeded.
    pub fn netsim(&self, seed: u64) -> Result<NetSimConfig, NetSimParseError> {
        Ok(self.sim_spec().parse::<NetSimConfig>()?.set_seed(seed))
    }

    /// One-way delay before jitter.
    pub fn one_way_delay(&self) -> Duration {
        Duration::from_micros(u64::from(self.rtt_ms) * 500)
    }

    /// A short name for file names and progress lines, e.g.
    /// `loss5%-rtt50-j10-nack-fec-red`.
    pub fn name(&self) -> String {
        let mut capacity = String::new();
        if let Some(c) = self.capacity {
            capacity = format!("-cap{}", c.kbps);
            for step in c.steps.iter().flatten() {
                capacity.push_str(&format!("-to{}at{}ms", step.kbps, step.at_ms));
            }
        }
        format!(
            "loss{}-rtt{}-j{}-{}-{}{}{capacity}",
            self.loss,
            self.rtt_ms,
            self.jitter_ms,
            if self.nack { "nack" } else { "nonack" },
            if self.fec { "fec" } else { "nofec" },
            if self.red { "-red" } else { "" }
        )
        .replace(['%', '/'], "_")
    }

    /// "NACK+FEC+RED", "NACK+FEC", ..., "RED" or "none".
    pub fn recovery(&self) -> &'static str {
        match (self.nack, self.fec, self.red) {
            (true, true, true) => "NACK+FEC+RED",
            (true, true, false) => "NACK+FEC",
            (true, false, true) => "NACK+RED",
            (true, false, false) => "NACK",
            (false, true, true) => "FEC+RED",
            (false, true, false) => "FEC",
            (false, false, true) => "RED",
            (false, false, false) => "none",
        }
    }

    /// A seed for this condition derived from the run's seed, so a condition gives the
    /// same figures whichever thread runs it and whatever else is in the matrix. RED is
    /// left out: with and without it a condition meets the same link, loss for loss.
    pub fn seed(&self, run_seed: u64) -> u64 {
        let mut h = run_seed ^ 0x9e37_79b9_7f4a_7c15;
        for part in [
            self.loss.percent().to_bits(),
            match self.loss {
                LossProfile::Random { .. } => 0,
                LossProfile::Bursty { burst, .. } => burst.to_bits(),
            },
            u64::from(self.rtt_ms),
            u64::from(self.jitter_ms),
            u64::from(self.nack) << 1 | u64::from(self.fec),
        ] {
            h = (h ^ part).wrapping_mul(0x0100_0000_01b3).rotate_left(29);
        }
        // Unlimited links keep the seeds they had before capacities existed.
        if let Some(c) = self.capacity {
            let steps = c.steps.iter().flatten();
            let parts = [u64::from(c.kbps), u64::from(c.queue_ms)]
                .into_iter()
                .chain(steps.map(|s| u64::from(s.kbps) << 32 | u64::from(s.at_ms)));
            for part in parts {
                h = (h ^ part).wrapping_mul(0x0100_0000_01b3).rotate_left(29);
            }
        }
        h
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "loss {} rtt {} ms jitter {} ms {}",
            self.loss,
            self.rtt_ms,
            self.jitter_ms,
            self.recovery()
        )?;
        if let Some(c) = self.capacity {
            write!(f, " capacity {c}")?;
        }
        Ok(())
    }
}

/// The axes of a matrix; [`Matrix::conditions`] is their product.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    /// Loss profiles.
    pub loss: Vec<LossProfile>,
    /// Round-trip times, ms.
    pub rtt_ms: Vec<u32>,
    /// Jitter, ms.
    pub jitter_ms: Vec<u32>,
    /// NACK settings.
    pub nack: Vec<bool>,
    /// FEC settings.
    pub fec: Vec<bool>,
    /// RED settings.
    pub red: Vec<bool>,
    /// Bottlenecks (`None`: unlimited).
    pub capacity: Vec<Option<Capacity>>,
    /// Conditions run besides the product of the axes (the capacity conditions of the
    /// full matrix).
    pub extra: Vec<Condition>,
}

impl Matrix {
    /// The matrix: loss 0, 1, 5, 10, 20 % and the bursty profile; RTT 20, 50,
    /// 100, 300 ms; jitter 0, 10, 30 ms; NACK and FEC each on and off (288 conditions).
    pub fn full() -> Self {
        let random = |percent| LossProfile::Random { percent };
        Self {
            loss: vec![
                random(0.0),
                random(1.0),
                random(5.0),
                random(10.0),
                random(20.0),
                LossProfile::GILBERT_ELLIOTT,
            ],
            rtt_ms: vec![20, 50, 100, 300],
            jitter_ms: vec![0, 10, 30],
            nack: vec![true, false],
            fec: vec![true, false],
            red: vec![true],
            capacity: vec![None],
            extra: Self::capacity_conditions(),
        }
    }

    /// The capacity-limited links (issue 13): 300 kbit/s, 1 and 2.5 Mbit/s, and 2.5
    /// Mbit/s dropping to 500 kbit/s at 8 s and back at 14 s; each with a 200 ms
    /// drop-tail queue, no random loss, RTT 50 ms, jitter 10 ms, everything on.
    pub fn capacity_conditions() -> Vec<Condition> {
        let capacity = |kbps, steps| Capacity {
            kbps,
            queue_ms: Capacity::DEFAULT_QUEUE_MS,
            steps,
        };
        let drop = [
            Some(RateStep {
                kbps: 500,
                at_ms: 8000,
            }),
            Some(RateStep {
                kbps: 2500,
                at_ms: 14_000,
            }),
        ];
        [
            capacity(300, [None; 2]),
            capacity(1000, [None; 2]),
            capacity(2500, [None; 2]),
            capacity(2500, drop),
        ]
        .into_iter()
        .map(|c| Condition {
            loss: LossProfile::Random { percent: 0.0 },
            rtt_ms: 50,
            jitter_ms: 10,
            nack: true,
            fec: true,
            red: true,
            capacity: Some(c),
        })
        .collect()
    }

    /// A tiny matrix for CI: loss 0 and 10 % at 50 ms RTT and 10 ms jitter, with
    /// everything on and with nothing on.
    pub fn smoke() -> Self {
        Self {
            loss: vec![
                LossProfile::Random { percent: 0.0 },
                LossProfile::Random { percent: 10.0 },
            ],
            rtt_ms: vec![50],
            jitter_ms: vec![10],
            nack: vec![true, false],
            fec: vec![true],
            red: vec![true],
            capacity: vec![None],
            extra: Vec::new(),
        }
    }

    /// Every combination, loss varying slowest and recovery fastest.
    pub fn conditions(&self) -> Vec<Condition> {
        let mut out = Vec::new();
        for &loss in &self.loss {
            for &rtt_ms in &self.rtt_ms {
                for &jitter_ms in &self.jitter_ms {
                    for &nack in &self.nack {
                        for &fec in &self.fec {
                            for &red in &self.red {
                                for &capacity in &self.capacity {
                                    out.push(Condition {
                                        loss,
                                        rtt_ms,
                                        jitter_ms,
                                        nack,
                                        fec,
                                        red,
                                        capacity,
                                    });
                                }
                            }
                        }
                    }
                }
            }
        }
        for c in &self.extra {
            if !out.contains(c) {
                out.push(*c);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_entries_parse_as_percentages_or_bursty_profiles() {
        assert_eq!(
            "10%".parse::<LossProfile>().unwrap(),
            LossProfile::Random { percent: 10.0 }
        );
        assert_eq!(
            "ge".parse::<LossProfile>().unwrap(),
            LossProfile::GILBERT_ELLIOTT
        );
        assert_eq!(
            "ge10/6".parse::<LossProfile>().unwrap(),
            LossProfile::Bursty {
                percent: 10.0,
                burst: 6.0
            }
        );
        for bad in ["", "x", "120", "ge10", "ge10/0.5", "-1"] {
            assert!(bad.parse::<LossProfile>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_full_matrix_has_every_combination() {
        let all = Matrix::full().conditions();
        assert_eq!(all.len(), 6 * 4 * 3 * 2 * 2 + 4);
        assert_eq!(all.iter().filter(|c| c.capacity.is_some()).count(), 4);
        let names: std::collections::HashSet<_> = all.iter().map(Condition::name).collect();
        assert_eq!(names.len(), all.len(), "names are unique");
    }

    #[test]
    fn a_condition_becomes_a_sim_spec_with_half_the_rtt_each_way() {
        let c = Condition {
            loss: LossProfile::GILBERT_ELLIOTT,
            rtt_ms: 50,
            jitter_ms: 10,
            nack: true,
            fec: false,
            red: false,
            capacity: None,
        };
        assert_eq!(c.sim_spec(), "loss=5%,delay=25ms,jitter=10ms,burst=4");
        let config = c.netsim(7).unwrap();
        assert_eq!(config.delay(), Duration::from_millis(25));
    }

    #[test]
    fn a_capacity_becomes_a_rate_a_queue_and_steps_the_simulator_reads() {
        let c = Matrix::capacity_conditions()[3];
        assert_eq!(
            c.sim_spec(),
            "loss=0%,delay=25ms,jitter=10ms,rate=2500kbit,queue=200ms,\
             step=500kbit@8000ms,step=2500kbit@14000ms"
        );
        let config = c.netsim(1).unwrap();
        assert_eq!(config.rate_at(Duration::from_secs(9)), Some(500_000));
        assert_eq!(config.rate_at(Duration::from_secs(15)), Some(2_500_000));
        assert_eq!(c.capacity.unwrap().first_drop().unwrap().at_ms, 8000);
        assert_eq!("500@10s".parse::<RateStep>().unwrap().at_ms, 10_000);
        for bad in ["500", "x@1s", "0@1s", "500@soon"] {
            assert!(bad.parse::<RateStep>().is_err(), "{bad}");
        }
    }

    #[test]
    fn condition_seeds_differ_between_conditions_and_runs() {
        let all = Matrix::full().conditions();
        let seeds: std::collections::HashSet<_> = all.iter().map(|c| c.seed(1)).collect();
        assert_eq!(seeds.len(), all.len());
        assert_ne!(all[0].seed(1), all[0].seed(2));
    }
}
