//! Audio: the encoder side with loss feedback, and the decoder side with the probe.

use super::accelerate;
use crate::codec::{self, AudioChannels, AudioDecoder, AudioEncoder, OpusDecoder};
use crate::probe::{AudioMarkerDetector, Detection, MarkerCounts, MarkerSchedule, WallTime};
use crate::session::Playout;

/// The copy of each frame that RFC 2198 redundancy repeats is encoded at this share of
/// the frame's own bitrate (see [`AudioSender::set_copy`]).
pub const COPY_BITRATE_SHARE: f64 = 0.5;
/// The lowest bitrate a copy is encoded at: below it libopus drops to narrowband.
pub const COPY_MIN_BPS: u32 = 12_000;

/// One encoded frame, and its lower-bitrate copy while redundancy wants one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedAudio {
    /// The frame itself, at the configured bitrate.
    pub frame: Vec<u8>,
    /// The same audio from a second encoder at a lower bitrate, for later packets to
    /// repeat (RFC 2198 redundancy).
    pub copy: Option<Vec<u8>>,
}

/// Encodes captured audio for the session and follows the peer's loss reports.
///
/// While the session repeats earlier frames (RFC 2198), a second encoder codes the same
/// audio at [`COPY_BITRATE_SHARE`] of the bitrate, and those copies are what later
/// packets carry. That is the design of Opus's own in-band FEC (LBRR: a lower-rate
/// encoding of the previous frame) and of RFC 2198's secondary encodings, moved one
/// frame further: a frame lost and played from a copy sounds like one repaired by FEC,
/// and the repetition costs half the bytes. The copy encoder runs all the while
/// redundancy is on, so its state follows the audio; it is dropped when it goes off.
#[derive(Debug)]
pub struct AudioSender {
    encoder: AudioEncoder,
    copy: Option<AudioEncoder>,
    loss_percent: u8,
}

impl AudioSender {
    /// Wraps an encoder.
    pub fn new(encoder: AudioEncoder) -> Self {
        Self {
            encoder,
            copy: None,
            loss_percent: 0,
        }
    }

    /// Encodes one frame (and its copy, while one is wanted); `None` when DTX has
    /// nothing to send.
    pub fn encode(&mut self, pcm: &[i16]) -> Result<Option<EncodedAudio>, codec::Error> {
        let Some(frame) = self.encoder.encode(pcm)? else {
            return Ok(None);
        };
        let copy = match &mut self.copy {
            Some(copy) => {
                // In the frame's bandwidth: at half the bitrate libopus would pick a
                // narrower one, and the decoder's switch to it and back disturbed the
                // frames after a repaired one (a timing marker in five was lost).
                copy.match_bandwidth(&frame)?;
                copy.encode(pcm)?
            }
            None => None,
        };
        Ok(Some(EncodedAudio { frame, copy }))
    }

    /// Starts or stops encoding a lower-bitrate copy of each frame (the session asks for
    /// one while it sends redundancy: [`super::Output::AudioCopy`]).
    pub fn set_copy(&mut self, on: bool) -> Result<(), codec::Error> {
        match (on, self.copy.is_some()) {
            (true, false) => {
                let bps = (f64::from(self.encoder.bitrate()) * COPY_BITRATE_SHARE) as u32;
                // The sibling takes the frame encoder's settings, its expected loss too.
                self.copy = Some(self.encoder.sibling_at(bps.max(COPY_MIN_BPS))?);
            }
            (false, true) => self.copy = None,
            _ => {}
        }
        Ok(())
    }

    /// Whether a copy of each frame is encoded.
    pub fn copies(&self) -> bool {
        self.copy.is_some()
    }

    /// Sets the loss the encoder expects, percent: libopus sizes its in-band FEC by it.
    /// The policy that picks the figure lives in [`super::Endpoint`].
    pub fn set_expected_loss(&mut self, percent: u8) -> Result<(), codec::Error> {
        let percent = percent.min(100);
        if percent != self.loss_percent {
            self.encoder.set_packet_loss_percent(percent)?;
            if let Some(copy) = &mut self.copy {
                copy.set_packet_loss_percent(percent)?;
            }
            self.loss_percent = percent;
        }
        Ok(())
    }

    /// Samples per channel in one frame.
    pub fn samples_per_frame(&self) -> usize {
        self.encoder.samples_per_frame()
    }
}

