//! Calls and files on the LAN with no server: `magpie lan`, `magpie answer --lan`,
//! `magpie call NAME@lan` and `magpie send NAME@lan PATH...`.
//!
//! - [`discovery`]: who is on the LAN (mDNS/DNS-SD, `_magpie._udp.local`).
//! - [`link`]: the direct control channel to one of them (TCP, authenticated and sealed
//!   by `magpie_signaling::lan`), carrying the messages the server would otherwise carry.
//! - [`trust`]: this client's long-term identity and the peers it trusts
//!   (`lan-identity`, `lan-peers` beside the config file).
//! - [`call`]: the two ends of a call over the channel, on the same media engine as a
//!   call through the server (the same descriptions, keys and safety code).
//! - [`send`]: files over the channel's offer and answer, on the same QUIC transfer as
//!   `magpie send` through the server.
//!
//! With no server to vouch for anyone, the first call between two people shows both a
//! six-digit pairing code from the channel's key exchange; each types `y` (or the code)
//! when the other sees the same, and the peer's identity key is then remembered. A later
//! call from the same name with another key is refused with a warning.

pub mod call;
pub mod discovery;
pub mod link;
pub mod send;
pub mod trust;

use std::path::PathBuf;
use std::time::Duration;

use magpie_signaling::lan::{Fingerprint, Identity, IdentityKey};
use magpie_signaling::proto::UserName;

use self::trust::{LanFiles, PinCheck};
use crate::cli::Cli;
use crate::config::FileConfig;

/// What went wrong on the LAN, said so a person can act on it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A name that is no user name.
    #[error(
        "{0:?} is not a user name (3 to 32 of a-z, 0-9, '_', '-', '.', starting with a letter)"
    )]
    Name(String),
    /// The LAN files need a config directory.
    #[error("no config directory to keep the LAN identity and trusted peers in: set MAGPIE_CONFIG")]
    NoConfigDir,
    /// The identity or the trust store cannot be used.
    #[error(transparent)]
    Trust(#[from] trust::TrustError),
    /// mDNS failed.
    #[error(transparent)]
    Discovery(#[from] discovery::DiscoveryError),
    /// Nobody of that name answered.
    #[error(
        "{name} is not on the LAN (no answer within {secs} s; is `magpie answer --lan` running there?)"
    )]
    NotFound {
        /// Whom we looked for.
        name: String,
        /// How long.
        secs: f64,
    },
    /// The direct channel failed.
    #[error("the LAN channel to {peer}: {source}")]
    Link {
        /// Whom.
        peer: String,
        /// Why.
        #[source]
        source: link::LinkError,
    },
    /// Who answered is not whom we called.
    #[error("called {expected}, but the peer at that address is {got}")]
    WrongPeer {
        /// Whom we called.
        expected: String,
        /// Who answered.
        got: String,
    },
    /// The peer's key is not the one pinned for its name.
    #[error(
        "REFUSED: {name}'s key has changed (trusted {pinned}, now {got}).\n  Someone on the \
         LAN may be impersonating {name}, or {name} has a new identity (a reinstall, another \
         machine). Ask {name} for the fingerprint `magpie lan` shows; if it is the new one, \
         delete {name}'s line from {file} and call again."
    )]
    KeyChanged {
        /// The name.
        name: String,
        /// The fingerprint pinned.
        pinned: String,
        /// The fingerprint seen.
        got: String,
        /// The trust store.
        file: PathBuf,
    },
    /// The person did not confirm the pairing code.
    #[error("the pairing code with {0} was not confirmed: not trusted, no call")]
    NotConfirmed(String),
    /// The peer said no (to the call, or to our key).
    #[error("{name} said no: {reason}")]
    Rejected {
        /// Who.
        name: String,
        /// Their reason.
        reason: String,
    },
    /// The peer sent something else than the call needs now.
    #[error("{0} sent an unexpected message")]
    Unexpected(String),
    /// The control listener cannot be opened.
    #[error("cannot listen for LAN calls on {addr}: {source}")]
    Listen {
        /// Where.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// This client on the LAN: its name (`--user`), its files and its identity (made on
/// first use).
fn whoami(
    cli: &Cli,
    file: &FileConfig,
) -> Result<(UserName, LanFiles, Identity), crate::commands::Error> {
    let user = cli.user(file).ok_or(crate::commands::Error::NoUser)?;
    let me = UserName::parse(&user).map_err(|_| Error::Name(user))?;
    let files = files(cli)?;
    let identity = files.identity(rand::random).map_err(Error::from)?;
    Ok((me, files, identity))
}

/// The LAN files beside the config file.
fn files(cli: &Cli) -> Result<LanFiles, Error> {
    let config = cli.config_path().ok_or(Error::NoConfigDir)?;
    Ok(LanFiles::beside(&config))
}

fn short(key: IdentityKey) -> String {
    key.fingerprint().short()
}

/// `magpie lan`: everyone who answers within `wait`.
pub async fn list(cli: &Cli, wait: Duration) -> Result<(), crate::commands::Error> {
    let files = files(cli)?;
    let found = discovery::browse(wait).await.map_err(Error::from)?;
    if found.is_empty() {
        println!(
            "nobody on the LAN answered within {} s (people wait for LAN calls with \
             `magpie answer --lan`)",
            wait.as_secs_f64()
        );
        return Ok(());
    }
    println!(
        "{:<20} {:<24} {:<20} trust",
        "name", "address", "key fingerprint"
    );
    for person in found {
        let address = person
            .addrs
            .first()
            .map_or_else(|| "-".to_owned(), ToString::to_string);
        let fingerprint = person.fingerprint.as_ref().map(Fingerprint::short);
        let trust = match files.pinned(person.name.as_str()).map_err(Error::from)? {
            None => "new".to_owned(),
            Some(key) if Some(key.fingerprint()) == person.fingerprint => "trusted".to_owned(),
            Some(key) => format!("KEY CHANGED (trusted {})", short(key)),
        };
        println!(
            "{:<20} {:<24} {:<20} {trust}",
            person.name.as_str(),
            address,
            fingerprint.as_deref().unwrap_or("-"),
        );
    }
    Ok(())
}

/// What the pinned key says about the peer on `link`, as an error when it is another key.
fn pin_check(files: &LanFiles, peer: &link::Link) -> Result<PinCheck, Error> {
    let name = peer.peer.name.as_str();
    match files.check(name, peer.peer.identity)? {
        PinCheck::Changed { pinned } => Err(Error::KeyChanged {
            name: name.to_owned(),
            pinned: short(pinned),
            got: short(peer.peer.identity),
            file: files.peers_path(),
        }),
        check => Ok(check),
    }
}
