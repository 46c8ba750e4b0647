//! The live status line: once a second, what the call is doing right now.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use magpie_media::Stats;
use magpie_media::probe::Detection;
use magpie_media::srtp::exchange::SafetyCode;

/// Prints one line a second to stderr: redrawn in place on a terminal, one line each
/// otherwise (so a log file keeps the history).
#[derive(Debug)]
pub struct StatusLine {
    last: Option<(Instant, Stats)>,
    tty: bool,
    /// Shown at the start of every line, so either person can read it out at any time.
    safety_code: Option<SafetyCode>,
}

impl Default for StatusLine {
    fn default() -> Self {
        Self::new()
    }
}

impl StatusLine {
    /// A status line on stderr.
    pub fn new() -> Self {
        Self {
            last: None,
            tty: std::io::stderr().is_terminal(),
            safety_code: None,
        }
    }

    /// Shows the call's safety code on every line.
    pub fn with_safety_code(mut self, code: SafetyCode) -> Self {
        self.safety_code = Some(code);
        self
    }

    /// Prints the figures of the last second.
    /// `path` says which path media takes ("direct", "relayed via ..."), `None` while
    /// connecting.
    /// Returns the line (the window's statistics overlay shows it too).
    pub fn update(
        &mut self,
        now: Instant,
        path: Option<&str>,
        stats: &Stats,
        audio: &[Detection],
    ) -> String {
        let line = match path {
            Some(path) => format!("{path} | {}", self.line(now, stats, audio)),
            None => "connecting: probing the peer's addresses ...".to_owned(),
        };
        let line = match self.safety_code {
            Some(code) => format!("code {code} | {line}"),
            None => line,
        };
        self.last = Some((now, *stats));
        let mut err = std::io::stderr().lock();
        let _ = if self.tty {
            write!(err, "\r\x1b[2K{line}")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
        line
    }

    fn line(&self, now: Instant, stats: &Stats, audio: &[Detection]) -> String {
        let (secs, prev) = match &self.last {
            Some((at, prev)) => ((now - *at).as_secs_f64().max(1e-3), *prev),
            None => (1.0, Stats::default()),
        };
        let sent = (stats.send_audio.bytes
            + stats.send_audio.rtx_bytes
            + stats.send_video.bytes
            + stats.send_video.rtx_bytes)
            .saturating_sub(
                prev.send_audio.bytes
                    + prev.send_audio.rtx_bytes
                    + prev.send_video.bytes
                    + prev.send_video.rtx_bytes,
            );
        let received = (stats.recv_audio.counters.bytes + stats.recv_video.counters.bytes)
            .saturating_sub(prev.recv_audio.counters.bytes + prev.recv_video.counters.bytes);
        let delta = |f: fn(&Stats) -> u64| f(stats).saturating_sub(f(&prev));
        let expected = delta(|s| s.recv_audio.counters.expected + s.recv_video.counters.expected);
        let lost_link = delta(|s| {
            s.recv_audio.counters.lost_before_recovery + s.recv_video.counters.lost_before_recovery
        });
        let lost_after = delta(|s| s.recv_audio.counters.lost + s.recv_video.counters.lost);
        let pct = |n: u64| {
            if expected == 0 {
                0.0
            } else {
                n as f64 * 100.0 / expected as f64
            }
        };
        let rtt = stats
            .rtt
            .map_or("-".to_owned(), |r| format!("{:.0}", r.as_secs_f64() * 1e3));
        // The newest probe reading when there is one, else capture-time latency.
        let latency = match audio.last() {
            Some(d) => format!("{:.0} ms (probe)", d.latency_us as f64 / 1000.0),
            None if stats.audio_latency.samples > 0 => {
                format!("{:.0} ms", stats.audio_latency.p50.as_secs_f64() * 1e3)
            }
            None => "-".to_owned(),
        };
        // Datagrams refused at admission (not the peer's, not agreed, before the path).
        let refused = match stats.refused.total() {
            0 => String::new(),
            n => format!(" | refused {n}"),
        };
        format!(
            "rtt {rtt} ms | send {:.0} kbit/s | recv {:.0} kbit/s | loss {:.1}% -> {:.1}% | \
             jitter buffer {:.0} ms | latency {latency}{refused}",
            sent as f64 * 8.0 / secs / 1000.0,
            received as f64 * 8.0 / secs / 1000.0,
            pct(lost_link),
            pct(lost_after),
            stats.audio_playout.level.as_secs_f64() * 1e3,
        )
    }

    /// Leaves the line, so what follows starts on a fresh one.
    pub fn clear(&mut self) {
        if self.tty && self.last.is_some() {
            let _ = writeln!(std::io::stderr());
        }
    }
}
