//! The session's RTCP: regular reports (SR/RR with SDES, RFC 3550 §6), RTT from
//! LSR/DLSR, NACK and PLI feedback (RFC 4585), and the reaction to the peer's reports.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{debug, trace};

use super::{Event, Session};
use crate::clock::from_ntp_short;
use crate::send::budget::Protection;
use crate::send::pacer::Class;
use crate::types::{SeqNo, Ssrc};
use crate::wire::{ReportBlock, Rtcp, build_rtcp};

/// RTT samples above this are treated as garbage (a bogus LSR/DLSR).
const MAX_RTT: Duration = Duration::from_secs(10);

impl Session {
    /// Admits the RTCP packets of a compound one by one (the path was checked): each
    /// must come from one of the peer's agreed SSRCs and be about ours, and feedback
    /// must have been agreed. Everything else is counted and ignored.
    pub(super) fn handle_rtcp(&mut self, now: Instant, packets: Vec<Rtcp>) {
        for packet in packets {
            trace!(?packet, "rtcp in");
            match packet {
                Rtcp::SenderReport {
                    ssrc, ntp, reports, ..
                } => {
                    let Some(rx) = self.streams.get_mut(ssrc) else {
                        self.refused.rtcp_foreign_ssrc += 1;
                        continue;
                    };
                    rx.stream.on_sender_report(now, ntp);
                    self.handle_report_blocks(now, &reports);
                }
                Rtcp::ReceiverReport { ssrc, reports } => {
                    if self.streams.is_main(ssrc) {
                        self.handle_report_blocks(now, &reports);
                    } else {
                        self.refused.rtcp_foreign_ssrc += 1;
                    }
                }
                Rtcp::Nack {
                    sender,
                    media,
                    seqs,
                } => {
                    if !self.streams.is_main(sender) {
                        self.refused.rtcp_foreign_ssrc += 1;
                        continue;
                    }
                    self.handle_nack(now, media, &seqs);
                }
                Rtcp::Pli { sender, media } => {
                    if !self.streams.is_main(sender) || self.video_ssrc() != Some(media) {
                        self.refused.rtcp_foreign_ssrc += 1;
                    } else if !self.agreement.is_some_and(|a| a.pli && a.video.is_some()) {
                        self.refused.rtcp_not_agreed += 1;
                    } else {
                        self.keyframes_requested_by_peer += 1;
                        self.keyframe_asked = true;
                        trace!("pli in");
                        self.push_event(Event::KeyframeRequested);
                    }
                }
                Rtcp::Goodbye { ssrcs } => {
                    // Only the peer's own agreed streams leaving ends the call (a BYE
                    // may arrive before any of its media did).
                    if ssrcs.iter().any(|s| self.streams.is_main(*s)) {
                        self.push_event(Event::PeerLeft);
                    } else {
                        self.refused.rtcp_foreign_ssrc += 1;
                    }
                }
                Rtcp::Remb {
                    sender,
                    bitrate_bps,
                    ssrcs,
                } => {
                    let ours = self.video_ssrc();
                    if !self.streams.is_main(sender)
                        || !(ssrcs.is_empty() || ssrcs.iter().any(|s| Some(*s) == ours))
                    {
                        self.refused.rtcp_foreign_ssrc += 1;
                    } else if !self.config.delay_bwe || !self.remb_agreed() {
                        self.refused.rtcp_not_agreed += 1;
                    } else {
                        self.on_peer_estimate(now, bitrate_bps);
                    }
                }
                Rtcp::TransportFeedback(fb) => {
                    if !self.streams.is_main(fb.sender) {
                        self.refused.rtcp_foreign_ssrc += 1;
                    } else if self
                        .agreement
                        .is_none_or(|a| a.transport_seq_ext_id.is_none())
                    {
                        self.refused.rtcp_not_agreed += 1;
                    } else if self.in_flight.on_feedback(now, &fb) {
                        trace!(
                            base = fb.base_seq,
                            n = fb.arrivals.len(),
                            "transport feedback in"
                        );
                        self.on_forward_queue(now);
                        if let (Some(red), Some(loss)) =
                            (self.red_tx.as_mut(), self.in_flight.path_loss())
                        {
                            red.on_path_loss(loss);
                        }
                    } else {
                        // It named packets we never sent.
                        self.refused.bad_feedback += 1;
                    }
                }
                Rtcp::Cname { .. } => {}
            }
        }
    }

    /// Transport-cc feedback on the peer's packets, when one is due (every 50 ms while
    /// they come; only where the peer stamps transport-wide sequence numbers).
    pub(super) fn send_transport_feedback(&mut self, now: Instant) {
        // The media SSRC is informational (the numbers are transport-wide).
        let media = self
            .streams
            .iter()
            .next()
            .map_or(Ssrc(0), |rx| rx.stream.ssrc());
        let sender = self.audio_ssrc();
        if let Some(fb) = self.arrivals.poll_feedback(now, sender, media) {
            self.send_feedback(Rtcp::TransportFeedback(fb));
        }
    }

