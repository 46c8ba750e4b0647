//! The wire protocol: newline-delimited JSON, one message a line.
//!
//! Every message has a `type`. Requests (client to server) carry an integer `id` and
//! get exactly one reply with it: `ok` or `error`. Events (server to client) come
//! unasked and carry no `id`. One file per message family holds its types; this file
//! holds the envelopes, the identifiers and the error codes shared by all of them.
//! Parsing is check-then-parse: a line is first read as JSON, its `id` and `type`
//! are checked, and only then is it parsed into a typed [`Request`].

mod account;
mod call;
mod chat;
mod error;
mod file;
mod presence;
mod relay;

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use account::{Credentials, Hello, LoginOk, PROTOCOL_VERSION};
pub use call::{Accept, CallId, CallRecord, CallRef, EndReason, HistoryOk, HistoryQuery, Invite};
pub use call::{InviteOk, MAX_HISTORY};
pub use chat::{Ack, ChatMessage, MessageId, MessageSent, SendMessage};
pub use error::{ErrorCode, ProtocolError, ServerError};
pub use file::{
    FileChunk, FileChunkOk, FileData, FileDone, FileGet, FileId, FileMeta, FileName, FileOffer,
    FilePut, FilePutOk, FileStored, ImageFormat, ImageInfo, InvalidDigest, InvalidFileName,
    MAX_FILE_NAME, Sha256Digest,
};
pub use presence::{Presence, Watch, WatchOk, WhoOk};
pub use relay::{MAX_TRICKLE, RelayOk, RelayQuery, RelayServer, Trickle};

/// A validated user name: 3 to 32 bytes of `a-z`, `0-9`, `_`, `-`, `.`, starting with
/// a letter. Lower case only, so `Alice` and `alice` cannot be two accounts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserName(String);

/// Why a string is not a valid [`UserName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("user names are 3 to 32 characters of a-z, 0-9, '_', '-', '.', starting with a letter")]
pub struct InvalidUserName;

