//! Issue 9's attacks at the session level, in virtual time: an attacker on the network
//! (its own socket, or spoofing the peer's address) sends each forgery into a live
//! call. The call must go on exactly as it does without the attacker: no residual loss
//! caused by the attack, no forced keyframes, no bitrate drop, no extra retransmissions,
//! and the refusal counters show the drops. Each attack runs over several seeds and the
//! figures are compared with the same seeds' calls without it, in aggregate.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Attack, Outcome, STRANGER_IDS, Scenario, Side, Sniffed, audio_frame, run};
use magpie_media::types::Ssrc;
use magpie_media::wire::{ReportBlock, Rtcp, RtpHeader, build_rtcp, build_rtp};
use magpie_media::{Refused, Stats};

const SEEDS: [u64; 3] = [1, 2, 3];

/// A plain call (no SRTP): the forgeries reach the admission checks behind SRTP, which
/// guard plain calls and calls with a peer that holds the keys.
fn scenario() -> Scenario {
    let mut s = encrypted();
    s.plain = true;
    s
}

/// The same call with SRTP, as every call is by default.
fn encrypted() -> Scenario {
    let mut s = Scenario::new("loss=5%,delay=25ms,jitter=5ms");
    s.seconds = 20;
    s
}

/// Refusals of the checks behind SRTP: with SRTP no forgery may reach them.
fn behind_srtp(r: &Refused) -> u64 {
    r.unknown_ssrc + r.unknown_pt + r.probation + r.rtcp_foreign_ssrc + r.rtcp_not_agreed
}

/// With SRTP on, the same attacks harm nothing and are refused before any parsing: at
/// least `forged` datagrams fail authentication (or are too short to carry a tag), and
/// none reaches the checks behind SRTP.
fn assert_refused_by_srtp(name: &str, attacks: Vec<Attack>, forged: u64) {
    let c = compare(&encrypted(), attacks);
    c.assert_unharmed(name);
    let srtp = refused(&c.attacked, |r| {
        r.srtp_auth + r.malformed_rtp + r.malformed_rtcp
    });
    println!("{name} with SRTP: {srtp} refused before parsing (at least {forged} expected)");
    assert!(srtp >= forged, "{name}: {srtp} < {forged}");
    assert_eq!(
        refused(&c.attacked, behind_srtp),
        refused(&c.baseline, behind_srtp),
        "{name}: a forgery got past SRTP"
    );
}

