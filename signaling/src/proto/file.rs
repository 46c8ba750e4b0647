//! Files left on the server for a user who is offline: `file-put` and `file-chunk`
//! (the sender), the `file` event, `file-get` and `file-done` (the recipient).
//!
//! The file's description ([`FileMeta`]: a safe name, its size, its SHA-256 and, for an
//! image, its format and dimensions) is the one peer-to-peer transfers offer, so the
//! name rules ([`FileName`]) and the digest ([`Sha256Digest`]) live here, shared by the
//! server and the client. Chunk bytes travel as standard base64 in `data`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::UserName;

/// The longest file name, in bytes (most file systems' limit).
pub const MAX_FILE_NAME: usize = 255;

/// A stored file, numbered by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FileId(pub u64);

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Why a string is not a [`FileName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused file name {name:?}: {why}")]
pub struct InvalidFileName {
    /// The name, as sent (at most 80 characters of it).
    pub name: String,
    /// What is wrong with it.
    pub why: &'static str,
}

/// A file name that is safe to create inside a receiving folder: one path component,
/// not `.` or `..`, no separator (`/`, `\`), no control character, at most
/// [`MAX_FILE_NAME`] bytes, no leading or trailing white space, no bidirectional
/// override.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileName(String);

impl FileName {
    /// Parses and checks a name.
    pub fn parse(name: &str) -> Result<Self, InvalidFileName> {
        let refuse = |why| {
            Err(InvalidFileName {
                name: name.chars().take(80).collect(),
                why,
            })
        };
        if name.is_empty() {
            return refuse("empty");
        }
        if name.len() > MAX_FILE_NAME {
            return refuse("longer than 255 bytes");
        }
        if name.contains(['/', '\\']) {
            return refuse("contains a path separator");
        }
        if name == "." || name == ".." {
            return refuse("names a directory");
        }
        if name.chars().any(char::is_control) {
            return refuse("contains a control character");
        }
        if name.trim() != name {
            return refuse("starts or ends with white space");
        }
        // Bidirectional overrides can show `gpj.exe` as `exe.jpg`.
        if name
            .chars()
            .any(|c| matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'))
        {
            return refuse("contains a bidirectional text override");
        }
        Ok(Self(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for FileName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for FileName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A string that is not 64 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a SHA-256 is 64 hex digits")]
pub struct InvalidDigest;

/// A SHA-256 digest, as 64 lower-case hex digits on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256Digest(pub [u8; 32]);

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256({self})")
    }
}

impl FromStr for Sha256Digest {
    type Err = InvalidDigest;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits = s.as_bytes();
        if digits.len() != 64 {
            return Err(InvalidDigest);
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
            let nibble = |c: u8| (c as char).to_digit(16).ok_or(InvalidDigest);
            *byte = (nibble(pair[0])? << 4 | nibble(pair[1])?) as u8;
        }
        Ok(Self(out))
    }
}

impl Serialize for Sha256Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Sha256Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An image's format and size, read from its header by the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// `png`, `jpeg` or `gif`.
    pub format: ImageFormat,
    /// Pixels.
    pub width: u32,
    /// Pixels.
    pub height: u32,
}

/// The image formats whose dimensions are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    /// PNG.
    Png,
    /// JPEG.
    Jpeg,
    /// GIF.
    Gif,
}

impl ImageFormat {
    /// The format's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Png => "png",
            Self::Jpeg => "jpeg",
            Self::Gif => "gif",
        }
    }
}

/// What describes a file: in a peer-to-peer offer, in `file-put`, in the `file` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta {
    /// Its name, without any directory.
    pub name: FileName,
    /// Its size in bytes.
    pub size: u64,
    /// The SHA-256 of its content.
    pub sha256: Sha256Digest,
    /// Present for a PNG, JPEG or GIF.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageInfo>,
}

/// `file-put` fields: the sender leaves `file` for `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePut {
    /// The recipient.
    pub to: String,
    /// The file.
    pub file: FileMeta,
}

/// The `ok` reply to `file-put`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePutOk {
    /// Name the upload in `file-chunk`.
    pub upload_id: FileId,
    /// The most bytes one `file-chunk` may carry.
    pub chunk_bytes: usize,
}

