//! TLS in one process: a server with a CA-signed or self-signed certificate, clients
//! that trust a CA, a fingerprint, or pin on first use; and what goes wrong clearly.

use std::net::SocketAddr;
use std::sync::Arc;

use magpie_signaling::client::{self, ClientError};
use magpie_signaling::tls::{Fingerprint, Identity, KnownServers, Trust};
use magpie_signaling::{Config, server};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::common::{PASSWORD, TestServer, init_log};

/// A CA made with rcgen, and a way to issue server certificates from it.
struct Ca {
    cert: CertificateDer<'static>,
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self {
            pem: cert.pem(),
            cert: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    fn issue(&self, names: &[&str]) -> Identity {
        let names: Vec<String> = names.iter().map(|&n| n.to_owned()).collect();
        let params = CertificateParams::new(names).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Identity::new(vec![cert.der().clone(), self.cert.clone()], key).unwrap()
    }
}

/// A TLS server in this process, on `addr` (port 0 for any).
struct TlsServer {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), magpie_signaling::Error>>,
    _dir: tempfile::TempDir,
}

impl TlsServer {
    async fn start(identity: &Identity, addr: &str) -> Self {
        init_log();
        let dir = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let config = Config::new(dir.path().join("m.db"));
        let task = tokio::spawn(server::run_tls(
            listener,
            Arc::clone(&identity.config),
            config,
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            addr,
            stop,
            task,
            _dir: dir,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

fn self_signed() -> Identity {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Identity::new(vec![cert.der().clone()], key).unwrap()
}

async fn connect(server: &str, trust: Trust) -> Result<client::Client, ClientError> {
    let tls = trust.client_config().unwrap();
    let (client, _events) = client::connect_tls(server, tls, Default::default()).await?;
    Ok(client)
}

#[tokio::test]
async fn a_ca_signed_server_is_trusted_for_its_name_and_only_under_its_ca() {
    let ca = Ca::new("Magpie test CA");
    let server = TlsServer::start(&ca.issue(&["localhost"]), "127.0.0.1:0").await;
    let port = server.addr.port();
    let by_name = format!("localhost:{port}");

    let alice = connect(&by_name, Trust::Ca(vec![ca.cert.clone()]))
        .await
        .unwrap();
    alice.register("alice", PASSWORD).await.unwrap();
    alice.login("alice", PASSWORD).await.unwrap();

    // Another CA's client refuses it.
    let other = Ca::new("Someone else's CA");
    let err = connect(&by_name, Trust::Ca(vec![other.cert.clone()]))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Tls(_)), "{err}");
    // The certificate is for localhost, not for 127.0.0.1.
    let by_ip = format!("127.0.0.1:{port}");
    let err = connect(&by_ip, Trust::Ca(vec![ca.cert.clone()]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not valid for name"), "{err}");
    server.stop().await;
}

#[tokio::test]
async fn a_ca_file_is_read_and_a_file_without_certificates_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Magpie test CA");
    let pem = dir.path().join("ca.pem");
    std::fs::write(&pem, &ca.pem).unwrap();
    assert!(matches!(Trust::ca_file(&pem).unwrap(), Trust::Ca(certs) if certs.len() == 1));
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "nothing here\n").unwrap();
    assert!(Trust::ca_file(&empty).is_err());
}

#[tokio::test]
async fn pinning_accepts_the_first_and_same_certificate_and_refuses_a_changed_one() {
    let dir = tempfile::tempdir().unwrap();
    let known = KnownServers::new(dir.path().join("known_servers"));
    let first = self_signed();
    let server = TlsServer::start(&first, "127.0.0.1:0").await;
    let name = server.addr.to_string();
    let pin = || Trust::RootsOrPin {
        known: known.clone(),
        server: name.clone(),
    };

    connect(&name, pin()).await.unwrap().ping().await.unwrap();
    assert_eq!(known.pinned(&name).unwrap(), Some(first.fingerprint));
    connect(&name, pin()).await.unwrap().ping().await.unwrap();

    // The same address, another certificate.
    server.stop().await;
    let second = self_signed();
    let server = TlsServer::start(&second, &name).await;
    let err = connect(&name, pin()).await.unwrap_err();
    let ClientError::ServerChanged(mismatch) = &err else {
        panic!("expected a pin mismatch, got {err}");
    };
    assert_eq!(mismatch.seen, second.fingerprint);
    assert_eq!(mismatch.pinned, Some(first.fingerprint));
    let text = err.to_string();
    for part in [
        first.fingerprint.to_string(),
        second.fingerprint.to_string(),
        known.path().display().to_string(),
    ] {
        assert!(text.contains(&part), "{text} does not name {part}");
    }
    // The pin is unchanged.
    assert_eq!(known.pinned(&name).unwrap(), Some(first.fingerprint));
    server.stop().await;
}

#[tokio::test]
async fn a_fingerprint_is_trusted_exactly() {
    let identity = self_signed();
    let server = TlsServer::start(&identity, "127.0.0.1:0").await;
    let name = server.addr.to_string();
    connect(&name, Trust::Fingerprint(identity.fingerprint))
        .await
        .unwrap();
    let err = connect(&name, Trust::Fingerprint(Fingerprint::of(b"another")))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::ServerChanged(_)), "{err}");
    server.stop().await;
}

#[tokio::test]
async fn tls_and_plain_do_not_mix_and_say_so() {
    // A TLS client at a plain server.
    let mut plain = TestServer::start().await;
    let err = connect(
        &plain.addr.to_string(),
        Trust::Fingerprint(Fingerprint::of(b"x")),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ClientError::NotTls), "{err}");
    assert!(err.to_string().contains("--plain"), "{err}");
    plain.stop().await;

    // A plain client at a TLS server gets no hello; the server is unharmed.
    let identity = self_signed();
    let server = TlsServer::start(&identity, "127.0.0.1:0").await;
    let config =
        client::ClientConfig::default().set_hello_timeout(std::time::Duration::from_millis(500));
    assert!(client::connect_with(server.addr, config).await.is_err());
    connect(
        &server.addr.to_string(),
        Trust::Fingerprint(identity.fingerprint),
    )
    .await
    .unwrap()
    .ping()
    .await
    .unwrap();
    server.stop().await;
}
