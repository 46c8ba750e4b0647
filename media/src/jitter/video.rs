//! The video frame buffer: assembles H.264 access units from RTP packets and emits
//! only decodable frames, in order.
//!
//! A frame is its packets with one RTP timestamp, from the packet after the previous
//! frame's last to the one with the marker bit. A delta frame is decodable only if
//! every frame since the last keyframe was. When the next frame stays incomplete
//! (waiting for retransmissions) past `max_wait`, or a complete keyframe is already
//! waiting behind it, the buffer skips ahead to the next keyframe and asks for one
//! (PLI, rate-limited). Freezes are counted with the WebRTC definition: an inter-frame
//! gap over max(3 × average, average + 150 ms).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{debug, trace};

use crate::payload::h264::{self, PacketInfo};
use crate::types::SeqNo;

/// Packets held at most (about 1.5 MB of video).
const MAX_PACKETS: usize = 1500;
/// Inter-frame gaps averaged for the freeze rule.
const FREEZE_WINDOW: usize = 30;
/// Timestamps of finished frames remembered, so their stragglers count as late (about
/// four seconds at 30 fps, longer than any retransmission takes).
const CLOSED_WINDOW: usize = 128;
/// Frames whose lateness sets the playout delay (five seconds at 30 fps).
const LATENESS_WINDOW: usize = 150;
/// The share of recent frames the playout delay waits for: the rest are shown late,
/// as a stutter rather than a freeze.
const LATENESS_QUANTILE: f64 = 0.9;

/// A decodable access unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoFrame {
    /// Annex-B byte stream.
    pub data: Bytes,
    /// Extended RTP timestamp (90 kHz).
    pub rtp_time: u64,
    /// When the sender captured it, on our clock.
    pub capture_time: Option<Instant>,
    /// Whether it is a keyframe (IDR).
    pub keyframe: bool,
}

/// Video receive statistics.
///
/// Every frame of which a packet arrived is accounted for once: `received` = `frames` +
/// `dropped` + `pending`, and `dropped` is the sum of its reasons.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct VideoPlayoutStats {
    /// Distinct frames (RTP timestamps) of which at least one packet was taken in.
    pub received: u64,
    /// Frames emitted.
    pub frames: u64,
    /// Keyframes emitted.
    pub keyframes: u64,
    /// Frames discarded, for any of the reasons below.
    pub dropped: u64,
    /// Frames given up incomplete: a later frame was emitted while they missed packets.
    pub dropped_incomplete: u64,
    /// Complete frames whose payload did not depacketize.
    pub dropped_undecodable: u64,
    /// Frames evicted because the buffer was full, or forgotten when the stream restarted.
    pub dropped_overflow: u64,
    /// Frames held, neither emitted nor dropped yet.
    pub pending: u64,
    /// Times the buffer skipped ahead to a keyframe.
    pub skips: u64,
    /// Keyframe requests (PLI) issued.
    pub keyframe_requests: u64,
    /// Packets rejected by the depacketizer.
    pub bad_packets: u64,
    /// Packets that arrived after their frame was emitted or skipped.
    pub late_packets: u64,
    /// Freezes (WebRTC definition).
    pub freezes: u64,
    /// Total time spent frozen.
    #[serde(serialize_with = "crate::session::stats::ms")]
    pub freeze_time: Duration,
}

#[derive(Debug)]
struct Packet {
    ts: u64,
    marker: bool,
    info: PacketInfo,
    payload: Bytes,
    capture: Option<Instant>,
}

