//! A TURN client fed arbitrary datagrams from its server (dressed as responses to its
//! own requests, as ChannelData and as Data indications) must never panic.
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
    magpie_media::fuzzing::turn_client_datagrams(data, base());
});
