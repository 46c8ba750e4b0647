//! Password hashing (argon2id) and the wrong-password slow-down.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use tokio::time::Instant;

use crate::proto::UserName;

/// Hashing failed (the OS random source or the parameters).
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(#[source] argon2::password_hash::Error);

/// Hashes a password with argon2id and a random salt into a PHC string. CPU-bound
/// (tens of milliseconds): call it on the blocking pool.
pub fn hash_password(password: &str) -> Result<String, HashError> {
    let hash: PasswordHash = Argon2::default()
        .hash_password(password.as_bytes())
        .map_err(HashError)?;
    Ok(hash.to_string())
}

/// Whether `password` matches a PHC string from [`hash_password`]. An unreadable
/// stored hash never matches. CPU-bound like [`hash_password`].
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|hash| {
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
    })
}

/// Spends the time of a real verification for a user that does not exist, so a
/// login's timing does not reveal which names are registered. Always `false`.
pub fn verify_unknown_user(password: &str) -> bool {
    static DUMMY: LazyLock<String> =
        LazyLock::new(|| hash_password("magpie: no such user").unwrap_or_default());
    let _ = std::hint::black_box(verify_password(password, &DUMMY));
    false
}

/// Wrong passwords allowed before the slow-down starts.
const FREE_FAILURES: u32 = 3;
/// The longest lock-out.
const MAX_LOCK: Duration = Duration::from_secs(300);
/// Failure records older than this are forgotten when the table grows large.
const FORGET_AFTER: Duration = Duration::from_secs(3600);
const PRUNE_ABOVE: usize = 10_000;

/// Per-user exponential back-off on wrong passwords: after three failures in a row
/// each further one locks the account's logins for 1, 2, 4, ... seconds (at most
/// five minutes). Other users are not affected; a correct password resets the count.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    failures: HashMap<UserName, Failures>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    locked_until: Option<Instant>,
}

impl LoginThrottle {
    /// `Err(wait)` while the user's logins are locked.
    pub fn check(&self, now: Instant, user: &UserName) -> Result<(), Duration> {
        match self.failures.get(user).and_then(|f| f.locked_until) {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    /// Records a wrong password; returns the lock-out it causes, if any.
    pub fn record_failure(&mut self, now: Instant, user: &UserName) -> Option<Duration> {
        if self.failures.len() > PRUNE_ABOVE {
            self.failures
                .retain(|_, f| now.saturating_duration_since(f.last) < FORGET_AFTER);
        }
        let entry = self.failures.entry(user.clone()).or_insert(Failures {
            count: 0,
            last: now,
            locked_until: None,
        });
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
        let over = entry.count.checked_sub(FREE_FAILURES)?;
        let lock = Duration::from_secs(1u64 << over.min(16)).min(MAX_LOCK);
        entry.locked_until = Some(now + lock);
        Some(lock)
    }

    /// A correct password: the count starts again.
    pub fn record_success(&mut self, user: &UserName) {
        self.failures.remove(user);
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
        assert!(!verify_unknown_user("magpie: no such user"));
    }

    #[test]
    fn lockout_doubles_after_free_failures_and_resets_on_success() {
        let mut throttle = LoginThrottle::default();
        let alice = UserName::parse("alice").unwrap();
        let bob = UserName::parse("bob").unwrap();
        let t0 = Instant::now();
        for _ in 0..FREE_FAILURES - 1 {
            assert_eq!(throttle.record_failure(t0, &alice), None);
        }
        assert_eq!(
            throttle.record_failure(t0, &alice),
            Some(Duration::from_secs(1))
        );
        assert_eq!(throttle.check(t0, &alice), Err(Duration::from_secs(1)));
        assert_eq!(
            throttle.check(t0, &bob),
            Ok(()),
            "other users are not slowed"
        );
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(throttle.check(t1, &alice), Ok(()));
        assert_eq!(
            throttle.record_failure(t1, &alice),
            Some(Duration::from_secs(2))
        );
        throttle.record_success(&alice);
        assert_eq!(throttle.check(t1, &alice), Ok(()));
    }

    #[test]
    fn lockout_is_capped() {
        let mut throttle = LoginThrottle::default();
        let alice = UserName::parse("alice").unwrap();
        let t0 = Instant::now();
        let mut last = None;
        for _ in 0..100 {
            last = throttle.record_failure(t0, &alice);
        }
        assert_eq!(last, Some(MAX_LOCK));
    }
}
