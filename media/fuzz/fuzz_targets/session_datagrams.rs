//! A session fed arbitrary datagrams (and timer/playout steps between them) must never
//! panic, whatever the bytes.
#![no_main]
#![allow(clippy::disallowed_methods)]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use magpie_media::SessionConfig;

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fuzz_target!(|data: &[u8]| {
    let mut now = base();
    let mut session = SessionConfig::new().set_seed(1).build(now);
    let from = "127.0.0.1:9".parse().expect("a literal address");
    // Datagrams separated by 0xff 0xff; the byte after each separator advances time.
    for chunk in data.split(|&b| b == 0xa5) {
        let (step, datagram) = chunk.split_first().map_or((0, chunk), |(s, d)| (*s, d));
        now += Duration::from_millis(u64::from(step));
        session.handle_datagram(now, from, datagram);
        // Also try it as RTP with our payload types, to get past the demultiplexer.
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
    let _ = session.stats();
});
