//! Chat: `message`, `ack`, and the `message` event.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::UserName;

/// A stored chat message, numbered by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageId(pub u64);

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// `message` request fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendMessage {
    /// The recipient.
    pub to: String,
    /// The text, 1 byte to the configured limit (default 4 KiB) of UTF-8.
    pub text: String,
}

/// `ack` fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// Messages received; they are deleted from the store.
    pub message_ids: Vec<MessageId>,
}

/// The `ok` reply to `message`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageSent {
    /// The stored message.
    pub message_id: MessageId,
    /// When the server stored it, Unix milliseconds.
    pub sent_at: u64,
    /// Whether the recipient was online and was sent it at once.
    pub delivered: bool,
}

/// The `message` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Acknowledge with this id.
    pub message_id: MessageId,
    /// The sender.
    pub from: UserName,
    /// The text.
    pub text: String,
    /// When the server stored it, Unix milliseconds.
    pub sent_at: u64,
}
