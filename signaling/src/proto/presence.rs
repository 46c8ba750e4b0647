//! Presence: `who`, `watch`, and the `presence` event.

use serde::{Deserialize, Serialize};

use super::UserName;

/// `watch` fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watch {
    /// Users whose coming and going you want `presence` events for.
    pub users: Vec<String>,
}

/// The `ok` reply to `watch`: the watched users' state now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchOk {
    /// One entry per requested user.
    pub users: Vec<Presence>,
}

/// The `ok` reply to `who`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoOk {
    /// Users online now, sorted.
    pub users: Vec<UserName>,
}

/// A user's presence; also the `presence` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    /// The user.
    pub user: UserName,
    /// Whether they are logged in now.
    pub online: bool,
}
