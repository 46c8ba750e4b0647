//! Magpie signaling: the newline-delimited JSON protocol over TLS (or plain TCP), the server
//! (`magpie-server`) and an async client.
//!
//! # Design
//!
//! Following mini-redis: [`codec`] splits bytes into lines (pure, fuzzed);
//! [`connection`] only buffers I/O; [`proto`] holds the message types, one file per
//! family, shared by server and client. The server ([`server::run`]) runs one task per
//! connection; a single hub task owns who is online and the sans-IO call state
//! machine ([`calls`]), which gets the time passed in and is tested without sockets.
//! SQLite ([`store`]) runs on a database actor that executes jobs in order on the
//! blocking pool. [`client`] is the async client library the `magpie` binary and the
//! tests use. [`stun`] answers STUN Binding requests on UDP. [`tls`] holds the
//! server's certificate and what a client trusts: the server accepts TLS with
//! [`server::run_tls`], the client connects with [`client::connect_tls`]. [`lan`] is
//! the direct channel two clients on one LAN use instead of a server: a sans-IO,
//! authenticated and sealed handshake and message codec, fuzzed.
//!
//! The protocol is specified in `PROTOCOL.md` next to this crate's `Cargo.toml`.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod auth;
pub mod calls;
pub mod client;
pub mod codec;
pub mod config;
pub mod connection;
mod db;
pub mod files;
mod handler;
mod hashing;
mod hub;
pub mod lan;
pub mod limits;
mod lru;
pub mod metrics;
pub mod pii;
pub mod proto;
pub mod relay;
pub mod server;
pub mod store;
pub mod stun_server;
pub mod tls;

pub use config::{Config, RelayGrant};

/// Anything that stops the server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// A socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
