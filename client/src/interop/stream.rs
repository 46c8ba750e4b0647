//! `magpie stream`: capture, encode and send plain RTP to HOST:PORT (audio) and
//! HOST:PORT+2 (video), and write the SDP that describes it.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime};

use magpie_media::call::{AudioSender, VideoSender};
use magpie_media::codec::{AudioEncoder, H264Config, H264Encoder, OpusConfig, VideoEncoder};
use magpie_media::devices::{
    AudioCapture, AudioCaptureConfig, AudioSourceSpec, VideoCapture, VideoCaptureConfig,
    VideoSourceSpec,
};
use magpie_media::probe::WallTime;
use magpie_media::sdp::{Codec, Media, MediaKind, Sdp};
use magpie_media::types::Pt;
use magpie_media::{Session, SessionConfig};
use tokio::net::UdpSocket;
use tracing::{debug, warn};

use super::{Error, PLAIN_WARNING, StreamArgs, one_way, rtcp_destination, silent_track};
use crate::engine::pipeline::{Encoded, Parts, Pipeline};
use crate::engine::{audio_format, instant_of, now, recv_opt, wall_micros};

/// Payload types in the description: 111 for Opus as browsers use, 96 for H.264.
const AUDIO_PT: u8 = 111;
const VIDEO_PT: u8 = 96;

/// One medium on its way out: its session and where its RTP and RTCP go.
struct Outgoing {
    session: Session,
    rtp: SocketAddr,
    rtcp: SocketAddr,
    sent: u64,
}

