//! A 50 MB transfer between two network namespaces the test creates (root only), over a
//! veth link that nftables makes lossy (1 % of UDP dropped at random, each way) and
//! rate-limited (UDP towards the receiver policed at `RATE` bytes/s): the file arrives
//! intact, at no less than 80 % of the limit, and a transfer whose sender is killed
//! half-way resumes from the receiver's partial file instead of starting over.
//!
//! Kernel netem is absent here, so the 20 ms RTT comes from each client delaying what
//! it sends by 10 ms (`--sim delay=10ms`, the media core's simulator, in user space on
//! the transfer's socket); loss and the rate limit are the kernel's (nftables). Namespaces are named `mgf-<pid>-a`/`-b` and removed at
//! the end, also when the test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{MAGPIE, Watched, text};

/// The policed rate of the data direction: 2 MB/s (16 Mbit/s).
const RATE: u64 = 2_000_000;
const SIZE: usize = 50 * 1024 * 1024;
/// Each side delays what it sends by 10 ms (the client's own `--sim`, in user space,
/// as the NAT lab does for calls): 20 ms RTT.
const DELAY: &str = "delay=10ms";

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| text(&o.stdout).trim() == "0")
}

fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
}

/// Two namespaces joined by a veth pair, 10.213.0.1 (a: server and sender) and
/// 10.213.0.2 (b: receiver); removed on drop.
struct Lab {
    a: String,
    b: String,
}

impl Lab {
    fn new() -> Self {
        let pid = std::process::id();
        let lab = Self {
            a: format!("mgf-{pid}-a"),
            b: format!("mgf-{pid}-b"),
        };
        let (a, b) = (lab.a.as_str(), lab.b.as_str());
        run(&["ip", "netns", "add", a]);
        run(&["ip", "netns", "add", b]);
        let (va, vb) = (format!("mgfa{pid}"), format!("mgfb{pid}"));
        run(&[
            "ip", "link", "add", &va, "netns", a, "type", "veth", "peer", "name", &vb, "netns", b,
        ]);
        for (ns, dev, addr) in [(a, &va, "10.213.0.1/24"), (b, &vb, "10.213.0.2/24")] {
            run(&["ip", "-n", ns, "addr", "add", addr, "dev", dev]);
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            // 1 % of UDP dropped at random on the way in, in both namespaces.
            let mut rules = String::from(
                "table inet mgf {\nchain input {\ntype filter hook input priority 0;\n\
                 meta l4proto udp numgen random mod 100 < 1 drop\n",
            );
            if ns == b {
                // The data direction: UDP from a policed to RATE (a token bucket).
                rules.push_str(&format!(
                    "meta l4proto udp ip saddr 10.213.0.1 limit rate over {} kbytes/second \
                     burst 64 kbytes drop\n",
                    RATE / 1000
                ));
            }
            rules.push_str("}\n}\n");
            let mut nft = Command::new("ip")
                .args(["netns", "exec", ns, "nft", "-f", "-"])
                .stdin(Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            nft.stdin
                .take()
                .unwrap()
                .write_all(rules.as_bytes())
                .unwrap();
            assert!(nft.wait().unwrap().success(), "nft in {ns}");
        }
        lab
    }

    fn magpie(&self, ns: &str, config: &Path, user: &str, args: &[&str]) -> Command {
        let inner = common::magpie(config, "10.213.0.1:7400", user, args);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, MAGPIE]);
        cmd.args(inner.get_args());
        for (k, v) in inner.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd
    }
}

/// A process killed on drop, also when an assertion fails first.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn send_output(lab: &Lab, config: &Path, file: &Path) -> Watched {
    Watched::spawn(lab.magpie(
        &lab.a,
        config,
        "alice",
        &[
            "send",
            "bob",
            file.to_str().unwrap(),
            "--bind",
            "10.213.0.1:0",
            "--sim",
            DELAY,
        ],
    ))
}

fn receiver(lab: &Lab, config: &Path, inbox: &Path) -> Watched {
    Watched::spawn(lab.magpie(
        &lab.b,
        config,
        "bob",
        &[
            "receive",
            "--once",
            "--yes",
            "--bind",
            "10.213.0.2:0",
            "--sim",
            DELAY,
            "--to",
            inbox.to_str().unwrap(),
        ],
    ))
}

fn part_len(inbox: &Path) -> u64 {
    std::fs::metadata(inbox.join("big.bin.part")).map_or(0, |m| m.len())
}

