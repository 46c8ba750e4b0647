//! SRTP/SRTCP: bytes nobody protected are refused, what we protect opens to the same
//! bytes, one changed bit is refused, whatever the input; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    magpie_media::fuzzing::srtp(data);
});
