//! The send side: one [`SendStream`] per outgoing media stream (packetization, sequence
//! numbers, the RTX history), plus the pacer, the loss-based bitrate controller, the
//! send budget that holds everything sent to the peer's delay-based estimate, and the
//! probe clusters that look for more.

pub mod budget;
pub mod bwe;
pub mod history;
pub mod inflight;
pub mod pacer;
pub mod probe;
pub mod red;

use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{debug, trace};

use self::history::{History, Sent};
use crate::fec;
use crate::types::{Extender, MediaTime, Pt, SeqNo, Ssrc};
use crate::wire::{AbsCaptureTime, RtpHeader, WireError, build_padding, build_rtp};

/// Identity and clock of an outgoing stream.
#[derive(Debug, Clone, Copy)]
pub struct StreamParams {
    /// Media SSRC.
    pub ssrc: Ssrc,
    /// Media payload type.
    pub pt: Pt,
    /// RTX SSRC (RFC 4588 session-multiplexed: its own SSRC).
    pub rtx_ssrc: Ssrc,
    /// RTX payload type.
    pub rtx_pt: Pt,
    /// RTP clock rate.
    pub rate: u32,
    /// First sequence number.
    pub first_seq: u16,
    /// First RTP timestamp.
    pub first_ts: u32,
    /// abs-capture-time extension id.
    pub ext_id: u8,
    /// How long packets stay resendable.
    pub history: Duration,
    /// Send every retransmission twice. Worth it for audio: its packets are ~100 bytes
    /// and a lost retransmission usually means a concealed frame. Video turns it on when
    /// the peer reports heavy loss: a lost retransmission costs a round trip more, and
    /// two in a row a freeze.
    pub rtx_twice: bool,
}

/// Send-side counters of one stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SendCounters {
    /// Media packets sent.
    pub packets: u64,
    /// Media payload bytes sent.
    pub payload_bytes: u64,
    /// Datagram bytes sent, media only.
    pub bytes: u64,
    /// RTX packets sent.
    pub rtx_packets: u64,
    /// RTX datagram bytes sent.
    pub rtx_bytes: u64,
    /// FEC packets sent (on the RTX SSRC).
    pub fec_packets: u64,
    /// FEC datagram bytes sent.
    pub fec_bytes: u64,
    /// NACKed packets not resent: too old, already resent within an RTT, or superseded
    /// by a keyframe the peer asked for.
    pub nacks_refused: u64,
    /// Packets that carried earlier frames again (RFC 2198 redundancy).
    pub red_packets: u64,
    /// Payload bytes spent on redundancy (RED headers and repeated frames).
    pub red_bytes: u64,
    /// RTX datagram bytes the send budget refused, each packet counted once however
    /// often it is NACKed again: retransmissions wanted but not sent.
    pub rtx_refused_bytes: u64,
    /// Padding-only packets sent on the RTX SSRC (probes for capacity).
    pub padding_packets: u64,
    /// Their datagram bytes.
    pub padding_bytes: u64,
    /// Packets made (media, FEC and retransmissions; `packets` counts the media among
    /// them) but dropped unsent from the pacer: a keyframe the peer asked for
    /// superseded them (see [`SendStream::supersede_before`]).
    pub superseded_packets: u64,
    /// Their datagram bytes.
    pub superseded_bytes: u64,
}

/// One outgoing stream.
#[derive(Debug)]
pub struct SendStream {
    params: StreamParams,
    next_seq: SeqNo,
    rtx_seq: u16,
    history: History,
    counters: SendCounters,
    /// The RTP time of the latest frame, and its capture instant, for SR extrapolation.
    last_frame: Option<(u64, Instant)>,
    /// Nothing before this is resent: a keyframe the peer asked for starts here.
    superseded_before: Option<SeqNo>,
}

/// One frame to packetize.
#[derive(Debug, Clone, Copy)]
pub struct FrameMeta {
    /// RTP timestamp ticks (unwrapped; only the low 32 bits go on the wire).
    pub ticks: u64,
    /// Capture instant.
    pub capture: Instant,
    /// NTP capture time for the extension.
    pub capture_ntp: u64,
}

impl SendStream {
    /// A stream with `params`.
    pub fn new(params: StreamParams) -> Self {
        Self {
            next_seq: SeqNo(Extender::<16>::new().extend(u64::from(params.first_seq))),
            rtx_seq: params.first_seq.wrapping_add(0x8000),
            history: History::new(params.history),
            counters: SendCounters::default(),
            last_frame: None,
            superseded_before: None,
            params,
        }
    }