/// Runs `magpie stream` until Ctrl-C, `--duration` or the end of every file source.
pub async fn stream(args: &StreamArgs) -> Result<(), Error> {
    let settings = crate::cli::MediaSettings {
        audio_in: args.audio_in.clone(),
        audio_out: "null".into(),
        video_in: args.video_in.clone(),
        video_out: "null".into(),
        width: args.width,
        height: args.height,
        fps: args.fps,
        video_bitrate_kbps: args.video_bitrate_kbps,
        audio_bitrate_kbps: args.audio_bitrate_kbps,
        opus_frame_ms: 20,
        stereo: args.stereo,
        nack: false,
        fec: false,
        red: false,
        dtx: false,
        delay_bwe: false,
    };
    settings.check().map_err(crate::engine::Error::from)?;
    let audio = args.audio_in != "none";
    let video = args.video_in != "none";
    if !audio && !video {
        return Err(Error::NothingToSend);
    }
    let to = destination(&args.to).await?;
    let parts = parts(args, audio, video)?;

    let bind = args.bind.unwrap_or_else(|| match to.ip() {
        IpAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        IpAddr::V6(_) => SocketAddr::from(([0u16; 8], 0)),
    });
    let socket = UdpSocket::bind(bind)
        .await
        .map_err(|source| Error::Bind { addr: bind, source })?;

    #[allow(clippy::disallowed_methods)] // reason: the shell reads the clock, once
    let base = (Instant::now(), SystemTime::now());
    let audio_to = to;
    let video_to = SocketAddr::new(to.ip(), to.port() + 2);
    let mut outgoing = Vec::new();
    let mut media = Vec::new();
    if audio {
        outgoing.push(outgoing_stream(base, false, audio_to)?);
        media.push(Media {
            kind: MediaKind::Audio,
            addr: to.ip(),
            port: audio_to.port(),
            rtcp_port: audio_to.port() + 1,
            pt: Pt(AUDIO_PT),
            codec: Codec::Opus {
                stereo: args.stereo,
                ptime_ms: Some(20),
            },
        });
    }
    if video {
        outgoing.push(outgoing_stream(base, true, video_to)?);
        media.push(Media {
            kind: MediaKind::Video,
            addr: to.ip(),
            port: video_to.port(),
            rtcp_port: video_to.port() + 1,
            pt: Pt(VIDEO_PT),
            codec: Codec::H264 {
                packetization_mode: 1,
                // In band: OpenH264 repeats the SPS and PPS before every keyframe.
                parameter_sets: Vec::new(),
                profile_level_id: Some("42e01f".into()),
                framerate: Some(args.fps as f32),
            },
        });
    }
    let sdp = Sdp {
        name: "magpie stream".into(),
        media,
        unsupported: 0,
    }
    .to_string();
    match &args.sdp {
        Some(path) => std::fs::write(path, &sdp).map_err(|source| Error::Write {
            path: path.clone(),
            source,
        })?,
        None => print!("{sdp}"),
    }
    eprintln!("{PLAIN_WARNING}");
    eprintln!(
        "magpie stream: sending{} to {to}; play it with: ffplay -protocol_whitelist \
         file,udp,rtp -i {}",
        match (audio, video) {
            (true, true) => " Opus audio and H.264 video",
            (true, false) => " Opus audio",
            _ => " H.264 video",
        },
        args.sdp
            .as_ref()
            .map_or("FILE.sdp".into(), |p| p.display().to_string()),
    );

    let mut pipeline = Pipeline::start(parts)?;
    let started = now();
    let end_at = args
        .duration
        .map(|secs| started + Duration::from_secs_f64(secs.clamp(0.0, 1e9)));
    let (mut audio_out, mut video_out) = split(outgoing, audio);
    let wall = WallTime::from_micros(wall_micros(base.1));
    let capture = |t: WallTime| instant_of((base.0, wall), t);
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    let mut sources_done = 0;
    let sources = usize::from(audio) + usize::from(video);
    loop {
        let deadline = [&audio_out, &video_out]
            .into_iter()
            .flatten()
            .filter_map(|o| o.session.poll_timeout().map(|t| t.at))
            .chain(end_at)
            .min()
            .unwrap_or(started + Duration::from_secs(1));
        tokio::select! {
            _ = &mut ctrl_c => break,
            () = tokio::time::sleep_until(deadline.into()) => {
                let now = now();
                for o in [&mut audio_out, &mut video_out].into_iter().flatten() {
                    o.session.handle_timeout(now);
                }
                if end_at.is_some_and(|end| now >= end) {
                    break;
                }
            }
            frame = recv_opt(&mut pipeline.audio_in) => match (frame, &mut audio_out) {
                (Some(Encoded { data, captured_at, .. }), Some(o)) => {
                    if let Err(e) = o.session.send_audio(now(), &data, capture(captured_at)) {
                        warn!(error = %e, "send audio");
                    }
                }
                _ => {
                    pipeline.audio_in = None;
                    sources_done += 1;
                }
            },
            frame = recv_opt(&mut pipeline.video_in) => match (frame, &mut video_out) {
                (Some(Encoded { data, captured_at, keyframe, .. }), Some(o)) => {
                    let at = capture(captured_at);
                    if let Err(e) = o.session.send_video(now(), &data, at, keyframe) {
                        warn!(error = %e, "send video");
                    }
                }
                _ => {
                    pipeline.video_in = None;
                    sources_done += 1;
                }
            },
        }
        for o in [&mut audio_out, &mut video_out].into_iter().flatten() {
            transmit(&socket, o).await;
        }
        if sources_done == sources {
            debug!("every source ended");
            break;
        }
    }
    drop(pipeline);
    // Goodbye (RTCP BYE) on each stream, so a receiver knows it ended.
    for o in [&mut audio_out, &mut video_out].into_iter().flatten() {
        o.session.close(now());
        transmit(&socket, o).await;
    }
    let sent: Vec<String> = [("audio", &audio_out), ("video", &video_out)]
        .into_iter()
        .filter_map(|(kind, o)| o.as_ref().map(|o| format!("{kind} {} datagrams", o.sent)))
        .collect();
    eprintln!(
        "magpie stream: stopped after {:.1} s; sent {}",
        (now() - started).as_secs_f64(),
        sent.join(", ")
    );
    Ok(())
}

