//! Password hashing (argon2id) and the wrong-password slow-down.

use std::fmt;
use std::net::IpAddr;
use std::sync::LazyLock;
use std::time::Duration;

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::time::Instant;

use crate::limits::{TokenBucket, address_key};
use crate::lru::Lru;
use crate::proto::UserName;

/// Hashing failed (the OS random source or the parameters).
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// argon2 refused the inputs or parameters.
    #[error("password hashing failed: {0}")]
    Argon2(#[source] argon2::Error),
    /// A PHC string could not be built.
    #[error("password hashing failed: {0}")]
    Phc(#[source] argon2::password_hash::Error),
    /// The OS random source failed.
    #[error("no random salt: {0}")]
    Salt(String),
}

/// Stored hashes asking for more memory than this never verify (256 MiB: far above
/// argon2id's default of 19 MiB, far below what would hurt the server).
const MAX_BLOCKS: usize = 256 * 1024;

/// An argon2id hasher that keeps its working memory (19 MiB with the default
/// parameters) between passwords, so a server that hashes on a few of these allocates
/// that memory once instead of once per login; with glibc's allocator, freed buffers
/// of that size otherwise stay in per-thread arenas and the server's memory grows with
/// the number of threads that ever hashed. Hashes are PHC strings
/// (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`), so every stored hash verifies.
#[derive(Default)]
pub struct Hasher {
    memory: Vec<Block>,
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hasher")
            .field("memory_blocks", &self.memory.len())
            .finish()
    }
}

impl Hasher {
    /// Hashes a password with argon2id, the default parameters and a random salt into
    /// a PHC string. CPU-bound (tens of milliseconds).
    pub fn hash(&mut self, password: &str) -> Result<String, HashError> {
        let salt = argon2::password_hash::try_generate_salt()
            .map_err(|e| HashError::Salt(e.to_string()))?;
        let params = Params::default();
        let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
        self.run(
            &Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone()),
            password.as_bytes(),
            &salt,
            &mut out,
        )?;
        let hash = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&params).map_err(HashError::Phc)?,
            salt: Some(Salt::new(&salt).map_err(|e| HashError::Phc(e.into()))?),
            hash: Some(Output::new(&out).map_err(|e| HashError::Phc(e.into()))?),
        };
        Ok(hash.to_string())
    }

    /// Whether `password` matches a PHC string from [`Hasher::hash`] (or any argon2
    /// PHC string). An unreadable stored hash never matches. CPU-bound.
    pub fn verify(&mut self, password: &str, phc: &str) -> bool {
        self.try_verify(password, phc).unwrap_or(false)
    }

    fn try_verify(&mut self, password: &str, phc: &str) -> Option<bool> {
        let hash = PasswordHash::new(phc).ok()?;
        let algorithm = Algorithm::try_from(hash.algorithm.as_str()).ok()?;
        let version = match hash.version {
            Some(v) => Version::try_from(v).ok()?,
            None => Version::default(),
        };
        let params = Params::try_from(&hash).ok()?;
        let (salt, expected) = (hash.salt?, hash.hash?);
        let mut out = [0u8; Output::MAX_LENGTH];
        let out = out.get_mut(..expected.len())?;
        let argon2 = Argon2::new(algorithm, version, params);
        self.run(&argon2, password.as_bytes(), salt.as_ref(), out)
            .ok()?;
        // `Output`'s equality is constant-time.
        Some(Output::new(out).ok()? == expected)
    }

    /// Spends the time of a real verification for a user that does not exist, so a
    /// login's timing does not reveal which names are registered. Always `false`.
    pub fn verify_unknown_user(&mut self, password: &str) -> bool {
        static DUMMY: LazyLock<String> = LazyLock::new(|| {
            Hasher::default()
                .hash("magpie: no such user")
                .unwrap_or_default()
        });
        let _ = std::hint::black_box(self.verify(password, &DUMMY));
        false
    }

    fn run(
        &mut self,
        argon2: &Argon2<'_>,
        password: &[u8],
        salt: &[u8],
        out: &mut [u8],
    ) -> Result<(), HashError> {
        let blocks = argon2.params().block_count();
        if blocks > MAX_BLOCKS {
            return Err(HashError::Argon2(argon2::Error::MemoryTooMuch));
        }
        if self.memory.len() < blocks {
            self.memory.resize(blocks, Block::new());
        }
        argon2
            .hash_password_into_with_memory(password, salt, out, &mut self.memory[..blocks])
            .map_err(HashError::Argon2)
    }
}

