//! What the session sends, and how fast (issue 13): the video encoder's target from the
//! loss rule and the peer's delay-based estimate (its REMB), and the send budget that
//! holds everything sent to that estimate.
//!
//! The peer's estimate covers all we send (audio, video, retransmissions, video FEC and
//! audio redundancy: its incoming rate counts every packet). With one, the split is
//! libwebrtc's: audio frames first; then video, which keeps at least a floor; then
//! protection, which gets what the estimate leaves after audio and the floor; the video
//! encoder gets the rest, capped by the loss rule. Protection counts what was *wanted*
//! (sent, or refused by the budget), so when the budget refuses protection the encoder
//! target comes down to make room for it, down to the floor, and goes back up as the
//! protection wanted falls. Without delay-based control the target is the loss rule's,
//! as before, and nothing is refused.
//!
//! Under delay-based control what is held is the peer's estimate, with four departures
//! from it:
//! - Before the first estimate comes, the configured start bitrate, which holds the
//!   protection too: unheld before it, a call starting at 1 Mbit/s into 300 kbit/s
//!   with FEC and retransmissions on top (5 MB of them) filled both directions'
//!   drop-tail queues; each queue then dropped the estimates that would have slowed
//!   the other side, and in media/tests/capacity.rs (10 % loss besides) A heard its
//!   first estimate 17 s in, having sent 56 Mbit where 0.5 were allowed. (A start at
//!   libwebrtc's 300 kbit/s instead was tried: no loss at the start on a 300 kbit/s
//!   link, but without libwebrtc's probes the estimate then grows 8 % a second, and a
//!   1 Mbit/s link was half used over a 20 s call; see the README.)
//! - When no estimate has come for [`Session::feedback_timeout`] (two report intervals,
//!   at least a second), the held rate halves, and again after each further timeout,
//!   down to the configured minimum: a side whose feedback is being dropped drains the
//!   queue that drops it. The next estimate replaces it. Not while the peer's transport
//!   feedback keeps acknowledging what we send: the estimates were lost at random.
//! - When the congestion window is full, acknowledgements come at under 30 % of what
//!   was sent a round trip before, and the peer's feedback has been silent for longer
//!   than its measured loss on the way explains, the path collapsed: the held rate
//!   comes down at once to GCC's share of what is acknowledged, ahead of the peer's
//!   estimate, which comes back through the same collapsed path
//!   (`Session::cut_for_collapse`).
//! - When our own incoming link collapses (a queue filling on it at several times the
//!   rate it now delivers, under 35 % of what it carried), the held rate comes down by
//!   the same share at once, on the guess that the link fell both ways
//!   (`Session::on_incoming_collapse`). Each of these cuts gives way once a packet sent
//!   since met no queue, or to an estimate of the peer's that shows the drop.
//!
//! A peer that reports on our video but never sends an estimate does not run
//! delay-based control: after [`SILENT_PEER_REPORTS`] of its reports nothing is held.

use std::time::{Duration, Instant};

use tracing::{debug, trace};

use super::{Event, Session};
use crate::cc::{Aimd, URGENT_DROP};
use crate::recv::tcc::FEEDBACK_INTERVAL;

/// The least video target under an estimate (libwebrtc's default minimum video
/// bitrate): a 640x480 picture at a few frames a second.
pub(super) const MIN_VIDEO_BPS: u64 = 30_000;
/// Video media keeps at least this share of what the estimate leaves after audio
/// (capped at the configured minimum bitrate): protection takes at most the rest.
const VIDEO_FLOOR_SHARE: f64 = 0.5;
/// Reports on our video without any estimate after which the peer is taken not to run
/// delay-based control. Every regular report of a peer that has an estimate carries it;
/// only its first (100 ms in, before 200 ms of arrivals) goes without.
const SILENT_PEER_REPORTS: u64 = 3;
/// The congestion window pushes the encoder back only while acknowledgements come at
/// under this share of the rate sent a round trip before.
const COLLAPSED_SHARE: f64 = 0.5;
/// What is held is cut at once (see `Session::cut_for_collapse`) only while
/// acknowledgements come at under this share of the rate sent a round trip before. One
/// large frame of the peer's ahead of our feedback on the reverse path delays the
/// acknowledgements of a window by at most its time on that link: on the lab's 1 and
/// 2.5 Mbit/s links they came at 34-49 % of the rate sent when that happened. A path
/// that kept a fifth of its capacity, both ways, gave 18-24 %.
const CUT_SHARE: f64 = 0.3;
/// A silence of the peer's feedback is a collapse only when its random loss would
/// explain one this long less often than this: at 20 feedbacks a second, once in some
/// eight minutes.
const RANDOM_SILENCE: f64 = 1e-4;
/// The most feedbacks in a row taken as lost at random, however lossy the way back.
const MAX_LOST_IN_A_ROW: u32 = 8;
/// While the congestion window holds video, the encoder's target leaves room to send
/// what waits within this long.
const BACKLOG_DRAIN: Duration = Duration::from_millis(500);
/// A forward queue under this has drained (what one-way jitter adds aside): a cut for
/// a collapse gives way to the peer's estimate.
const QUEUE_DRAINED: Duration = Duration::from_millis(30);
/// The least feedback timeout: the peer's first estimate needs 200 ms of arrivals.
const MIN_FEEDBACK_TIMEOUT: Duration = Duration::from_secs(1);

/// What had been sent at the last video report (bytes), and when.
#[derive(Debug, Clone, Copy)]
pub(super) struct RateMark {
    at: Instant,
    audio: u64,
    protection: u64,
    sent: u64,
    overhead: u64,
}

impl RateMark {
    pub(super) fn new(now: Instant) -> Self {
        Self {
            at: now,
            audio: 0,
            protection: 0,
            sent: 0,
            overhead: 0,
        }
    }
}

/// The floor of the video target when `video_bps` is what the estimate leaves after
/// audio: half of it, at most the configured minimum, at least [`MIN_VIDEO_BPS`]. A
/// 300 kbit/s path keeps the configured 100 kbit/s; after a drop to 150 kbit/s the
/// floor is 50 kbit/s, so protection still fits beside it.
fn video_floor(video_bps: u64, min_bitrate: u64) -> u64 {
    ((video_bps as f64 * VIDEO_FLOOR_SHARE) as u64)
        .min(min_bitrate)
        .max(MIN_VIDEO_BPS)
}

/// The pacer's rate: `factor` times the video target and the protection wanted beside
/// it, which leave through the pacer too.
fn pacing_rate(target: u64, protection: u64, factor: f64) -> u64 {
    (target.saturating_add(protection) as f64 * factor) as u64
}

