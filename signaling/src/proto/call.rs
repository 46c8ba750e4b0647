//! Calls: `invite`, `accept`, `reject`, `cancel`, `hangup`, `history`.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::UserName;

/// Most calls one `history` request returns.
pub const MAX_HISTORY: u32 = 200;

/// A call, numbered by the server; unique across restarts on the same database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CallId(pub u64);

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// `invite` fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Invite {
    /// The callee.
    pub to: String,
    /// The media offer: a JSON object, passed to the callee untouched.
    pub offer: Value,
}

/// `accept` fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Accept {
    /// The call to answer.
    pub call_id: CallId,
    /// The media answer: a JSON object, passed to the caller untouched.
    pub answer: Value,
}

/// `reject`, `cancel` and `hangup` fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRef {
    /// The call.
    pub call_id: CallId,
}

/// The `ok` reply to `invite`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InviteOk {
    /// The new call.
    pub call_id: CallId,
}

/// Why a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndReason {
    /// The callee declined.
    Rejected,
    /// The caller withdrew before an answer.
    Cancelled,
    /// Nobody answered within the ring timeout.
    Missed,
    /// The callee was in another call; the call never rang.
    Busy,
    /// A party hung up.
    Hangup,
    /// A party's connection was lost (closed, silent, or taken over by a new login).
    PeerLost,
    /// The server stopped.
    ServerShutdown,
}

impl EndReason {
    /// The reason as it appears on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rejected => "rejected",
            Self::Cancelled => "cancelled",
            Self::Missed => "missed",
            Self::Busy => "busy",
            Self::Hangup => "hangup",
            Self::PeerLost => "peer-lost",
            Self::ServerShutdown => "server-shutdown",
        }
    }

    /// Parses [`EndReason::as_str`] back.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Rejected,
            Self::Cancelled,
            Self::Missed,
            Self::Busy,
            Self::Hangup,
            Self::PeerLost,
            Self::ServerShutdown,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// `history` fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HistoryQuery {
    /// How many recent calls (default 50, at most [`MAX_HISTORY`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// One finished call. Times are Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    /// The call.
    pub call_id: CallId,
    /// Who called.
    pub caller: UserName,
    /// Who was called.
    pub callee: UserName,
    /// When the invite arrived.
    pub created: u64,
    /// When the callee accepted; absent for calls never answered.
    pub answered: Option<u64>,
    /// When the call ended.
    pub ended: u64,
    /// Why it ended.
    pub end_reason: EndReason,
}

/// The `ok` reply to `history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryOk {
    /// Most recent first.
    pub calls: Vec<CallRecord>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_reasons_round_trip_through_their_names() {
        for reason in [
            EndReason::Rejected,
            EndReason::PeerLost,
            EndReason::ServerShutdown,
        ] {
            assert_eq!(EndReason::parse(reason.as_str()), Some(reason));
            assert_eq!(serde_json::to_value(reason).unwrap(), reason.as_str());
        }
        assert_eq!(EndReason::parse("nope"), None);
    }
}
