//! Audio: the encoder side with loss feedback, and the decoder side with the probe.

use crate::codec::{self, AudioChannels, AudioDecoder, AudioEncoder, OpusDecoder};
use crate::probe::{AudioMarkerDetector, Detection, MarkerSchedule, WallTime};
use crate::session::Playout;

/// Encodes captured audio for the session and follows the peer's loss reports.
#[derive(Debug)]
pub struct AudioSender {
    encoder: AudioEncoder,
    loss_percent: u8,
}

impl AudioSender {
    /// Wraps an encoder.
    pub fn new(encoder: AudioEncoder) -> Self {
        Self {
            encoder,
            loss_percent: 0,
        }
    }

    /// Encodes one frame; `None` when DTX has nothing to send.
    pub fn encode(&mut self, pcm: &[i16]) -> Result<Option<Vec<u8>>, codec::Error> {
        self.encoder.encode(pcm)
    }

    /// Sets the loss the encoder expects, percent: libopus sizes its in-band FEC by it.
    /// The policy that picks the figure lives in [`super::Endpoint`].
    pub fn set_expected_loss(&mut self, percent: u8) -> Result<(), codec::Error> {
        let percent = percent.min(100);
        if percent != self.loss_percent {
            self.encoder.set_packet_loss_percent(percent)?;
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
    /// Slots of silence before playout started.
    pub silence: u64,
    /// Packets the decoder refused (corrupt): concealed instead.
    pub decode_errors: u64,
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
        let decoded = match playout {
            Playout::Frame { data, .. } => {
                self.stats.decoded += 1;
                self.decoder.decode(&data)
            }
            Playout::Fec { next, .. } => {
                self.stats.fec += 1;
                self.decoder.decode_fec(&next, n)
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
        self.stats
    }
}
