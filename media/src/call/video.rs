//! Video: the encoder side that follows keyframe requests and the bitrate target, and the
//! decoder side with the probe.

use crate::codec::{self, AccessUnit, H264Decoder, I420Frame, VideoDecoder, VideoEncoder};
use crate::probe::{Detection, VideoMarkerDetector, WallTime};

/// Encodes captured pictures for the session.
#[derive(Debug)]
pub struct VideoSender {
    encoder: VideoEncoder,
    bitrate_bps: u64,
    keyframes_forced: u64,
}

impl VideoSender {
    /// Wraps an encoder that starts at `bitrate_bps`.
    pub fn new(encoder: VideoEncoder, bitrate_bps: u64) -> Self {
        Self {
            encoder,
            bitrate_bps,
            keyframes_forced: 0,
        }
    }

    /// Encodes one picture; `None` when the rate control skips it.
    pub fn encode(&mut self, frame: &I420Frame) -> Result<Option<AccessUnit>, codec::Error> {
        self.encoder.encode(frame)
    }

    /// The peer lost video: the next picture is a keyframe.
    pub fn request_keyframe(&mut self) {
        self.keyframes_forced += 1;
        self.encoder.request_keyframe();
    }

    /// Sets the encoder's bitrate. The policy that decides when a change is worth it
    /// lives in [`super::Endpoint`].
    pub fn set_bitrate(&mut self, bps: u64) {
        if bps != self.bitrate_bps {
            self.bitrate_bps = bps;
            self.encoder
                .set_bitrate(u32::try_from(bps).unwrap_or(u32::MAX));
        }
    }

    /// The bitrate the encoder is set to.
    pub fn bitrate_bps(&self) -> u64 {
        self.bitrate_bps
    }

    /// Keyframes forced on request.
    pub fn keyframes_forced(&self) -> u64 {
        self.keyframes_forced
    }
}

/// What the video receiver did with the frames the session emitted: each one lands in
/// exactly one counter, so their [`total`](Self::total) is the number of units handed
/// to the receiver.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct VideoReceiverStats {
    /// Pictures decoded.
    pub decoded: u64,
    /// Access units the decoder refused (corrupt).
    pub decode_errors: u64,
    /// Delta frames dropped while the decoder waited for a keyframe.
    pub waiting_for_keyframe: u64,
    /// Access units that never reached the decoder (it was behind): the decoder then
    /// waits for a keyframe.
    pub skipped: u64,
    /// Access units the decoder took without giving a picture back.
    pub no_picture: u64,
}

impl VideoReceiverStats {
    /// Access units handed to the receiver: the sum of the counters.
    pub fn total(&self) -> u64 {
        let Self {
            decoded,
            decode_errors,
            waiting_for_keyframe,
            skipped,
            no_picture,
        } = *self;
        decoded + decode_errors + waiting_for_keyframe + skipped + no_picture
    }
}

/// Decodes the access units the session emits and finds timing markers in what is shown.
#[derive(Debug)]
pub struct VideoReceiver {
    decoder: VideoDecoder,
    detector: VideoMarkerDetector,
    detections: Vec<Detection>,
    stats: VideoReceiverStats,
}

impl VideoReceiver {
    /// An H.264 receiver; it shows nothing until the first keyframe.
    pub fn new() -> Result<Self, codec::Error> {
        Ok(Self {
            decoder: VideoDecoder::H264(H264Decoder::new()?),
            detector: VideoMarkerDetector::new(),
            detections: Vec::new(),
            stats: VideoReceiverStats::default(),
        })
    }

    /// Decodes one access unit. `None`: nothing to show (waiting for a keyframe, or the
    /// unit was corrupt, after which the decoder waits for a keyframe).
    pub fn decode(&mut self, access_unit: &[u8]) -> Option<I420Frame> {
        let waiting = self.decoder.needs_keyframe();
        match self.decoder.decode(access_unit) {
            Ok(Some(picture)) => {
                self.stats.decoded += 1;
                Some(picture)
            }
            Ok(None) => {
                if waiting {
                    self.stats.waiting_for_keyframe += 1;
                } else {
                    self.stats.no_picture += 1;
                }
                None
            }
            Err(_) => {
                self.stats.decode_errors += 1;
                self.decoder.lost();
                None
            }
        }
    }

    /// `units` access units were dropped before they reached the decoder: decoding the
    /// next delta frame would smear the picture, so wait for a keyframe.
    pub fn skip(&mut self, units: u64) {
        if units == 0 {
            return;
        }
        self.stats.skipped += units;
        self.decoder.lost();
    }

    /// True while only a keyframe can restart the picture: ask the peer for one.
    pub fn needs_keyframe(&self) -> bool {
        self.decoder.needs_keyframe()
    }

    /// The picture reached the screen (or file) at `shown_at`: look for its marker.
    pub fn shown(&mut self, picture: &I420Frame, shown_at: WallTime) {
        self.detections
            .extend(self.detector.push(picture, shown_at));
    }

    /// Markers found so far.
    pub fn detections(&self) -> &[Detection] {
        &self.detections
    }

    /// Frame counters.
    pub fn stats(&self) -> VideoReceiverStats {
        self.stats
    }
}
