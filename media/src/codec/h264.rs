//! H.264 through OpenH264: a real-time camera encoder (constrained baseline, bitrate rate
//! control, frame skipping, MTU-sized slices, forced keyframes) and a decoder that drops
//! everything after a loss until the next keyframe.

use std::time::Duration;

use openh264::decoder::{Decoder, DecoderConfig};
use openh264::encoder::{
    BitRate, Complexity, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, Profile,
    QpRange, RateControlMode, SpsPpsStrategy, UsageType,
};
use openh264::formats::{YUVSlices, YUVSource};
use openh264::{OpenH264API, Timestamp};
use tracing::{debug, trace, warn};

use super::{AccessUnit, Error, I420Frame};

/// NAL unit type of an IDR slice (H.264 Table 7-1).
const NAL_IDR: u8 = 5;
/// NAL unit type of a sequence parameter set.
const NAL_SPS: u8 = 7;

/// H.264 encoder settings, tuned for a live camera call.
#[derive(Clone)]
pub struct H264Config {
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) fps: f32,
    pub(crate) bitrate_bps: u32,
    pub(crate) max_slice_bytes: u32,
    pub(crate) keyframe_interval: u32,
    pub(crate) min_qp: u8,
}

impl Default for H264Config {
    fn default() -> Self {
        Self {
            // VGA at 30 fps: the common webcam mode, cheap enough for two cores.
            width: 640,
            height: 480,
            fps: 30.0,
            // 1 Mbit/s: good VGA quality for talking heads.
            bitrate_bps: 1_000_000,
            // The RTP MTU is 1200 bytes (DESIGN.md); leave room for the RTP header and
            // extensions so most slices travel as single NAL units, not FU-A fragments.
            max_slice_bytes: 1100,
            // A keyframe every 10 s as a safety net; receivers ask with PLI when they need one.
            keyframe_interval: 300,
            // The rate control's choice.
            min_qp: 0,
        }
    }
}

impl H264Config {
    /// Picture size (both even).
    pub fn set_resolution(mut self, width: u32, height: u32) -> Self {
        self.width = width;
        self.height = height;
        self
    }

    /// Frames per second the source delivers.
    pub fn set_fps(mut self, fps: f32) -> Self {
        self.fps = fps;
        self
    }

    /// Target bitrate in bit/s.
    pub fn set_bitrate(mut self, bps: u32) -> Self {
        self.bitrate_bps = bps;
        self
    }

    /// Target largest slice (NAL unit) in bytes.
    pub fn set_max_slice_bytes(mut self, bytes: u32) -> Self {
        self.max_slice_bytes = bytes;
        self
    }

    /// Frames between periodic keyframes; 0 for keyframes on request only.
    pub fn set_keyframe_interval(mut self, frames: u32) -> Self {
        self.keyframe_interval = frames;
        self
    }

    /// OpenH264's QP floor (0-51): the encoder never quantizes finer than this. 0 (the
    /// default) leaves the choice to its rate control.
    pub fn set_min_qp(mut self, qp: u8) -> Self {
        self.min_qp = qp.min(51);
        self
    }

    /// Picture width.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Picture height.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Frames per second.
    pub fn fps(&self) -> f32 {
        self.fps
    }

    /// Builds the encoder.
    pub fn build(&self) -> Result<H264Encoder, Error> {
        H264Encoder::new(self.clone())
    }

    fn openh264(&self, bitrate_bps: u32) -> EncoderConfig {
        EncoderConfig::new()
            .usage_type(UsageType::CameraVideoRealTime)
            // OpenH264's baseline has no FMO/ASO/redundant slices: constrained baseline.
            .profile(Profile::Baseline)
            .rate_control_mode(RateControlMode::Bitrate)
            .bitrate(BitRate::from_bps(bitrate_bps))
            .max_frame_rate(FrameRate::from_hz(self.fps))
            .skip_frames(true)
            .max_slice_len(self.max_slice_bytes)
            .intra_frame_period(IntraFramePeriod::from_num_frames(self.keyframe_interval))
            .sps_pps_strategy(SpsPpsStrategy::ConstantId)
            .complexity(Complexity::Medium)
            .num_threads(1)
            .qp(QpRange::new(self.min_qp, 51))
    }
}

