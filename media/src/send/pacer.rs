//! The pacer: spreads video (and RTX) packets over time at a multiple of the target
//! bitrate, so a 25 KB keyframe does not leave as one burst that overflows a router
//! queue. Audio is small and latency-critical: it goes out first and is never held.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::types::SeqNo;

/// What a queued packet is, in priority order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Audio: sent at once.
    Audio,
    /// Retransmissions: ahead of new video, they are already late.
    Retransmission,
    /// New video.
    Video,
}

/// A leaky-bucket pacer.
#[derive(Debug)]
pub struct Pacer {
    rate_bps: u64,
    /// Debt allowed to build up, so packets may leave in small bursts.
    burst: Duration,
    /// The longest the queue may take to drain; past it the pacer speeds up.
    max_queue_delay: Duration,
    audio: VecDeque<Bytes>,
    rtx: VecDeque<Bytes>,
    /// New video, each media packet of a keyframe with the keyframe's first sequence
    /// number.
    video: VecDeque<(Bytes, Option<SeqNo>)>,
    queued_bytes: usize,
    next_send: Option<Instant>,
    /// Video and retransmissions wait (the congestion window is full); audio goes.
    held: bool,
}

impl Pacer {
    /// A pacer sending at `rate_bps`.
    pub fn new(rate_bps: u64, burst: Duration, max_queue_delay: Duration) -> Self {
        Self {
            rate_bps: rate_bps.max(1),
            burst,
            max_queue_delay,
            audio: VecDeque::new(),
            rtx: VecDeque::new(),
            video: VecDeque::new(),
            queued_bytes: 0,
            next_send: None,
            held: false,
        }
    }

    /// Changes the pacing rate.
    pub fn set_rate(&mut self, rate_bps: u64) {
        self.rate_bps = rate_bps.max(1);
    }

    /// Holds video and retransmissions (audio still goes), or lets them go.
    pub fn set_held(&mut self, held: bool) {
        self.held = held;
    }

    /// Queues a datagram.
    pub fn push(&mut self, class: Class, datagram: Bytes) {
        self.queued_bytes += datagram.len();
        match class {
            Class::Audio => self.audio.push_back(datagram),
            Class::Retransmission => self.rtx.push_back(datagram),
            Class::Video => self.video.push_back((datagram, None)),
        }
    }

    /// Queues a media packet of the keyframe whose first packet is numbered `first`.
    pub fn push_keyframe(&mut self, first: SeqNo, datagram: Bytes) {
        self.queued_bytes += datagram.len();
        self.video.push_back((datagram, Some(first)));
    }

    /// The next datagram allowed to leave at `now`.
    pub fn poll(&mut self, now: Instant) -> Option<Bytes> {
        if let Some(d) = self.audio.pop_front() {
            self.queued_bytes -= d.len();
            return Some(d);
        }
        if self.held || self.next_send.is_some_and(|t| t > now) {
            return None;
        }
        let d = self
            .rtx
            .pop_front()
            .or_else(|| self.video.pop_front().map(|(d, _)| d))?;
        // Drain a long queue faster than the target: latency matters more than pacing.
        let drain_bps =
            (self.queued_bytes as f64 * 8.0 / self.max_queue_delay.as_secs_f64()) as u64;
        let rate = self.rate_bps.max(drain_bps).max(1);
        self.queued_bytes -= d.len();
        let cost = Duration::from_secs_f64(d.len() as f64 * 8.0 / rate as f64);
        let floor = now.checked_sub(self.burst).unwrap_or(now);
        let base = self.next_send.map_or(floor, |t| t.max(floor));
        self.next_send = Some(base + cost);
        Some(d)
    }