    /// Identity.
    pub fn params(&self) -> &StreamParams {
        &self.params
    }

    /// Counters.
    pub fn counters(&self) -> SendCounters {
        self.counters
    }

    /// Builds the datagrams of one frame from its payloads; the marker is set on the last.
    pub fn packetize(
        &mut self,
        now: Instant,
        frame: FrameMeta,
        payloads: Vec<Bytes>,
    ) -> Result<Vec<Bytes>, WireError> {
        let count = payloads.len();
        let mut out = Vec::with_capacity(count);
        for (i, payload) in payloads.into_iter().enumerate() {
            out.push(self.send_one(now, frame, i + 1 == count, None, payload)?);
        }
        Ok(out)
    }

    /// Builds the datagram of one audio frame: `payload` as is, or, with `red`, the RED
    /// payload (RFC 2198) that carries it under the RED payload type. The history keeps
    /// the frame alone, so a retransmission is plain Opus on the RTX stream.
    pub fn packetize_audio(
        &mut self,
        now: Instant,
        frame: FrameMeta,
        payload: Bytes,
        red: Option<(Pt, Bytes)>,
    ) -> Result<Bytes, WireError> {
        self.send_one(now, frame, true, red, payload)
    }

    fn send_one(
        &mut self,
        now: Instant,
        frame: FrameMeta,
        marker: bool,
        wire: Option<(Pt, Bytes)>,
        payload: Bytes,
    ) -> Result<Bytes, WireError> {
        let ts = (u64::from(self.params.first_ts) + frame.ticks) as u32;
        self.last_frame = Some((frame.ticks, frame.capture));
        let seq = self.next_seq;
        let capture = Some(AbsCaptureTime(frame.capture_ntp));
        let (pt, on_wire) = wire.unwrap_or((self.params.pt, payload.clone()));
        let header = RtpHeader {
            marker,
            pt,
            seq: seq.wire(),
            timestamp: ts,
            ssrc: self.params.ssrc,
            capture,
        };
        let datagram = build_rtp(&header, &on_wire, self.params.ext_id)?;
        self.next_seq = seq.next();
        self.counters.packets += 1;
        self.counters.payload_bytes += payload.len() as u64;
        self.counters.bytes += datagram.len() as u64;
        if pt != self.params.pt {
            self.counters.red_packets += 1;
            self.counters.red_bytes += on_wire.len().saturating_sub(payload.len()) as u64;
        }
        trace!(ssrc = %self.params.ssrc, %seq, ts, marker, len = datagram.len(), "rtp out");
        self.history.push(
            now,
            Sent {
                seq,
                timestamp: ts,
                marker,
                capture,
                payload,
                sent_at: now,
                resent_at: None,
                resends: 0,
                refused: false,
            },
        );
        Ok(datagram)
    }