impl std::fmt::Debug for H264Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            width,
            height,
            fps,
            bitrate_bps,
            max_slice_bytes,
            keyframe_interval,
            min_qp,
        } = self;
        f.debug_struct("H264Config")
            .field("width", width)
            .field("height", height)
            .field("fps", fps)
            .field("bitrate_bps", bitrate_bps)
            .field("max_slice_bytes", max_slice_bytes)
            .field("keyframe_interval", keyframe_interval)
            .field("min_qp", min_qp)
            .finish()
    }
}

/// A real-time H.264 encoder producing Annex-B access units.
pub struct H264Encoder {
    inner: Encoder,
    config: H264Config,
    keyframe_requested: bool,
    /// The bitrate the caller asked for, applied before the next frame.
    target_bps: u32,
    /// Frames encoded, the clock of [`H264Encoder::encode`].
    frames: u64,
    out: Vec<u8>,
}

impl H264Encoder {
    /// Creates an encoder.
    pub fn new(config: H264Config) -> Result<Self, Error> {
        I420Frame::black(config.width, config.height)?;
        let inner = open_encoder(&config, config.bitrate_bps)?;
        debug!(?config, "h264 encoder ready");
        Ok(Self {
            inner,
            target_bps: config.bitrate_bps,
            config,
            keyframe_requested: false,
            frames: 0,
            out: Vec::new(),
        })
    }

    /// Encodes one picture, assuming pictures arrive at the configured frame rate.
    /// `Ok(None)` means the rate control skipped this frame.
    pub fn encode(&mut self, frame: &I420Frame) -> Result<Option<AccessUnit>, Error> {
        let at = Duration::from_secs_f64(self.frames as f64 / f64::from(self.config.fps.max(1.0)));
        self.encode_at(frame, at)
    }

    /// Encodes one picture captured at `media_time` (from any fixed origin). The rate control
    /// budgets bits and skips frames by these times, so pass capture times when the source's
    /// pace is irregular (a camera, a queue that dropped frames).
    pub fn encode_at(
        &mut self,
        frame: &I420Frame,
        media_time: Duration,
    ) -> Result<Option<AccessUnit>, Error> {
        if (frame.width(), frame.height()) != (self.config.width, self.config.height) {
            return Err(Error::Dimensions {
                width: frame.width(),
                height: frame.height(),
            });
        }
        self.apply_bitrate()?;
        if self.keyframe_requested {
            self.inner.force_intra_frame();
        }
        let (w, h) = (frame.width() as usize, frame.height() as usize);
        let source = YUVSlices::new((frame.y(), frame.u(), frame.v()), (w, h), (w, w / 2, w / 2));
        let timestamp = Timestamp::from_millis(media_time.as_millis() as u64);
        let bitstream = self.inner.encode_at(&source, timestamp)?;
        self.frames += 1;
        let keyframe = match bitstream.frame_type() {
            FrameType::Skip | FrameType::Invalid => {
                trace!("h264 frame skipped by rate control");
                return Ok(None);
            }
            FrameType::IDR | FrameType::I => true,
            FrameType::P | FrameType::IPMixed => false,
        };
        self.out.clear();
        bitstream.write_vec(&mut self.out);
        if self.out.is_empty() {
            return Ok(None);
        }
        if keyframe {
            self.keyframe_requested = false;
        }
        trace!(bytes = self.out.len(), keyframe, "h264 access unit");
        Ok(Some(AccessUnit {
            data: self.out.clone(),
            keyframe,
        }))
    }

    /// Makes the next encoded frame a keyframe (IDR), e.g. on a PLI from the receiver.
    pub fn request_keyframe(&mut self) {
        self.keyframe_requested = true;
    }

    /// Sets a new target bitrate, applied before the next frame without a keyframe.
    pub fn set_bitrate(&mut self, bps: u32) {
        self.target_bps = bps.max(10_000);
    }

    /// The bitrate the encoder runs at now.
    pub fn bitrate(&self) -> u32 {
        self.config.bitrate_bps
    }

    /// The settings in force.
    pub fn config(&self) -> &H264Config {
        &self.config
    }

