//! The handler's side of files left for offline users (see [`crate::files`]): the one
//! upload a connection may have in progress, its disk writes, downloads and `file-done`.

use std::io;
use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use tokio::fs;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tracing::{debug, info, warn};

use super::{Handler, err, unix_ms};
use crate::connection::ConnectionError;
use crate::files::{self, FileStats, Refusal, Refused, Step, Upload, UploadError};
use crate::hub::Command;
use crate::pii::Pii;
use crate::proto::{
    Empty, ErrorCode, Event, FileChunk, FileChunkOk, FileData, FileDone, FileGet, FileId, FileMeta,
    FileOffer, FilePut, FilePutOk, FileStored, ServerError, UserName,
};

/// The upload a connection has in progress.
pub(super) struct ActiveUpload {
    id: FileId,
    to: UserName,
    meta: FileMeta,
    machine: Upload,
    file: fs::File,
    path: PathBuf,
}

impl Handler {
    fn file_stats(&self) -> &FileStats {
        &self.shared.config.counters.files
    }

    /// `file-put`: checks the size and quotas, reserves the row, opens the part file.
    pub(super) async fn file_put(
        &mut self,
        from: &UserName,
        put: FilePut,
    ) -> Result<FilePutOk, ServerError> {
        let stats = &self.shared.config.counters.files;
        if self.upload.is_some() {
            stats.refuse(Refused::BadRequest);
            let why = "an upload is in progress on this connection; finish it first";
            return Err(err(ErrorCode::BadRequest, why));
        }
        let Ok(to) = UserName::parse(&put.to) else {
            stats.refuse(Refused::BadRequest);
            return Err(err(ErrorCode::UnknownUser, format!("no user {:?}", put.to)));
        };
        let limits = self.shared.config.file_limits;
        let (sender, recipient, meta) = (from.clone(), to.clone(), put.file.clone());
        let now_ms = unix_ms();
        let reserved = self
            .db(move |c| files::reserve(c, &sender, &recipient, &meta, now_ms, &limits))
            .await?;
        let id = match reserved {
            Ok(id) => id,
            Err(refusal) => return Err(self.refused(refusal, &to, put.file.size)),
        };
        let path = files::part_path(&self.shared.config.files_dir(), id);
        let opened = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await;
        let file = match opened {
            Ok(file) => file,
            Err(e) => {
                self.db(move |c| files::remove(c, id)).await?;
                return Err(self.io_refusal(&e));
            }
        };
        debug!(upload = %id, to = %Pii(&to), size = put.file.size, "upload started");
        self.upload = Some(ActiveUpload {
            id,
            to,
            meta: put.file.clone(),
            machine: Upload::new(
                put.file.size,
                put.file.sha256,
                self.shared.config.chunk_bytes(),
            ),
            file,
            path,
        });
        Ok(FilePutOk {
            upload_id: id,
            chunk_bytes: self.shared.config.chunk_bytes(),
        })
    }

    /// `file-chunk`: admits the bytes, writes them, and stores the file once complete.
    /// Any refusal removes the upload.
    pub(super) async fn file_chunk(
        &mut self,
        from: &UserName,
        chunk: FileChunk,
    ) -> Result<FileChunkOk, ServerError> {
        let Some(upload) = self.upload.as_mut().filter(|u| u.id == chunk.upload_id) else {
            self.file_stats().refuse(Refused::BadRequest);
            let why = format!("no upload {} in progress here", chunk.upload_id);
            return Err(err(ErrorCode::NoSuchFile, why));
        };
        let data = match BASE64.decode(chunk.data.as_bytes()) {
            Ok(data) => data,
            Err(e) => {
                let why = format!("data is not base64: {e}");
                return Err(self
                    .abandon(Refused::BadRequest, ErrorCode::BadRequest, why)
                    .await);
            }
        };
        let step = match upload.machine.handle_chunk(chunk.offset, &data) {
            Ok(step) => step,
            Err(e @ UploadError::HashMismatch { .. }) => {
                let code = ErrorCode::HashMismatch;
                return Err(self
                    .abandon(Refused::HashMismatch, code, e.to_string())
                    .await);
            }
            Err(e) => {
                let code = ErrorCode::BadRequest;
                return Err(self.abandon(Refused::BadRequest, code, e.to_string()).await);
            }
        };
        if let Err(e) = upload.file.write_all(&data).await {
            let refusal = self.io_refusal(&e);
            let why = if refusal.code == ErrorCode::StorageFull {
                Refused::StorageFull
            } else {
                Refused::BadRequest
            };
            return Err(self.abandon(why, refusal.code, refusal.message).await);
        }
        match step {
            Step::More(received) => Ok(FileChunkOk {
                received,
                stored: None,
            }),
            Step::Complete => self.complete(from).await,
        }
    }

