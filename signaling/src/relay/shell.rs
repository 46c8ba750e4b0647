//! The relay's tokio shell: one task owns the [`Relay`] core, the TURN socket and the
//! relayed sockets' send halves; one small task per relayed socket receives from peers
//! into a shared arena (with room for the header in front) and hands the datagram over
//! a channel. Nothing is allocated per relayed datagram once the arena is warm.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, BytesMut};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};
use tracing::{debug, info, trace, warn};

use super::core::{AllocationId, Event, Relay};
use super::wire::{HEADROOM, TAILROOM};
use super::{Config, Stats};

/// Largest datagram relayed from a peer; longer ones are truncated by the socket. Media
/// packets stay under the 1,200-byte MTU the client uses.
const MAX_PEER_DATAGRAM: usize = 2048;
/// Arena size for a relayed socket's reader: many datagrams before it must grow.
const ARENA: usize = 64 * 1024;
/// Datagrams from peers waiting for the core task.
const QUEUE: usize = 4096;

/// Where the shell binds relayed sockets.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The local address relayed sockets bind to (the TURN socket's IP).
    pub ip: IpAddr,
    /// The ports they may use.
    pub ports: RangeInclusive<u16>,
}

struct PeerDatagram {
    allocation: AllocationId,
    from: SocketAddr,
    /// HEADROOM, the payload, TAILROOM.
    buf: BytesMut,
}

struct Relayed {
    socket: Arc<UdpSocket>,
    reader: JoinHandle<()>,
}

/// Runs the relay on `socket` until `shutdown` completes; returns its counters.
pub async fn serve(
    socket: UdpSocket,
    config: Config,
    serve_config: ServeConfig,
    shutdown: impl Future,
) -> Stats {
    info!(addr = ?socket.local_addr().ok(), ?config, ?serve_config, "TURN relay listening");
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut relay = Relay::new(config, Instant::now(), unix);
    let (tx, mut rx) = mpsc::channel::<PeerDatagram>(QUEUE);
    let mut relayed: HashMap<AllocationId, Relayed> = HashMap::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut next_port = *serve_config.ports.start();
    tokio::pin!(shutdown);
    loop {
        let timeout = relay.poll_timeout();
        tokio::select! {
            received = socket.recv_from(&mut buf) => match received {
                Ok((len, from)) => {
                    if let Some(forward) = relay.handle_client(Instant::now(), from, &buf[..len])
                        && let Some(r) = relayed.get(&forward.allocation)
                        && let Err(err) = r.socket.try_send_to(forward.payload, forward.peer)
                    {
                        trace!(%err, "relayed send dropped");
                    }
                }
                Err(err) => debug!(%err, "udp receive failed"),
            },
            Some(mut datagram) = rx.recv() => {
                let end = datagram.buf.len() - TAILROOM;
                let forwarded = relay.handle_peer(
                    Instant::now(),
                    datagram.allocation,
                    datagram.from,
                    &mut datagram.buf,
                    HEADROOM..end,
                );
                if let Some((client, range)) = forwarded
                    && let Err(err) = socket.try_send_to(&datagram.buf[range], client)
                {
                    trace!(%err, "send to client dropped");
                }
            }
            _ = sleep_until(timeout.unwrap_or_else(Instant::now)), if timeout.is_some() => {
                relay.handle_timeout(Instant::now());
            }
            _ = &mut shutdown => break,
        }
        while let Some(event) = relay.poll_event() {
            match event {
                Event::Bind(id) => {
                    let bound = bind(&serve_config, &mut next_port).await;
                    let addr = bound.as_ref().and_then(|s| s.local_addr().ok());
                    if let (Some(socket), Some(_)) = (bound, addr) {
                        let socket = Arc::new(socket);
                        let reader = tokio::spawn(read_peers(id, socket.clone(), tx.clone()));
                        relayed.insert(id, Relayed { socket, reader });
                    } else {
                        warn!(ports = ?serve_config.ports, "no free relay port");
                    }
                    relay.handle_bound(Instant::now(), id, addr);
                }
                Event::Release(id) => {
                    if let Some(r) = relayed.remove(&id) {
                        r.reader.abort();
                    }
                }
            }
        }
        while let Some(transmit) = relay.poll_transmit() {
            if let Err(err) = socket
                .send_to(&transmit.contents, transmit.destination)
                .await
            {
                debug!(%err, "response not sent");
            }
        }
    }
    for (_, r) in relayed {
        r.reader.abort();
    }
    let stats = relay.stats();
    info!(?stats, "TURN relay stopped");
    stats
}

/// Binds a socket on a free port in the range, trying each once from where the last
/// search ended.
async fn bind(config: &ServeConfig, next: &mut u16) -> Option<UdpSocket> {
    let (min, max) = (*config.ports.start(), *config.ports.end());
    for _ in min..=max {
        let port = *next;
        *next = if port >= max { min } else { port + 1 };
        if let Ok(socket) = UdpSocket::bind(SocketAddr::new(config.ip, port)).await {
            return Some(socket);
        }
    }
    None
}

async fn read_peers(id: AllocationId, socket: Arc<UdpSocket>, tx: mpsc::Sender<PeerDatagram>) {
    let mut arena = BytesMut::with_capacity(ARENA);
    loop {
        arena.reserve(HEADROOM + MAX_PEER_DATAGRAM + TAILROOM);
        arena.put_bytes(0, HEADROOM);
        let received = {
            let mut limited = (&mut arena).limit(MAX_PEER_DATAGRAM);
            socket.recv_buf_from(&mut limited).await
        };
        let from = match received {
            Ok((_, from)) => from,
            Err(err) => {
                debug!(%err, "relayed socket receive failed");
                arena.clear();
                continue;
            }
        };
        arena.put_bytes(0, TAILROOM);
        let buf = arena.split();
        let datagram = PeerDatagram {
            allocation: id,
            from,
            buf,
        };
        if tx.send(datagram).await.is_err() {
            return;
        }
    }
}
