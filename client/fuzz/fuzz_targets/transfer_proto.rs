//! The file-transfer messages from a peer: an offer, an answer to it, and a stream
//! header, from arbitrary bytes. Nothing may panic; whatever parses must hold what the
//! receiver relies on (names that stay in the folder, a reply per file, offsets within
//! the files, a header that names an accepted file and exactly its rest), and must
//! survive its own bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use magpie_client::transfer::proto::{
    Reply, SafeName, StreamHeader, TransferAnswer, TransferOffer,
};

/// A valid offer of two files, for answers and headers to be checked against.
const OFFER: &str = r#"{"version":1,"key":"8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a","candidates":[{"addr":"192.168.1.20:50432","type":"host"}],"fingerprint":"2A:75:0B:1C:5E:87:16:1D:9F:EA:91:6A:55:13:8C:3B:42:D7:0D:2C:31:44:5D:03:9E:E8:60:0A:8D:F1:12:70","files":[{"name":"photo.jpg","size":1200000,"sha256":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","image":{"format":"jpeg","width":1920,"height":1080}},{"name":"notes.txt","size":10,"sha256":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"}]}"#;

fuzz_target!(|data: &[u8]| {
    let known = TransferOffer::parse(OFFER.as_bytes()).expect("the fixed offer parses");
    // The first byte picks which message the rest is.
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => {
            if let Ok(offer) = TransferOffer::parse(bytes) {
                for file in &offer.files {
                    SafeName::parse(file.name.as_str()).expect("an accepted name re-checks");
                    let name = file.name.as_str();
                    assert!(!name.contains('/') && !name.contains('\\') && name != "..");
                    assert!(!name.chars().any(char::is_control));
                }
                assert!(!offer.files.is_empty());
                let again = TransferOffer::parse(&offer.to_bytes()).expect("re-parse");
                assert_eq!(again, offer);
            }
        }
        1 => {
            if let Ok(answer) = TransferAnswer::parse(bytes, &known) {
                assert_eq!(answer.replies.len(), known.files.len());
                for (reply, file) in answer.replies.iter().zip(&known.files) {
                    if let Reply::Accept { offset } = reply {
                        assert!(*offset <= file.size);
                    }
                }
                let again = TransferAnswer::parse(&answer.to_bytes(), &known).expect("re-parse");
                assert_eq!(again, answer);
            }
        }
        2 => {
            // Replies drawn from the input's first bytes, then a header.
            let replies: Vec<Reply> = bytes
                .iter()
                .take(2)
                .map(|&b| match b % 3 {
                    0 => Reply::Decline,
                    1 => Reply::Accept { offset: 0 },
                    _ => Reply::Accept { offset: u64::from(b) },
                })
                .collect();
            let header = bytes.get(2..).unwrap_or_default();
            if let Ok(h) = StreamHeader::parse(header, &known, &replies) {
                let file = &known.files[usize::from(h.index)];
                assert_eq!(h.offset + h.length, file.size);
                assert_eq!(replies[usize::from(h.index)], Reply::Accept { offset: h.offset });
                assert_eq!(StreamHeader::parse(&h.encode(), &known, &replies).unwrap(), h);
            }
        }
        _ => {
            let name = String::from_utf8_lossy(bytes);
            if let Ok(safe) = SafeName::parse(&name) {
                let s = safe.as_str();
                assert!(!s.is_empty() && s.len() <= 255 && s != "." && s != "..");
                assert!(!s.contains(['/', '\\']) && !s.chars().any(char::is_control));
            }
            // JSON holding a value of any shape where signaling carries an offer.
            if let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) {
                let _ = TransferOffer::from_value(value.clone());
                let _ = TransferAnswer::from_value(value, &known);
            }
        }
    }
});
