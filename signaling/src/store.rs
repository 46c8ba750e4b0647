//! The SQLite store: accounts, chat messages awaiting `ack`, and call history.
//!
//! Plain synchronous functions over a [`rusqlite::Connection`]; the [`crate::db`]
//! actor runs them off the async runtime. WAL mode with `synchronous=NORMAL`: every
//! committed transaction survives a crash or restart of the server process.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use crate::proto::{CallId, CallRecord, ChatMessage, EndReason, MessageId, UserName};

/// A database failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A row holds a value this version cannot read.
    #[error("database row in {table} holds an invalid {column}")]
    BadRow {
        /// The table.
        table: &'static str,
        /// The column.
        column: &'static str,
    },
    /// The database actor has stopped.
    #[error("database is closed")]
    Closed,
    /// The database was written by a newer version of the server.
    #[error("database schema version {0} is newer than this server understands")]
    TooNew(i64),
}

const SCHEMA_VERSION: i64 = 3;

const SCHEMA: &str = "
CREATE TABLE users (
    name          TEXT PRIMARY KEY NOT NULL,
    password_hash TEXT NOT NULL,
    created       INTEGER NOT NULL
);
CREATE TABLE messages (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    sender    TEXT NOT NULL,
    recipient TEXT NOT NULL,
    text      TEXT NOT NULL,
    sent_at   INTEGER NOT NULL
);
CREATE INDEX messages_by_recipient ON messages (recipient, id);
CREATE TABLE calls (
    id         INTEGER PRIMARY KEY,
    caller     TEXT NOT NULL,
    callee     TEXT NOT NULL,
    created    INTEGER NOT NULL,
    answered   INTEGER,
    ended      INTEGER NOT NULL,
    end_reason TEXT NOT NULL
);
CREATE INDEX calls_by_caller ON calls (caller, id);
CREATE INDEX calls_by_callee ON calls (callee, id);
";

/// Version 1 → 2: counting one sender's unread messages to one recipient.
const MIGRATE_2: &str = "
CREATE INDEX IF NOT EXISTS messages_by_pair ON messages (recipient, sender);
";

/// Version 2 → 3: files left for users who were offline ([`crate::files`]). `state` is
/// `uploading` until the whole file is in and verified, then `stored`; `expires_at` is
/// set when stored.
const MIGRATE_3: &str = "
CREATE TABLE IF NOT EXISTS files (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    sender     TEXT NOT NULL,
    recipient  TEXT NOT NULL,
    meta       TEXT NOT NULL,
    size       INTEGER NOT NULL,
    state      TEXT NOT NULL,
    created    INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS files_by_recipient ON files (recipient, sender);
CREATE INDEX IF NOT EXISTS files_by_expiry ON files (expires_at);
";

/// Opens (creating if needed) the database at `path` and brings its schema up to date.
pub fn open(path: &Path) -> Result<Connection, StoreError> {
    let mut conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    match version {
        0 => {
            let tx = conn.transaction()?;
            tx.execute_batch(SCHEMA)?;
            tx.execute_batch(MIGRATE_2)?;
            tx.execute_batch(MIGRATE_3)?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            tx.commit()?;
        }
        1 | 2 => {
            let tx = conn.transaction()?;
            if version == 1 {
                tx.execute_batch(MIGRATE_2)?;
            }
            tx.execute_batch(MIGRATE_3)?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
            tx.commit()?;
        }
        SCHEMA_VERSION => {}
        newer => return Err(StoreError::TooNew(newer)),
    }
    Ok(conn)
}

/// Creates an account; `false` if the name is taken.
pub fn create_user(
    conn: &Connection,
    user: &UserName,
    password_hash: &str,
    now_ms: u64,
) -> Result<bool, StoreError> {
    let inserted = conn.execute(
        "INSERT OR IGNORE INTO users (name, password_hash, created) VALUES (?1, ?2, ?3)",
        params![user.as_str(), password_hash, now_ms],
    )?;
    Ok(inserted == 1)
}

/// The stored password hash of a user, if the account exists.
pub fn password_hash(conn: &Connection, user: &UserName) -> Result<Option<String>, StoreError> {
    let hash = conn
        .query_row(
            "SELECT password_hash FROM users WHERE name = ?1",
            [user.as_str()],
            |row| row.get(0),
        )
        .optional()?;
    Ok(hash)
}

/// Whether an account exists.
pub fn user_exists(conn: &Connection, user: &UserName) -> Result<bool, StoreError> {
    Ok(password_hash(conn, user)?.is_some())
}

/// Stores a chat message until its recipient acknowledges it.
pub fn store_message(
    conn: &Connection,
    from: &UserName,
    to: &UserName,
    text: &str,
    sent_at: u64,
) -> Result<MessageId, StoreError> {
    conn.execute(
        "INSERT INTO messages (sender, recipient, text, sent_at) VALUES (?1, ?2, ?3, ?4)",
        params![from.as_str(), to.as_str(), text, sent_at],
    )?;
    let id = u64::try_from(conn.last_insert_rowid()).map_err(|_| StoreError::BadRow {
        table: "messages",
        column: "id",
    })?;
    Ok(MessageId(id))
}

/// Every message for `to` that has not been acknowledged, oldest first. The server
/// delivers in pages ([`pending_messages_page`]); this is for tools and tests.
pub fn pending_messages(conn: &Connection, to: &UserName) -> Result<Vec<ChatMessage>, StoreError> {
    pending_messages_page(conn, to, None, usize::MAX)
}

/// Up to `limit` messages for `to` that have not been acknowledged, oldest first,
/// starting after `after`: one page of a mailbox.
pub fn pending_messages_page(
    conn: &Connection,
    to: &UserName,
    after: Option<MessageId>,
    limit: usize,
) -> Result<Vec<ChatMessage>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, sender, text, sent_at FROM messages WHERE recipient = ?1 AND id > ?2
         ORDER BY id LIMIT ?3",
    )?;
    let after = after.map_or(0, |id| id.0);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = stmt.query_map(params![to.as_str(), after, limit], |row| {
        Ok((
            row.get::<_, u64>(0)?,
            row.get::<_, String>(1)?,
            row.get(2)?,
            row.get(3)?,
        ))
    })?;
    rows.map(|row| {
        let (id, from, text, sent_at) = row?;
        let from = UserName::parse(&from).map_err(|_| StoreError::BadRow {
            table: "messages",
            column: "sender",
        })?;
        Ok(ChatMessage {
            message_id: MessageId(id),
            from,
            text,
            sent_at,
        })
    })
    .collect()
}

