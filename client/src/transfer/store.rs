//! The receiving side's folder: partial files that survive a broken transfer, and
//! finished files that never overwrite anything.
//!
//! A file being received is `NAME.part`, beside a small state file `NAME.part.state`
//! naming the content it is for (size and SHA-256). When the same content is offered
//! again, the transfer resumes at the partial file's length; a partial file for other
//! content is left alone and the new one gets `NAME (1).part`. When all bytes are in,
//! the whole file's SHA-256 is checked from disk and the partial file is linked to a
//! free name (`NAME`, else `NAME (1)`, `NAME (2)`, ...): linking fails rather than
//! replaces, so a file that appeared meanwhile is not overwritten either.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::proto::{FileInfo, SafeName, Sha256Digest};

/// How many `NAME (n)` variants are tried before giving up.
const MAX_VARIANTS: u32 = 1000;

/// A receiving folder's failure, said so a person can act on it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The folder or a file in it could not be used.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The disk is full: the partial file stays, to be resumed when there is room.
    #[error(
        "the disk is full writing {path} ({have} of {size} bytes kept): free some space and \
         have the sender send it again to resume"
    )]
    DiskFull {
        /// The partial file.
        path: PathBuf,
        /// Bytes kept.
        have: u64,
        /// The file's size.
        size: u64,
    },
    /// Every name variant is taken.
    #[error("no free name for {0} in the receiving folder")]
    NoFreeName(String),
    /// The received file's SHA-256 is not the offered one: removed.
    #[error("{name}: the SHA-256 of what arrived does not match the offer; removed")]
    HashMismatch {
        /// The file.
        name: String,
    },
    /// More bytes than the file has.
    #[error("{0}: more bytes than offered")]
    TooLong(String),
}

impl StoreError {
    fn io(path: &Path, source: io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// What a partial file is for: written beside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PartState {
    size: u64,
    sha256: Sha256Digest,
}

/// The folder files are received into.
#[derive(Debug, Clone)]
pub struct Inbox {
    dir: PathBuf,
}

impl Inbox {
    /// The folder `dir`, created if missing.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        Ok(Self { dir })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where `file` would be received: a partial file for the same content (to resume
    /// from its length) or a new one at a free `.part` name.
    pub fn prepare(&self, file: &FileInfo) -> Result<Incoming, StoreError> {
        let state = PartState {
            size: file.size,
            sha256: file.sha256,
        };
        for n in 0..MAX_VARIANTS {
            let name = variant(&file.name, n);
            let part = self.dir.join(format!("{name}.part"));
            let state_path = self.dir.join(format!("{name}.part.state"));
            match read_state(&state_path) {
                Some(found) if found == state => {
                    let have = match fs::metadata(&part) {
                        Ok(meta) => meta.len(),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
                        Err(e) => return Err(StoreError::io(&part, e)),
                    };
                    if have > file.size {
                        // Not ours after all: start it again.
                        remove_quietly(&part);
                        return Ok(Incoming::new(file, part, state_path, 0));
                    }
                    return Ok(Incoming::new(file, part, state_path, have));
                }
                Some(_) => continue,
                None if part.exists() => continue,
                None => {
                    let json = serde_json::to_vec(&state).expect("states serialize");
                    fs::write(&state_path, json).map_err(|e| StoreError::io(&state_path, e))?;
                    return Ok(Incoming::new(file, part, state_path, 0));
                }
            }
        }
        Err(StoreError::NoFreeName(file.name.to_string()))
    }

    /// The name a finished file would get now (the first free variant), for telling
    /// the person before they accept.
    pub fn free_name(&self, name: &SafeName) -> Option<String> {
        (0..MAX_VARIANTS)
            .map(|n| variant(name, n))
            .find(|v| !self.dir.join(v).exists())
    }
}

/// `NAME`, `NAME (1)`, `NAME (2)` ... with the number before the extension:
/// `photo (1).jpg`.
pub fn variant(name: &SafeName, n: u32) -> String {
    let name = name.as_str();
    if n == 0 {
        return name.to_owned();
    }
    match name.rfind('.').filter(|&dot| dot > 0) {
        Some(dot) => format!("{} ({n}){}", &name[..dot], &name[dot..]),
        None => format!("{name} ({n})"),
    }
}

fn read_state(path: &Path) -> Option<PartState> {
    let bytes = fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn remove_quietly(path: &Path) {
    if let Err(e) = fs::remove_file(path)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove");
    }
}

/// A file being received.
#[derive(Debug)]
pub struct Incoming {
    name: SafeName,
    size: u64,
    sha256: Sha256Digest,
    part: PathBuf,
    state: PathBuf,
    /// Bytes on disk before this transfer: the offset the sender starts from.
    resume_from: u64,
    written: u64,
    file: Option<File>,
}

impl Incoming {
    fn new(file: &FileInfo, part: PathBuf, state: PathBuf, have: u64) -> Self {
        Self {
            name: file.name.clone(),
            size: file.size,
            sha256: file.sha256,
            part,
            state,
            resume_from: have,
            written: have,
            file: None,
        }
    }

