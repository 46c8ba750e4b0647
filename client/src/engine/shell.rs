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

/// The most ICMP errors one [`Shell::try_recv`] skips before it gives up for now.
const MAX_ICMP_SKIPPED: usize = 8;

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

    /// A datagram that is waiting already, without waiting for one. ICMP errors are
    /// skipped as in [`Shell::recv`]; at most [`MAX_ICMP_SKIPPED`] of them in one call.
    pub(super) fn try_recv(&self, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
        for _ in 0..MAX_ICMP_SKIPPED {
            match self.socket.try_recv_from(buf) {
                Ok(received) => return Some(received),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return None,
                Err(e) => debug!(error = %e, "recv"),
            }
        }
        None
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn try_recv_takes_what_waits_and_never_waits_itself() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let shell = Shell::new(socket, None).unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut buf = [0u8; MAX_DATAGRAM];
        assert!(shell.try_recv(&mut buf).is_none(), "nothing waits");
        for d in [&b"one"[..], b"two"] {
            peer.send_to(d, shell.local()).await.unwrap();
        }
        shell.socket.readable().await.unwrap();
        let from = peer.local_addr().unwrap();
        for d in [&b"one"[..], b"two"] {
            let (len, sender) = shell.try_recv(&mut buf).unwrap();
            assert_eq!((&buf[..len], sender), (d, from));
        }
        assert!(shell.try_recv(&mut buf).is_none(), "both were taken");
    }
}