    /// The last chunk is in and verified: sync, rename, mark stored, tell the recipient.
    async fn complete(&mut self, from: &UserName) -> Result<FileChunkOk, ServerError> {
        let Some(upload) = self.upload.take() else {
            return Err(err(ErrorCode::NoSuchFile, "no upload in progress"));
        };
        let synced = upload.file.sync_all().await;
        drop(upload.file);
        let stored = files::stored_path(&self.shared.config.files_dir(), upload.id);
        if let Err(e) = synced.and(fs::rename(&upload.path, &stored).await) {
            let _ = fs::remove_file(&upload.path).await;
            let id = upload.id;
            let _ = self.db(move |c| files::remove(c, id)).await;
            let refusal = self.io_refusal(&e);
            self.file_stats().refuse(Refused::StorageFull);
            return Err(refusal);
        }
        let (id, size) = (upload.id, upload.machine.size());
        let sent_at = unix_ms();
        let expires_at = sent_at.saturating_add(
            u64::try_from(self.shared.config.file_limits.ttl.as_millis()).unwrap_or(u64::MAX),
        );
        let marked = self
            .db(move |c| files::mark_stored(c, id, expires_at))
            .await?;
        if !marked {
            let _ = fs::remove_file(&stored).await;
            return Err(err(
                ErrorCode::NoSuchFile,
                "the upload expired before it ended",
            ));
        }
        let stats = self.file_stats();
        FileStats::add(&stats.stored, 1);
        FileStats::add(&stats.stored_bytes, size);
        info!(file = %id, to = %Pii(&upload.to), size, "file stored");
        let offer = FileOffer {
            file_id: id,
            from: from.clone(),
            file: upload.meta,
            sent_at,
            expires_at,
        };
        let to = upload.to;
        let delivered = self
            .hub(|reply| Command::Deliver {
                to,
                event: Event::File(offer),
                reply,
            })
            .await?;
        Ok(FileChunkOk {
            received: size,
            stored: Some(FileStored {
                file_id: id,
                expires_at,
                delivered,
            }),
        })
    }

    /// Removes the upload in progress (its part file and its row), counts why, and
    /// returns the error to send.
    pub(super) async fn abandon(
        &mut self,
        why: Refused,
        code: ErrorCode,
        message: String,
    ) -> ServerError {
        if let Some(upload) = self.upload.take() {
            drop(upload.file);
            if let Err(e) = fs::remove_file(&upload.path).await {
                warn!(error = %e, "removing a refused upload");
            }
            let id = upload.id;
            let _ = self.db(move |c| files::remove(c, id)).await;
            debug!(upload = %id, reason = why.as_str(), "upload removed");
        }
        self.file_stats().refuse(why);
        err(code, message)
    }

