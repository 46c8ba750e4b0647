//! The UDP socket QUIC runs on: the path the connectivity checks selected, direct or
//! through our TURN relay.
//!
//! quinn sees a plain socket talking to the peer's address. Underneath, [`PathSocket`]
//! keeps doing what the checks started on the same socket: it answers the peer's STUN
//! checks (consent, RFC 7675) and refreshes the relay's allocation, permission and
//! channel; when the path is relayed it wraps what quinn sends in ChannelData (or a Send
//! indication) for the TURN server and unwraps what the server passes on. STUN and QUIC
//! tell apart by their first byte (RFC 7983: 0-3 is STUN; QUIC long and short headers
//! have the fixed bit 0x40 set), so nothing is mistaken for the other.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use magpie_media::ice::turn::TurnClient;
use magpie_media::ice::{Checker, Path};
use magpie_media::netsim::{Datagram, NetSim};
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::io::ReadBuf;
use tokio::net::UdpSocket;
use tokio::sync::Notify;
use tracing::{debug, trace};

use crate::engine::now;

/// What keeps the path alive beside QUIC: the checker (answers the peer's checks) and
/// the relay allocation, when there is one.
struct Keepers {
    checker: Option<Checker>,
    turn: Option<TurnClient>,
    /// The impairment simulator (`--sim`) every outgoing datagram passes through.
    sim: Option<NetSim>,
}

/// The selected path as a socket for quinn. See the module docs.
pub struct PathSocket {
    io: UdpSocket,
    path: Path,
    local: SocketAddr,
    keepers: Mutex<Keepers>,
    /// Wakes the timer task when the simulator got a datagram to release later.
    wake: Arc<Notify>,
}

impl fmt::Debug for PathSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PathSocket")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl PathSocket {
    /// A direct path to `peer` on `io` with nothing else to keep: what a LAN channel,
    /// which found the peer itself, hands over.
    pub fn direct(io: UdpSocket, peer: SocketAddr) -> Arc<Self> {
        Self::new(io, Path::direct(peer), None, None, None)
    }

    /// The path the checks selected, with the checker and the relay allocation they ran
    /// on; with `sim`, every datagram sent is impaired first (as a call's `--sim`).
    pub fn new(
        io: UdpSocket,
        path: Path,
        checker: Option<Checker>,
        turn: Option<TurnClient>,
        sim: Option<NetSim>,
    ) -> Arc<Self> {
        let local = io
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let socket = Arc::new(Self {
            io,
            path,
            local,
            keepers: Mutex::new(Keepers { checker, turn, sim }),
            wake: Arc::new(Notify::new()),
        });
        let driver = Arc::downgrade(&socket);
        let wake = socket.wake.clone();
        tokio::spawn(async move {
            // Timers of the checker, the relay and the simulator, until quinn lets the
            // socket go (the task holds it only while it runs them).
            loop {
                let Some(deadline) = driver.upgrade().map(|s| s.handle_timeout()) else {
                    return;
                };
                let wait = deadline.map_or(std::time::Duration::from_secs(1), |d| {
                    d.saturating_duration_since(now())
                        .min(std::time::Duration::from_secs(1))
                });
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = wake.notified() => {}
                }
            }
        });
        socket
    }

    /// The peer's address as quinn sees it.
    pub fn peer(&self) -> SocketAddr {
        self.path.remote
    }

    /// Whether the path goes through our relay.
    pub fn relayed(&self) -> bool {
        self.path.relayed
    }

    fn keepers(&self) -> MutexGuard<'_, Keepers> {
        // A panic while holding the lock leaves plain data behind: keep going with it.
        self.keepers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs the timers due now; returns when the next is due.
    fn handle_timeout(&self) -> Option<Instant> {
        let mut keepers = self.keepers();
        let now = now();
        if let Some(c) = keepers.checker.as_mut() {
            c.handle_timeout(now);
        }
        if let Some(t) = keepers.turn.as_mut() {
            t.handle_timeout(now);
        }
        self.flush(&mut keepers);
        if let Some(sim) = keepers.sim.as_mut() {
            sim.handle_timeout(now);
            while let Some(d) = sim.poll_datagram() {
                let _ = self.io.try_send_to(&d.data, d.to);
            }
        }
        let soonest = [
            keepers.checker.as_ref().and_then(Checker::poll_timeout),
            keepers.turn.as_ref().and_then(TurnClient::poll_timeout),
            keepers.sim.as_ref().and_then(NetSim::poll_timeout),
        ];
        soonest.into_iter().flatten().min()
    }

    /// Sends what the checker and the relay want sent (best effort: they retransmit).
    fn flush(&self, keepers: &mut Keepers) {
        for (bytes, to) in outgoing(keepers.checker.as_mut(), keepers.turn.as_mut()) {
            let _ = self.send_to(keepers, bytes, to);
        }
    }

    /// Sends now, or hands the datagram to the simulator (which releases it later).
    fn send_to(&self, keepers: &mut Keepers, data: Vec<u8>, to: SocketAddr) -> io::Result<()> {
        match keepers.sim.as_mut() {
            Some(sim) => {
                let from = self.local;
                sim.handle_datagram(now(), Datagram { from, to, data });
                self.wake.notify_one();
                Ok(())
            }
            None => self.io.try_send_to(&data, to).map(drop),
        }
    }

    /// Takes one datagram that arrived from `from` into `buf[..len]`. Returns the
    /// length and source of what quinn should see, or `None` for what the checker or the
    /// relay consumed (or refused).
    fn admit(&self, from: SocketAddr, buf: &mut [u8], len: usize) -> Option<(usize, SocketAddr)> {
        let now = now();
        let mut keepers = self.keepers();
        let turn_server = keepers.turn.as_ref().map(TurnClient::server);
        let admitted = if turn_server == Some(from) {
            let turn = keepers.turn.as_mut().expect("checked above");
            match turn.handle_datagram(now, &buf[..len]) {
                Ok(Some(relayed)) => {
                    let (peer, start, n) = (
                        relayed.peer,
                        relayed.payload.as_ptr() as usize - buf.as_ptr() as usize,
                        relayed.payload.len(),
                    );
                    if Checker::is_stun(&buf[start..start + n]) {
                        if let Some(c) = keepers.checker.as_mut()
                            && let Err(e) = c.handle_relayed(now, peer, &buf[start..start + n])
                        {
                            debug!(error = %e, "relayed STUN refused");
                        }
                        None
                    } else {
                        buf.copy_within(start..start + n, 0);
                        Some((n, peer))
                    }
                }
                Ok(None) => None,
                Err(e) => {
                    debug!(error = %e, "TURN datagram refused");
                    None
                }
            }
        } else if Checker::is_stun(&buf[..len]) {
            if let Some(c) = keepers.checker.as_mut()
                && let Err(e) = c.handle_datagram(now, from, &buf[..len])
            {
                debug!(error = %e, "STUN refused");
            }
            None
        } else {
            Some((len, from))
        };
        self.flush(&mut keepers);
        // Only the selected path may speak QUIC to us.
        admitted.filter(|&(_, source)| {
            let ok =
                source == self.path.remote && (self.path.relayed == (turn_server == Some(from)));
            if !ok {
                trace!(%source, "datagram off the selected path: dropped");
            }
            ok
        })
    }
}