    /// Whether `kind`'s sending side was agreed with NACK (and retransmissions).
    fn nack_agreed(&self, video: bool) -> bool {
        let kind = self
            .agreement
            .and_then(|a| if video { a.video } else { a.audio });
        kind.is_some_and(|k| k.nack && k.send.rtx.is_some())
    }

    fn handle_report_blocks(&mut self, now: Instant, blocks: &[ReportBlock]) {
        for block in blocks {
            let audio = block.ssrc == self.audio_ssrc();
            let video = Some(block.ssrc) == self.video_ssrc();
            if !audio && !video {
                self.refused.rtcp_foreign_ssrc += 1;
                continue;
            }
            if block.lsr != 0 {
                // RFC 3550 §6.4.1: RTT = A − LSR − DLSR, in 1/65536 s.
                let a = self.clock.ntp_mid(now);
                let units = a.wrapping_sub(block.lsr).wrapping_sub(block.dlsr);
                let sample = from_ntp_short(units);
                if sample < MAX_RTT {
                    // RFC 6298 §2 smoothing: SRTT and RTTVAR.
                    let srtt = self.rtt.map_or(sample, |r| (r * 7 + sample) / 8);
                    let dev = sample.abs_diff(srtt);
                    self.rtt_var = match self.rtt {
                        Some(_) => (self.rtt_var * 3 + dev) / 4,
                        None => sample / 2,
                    };
                    self.rtt = Some(srtt);
                    trace!(?sample, ?srtt, "rtt");
                }
            }
            let fraction = f32::from(block.fraction_lost) / 256.0;
            if audio {
                self.peer_audio_loss = fraction;
                // Redundancy follows reports that rest on a second of our audio: the
                // first ones (the first comes ~0.1 s in) tell nothing of the link.
                let covered = (block.highest_seq as u16)
                    .wrapping_sub(self.audio_tx.params().first_seq)
                    .wrapping_add(1);
                let known = self.red_known_link || covered >= super::RED_EVIDENCE;
                self.red_known_link = known;
                if let Some(red) = self.red_tx.as_mut().filter(|_| known) {
                    red.on_loss_report(fraction);
                }
                self.push_event(Event::AudioLoss { fraction });
            } else {
                self.peer_video_loss = fraction;
                self.video_reported = true;
                self.video_reports += 1;
                // Reports are a second apart and noisy: protect against the recent
                // mean, but react to a rise at once.
                self.protect_video_against(fraction.max((self.fec_loss + fraction) / 2.0));
                self.bwe.on_report(f64::from(fraction));
                self.measure_rates(now);
                self.apply_target(now);
            }
        }
    }

    /// Whether REMB may flow: video with RTCP feedback agreed (a peer that takes NACK
    /// and PLI ignores feedback it does not know, as RFC 4585 §4.2 asks).
    pub(super) fn remb_agreed(&self) -> bool {
        self.agreement.is_some_and(|a| a.pli && a.video.is_some())
    }

    /// Our estimate of the peer's send rate, as a REMB about its video stream (REMB
    /// names SSRCs; the rate covers all the peer sends).
    fn estimate_packet(&mut self) -> Option<Rtcp> {
        if !self.config.delay_bwe || !self.remb_agreed() {
            return None;
        }
        let media = self
            .streams
            .kind(super::MediaKind::Video)
            .map(|rx| rx.stream.ssrc())?;
        let bitrate_bps = self.delay_bwe.take_report()?;
        self.estimate_sent_at = Some(self.now);
        Some(Rtcp::Remb {
            sender: self.audio_ssrc(),
            bitrate_bps,
            ssrcs: vec![media],
        })
    }

    /// When our estimate is next due to the peer by [`super::ESTIMATE_INTERVAL`] (after
    /// the first, which goes as soon as there is one). Not while a queue stands: the
    /// path is at its capacity, each fall of the estimate goes at once, and a repeat
    /// would only wait in the queue of the way back (it cost the lab's drop from 2.5 to
    /// 0.5 Mbit/s 0.2 points more loss after the warm-up).
    pub(super) fn estimate_due_at(&self) -> Option<Instant> {
        self.estimate_sent_at
            .filter(|_| self.config.delay_bwe && self.remb_agreed())
            .filter(|_| !self.delay_bwe.queue_stands())
            .map(|at| at + super::ESTIMATE_INTERVAL)
    }