    /// `file-get`: up to a chunk of a file stored for `user`, from `offset`.
    pub(super) async fn file_get(
        &self,
        user: &UserName,
        get: FileGet,
    ) -> Result<FileData, ServerError> {
        let (id, name) = (get.file_id, user.clone());
        let now_ms = unix_ms();
        let size = self
            .db(move |c| files::stored_size(c, id, &name, now_ms))
            .await?
            .ok_or_else(|| no_such_file(id))?;
        if get.offset > size {
            let why = format!("offset {} is past the end ({size} bytes)", get.offset);
            return Err(err(ErrorCode::BadRequest, why));
        }
        let want = (size - get.offset).min(self.shared.config.chunk_bytes() as u64);
        let path = files::stored_path(&self.shared.config.files_dir(), id);
        let read = async {
            let mut file = fs::File::open(&path).await?;
            file.seek(io::SeekFrom::Start(get.offset)).await?;
            let mut data = vec![0u8; usize::try_from(want).unwrap_or(0)];
            file.read_exact(&mut data).await?;
            Ok::<_, io::Error>(data)
        };
        let data = read.await.map_err(|e| {
            warn!(file = %id, error = %e, "reading a stored file");
            no_such_file(id)
        })?;
        Ok(FileData {
            offset: get.offset,
            data: BASE64.encode(data),
        })
    }

    /// `file-done`: the recipient took or declined the file; it is deleted.
    pub(super) async fn file_done(
        &self,
        user: &UserName,
        done: FileDone,
    ) -> Result<Empty, ServerError> {
        let (id, name) = (done.file_id, user.clone());
        let size = self
            .db(move |c| files::take(c, id, &name))
            .await?
            .ok_or_else(|| no_such_file(id))?;
        let path = files::stored_path(&self.shared.config.files_dir(), id);
        if let Err(e) = fs::remove_file(&path).await {
            warn!(file = %id, error = %e, "removing a delivered file");
        }
        let stats = self.file_stats();
        if done.received {
            FileStats::add(&stats.delivered, 1);
            FileStats::add(&stats.delivered_bytes, size);
        } else {
            FileStats::add(&stats.declined, 1);
        }
        Ok(Empty {})
    }

    /// After `login` (and its stored messages): a `file` event per file waiting.
    pub(super) async fn deliver_pending_files(&mut self) -> Result<(), ConnectionError> {
        let Some(user) = self.user.clone() else {
            return Ok(());
        };
        let now_ms = unix_ms();
        let Ok(offers) = self.db(move |c| files::pending(c, &user, now_ms)).await else {
            return Ok(());
        };
        for offer in offers {
            self.write(&Event::File(offer).encode()).await?;
        }
        Ok(())
    }

    fn refused(&self, refusal: Refusal, to: &UserName, size: u64) -> ServerError {
        let limits = self.shared.config.file_limits;
        let stats = self.file_stats();
        let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
        let (why, code, message) = match refusal {
            Refusal::UnknownUser => (
                Refused::BadRequest,
                ErrorCode::UnknownUser,
                format!("no user {to}"),
            ),
            Refusal::TooLarge => (
                Refused::TooLarge,
                ErrorCode::TooLarge,
                format!(
                    "the file is {size} bytes; the server keeps files of at most {} bytes \
                     ({:.1} MiB)",
                    limits.max_file,
                    mib(limits.max_file)
                ),
            ),
            Refusal::SenderFull => (
                Refused::Quota,
                ErrorCode::MailboxFull,
                format!(
                    "{to} already has {:.1} MiB of files from you waiting; wait for them to \
                     take some",
                    mib(limits.per_sender)
                ),
            ),
            Refusal::RecipientFull => (
                Refused::Quota,
                ErrorCode::MailboxFull,
                format!("{to} has no room left for files on the server; wait for them to log in"),
            ),
            Refusal::StoreFull => (
                Refused::StorageFull,
                ErrorCode::StorageFull,
                "the server has no room for more files now".to_owned(),
            ),
        };
        stats.refuse(why);
        err(code, message)
    }

    /// A failed write: a full disk says so, anything else is the server's fault.
    fn io_refusal(&self, e: &io::Error) -> ServerError {
        if e.kind() == io::ErrorKind::StorageFull || e.kind() == io::ErrorKind::QuotaExceeded {
            return err(
                ErrorCode::StorageFull,
                "the server's disk is full; the upload was removed",
            );
        }
        warn!(error = %e, "file store");
        err(ErrorCode::Internal, "the server could not store the file")
    }
}

fn no_such_file(id: FileId) -> ServerError {
    err(
        ErrorCode::NoSuchFile,
        format!("no file {id} for you (delivered, declined or expired)"),
    )
}
