//! TLS for signaling: the server's identity ([`identity`]) and what a client trusts
//! ([`trust`]).
//!
//! rustls with the ring provider, chosen once here ([`provider`]) so that server, client
//! and fingerprints agree on one crypto library. A server either has a certificate from
//! its operator or makes a self-signed one once and keeps it; a client trusts the
//! system's roots, a CA it is given, or, like ssh's `accept-new`, the certificate it saw
//! the first time it connected to that server (its [`Fingerprint`], kept in a
//! `known_servers` file).

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;

pub mod identity;
pub mod trust;

pub use identity::{Identity, self_signed_paths};
pub use trust::{KnownServers, PinMismatch, Trust};

/// The crypto provider every TLS configuration here uses: ring.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The SHA-256 of a certificate (its DER encoding): what `openssl x509 -fingerprint
/// -sha256` prints, and what a client pins.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER-encoded certificate.
    pub fn of(der: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let mut bytes = [0; 32];
        bytes.copy_from_slice(digest.as_ref());
        Self(bytes)
    }
}

impl fmt::Display for Fingerprint {
    /// Upper-case hex bytes joined by colons, as OpenSSL prints them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{byte:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// Text that is not a SHA-256 fingerprint.
#[derive(Debug, thiserror::Error)]
#[error("not a SHA-256 fingerprint (32 hex bytes, colons optional): {0:?}")]
pub struct BadFingerprint(String);

impl FromStr for Fingerprint {
    type Err = BadFingerprint;

    /// Hex, upper or lower case, with or without colons between the bytes.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadFingerprint(s.to_owned());
        let hex: Vec<u8> = s.bytes().filter(|&b| b != b':').collect();
        if hex.len() != 64 {
            return Err(bad());
        }
        let mut bytes = [0; 32];
        for (byte, pair) in bytes.iter_mut().zip(hex.chunks_exact(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| bad())?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
        }
        Ok(Self(bytes))
    }
}

/// Setting up TLS failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A PEM file holds nothing usable.
    #[error("{path}: {source}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// A PEM file holds no certificate.
    #[error("{0}: no certificate in this PEM file")]
    NoCertificate(PathBuf),
    /// Only one of the self-signed certificate and its key exists.
    #[error(
        "{present} exists but {missing} does not; remove {present} to make a new \
         certificate, or give both with --tls-cert and --tls-key"
    )]
    HalfIdentity {
        /// The file that exists.
        present: PathBuf,
        /// The file that does not.
        missing: PathBuf,
    },
    /// Making a certificate failed.
    #[error("cannot make a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the configuration (e.g. a key that does not match the certificate).
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
    /// No trust anchor could be built from a CA file.
    #[error("{path}: not a usable CA certificate: {source}")]
    BadCa {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rustls::Error,
    },
}

impl TlsError {
    fn file(path: &std::path::Path, source: io::Error) -> Self {
        Self::File {
            path: path.to_owned(),
            source,
        }
    }

    fn pem(path: &std::path::Path, source: rustls::pki_types::pem::Error) -> Self {
        match source {
            rustls::pki_types::pem::Error::Io(source) => Self::file(path, source),
            source => Self::Pem {
                path: path.to_owned(),
                source,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_prints_as_openssl_does_and_parses_back() {
        let fp = Fingerprint::of(b"not really a certificate");
        let text = fp.to_string();
        assert_eq!(text.len(), 32 * 3 - 1);
        assert!(text.chars().all(|c| c == ':' || c.is_ascii_hexdigit()));
        assert_eq!(text.parse::<Fingerprint>().unwrap(), fp);
        let bare = text.replace(':', "").to_lowercase();
        assert_eq!(bare.parse::<Fingerprint>().unwrap(), fp);
    }

    #[test]
    fn a_bad_fingerprint_is_an_error_not_a_panic() {
        for bad in ["", "AB", &"ZZ".repeat(32), &"é".repeat(32), &"A".repeat(65)] {
            assert!(bad.parse::<Fingerprint>().is_err(), "{bad:?}");
        }
    }
}
