//! Files left on the server for a user who is offline.
//!
//! The sender announces the file (`file-put`: recipient, name, size, SHA-256); the
//! server checks the size limit and the quotas and reserves a row (state `uploading`)
//! in one database job, so two uploads cannot both squeeze under a quota. The bytes
//! follow in order as `file-chunk`s over the same TLS connection and go to
//! `<db>.files/<id>.part`; the chunk that completes the file has its SHA-256 checked,
//! the file is renamed to `<id>` and its row becomes `stored` with an expiry. The
//! recipient gets a `file` event (at once if online, else after the next `login`),
//! reads it with `file-get` and ends it with `file-done`, which deletes it; the sweep
//! deletes what nobody took by its expiry. A refused or abandoned upload is removed.
//!
//! Why over the signaling connection rather than a QUIC connection to the server: the
//! upload rides on a session that is already authenticated, encrypted (TLS) and rate
//! limited, through the one port clients already reach; the server grows no second
//! listener, certificate or handshake. The cost, base64 (a third more bytes) and one
//! JSON line per 32 KiB, is small next to the 25 MiB limit.
//!
//! [`Upload`] is the sans-IO part (order, bounds and the running SHA-256 of one
//! upload), fuzzed; the SQL is plain functions like [`crate::store`]'s; the handler does
//! the disk writes.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};

use crate::proto::{FileId, FileMeta, FileOffer, Sha256Digest, UserName};
use crate::store::StoreError;

/// Where the stored files of the database at `db` live: `<db>.files/`.
pub fn dir_for(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".files");
    PathBuf::from(name)
}

/// The file an upload writes.
pub fn part_path(dir: &Path, id: FileId) -> PathBuf {
    dir.join(format!("{id}.part"))
}

/// A stored file.
pub fn stored_path(dir: &Path, id: FileId) -> PathBuf {
    dir.join(id.to_string())
}

/// What `file-put` may claim: size limit and quotas, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest file.
    pub max_file: u64,
    /// Bytes stored (or being uploaded) for one recipient, from everyone.
    pub per_recipient: u64,
    /// Files stored (or being uploaded) for one recipient, from everyone.
    pub per_recipient_files: u64,
    /// Bytes stored for one recipient from one sender: no stranger fills a mailbox.
    pub per_sender: u64,
    /// Bytes stored on the server in all.
    pub total: u64,
    /// How long a stored file waits for its recipient.
    pub ttl: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            // A few photos or a document; larger belongs in a live transfer.
            max_file: 25 << 20,
            // Four files at the limit waiting for one person.
            per_recipient: 100 << 20,
            // Bounds the `file` events a login sends, whatever their size.
            per_recipient_files: 1000,
            // Half a mailbox: one sender cannot fill it alone.
            per_sender: 50 << 20,
            // What a small server's disk can spare.
            total: 10 << 30,
            // A week away.
            ttl: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Why `file-put` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No such recipient.
    UnknownUser,
    /// Over the size limit.
    TooLarge,
    /// The recipient's quota (bytes or files) is used up.
    RecipientFull,
    /// This sender's share of the recipient's quota is used up.
    SenderFull,
    /// The server's store is at its limit.
    StoreFull,
}

/// A chunk that breaks the upload: the upload is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UploadError {
    /// Not the next bytes.
    #[error("chunk at offset {got}, expected {expected}: chunks go in order")]
    Offset {
        /// Bytes received so far.
        expected: u64,
        /// The chunk's offset.
        got: u64,
    },
    /// More bytes than `file-put` announced.
    #[error("chunk ends at {end}, past the announced size {size}")]
    PastEnd {
        /// Where the chunk would end.
        end: u64,
        /// The announced size.
        size: u64,
    },
    /// Over the chunk limit.
    #[error("chunk of {len} bytes; at most {max}")]
    ChunkTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An empty chunk that does not complete an empty file.
    #[error("empty chunk")]
    Empty,
    /// The whole file is in, and its SHA-256 is not the announced one.
    #[error("the file's SHA-256 is {got}, not the announced {expected}")]
    HashMismatch {
        /// Announced.
        expected: Sha256Digest,
        /// Received.
        got: Sha256Digest,
    },
}

/// What a chunk did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Bytes received so far; more to come.
    More(u64),
    /// The file is complete and its SHA-256 matches.
    Complete,
}

