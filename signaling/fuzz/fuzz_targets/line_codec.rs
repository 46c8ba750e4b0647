//! Bytes from the network, split into arbitrary reads, through the line codec and
//! both message parsers. Nothing may panic, no line may exceed the limit, and
//! every byte before the last newline must come out as lines.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use magpie_signaling::codec::LineCodec;
use magpie_signaling::proto::{parse_request, parse_server_message};

fuzz_target!(|input: (u8, Vec<u8>, Vec<u8>)| {
    let (limit, cuts, data) = input;
    let codec = LineCodec::new(usize::from(limit));
    let mut buffer = BytesMut::new();
    let mut rest = &data[..];
    let mut cuts = cuts.iter().map(|&c| usize::from(c) + 1).cycle();
    let mut consumed = 0;
    while !rest.is_empty() {
        let take = cuts.next().unwrap_or(rest.len()).min(rest.len());
        buffer.extend_from_slice(&rest[..take]);
        rest = &rest[take..];
        loop {
            match codec.decode(&mut buffer) {
                Ok(Some(line)) => {
                    assert!(line.len() <= codec.max_len(), "line over the limit");
                    assert!(!line.contains(&b'\n'));
                    consumed += 1;
                    if let Ok((_, request)) = parse_request(&line) {
                        // A parsed request re-encodes and parses to itself.
                        let again = parse_request(&request.encode(7)).expect("re-parse");
                        assert_eq!(again.1, request);
                    }
                    let _ = parse_server_message(&line);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(buffer.len() <= codec.max_len() + 1, "buffer grows past the limit");
    }
    let _ = consumed;
});
