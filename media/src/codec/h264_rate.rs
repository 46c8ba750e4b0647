//! Changing a running OpenH264 encoder's bitrate through its raw API, without the
//! rebuild (and the keyframe) the safe API needs. As libwebrtc's `H264EncoderImpl::
//! SetRates` does, one `SetOption(ENCODER_OPTION_BITRATE)` with `SPATIAL_LAYER_ALL`
//! sets the target; OpenH264 refuses a target above the layer's maximum (which it
//! derived from the level at start), so the maximum is moved to twice the target first
//! when the target rises, and after it when it falls. This is the crate's only
//! `unsafe` code.
#![allow(unsafe_code)]

use std::os::raw::c_int;

use openh264::encoder::Encoder;
use openh264_sys2::{
    ENCODER_OPTION, ENCODER_OPTION_BITRATE, ENCODER_OPTION_MAX_BITRATE, LAYER_NUM, SBitrateInfo,
    SPATIAL_LAYER_0, SPATIAL_LAYER_ALL,
};

/// Moves the target bitrate of `encoder` from `from` to `to` bits per second. The
/// encoder must have encoded a frame already (the wrapper initialises OpenH264 lazily,
/// on the first frame). On failure, OpenH264's status code.
pub(super) fn set_bitrate(encoder: &mut Encoder, from: u32, to: u32) -> Result<(), c_int> {
    let target = (ENCODER_OPTION_BITRATE, SPATIAL_LAYER_ALL, to);
    let max = (
        ENCODER_OPTION_MAX_BITRATE,
        SPATIAL_LAYER_0,
        to.saturating_mul(2),
    );
    let order = if to > from {
        [max, target]
    } else {
        [target, max]
    };
    for (option, layer, bps) in order {
        set(encoder, option, layer, bps)?;
    }
    Ok(())
}

fn set(
    encoder: &mut Encoder,
    option: ENCODER_OPTION,
    layer: LAYER_NUM,
    bps: u32,
) -> Result<(), c_int> {
    let mut info = SBitrateInfo {
        iLayer: layer,
        iBitrate: c_int::try_from(bps).unwrap_or(c_int::MAX),
    };
    // SAFETY: `raw_api` only hands out the encoder's function table; the wrapper asks
    // that callers not change parameters it relies on (dimensions, data format, trace
    // level). Bitrates are not among them: the wrapper reads its own config only when it
    // reinitialises for new dimensions, which our encoder never has.
    let raw = unsafe { encoder.raw_api() };
    // SAFETY: the encoder was initialised by the frame the caller encoded; `info` is a
    // valid `SBitrateInfo` that outlives the call, which is what OpenH264's `SetOption`
    // reads through the pointer for both bitrate options (codec_api.h).
    let status = unsafe { raw.set_option(option, (&raw mut info).cast()) };
    if status == 0 { Ok(()) } else { Err(status) }
}
