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
/// reach the streams. Datagrams are separated by `0xa5`; the first byte of each is a
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
    let mut session = SessionConfig::new().set_seed(1).build(now);
    let peer = SessionConfig::new().set_seed(2).build(now);
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
            rtp[0] = 0x80 | (rtp[0] & 0x1f);
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
