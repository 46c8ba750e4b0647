//! What the safe `openh264` wrapper does not offer, through OpenH264's raw API.
//!
//! **Its log lines go through `tracing`.** OpenH264 prints its warnings to stderr, where
//! they bury the client's status line: the wrapper sets both of OpenH264's slice-size
//! limits to the same value, and every encoder start warns that it "will take
//! uiMaxNalsize". [`route_log`] installs a trace callback before the encoder starts (the
//! only option OpenH264 accepts then), so its lines become `tracing` events with target
//! `openh264`: errors at warn, warnings at info (shown with `-v`), the rest at debug.
//!
//! **Changing a running encoder's bitrate**, without the
//! rebuild (and the keyframe) the safe API needs. As libwebrtc's `H264EncoderImpl::
//! SetRates` does, one `SetOption(ENCODER_OPTION_BITRATE)` with `SPATIAL_LAYER_ALL`
//! sets the target; OpenH264 refuses a target above the layer's maximum (which it
//! derived from the level at start), so the maximum is moved to twice the target first
//! when the target rises, and after it when it falls. This is the crate's only
//! `unsafe` code.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_void};

use openh264::encoder::Encoder;
use openh264_sys2::{
    ENCODER_OPTION, ENCODER_OPTION_BITRATE, ENCODER_OPTION_MAX_BITRATE,
    ENCODER_OPTION_TRACE_CALLBACK, LAYER_NUM, SBitrateInfo, SPATIAL_LAYER_0, SPATIAL_LAYER_ALL,
    WELS_LOG_ERROR, WELS_LOG_WARNING, WelsTraceCallback,
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

/// Sends `encoder`'s log lines to `tracing` instead of stderr. Call it on a fresh encoder:
/// OpenH264 starts (and validates its settings, the source of its warnings) on the first
/// frame. On failure, OpenH264's status code.
pub(super) fn route_log(encoder: &mut Encoder) -> Result<(), c_int> {
    let mut callback: WelsTraceCallback = Some(log_line);
    // SAFETY: as in `set`: `raw_api` hands out the encoder's function table, and the trace
    // callback is not among the parameters the wrapper relies on.
    let raw = unsafe { encoder.raw_api() };
    // SAFETY: OpenH264's `SetOption(ENCODER_OPTION_TRACE_CALLBACK)` reads one
    // `WelsTraceCallback` through the pointer, before or after initialisation
    // (welsEncoderExt.cpp), and keeps the function pointer, which is `'static`.
    let status =
        unsafe { raw.set_option(ENCODER_OPTION_TRACE_CALLBACK, (&raw mut callback).cast()) };
    if status == 0 { Ok(()) } else { Err(status) }
}

/// OpenH264's trace callback: one formatted line, NUL-terminated, prefixed with
/// `[OpenH264] this = 0x…, Warning:` and the like.
unsafe extern "C" fn log_line(_context: *mut c_void, level: c_int, line: *const c_char) {
    if line.is_null() {
        return;
    }
    // SAFETY: OpenH264 passes its own NUL-terminated buffer (`WelsVsnprintf` into
    // `MAX_LOG_SIZE` bytes), valid for the duration of the call.
    let line = unsafe { CStr::from_ptr(line) }.to_string_lossy();
    let text = log_text(&line);
    if level <= WELS_LOG_ERROR as c_int {
        tracing::warn!(target: "openh264", "{text}");
    } else if level <= WELS_LOG_WARNING as c_int {
        tracing::info!(target: "openh264", "{text}");
    } else {
        tracing::debug!(target: "openh264", "{text}");
    }
}

/// The message without OpenH264's prefix (its instance pointer and the level word).
fn log_text(line: &str) -> &str {
    line.strip_prefix("[OpenH264] this = ")
        .and_then(|rest| rest.split_once(':'))
        .map_or(line, |(_, text)| text)
        .trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_goes_and_the_message_stays() {
        assert_eq!(
            log_text("[OpenH264] this = 0x0x7f99, Warning:ParamValidationExt(), slice mode"),
            "ParamValidationExt(), slice mode"
        );
        assert_eq!(log_text("no prefix: kept whole"), "no prefix: kept whole");
        assert_eq!(
            log_text("[OpenH264] this = 0x1 no colon"),
            "[OpenH264] this = 0x1 no colon"
        );
    }
}