impl Session {
    /// The video target (see the module docs); the pacer follows it, the encoder hears
    /// of a change, and the budget takes the peer's estimate.
    pub(super) fn apply_target(&mut self, now: Instant) {
        let acked = self.in_flight.ack_rate(now);
        // The share of what we sent a round trip ago that acknowledgements come at now,
        // while the window is full.
        let acked_share = self
            .in_flight
            .sent_rate_a_round_trip_ago(now)
            .filter(|_| self.window_full)
            .map(|sent| acked as f64 / sent.max(1) as f64);
        if let Some(share) = acked_share {
            trace!(share, acked, "window full");
        }
        let collapsed = acked_share.is_some_and(|share| share < COLLAPSED_SHARE);
        if acked_share.is_some_and(|share| share < CUT_SHARE) && self.feedback_stopped(now) {
            self.cut_for_collapse(now, acked);
        }
        let loss_based = self.bwe.target_bps();
        let target = match self.held_estimate {
            None => loss_based.clamp(self.config.min_bitrate, self.config.max_bitrate),
            Some(estimate) => {
                // RTCP and SRTP's tags are sent too (libwebrtc takes the packet
                // overhead off the encoder's target likewise).
                let video = estimate.saturating_sub(self.audio_bps + self.overhead_bps);
                let floor = video_floor(video, self.config.min_bitrate);
                // The loss rule starts from what the path carries, and follows it up
                // while there is no loss to react to.
                self.bwe.cap(video.max(floor));
                self.bwe.raise_to(video);
                let protection = self.protection_bps.min(video.saturating_sub(floor));
                video
                    .saturating_sub(protection)
                    .min(self.bwe.target_bps())
                    .clamp(floor, self.config.max_bitrate)
            }
        };
        // While the congestion window is full and acknowledgements come at well under
        // the rate we sent at a round trip ago, the path carries less than it did (it
        // collapsed):
        // the encoder makes no more than what leaves (the rate acknowledgements come
        // at), less what drains the video already waiting (see `send::inflight`). A
        // window that one large frame fills, acknowledgements keeping pace, moves
        // nothing: pushed back on each, the encoder's target swung by a fifth several
        // times a second on the 1 Mbit/s link. (Against the estimate instead, an
        // encoder that made less than it allowed read as a collapse, and the pushback
        // kept it there: a 2.5 Mbit/s link 70 % used where it was 82 %.)
        let pushed_back = collapsed.then(|| {
            let leaving = acked.saturating_sub(self.audio_bps + self.overhead_bps);
            let backlog = self.pacer.queued_bytes() as f64 * 8.0 / BACKLOG_DRAIN.as_secs_f64();
            leaving.saturating_sub(backlog as u64).max(MIN_VIDEO_BPS)
        });
        let paced_target = target;
        let target = pushed_back.map_or(target, |cap| target.min(cap));
        self.budget.set_rate(now, self.held_estimate);
        // Video is paced at a multiple of the target (libwebrtc paces at 2.5 times its
        // estimate), so a large frame leaves quickly. Pacing at the estimate instead
        // (tried: this encoder's frames vary from 0.5 to 12 kB at 2 kB on average, and
        // the large ones queue at the bottleneck) raised the 1 Mbit/s link's use from
        // 71 % to 80 % but video latency by 35-55 ms at p50, the receiver releasing
        // every frame at the lateness of the large ones.
        //
        // The multiple is of the video and its protection (retransmissions and FEC
        // travel through the pacer too; libwebrtc's estimate covers them): at 20 % loss
        // protection is 70-100 % of the target, and paced at 2.5 times the target alone
        // the pacer ran near its rate, a large frame and its parity queued 150-200 ms
        // behind it and repairs came after the freeze threshold (lab, 640x480).
        // (The pushback aside: the video waiting drains the faster.)
        let pacing = pacing_rate(paced_target, self.protection_bps, self.config.pacing_factor);
        self.pacer.set_rate(pacing);
        if target != self.target_bps {
            debug!(
                ms = now.saturating_duration_since(self.start).as_millis(),
                target,
                loss_based,
                peer_estimate = ?self.peer_estimate,
                held = ?self.held_estimate,
                audio = self.audio_bps,
                protection = self.protection_bps,
                sent = self.sent_bps,
                pacing,
                "video target bitrate"
            );
            self.target_bps = target;
            self.push_event(Event::TargetBitrate { bps: target });
        }
    }

    /// The congestion window found the path collapsed (see `apply_target`): what is
    /// held comes down at once to GCC's share of the rate acknowledgements come at.
    /// The peer's own cut comes back through the reverse path, whose queue fills as
    /// fast when both directions drop: on the lab's 2.5 → 0.5 Mbit/s step it came
    /// 370-440 ms after the drop. Until then the window held only the bytes in flight
    /// to the old estimate (four times the new link's queue), the sender kept that
    /// queue full, and each large frame overflowed it. (The feedback's own timing of
    /// arrivals is no better here: what it reports then arrived before the drop.) The
    /// cut stands until the peer's estimate shows it saw the drop too (see
    /// `on_peer_estimate`), or a packet sent since met no queue (`on_forward_queue`);
    /// an estimate that comes a feedback timeout after the cut replaces it whatever it
    /// says.
    fn cut_for_collapse(&mut self, now: Instant, acked: u64) {
        let Some(held) = self.held_estimate else {
            return;
        };
        let cut = ((acked as f64 * Aimd::BETA) as u64).max(self.config.min_bitrate);
        if cut < held {
            debug!(
                ms = now.saturating_duration_since(self.start).as_millis(),
                held,
                cut,
                acked,
                sent = ?self.in_flight.sent_rate_a_round_trip_ago(now),
                forward_queue = ?self
                    .in_flight
                    .forward_queue()
                    .map(|(at, q)| (now.saturating_duration_since(at), q)),
                "the path collapsed: held estimate cut"
            );
            self.hold_cut(now, held, cut);
        }
    }

    /// Holds `cut` for a collapse, in place of `held`: the budget drops its debt, and
    /// the cut stands until the peer's estimate or the queue says otherwise (see
    /// `cut_for_collapse`).
    fn hold_cut(&mut self, now: Instant, held: u64, cut: u64) {
        self.held_estimate = Some(cut);
        self.budget.on_collapse(now);
        self.collapse = Some(self.collapse.map_or((held, now), |(from, _)| (from, now)));
        self.collapse_cuts += 1;
    }

    /// Our incoming link collapsed: it delivers `share` of what it carried, and a queue
    /// fills on it at several times its rate (`DelayBasedBwe::take_collapse`). What is
    /// held comes down at once to GCC's 85 % of the same share of what was held before
    /// any collapse. When a link's capacity falls both ways at once (a shared medium
    /// whose rate adapts, a radio link that fades), our own way out fell too, and
    /// nothing else tells us before some 190 ms. Neither the peer's estimate nor our
    /// acknowledgements can: they come back through the collapsed link, behind the
    /// queue the peer's sending fills. On the lab's 2.5 → 0.5 Mbit/s step the collapse
    /// showed 92-147 ms after it in five directions of six traced (250 ms in the
    /// sixth), where the window's own cut came at 190-275 ms; the loss after the
    /// warm-up fell from 1.13 % to 0.78 % (see the README).
    ///
    /// Where only the incoming link collapsed, the cut gives way as a cut for a
    /// collapse of our own does: once the peer's feedback shows a packet sent since it
    /// met no queue, a round trip over the slowed link (see `on_forward_queue`).
    /// Repeated collapses cut from what was held before the first, not again from
    /// the cut.
    pub(super) fn on_incoming_collapse(&mut self, now: Instant, share: f64) {
        let Some(held) = self.held_estimate else {
            return;
        };
        let from = self.collapse.map_or(held, |(from, _)| from);
        let cut = ((from as f64 * share * Aimd::BETA) as u64).max(self.config.min_bitrate);
        if cut < held {
            debug!(
                ms = now.saturating_duration_since(self.start).as_millis(),
                held, cut, share, "our incoming link collapsed: held estimate cut"
            );
            self.hold_cut(now, held, cut);
            self.apply_target(now);
        }
    }