    /// Applies a new target: through OpenH264's bitrate option once the encoder runs
    /// (no keyframe), by building it afresh before the first frame (nothing to lose).
    fn apply_bitrate(&mut self) -> Result<(), Error> {
        if self.target_bps == self.config.bitrate_bps {
            return Ok(());
        }
        debug!(
            from = self.config.bitrate_bps,
            to = self.target_bps,
            "h264 bitrate change"
        );
        let applied = self.frames > 0
            && super::h264_raw::set_bitrate(
                &mut self.inner,
                self.config.bitrate_bps,
                self.target_bps,
            )
            .inspect_err(|status| warn!(status, "OpenH264 refused a bitrate; rebuilding"))
            .is_ok();
        if !applied {
            self.inner = open_encoder(&self.config, self.target_bps)?;
        }
        self.config.bitrate_bps = self.target_bps;
        Ok(())
    }
}

/// A fresh OpenH264 encoder for `config` at `bitrate_bps`, its log routed through `tracing`.
fn open_encoder(config: &H264Config, bitrate_bps: u32) -> Result<Encoder, Error> {
    let mut encoder =
        Encoder::with_api_config(OpenH264API::from_source(), config.openh264(bitrate_bps))?;
    if let Err(status) = super::h264_raw::route_log(&mut encoder) {
        // Not fatal: the encoder works, its lines just go to stderr.
        warn!(
            status,
            "OpenH264 refused a trace callback; its log stays on stderr"
        );
    }
    Ok(encoder)
}

impl std::fmt::Debug for H264Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H264Encoder")
            .field("config", &self.config)
            .field("target_bps", &self.target_bps)
            .finish_non_exhaustive()
    }
}

/// An H.264 decoder that resynchronises on keyframes.
///
/// After [`H264Decoder::lost`] or a decode error, delta frames are dropped (they would show
/// smeared garbage) and [`H264Decoder::needs_keyframe`] says so, until a keyframe arrives.
pub struct H264Decoder {
    inner: Decoder,
    awaiting_keyframe: bool,
}

impl H264Decoder {
    /// Creates a decoder; it waits for the first keyframe.
    pub fn new() -> Result<Self, Error> {
        Ok(Self {
            inner: Decoder::with_api_config(OpenH264API::from_source(), DecoderConfig::new())?,
            awaiting_keyframe: true,
        })
    }

    /// Tells the decoder a frame went missing: it drops delta frames until a keyframe.
    pub fn lost(&mut self) {
        if !self.awaiting_keyframe {
            debug!("h264 frame lost: waiting for a keyframe");
        }
        self.awaiting_keyframe = true;
    }

    /// True while the decoder drops frames for want of a keyframe (send a PLI).
    pub fn needs_keyframe(&self) -> bool {
        self.awaiting_keyframe
    }

    /// Decodes one Annex-B access unit. `Ok(None)`: nothing to show yet (no keyframe seen
    /// since a loss, or the decoder buffers). A corrupt access unit is an error, and the
    /// decoder then waits for a keyframe.
    pub fn decode(&mut self, access_unit: &[u8]) -> Result<Option<I420Frame>, Error> {
        if self.awaiting_keyframe {
            if !is_keyframe(access_unit) {
                trace!("h264 delta frame dropped while waiting for a keyframe");
                return Ok(None);
            }
            self.awaiting_keyframe = false;
        }
        let decoded = match self.inner.decode(access_unit) {
            Ok(decoded) => decoded,
            Err(e) => {
                self.awaiting_keyframe = true;
                return Err(Error::H264(e));
            }
        };
        let Some(yuv) = decoded else {
            return Ok(None);
        };
        let (w, h) = yuv.dimensions();
        let (sy, su, sv) = yuv.strides();
        let frame = I420Frame::from_strided(
            w as u32,
            h as u32,
            [yuv.y(), yuv.u(), yuv.v()],
            [sy, su, sv],
        )?;
        Ok(Some(frame))
    }
}

impl std::fmt::Debug for H264Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H264Decoder")
            .field("awaiting_keyframe", &self.awaiting_keyframe)
            .finish_non_exhaustive()
    }
}

/// The NAL units of an Annex-B byte stream, without their start codes.
pub fn nal_units(stream: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = stream;
    std::iter::from_fn(move || {
        let start = find_start_code(rest)?;
        let body = &rest[start..];
        let end = find_start_code(body).map_or(body.len(), |next| {
            // Step back over the start code (and a leading zero of a 4-byte one).
            let mut end = next - 3;
            while end > 0 && body[end - 1] == 0 {
                end -= 1;
            }
            end
        });
        rest = &body[end..];
        Some(&body[..end])
    })
    .filter(|nal| !nal.is_empty())
}

