//! Personal data in logs: user names and IP addresses are not written as they are unless
//! the operator opts in (`magpie-server --log-pii`), as str0m does with its `pii` module.
//! With a log key ([`set_log_key`], kept beside the database) each value is written as a
//! stable keyed pseudonym instead, `~` and 12 hex digits of HMAC-SHA256(key, value): an
//! operator can follow one user's lines across restarts without seeing the name, and
//! without the key nobody can test a guessed name against the logs.

use std::fmt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use ring::hmac;

static SHOW: AtomicBool = AtomicBool::new(false);
static KEY: OnceLock<hmac::Key> = OnceLock::new();

/// Whether logs show user names and addresses (process-wide; off by default).
pub fn set_log_pii(show: bool) {
    SHOW.store(show, Ordering::Relaxed);
}

/// The key of the pseudonyms (process-wide; set once, later calls are ignored). Without
/// one, values are written `<redacted>`.
pub fn set_log_key(key: &[u8]) {
    let _ = KEY.set(hmac::Key::new(hmac::HMAC_SHA256, key));
}

/// The pseudonym of `value` under `key`: `~` and the first 6 bytes of the HMAC in hex.
pub fn pseudonym(key: &hmac::Key, value: &str) -> String {
    let tag = hmac::sign(key, value.as_bytes());
    let mut out = String::with_capacity(13);
    out.push('~');
    for b in &tag.as_ref()[..6] {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Displays its value only when [`set_log_pii`] allowed it, else its pseudonym.
pub struct Pii<T>(pub T);

impl<T: fmt::Display> fmt::Display for Pii<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if SHOW.load(Ordering::Relaxed) {
            self.0.fmt(f)
        } else if let Some(key) = KEY.get() {
            f.write_str(&pseudonym(key, &self.0.to_string()))
        } else {
            f.write_str("<redacted>")
        }
    }
}

impl<T: fmt::Display> fmt::Debug for Pii<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonyms_are_stable_per_key_and_differ_between_names_and_keys() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"one key");
        let other = hmac::Key::new(hmac::HMAC_SHA256, b"another key");
        let alice = pseudonym(&key, "alice");
        assert_eq!(alice.len(), 13);
        assert!(alice.starts_with('~') && !alice.contains("alice"));
        assert_eq!(alice, pseudonym(&key, "alice"));
        assert_ne!(alice, pseudonym(&key, "bob"));
        assert_ne!(alice, pseudonym(&other, "alice"));
    }
}
