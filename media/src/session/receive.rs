//! The receive side of the session: the one place every incoming datagram is admitted
//! or refused (path, demultiplexing, agreed SSRC and payload type, probation), and the
//! routing of admitted RTP into the streams, the NACK generators and the buffers.

use std::net::SocketAddr;
use std::time::Instant;

use tracing::{debug, trace};

use super::agreement::Agreement;
use super::streams::{MediaKind, NoRoute};
use super::{Event, Session};
use crate::payload::opus;
use crate::recv::nack::NackGenerator;
use crate::recv::{RecvStream, Reject};
use crate::types::MediaTime;
use crate::wire::{self, Kind, RtpPacket};

impl Session {
    /// Feeds one datagram received from `from`. Only datagrams from the selected path
    /// are admitted (see [`Session::set_path`]); everything refused is counted in
    /// [`Stats::refused`](super::Stats::refused).
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let now = self.advance_to(now);
        match self.path {
            None => {
                self.refused.before_path += 1;
                trace!(len = data.len(), "datagram before a path refused");
                return;
            }
            Some(path) if path != from => {
                self.refused.foreign_source += 1;
                trace!(len = data.len(), "datagram from another source refused");
                return;
            }
            Some(_) => {}
        }
        match wire::classify(data) {
            Kind::Foreign => {
                self.refused.foreign += 1;
                trace!(len = data.len(), "foreign datagram dropped");
            }
            Kind::Rtcp => match wire::parse_rtcp(data) {
                Ok(packets) => self.handle_rtcp(now, packets),
                Err(e) => {
                    self.refused.malformed_rtcp += 1;
                    debug!(error = %e, "malformed RTCP dropped");
                }
            },
            Kind::Rtp => {
                let ext_id = self
                    .agreement
                    .map_or(self.config.capture_ext_id, |a| a.remote_capture_ext_id);
                match wire::parse_rtp(data, ext_id) {
                    Ok(packet) => self.handle_rtp(now, packet, data.len()),
                    Err(e) => {
                        self.refused.malformed_rtp += 1;
                        debug!(error = %e, "malformed RTP dropped");
                    }
                }
            }
        }
    }

    /// Routes an RTP packet to its agreed stream, or refuses it.
    fn handle_rtp(&mut self, now: Instant, packet: RtpPacket, len: usize) {
        let ssrc = packet.header.ssrc;
        let (main, is_rtx) = match self.streams.route(ssrc, packet.header.pt) {
            Ok(route) => route,
            Err(NoRoute::UnknownSsrc) => {
                self.refused.unknown_ssrc += 1;
                trace!(%ssrc, "RTP from an SSRC not agreed refused");
                return;
            }
            Err(NoRoute::UnknownPt) => {
                self.refused.unknown_pt += 1;
                trace!(%ssrc, pt = packet.header.pt.0, "RTP with a payload type not agreed");
                return;
            }
        };
        let Some(incoming) = self.streams.get_mut(main) else {
            self.refused.unknown_ssrc += 1;
            return;
        };
        let is_video = incoming.kind == MediaKind::Video;
        let (seq, payload) = if is_rtx {
            let [a, b, rest @ ..] = &packet.payload[..] else {
                self.refused.bad_payload += 1;
                return;
            };
            let osn = u16::from_be_bytes([*a, *b]);
            let offset = packet.payload.len() - rest.len();
            (osn, packet.payload.slice(offset..))
        } else {
            (packet.header.seq, packet.payload.clone())
        };
        let resyncs = incoming.stream.counters().resyncs;
        let arrival = incoming
            .stream
            .on_packet(now, seq, packet.header.timestamp, !is_rtx, len);
        let resynced = incoming.stream.counters().resyncs != resyncs;
        if resynced {
            // The stream restarted (and proved it over several packets): what was
            // missing or buffered before is meaningless now.
            incoming.nack.clear();
        }
        let arrival = match arrival {
            Ok(arrival) => arrival,
            Err(Reject::Probation) => {
                self.refused.probation += 1;
                trace!(%ssrc, seq, "RTP on probation after a sequence jump");
                return;
            }
            Err(Reject::Duplicate | Reject::OutOfWindow) => return,
        };
        incoming.started.get_or_insert(now);
        incoming.nack.on_received(now, arrival.seq, !is_rtx);
        let nack_on = incoming.nack_on;
        if resynced {
            debug!(%ssrc, video = is_video, "incoming stream resynced");
            if is_video {
                self.frames.reset();
            } else {
                self.jitter.reset();
                self.audio_newest = None;
            }
        }
        let capture = packet.header.capture.and_then(|c| self.clock.instant(c.0));
        if let Some((start, end)) = arrival.gap.filter(|_| nack_on) {
            let deadline = now + self.config.video_max_wait;
            let jitter = &self.jitter;
            if let Some(rx) = self.streams.get_mut(main) {
                if is_video {
                    rx.nack.on_gap(now, start, end, |_| Some(deadline));
                } else {
                    rx.nack.on_gap(now, start, end, |s| jitter.deadline(s));
                }
            }
        }
        if is_video {
            self.frames.push(
                now,
                arrival.seq,
                arrival.ts,
                packet.header.marker,
                payload,
                capture,
            );
            self.drain_video(now);
        } else {
            if !is_rtx && self.audio_newest.is_none_or(|(s, _)| arrival.seq > s) {
                self.audio_newest = Some((arrival.seq, now));
            }
            match opus::depacketize(payload) {
                Ok(frame) => {
                    self.jitter
                        .push(now, arrival.seq, arrival.ts, frame, capture, !is_rtx);
                }
                Err(_) => self.refused.bad_payload += 1,
            }
        }
    }

    /// Moves decodable video frames to events and sends a PLI if the buffer wants one.
    pub(super) fn drain_video(&mut self, now: Instant) {
        while let Some(frame) = self.frames.poll_frame() {
            if let Some(c) = frame.capture_time {
                self.video_latency.push(now.saturating_duration_since(c));
            }
            self.push_event(Event::VideoFrame {
                data: frame.data,
                capture_time: frame.capture_time,
                keyframe: frame.keyframe,
                rtp_time: frame.rtp_time,
            });
        }
        if let (Some(from), Some(rx)) = (
            self.frames.wanted_from(),
            self.streams.kind_mut(MediaKind::Video),
        ) {
            rx.nack.forget_before(from);
        }
        if self.frames.take_keyframe_request() {
            self.send_pli();
        }
    }

    /// Builds the incoming streams from a checked agreement.
    pub(super) fn apply_agreement(&mut self, agreement: Agreement) {
        let c = &self.config;
        let (reorder, repeat, retries) = (
            c.nack_reorder_allowance,
            c.nack_first_repeat,
            c.nack_max_retries,
        );
        let nack = || NackGenerator::new(reorder, repeat, retries);
        let audio = agreement
            .audio
            .map(|k| (k.receive, k.nack && self.config.nack));
        let replaced = self.streams.set(
            MediaKind::Audio,
            audio,
            |ssrc| RecvStream::new(ssrc, MediaTime::AUDIO_RATE),
            nack,
        );
        if replaced {
            self.jitter.reset();
            self.audio_newest = None;
        }
        let video = agreement
            .video
            .map(|k| (k.receive, k.nack && self.config.nack));
        let replaced = self.streams.set(
            MediaKind::Video,
            video,
            |ssrc| RecvStream::new(ssrc, MediaTime::VIDEO_RATE),
            nack,
        );
        if replaced {
            self.frames.reset();
        }
        debug!(?agreement, "agreement set");
        self.agreement = Some(agreement);
        self.update_rtx_round();
    }
}
