//! Our TURN relay beside coturn, under the same load (issue 11, item 4).
//!
//! Starts `magpie-server` (its relay) and coturn's `turnserver` on loopback, then runs
//! coturn's `turnutils_uclient` against each in turn at every rate asked for: pairs of
//! clients relay messages to each other through their allocations (`-y`, over channels),
//! each session sending one message of `--size` bytes every millisecond, so the rate sets
//! the number of sessions. For each run it reads the relay process's CPU time (utime +
//! stime from /proc/PID/stat) before and after, and the messages sent and received from
//! uclient's totals.
//!
//! A message crosses the relay twice (client → its allocation → the peer allocation on the
//! same relay → the peer client), so `relayed` counts two datagrams per message received:
//! `relayed / cpu_s` is relayed datagrams per CPU-second of the relay process. `loss` is
//! 1 − received / sent. Prints a table, then one JSON object a line.
//!
//! Where the loss happens: while uclient runs, the bench samples `/proc/net/udp` every
//! 100 ms and sums each socket's `drops` (datagrams its full receive buffer refused) by
//! role: the relay's TURN port (what clients send to), its relayed ports (what peers send
//! to), and uclient's own sockets (connected to the TURN port); and the machine's
//! `RcvbufErrors` from `/proc/net/snmp` over the run (everything on the host).
//!
//! Build the server with `--release` for figures worth quoting:
//! `cargo build --release -p magpie-signaling --bin magpie-server`
//! `cargo run -p magpie-benches --bin relaybench -- --server target/release/magpie-server`

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use serde::Serialize;

#[derive(Parser, Debug)]
#[command(about = "TURN relay throughput and CPU: magpie-server beside coturn")]
struct Args {
    /// The magpie-server binary (a release build for real figures).
    #[arg(long, default_value = "target/release/magpie-server")]
    server: PathBuf,
    /// Offered loads, in messages per second (all sessions together).
    #[arg(long, value_delimiter = ',', default_value = "10000,200000")]
    rates: Vec<u32>,
    /// Message size in bytes.
    #[arg(long, default_value_t = 200)]
    size: usize,
    /// Seconds each run sends for.
    #[arg(long, default_value_t = 5)]
    seconds: u32,
    /// Allocations to hold at once for the memory figure (0: skip it).
    #[arg(long, default_value_t = 400)]
    allocations: u32,
    /// An extra argument for magpie-server, e.g. `--server-arg=--relay-threads=1`
    /// (repeat for more).
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// Which relays: magpie, coturn, or both.
    #[arg(long, value_delimiter = ',', default_value = "magpie,coturn")]
    relays: Vec<String>,
}

/// Resident memory per allocation: the relay's RSS with `allocations` held by uclient
/// (`-h`: it hangs on after sending), less its RSS before, divided by the allocations.
#[derive(Debug, Serialize)]
struct Memory {
    relay: String,
    allocations: u32,
    rss_before_kib: u64,
    rss_held_kib: u64,
    bytes_per_allocation: u64,
}

#[derive(Debug, Serialize)]
struct Run {
    relay: String,
    rate: u32,
    size: usize,
    sessions: u32,
    sent: u64,
    received: u64,
    relayed: u64,
    loss: f64,
    cpu_s: f64,
    relayed_per_cpu_s: f64,
    wall_s: f64,
    rss_kib: u64,
    drops: Drops,
    /// The load average (1 min) when the run started.
    load: f64,
}

/// Datagrams dropped by full receive buffers during one run.
#[derive(Debug, Default, Clone, Serialize)]
struct Drops {
    /// On sockets bound to the relay's TURN port.
    turn: u64,
    /// On the relay's relayed sockets.
    relayed: u64,
    /// On uclient's sockets (connected to the TURN port).
    clients: u64,
    /// `RcvbufErrors` of the whole host over the run.
    host: u64,
}

