//! TLS as a user meets it, with the real binaries: `magpie-server` with its self-signed
//! certificate, `magpie` pinning it on first use and refusing a changed one; a server
//! with a CA-signed certificate and `magpie --ca`; and the bytes on the wire, recorded
//! by a relay between client and server, never holding the password.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Output};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use common::{magpie, spawn_server, text};
use magpie_signaling::tls::{Fingerprint, KnownServers};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(config: &Path, server: &str, user: &str, args: &[&str]) -> Output {
    magpie(config, server, user, args).output().unwrap()
}

fn ok(out: &Output, what: &str) {
    assert!(out.status.success(), "{what}: {}", text(&out.stderr));
}

#[test]
fn magpie_pins_a_new_server_reuses_the_pin_and_refuses_a_changed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("client").join("config.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(&config, "").unwrap();
    let db = dir.path().join("first.db");
    let (child, ready) = spawn_server(&[
        "--listen",
        "127.0.0.1:0",
        "--no-stun",
        "--db",
        db.to_str().unwrap(),
    ]);
    let server = Killed(child);
    let addr = ready["listen"].as_str().unwrap().to_owned();
    let first: Fingerprint = ready["tls_fingerprint"].as_str().unwrap().parse().unwrap();

    // First use: pinned without a question (stdin is not a terminal here).
    ok(&run(&config, &addr, "alice", &["register"]), "register");
    let known = KnownServers::beside(&config);
    assert_eq!(known.pinned(&addr).unwrap(), Some(first));
    // Second connection: the pin matches.
    ok(&run(&config, &addr, "alice", &["history"]), "history");

    // The same address, restarted with another (new self-signed) certificate.
    drop(server);
    let other_db = dir.path().join("second.db");
    let (child, ready) = spawn_server(&[
        "--listen",
        &addr,
        "--no-stun",
        "--db",
        other_db.to_str().unwrap(),
    ]);
    let _server = Killed(child);
    let second = ready["tls_fingerprint"].as_str().unwrap().to_owned();
    assert_ne!(second, first.to_string());
    let out = run(&config, &addr, "alice", &["history"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    for part in [
        "CHANGED".to_owned(),
        first.to_string(),
        second,
        known.path().display().to_string(),
    ] {
        assert!(
            stderr.contains(&part),
            "the refusal does not name {part}: {stderr}"
        );
    }
    // Still pinned to the first.
    assert_eq!(known.pinned(&addr).unwrap(), Some(first));
}

#[test]
fn magpie_with_ca_verifies_a_ca_signed_server_by_name_and_pins_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let config = path("config.toml");
    std::fs::write(&config, "").unwrap();

    let ca = |name: &str| {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        (pem, Issuer::new(params, key))
    };
    let (ca_pem, issuer) = ca("Magpie test CA");
    let (other_pem, _) = ca("Someone else's CA");
    std::fs::write(path("ca.pem"), ca_pem).unwrap();
    std::fs::write(path("other.pem"), other_pem).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    std::fs::write(path("server.pem"), cert.pem()).unwrap();
    std::fs::write(path("server.key"), key.serialize_pem()).unwrap();

    let (child, ready) = spawn_server(&[
        "--listen",
        "127.0.0.1:0",
        "--no-stun",
        "--db",
        path("m.db").to_str().unwrap(),
        "--tls-cert",
        path("server.pem").to_str().unwrap(),
        "--tls-key",
        path("server.key").to_str().unwrap(),
    ]);
    let _server = Killed(child);
    assert_eq!(
        ready["tls_fingerprint"].as_str().unwrap(),
        Fingerprint::of(cert.der()).to_string()
    );
    assert!(
        !path("m.db.cert.pem").exists(),
        "made a certificate it was not asked for"
    );
    let port = ready["listen"]
        .as_str()
        .unwrap()
        .rsplit_once(':')
        .unwrap()
        .1
        .to_owned();
    let by_name = format!("localhost:{port}");

    let ca_arg = path("ca.pem");
    let out = run(
        &config,
        &by_name,
        "alice",
        &["--ca", ca_arg.to_str().unwrap(), "register"],
    );
    ok(&out, "register with --ca");
    let out = run(
        &config,
        &by_name,
        "alice",
        &["--ca", ca_arg.to_str().unwrap(), "history"],
    );
    ok(&out, "history with --ca");
    assert!(!path("known_servers").exists(), "--ca pinned something");

    // Another CA: refused, and not pinned either.
    let other = path("other.pem");
    let out = run(
        &config,
        &by_name,
        "alice",
        &["--ca", other.to_str().unwrap(), "history"],
    );
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("TLS"), "{}", text(&out.stderr));
    // The certificate names localhost, not 127.0.0.1.
    let by_ip = format!("127.0.0.1:{port}");
    let out = run(
        &config,
        &by_ip,
        "alice",
        &["--ca", ca_arg.to_str().unwrap(), "history"],
    );
    assert!(!out.status.success());
    assert!(!path("known_servers").exists());
}

/// A TCP relay on loopback that records every byte in both directions.
struct Relay {
    addr: String,
    bytes: Arc<Mutex<Vec<u8>>>,
    copies: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Relay {
    fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let copies = Arc::new(Mutex::new(Vec::new()));
        let (upstream, recorded, handles) = (upstream.to_owned(), bytes.clone(), copies.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let server = TcpStream::connect(&upstream).unwrap();
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let recorded = recorded.clone();
                    handles.lock().unwrap().push(std::thread::spawn(move || {
                        let mut buf = [0; 4096];
                        while let Ok(n @ 1..) = from.read(&mut buf) {
                            recorded.lock().unwrap().extend_from_slice(&buf[..n]);
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Write);
                    }));
                }
            }
        });
        Self {
            addr,
            bytes,
            copies,
        }
    }

    /// Everything relayed so far, once every connection has closed.
    fn recorded(&self) -> Vec<u8> {
        let handles: Vec<_> = self.copies.lock().unwrap().drain(..).collect();
        for handle in handles {
            handle.join().unwrap();
        }
        self.bytes.lock().unwrap().clone()
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn the_password_never_crosses_the_wire_in_clear() {
    const SECRET: &str = "wire-secret-Zebra-42";
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "").unwrap();
    let session = |server_args: &[&str], client_args: &[&str]| -> Vec<u8> {
        let db = dir.path().join(format!("m{}.db", server_args.len()));
        let mut args = vec![
            "--listen",
            "127.0.0.1:0",
            "--no-stun",
            "--db",
            db.to_str().unwrap(),
        ];
        args.extend_from_slice(server_args);
        let (child, ready) = spawn_server(&args);
        let _server = Killed(child);
        let relay = Relay::start(ready["listen"].as_str().unwrap());
        for command in ["register", "history"] {
            let mut args = client_args.to_vec();
            args.push(command);
            let out = magpie(&config, &relay.addr, "alice", &args)
                .env("MAGPIE_PASSWORD", SECRET)
                .output()
                .unwrap();
            ok(&out, command);
        }
        relay.recorded()
    };

    let tls = session(&[], &[]);
    assert!(tls.len() > 1000, "only {} bytes relayed", tls.len());
    assert!(
        !contains(&tls, SECRET.as_bytes()),
        "the password crossed in clear"
    );
    assert!(!contains(&tls, b"\"login\""), "a request crossed in clear");
    // The recorder does see a password that is sent in clear: the same with --plain.
    let plain = session(&["--plain"], &["--plain"]);
    assert!(
        contains(&plain, SECRET.as_bytes()),
        "the relay recorded nothing useful"
    );
}