/// How many messages from `from` to `to` await acknowledgement.
pub fn pending_from_count(
    conn: &Connection,
    from: &UserName,
    to: &UserName,
) -> Result<usize, StoreError> {
    let count: i64 = conn.query_row(
        "SELECT COUNT(*) FROM messages WHERE recipient = ?1 AND sender = ?2",
        [to.as_str(), from.as_str()],
        |row| row.get(0),
    )?;
    Ok(usize::try_from(count).unwrap_or(0))
}

/// How many messages for `to` await acknowledgement.
pub fn pending_count(conn: &Connection, to: &UserName) -> Result<usize, StoreError> {
    let count: i64 = conn.query_row(
        "SELECT COUNT(*) FROM messages WHERE recipient = ?1",
        [to.as_str()],
        |row| row.get(0),
    )?;
    Ok(usize::try_from(count).unwrap_or(0))
}

/// Deletes acknowledged messages addressed to `to`; returns how many went.
/// Ids of other users' messages are ignored.
pub fn ack_messages(
    conn: &mut Connection,
    to: &UserName,
    ids: &[MessageId],
) -> Result<usize, StoreError> {
    let tx = conn.transaction()?;
    let mut deleted = 0;
    {
        let mut stmt =
            tx.prepare_cached("DELETE FROM messages WHERE id = ?1 AND recipient = ?2")?;
        for id in ids {
            deleted += stmt.execute(params![id.0, to.as_str()])?;
        }
    }
    tx.commit()?;
    Ok(deleted)
}

/// Records a finished call.
pub fn record_call(conn: &Connection, call: &CallRecord) -> Result<(), StoreError> {
    conn.execute(
        "INSERT OR REPLACE INTO calls (id, caller, callee, created, answered, ended, end_reason)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            call.call_id.0,
            call.caller.as_str(),
            call.callee.as_str(),
            call.created,
            call.answered,
            call.ended,
            call.end_reason.as_str(),
        ],
    )?;
    Ok(())
}

/// A user's most recent calls, as caller or callee, newest first.
pub fn history(
    conn: &Connection,
    user: &UserName,
    limit: u32,
) -> Result<Vec<CallRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, caller, callee, created, answered, ended, end_reason FROM calls
         WHERE caller = ?1 OR callee = ?1 ORDER BY id DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![user.as_str(), limit], |row| {
        Ok((
            row.get::<_, u64>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, u64>(3)?,
            row.get::<_, Option<u64>>(4)?,
            row.get::<_, u64>(5)?,
            row.get::<_, String>(6)?,
        ))
    })?;
    rows.map(|row| {
        let (id, caller, callee, created, answered, ended, reason) = row?;
        let bad = |column| StoreError::BadRow {
            table: "calls",
            column,
        };
        Ok(CallRecord {
            call_id: CallId(id),
            caller: UserName::parse(&caller).map_err(|_| bad("caller"))?,
            callee: UserName::parse(&callee).map_err(|_| bad("callee"))?,
            created,
            answered,
            ended,
            end_reason: EndReason::parse(&reason).ok_or_else(|| bad("end_reason"))?,
        })
    })
    .collect()
}

