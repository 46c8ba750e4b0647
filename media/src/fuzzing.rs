//! Drivers shared by the fuzz targets (`media/fuzz/`) and the tests that replay what they
//! found, so a replay feeds the bytes exactly as the fuzzer did. Not part of the API a
//! call uses.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::srtp::Srtp;
use crate::{Agreement, SessionConfig};

/// Feeds `data` to a fresh session starting at `start`, the `session_datagrams` way.
///
/// The session has an agreement with a peer session (seed 2) and a path, so the bytes
/// reach the streams, and both run delay-based control, so padding on an RTX stream (the
/// peer's probes; a dressed copy keeps its padding bit) is measured, transport-wide
/// sequence numbers are read, and the peer's transport-cc feedback is taken in. Datagrams are separated by `0xa5`; the first byte of each is a
/// time step in milliseconds whose bits also choose how it is fed:
/// - bits 0-1: which of the peer's agreed tracks (audio, audio RTX, video, video RTX) a
///   dressed copy claims;
/// - bit 5: the dressed copy keeps its own SSRC (a stranger's) instead;
/// - bit 4: the datagram is also dressed as RTCP from the peer's audio SSRC;
/// - bit 3: the dressed copies go in as they are (so they fail SRTP authentication)
///   instead of protected with the peer's SRTP keys;
/// - bits 6 and 7 both set: the raw datagram comes from another source address.
///
/// Each datagram goes in as is (through SRTP's checks, which refuse it), and again (when
/// long enough) dressed as RTP of an agreed track, from the path, and protected with
/// the peer's keys, to get past SRTP, the demultiplexer and the admission checks; then
/// timers, playout and every output are driven. It must return, whatever the bytes.
pub fn session_datagrams(data: &[u8], start: Instant) {
    let mut now = start;
    // Delay-based control on: the peer's probes (padding on an RTX stream) are measured.
    let mut session = SessionConfig::new()
        .set_seed(1)
        .set_delay_bwe(true)
        .build(now);
    let peer = SessionConfig::new()
        .set_seed(2)
        .set_delay_bwe(true)
        .build(now);
    session
        .set_agreement(Agreement::between(&session, &peer))
        .expect("two sessions with default configs agree");
    let path = SocketAddr::from(([127, 0, 0, 1], 9));
    let stranger = SocketAddr::from(([127, 0, 0, 1], 10));
    session.set_path(path);
    let mut peer_srtp = session
        .agreement()
        .and_then(|a| a.srtp)
        .map(|keys| Srtp::new(keys.mirrored()))
        .expect("agreements between sessions carry SRTP keys");
    let mut dress = |step: u8, datagram: Vec<u8>| {
        if step & 0x08 != 0 {
            return datagram;
        }
        peer_srtp
            .protect(&datagram)
            .map_or(datagram, |protected| protected.to_vec())
    };
    let audio = peer.audio_track();
    let video = peer.video_track().expect("video is on by default");
    let main = |t: crate::Track| (t.pt, t.ssrc);
    let rtx = |t: crate::Track| t.rtx.unwrap_or((t.pt, t.ssrc));
    let tracks = [main(audio), rtx(audio), main(video), rtx(video)];
    for chunk in data.split(|&b| b == 0xa5) {
        let (step, datagram) = chunk.split_first().map_or((0, chunk), |(s, d)| (*s, d));
        now += Duration::from_millis(u64::from(step));
        let from = if step & 0xc0 == 0xc0 { stranger } else { path };
        session.handle_datagram(now, from, datagram);
        if datagram.len() > 12 {
            let mut rtp = datagram.to_vec();
            let (pt, ssrc) = tracks[usize::from(step % 4)];
            rtp[0] = 0x80 | (rtp[0] & 0x3f);
            rtp[1] = pt.0 | (rtp[1] & 0x80);
            if step & 0x20 == 0 {
                rtp[8..12].copy_from_slice(&ssrc.0.to_be_bytes());
            }
            session.handle_datagram(now, path, &dress(step, rtp));
        }
        if datagram.len() >= 8 && step & 0x10 != 0 {
            let mut rtcp = datagram.to_vec();
            rtcp[0] = 0x80 | (rtcp[0] & 0x3f);
            rtcp[1] = 200 + rtcp[1] % 8;
            rtcp[4..8].copy_from_slice(&audio.ssrc.0.to_be_bytes());
            session.handle_datagram(now, path, &dress(step, rtcp));
        }
        session.handle_timeout(now);
        let _ = session.pull_audio(now);
        while session.poll_transmit().is_some() {}
        while session.poll_event().is_some() {}
        let _ = session.poll_timeout();
    }
}

