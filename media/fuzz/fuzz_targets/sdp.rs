//! Session descriptions (`magpie play FILE.sdp`): parsing never panics, and what parses
//! is written back and parses again to the same media.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    magpie_media::fuzzing::sdp(data);
});
