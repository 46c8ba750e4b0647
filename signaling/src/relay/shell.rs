//! The relay's shell: a few forwarding threads share one [`Relay`] core. Each thread has
//! its own socket on the TURN port (SO_REUSEPORT: the kernel spreads clients over them by
//! their address, so one client's datagrams stay in order on one thread) and its own share
//! of the relayed sockets, and waits on them with `mio` (epoll). A readable socket is
//! drained into the thread's buffer, which keeps room for the TURN header in front of the
//! payload; the core, under its lock only while it decides, writes the header in place,
//! and the datagram leaves on the other socket after the lock is released. Admission,
//! quotas and counters stay in the one core; the system calls, which are most of the cost
//! of a relayed datagram, run on every thread at once. No task switch, channel or
//! allocation per relayed datagram, and per allocation only its socket and the core's
//! state.
//!
//! The TURN sockets ask for a large receive buffer ([`TURN_RCVBUF`] in magpie-server):
//! every client's datagrams queue there while a thread is off the CPU, and a burst beyond
//! it is dropped by the kernel (Linux caps the size at `net.core.rmem_max`).
//!
//! The async [`serve`] starts the threads, waits for `shutdown`, wakes them to stop and
//! returns the core's counters.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mio::net::UdpSocket as MioSocket;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::{debug, info, trace, warn};

use super::core::{AllocationId, Event, Relay, Transmit};
use super::wire::{HEADROOM, TAILROOM};
use super::{Config, Stats};

/// Largest datagram relayed; longer ones are truncated by the socket. Media packets stay
/// under the 1,200-byte MTU the client uses; TURN requests are smaller still.
const MAX_DATAGRAM: usize = 2048;
/// Datagrams read from one socket before the others get their turn.
const BUDGET: usize = 64;
/// The receive buffer each TURN socket asks for by default: about 5,000 of the 200-byte
/// datagrams a call sends (the kernel counts some 800 bytes of overhead each), 50 ms of
/// 100,000 datagrams a second. The kernel only takes memory for what is queued.
pub const TURN_RCVBUF: usize = 4 << 20;
const TURN: Token = Token(0);
const WAKE: Token = Token(1);
/// Relayed sockets' tokens start here: `Token(FIRST + id)`.
const FIRST: usize = 2;

/// Where the shell binds relayed sockets, and how many threads forward.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The local address relayed sockets bind to (the TURN socket's IP).
    pub ip: IpAddr,
    /// The ports they may use.
    pub ports: RangeInclusive<u16>,
    /// Forwarding threads; 0 for one per CPU core. More than one needs a TURN socket from
    /// [`bind`], which lets each thread bind its own on the same port.
    pub threads: usize,
    /// The receive buffer to ask for on each TURN socket ([`TURN_RCVBUF`] is a good
    /// size); 0 keeps the kernel's default (`net.core.rmem_default`).
    pub rcvbuf: usize,
}

/// A TURN socket at `addr` that more sockets may share (SO_REUSEPORT), for [`serve`] to
/// run one forwarding thread per socket. Only processes of the same user can join.
pub fn bind(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
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
        .and_then(|socket| start(socket, config, serve_config));
    let (workers, shared) = match started {
        Ok(started) => started,
        Err(err) => {
            warn!(%err, "TURN relay cannot start");
            return Stats::default();
        }
    };
    let stop = workers[0].stop.clone();
    let wakers: Vec<Arc<Waker>> = workers.iter().map(|w| w.waker.clone()).collect();
    let (done, stopped) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("turn-relay".into())
        .spawn(move || {
            std::thread::scope(|scope| {
                let mut workers = workers.into_iter();
                let first = workers.next();
                for (n, worker) in workers.enumerate() {
                    let spawned = std::thread::Builder::new()
                        .name(format!("turn-relay-{}", n + 1))
                        .spawn_scoped(scope, move || worker.run());
                    if let Err(err) = spawned {
                        warn!(%err, "TURN relay thread not started; its clients go elsewhere");
                    }
                }
                if let Some(first) = first {
                    first.run();
                }
            });
            let _ = done.send(lock(&shared).relay.stats());
        });
    if let Err(err) = thread {
        warn!(%err, "TURN relay thread not started");
        return Stats::default();
    }
    shutdown.await;
    stop.store(true, Ordering::Relaxed);
    for waker in wakers {
        if let Err(err) = waker.wake() {
            warn!(%err, "cannot wake the TURN relay to stop it");
        }
    }
    let stats = stopped.await.unwrap_or_default();
    info!(?stats, "TURN relay stopped");
    stats
}

/// One worker per TURN socket: `socket`, and a sibling bound beside it for each further
/// thread asked for, as many as the port lets us (one when `socket` was not made by
/// [`bind`]).
fn start(
    socket: std::net::UdpSocket,
    config: Config,
    serve_config: ServeConfig,
) -> io::Result<(Vec<Worker>, Arc<Mutex<Shared>>)> {
    let threads = match serve_config.threads {
        0 => std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
        n => n,
    };
    let local = socket.local_addr()?;
    let mut sockets = vec![socket];
    while sockets.len() < threads {
        match bind(local) {
            Ok(sibling) => sockets.push(sibling),
            Err(err) => {
                debug!(%err, "no second socket on the TURN port; fewer threads");
                break;
            }
        }
    }
    for socket in sockets.iter().filter(|_| serve_config.rcvbuf > 0) {
        let sock = SockRef::from(socket);
        if let Err(err) = sock.set_recv_buffer_size(serve_config.rcvbuf) {
            debug!(%err, "TURN socket receive buffer not raised");
        }
    }
    let rcvbuf = SockRef::from(&sockets[0]).recv_buffer_size().unwrap_or(0);
    info!(
        threads = sockets.len(),
        rcvbuf, "TURN relay forwarding (raise net.core.rmem_max for a larger rcvbuf)"
    );
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let shared = Arc::new(Mutex::new(Shared {
        relay: Relay::new(config, Instant::now(), unix),
        relayed: HashMap::new(),
        next_port: *serve_config.ports.start(),
        serve_config,
    }));
    let stop = Arc::new(AtomicBool::new(false));
    let workers = sockets
        .into_iter()
        .map(|socket| Worker::new(socket, shared.clone(), stop.clone()))
        .collect::<io::Result<_>>()?;
    Ok((workers, shared))
}