    /// The offset to ask the sender for.
    pub fn offset(&self) -> u64 {
        self.resume_from
    }

    /// Bytes on disk now.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The partial file.
    pub fn part_path(&self) -> &Path {
        &self.part
    }

    /// Appends bytes that arrived. A full disk keeps what was written and says so.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        if self.written + bytes.len() as u64 > self.size {
            return Err(StoreError::TooLong(self.name.to_string()));
        }
        if self.file.is_none() {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.part)
                .map_err(|e| StoreError::io(&self.part, e))?;
            // What is on disk is what we resume from: a partial file longer than the
            // offset we asked for (it grew meanwhile) is cut back.
            let len = file
                .metadata()
                .map_err(|e| StoreError::io(&self.part, e))?
                .len();
            if len != self.resume_from {
                file.set_len(self.resume_from)
                    .map_err(|e| StoreError::io(&self.part, e))?;
            }
            self.file = Some(file);
        }
        let file = self.file.as_mut().expect("opened above");
        if let Err(e) = file.write_all(bytes) {
            // A short write may have left part of `bytes`: the length on disk is what
            // the next attempt resumes from.
            self.written = fs::metadata(&self.part).map_or(self.written, |m| m.len());
            if e.kind() == io::ErrorKind::StorageFull || e.raw_os_error() == Some(28) {
                return Err(StoreError::DiskFull {
                    path: self.part.clone(),
                    have: self.written,
                    size: self.size,
                });
            }
            return Err(StoreError::io(&self.part, e));
        }
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Whether every byte is in.
    pub fn is_complete(&self) -> bool {
        self.written == self.size
    }

    /// Checks the whole file's SHA-256 from disk and moves it to a free name; returns
    /// that name. A mismatch removes the partial file (it cannot be resumed into a good
    /// one).
    pub fn finish(mut self, inbox: &Inbox) -> Result<PathBuf, StoreError> {
        if let Some(file) = self.file.take() {
            file.sync_all().map_err(|e| StoreError::io(&self.part, e))?;
        }
        if self.size == 0 && !self.part.exists() {
            File::create(&self.part).map_err(|e| StoreError::io(&self.part, e))?;
        }
        let digest = hash_file(&self.part).map_err(|e| StoreError::io(&self.part, e))?;
        if digest != self.sha256 {
            remove_quietly(&self.part);
            remove_quietly(&self.state);
            return Err(StoreError::HashMismatch {
                name: self.name.to_string(),
            });
        }
        for n in 0..MAX_VARIANTS {
            let target = inbox.dir.join(variant(&self.name, n));
            match fs::hard_link(&self.part, &target) {
                Ok(()) => {
                    remove_quietly(&self.part);
                    remove_quietly(&self.state);
                    return Ok(target);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(StoreError::io(&target, e)),
            }
        }
        Err(StoreError::NoFreeName(self.name.to_string()))
    }
}