    /// When the next datagram may leave (`None` when nothing waits).
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        if !self.audio.is_empty() {
            return Some(now);
        }
        if self.held || (self.rtx.is_empty() && self.video.is_empty()) {
            return None;
        }
        Some(self.next_send.map_or(now, |t| t.max(now)))
    }

    /// Bytes waiting.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Drops what a keyframe the peer asked for supersedes: the video waiting before the
    /// oldest keyframe still (partly) queued, or all of it and the retransmissions when
    /// none is. A keyframe still leaving is kept whole, with what follows it and the
    /// retransmissions (some may be its own): the peer decodes from it once it arrives,
    /// and superseding it in turn could starve a slow link of keyframes, each one
    /// dropped before its tail left. Audio stays. The packets and bytes dropped, and
    /// the first sequence number of the keyframe kept, if one was.
    pub fn drop_superseded(&mut self) -> (u64, u64, Option<SeqNo>) {
        let kept = self.video.iter().position(|(_, key)| key.is_some());
        let keyframe = kept.and_then(|i| self.video[i].1);
        let rtx = if kept.is_some() { 0 } else { self.rtx.len() };
        let video = kept.unwrap_or(self.video.len());
        let (mut packets, mut bytes) = (0, 0);
        let dropped = self
            .rtx
            .drain(..rtx)
            .chain(self.video.drain(..video).map(|(d, _)| d));
        for d in dropped {
            packets += 1;
            bytes += d.len() as u64;
        }
        self.queued_bytes -= bytes as usize;
        (packets, bytes, keyframe)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_instant;

    #[test]
    fn spreads_a_keyframe_at_the_pacing_rate() {
        let t0 = test_instant();
        // 1 Mbit/s: a 1000-byte packet every 8 ms.
        let mut p = Pacer::new(1_000_000, Duration::ZERO, Duration::from_secs(10));
        for _ in 0..10 {
            p.push(Class::Video, Bytes::from(vec![0; 1000]));
        }
        let mut now = t0;
        let mut sent_at = Vec::new();
        while let Some(at) = p.poll_timeout(now) {
            now = at;
            while p.poll(now).is_some() {
                sent_at.push(now - t0);
            }
        }
        assert_eq!(sent_at.len(), 10);
        assert_eq!(sent_at[9], Duration::from_millis(72));
    }

    #[test]
    fn audio_and_retransmissions_jump_the_video_queue() {
        let t0 = test_instant();
        let mut p = Pacer::new(8_000, Duration::ZERO, Duration::from_secs(10));
        p.push(Class::Video, Bytes::from_static(b"v1"));
        p.push(Class::Video, Bytes::from_static(b"v2"));
        assert_eq!(p.poll(t0).unwrap(), Bytes::from_static(b"v1"));
        p.push(Class::Retransmission, Bytes::from_static(b"r"));
        p.push(Class::Audio, Bytes::from_static(b"a"));
        assert_eq!(p.poll(t0).unwrap(), Bytes::from_static(b"a"));
        assert!(p.poll(t0).is_none());
        let at = p.poll_timeout(t0).unwrap();
        assert_eq!(p.poll(at).unwrap(), Bytes::from_static(b"r"));
    }

    #[test]
    fn held_only_audio_leaves() {
        let t0 = test_instant();
        let mut p = Pacer::new(8_000_000, Duration::ZERO, Duration::from_secs(10));
        p.push(Class::Video, Bytes::from_static(b"v"));
        p.push(Class::Retransmission, Bytes::from_static(b"r"));
        p.push(Class::Audio, Bytes::from_static(b"a"));
        p.set_held(true);
        assert_eq!(p.poll_timeout(t0), Some(t0));
        assert_eq!(p.poll(t0).unwrap(), Bytes::from_static(b"a"));
        assert_eq!((p.poll(t0), p.poll_timeout(t0)), (None, None));
        p.set_held(false);
        assert_eq!(p.poll(t0).unwrap(), Bytes::from_static(b"r"));
    }

    #[test]
    fn dropping_video_keeps_audio_and_the_pace() {
        let t0 = test_instant();
        let mut p = Pacer::new(8_000, Duration::ZERO, Duration::from_secs(10));
        p.push(Class::Video, Bytes::from_static(b"v1"));
        assert_eq!(p.poll(t0).unwrap(), Bytes::from_static(b"v1"));
        p.push(Class::Video, Bytes::from_static(b"v2"));
        p.push(Class::Retransmission, Bytes::from_static(b"rtx"));
        p.push(Class::Audio, Bytes::from_static(b"a"));
        assert_eq!(p.drop_superseded(), (2, 5, None));
        assert_eq!(p.queued_bytes(), 1);
        assert_eq!(p.poll(t0).unwrap(), Bytes::from_static(b"a"));
        // What follows still waits its turn after v1 (2 bytes at 8 kbit/s: 2 ms).
        p.push(Class::Video, Bytes::from_static(b"k"));
        assert!(p.poll(t0).is_none());
        assert_eq!(p.poll_timeout(t0), Some(t0 + Duration::from_millis(2)));
        assert_eq!(p.queued_bytes(), 1);
    }

    #[test]
    fn a_keyframe_still_leaving_is_not_superseded() {
        let t0 = test_instant();
        // A burst of a second: everything may leave at once.
        let mut p = Pacer::new(8_000_000, Duration::from_secs(1), Duration::from_secs(10));
        p.push(Class::Video, Bytes::from_static(b"old"));
        p.push_keyframe(SeqNo(7), Bytes::from_static(b"k1"));
        p.push_keyframe(SeqNo(7), Bytes::from_static(b"k2"));
        p.push(Class::Video, Bytes::from_static(b"p"));
        p.push(Class::Retransmission, Bytes::from_static(b"r"));
        // Only what waits before the keyframe goes; its retransmissions stay.
        assert_eq!(p.drop_superseded(), (1, 3, Some(SeqNo(7))));
        assert_eq!(p.poll(t0).unwrap(), Bytes::from_static(b"r"));
        assert_eq!(p.poll(t0).unwrap(), Bytes::from_static(b"k1"));
        // Half of it left: the rest is still kept whole.
        assert_eq!(p.drop_superseded(), (0, 0, Some(SeqNo(7))));
        assert_eq!(p.poll(t0).unwrap(), Bytes::from_static(b"k2"));
        // Gone: what follows it is superseded in turn.
        assert_eq!(p.drop_superseded(), (1, 1, None));
        assert_eq!(p.queued_bytes(), 0);
    }

    #[test]
    fn a_long_queue_drains_within_the_maximum_delay() {
        let t0 = test_instant();
        let mut p = Pacer::new(1_000, Duration::ZERO, Duration::from_millis(500));
        for _ in 0..100 {
            p.push(Class::Video, Bytes::from(vec![0; 1000]));
        }
        let mut now = t0;
        while let Some(at) = p.poll_timeout(now) {
            now = at;
            while p.poll(now).is_some() {}
        }
        assert!(now - t0 < Duration::from_secs(3), "{:?}", now - t0);
    }
}
