//! The incoming streams, keyed by the peer's SSRC and built from the agreement.
//!
//! As in str0m's `Streams`: one map from the main SSRC to the stream, and a lookup from
//! every agreed SSRC (main or RTX) to the main one, so a retransmission finds its stream
//! in one step. Nothing here is created by a packet: a stream exists because it was
//! agreed, and a packet that names no agreed SSRC, or the wrong payload type for it, is
//! refused.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use super::agreement::Track;
use crate::recv::RecvStream;
use crate::recv::nack::NackGenerator;
use crate::types::{Pt, Ssrc};

/// Audio or video.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MediaKind {
    Audio,
    Video,
}

/// One incoming stream: sequence tracking and its NACK generator.
#[derive(Debug)]
pub(super) struct Incoming {
    pub(super) kind: MediaKind,
    /// What the peer agreed to send on it.
    pub(super) track: Track,
    /// Whether NACK was agreed for this kind (and is on in our config).
    pub(super) nack_on: bool,
    pub(super) stream: RecvStream,
    pub(super) nack: NackGenerator,
    /// When its first packet arrived.
    pub(super) started: Option<Instant>,
}

/// Why an RTP packet found no stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NoRoute {
    /// Its SSRC was not agreed.
    UnknownSsrc,
    /// Its SSRC was agreed, with another payload type.
    UnknownPt,
}

/// Where an agreed SSRC leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Route {
    /// The main SSRC of the stream.
    main: Ssrc,
    /// The payload type agreed for this SSRC.
    pt: Pt,
    /// Whether this SSRC carries the stream's retransmissions (RFC 4588).
    rtx: bool,
}

/// The incoming streams.
#[derive(Debug, Default)]
pub(super) struct Streams {
    /// By main SSRC.
    rx: BTreeMap<Ssrc, Incoming>,
    /// Every agreed SSRC, main and RTX, to its stream.
    lookup: HashMap<Ssrc, Route>,
    /// The peer's video FEC packets: the SSRC (its video RTX) and payload type.
    fec: Option<(Ssrc, Pt)>,
}

impl Streams {
    /// The main SSRC of the stream `ssrc` belongs to, and whether `ssrc` is its RTX.
    pub(super) fn route(&self, ssrc: Ssrc, pt: Pt) -> Result<(Ssrc, bool), NoRoute> {
        let route = self.lookup.get(&ssrc).ok_or(NoRoute::UnknownSsrc)?;
        if route.pt != pt {
            return Err(NoRoute::UnknownPt);
        }
        Ok((route.main, route.rtx))
    }

    /// Where the peer's video FEC packets come from (its video RTX SSRC) and their
    /// payload type; `None` when FEC was not agreed.
    pub(super) fn set_fec(&mut self, pt: Option<Pt>) {
        let rtx = self.kind(MediaKind::Video).and_then(|rx| rx.track.rtx);
        self.fec = pt.zip(rtx).map(|(pt, (_, ssrc))| (ssrc, pt));
    }

    /// Whether a packet with `ssrc` and `pt` is one of the peer's video FEC packets.
    pub(super) fn is_fec(&self, ssrc: Ssrc, pt: Pt) -> bool {
        self.fec == Some((ssrc, pt))
    }

    /// Whether `ssrc` is one of the peer's agreed main SSRCs.
    pub(super) fn is_main(&self, ssrc: Ssrc) -> bool {
        self.rx.contains_key(&ssrc)
    }

    pub(super) fn get_mut(&mut self, main: Ssrc) -> Option<&mut Incoming> {
        self.rx.get_mut(&main)
    }

    pub(super) fn kind(&self, kind: MediaKind) -> Option<&Incoming> {
        self.rx.values().find(|rx| rx.kind == kind)
    }

