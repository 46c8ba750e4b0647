//! The crate-level error: one variant per core module error, built with `From`.
//!
//! It names no edge: `codec`, `devices` and `probe` errors stay in their own enums
//! (`codec::Error`, `devices::Error`, `probe::Error`), so the core builds without them.

use thiserror::Error as ThisError;

use crate::payload::PayloadError;
use crate::wire::WireError;

/// Any error from the media core.
#[derive(Debug, ThisError)]
#[non_exhaustive]
pub enum Error {
    /// A datagram could not be parsed or built.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// A payload broke its format's rules.
    #[error(transparent)]
    Payload(#[from] PayloadError),
    /// The session refused a call (no path yet, an agreement that does not fit).
    #[error(transparent)]
    Session(#[from] crate::session::SessionError),
    /// `send_video` on a session configured without video.
    #[error("this session carries no video")]
    VideoDisabled,
}
