//! Issue 10's privacy tests on real processes: a whole call recorded on loopback shows
//! no plaintext, and a signaling relay that swaps the key-exchange keys in transit makes
//! the two sides show different safety codes.
//!
//! The recorders are the test's own: a TCP relay between the clients and the server
//! records every signaling byte, and a raw IPv4/UDP socket (CAP_NET_RAW, as the tests
//! run in CI as root) records every UDP datagram on loopback between the two clients'
//! media ports.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use common::{PASSWORD, Server, Watched, magpie, spawn_server, text};
use magpie_media::srtp::exchange::KeyPair;
use magpie_media::wire::{self, Kind};
use serde_json::Value;
use socket2::{Domain, Protocol, Socket, Type};

/// What a relay does to each signaling line it passes on; `None` passes bytes untouched.
type Rewrite = fn(&str) -> String;

/// A TCP relay on loopback that records every byte in both directions, and may rewrite
/// each line (the man in the middle, on plain TCP).
struct Relay {
    addr: String,
    bytes: Arc<Mutex<Vec<u8>>>,
}

impl Relay {
    fn start(upstream: &str, rewrite: Option<Rewrite>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let (upstream, recorded) = (upstream.to_owned(), bytes.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let server = TcpStream::connect(&upstream).unwrap();
                for (from, to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let recorded = recorded.clone();
                    std::thread::spawn(move || copy(from, to, &recorded, rewrite));
                }
            }
        });
        Self { addr, bytes }
    }

    fn recorded(&self) -> Vec<u8> {
        self.bytes.lock().unwrap().clone()
    }
}

