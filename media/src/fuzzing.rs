//! Drivers shared by the fuzz targets (`media/fuzz/`) and the tests that replay what they
//! found, so a replay feeds the bytes exactly as the fuzzer did. Not part of the API a
//! call uses.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::SessionConfig;

/// Feeds `data` to a fresh session starting at `start`, the `session_datagrams` way:
/// datagrams are separated by `0xa5`; the first byte of each is a time step in
/// milliseconds. Each datagram goes in as is, and again (when long enough) dressed as
/// RTP with one of our payload types, to get past the demultiplexer; then timers,
/// playout and every output are driven. It must return, whatever the bytes.
pub fn session_datagrams(data: &[u8], start: Instant) {
    let mut now = start;
    let mut session = SessionConfig::new().set_seed(1).build(now);
    let from = SocketAddr::from(([127, 0, 0, 1], 9));
    for chunk in data.split(|&b| b == 0xa5) {
        let (step, datagram) = chunk.split_first().map_or((0, chunk), |(s, d)| (*s, d));
        now += Duration::from_millis(u64::from(step));
        session.handle_datagram(now, from, datagram);
        if datagram.len() > 12 {
            let mut rtp = datagram.to_vec();
            rtp[0] = 0x80 | (rtp[0] & 0x1f);
            rtp[1] = [111, 112, 96, 97][usize::from(step % 4)] | (rtp[1] & 0x80);
            session.handle_datagram(now, from, &rtp);
        }
        session.handle_timeout(now);
        let _ = session.pull_audio(now);
        while session.poll_transmit().is_some() {}
        while session.poll_event().is_some() {}
        let _ = session.poll_timeout();
    }
}