/// The id the next call should get: one past the highest recorded.
pub fn next_call_id(conn: &Connection) -> Result<u64, StoreError> {
    let max: Option<u64> = conn.query_row("SELECT MAX(id) FROM calls", [], |row| row.get(0))?;
    Ok(max.unwrap_or(0) + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> UserName {
        UserName::parse(name).unwrap()
    }

    fn temp_db() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn = open(&dir.path().join("t.db")).unwrap();
        (dir, conn)
    }

    #[test]
    fn a_name_can_be_registered_once() {
        let (_dir, conn) = temp_db();
        assert!(create_user(&conn, &user("alice"), "h1", 1).unwrap());
        assert!(!create_user(&conn, &user("alice"), "h2", 2).unwrap());
        assert_eq!(
            password_hash(&conn, &user("alice")).unwrap().as_deref(),
            Some("h1")
        );
        assert!(!user_exists(&conn, &user("bob")).unwrap());
    }

    #[test]
    fn messages_stay_until_their_recipient_acks_them() {
        let (_dir, mut conn) = temp_db();
        let (alice, bob) = (user("alice"), user("bob"));
        let first = store_message(&conn, &alice, &bob, "hi", 10).unwrap();
        let second = store_message(&conn, &alice, &bob, "there", 11).unwrap();
        assert_eq!(
            ack_messages(&mut conn, &alice, &[first]).unwrap(),
            0,
            "not alice's to ack"
        );
        assert_eq!(pending_count(&conn, &bob).unwrap(), 2);
        assert_eq!(ack_messages(&mut conn, &bob, &[first]).unwrap(), 1);
        let pending = pending_messages(&conn, &bob).unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(
            (pending[0].message_id, pending[0].text.as_str()),
            (second, "there")
        );
    }

    #[test]
    fn mailboxes_are_read_in_pages_and_counted_per_sender() {
        let (_dir, conn) = temp_db();
        let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
        for i in 0..5 {
            store_message(&conn, &alice, &bob, &format!("a{i}"), i).unwrap();
        }
        store_message(&conn, &carol, &bob, "c", 9).unwrap();
        assert_eq!(pending_from_count(&conn, &alice, &bob).unwrap(), 5);
        assert_eq!(pending_from_count(&conn, &carol, &bob).unwrap(), 1);
        assert_eq!(pending_from_count(&conn, &bob, &alice).unwrap(), 0);
        let first = pending_messages_page(&conn, &bob, None, 4).unwrap();
        assert_eq!(first.len(), 4);
        let rest = pending_messages_page(&conn, &bob, Some(first[3].message_id), 4).unwrap();
        let texts: Vec<_> = rest.iter().map(|m| m.text.as_str()).collect();
        assert_eq!(texts, ["a4", "c"]);
    }

    #[test]
    fn a_version_1_database_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(SCHEMA).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            store_message(&conn, &user("alice"), &user("bob"), "kept", 1).unwrap();
        }
        let conn = open(&path).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        assert_eq!(
            pending_from_count(&conn, &user("alice"), &user("bob")).unwrap(),
            1
        );
    }

    #[test]
    fn messages_survive_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let id = {
            let conn = open(&path).unwrap();
            store_message(&conn, &user("alice"), &user("bob"), "later", 5).unwrap()
        };
        let conn = open(&path).unwrap();
        assert_eq!(
            pending_messages(&conn, &user("bob")).unwrap()[0].message_id,
            id
        );
    }

    #[test]
    fn history_lists_both_roles_newest_first() {
        let (_dir, conn) = temp_db();
        let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
        let record = |id, caller: &UserName, callee: &UserName, reason| CallRecord {
            call_id: CallId(id),
            caller: caller.clone(),
            callee: callee.clone(),
            created: id * 10,
            answered: None,
            ended: id * 10 + 5,
            end_reason: reason,
        };
        record_call(&conn, &record(1, &alice, &bob, EndReason::Missed)).unwrap();
        record_call(&conn, &record(2, &carol, &alice, EndReason::Rejected)).unwrap();
        record_call(&conn, &record(3, &bob, &carol, EndReason::Hangup)).unwrap();
        let calls = history(&conn, &alice, 10).unwrap();
        assert_eq!(
            calls.iter().map(|c| c.call_id.0).collect::<Vec<_>>(),
            vec![2, 1]
        );
        assert_eq!(calls[1].end_reason, EndReason::Missed);
        assert_eq!(history(&conn, &alice, 1).unwrap().len(), 1);
        assert_eq!(next_call_id(&conn).unwrap(), 4);
    }
}