/// A relay process, killed when dropped.
struct Relay {
    name: &'static str,
    child: Child,
    port: u16,
    /// Its relayed ports.
    ports: std::ops::RangeInclusive<u16>,
    _dir: tempfile::TempDir,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const SECRET: &str = "relaybench-secret";
/// /proc counts CPU time in USER_HZ ticks, 100 a second on every Linux ABI (proc(5)).
const USER_HZ: f64 = 100.0;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut runs = Vec::new();
    let mut memory = Vec::new();
    for name in &args.relays {
        let relay = match name.as_str() {
            "magpie" => start_magpie(&args)?,
            "coturn" => start_coturn()?,
            other => bail!("unknown relay {other:?} (magpie or coturn)"),
        };
        if args.allocations > 0 {
            let held = hold(&relay, args.allocations)?;
            eprintln!("{}", serde_json::to_string(&held)?);
            memory.push(held);
        }
        for &rate in &args.rates {
            let run = load(&relay, rate, &args)?;
            eprintln!("{}", serde_json::to_string(&run)?);
            runs.push(run);
        }
    }
    println!(
        "{:<7} {:>8} {:>5} {:>8} {:>9} {:>9} {:>7} {:>7} {:>12} {:>8} {:>5} {:>27}",
        "relay",
        "rate/s",
        "size",
        "sessions",
        "sent",
        "received",
        "loss",
        "cpu_s",
        "relayed/cpu_s",
        "rss_KiB",
        "load",
        "drops turn/relayed/clients"
    );
    for r in &runs {
        let drops = format!("{}/{}/{}", r.drops.turn, r.drops.relayed, r.drops.clients);
        println!(
            "{:<7} {:>8} {:>5} {:>8} {:>9} {:>9} {:>6.2}% {:>7.2} {:>12.0} {:>8} {:>5.1} {:>27}",
            r.relay,
            r.rate,
            r.size,
            r.sessions,
            r.sent,
            r.received,
            r.loss * 100.0,
            r.cpu_s,
            r.relayed_per_cpu_s,
            r.rss_kib,
            r.load,
            drops
        );
    }
    for m in &memory {
        println!(
            "{:<7} memory: {} allocations held, RSS {} -> {} KiB, {} bytes per allocation",
            m.relay, m.allocations, m.rss_before_kib, m.rss_held_kib, m.bytes_per_allocation
        );
    }
    for r in &runs {
        println!("{}", serde_json::to_string(r)?);
    }
    for m in &memory {
        println!("{}", serde_json::to_string(m)?);
    }
    Ok(())
}

fn free_udp_port() -> anyhow::Result<u16> {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(socket.local_addr()?.port())
}

