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

mod bottleneck;
mod config;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use bottleneck::{BottleneckStats, StepDrops};
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

/// One datagram's passage through the bottleneck queue (links with a rate only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSample {
    /// When it finished leaving the bottleneck.
    pub departed: Instant,
    /// Time from entering the queue to leaving the bottleneck (waiting plus its own
    /// serialization).
    pub delay: Duration,
    /// Its size.
    pub bytes: usize,
}

/// A datagram waiting at the bottleneck.
#[derive(Debug)]
struct Queued {
    entered: Instant,
    datagram: Datagram,
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
    /// The first instant the link saw: rate steps count from it.
    origin: Option<Instant>,
    /// Datagrams waiting at the bottleneck, oldest first (links with a rate only).
    bottleneck: VecDeque<Queued>,
    /// Bytes in `bottleneck`.
    queued_bytes: usize,
    /// When the bottleneck finished sending the previous datagram.
    link_free: Option<Instant>,
    /// Every datagram's passage through the bottleneck.
    queue_log: Vec<QueueSample>,
    /// When the full bottleneck queue dropped a datagram.
    drop_log: Vec<Instant>,
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
            origin: None,
            bottleneck: VecDeque::new(),
            queued_bytes: 0,
            link_free: None,
            queue_log: Vec::new(),
            drop_log: Vec::new(),
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

    /// Every datagram's passage through the bottleneck so far (empty without a rate).
    pub fn queue_log(&self) -> &[QueueSample] {
        &self.queue_log
    }

    /// When the full bottleneck queue dropped each datagram it dropped.
    pub fn drop_log(&self) -> &[Instant] {
        &self.drop_log
    }

    /// The first instant the link saw (rate steps count from it).
    pub fn origin(&self) -> Option<Instant> {
        self.origin
    }

    /// The bottleneck rate at `at`, `None` when unlimited.
    pub fn rate_at(&self, at: Instant) -> Option<u64> {
        let since = self
            .origin
            .map_or(Duration::ZERO, |o| at.saturating_duration_since(o));
        self.config.rate_at(since)
    }

    /// The bits the bottleneck could carry between `from` and `to` at its rates (`None`
    /// when unlimited).
    pub fn capacity_bits(&self, from: Instant, to: Instant) -> Option<f64> {
        let origin = self.origin?;
        let mut edges: Vec<Instant> = self
            .config
            .rate_steps
            .iter()
            .map(|(at, _)| origin + *at)
            .filter(|at| (from..to).contains(at))
            .collect();
        edges.insert(0, from);
        edges.push(to);
        let mut bits = 0.0;
        for w in edges.windows(2) {
            bits += self.rate_at(w[0])? as f64 * (w[1] - w[0]).as_secs_f64();
        }
        Some(bits)
    }

