//! What an operator watches: process-wide counters, rendered in the Prometheus text
//! exposition format (version 0.0.4) and served over plain HTTP on
//! `magpie-server --metrics-listen ADDR` at `/metrics`.
//!
//! Written by hand rather than with `prometheus-client`: the set is fixed (a dozen
//! counters, one label whose values are the [`EndReason`]s, one histogram), so a registry
//! and its encoder would be more code to carry than the ~150 lines here, and one more
//! dependency in a server that has to stay small to audit.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::debug;

use crate::config::Counters;
use crate::proto::EndReason;
use crate::stun_server::StunCounters;

/// Every [`EndReason`], in the order of [`Metrics::calls_ended`].
const REASONS: [EndReason; 7] = [
    EndReason::Rejected,
    EndReason::Cancelled,
    EndReason::Missed,
    EndReason::Busy,
    EndReason::Hangup,
    EndReason::PeerLost,
    EndReason::ServerShutdown,
];

/// Upper bounds of the call-setup histogram, seconds: from an auto-answering script
/// (well under a second) to a person finding their phone (up to the 30 s ring timeout).
const SETUP_BUCKETS: [f64; 9] = [0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0];

/// The server's counters. One process-wide instance, [`METRICS`].
#[derive(Debug)]
pub struct Metrics {
    pub(crate) connections: AtomicU64,
    pub(crate) connections_open: AtomicI64,
    pub(crate) logins: AtomicU64,
    pub(crate) login_failures: AtomicU64,
    pub(crate) calls_invited: AtomicU64,
    pub(crate) calls_answered: AtomicU64,
    calls_ended: [AtomicU64; REASONS.len()],
    setup_buckets: [AtomicU64; SETUP_BUCKETS.len()],
    setup_count: AtomicU64,
    setup_sum_us: AtomicU64,
    pub(crate) messages_stored: AtomicU64,
    pub(crate) messages_delivered: AtomicU64,
    pub(crate) db_queue_depth: AtomicU64,
    pub(crate) db_writes_dropped: AtomicU64,
}

/// The process's counters.
pub static METRICS: Metrics = Metrics::new();

#[allow(clippy::declare_interior_mutable_const)] // reason: only to initialise arrays
const ZERO: AtomicU64 = AtomicU64::new(0);

impl Metrics {
    const fn new() -> Self {
        Self {
            connections: AtomicU64::new(0),
            connections_open: AtomicI64::new(0),
            logins: AtomicU64::new(0),
            login_failures: AtomicU64::new(0),
            calls_invited: AtomicU64::new(0),
            calls_answered: AtomicU64::new(0),
            calls_ended: [ZERO; REASONS.len()],
            setup_buckets: [ZERO; SETUP_BUCKETS.len()],
            setup_count: AtomicU64::new(0),
            setup_sum_us: AtomicU64::new(0),
            messages_stored: AtomicU64::new(0),
            messages_delivered: AtomicU64::new(0),
            db_queue_depth: AtomicU64::new(0),
            db_writes_dropped: AtomicU64::new(0),
        }
    }

    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn inc_invited(&self) {
        Self::inc(&self.calls_invited);
    }

    /// A call ended (or, for `busy`, never rang).
    pub(crate) fn call_ended(&self, reason: EndReason) {
        if let Some(i) = REASONS.iter().position(|r| *r == reason) {
            Self::inc(&self.calls_ended[i]);
        }
    }

