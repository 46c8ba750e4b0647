//! `magpie play FILE.sdp`: receive the plain RTP streams a description names (what
//! `ffmpeg -f rtp ... -sdp_file FILE.sdp` sends), and decode and play them.
//!
//! Each medium's port feeds its own media session, which admits or refuses every
//! datagram and counts refusals by reason. A session knows nothing of the sender until
//! the first RTP packet with the described payload type arrives: that packet's source
//! and SSRC become the session's path and agreement (the description names neither),
//! and from then on only that stream is admitted.

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use magpie_media::call::{AudioReceiver, AudioReceiverStats, VideoReceiver, VideoReceiverStats};
use magpie_media::codec::FrameDuration;
use magpie_media::devices::{AudioSinkSpec, VideoSinkSpec};
use magpie_media::payload::h264::split_annexb;
use magpie_media::sdp::{Codec, Media, MediaKind, Sdp};
use magpie_media::types::Ssrc;
use magpie_media::wire::{self, Rtcp};
use magpie_media::{Event, Session, SessionConfig, Track};
use serde::Serialize;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info};

use super::{CAPTURE_EXT_ID, Error, PLAIN_WARNING, PlayArgs, one_way, rtcp_destination};
use crate::engine::pipeline::{AudioSinkParts, PULL_LEAD, Parts, Pipeline, Report};
use crate::engine::{audio_format, now};

/// One datagram from one of the sockets.
struct Datagram {
    /// Which stream's socket.
    stream: usize,
    /// It came to the stream's RTCP port (not its RTP port).
    rtcp: bool,
    from: SocketAddr,
    data: Bytes,
}

/// One described medium on its way in.
struct Incoming {
    media: Media,
    socket: Arc<UdpSocket>,
    session: Session,
    /// The sender's address and SSRC, from its first packet.
    source: Option<(SocketAddr, Ssrc)>,
    last_heard: Option<Instant>,
    /// The sender said goodbye (RTCP BYE).
    said_bye: bool,
    /// Datagrams on the RTCP port that were not RTCP from the sender.
    rtcp_refused: u64,
}

/// What `--stats-json` holds for one stream.
#[derive(Serialize)]
struct StreamReport {
    kind: String,
    port: u16,
    source: Option<SocketAddr>,
    ssrc: Option<u32>,
    said_bye: bool,
    rtcp_refused: u64,
    session: magpie_media::Stats,
    audio: Option<AudioReceiverStats>,
    video: Option<VideoReceiverStats>,
}

