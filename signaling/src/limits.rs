//! Rate limits (token buckets), the per-address connection count, and the key that
//! counts one source address.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::lru::Lru;

/// A token bucket: `rate` tokens a second, holding at most `burst`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(now: Instant, rate_per_sec: u32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            rate: f64::from(rate_per_sec),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// A full bucket that refills `per_minute` tokens a minute.
    pub fn per_minute(now: Instant, per_minute: u32, burst: u32) -> Self {
        Self {
            rate: f64::from(per_minute) / 60.0,
            ..Self::new(now, 0, burst)
        }
    }

    /// Returns a token taken for something that turned out not to count.
    pub fn put_back(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + 1.0 + elapsed * self.rate).min(self.burst);
    }

    /// Takes a token, or says how long until one is available.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        if self.rate <= 0.0 {
            return Err(Duration::MAX);
        }
        Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
    }
}

/// The key that counts as one source address in per-address limits: an IPv4 address,
/// or an IPv6 address's /64 (one subscriber's prefix; a host can pick any address in
/// it). IPv4-mapped IPv6 addresses count as their IPv4 address.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !0xffff_ffff_ffff_ffff)),
        },
    }
}

/// A token bucket per source address ([`address_key`]), for requests that are
/// expensive (`login`, `register`) whoever sends them. At most `capacity` addresses
/// are remembered; when full, the one heard from longest ago is forgotten (and gets a
/// full bucket if it comes back).
#[derive(Debug)]
pub struct AddressRate {
    buckets: Mutex<Lru<IpAddr, TokenBucket>>,
    burst: u32,
    per_minute: u32,
}

impl AddressRate {
    /// `burst` requests at once per address, then `per_minute`.
    pub fn new(capacity: usize, burst: u32, per_minute: u32) -> Self {
        Self {
            buckets: Mutex::new(Lru::new(capacity)),
            burst,
            per_minute,
        }
    }

    /// Takes a token for `ip`, or says how long until one is available.
    pub fn try_take(&self, now: Instant, ip: IpAddr) -> Result<(), Duration> {
        let (burst, per_minute) = (self.burst, self.per_minute);
        self.buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert_with(&address_key(ip), || {
                TokenBucket::per_minute(now, per_minute, burst)
            })
            .try_take(now)
    }
}

/// Counts open connections per source address.
#[derive(Debug)]
pub struct AddressLimiter {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One counted connection; dropping it uncounts it.
#[derive(Debug)]
pub struct AddressSlot {
    limiter: Arc<AddressLimiter>,
    ip: IpAddr,
}

impl AddressLimiter {
    /// Allows `max` connections per address.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Counts a connection from `ip`, or `None` if the address is at its limit.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(ip).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            limiter: Arc::clone(self),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self
            .limiter
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(t0, 10, 3);
        for _ in 0..3 {
            assert_eq!(bucket.try_take(t0), Ok(()));
        }
        assert_eq!(bucket.try_take(t0), Err(Duration::from_millis(100)));
        assert_eq!(bucket.try_take(t0 + Duration::from_millis(100)), Ok(()));
        assert!(bucket.try_take(t0 + Duration::from_millis(100)).is_err());
        assert_eq!(
            bucket.try_take(t0 + Duration::from_secs(60)),
            Ok(()),
            "refills to the burst"
        );
    }

    #[test]
    fn time_going_backwards_does_not_mint_tokens() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut bucket = TokenBucket::new(t0, 1, 1);
        assert_eq!(bucket.try_take(t0), Ok(()));
        assert!(bucket.try_take(t0 - Duration::from_secs(5)).is_err());
        assert!(bucket.try_take(t0).is_err());
    }

    #[test]
    fn a_token_put_back_can_be_taken_again_but_not_beyond_the_burst() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::per_minute(t0, 6, 2);
        assert_eq!(bucket.try_take(t0), Ok(()));
        assert_eq!(bucket.try_take(t0), Ok(()));
        assert_eq!(bucket.try_take(t0), Err(Duration::from_secs(10)));
        bucket.put_back(t0);
        bucket.put_back(t0);
        bucket.put_back(t0);
        assert_eq!(bucket.try_take(t0), Ok(()));
        assert_eq!(bucket.try_take(t0), Ok(()));
        assert!(bucket.try_take(t0).is_err());
    }

    #[test]
    fn address_keys_group_ipv6_by_64_and_unmap_ipv4() {
        let key = |s: &str| address_key(s.parse().unwrap());
        assert_eq!(key("2001:db8::1"), key("2001:db8::ffff:1"));
        assert_ne!(key("2001:db8::1"), key("2001:db8:0:1::1"));
        assert_eq!(key("::ffff:192.0.2.1"), key("192.0.2.1"));
        assert_eq!(key("192.0.2.1").to_string(), "192.0.2.1");
    }

    #[test]
    fn each_address_has_its_own_rate() {
        let t0 = Instant::now();
        let rate = AddressRate::new(10, 2, 60);
        let (a, b) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        assert!(rate.try_take(t0, a).is_ok());
        assert!(rate.try_take(t0, a).is_ok());
        assert_eq!(rate.try_take(t0, a), Err(Duration::from_secs(1)));
        assert!(rate.try_take(t0, b).is_ok());
    }

    #[test]
    fn address_slots_are_counted_and_released() {
        let limiter = AddressLimiter::new(2);
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let other = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
        let a = limiter.acquire(ip).unwrap();
        let _b = limiter.acquire(ip).unwrap();
        assert!(limiter.acquire(ip).is_none());
        assert!(limiter.acquire(other).is_some());
        drop(a);
        assert!(limiter.acquire(ip).is_some());
    }
}
