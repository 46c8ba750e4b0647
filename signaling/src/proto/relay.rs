//! Relays and late candidates: `relay` hands a party of a live call credentials for the
//! server's TURN relay; `candidates` passes candidates found after the offer or answer
//! (trickle) to the other party.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::CallId;

/// Most candidates one `candidates` request may carry (the same bound as a description).
pub const MAX_TRICKLE: usize = 16;

/// `relay` fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayQuery {
    /// The live call the relay is for.
    pub call_id: CallId,
}

/// The `ok` reply to `relay`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayOk {
    /// The relays this server offers, with credentials for each.
    pub servers: Vec<RelayServer>,
}

/// One TURN relay and time-limited credentials for it (the TURN REST scheme: the user
/// name is `expiry:user`, the credential base64(HMAC-SHA1(secret, username))).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayServer {
    /// `turn:HOST:PORT` (UDP).
    pub url: String,
    /// `expiry:user`, expiry in Unix seconds.
    pub username: String,
    /// The password for `username`.
    pub credential: String,
    /// How long the credentials work from now, in seconds.
    pub ttl_s: u64,
}

/// `candidates` fields, and the event the other party gets: the list is passed on
/// untouched, as offers and answers are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trickle {
    /// The live call.
    pub call_id: CallId,
    /// At most [`MAX_TRICKLE`] candidates, in the format of the media description.
    pub candidates: Vec<Value>,
}
