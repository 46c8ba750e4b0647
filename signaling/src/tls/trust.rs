//! What a client trusts: the system's roots, a CA it is given, one fingerprint, or the
//! certificate it saw the first time (trust on first use, kept in `known_servers`).
//!
//! Pinning is ssh's `accept-new`: a server never seen before is recorded without a
//! question; a server whose certificate has changed is refused with both fingerprints
//! and the file to edit. The pin covers the certificate alone, not its names or dates,
//! as an ssh host key does; the handshake still proves the server holds its key.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tracing::{debug, info};

use super::{Fingerprint, TlsError, provider};

/// Which servers a client accepts.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Certificates that chain to the system's trust store, valid for the server name.
    Roots,
    /// Certificates that chain to one of these CAs, valid for the server name.
    Ca(Vec<CertificateDer<'static>>),
    /// A leaf certificate with exactly this fingerprint, whatever its names.
    Fingerprint(Fingerprint),
    /// The system's roots; failing them, the certificate pinned for `server` in
    /// `known`, pinned there now if `server` has none.
    RootsOrPin {
        /// The pins.
        known: KnownServers,
        /// The server as the user named it, `HOST:PORT`: the key of its pin.
        server: String,
    },
}

impl Trust {
    /// Trusts the CA certificates in a PEM file.
    pub fn ca_file(path: &Path) -> Result<Self, TlsError> {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(|e| TlsError::pem(path, e))?;
        if certs.is_empty() {
            return Err(TlsError::NoCertificate(path.to_owned()));
        }
        // Fail here, naming the file, rather than at every connection.
        roots(&certs).map_err(|source| TlsError::BadCa {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self::Ca(certs))
    }

    /// The rustls client configuration for this trust.
    pub fn client_config(self) -> Result<Arc<ClientConfig>, TlsError> {
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()?;
        let config = match self {
            Self::Roots => builder
                .with_root_certificates(system_roots())
                .with_no_client_auth(),
            Self::Ca(certs) => builder
                .with_root_certificates(roots(&certs)?)
                .with_no_client_auth(),
            Self::Fingerprint(expected) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Pinned {
                    roots: None,
                    pin: Pin::Exactly(expected),
                    provider,
                }))
                .with_no_client_auth(),
            Self::RootsOrPin { known, server } => {
                let store = system_roots();
                let roots = if store.is_empty() {
                    None
                } else {
                    WebPkiServerVerifier::builder_with_provider(
                        Arc::new(store),
                        Arc::clone(&provider),
                    )
                    .build()
                    .ok()
                };
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(Pinned {
                        roots,
                        pin: Pin::Known { known, server },
                        provider,
                    }))
                    .with_no_client_auth()
            }
        };
        Ok(Arc::new(config))
    }
}

fn roots(certs: &[CertificateDer<'static>]) -> Result<RootCertStore, rustls::Error> {
    let mut store = RootCertStore::empty();
    for cert in certs {
        store.add(cert.clone())?;
    }
    Ok(store)
}

/// The system's trust store; certificates it cannot use are skipped.
fn system_roots() -> RootCertStore {
    let found = rustls_native_certs::load_native_certs();
    for err in &found.errors {
        debug!(%err, "system trust store");
    }
    let mut store = RootCertStore::empty();
    let (added, ignored) = store.add_parsable_certificates(found.certs);
    debug!(added, ignored, "system roots loaded");
    store
}

/// The `known_servers` file: `HOST:PORT FINGERPRINT`, one server a line, `#` comments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownServers {
    path: PathBuf,
}

/// What a pin check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinCheck {
    /// The server's certificate is the one pinned.
    Known,
    /// The server had no pin; it has one now.
    Added,
}

impl KnownServers {
    /// The file at `path` (created on the first pin).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// `known_servers` in the directory of `config_file`.
    pub fn beside(config_file: &Path) -> Self {
        let dir = config_file.parent().unwrap_or(Path::new("."));
        Self::new(dir.join("known_servers"))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The fingerprint pinned for `server`, if any. A missing file pins nothing;
    /// lines that do not parse are skipped.
    pub fn pinned(&self, server: &str) -> io::Result<Option<Fingerprint>> {
        let text = match fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err),
        };
        let key = key(server);
        Ok(text.lines().find_map(|line| {
            let line = line.trim();
            if line.starts_with('#') {
                return None;
            }
            let (name, fingerprint) = line.split_once(char::is_whitespace)?;
            (name == key).then(|| fingerprint.trim().parse().ok())?
        }))
    }

    /// Checks `seen` against the pin for `server`, pinning it if there is none.
    pub fn check(&self, server: &str, seen: Fingerprint) -> Result<PinCheck, Box<PinMismatch>> {
        let io_failed = |source: io::Error| {
            Box::new(PinMismatch {
                server: server.to_owned(),
                seen,
                pinned: None,
                file: self.path.clone(),
                io: Some(Arc::new(source)),
            })
        };
        match self.pinned(server).map_err(io_failed)? {
            Some(pinned) if pinned == seen => Ok(PinCheck::Known),
            Some(pinned) => Err(Box::new(PinMismatch {
                server: server.to_owned(),
                seen,
                pinned: Some(pinned),
                file: self.path.clone(),
                io: None,
            })),
            None => {
                self.add(server, seen).map_err(io_failed)?;
                info!(server, %seen, file = %self.path.display(), "pinned a new server");
                Ok(PinCheck::Added)
            }
        }
    }

    fn add(&self, server: &str, fingerprint: Fingerprint) -> io::Result<()> {
        if let Some(dir) = self.path.parent()
            && !dir.as_os_str().is_empty()
        {
            fs::create_dir_all(dir)?;
        }
        let mut file = fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.path)?;
        let mut text = String::new();
        if file.metadata()?.len() == 0 {
            text.push_str(
                "# Magpie's known signaling servers: HOST:PORT and the SHA-256 fingerprint of \
                 its TLS certificate,\n# pinned on first connection. Delete a line only when \
                 the server's operator confirms a new fingerprint.\n",
            );
        }
        text.push_str(&format!("{} {fingerprint}\n", key(server)));
        // One write, so that clients pinning at the same moment do not interleave lines.
        file.write_all(text.as_bytes())
    }
}