    /// Whether the peer's feedback has been silent for longer than its loss on the way
    /// explains: [`FEEDBACK_INTERVAL`] beyond the most feedbacks in a row that the loss
    /// measured loses once in [`RANDOM_SILENCE`] (at least one). Under 10 % random loss,
    /// three feedbacks in a row are lost about once a call: with the window full and no
    /// acknowledgement in 150 ms, such a silence looked like a collapse, and each cut
    /// (to a fifth of the estimate or less, for about 200 ms) refused the repairs the
    /// loss needed.
    pub(super) fn feedback_stopped(&self, now: Instant) -> bool {
        let p = self.in_flight.feedback_loss();
        let mut in_a_row = 1u32;
        while in_a_row < MAX_LOST_IN_A_ROW && p.powi(in_a_row as i32) > RANDOM_SILENCE {
            in_a_row += 1;
        }
        self.in_flight
            .silence(now)
            .is_some_and(|s| s > FEEDBACK_INTERVAL * (in_a_row + 1))
    }

    /// Whether the peer's transport feedback came within the last feedback timeout and
    /// acknowledges at least [`COLLAPSED_SHARE`] of what was sent a round trip before:
    /// the way back delivers, and the way there carries what we send. The held rate
    /// halves when estimates stop so that a side whose feedback is dropped at a full
    /// queue drains it; acknowledgements that keep coming show no such queue, and an
    /// estimate missing then was lost at random (under 10 % loss two reports in a row
    /// go about once a call, and each halving refused the repairs that loss needed for
    /// up to a second).
    fn acknowledgements_keep_pace(&self, now: Instant) -> bool {
        let heard = self
            .in_flight
            .silence(now)
            .is_some_and(|s| s < self.feedback_timeout());
        let sent = self.in_flight.sent_rate_a_round_trip_ago(now);
        heard
            && sent.is_some_and(|sent| {
                self.in_flight.ack_rate(now) as f64 >= COLLAPSED_SHARE * sent as f64
            })
    }

    /// Whether a packet sent since the last cut for a collapse met no queue.
    fn queue_drained_since_cut(&self) -> bool {
        self.collapse.is_some_and(|(_, at)| {
            self.in_flight
                .forward_queue()
                .is_some_and(|(sent, q)| sent >= at && q < QUEUE_DRAINED)
        })
    }

    /// Transport feedback came: once a packet sent since a cut for a collapse met no
    /// queue, the cut gives way to the peer's last estimate. (On a path that really
    /// collapsed, the queue drains at what the cut leaves of the link, over a second
    /// or more; the peer's lower estimate has come long before. Cuts that drain at
    /// once are those of acknowledgements held up on the way back, not of the path.)
    pub(super) fn on_forward_queue(&mut self, now: Instant) {
        let Some((from, _)) = self.collapse else {
            return;
        };
        if self.held_estimate.is_some() && self.queue_drained_since_cut() {
            debug!(
                ms = now.saturating_duration_since(self.start).as_millis(),
                "the queue drained: the collapse cut gives way"
            );
            self.collapse = None;
            self.held_estimate = Some(self.peer_estimate.unwrap_or(from));
            self.apply_target(now);
        }
    }

    /// A cut for a collapse no longer stands against the peer's estimates (a new path,
    /// or an agreement without the feedback that would show the queue drain): the
    /// next estimate replaces it.
    pub(super) fn forget_collapse(&mut self) {
        self.collapse = None;
    }

    /// Whether delay-based control runs: on in our config, and REMB agreed.
    pub(super) fn delay_control(&self) -> bool {
        self.config.delay_bwe && self.remb_agreed()
    }

    /// How long without an estimate from the peer before the held rate halves.
    pub(super) fn feedback_timeout(&self) -> Duration {
        (self.config.rtcp_interval * 2).max(MIN_FEEDBACK_TIMEOUT)
    }

    /// An agreement was set: under delay-based control, and before any estimate, the
    /// start estimate is held.
    pub(super) fn start_delay_control(&mut self, now: Instant) {
        if !self.delay_control() {
            self.collapse = None;
            if self.held_estimate.take().is_some() {
                self.apply_target(now);
            }
            return;
        }
        let silent_peer = self.video_reports >= SILENT_PEER_REPORTS;
        if self.held_estimate.is_none() && self.peer_estimate.is_none() && !silent_peer {
            self.held_estimate = Some(self.config.start_bitrate);
            self.feedback_at = now;
            self.apply_target(now);
        }
    }

    /// The peer's estimate of what we may send (its REMB) came.
    pub(super) fn on_peer_estimate(&mut self, now: Instant, bps: u64) {
        self.remb_received += 1;
        self.peer_estimate = Some(bps);
        self.feedback_at = now;
        // After a cut for a collapse, an estimate no lower than the one it overrode (by
        // less than the drop the peer reports at once) was made before the peer saw the
        // drop (it comes through the same queues): the
        // cut stands, and the prober does not hear it. Not for long: one that comes
        // more than a feedback timeout after the last cut is taken as it is.
        let stale = self.collapse.is_some_and(|(from, at)| {
            (bps as f64) >= from as f64 * (1.0 - URGENT_DROP)
                && now.saturating_duration_since(at) < self.feedback_timeout()
        });
        if stale {
            self.held_estimate = self.held_estimate.map(|held| held.min(bps));
        } else {
            self.collapse = None;
            self.held_estimate = Some(bps);
            self.probe
                .on_estimate(now, bps, self.in_flight.delivered_share());
            self.start_probing();
        }
        self.apply_target(now);
    }

    /// Halves the held rate when the peer's estimates stopped coming (see the module
    /// docs); stops holding when the peer turns out not to estimate.
    pub(super) fn check_feedback(&mut self, now: Instant) {
        let Some(held) = self.held_estimate else {
            return;
        };
        if self.path.is_none() {
            // Nothing is sent before a path: no estimate is due yet.
            self.feedback_at = now;
            return;
        }
        if self.peer_estimate.is_none() && self.video_reports >= SILENT_PEER_REPORTS {
            debug!(
                reports = self.video_reports,
                "the peer reports without estimates: nothing held"
            );
            self.held_estimate = None;
            self.collapse = None;
            // As without delay-based control: the loss rule from the configured start
            // (holding capped it).
            self.bwe.raise_to(self.config.start_bitrate);
            self.apply_target(now);
            return;
        }
        if now.saturating_duration_since(self.feedback_at) < self.feedback_timeout() {
            return;
        }
        if self.acknowledgements_keep_pace(now) {
            // The path carries what we send, and says so: the estimates that did not
            // come were lost on the way, not held in a queue (see the method).
            debug!(
                ms = now.saturating_duration_since(self.start).as_millis(),
                held, "no estimate from the peer, but acknowledgements keep pace: held"
            );
            self.feedback_at = now;
            self.estimates_missed += 1;
            return;
        }
        let halved = (held / 2).max(self.config.min_bitrate);
        debug!(
            ms = now.saturating_duration_since(self.start).as_millis(),
            held, halved, "no estimate from the peer: held rate halved"
        );
        self.feedback_at = now;
        self.feedback_timeouts += 1;
        self.held_estimate = Some(halved);
        self.apply_target(now);
    }

