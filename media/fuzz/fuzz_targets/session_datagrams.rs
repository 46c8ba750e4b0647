//! A session fed arbitrary datagrams (and timer/playout steps between them) must never
//! panic, whatever the bytes.
#![no_main]
#![allow(clippy::disallowed_methods)]

use std::sync::OnceLock;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fuzz_target!(|data: &[u8]| {
    magpie_media::fuzzing::session_datagrams(data, base());
});