/// True if an Annex-B access unit starts a decodable sequence (it has an IDR slice, or SPS).
pub fn is_keyframe(access_unit: &[u8]) -> bool {
    nal_units(access_unit).any(|nal| matches!(nal[0] & 0x1f, NAL_IDR | NAL_SPS))
}

/// Offset just past the next `00 00 01` start code.
fn find_start_code(data: &[u8]) -> Option<usize> {
    data.windows(3).position(|w| w == [0, 0, 1]).map(|p| p + 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nal_units_split_three_and_four_byte_start_codes() {
        let stream = [
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4,
        ];
        let nals: Vec<&[u8]> = nal_units(&stream).collect();
        assert_eq!(nals, vec![&[0x67, 1, 2][..], &[0x68, 3], &[0x65, 4]]);
        assert!(is_keyframe(&stream));
        assert!(!is_keyframe(&[0, 0, 1, 0x41, 9]));
    }

    #[test]
    fn nal_parser_survives_garbage() {
        for stream in [&[][..], &[0, 0], &[0, 0, 1], &[1, 2, 3, 0, 0, 1, 0, 0, 1]] {
            assert!(!is_keyframe(stream));
            let _ = nal_units(stream).count();
        }
    }

    #[test]
    fn encoder_rejects_frames_of_the_wrong_size() {
        let mut enc = H264Config::default()
            .set_resolution(320, 240)
            .build()
            .unwrap();
        let frame = I420Frame::black(640, 480).unwrap();
        assert!(matches!(enc.encode(&frame), Err(Error::Dimensions { .. })));
    }

    #[test]
    fn decoder_waits_for_a_keyframe_and_rejects_garbage() {
        let mut dec = H264Decoder::new().unwrap();
        assert!(dec.needs_keyframe());
        assert!(dec.decode(&[0, 0, 1, 0x41, 0xff, 0xff]).unwrap().is_none());
        // A claimed IDR full of noise must give an error or nothing, never a panic.
        let noise: Vec<u8> = [0, 0, 0, 1, 0x65]
            .into_iter()
            .chain((0..500).map(|i| (i * 73) as u8))
            .collect();
        let _ = dec.decode(&noise);
    }

    #[test]
    fn a_bitrate_change_needs_no_keyframe() {
        let config = H264Config::default().set_resolution(160, 120);
        let mut enc = config.build().unwrap();
        // Before the first frame the encoder is simply built with the new target.
        enc.set_bitrate(400_000);
        let frame = I420Frame::black(160, 120).unwrap();
        let first = enc
            .encode(&frame)
            .unwrap()
            .expect("a keyframe is never skipped");
        assert!(first.keyframe);
        for bps in [300_000, 1_200_000, 150_000] {
            enc.set_bitrate(bps);
            for _ in 0..3 {
                let au = enc.encode(&frame).unwrap();
                assert!(
                    au.is_none_or(|au| !au.keyframe),
                    "a keyframe at {bps} bit/s"
                );
            }
            assert_eq!(enc.bitrate(), bps);
        }
    }

    /// OpenH264's start-up warning (the wrapper sets both slice limits alike) reaches
    /// `tracing` with target `openh264`, instead of stderr under the status line.
    #[test]
    fn openh264_warnings_go_through_tracing() {
        use std::sync::{Arc, Mutex};
        use tracing_subscriber::fmt::MakeWriter;

        #[derive(Clone, Default)]
        struct Lines(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        impl<'a> MakeWriter<'a> for Lines {
            type Writer = Lines;
            fn make_writer(&'a self) -> Self::Writer {
                self.clone()
            }
        }

        let lines = Lines::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(lines.clone())
            .with_env_filter("openh264=info")
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let mut enc = H264Config::default()
                .set_resolution(160, 120)
                .build()
                .unwrap();
            let frame = I420Frame::black(160, 120).unwrap();
            enc.encode(&frame).unwrap();
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        assert!(
            text.contains("INFO openh264: ParamValidationExt()"),
            "OpenH264's warning as a tracing event: {text:?}"
        );
        assert!(
            !text.contains("[OpenH264] this ="),
            "prefix stripped: {text:?}"
        );
    }
}
