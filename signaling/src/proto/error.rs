//! Error codes on the wire, the `error` message, and protocol parse failures.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A stable, documented error code. New codes may be added; clients must treat an
/// unknown code as [`ErrorCode::Unknown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The line is not JSON. The connection stays open.
    BadJson,
    /// A JSON line that is not a valid request: no integer `id`, wrong or missing fields.
    BadRequest,
    /// The `type` is not a known request.
    UnknownType,
    /// The line exceeds the size limit; the connection is closed.
    LineTooLong,
    /// An `offer`, `answer` or chat text exceeds its size limit.
    TooLarge,
    /// The request needs a logged-in connection.
    NotLoggedIn,
    /// `login` on a connection that is already logged in.
    AlreadyLoggedIn,
    /// The user name breaks the rules (see PROTOCOL.md).
    InvalidUsername,
    /// The password is too short or too long.
    InvalidPassword,
    /// `register` with a name that is taken.
    UserExists,
    /// Wrong user name or password.
    BadCredentials,
    /// Too many wrong passwords for this user: wait `retry_after_ms`.
    TooManyAttempts,
    /// No such user.
    UnknownUser,
    /// The recipient has too many unacknowledged messages stored.
    MailboxFull,
    /// The callee is not online.
    Offline,
    /// The callee is in another call.
    Busy,
    /// You are already in a call.
    AlreadyInCall,
    /// No such call, or it is not yours.
    NoSuchCall,
    /// The call is not in a state that allows this request.
    WrongCallState,
    /// `relay`/`candidates`: no such live call, or you are not a party of it.
    NotInCall,
    /// `relay`: the server runs without a relay.
    NoRelay,
    /// Too many requests on this connection; slow down.
    RateLimited,
    /// The server is at its connection limit; the connection is closed.
    TooManyConnections,
    /// Too many connections from your address; the connection is closed.
    TooManyFromAddress,
    /// No `login` within the login timeout; the connection is closed.
    LoginTimeout,
    /// Nothing received for three heartbeat intervals; the connection is closed.
    HeartbeatTimeout,
    /// The same user logged in elsewhere; this connection is closed.
    SessionReplaced,
    /// `register`/`login`: the server's password hashing queue is full; retry after
    /// `retry_after_ms`. Nothing was checked or counted.
    ServerBusy,
    /// `file-put`/`file-chunk`: the server has no room for the file (its store is at its
    /// limit, or the disk is full); the upload is removed.
    StorageFull,
    /// `file-chunk`: the bytes received do not have the SHA-256 `file-put` announced; the
    /// upload is removed.
    HashMismatch,
    /// `file-chunk`, `file-get`, `file-done`: no such upload or stored file of yours (it
    /// was delivered, declined, expired, or removed after an error).
    NoSuchFile,
    /// The server failed (database error); the request may be retried.
    Internal,
    /// A code this version of the library does not know.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadJson => "bad-json",
            Self::BadRequest => "bad-request",
            Self::UnknownType => "unknown-type",
            Self::LineTooLong => "line-too-long",
            Self::TooLarge => "too-large",
            Self::NotLoggedIn => "not-logged-in",
            Self::AlreadyLoggedIn => "already-logged-in",
            Self::InvalidUsername => "invalid-username",
            Self::InvalidPassword => "invalid-password",
            Self::UserExists => "user-exists",
            Self::BadCredentials => "bad-credentials",
            Self::TooManyAttempts => "too-many-attempts",
            Self::UnknownUser => "unknown-user",
            Self::MailboxFull => "mailbox-full",
            Self::Offline => "offline",
            Self::Busy => "busy",
            Self::AlreadyInCall => "already-in-call",
            Self::NoSuchCall => "no-such-call",
            Self::WrongCallState => "wrong-call-state",
            Self::NotInCall => "not-in-call",
            Self::NoRelay => "no-relay",
            Self::RateLimited => "rate-limited",
            Self::TooManyConnections => "too-many-connections",
            Self::TooManyFromAddress => "too-many-from-address",
            Self::LoginTimeout => "login-timeout",
            Self::HeartbeatTimeout => "heartbeat-timeout",
            Self::SessionReplaced => "session-replaced",
            Self::ServerBusy => "server-busy",
            Self::StorageFull => "storage-full",
            Self::HashMismatch => "hash-mismatch",
            Self::NoSuchFile => "no-such-file",
            Self::Internal => "internal",
            Self::Unknown => "unknown",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `error` message: a failed request (with its `id`) or a connection-level
/// refusal (without).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "type", rename = "error")]
#[error("{code}: {message}")]
pub struct ServerError {
    /// The failed request's id; absent for connection-level errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// What went wrong, as a stable code.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub message: String,
    /// For `too-many-attempts`, `rate-limited` and `server-busy`: when a retry can succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl ServerError {
    /// An error reply.
    pub fn new(id: Option<u64>, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            id,
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }

    /// Adds a retry hint.
    pub fn retry_after(mut self, ms: u64) -> Self {
        self.retry_after_ms = Some(ms);
        self
    }

    /// Encodes the error as one line (without the newline).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("errors serialize to JSON")
    }
}

/// A line that is not a valid message.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// Not JSON at all.
    #[error("not valid JSON: {0}")]
    BadJson(#[source] serde_json::Error),
    /// JSON, but not an object.
    #[error("a message must be a JSON object")]
    NotAnObject,
    /// A request without `id`.
    #[error("a request needs an integer \"id\"")]
    MissingId,
    /// An `id` that is not a non-negative integer.
    #[error("\"id\" must be a non-negative integer")]
    BadId,
    /// No string `type`.
    #[error("a message needs a string \"type\"")]
    MissingType {
        /// The request's id.
        id: u64,
    },
    /// A `type` that is not known.
    #[error("unknown type {kind:?}")]
    UnknownType {
        /// The request's id.
        id: u64,
        /// The type given (truncated).
        kind: String,
    },
    /// Known `type`, wrong fields.
    #[error("bad fields: {source}")]
    BadFields {
        /// The request's id.
        id: u64,
        /// What serde found wrong.
        #[source]
        source: serde_json::Error,
    },
}

impl ProtocolError {
    /// The id of the offending request, when it could be read.
    pub fn id(&self) -> Option<u64> {
        match self {
            Self::BadJson(_) | Self::NotAnObject | Self::MissingId | Self::BadId => None,
            Self::MissingType { id }
            | Self::UnknownType { id, .. }
            | Self::BadFields { id, .. } => Some(*id),
        }
    }

    /// The wire code for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::BadJson(_) => ErrorCode::BadJson,
            Self::UnknownType { .. } => ErrorCode::UnknownType,
            _ => ErrorCode::BadRequest,
        }
    }

    /// The `error` reply for this failure.
    pub fn to_reply(&self) -> ServerError {
        ServerError::new(self.id(), self.code(), self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_their_wire_names() {
        for code in [
            ErrorCode::BadJson,
            ErrorCode::TooManyFromAddress,
            ErrorCode::ServerBusy,
            ErrorCode::Internal,
        ] {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
    }

    #[test]
    fn unknown_codes_from_a_newer_server_are_tolerated() {
        let err: ServerError =
            serde_json::from_str(r#"{"type":"error","code":"brand-new","message":"m"}"#).unwrap();
        assert_eq!(err.code, ErrorCode::Unknown);
    }

    #[test]
    fn error_without_id_omits_it() {
        let line = ServerError::new(None, ErrorCode::LoginTimeout, "late").encode();
        assert_eq!(
            String::from_utf8(line).unwrap(),
            r#"{"type":"error","code":"login-timeout","message":"late"}"#
        );
    }
}