#[test]
fn fifty_megabytes_over_a_lossy_policed_link_arrive_intact_fast_and_resume_after_a_drop() {
    if !is_root() {
        eprintln!("skipped: needs root for network namespaces and nftables");
        return;
    }
    if Command::new("nft").arg("--version").output().is_err() {
        eprintln!("skipped: nft is not installed");
        return;
    }
    let lab = Lab::new();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "").unwrap();
    let db = dir.path().join("files.db");
    let server_bin = PathBuf::from(MAGPIE).with_file_name("magpie-server");
    let _server = {
        let ns = lab.a.clone();
        let bin = server_bin.to_str().unwrap().to_owned();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns, &bin, "--listen", "10.213.0.1:7400"])
            .args(["--db", db.to_str().unwrap()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut line = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(
            line.contains("ready"),
            "no ready line from the server: {line:?}"
        );
        Reaped(child)
    };
    for (ns, user) in [(&lab.a, "alice"), (&lab.b, "bob")] {
        let out = lab
            .magpie(ns, &config, user, &["register"])
            .output()
            .unwrap();
        assert!(out.status.success(), "register: {}", text(&out.stderr));
    }
    let content: Vec<u8> = (0..SIZE)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[1])
        .collect();
    let file = dir.path().join("big.bin");
    std::fs::write(&file, &content).unwrap();

    // 1. A whole transfer: intact, and at least 80 % of the policed rate.
    let inbox = dir.path().join("inbox");
    let mut bob = receiver(&lab, &config, &inbox);
    bob.wait_stderr("waiting for files", Duration::from_secs(20));
    let started = Instant::now();
    let mut alice = send_output(&lab, &config, &file);
    assert!(
        alice.finish(Duration::from_secs(120)).success(),
        "{}",
        alice.stderr()
    );
    let secs = started.elapsed().as_secs_f64();
    assert!(
        bob.finish(Duration::from_secs(30)).success(),
        "{}",
        bob.stderr()
    );
    assert!(
        std::fs::read(inbox.join("big.bin")).unwrap() == content,
        "content differs"
    );
    let said = alice.stdout();
    eprintln!("alice: {said}");
    let rtt_ms: u64 = said
        .split("(RTT ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no RTT in {said:?}"));
    assert!(
        rtt_ms >= 18,
        "the simulated delay did not apply: RTT {rtt_ms} ms"
    );
    let rate = SIZE as f64 / secs;
    eprintln!(
        "50 MiB in {secs:.1} s (offer to last verdict): {:.2} MB/s against a {:.2} MB/s limit ({:.0} %)",
        rate / 1e6,
        RATE as f64 / 1e6,
        rate / RATE as f64 * 100.0
    );
    assert!(
        rate >= 0.8 * RATE as f64,
        "{rate:.0} B/s is under 80 % of {RATE}"
    );

    // 2. The sender is killed part-way; the receiver keeps the partial file; a second
    //    send resumes from it.
    let inbox = dir.path().join("inbox2");
    let mut bob = receiver(&lab, &config, &inbox);
    bob.wait_stderr("waiting for files", Duration::from_secs(20));
    let mut alice = send_output(&lab, &config, &file);
    let deadline = Instant::now() + Duration::from_secs(60);
    while part_len(&inbox) < (SIZE / 3) as u64 {
        assert!(
            Instant::now() < deadline,
            "the transfer never got a third of the way"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    alice.child.kill().unwrap();
    let _ = alice.finish(Duration::from_secs(5));
    // The receiver notices the sender went away (QUIC idle timeout) and says what it kept.
    assert!(!bob.finish(Duration::from_secs(40)).success());
    assert!(bob.stderr().contains("to resume"), "{}", bob.stderr());
    let kept = part_len(&inbox);
    assert!(kept >= (SIZE / 3) as u64, "kept {kept}");
    let mut bob = receiver(&lab, &config, &inbox);
    bob.wait_stderr("waiting for files", Duration::from_secs(20));
    let mut alice = send_output(&lab, &config, &file);
    assert!(
        alice.finish(Duration::from_secs(120)).success(),
        "{}",
        alice.stderr()
    );
    assert!(
        bob.finish(Duration::from_secs(30)).success(),
        "{}",
        bob.stderr()
    );
    assert!(
        std::fs::read(inbox.join("big.bin")).unwrap() == content,
        "resumed content differs"
    );
    let said = alice.stdout();
    let resent: u64 = said
        .split("file(s) to bob: ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no byte count in {said:?}"));
    eprintln!("resumed: {resent} bytes sent the second time, {kept} kept from the first");
    assert_eq!(
        resent,
        SIZE as u64 - kept,
        "the second send starts at the kept offset"
    );
    assert!(resent < (SIZE as u64) * 2 / 3, "resent {resent} of {SIZE}");
}
