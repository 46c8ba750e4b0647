//! Playout buffers: the adaptive audio jitter buffer and the video frame buffer.

pub mod audio;
pub mod video;