    /// Hands a datagram to the link at `now`.
    pub fn handle_datagram(&mut self, now: Instant, datagram: Datagram) {
        self.origin.get_or_insert(now);
        self.drain_bottleneck(now);
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
            if self.rate_at(now).is_none() {
                self.launch(now, datagram.clone());
            } else if self.admit(now, datagram.data.len()) {
                self.queued_bytes += datagram.data.len();
                self.bottleneck.push_back(Queued {
                    entered: now,
                    datagram: datagram.clone(),
                });
                self.drain_bottleneck(now);
            } else {
                self.stats.queue_drops += 1;
                self.drop_log.push(now);
                tracing::trace!(
                    to = %datagram.to,
                    pt = datagram.data.get(1).copied().unwrap_or(0),
                    len = datagram.data.len(),
                    queued = self.queued_bytes,
                    "bottleneck queue full: datagram dropped"
                );
            }
        }
    }

    /// Moves every datagram that has arrived by `now` to the output.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.origin.get_or_insert(now);
        self.drain_bottleneck(now);
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

    /// When the next datagram arrives or leaves the bottleneck.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let arrival = self.in_flight.peek().map(|Reverse(f)| f.arrival);
        let departure = self.next_departure();
        arrival.into_iter().chain(departure).min()
    }

    /// Datagrams still queued, on the wire or waiting to be polled.
    pub fn in_flight(&self) -> usize {
        self.bottleneck.len() + self.in_flight.len() + self.ready.len()
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

    /// Drop-tail: whether a datagram of `len` bytes fits the bottleneck queue at `now`
    /// (by bytes, or by the time what waits takes to drain at the current rate).
    fn admit(&self, now: Instant, len: usize) -> bool {
        if let Some(limit) = self.config.queue_bytes {
            return self.queued_bytes + len <= limit;
        }
        let Some(rate) = self.rate_at(now) else {
            return true;
        };
        let wait = Duration::from_secs_f64(self.queued_bytes as f64 * 8.0 / rate as f64);
        wait <= self.config.queue
    }

    /// When the head of the bottleneck queue has been sent, at the rate in force when
    /// its sending started.
    fn next_departure(&self) -> Option<Instant> {
        let head = self.bottleneck.front()?;
        let start = self.link_free.map_or(head.entered, |f| f.max(head.entered));
        // A queue forms only while there is a rate; a step back to "unlimited" does not
        // exist (steps carry a rate), so the rate is known here.
        let rate = self.rate_at(start).unwrap_or(u64::MAX).max(1);
        let serialize = head.datagram.data.len() as f64 * 8.0 / rate as f64;
        Some(start + Duration::from_secs_f64(serialize))
    }

    /// Sends on everything that has left the bottleneck by `now`.
    fn drain_bottleneck(&mut self, now: Instant) {
        while let Some(done) = self.next_departure().filter(|d| *d <= now) {
            let Some(head) = self.bottleneck.pop_front() else {
                break;
            };
            let bytes = head.datagram.data.len();
            self.queued_bytes -= bytes;
            self.link_free = Some(done);
            self.queue_log.push(QueueSample {
                departed: done,
                delay: done - head.entered,
                bytes,
            });
            self.launch(done, head.datagram);
        }
    }

    /// Puts a datagram on the wire at `departure`.
    fn launch(&mut self, departure: Instant, datagram: Datagram) {
        let arrival = self.arrival(departure);
        self.order += 1;
        self.in_flight.push(Reverse(InFlight {
            arrival,
            order: self.order,
            datagram,
        }));
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
    fn the_bottleneck_queues_at_its_rate_and_logs_each_delay() {
        // 1000-byte datagrams every 5 ms (1.6 Mbit/s) into 800 kbit/s (10 ms each).
        let mut sim = NetSim::new("rate=800kbit,queue=1s".parse().unwrap());
        let t0 = test_instant();
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let d = || Datagram {
            from: addr,
            to: addr,
            data: vec![0; 1000],
        };
        for i in 0..10 {
            sim.handle_datagram(t0 + Duration::from_millis(i * 5), d());
        }
        let mut arrivals = Vec::new();
        while let Some(at) = sim.poll_timeout() {
            sim.handle_timeout(at);
            while sim.poll_datagram().is_some() {
                arrivals.push(at - t0);
            }
        }
        let ms = Duration::from_millis;
        assert_eq!(arrivals.len(), 10);
        assert_eq!(arrivals[0], ms(10));
        assert_eq!(arrivals[9], ms(100));
        let log = sim.queue_log();
        assert_eq!(log[0].delay, ms(10));
        // The tenth entered at 45 ms and left at 100 ms.
        assert_eq!(log[9].delay, ms(55));
        let cap = sim.capacity_bits(t0, t0 + Duration::from_secs(1)).unwrap();
        assert!((cap - 800_000.0).abs() < 1.0, "{cap}");
    }

    #[test]
    fn a_rate_step_slows_the_queue_and_tail_drops_past_its_length() {
        // 1000 bytes every 10 ms (800 kbit/s) into 2 Mbit/s, then 400 kbit/s at 1 s.
        let config: NetSimConfig = "rate=2mbit,step=400kbit@1s,queue=100ms".parse().unwrap();
        let mut sim = NetSim::new(config);
        let t0 = test_instant();
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        for i in 0..300 {
            let now = t0 + Duration::from_millis(i * 10);
            sim.handle_timeout(now);
            while sim.poll_datagram().is_some() {}
            let data = vec![0; 1000];
            sim.handle_datagram(
                now,
                Datagram {
                    from: addr,
                    to: addr,
                    data,
                },
            );
        }
        let log = sim.queue_log();
        let before = log
            .iter()
            .filter(|s| s.departed < t0 + Duration::from_secs(1));
        assert!(before.clone().all(|s| s.delay == Duration::from_millis(4)));
        let after = log
            .iter()
            .filter(|s| s.departed > t0 + Duration::from_secs(2));
        // Offered twice the rate: the queue stays full, about 100 ms plus one datagram.
        assert!(after.clone().all(|s| s.delay <= Duration::from_millis(125)));
        assert!(after.clone().any(|s| s.delay >= Duration::from_millis(100)));
        let drops = sim.stats().queue_drops;
        assert!((80..120).contains(&drops), "{drops}");
        let cap = sim.capacity_bits(t0, t0 + Duration::from_secs(2)).unwrap();
        assert!((cap - 2_400_000.0).abs() < 1.0, "{cap}");
    }

    #[test]
    fn a_byte_sized_queue_drops_what_does_not_fit() {
        let mut sim = NetSim::new("rate=8kbit,queue=2500bytes".parse().unwrap());
        let t0 = test_instant();
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        for _ in 0..5 {
            let data = vec![0; 1000];
            sim.handle_datagram(
                t0,
                Datagram {
                    from: addr,
                    to: addr,
                    data,
                },
            );
        }
        assert_eq!(sim.stats().queue_drops, 3);
        assert_eq!(sim.in_flight(), 2);
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