/// Runs `magpie play` until Ctrl-C, `--duration`, or the end of every stream that began.
pub async fn play(args: &PlayArgs) -> Result<(), Error> {
    let sdp = read_sdp(&args.sdp)?;
    if let Some(m) = sdp.media.iter().find(|m| m.addr.is_multicast()) {
        return Err(Error::Multicast(m.addr));
    }
    #[allow(clippy::disallowed_methods)] // reason: the shell reads the clock, once
    let base = (Instant::now(), SystemTime::now());
    let (tx, mut rx) = mpsc::channel(1024);
    let mut streams = Vec::new();
    let mut readers = Readers(Vec::new());
    let described: Vec<Media> = [sdp.audio(), sdp.video()]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    for media in described {
        let stream = streams.len();
        let rtp = bind(media.addr, media.port).await?;
        readers.0.push(read(rtp.clone(), stream, false, tx.clone()));
        if media.rtcp_port != media.port {
            let rtcp = bind(media.addr, media.rtcp_port).await?;
            readers.0.push(read(rtcp, stream, true, tx.clone()));
        }
        streams.push(Incoming {
            session: incoming_session(base, &media),
            media,
            socket: rtp,
            source: None,
            last_heard: None,
            said_bye: false,
            rtcp_refused: 0,
        });
    }
    drop(tx);
    let (parts, frame) = parts(args, &sdp)?;
    let mut pipeline = Pipeline::start(parts)?;
    eprintln!("{PLAIN_WARNING}");
    let ports: Vec<String> = streams
        .iter()
        .map(|s| format!("{} on port {}", s.media.kind, s.media.port))
        .collect();
    eprintln!("magpie play: waiting for {}", ports.join(", "));

    let started = now();
    let end_at = args
        .duration
        .map(|secs| started + Duration::from_secs_f64(secs.clamp(0.0, 1e9)));
    let idle = Duration::from_secs_f64(args.idle_secs.clamp(0.05, 1e9));
    let mut next_pull: Option<Instant> = None;
    let mut audio_stats = None;
    let mut video_stats = None;
    let mut rate = RateFromTimestamps::default();
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        let deadline = streams
            .iter()
            .filter_map(|s| s.session.poll_timeout().map(|t| t.at))
            .chain(
                streams
                    .iter()
                    .filter_map(|s| s.last_heard.map(|t| t + idle)),
            )
            .chain(next_pull)
            .chain(end_at)
            .min()
            .unwrap_or(started + Duration::from_secs(1));
        tokio::select! {
            _ = &mut ctrl_c => break,
            Some(d) = rx.recv() => {
                if let Some(s) = streams.get_mut(d.stream) {
                    s.handle(now(), d);
                }
            }
            () = tokio::time::sleep_until(deadline.into()) => {
                let now = now();
                for s in &mut streams {
                    s.session.handle_timeout(now);
                }
                if next_pull.is_some_and(|at| now >= at) {
                    next_pull = None;
                    if let Some(s) = streams.iter_mut().find(|s| s.media.kind == MediaKind::Audio) {
                        let slot = s.session.pull_audio(now);
                        pipeline.queue_slot(slot, now);
                    }
                }
                if end_at.is_some_and(|end| now >= end) {
                    break;
                }
            }
            Some(report) = pipeline.reports.recv() => match report {
                Report::AudioPlayed { at, stats, .. } => {
                    next_pull = Some(at + frame - PULL_LEAD);
                    audio_stats = Some(stats);
                }
                Report::VideoShown { stats, lost, .. } => {
                    video_stats = Some(stats);
                    if lost {
                        for s in streams.iter_mut().filter(|s| s.media.kind == MediaKind::Video) {
                            s.session.request_keyframe(now());
                        }
                    }
                }
                Report::Failed(message) => {
                    return Err(crate::engine::Error::Sink(message).into());
                }
                Report::WindowClosed => break,
            },
        }
        let now = now();
        for s in &mut streams {
            s.transmit().await;
            while let Some(event) = s.session.poll_event() {
                match event {
                    Event::VideoFrame {
                        data,
                        keyframe,
                        rtp_time,
                        ..
                    } => {
                        if let Some(fps) = rate.push(rtp_time) {
                            pipeline.set_video_rate(fps);
                        }
                        let unit = with_parameter_sets(data, keyframe, &s.media.codec);
                        if !pipeline.queue_unit(unit) {
                            s.session.request_keyframe(now);
                        }
                    }
                    Event::PeerLeft => s.said_bye = true,
                    _ => {}
                }
            }
        }
        let begun: Vec<_> = streams.iter().filter(|s| s.source.is_some()).collect();
        let over = |s: &&Incoming| s.said_bye || s.last_heard.is_some_and(|t| now >= t + idle);
        if !begun.is_empty() && begun.iter().all(over) {
            info!("every stream that began has ended");
            break;
        }
    }
    // The last reports, then stop every thread.
    while let Ok(report) = pipeline.reports.try_recv() {
        match report {
            Report::AudioPlayed { stats, .. } => audio_stats = Some(stats),
            Report::VideoShown { stats, .. } => video_stats = Some(stats),
            Report::Failed(_) | Report::WindowClosed => {}
        }
    }
    drop(pipeline);
    let elapsed = now() - started;
    let reports: Vec<StreamReport> = streams
        .iter()
        .map(|s| s.report(audio_stats, video_stats))
        .collect();
    for r in &reports {
        eprintln!("magpie play: {}", summary_line(r));
    }
    if let Some(path) = &args.stats_json {
        let json = serde_json::json!({
            "elapsed_secs": elapsed.as_secs_f64(),
            "streams": reports,
        });
        std::fs::write(path, format!("{json:#}\n")).map_err(|source| Error::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok(())
}

impl Incoming {
    /// Feeds one datagram. Before the stream began, the first RTP packet with the
    /// described payload type makes its source and SSRC the session's path and peer;
    /// whatever the session is fed, it admits or refuses and counts.
    fn handle(&mut self, now: Instant, d: Datagram) {
        if d.rtcp {
            self.handle_rtcp_port(&d);
            return;
        }
        if self.source.is_none() {
            self.begin(d.from, &d.data);
        }
        if self.source.is_some_and(|(from, _)| from == d.from) {
            self.last_heard = Some(now);
        }
        self.session.handle_datagram(now, d.from, &d.data);
    }

    fn begin(&mut self, from: SocketAddr, data: &[u8]) {
        let Ok(packet) = wire::parse_rtp(data, CAPTURE_EXT_ID) else {
            return;
        };
        if packet.header.pt != self.media.pt {
            return;
        }
        let video = self.media.kind == MediaKind::Video;
        let receive = Track {
            pt: packet.header.pt,
            ssrc: packet.header.ssrc,
            rtx: None,
        };
        match self
            .session
            .set_agreement(one_way(&self.session, video, receive))
        {
            Ok(()) => {
                self.session.set_path(from);
                self.source = Some((from, packet.header.ssrc));
                eprintln!(
                    "magpie play: {} from {from} (SSRC {})",
                    self.media.kind, packet.header.ssrc
                );
            }
            // Its SSRC is one of ours (one chance in a billion): wait for another.
            Err(e) => debug!(error = %e, "stream refused"),
        }
    }

    /// The RTCP port: only a goodbye from the sender matters (its reports would give a
    /// clock mapping nothing here uses).
    fn handle_rtcp_port(&mut self, d: &Datagram) {
        let from_sender = self
            .source
            .is_some_and(|(source, _)| source.ip() == d.from.ip());
        let packets = wire::parse_rtcp(&d.data).ok().filter(|_| from_sender);
        let Some(packets) = packets else {
            self.rtcp_refused += 1;
            return;
        };
        let ssrc = self.source.map(|(_, ssrc)| ssrc);
        let bye = packets.iter().any(
            |p| matches!(p, Rtcp::Goodbye { ssrcs } if ssrc.is_some_and(|s| ssrcs.contains(&s))),
        );
        if bye {
            debug!(kind = %self.media.kind, "goodbye on the RTCP port");
            self.said_bye = true;
        }
    }

    /// Sends the session's reports: to the sender's RTCP port (the one above its RTP
    /// source port, where ffmpeg listens), or to its RTP port with `a=rtcp-mux`.
    async fn transmit(&mut self) {
        let mux = self.media.rtcp_port == self.media.port;
        while let Some(t) = self.session.poll_transmit() {
            let to = rtcp_destination(t.destination, mux);
            if let Err(e) = self.socket.send_to(&t.contents, to).await {
                debug!(error = %e, %to, "send");
            }
        }
    }

    fn report(
        &self,
        audio: Option<AudioReceiverStats>,
        video: Option<VideoReceiverStats>,
    ) -> StreamReport {
        let is_video = self.media.kind == MediaKind::Video;
        StreamReport {
            kind: self.media.kind.to_string(),
            port: self.media.port,
            source: self.source.map(|(from, _)| from),
            ssrc: self.source.map(|(_, ssrc)| ssrc.0),
            said_bye: self.said_bye,
            rtcp_refused: self.rtcp_refused,
            session: self.session.stats(),
            audio: audio.filter(|_| !is_video),
            video: video.filter(|_| is_video),
        }
    }
}

fn summary_line(r: &StreamReport) -> String {
    let (counters, refused) = match r.kind.as_str() {
        "video" => (r.session.recv_video.counters, r.session.refused),
        _ => (r.session.recv_audio.counters, r.session.refused),
    };
    let Some(source) = r.source else {
        return format!("{} on port {}: nothing arrived", r.kind, r.port);
    };
    let mut line = format!(
        "{} from {source}: {} packets, {} lost",
        r.kind, counters.packets, counters.lost
    );
    if let Some(a) = r.audio {
        line += &format!(
            "; {} frames decoded, {} concealed",
            a.decoded + a.fec,
            a.concealed
        );
    }
    if let Some(v) = r.video {
        line += &format!(
            "; {} pictures decoded, {} refused by the decoder",
            v.decoded, v.decode_errors
        );
    }
    let refused = refused.before_path
        + refused.foreign_source
        + refused.unknown_ssrc
        + refused.unknown_pt
        + refused.malformed_rtp
        + refused.foreign;
    if refused > 0 {
        line += &format!("; {refused} datagrams refused (see --stats-json)");
    }
    if r.said_bye {
        line += "; it said goodbye";
    }
    line
}

/// The source's frame rate from the first frames' 90 kHz RTP timestamps (what a Y4M sink
/// writes in its header when the description gives none): said once.
#[derive(Default)]
struct RateFromTimestamps {
    times: Vec<u64>,
    said: bool,
}

impl RateFromTimestamps {
    const FRAMES: usize = 6;

    fn push(&mut self, rtp_time: u64) -> Option<u32> {
        if self.said {
            return None;
        }
        self.times.push(rtp_time);
        if self.times.len() < Self::FRAMES {
            return None;
        }
        let mut gaps: Vec<u64> = self
            .times
            .windows(2)
            .map(|w| w[1].saturating_sub(w[0]))
            .filter(|&g| g > 0)
            .collect();
        gaps.sort_unstable();
        let median = *gaps.get(gaps.len() / 2)?;
        self.said = true;
        Some(((90_000 + median / 2) / median).clamp(1, 240) as u32)
    }
}

/// A keyframe without its SPS and PPS gets the description's parameter sets in front.
fn with_parameter_sets(unit: Bytes, keyframe: bool, codec: &Codec) -> Bytes {
    let Codec::H264 { parameter_sets, .. } = codec else {
        return unit;
    };
    let has_sps = split_annexb(&unit).iter().any(|nal| nal[0] & 0x1f == 7);
    if !keyframe || has_sps || parameter_sets.is_empty() {
        return unit;
    }
    let mut out = Vec::with_capacity(unit.len() + 64);
    for set in parameter_sets {
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(set);
    }
    out.extend_from_slice(&unit);
    Bytes::from(out)
}

/// The session of one described medium: receive only, plain, on the described clock.
fn incoming_session(base: (Instant, SystemTime), media: &Media) -> Session {
    let frame = opus_frame(&media.codec);
    SessionConfig::new()
        .set_seed(rand::random())
        .set_wall_clock(base.0, base.1)
        .set_video(media.kind == MediaKind::Video)
        .set_audio_frame(frame.duration())
        .set_payload_types(111, 112, 96, 97)
        .set_capture_ext_id(CAPTURE_EXT_ID)
        .set_nack(false)
        .set_audio_fec(false)
        .set_cname("magpie-play")
        .build(base.0)
}

/// The Opus frame duration: `a=ptime` when it says 10 ms, else 20 ms (ffmpeg's default).
fn opus_frame(codec: &Codec) -> FrameDuration {
    match codec {
        Codec::Opus {
            ptime_ms: Some(10), ..
        } => FrameDuration::Ms10,
        _ => FrameDuration::Ms20,
    }
}

/// The sinks and decoders; nothing is captured.
fn parts(args: &PlayArgs, sdp: &Sdp) -> Result<(Parts, Duration), Error> {
    let mut frame = Duration::from_millis(20);
    let audio_sink = match sdp.audio() {
        Some(media) => {
            let stereo = matches!(media.codec, Codec::Opus { stereo: true, .. });
            let ms = if opus_frame(&media.codec) == FrameDuration::Ms10 {
                10
            } else {
                20
            };
            let format = audio_format(stereo, ms);
            frame = format.1.duration();
            Some(AudioSinkParts {
                spec: AudioSinkSpec::from_str(&args.audio_out)?,
                receiver: AudioReceiver::new(format.0, format.1.samples(), None)?,
                format,
            })
        }
        None => None,
    };
    let video_sink = match sdp.video() {
        Some(media) => {
            let described = match media.codec {
                Codec::H264 {
                    framerate: Some(f), ..
                } if f >= 1.0 => Some(f.round() as u32),
                _ => None,
            };
            let spec = VideoSinkSpec::from_str(&args.video_out)?;
            Some((spec, args.fps.or(described), VideoReceiver::new()?))
        }
        None => None,
    };
    Ok((
        Parts {
            audio: None,
            video: None,
            audio_sink,
            video_sink,
        },
        frame,
    ))
}

/// Reads and parses the description, refusing a file too large to be one.
fn read_sdp(path: &PathBuf) -> Result<Sdp, Error> {
    let read_err = |source| Error::Read {
        path: path.clone(),
        source,
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(read_err)?
        .take(magpie_media::sdp::MAX_LEN as u64 + 1)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    Sdp::parse(&text).map_err(|source| Error::Sdp {
        path: path.clone(),
        source,
    })
}

/// Binds the port on every interface of the description's address family.
async fn bind(addr: IpAddr, port: u16) -> Result<Arc<UdpSocket>, Error> {
    let any = match addr {
        IpAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], port)),
        IpAddr::V6(_) => SocketAddr::from(([0u16; 8], port)),
    };
    UdpSocket::bind(any)
        .await
        .map(Arc::new)
        .map_err(|source| Error::Bind { addr: any, source })
}