/// Hashes a password with a fresh [`Hasher`] (19 MiB allocated and freed): for tools
/// and tests; the server hashes on its pool.
pub fn hash_password(password: &str) -> Result<String, HashError> {
    Hasher::default().hash(password)
}

/// Checks a password with a fresh [`Hasher`]; see [`Hasher::verify`].
pub fn verify_password(password: &str, phc: &str) -> bool {
    Hasher::default().verify(password, phc)
}

/// Wrong passwords one (user, address) pair may send before the slow-down starts.
const FREE_FAILURES: u32 = 3;
/// The longest lock-out.
const MAX_LOCK: Duration = Duration::from_secs(300);
/// A (user, address) record whose last failure is older than this starts again.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// The wrong-password throttle: every login attempt counts as a failure *before* its
/// password is verified (a correct password takes its failure back), so parallel
/// guesses cannot overtake the count. Two limits apply, and neither is per user name
/// alone, so a stranger's guesses never lock the owner out of their own address:
/// - per (user, source address): after three failures in a row each further one locks
///   that pair for 1, 2, 4, ... seconds, at most five minutes;
/// - per source address (IPv6 by /64): a bucket of wrong passwords across all names,
///   `burst` at once and `per_minute` after that, so one address cannot spray names.
///
/// Both tables are LRUs of a fixed capacity. When one is full a new key pushes out the
/// record touched longest ago: an address or pair that has been quiet longest gets its
/// allowance back early, and memory stays bounded however many names and addresses
/// strangers use.
#[derive(Debug)]
pub struct LoginThrottle {
    pairs: Lru<(UserName, IpAddr), Failures>,
    addresses: Lru<IpAddr, TokenBucket>,
    address_burst: u32,
    address_per_minute: u32,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    locked_until: Option<Instant>,
}

/// A login attempt that has been counted as a failure; pass it to
/// [`LoginThrottle::succeeded`] if the password turns out to be right.
#[derive(Debug)]
#[must_use = "a correct password must take its failure back"]
pub struct Attempt {
    user: UserName,
    address: IpAddr,
    lock: Option<Duration>,
    /// The pair's lock before this attempt, and the one it set.
    locks: (Option<Instant>, Option<Instant>),
}

impl Attempt {
    /// The lock-out this attempt causes if its password is wrong.
    pub fn lock(&self) -> Option<Duration> {
        self.lock
    }
}

impl LoginThrottle {
    /// Records for at most `capacity` (user, address) pairs and as many addresses; each
    /// address may send `burst` wrong passwords at once and `per_minute` after that.
    pub fn new(capacity: usize, burst: u32, per_minute: u32) -> Self {
        Self {
            pairs: Lru::new(capacity),
            addresses: Lru::new(capacity),
            address_burst: burst,
            address_per_minute: per_minute,
        }
    }

