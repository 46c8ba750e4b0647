//! Address discovery: answers STUN Binding requests (RFC 5389) on UDP with the
//! requester's reflexive address (XOR-MAPPED-ADDRESS), so a client behind NAT learns
//! the public address and port its packets come from. The client side is here too:
//! [`discover`] asks on a socket with retransmissions.
//!
//! The wire format is the media core's sans-IO binding codec
//! ([`magpie_media::ice::binding_response`] and its siblings), which the client's
//! connectivity checks sit beside; this module only adds the sockets.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use magpie_media::ice::{binding_request, binding_response, parse_binding_response};
use stun::agent::TransactionId;
use tokio::net::UdpSocket;
use tokio::time::{Instant, timeout_at};
use tracing::{debug, info, trace, warn};

use crate::limits::{TokenBucket, address_key};
use crate::lru::Lru;
use crate::pii::Pii;

/// What [`serve`] does with one datagram from `from`: the reply to send back, or `None`
/// when the datagram is not a Binding request and is ignored. Pure, and fuzzed
/// (`signaling/fuzz`, target `stun_binding`).
pub fn answer(datagram: &[u8], from: SocketAddr) -> Option<Vec<u8>> {
    let response = binding_response(datagram, from);
    if response.is_none() {
        trace!(%from, len = datagram.len(), "not a binding request");
    }
    response
}

/// Asks the STUN server at `server` which address `socket`'s packets come from.
/// Retransmits as RFC 5389 §7.2.1 says (500 ms, doubling) until `within` has passed.
/// Other datagrams arriving on `socket` meanwhile are dropped.
pub async fn discover(
    socket: &UdpSocket,
    server: SocketAddr,
    within: Duration,
) -> std::io::Result<SocketAddr> {
    let deadline = Instant::now() + within;
    let id = TransactionId::new().0;
    let request = binding_request(id);
    let mut rto = Duration::from_millis(500);
    let mut buf = vec![0u8; 1500];
    loop {
        socket.send_to(&request, server).await?;
        let resend_at = (Instant::now() + rto).min(deadline);
        rto *= 2;
        loop {
            match timeout_at(resend_at, socket.recv_from(&mut buf)).await {
                Ok(Ok((len, from))) if from == server => {
                    if let Some(mapped) = parse_binding_response(&buf[..len], id) {
                        return Ok(mapped);
                    }
                }
                Ok(Ok(_)) => {}
                Ok(Err(err)) => return Err(err),
                Err(_) => break,
            }
        }
        if Instant::now() >= deadline {
            let why = format!(
                "no STUN response from {server} within {} ms",
                within.as_millis()
            );
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, why));
        }
    }
}

/// How fast [`serve_with`] answers. A binding response is about twice the size of its
/// request, so an unlimited responder is a reflector: these bound what a spoofed
/// source can draw towards a victim, and what the server spends in total.
#[derive(Debug, Clone)]
pub struct StunLimits {
    /// Answers per second to one source address (IPv6: one /64), and the burst above it.
    pub per_source: (u32, u32),
    /// Answers per second in total, and the burst above it.
    pub overall: (u32, u32),
    /// Source addresses remembered; when full, the one heard from longest ago is forgotten.
    pub sources: usize,
}

impl Default for StunLimits {
    fn default() -> Self {
        Self {
            // A client asks once per call set-up, with RFC 5389 retransmissions (7 in
            // 39.5 s); an ICE agent gathering several sockets asks a few times at once.
            per_source: (5, 20),
            // Some thousands of users starting calls; 2,000 small answers a second is
            // about 1 Mbit/s.
            overall: (2000, 4000),
            sources: 65_536,
        }
    }
}

/// What [`serve_with`] did, readable while it runs.
#[derive(Debug, Default)]
pub struct StunCounters {
    answered: AtomicU64,
    dropped: AtomicU64,
}

