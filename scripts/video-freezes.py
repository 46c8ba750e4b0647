#!/usr/bin/env python3
"""Explains each video freeze of a call from its trace: which packets of the frames around
it were lost, how each came back (FEC, retransmission), every NACK sent and received, the
retransmissions and the refused requests, skips and keyframe requests.

Virtual engine (one log, times are the call's virtual milliseconds):

    RUST_LOG=warn,magpie_benches=info,magpie_media::session=trace,\\
magpie_media::jitter::video=trace,magpie_media::send=trace,magpie_media::recv=debug \\
        losslab --loss 20 --rtt 50 --jitter 10 --nack on --fec on --width 640 \\
        --height 480 --fps 30 --video-bitrate-kbps 1000 --seed 1 --threads 1 \\
        2>&1 >/dev/null | sed 's/\\x1b\\[[0-9;]*m//g' > trace.txt
    scripts/video-freezes.py trace.txt B        # freezes of what B received

Real engine (the same RUST_LOG; the clients' logs are in OUT/real/CONDITION/):

    scripts/video-freezes.py --real alice.log bob.log B

A and B are the caller and the callee (alice and bob); B's freezes are of A's video.
"""

import argparse
import collections
import datetime
import re
import sys

ANSI = re.compile(r"\x1b\[[0-9;]*m")
VIRTUAL = re.compile(r"^v\s*([\d.]+)\s+\w+\s+(.*)$")
WALL = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d+)Z\s+\w+\s+(.*)$")
FIELD = re.compile(r'(\w+)=("[^"]*"|\[[^\]]*\]|\S+)')
PEER = re.compile(r'peer\{name="?(\w)"?\}')


def split(rest):
    """The message and the fields of a log line after its time and level."""
    body = rest.split(": ")[-1] if ": " in rest else rest
    # The fields' values may hold ": " (Debug output): take the message after the target.
    m = re.search(r"magpie_\w+(?:::\w+)*: (.*)$", rest)
    if m:
        body = m.group(1)
    fields = dict(FIELD.findall(body))
    return FIELD.sub("", body).strip(), fields, body


def virtual_lines(path):
    for raw in open(path, errors="replace"):
        m = VIRTUAL.match(ANSI.sub("", raw.rstrip("\n")))
        if m:
            peer = PEER.search(m.group(2))
            yield (float(m.group(1)), peer.group(1) if peer else "?") + split(m.group(2))


def real_lines(alice, bob):
    rows = []
    for path, peer in ((alice, "A"), (bob, "B")):
        for raw in open(path, errors="replace"):
            m = WALL.match(ANSI.sub("", raw.rstrip("\n")))
            if not m:
                continue
            at = datetime.datetime.fromisoformat(m.group(1)).replace(tzinfo=datetime.timezone.utc)
            rows.append((at.timestamp() + float("0." + m.group(2)), peer) + split(m.group(3)))
    rows.sort(key=lambda r: r[0])
    start = rows[0][0] if rows else 0.0
    for t, peer, msg, fields, body in rows:
        yield ((t - start) * 1000.0, peer, msg, fields, body)


def wire(s):
    return int(s) & 0xFFFF


def explain(lines, receiver):
    sender = "A" if receiver == "B" else "B"
    sent_frames, fec_sent, rtx_out, nack_in, pli_in = [], {}, collections.defaultdict(list), [], []
    arrivals, nack_out, complete, freezes, skips, plis = collections.defaultdict(list), [], [], [], [], []
    refused = collections.defaultdict(list)
    for t, peer, msg, f, body in lines:
        if peer == sender:
            if msg.startswith("video frame") and "first" in f and "packets" in f:
                sent_frames.append((t, wire(f["first"]), int(f["packets"]), f.get("keyframe") == "true"))
            elif msg.startswith("video fec"):
                fec_sent[wire(f["first"])] = int(f["parity"])
            elif msg == "rtx out":
                rtx_out[wire(f["seq"])].append(t)
            elif msg == "pli in":
                pli_in.append(t)
            elif msg.startswith("rtcp in") and "Nack" in body:
                m = re.search(r"Nack \{[^}]*seqs: \[([^\]]*)\]", body)
                if m:
                    nack_in.append((t, [int(x) & 0xFFFF for x in m.group(1).split(",") if x.strip()]))
            elif msg.startswith("not resending"):
                refused[wire(f["seq"])].append((round(t, 1), f.get("refusal")))
        elif peer == receiver:
            if msg.startswith("video in"):
                arrivals[wire(f["seq"])].append((round(t, 1), f["how"].strip('"')))
            elif msg.startswith("nack out"):
                nack_out.append((t, [wire(x) for x in re.findall(r"\d+", f.get("seqs", ""))]))
            elif msg.startswith("video frame complete"):
                complete.append((t, wire(f["start"]), f.get("late_ms")))
            elif msg.startswith("video freeze"):
                freezes.append((t, int(f["gap_ms"])))
            elif msg.startswith("video frame missed"):
                skips.append(round(t, 1))
            elif msg.startswith("requesting keyframe"):
                plis.append(round(t, 1))
    print(f"{receiver}: {len(freezes)} freezes, {len(skips)} skips, {len(plis)} keyframe requests")
    for at, gap in freezes:
        since = at - gap
        print(f"\nfreeze at {at:.1f} ms: no frame for {gap} ms (since {since:.1f})")
        near = lambda ts: [x for x in ts if since - 50 <= x <= at + 100]
        print(f"  skips {near(skips)}, keyframe requests {near(plis)}, received by the sender {near(pli_in)}")
        for sent, first, n, key in sent_frames:
            if not since - 350 <= sent <= at - 30:
                continue
            done = [c for c in complete if c[1] == first]
            state = f"complete at {done[0][0]:.1f}, {done[0][2]} ms late" if done else "never completed"
            seqs = [(first + i) & 0xFFFF for i in range(n)]
            lost = [s for s in seqs if not any(how == "original" for _, how in arrivals[s])]
            kind = "keyframe" if key else "frame"
            print(f"  {kind} sent at {sent:.1f}: {n} packets from {first}, {fec_sent.get(first, 0)} FEC; "
                  f"{state}; {len(lost)} originals lost")
            for s in lost:
                asked = [round(t, 1) for t, ss in nack_out if s in ss]
                heard = [round(t, 1) for t, ss in nack_in if s in ss]
                resent = [round(t, 1) for t in rtx_out[s]]
                print(f"    {s}: came {arrivals[s]}; NACKed at {asked}, heard at {heard}, "
                      f"resent at {resent}, refused {refused.get(s, [])}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--real", action="store_true", help="two client logs (caller, callee) instead of one lab trace")
    p.add_argument("logs", nargs="+")
    p.add_argument("receiver", choices=["A", "B"])
    a = p.parse_args()
    if a.real:
        if len(a.logs) != 2:
            sys.exit("--real takes the caller's and the callee's logs")
        lines = list(real_lines(*a.logs))
    else:
        lines = list(virtual_lines(a.logs[0]))
    explain(lines, a.receiver)


if __name__ == "__main__":
    main()
