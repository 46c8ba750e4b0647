//! Audio and video codecs: Opus and H.264, behind closed enums.
//!
//! Contract with the RTP packetizers: an encoded Opus packet is an opaque byte vector
//! holding one frame; an encoded H.264 frame is an [`AccessUnit`], an Annex-B byte
//! stream (NAL units behind `00 00 00 01` start codes) with a keyframe flag. Raw audio is
//! interleaved `i16` at 48 kHz; raw video is [`I420Frame`](crate::codec::I420Frame).
//!
//! [`AccessUnit`]: crate::codec::AccessUnit

mod frame;
mod h264;
mod h264_raw;
mod opus;

use std::fmt;
use std::str::FromStr;

pub use self::frame::{I420Frame, snr_db};
pub use self::h264::{H264Config, H264Decoder, H264Encoder, is_keyframe, nal_units};
pub use self::opus::{AudioChannels, FrameDuration, OpusConfig, OpusDecoder, OpusEncoder};

/// The one sample rate of raw audio in Magpie (Opus's native rate).
pub const SAMPLE_RATE: u32 = 48_000;

/// Errors from the codecs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// libopus refused a call.
    #[error("opus: {0}")]
    Opus(#[from] ::opus::Error),
    /// OpenH264 refused a call or a bitstream.
    #[error("h264: {0}")]
    H264(#[from] ::openh264::Error),
    /// A buffer had the wrong length for its frame.
    #[error("wrong frame size: expected {expected}, got {actual}")]
    FrameSize {
        /// The length required.
        expected: usize,
        /// The length given.
        actual: usize,
    },
    /// A picture size that is zero, odd, too large, or not the configured one.
    #[error("unsupported picture size {width}x{height}")]
    Dimensions {
        /// Width given.
        width: u32,
        /// Height given.
        height: u32,
    },
    /// An empty packet was given to decode (a loss is signalled with `conceal`).
    #[error("empty packet")]
    EmptyPacket,
    /// A codec name that is not one of ours.
    #[error("unknown codec {0:?} (expected opus or h264)")]
    UnknownCodec(String),
}

/// One encoded video frame: an Annex-B byte stream with its keyframe flag.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessUnit {
    /// NAL units, each behind a start code.
    pub data: Vec<u8>,
    /// True for an IDR frame (with SPS and PPS in front): decodable on its own.
    pub keyframe: bool,
}

impl fmt::Debug for AccessUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessUnit")
            .field("bytes", &self.data.len())
            .field("keyframe", &self.keyframe)
            .finish()
    }
}

/// The audio codecs Magpie speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioCodec {
    /// Opus (RFC 6716).
    Opus,
}

/// The video codecs Magpie speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoCodec {
    /// H.264 constrained baseline.
    H264,
}

impl FromStr for AudioCodec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_lowercase().as_str() {
            "opus" => Ok(Self::Opus),
            _ => Err(Error::UnknownCodec(s.to_owned())),
        }
    }
}

impl FromStr for VideoCodec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_lowercase().as_str() {
            "h264" | "h.264" | "avc" => Ok(Self::H264),
            _ => Err(Error::UnknownCodec(s.to_owned())),
        }
    }
}

/// An audio encoder of any codec Magpie speaks.
#[derive(Debug)]
pub enum AudioEncoder {
    /// Opus.
    Opus(OpusEncoder),
}

impl AudioEncoder {
    /// Encodes one frame; `None` when nothing need be sent (DTX).
    pub fn encode(&mut self, pcm: &[i16]) -> Result<Option<Vec<u8>>, Error> {
        match self {
            Self::Opus(e) => e.encode(pcm),
        }
    }

    /// Feeds the packet loss reported by the receiver to the codec's redundancy.
    pub fn set_packet_loss_percent(&mut self, percent: u8) -> Result<(), Error> {
        match self {
            Self::Opus(e) => e.set_packet_loss_percent(percent),
        }
    }

    /// Changes the target bitrate.
    pub fn set_bitrate(&mut self, bps: u32) -> Result<(), Error> {
        match self {
            Self::Opus(e) => e.set_bitrate(bps),
        }
    }

    /// Interleaved samples one frame takes.
    pub fn samples_per_frame(&self) -> usize {
        match self {
            Self::Opus(e) => e.samples_per_frame(),
        }
    }