/// One upload's order, bounds and running SHA-256. Sans-IO: the caller writes the bytes
/// a chunk brought once [`Upload::handle_chunk`] admitted them.
#[derive(Clone)]
pub struct Upload {
    size: u64,
    expected: Sha256Digest,
    received: u64,
    max_chunk: usize,
    hasher: Sha256,
}

impl Upload {
    /// An upload of `size` bytes with SHA-256 `expected`, in chunks of at most `max_chunk`.
    pub fn new(size: u64, expected: Sha256Digest, max_chunk: usize) -> Self {
        Self {
            size,
            expected,
            received: 0,
            max_chunk,
            hasher: Sha256::new(),
        }
    }

    /// Admits the bytes `data` at `offset`, or says why not. An error ends the upload.
    pub fn handle_chunk(&mut self, offset: u64, data: &[u8]) -> Result<Step, UploadError> {
        if offset != self.received {
            return Err(UploadError::Offset {
                expected: self.received,
                got: offset,
            });
        }
        if data.len() > self.max_chunk {
            return Err(UploadError::ChunkTooLarge {
                len: data.len(),
                max: self.max_chunk,
            });
        }
        let end = offset.saturating_add(data.len() as u64);
        if end > self.size {
            return Err(UploadError::PastEnd {
                end,
                size: self.size,
            });
        }
        if data.is_empty() && self.size != 0 {
            return Err(UploadError::Empty);
        }
        self.hasher.update(data);
        self.received = end;
        if end < self.size {
            return Ok(Step::More(end));
        }
        let got = Sha256Digest(self.hasher.clone().finalize().into());
        if got != self.expected {
            return Err(UploadError::HashMismatch {
                expected: self.expected,
                got,
            });
        }
        Ok(Step::Complete)
    }

    /// Bytes admitted so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The announced size.
    pub fn size(&self) -> u64 {
        self.size
    }
}

impl fmt::Debug for Upload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upload")
            .field("size", &self.size)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