/// Sends what the session wants sent: RTP to the stream's port, RTCP to the one above.
async fn transmit(socket: &UdpSocket, o: &mut Outgoing) {
    while let Some(t) = o.session.poll_transmit() {
        let to = match magpie_media::wire::classify(&t.contents) {
            magpie_media::wire::Kind::Rtcp => o.rtcp,
            _ => o.rtp,
        };
        match socket.send_to(&t.contents, to).await {
            Ok(_) => o.sent += 1,
            Err(e) => debug!(error = %e, %to, "send"),
        }
    }
}

fn split(outgoing: Vec<Outgoing>, audio: bool) -> (Option<Outgoing>, Option<Outgoing>) {
    let mut it = outgoing.into_iter();
    let a = if audio { it.next() } else { None };
    (a, it.next())
}

/// A session that sends one medium to `to`, plain.
fn outgoing_stream(
    base: (Instant, SystemTime),
    video: bool,
    to: SocketAddr,
) -> Result<Outgoing, Error> {
    let mut session = SessionConfig::new()
        .set_seed(rand::random())
        .set_wall_clock(base.0, base.1)
        .set_video(video)
        .set_payload_types(AUDIO_PT, AUDIO_PT + 1, VIDEO_PT, VIDEO_PT + 1)
        .set_capture_ext_id(super::CAPTURE_EXT_ID)
        .set_nack(false)
        .set_audio_fec(false)
        .set_cname("magpie-stream")
        .build(base.0);
    let pt = Pt(if video { VIDEO_PT } else { AUDIO_PT });
    let receive = silent_track(&session, pt);
    let agreement = one_way(&session, video, receive);
    session
        .set_agreement(agreement)
        .map_err(magpie_media::Error::from)?;
    session.set_path(to);
    Ok(Outgoing {
        session,
        rtp: to,
        rtcp: rtcp_destination(to, false),
        sent: 0,
    })
}

/// The sources and encoders; nothing is received.
fn parts(args: &StreamArgs, audio: bool, video: bool) -> Result<Parts, Error> {
    let (channels, frame) = audio_format(args.stereo, 20);
    let audio = audio
        .then(|| -> Result<_, Error> {
            let capture = AudioCapture::open(
                &AudioSourceSpec::from_str(&args.audio_in)?,
                &AudioCaptureConfig::default()
                    .set_channels(channels)
                    .set_frame(frame),
            )?;
            let opus = OpusConfig::default()
                .set_channels(channels)
                .set_frame(frame)
                .set_bitrate(args.audio_bitrate_kbps * 1000)
                .set_fec(false)
                .build()?;
            Ok((capture, AudioSender::new(AudioEncoder::Opus(opus))))
        })
        .transpose()?;
    let video = video
        .then(|| -> Result<_, Error> {
            let capture = VideoCapture::open(
                &VideoSourceSpec::from_str(&args.video_in)?,
                &VideoCaptureConfig::default()
                    .set_resolution(args.width, args.height)
                    .set_fps(args.fps),
            )?;
            let bps = args.video_bitrate_kbps * 1000;
            let h264 = H264Encoder::new(
                H264Config::default()
                    .set_resolution(args.width, args.height)
                    .set_fps(args.fps as f32)
                    .set_bitrate(bps)
                    .set_keyframe_interval(args.keyframe_secs.max(1) * args.fps),
            )?;
            Ok((
                capture,
                VideoSender::new(VideoEncoder::H264(h264), u64::from(bps)),
            ))
        })
        .transpose()?;
    Ok(Parts {
        audio,
        video,
        audio_sink: None,
        video_sink: None,
    })
}

/// `--to HOST:PORT`, resolved; PORT+3 (video's RTCP) must fit.
async fn destination(to: &str) -> Result<SocketAddr, Error> {
    let bad = || Error::Destination(to.to_owned());
    let addr = tokio::net::lookup_host(to)
        .await
        .map_err(|_| bad())?
        .next()
        .ok_or_else(bad)?;
    if addr.port() == 0 || addr.port() > u16::MAX - 3 {
        return Err(bad());
    }
    if addr.ip().is_multicast() {
        return Err(Error::Multicast(addr.ip()));
    }
    Ok(addr)
}