    /// The target bitrate, bits per second.
    pub fn bitrate(&self) -> u32 {
        match self {
            Self::Opus(e) => e.config().bitrate_bps,
        }
    }

    /// A new encoder with this one's settings but a target of `bps` bits per second.
    pub fn sibling_at(&self, bps: u32) -> Result<Self, Error> {
        match self {
            Self::Opus(e) => Ok(Self::Opus(e.config().clone().set_bitrate(bps).build()?)),
        }
    }

    /// Codes the next frames in the audio bandwidth of `packet`, another encoder's
    /// output of the same audio (see [`OpusEncoder::match_bandwidth`]).
    pub fn match_bandwidth(&mut self, packet: &[u8]) -> Result<(), Error> {
        match self {
            Self::Opus(e) => e.match_bandwidth(packet),
        }
    }

    /// Which codec this is.
    pub fn codec(&self) -> AudioCodec {
        match self {
            Self::Opus(_) => AudioCodec::Opus,
        }
    }
}

/// An audio decoder of any codec Magpie speaks.
#[derive(Debug)]
pub enum AudioDecoder {
    /// Opus.
    Opus(OpusDecoder),
}

impl AudioDecoder {
    /// Decodes one packet.
    pub fn decode(&mut self, packet: &[u8]) -> Result<Vec<i16>, Error> {
        match self {
            Self::Opus(d) => d.decode(packet),
        }
    }

    /// Recovers the lost frame before `next_packet` from its redundancy.
    pub fn decode_fec(
        &mut self,
        next_packet: &[u8],
        lost_samples: usize,
    ) -> Result<Vec<i16>, Error> {
        match self {
            Self::Opus(d) => d.decode_fec(next_packet, lost_samples),
        }
    }

    /// Conceals a lost frame.
    pub fn conceal(&mut self, lost_samples: usize) -> Result<Vec<i16>, Error> {
        match self {
            Self::Opus(d) => d.conceal(lost_samples),
        }
    }
}

/// A video encoder of any codec Magpie speaks.
#[derive(Debug)]
pub enum VideoEncoder {
    /// H.264.
    H264(H264Encoder),
}

impl VideoEncoder {
    /// Encodes one picture; `None` when rate control skipped it.
    pub fn encode(&mut self, frame: &I420Frame) -> Result<Option<AccessUnit>, Error> {
        match self {
            Self::H264(e) => e.encode(frame),
        }
    }

    /// Encodes one picture captured at `media_time`; `None` when rate control skipped it.
    pub fn encode_at(
        &mut self,
        frame: &I420Frame,
        media_time: std::time::Duration,
    ) -> Result<Option<AccessUnit>, Error> {
        match self {
            Self::H264(e) => e.encode_at(frame, media_time),
        }
    }

    /// Makes the next frame a keyframe.
    pub fn request_keyframe(&mut self) {
        match self {
            Self::H264(e) => e.request_keyframe(),
        }
    }

    /// Sets the target bitrate.
    pub fn set_bitrate(&mut self, bps: u32) {
        match self {
            Self::H264(e) => e.set_bitrate(bps),
        }
    }

    /// Which codec this is.
    pub fn codec(&self) -> VideoCodec {
        match self {
            Self::H264(_) => VideoCodec::H264,
        }
    }
}

/// A video decoder of any codec Magpie speaks.
#[derive(Debug)]
pub enum VideoDecoder {
    /// H.264.
    H264(H264Decoder),
}

impl VideoDecoder {
    /// Decodes one access unit.
    pub fn decode(&mut self, access_unit: &[u8]) -> Result<Option<I420Frame>, Error> {
        match self {
            Self::H264(d) => d.decode(access_unit),
        }
    }

    /// Signals a lost frame: decoding resumes at the next keyframe.
    pub fn lost(&mut self) {
        match self {
            Self::H264(d) => d.lost(),
        }
    }

    /// True while waiting for a keyframe.
    pub fn needs_keyframe(&self) -> bool {
        match self {
            Self::H264(d) => d.needs_keyframe(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_names_parse_case_insensitively() {
        assert_eq!("Opus".parse::<AudioCodec>().unwrap(), AudioCodec::Opus);
        assert_eq!("H264".parse::<VideoCodec>().unwrap(), VideoCodec::H264);
        let err = "vp8".parse::<VideoCodec>().unwrap_err();
        assert!(err.to_string().contains("vp8"));
    }
}