/// Checks the size limit and the quotas, and reserves a row for the upload.
pub fn reserve(
    conn: &Connection,
    from: &UserName,
    to: &UserName,
    meta: &FileMeta,
    now_ms: u64,
    limits: &Limits,
) -> Result<Result<FileId, Refusal>, StoreError> {
    if meta.size > limits.max_file {
        return Ok(Err(Refusal::TooLarge));
    }
    if !crate::store::user_exists(conn, to)? {
        return Ok(Err(Refusal::UnknownUser));
    }
    let sum = |sql: &str, args: &[&dyn rusqlite::ToSql]| -> Result<(u64, u64), StoreError> {
        let (bytes, count): (i64, i64) =
            conn.query_row(sql, args, |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok((bytes.max(0) as u64, count.max(0) as u64))
    };
    let (pair, _) = sum(
        "SELECT COALESCE(SUM(size), 0), COUNT(*) FROM files WHERE recipient = ?1 AND sender = ?2",
        &[&to.as_str(), &from.as_str()],
    )?;
    if pair.saturating_add(meta.size) > limits.per_sender {
        return Ok(Err(Refusal::SenderFull));
    }
    let (theirs, count) = sum(
        "SELECT COALESCE(SUM(size), 0), COUNT(*) FROM files WHERE recipient = ?1",
        &[&to.as_str()],
    )?;
    if theirs.saturating_add(meta.size) > limits.per_recipient
        || count >= limits.per_recipient_files
    {
        return Ok(Err(Refusal::RecipientFull));
    }
    let (total, _) = sum("SELECT COALESCE(SUM(size), 0), COUNT(*) FROM files", &[])?;
    if total.saturating_add(meta.size) > limits.total {
        return Ok(Err(Refusal::StoreFull));
    }
    let json = serde_json::to_string(meta).expect("file descriptions serialize");
    let expires = now_ms.saturating_add(millis(limits.ttl));
    conn.execute(
        "INSERT INTO files (sender, recipient, meta, size, state, created, expires_at)
         VALUES (?1, ?2, ?3, ?4, 'uploading', ?5, ?6)",
        params![from.as_str(), to.as_str(), json, meta.size, now_ms, expires],
    )?;
    let id = u64::try_from(conn.last_insert_rowid()).map_err(|_| bad("id"))?;
    Ok(Ok(FileId(id)))
}

/// Marks a completed upload stored until `expires_at`; `false` if its row is gone (it
/// expired meanwhile).
pub fn mark_stored(conn: &Connection, id: FileId, expires_at: u64) -> Result<bool, StoreError> {
    let n = conn.execute(
        "UPDATE files SET state = 'stored', expires_at = ?2 WHERE id = ?1 AND state = 'uploading'",
        params![id.0, expires_at],
    )?;
    Ok(n == 1)
}

/// Deletes a file's row; `false` if there was none.
pub fn remove(conn: &Connection, id: FileId) -> Result<bool, StoreError> {
    Ok(conn.execute("DELETE FROM files WHERE id = ?1", [id.0])? == 1)
}

/// Deletes the row of a file stored for `to`; its size, or `None` if it is not theirs.
pub fn take(conn: &Connection, id: FileId, to: &UserName) -> Result<Option<u64>, StoreError> {
    let size = stored_size(conn, id, to, 0)?;
    if size.is_some() {
        remove(conn, id)?;
    }
    Ok(size)
}

/// The size of a file stored for `to` that has not expired at `now_ms`.
pub fn stored_size(
    conn: &Connection,
    id: FileId,
    to: &UserName,
    now_ms: u64,
) -> Result<Option<u64>, StoreError> {
    let size = conn
        .query_row(
            "SELECT size FROM files WHERE id = ?1 AND recipient = ?2 AND state = 'stored'
             AND expires_at > ?3",
            params![id.0, to.as_str(), now_ms],
            |r| r.get::<_, u64>(0),
        )
        .optional()?;
    Ok(size)
}

/// How many files wait for `to` at `now_ms`.
pub fn pending_count(conn: &Connection, to: &UserName, now_ms: u64) -> Result<usize, StoreError> {
    let n: i64 = conn.query_row(
        "SELECT COUNT(*) FROM files WHERE recipient = ?1 AND state = 'stored' AND expires_at > ?2",
        params![to.as_str(), now_ms],
        |r| r.get(0),
    )?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// The files waiting for `to` at `now_ms`, oldest first.
pub fn pending(
    conn: &Connection,
    to: &UserName,
    now_ms: u64,
) -> Result<Vec<FileOffer>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, sender, meta, created, expires_at FROM files
         WHERE recipient = ?1 AND state = 'stored' AND expires_at > ?2 ORDER BY id",
    )?;
    let rows = stmt.query_map(params![to.as_str(), now_ms], |r| {
        Ok((
            r.get::<_, u64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, u64>(3)?,
            r.get::<_, u64>(4)?,
        ))
    })?;
    rows.map(|row| {
        let (id, from, meta, sent_at, expires_at) = row?;
        Ok(FileOffer {
            file_id: FileId(id),
            from: UserName::parse(&from).map_err(|_| bad("sender"))?,
            file: serde_json::from_str(&meta).map_err(|_| bad("meta"))?,
            sent_at,
            expires_at,
        })
    })
    .collect()
}

/// Deletes the rows that expired by `now_ms` (stored or still uploading); their ids and
/// sizes, for the caller to remove from disk.
pub fn expire(conn: &mut Connection, now_ms: u64) -> Result<Vec<(FileId, u64)>, StoreError> {
    let tx = conn.transaction()?;
    let gone = {
        let mut stmt = tx.prepare_cached("SELECT id, size FROM files WHERE expires_at <= ?1")?;
        let rows = stmt.query_map([now_ms], |r| Ok((FileId(r.get(0)?), r.get::<_, u64>(1)?)))?;
        rows.collect::<Result<Vec<_>, _>>()?
    };
    tx.execute("DELETE FROM files WHERE expires_at <= ?1", [now_ms])?;
    tx.commit()?;
    Ok(gone)
}

