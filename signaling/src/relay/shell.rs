//! The relay's shell: one thread owns the [`Relay`] core, the TURN socket and every
//! relayed socket, and waits on all of them at once with `mio` (epoll). A readable socket
//! is drained into one buffer that keeps room for the TURN header in front of the payload,
//! the core writes the header in place, and the datagram leaves on the other socket: no
//! task switch, channel, lock or allocation per relayed datagram, and per allocation only
//! its socket and the core's state.
//!
//! The async [`serve`] starts the thread, waits for `shutdown`, wakes the thread to stop
//! and returns its counters.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mio::net::UdpSocket as MioSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use tokio::net::UdpSocket;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::{debug, info, trace, warn};

use super::core::{AllocationId, Event, Relay};
use super::wire::{HEADROOM, TAILROOM};
use super::{Config, Stats};

/// Largest datagram relayed; longer ones are truncated by the socket. Media packets stay
/// under the 1,200-byte MTU the client uses; TURN requests are smaller still.
const MAX_DATAGRAM: usize = 2048;
/// Datagrams read from one socket before the others get their turn.
const BUDGET: usize = 64;
const TURN: Token = Token(0);
const WAKE: Token = Token(1);
/// Relayed sockets' tokens start here: `Token(FIRST + id)`.
const FIRST: usize = 2;

/// Where the shell binds relayed sockets.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The local address relayed sockets bind to (the TURN socket's IP).
    pub ip: IpAddr,
    /// The ports they may use.
    pub ports: RangeInclusive<u16>,
}

/// Runs the relay on `socket` until `shutdown` completes; returns its counters.
pub async fn serve(
    socket: UdpSocket,
    config: Config,
    serve_config: ServeConfig,
    shutdown: impl Future,
) -> Stats {
    info!(addr = ?socket.local_addr().ok(), ?config, ?serve_config, "TURN relay listening");
    let started = socket
        .into_std()
        .and_then(|socket| Shell::new(socket, config, serve_config));
    let (shell, waker, stop) = match started {
        Ok(started) => started,
        Err(err) => {
            warn!(%err, "TURN relay cannot start");
            return Stats::default();
        }
    };
    let (done, stopped) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("turn-relay".into())
        .spawn(move || {
            let _ = done.send(shell.run());
        });
    if let Err(err) = thread {
        warn!(%err, "TURN relay thread not started");
        return Stats::default();
    }
    shutdown.await;
    stop.store(true, Ordering::Relaxed);
    if let Err(err) = waker.wake() {
        warn!(%err, "cannot wake the TURN relay to stop it");
    }
    let stats = stopped.await.unwrap_or_default();
    info!(?stats, "TURN relay stopped");
    stats
}

struct Shell {
    poll: Poll,
    turn: MioSocket,
    relay: Relay,
    relayed: HashMap<AllocationId, MioSocket>,
    serve_config: ServeConfig,
    next_port: u16,
    stop: Arc<AtomicBool>,
    /// HEADROOM, a datagram, TAILROOM.
    buf: Vec<u8>,
    /// Sockets that had more to read when their budget ran out.
    backlog: VecDeque<Token>,
}

impl Shell {
    fn new(
        socket: std::net::UdpSocket,
        config: Config,
        serve_config: ServeConfig,
    ) -> io::Result<(Self, Arc<Waker>, Arc<AtomicBool>)> {
        socket.set_nonblocking(true)?;
        let mut turn = MioSocket::from_std(socket);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut turn, TURN, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        let stop = Arc::new(AtomicBool::new(false));
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let shell = Self {
            poll,
            turn,
            relay: Relay::new(config, Instant::now(), unix),
            relayed: HashMap::new(),
            next_port: *serve_config.ports.start(),
            serve_config,
            stop: stop.clone(),
            buf: vec![0; HEADROOM + MAX_DATAGRAM + TAILROOM],
            backlog: VecDeque::new(),
        };
        Ok((shell, waker, stop))
    }

