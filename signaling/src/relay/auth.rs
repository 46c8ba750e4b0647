//! TURN REST credentials (the scheme of coturn's `static-auth-secret`, from
//! draft-uberti-behave-turn-rest): the user name is `expiry:user`, with `expiry` in
//! Unix seconds, and the password is base64(HMAC-SHA1(secret, username)). Anyone who
//! knows the secret (signaling) can mint them; the relay checks them without a
//! database. Also the relay's stateless nonces.

use std::fmt;

use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use ring::hmac;

/// Reads the relay secret from `path`, or, when the file does not exist, draws a new
/// one (32 random bytes, hex) and writes it there readable by the owner only (0600).
pub fn load_or_create_secret(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Write;

    match std::fs::read_to_string(path) {
        Ok(text) => return Ok(text.trim().to_owned()),
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
        Err(_) => {}
    }
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| std::io::Error::other("no randomness for the relay secret"))?;
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    writeln!(file, "{secret}")?;
    Ok(secret)
}

/// The shared secret between signaling and the relay.
#[derive(Clone)]
pub struct Secret(hmac::Key);

impl Secret {
    /// A secret from its bytes (the text in `--relay-secret` or the secret file).
    pub fn new(secret: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret))
    }

    /// The password for `username`: base64(HMAC-SHA1(secret, username)).
    pub fn password(&self, username: &str) -> String {
        BASE64_STANDARD.encode(hmac::sign(&self.0, username.as_bytes()))
    }

    /// Credentials for `user`, valid until `expiry` (Unix seconds).
    pub fn credentials(&self, user: &str, expiry: u64) -> Credentials {
        let username = format!("{expiry}:{user}");
        let password = self.password(&username);
        Credentials {
            username,
            password,
            expiry,
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// A user name and password for the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `expiry:user`.
    pub username: String,
    /// base64(HMAC-SHA1(secret, username)).
    pub password: String,
    /// When they stop working, in Unix seconds.
    pub expiry: u64,
}

/// Splits a REST user name into its expiry and user. The user part may be empty or
/// contain colons (coturn allows both); a user name without a numeric expiry is not a
/// REST user name.
pub fn split_username(username: &str) -> Option<(u64, &str)> {
    let (expiry, user) = username.split_once(':').unwrap_or((username, ""));
    if expiry.is_empty() || expiry.len() > 20 || !expiry.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((expiry.parse().ok()?, user))
}

/// The long-term credential key (RFC 8489 §9.2.2): MD5(username ":" realm ":" password).
pub fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    let integrity = stun::integrity::MessageIntegrity::new_long_term_integrity(
        username.to_owned(),
        realm.to_owned(),
        password.to_owned(),
    );
    integrity.0.try_into().unwrap_or([0; 16])
}

/// Stateless nonces: `expiry` in hex, then a MAC over it and the client's address,
/// so a nonce cannot be forged or moved to another client, and needs no table.
#[derive(Clone)]
pub struct Nonces(hmac::Key);

/// Hex digits of expiry, then of the truncated MAC.
const NONCE_LEN: usize = 16 + 16;

impl Nonces {
    /// Nonces keyed by `key` (random, from the shell).
    pub fn new(key: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, key))
    }

    /// A nonce for `client` that is fresh until `expiry` (Unix seconds).
    pub fn issue(&self, client: std::net::SocketAddr, expiry: u64) -> String {
        format!("{expiry:016x}{:016x}", self.mac(client, expiry))
    }

    /// Whether `nonce` was issued to `client` and is still fresh at `now`.
    pub fn check(&self, nonce: &str, client: std::net::SocketAddr, now: u64) -> NonceCheck {
        if nonce.len() != NONCE_LEN || !nonce.is_ascii() {
            return NonceCheck::Foreign;
        }
        let expiry = u64::from_str_radix(&nonce[..16], 16);
        let mac = u64::from_str_radix(&nonce[16..], 16);
        match (expiry, mac) {
            (Ok(expiry), Ok(mac)) if mac == self.mac(client, expiry) => {
                if now < expiry {
                    NonceCheck::Fresh
                } else {
                    NonceCheck::Stale
                }
            }
            _ => NonceCheck::Foreign,
        }
    }

    fn mac(&self, client: std::net::SocketAddr, expiry: u64) -> u64 {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(&expiry.to_be_bytes());
        ctx.update(client.to_string().as_bytes());
        let tag = ctx.sign();
        let mut first = [0u8; 8];
        first.copy_from_slice(&tag.as_ref()[..8]);
        u64::from_be_bytes(first)
    }
}

/// Mobility tickets (RFC 8016): a MAC over the allocation and a counter, so a ticket
/// cannot be guessed and each one is new.
#[derive(Clone)]
pub struct Tickets(hmac::Key);

impl Tickets {
    /// Tickets keyed by `key` (the nonce key, under its own label).
    pub fn new(key: &[u8]) -> Self {
        let mut ctx = hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA256, key));
        ctx.update(b"magpie relay mobility tickets");
        Self(hmac::Key::new(hmac::HMAC_SHA256, ctx.sign().as_ref()))
    }

    /// The ticket number `serial` for allocation `id`.
    pub fn issue(&self, id: u32, serial: u64) -> [u8; 16] {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(&id.to_be_bytes());
        ctx.update(&serial.to_be_bytes());
        let mut ticket = [0u8; 16];
        ticket.copy_from_slice(&ctx.sign().as_ref()[..16]);
        ticket
    }
}

impl fmt::Debug for Tickets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tickets(..)")
    }
}

/// What [`Nonces::check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    /// Ours, for this client, not expired.
    Fresh,
    /// Ours, but expired.
    Stale,
    /// Not issued by us to this client.
    Foreign,
}

impl fmt::Debug for Nonces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Nonces(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_match_coturn_and_the_turn_crate() {
        // The `turn` crate's LongTermAuthHandler computes the same HMAC-SHA1 scheme.
        let secret = Secret::new(b"north");
        let creds = secret.credentials("alice", 1_700_000_000);
        assert_eq!(creds.username, "1700000000:alice");
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, b"north");
        let expected = BASE64_STANDARD.encode(hmac::sign(&key, b"1700000000:alice"));
        assert_eq!(creds.password, expected);
        assert_eq!(
            split_username(&creds.username),
            Some((1_700_000_000, "alice"))
        );
        assert_eq!(split_username("1700000000"), Some((1_700_000_000, "")));
        assert_eq!(split_username("alice:17"), None);
        assert_eq!(split_username(":x"), None);
        assert_eq!(split_username("99999999999999999999999:x"), None);
    }

    #[test]
    fn a_missing_secret_is_created_private_and_then_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay-secret");
        let first = load_or_create_secret(&path).unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(load_or_create_secret(&path).unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn nonces_are_bound_to_the_client_and_expire() {
        let nonces = Nonces::new(b"k");
        let a = "192.0.2.1:1000".parse().unwrap();
        let b = "192.0.2.1:1001".parse().unwrap();
        let nonce = nonces.issue(a, 100);
        assert_eq!(nonces.check(&nonce, a, 99), NonceCheck::Fresh);
        assert_eq!(nonces.check(&nonce, a, 100), NonceCheck::Stale);
        assert_eq!(nonces.check(&nonce, b, 99), NonceCheck::Foreign);
        assert_eq!(nonces.check("nonsense", a, 99), NonceCheck::Foreign);
        assert_eq!(nonces.check(&"é".repeat(16), a, 99), NonceCheck::Foreign);
    }
}