/// At start: deletes the rows of uploads a previous run never finished; the ids of every
/// row left, so files on disk without one can go too.
pub fn recover(conn: &Connection) -> Result<Vec<FileId>, StoreError> {
    conn.execute("DELETE FROM files WHERE state = 'uploading'", [])?;
    let mut stmt = conn.prepare("SELECT id FROM files")?;
    let rows = stmt.query_map([], |r| Ok(FileId(r.get(0)?)))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Removes from `dir` every file that is not the stored file of one of `keep`.
pub fn remove_orphans(dir: &Path, keep: &[FileId]) -> std::io::Result<usize> {
    let keep: std::collections::HashSet<String> = keep.iter().map(|id| id.to_string()).collect();
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if !keep.contains(name.to_string_lossy().as_ref()) && entry.file_type()?.is_file() {
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

fn bad(column: &'static str) -> StoreError {
    StoreError::BadRow {
        table: "files",
        column,
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Why files were refused or removed, for [`FileStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Over the size limit.
    TooLarge,
    /// A recipient's or a sender's quota.
    Quota,
    /// The server's store at its limit, or a full disk.
    StorageFull,
    /// A bad name, digest, recipient, chunk or base64.
    BadRequest,
    /// The bytes did not match the SHA-256.
    HashMismatch,
    /// The sender's connection ended mid-upload.
    Abandoned,
}

impl Refused {
    /// Every reason, in the order of [`FileStats`]'s counters.
    pub const ALL: [Self; 6] = [
        Self::TooLarge,
        Self::Quota,
        Self::StorageFull,
        Self::BadRequest,
        Self::HashMismatch,
        Self::Abandoned,
    ];

    /// The reason's label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TooLarge => "too-large",
            Self::Quota => "quota",
            Self::StorageFull => "storage-full",
            Self::BadRequest => "bad-request",
            Self::HashMismatch => "hash-mismatch",
            Self::Abandoned => "abandoned",
        }
    }
}

/// What happened to files left on the server, counted per server ([`crate::config::Counters`])
/// and exported as Prometheus metrics.
#[derive(Debug, Default)]
pub struct FileStats {
    pub(crate) stored: AtomicU64,
    pub(crate) stored_bytes: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) delivered_bytes: AtomicU64,
    pub(crate) declined: AtomicU64,
    pub(crate) expired: AtomicU64,
    pub(crate) expired_bytes: AtomicU64,
    refused: [AtomicU64; Refused::ALL.len()],
}

impl FileStats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn refuse(&self, why: Refused) {
        if let Some(i) = Refused::ALL.iter().position(|r| *r == why) {
            Self::add(&self.refused[i], 1);
        }
    }

    /// Files stored (complete and verified).
    pub fn stored(&self) -> u64 {
        self.stored.load(Ordering::Relaxed)
    }

    /// Files their recipient took.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Files their recipient declined.
    pub fn declined(&self) -> u64 {
        self.declined.load(Ordering::Relaxed)
    }

    /// Files (or uploads) deleted at their expiry.
    pub fn expired(&self) -> u64 {
        self.expired.load(Ordering::Relaxed)
    }

    /// Uploads refused or removed for `why`.
    pub fn refused(&self, why: Refused) -> u64 {
        Refused::ALL
            .iter()
            .position(|r| *r == why)
            .map_or(0, |i| self.refused[i].load(Ordering::Relaxed))
    }

    /// The Prometheus text of these counters.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        for (name, help, value) in [
            (
                "magpie_files_stored_total",
                "Files left for offline users, stored.",
                &self.stored,
            ),
            (
                "magpie_file_bytes_stored_total",
                "Bytes of files stored.",
                &self.stored_bytes,
            ),
            (
                "magpie_files_delivered_total",
                "Stored files their recipient took.",
                &self.delivered,
            ),
            (
                "magpie_file_bytes_delivered_total",
                "Bytes of files delivered.",
                &self.delivered_bytes,
            ),
            (
                "magpie_files_declined_total",
                "Stored files their recipient declined.",
                &self.declined,
            ),
            (
                "magpie_files_expired_total",
                "Files deleted at their expiry.",
                &self.expired,
            ),
            (
                "magpie_file_bytes_expired_total",
                "Bytes of files deleted at expiry.",
                &self.expired_bytes,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                get(value)
            );
        }
        let name = "magpie_files_refused_total";
        let _ = writeln!(
            out,
            "# HELP {name} Uploads refused or removed, by reason.\n# TYPE {name} counter"
        );
        for (why, count) in Refused::ALL.iter().zip(&self.refused) {
            let _ = writeln!(out, "{name}{{reason=\"{}\"}} {}", why.as_str(), get(count));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::FileName;

    fn digest(bytes: &[u8]) -> Sha256Digest {
        Sha256Digest(Sha256::digest(bytes).into())
    }

    fn user(name: &str) -> UserName {
        UserName::parse(name).unwrap()
    }

    fn meta(size: u64) -> FileMeta {
        FileMeta {
            name: FileName::parse("a.bin").unwrap(),
            size,
            sha256: Sha256Digest([0; 32]),
            image: None,
        }
    }

    #[test]
    fn an_upload_takes_chunks_in_order_and_checks_the_hash_at_the_end() {
        let bytes = b"hello, offline world";
        let mut up = Upload::new(bytes.len() as u64, digest(bytes), 8);
        assert_eq!(up.handle_chunk(0, &bytes[..8]), Ok(Step::More(8)));
        assert_eq!(
            up.handle_chunk(0, &bytes[..8]),
            Err(UploadError::Offset {
                expected: 8,
                got: 0
            })
        );
        assert!(matches!(
            up.handle_chunk(8, &bytes[8..]),
            Err(UploadError::ChunkTooLarge { .. })
        ));
        assert_eq!(up.handle_chunk(8, &bytes[8..16]), Ok(Step::More(16)));
        assert_eq!(up.handle_chunk(16, b""), Err(UploadError::Empty));
        assert!(matches!(
            up.handle_chunk(16, b"12345"),
            Err(UploadError::PastEnd { end: 21, size: 20 })
        ));
        assert_eq!(up.handle_chunk(16, &bytes[16..]), Ok(Step::Complete));
    }

    #[test]
    fn a_wrong_hash_or_an_empty_file_is_told_at_the_last_chunk() {
        let mut up = Upload::new(3, digest(b"abc"), 8);
        assert!(matches!(
            up.handle_chunk(0, b"abd"),
            Err(UploadError::HashMismatch { .. })
        ));
        let mut empty = Upload::new(0, digest(b""), 8);
        assert_eq!(empty.handle_chunk(0, b""), Ok(Step::Complete));
        let mut huge = Upload::new(u64::MAX, digest(b""), 8);
        assert!(matches!(
            huge.handle_chunk(u64::MAX, b"x"),
            Err(UploadError::Offset { .. })
        ));
    }

    #[test]
    fn quotas_count_uploads_in_progress_and_expiry_removes_rows() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = crate::store::open(&dir.path().join("t.db")).unwrap();
        let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
        for u in [&alice, &bob, &carol] {
            crate::store::create_user(&conn, u, "h", 0).unwrap();
        }
        let limits = Limits {
            max_file: 100,
            per_recipient: 250,
            per_recipient_files: 10,
            per_sender: 150,
            total: 1000,
            ttl: Duration::from_secs(10),
        };
        let put = |c: &Connection, from: &UserName, size| {
            reserve(c, from, &bob, &meta(size), 1000, &limits).unwrap()
        };
        assert_eq!(put(&conn, &alice, 101), Err(Refusal::TooLarge));
        let first = put(&conn, &alice, 100).unwrap();
        assert_eq!(put(&conn, &alice, 51), Err(Refusal::SenderFull));
        put(&conn, &carol, 100).unwrap();
        assert_eq!(put(&conn, &carol, 100), Err(Refusal::SenderFull));
        assert_eq!(put(&conn, &alice, 50), Ok(FileId(first.0 + 2)));
        assert_eq!(
            reserve(&conn, &alice, &user("nobody"), &meta(1), 1000, &limits).unwrap(),
            Err(Refusal::UnknownUser)
        );
        let dave = user("dave");
        crate::store::create_user(&conn, &dave, "h", 0).unwrap();
        assert_eq!(put(&conn, &dave, 1), Err(Refusal::RecipientFull));
        // Only stored files are offered, and only until they expire.
        assert_eq!(pending_count(&conn, &bob, 1000).unwrap(), 0);
        assert!(mark_stored(&conn, first, 5000).unwrap());
        assert_eq!(pending(&conn, &bob, 4999).unwrap()[0].file_id, first);
        assert_eq!(stored_size(&conn, first, &bob, 4999).unwrap(), Some(100));
        assert_eq!(stored_size(&conn, first, &alice, 4999).unwrap(), None);
        assert_eq!(pending_count(&conn, &bob, 5000).unwrap(), 0);
        let gone = expire(&mut conn, 5000).unwrap();
        assert_eq!(gone, vec![(first, 100)]);
        assert_eq!(recover(&conn).unwrap(), Vec::<FileId>::new());
    }

    #[test]
    fn orphans_are_removed_and_kept_files_stay() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(stored_path(dir.path(), FileId(1)), b"keep").unwrap();
        std::fs::write(part_path(dir.path(), FileId(2)), b"partial").unwrap();
        std::fs::write(stored_path(dir.path(), FileId(3)), b"orphan").unwrap();
        assert_eq!(remove_orphans(dir.path(), &[FileId(1)]).unwrap(), 2);
        assert!(stored_path(dir.path(), FileId(1)).exists());
        assert_eq!(
            dir_for(Path::new("/x/magpie.db")),
            Path::new("/x/magpie.db.files")
        );
    }
}
