//! The socket shell: the call's one UDP socket, and the impairment simulator that
//! outgoing datagrams pass through when `--sim` asks for one. It reads the clock only to
//! stamp what it hands the sans-IO endpoint.

use std::net::SocketAddr;
use std::time::Instant;

use magpie_media::Transmit;
use magpie_media::netsim::{BottleneckStats, Datagram, NetSim, NetSimStats};
use tokio::net::UdpSocket;
use tracing::debug;

use super::Error;

/// The largest datagram we accept; anything longer is cut and refused as malformed.
pub(super) const MAX_DATAGRAM: usize = 2048;

pub(super) struct Shell {
    socket: UdpSocket,
    local: SocketAddr,
    netsim: Option<NetSim>,
}

impl Shell {
    pub(super) fn new(socket: UdpSocket, netsim: Option<NetSim>) -> Result<Self, Error> {
        let local = socket.local_addr().map_err(Error::Socket)?;
        Ok(Self {
            socket,
            local,
            netsim,
        })
    }

    pub(super) fn local(&self) -> SocketAddr {
        self.local
    }

    /// The next datagram. ICMP errors from a candidate that does not listen surface here
    /// on Linux; they say nothing about the path in use, so they are skipped.
    pub(super) async fn recv(&self, buf: &mut [u8]) -> (usize, SocketAddr) {
        loop {
            match self.socket.recv_from(buf).await {
                Ok(received) => return received,
                Err(e) => debug!(error = %e, "recv"),
            }
        }
    }

    /// Sends through the simulator when there is one.
    pub(super) async fn send(&mut self, now: Instant, t: Transmit) {
        match &mut self.netsim {
            Some(sim) => sim.handle_datagram(
                now,
                Datagram {
                    from: self.local,
                    to: t.destination,
                    data: t.contents.to_vec(),
                },
            ),
            None => self.send_now(t.destination, &t.contents).await,
        }
    }

    /// Sends straight to the socket, past the simulator (a goodbye must not wait for a
    /// simulated delay that outlives the process).
    pub(super) async fn send_now(&self, to: SocketAddr, data: &[u8]) {
        if let Err(e) = self.socket.send_to(data, to).await {
            // A candidate of the wrong family or an unreachable one: the checker tries
            // the others, and the path in use is judged by its answers.
            debug!(error = %e, %to, "send");
        }
    }

    /// What the simulator did so far, when there is one.
    pub(super) fn sim_stats(&self) -> Option<NetSimStats> {
        self.netsim.as_ref().map(NetSim::stats)
    }

    /// The simulator's bottleneck from its first datagram to `now`, when it has a rate:
    /// utilization and queueing after the warm-up, drops, recovery from a rate drop.
    pub(super) fn bottleneck(&self, now: Instant) -> Option<BottleneckStats> {
        self.netsim.as_ref()?.bottleneck_stats(
            now,
            BottleneckStats::WARM_UP,
            BottleneckStats::RECOVERED_BELOW,
        )
    }

    /// When the simulator next releases a datagram.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        self.netsim.as_ref().and_then(NetSim::poll_timeout)
    }

    /// Sends what the simulator releases by `now`.
    pub(super) async fn handle_timeout(&mut self, now: Instant) {
        let Some(sim) = &mut self.netsim else {
            return;
        };
        sim.handle_timeout(now);
        let mut due = Vec::new();
        while let Some(d) = sim.poll_datagram() {
            due.push(d);
        }
        for d in due {
            self.send_now(d.to, &d.data).await;
        }
    }
}