    /// A call was accepted `setup` after its invite.
    pub(crate) fn call_answered(&self, setup: Duration) {
        Self::inc(&self.calls_answered);
        let secs = setup.as_secs_f64();
        for (bucket, bound) in self.setup_buckets.iter().zip(SETUP_BUCKETS) {
            if secs <= bound {
                Self::inc(bucket);
            }
        }
        Self::inc(&self.setup_count);
        let us = u64::try_from(setup.as_micros()).unwrap_or(u64::MAX);
        self.setup_sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// The text exposition of every counter, with the STUN server's when it runs.
    pub fn render(&self, stun: Option<&StunCounters>) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::new();
        let counters = [
            (
                "magpie_connections_total",
                "counter",
                "TCP connections accepted.",
                get(&self.connections).to_string(),
            ),
            (
                "magpie_connections_open",
                "gauge",
                "TCP connections open now.",
                self.connections_open.load(Ordering::Relaxed).to_string(),
            ),
            (
                "magpie_logins_total",
                "counter",
                "Successful logins.",
                get(&self.logins).to_string(),
            ),
            (
                "magpie_login_failures_total",
                "counter",
                "Logins refused for a wrong user name or password.",
                get(&self.login_failures).to_string(),
            ),
            (
                "magpie_calls_invited_total",
                "counter",
                "Invites that rang.",
                get(&self.calls_invited).to_string(),
            ),
            (
                "magpie_calls_answered_total",
                "counter",
                "Calls accepted.",
                get(&self.calls_answered).to_string(),
            ),
            (
                "magpie_messages_stored_total",
                "counter",
                "Chat messages stored.",
                get(&self.messages_stored).to_string(),
            ),
            (
                "magpie_messages_delivered_total",
                "counter",
                "Chat messages handed to an online recipient at once.",
                get(&self.messages_delivered).to_string(),
            ),
            (
                "magpie_db_queue_depth",
                "gauge",
                "Database jobs waiting, sampled at each batch.",
                get(&self.db_queue_depth).to_string(),
            ),
            (
                "magpie_db_writes_dropped_total",
                "counter",
                "Database writes dropped because the queue was full.",
                get(&self.db_writes_dropped).to_string(),
            ),
        ];
        let stun = stun.map(|stun| {
            [
                (
                    "magpie_stun_answered_total",
                    "counter",
                    "STUN binding requests answered.",
                    stun.answered().to_string(),
                ),
                (
                    "magpie_stun_dropped_total",
                    "counter",
                    "STUN binding requests dropped by a rate limit.",
                    stun.dropped().to_string(),
                ),
            ]
        });
        for (name, kind, help, value) in counters.into_iter().chain(stun.into_iter().flatten()) {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        let name = "magpie_calls_ended_total";
        let _ = writeln!(
            out,
            "# HELP {name} Calls ended, by reason.\n# TYPE {name} counter"
        );
        for (reason, count) in REASONS.iter().zip(&self.calls_ended) {
            let _ = writeln!(
                out,
                "{name}{{reason=\"{}\"}} {}",
                reason.as_str(),
                get(count)
            );
        }
        let name = "magpie_call_setup_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} From invite to accept.\n# TYPE {name} histogram"
        );
        for (bound, count) in SETUP_BUCKETS.iter().zip(&self.setup_buckets) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", get(count));
        }
        let count = get(&self.setup_count);
        let sum = get(&self.setup_sum_us) as f64 / 1e6;
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
        out
    }
}

/// Serves `GET /metrics` on `listener` until the task is dropped. Anything else gets 404;
/// a request head over 8 KiB or slower than 5 s is dropped.
/// With `server`, the counters of that server's [`Config`](crate::Config) (files left
/// for offline users) follow the process-wide ones.
pub async fn serve(
    listener: TcpListener,
    stun: Option<Arc<StunCounters>>,
    server: Option<Arc<Counters>>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (stun, server) = (stun.clone(), server.clone());
        tokio::spawn(async move {
            let answer = answer(stream, stun.as_deref(), server.as_deref());
            let answered = tokio::time::timeout(Duration::from_secs(5), answer);
            if let Ok(Err(e)) = answered.await {
                debug!(error = %e, "metrics request");
            }
        });
    }
}

async fn answer(
    mut stream: TcpStream,
    stun: Option<&StunCounters>,
    server: Option<&Counters>,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() + n > 8192 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let (status, body) = if head.starts_with(b"GET /metrics ") || head.starts_with(b"GET / ") {
        let mut body = METRICS.render(stun);
        if let Some(server) = server {
            server.files().render(&mut body);
        }
        ("200 OK", body)
    } else {
        ("404 Not Found", "try GET /metrics\n".to_owned())
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setup_histogram_is_cumulative_and_parses_as_exposition() {
        let m = Metrics::new();
        m.call_answered(Duration::from_millis(300));
        m.call_answered(Duration::from_secs(4));
        m.call_ended(EndReason::Hangup);
        let text = m.render(None);
        assert!(text.contains("magpie_call_setup_seconds_bucket{le=\"0.25\"} 0\n"));
        assert!(text.contains("magpie_call_setup_seconds_bucket{le=\"0.5\"} 1\n"));
        assert!(text.contains("magpie_call_setup_seconds_bucket{le=\"5\"} 2\n"));
        assert!(text.contains("magpie_call_setup_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("magpie_call_setup_seconds_count 2\n"));
        assert!(text.contains("magpie_calls_ended_total{reason=\"hangup\"} 1\n"));
        assert!(text.contains("magpie_calls_answered_total 2\n"));
        // Every sample line is `name{labels} value` with a number for the value.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