fn start_magpie(args: &Args) -> anyhow::Result<Relay> {
    let dir = tempfile::tempdir()?;
    let mut child = Command::new(&args.server)
        .args(["--plain", "--no-stun", "--listen", "127.0.0.1:0"])
        .arg("--db")
        .arg(dir.path().join("bench.db"))
        .args([
            "--relay-listen",
            "127.0.0.1:0",
            "--relay-ports",
            "40000-44999",
        ])
        .args(["--relay-secret", SECRET, "--relay-allow-loopback"])
        // uclient's sessions are all one user; the quotas are not what is measured.
        .args(["--relay-user-allocations", "100000"])
        .args(["--relay-user-rate", "100000000000"])
        .args(&args.server_args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", args.server.display()))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let ready: serde_json::Value =
        serde_json::from_str(&line).with_context(|| format!("no ready line: {line:?}"))?;
    let relay: SocketAddr = ready["ready"]["relay"]
        .as_str()
        .context("no relay address in the ready line")?
        .parse()?;
    Ok(Relay {
        name: "magpie",
        child,
        port: relay.port(),
        ports: 40000..=44999,
        _dir: dir,
    })
}

fn start_coturn() -> anyhow::Result<Relay> {
    let dir = tempfile::tempdir()?;
    let port = free_udp_port()?;
    let child = Command::new("turnserver")
        .args([
            "-n",
            "--listening-ip",
            "127.0.0.1",
            "--relay-ip",
            "127.0.0.1",
        ])
        .args(["--listening-port", &port.to_string()])
        .args(["--min-port", "45000", "--max-port", "49999"])
        .args([
            "--use-auth-secret",
            "--static-auth-secret",
            SECRET,
            "--realm",
            "magpie",
        ])
        .args([
            "--allow-loopback-peers",
            "--no-tcp",
            "--no-tls",
            "--no-dtls",
            "--no-cli",
        ])
        .args([
            "--no-tcp-relay",
            "--simple-log",
            "--log-file",
            "stdout",
            "--no-stdout-log",
        ])
        .args(["--total-quota", "0", "--user-quota", "0", "--max-bps", "0"])
        .arg("--pidfile")
        .arg(dir.path().join("turnserver.pid"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start turnserver (coturn; scripts/test-deps installs it)")?;
    // coturn prints no ready signal: wait until it answers a STUN binding request.
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    let binding = [
        0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 512];
    loop {
        socket.send_to(&binding, (Ipv4Addr::LOCALHOST, port))?;
        if socket.recv_from(&mut buf).is_ok() {
            break;
        }
        if Instant::now() > deadline {
            bail!("turnserver does not answer on 127.0.0.1:{port}");
        }
    }
    Ok(Relay {
        name: "coturn",
        child,
        port,
        ports: 45000..=49999,
        _dir: dir,
    })
}

/// utime + stime of `pid` in seconds, and its resident set in KiB.
fn usage(pid: u32) -> anyhow::Result<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').context("odd /proc stat")? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5), 12 and 13 after the name.
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok((ticks as f64 / USER_HZ, rss))
}

fn hold(relay: &Relay, allocations: u32) -> anyhow::Result<Memory> {
    let pid = relay.child.id();
    let (_, rss_before_kib) = usage(pid)?;
    let mut uclient = Command::new("turnutils_uclient")
        .args([
            "-y", "-c", "-h", "-u", "bench", "-W", SECRET, "-z", "1000", "-n", "1",
        ])
        .args([
            "-p",
            &relay.port.to_string(),
            "-m",
            &allocations.to_string(),
        ])
        .arg("127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot run turnutils_uclient")?;
    // Wait until the relay's RSS stops growing (every allocation made), at most 15 s.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = rss_before_kib;
    let mut steady = 0;
    while Instant::now() < deadline && steady < 4 {
        std::thread::sleep(Duration::from_millis(500));
        let (_, rss) = usage(pid)?;
        steady = if rss == last && rss != rss_before_kib {
            steady + 1
        } else {
            0
        };
        last = rss;
    }
    let (_, rss_held_kib) = usage(pid)?;
    let _ = uclient.kill();
    let _ = uclient.wait();
    // Let the relay see the allocations go (they expire or are refreshed away) before
    // the load runs; their ports come back after the lifetime, so ranges are wide.
    std::thread::sleep(Duration::from_millis(500));
    Ok(Memory {
        relay: relay.name.into(),
        allocations,
        rss_before_kib,
        rss_held_kib,
        bytes_per_allocation: rss_held_kib.saturating_sub(rss_before_kib) * 1024
            / u64::from(allocations.max(1)),
    })
}

fn load(relay: &Relay, rate: u32, args: &Args) -> anyhow::Result<Run> {
    // One message a millisecond per session; sessions come in pairs (`-y`).
    let sessions = (rate / 1000).max(2).next_multiple_of(2);
    let messages = args.seconds * 1000;
    let pid = relay.child.id();
    let load = load_average()?;
    let host_before = rcvbuf_errors()?;
    let mut drops = DropWatch::new(relay)?;
    let (cpu_before, _) = usage(pid)?;
    let started = Instant::now();
    let mut child = Command::new("turnutils_uclient")
        .args(["-y", "-c", "-u", "bench", "-W", SECRET, "-z", "1"])
        .args(["-p", &relay.port.to_string()])
        .args(["-m", &sessions.to_string(), "-n", &messages.to_string()])
        .args(["-l", &args.size.to_string()])
        .arg("127.0.0.1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run turnutils_uclient (coturn; scripts/test-deps installs it)")?;
    // Drain its output on threads while sampling the drop counters here.
    let mut out = child.stdout.take().context("no stdout")?;
    let mut err = child.stderr.take().context("no stderr")?;
    let out = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out, &mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err, &mut text);
        text
    });
    while child.try_wait()?.is_none() {
        drops.sample()?;
        std::thread::sleep(Duration::from_millis(100));
    }
    let wall_s = started.elapsed().as_secs_f64();
    drops.sample()?;
    let mut drops = drops.total();
    drops.host = rcvbuf_errors()?.saturating_sub(host_before);
    let output = std::process::Output {
        status: child.wait()?,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    };
    let (cpu_after, rss_kib) = usage(pid)?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    let (sent, received) = totals(&text).with_context(|| {
        format!(
            "no totals from turnutils_uclient against {}:\n{text}",
            relay.name
        )
    })?;
    let cpu_s = cpu_after - cpu_before;
    let relayed = 2 * received;
    Ok(Run {
        relay: relay.name.into(),
        rate,
        size: args.size,
        sessions,
        sent,
        received,
        relayed,
        loss: if sent == 0 {
            0.0
        } else {
            1.0 - received as f64 / sent as f64
        },
        cpu_s,
        relayed_per_cpu_s: if cpu_s > 0.0 {
            relayed as f64 / cpu_s
        } else {
            0.0
        },
        wall_s,
        rss_kib,
        drops,
        load,
    })
}

