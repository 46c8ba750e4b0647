//! A live call on loopback, attacked from a third UDP socket the way anyone on the
//! network could: the media path must know its peer. Each attack once broke a call
//! (issue 9): a BYE with any SSRC ended it; forged RTP with the peer's SSRC and a jumped
//! sequence number muted it; blind RTX took over the retransmission stream; forged
//! PLI/RR/NACK forced keyframes, cut the bitrate and caused retransmissions; and a
//! stranger's stream sent before the answer was played.
//!
//! The call must go on to its set end with no loss, keyframes or bitrate cut caused by
//! the attacks, and the refusal counters must show the attacks were seen and dropped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use serde_json::Value;

use common::{Server, Watched, f64_at, u64_at};

/// An RTP packet: version 2, `pt`, `seq`, `ssrc`, and `payload`.
fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, pt & 0x7f];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// An RTCP packet: `count` in the first byte, packet type `pt`, and `body` (whole words).
fn rtcp(count: u8, pt: u8, body: &[u8]) -> Vec<u8> {
    assert_eq!(body.len() % 4, 0);
    let words = (body.len() / 4) as u16;
    let mut p = vec![0x80 | count, pt];
    p.extend_from_slice(&words.to_be_bytes());
    p.extend_from_slice(body);
    p
}

fn words(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_be_bytes()).collect()
}

/// A receiver report from `sender` saying `about` lost everything (fraction 255).
fn rr_all_lost(sender: u32, about: u32) -> Vec<u8> {
    let lost = (255u32 << 24) | 1000;
    rtcp(1, 201, &words(&[sender, about, lost, 70_000, 0, 0, 0]))
}

fn bye(ssrc: u32) -> Vec<u8> {
    rtcp(1, 203, &words(&[ssrc]))
}

fn pli(sender: u32, media: u32) -> Vec<u8> {
    rtcp(1, 206, &words(&[sender, media]))
}

fn nack(sender: u32, media: u32, pid: u16) -> Vec<u8> {
    rtcp(
        1,
        205,
        &words(&[sender, media, (u32::from(pid) << 16) | 0xffff]),
    )
}

/// The SSRCs a live-statistics line names: (ours, the peer's).
fn ssrcs(line: &Value, side: &str) -> (u32, u32, u32, u32) {
    let at = |k: &str| u64_at(line, &format!("/tracks/{side}/{k}")) as u32;
    (at("audio"), at("audio_rtx"), at("video"), at("video_rtx"))
}

/// Every attack from the issue, against `target`, whose own streams are `own` and whose
/// peer's are `peer`. Returns how many datagrams were sent.
fn attack(
    socket: &UdpSocket,
    target: SocketAddr,
    own: (u32, u32, u32, u32),
    peer: (u32, u32, u32, u32),
) -> u64 {
    let mut sent = 0u64;
    let mut send = |d: Vec<u8>| {
        socket.send_to(&d, target).unwrap();
        sent += 1;
    };
    // A BYE naming a random SSRC, and one naming the peer's own audio stream.
    send(bye(0x1234_5678));
    let mut compound = rr_all_lost(peer.0, own.0);
    compound.extend(bye(peer.0));
    send(compound);
    // Forged RTP on the peer's SSRCs with the sequence number far ahead.
    for i in 0..2u16 {
        send(rtp(111, 3500 + i, 9_999_999, peer.0, &[0xfc, 0xff, 0xfe]));
        send(rtp(96, 3500 + i, 9_999_999, peer.2, &[0x65, 0x88, 0x84]));
    }
    // Blind RTX on random SSRCs.
    for i in 0..8u32 {
        let osn = (i as u16).to_be_bytes();
        let pt = if i % 2 == 0 { 97 } else { 112 };
        send(rtp(
            pt,
            i as u16,
            i,
            0xdead_0000 + i,
            &[osn[0], osn[1], 0x41, 0x9a],
        ));
    }
    // Forged feedback about our streams, in the peer's name.
    for _ in 0..40 {
        send(pli(peer.0, own.2));
    }
    for _ in 0..10 {
        send(rr_all_lost(peer.0, own.2));
        send(rr_all_lost(peer.0, own.0));
    }
    for pid in 0..20u16 {
        send(nack(peer.0, own.0, pid * 16));
        send(nack(peer.0, own.2, pid * 16));
    }
    sent
}

