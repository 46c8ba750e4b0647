//! Opus (RFC 6716) through libopus: a VoIP encoder with in-band FEC and optional DTX, and a
//! decoder that recovers a lost frame from the FEC in the next packet or conceals it (PLC).

use opus::{Application, Bitrate, Channels, Signal};
use tracing::debug;

use super::{Error, SAMPLE_RATE};

/// The largest Opus packet libopus emits for one frame (RFC 6716 §3.4: 1275 bytes).
const MAX_PACKET: usize = 1275;
/// A packet this short from an encoder in DTX carries no audio and need not be sent
/// (libopus documentation of `opus_encode`).
const DTX_PACKET_MAX: usize = 2;

/// Channel layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioChannels {
    /// One channel: voice calls.
    Mono,
    /// Two interleaved channels.
    Stereo,
}

impl AudioChannels {
    /// The number of channels.
    pub fn count(self) -> usize {
        match self {
            Self::Mono => 1,
            Self::Stereo => 2,
        }
    }

    fn opus(self) -> Channels {
        match self {
            Self::Mono => Channels::Mono,
            Self::Stereo => Channels::Stereo,
        }
    }
}

/// Duration of one Opus frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameDuration {
    /// 10 ms: lower latency, more packet overhead.
    Ms10,
    /// 20 ms: the usual VoIP choice.
    Ms20,
}

impl FrameDuration {
    /// Samples per channel in one frame at 48 kHz.
    pub fn samples(self) -> usize {
        match self {
            Self::Ms10 => SAMPLE_RATE as usize / 100,
            Self::Ms20 => SAMPLE_RATE as usize / 50,
        }
    }

    /// The frame length as a `Duration`.
    pub fn duration(self) -> std::time::Duration {
        match self {
            Self::Ms10 => std::time::Duration::from_millis(10),
            Self::Ms20 => std::time::Duration::from_millis(20),
        }
    }
}

/// Opus encoder settings.
#[derive(Clone)]
pub struct OpusConfig {
    pub(crate) channels: AudioChannels,
    pub(crate) frame: FrameDuration,
    pub(crate) bitrate_bps: u32,
    pub(crate) fec: bool,
    pub(crate) packet_loss_percent: u8,
    pub(crate) dtx: bool,
    pub(crate) complexity: u8,
}

impl Default for OpusConfig {
    fn default() -> Self {
        Self {
            // Voice: one channel.
            channels: AudioChannels::Mono,
            // 20 ms: RFC 7587 §4.2's recommendation, half the packets of 10 ms.
            frame: FrameDuration::Ms20,
            // 32 kbit/s: super-wideband voice with room for the LBRR (FEC) copy.
            bitrate_bps: 32_000,
            // In-band FEC repairs a single loss within one packet interval (DESIGN.md).
            fec: true,
            // libopus sends no FEC at 0 %; start at 5 % until receiver reports say better.
            packet_loss_percent: 5,
            // DTX saves bandwidth in silence but makes gaps; off unless asked.
            dtx: false,
            // 9 of 10: near-best quality for a few percent of one core.
            complexity: 9,
        }
    }
}

impl OpusConfig {
    /// Mono or stereo.
    pub fn set_channels(mut self, channels: AudioChannels) -> Self {
        self.channels = channels;
        self
    }

    /// 10 or 20 ms frames.
    pub fn set_frame(mut self, frame: FrameDuration) -> Self {
        self.frame = frame;
        self
    }

    /// Target bitrate in bit/s (libopus accepts 500..=512000).
    pub fn set_bitrate(mut self, bps: u32) -> Self {
        self.bitrate_bps = bps;
        self
    }

    /// In-band FEC on or off.
    pub fn set_fec(mut self, fec: bool) -> Self {
        self.fec = fec;
        self
    }

    /// The expected packet loss, 0..=100, which sizes the FEC.
    pub fn set_packet_loss_percent(mut self, percent: u8) -> Self {
        self.packet_loss_percent = percent.min(100);
        self
    }

    /// Discontinuous transmission in silence.
    pub fn set_dtx(mut self, dtx: bool) -> Self {
        self.dtx = dtx;
        self
    }

    /// Encoder complexity 0..=10.
    pub fn set_complexity(mut self, complexity: u8) -> Self {
        self.complexity = complexity.min(10);
        self
    }

    /// The channel layout.
    pub fn channels(&self) -> AudioChannels {
        self.channels
    }

    /// The frame duration.
    pub fn frame(&self) -> FrameDuration {
        self.frame
    }

    /// Builds the encoder.
    pub fn build(&self) -> Result<OpusEncoder, Error> {
        OpusEncoder::new(self.clone())
    }
}

