//! The `key` field of a session description (an X25519 public key in hex): whatever
//! parses prints back the same, and deriving keys from it never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    magpie_media::fuzzing::key_field(data);
});