/// `file-chunk` fields: the next bytes of the upload, in order.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileChunk {
    /// From `file-put`.
    pub upload_id: FileId,
    /// Where `data` starts: the bytes received so far.
    pub offset: u64,
    /// The bytes, standard base64.
    pub data: String,
}

impl fmt::Debug for FileChunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            upload_id,
            offset,
            data,
        } = self;
        f.debug_struct("FileChunk")
            .field("upload_id", upload_id)
            .field("offset", offset)
            .field("data_len", &data.len())
            .finish()
    }
}

/// The `ok` reply to `file-chunk`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileChunkOk {
    /// Bytes received so far.
    pub received: u64,
    /// Set by the chunk that completed the file (its SHA-256 matched): it is stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored: Option<FileStored>,
}

/// A file the server stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStored {
    /// The stored file.
    pub file_id: FileId,
    /// When the server deletes it if nobody took it, Unix milliseconds.
    pub expires_at: u64,
    /// Whether the recipient was online and was sent the `file` event now.
    pub delivered: bool,
}

/// The `file` event: a file waits on the server for you.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileOffer {
    /// Name it in `file-get` and `file-done`.
    pub file_id: FileId,
    /// The sender.
    pub from: UserName,
    /// The file.
    pub file: FileMeta,
    /// When it was stored, Unix milliseconds.
    pub sent_at: u64,
    /// When the server deletes it if you do not take it, Unix milliseconds.
    pub expires_at: u64,
}

/// `file-get` fields: bytes of a file stored for you.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileGet {
    /// The file.
    pub file_id: FileId,
    /// The first byte wanted.
    pub offset: u64,
}

/// The `ok` reply to `file-get`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileData {
    /// Where `data` starts.
    pub offset: u64,
    /// Up to `chunk_bytes` bytes, standard base64; empty at the end of the file.
    pub data: String,
}

impl fmt::Debug for FileData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self { offset, data } = self;
        f.debug_struct("FileData")
            .field("offset", offset)
            .field("data_len", &data.len())
            .finish()
    }
}

/// `file-done` fields: the recipient took the file (`received`) or declined it; either
/// way the server deletes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDone {
    /// The file.
    pub file_id: FileId,
    /// True once it was stored and verified, false to decline it.
    pub received: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_escape_or_mislead_are_refused() {
        for bad in [
            "",
            ".",
            "..",
            "../etc/passwd",
            "a/b",
            "a\\b",
            "/abs",
            "bell\u{7}",
            "new\nline",
            "nul\0",
            "esc\u{1b}[31m",
            " lead",
            "trail ",
            "gpj\u{202e}.exe",
            &"x".repeat(256),
        ] {
            let err = FileName::parse(bad).unwrap_err();
            assert!(
                err.to_string().starts_with("refused file name"),
                "{bad:?}: {err}"
            );
        }
        for good in ["photo.jpg", ".hidden", "a..b", "名前.txt", "f (1).txt"] {
            assert_eq!(FileName::parse(good).unwrap().as_str(), good);
        }
    }

    #[test]
    fn a_description_round_trips_and_refuses_bad_fields() {
        let json = r#"{"name":"photo.png","size":5,"sha256":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","image":{"format":"png","width":2,"height":3}}"#;
        let meta: FileMeta = serde_json::from_str(json).unwrap();
        assert_eq!(meta.image.unwrap().format, ImageFormat::Png);
        assert_eq!(serde_json::to_string(&meta).unwrap(), json);
        let bad_name = json.replace("photo.png", "../x");
        assert!(serde_json::from_str::<FileMeta>(&bad_name).is_err());
        let bad_digest = json.replace("9f86", "zz86");
        assert!(serde_json::from_str::<FileMeta>(&bad_digest).is_err());
        assert!("abc".parse::<Sha256Digest>().is_err());
    }
}