/// The frame buffer.
#[derive(Debug)]
pub struct FrameBuffer {
    max_wait: Duration,
    pli_interval: Duration,
    packets: BTreeMap<SeqNo, Packet>,
    /// Last sequence number of the last emitted (or skipped) frame.
    last_end: Option<SeqNo>,
    /// Set until a keyframe is emitted (start, or after a skip).
    need_keyframe: bool,
    /// When the frame blocked behind a hole must be given up.
    blocked_deadline: Option<Instant>,
    /// The blocked position and when it was first seen blocked.
    blocked_since: Option<(SeqNo, Instant)>,
    /// The smallest (arrival − media time) seen: maps an RTP timestamp to the time its
    /// frame would arrive without queueing, jitter or loss.
    base_offset: Option<(Instant, u64)>,
    /// Since when a keyframe has been awaited with packets arriving.
    keyframe_wait: Option<Instant>,
    last_pli: Option<Instant>,
    pli_pending: bool,
    out: VecDeque<VideoFrame>,
    last_emit: Option<Instant>,
    gaps: VecDeque<Duration>,
    /// Timestamps of the frames received and not yet emitted or dropped.
    open: BTreeSet<u64>,
    /// Complete frames waiting for their release time, in order.
    held: VecDeque<(Instant, VideoFrame)>,
    /// How late recent frames became complete, after their unimpaired arrival.
    lateness: VecDeque<Duration>,
    /// How long after its unimpaired arrival a frame is released: a quantile of the
    /// recent lateness, so frames repaired within it come out evenly, not in a burst.
    playout_delay: Duration,
    /// The most the playout delay grows to.
    max_playout_delay: Duration,
    /// Timestamps of the frames emitted or dropped lately: a straggler of one of them
    /// is late, not a new frame.
    closed: VecDeque<u64>,
    stats: VideoPlayoutStats,
}

impl FrameBuffer {
    /// A buffer that waits up to `max_wait` for a missing packet and sends keyframe
    /// requests at most every `pli_interval`.
    pub fn new(max_wait: Duration, pli_interval: Duration) -> Self {
        Self {
            max_wait,
            pli_interval,
            packets: BTreeMap::new(),
            last_end: None,
            need_keyframe: true,
            blocked_deadline: None,
            blocked_since: None,
            base_offset: None,
            keyframe_wait: None,
            last_pli: None,
            pli_pending: false,
            out: VecDeque::new(),
            last_emit: None,
            gaps: VecDeque::new(),
            open: BTreeSet::new(),
            closed: VecDeque::new(),
            held: VecDeque::new(),
            lateness: VecDeque::new(),
            playout_delay: Duration::ZERO,
            // A third of the wait: one repair round at the RTTs the wait is sized for.
            max_playout_delay: max_wait / 3,
            stats: VideoPlayoutStats::default(),
        }
    }

    /// Forgets the stream (the peer restarted it), keeping the statistics.
    pub fn reset(&mut self) {
        let mut stats = self.stats;
        let forgotten = (self.open.len() + self.held.len()) as u64;
        stats.dropped += forgotten;
        stats.dropped_overflow += forgotten;
        stats.pending = 0;
        *self = Self::new(self.max_wait, self.pli_interval);
        self.stats = stats;
    }

    /// Statistics.
    pub fn stats(&self) -> VideoPlayoutStats {
        VideoPlayoutStats {
            pending: (self.open.len() + self.held.len()) as u64,
            ..self.stats
        }
    }

    /// The maximum wait for a missing packet.
    pub fn max_wait(&self) -> Duration {
        self.max_wait
    }

    /// Adds a packet and emits whatever became decodable.
    pub fn push(
        &mut self,
        now: Instant,
        seq: SeqNo,
        ts: u64,
        marker: bool,
        payload: Bytes,
        capture: Option<Instant>,
    ) {
        if self.last_end.is_some_and(|end| seq <= end) || self.closed.contains(&ts) {
            // Its frame was emitted or given up already.
            self.stats.late_packets += 1;
            return;
        }
        self.note_arrival(now, ts);
        let info = match h264::inspect(&payload) {
            Ok(info) => info,
            Err(e) => {
                debug!(%seq, error = %e, "bad H.264 payload");
                self.stats.bad_packets += 1;
                return;
            }
        };
        if self.open.insert(ts) {
            self.stats.received += 1;
        }
        self.packets.insert(
            seq,
            Packet {
                ts,
                marker,
                info,
                payload,
                capture,
            },
        );
        while self.packets.len() > MAX_PACKETS {
            let Some((_, evicted)) = self.packets.pop_first() else {
                break;
            };
            if !self.packets.values().any(|p| p.ts == evicted.ts) {
                self.stats.dropped_overflow += 1;
                self.stats.dropped += 1;
                self.close(evicted.ts);
            }
        }
        self.advance(now);
    }

