//! The TURN client's configuration: the server, the credentials, the timers.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{Kind, State, TurnClient, TurnCounters, TurnFailure};

/// A TURN server and the credentials for it.
#[derive(Clone)]
pub struct TurnConfig {
    pub(crate) server: SocketAddr,
    pub(crate) username: String,
    pub(crate) password: String,
    pub(crate) lifetime: Duration,
    pub(crate) initial_rto: Duration,
    pub(crate) timeout: Duration,
}

impl TurnConfig {
    /// The server at `server`, with a user name and password (for our server's relay,
    /// the TURN REST pair that signaling hands out).
    pub fn new(server: SocketAddr, username: String, password: String) -> Self {
        Self {
            server,
            username,
            password,
            // RFC 8656 §3.7: 10 minutes is the default; a call asks for that and
            // refreshes at half of what it was granted.
            lifetime: Duration::from_secs(600),
            // RFC 8489 §6.2.1 says 500 ms; a call wants its relay sooner, and a server
            // that far away is of little use for media anyway.
            initial_rto: Duration::from_millis(250),
            // After this long without an allocation the relay is given up (the call
            // goes on with its direct candidates).
            timeout: Duration::from_secs(5),
        }
    }

    /// How long to try before giving up on the allocation.
    pub fn set_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The server's address.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// Starts allocating at `now`. `salt` makes the transaction ids this client's own.
    pub fn build(self, now: Instant, salt: [u8; 12]) -> TurnClient {
        let mut client = TurnClient {
            state: State::Allocating {
                deadline: now + self.timeout,
            },
            config: self,
            realm: None,
            nonce: None,
            salt,
            next_tid: 0,
            permissions: HashMap::new(),
            channels: HashMap::new(),
            refused: HashSet::new(),
            wanted: Vec::new(),
            pending: HashMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            counters: TurnCounters::default(),
            last_probe: None,
            mobility: true,
            ticket: None,
            lost: false,
            reallocations: 0,
            now,
        };
        if client.config.username.len() > MAX_USERNAME {
            // RFC 8489 §14.3: no request could carry it.
            client.fail(TurnFailure::Unauthorized);
        } else {
            client.request(Kind::Allocate);
        }
        client
    }
}

/// The longest USERNAME a request may carry, bytes (RFC 8489 §14.3).
pub(super) const MAX_USERNAME: usize = 513;
/// The longest REALM or NONCE a request may carry, bytes (RFC 8489 §14.9, §14.10).
pub(super) const MAX_REALM_OR_NONCE: usize = 763;

impl fmt::Debug for TurnConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            server,
            username,
            password: _,
            lifetime,
            initial_rto,
            timeout,
        } = self;
        f.debug_struct("TurnConfig")
            .field("server", server)
            .field("username", username)
            .field("lifetime", lifetime)
            .field("initial_rto", initial_rto)
            .field("timeout", timeout)
            .finish_non_exhaustive()
    }
}