/// The SHA-256 of a file's content.
pub fn hash_file(path: &Path) -> io::Result<Sha256Digest> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(Sha256Digest(hasher.finalize().into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, content: &[u8]) -> FileInfo {
        FileInfo {
            name: SafeName::parse(name).unwrap(),
            size: content.len() as u64,
            sha256: Sha256Digest(Sha256::digest(content).into()),
            image: None,
        }
    }

    #[test]
    fn variants_put_the_number_before_the_extension() {
        let name = |s| SafeName::parse(s).unwrap();
        assert_eq!(variant(&name("f.txt"), 0), "f.txt");
        assert_eq!(variant(&name("f.txt"), 1), "f (1).txt");
        assert_eq!(variant(&name("archive.tar.gz"), 2), "archive.tar (2).gz");
        assert_eq!(variant(&name("README"), 3), "README (3)");
        assert_eq!(variant(&name(".bashrc"), 1), ".bashrc (1)");
    }

    #[test]
    fn a_received_file_never_overwrites_one_already_there() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = Inbox::open(dir.path()).unwrap();
        fs::write(dir.path().join("f.txt"), b"mine").unwrap();
        let file = info("f.txt", b"theirs");
        assert_eq!(inbox.free_name(&file.name).unwrap(), "f (1).txt");
        let mut incoming = inbox.prepare(&file).unwrap();
        assert_eq!(incoming.offset(), 0);
        incoming.write(b"theirs").unwrap();
        let stored = incoming.finish(&inbox).unwrap();
        assert_eq!(stored, dir.path().join("f (1).txt"));
        assert_eq!(fs::read(dir.path().join("f.txt")).unwrap(), b"mine");
        assert_eq!(fs::read(&stored).unwrap(), b"theirs");
        assert!(!dir.path().join("f.txt.part").exists());
        assert!(!dir.path().join("f.txt.part.state").exists());
    }

    #[test]
    fn a_broken_transfer_resumes_from_what_is_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = Inbox::open(dir.path()).unwrap();
        let content: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let file = info("data.bin", &content);
        let mut first = inbox.prepare(&file).unwrap();
        first.write(&content[..3000]).unwrap();
        drop(first);
        let mut second = inbox.prepare(&file).unwrap();
        assert_eq!(second.offset(), 3000);
        second.write(&content[3000..]).unwrap();
        assert!(second.is_complete());
        let stored = second.finish(&inbox).unwrap();
        assert_eq!(fs::read(stored).unwrap(), content);
    }

    #[test]
    fn a_partial_file_for_other_content_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = Inbox::open(dir.path()).unwrap();
        let mut old = inbox.prepare(&info("a.txt", b"old content")).unwrap();
        old.write(b"old").unwrap();
        drop(old);
        let new = inbox.prepare(&info("a.txt", b"new content")).unwrap();
        assert_eq!(new.offset(), 0);
        assert_eq!(new.part_path(), dir.path().join("a (1).txt.part"));
        assert_eq!(fs::read(dir.path().join("a.txt.part")).unwrap(), b"old");
    }

    #[test]
    fn a_hash_mismatch_removes_the_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = Inbox::open(dir.path()).unwrap();
        let mut incoming = inbox.prepare(&info("x.bin", b"expected")).unwrap();
        incoming.write(b"tampered").unwrap();
        let part = incoming.part_path().to_owned();
        let err = incoming.finish(&inbox).unwrap_err();
        assert!(matches!(err, StoreError::HashMismatch { .. }), "{err}");
        assert!(!part.exists());
        assert!(!dir.path().join("x.bin").exists());
    }

    #[test]
    fn more_bytes_than_offered_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = Inbox::open(dir.path()).unwrap();
        let mut incoming = inbox.prepare(&info("s.bin", b"abc")).unwrap();
        assert!(matches!(
            incoming.write(b"abcd"),
            Err(StoreError::TooLong(_))
        ));
    }

    #[test]
    fn an_empty_file_is_received() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = Inbox::open(dir.path()).unwrap();
        let incoming = inbox.prepare(&info("empty", b"")).unwrap();
        assert!(incoming.is_complete());
        let stored = incoming.finish(&inbox).unwrap();
        assert_eq!(fs::read(stored).unwrap(), b"");
    }

    #[test]
    fn a_full_disk_keeps_the_partial_file_and_says_so() {
        // /dev/full fails every write with ENOSPC: link the partial file's name to it.
        if !Path::new("/dev/full").exists() {
            eprintln!("skipped: no /dev/full");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let inbox = Inbox::open(dir.path()).unwrap();
        let file = info("big.bin", &[1u8; 100]);
        let mut incoming = inbox.prepare(&file).unwrap();
        std::os::unix::fs::symlink("/dev/full", incoming.part_path()).unwrap();
        let err = incoming.write(&[1u8; 50]).unwrap_err();
        assert!(
            matches!(err, StoreError::DiskFull { size: 100, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("disk is full"), "{err}");
        assert!(incoming.part_path().exists(), "the partial file stays");
    }
}