fn attack(
    target: Side,
    spoofed: bool,
    every_ms: u64,
    forge: fn(&Sniffed<'_>) -> Vec<Vec<u8>>,
) -> Attack {
    Attack {
        target,
        spoofed,
        at: Duration::from_millis(500),
        every: Duration::from_millis(every_ms),
        until: Duration::from_secs(18),
        forge,
    }
}

fn rtcp(packets: &[Rtcp]) -> Vec<u8> {
    build_rtcp(packets).unwrap().to_vec()
}

/// What the attacked calls must match: per seed, the same call without the attacker.
struct Compared {
    baseline: Vec<Outcome>,
    attacked: Vec<Outcome>,
}

fn compare(base: &Scenario, attacks: Vec<Attack>) -> Compared {
    let mut attacked_scenario = base.clone();
    attacked_scenario.attacks = attacks;
    Compared {
        baseline: SEEDS
            .iter()
            .map(|&seed| run(&base.with_seed(seed)))
            .collect(),
        attacked: SEEDS
            .iter()
            .map(|&seed| run(&attacked_scenario.with_seed(seed)))
            .collect(),
    }
}

fn sum(outcomes: &[Outcome], f: impl Fn(&Outcome) -> u64) -> u64 {
    outcomes.iter().map(f).sum()
}

fn refused(outcomes: &[Outcome], f: impl Fn(&Refused) -> u64) -> u64 {
    sum(outcomes, |o| f(&o.a.refused) + f(&o.b.refused))
}

fn both(o: &Outcome, f: impl Fn(&Stats) -> u64) -> u64 {
    f(&o.a) + f(&o.b)
}

impl Compared {
    /// The call went on as without the attacker, in aggregate over the seeds.
    fn assert_unharmed(&self, name: &str) {
        let played = |o: &Outcome| (o.a_to_b.audio_in_budget + o.b_to_a.audio_in_budget) as u64;
        let shown = |o: &Outcome| (o.a_to_b.video_in_budget + o.b_to_a.video_in_budget) as u64;
        let (a, b) = (&self.attacked, &self.baseline);
        println!(
            "{name}: audio {}/{} video {}/{} keyframes asked {}/{} rtx bytes {}/{} \
             target kbit/s {}/{} (attacked/baseline)",
            sum(a, played),
            sum(b, played),
            sum(a, shown),
            sum(b, shown),
            sum(a, |o| both(o, |s| s.keyframes_requested_by_peer)),
            sum(b, |o| both(o, |s| s.keyframes_requested_by_peer)),
            sum(a, |o| both(o, |s| s.send_video.rtx_bytes
                + s.send_audio.rtx_bytes)),
            sum(b, |o| both(o, |s| s.send_video.rtx_bytes
                + s.send_audio.rtx_bytes)),
            sum(a, |o| both(o, |s| s.target_bitrate_bps)) / 1000,
            sum(b, |o| both(o, |s| s.target_bitrate_bps)) / 1000,
        );
        // No residual loss caused by the attack.
        assert!(
            sum(a, played) >= sum(b, played),
            "{name}: audio lost to the attack"
        );
        assert!(
            sum(a, shown) >= sum(b, shown),
            "{name}: video lost to the attack"
        );
        // No forced keyframes, no bitrate drop, no retransmissions on demand.
        let keyframes = |o: &Outcome| both(o, |s| s.keyframes_requested_by_peer);
        assert!(
            sum(a, keyframes) <= sum(b, keyframes),
            "{name}: keyframes forced"
        );
        let target = |o: &Outcome| both(o, |s| s.target_bitrate_bps);
        assert!(sum(a, target) >= sum(b, target), "{name}: bitrate dropped");
        let rtx = |o: &Outcome| both(o, |s| s.send_video.rtx_bytes + s.send_audio.rtx_bytes);
        assert!(sum(a, rtx) <= sum(b, rtx), "{name}: retransmissions forced");
        for o in a {
            assert!(!o.peer_left, "{name}: the call ended");
            assert_eq!(o.foreign_played, 0, "{name}: a stranger's audio played");
            for d in [&o.a_to_b, &o.b_to_a] {
                let c = (d.stats.recv_audio.counters, d.stats.recv_video.counters);
                assert_eq!(
                    (c.0.resyncs, c.1.resyncs),
                    (0, 0),
                    "{name}: a stream resynced"
                );
                assert!(d.video_order_ok);
            }
        }
    }
}

#[test]
fn a_bye_naming_a_random_ssrc_from_the_path_is_refused() {
    let bye = |s: &Sniffed<'_>| {
        vec![rtcp(&[Rtcp::Goodbye {
            ssrcs: vec![Ssrc(s.noise as u32)],
        }])]
    };
    let attacks = vec![
        attack(Side::A, true, 100, bye),
        attack(Side::B, true, 100, bye),
    ];
    let c = compare(&scenario(), attacks.clone());
    c.assert_unharmed("bye-random-ssrc");
    let n = 2 * 170 * SEEDS.len() as u64;
    assert!(refused(&c.attacked, |r| r.rtcp_foreign_ssrc) >= n);
    assert_refused_by_srtp("bye-random-ssrc", attacks, n);
}

#[test]
fn a_bye_naming_the_peer_from_another_address_is_refused() {
    let bye = |s: &Sniffed<'_>| {
        vec![rtcp(&[Rtcp::Goodbye {
            ssrcs: vec![s.peer.0.ssrc],
        }])]
    };
    let c = compare(&scenario(), vec![attack(Side::B, false, 100, bye)]);
    c.assert_unharmed("bye-other-address");
    assert!(refused(&c.attacked, |r| r.foreign_source) >= 170 * SEEDS.len() as u64);
}

/// Two packets with the sniffed SSRC and sequence number +3500 (and the next one).
fn jumped_pair(last: Option<&[u8]>) -> Vec<Vec<u8>> {
    let Some(last) = last else {
        return Vec::new();
    };
    (0..2u16)
        .map(|k| {
            let mut d = last.to_vec();
            let seq = u16::from_be_bytes([d[2], d[3]]).wrapping_add(3500 + k);
            d[2..4].copy_from_slice(&seq.to_be_bytes());
            d
        })
        .collect()
}