/// The reader tasks, stopped when dropped.
struct Readers(Vec<JoinHandle<()>>);

impl Drop for Readers {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// A task that hands every datagram of `socket` to the loop.
fn read(
    socket: Arc<UdpSocket>,
    stream: usize,
    rtcp: bool,
    tx: mpsc::Sender<Datagram>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        loop {
            match socket.recv_from(&mut buf).await {
                Ok((len, from)) => {
                    let d = Datagram {
                        stream,
                        rtcp,
                        from,
                        data: Bytes::copy_from_slice(&buf[..len]),
                    };
                    if tx.send(d).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    debug!(error = %e, "recv");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frame_rate_comes_from_the_rtp_timestamps() {
        let mut rate = RateFromTimestamps::default();
        let said: Vec<_> = (0..10u64)
            .filter_map(|k| rate.push(1_000 + k * 3_600))
            .collect();
        assert_eq!(said, [25]);
        let mut rate = RateFromTimestamps::default();
        // 29.97 fps (3003 ticks), with one frame missing.
        let times = [0, 3003, 6006, 12012, 15015, 18018, 21021];
        let said: Vec<_> = times.iter().filter_map(|&t| rate.push(t)).collect();
        assert_eq!(said, [30]);
    }

    #[test]
    fn a_keyframe_gets_the_described_parameter_sets_in_front_unless_it_has_its_own() {
        let codec = Codec::H264 {
            packetization_mode: 1,
            parameter_sets: vec![
                Bytes::from_static(&[0x67, 1]),
                Bytes::from_static(&[0x68, 2]),
            ],
            profile_level_id: None,
            framerate: None,
        };
        let idr = Bytes::from_static(&[0, 0, 0, 1, 0x65, 9]);
        let with = with_parameter_sets(idr.clone(), true, &codec);
        assert_eq!(
            &with[..],
            &[
                0, 0, 0, 1, 0x67, 1, 0, 0, 0, 1, 0x68, 2, 0, 0, 0, 1, 0x65, 9
            ]
        );
        assert_eq!(with_parameter_sets(with.clone(), true, &codec), with);
        assert_eq!(with_parameter_sets(idr.clone(), false, &codec), idr);
    }
}
