#!/usr/bin/env python3
"""The NAT lab (issue 11, item 3): real `magpie` calls between two homes behind kernel NATs.

Run by scripts/nat-lab (which builds the binaries and installs nftables, conntrack and
coturn when missing); needs root. Everything happens in network namespaces this script
creates and removes again (also on failure and Ctrl-C):

    home A: ha 10.0.1.2 --- ra 10.0.1.1 | 203.0.113.10 --- pa -+
                                                         the "wire" --- srv1 = srv0 in "pub":
    home B: hb 10.0.2.2 --- rb 10.0.2.1 | 203.0.113.20 --- pb -+   203.0.113.1 magpie-server
                                                                   (signaling, STUN, relay),
                                                                   203.0.113.2 coturn

The wire is a hub (this script, `--wire`) that passes each Ethernet frame on after 15 ms,
so each hop (home to home, home to server) has the latency of a path across the Internet
(kernel netem is absent); "pub" routes everything else to a gateway that drops it.
The routers masquerade with nftables. Router behaviours: `drop` (unsolicited UDP to the
router is dropped) and `icmp` (plain masquerade: the router's kernel answers unsolicited
UDP with ICMP port-unreachable, leaving an unreplied conntrack entry behind). Scenarios,
each run with both behaviours:

  a  both NATs endpoint-independent (masquerade keeps ports)   expect direct
  b  home A symmetric (masquerade fully-random)                 expect connected
  c  both symmetric                                             expect relayed
  d  router B drops every inbound UDP except from the server    expect relayed
  e  as a, and mid-call both routers' conntrack tables are flushed: the call survives
     (these calls last at least 8 s, the flush at half time; survives = each side
     decoded at least 60 % of the call's frames)
  f  as c, with coturn (203.0.113.2) as the relay (the server offers none) expect relayed

Each call is audio only (a synthetic tone), a few seconds; each client adds 10 ms to what
it sends (`--sim delay=10ms`), so the RTT is 2 x (10 + 15) = 50 ms between the homes and
80 ms through the relay. Reported per run: connected, path (from the summary's `path` object),
setup_ms (accept to first audio played, the slower side) and audio_p50_ms (the higher
side's p50 audio latency). A table, or with --json one JSON object a line.
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import shutil
import signal
import subprocess
import sys
import socket
import tempfile
import time

SERVER_IP = "203.0.113.1"
COTURN_IP = "203.0.113.2"
# One-way delay of each hop on the public wire (home to home, home to server), and
# what each client adds to what it sends (`--sim`): 2 x (10 + 15) = 50 ms RTT between
# the homes, 80 ms through the relay.
WIRE_DELAY_MS = 15
SIM_DELAY_MS = 10
# The public segment's default gateway, which drops whatever it is given.
GATEWAY_IP = "192.0.2.254"
SIGNALING = f"{SERVER_IP}:7400"
RELAY_PORT = 3478
COTURN_SECRET = "nat-lab-coturn-secret"
PASSWORD = "nat-lab-password"
HOMES = {
    "a": {"wan": "203.0.113.10", "lan": "10.0.1"},
    "b": {"wan": "203.0.113.20", "lan": "10.0.2"},
}

# Scenario (e) calls last at least this long (seconds), the flush at half of it.
E_MIN_SECONDS = 8
# name -> (router A, router B, what passes)
SCENARIOS = {
    "a": ({"nat": "eim"}, {"nat": "eim"}, "direct"),
    "b": ({"nat": "symmetric"}, {"nat": "eim"}, "any"),
    "c": ({"nat": "symmetric"}, {"nat": "symmetric"}, "relayed"),
    "d": ({"nat": "eim"}, {"nat": "eim", "udp_only_from_server": True}, "relayed"),
    "e": ({"nat": "eim"}, {"nat": "eim"}, "survives"),
    "f": ({"nat": "symmetric"}, {"nat": "symmetric"}, "relayed"),
}


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def run(*cmd, check=True, **kw):
    return subprocess.run(cmd, check=check, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, **kw)


class Lab:
    """The namespaces, the server, and coturn; `close` undoes everything made."""

    def __init__(self, bins, workdir):
        self.bins = bins
        self.dir = workdir
        self.prefix = f"nl{os.getpid() % 100000}"
        self.namespaces = []
        self.processes = []
        self.server = None

    def ns(self, name):
        return f"{self.prefix}-{name}"

    def ip(self, *args):
        run("ip", *args)

    def sh(self, ns, *cmd, check=True):
        return run("ip", "netns", "exec", self.ns(ns), *cmd, check=check)

    def build(self):
        for name in ["pub", "wire", "ra", "rb", "ha", "hb"]:
            self.ip("netns", "add", self.ns(name))
            self.namespaces.append(self.ns(name))
            self.ip("-n", self.ns(name), "link", "set", "lo", "up")
        pub = self.ns("pub")
        wire = self.ns("wire")
        # The servers' side of the public segment: srv0 holds their addresses, srv1 is
        # its port on the wire (a namespace of its own, with no addresses, so no kernel
        # but the hub's answers there).
        self.ip("-n", pub, "link", "add", "srv0", "type", "veth", "peer", "name", "srv1",
                "netns", wire)
        self.ip("-n", pub, "addr", "add", f"{SERVER_IP}/24", "dev", "srv0")
        self.ip("-n", pub, "addr", "add", f"{COTURN_IP}/24", "dev", "srv0")
        self.ip("-n", pub, "link", "set", "srv0", "up")
        self.onto_wire("pub", "srv0")
        self.ip("-n", wire, "link", "set", "srv1", "up")
        # The public segment's way out to "the rest of the Internet": a gateway that
        # takes every packet and drops what it cannot route (a veth whose far end has
        # no address, and a permanent neighbour entry so nothing waits on ARP). A server
        # on the Internet has a default route, so relaying towards a peer's private
        # address sends a packet that goes nowhere; without one, sendto fails with
        # ENETUNREACH, and coturn 4.6 answers that by closing the whole TURN session
        # (ns_ioalib_engine_impl.c marks the relay socket to be closed on any send
        # error but ENOBUFS, EAGAIN and ECONNREFUSED).
        self.ip("-n", pub, "link", "add", "inet0", "type", "veth", "peer", "name", "inet1")
        for dev in ("inet0", "inet1"):
            self.ip("-n", pub, "link", "set", dev, "up")
        self.ip("-n", pub, "neigh", "replace", GATEWAY_IP, "lladdr", "02:00:00:00:00:fe",
                "dev", "inet0", "nud", "permanent")
        self.ip("-n", pub, "route", "add", "default", "via", GATEWAY_IP, "dev", "inet0",
                "onlink")
        for home, plan in HOMES.items():
            router, host = self.ns("r" + home), self.ns("h" + home)
            self.ip("-n", router, "link", "add", "wan", "type", "veth", "peer", "name",
                    "p" + home, "netns", wire)
            self.ip("-n", wire, "link", "set", "p" + home, "up")
            self.ip("-n", router, "addr", "add", plan["wan"] + "/24", "dev", "wan")
            self.ip("-n", router, "link", "set", "wan", "up")
            self.onto_wire("r" + home, "wan")
            self.ip("-n", router, "link", "add", "lan", "type", "veth", "peer", "name",
                    "eth0", "netns", host)
            self.ip("-n", router, "addr", "add", plan["lan"] + ".1/24", "dev", "lan")
            self.ip("-n", router, "link", "set", "lan", "up")
            self.ip("-n", host, "addr", "add", plan["lan"] + ".2/24", "dev", "eth0")
            self.ip("-n", host, "link", "set", "eth0", "up")
            self.ip("-n", host, "route", "add", "default", "via", plan["lan"] + ".1")
            self.sh("r" + home, "sysctl", "-qw", "net.ipv4.ip_forward=1")

    def onto_wire(self, ns, dev):
        # What `dev` sends goes through the wire's packet sockets: full checksums, one
        # frame a packet.
        self.ip("-n", self.ns(ns), "link", "set", dev, "gso_max_segs", "1")
        self.sh(ns, sys.executable, os.path.abspath(__file__), "--no-checksum-offload", dev)

    def start_wire(self, delay_ms):
        # The wire between the routers and the servers, with its latency (see `wire`).
        script = os.path.abspath(__file__)
        self.spawn("wire", [sys.executable, script, "--wire", "pa,pb,srv1",
                           "--wire-delay-ms", str(delay_ms)], "wire")

    def routers(self, config_a, config_b, behaviour):
        for home, config in (("a", config_a), ("b", config_b)):
            rules = nft_rules(config, behaviour)
            self.sh("r" + home, "nft", "flush", "ruleset")
            proc = subprocess.run(["ip", "netns", "exec", self.ns("r" + home), "nft", "-f", "-"],
                                  input=rules, text=True, capture_output=True)
            if proc.returncode != 0:
                raise RuntimeError(f"nft failed in r{home}: {proc.stderr}\n{rules}")
            self.flush("r" + home)

    def flush(self, router):
        # `conntrack -F` exits non-zero when the table is already empty on some versions.
        self.sh(router, "conntrack", "-F", check=False)

    def spawn(self, ns, cmd, name, env=None):
        out = open(os.path.join(self.dir, name + ".out"), "w")
        err = open(os.path.join(self.dir, name + ".err"), "w")
        full_env = dict(os.environ, RUST_LOG=os.environ.get("NAT_LAB_LOG", "warn"))
        full_env.update(env or {})
        proc = subprocess.Popen(["ip", "netns", "exec", self.ns(ns)] + cmd, stdout=out,
                                stderr=err, env=full_env, start_new_session=True)
        self.processes.append(proc)
        return proc

    def start_server(self, relay):
        if self.server is not None:
            stop(self.server)
        cmd = [self.bins["server"], "--plain", "--listen", SIGNALING,
               "--db", os.path.join(self.dir, "lab.db"), "--rate", "50", "--burst", "100"]
        if relay:
            cmd += ["--relay-listen", f"{SERVER_IP}:{RELAY_PORT}", "--relay-ports", "50000-50999",
                    "--relay-secret", "nat-lab-relay-secret"]
        self.server = self.spawn("pub", cmd, "server-relay" if relay else "server")
        wait_for(lambda: read(os.path.join(self.dir, "server-relay.out" if relay
                                           else "server.out")).startswith("{"),
                 10, "magpie-server ready line")

    def start_coturn(self):
        cmd = ["turnserver", "-n", "--listening-ip", COTURN_IP, "--relay-ip", COTURN_IP,
               "--listening-port", str(RELAY_PORT), "--min-port", "51000", "--max-port", "51999",
               "--use-auth-secret", "--static-auth-secret", COTURN_SECRET, "--realm", "nat-lab",
               "--no-tcp", "--no-tls", "--no-dtls", "--no-cli", "--simple-log", "-v",
               "--pidfile", os.path.join(self.dir, "turnserver.pid"),
               "--log-file", os.path.join(self.dir, "turnserver.log")]
        self.spawn("pub", cmd, "coturn")

    def magpie(self, home, user, args, name, env=None):
        config = os.path.join(self.dir, user + ".toml")
        if not os.path.exists(config):
            open(config, "w").close()
        base = [self.bins["magpie"], "--server", SIGNALING, "--plain", "--user", user,
                "--config", os.path.join(self.dir, user + ".toml")]
        env = dict(env or {}, MAGPIE_PASSWORD=PASSWORD, HOME=self.dir)
        return self.spawn("h" + home, base + args, name, env)

    def register(self):
        for home, user in (("a", "alice"), ("b", "bob")):
            proc = self.magpie(home, user, ["register"], f"register-{user}")
            proc.wait(timeout=30)
            text = read(os.path.join(self.dir, f"register-{user}.err"))
            if proc.returncode != 0 and "taken" not in text:
                raise RuntimeError(f"register {user} failed: {text}")

    def close(self):
        for proc in self.processes:
            stop(proc)
        for name in self.namespaces:
            run("ip", "netns", "delete", name, check=False)
        self.namespaces = []


def wire(ports, delay_ms):
    """The public segment: a hub that passes every Ethernet frame from one port to the
    others after `delay_ms` (kernel netem is absent). Home to home and home to server
    are each one such hop, as on the Internet, so two homes' first checks towards each
    other cross on the wire when they leave within `delay_ms` of each other: each NAT
    then holds its own outgoing mapping before the other's packet arrives, which is
    how hole punching works through NATs that answer unsolicited packets with ICMP."""
    import heapq
    import selectors

    delay = delay_ms / 1000
    socks = {}
    sel = selectors.DefaultSelector()
    for name in ports:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        sock.bind((name, 0))
        sock.setblocking(False)
        socks[name] = sock
        sel.register(sock, selectors.EVENT_READ, name)
    queue, order, passed = [], 0, 0
    while True:
        timeout = max(0.0, queue[0][0] - time.monotonic()) if queue else None
        for key, _ in sel.select(timeout):
            while True:
                try:
                    frame, addr = key.fileobj.recvfrom(65536)
                except BlockingIOError:
                    break
                if addr[2] == socket.PACKET_OUTGOING:
                    continue
                due = time.monotonic() + delay
                for out in ports:
                    if out != key.data:
                        order += 1
                        heapq.heappush(queue, (due, order, out, frame))
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, out, frame = heapq.heappop(queue)
            try:
                socks[out].send(frame)
                passed += 1
            except OSError as e:
                log(f"wire: {out}: {e} ({len(frame)} bytes)")


def no_checksum_offload(dev):
    """Makes `dev` compute the checksums of what it sends (ethtool -K dev tx off, by
    ioctl since ethtool may be absent): a veth otherwise leaves them to a "hardware"
    that never runs when the wire passes the frame on through a packet socket, and the
    receiving kernel drops every TCP segment."""
    import ctypes
    import fcntl
    import struct

    ethtool_stxcsum, siocethtool = 0x17, 0x8946
    value = ctypes.create_string_buffer(struct.pack("II", ethtool_stxcsum, 0))
    request = struct.pack("16sP", dev.encode(), ctypes.addressof(value))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        fcntl.ioctl(sock.fileno(), siocethtool, request)


def nft_rules(config, behaviour):
    random = " fully-random" if config["nat"] == "symmetric" else ""
    lines = [
        "table ip lab {",
        "  chain postrouting {",
        "    type nat hook postrouting priority srcnat; policy accept;",
        f'    oifname "wan" masquerade{random}',
        "  }",
        "  chain input {",
        "    type filter hook input priority filter; policy accept;",
    ]
    if behaviour == "drop":
        lines.append('    iifname "wan" meta l4proto udp ct state new drop')
    if config.get("udp_only_from_server"):
        lines.append(f'    iifname "wan" meta l4proto udp ip saddr != {SERVER_IP} drop')
    lines += [
        "  }",
        "  chain forward {",
        "    type filter hook forward priority filter; policy accept;",
    ]
    if config.get("udp_only_from_server"):
        lines.append(f'    iifname "wan" meta l4proto udp ip saddr != {SERVER_IP} drop')
    lines += ['    iifname "wan" ct state established,related accept',
              '    iifname "wan" drop', "  }", "}", ""]
    return "\n".join(lines)


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def wait_for(predicate, seconds, what):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def stop(proc):
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=3)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


def rest_credentials(secret, user, ttl=600):
    username = f"{int(time.time()) + ttl}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def call(lab, scenario, behaviour, seconds):
    tag = f"{scenario}-{behaviour}"
    if scenario == "e":
        # The promise is a move to another path within 2 s of the flush: the call runs
        # long enough that 60 % of its audio can still play after an outage that long.
        seconds = max(seconds, E_MIN_SECONDS)
    common = ["--audio-in", "tone", "--audio-out", "null", "--video-in", "none", "--quiet",
              "--sim", f"delay={SIM_DELAY_MS}ms"]
    extra = {"alice": [], "bob": []}
    if scenario == "f":
        for user in extra:
            username, credential = rest_credentials(COTURN_SECRET, user)
            extra[user] = ["--turn", f"turn:{COTURN_IP}:{RELAY_PORT}", "--turn-user", username,
                           "--turn-pass", credential]
    bob_json = os.path.join(lab.dir, f"{tag}-bob.json")
    alice_json = os.path.join(lab.dir, f"{tag}-alice.json")
    for path in (bob_json, alice_json):
        if os.path.exists(path):
            os.remove(path)
    bob = lab.magpie("b", "bob", ["answer", "--auto-answer", "--once", "--duration", str(seconds + 10),
                                  "--stats-json", bob_json] + common + extra["bob"],
                     f"{tag}-bob")
    bob_err = os.path.join(lab.dir, f"{tag}-bob.err")
    try:
        wait_for(lambda: "waiting for calls" in read(bob_err) or bob.poll() is not None, 20,
                 "bob online")
    except RuntimeError:
        pass
    started = time.monotonic()
    alice = lab.magpie("a", "alice", ["call", "bob", "--duration", str(seconds),
                                      "--stats-json", alice_json] + common + extra["alice"],
                       f"{tag}-alice")
    if scenario == "e":
        # Mid-call: once the call has run half its length, flush both NATs' mappings.
        wait_for(lambda: "bob answered" in read(os.path.join(lab.dir, f"{tag}-alice.err")) or
                 alice.poll() is not None or time.monotonic() - started > 15, 20, "accept")
        time.sleep(seconds / 2)
        lab.flush("ra")
        lab.flush("rb")
    try:
        alice.wait(timeout=seconds + 40)
    except subprocess.TimeoutExpired:
        stop(alice)
    try:
        bob.wait(timeout=15)
    except subprocess.TimeoutExpired:
        stop(bob)
    return result(lab, scenario, behaviour, seconds, alice_json, bob_json, tag)


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def result(lab, scenario, behaviour, seconds, alice_json, bob_json, tag):
    alice, bob = load(alice_json), load(bob_json)
    sides = [s for s in (alice, bob) if s]
    decoded = [((s.get("report") or {}).get("audio") or {}).get("decoded", 0) for s in sides]
    connected = len(sides) == 2 and all(d > 0 for d in decoded)
    paths = [s.get("path") for s in sides if isinstance(s.get("path"), dict)]
    kinds = sorted({p.get("kind") for p in paths})
    path = kinds[0] if len(kinds) == 1 else ("/".join(k for k in kinds if k) or None)
    firsts = [p.get("first_audio_ms") for p in paths if p.get("first_audio_ms") is not None]
    p50s = [((s.get("report") or {}).get("audio") or {}).get("latency", {}).get("p50_ms")
            for s in sides]
    p50s = [p for p in p50s if p]
    relays = sorted({p.get("relay") for p in paths if p.get("relay")})
    expect = SCENARIOS[scenario][2]
    # The call held for its length: both sides decoded most of the frames it should carry
    # (50 a second), so a path lost mid-call and never replaced fails.
    survived = connected and all(d >= 0.6 * seconds * 50 for d in decoded)
    if not connected:
        ok = False
    elif expect == "direct":
        ok = path == "direct"
    elif expect == "relayed":
        ok = path == "relayed"
        if scenario == "f":
            ok = ok and all(r.startswith(COTURN_IP + ":") for r in relays) and bool(relays)
    elif expect == "survives":
        ok = survived
    else:
        ok = path in ("direct", "relayed")
    why = None
    if not ok and len(sides) == 2 and not connected:
        why = f"no audio: frames decoded {decoded[0]} (alice), {decoded[1]} (bob)"
    elif not ok and not connected:
        why = last_error(lab, tag)
    elif not ok:
        why = f"expected {expect}, got path {path}" + ("" if survived else ", audio cut")
    return {
        "scenario": f"{scenario}-{behaviour}",
        "connected": connected,
        "path": path,
        "setup_ms": round(max(firsts)) if len(firsts) == 2 else None,
        "audio_p50_ms": round(max(p50s), 1) if p50s else None,
        "relay": relays[0] if relays else None,
        "survived": survived,
        "pass": ok,
        "why": why,
    }


def last_error(lab, tag):
    for who in ("alice", "bob"):
        lines = [l for l in read(os.path.join(lab.dir, f"{tag}-{who}.err")).splitlines()
                 if l.strip() and "waiting for calls" not in l]
        if lines:
            return f"{who}: {lines[-1][:160]}"
    return "no summary written"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="one JSON object a line")
    parser.add_argument("--scenarios", default="abcdef", help="which scenarios (default abcdef)")
    parser.add_argument("--behaviours", default="drop,icmp", help="router behaviours")
    parser.add_argument("--seconds", type=float, default=4, help="length of each call")
    parser.add_argument("--magpie", help="the magpie client binary")
    parser.add_argument("--server", help="the magpie-server binary")
    parser.add_argument("--keep", action="store_true", help="keep the logs directory")
    parser.add_argument("--wire", help=argparse.SUPPRESS)
    parser.add_argument("--no-checksum-offload", help=argparse.SUPPRESS)
    parser.add_argument("--wire-delay-ms", type=float, default=WIRE_DELAY_MS,
                        help=f"one-way delay of each hop on the public wire "
                             f"(default {WIRE_DELAY_MS})")
    args = parser.parse_args()
    if args.no_checksum_offload:
        no_checksum_offload(args.no_checksum_offload)
        return 0
    if args.wire:
        try:
            wire(args.wire.split(","), args.wire_delay_ms)
        except KeyboardInterrupt:
            return 0
    if not args.magpie or not args.server:
        sys.exit("nat-lab.py: --magpie and --server are required")
    if os.geteuid() != 0:
        sys.exit("nat-lab needs root (network namespaces, nftables)")
    workdir = tempfile.mkdtemp(prefix="nat-lab-")
    lab = Lab({"magpie": args.magpie, "server": args.server}, workdir)

    def interrupted(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    results = []
    try:
        lab.build()
        lab.start_wire(args.wire_delay_ms)
        lab.routers({"nat": "eim"}, {"nat": "eim"}, "drop")
        lab.start_server(relay=True)
        lab.register()
        relay_on = True
        coturn_started = False
        for scenario in args.scenarios:
            if scenario not in SCENARIOS:
                sys.exit(f"unknown scenario {scenario!r}")
            wants_relay = scenario != "f"
            if wants_relay != relay_on:
                lab.start_server(relay=wants_relay)
                relay_on = wants_relay
            if scenario == "f" and not coturn_started:
                lab.start_coturn()
                coturn_started = True
                time.sleep(0.5)
            for behaviour in args.behaviours.split(","):
                config_a, config_b, _ = SCENARIOS[scenario]
                lab.routers(config_a, config_b, behaviour)
                row = call(lab, scenario, behaviour, args.seconds)
                results.append(row)
                if args.json:
                    print(json.dumps(row), flush=True)
                else:
                    log(f"{row['scenario']}: {'pass' if row['pass'] else 'FAIL'}")
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        return 130
    finally:
        lab.close()
        if args.keep or any(not r["pass"] for r in results):
            log(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if not args.json:
        print(f"{'scenario':<10} {'pass':<5} {'connected':<9} {'path':<8} {'setup_ms':>8} "
              f"{'p50_ms':>7}  why")
        for r in results:
            print(f"{r['scenario']:<10} {'yes' if r['pass'] else 'NO':<5} "
                  f"{str(r['connected']).lower():<9} {str(r['path']):<8} "
                  f"{str(r['setup_ms']):>8} {str(r['audio_p50_ms']):>7}  {r['why'] or ''}")
    return 0 if results and all(r["pass"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