#[test]
fn forged_rtp_with_the_peers_ssrc_and_a_jumped_sequence_changes_nothing() {
    // Spoofed from the path: the packets pass the source check and reach the streams.
    let audio = |s: &Sniffed<'_>| jumped_pair(s.audio);
    let video = |s: &Sniffed<'_>| jumped_pair(s.video);
    let attacks = vec![
        attack(Side::B, true, 1000, audio),
        attack(Side::B, true, 1000, video),
        attack(Side::A, true, 700, audio),
    ];
    let c = compare(&scenario(), attacks.clone());
    c.assert_unharmed("forged-seq-jump");
    let n = 2 * (17 + 17 + 24) * SEEDS.len() as u64;
    let held = refused(&c.attacked, |r| r.probation);
    assert!(held >= n, "{held}");
    // Under SRTP the sequence number is authenticated: the edited copies fail.
    assert_refused_by_srtp("forged-seq-jump", attacks, n);
}

/// Eight RTX-looking datagrams on the agreed RTX payload types with random SSRCs.
fn blind_rtx(s: &Sniffed<'_>) -> Vec<Vec<u8>> {
    let mut noise = s.noise;
    let pts = [s.victim.0.rtx.unwrap().0, s.peer.1.unwrap().rtx.unwrap().0];
    (0..8)
        .map(|i| {
            noise = noise.rotate_left(13).wrapping_mul(0x2545_f491_4f6c_dd1d);
            let header = RtpHeader {
                marker: false,
                pt: pts[i % 2],
                seq: noise as u16,
                timestamp: (noise >> 16) as u32,
                ssrc: Ssrc((noise >> 32) as u32),
                capture: None,
            };
            let payload: Vec<u8> = (0..200).map(|b| (noise >> (b % 56)) as u8).collect();
            build_rtp(&header, &payload, 3).unwrap().to_vec()
        })
        .collect()
}

#[test]
fn blind_rtx_with_random_ssrcs_is_refused() {
    let attacks = vec![
        attack(Side::B, true, 50, blind_rtx),
        attack(Side::A, true, 50, blind_rtx),
    ];
    let c = compare(&scenario(), attacks.clone());
    c.assert_unharmed("blind-rtx");
    let n = 2 * 8 * 340 * SEEDS.len() as u64;
    assert!(refused(&c.attacked, |r| r.unknown_ssrc) >= n);
    assert_refused_by_srtp("blind-rtx", attacks, n);
}

/// A receiver report claiming total loss of the victim's streams, a PLI and a NACK for
/// the victim's latest video packets, all from `sender`.
fn forged_feedback(s: &Sniffed<'_>, sender: Ssrc) -> Vec<Vec<u8>> {
    let video = s.victim.1.unwrap().ssrc;
    let block = |ssrc| ReportBlock {
        ssrc,
        fraction_lost: 255,
        total_lost: 100_000,
        highest_seq: 0,
        jitter: 1_000_000,
        lsr: s.noise as u32,
        dlsr: 0,
    };
    let rr = Rtcp::ReceiverReport {
        ssrc: sender,
        reports: vec![block(s.victim.0.ssrc), block(video)],
    };
    let newest = s
        .victim_video
        .map_or(0, |d| u16::from_be_bytes([d[2], d[3]]));
    let nack = Rtcp::Nack {
        sender,
        media: video,
        seqs: (1..=16).map(|k| newest.wrapping_sub(k)).collect(),
    };
    let pli = Rtcp::Pli {
        sender,
        media: video,
    };
    vec![rtcp(&[rr, nack, pli])]
}

#[test]
fn forged_rr_pli_and_nack_are_refused() {
    // From the path with a stranger's sender SSRC, and from another address with the
    // peer's own SSRC.
    let from_path = |s: &Sniffed<'_>| forged_feedback(s, Ssrc(s.noise as u32));
    let from_elsewhere = |s: &Sniffed<'_>| forged_feedback(s, s.peer.0.ssrc);
    let attacks = vec![
        attack(Side::A, true, 100, from_path),
        attack(Side::A, false, 100, from_elsewhere),
        attack(Side::B, true, 150, from_path),
    ];
    let c = compare(&scenario(), attacks.clone());
    c.assert_unharmed("forged-feedback");
    let attacked = &c.attacked;
    assert!(refused(attacked, |r| r.rtcp_foreign_ssrc) >= 3 * (170 + 114) * SEEDS.len() as u64);
    assert!(refused(attacked, |r| r.foreign_source) >= 170 * SEEDS.len() as u64);
    // From the path: one compound a round on each side.
    assert_refused_by_srtp("forged-feedback", attacks, (170 + 114) * SEEDS.len() as u64);
}