/// Feeds `data` to a TURN client as datagrams from its server, the `turn_client` way.
///
/// Datagrams are separated by `0xa5`; the first byte of each is a time step in
/// milliseconds whose bits choose how it is dressed, so the bytes get past the first
/// checks and reach the response, indication and ChannelData parsers:
/// - bits 0-1 = 1: as a STUN response (class from bit 2: success or error) to the
///   latest request the client sent, with its method and transaction id;
/// - bits 0-1 = 2: as ChannelData on the first channel;
/// - bits 0-1 = 3: as a Data indication header.
///
/// Between datagrams the client's timers run and it is asked to permit a peer and wrap
/// data for it; with bit 3 of the step set it probes its allocation, and a lost one is
/// made again, as the call endpoint does. It must return, whatever the bytes.
pub fn turn_client_datagrams(data: &[u8], start: Instant) {
    use crate::ice::turn::TurnConfig;

    let server = SocketAddr::from(([192, 0, 2, 1], 3478));
    let peer = SocketAddr::from(([198, 51, 100, 7], 4000));
    let mut now = start;
    let mut client = TurnConfig::new(server, "1:fuzz".into(), "pass".into()).build(now, [5; 12]);
    let mut latest: Option<Vec<u8>> = None;
    for chunk in data.split(|&b| b == 0xa5) {
        while let Some(t) = client.poll_transmit() {
            latest = Some(t.contents);
        }
        let (step, datagram) = chunk.split_first().map_or((0, chunk), |(s, d)| (*s, d));
        now += Duration::from_millis(u64::from(step));
        let mut dressed = datagram.to_vec();
        match (step & 0x03, &latest) {
            (1, Some(request)) if dressed.len() >= 20 && request.len() >= 20 => {
                let class = if step & 0x04 == 0 { 0x0100 } else { 0x0110 };
                let typ = (u16::from_be_bytes([request[0], request[1]]) & !0x0110) | class;
                dressed[..2].copy_from_slice(&typ.to_be_bytes());
                dressed[4..20].copy_from_slice(&request[4..20]);
            }
            (2, _) if dressed.len() >= 4 => dressed[..2].copy_from_slice(&[0x40, 0x00]),
            (3, _) if dressed.len() >= 20 => {
                dressed[..2].copy_from_slice(&[0x00, 0x17]);
                dressed[4..8].copy_from_slice(&0x2112_a442u32.to_be_bytes());
            }
            _ => {}
        }
        let _ = client.handle_datagram(now, &dressed);
        let _ = crate::ice::turn::data_indication(&dressed);
        client.handle_timeout(now);
        client.permit(now, peer);
        let _ = client.wrap(peer, datagram);
        if step & 0x08 != 0 {
            client.probe(now);
        }
        while let Some(event) = client.poll_event() {
            if event == crate::ice::turn::TurnEvent::Failed(crate::ice::turn::TurnFailure::Lost) {
                client.reallocate(now);
            }
        }
    }
}

/// Parses `data` as the key field of a session description, the `key_field` way: a key
/// that parses prints back to the same key, and deriving from it either works or
/// refuses a weak key; it must never panic.
pub fn key_field(data: &[u8]) {
    use crate::srtp::exchange::{KeyPair, PublicKey, Role};
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(key) = text.parse::<PublicKey>() else {
        return;
    };
    assert_eq!(key.to_string().parse::<PublicKey>(), Ok(key));
    assert!(text.eq_ignore_ascii_case(&key.to_string()));
    let _ = KeyPair::from_random([7; 32]).derive(Role::Callee, &key, data, b"");
}