/// The 1-minute load average.
fn load_average() -> anyhow::Result<f64> {
    let text = std::fs::read_to_string("/proc/loadavg")?;
    Ok(text.split_whitespace().next().unwrap_or("0").parse()?)
}

/// The host's UDP `RcvbufErrors` (proc(5), /proc/net/snmp).
fn rcvbuf_errors() -> anyhow::Result<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp")?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = udp.next().zip(udp.next()).context("no Udp: lines")?;
    let at = names
        .split_whitespace()
        .position(|n| n == "RcvbufErrors")
        .context("no RcvbufErrors")?;
    Ok(values
        .split_whitespace()
        .nth(at)
        .context("short Udp: line")?
        .parse()?)
}

/// Which socket a `/proc/net/udp` line is, for one relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Turn,
    Relayed,
    Client,
}

/// Per-socket drop counters over one run: the first and the last value seen of each
/// socket (by inode), so sockets that open and close during the run count too.
struct DropWatch {
    turn: u16,
    ports: std::ops::RangeInclusive<u16>,
    /// inode → (role, drops when first seen, drops when last seen).
    seen: std::collections::HashMap<u64, (Role, u64, u64)>,
    /// Sockets that existed before the run: their drops count from then.
    before: std::collections::HashMap<u64, u64>,
}

impl DropWatch {
    fn new(relay: &Relay) -> anyhow::Result<Self> {
        let mut watch = Self {
            turn: relay.port,
            ports: relay.ports.clone(),
            seen: Default::default(),
            before: Default::default(),
        };
        for (inode, _, drops) in watch.sockets()? {
            watch.before.insert(inode, drops);
        }
        Ok(watch)
    }

    fn sample(&mut self) -> anyhow::Result<()> {
        for (inode, role, drops) in self.sockets()? {
            let first = self.before.get(&inode).copied().unwrap_or(0);
            let entry = self.seen.entry(inode).or_insert((role, first, drops));
            entry.2 = drops;
        }
        Ok(())
    }

    fn total(&self) -> Drops {
        let mut total = Drops::default();
        for (role, first, last) in self.seen.values() {
            let n = last.saturating_sub(*first);
            match role {
                Role::Turn => total.turn += n,
                Role::Relayed => total.relayed += n,
                Role::Client => total.clients += n,
            }
        }
        total
    }

    /// (inode, role, drops) of this relay's and its clients' IPv4 UDP sockets.
    fn sockets(&self) -> anyhow::Result<Vec<(u64, Role, u64)>> {
        let table = std::fs::read_to_string("/proc/net/udp")?;
        let port = |addr: &str| {
            addr.split_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
        };
        let mut sockets = Vec::new();
        for line in table.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
            if f.len() < 13 {
                continue;
            }
            let (Some(local), Some(remote)) = (port(f[1]), port(f[2])) else {
                continue;
            };
            let role = if local == self.turn {
                Role::Turn
            } else if self.ports.contains(&local) {
                Role::Relayed
            } else if remote == self.turn {
                Role::Client
            } else {
                continue;
            };
            let (Ok(inode), Ok(drops)) = (f[9].parse(), f[12].parse()) else {
                continue;
            };
            sockets.push((inode, role, drops));
        }
        Ok(sockets)
    }
}

/// The last "tot_send_msgs=N, tot_recv_msgs=M" line's N and M.
fn totals(output: &str) -> Option<(u64, u64)> {
    let line = output
        .lines()
        .rev()
        .find(|l| l.contains("tot_send_msgs=") && l.contains("tot_recv_msgs="))?;
    let number = |key: &str| -> Option<u64> {
        let rest = &line[line.find(key)? + key.len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    Some((number("tot_send_msgs=")?, number("tot_recv_msgs=")?))
}