    /// Counts a login for `user` from `ip` as a failure before it is verified, or
    /// `Err(wait)` while the pair or the address is locked (nothing is counted then).
    pub fn begin(
        &mut self,
        now: Instant,
        user: &UserName,
        ip: IpAddr,
    ) -> Result<Attempt, Duration> {
        let address = address_key(ip);
        let pair = (user.clone(), address);
        if let Some(until) = self.pairs.peek(&pair).and_then(|f| f.locked_until)
            && until > now
        {
            return Err(until - now);
        }
        let (burst, per_minute) = (self.address_burst, self.address_per_minute);
        self.addresses
            .get_or_insert_with(&address, || TokenBucket::per_minute(now, per_minute, burst))
            .try_take(now)?;
        let entry = self.pairs.get_or_insert_with(&pair, || Failures {
            count: 0,
            last: now,
            locked_until: None,
        });
        if now.saturating_duration_since(entry.last) > FORGET_AFTER {
            entry.count = 0;
        }
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
        let before = entry.locked_until;
        let lock = entry.count.checked_sub(FREE_FAILURES).map(|over| {
            let lock = Duration::from_secs(1u64 << over.min(16)).min(MAX_LOCK);
            entry.locked_until = Some(now + lock);
            lock
        });
        Ok(Attempt {
            user: pair.0,
            address,
            lock,
            locks: (before, entry.locked_until),
        })
    }

    /// The password could not be checked (the server was busy): the attempt does not
    /// count, but the pair's earlier failures still do.
    pub fn abandoned(&mut self, now: Instant, attempt: Attempt) {
        if let Some(entry) = self.pairs.peek_mut(&(attempt.user, attempt.address)) {
            entry.count = entry.count.saturating_sub(1);
            if entry.locked_until == attempt.locks.1 {
                entry.locked_until = attempt.locks.0;
            }
        }
        if let Some(bucket) = self.addresses.peek_mut(&attempt.address) {
            bucket.put_back(now);
        }
    }