/// What a side's end-of-call summary must show after the attacks.
fn unharmed(who: &str, s: &Value, attacked_with: u64) {
    let ended = s["ended_because"].as_str().unwrap();
    assert!(
        ended.contains("duration") || ended.contains("hung up"),
        "{who}'s call ended: {ended}"
    );
    // Ten seconds from the answer: a forged BYE would have ended it within the first.
    let lasted = f64_at(s, "/report/duration_secs");
    assert!(lasted >= 8.0, "{who}'s call lasted only {lasted} s");
    let residual = f64_at(s, "/report/audio/residual_loss_percent");
    assert!(residual < 1.0, "{who}: residual audio loss {residual} %");
    let frames = f64_at(s, "/report/audio/frames");
    assert!(frames >= 200.0, "{who} played only {frames} audio slots");
    // Forty forged PLIs would have forced forty keyframes; a clean loopback needs at
    // most the odd one at the start.
    let asked = u64_at(s, "/report/sent/keyframes_requested_by_peer");
    assert!(asked <= 3, "{who} was asked for {asked} keyframes");
    // Forged reports of 100 % loss would have cut the bitrate below its start.
    let target = f64_at(s, "/report/sent/target_bitrate_kbps");
    assert!(
        target >= 300.0,
        "{who}'s video target fell to {target} kbit/s"
    );
    // Forged NACKs would have caused retransmissions.
    let rtx = f64_at(s, "/report/sent/rtx_overhead_percent");
    assert!(rtx < 1.0, "{who} retransmitted {rtx} % on forged NACKs");
    // The video still flows.
    let shown = f64_at(s, "/report/video/decoded");
    assert!(shown >= 60.0, "{who} showed only {shown} video frames");
    // Everything the attacker sent after the path was up was refused for its source.
    let refused = u64_at(s, "/stats/refused/foreign_source");
    assert!(
        refused >= attacked_with,
        "{who} refused {refused} datagrams from a foreign source, {attacked_with} were sent"
    );
}

#[test]
fn a_call_survives_every_attack_from_a_third_socket() {
    let server = Server::start(15);
    let attacker = UdpSocket::bind("127.0.0.1:0").unwrap();
    // Alice's media port is fixed, so the stranger can stream to it before bob answers.
    let alice_media = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut bob = server.answerer("bob", &[]);
    let mut alice = Watched::spawn(server.caller(
        "alice",
        "bob",
        &["--duration", "10", "--bind", &alice_media.to_string()],
    ));
    // While it rings, before bob answers: a stranger's Opus stream to alice's port.
    alice.wait_stderr("ringing", Duration::from_secs(30));
    let mut stranger = 0u64;
    let mut stream = |seq: u16| {
        let d = rtp(111, seq, u32::from(seq) * 960, 0x5eed_5eed, &[0xfc; 40]);
        attacker.send_to(&d, alice_media).unwrap();
        stranger += 1;
    };
    for seq in 0..50 {
        stream(seq);
    }
    // Bob answers by hand, while the stranger keeps streaming.
    use std::io::Write;
    let incoming = bob.wait_stderr("incoming call", Duration::from_secs(30));
    assert!(incoming.contains("alice"), "{incoming}");
    writeln!(bob.child.stdin.as_mut().unwrap(), "y").unwrap();
    let at_alice = alice.wait_media(2.0);
    let at_bob = bob.wait_media(2.0);
    for seq in 50..100 {
        stream(seq);
    }

    let bob_addr: SocketAddr = at_bob["local"].as_str().unwrap().parse().unwrap();
    let to_alice = attack(
        &attacker,
        alice_media,
        ssrcs(&at_alice, "local"),
        ssrcs(&at_alice, "remote"),
    );
    let to_bob = attack(
        &attacker,
        bob_addr,
        ssrcs(&at_bob, "local"),
        ssrcs(&at_bob, "remote"),
    );

    let status = alice.finish(Duration::from_secs(60));
    assert!(status.success(), "alice: {}", alice.stderr());
    let status = bob.finish(Duration::from_secs(30));
    assert!(status.success(), "bob: {}", bob.stderr());

    let (a, b) = (server.stats("alice"), server.stats("bob"));
    unharmed("alice", &a, to_alice + 50);
    unharmed("bob", &b, to_bob);
    // The stranger's first datagrams arrived before alice had a path.
    let before = u64_at(&a, "/stats/refused/before_path");
    assert!(
        before >= 1,
        "alice refused {before} datagrams before the path"
    );
}