    pub(super) fn kind_mut(&mut self, kind: MediaKind) -> Option<&mut Incoming> {
        self.rx.values_mut().find(|rx| rx.kind == kind)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Incoming> {
        self.rx.values()
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Incoming> {
        self.rx.values_mut()
    }

    /// Sets the stream of `kind` to `track`. A stream already on the same main SSRC is
    /// kept (its RTX and NACK settings follow the new agreement); otherwise the old one
    /// goes and `new` builds its successor. Returns whether the stream was replaced.
    pub(super) fn set(
        &mut self,
        kind: MediaKind,
        track: Option<(Track, bool)>,
        new: impl FnOnce(Ssrc) -> RecvStream,
        nack: impl FnOnce() -> NackGenerator,
    ) -> bool {
        let current = self.kind(kind).map(|rx| rx.track.ssrc);
        let replaced = current != track.map(|(t, _)| t.ssrc);
        if replaced {
            if let Some(old) = current {
                self.rx.remove(&old);
            }
            if let Some((track, nack_on)) = track {
                let incoming = Incoming {
                    kind,
                    track,
                    nack_on,
                    stream: new(track.ssrc),
                    nack: nack(),
                    started: None,
                };
                self.rx.insert(track.ssrc, incoming);
            }
        } else if let (Some((track, nack_on)), Some(rx)) = (track, self.kind_mut(kind)) {
            rx.track = track;
            rx.nack_on = nack_on;
        }
        self.lookup.clear();
        for rx in self.rx.values() {
            let t = rx.track;
            let main = Route {
                main: t.ssrc,
                pt: t.pt,
                rtx: false,
            };
            self.lookup.insert(t.ssrc, main);
            if let Some((pt, ssrc)) = t.rtx {
                let rtx = Route {
                    main: t.ssrc,
                    pt,
                    rtx: true,
                };
                self.lookup.insert(ssrc, rtx);
            }
        }
        replaced
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(pt: u8, ssrc: u32, rtx: Option<(u8, u32)>) -> Track {
        Track {
            pt: Pt(pt),
            ssrc: Ssrc(ssrc),
            rtx: rtx.map(|(p, s)| (Pt(p), Ssrc(s))),
        }
    }

    fn set(streams: &mut Streams, kind: MediaKind, t: Option<Track>) -> bool {
        let make = |ssrc| RecvStream::new(ssrc, 48_000);
        let nack = || NackGenerator::new(Default::default(), Default::default(), 1);
        streams.set(kind, t.map(|t| (t, true)), make, nack)
    }

    #[test]
    fn rtx_ssrcs_lead_to_their_main_stream_and_payload_types_must_match() {
        let mut s = Streams::default();
        set(
            &mut s,
            MediaKind::Audio,
            Some(track(111, 1, Some((112, 2)))),
        );
        set(&mut s, MediaKind::Video, Some(track(96, 3, None)));
        assert_eq!(s.route(Ssrc(1), Pt(111)), Ok((Ssrc(1), false)));
        assert_eq!(s.route(Ssrc(2), Pt(112)), Ok((Ssrc(1), true)));
        assert_eq!(s.route(Ssrc(2), Pt(111)), Err(NoRoute::UnknownPt));
        assert_eq!(s.route(Ssrc(3), Pt(96)), Ok((Ssrc(3), false)));
        assert_eq!(s.route(Ssrc(4), Pt(97)), Err(NoRoute::UnknownSsrc));
        assert!(s.is_main(Ssrc(3)) && !s.is_main(Ssrc(2)));
    }

    #[test]
    fn a_new_agreement_keeps_an_unchanged_stream_and_replaces_a_changed_one() {
        let mut s = Streams::default();
        assert!(set(&mut s, MediaKind::Audio, Some(track(111, 1, None))));
        assert!(!set(
            &mut s,
            MediaKind::Audio,
            Some(track(111, 1, Some((112, 2))))
        ));
        assert_eq!(s.route(Ssrc(2), Pt(112)), Ok((Ssrc(1), true)));
        assert!(set(&mut s, MediaKind::Audio, Some(track(111, 7, None))));
        assert_eq!(s.route(Ssrc(1), Pt(111)), Err(NoRoute::UnknownSsrc));
        assert_eq!(s.route(Ssrc(2), Pt(112)), Err(NoRoute::UnknownSsrc));
        assert!(set(&mut s, MediaKind::Audio, None));
        assert!(s.kind(MediaKind::Audio).is_none());
    }
}