    /// The rates of our audio frames and of the protection wanted since the previous
    /// video report.
    pub(super) fn measure_rates(&mut self, now: Instant) {
        let audio = self.audio_tx.counters();
        let video = self
            .video_tx
            .as_ref()
            .map(crate::send::SendStream::counters)
            .unwrap_or_default();
        let mark = RateMark {
            at: now,
            // Audio datagrams less the redundancy they carried.
            audio: audio.bytes.saturating_sub(audio.red_bytes),
            // Sent, and refused by the budget (each retransmission once).
            protection: audio.rtx_bytes
                + audio.red_bytes
                + video.rtx_bytes
                + video.fec_bytes
                + audio.rtx_refused_bytes
                + video.rtx_refused_bytes
                + self.budget.counters().redundancy_refused_bytes,
            sent: audio.bytes + audio.rtx_bytes + video.bytes + video.rtx_bytes + video.fec_bytes,
            overhead: self.overhead_bytes,
        };
        let secs = now
            .saturating_duration_since(self.rate_mark.at)
            .as_secs_f64();
        if secs > 0.0 {
            let bps =
                |now: u64, before: u64| (now.saturating_sub(before) as f64 * 8.0 / secs) as u64;
            self.audio_bps = bps(mark.audio, self.rate_mark.audio);
            self.protection_bps = bps(mark.protection, self.rate_mark.protection);
            self.sent_bps = bps(mark.sent, self.rate_mark.sent);
            self.overhead_bps = bps(mark.overhead, self.rate_mark.overhead);
            self.rate_mark = mark;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::send::budget::{Protection, WINDOW};
    use crate::test_instant;
    use crate::types::Ssrc;
    use crate::wire::{self, Rtcp, build_rtcp};
    use crate::{Agreement, SessionConfig};

    const A: ([u8; 4], u16) = ([127, 0, 0, 1], 40_000);
    const B: ([u8; 4], u16) = ([127, 0, 0, 1], 40_002);
    const TICK: Duration = Duration::from_millis(5);
    const FRAME: Duration = Duration::from_millis(33);

    /// An H.264 access unit of about `len` bytes: SPS, PPS and IDR, or one slice.
    fn access_unit(len: usize, keyframe: bool) -> Vec<u8> {
        let mut v = if keyframe {
            vec![0, 0, 0, 1, 0x67, 1, 0, 0, 0, 1, 0x68, 1, 0, 0, 0, 1, 0x65]
        } else {
            vec![0, 0, 0, 1, 0x41]
        };
        v.extend((0..len).map(|i| (i % 251) as u8 | 1));
        v
    }

    /// A call in virtual time without a bottleneck: both sides send 80-byte audio frames
    /// every 20 ms and video frames of the size their target asks for, a keyframe every
    /// 3 s; whether `b`'s datagrams reach `a` is up to the test.
    struct Call {
        a: Session,
        b: Session,
        now: Instant,
        ticks: u32,
        b_heard: bool,
        /// Whether `b`'s reports (its estimates with them) reach `a` while `b_heard`;
        /// its transport feedback comes apart from them. (Told apart in plain calls
        /// only.)
        b_reports_heard: bool,
        /// Whether `b` asks for every video packet of `a`'s again (plain calls only),
        /// its requests reaching `a` whether or not `b_heard`.
        nack_all: bool,
        /// `a`'s bytes on the wire.
        a_sent: u64,
        /// `b` hears one in this many of `a`'s datagrams.
        a_heard_one_in: u32,
        /// One in this many of `a`'s datagrams is lost (0: none).
        a_lost_one_in: u32,
        /// One in this many of `b`'s transport feedbacks is lost (0: none).
        b_feedback_lost_one_in: u32,
        /// `a`'s datagrams and `b`'s transport feedbacks so far.
        a_datagrams: u32,
        b_feedbacks: u32,
        /// `b`'s datagrams that carried its estimate.
        b_estimates: u32,
        /// A bottleneck on `b`'s way to `a` (none: `b`'s datagrams come at once).
        b_link: Option<Bottleneck>,
    }

    /// A link of `bps` with a queue that never overflows: what enters leaves in order,
    /// each datagram when the link has carried it.
    struct Bottleneck {
        bps: f64,
        free: Instant,
        queue: std::collections::VecDeque<(Instant, Vec<u8>)>,
    }

    impl Bottleneck {
        fn new(now: Instant, bps: f64) -> Self {
            Self {
                bps,
                free: now,
                queue: Default::default(),
            }
        }

        fn push(&mut self, now: Instant, datagram: &[u8]) {
            let on_the_wire = Duration::from_secs_f64(datagram.len() as f64 * 8.0 / self.bps);
            self.free = self.free.max(now) + on_the_wire;
            self.queue.push_back((self.free, datagram.to_vec()));
        }

        /// The next datagram through by `now`.
        fn pop(&mut self, now: Instant) -> Option<Vec<u8>> {
            self.queue
                .front()
                .is_some_and(|(at, _)| *at <= now)
                .then(|| self.queue.pop_front().map(|(_, d)| d))
                .flatten()
        }
    }

    impl Call {
        fn new(b_estimates: bool) -> Self {
            let now = test_instant();
            let mut a = SessionConfig::new()
                .set_seed(1)
                .set_delay_bwe(true)
                .build(now);
            let mut b = SessionConfig::new()
                .set_seed(2)
                .set_delay_bwe(b_estimates)
                .build(now);
            a.set_agreement(Agreement::between(&a, &b)).unwrap();
            b.set_agreement(Agreement::between(&b, &a)).unwrap();
            a.set_path(SocketAddr::from(B));
            b.set_path(SocketAddr::from(A));
            Self {
                a,
                b,
                now,
                ticks: 0,
                b_heard: true,
                b_reports_heard: true,
                nack_all: false,
                a_sent: 0,
                a_heard_one_in: 1,
                a_lost_one_in: 0,
                b_feedback_lost_one_in: 0,
                a_datagrams: 0,
                b_feedbacks: 0,
                b_estimates: 0,
                b_link: None,
            }
        }

        /// A call whose agreement protects nothing, so a test can read and write its
        /// RTCP.
        fn plain() -> Self {
            let mut call = Self::new(true);
            let (a, b) = (&mut call.a, &mut call.b);
            a.set_agreement(Agreement::between(a, b).plain()).unwrap();
            b.set_agreement(Agreement::between(b, a).plain()).unwrap();
            call
        }

        /// `a`'s send rate over the next `d`, bit/s.
        fn run(&mut self, d: Duration) -> f64 {
            let (sent, ticks) = (self.a_sent, d.div_duration_f64(TICK) as u32);
            for _ in 0..ticks {
                self.step();
            }
            (self.a_sent - sent) as f64 * 8.0 / d.as_secs_f64()
        }

        fn step(&mut self) {
            let now = self.now;
            let elapsed = TICK * self.ticks;
            let video = (elapsed.as_micros() % FRAME.as_micros()) < TICK.as_micros();
            for s in [&mut self.a, &mut self.b] {
                if self.ticks.is_multiple_of(4) {
                    s.send_audio(now, &[0xfc; 80], now).unwrap();
                }
                if video {
                    let frame = (elapsed.as_micros() / FRAME.as_micros()) as u32;
                    let keyframe = frame.is_multiple_of(90);
                    let len = (s.stats().target_bitrate_bps / 8 / 30) as usize;
                    let au = access_unit(if keyframe { len * 6 } else { len }, keyframe);
                    s.send_video(now, &au, now, keyframe).unwrap();
                }
                s.handle_timeout(now);
            }
            let video = self.a.video_ssrc();
            let mut seqs = Vec::new();
            while let Some(t) = self.a.poll_transmit() {
                self.a_sent += t.contents.len() as u64;
                self.a_datagrams += 1;
                match wire::parse_rtp(&t.contents, 3) {
                    Ok(p) if self.nack_all && Some(p.header.ssrc) == video => {
                        seqs.push(p.header.seq);
                    }
                    _ if !self.a_datagrams.is_multiple_of(self.a_heard_one_in) => {}
                    _ if self.a_lost_one_in > 0
                        && self.a_datagrams.is_multiple_of(self.a_lost_one_in) => {}
                    _ => self.b.handle_datagram(now, A.into(), &t.contents),
                }
            }
            if let (false, Some(media)) = (seqs.is_empty(), video) {
                let sender = self.b.audio_ssrc();
                let d = from_peer(
                    sender,
                    Rtcp::Nack {
                        sender,
                        media,
                        seqs,
                    },
                );
                self.a.handle_datagram(now, B.into(), &d);
            }
            while let Some(t) = self.b.poll_transmit() {
                let rtcp = wire::parse_rtcp(&t.contents).unwrap_or_default();
                let report = rtcp.iter().any(|p| matches!(p, Rtcp::Remb { .. }));
                let feedback = rtcp.iter().any(|p| matches!(p, Rtcp::TransportFeedback(_)));
                if feedback {
                    self.b_feedbacks += 1;
                }
                if report {
                    self.b_estimates += 1;
                }
                let feedback_lost = feedback
                    && self.b_feedback_lost_one_in > 0
                    && self.b_feedbacks.is_multiple_of(self.b_feedback_lost_one_in);
                if self.b_heard && (self.b_reports_heard || !report) && !feedback_lost {
                    match self.b_link.as_mut() {
                        Some(link) => link.push(now, &t.contents),
                        None => self.a.handle_datagram(now, B.into(), &t.contents),
                    }
                }
            }
            while let Some(d) = self.b_link.as_mut().and_then(|l| l.pop(now)) {
                self.a.handle_datagram(now, B.into(), &d);
            }
            while self.a.poll_event().is_some() || self.b.poll_event().is_some() {}
            self.ticks += 1;
            self.now += TICK;
        }
    }

    #[test]
    fn audio_redundancy_follows_the_paths_loss_from_transport_feedback_before_any_report() {
        // Every other one of a's datagrams lost, with no queue: before b's first report
        // on a's audio, transport feedback tells a, and its audio carries copies.
        let mut call = Call::new(true);
        call.a_heard_one_in = 2;
        call.run(Duration::from_millis(600));
        let red = call.a.red_tx.as_ref().unwrap();
        assert_eq!(red.distance(), 3);
        // A clean path sends plain audio.
        let mut call = Call::new(true);
        call.run(Duration::from_millis(600));
        assert_eq!(call.a.red_tx.as_ref().unwrap().distance(), 0);
    }

    #[test]
    fn a_full_congestion_window_holds_video_not_audio_until_feedback_comes() {
        let mut call = Call::new(true);
        call.run(Duration::from_secs(3));
        let c = call.a.in_flight.counters();
        // Feedback every 50 ms on every packet.
        assert!(c.feedbacks > 50 && c.received > 500, "{c:?}");
        assert_eq!((c.lost, c.refused, c.expired), (0, 0, 0), "{c:?}");
        let window = call
            .a
            .in_flight
            .window(call.a.held_estimate.unwrap())
            .unwrap();
        // The peer's datagrams (its feedback with them) stop coming: no more video
        // leaves than the window had room for, and all the audio does.
        call.b_heard = false;
        let (sent, audio) = (call.a_sent, call.a.stats().send_audio.packets);
        let closed = call.a.in_flight.counters().closed;
        call.run(Duration::from_millis(500));
        // Audio frames (80 bytes and headers, extensions, SRTP) and a report besides.
        let audio_sent = 25 * 150 + 300;
        let held = call.a_sent - sent;
        assert!(
            held <= window as u64 + audio_sent,
            "{held} bytes sent, window {window}"
        );
        assert_eq!(call.a.stats().send_audio.packets - audio, 25);
        assert_eq!(call.a.in_flight.counters().closed, closed + 1);
        assert!(call.a.window_full && call.a.pacer.queued_bytes() > 0);
        // The encoder was told: nothing leaves, so it makes the least.
        assert_eq!(call.a.stats().target_bitrate_bps, MIN_VIDEO_BPS);
        // Feedback comes again: the window opens and what waited leaves.
        call.b_heard = true;
        let sent = call.a_sent;
        call.run(Duration::from_millis(500));
        assert!(!call.a.window_full);
        assert!(call.a_sent - sent > window as u64);
    }

    #[test]
    fn a_keyframe_the_peer_asked_for_supersedes_the_video_waiting_to_leave() {
        let mut call = Call::plain();
        // Past the keyframe at 2.97 s: no keyframe waits with what follows.
        call.run(Duration::from_millis(3300));
        // The peer's feedback stops: the window closes and video waits in the pacer.
        call.b_heard = false;
        call.run(Duration::from_millis(500));
        let waiting = call.a.pacer.queued_bytes();
        assert!(
            call.a.window_full && waiting > 2000,
            "{waiting} bytes waiting"
        );
        let now = call.now;
        let made = |s: &Session| {
            let v = s.stats().send_video;
            v.bytes + v.fec_bytes
        };
        let (media, sender) = (call.a.video_ssrc().unwrap(), call.b.audio_ssrc());
        let pli = from_peer(sender, Rtcp::Pli { sender, media });
        // The peer asks for a keyframe; the delta frame made meanwhile still waits.
        call.a.handle_datagram(now, B.into(), &pli);
        let before = made(&call.a);
        call.a
            .send_video(now, &access_unit(500, false), now, false)
            .unwrap();
        let waiting = waiting as u64 + made(&call.a) - before;
        assert_eq!(call.a.pacer.queued_bytes() as u64, waiting);
        assert_eq!(call.a.stats().send_video.superseded_packets, 0);
        // The keyframe that answers it goes in place of all of that.
        let key = call.a.video_tx.as_ref().unwrap().next_seq();
        let before = made(&call.a);
        call.a
            .send_video(now, &access_unit(3000, true), now, true)
            .unwrap();
        let s = call.a.stats().send_video;
        assert_eq!(s.superseded_bytes, waiting);
        assert!(s.superseded_packets > 3, "{s:?}");
        let keyframe = made(&call.a) - before;
        assert_eq!(call.a.pacer.queued_bytes() as u64, keyframe);
        // Nothing before it is resent; the keyframe itself is.
        let nack = |seqs| {
            from_peer(
                sender,
                Rtcp::Nack {
                    sender,
                    media,
                    seqs,
                },
            )
        };
        // (With no acknowledgement coming, what is held was cut for a collapse, and the
        // send budget may refuse the keyframe's resend in turn: counted apart, as
        // wanted and not sent.)
        let resends = |s: &crate::send::SendCounters| (s.rtx_packets, s.rtx_refused_bytes);
        let answered = |before: (u64, u64), s: &crate::send::SendCounters| {
            let (resent, refused) = resends(s);
            resent - before.0 + u64::from(refused > before.1)
        };
        let (refused, before) = (s.nacks_refused, resends(&s));
        let asked = nack(vec![key.wire().wrapping_sub(1), key.wire()]);
        call.a.handle_datagram(now, B.into(), &asked);
        let s = call.a.stats().send_video;
        assert_eq!((s.nacks_refused, answered(before, &s)), (refused + 1, 1));
        // The peer asks again while that keyframe is still waiting to leave: the next
        // one supersedes nothing, and the first is still resent from.
        call.a.handle_datagram(now, B.into(), &pli);
        let (queued, before) = (call.a.pacer.queued_bytes() as u64, made(&call.a));
        call.a
            .send_video(now, &access_unit(3000, true), now, true)
            .unwrap();
        let added = made(&call.a) - before;
        assert_eq!(call.a.pacer.queued_bytes() as u64, queued + added);
        let after = call.a.stats().send_video;
        assert_eq!(after.superseded_packets, s.superseded_packets);
        let before = resends(&after);
        call.a
            .handle_datagram(now, B.into(), &nack(vec![key.next().wire()]));
        let s = call.a.stats().send_video;
        assert_eq!(
            (s.nacks_refused, answered(before, &s)),
            (after.nacks_refused, 1)
        );
    }

    #[test]
    fn a_keyframe_nobody_asked_for_supersedes_nothing() {
        let mut call = Call::new(true);
        // Past the keyframe at 2.97 s, then the window closes and video waits.
        call.run(Duration::from_millis(3300));
        call.b_heard = false;
        call.run(Duration::from_millis(500));
        let waiting = call.a.pacer.queued_bytes() as u64;
        assert!(waiting > 2000, "{waiting} bytes waiting");
        // The encoder's own keyframe (no request came) waits behind what is there.
        let made = |s: &Session| {
            let v = s.stats().send_video;
            v.bytes + v.fec_bytes
        };
        let (now, before) = (call.now, made(&call.a));
        call.a
            .send_video(now, &access_unit(3000, true), now, true)
            .unwrap();
        let added = made(&call.a) - before;
        assert_eq!(call.a.pacer.queued_bytes() as u64, waiting + added);
        assert_eq!(call.a.stats().send_video.superseded_packets, 0);
    }

    #[test]
    fn before_the_peers_first_estimate_protection_is_held_to_the_start() {
        // The peer's estimates do not come back (its queue is full, say) but its
        // requests do, for every video packet: unheld, each is retransmitted (more than
        // doubling what a narrow link's queue takes), and the estimates that would slow
        // the call are lost in it.
        let mut call = Call::new(true);
        let (a, b) = (&mut call.a, &mut call.b);
        a.set_agreement(Agreement::between(a, b).plain()).unwrap();
        b.set_agreement(Agreement::between(b, a).plain()).unwrap();
        call.b_heard = false;
        call.nack_all = true;
        let run = Duration::from_millis(1900);
        let rate = call.run(run);
        let s = call.a.stats();
        let start = call.a.config.start_bitrate;
        assert_eq!(s.held_estimate_bps, Some(start));
        assert!(s.budget.video_rtx_refused > 0, "{:?}", s.budget);
        // The start, and above it audio (measured at the peer's reports only), the
        // first keyframe and the window video retransmissions may borrow.
        let borrowed = start as f64 * WINDOW.as_secs_f64() / run.as_secs_f64();
        assert!(rate < 1.3 * start as f64 + borrowed, "{rate} bit/s");
        // Heard, the peer's estimate replaces it.
        call.nack_all = false;
        call.b_heard = true;
        call.run(Duration::from_secs(2));
        let s = call.a.stats();
        assert!(s.remb_received > 0);
        assert_eq!(s.held_estimate_bps, s.peer_estimate_bps);
    }

    #[test]
    fn the_estimate_goes_to_the_peer_at_least_every_quarter_second() {
        // In clear, so the estimates can be told apart.
        let mut call = Call::plain();
        call.run(Duration::from_secs(2));
        let before = call.b_estimates;
        call.run(Duration::from_secs(3));
        // Reports alone come every 0.5-1.5 s: three to six in 3 s.
        let sent = call.b_estimates - before;
        assert!((12..=14).contains(&sent), "{sent} estimates in 3 s");
        // With one estimate in two lost on the way, none is missed for long enough to
        // halve what is held, even where acknowledgements do not keep pace (the path
        // loses two in three of what `a` sends).
        call.a_heard_one_in = 3;
        call.b_reports_heard = false;
        let mut lost = 0;
        for _ in 0..20 {
            call.b_reports_heard = !call.b_reports_heard;
            let n = call.b_estimates;
            while call.b_estimates == n {
                call.step();
            }
            lost += u32::from(!call.b_reports_heard);
        }
        assert!(lost >= 10);
        assert_eq!(call.a.stats().feedback_timeouts, 0);
    }

    #[test]
    fn when_the_estimates_stop_coming_the_held_rate_halves_until_they_come_again() {
        // In clear, so the peer's reports can be told from its feedback.
        let mut call = Call::plain();
        call.run(Duration::from_secs(4));
        let before = call.run(Duration::from_secs(2));
        let held = call.a.stats().held_estimate_bps.unwrap();
        assert_eq!(call.a.stats().feedback_timeouts, 0);
        // The peer's reports are lost from now on, and the path loses two in three of
        // what we send. The peer's transport feedback still comes (so the window stays
        // open), but it acknowledges too little for the path to be carrying what we
        // send: one timeout, then a second.
        call.b_reports_heard = false;
        call.a_heard_one_in = 3;
        call.run(call.a.feedback_timeout() + Duration::from_millis(100));
        let s = call.a.stats();
        assert_eq!(s.feedback_timeouts, 1);
        assert_eq!(s.held_estimate_bps, Some(held / 2));
        call.run(call.a.feedback_timeout() - Duration::from_millis(200));
        let s = call.a.stats();
        assert_eq!(s.feedback_timeouts, 2);
        let quarter = (held / 4).max(call.a.config.min_bitrate);
        assert_eq!(s.held_estimate_bps, Some(quarter));
        // What is sent follows it down (video at the encoder's next frames).
        let after = call.run(Duration::from_millis(900));
        assert!(after < 0.6 * before, "{after} bit/s after {before} bit/s");
        // The next estimate replaces the halved rate.
        call.b_reports_heard = true;
        call.a_heard_one_in = 1;
        call.run(Duration::from_secs(2));
        let s = call.a.stats();
        assert_eq!(s.held_estimate_bps, s.peer_estimate_bps);
        assert!(s.held_estimate_bps.unwrap() > quarter, "{s:?}");
        assert_eq!(s.collapse_cuts, 0);
    }

    #[test]
    fn estimates_lost_while_acknowledgements_keep_pace_leave_the_held_rate() {
        let mut call = Call::plain();
        call.run(Duration::from_secs(6));
        let held = call.a.stats().held_estimate_bps.unwrap();
        // The peer's reports are lost, but everything else comes: its transport
        // feedback acknowledges all we send. Two timeouts pass without a halving.
        call.b_reports_heard = false;
        call.run(call.a.feedback_timeout() * 2 + Duration::from_millis(100));
        let s = call.a.stats();
        assert_eq!((s.feedback_timeouts, s.estimates_missed), (0, 2), "{s:?}");
        assert_eq!(s.held_estimate_bps, Some(held));
        assert_eq!(s.collapse_cuts, 0);
    }

    #[test]
    fn a_silence_the_feedbacks_loss_explains_is_no_collapse() {
        let mut call = Call::plain();
        call.run(Duration::from_secs(4));
        let held = call.a.stats().held_estimate_bps.unwrap();
        // One in two of the peer's transport feedbacks is lost on the way for a while,
        // and one in eight of our datagrams: the share lost climbs toward a half, and the
        // path itself is lossy.
        call.b_feedback_lost_one_in = 2;
        call.a_lost_one_in = 8;
        call.run(Duration::from_secs(5));
        assert!(call.a.in_flight.lossy_return());
        let loss = call.a.in_flight.feedback_loss();
        assert!(loss > 0.4, "{loss}");
        assert_eq!(call.a.stats().collapse_cuts, 0);
        // Then nothing of the peer's comes for 300 ms: at that loss eight lost in a row
        // are not rare enough to be a collapse, and nothing is cut. Nor does the window
        // hold video: past it in flight, but no queue was seen and the silence is
        // explained, so video still leaves.
        call.b_feedback_lost_one_in = 0;
        call.b_heard = false;
        let (sent, closed) = (call.a_sent, call.a.in_flight.counters().closed);
        call.run(Duration::from_millis(300));
        let s = call.a.stats();
        let window = call
            .a
            .in_flight
            .window(s.held_estimate_bps.unwrap())
            .unwrap();
        assert!(call.a.in_flight.bytes() > window, "past the window");
        assert!(!call.a.window_full, "the window did not close");
        assert_eq!(call.a.in_flight.counters().closed, closed);
        // More than the window left (a closed one lets out no more than its room).
        assert!(call.a_sent - sent > window as u64, "video kept leaving");
        assert_eq!(s.collapse_cuts, 0, "{s:?}");
        call.b_heard = true;
        call.a_lost_one_in = 0;
        call.run(Duration::from_secs(1));
        assert_eq!(
            call.a.stats().held_estimate_bps,
            call.a.stats().peer_estimate_bps
        );
        assert!(call.a.stats().held_estimate_bps.unwrap() > held / 2);
        // With no feedback lost for long (the share decays), the same silence is one:
        // it is cut.
        call.run(Duration::from_secs(15));
        assert!(call.a.in_flight.feedback_loss() < 0.01);
        assert!(!call.a.in_flight.lossy_return());
        call.b_heard = false;
        call.run(Duration::from_millis(500));
        assert!(call.a.stats().collapse_cuts >= 1);
    }

    #[test]
    fn protection_may_borrow_while_the_path_loses_at_random_and_shows_no_congestion() {
        let mut call = Call::plain();
        call.run(Duration::from_secs(4));
        assert!(!call.a.budget.random_loss(), "a clean path");
        // One in five of our datagrams and of the peer's feedbacks lost, with no queue:
        // the loss is the path's own, once it is measured.
        call.a_lost_one_in = 5;
        call.b_feedback_lost_one_in = 5;
        call.run(Duration::from_millis(100));
        assert!(!call.a.budget.random_loss(), "not yet measured");
        call.run(Duration::from_secs(4));
        assert!(call.a.in_flight.random_loss() && !call.a.in_flight.queue_seen());
        assert!(call.a.budget.random_loss());
        // Nothing of the peer's comes for longer than its loss explains: a sign of
        // congestion, and each class holds to its own reserve again.
        call.b_heard = false;
        call.run(Duration::from_millis(500));
        assert!(!call.a.budget.random_loss(), "the feedback stopped");
        // Heard again, on a path that no longer loses: once the losses are forgotten,
        // bytes in flight are the signal again.
        call.b_heard = true;
        call.a_lost_one_in = 0;
        call.b_feedback_lost_one_in = 0;
        call.run(Duration::from_secs(20));
        assert!(!call.a.budget.random_loss(), "a clean path again");
    }

    /// `packet` as the peer `sender` sends it: after a receiver report.
    fn from_peer(sender: Ssrc, packet: Rtcp) -> bytes::Bytes {
        let rr = Rtcp::ReceiverReport {
            ssrc: sender,
            reports: Vec::new(),
        };
        build_rtcp(&[rr, packet]).unwrap()
    }

    /// The peer's estimate of `bps`, as it sends it.
    fn remb(call: &Call, bps: u64) -> bytes::Bytes {
        let sender = call.b.audio_ssrc();
        from_peer(
            sender,
            Rtcp::Remb {
                sender,
                bitrate_bps: bps,
                ssrcs: call.a.video_ssrc().into_iter().collect(),
            },
        )
    }

    #[test]
    fn a_collapsed_path_cuts_the_held_estimate_until_the_peer_sees_it_or_the_queue_drains() {
        let mut call = Call::plain();
        call.run(Duration::from_secs(4));
        let held = call.a.stats().held_estimate_bps.unwrap();
        let min = call.a.config.min_bitrate;
        assert!(held > 4 * min, "{held}");
        // Nothing of the peer's comes through: the window fills, no acknowledgement
        // comes, and what is held comes down long before an estimate could say so.
        call.b_heard = false;
        call.run(Duration::from_millis(300));
        let s = call.a.stats();
        assert!(s.collapse_cuts >= 1, "{s:?}");
        assert_eq!(
            s.held_estimate_bps,
            Some(min),
            "GCC's share of no acknowledgements"
        );
        assert_eq!(s.feedback_timeouts, 0);
        // Nor do video retransmissions borrow from the budget for now: the queue that
        // dropped what they would repair is still full (audio ones may).
        let now = call.now;
        let holds = call.a.budget.level(now).max(0.0) as usize;
        assert_eq!(call.a.budget.room(now, Protection::VideoRtx), holds);
        assert!(call.a.budget.room(now, Protection::AudioRtx) > holds);
        // While no acknowledgement comes, the window's evidence is newer than any
        // estimate's: one that came now is cut again at once.
        call.a
            .handle_datagram(now, B.into(), &remb(&call, held / 3));
        assert_eq!(call.a.stats().held_estimate_bps, Some(min));
        // (What REMB's mantissa carries of a third.)
        let third = call.a.stats().peer_estimate_bps;
        assert!(third.is_some_and(|t| t.abs_diff(held / 3) < held / 1000));
        assert_eq!(call.a.collapse.map(|(from, _)| from), third);
        // One no lower than that, made before the peer could see it, is not held.
        call.a.handle_datagram(now, B.into(), &remb(&call, held));
        assert_eq!(call.a.stats().held_estimate_bps, Some(min));
        // The peer is heard again, and its feedback shows that packets sent since the
        // cut met no queue: its last estimate holds again (not the one the cut
        // overrode).
        call.b_heard = true;
        for _ in 0..40 {
            if call.a.collapse.is_none() {
                break;
            }
            call.step();
        }
        assert_eq!(call.a.collapse, None);
        let s = call.a.stats();
        assert_eq!(s.held_estimate_bps, s.peer_estimate_bps, "{s:?}");
        assert!(s.held_estimate_bps.unwrap() > held / 2, "{s:?}");
    }

    #[test]
    fn a_collapse_of_the_incoming_link_cuts_what_is_held_until_our_way_out_shows_no_queue() {
        let mut call = Call::new(true);
        call.b_link = Some(Bottleneck::new(call.now, 2_500_000.0));
        call.run(Duration::from_secs(4));
        let held = call.a.stats().held_estimate_bps.unwrap();
        let incoming = call.a.delay_bwe.estimate_bps().unwrap();
        assert!(incoming > 600_000, "{incoming}");
        // `b`'s way to `a` falls to 150 kbit/s; `a`'s way to `b` does not.
        call.b_link.as_mut().unwrap().bps = 150_000.0;
        let mut ticks = 0;
        while call.a.stats().delay_bwe.incoming_collapses == 0 {
            call.step();
            ticks += 1;
            assert!(ticks < 60, "no collapse told 300 ms after the drop");
        }
        // What is held comes down at once, by the share the incoming link kept, ahead
        // of anything the peer's feedback could say (it is behind the queue).
        let s = call.a.stats();
        assert_eq!(s.collapse_cuts, 1, "{s:?}");
        assert_eq!(call.a.collapse.map(|(from, _)| from), Some(held));
        let cut = s.held_estimate_bps.unwrap();
        assert!(cut < held / 2, "held {held}, cut to {cut}");
        // Told again, a collapse cuts from what was held before the first, not from the
        // cut: a larger share leaves the cut as it is, a smaller one cuts further.
        let now = call.now;
        call.a.on_incoming_collapse(now, 0.9);
        assert_eq!(call.a.stats().held_estimate_bps, Some(cut));
        let share = cut as f64 / held as f64 / Aimd::BETA / 2.0;
        call.a.on_incoming_collapse(now, share);
        let expected = ((held as f64 * share * Aimd::BETA) as u64).max(call.a.config.min_bitrate);
        assert_eq!(call.a.stats().held_estimate_bps, Some(expected));
        // Our own way out had no queue: once the peer's feedback (through the slowed
        // link) shows a packet sent since the cut met none, the cut gives way to the
        // peer's estimate.
        for _ in 0..600 {
            if call.a.collapse.is_none() {
                break;
            }
            call.step();
        }
        assert_eq!(call.a.collapse, None, "the cut still stands 3 s on");
        let s = call.a.stats();
        assert_eq!(s.held_estimate_bps, s.peer_estimate_bps, "{s:?}");
        assert!(s.held_estimate_bps.unwrap() > held / 2, "{s:?}");
    }

    #[test]
    fn an_estimate_that_shows_the_drop_replaces_a_collapse_cut() {
        let mut call = Call::new(true);
        call.run(Duration::from_secs(4));
        let held = call.a.stats().held_estimate_bps.unwrap();
        let min = call.a.config.min_bitrate;
        call.b_heard = false;
        call.run(Duration::from_millis(300));
        let (from, cut_at) = call.a.collapse.unwrap();
        assert_eq!(from, held);
        let heard = call.a.probe.last_estimate();
        // The window is no longer full (as when acknowledgements of packets sent
        // before the cut come), and estimates come; no packet sent since the cut has
        // been reported on.
        call.a.window_full = false;
        let now = call.now;
        // One no lower than the estimate the cut overrode (within 3 %) was made before
        // the peer saw the drop: the cut stands, and the prober does not hear it.
        call.a.on_peer_estimate(now, held * 2);
        call.a.on_peer_estimate(now, held * 98 / 100);
        assert_eq!(call.a.stats().held_estimate_bps, Some(min));
        assert_eq!(call.a.probe.last_estimate(), heard);
        // One that shows the drop replaces it.
        call.a.on_peer_estimate(now, held * 96 / 100);
        assert_eq!(call.a.stats().held_estimate_bps, Some(held * 96 / 100));
        assert_eq!(call.a.probe.last_estimate(), Some(held * 96 / 100));
        assert_eq!(call.a.collapse, None);
        // Cut again. An estimate a feedback timeout after the cut is taken as it is.
        call.a.collapse = Some((held, cut_at));
        call.a.held_estimate = Some(min);
        call.a
            .on_peer_estimate(cut_at + call.a.feedback_timeout(), held);
        assert_eq!(call.a.stats().held_estimate_bps, Some(held));
        // A new path forgets a collapse of the old.
        call.a.collapse = Some((held, cut_at));
        call.a.set_path(SocketAddr::from(([127, 0, 0, 1], 40_004)));
        assert_eq!(call.a.collapse, None);
    }

    #[test]
    fn the_wait_for_a_path_is_no_feedback_timeout() {
        // Agreed at once, connected 5 s later (slow connectivity checks): the start is
        // still held whole.
        let t0 = test_instant();
        let config = SessionConfig::new().set_seed(1).set_delay_bwe(true);
        let (mut a, b) = (config.build(t0), SessionConfig::new().set_seed(2).build(t0));
        a.set_agreement(Agreement::between(&a, &b)).unwrap();
        for i in 0..50u32 {
            a.handle_timeout(t0 + Duration::from_millis(100) * i);
        }
        a.set_path(SocketAddr::from(B));
        a.handle_timeout(t0 + Duration::from_secs(5));
        let s = a.stats();
        assert_eq!(s.feedback_timeouts, 0);
        assert_eq!(s.held_estimate_bps, Some(a.config.start_bitrate));
    }

    #[test]
    fn a_peer_that_reports_without_estimates_holds_nothing() {
        // The peer does not run delay-based control: its reports come, its estimates
        // never; after a few reports nothing is held and the loss rule sets the target,
        // from the configured start.
        let mut call = Call::new(false);
        call.run(Duration::from_secs(5));
        let s = call.a.stats();
        assert_eq!((s.remb_received, s.held_estimate_bps), (0, None), "{s:?}");
        assert!(s.target_bitrate_bps >= call.a.config.start_bitrate, "{s:?}");
    }

    #[test]
    fn the_pacer_leaves_room_for_the_protection_beside_the_video() {
        // At 20 % loss protection wanted ~80 % of a 600 kbit/s target: paced at 2.5 times
        // the target alone, video and protection (1.08 Mbit/s) had 1.4 times their rate
        // to drain a burst; now 2.5.
        let (target, protection) = (600_000, 480_000);
        let rate = pacing_rate(target, protection, 2.5);
        assert_eq!(rate, 2_700_000);
        assert!(rate as f64 / (target + protection) as f64 >= 2.5);
        assert_eq!(pacing_rate(target, 0, 2.5), 1_500_000);
    }

    #[test]
    fn the_video_floor_comes_down_with_the_estimate() {
        assert_eq!(video_floor(2_000_000, 100_000), 100_000);
        assert_eq!(video_floor(250_000, 100_000), 100_000);
        assert_eq!(video_floor(150_000, 100_000), 75_000);
        assert_eq!(video_floor(40_000, 100_000), MIN_VIDEO_BPS);
        assert_eq!(video_floor(0, 100_000), MIN_VIDEO_BPS);
    }
}