/// What the threads share: the core, and every relayed socket (a datagram from a client
/// leaves on its allocation's relayed socket, whichever thread reads that one).
struct Shared {
    relay: Relay,
    relayed: HashMap<AllocationId, Arc<MioSocket>>,
    serve_config: ServeConfig,
    next_port: u16,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    // The core's state is consistent between calls; a thread that panicked inside one
    // leaves nothing half done that the others must not see.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Worker {
    poll: Poll,
    waker: Arc<Waker>,
    turn: MioSocket,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    /// HEADROOM, a datagram, TAILROOM.
    buf: Vec<u8>,
    /// Sockets that had more to read when their budget ran out.
    backlog: VecDeque<Token>,
    /// Responses taken from the core, sent once its lock is released.
    outbox: Vec<Transmit>,
}

impl Worker {
    fn new(
        socket: std::net::UdpSocket,
        shared: Arc<Mutex<Shared>>,
        stop: Arc<AtomicBool>,
    ) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        let mut turn = MioSocket::from_std(socket);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut turn, TURN, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        Ok(Self {
            poll,
            waker,
            turn,
            shared,
            stop,
            buf: vec![0; HEADROOM + MAX_DATAGRAM + TAILROOM],
            backlog: VecDeque::new(),
            outbox: Vec::new(),
        })
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        let mut next = None;
        while !self.stop.load(Ordering::Relaxed) {
            let timeout = if self.backlog.is_empty() {
                next.map(|at: Instant| at.saturating_duration_since(Instant::now()))
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
            let mut shared = lock(&self.shared);
            shared.relay.handle_timeout(Instant::now());
            shared.settle(self.poll.registry(), &mut self.outbox);
            // Another thread may sweep first; waking at a time already past is harmless.
            next = shared.relay.poll_timeout();
            drop(shared);
            self.send_outbox();
        }
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
            let mut shared = lock(&self.shared);
            let forward = shared
                .relay
                .handle_client(now, from, &self.buf[..len])
                .and_then(|f| Some((shared.relayed.get(&f.allocation)?.clone(), f)));
            // Responses go out at once, so a burst of requests gets its answers in order.
            shared.settle(self.poll.registry(), &mut self.outbox);
            drop(shared);
            if let Some((socket, forward)) = forward
                && let Err(err) = socket.send_to(forward.payload, forward.peer)
            {
                trace!(%err, "relayed send dropped");
            }
            self.send_outbox();
        }
        true
    }

    /// Reads up to [`BUDGET`] datagrams from peers on allocation `id`'s relayed socket.
    fn drain_peers(&mut self, id: AllocationId) -> bool {
        let Some(socket) = lock(&self.shared).relayed.get(&id).cloned() else {
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
            let routed =
                lock(&self.shared)
                    .relay
                    .handle_peer(now, id, from, message, HEADROOM..end);
            if let Some((client, range)) = routed
                && let Err(err) = self.turn.send_to(&self.buf[range], client)
            {
                trace!(%err, "send to client dropped");
            }
        }
        true
    }

    fn send_outbox(&mut self) {
        for transmit in self.outbox.drain(..) {
            if let Err(err) = self.turn.send_to(&transmit.contents, transmit.destination) {
                debug!(%err, "response not sent");
            }
        }
    }
}

impl Shared {
    /// Acts on the core's events (a relayed socket bound here is registered with
    /// `registry`, this thread's) and takes its responses into `outbox`.
    fn settle(&mut self, registry: &Registry, outbox: &mut Vec<Transmit>) {
        while let Some(event) = self.relay.poll_event() {
            match event {
                Event::Bind(id) => {
                    let bound = self.bind(registry, id);
                    if bound.is_none() {
                        warn!(ports = ?self.serve_config.ports, "no free relay port");
                    }
                    self.relay.handle_bound(Instant::now(), id, bound);
                }
                Event::Release(id) => {
                    // Closing the socket takes it out of its thread's epoll set; a thread
                    // still reading from it holds the last reference until it is done.
                    self.relayed.remove(&id);
                }
            }
        }
        outbox.extend(std::iter::from_fn(|| self.relay.poll_transmit()));
    }

    /// Binds and registers a relayed socket on a free port in the range, trying each
    /// once from where the last search ended; returns its address.
    fn bind(&mut self, registry: &Registry, id: AllocationId) -> Option<SocketAddr> {
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
            let registered = registry.register(&mut socket, token, Interest::READABLE);
            let addr = socket.local_addr();
            if let (Ok(()), Ok(addr)) = (registered, addr) {
                self.relayed.insert(id, Arc::new(socket));
                return Some(addr);
            }
        }
        None
    }
}
