//! The crate-level error: one variant per module error, built with `From`.

use thiserror::Error as ThisError;

use crate::payload::PayloadError;
use crate::wire::WireError;

/// Any error from the media crate.
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
    /// A codec failed.
    #[error(transparent)]
    Codec(#[from] crate::codec::Error),
    /// A source or sink failed.
    #[error(transparent)]
    Device(#[from] crate::devices::Error),
    /// A timing probe could not be set up.
    #[error(transparent)]
    Probe(#[from] crate::probe::Error),
}