impl StunCounters {
    /// Binding requests answered.
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    /// Binding requests left unanswered because a rate limit was reached.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Decides which requests get an answer: a token bucket per source and one overall.
/// Sans-IO: the time comes in.
#[derive(Debug)]
pub struct StunLimiter {
    limits: StunLimits,
    sources: Lru<IpAddr, TokenBucket>,
    overall: TokenBucket,
}

impl StunLimiter {
    /// A limiter with full buckets at `now`.
    pub fn new(now: Instant, limits: StunLimits) -> Self {
        let (rate, burst) = limits.overall;
        Self {
            sources: Lru::new(limits.sources),
            overall: TokenBucket::new(now, rate, burst),
            limits,
        }
    }

    /// Whether a request from `from` may be answered now.
    pub fn admit(&mut self, now: Instant, from: IpAddr) -> bool {
        let (rate, burst) = self.limits.per_source;
        let source = self
            .sources
            .get_or_insert_with(&address_key(from), || TokenBucket::new(now, rate, burst));
        if source.try_take(now).is_err() {
            return false;
        }
        if self.overall.try_take(now).is_err() {
            source.put_back(now);
            return false;
        }
        true
    }
}

/// Serves STUN on `socket` with the default [`StunLimits`] until `shutdown` completes.
pub async fn serve(socket: UdpSocket, shutdown: impl Future) {
    serve_with(socket, StunLimits::default(), Arc::default(), shutdown).await;
}

/// Serves STUN on `socket` until `shutdown` completes, answering at most as fast as
/// `limits` allow; what it answers and drops is counted in `counters`.
pub async fn serve_with(
    socket: UdpSocket,
    limits: StunLimits,
    counters: Arc<StunCounters>,
    shutdown: impl Future,
) {
    let addr = socket
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    info!(
        %addr,
        per_source_per_sec = limits.per_source.0,
        overall_per_sec = limits.overall.0,
        "answering STUN binding requests"
    );
    let mut limiter = StunLimiter::new(Instant::now(), limits);
    let mut buf = vec![0u8; 1500];
    tokio::pin!(shutdown);
    loop {
        let (len, from) = tokio::select! {
            received = socket.recv_from(&mut buf) => match received {
                Ok(received) => received,
                Err(err) => {
                    // ICMP errors from earlier sends surface here; keep serving.
                    debug!(%err, "udp receive failed");
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Some(response) = answer(&buf[..len], from) else {
            continue;
        };
        if !limiter.admit(Instant::now(), from.ip()) {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            trace!(from = %Pii(&from), "stun rate limit: dropped");
            continue;
        }
        counters.answered.fetch_add(1, Ordering::Relaxed);
        if let Err(err) = socket.send_to(&response, from).await {
            warn!(%err, from = %Pii(&from), "stun reply failed");
        }
    }
    debug!(
        answered = counters.answered(),
        dropped = counters.dropped(),
        "stun stopped"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binding_request_is_answered_with_its_source_address() {
        let id = TransactionId::new().0;
        let from: SocketAddr = "203.0.113.7:40123".parse().unwrap();
        let response = answer(&binding_request(id), from).unwrap();
        assert_eq!(parse_binding_response(&response, id), Some(from));
        assert_eq!(answer(b"GET / HTTP/1.1\r\n", from), None);
    }

    #[test]
    fn answers_are_limited_per_source_and_overall() {
        let t0 = Instant::now();
        let limits = StunLimits {
            per_source: (1, 3),
            overall: (10, 5),
            sources: 100,
        };
        let mut limiter = StunLimiter::new(t0, limits);
        let a: IpAddr = "198.51.100.1".parse().unwrap();
        let admitted = (0..10).filter(|_| limiter.admit(t0, a)).count();
        assert_eq!(admitted, 3, "the source's burst");
        let others = (2..20u8)
            .filter(|i| limiter.admit(t0, IpAddr::from([198, 51, 100, *i])))
            .count();
        assert_eq!(others, 2, "the rest of the overall burst");
        let later = t0 + Duration::from_secs(1);
        assert!(limiter.admit(later, a), "refilled");
    }
}