    /// The password was right: the pair starts again and the address gets its token back.
    pub fn succeeded(&mut self, now: Instant, attempt: Attempt) {
        self.pairs.remove(&(attempt.user, attempt.address));
        if let Some(bucket) = self.addresses.peek_mut(&attempt.address) {
            bucket.put_back(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correct_password_verifies_and_wrong_does_not() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("wrong horse", &hash));
        assert!(!verify_password("correct horse", "not a phc string"));
        assert!(!Hasher::default().verify_unknown_user("magpie: no such user"));
    }

    #[test]
    fn hashes_from_the_argon2_crate_still_verify_and_memory_is_reused() {
        use argon2::password_hash::PasswordHasher;
        let stored = Argon2::default()
            .hash_password(b"correct horse")
            .unwrap()
            .to_string();
        let mut hasher = Hasher::default();
        assert!(hasher.verify("correct horse", &stored));
        assert!(!hasher.verify("wrong horse", &stored));
        let ptr = hasher.memory.as_ptr();
        let ours = hasher.hash("correct horse").unwrap();
        assert_eq!(hasher.memory.as_ptr(), ptr, "no new working memory");
        assert_eq!(
            ours.split('$').nth(3),
            stored.split('$').nth(3),
            "same parameters"
        );
        assert!(
            argon2::password_hash::PasswordVerifier::verify_password(
                &Argon2::default(),
                b"correct horse",
                ours.as_str()
            )
            .is_ok()
        );
    }

    #[test]
    fn a_stored_hash_asking_for_too_much_memory_never_verifies() {
        let greedy = "$argon2id$v=19$m=4194304,t=1,p=1$c2FsdHNhbHRzYWx0$\
                      AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        assert!(!Hasher::default().verify("anything at all", greedy));
    }

    const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const STRANGER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 7));

    fn throttle() -> LoginThrottle {
        LoginThrottle::new(1000, 1000, 60)
    }

    #[test]
    fn lockout_doubles_after_free_failures_and_resets_on_success() {
        let mut throttle = throttle();
        let alice = UserName::parse("alice").unwrap();
        let bob = UserName::parse("bob").unwrap();
        let t0 = Instant::now();
        for _ in 0..FREE_FAILURES - 1 {
            assert_eq!(throttle.begin(t0, &alice, HOME).unwrap().lock(), None);
        }
        let third = throttle.begin(t0, &alice, HOME).unwrap();
        assert_eq!(third.lock(), Some(Duration::from_secs(1)));
        assert_eq!(
            throttle.begin(t0, &alice, HOME).unwrap_err(),
            Duration::from_secs(1)
        );
        assert!(
            throttle.begin(t0, &bob, HOME).is_ok(),
            "other users are not slowed"
        );
        let t1 = t0 + Duration::from_secs(1);
        let fourth = throttle.begin(t1, &alice, HOME).unwrap();
        assert_eq!(fourth.lock(), Some(Duration::from_secs(2)));
        throttle.succeeded(t1, fourth);
        assert_eq!(throttle.begin(t1, &alice, HOME).unwrap().lock(), None);
    }

    #[test]
    fn an_abandoned_attempt_does_not_count_but_earlier_failures_do() {
        let mut throttle = throttle();
        let alice = UserName::parse("alice").unwrap();
        let t0 = Instant::now();
        for _ in 0..FREE_FAILURES - 1 {
            let _ = throttle.begin(t0, &alice, HOME).unwrap();
        }
        let third = throttle.begin(t0, &alice, HOME).unwrap();
        assert!(third.lock().is_some());
        throttle.abandoned(t0, third);
        let again = throttle.begin(t0, &alice, HOME).unwrap();
        assert_eq!(again.lock(), Some(Duration::from_secs(1)));
        assert!(throttle.begin(t0, &alice, HOME).is_err());
    }

    #[test]
    fn a_strangers_failures_do_not_lock_the_owners_address() {
        let mut throttle = throttle();
        let alice = UserName::parse("alice").unwrap();
        let t0 = Instant::now();
        let refused = (0..200)
            .filter(|_| throttle.begin(t0, &alice, STRANGER).is_err())
            .count();
        assert_eq!(refused, 200 - FREE_FAILURES as usize);
        let attempt = throttle.begin(t0, &alice, HOME).unwrap();
        assert_eq!(attempt.lock(), None);
        throttle.succeeded(t0, attempt);
    }

    #[test]
    fn an_address_spraying_names_runs_out_of_guesses() {
        let mut throttle = LoginThrottle::new(1000, 5, 6);
        let t0 = Instant::now();
        let name = |i: usize| UserName::parse(&format!("user{i}")).unwrap();
        for i in 0..5 {
            assert!(throttle.begin(t0, &name(i), STRANGER).is_ok());
        }
        assert_eq!(
            throttle.begin(t0, &name(5), STRANGER).unwrap_err(),
            Duration::from_secs(10)
        );
        assert!(throttle.begin(t0, &name(5), HOME).is_ok());
        // A correct password gives its token back.
        let ok = throttle.begin(t0, &name(6), HOME).unwrap();
        throttle.succeeded(t0, ok);
        for i in 0..4 {
            assert!(throttle.begin(t0, &name(10 + i), HOME).is_ok());
        }
        assert!(throttle.begin(t0, &name(20), HOME).is_err());
    }

    #[test]
    fn ipv6_addresses_share_their_64() {
        let mut throttle = LoginThrottle::new(1000, 2, 1);
        let t0 = Instant::now();
        let alice = UserName::parse("alice").unwrap();
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert!(throttle.begin(t0, &alice, a).is_ok());
        assert!(throttle.begin(t0, &alice, b).is_ok());
        assert!(throttle.begin(t0, &alice, b).is_err());
    }

    #[test]
    fn state_stays_within_capacity() {
        let mut throttle = LoginThrottle::new(50, 1000, 60);
        let t0 = Instant::now();
        for i in 0..1000u32 {
            let user = UserName::parse(&format!("user{i}")).unwrap();
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let _ = throttle.begin(t0, &user, ip);
        }
        assert_eq!(throttle.pairs.len(), 50);
        assert_eq!(throttle.addresses.len(), 50);
    }

    #[test]
    fn lockout_is_capped() {
        let mut throttle = throttle();
        let alice = UserName::parse("alice").unwrap();
        let mut now = Instant::now();
        let mut last = None;
        for _ in 0..100 {
            if let Ok(attempt) = throttle.begin(now, &alice, HOME) {
                last = attempt.lock();
            }
            now += MAX_LOCK;
        }
        assert_eq!(last, Some(MAX_LOCK));
    }
}