/// The last datagram sniffed with one payload bit flipped (or one header bit: the
/// marker, which SRTP authenticates but does not encrypt).
fn tampered(last: Option<&[u8]>, round: u32) -> Vec<Vec<u8>> {
    let Some(last) = last else {
        return Vec::new();
    };
    let mut d = last.to_vec();
    if round.is_multiple_of(2) {
        let i = d.len() - 20;
        d[i] ^= 0x04;
    } else {
        d[1] ^= 0x80;
    }
    vec![d]
}

#[test]
fn replayed_and_tampered_srtp_packets_are_refused_and_counted() {
    // Every 20 ms the attacker on the path replays an audio packet of each direction
    // that arrived 160 ms earlier, and every 50 ms sends a tampered copy of the newest
    // video packet.
    let replay = |s: &Sniffed<'_>| s.audio_earlier.map(<[u8]>::to_vec).into_iter().collect();
    let tamper = |s: &Sniffed<'_>| tampered(s.video, s.round);
    let c = compare(
        &encrypted(),
        vec![
            attack(Side::A, true, 20, replay),
            attack(Side::B, true, 20, replay),
            attack(Side::B, true, 50, tamper),
        ],
    );
    c.assert_unharmed("replay-and-tamper");
    let n = SEEDS.len() as u64;
    // 875 replays a side and seed from 0.5 s to 18 s; one whose original was lost (5 %
    // loss) and not yet retransmitted is admitted, as the original would have been.
    let replays = refused(&c.attacked, |r| r.srtp_replay);
    assert!(replays >= 2 * 800 * n, "{replays}");
    // 351 tampered copies a seed; a copy of a packet that already arrived is refused by
    // the replay check, which runs first. The rest fail authentication.
    let forged = refused(&c.attacked, |r| r.srtp_auth);
    assert!((300 * n..=351 * n).contains(&forged), "{forged}");
    assert_eq!(refused(&c.baseline, |r| r.srtp_auth + r.srtp_replay), 0);
    assert_eq!(
        refused(&c.attacked, behind_srtp),
        refused(&c.baseline, behind_srtp)
    );
}

/// An Opus stream of the stranger's own, and one claiming the peer's SSRC.
fn stranger_stream(s: &Sniffed<'_>) -> Vec<Vec<u8>> {
    let audio = s.victim.0;
    [Ssrc(0x5eed_0001), s.peer.0.ssrc]
        .into_iter()
        .map(|ssrc| {
            let header = RtpHeader {
                marker: false,
                pt: audio.pt,
                seq: 1000 + s.round as u16,
                timestamp: s.round * 960,
                ssrc,
                capture: None,
            };
            let frame = audio_frame(STRANGER_IDS + s.round);
            build_rtp(&header, &frame, 3).unwrap().to_vec()
        })
        .collect()
}

#[test]
fn a_strangers_stream_before_and_after_the_path_is_never_played() {
    let mut base = scenario();
    // The call is answered, and the path selected, two seconds in.
    base.path_after = Duration::from_secs(2);
    let mut stranger = attack(Side::B, false, 20, stranger_stream);
    stranger.at = Duration::ZERO;
    let c = compare(&base, vec![stranger]);
    c.assert_unharmed("stranger-stream");
    let n = SEEDS.len() as u64;
    // Two a 20 ms tick: 100 ticks before the path, the rest from the wrong address.
    assert!(refused(&c.attacked, |r| r.before_path) >= 2 * 99 * n);
    assert!(refused(&c.attacked, |r| r.foreign_source) >= 2 * 790 * n);
    for o in &c.attacked {
        // Nothing was sent or played before the path.
        for d in [&o.a_to_b, &o.b_to_a] {
            assert!(
                d.audio_sent as u64 <= 19 * 50 - 2 * 50 + 1,
                "{}",
                d.audio_sent
            );
        }
    }
}