    /// RTX datagrams for NACKed wire sequence numbers (RFC 4588 §4: the original
    /// sequence number leads the payload), each resent at most once per half `rtt`, in
    /// the order asked, while `admit` (the send budget, given each datagram's size) lets
    /// them go. A packet refused is not marked resent: a later NACK may still get it.
    ///
    /// Half, not a whole RTT: the receiver's copy of a request (a few ms after it) is
    /// still refused, but its retry (an RTT and a quarter after) is answered even when
    /// jitter brings it early or our RTT estimate is above the receiver's. In the lab
    /// (20 % loss, 50 ms RTT, 10 ms jitter) a whole RTT refused such retries and cost
    /// each of them another round trip: a frame 70-100 ms later, a freeze.
    pub fn handle_nack(
        &mut self,
        now: Instant,
        seqs: &[u16],
        rtt: Duration,
        mut admit: impl FnMut(usize) -> bool,
    ) -> Vec<Bytes> {
        let Some(newest) = self.history.newest() else {
            return Vec::new();
        };
        let mut extender = Extender::<16>::new();
        let base = extender.extend(newest.0 & 0xffff);
        let mut out = Vec::new();
        for &wire in seqs {
            let extended = extender.peek(u64::from(wire));
            let Some(seq) = (newest.0 + extended).checked_sub(base).map(SeqNo) else {
                continue;
            };
            if self.superseded_before.is_some_and(|first| seq < first) {
                self.counters.nacks_refused += 1;
                trace!(%seq, "not resending: superseded by a keyframe");
                continue;
            }
            let sent = match self.history.resendable(now, seq, rtt / 2) {
                Ok(sent) => sent,
                Err(refusal) => {
                    self.counters.nacks_refused += 1;
                    debug!(%seq, ?refusal, "not resending");
                    continue;
                }
            };
            let mut payload = Vec::with_capacity(sent.payload.len() + 2);
            payload.extend_from_slice(&sent.seq.wire().to_be_bytes());
            payload.extend_from_slice(&sent.payload);
            let header = RtpHeader {
                marker: sent.marker,
                pt: self.params.rtx_pt,
                seq: self.rtx_seq,
                timestamp: sent.timestamp,
                ssrc: self.params.rtx_ssrc,
                capture: sent.capture,
            };
            // A packet asked for again lost its first retransmission: send one copy more
            // (rare, ~loss² of the traffic) so one more loss does not cost another RTT:
            // two, or three where every retransmission leaves twice (at 20 % loss both
            // copies are lost one time in 25; three, one in 125). (`resends` counts the
            // earlier ones: this is at least the second.)
            let copies = match (self.params.rtx_twice, sent.resends) {
                (true, 0) | (false, 1..) => 2,
                (true, 1..) => 3,
                (false, 0) => 1,
            };
            for copy in 0..copies {
                let header = RtpHeader {
                    seq: self.rtx_seq,
                    ..header.clone()
                };
                match build_rtp(&header, &payload, self.params.ext_id) {
                    Ok(d) if !admit(d.len()) => {
                        trace!(%seq, copy, "rtx over the send budget");
                        if copy == 0 && self.history.mark_refused(seq) {
                            self.counters.rtx_refused_bytes += d.len() as u64;
                        }
                        break;
                    }
                    Ok(d) => {
                        if copy == 0 {
                            self.history.mark_resent(now, seq);
                        }
                        self.rtx_seq = self.rtx_seq.wrapping_add(1);
                        self.counters.rtx_packets += 1;
                        self.counters.rtx_bytes += d.len() as u64;
                        trace!(%seq, "rtx out");
                        out.push(d);
                    }
                    Err(e) => debug!(%seq, error = %e, "could not build RTX"),
                }
            }
        }
        out
    }

    /// A padding-only packet on the RTX SSRC (a probe, see `send::probe`): `padding`
    /// bytes of padding, its RTP timestamp the probe cluster's id and its
    /// abs-capture-time its send time, `send_ntp`, which the receiver times it by.
    pub fn padding(
        &mut self,
        cluster: u32,
        send_ntp: u64,
        padding: u8,
    ) -> Result<Bytes, WireError> {
        let header = RtpHeader {
            marker: false,
            pt: self.params.rtx_pt,
            seq: self.rtx_seq,
            timestamp: cluster,
            ssrc: self.params.rtx_ssrc,
            capture: Some(AbsCaptureTime(send_ntp)),
        };
        let d = build_padding(&header, padding, self.params.ext_id)?;
        self.rtx_seq = self.rtx_seq.wrapping_add(1);
        self.counters.padding_packets += 1;
        self.counters.padding_bytes += d.len() as u64;
        Ok(d)
    }

    /// Whether every retransmission leaves twice from now on (see
    /// [`StreamParams::rtx_twice`]).
    pub fn set_rtx_twice(&mut self, twice: bool) {
        self.params.rtx_twice = twice;
    }

    /// The sequence number the next media packet gets.
    pub fn next_seq(&self) -> SeqNo {
        self.next_seq
    }

    /// A keyframe the peer asked for starts at `seq`: the peer decodes nothing before it
    /// (its buffer skipped to the next keyframe), so nothing before it is resent, and
    /// the `packets` and `bytes` of earlier frames still waiting in the pacer were
    /// dropped unsent.
    pub fn supersede_before(&mut self, seq: SeqNo, packets: u64, bytes: u64) {
        self.superseded_before = Some(seq);
        self.counters.superseded_packets += packets;
        self.counters.superseded_bytes += bytes;
    }