impl std::fmt::Debug for OpusConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            channels,
            frame,
            bitrate_bps,
            fec,
            packet_loss_percent,
            dtx,
            complexity,
        } = self;
        f.debug_struct("OpusConfig")
            .field("channels", channels)
            .field("frame", frame)
            .field("bitrate_bps", bitrate_bps)
            .field("fec", fec)
            .field("packet_loss_percent", packet_loss_percent)
            .field("dtx", dtx)
            .field("complexity", complexity)
            .finish()
    }
}

/// An Opus encoder: 48 kHz, VoIP application, one frame in, one packet out.
pub struct OpusEncoder {
    inner: opus::Encoder,
    config: OpusConfig,
    /// The bandwidth forced by [`OpusEncoder::match_bandwidth`], if any.
    bandwidth: Option<opus::Bandwidth>,
    out: Vec<u8>,
}

impl OpusEncoder {
    /// Creates an encoder from its settings.
    pub fn new(config: OpusConfig) -> Result<Self, Error> {
        let mut inner = opus::Encoder::new(SAMPLE_RATE, config.channels.opus(), Application::Voip)?;
        inner.set_bitrate(Bitrate::Bits(config.bitrate_bps as i32))?;
        inner.set_inband_fec(config.fec)?;
        inner.set_packet_loss_perc(i32::from(config.packet_loss_percent))?;
        inner.set_dtx(config.dtx)?;
        inner.set_complexity(i32::from(config.complexity))?;
        inner.set_signal(Signal::Voice)?;
        inner.set_vbr(true)?;
        inner.set_vbr_constraint(true)?;
        debug!(?config, "opus encoder ready");
        Ok(Self {
            inner,
            config,
            bandwidth: None,
            out: vec![0; MAX_PACKET],
        })
    }

    /// Encodes exactly one frame of interleaved 48 kHz samples.
    ///
    /// Returns `None` when the encoder is in DTX and the packet carries no audio: the caller
    /// sends nothing for this frame, and the receiver conceals or plays comfort noise.
    pub fn encode(&mut self, pcm: &[i16]) -> Result<Option<Vec<u8>>, Error> {
        let expected = self.samples_per_frame();
        if pcm.len() != expected {
            return Err(Error::FrameSize {
                expected,
                actual: pcm.len(),
            });
        }
        let len = self.inner.encode(pcm, &mut self.out)?;
        if self.config.dtx && len <= DTX_PACKET_MAX {
            return Ok(None);
        }
        Ok(Some(self.out[..len].to_vec()))
    }

    /// Feeds the loss seen by the receiver (from RTCP receiver reports) to the FEC.
    pub fn set_packet_loss_percent(&mut self, percent: u8) -> Result<(), Error> {
        let percent = percent.min(100);
        if percent != self.config.packet_loss_percent {
            self.inner.set_packet_loss_perc(i32::from(percent))?;
            self.config.packet_loss_percent = percent;
            debug!(percent, "opus expected loss changed");
        }
        Ok(())
    }

    /// Codes the next frames in the audio bandwidth of `packet` (an Opus packet of
    /// another encoder of the same audio), whatever this encoder's bitrate would pick.
    /// A decoder that plays this encoder's frame between the other's then does not
    /// switch bandwidth for it (a switch disturbs the frames after it).
    pub fn match_bandwidth(&mut self, packet: &[u8]) -> Result<(), Error> {
        let bandwidth = opus::packet::get_bandwidth(packet)?;
        if self.bandwidth != Some(bandwidth) {
            self.inner.set_bandwidth(bandwidth)?;
            self.bandwidth = Some(bandwidth);
        }
        Ok(())
    }

    /// Changes the target bitrate.
    pub fn set_bitrate(&mut self, bps: u32) -> Result<(), Error> {
        self.inner.set_bitrate(Bitrate::Bits(bps as i32))?;
        self.config.bitrate_bps = bps;
        Ok(())
    }

    /// Interleaved samples in one frame (per-channel samples times channels).
    pub fn samples_per_frame(&self) -> usize {
        self.config.frame.samples() * self.config.channels.count()
    }

    /// The encoder's look-ahead in samples per channel: part of the codec's algorithmic delay.
    pub fn lookahead(&mut self) -> Result<usize, Error> {
        Ok(self.inner.get_lookahead()?.max(0) as usize)
    }

    /// The settings in force.
    pub fn config(&self) -> &OpusConfig {
        &self.config
    }
}

impl std::fmt::Debug for OpusEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusEncoder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// An Opus decoder at 48 kHz.
pub struct OpusDecoder {
    inner: opus::Decoder,
    channels: AudioChannels,
    /// Per-channel samples in the last frame decoded, the default length to conceal.
    last_frame: usize,
    buf: Vec<i16>,
}

impl OpusDecoder {
    /// The longest frame Opus can carry: 120 ms at 48 kHz, per channel.
    const MAX_FRAME: usize = 5760;

