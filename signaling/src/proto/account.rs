//! Greeting and accounts: `hello`, `register`, `login`.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::UserName;

/// The protocol version announced in `hello`. Bumped on incompatible changes.
pub const PROTOCOL_VERSION: u32 = 1;

/// The server's greeting, the first line on every accepted connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename = "hello")]
pub struct Hello {
    /// [`PROTOCOL_VERSION`].
    pub version: u32,
    /// Send something (a `ping` will do) at least this often; silence for three
    /// intervals drops the connection.
    pub heartbeat_secs: u64,
    /// The longest line the server accepts, newline excluded.
    pub max_line_bytes: usize,
    /// The largest `offer`/`answer`, as compact JSON.
    pub max_payload_bytes: usize,
    /// The server software, e.g. `magpie-server/0.1.0`.
    pub server: String,
}

/// `register` and `login` fields.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// The user name (see [`UserName`]).
    pub user: String,
    /// The password, 8 to 1024 bytes.
    pub password: String,
}

impl Credentials {
    /// Shortest accepted password, in bytes.
    pub const MIN_PASSWORD: usize = 8;
    /// Longest accepted password, in bytes: bounds the hashing work per request.
    pub const MAX_PASSWORD: usize = 1024;

    /// Whether the password has an acceptable length.
    pub fn password_len_ok(&self) -> bool {
        (Self::MIN_PASSWORD..=Self::MAX_PASSWORD).contains(&self.password.len())
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self { user, password: _ } = self;
        f.debug_struct("Credentials")
            .field("user", user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The `ok` reply to `login`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginOk {
    /// The logged-in user.
    pub user: UserName,
    /// How many stored chat messages follow as `message` events.
    pub pending_messages: usize,
    /// How many files left for you follow as `file` events (after the messages).
    #[serde(default)]
    pub pending_files: usize,
}
