//! Cameras through `nokhwa` (V4L2 on Linux): MJPEG or YUYV in, scaled I420 out.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use nokhwa::Camera;
use nokhwa::utils::{
    ApiBackend, CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType,
};
use tracing::{debug, warn};
use zune_jpeg::JpegDecoder;
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;

use super::queue::DropOldestQueue;
use super::{Error, VideoFrame};
use crate::codec::I420Frame;
use crate::probe::WallTime;

/// One camera the system offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraEntry {
    /// The number `camera:INDEX` takes.
    pub index: u32,
    /// Its human-readable name.
    pub name: String,
}

/// The cameras present.
pub(crate) fn cameras() -> Result<Vec<CameraEntry>, Error> {
    let found = nokhwa::query(ApiBackend::Auto).map_err(Error::Camera)?;
    Ok(found
        .iter()
        .enumerate()
        .map(|(i, info)| CameraEntry {
            index: info.index().as_index().unwrap_or(i as u32),
            name: info.human_name(),
        })
        .collect())
}

/// Starts a capture thread for camera `index`; frames are converted to `width` x `height`.
pub(crate) fn open(
    index: Option<u32>,
    width: u32,
    height: u32,
    fps: u32,
    queue: Arc<DropOldestQueue<VideoFrame>>,
    stop: Arc<AtomicBool>,
) -> Result<JoinHandle<()>, Error> {
    let index = match index {
        Some(i) => i,
        None => cameras()?
            .first()
            .map(|c| c.index)
            .ok_or(Error::NoSuchDevice {
                what: "camera",
                name: "any".into(),
            })?,
    };
    let (opened_tx, opened_rx) = std::sync::mpsc::sync_channel(1);
    let handle = std::thread::Builder::new()
        .name(format!("camera-{index}"))
        .spawn(move || {
            let mut camera = match open_camera(index, width, height, fps) {
                Ok(c) => {
                    let _ = opened_tx.send(Ok(()));
                    c
                }
                Err(e) => {
                    let _ = opened_tx.send(Err(e));
                    return;
                }
            };
            let mut number = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let buffer = match camera.frame() {
                    Ok(b) => b,
                    Err(e) => {
                        warn!(error = %e, index, "camera read failed; stopping");
                        break;
                    }
                };
                let captured_at = WallTime::now();
                let res = buffer.resolution();
                match convert(
                    buffer.buffer(),
                    buffer.source_frame_format(),
                    res.width(),
                    res.height(),
                )
                .and_then(|f| f.scaled(width, height).map_err(Error::Codec))
                {
                    Ok(image) => {
                        queue.push(VideoFrame {
                            image,
                            captured_at,
                            number,
                        });
                        number += 1;
                    }
                    Err(e) => warn!(error = %e, "camera frame dropped"),
                }
            }
            let _ = camera.stop_stream();
            queue.close();
        })
        .map_err(Error::Thread)?;
    match opened_rx.recv() {
        Ok(Ok(())) => Ok(handle),
        Ok(Err(e)) => {
            let _ = handle.join();
            Err(e)
        }
        Err(_) => Err(Error::NoSuchDevice {
            what: "camera",
            name: index.to_string(),
        }),
    }
}

fn open_camera(index: u32, width: u32, height: u32, fps: u32) -> Result<Camera, Error> {
    let wanted = CameraFormat::new_from(width, height, FrameFormat::MJPEG, fps);
    let request = RequestedFormat::with_formats(
        RequestedFormatType::Closest(wanted),
        &[FrameFormat::MJPEG, FrameFormat::YUYV, FrameFormat::NV12],
    );
    let mut camera = Camera::new(CameraIndex::Index(index), request).map_err(|e| {
        debug!(error = %e, index, "camera open failed");
        Error::CameraUnavailable { index, source: e }
    })?;
    camera
        .open_stream()
        .map_err(|e| Error::CameraUnavailable { index, source: e })?;
    debug!(index, format = ?camera.camera_format(), "camera streaming");
    Ok(camera)
}

/// Converts one camera buffer to I420 at its own size.
pub fn convert(
    data: &[u8],
    format: FrameFormat,
    width: u32,
    height: u32,
) -> Result<I420Frame, Error> {
    // Odd sizes lose their last column or row.
    let (w, h) = (width & !1, height & !1);
    match format {
        FrameFormat::YUYV => Ok(I420Frame::from_yuyv(
            w,
            h,
            &yuyv_cropped(data, width, w, h),
        )?),
        FrameFormat::NV12 => nv12(data, width, height),
        FrameFormat::MJPEG => {
            let options = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::YCbCr);
            let mut decoder = JpegDecoder::new_with_options(ZCursor::new(data), options);
            let pixels = decoder.decode().map_err(Error::Jpeg)?;
            let info = decoder
                .info()
                .ok_or(Error::CameraFormat("MJPEG without a header"))?;
            let (jw, jh) = (u32::from(info.width), u32::from(info.height));
            let cropped = crop_packed(&pixels, jw, jw & !1, jh & !1, 3);
            Ok(I420Frame::from_ycbcr444(jw & !1, jh & !1, &cropped)?)
        }
        _ => Err(Error::CameraFormat(
            "only MJPEG, YUYV and NV12 cameras are supported",
        )),
    }
}

fn yuyv_cropped(data: &[u8], stride_px: u32, w: u32, h: u32) -> Vec<u8> {
    crop_packed(data, stride_px, w, h, 2)
}

fn crop_packed(data: &[u8], stride_px: u32, w: u32, h: u32, bpp: usize) -> Vec<u8> {
    let (stride, w, h) = (stride_px as usize * bpp, w as usize * bpp, h as usize);
    if stride == w {
        return data.to_vec();
    }
    data.chunks(stride)
        .take(h)
        .flat_map(|row| &row[..w.min(row.len())])
        .copied()
        .collect()
}

fn nv12(data: &[u8], width: u32, height: u32) -> Result<I420Frame, Error> {
    let (w, h) = (width as usize, height as usize);
    if width % 2 == 1 || height % 2 == 1 || data.len() < w * h * 3 / 2 {
        return Err(Error::CameraFormat("truncated or odd-sized NV12 frame"));
    }
    let mut frame = I420Frame::black(width, height)?;
    let (y, u, v) = frame.planes_mut();
    y.copy_from_slice(&data[..w * h]);
    for (i, uv) in data[w * h..w * h * 3 / 2].chunks_exact(2).enumerate() {
        u[i] = uv[0];
        v[i] = uv[1];
    }
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuyv_and_nv12_buffers_convert() {
        let yuyv = [100u8, 90, 100, 170].repeat(2 * 2);
        let frame = convert(&yuyv, FrameFormat::YUYV, 4, 2).unwrap();
        assert!(frame.y().iter().all(|&v| v == 100));
        assert_eq!(frame.u(), &[90, 90]);
        let nv12_data = [1u8, 2, 3, 4, 50, 60];
        let frame = convert(&nv12_data, FrameFormat::NV12, 2, 2).unwrap();
        assert_eq!(frame.as_bytes(), &[1, 2, 3, 4, 50, 60]);
    }

    #[test]
    fn corrupt_mjpeg_and_unknown_formats_are_errors() {
        assert!(
            convert(
                &[0xff, 0xd8, 0xff, 0x00, 1, 2],
                FrameFormat::MJPEG,
                640,
                480
            )
            .is_err()
        );
        assert!(convert(&[0; 12], FrameFormat::GRAY, 4, 3).is_err());
        assert!(convert(&[0; 3], FrameFormat::NV12, 2, 2).is_err());
    }
}