    /// FEC datagrams protecting the frame whose media packets were `payloads`, the first
    /// numbered `first`: `parity(n)` parity packets per group of at most
    /// [`fec::MAX_PROTECTED`] packets, sent on the RTX SSRC with payload type `fec_pt`.
    pub fn protect(
        &mut self,
        fec_pt: Pt,
        first: SeqNo,
        frame: FrameMeta,
        payloads: &[Bytes],
        mut parity: impl FnMut(usize) -> usize,
    ) -> Vec<Bytes> {
        let ts = (u64::from(self.params.first_ts) + frame.ticks) as u32;
        let n = payloads.len();
        let media: Vec<fec::MediaPacket> = payloads
            .iter()
            .enumerate()
            .map(|(i, payload)| fec::MediaPacket {
                seq: first + i as u64,
                ts,
                marker: i + 1 == n,
                pt: self.params.pt.0,
                payload: payload.clone(),
            })
            .collect();
        let mut out = Vec::new();
        for group in media.chunks(fec::MAX_PROTECTED) {
            for payload in fec::protect(group, parity(group.len())) {
                let header = RtpHeader {
                    marker: false,
                    pt: fec_pt,
                    seq: self.rtx_seq,
                    timestamp: ts,
                    ssrc: self.params.rtx_ssrc,
                    capture: None,
                };
                match build_rtp(&header, &payload, self.params.ext_id) {
                    Ok(d) => {
                        self.rtx_seq = self.rtx_seq.wrapping_add(1);
                        self.counters.fec_packets += 1;
                        self.counters.fec_bytes += d.len() as u64;
                        out.push(d);
                    }
                    Err(e) => debug!(error = %e, "could not build FEC"),
                }
            }
        }
        out
    }

    /// RTP time at `now`, extrapolated from the latest frame (for sender reports).
    pub fn rtp_time(&self, now: Instant) -> Option<u32> {
        let (ticks, at) = self.last_frame?;
        let since = MediaTime::from_duration(now.saturating_duration_since(at), self.params.rate);
        Some((u64::from(self.params.first_ts) + ticks + since.ticks()) as u32)
    }