impl AsyncUdpSocket for PathSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(Writable(self))
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        if transmit.destination != self.path.remote {
            // quinn only ever talks to the peer; anything else is not on this path.
            return Ok(());
        }
        let mut keepers = self.keepers();
        if self.path.relayed {
            let Some(turn) = keepers.turn.as_mut() else {
                return Err(io::Error::other("the relayed path has no relay"));
            };
            let server = turn.server();
            turn.permit(now(), transmit.destination);
            match turn.wrap(transmit.destination, transmit.contents) {
                Some(bytes) => self.send_to(&mut keepers, bytes, server),
                // Not permitted yet: dropped, as a lossy link would; QUIC resends.
                None => Ok(()),
            }
        } else if keepers.sim.is_some() {
            let data = transmit.contents.to_vec();
            self.send_to(&mut keepers, data, transmit.destination)
        } else {
            drop(keepers);
            self.io
                .try_send_to(transmit.contents, transmit.destination)
                .map(drop)
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let (Some(buf), Some(meta)) = (bufs.first_mut(), meta.first_mut()) else {
            return Poll::Ready(Ok(0));
        };
        loop {
            let mut read = ReadBuf::new(buf);
            let from = match ready!(self.io.poll_recv_from(cx, &mut read)) {
                Ok(from) => from,
                // An ICMP error from an earlier send (Linux reports it on the next
                // receive): not fatal for the path.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) => return Poll::Ready(Err(e)),
            };
            let len = read.filled().len();
            if let Some((len, source)) = self.admit(from, buf, len) {
                *meta = RecvMeta {
                    addr: source,
                    len,
                    stride: len,
                    ecn: None,
                    dst_ip: None,
                };
                return Poll::Ready(Ok(1));
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }
}

/// What the checker and the relay want sent, and where: checks through the relay are
/// wrapped for its server (once it permits the peer).
pub(super) fn outgoing(
    checker: Option<&mut Checker>,
    mut turn: Option<&mut TurnClient>,
) -> Vec<(Vec<u8>, SocketAddr)> {
    let mut out = Vec::new();
    if let Some(c) = checker {
        while let Some(t) = c.poll_transmit() {
            match (t.relayed, turn.as_deref_mut()) {
                (true, Some(turn)) => {
                    turn.permit(now(), t.destination);
                    if let Some(bytes) = turn.wrap(t.destination, &t.contents) {
                        out.push((bytes, turn.server()));
                    }
                }
                (true, None) => {}
                (false, _) => out.push((t.contents, t.destination)),
            }
        }
    }
    if let Some(turn) = turn {
        while let Some(t) = turn.poll_transmit() {
            out.push((t.contents, t.destination));
        }
    }
    out
}

/// Write readiness of the one socket.
struct Writable(Arc<PathSocket>);

impl fmt::Debug for Writable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Writable")
    }
}

impl UdpPoller for Writable {
    fn poll_writable(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.io.poll_send_ready(cx)
    }
}