fn copy(mut from: TcpStream, mut to: TcpStream, recorded: &Mutex<Vec<u8>>, rw: Option<Rewrite>) {
    match rw {
        None => {
            let mut buf = [0; 4096];
            while let Ok(n @ 1..) = from.read(&mut buf) {
                recorded.lock().unwrap().extend_from_slice(&buf[..n]);
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
        Some(rewrite) => {
            for line in BufReader::new(from).lines().map_while(Result::ok) {
                let line = rewrite(&line) + "\n";
                recorded.lock().unwrap().extend_from_slice(line.as_bytes());
                if to.write_all(line.as_bytes()).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every UDP datagram on the host's loopback between `ports` (their UDP payloads),
/// recorded by a raw socket until stopped.
struct UdpRecorder {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Vec<u8>>>>,
}

impl UdpRecorder {
    fn start(ports: [u16; 2]) -> Self {
        let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP))
            .expect("a raw socket records the call's datagrams: the test needs CAP_NET_RAW (root)");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut socket = socket;
            let mut seen = Vec::new();
            let mut buf = vec![0u8; 65_536];
            while !stopped.load(Ordering::Relaxed) {
                let Ok(n) = socket.read(&mut buf) else {
                    continue;
                };
                // IPv4 header (IHL words), then the UDP header.
                let ip = &buf[..n];
                let Some(&first) = ip.first() else { continue };
                let ihl = usize::from(first & 0x0f) * 4;
                let Some(udp) = ip.get(ihl..).filter(|u| u.len() >= 8) else {
                    continue;
                };
                let src = u16::from_be_bytes([udp[0], udp[1]]);
                let dst = u16::from_be_bytes([udp[2], udp[3]]);
                if ports.contains(&src) && ports.contains(&dst) {
                    seen.push(udp[8..].to_vec());
                }
            }
            seen
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<Vec<u8>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The safety code a client printed on stderr (`safety code 123 456: ...`).
fn safety_code(stderr: &str) -> String {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("safety code "))
        .unwrap_or_else(|| panic!("no safety code on stderr: {stderr}"));
    let code: String = line["safety code ".len()..].chars().take(7).collect();
    assert!(
        code.len() == 7
            && code
                .chars()
                .enumerate()
                .all(|(i, c)| (i == 3) == (c == ' ')),
        "{line}"
    );
    code
}

/// The USERNAME attributes (RFC 5389 §15.3) of a STUN message.
fn stun_usernames(d: &[u8]) -> Vec<Vec<u8>> {
    let mut names = Vec::new();
    if d.len() < 20 || d[0] > 3 || d[4..8] != [0x21, 0x12, 0xa4, 0x42] {
        return names;
    }
    let mut at = 20;
    while at + 4 <= d.len() {
        let kind = u16::from_be_bytes([d[at], d[at + 1]]);
        let len = usize::from(u16::from_be_bytes([d[at + 2], d[at + 3]]));
        let Some(value) = d.get(at + 4..at + 4 + len) else {
            break;
        };
        if kind == 0x0006 {
            names.push(value.to_vec());
        }
        at += 4 + len.div_ceil(4) * 4;
    }
    names
}

#[test]
fn a_recorded_call_shows_no_password_no_ice_credential_and_no_decodable_media() {
    let mut server = Server::start(5);
    let relay = Relay::start(&server.addr, None);
    // Every client from now on reaches the server through the recording relay.
    server.addr = relay.addr.clone();
    let ports = [free_udp_port(), free_udp_port()];
    let recorder = UdpRecorder::start(ports);
    let bind = |port: u16| format!("127.0.0.1:{port}");
    let (bob_bind, alice_bind) = (bind(ports[1]), bind(ports[0]));
    let mut bob = server.answerer(
        "bob",
        &["--auto-answer", "--bind", &bob_bind, "--duration", "4"],
    );
    let mut alice =
        Watched::spawn(server.caller("alice", "bob", &["--bind", &alice_bind, "--duration", "4"]));
    alice.wait_media(2.0);
    for (who, p) in [("alice", &mut alice), ("bob", &mut bob)] {
        assert!(
            p.finish(Duration::from_secs(30)).success(),
            "{who}: {}",
            p.stderr()
        );
    }
    let datagrams = recorder.finish();
    let signaling = relay.recorded();

    // Both sides show the same code, on stderr and in the JSON summary.
    let codes = [safety_code(&alice.stderr()), safety_code(&bob.stderr())];
    assert_eq!(codes[0], codes[1]);
    for user in ["alice", "bob"] {
        assert_eq!(server.stats(user)["safety_code"], codes[0].as_str());
    }
    // Media flowed both ways (so there was something to record).
    for user in ["alice", "bob"] {
        let s = server.stats(user);
        assert!(
            common::u64_at(&s, "/stats/recv_audio/counters/packets") > 100,
            "{s}"
        );
        assert_eq!(common::u64_at(&s, "/stats/refused/srtp_auth"), 0, "{s}");
    }

    // Signaling: TLS, no password, no request in clear.
    assert!(
        signaling.len() > 5000,
        "only {} bytes relayed",
        signaling.len()
    );
    assert!(!contains(&signaling, PASSWORD.as_bytes()));
    assert!(!contains(&signaling, b"\"candidates\""));

    // The connectivity checks' usernames (derived from the exchange, like their
    // passwords) never crossed signaling, even encrypted by TLS.
    let usernames: Vec<Vec<u8>> = datagrams.iter().flat_map(|d| stun_usernames(d)).collect();
    // The first checks, then one consent check a second each way.
    assert!(
        usernames.len() >= 4,
        "{} STUN checks recorded",
        usernames.len()
    );
    for name in &usernames {
        for ufrag in name.split(|&b| b == b':') {
            assert!(
                !contains(&signaling, ufrag),
                "ufrag {:?} in signaling",
                text(ufrag)
            );
        }
    }

    // Media: RTP payloads are ciphertext. A plaintext Opus stream repeats one TOC byte
    // (one encoder configuration) and every H.264 payload starts with a valid NAL
    // header; ciphertext bytes are uniform.
    let mut toc: HashMap<u8, usize> = HashMap::new();
    let (mut video, mut valid_nal, mut rtcp) = (0usize, 0usize, 0usize);
    for d in &datagrams {
        match wire::classify(d) {
            Kind::Rtp => {
                let header = wire::rtp_header_len(d).unwrap();
                let payload = &d[header..d.len() - 16];
                let Some(&first) = payload.first() else {
                    continue;
                };
                match d[1] & 0x7f {
                    // Opus, or Opus in RFC 2198 redundancy (the call starts with it
                    // until a report shows the link): in clear, a RED payload starts
                    // with its block header, one byte repeated just as Opus's TOC.
                    111 | 110 => *toc.entry(first).or_default() += 1,
                    96 => {
                        video += 1;
                        let nal = first & 0x1f;
                        if first & 0x80 == 0 && [1, 5, 6, 7, 8, 24, 28].contains(&nal) {
                            valid_nal += 1;
                        }
                    }
                    _ => {}
                }
            }
            Kind::Rtcp => {
                rtcp += 1;
                // SRTCP: the trailing index has its E (encrypted) flag set.
                assert!(d.len() >= 28 && d[d.len() - 4] & 0x80 != 0, "{d:?}");
            }
            Kind::Foreign => {}
        }
    }
    let audio: usize = toc.values().sum();
    let commonest = toc.values().copied().max().unwrap_or(0);
    println!(
        "recorded {} datagrams: {audio} audio (commonest first byte {commonest}), {video} video \
         ({valid_nal} with a valid NAL header), {rtcp} RTCP",
        datagrams.len()
    );
    assert!(audio > 200 && video > 100 && rtcp > 4);
    assert!(
        commonest * 10 < audio,
        "audio payloads look like Opus in clear"
    );
    assert!(
        valid_nal * 4 < video,
        "video payloads look like H.264 in clear"
    );
}

/// Replaces the `key` of every session description in a signaling line with the
/// relay's own.
fn swap_keys(line: &str) -> String {
    let Ok(mut v) = serde_json::from_str::<Value>(line) else {
        return line.to_owned();
    };
    let mallory = KeyPair::from_random([0x4d; 32]).public().to_string();
    fn walk(v: &mut Value, key: &str) {
        match v {
            Value::Object(map) => {
                if map.contains_key("key") && map.contains_key("candidates") {
                    map.insert("key".into(), Value::String(key.to_owned()));
                }
                map.values_mut().for_each(|v| walk(v, key));
            }
            Value::Array(items) => items.iter_mut().for_each(|v| walk(v, key)),
            _ => {}
        }
    }
    walk(&mut v, &mallory);
    v.to_string()
}

#[test]
fn a_relay_that_swaps_the_keys_makes_the_safety_codes_differ_and_no_media_flows() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "").unwrap();
    let db = dir.path().join("mitm.db");
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--plain",
        "--db",
        db.to_str().unwrap(),
    ];
    let (child, ready) = spawn_server(&args);
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = Killed(child);
    let upstream = ready["listen"].as_str().unwrap().to_owned();
    for user in ["alice", "bob"] {
        let out = magpie(&config, &upstream, user, &["--plain", "register"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let relay = Relay::start(&upstream, Some(swap_keys));
    let media = |user: &str| {
        let wav = dir.path().join(format!("{user}.wav"));
        vec![
            "--audio-in".to_owned(),
            "tone".into(),
            "--video-in".into(),
            "none".into(),
            "--audio-out".into(),
            format!("wav:{}", wav.to_str().unwrap()),
            "--bind".into(),
            "127.0.0.1:0".into(),
            // Longer than the connectivity checks' 5 s timeout.
            "--duration".into(),
            "10".into(),
        ]
    };
    let mut bob_cmd = magpie(
        &config,
        &relay.addr,
        "bob",
        &["--plain", "answer", "--quiet", "--once"],
    );
    bob_cmd.arg("--auto-answer").args(media("bob"));
    let mut bob = Watched::spawn(bob_cmd);
    bob.wait_stderr("waiting for calls", Duration::from_secs(30));
    let mut alice_cmd = magpie(&config, &relay.addr, "alice", &["--plain", "call", "bob"]);
    alice_cmd.arg("--quiet").args(media("alice"));
    let mut alice = Watched::spawn(alice_cmd);
    let alice_status = alice.finish(Duration::from_secs(60));
    let bob_status = bob.finish(Duration::from_secs(60));
    let (a, b) = (alice.stderr(), bob.stderr());
    println!("alice:\n{a}\nbob:\n{b}");
    // The relay did swap the keys: its own key crossed, in both directions.
    let mallory = KeyPair::from_random([0x4d; 32]).public().to_string();
    let recorded = relay.recorded();
    assert!(contains(&recorded, mallory.as_bytes()));
    let (code_a, code_b) = (safety_code(&a), safety_code(&b));
    assert_ne!(code_a, code_b, "the swap went unnoticed");
    // Each side derived other connectivity-check credentials than its peer: no check
    // is answered, no path is found, the call ends without media.
    assert!(!alice_status.success() && !bob_status.success());
    assert!(a.contains("no UDP path"), "{a}");
    assert!(b.contains("no UDP path"), "{b}");
}
