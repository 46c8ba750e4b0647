//! `netsim`: a seeded, sans-IO model of a bad link, one direction per instance.
//!
//! Datagrams go in with [`NetSim::handle_datagram`] at `now`; the model decides their
//! fate (lost, duplicated, queued at a bottleneck, delayed and jittered) and they come
//! out of [`NetSim::poll_datagram`] once [`NetSim::handle_timeout`] has been called at
//! or after their arrival time ([`NetSim::poll_timeout`]). Everything random comes from
//! the seed in [`NetSimConfig`], so a run is reproducible.
//!
//! ```
//! use std::time::Instant;
//! use magpie_media::netsim::{Datagram, NetSim, NetSimConfig};
//!
//! let config: NetSimConfig = "loss=10%,delay=25ms,jitter=5ms,burst=4".parse().unwrap();
//! let mut link = NetSim::new(config);
//! # #[allow(clippy::disallowed_methods)]
//! let now = Instant::now();
//! let addr = "127.0.0.1:5000".parse().unwrap();
//! link.handle_datagram(now, Datagram { from: addr, to: addr, data: vec![1, 2, 3] });
//! if let Some(at) = link.poll_timeout() {
//!     link.handle_timeout(at);
//!     while let Some(d) = link.poll_datagram() { assert_eq!(d.data, [1, 2, 3]); }
//! }
//! ```

mod config;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use config::{NetSimConfig, NetSimParseError};

use crate::rng::Rng;

/// A datagram crossing the simulated link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// Sender address.
    pub from: SocketAddr,
    /// Destination address.
    pub to: SocketAddr,
    /// Contents.
    pub data: Vec<u8>,
}

/// What the link did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetSimStats {
    /// Datagrams handed in.
    pub sent: u64,
    /// Lost to random or burst loss.
    pub lost: u64,
    /// Dropped by the bottleneck queue.
    pub queue_drops: u64,
    /// Extra copies made.
    pub duplicated: u64,
    /// Datagrams handed out.
    pub delivered: u64,
}

#[derive(Debug)]
struct InFlight {
    arrival: Instant,
    order: u64,
    datagram: Datagram,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        (self.arrival, self.order) == (other.arrival, other.order)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.arrival, self.order).cmp(&(other.arrival, other.order))
    }
}

/// One direction of a simulated link.
#[derive(Debug)]
pub struct NetSim {
    config: NetSimConfig,
    rng: Rng,
    /// Gilbert-Elliott state: `true` while in the lossy ("bad") state.
    bad_state: bool,
    /// When the bottleneck finishes sending what is queued.
    link_free: Option<Instant>,
    /// Latest arrival scheduled, to keep FIFO order when reordering is off.
    last_arrival: Option<Instant>,
    in_flight: BinaryHeap<Reverse<InFlight>>,
    ready: VecDeque<Datagram>,
    order: u64,
    stats: NetSimStats,
}

impl NetSim {
    /// A link impaired as `config` says.
    pub fn new(config: NetSimConfig) -> Self {
        Self {
            rng: Rng::new(config.seed),
            config,
            bad_state: false,
            link_free: None,
            last_arrival: None,
            in_flight: BinaryHeap::new(),
            ready: VecDeque::new(),
            order: 0,
            stats: NetSimStats::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &NetSimConfig {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> NetSimStats {
        self.stats
    }

    /// Hands a datagram to the link at `now`.
    pub fn handle_datagram(&mut self, now: Instant, datagram: Datagram) {
        self.stats.sent += 1;
        if self.lose() {
            self.stats.lost += 1;
            return;
        }
        let copies = if self.rng.chance(self.config.duplicate) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let Some(departure) = self.bottleneck(now, datagram.data.len()) else {
                self.stats.queue_drops += 1;
                continue;
            };
            let arrival = self.arrival(departure);
            let datagram = datagram.clone();
            self.order += 1;
            self.in_flight.push(Reverse(InFlight {
                arrival,
                order: self.order,
                datagram,
            }));
        }
    }

    /// Moves every datagram that has arrived by `now` to the output.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse(next)) = self.in_flight.peek() {
            if next.arrival > now {
                break;
            }
            let Some(Reverse(f)) = self.in_flight.pop() else {
                break;
            };
            self.ready.push_back(f.datagram);
        }
    }

    /// The next arrived datagram.
    #[must_use]
    pub fn poll_datagram(&mut self) -> Option<Datagram> {
        let d = self.ready.pop_front()?;
        self.stats.delivered += 1;
        Some(d)
    }

