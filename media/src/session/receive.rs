//! The receive side of the session: the one place every incoming datagram is admitted
//! or refused (path, demultiplexing, agreed SSRC and payload type, probation), and the
//! routing of admitted RTP into the streams, the NACK generators and the buffers.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tracing::{debug, trace};

use super::agreement::Agreement;
use super::streams::{MediaKind, NoRoute};
use super::{Event, Session};
use crate::cc::SendTimes;
use crate::jitter::audio::Origin;
use crate::payload::{opus, red};
use crate::recv::nack::NackGenerator;
use crate::recv::{RecvStream, Reject};
use crate::send::red::RedSender;
use crate::srtp::{Srtp, SrtpError};
use crate::types::MediaTime;
use crate::wire::{self, Kind, RtpPacket};

/// One media packet taken in, whichever way it came.
struct Received {
    seq: u16,
    ts: u32,
    marker: bool,
    payload: Bytes,
    capture: Option<Instant>,
    /// When it left the peer (abs-send-time, when agreed), as sent: put on our clock
    /// only once the stream admits the packet (each value is unwrapped next to the
    /// last, so a refused one must not move it).
    send_time: Option<wire::AbsSendTime>,
    /// Its transport-wide sequence number (when agreed), recorded for our feedback only
    /// once the stream admits the packet.
    transport_seq: Option<u16>,
    /// False for a retransmission or a packet rebuilt from FEC.
    original: bool,
    /// An audio packet in RED format (RFC 2198) rather than plain Opus.
    red: bool,
    /// Rebuilt from FEC.
    rebuilt: bool,
    len: usize,
}

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
        let kind = wire::classify(data);
        if kind == Kind::Foreign {
            self.refused.foreign += 1;
            trace!(len = data.len(), "foreign datagram dropped");
            return;
        }
        let mut plain = std::mem::take(&mut self.unprotected);
        let window_inputs = self.window_inputs();
        if self.unprotect(kind, data, &mut plain) {
            self.handle_plain(now, kind, &plain);
        }
        self.unprotected = plain;
        // Feedback taken in may have opened the congestion window, an estimate moved
        // it. Nothing else a datagram brings does (time does, in `handle_timeout`): a
        // refused one, or media, changes nothing here, so that no one on the path can
        // time the window's checks (and the encoder's target with them) by sending.
        if self.window_inputs() != window_inputs {
            self.hold_for_window();
        }
    }

    /// What the congestion window follows from the peer: the transport feedbacks and
    /// the estimates taken in.
    fn window_inputs(&self) -> (u64, u64) {
        (self.in_flight.counters().feedbacks, self.remb_received)
    }

    /// Routes a checked and decrypted RTP or RTCP datagram.
    fn handle_plain(&mut self, now: Instant, kind: Kind, data: &[u8]) {
        match kind {
            Kind::Foreign => {}
            Kind::Rtcp => match wire::parse_rtcp(data) {
                Ok(packets) => self.handle_rtcp(now, packets),
                Err(e) => {
                    self.refused.malformed_rtcp += 1;
                    debug!(error = %e, "malformed RTCP dropped");
                }
            },
            Kind::Rtp => {
                let ids = self.agreement.map_or(
                    wire::ExtIds {
                        capture: self.config.capture_ext_id,
                        send_time: None,
                        transport_seq: None,
                    },
                    |a| wire::ExtIds {
                        capture: a.remote_capture_ext_id,
                        send_time: a.remote_send_time_ext_id,
                        transport_seq: a.remote_transport_seq_ext_id,
                    },
                );
                match wire::parse_rtp_ext(data, ids) {
                    Ok(packet) => {
                        self.handle_rtp(now, packet, data.len());
                        if let Some(share) = self.delay_bwe.take_collapse() {
                            self.on_incoming_collapse(now, share);
                        }
                        // A falling estimate goes back at once, not at the next report.
                        if self.delay_bwe.report_urgent() {
                            self.send_estimate();
                        }
                    }
                    Err(e) => {
                        self.refused.malformed_rtp += 1;
                        debug!(error = %e, "malformed RTP dropped");
                    }
                }
            }
        }
    }

    /// Checks and decrypts an RTP or RTCP datagram with the agreed keys into `plain`, or
    /// refuses it by reason. With a plain agreement the datagram passes as it is; before
    /// any agreement RTP is refused as from an SSRC not agreed, RTCP as from a stranger's.
    fn unprotect(&mut self, kind: Kind, data: &[u8], plain: &mut BytesMut) -> bool {
        let Some(srtp) = self.srtp.as_mut() else {
            if self.agreement.is_some() {
                plain.clear();
                plain.extend_from_slice(data);
                return true;
            }
            match kind {
                Kind::Rtp => self.refused.unknown_ssrc += 1,
                _ => self.refused.rtcp_foreign_ssrc += 1,
            }
            trace!(len = data.len(), "RTP/RTCP before an agreement refused");
            return false;
        };
        match srtp.unprotect_into(kind, data, plain) {
            Ok(()) => true,
            Err(e) => {
                let counter = match (e, kind) {
                    (SrtpError::Replay, _) => &mut self.refused.srtp_replay,
                    (SrtpError::Malformed, Kind::Rtcp) => &mut self.refused.malformed_rtcp,
                    (SrtpError::Malformed, _) => &mut self.refused.malformed_rtp,
                    _ => &mut self.refused.srtp_auth,
                };
                *counter += 1;
                trace!(error = %e, len = data.len(), "SRTP refused");
                false
            }
        }
    }

    /// Routes an RTP packet to its agreed stream, or refuses it.
    fn handle_rtp(&mut self, now: Instant, packet: RtpPacket, len: usize) {
        let ssrc = packet.header.ssrc;
        // Send times are read only from the peer's agreed streams: a datagram refused
        // below moves nothing (`SendTimes` unwraps each value next to the last).
        if self.streams.is_fec(ssrc, packet.header.pt) {
            // Timed and reported on only once the FEC receiver took it.
            if self.handle_fec(now, &packet.payload) {
                self.record_arrival(now, &packet);
                if self.config.delay_bwe {
                    let send = packet.send_time.map(|t| self.send_times.instant(now, t));
                    let rtt = self.rtt();
                    self.delay_bwe.on_packet(now, send, len, rtt);
                }
            }
            return;
        }
        // RED (RFC 2198) travels on the audio SSRC under its own payload type.
        let audio = self.agreement.and_then(|a| a.audio).map(|k| k.receive);
        let red_pt = self.agreement.and_then(|a| a.red).map(|r| r.receive);
        let is_red = red_pt == Some(packet.header.pt) && audio.is_some_and(|t| t.ssrc == ssrc);
        let pt = match audio {
            Some(t) if is_red => t.pt,
            _ => packet.header.pt,
        };
        let (main, is_rtx) = match self.streams.route(ssrc, pt) {
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
        if self.streams.get_mut(main).is_none() {
            self.refused.unknown_ssrc += 1;
            return;
        }
        if is_rtx && packet.payload.is_empty() && packet.padded {
            self.record_arrival(now, &packet);
            self.handle_padding(now, &packet, len);
            return;
        }
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
        let capture = packet.header.capture.and_then(|c| self.clock.instant(c.0));
        let received = Received {
            seq,
            ts: packet.header.timestamp,
            marker: packet.header.marker,
            payload,
            capture,
            send_time: packet.send_time,
            transport_seq: packet.transport_seq,
            original: !is_rtx,
            red: is_red,
            rebuilt: false,
            len,
        };
        self.accept_rtp(now, main, received);
    }

    /// Records the transport-wide sequence number of an admitted FEC or probe packet for
    /// our feedback (media packets are recorded in `accept_rtp`, once their stream
    /// admits them).
    fn record_arrival(&mut self, now: Instant, packet: &RtpPacket) {
        if let Some(seq) = packet.transport_seq {
            self.arrivals.on_packet(now, seq);
        }
    }

    /// A padding-only packet on an agreed RTX stream (its P bit set, the parser took the
    /// padding off and nothing was left; a bare header without the bit is refused as a
    /// bad payload): a probe of the peer's (`send::probe`),
    /// its RTP timestamp the cluster, its abs-capture-time its send time. It counts in
    /// the incoming rate and, timed, in its cluster's; in no media stream.
    fn handle_padding(&mut self, now: Instant, packet: &RtpPacket, len: usize) {
        self.padding_received.packets += 1;
        self.padding_received.bytes += len as u64;
        if !self.config.delay_bwe {
            return;
        }
        match packet.header.capture.and_then(|c| self.clock.instant(c.0)) {
            Some(send) => {
                let cluster = packet.header.timestamp;
                self.delay_bwe.on_probe(now, cluster, send, len);
            }
            None => self.delay_bwe.on_packet(now, None, len, self.rtt()),
        }
    }

    /// A video FEC packet: rebuilds what it can and takes the rebuilt packets in as
    /// retransmissions are. False when it was refused (malformed).
    fn handle_fec(&mut self, now: Instant, payload: &Bytes) -> bool {
        let (accepted, last) = match self.fec_rx.push_fec(payload) {
            Ok(last) => (true, last),
            Err(e) => {
                self.refused.bad_payload += 1;
                debug!(error = %e, "malformed FEC packet refused");
                (false, None)
            }
        };
        self.take_recovered(now);
        if let Some(last) = last {
            self.nack_tail(now, last);
        }
        accepted
    }

    /// The peer sent video packets up to `last` (a FEC packet covers them): those after
    /// the newest received are lost at the end of a frame. Ask for them now rather than
    /// when the next frame shows the gap, a frame interval later.
    fn nack_tail(&mut self, now: Instant, last: crate::types::SeqNo) {
        let deadline = now + self.config.video_max_wait;
        let Some(rx) = self.streams.kind_mut(MediaKind::Video) else {
            return;
        };
        let Some(newest) = rx.stream.highest() else {
            return;
        };
        let ahead = last.delta(newest);
        if !rx.nack_on || ahead <= 0 || ahead > crate::fec::MAX_PROTECTED as i64 {
            return;
        }
        trace!(from = %newest.next(), to = %last, "video tail loss");
        rx.nack
            .on_gap(now, newest.next(), last.next(), |_| Some(deadline));
    }

    fn take_recovered(&mut self, now: Instant) {
        let Some(main) = self.streams.kind(MediaKind::Video).map(|rx| rx.track.ssrc) else {
            return;
        };
        while let Some(p) = self.fec_rx.poll_recovered() {
            trace!(seq = %p.seq, "video packet rebuilt from FEC");
            let len = p.payload.len();
            let received = Received {
                seq: p.seq.wire(),
                ts: p.ts,
                marker: p.marker,
                payload: p.payload,
                capture: None,
                send_time: None,
                transport_seq: None,
                original: false,
                red: false,
                rebuilt: true,
                len,
            };
            self.accept_rtp(now, main, received);
        }
    }

    /// Takes in one media packet of the stream `main` (original, retransmitted or
    /// rebuilt): sequence tracking, NACK, and the buffers.
    fn accept_rtp(&mut self, now: Instant, main: crate::types::Ssrc, received: Received) {
        let Received {
            seq,
            ts,
            marker,
            payload,
            capture,
            send_time,
            transport_seq,
            original,
            red: is_red,
            rebuilt,
            len,
        } = received;
        let is_rtx = !original;
        let ssrc = main;
        let Some(incoming) = self.streams.get_mut(main) else {
            return;
        };
        let is_video = incoming.kind == MediaKind::Video;
        let pt = incoming.track.pt.0;
        let resyncs = incoming.stream.counters().resyncs;
        let arrival = if rebuilt {
            incoming.stream.on_rebuilt(now, seq, ts, len)
        } else {
            incoming.stream.on_packet(now, seq, ts, original, len)
        };
        let resynced = incoming.stream.counters().resyncs != resyncs;
        if resynced {
            // The stream restarted (and proved it over several packets): what was
            // missing or buffered before is meaningless now.
            incoming.nack.clear();
        }
        // Reported on unless held on probation: a duplicate or a late packet is the
        // peer's all the same (a copy the network made, a retransmission after the
        // original) and left with its own number.
        if let Some(tseq) = transport_seq.filter(|_| arrival != Err(Reject::Probation)) {
            self.arrivals.on_packet(now, tseq);
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
        let send = send_time.map(|t| self.send_times.instant(now, t));
        incoming.started.get_or_insert(now);
        let rtt = self.rtt.unwrap_or(self.config.initial_rtt);
        // The delay-based estimate, only where it is on (see the config).
        if self.config.delay_bwe && !rebuilt {
            // The estimate is of everything the peer sends (its send budget holds it all
            // to it): every packet's bytes make the incoming rate (a rebuilt packet's FEC
            // counted already). Where the peer stamps send times (agreed), every packet
            // times the delay. Otherwise audio originals probe it: audio leaves the
            // moment a frame is captured and encoded (a fixed 20 ms after its capture
            // time), unpaced, 50 times a second, through the same bottleneck queue as the
            // video. A video frame's capture time is a worse send time (pacing spreads a
            // frame over up to its interval).
            let stamped = self
                .agreement
                .is_some_and(|a| a.remote_send_time_ext_id.is_some());
            let probe = match send {
                Some(send) => Some(send),
                None if stamped || is_video || !original => None,
                None => capture,
            };
            self.delay_bwe.on_packet(now, probe, len, rtt);
        }
        // Audio whose slot was played (or concealed) already came too late to be of use:
        // for the loss the sender sizes its protection by, and for how long NACKs wait
        // for reordering, it counts as lost. (Otherwise anyone on the path could replay
        // lost packets late to make the link look clean and the NACKs wait longer.)
        let too_late = !is_video && !is_rtx && self.jitter.is_late(arrival.seq);
        if too_late {
            incoming.stream.on_too_late();
        }
        incoming
            .nack
            .on_received(now, arrival.seq, !is_rtx && !too_late);
        if is_video {
            let how = match (rebuilt, is_rtx) {
                (true, _) => "fec",
                (false, true) => "rtx",
                (false, false) => "original",
            };
            trace!(seq = %arrival.seq, ts, marker, how, after_repair = arrival.after_repair, "video in");
        }
        if arrival.after_repair {
            // Redundancy or FEC put its payload in the buffers already.
            return;
        }
        let nack_on = incoming.nack_on;
        if resynced {
            debug!(%ssrc, video = is_video, "incoming stream resynced");
            if is_video {
                self.frames.reset();
                self.video_tail.reset();
            } else {
                self.jitter.reset();
                self.audio_newest = None;
            }
        }
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
            if !is_rtx {
                self.video_tail
                    .on_original(now, arrival.seq, arrival.ts, marker);
            }
            if self.fec_on {
                self.fec_rx.push_media(crate::fec::MediaPacket {
                    seq: arrival.seq,
                    ts,
                    marker,
                    pt,
                    payload: payload.clone(),
                });
            }
            self.frames
                .push(now, arrival.seq, arrival.ts, marker, payload, capture);
            self.drain_video(now);
            self.take_recovered(now);
        } else {
            if !is_rtx && self.audio_newest.is_none_or(|(s, _)| arrival.seq > s) {
                self.audio_newest = Some((arrival.seq, now));
            }
            if is_red {
                let opus_pt = crate::types::Pt(pt);
                self.handle_red(
                    now,
                    main,
                    arrival.seq,
                    arrival.ts,
                    payload,
                    capture,
                    opus_pt,
                );
                return;
            }
            let origin = if is_rtx {
                Origin::Retransmission
            } else {
                Origin::Original
            };
            match opus::depacketize(payload) {
                Ok(frame) => {
                    self.jitter
                        .push(now, arrival.seq, arrival.ts, frame, capture, origin);
                }
                Err(_) => self.refused.bad_payload += 1,
            }
        }
    }

    /// A RED packet (RFC 2198) on the audio stream: its primary block is the frame of
    /// `seq`; each redundant block is an earlier frame, placed by its media time (whole
    /// frames before `ts`, the same number of packets before `seq`: one frame a packet).
    #[allow(clippy::too_many_arguments)]
    fn handle_red(
        &mut self,
        now: Instant,
        main: crate::types::Ssrc,
        seq: crate::types::SeqNo,
        ts: u64,
        payload: Bytes,
        capture: Option<Instant>,
        opus_pt: crate::types::Pt,
    ) {
        let parsed = match red::parse(&payload) {
            Ok(p) if p.pt == opus_pt && p.redundant.iter().all(|b| b.pt == opus_pt) => p,
            Ok(_) | Err(_) => {
                self.refused.bad_red += 1;
                trace!(len = payload.len(), "malformed RED payload");
                return;
            }
        };
        let frame_ticks = self.jitter.frame_ticks();
        let frame = self.config.audio_frame;
        let mut depth = 0u8;
        let mut recovered = Vec::new();
        let mut misplaced = false;
        for block in parsed.redundant {
            let offset = u64::from(block.offset);
            let k = offset / frame_ticks;
            if offset % frame_ticks != 0 || k == 0 || k > red::MAX_BLOCKS as u64 {
                misplaced = true;
                continue;
            }
            let (Some(s), Some(t)) = (seq.0.checked_sub(k), ts.checked_sub(offset)) else {
                continue;
            };
            depth = depth.max(k as u8);
            let at = capture.and_then(|c| c.checked_sub(frame * k as u32));
            let s = crate::types::SeqNo(s);
            if self
                .jitter
                .push(now, s, t, block.data, at, Origin::Redundancy)
            {
                recovered.push(s);
            }
        }
        if misplaced {
            // The primary block is still good; the packet is counted as refused once.
            self.refused.bad_red += 1;
            trace!("RED block not whole frames back");
        }
        self.jitter
            .push(now, seq, ts, parsed.primary, capture, Origin::Original);
        self.jitter.on_redundancy(now, depth);
        if let Some(rx) = self.streams.get_mut(main) {
            for s in recovered {
                // No need to ask for it any more, and its original is a duplicate now.
                rx.stream.on_recovered(s);
                rx.nack.on_received(now, s, false);
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
        let audio_replaced = self.streams.set(
            MediaKind::Audio,
            audio,
            |ssrc| RecvStream::new(ssrc, MediaTime::AUDIO_RATE),
            nack,
        );
        if audio_replaced {
            self.jitter.reset();
            self.audio_newest = None;
        }
        let video = agreement
            .video
            .map(|k| (k.receive, k.nack && self.config.nack));
        let video_replaced = self.streams.set(
            MediaKind::Video,
            video,
            |ssrc| RecvStream::new(ssrc, MediaTime::VIDEO_RATE),
            nack,
        );
        if video_replaced {
            self.frames.reset();
            self.fec_rx.reset();
            self.video_tail.reset();
        }
        if audio_replaced || video_replaced {
            // A new stream is a peer that restarted: its clock (capture and send
            // times) is not the one timed so far.
            self.send_times = SendTimes::default();
            self.delay_bwe.restart_timing();
            // Its transport-wide numbers start again too, and its feedback's count.
            self.arrivals.restart(self.now);
            self.in_flight.restart_feedback_count();
        }
        if agreement.transport_seq_ext_id.is_none() {
            // No feedback will come on what is in flight: nothing holds video.
            self.in_flight.clear();
            self.forget_collapse();
        }
        let fec = agreement.video_fec.filter(|_| self.config.video_fec);
        self.streams.set_fec(fec.map(|f| f.receive_pt));
        self.fec_on = fec.is_some();
        self.fec_tx_pt = fec.map(|f| f.send_pt);
        // FEC from the next frame only if the peer puts it there.
        self.jitter.set_fec(self.config.audio_fec && agreement.fec);
        // New keys start new contexts; the same keys keep their rollover counters and
        // replay windows.
        if self.srtp.as_ref().map(|s| *s.keys()) != agreement.srtp {
            self.srtp = agreement.srtp.map(Srtp::new);
        }
        debug!(?agreement, "agreement set");
        self.agreement = Some(agreement);
        // Redundancy for our audio: kept across a renegotiation that leaves it as it was.
        let fec = self.config.audio_fec && agreement.fec;
        let keep = self
            .red_tx
            .as_ref()
            .is_some_and(|r| agreement.red.is_some_and(|red| red.send == r.pt()) && r.fec() == fec);
        if !keep {
            // The link is protected before its loss is known, under delay-based control
            // too (see `RedSender::protect_unknown_link`).
            self.red_tx = agreement.red.filter(|_| self.config.audio_red).map(|red| {
                let opus = self.audio_track().pt;
                let ticks = self.jitter.frame_ticks();
                RedSender::new(red.send, opus, ticks, fec, self.config.red_budget)
            });
        }
        self.update_rtx_round();
        self.start_delay_control(self.now);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::session::{Playout, SessionError, Track};
    use crate::test_instant;
    use crate::types::{Pt, Ssrc};
    use bytes::Bytes;

    use crate::wire::{ReportBlock, Rtcp, build_rtcp};
    use crate::{Agreement, SessionConfig};

    const A: ([u8; 4], u16) = ([127, 0, 0, 1], 40_000);
    const B: ([u8; 4], u16) = ([127, 0, 0, 1], 40_002);
    const STRANGER: ([u8; 4], u16) = ([127, 0, 0, 1], 40_666);

    fn pair(now: Instant) -> (Session, Session) {
        let a = SessionConfig::new().set_seed(1).build(now);
        let b = SessionConfig::new().set_seed(2).build(now);
        (a, b)
    }

    fn connect(a: &mut Session, b: &mut Session) {
        a.set_agreement(Agreement::between(a, b)).unwrap();
        b.set_agreement(Agreement::between(b, a)).unwrap();
        a.set_path(B.into());
        b.set_path(A.into());
    }

    /// Without SRTP: for the tests of the checks behind it, which hand-craft packets
    /// (they guard plain calls, and calls with a peer that holds the keys).
    fn connect_plain(a: &mut Session, b: &mut Session) {
        connect(a, b);
        a.set_agreement(Agreement::between(a, b).plain()).unwrap();
        b.set_agreement(Agreement::between(b, a).plain()).unwrap();
    }

    /// Sends one audio frame from `a` and hands every datagram to `b` from `from`.
    fn audio(a: &mut Session, b: &mut Session, now: Instant, from: SocketAddr) {
        a.send_audio(now, &[0xfc, 1, 2, 3], now).unwrap();
        a.handle_timeout(now);
        while let Some(t) = a.poll_transmit() {
            b.handle_datagram(now, from, &t.contents);
        }
    }

    #[test]
    fn transport_feedback_reports_every_packet_and_is_refused_unless_agreed_and_true() {
        let t0 = test_instant();
        let config = |seed| SessionConfig::new().set_seed(seed).set_delay_bwe(true);
        let (mut a, mut b) = (config(1).build(t0), config(2).build(t0));
        connect_plain(&mut a, &mut b);
        // 50 audio frames each way over a clean path: the feedback (every 50 ms) tells
        // each side of every packet it numbered, nothing lost, nothing refused.
        let mut now = t0;
        for _ in 0..50 {
            audio(&mut a, &mut b, now, A.into());
            audio(&mut b, &mut a, now, B.into());
            now += Duration::from_millis(20);
        }
        for s in [&mut a, &mut b] {
            s.handle_timeout(now + Duration::from_millis(60));
        }
        while let Some(t) = b.poll_transmit() {
            a.handle_datagram(now, B.into(), &t.contents);
        }
        let sent = a.stats().in_flight;
        assert!(sent.sent >= 50 && sent.feedbacks >= 10, "{sent:?}");
        assert_eq!(sent.received, sent.sent, "{sent:?}");
        assert_eq!((sent.lost, sent.refused), (0, 0));
        assert_eq!(b.stats().transport_feedback.recorded, sent.sent);
        assert_eq!(a.in_flight.bytes(), 0);
        // Feedback naming packets never sent is refused and counted; so is feedback
        // from a stranger's SSRC.
        let media = a.audio_ssrc();
        let forged = |sender, base_seq| {
            build_rtcp(&[Rtcp::TransportFeedback(wire::TransportFeedback {
                sender,
                media,
                base_seq,
                reference: 0,
                count: 0,
                arrivals: vec![Some(0); 10],
            })])
            .unwrap()
        };
        let next = sent.sent as u16;
        a.handle_datagram(now, B.into(), &forged(b.audio_ssrc(), next));
        a.handle_datagram(now, B.into(), &forged(Ssrc(99), next - 10));
        let refused = a.stats().refused;
        assert_eq!((refused.bad_feedback, refused.rtcp_foreign_ssrc), (1, 1));
        assert_eq!(a.stats().in_flight.received, sent.received);
        // A peer that did not ask to send us feedback (it does not estimate) is not
        // believed either.
        let (mut c, mut d) = (
            config(3).build(t0),
            SessionConfig::new()
                .set_seed(4)
                .set_delay_bwe(false)
                .build(t0),
        );
        connect_plain(&mut c, &mut d);
        audio(&mut c, &mut d, t0, A.into());
        let fb = build_rtcp(&[Rtcp::TransportFeedback(wire::TransportFeedback {
            sender: d.audio_ssrc(),
            media: c.audio_ssrc(),
            base_seq: 0,
            reference: 0,
            count: 0,
            arrivals: vec![Some(0)],
        })])
        .unwrap();
        c.handle_datagram(t0, B.into(), &fb);
        assert_eq!(c.stats().refused.rtcp_not_agreed, 1);
        assert_eq!(
            c.stats().in_flight.sent,
            0,
            "nothing numbered for a peer that never asked"
        );
    }

    #[test]
    fn rtp_held_on_probation_is_neither_timed_nor_reported_on() {
        // A copy of the peer's next packets with the sequence number moved far ahead (a
        // forgery from the path, or a restart not yet proved) is held on probation. It
        // must not take the packets' transport-wide numbers, which our feedback would
        // then report as arrived when the copy came (the originals counted late), nor
        // move anything the delay estimate reads.
        let t0 = test_instant();
        let config = |seed| SessionConfig::new().set_seed(seed).set_delay_bwe(true);
        let (mut a, mut b) = (config(1).build(t0), config(2).build(t0));
        connect_plain(&mut a, &mut b);
        let mut now = t0;
        for _ in 0..10 {
            audio(&mut a, &mut b, now, A.into());
            now += Duration::from_millis(20);
        }
        a.send_audio(now, &[0xfc, 1, 2, 3], now).unwrap();
        a.handle_timeout(now);
        let next: Vec<Bytes> = std::iter::from_fn(|| a.poll_transmit())
            .map(|t| t.contents)
            .filter(|d| wire::classify(d) == Kind::Rtp)
            .collect();
        assert!(!next.is_empty());
        let before = (b.stats().transport_feedback, b.stats().delay_bwe);
        for d in &next {
            let mut forged = d.to_vec();
            let seq = u16::from_be_bytes([forged[2], forged[3]]).wrapping_add(3500);
            forged[2..4].copy_from_slice(&seq.to_be_bytes());
            b.handle_datagram(now, A.into(), &forged);
        }
        assert_eq!(b.stats().refused.probation, next.len() as u64);
        assert_eq!((b.stats().transport_feedback, b.stats().delay_bwe), before);
        // The originals, a moment later, are recorded as they arrive.
        for d in &next {
            b.handle_datagram(now + Duration::from_millis(5), A.into(), d);
        }
        let after = b.stats().transport_feedback;
        assert_eq!(after.recorded, before.0.recorded + next.len() as u64);
        assert_eq!(after.late, before.0.late);
    }

    #[test]
    fn nothing_is_admitted_sent_or_played_before_a_path() {
        let t0 = test_instant();
        let (mut a, mut b) = pair(t0);
        a.set_agreement(Agreement::between(&a, &b)).unwrap();
        b.set_agreement(Agreement::between(&b, &a)).unwrap();
        assert_eq!(
            a.send_audio(t0, &[0xfc, 1], t0).unwrap_err().to_string(),
            crate::Error::from(SessionError::NoPath).to_string()
        );
        a.set_path(B.into());
        for i in 0..10u32 {
            audio(&mut a, &mut b, t0 + Duration::from_millis(20) * i, A.into());
        }
        let refused = b.stats().refused;
        assert!(refused.before_path >= 10, "{refused:?}");
        assert_eq!(refused.total(), refused.before_path);
        // Its own RTCP, due meanwhile, was dropped unsent.
        b.handle_timeout(t0 + Duration::from_secs(2));
        assert!(b.poll_transmit().is_none());
        assert!(b.stats().unsent_before_path > 0);
        assert_eq!(b.pull_audio(t0 + Duration::from_secs(2)), Playout::Silence);
    }

    #[test]
    fn only_the_paths_source_is_admitted_and_a_new_path_moves_it() {
        let t0 = test_instant();
        let (mut a, mut b) = pair(t0);
        connect(&mut a, &mut b);
        let frame = Duration::from_millis(20);
        audio(&mut a, &mut b, t0, STRANGER.into());
        assert_eq!(b.stats().refused.foreign_source, 1);
        audio(&mut a, &mut b, t0 + frame, A.into());
        assert_eq!(b.stats().recv_audio.counters.packets, 1);
        // The peer's address changed (a new path): the old one is now a stranger.
        b.set_path(STRANGER.into());
        audio(&mut a, &mut b, t0 + frame * 2, A.into());
        audio(&mut a, &mut b, t0 + frame * 3, STRANGER.into());
        assert_eq!(b.stats().refused.foreign_source, 2);
        assert_eq!(b.stats().recv_audio.counters.packets, 2);
    }

    #[test]
    fn rtp_before_an_agreement_or_off_it_is_refused_by_reason() {
        let t0 = test_instant();
        let (mut a, mut b) = pair(t0);
        a.set_path(B.into());
        b.set_path(A.into());
        // Without an agreement there are no keys: nothing leaves in clear.
        audio(&mut a, &mut b, t0, A.into());
        assert!(a.stats().unsent_without_keys >= 1);
        assert_eq!(b.stats().refused.total(), 0);
        a.set_agreement(Agreement::between(&a, &b)).unwrap();
        audio(&mut a, &mut b, t0 + Duration::from_millis(20), A.into());
        assert_eq!(b.stats().refused.unknown_ssrc, 1);
        // Agreed, but with another payload type for the peer's audio SSRC.
        let mut agreement = Agreement::between(&b, &a);
        if let Some(k) = agreement.audio.as_mut() {
            k.receive.pt = Pt(100);
        }
        b.set_agreement(agreement).unwrap();
        audio(&mut a, &mut b, t0 + Duration::from_millis(40), A.into());
        let r = b.stats().refused;
        assert_eq!((r.unknown_ssrc, r.unknown_pt), (1, 1));
        assert_eq!(b.stats().recv_audio.counters.packets, 0);
    }

    #[test]
    fn an_agreement_must_name_our_own_tracks_and_distinct_peer_ssrcs() {
        let t0 = test_instant();
        let (a, b) = pair(t0);
        let mut b_audio_only = SessionConfig::new().set_seed(3).set_video(false).build(t0);
        let good = Agreement::between(&a, &b);
        let mut bad = good;
        bad.audio.as_mut().unwrap().send.ssrc = Ssrc(7);
        let mut a = a;
        assert_eq!(
            a.set_agreement(bad),
            Err(SessionError::NotOurTrack("audio"))
        );
        let mut bad = good;
        bad.video.as_mut().unwrap().receive.ssrc = good.audio.unwrap().receive.ssrc;
        assert!(matches!(
            a.set_agreement(bad),
            Err(SessionError::DuplicateSsrc(_))
        ));
        let mut bad = good;
        bad.audio.as_mut().unwrap().receive.rtx = Some((Pt(97), a.audio_ssrc()));
        assert!(matches!(
            a.set_agreement(bad),
            Err(SessionError::DuplicateSsrc(_))
        ));
        let mut bad = good;
        bad.video.as_mut().unwrap().receive.pt = Pt(72);
        assert_eq!(a.set_agreement(bad), Err(SessionError::InvalidPt(72)));
        let mut bad = good;
        bad.remote_capture_ext_id = 15;
        assert_eq!(a.set_agreement(bad), Err(SessionError::InvalidExtId(15)));
        let video_for_audio_only = Agreement {
            video: good.video.map(|mut k| {
                k.send = Track {
                    pt: Pt(96),
                    ssrc: Ssrc(1),
                    rtx: None,
                };
                k
            }),
            ..Agreement::between(&b_audio_only, &a)
        };
        assert_eq!(
            b_audio_only.set_agreement(video_for_audio_only),
            Err(SessionError::NoVideo)
        );
        a.set_agreement(good).unwrap();
    }

    #[test]
    fn a_kind_not_agreed_is_not_sent() {
        let t0 = test_instant();
        let (mut a, mut b) = pair(t0);
        connect(&mut a, &mut b);
        let mut agreement = Agreement::between(&a, &b);
        agreement.video = None;
        a.set_agreement(agreement).unwrap();
        let err = a.send_video(t0, &[0, 0, 0, 1, 0x65, 1], t0, true);
        assert!(
            err.unwrap_err()
                .to_string()
                .contains("video was not agreed")
        );
    }

    fn rtcp_to(b: &mut Session, now: Instant, packets: &[Rtcp]) {
        b.handle_datagram(now, A.into(), &build_rtcp(packets).unwrap());
    }

    #[test]
    fn rtcp_counts_only_from_the_peers_ssrcs_about_ours_and_when_agreed() {
        let t0 = test_instant();
        let (mut a, mut b) = pair(t0);
        connect_plain(&mut a, &mut b);
        let peer = a.audio_ssrc();
        let video = b.video_ssrc().unwrap();
        let stranger = Ssrc(0xbad);
        let pli = |sender| Rtcp::Pli {
            sender,
            media: video,
        };
        rtcp_to(
            &mut b,
            t0,
            &[Rtcp::Goodbye {
                ssrcs: vec![stranger],
            }],
        );
        rtcp_to(&mut b, t0, &[pli(stranger)]);
        rtcp_to(
            &mut b,
            t0,
            &[Rtcp::Pli {
                sender: peer,
                media: stranger,
            }],
        );
        assert_eq!(b.stats().refused.rtcp_foreign_ssrc, 3);
        assert!(b.poll_event().is_none());
        rtcp_to(&mut b, t0, &[pli(peer)]);
        assert_eq!(b.poll_event(), Some(Event::KeyframeRequested));
        // Without `pli` and `nack` agreed, the same feedback is refused.
        let mut agreement = Agreement::between(&b, &a).plain();
        agreement.pli = false;
        agreement.video.as_mut().unwrap().nack = false;
        b.set_agreement(agreement).unwrap();
        rtcp_to(&mut b, t0, &[pli(peer)]);
        let nack = Rtcp::Nack {
            sender: peer,
            media: video,
            seqs: vec![1, 2, 3],
        };
        rtcp_to(&mut b, t0, &[nack]);
        assert_eq!(b.stats().refused.rtcp_not_agreed, 2);
        assert!(b.poll_event().is_none());
        // A BYE naming the peer ends the call.
        rtcp_to(
            &mut b,
            t0,
            &[Rtcp::Goodbye {
                ssrcs: vec![stranger, peer],
            }],
        );
        assert_eq!(b.poll_event(), Some(Event::PeerLeft));
    }

    #[test]
    fn retransmissions_are_admitted_only_on_the_agreed_rtx_ssrc() {
        let t0 = test_instant();
        let (mut a, mut b) = pair(t0);
        connect_plain(&mut a, &mut b);
        let frame = Duration::from_millis(20);
        let mut sent = Vec::new();
        for i in 0..3u32 {
            let now = t0 + frame * i;
            a.send_audio(now, &[0xfc, i as u8], now).unwrap();
            a.handle_timeout(now);
            while let Some(t) = a.poll_transmit() {
                sent.push(t.contents);
            }
        }
        let rtp: Vec<_> = sent
            .iter()
            .filter(|d| wire::classify(d) == Kind::Rtp)
            .collect();
        // The middle packet is lost; the peer asks for it and `a` resends it on RTX.
        for d in [rtp[0], rtp[2]] {
            b.handle_datagram(t0 + frame * 2, A.into(), d);
        }
        let seq = u16::from_be_bytes([rtp[1][2], rtp[1][3]]);
        let nack = Rtcp::Nack {
            sender: b.audio_ssrc(),
            media: a.audio_ssrc(),
            seqs: vec![seq],
        };
        a.handle_datagram(t0 + frame * 3, B.into(), &build_rtcp(&[nack]).unwrap());
        a.handle_timeout(t0 + frame * 3);
        let rtx: Vec<_> = std::iter::from_fn(|| a.poll_transmit())
            .filter(|t| wire::classify(&t.contents) == Kind::Rtp)
            .collect();
        assert!(!rtx.is_empty());
        // The same retransmission with another SSRC is a stranger's.
        let mut forged = rtx[0].contents.to_vec();
        forged[8..12].copy_from_slice(&0xbad_u32.to_be_bytes());
        b.handle_datagram(t0 + frame * 3, A.into(), &forged);
        assert_eq!(b.stats().refused.unknown_ssrc, 1);
        assert_eq!(b.stats().recv_audio.counters.recovered_rtx, 0);
        b.handle_datagram(t0 + frame * 3, A.into(), &rtx[0].contents);
        assert_eq!(b.stats().recv_audio.counters.recovered_rtx, 1);
    }

    /// Tells `a` that its peer lost `fraction` (1/256) of its audio.
    fn loss_report(a: &mut Session, b: &Session, now: Instant, fraction: u8) {
        let audio = a.audio_ssrc();
        report_loss_of(a, b, audio, now, fraction);
    }

    /// Tells `a` that its peer lost `fraction` (1/256) of its stream `ssrc`.
    fn report_loss_of(a: &mut Session, b: &Session, ssrc: Ssrc, now: Instant, fraction: u8) {
        let rr = Rtcp::ReceiverReport {
            ssrc: b.audio_ssrc(),
            reports: vec![ReportBlock {
                ssrc,
                fraction_lost: fraction,
                total_lost: 0,
                // On two seconds of audio: enough for redundancy to follow it.
                highest_seq: u32::from(a.audio_tx.params().first_seq.wrapping_add(100)),
                jitter: 0,
                lsr: 0,
                dlsr: 0,
            }],
        };
        a.handle_datagram(now, B.into(), &build_rtcp(&[rr]).unwrap());
    }

    /// Sends audio frames `0..n` from `a` to `b`, dropping those `lost` names, while `b`
    /// plays; returns the RTP datagrams `a` sent and the frames `b` played.
    fn send_frames(a: &mut Session, b: &mut Session, n: u8, lost: &[u8]) -> (Vec<Bytes>, Vec<u8>) {
        let t0 = test_instant();
        let frame = Duration::from_millis(20);
        let mut sent = Vec::new();
        let mut played = Vec::new();
        for i in 0..n + 20 {
            let now = t0 + frame * u32::from(i);
            for data in b.pull_audio(now).frames() {
                played.push(data[1]);
            }
            if i >= n {
                continue;
            }
            let now = t0 + frame * u32::from(i);
            a.send_audio(now, &[0xfc, i, i, i], now).unwrap();
            a.handle_timeout(now);
            while let Some(t) = a.poll_transmit() {
                if wire::classify(&t.contents) != Kind::Rtp {
                    continue;
                }
                sent.push(t.contents.clone());
                if !lost.contains(&i) {
                    b.handle_datagram(now, A.into(), &t.contents);
                }
            }
        }
        (sent, played)
    }

    #[test]
    fn a_lost_frame_is_recovered_from_the_redundancy_of_a_later_packet() {
        let t0 = test_instant();
        let config = |seed| {
            SessionConfig::new()
                .set_seed(seed)
                .set_video(false)
                .set_audio_fec(false)
                .set_nack(false)
        };
        let (mut a, mut b) = (config(1).build(t0), config(2).build(t0));
        connect_plain(&mut a, &mut b);
        assert!(a.agreement().unwrap().red.is_some());
        // An unknown link: from the second packet on, each repeats the frames before it.
        let (early, _) = send_frames(&mut a, &mut b, 3, &[]);
        assert!(early[1..].iter().all(|d| d[1] & 0x7f == 110));
        // The peer's first report on enough audio says the link is clean: plain Opus, no
        // more redundancy spent.
        loss_report(&mut a, &b, t0, 0);
        assert_eq!(a.stats().red_distance, 0);
        let spent = a.stats().send_audio.red_bytes;
        let (clean, _) = send_frames(&mut a, &mut b, 3, &[]);
        assert!(clean.iter().all(|d| d[1] & 0x7f == 111));
        assert_eq!(a.stats().send_audio.red_bytes, spent);
        // The peer reports 10 % loss: packets now repeat the two frames before them.
        // Plain: the loss reports and the broken payload below are hand-crafted.
        let (mut a, mut b) = (config(1).build(t0), config(2).build(t0));
        connect_plain(&mut a, &mut b);
        for _ in 0..2 {
            loss_report(&mut a, &b, t0, 26);
        }
        assert_eq!(a.stats().red_distance, 2);
        let (sent, played) = send_frames(&mut a, &mut b, 12, &[5, 6]);
        assert!(sent[3..].iter().all(|d| d[1] & 0x7f == 110));
        assert!(a.stats().send_audio.red_bytes > 0);
        let s = b.stats();
        assert_eq!(
            played,
            (0..12).collect::<Vec<u8>>(),
            "{:?}",
            s.audio_playout
        );
        assert_eq!(s.audio_playout.red, 2);
        assert_eq!(s.refused.total(), 0);
        // A broken RED payload on the audio SSRC is refused and counted.
        let mut broken = sent[11].to_vec();
        broken.truncate(broken.len() - 8);
        broken[3] = broken[3].wrapping_add(1);
        b.handle_datagram(t0 + Duration::from_secs(1), A.into(), &broken);
        assert_eq!(b.stats().refused.bad_red, 1);
    }

    #[test]
    fn stats_serialize_with_the_refusals_and_durations_in_milliseconds() {
        let t0 = test_instant();
        let (mut a, mut b) = pair(t0);
        connect(&mut a, &mut b);
        b.handle_datagram(t0, STRANGER.into(), &[0x80, 111, 0, 0]);
        let json = serde_json::to_value(b.stats()).unwrap();
        assert_eq!(json["refused"]["foreign_source"], 1);
        assert!(json["audio_playout"]["target"].is_f64(), "{json}");
        assert!(json["rtt"].is_null());
    }

    /// A keyframe access unit (SPS, PPS, IDR) of about `len` bytes.
    fn keyframe(len: usize) -> Vec<u8> {
        let mut v = vec![0, 0, 0, 1, 0x67, 1, 0, 0, 0, 1, 0x68, 1, 0, 0, 0, 1, 0x65];
        v.extend((0..len).map(|i| (i % 251) as u8 | 1));
        v
    }

    #[test]
    fn a_lost_video_packet_is_rebuilt_from_fec_without_a_round_trip() {
        let t0 = test_instant();
        let (mut a, mut b) = pair(t0);
        connect(&mut a, &mut b);
        assert!(a.fec_tx_pt.is_some() && b.fec_on);
        // As if the peer had reported 10 % loss.
        a.fec_loss = 0.1;
        let au = keyframe(5000);
        a.send_video(t0, &au, t0, true).unwrap();
        let video = a.video_ssrc().unwrap();
        let mut media = 0;
        for i in 0..20u32 {
            let now = t0 + Duration::from_millis(5) * i;
            a.handle_timeout(now);
            while let Some(t) = a.poll_transmit() {
                let parsed = wire::parse_rtp(&t.contents, 3);
                if parsed.is_ok_and(|p| p.header.ssrc == video) {
                    media += 1;
                    if media == 2 {
                        continue;
                    }
                }
                b.handle_datagram(now, A.into(), &t.contents);
            }
        }
        assert!(media >= 5, "{media} media packets");
        let frames: Vec<_> = std::iter::from_fn(|| b.poll_event())
            .filter_map(|e| match e {
                Event::VideoFrame { data, .. } => Some(data),
                _ => None,
            })
            .collect();
        assert_eq!(frames.len(), 1);
        assert_eq!(&frames[0][..], &au[..]);
        let s = b.stats();
        assert_eq!(s.video_fec.recovered, 1, "{:?}", s.video_fec);
        assert!(a.stats().send_video.fec_packets >= 2);
        assert_eq!(a.stats().send_video.rtx_packets, 0);
    }

    #[test]
    fn a_peer_that_estimates_gets_every_packets_send_time_and_times_each() {
        let t0 = test_instant();
        let conf = |seed| SessionConfig::new().set_seed(seed).set_delay_bwe(true);
        // B estimates, A does not: A stamps, B reads.
        let (mut a, mut b) = (conf(1).set_delay_bwe(false).build(t0), conf(2).build(t0));
        connect_plain(&mut a, &mut b);
        let agreed = Agreement::between(&a, &b);
        assert_eq!(agreed.send_time_ext_id, Some(b.config.send_time_ext_id));
        assert_eq!(agreed.remote_send_time_ext_id, None);
        let video = a.video_ssrc().unwrap();
        let id = b.config.send_time_ext_id;
        // Ten frames of 5 kB, 33 ms apart: each paced out over several milliseconds.
        let (mut stamped, mut paced_apart) = (0, false);
        let mut last = None;
        for f in 0..10u32 {
            let at = t0 + Duration::from_millis(33) * f;
            a.send_video(at, &keyframe(5000), at, f == 0).unwrap();
            for ms in 0..33u32 {
                let now = at + Duration::from_millis(1) * ms;
                a.handle_timeout(now);
                while let Some(t) = a.poll_transmit() {
                    let p = wire::parse_rtp_with(&t.contents, 3, Some(id)).unwrap();
                    if p.header.ssrc == video {
                        // The send time is when it left, not the frame's capture.
                        let sent = wire::AbsSendTime::from_ntp(a.clock.ntp(now));
                        assert_eq!(p.send_time, Some(sent));
                        paced_apart |= last.is_some_and(|l| l != sent);
                        last = Some(sent);
                        stamped += 1;
                    }
                    b.handle_datagram(now + Duration::from_millis(20), A.into(), &t.contents);
                }
            }
        }
        assert!(stamped >= 40 && paced_apart, "{stamped}");
        // No audio went: every group B measured (5 ms of send times; a frame is paced
        // over more than one) was timed on video. Without send times there are none.
        let s = b.stats();
        assert!(s.delay_bwe.groups >= 10, "{:?}", s.delay_bwe);
        assert_eq!(s.refused, crate::session::Refused::default());
        assert_eq!(s.recv_video.counters.packets, stamped);
        // B sends A nothing stamped: A asked for no send times.
        b.send_audio(t0, &[0xfc, 1, 2, 3], t0).unwrap();
        b.handle_timeout(t0);
        while let Some(t) = b.poll_transmit() {
            if let Ok(p) = wire::parse_rtp_with(&t.contents, 3, Some(id)) {
                assert_eq!(p.send_time, None);
            }
        }
    }

    /// Tells `a` that its peer lost `fraction` (1/256) of its video.
    fn video_loss_report(a: &mut Session, b: &Session, now: Instant, fraction: u8) {
        let video = a.video_ssrc().unwrap();
        report_loss_of(a, b, video, now, fraction);
    }

    /// Sends one video access unit from `a`; returns its media and FEC datagrams.
    fn video_datagrams(a: &mut Session, now: Instant, au: &[u8]) -> (Vec<Bytes>, Vec<Bytes>) {
        a.send_video(now, au, now, true).unwrap();
        let (video, rtx) = (a.video_ssrc().unwrap(), a.video_rtx_ssrc().unwrap());
        let fec_pt = a.video_fec_pt();
        let (mut media, mut fec) = (Vec::new(), Vec::new());
        for i in 0..40u32 {
            a.handle_timeout(now + Duration::from_millis(5) * i);
            while let Some(t) = a.poll_transmit() {
                match wire::parse_rtp(&t.contents, 3) {
                    Ok(p) if p.header.ssrc == video => media.push(t.contents),
                    // FEC, not the probes' padding on the same stream.
                    Ok(p) if p.header.ssrc == rtx && Some(p.header.pt) == fec_pt => {
                        fec.push(t.contents);
                    }
                    _ => {}
                }
            }
        }
        (media, fec)
    }

    #[test]
    fn a_lost_frame_end_is_nacked_when_its_fec_arrives() {
        let t0 = test_instant();
        let (mut a, mut b) = pair(t0);
        connect_plain(&mut a, &mut b);
        // As if the peer had reported 10 % loss.
        a.fec_loss = 0.1;
        let (media, fec) = video_datagrams(&mut a, t0, &keyframe(5000));
        let n = media.len();
        assert!(n >= 5, "{n} media packets");
        // The last three are lost, more than the parity rebuilds.
        for d in media[..n - 3].iter().chain(&fec) {
            b.handle_datagram(t0, A.into(), d);
        }
        let last = wire::parse_rtp(&media[n - 1], 3).unwrap().header.seq;
        assert!(b.stats().video_fec.recovered < 3);
        // No later packet showed the gap, yet the end of the frame is asked for.
        let mut nacked = Vec::new();
        for ms in 0..20 {
            b.handle_timeout(t0 + Duration::from_millis(ms));
            while let Some(t) = b.poll_transmit() {
                for p in wire::parse_rtcp(&t.contents).unwrap_or_default() {
                    if let Rtcp::Nack { seqs, .. } = p {
                        nacked.extend(seqs);
                    }
                }
            }
        }
        assert!(nacked.contains(&last), "{nacked:?} lacks {last}");
    }

    /// NACKs for `a`'s video that `b` sends between `from` and `to` ms after `t0`, with
    /// when.
    fn nacks_between(
        a: &Session,
        b: &mut Session,
        t0: Instant,
        from: u64,
        to: u64,
    ) -> Vec<(u64, u16)> {
        let video = a.video_ssrc();
        let mut nacked = Vec::new();
        for ms in from..to {
            b.handle_timeout(t0 + Duration::from_millis(ms));
            while let Some(t) = b.poll_transmit() {
                for p in wire::parse_rtcp(&t.contents).unwrap_or_default() {
                    if let Rtcp::Nack { media, seqs, .. } = p
                        && Some(media) == video
                    {
                        nacked.extend(seqs.into_iter().map(|s| (ms, s)));
                    }
                }
            }
        }
        nacked
    }

    /// `a` sends `b` a second and a fifth of clean audio (the path's jitter estimate
    /// rests on it); returns when it ends.
    fn clean_audio(a: &mut Session, b: &mut Session, t0: Instant) -> Instant {
        let frame = Duration::from_millis(20);
        for i in 0..60u32 {
            let now = t0 + frame * i;
            a.send_audio(now, &[0xfc, 1, 2, 3], now).unwrap();
            a.handle_timeout(now);
            while let Some(t) = a.poll_transmit() {
                b.handle_datagram(now, A.into(), &t.contents);
            }
            b.handle_timeout(now);
            while b.poll_transmit().is_some() {}
        }
        t0 + frame * 60
    }

    #[test]
    fn a_lost_frame_end_without_fec_is_nacked_once_overdue() {
        let t0 = test_instant();
        let (mut a, mut b) = pair(t0);
        connect_plain(&mut a, &mut b);
        // A clean link so far: no FEC. The frame's last packet is lost, and nothing
        // follows it (the next frame is 33-100 ms away).
        let t1 = clean_audio(&mut a, &mut b, t0);
        let (media, fec) = video_datagrams(&mut a, t1, &keyframe(5000));
        assert!(fec.is_empty());
        let n = media.len();
        for d in &media[..n - 1] {
            b.handle_datagram(t1, A.into(), d);
        }
        let last = wire::parse_rtp(&media[n - 1], 3).unwrap().header.seq;
        // The packets of a frame come back to back: the missing end is asked for after
        // the reorder allowance (5 ms), long before a later frame would show the gap.
        let nacked = nacks_between(&a, &mut b, t1, 0, 30);
        let first = nacked.iter().find(|(_, s)| *s == last).map(|(ms, _)| *ms);
        assert!(first.is_some_and(|ms| ms <= 10), "{nacked:?} lacks {last}");
        // A frame that ended is not chased.
        let (mut a, mut b) = pair(t0);
        connect_plain(&mut a, &mut b);
        let t1 = clean_audio(&mut a, &mut b, t0);
        let (media, _) = video_datagrams(&mut a, t1, &keyframe(5000));
        for d in &media {
            b.handle_datagram(t1, A.into(), d);
        }
        assert!(nacks_between(&a, &mut b, t1, 0, 100).is_empty());
    }

    #[test]
    fn a_missing_frame_end_is_not_chased_before_the_jitter_is_known() {
        // The first packets: the jitter estimate is zero, and a packet held back by the
        // path's jitter would read as lost (a clean link's first frames drew
        // retransmissions). Its end is left to the next frame's gap.
        let t0 = test_instant();
        let (mut a, mut b) = pair(t0);
        connect_plain(&mut a, &mut b);
        let (media, _) = video_datagrams(&mut a, t0, &keyframe(5000));
        let n = media.len();
        for d in &media[..n - 1] {
            b.handle_datagram(t0, A.into(), d);
        }
        assert!(nacks_between(&a, &mut b, t0, 0, 30).is_empty());
    }

    #[test]
    fn before_the_peers_first_report_video_is_protected_against_the_incoming_loss() {
        let t0 = test_instant();
        // `a` hears 40 of `b`'s audio frames, those `lost` names lost on the way; no
        // report has come yet. Then `a` sends a keyframe: its FEC packets.
        let fec_after = |lost: &[u32], delay_bwe: bool| {
            let a = SessionConfig::new().set_seed(1).set_delay_bwe(delay_bwe);
            let (mut a, mut b) = (a.build(t0), pair(t0).1);
            connect_plain(&mut a, &mut b);
            for i in 0..40u32 {
                let now = t0 + Duration::from_millis(20) * i;
                b.send_audio(now, &[0xfc, 1, 2, 3], now).unwrap();
                b.handle_timeout(now);
                while let Some(t) = b.poll_transmit() {
                    let rtp = wire::classify(&t.contents) == Kind::Rtp;
                    if !(rtp && lost.contains(&i)) {
                        a.handle_datagram(now, B.into(), &t.contents);
                    }
                }
            }
            let (_, fec) = video_datagrams(&mut a, t0 + Duration::from_secs(1), &keyframe(5000));
            assert_eq!(a.stats().peer_video_loss, 0.0, "nothing reported yet");
            fec.len()
        };
        // A quarter of what comes in is lost: the first frame already has parity.
        let quarter: Vec<u32> = (0..40).filter(|i| i % 4 == 1).collect();
        let fec = fec_after(&quarter, false);
        assert!(fec >= 2, "{fec} FEC packets");
        // A clean path costs nothing.
        assert_eq!(fec_after(&[], false), 0);
        // Under delay-based control, before the peer's first estimate, the loss coming
        // in is as likely the peer's start overflowing its queue: no parity on it.
        assert_eq!(fec_after(&quarter, true), 0);
    }

    #[test]
    fn under_heavy_video_loss_each_retransmission_leaves_twice() {
        let t0 = test_instant();
        let (mut a, mut b) = pair(t0);
        connect_plain(&mut a, &mut b);
        let (media, _) = video_datagrams(&mut a, t0, &keyframe(3000));
        let seq = |i: usize| wire::parse_rtp(&media[i], 3).unwrap().header.seq;
        let rtx_for = |a: &mut Session, at: Instant, s: u16| {
            let nack = Rtcp::Nack {
                sender: b.audio_ssrc(),
                media: a.video_ssrc().unwrap(),
                seqs: vec![s],
            };
            a.handle_datagram(at, B.into(), &build_rtcp(&[nack]).unwrap());
            let rtx = a.video_rtx_ssrc().unwrap();
            let mut count = 0;
            for ms in 0..20 {
                a.handle_timeout(at + Duration::from_millis(ms));
                count += std::iter::from_fn(|| a.poll_transmit())
                    .filter(|t| wire::parse_rtp(&t.contents, 3).is_ok_and(|p| p.header.ssrc == rtx))
                    .count();
            }
            count
        };
        // Before any report, and after a clean one, once.
        let at = |ms| t0 + Duration::from_millis(ms);
        assert_eq!(rtx_for(&mut a, at(300), seq(0)), 1);
        video_loss_report(&mut a, &b, at(400), 0);
        assert_eq!(rtx_for(&mut a, at(400), seq(1)), 1);
        // The peer reports 20 % video loss: a lost retransmission would cost a round trip.
        video_loss_report(&mut a, &b, at(500), 51);
        assert_eq!(rtx_for(&mut a, at(500), seq(2)), 2);
    }

    #[test]
    fn padding_on_an_agreed_rtx_stream_is_admitted_as_a_probe_and_counted_apart() {
        let t0 = test_instant();
        let a = SessionConfig::new().set_seed(1).set_delay_bwe(true);
        let b = SessionConfig::new().set_seed(2).set_delay_bwe(true);
        let (mut a, mut b) = (a.build(t0), b.build(t0));
        connect_plain(&mut a, &mut b);
        let track = a.video_track().unwrap();
        let (rtx_pt, rtx_ssrc) = track.rtx.unwrap();
        let probe = |ssrc, seq: u16, at: Instant| {
            let header = wire::RtpHeader {
                marker: false,
                pt: rtx_pt,
                seq,
                timestamp: 1,
                ssrc,
                capture: Some(wire::AbsCaptureTime(a.clock.ntp(at))),
            };
            wire::build_padding(&header, 255, 3).unwrap()
        };
        // A cluster of 8 sent 1 ms apart, arriving 1 ms apart: 2.2 Mbit/s.
        for i in 0..8u16 {
            let at = t0 + Duration::from_millis(u64::from(i));
            b.handle_datagram(
                at + Duration::from_millis(20),
                A.into(),
                &probe(rtx_ssrc, i, at),
            );
        }
        let s = b.stats();
        assert_eq!(s.padding_received.packets, 8);
        assert_eq!(s.delay_bwe.probe.clusters, 1);
        assert!(s.delay_bwe.estimate_bps > 2_000_000, "{:?}", s.delay_bwe);
        // Nothing counted as media, nothing refused.
        assert_eq!(s.recv_video.counters.packets, 0);
        assert_eq!(s.refused, crate::session::Refused::default());
        // Padding from an SSRC not agreed is refused as such.
        b.handle_datagram(t0, A.into(), &probe(Ssrc(0xdead), 9, t0));
        assert_eq!(b.stats().refused.unknown_ssrc, 1);
        assert_eq!(b.stats().padding_received.packets, 8);
        // A bare header on the RTX stream, without the padding bit, is no probe: it
        // carries no original sequence number, a bad payload.
        let header = wire::RtpHeader {
            marker: false,
            pt: rtx_pt,
            seq: 10,
            timestamp: 1,
            ssrc: rtx_ssrc,
            capture: None,
        };
        let bare = wire::build_rtp(&header, &[], 3).unwrap();
        b.handle_datagram(t0 + Duration::from_millis(30), A.into(), &bare);
        assert_eq!(b.stats().refused.bad_payload, 1);
        assert_eq!(b.stats().padding_received.packets, 8);
    }

    #[test]
    fn malformed_fec_is_refused_as_a_bad_payload() {
        let t0 = test_instant();
        let (mut a, mut b) = pair(t0);
        // Plain: the FEC packet below is hand-crafted.
        connect_plain(&mut a, &mut b);
        let header = wire::RtpHeader {
            marker: false,
            pt: Pt(118),
            seq: 1,
            timestamp: 0,
            ssrc: a.video_rtx_ssrc().unwrap(),
            capture: None,
        };
        let datagram = wire::build_rtp(&header, &[0, 1, 2], 3).unwrap();
        b.handle_datagram(t0, A.into(), &datagram);
        assert_eq!(b.stats().refused.bad_payload, 1);
        assert_eq!(b.stats().video_fec.malformed, 1);
    }

    /// The goodbye as it leaves, read by the `rtcp` crate itself and walked byte by byte:
    /// every packet of the compound is whole words with no padding, and the BYE carries
    /// its sources and no reason, so there is no reason string to pad (RFC 3550 §6.6;
    /// Wireshark flagged our old BYE, an empty reason followed by RTCP padding, as "Reason
    /// string is not NULL padded").
    #[test]
    fn the_goodbye_on_the_wire_is_well_formed() {
        use rtcp::goodbye::Goodbye;

        let t0 = test_instant();
        let a = SessionConfig::new().set_seed(1).set_video(true);
        let b = SessionConfig::new().set_seed(2).set_video(true);
        let (mut a, mut b) = (a.build(t0), b.build(t0));
        connect_plain(&mut a, &mut b);
        a.close(t0);
        let datagram = a.poll_transmit().expect("a goodbye").contents;
        assert!(a.poll_transmit().is_none());

        let packets = rtcp::packet::unmarshal(&mut &datagram[..]).unwrap();
        let byes: Vec<&Goodbye> = packets
            .iter()
            .filter_map(|p| p.as_any().downcast_ref::<Goodbye>())
            .collect();
        assert_eq!(byes.len(), 1);
        let ours = [a.audio_ssrc().0, a.video_ssrc().unwrap().0];
        assert_eq!(byes[0].sources, ours);
        assert!(byes[0].reason.is_empty());

        let mut at = 0;
        let mut kinds = Vec::new();
        while at < datagram.len() {
            let header = &datagram[at..at + 4];
            assert_eq!(header[0] >> 6, 2, "version 2");
            assert_eq!(header[0] & 0x20, 0, "no padding in packet at {at}");
            let words = usize::from(u16::from_be_bytes([header[2], header[3]]));
            if header[1] == 203 {
                // Exactly the sources: no reason length byte, no reason, nothing to pad.
                assert_eq!(usize::from(header[0] & 0x1f), ours.len());
                assert_eq!(words, ours.len());
            }
            kinds.push(header[1]);
            at += 4 + 4 * words;
        }
        assert_eq!(at, datagram.len(), "the lengths add up to the datagram");
        assert_eq!(kinds.first(), Some(&201), "a report first (RFC 3550 §6.1)");
        assert_eq!(kinds.last(), Some(&203), "the goodbye last");
        // And the other side hears it.
        b.handle_datagram(t0, A.into(), &datagram);
        assert!(std::iter::from_fn(|| b.poll_event()).any(|e| e == Event::PeerLeft));
    }
}
