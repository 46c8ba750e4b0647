//! A file left on the server, fed by arbitrary operations: in-order chunks of the real
//! bytes, chunks at wrong offsets or of arbitrary bytes, and arbitrary request lines
//! (a `file-chunk` among them has its base64 decoded as the server does). Nothing may
//! panic; the upload never counts more than its size; and it completes only when the
//! bytes it admitted are exactly the announced size with the announced SHA-256.
#![no_main]

use arbitrary::Arbitrary;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use libfuzzer_sys::fuzz_target;
use magpie_signaling::files::{Step, Upload};
use magpie_signaling::proto::{FileName, Request, Sha256Digest, parse_request};
use sha2::{Digest, Sha256};

#[derive(Arbitrary, Debug)]
enum Op {
    /// The next `len` bytes of the real content, at the right offset.
    Next { len: u16 },
    /// Bytes at an offset off by `skew`.
    Skewed { skew: i32, data: Vec<u8> },
    /// Arbitrary bytes at the right offset.
    Junk { data: Vec<u8> },
    /// A request line from the network.
    Line(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Input {
    size: u16,
    max_chunk: u16,
    seed: u8,
    /// Announce the content's real SHA-256, or another.
    honest: bool,
    ops: Vec<Op>,
}

fuzz_target!(|input: Input| {
    let content: Vec<u8> = (0..input.size)
        .map(|i| (i as u8).wrapping_mul(31) ^ input.seed)
        .collect();
    let real = Sha256Digest(Sha256::digest(&content).into());
    let announced = if input.honest { real } else { Sha256Digest([input.seed; 32]) };
    let mut upload = Upload::new(
        u64::from(input.size),
        announced,
        usize::from(input.max_chunk.max(1)),
    );
    let mut admitted = Vec::new();
    for op in input.ops {
        let at = upload.received();
        let (offset, data) = match op {
            Op::Next { len } => {
                let start = usize::try_from(at).unwrap();
                let end = (start + usize::from(len)).min(content.len());
                (at, content[start..end].to_vec())
            }
            Op::Skewed { skew, data } => (at.saturating_add_signed(i64::from(skew)), data),
            Op::Junk { data } => (at, data),
            Op::Line(line) => {
                match parse_request(&line) {
                    Ok((_, Request::FileChunk(chunk))) => match BASE64.decode(chunk.data) {
                        Ok(data) => (chunk.offset, data),
                        Err(_) => continue,
                    },
                    Ok((_, Request::FilePut(put))) => {
                        // A name that parsed stays inside a folder.
                        let name = put.file.name.as_str();
                        assert!(FileName::parse(name).is_ok());
                        assert!(!name.contains(['/', '\\']) && name != ".." && name != ".");
                        assert!(!name.chars().any(char::is_control));
                        continue;
                    }
                    _ => continue,
                }
            }
        };
        match upload.handle_chunk(offset, &data) {
            Ok(Step::More(n)) => {
                admitted.extend_from_slice(&data);
                assert_eq!(n, admitted.len() as u64);
                assert!(n < u64::from(input.size));
            }
            Ok(Step::Complete) => {
                admitted.extend_from_slice(&data);
                assert_eq!(admitted.len(), usize::from(input.size));
                assert_eq!(Sha256Digest(Sha256::digest(&admitted).into()), announced);
                return;
            }
            // The server removes the upload at its first refusal.
            Err(_) => return,
        }
        assert!(upload.received() <= upload.size());
    }
});