/// Parses `data` as a session description, the `sdp` way: whatever parses is written
/// back and parses again to the same media, addresses, ports and payload types; it must
/// never panic.
pub fn sdp(data: &[u8]) {
    use crate::sdp::Sdp;
    let text = String::from_utf8_lossy(data);
    let Ok(sdp) = Sdp::parse(&text) else {
        return;
    };
    let again = Sdp::parse(&sdp.to_string()).expect("a description we wrote parses");
    let summary = |s: &Sdp| -> Vec<_> {
        s.media
            .iter()
            .map(|m| (m.kind, m.addr, m.port, m.rtcp_port, m.pt))
            .collect()
    };
    assert_eq!(summary(&again), summary(&sdp));
}

/// Drives SRTP with `data`, the `srtp` way. Chunks are separated by `0xa5`; the first
/// byte of each chooses what happens to the rest:
/// - bit 0 clear: the bytes go to the receiver as they are, as RTP (bit 1 clear) or RTCP
///   (bit 1 set), and must be refused: nobody without the key makes a packet that
///   authenticates;
/// - bit 0 set: the sender protects them; what it protects, changed in one bit (the byte
///   at the first byte's value, bit 0 to 7 from bits 2-4), is refused, and then the
///   packet as sent opens to exactly the bytes protected, or is refused as a replay (the
///   fuzzer may send a sequence number twice). A refused replay can leave the two sides'
///   rollover guesses apart: the receiver did not move, while the sender may have (a
///   sequence number more than 2^15 from the last, which RFC 3711 §3.3.1 cannot place,
///   read by the sender as ahead and by the replay window as behind). From then on that
///   SSRC's packets may also fail authentication; they must still never open wrongly.
///
/// It must never panic.
pub fn srtp(data: &[u8]) {
    use bytes::BytesMut;

    use crate::srtp::{MasterKey, SrtpError, SrtpKeys};
    use crate::wire::{self, Kind};

    let keys = SrtpKeys {
        send: MasterKey::from_bytes([0x5a; 28]),
        receive: MasterKey::from_bytes([0xc3; 28]),
    };
    let (mut alice, mut bob) = (Srtp::new(keys), Srtp::new(keys.mirrored()));
    let (mut sealed, mut opened) = (BytesMut::new(), BytesMut::new());
    // RTP SSRCs whose rollover guesses may differ since a packet was refused as a replay.
    let mut apart = std::collections::HashSet::new();
    for chunk in data.split(|&b| b == 0xa5) {
        let Some((&op, bytes)) = chunk.split_first() else {
            continue;
        };
        if op & 1 == 0 {
            let kind = if op & 2 == 0 { Kind::Rtp } else { Kind::Rtcp };
            let refused = bob.unprotect_into(kind, bytes, &mut opened);
            assert!(refused.is_err() && opened.is_empty(), "forged {refused:?}");
            continue;
        }
        if alice.protect_into(bytes, &mut sealed).is_err() {
            assert!(sealed.is_empty());
            continue;
        }
        let kind = wire::classify(&sealed);
        let mut tampered = sealed.clone();
        let at = usize::from(op) % tampered.len();
        tampered[at] ^= 1 << ((op >> 2) & 7);
        let refused = bob.unprotect_into(wire::classify(&tampered), &tampered, &mut opened);
        assert!(
            refused.is_err(),
            "a packet changed at byte {at} was admitted"
        );
        let ssrc = (kind == Kind::Rtp).then(|| sealed.get(8..12).map(<[u8]>::to_vec));
        match bob.unprotect_into(kind, &sealed, &mut opened) {
            Ok(()) => assert_eq!(&opened[..], bytes),
            Err(SrtpError::Replay) => {
                apart.extend(ssrc);
            }
            Err(SrtpError::Auth) if ssrc.as_ref().is_some_and(|s| apart.contains(s)) => {}
            Err(e) => panic!("a packet we protected was refused: {e:?}"),
        }
    }
}
