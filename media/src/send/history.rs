//! The retransmission history: recently sent packets by original sequence number, kept
//! for a configured time so a NACKed packet can be resent as RTX (RFC 4588).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::types::SeqNo;
use crate::wire::AbsCaptureTime;

/// A packet as first sent, enough to rebuild it as RTX.
#[derive(Debug, Clone)]
pub struct Sent {
    /// Original extended sequence number.
    pub seq: SeqNo,
    /// RTP timestamp.
    pub timestamp: u32,
    /// Marker bit.
    pub marker: bool,
    /// Capture time extension.
    pub capture: Option<AbsCaptureTime>,
    /// Payload.
    pub payload: Bytes,
    /// When it was first sent.
    pub sent_at: Instant,
    /// When it was last resent.
    pub resent_at: Option<Instant>,
    /// How many times it was resent.
    pub resends: u32,
    /// Whether the send budget refused to resend it (at least once).
    pub refused: bool,
}

/// Sent packets, oldest first, with consecutive sequence numbers.
#[derive(Debug)]
pub struct History {
    max_age: Duration,
    packets: VecDeque<Sent>,
}

/// Why a NACKed packet was not resent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not (or no longer) in the history.
    Unknown,
    /// Already resent within the last RTT.
    TooSoon,
}

impl History {
    /// A history that keeps packets for `max_age`.
    pub fn new(max_age: Duration) -> Self {
        Self {
            max_age,
            packets: VecDeque::new(),
        }
    }

    /// Records a packet just sent, forgetting the ones older than the maximum age.
    pub fn push(&mut self, now: Instant, sent: Sent) {
        while let Some(front) = self.packets.front() {
            if now.saturating_duration_since(front.sent_at) <= self.max_age {
                break;
            }
            self.packets.pop_front();
        }
        if let Some(back) = self.packets.back()
            && sent.seq != back.seq.next()
        {
            // Sequence numbers must be consecutive for index lookup; start over.
            self.packets.clear();
        }
        self.packets.push_back(sent);
    }

    /// The packet to resend for `seq`, marking it resent, unless it was resent less
    /// than `rtt` ago (a packet is resent at most once per round trip).
    pub fn resend(&mut self, now: Instant, seq: SeqNo, rtt: Duration) -> Result<&Sent, Refusal> {
        self.resendable(now, seq, rtt)?;
        self.mark_resent(now, seq);
        self.resendable(now, seq, Duration::ZERO)
    }

    /// The packet to resend for `seq`, unless it was resent less than `rtt` ago; not
    /// marked resent (see [`Self::mark_resent`]).
    pub fn resendable(&self, now: Instant, seq: SeqNo, rtt: Duration) -> Result<&Sent, Refusal> {
        let entry = self.entry(now, seq)?;
        if entry
            .resent_at
            .is_some_and(|t| now.saturating_duration_since(t) < rtt)
        {
            return Err(Refusal::TooSoon);
        }
        Ok(entry)
    }

    /// Notes that `seq` was resent at `now`.
    pub fn mark_resent(&mut self, now: Instant, seq: SeqNo) {
        if let Some(entry) = self.entry_mut(seq) {
            entry.resent_at = Some(now);
            entry.resends += 1;
        }
    }

    /// Notes that the send budget refused to resend `seq`; whether it was the first
    /// time (a packet NACKed again and again is wanted once).
    pub fn mark_refused(&mut self, seq: SeqNo) -> bool {
        self.entry_mut(seq)
            .is_some_and(|entry| !std::mem::replace(&mut entry.refused, true))
    }

    fn entry_mut(&mut self, seq: SeqNo) -> Option<&mut Sent> {
        let first = self.packets.front()?.seq;
        let index = usize::try_from(seq.delta(first)).ok()?;
        self.packets.get_mut(index)
    }

    fn entry(&self, now: Instant, seq: SeqNo) -> Result<&Sent, Refusal> {
        let first = self.packets.front().ok_or(Refusal::Unknown)?.seq;
        let index = usize::try_from(seq.delta(first)).map_err(|_| Refusal::Unknown)?;
        let entry = self.packets.get(index).ok_or(Refusal::Unknown)?;
        if now.saturating_duration_since(entry.sent_at) > self.max_age {
            return Err(Refusal::Unknown);
        }
        Ok(entry)
    }

    /// The newest sequence number sent, used to extend NACKed wire numbers.
    pub fn newest(&self) -> Option<SeqNo> {
        self.packets.back().map(|p| p.seq)
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

    fn sent(seq: u64, at: Instant) -> Sent {
        Sent {
            seq: SeqNo(seq),
            timestamp: 0,
            marker: false,
            capture: None,
            payload: Bytes::from_static(b"p"),
            sent_at: at,
            resent_at: None,
            resends: 0,
            refused: false,
        }
    }

    #[test]
    fn resends_at_most_once_per_rtt() {
        let t0 = test_instant();
        let rtt = Duration::from_millis(50);
        let mut h = History::new(Duration::from_secs(1));
        for s in 10..20 {
            h.push(t0, sent(s, t0));
        }
        assert!(h.resend(t0, SeqNo(15), rtt).is_ok());
        assert_eq!(
            h.resend(t0 + rtt / 2, SeqNo(15), rtt).err(),
            Some(Refusal::TooSoon)
        );
        assert!(h.resend(t0 + rtt, SeqNo(15), rtt).is_ok());
        assert_eq!(h.resend(t0, SeqNo(9), rtt).err(), Some(Refusal::Unknown));
        assert_eq!(h.resend(t0, SeqNo(20), rtt).err(), Some(Refusal::Unknown));
    }

    #[test]
    fn forgets_packets_older_than_max_age() {
        let t0 = test_instant();
        let mut h = History::new(Duration::from_secs(1));
        h.push(t0, sent(1, t0));
        let later = t0 + Duration::from_millis(1500);
        h.push(later, sent(2, later));
        assert_eq!(h.len(), 1);
        assert_eq!(
            h.resend(later, SeqNo(1), Duration::ZERO).err(),
            Some(Refusal::Unknown)
        );
    }
}
