//! The line codec: newline-delimited frames with a size limit.
//!
//! Pure and allocation-free on the check path, so it can be fuzzed and reused by
//! the server, the client and the tests. As in mini-redis `frame.rs`, a frame is
//! first *checked* (is a whole line buffered? is it too long?) and only then taken
//! out of the buffer.

use bytes::{Buf, BytesMut};

/// Default maximum line length in bytes, newline excluded: 64 KiB holds the largest
/// `offer`/`answer` (16 KiB) with room for escaping, and bounds per-connection memory.
pub const DEFAULT_MAX_LINE: usize = 64 * 1024;

/// Splits a byte stream into lines of at most `max_len` bytes.
#[derive(Debug, Clone, Copy)]
pub struct LineCodec {
    max_len: usize,
}

/// A framing failure. The stream cannot be resynchronised after it, so the
/// connection must be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// A line longer than the limit arrived (or is still arriving).
    #[error("line longer than {limit} bytes")]
    LineTooLong {
        /// The limit in force.
        limit: usize,
    },
}

impl LineCodec {
    /// A codec that accepts lines of up to `max_len` bytes (newline excluded).
    pub fn new(max_len: usize) -> Self {
        Self { max_len }
    }

    /// The limit in force.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Checks whether `buf` starts with a complete line.
    ///
    /// Returns the index of its `\n`, `Ok(None)` if more bytes are needed, or an
    /// error once the line is known to exceed the limit (even before its end arrives).
    pub fn check(&self, buf: &[u8]) -> Result<Option<usize>, CodecError> {
        // Never scan further than the limit plus `\r\n`: the newline may sit there.
        let window = &buf[..buf.len().min(self.max_len.saturating_add(2))];
        match window.iter().position(|&b| b == b'\n') {
            Some(end) if content_len(&window[..end]) <= self.max_len => Ok(Some(end)),
            Some(_) => Err(CodecError::LineTooLong {
                limit: self.max_len,
            }),
            // Without a newline, at most the limit plus a trailing `\r` may wait for more.
            None if content_len(&window[..window.len().min(self.max_len.saturating_add(1))])
                > self.max_len
                || buf.len() > self.max_len.saturating_add(1) =>
            {
                Err(CodecError::LineTooLong {
                    limit: self.max_len,
                })
            }
            None => Ok(None),
        }
    }

    /// Takes the next complete line out of `buf`, without its `\n` (or `\r\n`).
    ///
    /// Returns `Ok(None)` when no whole line is buffered yet.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<BytesMut>, CodecError> {
        let Some(end) = self.check(buf)? else {
            return Ok(None);
        };
        let mut line = buf.split_to(end);
        buf.advance(1);
        if line.last() == Some(&b'\r') {
            line.truncate(line.len() - 1);
        }
        Ok(Some(line))
    }
}

impl Default for LineCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_LINE)
    }
}

/// Length of a line without a trailing `\r`, which `nc -C` and telnet add.
fn content_len(line: &[u8]) -> usize {
    match line.last() {
        Some(b'\r') => line.len() - 1,
        _ => line.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_line_needs_more_bytes() {
        let codec = LineCodec::new(8);
        let mut buf = BytesMut::from(&b"abc"[..]);
        assert_eq!(codec.decode(&mut buf), Ok(None));
        assert_eq!(&buf[..], b"abc");
    }

    #[test]
    fn lines_are_split_and_crlf_stripped() {
        let codec = LineCodec::new(8);
        let mut buf = BytesMut::from(&b"one\r\ntwo\nthr"[..]);
        assert_eq!(
            codec.decode(&mut buf).unwrap().as_deref(),
            Some(&b"one"[..])
        );
        assert_eq!(
            codec.decode(&mut buf).unwrap().as_deref(),
            Some(&b"two"[..])
        );
        assert_eq!(codec.decode(&mut buf), Ok(None));
        assert_eq!(&buf[..], b"thr");
    }

    #[test]
    fn line_of_exactly_the_limit_is_accepted() {
        let codec = LineCodec::new(4);
        let mut buf = BytesMut::from(&b"abcd\nabcd\r\n"[..]);
        assert_eq!(
            codec.decode(&mut buf).unwrap().as_deref(),
            Some(&b"abcd"[..])
        );
        assert_eq!(
            codec.decode(&mut buf).unwrap().as_deref(),
            Some(&b"abcd"[..])
        );
    }

    #[test]
    fn over_long_line_is_refused_before_its_newline_arrives() {
        let codec = LineCodec::new(4);
        assert_eq!(
            codec.check(b"abcde"),
            Err(CodecError::LineTooLong { limit: 4 })
        );
        assert_eq!(
            codec.check(b"abcde\n"),
            Err(CodecError::LineTooLong { limit: 4 })
        );
        assert_eq!(codec.check(b"abcd"), Ok(None));
        assert_eq!(codec.check(b"abcd\r"), Ok(None));
        assert_eq!(
            codec.check(b"abcdx"),
            Err(CodecError::LineTooLong { limit: 4 })
        );
    }

    #[test]
    fn empty_line_is_a_line() {
        let codec = LineCodec::new(4);
        let mut buf = BytesMut::from(&b"\n"[..]);
        assert_eq!(codec.decode(&mut buf).unwrap().as_deref(), Some(&b""[..]));
        assert!(buf.is_empty());
    }

    #[test]
    fn zero_limit_accepts_only_empty_lines() {
        let codec = LineCodec::new(0);
        assert_eq!(codec.check(b"\n"), Ok(Some(0)));
        assert_eq!(codec.check(b"x"), Err(CodecError::LineTooLong { limit: 0 }));
    }

    proptest::proptest! {
        #[test]
        fn chunking_never_changes_the_lines(
            data in proptest::collection::vec(proptest::sample::select(&b"ab\r\n{}"[..]), 0..300),
            cuts in proptest::collection::vec(1usize..40, 1..20),
            limit in 0usize..20,
        ) {
            let codec = LineCodec::new(limit);
            let whole = decode_all(codec, &[&data[..]]);
            let mut chunks = Vec::new();
            let mut rest = &data[..];
            for cut in cuts.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (chunk, tail) = rest.split_at((*cut).min(rest.len()));
                chunks.push(chunk);
                rest = tail;
            }
            proptest::prop_assert_eq!(decode_all(codec, &chunks), whole);
        }
    }

    /// Feeds `chunks` one at a time; returns the lines and whether it ended in an error.
    fn decode_all(codec: LineCodec, chunks: &[&[u8]]) -> (Vec<Vec<u8>>, bool) {
        let mut buf = BytesMut::new();
        let mut lines = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(line)) => lines.push(line.to_vec()),
                    Ok(None) => break,
                    Err(_) => return (lines, true),
                }
            }
        }
        (lines, false)
    }
}