/// The key of a server's pin: as the user wrote it, the host in lower case.
fn key(server: &str) -> String {
    server.trim().to_ascii_lowercase()
}

/// The server's certificate is not the one pinned for it (or the pin could not be
/// read or written).
#[derive(Debug, Clone)]
pub struct PinMismatch {
    /// The server, `HOST:PORT`.
    pub server: String,
    /// The fingerprint the server presented.
    pub seen: Fingerprint,
    /// The fingerprint pinned for it; `None` when the file failed.
    pub pinned: Option<Fingerprint>,
    /// The `known_servers` file.
    pub file: PathBuf,
    io: Option<Arc<io::Error>>,
}

impl std::fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            server,
            seen,
            pinned,
            file,
            io,
        } = self;
        let file = file.display();
        match (pinned, io) {
            (Some(pinned), _) => write!(
                f,
                "the TLS certificate of {server} has CHANGED: it now has SHA-256 fingerprint \
                 {seen}, but {file} pins {pinned}. Someone may be intercepting the \
                 connection, or the server has a new certificate. Ask its operator for the \
                 fingerprint it prints at start; if it is {seen}, delete the line for \
                 {server} from {file} and connect again"
            ),
            (None, Some(err)) => write!(
                f,
                "cannot check the pin for {server} (fingerprint {seen}) in {file}: {err}"
            ),
            (None, None) => write!(f, "no pin for {server} in {file}"),
        }
    }
}

impl std::error::Error for PinMismatch {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.io.as_deref().map(|e| e as _)
    }
}

impl PinMismatch {
    /// The pin failure behind a failed TLS handshake, if that is why it failed.
    pub fn in_handshake_error(err: &io::Error) -> Option<&Self> {
        let rustls::Error::InvalidCertificate(CertificateError::Other(other)) =
            err.get_ref()?.downcast_ref::<rustls::Error>()?
        else {
            return None;
        };
        other.0.downcast_ref::<Self>()
    }
}

#[derive(Debug)]
enum Pin {
    Exactly(Fingerprint),
    Known { known: KnownServers, server: String },
}

/// Accepts what `roots` accepts, otherwise the pinned certificate.
#[derive(Debug)]
struct Pinned {
    roots: Option<Arc<WebPkiServerVerifier>>,
    pin: Pin,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            match roots.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ) {
                Ok(verified) => return Ok(verified),
                Err(err) => debug!(%err, "not valid under the system roots; checking the pin"),
            }
        }
        let seen = Fingerprint::of(end_entity);
        let refuse = |mismatch: Box<PinMismatch>| {
            debug!(%mismatch, "refusing the server");
            rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(
                Arc::new(*mismatch),
            )))
        };
        match &self.pin {
            Pin::Exactly(expected) if *expected == seen => Ok(ServerCertVerified::assertion()),
            Pin::Exactly(expected) => Err(refuse(Box::new(PinMismatch {
                server: server_name.to_str().into_owned(),
                seen,
                pinned: Some(*expected),
                file: PathBuf::from("(the fingerprint given)"),
                io: None,
            }))),
            Pin::Known { known, server } => known
                .check(server, seen)
                .map(|_| ServerCertVerified::assertion())
                .map_err(refuse),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_sight_is_pinned_and_a_change_is_refused_naming_both() {
        let dir = tempfile::tempdir().unwrap();
        let known = KnownServers::beside(&dir.path().join("sub").join("config.toml"));
        let (a, b) = (Fingerprint::of(b"a"), Fingerprint::of(b"b"));
        assert_eq!(
            known.check("Host.example:7400", a).unwrap(),
            PinCheck::Added
        );
        assert_eq!(
            known.check("host.example:7400", a).unwrap(),
            PinCheck::Known
        );
        // Another port is another server.
        assert_eq!(
            known.check("host.example:7401", b).unwrap(),
            PinCheck::Added
        );
        let err = known.check("host.example:7400", b).unwrap_err();
        let text = err.to_string();
        for part in [
            a.to_string(),
            b.to_string(),
            known.path().display().to_string(),
        ] {
            assert!(text.contains(&part), "{text} lacks {part}");
        }
        assert!(text.contains("CHANGED"), "{text}");
    }

    #[test]
    fn junk_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let known = KnownServers::new(dir.path().join("known_servers"));
        let a = Fingerprint::of(b"a");
        fs::write(
            known.path(),
            format!("# comment\n\ngarbage\nx:1 not-hex\n\u{fffd}\u{0}\nx:1 {a}\n"),
        )
        .unwrap();
        assert_eq!(known.pinned("x:1").unwrap(), Some(a));
        assert_eq!(known.pinned("y:1").unwrap(), None);
    }
}
