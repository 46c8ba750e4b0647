//! Calls on the LAN with no server, with the real binary in network namespaces the tests
//! make (as root; skipped with a message otherwise; every namespace is deleted at the
//! end, names start with `mgl-`). mDNS runs only inside them: never on this machine's
//! own interfaces.
//!
//! ```text
//!   a (10.N.1.1) ─┐
//!                 ├─ br1 ─ r (router, 10.N.1.254 | 10.N.2.254) ── c (10.N.2.1)
//!   b (10.N.1.2) ─┘
//! ```
//! `a` and `b` share a segment (a bridge in `r`); `c` is a routed hop away, so unicast
//! reaches it and multicast (mDNS) does not.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::{MAGPIE, Watched, f64_at};
use serde_json::Value;

/// Namespaces of one test, deleted on drop.
struct Lab {
    prefix: String,
    subnet: u32,
    made: Vec<String>,
    dir: tempfile::TempDir,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Lab {
    /// A lab, or `None` (after saying why) when not root.
    fn new() -> Option<Self> {
        if is_root() {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let lab = Self {
                prefix: format!("mgl-{}-{n}", std::process::id() % 100_000),
                subnet: 100 + (std::process::id() % 50) * 3 + n,
                made: Vec::new(),
                dir: tempfile::tempdir().unwrap(),
            };
            Some(lab)
        } else {
            eprintln!("skipped: LAN tests make network namespaces, which needs root");
            None
        }
    }

    fn ns(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// Makes `a` and `b` on one segment, `c` behind the router `r`.
    fn build(&mut self) {
        for name in ["a", "b", "c", "r"] {
            let ns = self.ns(name);
            run(&["ip", "netns", "add", &ns]);
            self.made.push(ns.clone());
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
        }
        let (r, s) = (self.ns("r"), self.subnet);
        run(&["ip", "-n", &r, "link", "add", "br1", "type", "bridge"]);
        run(&[
            "ip",
            "-n",
            &r,
            "addr",
            "add",
            &format!("10.{s}.1.254/24"),
            "dev",
            "br1",
        ]);
        run(&["ip", "-n", &r, "link", "set", "br1", "up"]);
        for (host, octet) in [("a", 1), ("b", 2)] {
            let port = format!("p{host}");
            self.veth(host, &port);
            run(&["ip", "-n", &r, "link", "set", &port, "master", "br1"]);
            self.host(
                host,
                &format!("10.{s}.1.{octet}/24"),
                &format!("10.{s}.1.254"),
            );
        }
        self.veth("c", "pc");
        run(&[
            "ip",
            "-n",
            &r,
            "addr",
            "add",
            &format!("10.{s}.2.254/24"),
            "dev",
            "pc",
        ]);
        self.host("c", &format!("10.{s}.2.1/24"), &format!("10.{s}.2.254"));
        run(&[
            "ip",
            "netns",
            "exec",
            &r,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
    }

    /// A veth pair: `eth0` in `host`, `port` in the router.
    fn veth(&self, host: &str, port: &str) {
        let (h, r) = (self.ns(host), self.ns("r"));
        run(&[
            "ip", "-n", &h, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns",
            &r,
        ]);
        run(&["ip", "-n", &r, "link", "set", port, "up"]);
    }

    fn host(&self, host: &str, addr: &str, gateway: &str) {
        let h = self.ns(host);
        run(&["ip", "-n", &h, "addr", "add", addr, "dev", "eth0"]);
        run(&["ip", "-n", &h, "link", "set", "eth0", "up"]);
        run(&["ip", "-n", &h, "route", "add", "default", "via", gateway]);
    }

    /// The config file of `user` (its LAN files go beside it).
    fn config(&self, user: &str) -> PathBuf {
        let dir = self.dir.path().join(user);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("config.toml");
        if !config.exists() {
            std::fs::write(&config, "").unwrap();
        }
        config
    }

    /// `magpie --user USER ARGS...` inside namespace `host`.
    fn magpie(&self, host: &str, user: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(host), MAGPIE, "--user", user])
            .args(args)
            .env("MAGPIE_CONFIG", self.config(user))
            .env_remove("MAGPIE_SERVER")
            .env_remove("MAGPIE_USER")
            .env("RUST_LOG", "warn");
        cmd
    }

    /// `magpie answer --lan` for `user` in `host`, once it announced itself.
    fn answerer(&self, host: &str, user: &str, extra: &[&str]) -> Watched {
        let mut args = vec!["answer", "--lan", "--auto-answer", "--quiet"];
        args.extend(MEDIA);
        args.extend(extra);
        let watched = Watched::spawn(self.magpie(host, user, &args));
        // The second line of the greeting: the whole of it is in `stderr()` now.
        watched.wait_stderr("control port", Duration::from_secs(60));
        watched
    }

    /// `magpie lan --wait 2` from `host`: the names listed.
    fn list(&self, host: &str, user: &str) -> Vec<String> {
        let out = output(self.magpie(host, user, &["lan", "--wait", "2"]));
        assert!(out.status.success(), "magpie lan: {}", text(&out.stderr));
        text(&out.stdout)
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect()
    }

    fn stats(&self, user: &str) -> Value {
        let path = self.dir.path().join(format!("{user}.json"));
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    fn stats_path(&self, user: &str) -> String {
        self.dir
            .path()
            .join(format!("{user}.json"))
            .display()
            .to_string()
    }

    fn peers(&self, user: &str) -> String {
        std::fs::read_to_string(self.config(user).with_file_name("lan-peers")).unwrap_or_default()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.made.drain(..) {
            let _ = Command::new("ip").args(["netns", "delete", &ns]).status();
        }
    }
}

/// Audio only, synthetic: a tone in, nothing out.
const MEDIA: [&str; 6] = [
    "--audio-in",
    "tone",
    "--audio-out",
    "null",
    "--video-in",
    "none",
];

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| text(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn run(args: &[&str]) {
    let out = output({
        let mut cmd = Command::new(args[0]);
        cmd.args(&args[1..]);
        cmd
    });
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
}

fn output(mut cmd: Command) -> Output {
    cmd.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The pairing code a side printed (`... pairing code 123 456`).
fn pairing_code(stderr: &str) -> String {
    let line = stderr
        .lines()
        .find(|l| l.contains("pairing code"))
        .unwrap_or_else(|| panic!("no pairing code in: {stderr}"));
    line.rsplit("pairing code ").next().unwrap().to_owned()
}

fn call(lab: &Lab, extra: &[&str]) -> Output {
    let stats = lab.stats_path("alice");
    let mut args = vec!["call", "bob@lan", "--quiet", "--duration", "3"];
    args.extend(MEDIA);
    args.extend(["--stats-json", stats.as_str()]);
    args.extend(extra);
    output(lab.magpie("a", "alice", &args))
}

#[test]
fn discovery_finds_people_on_the_segment_and_not_across_a_router() {
    let Some(mut lab) = Lab::new() else { return };
    lab.build();
    let mut people = [("a", "alice"), ("b", "bob"), ("c", "carol")]
        .map(|(host, user)| lab.answerer(host, user, &[]));
    // carol's control listener is reachable from a by unicast, through the router: only
    // multicast stops there.
    let s = lab.subnet;
    let port = people[2].stderr();
    let port = port
        .split("control port ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap();
    let probe = format!("exec 3<>/dev/tcp/10.{s}.2.1/{port}");
    run(&["ip", "netns", "exec", &lab.ns("a"), "bash", "-c", &probe]);

    let from_a = lab.list("a", "dave");
    assert!(from_a.contains(&"bob".to_owned()), "a sees {from_a:?}");
    assert!(from_a.contains(&"alice".to_owned()), "a sees {from_a:?}");
    assert!(!from_a.contains(&"carol".to_owned()), "a sees {from_a:?}");
    let from_b = lab.list("b", "erin");
    assert!(from_b.contains(&"alice".to_owned()), "b sees {from_b:?}");
    assert!(!from_b.contains(&"carol".to_owned()), "b sees {from_b:?}");
    let from_c = lab.list("c", "frank");
    assert_eq!(from_c, vec!["carol".to_owned()], "c sees only itself");

    // What `lan` prints of a person: address, port and key fingerprint, not yet trusted.
    let out = output(lab.magpie("a", "dave", &["lan", "--wait", "2"]));
    let listing = text(&out.stdout);
    let bob_line = listing.lines().find(|l| l.starts_with("bob ")).unwrap();
    assert!(bob_line.contains(&format!("10.{s}.1.2:")), "{bob_line}");
    assert!(bob_line.trim_end().ends_with("new"), "{bob_line}");
    for person in &mut people {
        let _ = person.child.kill();
        person.finish(Duration::from_secs(10));
    }
}

#[test]
fn a_lan_call_runs_with_no_server_and_both_sides_see_the_same_codes() {
    let Some(mut lab) = Lab::new() else { return };
    lab.build();
    let bob_stats = lab.stats_path("bob");
    let mut bob = lab.answerer(
        "b",
        "bob",
        &["--once", "--trust", "--stats-json", bob_stats.as_str()],
    );
    let out = call(&lab, &["--trust"]);
    let alice_err = text(&out.stderr);
    assert!(out.status.success(), "alice: {alice_err}");
    assert!(
        bob.finish(Duration::from_secs(30)).success(),
        "bob: {}",
        bob.stderr()
    );

    // The pairing code of the channel and the safety code of the call agree.
    assert_eq!(pairing_code(&alice_err), pairing_code(&bob.stderr()));
    let (a, b) = (lab.stats("alice"), lab.stats("bob"));
    assert_eq!(a["safety_code"], b["safety_code"]);
    assert!(a["call_id"].is_null());
    for (who, s) in [("alice", &a), ("bob", &b)] {
        let frames = f64_at(s, "/report/audio/frames");
        assert!(frames >= 75.0, "{who} played {frames} audio frames of ~150");
        assert_eq!(s["path"]["kind"], "direct", "{who}");
    }
    assert!(
        a["ended_because"].as_str().unwrap().contains("duration"),
        "{a}"
    );
    // Each side now trusts the other's key.
    assert!(
        lab.peers("alice").starts_with("bob "),
        "{}",
        lab.peers("alice")
    );
    assert!(
        lab.peers("bob").starts_with("alice "),
        "{}",
        lab.peers("bob")
    );

    // A second call needs no code: the pinned keys are checked instead.
    let mut bob = lab.answerer("b", "bob", &["--once"]);
    let out = call(&lab, &[]);
    assert!(out.status.success(), "alice: {}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("pairing code"));
    assert!(
        bob.finish(Duration::from_secs(30)).success(),
        "bob: {}",
        bob.stderr()
    );
}

#[test]
fn a_changed_key_for_a_known_name_is_refused() {
    let Some(mut lab) = Lab::new() else { return };
    lab.build();
    let mut bob = lab.answerer("b", "bob", &["--once", "--trust"]);
    let out = call(&lab, &["--trust"]);
    assert!(out.status.success(), "alice: {}", text(&out.stderr));
    bob.finish(Duration::from_secs(30));
    let trusted = lab.peers("alice");

    // "bob" comes back with another identity (a reinstall, or someone else).
    std::fs::remove_file(lab.config("bob").with_file_name("lan-identity")).unwrap();
    let mut bob = lab.answerer("b", "bob", &["--once", "--trust"]);
    let out = call(&lab, &["--trust"]);
    let alice_err = text(&out.stderr);
    assert!(
        !out.status.success(),
        "alice took a changed key: {alice_err}"
    );
    assert!(
        alice_err.contains("REFUSED: bob's key has changed"),
        "{alice_err}"
    );
    assert!(alice_err.contains("lan-peers"), "{alice_err}");
    assert_eq!(lab.peers("alice"), trusted, "the pinned key stays");
    // Bob hears why, and no call ran.
    bob.finish(Duration::from_secs(30));
    assert!(
        bob.stderr().contains("not the one I trust"),
        "bob: {}",
        bob.stderr()
    );
    assert!(
        !bob.stderr().contains("safety code"),
        "bob: {}",
        bob.stderr()
    );
}

/// Garbage, an over-long line and a peer that connects and vanishes are refused with a
/// clear line each and counted; the next real call goes through.
#[test]
fn bad_input_on_the_control_channel_is_refused_and_counted() {
    let Some(mut lab) = Lab::new() else { return };
    lab.build();
    let mut bob = lab.answerer("b", "bob", &["--trust"]);
    let port = bob.stderr();
    let port = port
        .split("control port ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap()
        .to_owned();
    let target = format!("/dev/tcp/10.{}.1.2/{port}", lab.subnet);
    let long = "x".repeat(70 * 1024);
    for script in [
        format!("printf 'GET / HTTP/1.1\\r\\n\\r\\n' > {target}"),
        format!("printf '{long}\\n' > {target}"),
        format!("exec 3<>{target}; exec 3>&-"),
    ] {
        run(&["ip", "netns", "exec", &lab.ns("a"), "bash", "-c", &script]);
    }
    bob.wait_stderr("not a message of the LAN protocol", Duration::from_secs(30));
    bob.wait_stderr("a line longer than", Duration::from_secs(30));
    bob.wait_stderr("closed the connection", Duration::from_secs(30));

    let out = call(&lab, &["--trust"]);
    assert!(out.status.success(), "alice: {}", text(&out.stderr));
    bob.wait_stderr("waiting for calls", Duration::from_secs(30));
    run(&["kill", "-INT", &bob.child.id().to_string()]);
    assert!(
        bob.finish(Duration::from_secs(30)).success(),
        "bob: {}",
        bob.stderr()
    );
    let stderr = bob.stderr();
    let counted = stderr
        .lines()
        .find(|l| l.contains("refused on the LAN channel"))
        .unwrap_or_else(|| panic!("no refusal counts: {stderr}"));
    assert!(counted.contains(r#""malformed":1"#), "{counted}");
    assert!(counted.contains(r#""too_long":1"#), "{counted}");
}

/// Without --trust, each person is asked to compare the pairing code: a wrong code typed
/// on one side refuses the call and pins nothing there (the other side, who said y,
/// trusts from then on); the right code typed pins the key and the call runs.
#[test]
fn first_contact_asks_both_people_to_compare_the_code() {
    let Some(mut lab) = Lab::new() else { return };
    lab.build();
    let caller = |lab: &Lab| {
        let mut args = vec!["call", "bob@lan", "--quiet", "--duration", "2"];
        args.extend(MEDIA);
        Watched::spawn(lab.magpie("a", "alice", &args))
    };

    // Bob types a code that is not the one shown.
    let mut bob = lab.answerer("b", "bob", &["--once"]);
    let mut alice = caller(&lab);
    let shown = pairing_code(&bob.wait_stderr("pairing code", Duration::from_secs(30)));
    alice.wait_stderr("pairing code", Duration::from_secs(30));
    let digits: u32 = shown.replace(' ', "").parse().unwrap();
    let wrong = format!("{:06}\n", (digits + 1) % 1_000_000);
    type_line(&mut bob, &wrong);
    assert!(!bob.finish(Duration::from_secs(30)).success());
    assert!(
        bob.stderr().contains("was not confirmed"),
        "bob: {}",
        bob.stderr()
    );
    type_line(&mut alice, "y\n");
    assert!(!alice.finish(Duration::from_secs(30)).success());
    assert!(
        alice
            .stderr()
            .contains("bob said no: the pairing code was not confirmed"),
        "alice: {}",
        alice.stderr()
    );
    assert_eq!(lab.peers("bob"), "", "bob pinned a key he did not confirm");

    // Alice did confirm hers: she trusts bob from now on.
    assert!(
        lab.peers("alice").starts_with("bob "),
        "{}",
        lab.peers("alice")
    );

    // Now bob types the code he sees (only he is asked): he pins alice, the call runs.
    let mut bob = lab.answerer("b", "bob", &["--once"]);
    let mut alice = caller(&lab);
    let code = pairing_code(&bob.wait_stderr("pairing code", Duration::from_secs(30)));
    type_line(&mut bob, &format!("{code}\n"));
    assert!(
        alice.finish(Duration::from_secs(60)).success(),
        "alice: {}",
        alice.stderr()
    );
    assert!(
        bob.finish(Duration::from_secs(30)).success(),
        "bob: {}",
        bob.stderr()
    );
    assert!(
        lab.peers("bob").starts_with("alice "),
        "{}",
        lab.peers("bob")
    );
    assert!(
        lab.peers("alice").starts_with("bob "),
        "{}",
        lab.peers("alice")
    );
}

/// Two people call bob at once: the second's handshake and pairing do not wait behind
/// (or time out behind) bob answering the first, and both calls run, one after the other.
#[test]
fn a_second_caller_is_not_held_up_by_the_first_ones_pairing() {
    let Some(mut lab) = Lab::new() else { return };
    lab.build();
    let caller = |lab: &Lab, user: &str| {
        let mut args = vec!["call", "bob@lan", "--quiet", "--duration", "2"];
        args.extend(MEDIA);
        Watched::spawn(lab.magpie("a", user, &args))
    };
    let mut bob = lab.answerer("b", "bob", &[]);
    let mut alice = caller(&lab, "alice");
    let alice_code = pairing_code(&bob.wait_stderr("pairing code", Duration::from_secs(30)));
    alice.wait_stderr("pairing code", Duration::from_secs(30));
    // Bob has not confirmed alice's code; carol calls meanwhile. Her handshake finishes
    // at once (one connection at a time, it timed out after 10 s): she sees her code.
    let mut carol = caller(&lab, "carol");
    carol.wait_stderr("pairing code", Duration::from_secs(30));
    assert!(
        !carol.stderr().contains("handshake"),
        "carol: {}",
        carol.stderr()
    );
    type_line(&mut alice, "y\n");
    type_line(&mut bob, &format!("{alice_code}\n"));
    assert!(
        alice.finish(Duration::from_secs(60)).success(),
        "alice: {}",
        alice.stderr()
    );
    // Then bob turns to carol, who waited.
    let said = bob.wait_stderr("first contact with carol", Duration::from_secs(60));
    let line = said
        .lines()
        .find(|l| l.contains("first contact with carol"))
        .unwrap();
    type_line(&mut carol, "y\n");
    type_line(&mut bob, &format!("{}\n", pairing_code(line)));
    assert!(
        carol.finish(Duration::from_secs(60)).success(),
        "carol: {}",
        carol.stderr()
    );
    let peers = lab.peers("bob");
    assert!(
        peers.contains("alice ") && peers.contains("carol "),
        "{peers}"
    );
}

fn type_line(who: &mut Watched, line: &str) {
    use std::io::Write;
    let stdin = who.child.stdin.as_mut().unwrap();
    stdin.write_all(line.as_bytes()).unwrap();
    stdin.flush().unwrap();
}

/// `send NAME@lan`: a file offered over the direct channel, taken by `answer --lan`, and
/// carried by the QUIC transfer; it arrives byte for byte, with no server.
#[test]
fn a_file_goes_to_a_person_on_the_lan_with_no_server() {
    let Some(mut lab) = Lab::new() else { return };
    lab.build();
    let inbox = lab.dir.path().join("inbox");
    let source = lab.dir.path().join("notes.bin");
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&source, &bytes).unwrap();
    let to = inbox.display().to_string();
    let mut bob = lab.answerer("b", "bob", &["--once", "--trust", "--yes", "--to", &to]);
    let path = source.display().to_string();
    let out = output(lab.magpie(
        "a",
        "alice",
        &["send", "bob@lan", &path, "--trust", "--quiet"],
    ));
    assert!(out.status.success(), "alice: {}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("sent 1 file(s) to bob"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        bob.finish(Duration::from_secs(30)).success(),
        "bob: {}",
        bob.stderr()
    );
    assert_eq!(std::fs::read(inbox.join("notes.bin")).unwrap(), bytes);
    assert!(
        lab.peers("bob").starts_with("alice "),
        "{}",
        lab.peers("bob")
    );
}