impl UserName {
    /// Parses and validates a user name.
    pub fn parse(name: &str) -> Result<Self, InvalidUserName> {
        let valid_len = (3..=32).contains(&name.len());
        let starts_with_letter = name.bytes().next().is_some_and(|b| b.is_ascii_lowercase());
        let valid_chars = name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.".contains(&b));
        if valid_len && starts_with_letter && valid_chars {
            Ok(Self(name.to_owned()))
        } else {
            Err(InvalidUserName)
        }
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for UserName {
    type Error = InvalidUserName;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        Self::parse(&name)
    }
}

impl From<UserName> for String {
    fn from(name: UserName) -> Self {
        name.0
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A request from a client, without its `id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Request {
    /// Create an account.
    Register(Credentials),
    /// Authenticate this connection.
    Login(Credentials),
    /// Heartbeat; also answers "is the server alive".
    Ping,
    /// List the users online now.
    Who,
    /// Subscribe to `presence` events for some users.
    Watch(Watch),
    /// Call a user.
    Invite(Invite),
    /// Answer an incoming call.
    Accept(Accept),
    /// Decline an incoming call.
    Reject(CallRef),
    /// Withdraw an outgoing call before it is answered.
    Cancel(CallRef),
    /// End an answered call.
    Hangup(CallRef),
    /// Send a chat message.
    Message(SendMessage),
    /// Confirm receipt of chat messages, which deletes them from the store.
    Ack(Ack),
    /// The user's recent calls.
    History(HistoryQuery),
    /// Credentials for the server's TURN relay, for a party of a live call.
    Relay(RelayQuery),
    /// Candidates found late (trickle), for the other party of a live call.
    Candidates(Trickle),
    /// Leave a file on the server for a user (see `file-chunk`).
    FilePut(FilePut),
    /// The next bytes of a file being left.
    FileChunk(FileChunk),
    /// Bytes of a file left for you.
    FileGet(FileGet),
    /// You took (or decline) a file left for you: the server deletes it.
    FileDone(FileDone),
}

/// Every request `type`, for telling "unknown type" from "bad fields".
const REQUEST_TYPES: &[&str] = &[
    "register",
    "login",
    "ping",
    "who",
    "watch",
    "invite",
    "accept",
    "reject",
    "cancel",
    "hangup",
    "message",
    "ack",
    "history",
    "relay",
    "candidates",
    "file-put",
    "file-chunk",
    "file-get",
    "file-done",
];

impl Request {
    /// The wire `type` of this request.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Register(_) => "register",
            Self::Login(_) => "login",
            Self::Ping => "ping",
            Self::Who => "who",
            Self::Watch(_) => "watch",
            Self::Invite(_) => "invite",
            Self::Accept(_) => "accept",
            Self::Reject(_) => "reject",
            Self::Cancel(_) => "cancel",
            Self::Hangup(_) => "hangup",
            Self::Message(_) => "message",
            Self::Ack(_) => "ack",
            Self::History(_) => "history",
            Self::Relay(_) => "relay",
            Self::Candidates(_) => "candidates",
            Self::FilePut(_) => "file-put",
            Self::FileChunk(_) => "file-chunk",
            Self::FileGet(_) => "file-get",
            Self::FileDone(_) => "file-done",
        }
    }

    /// Whether this request is refused before `login`.
    pub fn needs_login(&self) -> bool {
        !matches!(self, Self::Register(_) | Self::Login(_) | Self::Ping)
    }

    /// Encodes the request with its `id` as one line (without the newline).
    pub fn encode(&self, id: u64) -> Vec<u8> {
        let mut value = serde_json::to_value(self).expect("requests serialize to a JSON object");
        if let Value::Object(map) = &mut value {
            map.insert("id".into(), id.into());
        }
        serde_json::to_vec(&value).expect("a JSON value serializes")
    }
}

/// Parses one line from a client: check it is a JSON object with an integer `id` and
/// a known `type`, then parse the fields.
pub fn parse_request(line: &[u8]) -> Result<(u64, Request), ProtocolError> {
    let value: Value = serde_json::from_slice(line).map_err(ProtocolError::BadJson)?;
    let Value::Object(mut map) = value else {
        return Err(ProtocolError::NotAnObject);
    };
    let id = match map.remove("id") {
        Some(Value::Number(n)) => n.as_u64().ok_or(ProtocolError::BadId)?,
        Some(_) => return Err(ProtocolError::BadId),
        None => return Err(ProtocolError::MissingId),
    };
    let kind = match map.get("type") {
        Some(Value::String(kind)) => kind,
        _ => return Err(ProtocolError::MissingType { id }),
    };
    if !REQUEST_TYPES.contains(&kind.as_str()) {
        let kind = kind.chars().take(64).collect();
        return Err(ProtocolError::UnknownType { id, kind });
    }
    let request = serde_json::from_value(Value::Object(map))
        .map_err(|source| ProtocolError::BadFields { id, source })?;
    Ok((id, request))
}

/// An event: a message from the server that nobody asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Event {
    /// Someone is calling you.
    IncomingCall {
        /// The call.
        call_id: CallId,
        /// The caller.
        from: UserName,
        /// The caller's media offer, passed through untouched.
        offer: Value,
    },
    /// The callee has been told about your call.
    Ringing {
        /// The call.
        call_id: CallId,
    },
    /// The callee answered.
    Accepted {
        /// The call.
        call_id: CallId,
        /// The callee's media answer, passed through untouched.
        answer: Value,
    },
    /// The callee declined your call.
    Rejected {
        /// The call.
        call_id: CallId,
        /// Always `rejected`.
        reason: EndReason,
    },
    /// The caller withdrew the call before you answered.
    Cancelled {
        /// The call.
        call_id: CallId,
        /// Always `cancelled`.
        reason: EndReason,
    },
    /// Nobody answered within the ring timeout; sent to both parties.
    Missed {
        /// The call.
        call_id: CallId,
        /// Always `missed`.
        reason: EndReason,
    },
    /// The call ended: the peer hung up (`hangup`), its connection was lost
    /// (`peer-lost`) or the server is stopping (`server-shutdown`).
    Hangup {
        /// The call.
        call_id: CallId,
        /// Why it ended.
        reason: EndReason,
    },
    /// Another of your sessions took this ringing call (`accepted`) or declined it: stop
    /// ringing here.
    AnsweredElsewhere {
        /// The call.
        call_id: CallId,
        /// True if it was accepted there, false if declined.
        accepted: bool,
    },
    /// A chat message; acknowledge it with `ack` or it is delivered again at next login.
    Message(ChatMessage),
    /// A watched user came online or went offline.
    Presence(Presence),
    /// The other party of your call found more candidates (see `candidates`).
    Candidates(Trickle),
    /// A file waits on the server for you: take it with `file-get`, then `file-done`.
    File(FileOffer),
    /// The server is stopping; the connection closes next.
    ServerShutdown,
}

impl Event {
    /// Encodes the event as one line (without the newline).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("events serialize to JSON")
    }
}

/// Encodes an `ok` reply: `{"type":"ok","id":N}` plus the fields of `body`.
pub fn encode_ok<T: Serialize>(id: u64, body: &T) -> Vec<u8> {
    let mut map = Map::new();
    map.insert("type".into(), "ok".into());
    map.insert("id".into(), id.into());
    if let Value::Object(fields) = serde_json::to_value(body).expect("reply bodies serialize") {
        map.extend(fields);
    }
    serde_json::to_vec(&map).expect("a JSON map serializes")
}

/// The body of an `ok` reply that carries nothing but `type` and `id`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// One line from the server, as the client sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMessage {
    /// The greeting.
    Hello(Hello),
    /// A successful reply: its `id` and the remaining fields, to be read as the
    /// reply type of the request with that `id`.
    Ok {
        /// The request's id.
        id: u64,
        /// The reply's fields other than `type` and `id`.
        body: Map<String, Value>,
    },
    /// A failed request (with `id`) or a connection-level error (without).
    Error(ServerError),
    /// An event.
    Event(Event),
}

/// Parses one line from the server.
pub fn parse_server_message(line: &[u8]) -> Result<ServerMessage, ProtocolError> {
    let value: Value = serde_json::from_slice(line).map_err(ProtocolError::BadJson)?;
    let Value::Object(mut map) = value else {
        return Err(ProtocolError::NotAnObject);
    };
    let kind = match map.get("type") {
        Some(Value::String(kind)) => kind.clone(),
        _ => return Err(ProtocolError::MissingType { id: 0 }),
    };
    let bad = |source| ProtocolError::BadFields { id: 0, source };
    match kind.as_str() {
        "hello" => Ok(ServerMessage::Hello(
            serde_json::from_value(map.into()).map_err(bad)?,
        )),
        "error" => Ok(ServerMessage::Error(
            serde_json::from_value(map.into()).map_err(bad)?,
        )),
        "ok" => {
            map.remove("type");
            let id = map
                .remove("id")
                .and_then(|id| id.as_u64())
                .ok_or(ProtocolError::BadId)?;
            Ok(ServerMessage::Ok { id, body: map })
        }
        _ => Ok(ServerMessage::Event(
            serde_json::from_value(map.into()).map_err(bad)?,
        )),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn request_round_trips_with_its_id() {
        let request = Request::Invite(Invite {
            to: "bob".into(),
            offer: json!({"sdp": "x"}),
        });
        let line = request.encode(7);
        assert_eq!(parse_request(&line).unwrap(), (7, request));
    }

    #[test]
    fn unit_requests_parse_from_nc_style_lines() {
        assert_eq!(
            parse_request(br#"{"type":"ping","id":1}"#).unwrap(),
            (1, Request::Ping)
        );
        assert_eq!(
            parse_request(br#"{"id":2,"type":"who"}"#).unwrap(),
            (2, Request::Who)
        );
        let (_, history) = parse_request(br#"{"type":"history","id":3}"#).unwrap();
        assert_eq!(history, Request::History(HistoryQuery { limit: None }));
    }

    #[test]
    fn malformed_json_has_no_id() {
        let err = parse_request(b"{nope").unwrap_err();
        assert_eq!((err.id(), err.code()), (None, ErrorCode::BadJson));
    }

    #[test]
    fn unknown_type_keeps_the_id() {
        let err = parse_request(br#"{"type":"dance","id":9}"#).unwrap_err();
        assert_eq!((err.id(), err.code()), (Some(9), ErrorCode::UnknownType));
    }

    #[test]
    fn missing_field_is_a_bad_request_with_id() {
        let err = parse_request(br#"{"type":"login","id":4,"user":"al"}"#).unwrap_err();
        assert_eq!((err.id(), err.code()), (Some(4), ErrorCode::BadRequest));
        assert!(err.to_string().contains("password"), "{err}");
    }

    #[test]
    fn missing_or_negative_id_is_a_bad_request() {
        for line in [
            &br#"{"type":"ping"}"#[..],
            br#"{"type":"ping","id":-1}"#,
            b"[1]",
            b"3",
        ] {
            let err = parse_request(line).unwrap_err();
            assert_eq!(
                (err.id(), err.code()),
                (None, ErrorCode::BadRequest),
                "{err}"
            );
        }
    }

    #[test]
    fn user_names_are_validated() {
        for good in ["alice", "bob", "a.b-c_9", "abc"] {
            assert!(UserName::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "ab",
            "Alice",
            "9lives",
            "a b",
            "é-user",
            &"a".repeat(33),
        ] {
            assert!(UserName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn server_messages_parse_by_type() {
        let ok = encode_ok(5, &InviteOk { call_id: CallId(3) });
        let ServerMessage::Ok { id, body } = parse_server_message(&ok).unwrap() else {
            panic!("not ok");
        };
        assert_eq!(id, 5);
        assert_eq!(
            serde_json::from_value::<InviteOk>(body.into())
                .unwrap()
                .call_id,
            CallId(3)
        );
        let event = Event::Ringing { call_id: CallId(3) };
        assert_eq!(
            parse_server_message(&event.encode()).unwrap(),
            ServerMessage::Event(event)
        );
        let shutdown = br#"{"type":"server-shutdown"}"#;
        assert_eq!(
            parse_server_message(shutdown).unwrap(),
            ServerMessage::Event(Event::ServerShutdown)
        );
    }
}