/// What the audio receiver did with each playout slot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct AudioReceiverStats {
    /// Slots decoded from their own packet.
    pub decoded: u64,
    /// Slots recovered from the next packet's in-band FEC.
    pub fec: u64,
    /// Slots concealed (PLC), for loss or for a packet that would not decode.
    pub concealed: u64,
    /// Of `decoded`, slots that played two frames time-compressed into one (the jitter
    /// buffer shedding a frame of delay).
    pub accelerated: u64,
    /// Slots of silence before playout started.
    pub silence: u64,
    /// Packets the decoder refused (corrupt): concealed instead.
    pub decode_errors: u64,
    /// The timing markers' sync bursts found in what was played, by what became of
    /// them (all zero without a marker schedule).
    pub markers: MarkerCounts,
}

/// Decodes what the jitter buffer hands out, slot by slot, and finds timing markers in
/// what is played.
#[derive(Debug)]
pub struct AudioReceiver {
    decoder: AudioDecoder,
    channels: AudioChannels,
    samples_per_frame: usize,
    detector: Option<AudioMarkerDetector>,
    detections: Vec<Detection>,
    stats: AudioReceiverStats,
}

impl AudioReceiver {
    /// A receiver of Opus frames of `samples_per_frame` samples per channel. With the
    /// sender's marker `schedule` (synthetic audio), it measures mouth-to-ear latency.
    pub fn new(
        channels: AudioChannels,
        samples_per_frame: usize,
        schedule: Option<MarkerSchedule>,
    ) -> Result<Self, codec::Error> {
        Ok(Self {
            decoder: AudioDecoder::Opus(OpusDecoder::new(channels)?),
            channels,
            samples_per_frame,
            detector: schedule.map(|s| AudioMarkerDetector::new(s, channels.count())),
            detections: Vec::new(),
            stats: AudioReceiverStats::default(),
        })
    }

    /// Fills `out` (one frame, interleaved) from a playout slot that reaches the listener
    /// at `played_at`.
    pub fn play(&mut self, playout: Playout, out: &mut [i16], played_at: WallTime) {
        let n = self.samples_per_frame;
        tracing::trace!(target: "audio_timing", slot = playout.kind(), "audio slot decoded");
        let decoded = match playout {
            Playout::Frame { data, .. } => {
                self.stats.decoded += 1;
                self.decoder.decode(&data)
            }
            Playout::Fec { next, .. } => {
                self.stats.fec += 1;
                self.decoder.decode_fec(&next, n)
            }
            Playout::Accelerate { data, then, .. } => {
                self.stats.decoded += 1;
                self.stats.accelerated += 1;
                self.accelerate(&data, &then)
            }
            Playout::Conceal => {
                self.stats.concealed += 1;
                self.decoder.conceal(n)
            }
            Playout::Silence => {
                self.stats.silence += 1;
                Ok(Vec::new())
            }
        };
        let pcm = decoded.or_else(|_| {
            self.stats.decode_errors += 1;
            self.stats.concealed += 1;
            self.decoder.conceal(n)
        });
        out.fill(0);
        if let Ok(pcm) = pcm {
            let len = pcm.len().min(out.len());
            out[..len].copy_from_slice(&pcm[..len]);
        }
        if let Some(detector) = &mut self.detector {
            self.detections.extend(detector.push(out, played_at));
        }
    }

    /// Decodes two frames and compresses them into one frame's duration. A frame that
    /// will not decode is counted, and the other is played alone.
    fn accelerate(&mut self, data: &[u8], then: &[u8]) -> Result<Vec<i16>, codec::Error> {
        let first = self.decoder.decode(data);
        let second = self.decoder.decode(then);
        match (first, second) {
            (Ok(mut pcm), Ok(next)) if pcm.len() == self.frame_len() && next.len() == pcm.len() => {
                pcm.extend_from_slice(&next);
                let mut out = vec![0; self.frame_len()];
                accelerate::compress_two_frames(&pcm, self.channels.count(), &mut out);
                Ok(out)
            }
            // Frames of another duration than the slot's: the first is played.
            (Ok(pcm), Ok(_)) => Ok(pcm),
            (Ok(pcm), Err(_)) | (Err(_), Ok(pcm)) => {
                self.stats.decode_errors += 1;
                Ok(pcm)
            }
            (Err(e), Err(_)) => {
                self.stats.decode_errors += 1;
                Err(e)
            }
        }
    }

    /// Interleaved samples in one frame.
    pub fn frame_len(&self) -> usize {
        self.samples_per_frame * self.channels.count()
    }

    /// Markers found so far.
    pub fn detections(&self) -> &[Detection] {
        &self.detections
    }

    /// Slot counters.
    pub fn stats(&self) -> AudioReceiverStats {
        AudioReceiverStats {
            markers: self
                .detector
                .as_ref()
                .map(AudioMarkerDetector::counts)
                .unwrap_or_default(),
            ..self.stats
        }
    }
}