    fn run(mut self) -> Stats {
        let mut events = Events::with_capacity(256);
        while !self.stop.load(Ordering::Relaxed) {
            let timeout = if self.backlog.is_empty() {
                self.relay
                    .poll_timeout()
                    .map(|at| at.saturating_duration_since(Instant::now()))
            } else {
                Some(Duration::ZERO)
            };
            if let Err(err) = self.poll.poll(&mut events, timeout)
                && err.kind() != io::ErrorKind::Interrupted
            {
                warn!(%err, "TURN relay poll failed");
                break;
            }
            self.backlog.extend(events.iter().map(|e| e.token()));
            for _ in 0..self.backlog.len() {
                let Some(token) = self.backlog.pop_front() else {
                    break;
                };
                let more = match token {
                    WAKE => false,
                    TURN => self.drain_clients(),
                    Token(n) => self.drain_peers(AllocationId((n - FIRST) as u32)),
                };
                if more && !self.backlog.contains(&token) {
                    self.backlog.push_back(token);
                }
            }
            self.relay.handle_timeout(Instant::now());
            self.settle();
        }
        self.relay.stats()
    }

    /// Reads up to [`BUDGET`] datagrams from clients; `true` if there may be more.
    fn drain_clients(&mut self) -> bool {
        for _ in 0..BUDGET {
            let (len, from) = match self.turn.recv_from(&mut self.buf[..MAX_DATAGRAM]) {
                Ok(received) => received,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return false,
                Err(err) => {
                    debug!(%err, "udp receive failed");
                    continue;
                }
            };
            let now = Instant::now();
            if let Some(forward) = self.relay.handle_client(now, from, &self.buf[..len])
                && let Some(socket) = self.relayed.get(&forward.allocation)
                && let Err(err) = socket.send_to(forward.payload, forward.peer)
            {
                trace!(%err, "relayed send dropped");
            }
            // Responses go out at once, so a burst of requests gets its answers in order.
            self.settle();
        }
        true
    }

    /// Reads up to [`BUDGET`] datagrams from peers on allocation `id`'s relayed socket.
    fn drain_peers(&mut self, id: AllocationId) -> bool {
        let Some(socket) = self.relayed.get(&id) else {
            return false;
        };
        for _ in 0..BUDGET {
            let payload = &mut self.buf[HEADROOM..HEADROOM + MAX_DATAGRAM];
            let (len, from) = match socket.recv_from(payload) {
                Ok(received) => received,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return false,
                Err(err) => {
                    debug!(%err, "relayed socket receive failed");
                    continue;
                }
            };
            let end = HEADROOM + len;
            let now = Instant::now();
            let message = &mut self.buf[..end + TAILROOM];
            if let Some((client, range)) =
                self.relay
                    .handle_peer(now, id, from, message, HEADROOM..end)
                && let Err(err) = self.turn.send_to(&self.buf[range], client)
            {
                trace!(%err, "send to client dropped");
            }
        }
        true
    }

    /// Acts on the core's events and sends its responses.
    fn settle(&mut self) {
        while let Some(event) = self.relay.poll_event() {
            match event {
                Event::Bind(id) => {
                    let bound = self.bind(id);
                    if bound.is_none() {
                        warn!(ports = ?self.serve_config.ports, "no free relay port");
                    }
                    self.relay.handle_bound(Instant::now(), id, bound);
                }
                Event::Release(id) => {
                    if let Some(mut socket) = self.relayed.remove(&id) {
                        let _ = self.poll.registry().deregister(&mut socket);
                    }
                }
            }
        }
        while let Some(transmit) = self.relay.poll_transmit() {
            if let Err(err) = self.turn.send_to(&transmit.contents, transmit.destination) {
                debug!(%err, "response not sent");
            }
        }
    }

    /// Binds and registers a relayed socket on a free port in the range, trying each
    /// once from where the last search ended; returns its address.
    fn bind(&mut self, id: AllocationId) -> Option<SocketAddr> {
        let (min, max) = (
            *self.serve_config.ports.start(),
            *self.serve_config.ports.end(),
        );
        for _ in min..=max {
            let port = self.next_port;
            self.next_port = if port >= max { min } else { port + 1 };
            let Ok(mut socket) = MioSocket::bind(SocketAddr::new(self.serve_config.ip, port))
            else {
                continue;
            };
            let token = Token(FIRST + id.0 as usize);
            let registered = self
                .poll
                .registry()
                .register(&mut socket, token, Interest::READABLE);
            let addr = socket.local_addr();
            if let (Ok(()), Ok(addr)) = (registered, addr) {
                self.relayed.insert(id, socket);
                return Some(addr);
            }
        }
        None
    }
}
