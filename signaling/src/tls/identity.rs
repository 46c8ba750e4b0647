//! The server's certificate and key: given by the operator (PEM files), or made once,
//! self-signed, and kept beside the database.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::{Fingerprint, TlsError, provider};

/// What the server presents: its rustls configuration and its certificate's fingerprint.
#[derive(Clone)]
pub struct Identity {
    /// The TLS configuration for [`crate::server::run_tls`].
    pub config: Arc<ServerConfig>,
    /// SHA-256 of the leaf certificate, for clients to check or pin.
    pub fingerprint: Fingerprint,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Loads a certificate chain (leaf first) and its private key from PEM files.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(|e| TlsError::pem(cert, e))?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::pem(key, e))?;
        Self::new(chain, key).map_err(|err| match err {
            TlsError::NoCertificate(_) => TlsError::NoCertificate(cert.to_owned()),
            err => err,
        })
    }

    /// An identity from DER: a chain (leaf first) and the leaf's key.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, TlsError> {
        let leaf = chain
            .first()
            .ok_or_else(|| TlsError::NoCertificate(PathBuf::new()))?;
        let fingerprint = Fingerprint::of(leaf);
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        Ok(Self {
            config: Arc::new(config),
            fingerprint,
        })
    }

    /// The self-signed identity kept at `cert` and `key`: loaded if both exist, made
    /// (for `names`, which become its subject alternative names) if neither does. The
    /// key file is readable by its owner only. Returns whether it was just made.
    pub fn self_signed(
        cert: &Path,
        key: &Path,
        names: &[String],
    ) -> Result<(Self, bool), TlsError> {
        match (cert.exists(), key.exists()) {
            (true, true) => return Ok((Self::load(cert, key)?, false)),
            (true, false) | (false, true) => {
                let (present, missing) = if cert.exists() {
                    (cert, key)
                } else {
                    (key, cert)
                };
                return Err(TlsError::HalfIdentity {
                    present: present.to_owned(),
                    missing: missing.to_owned(),
                });
            }
            (false, false) => {}
        }
        let mut params = rcgen::CertificateParams::new(names.to_vec())?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "magpie-server (self-signed)");
        let key_pair = rcgen::KeyPair::generate()?;
        let certificate = params.self_signed(&key_pair)?;
        // The key first: a certificate without its key would be of no use.
        write_new(key, key_pair.serialize_pem().as_bytes(), 0o600)
            .map_err(|e| TlsError::file(key, e))?;
        write_new(cert, certificate.pem().as_bytes(), 0o644)
            .map_err(|e| TlsError::file(cert, e))?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pair.serialize_der()));
        Ok((Self::new(vec![certificate.der().clone()], key_der)?, true))
    }
}

/// Where the self-signed certificate and key for the database at `db` live:
/// `<db>.cert.pem` and `<db>.key.pem`.
pub fn self_signed_paths(db: &Path) -> (PathBuf, PathBuf) {
    let with = |suffix: &str| {
        let mut name = OsString::from(db.as_os_str());
        name.push(suffix);
        PathBuf::from(name)
    };
    (with(".cert.pem"), with(".key.pem"))
}

/// Creates `path` (it must not exist) with `mode` on Unix, and writes `bytes`.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]
    }

    #[test]
    fn a_self_signed_identity_is_made_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed_paths(&dir.path().join("m.db"));
        assert!(cert.ends_with("m.db.cert.pem") && key.ends_with("m.db.key.pem"));
        let (first, made) = Identity::self_signed(&cert, &key, &names()).unwrap();
        assert!(made);
        let (again, made) = Identity::self_signed(&cert, &key, &names()).unwrap();
        assert!(!made);
        assert_eq!(first.fingerprint, again.fingerprint);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        }
    }

    #[test]
    fn half_an_identity_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed_paths(&dir.path().join("m.db"));
        Identity::self_signed(&cert, &key, &names()).unwrap();
        fs::remove_file(&key).unwrap();
        let err = Identity::self_signed(&cert, &key, &names()).unwrap_err();
        assert!(matches!(err, TlsError::HalfIdentity { .. }), "{err}");
        assert!(err.to_string().contains("--tls-cert"), "{err}");
    }

    #[test]
    fn a_file_that_is_not_pem_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        fs::write(&junk, b"\xff\x00 not pem").unwrap();
        assert!(Identity::load(&junk, &junk).is_err());
        let missing = dir.path().join("missing.pem");
        assert!(matches!(
            Identity::load(&missing, &missing),
            Err(TlsError::File { .. })
        ));
    }
}