    /// When the next datagram arrives.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.in_flight.peek().map(|Reverse(f)| f.arrival)
    }

    /// Datagrams still on the wire or waiting to be polled.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len() + self.ready.len()
    }

    fn lose(&mut self) -> bool {
        let p = self.config.loss;
        match self.config.burst {
            None => self.rng.chance(p),
            Some(_) if p >= 1.0 => true,
            Some(burst) => {
                // Gilbert model: all loss happens in the bad state, whose mean length is
                // `burst`; the good→bad rate makes the long-run loss equal `p`.
                let to_good = 1.0 / burst;
                let to_bad = p / (burst * (1.0 - p));
                let flip = if self.bad_state { to_good } else { to_bad };
                if self.rng.chance(flip) {
                    self.bad_state = !self.bad_state;
                }
                self.bad_state
            }
        }
    }

    /// When the datagram leaves the bottleneck, or `None` if the queue is full.
    fn bottleneck(&mut self, now: Instant, len: usize) -> Option<Instant> {
        let Some(rate) = self.config.rate_bps else {
            return Some(now);
        };
        let start = self.link_free.map_or(now, |free| free.max(now));
        if start - now > self.config.queue {
            return None;
        }
        let serialize = Duration::from_secs_f64((len as f64 * 8.0) / rate as f64);
        let done = start + serialize;
        self.link_free = Some(done);
        Some(done)
    }

    fn arrival(&mut self, departure: Instant) -> Instant {
        let jitter = self.config.jitter.mul_f64(2.0 * self.rng.unit());
        let mut arrival = departure + self.config.delay + jitter;
        if !self.config.reorder
            && let Some(last) = self.last_arrival
        {
            arrival = arrival.max(last);
        }
        self.last_arrival = Some(self.last_arrival.map_or(arrival, |l| l.max(arrival)));
        arrival
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_instant;

    fn dgram(i: u32) -> Datagram {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        Datagram {
            from: addr,
            to: addr,
            data: i.to_be_bytes().to_vec(),
        }
    }

    fn run(config: &str, n: u32) -> (Vec<u32>, NetSimStats) {
        let mut sim = NetSim::new(config.parse().unwrap());
        let start = test_instant();
        let mut out = Vec::new();
        for i in 0..n {
            let now = start + Duration::from_millis(u64::from(i) * 10);
            sim.handle_timeout(now);
            while let Some(d) = sim.poll_datagram() {
                out.push(u32::from_be_bytes(d.data.try_into().unwrap()));
            }
            sim.handle_datagram(now, dgram(i));
        }
        while let Some(t) = sim.poll_timeout() {
            sim.handle_timeout(t);
            while let Some(d) = sim.poll_datagram() {
                out.push(u32::from_be_bytes(d.data.try_into().unwrap()));
            }
        }
        (out, sim.stats())
    }

    #[test]
    fn random_loss_matches_its_rate() {
        let (out, stats) = run("loss=10%,seed=3", 20_000);
        let lost = 20_000 - out.len();
        assert!((1800..2200).contains(&lost), "{lost}");
        assert_eq!(stats.lost as usize, lost);
    }

    #[test]
    fn burst_loss_has_the_long_run_rate_and_longer_runs() {
        let (out, _) = run("loss=10%,burst=4,seed=5", 40_000);
        let lost = 40_000 - out.len();
        assert!((3400..4600).contains(&lost), "{lost}");
        // Mean run length of consecutive losses ~ 4.
        let mut runs = 0;
        for w in out.windows(2) {
            if w[1] != w[0] + 1 {
                runs += 1;
            }
        }
        let mean = lost as f64 / runs as f64;
        assert!((3.0..5.0).contains(&mean), "{mean}");
    }

    #[test]
    fn jitter_without_reorder_keeps_order() {
        let (out, _) = run("delay=20ms,jitter=30ms,seed=1", 500);
        assert!(out.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(out.len(), 500);
    }

    #[test]
    fn jitter_with_reorder_reorders() {
        let (out, _) = run("delay=20ms,jitter=30ms,reorder,seed=1", 500);
        assert!(out.windows(2).any(|w| w[0] > w[1]));
    }

    #[test]
    fn duplication_delivers_twice() {
        let (out, stats) = run("dup=50%,seed=2", 1000);
        assert_eq!(out.len() as u64, 1000 + stats.duplicated);
        assert!(stats.duplicated > 400);
    }

    #[test]
    fn rate_limit_queues_then_drops() {
        // 4-byte datagrams every 10 ms = 3.2 kbit/s offered into 1.6 kbit/s.
        let (out, stats) = run("rate=1600,queue=100ms", 200);
        assert!(stats.queue_drops > 50, "{stats:?}");
        assert!(out.len() < 200);
    }

    #[test]
    fn delivery_is_at_the_configured_delay() {
        let mut sim = NetSim::new("delay=25ms".parse().unwrap());
        let t0 = test_instant();
        sim.handle_datagram(t0, dgram(1));
        assert_eq!(sim.poll_timeout(), Some(t0 + Duration::from_millis(25)));
        sim.handle_timeout(t0 + Duration::from_millis(24));
        assert!(sim.poll_datagram().is_none());
        sim.handle_timeout(t0 + Duration::from_millis(25));
        assert!(sim.poll_datagram().is_some());
    }
}