    /// Whether anything was sent (an SR is sent only then).
    pub fn has_sent(&self) -> bool {
        self.counters.packets > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_instant;
    use crate::wire::parse_rtp;

    fn stream(first_seq: u16) -> SendStream {
        SendStream::new(StreamParams {
            ssrc: Ssrc(1),
            pt: Pt(96),
            rtx_ssrc: Ssrc(2),
            rtx_pt: Pt(97),
            rate: 90_000,
            first_seq,
            first_ts: u32::MAX - 10,
            ext_id: 3,
            history: Duration::from_secs(1),
            rtx_twice: false,
        })
    }

    fn frame(at: Instant) -> FrameMeta {
        FrameMeta {
            ticks: 3000,
            capture: at,
            capture_ntp: 77,
        }
    }

    #[test]
    fn rtx_carries_the_original_sequence_number_across_wrap() {
        let t0 = test_instant();
        let mut s = stream(65_534);
        let payloads = vec![
            Bytes::from_static(b"a"),
            Bytes::from_static(b"b"),
            Bytes::from_static(b"c"),
        ];
        let out = s.packetize(t0, frame(t0), payloads).unwrap();
        let last = parse_rtp(&out[2], 3).unwrap();
        assert_eq!(last.header.seq, 0);
        assert!(last.header.marker);
        assert_eq!(last.header.timestamp, 3000 - 11);
        let rtx = s.handle_nack(t0, &[65_535, 0], Duration::from_millis(50), |_| true);
        assert_eq!(rtx.len(), 2);
        let p = parse_rtp(&rtx[1], 3).unwrap();
        assert_eq!((p.header.ssrc, p.header.pt), (Ssrc(2), Pt(97)));
        assert_eq!(&p.payload[..], &[0, 0, b'c']);
        assert_eq!(p.header.capture, Some(AbsCaptureTime(77)));
        // At most once per RTT.
        assert!(
            s.handle_nack(t0, &[0], Duration::from_millis(50), |_| true)
                .is_empty()
        );
        assert_eq!(s.counters().nacks_refused, 1);
    }

    #[test]
    fn nothing_before_a_keyframe_the_peer_asked_for_is_resent() {
        let t0 = test_instant();
        let mut s = stream(100);
        let payloads = vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")];
        s.packetize(t0, frame(t0), payloads).unwrap();
        let key = s.next_seq();
        s.packetize(t0, frame(t0), vec![Bytes::from_static(b"k")])
            .unwrap();
        s.supersede_before(key, 3, 2400);
        let rtt = Duration::from_millis(50);
        let rtx = s.handle_nack(t0, &[100, 101, 102], rtt, |_| true);
        assert_eq!(rtx.len(), 1);
        assert_eq!(&parse_rtp(&rtx[0], 3).unwrap().payload[..], &[0, 102, b'k']);
        let c = s.counters();
        assert_eq!(c.nacks_refused, 2);
        assert_eq!((c.superseded_packets, c.superseded_bytes), (3, 2400));
    }

    #[test]
    fn retransmissions_leave_twice_once_asked_to() {
        let t0 = test_instant();
        let mut s = stream(100);
        let payloads = vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")];
        s.packetize(t0, frame(t0), payloads).unwrap();
        let rtt = Duration::from_millis(50);
        assert_eq!(s.handle_nack(t0, &[100], rtt, |_| true).len(), 1);
        s.set_rtx_twice(true);
        let twice = s.handle_nack(t0, &[101], rtt, |_| true);
        assert_eq!(twice.len(), 2);
        // Two copies of the same packet, each with its own RTX sequence number.
        let (a, b) = (
            parse_rtp(&twice[0], 3).unwrap(),
            parse_rtp(&twice[1], 3).unwrap(),
        );
        assert_eq!(a.payload, b.payload);
        assert_eq!(b.header.seq, a.header.seq.wrapping_add(1));
    }

    #[test]
    fn a_retry_is_answered_after_half_a_round_trip_but_a_copy_of_the_request_is_not() {
        let t0 = test_instant();
        let mut s = stream(100);
        s.packetize(t0, frame(t0), vec![Bytes::from_static(b"a")])
            .unwrap();
        let rtt = Duration::from_millis(80);
        let ms = Duration::from_millis;
        assert_eq!(s.handle_nack(t0, &[100], rtt, |_| true).len(), 1);
        // The request's copy, 10 ms later (20 ms with jitter): the first is on its way.
        assert!(s.handle_nack(t0 + ms(20), &[100], rtt, |_| true).is_empty());
        // The receiver's retry, earlier than our RTT (its estimate is lower, or jitter
        // held the first request back): its retransmission was lost, resend it (twice,
        // a second loss would cost another round trip).
        assert_eq!(s.handle_nack(t0 + ms(65), &[100], rtt, |_| true).len(), 2);
        assert_eq!(s.counters().nacks_refused, 1);
    }

    #[test]
    fn under_heavy_loss_a_retried_packet_leaves_three_times() {
        let t0 = test_instant();
        let mut s = stream(100);
        s.set_rtx_twice(true);
        s.packetize(t0, frame(t0), vec![Bytes::from_static(b"a")])
            .unwrap();
        let rtt = Duration::from_millis(50);
        assert_eq!(s.handle_nack(t0, &[100], rtt, |_| true).len(), 2);
        assert_eq!(s.handle_nack(t0 + rtt, &[100], rtt, |_| true).len(), 3);
    }

    #[test]
    fn padding_goes_on_the_rtx_stream_with_its_cluster_and_send_time() {
        let mut s = stream(100);
        let a = parse_rtp(&s.padding(4, 99, 200).unwrap(), 3).unwrap();
        let b = parse_rtp(&s.padding(4, 100, 200).unwrap(), 3).unwrap();
        assert_eq!((a.header.ssrc, a.header.pt), (Ssrc(2), Pt(97)));
        assert_eq!(
            (a.header.timestamp, a.header.capture),
            (4, Some(AbsCaptureTime(99)))
        );
        assert!(a.payload.is_empty());
        assert_eq!(b.header.seq, a.header.seq.wrapping_add(1));
        // Not media: the media counters stay at zero.
        let c = s.counters();
        assert_eq!((c.packets, c.rtx_packets, c.padding_packets), (0, 0, 2));
        assert!(c.padding_bytes > 400);
    }

    #[test]
    fn nack_for_unknown_packets_is_ignored() {
        let t0 = test_instant();
        let mut s = stream(100);
        assert!(
            s.handle_nack(t0, &[100], Duration::ZERO, |_| true)
                .is_empty()
        );
        s.packetize(t0, frame(t0), vec![Bytes::from_static(b"a")])
            .unwrap();
        assert!(
            s.handle_nack(t0, &[5000, 99], Duration::ZERO, |_| true)
                .is_empty()
        );
    }
}