    /// Creates a decoder.
    pub fn new(channels: AudioChannels) -> Result<Self, Error> {
        Ok(Self {
            inner: opus::Decoder::new(SAMPLE_RATE, channels.opus())?,
            channels,
            last_frame: FrameDuration::Ms20.samples(),
            buf: vec![0; Self::MAX_FRAME * channels.count()],
        })
    }

    /// Decodes one packet into interleaved samples.
    pub fn decode(&mut self, packet: &[u8]) -> Result<Vec<i16>, Error> {
        if packet.is_empty() {
            return Err(Error::EmptyPacket);
        }
        let n = self.inner.decode(packet, &mut self.buf, false)?;
        self.last_frame = n;
        Ok(self.buf[..n * self.channels.count()].to_vec())
    }

    /// Recovers the frame lost just before `next_packet` from the FEC that packet carries.
    ///
    /// `lost_samples` is the lost frame's duration in samples per channel (480 for 10 ms,
    /// 960 for 20 ms). When `next_packet` carries no FEC, libopus conceals instead. Decode
    /// `next_packet` normally afterwards.
    pub fn decode_fec(
        &mut self,
        next_packet: &[u8],
        lost_samples: usize,
    ) -> Result<Vec<i16>, Error> {
        self.check_len(lost_samples)?;
        if next_packet.is_empty() {
            return Err(Error::EmptyPacket);
        }
        let len = lost_samples * self.channels.count();
        let n = self.inner.decode(next_packet, &mut self.buf[..len], true)?;
        Ok(self.buf[..n * self.channels.count()].to_vec())
    }

    /// Conceals a lost frame of `lost_samples` per channel (packet loss concealment).
    pub fn conceal(&mut self, lost_samples: usize) -> Result<Vec<i16>, Error> {
        self.check_len(lost_samples)?;
        let len = lost_samples * self.channels.count();
        let n = self.inner.decode(&[], &mut self.buf[..len], false)?;
        Ok(self.buf[..n * self.channels.count()].to_vec())
    }

    /// Per-channel samples in the last frame decoded (the natural length to conceal).
    pub fn last_frame_samples(&self) -> usize {
        self.last_frame
    }

    /// The channel layout.
    pub fn channels(&self) -> AudioChannels {
        self.channels
    }

    fn check_len(&self, samples: usize) -> Result<(), Error> {
        // Opus frames are whole multiples of 2.5 ms (120 samples at 48 kHz).
        if samples == 0 || samples > Self::MAX_FRAME || !samples.is_multiple_of(120) {
            return Err(Error::FrameSize {
                expected: self.last_frame,
                actual: samples,
            });
        }
        Ok(())
    }
}

impl std::fmt::Debug for OpusDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusDecoder")
            .field("channels", &self.channels)
            .field("last_frame", &self.last_frame)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(n: usize, channels: usize) -> Vec<i16> {
        (0..n * channels)
            .map(|i| ((i / channels) as f32 * 440.0 * std::f32::consts::TAU / 48_000.0).sin())
            .map(|s| (s * 8000.0) as i16)
            .collect()
    }

    #[test]
    fn wrong_frame_length_is_a_typed_error() {
        let mut enc = OpusConfig::default().build().unwrap();
        let err = enc.encode(&[0; 100]).unwrap_err();
        assert!(matches!(
            err,
            Error::FrameSize {
                expected: 960,
                actual: 100
            }
        ));
    }

    #[test]
    fn stereo_ten_millisecond_frames_round_trip() {
        let config = OpusConfig::default()
            .set_channels(AudioChannels::Stereo)
            .set_frame(FrameDuration::Ms10);
        let mut enc = config.build().unwrap();
        let mut dec = OpusDecoder::new(AudioChannels::Stereo).unwrap();
        let pcm = sine(480, 2);
        let packet = enc.encode(&pcm).unwrap().unwrap();
        assert_eq!(dec.decode(&packet).unwrap().len(), 960);
        assert_eq!(dec.last_frame_samples(), 480);
    }

    #[test]
    fn garbage_packets_are_errors_not_panics() {
        let mut dec = OpusDecoder::new(AudioChannels::Mono).unwrap();
        for packet in [&[0xff_u8; 3][..], &[0x03, 0xff], &[]] {
            assert!(dec.decode(packet).is_err(), "{packet:?}");
        }
        assert!(dec.conceal(7).is_err());
        assert!(dec.conceal(960).is_ok());
    }

    #[test]
    fn dtx_suppresses_packets_in_silence() {
        let mut enc = OpusConfig::default().set_dtx(true).build().unwrap();
        let silence = vec![0i16; 960];
        let sent = (0..50)
            .filter(|_| enc.encode(&silence).unwrap().is_some())
            .count();
        assert!(sent < 25, "{sent} of 50 silent frames were sent");
    }
}