    /// Sends the estimate now (it fell since the last report, a probe raised it, or it
    /// is due).
    pub(super) fn send_estimate(&mut self) {
        if let Some(remb) = self.estimate_packet() {
            self.send_feedback(remb);
        }
    }

    fn handle_nack(&mut self, now: Instant, media: Ssrc, seqs: &[u16]) {
        let rtt = self.rtt();
        let video = if media == self.audio_ssrc() {
            false
        } else if Some(media) == self.video_ssrc() {
            true
        } else {
            self.refused.rtcp_foreign_ssrc += 1;
            return;
        };
        if !self.nack_agreed(video) {
            self.refused.rtcp_not_agreed += 1;
            return;
        }
        // Within the send budget (see `send::budget`), in the order the NACK names them.
        let budget = &mut self.budget;
        if video {
            if let Some(stream) = self.video_tx.as_mut() {
                let admit = |len| budget.admit(now, Protection::VideoRtx, len);
                for d in stream.handle_nack(now, seqs, rtt, admit) {
                    self.pacer.push(Class::Retransmission, d);
                }
            }
        } else {
            if let Some(red) = self.red_tx.as_mut() {
                red.on_nack(seqs);
            }
            let admit = |len| budget.admit(now, Protection::AudioRtx, len);
            for d in self.audio_tx.handle_nack(now, seqs, rtt, admit) {
                self.pacer.push(Class::Audio, d);
            }
        }
    }

    /// A feedback packet: an empty RR (so the compound starts with a report) plus `fb`.
    fn send_feedback(&mut self, fb: Rtcp) {
        let rr = Rtcp::ReceiverReport {
            ssrc: self.audio_ssrc(),
            reports: Vec::new(),
        };
        match build_rtcp(&[rr, fb]) {
            Ok(d) => self.push_unpaced(d),
            Err(e) => debug!(error = %e, "could not build RTCP feedback"),
        }
    }

    pub(super) fn send_nack(&mut self, media: Ssrc, seqs: &[SeqNo]) {
        trace!(%media, ?seqs, "nack out");
        let seqs = seqs.iter().map(|s| s.wire()).collect();
        let sender = self.audio_ssrc();
        self.send_feedback(Rtcp::Nack {
            sender,
            media,
            seqs,
        });
    }

    pub(super) fn send_pli(&mut self) {
        if !self.agreement.is_some_and(|a| a.pli) {
            return;
        }
        let Some(media) = self
            .streams
            .kind(super::MediaKind::Video)
            .map(|rx| rx.stream.ssrc())
        else {
            return;
        };
        let sender = self.audio_ssrc();
        self.send_feedback(Rtcp::Pli { sender, media });
    }

    pub(super) fn send_goodbye(&mut self, now: Instant) {
        let mut ssrcs = vec![self.audio_ssrc()];
        ssrcs.extend(self.video_ssrc());
        let rr = Rtcp::ReceiverReport {
            ssrc: self.audio_ssrc(),
            reports: Vec::new(),
        };
        trace!(?now, "bye");
        match build_rtcp(&[rr, Rtcp::Goodbye { ssrcs }]) {
            Ok(d) => self.push_unpaced(d),
            Err(e) => debug!(error = %e, "could not build RTCP BYE"),
        }
    }

    /// The regular compound report: SR (or RR) with blocks for the peer's streams,
    /// an SR for our video stream, and SDES CNAME.
    pub(super) fn send_reports(&mut self, now: Instant) {
        let mut blocks = Vec::new();
        for rx in self.streams.iter_mut() {
            blocks.extend(rx.stream.report(now, &self.clock));
        }
        let ntp = self.clock.ntp(now);
        let ssrc = self.audio_ssrc();
        let mut packets = Vec::new();
        let sr = |stream: &crate::send::SendStream, reports: Vec<ReportBlock>| {
            let c = stream.counters();
            Rtcp::SenderReport {
                ssrc: stream.params().ssrc,
                ntp,
                rtp_time: stream.rtp_time(now).unwrap_or(stream.params().first_ts),
                packets: c.packets as u32,
                octets: c.payload_bytes as u32,
                reports,
            }
        };
        if self.audio_tx.has_sent() {
            packets.push(sr(&self.audio_tx, blocks));
        } else {
            packets.push(Rtcp::ReceiverReport {
                ssrc,
                reports: blocks,
            });
        }
        if let Some(video) = self.video_tx.as_ref().filter(|v| v.has_sent()) {
            packets.push(sr(video, Vec::new()));
        }
        packets.extend(self.estimate_packet());
        packets.push(Rtcp::Cname {
            ssrc,
            cname: Bytes::from(self.config.cname.clone().into_bytes()),
        });
        match build_rtcp(&packets) {
            Ok(d) => self.push_unpaced(d),
            Err(e) => debug!(error = %e, "could not build RTCP report"),
        }
    }
}