    /// The frame with timestamp `ts` was emitted or dropped: its packets from now on
    /// are late.
    fn close(&mut self, ts: u64) {
        self.open.remove(&ts);
        self.closed.push_back(ts);
        if self.closed.len() > CLOSED_WINDOW {
            self.closed.pop_front();
        }
    }

    /// Applies deadlines and the PLI timer.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        if !self.need_keyframe || self.packets.is_empty() {
            return;
        }
        // Packets arrive but no keyframe completes: ask (again) once we have waited as
        // long as a retransmission may take, then every `pli_interval`.
        let since = *self.keyframe_wait.get_or_insert(now);
        if now >= since + self.max_wait {
            self.request_keyframe(now);
        }
    }

    /// When the buffer next needs `handle_timeout`.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let deadline = [self.blocked_deadline, self.held.front().map(|(at, _)| *at)]
            .into_iter()
            .flatten()
            .min();
        // Mirrors `handle_timeout`, which asks only while packets are arriving.
        let waiting = self.need_keyframe && !self.packets.is_empty();
        let pli = self.keyframe_wait.filter(|_| waiting).map(|since| {
            let repeat = self.last_pli.map_or(since, |t| t + self.pli_interval);
            (since + self.max_wait).max(repeat)
        });
        [deadline, pli].into_iter().flatten().min()
    }

    /// The next decodable frame.
    pub fn poll_frame(&mut self) -> Option<VideoFrame> {
        self.out.pop_front()
    }

    /// Whether a keyframe request should be sent now (then clears it).
    pub fn take_keyframe_request(&mut self) -> bool {
        std::mem::take(&mut self.pli_pending)
    }

    /// The sequence numbers before which nothing is wanted any more.
    pub fn wanted_from(&self) -> Option<SeqNo> {
        self.last_end.map(SeqNo::next)
    }

    /// Tracks the earliest arrival relative to media time: arrival − ts/90 kHz.
    fn note_arrival(&mut self, now: Instant, ts: u64) {
        let media = Duration::from_micros(ts.saturating_mul(100) / 9);
        match self.base_offset {
            Some((at, base_ts)) => {
                let base_media = Duration::from_micros(base_ts.saturating_mul(100) / 9);
                // Earlier than the base predicts: this is the new, smaller offset.
                if let Some(predicted) = (at + media).checked_sub(base_media)
                    && now < predicted
                {
                    self.base_offset = Some((now, ts));
                }
            }
            None => self.base_offset = Some((now, ts)),
        }
    }

    /// When the frame with timestamp `ts` would arrive on an unimpaired path.
    fn expected_arrival(&self, ts: u64) -> Option<Instant> {
        let (at, base_ts) = self.base_offset?;
        let media = Duration::from_micros(ts.saturating_mul(100) / 9);
        let base_media = Duration::from_micros(base_ts.saturating_mul(100) / 9);
        if media >= base_media {
            Some(at + (media - base_media))
        } else {
            at.checked_sub(base_media - media)
        }
    }

    /// The decoder downstream lost its picture (a corrupt unit, or one it never got):
    /// emit nothing until a keyframe, and ask for one.
    pub fn handle_decoder_lost(&mut self, now: Instant) {
        self.need_keyframe = true;
        self.keyframe_wait.get_or_insert(now);
        self.request_keyframe(now);
    }

    fn request_keyframe(&mut self, now: Instant) {
        if self.last_pli.is_some_and(|t| now < t + self.pli_interval) {
            return;
        }
        self.last_pli = Some(now);
        self.pli_pending = true;
        self.stats.keyframe_requests += 1;
        debug!("requesting keyframe");
    }

    /// The current playout delay (see [`VideoPlayoutStats`]'s freezes).
    pub fn playout_delay(&self) -> Duration {
        self.playout_delay
    }

    fn advance(&mut self, now: Instant) {
        self.assemble(now);
        self.release(now);
    }

    /// Moves the held frames due by `now` out.
    fn release(&mut self, now: Instant) {
        while self.held.front().is_some_and(|(at, _)| *at <= now) {
            let (_, frame) = self.held.pop_front().expect("front checked above");
            trace!(
                ts = frame.rtp_time,
                keyframe = frame.keyframe,
                "video frame out"
            );
            self.note_emit(now);
            self.stats.frames += 1;
            self.stats.keyframes += u64::from(frame.keyframe);
            self.out.push_back(frame);
        }
    }

    /// Notes how late a frame became complete and updates the playout delay.
    fn note_lateness(&mut self, late: Duration) {
        self.lateness.push_back(late);
        if self.lateness.len() > LATENESS_WINDOW {
            self.lateness.pop_front();
        }
        let mut sorted: Vec<Duration> = self.lateness.iter().copied().collect();
        sorted.sort_unstable();
        let i = ((sorted.len() - 1) as f64 * LATENESS_QUANTILE) as usize;
        self.playout_delay = sorted[i].min(self.max_playout_delay);
    }

    fn assemble(&mut self, now: Instant) {
        loop {
            let start = self.last_end.map(SeqNo::next);
            let complete = if self.need_keyframe {
                self.complete_keyframe()
            } else {
                start.and_then(|s| self.complete_frame(s))
            };
            if let Some((s, end)) = complete {
                self.emit(now, s, end);
                self.blocked_deadline = None;
                continue;
            }
            if self.need_keyframe {
                return;
            }
            // Blocked behind a hole. Skip now if a complete keyframe already waits.
            let has_later = self
                .packets
                .last_key_value()
                .is_some_and(|(&s, _)| start.is_some_and(|st| s >= st));
            if !has_later {
                self.blocked_deadline = None;
                return;
            }
            // The deadline belongs to the blocked frame (its expected arrival plus the
            // wait), so waits for consecutive frames do not add up; but a frame gets at
            // least a third of the wait (one repair round) from when it is found
            // blocked, so frames behind a late keyframe are not skipped at once.
            let floor = start.unwrap_or_default();
            let ts = self.packets.range(floor..).next().map_or(0, |(_, p)| p.ts);
            let since = match self.blocked_since {
                Some((at, t)) if at == floor => t,
                _ => {
                    self.blocked_since = Some((floor, now));
                    now
                }
            };
            let deadline = (self.expected_arrival(ts).unwrap_or(now) + self.max_wait)
                .max(since + self.max_wait / 3);
            self.blocked_deadline = Some(deadline);
            if self.complete_keyframe().is_some() || now >= deadline {
                self.skip(now);
                continue;
            }
            return;
        }
    }

    /// Gives up on the blocked frames: wait for the next keyframe.
    fn skip(&mut self, now: Instant) {
        self.stats.skips += 1;
        self.need_keyframe = true;
        self.blocked_deadline = None;
        self.keyframe_wait = Some(now);
        if self.complete_keyframe().is_none() {
            self.request_keyframe(now);
        }
        debug!(
            from = ?self.last_end.map(SeqNo::next),
            "video frame missed its deadline; skipping to the next keyframe"
        );
    }

    /// The latest complete keyframe held (the freshest picture to resume from): its
    /// first and last sequence numbers.
    fn complete_keyframe(&self) -> Option<(SeqNo, SeqNo)> {
        let floor = self.last_end.map_or(SeqNo(0), SeqNo::next);
        self.packets
            .range(floor..)
            .rev()
            .filter(|&(&seq, p)| self.starts_keyframe(seq, p))
            .find_map(|(&seq, _)| self.complete_frame(seq))
    }

    /// Whether `p` is the first packet of a keyframe.
    fn starts_keyframe(&self, seq: SeqNo, p: &Packet) -> bool {
        if !p.info.keyframe || !p.info.begins_nal {
            return false;
        }
        match seq.prev().and_then(|s| self.packets.get(&s)) {
            Some(prev) => prev.ts != p.ts,
            None => {
                p.info.begins_with_parameter_set || self.last_end.is_some_and(|e| e.next() == seq)
            }
        }
    }

    /// If the frame starting at `start` is complete, its first and last sequence numbers.
    fn complete_frame(&self, start: SeqNo) -> Option<(SeqNo, SeqNo)> {
        let first = self.packets.get(&start)?;
        let mut seq = start;
        let mut p = first;
        loop {
            if p.ts != first.ts {
                return None;
            }
            if p.marker {
                return Some((start, seq));
            }
            seq = seq.next();
            p = self.packets.get(&seq)?;
        }
    }

    fn emit(&mut self, now: Instant, start: SeqNo, end: SeqNo) {
        let keyframe = self.packets.get(&start).is_some_and(|p| p.info.keyframe);
        // The frames before this one are given up (distinct timestamps).
        let emitted_ts = self.packets.get(&start).map(|p| p.ts);
        let mut dropped_ts: Vec<u64> = self.packets.range(..start).map(|(_, p)| p.ts).collect();
        dropped_ts.sort_unstable();
        dropped_ts.dedup();
        for ts in dropped_ts.into_iter().filter(|&ts| Some(ts) != emitted_ts) {
            if self.open.contains(&ts) {
                trace!(ts, "video frame given up");
                self.stats.dropped += 1;
                self.stats.dropped_incomplete += 1;
            }
            self.close(ts);
        }
        let mut rest = self.packets.split_off(&end.next());
        std::mem::swap(&mut rest, &mut self.packets);
        let frame_packets = rest.split_off(&start);
        self.last_end = Some(end);

        let mut depacketizer = h264::Depacketizer::new();
        let mut capture = None;
        let mut ts = 0;
        for p in frame_packets.values() {
            capture = capture.or(p.capture);
            ts = p.ts;
            if depacketizer.push(&p.payload).is_err() {
                self.stats.bad_packets += 1;
            }
        }
        self.close(ts);
        match depacketizer.finish() {
            Ok(data) if !self.need_keyframe || keyframe => {
                self.need_keyframe = false;
                self.keyframe_wait = None;
                let expected = self.expected_arrival(ts);
                if let Some(at) = expected {
                    self.note_lateness(now.saturating_duration_since(at));
                }
                // Released at its unimpaired arrival plus the playout delay, in order.
                let due = expected.map_or(now, |at| at + self.playout_delay).max(now);
                let due = self.held.back().map_or(due, |(at, _)| due.max(*at));
                trace!(
                    ts,
                    keyframe,
                    %start,
                    %end,
                    late_ms = expected.map(|at| now.saturating_duration_since(at).as_millis() as u64),
                    wait_ms = due.saturating_duration_since(now).as_millis() as u64,
                    "video frame complete"
                );
                let frame = VideoFrame {
                    data: Bytes::from(data),
                    rtp_time: ts,
                    capture_time: capture,
                    keyframe,
                };
                self.held.push_back((due, frame));
            }
            _ => {
                self.stats.dropped += 1;
                self.stats.dropped_undecodable += 1;
                self.need_keyframe = true;
                self.request_keyframe(now);
            }
        }
    }

    fn note_emit(&mut self, now: Instant) {
        if let Some(last) = self.last_emit {
            let gap = now.saturating_duration_since(last);
            if self.gaps.len() >= 3 {
                let avg = self.gaps.iter().sum::<Duration>() / self.gaps.len() as u32;
                if gap > (avg * 3).max(avg + Duration::from_millis(150)) {
                    debug!(gap_ms = gap.as_millis() as u64, "video freeze");
                    self.stats.freezes += 1;
                    self.stats.freeze_time += gap;
                }
            }
            self.gaps.push_back(gap);
            if self.gaps.len() > FREEZE_WINDOW {
                self.gaps.pop_front();
            }
        }
        self.last_emit = Some(now);
    }

    /// Packets held.
    pub fn len(&self) -> usize {
        self.packets.len()
    }

    /// Whether no packet is held.
    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_instant;

    const WAIT: Duration = Duration::from_millis(300);
    const FRAME_TICKS: u64 = 3000;

    fn au(id: u8, keyframe: bool, len: usize) -> Vec<u8> {
        let mut v = vec![0, 0, 0, 1];
        if keyframe {
            v.extend_from_slice(&[0x67, id, 0, 0, 0, 1, 0x68, id, 0, 0, 0, 1, 0x65]);
        } else {
            v.push(0x41);
        }
        v.extend(std::iter::repeat_n(id.max(1), len));
        v
    }

    /// Packets of frame `id` as (seq, ts, marker, payload), starting at `seq`.
    fn packets(
        seq: &mut u64,
        id: u8,
        keyframe: bool,
        len: usize,
    ) -> Vec<(SeqNo, u64, bool, Bytes)> {
        let payloads = h264::packetize(&au(id, keyframe, len), 1200);
        let n = payloads.len();
        payloads
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let s = SeqNo(*seq);
                *seq += 1;
                (s, u64::from(id) * FRAME_TICKS, i + 1 == n, p)
            })
            .collect()
    }

    fn push_all(b: &mut FrameBuffer, now: Instant, ps: &[(SeqNo, u64, bool, Bytes)]) {
        for (s, ts, m, p) in ps {
            b.push(now, *s, *ts, *m, p.clone(), None);
        }
    }

    fn drain(b: &mut FrameBuffer) -> Vec<(u8, bool)> {
        std::iter::from_fn(|| b.poll_frame())
            .map(|f| ((f.rtp_time / FRAME_TICKS) as u8, f.keyframe))
            .collect()
    }

    #[test]
    fn assembles_frames_and_emits_them_in_order_as_annex_b() {
        let t0 = test_instant();
        let mut b = FrameBuffer::new(WAIT, WAIT);
        let mut seq = 1000;
        let key = packets(&mut seq, 1, true, 5000);
        let delta = packets(&mut seq, 2, false, 100);
        // Delta first, then the keyframe in reverse order: nothing until it completes.
        push_all(&mut b, t0, &delta);
        let mut rev = key.clone();
        rev.reverse();
        push_all(&mut b, t0, &rev);
        let frames: Vec<_> = std::iter::from_fn(|| b.poll_frame()).collect();
        assert_eq!(frames.len(), 2);
        assert!(frames[0].keyframe && !frames[1].keyframe);
        assert_eq!(&frames[0].data[..], &au(1, true, 5000)[..]);
        assert_eq!(&frames[1].data[..], &au(2, false, 100)[..]);
    }

    #[test]
    fn a_hole_past_its_deadline_skips_to_the_next_keyframe_and_asks_for_one() {
        let t0 = test_instant();
        let mut b = FrameBuffer::new(WAIT, WAIT);
        let mut seq = 0;
        push_all(&mut b, t0, &packets(&mut seq, 1, true, 100));
        let lost = packets(&mut seq, 2, false, 2000);
        let frame = Duration::from_millis(33);
        push_all(&mut b, t0 + frame, &lost[1..]);
        push_all(&mut b, t0 + frame * 2, &packets(&mut seq, 3, false, 100));
        assert_eq!(drain(&mut b), vec![(1, true)]);
        assert!(!b.take_keyframe_request());
        // The deadline is the blocked frame's expected arrival plus the wait.
        let deadline = b.poll_timeout().unwrap();
        assert!(
            deadline >= t0 + frame + WAIT - Duration::from_millis(1),
            "{:?}",
            deadline - t0
        );
        b.handle_timeout(deadline);
        assert!(b.take_keyframe_request());
        assert_eq!(b.stats().skips, 1);
        // Deltas are useless now; the next keyframe resumes playback.
        push_all(&mut b, deadline, &packets(&mut seq, 4, false, 100));
        assert!(drain(&mut b).is_empty());
        push_all(&mut b, deadline, &packets(&mut seq, 5, true, 100));
        assert_eq!(drain(&mut b), vec![(5, true)]);
        // Requests are rate limited.
        b.handle_timeout(deadline);
        assert!(!b.take_keyframe_request());
    }

    #[test]
    fn a_complete_keyframe_behind_a_hole_is_taken_at_once() {
        let t0 = test_instant();
        let mut b = FrameBuffer::new(WAIT, WAIT);
        let mut seq = 0;
        push_all(&mut b, t0, &packets(&mut seq, 1, true, 100));
        let lost = packets(&mut seq, 2, false, 100);
        let _ = lost;
        push_all(&mut b, t0, &packets(&mut seq, 3, true, 100));
        assert_eq!(drain(&mut b), vec![(1, true), (3, true)]);
        assert_eq!(b.stats().skips, 1);
    }

    #[test]
    fn late_and_duplicate_packets_are_ignored() {
        let t0 = test_instant();
        let mut b = FrameBuffer::new(WAIT, WAIT);
        let mut seq = 0;
        let key = packets(&mut seq, 1, true, 100);
        push_all(&mut b, t0, &key);
        push_all(&mut b, t0, &key);
        assert_eq!(drain(&mut b).len(), 1);
        assert!(b.is_empty());
        assert_eq!(b.stats().late_packets, key.len() as u64);
    }

    #[test]
    fn freezes_follow_the_webrtc_definition() {
        let t0 = test_instant();
        let mut b = FrameBuffer::new(WAIT, WAIT);
        let mut seq = 0;
        let mut now = t0;
        for id in 1..=10u8 {
            push_all(&mut b, now, &packets(&mut seq, id, id == 1, 100));
            now += Duration::from_millis(33);
        }
        // A 300 ms gap > max(3 × 33, 33 + 150) ms.
        now += Duration::from_millis(300);
        push_all(&mut b, now, &packets(&mut seq, 11, false, 100));
        let s = b.stats();
        assert_eq!(s.freezes, 1);
        assert!(s.freeze_time >= Duration::from_millis(300));
    }

    #[test]
    fn garbage_payloads_are_counted() {
        let t0 = test_instant();
        let mut b = FrameBuffer::new(WAIT, WAIT);
        b.push(t0, SeqNo(1), 0, true, Bytes::from_static(&[0x1e, 1]), None);
        b.push(t0, SeqNo(2), 0, true, Bytes::new(), None);
        assert_eq!(b.stats().bad_packets, 2);
        assert!(b.poll_frame().is_none());
    }

    fn assert_accounted(s: VideoPlayoutStats) {
        assert_eq!(s.received, s.frames + s.dropped + s.pending, "{s:?}");
        assert_eq!(
            s.dropped,
            s.dropped_incomplete + s.dropped_undecodable + s.dropped_overflow,
            "{s:?}"
        );
    }

    #[test]
    fn every_frame_received_is_emitted_dropped_or_pending() {
        let t0 = test_instant();
        let mut b = FrameBuffer::new(WAIT, WAIT);
        let mut seq = 0;
        let mut now = t0;
        let mut held = Vec::new();
        for id in 1..=60u8 {
            let mut ps = packets(&mut seq, id, id % 20 == 1, 3000);
            // Lose a packet of every seventh frame; hold one of every fifth back.
            if id % 7 == 3 {
                ps.remove(1);
            }
            if id % 5 == 0 {
                held.push(ps.remove(0));
            }
            push_all(&mut b, now, &ps);
            if id % 9 == 0 {
                push_all(&mut b, now, &std::mem::take(&mut held));
            }
            now += Duration::from_millis(33);
            b.handle_timeout(now);
            assert_accounted(b.stats());
        }
        let s = b.stats();
        assert_eq!(s.received, 60);
        assert!(s.dropped_incomplete > 0 && s.frames > 0, "{s:?}");
        assert_eq!(s.frames, drain(&mut b).len() as u64);
        b.reset();
        let s = b.stats();
        assert_accounted(s);
        assert_eq!(s.pending, 0);
    }

    proptest::proptest! {
        #[test]
        fn accounting_holds_under_any_loss_and_order(
            ops in proptest::collection::vec((0u8..4, 0u8..8, 0u16..400), 1..300),
        ) {
            let t0 = test_instant();
            let mut b = FrameBuffer::new(WAIT, WAIT);
            let mut seq = 0;
            let mut now = t0;
            let mut late = Vec::new();
            for (i, (kind, fate, delay)) in ops.into_iter().enumerate() {
                let id = (i % 250) as u8 + 1;
                let ps = packets(&mut seq, id, kind == 0, usize::from(delay) * 10);
                for p in ps {
                    match fate {
                        0 => {}
                        1 => late.push(p),
                        _ => push_all(&mut b, now, &[p]),
                    }
                }
                if fate == 2 {
                    push_all(&mut b, now, &std::mem::take(&mut late));
                }
                now += Duration::from_millis(u64::from(delay % 60));
                b.handle_timeout(now);
                let s = b.stats();
                proptest::prop_assert_eq!(s.received, s.frames + s.dropped + s.pending);
                proptest::prop_assert_eq!(
                    s.dropped,
                    s.dropped_incomplete + s.dropped_undecodable + s.dropped_overflow
                );
            }
        }
    }
}
