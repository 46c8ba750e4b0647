//! RTP payload formats: Opus (RFC 7587), redundant audio (RFC 2198) and H.264 (RFC 6184).

pub mod h264;
pub mod opus;
pub mod red;

use thiserror::Error;

/// A payload that breaks its format's rules.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum PayloadError {
    /// An empty payload or frame.
    #[error("empty payload")]
    Empty,
    /// An Opus frame larger than the payload budget.
    #[error("frame of {len} bytes exceeds the payload budget of {max}")]
    TooLarge {
        /// Frame length.
        len: usize,
        /// Budget.
        max: usize,
    },
    /// An H.264 NAL unit type this depacketizer does not handle (STAP-B, MTAP, FU-B).
    #[error("unsupported H.264 NAL unit type {0}")]
    UnsupportedNal(u8),
    /// A STAP-A whose sizes run past the payload.
    #[error("truncated STAP-A aggregate")]
    TruncatedAggregate,
    /// An FU-A fragment without its start, or a new start before the previous end.
    #[error("FU-A fragments out of order")]
    FragmentOrder,
    /// The forbidden_zero_bit is set.
    #[error("H.264 forbidden bit set")]
    ForbiddenBit,
    /// A RED (RFC 2198) header or block that runs past the payload.
    #[error("truncated RED payload")]
    TruncatedRed,
    /// A RED payload with more redundant blocks than [`red::MAX_BLOCKS`].
    #[error("too many RED blocks")]
    TooManyRedBlocks,
}
