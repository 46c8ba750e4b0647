//! The `magpie` client: places and answers calls, wiring a signaling connection,
//! one UDP socket, the media session, the codecs and the devices together.

pub mod candidates;
pub mod cli;
pub mod config;
pub mod connectivity;
pub mod offer;
