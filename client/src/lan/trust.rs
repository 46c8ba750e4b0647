//! What a client keeps about the LAN, beside its config file: its own long-term identity
//! (`lan-identity`, owner-only) and the peers it trusts (`lan-peers`, one `NAME KEY` a
//! line, as ssh's `known_hosts`).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use magpie_media::srtp::exchange::PublicKey;
use magpie_signaling::lan::{Identity, IdentityKey};

/// A file under the config directory that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The identity file holds something other than 64 hex digits.
    #[error("{0}: not a LAN identity (64 hex digits); move it away to make a new one")]
    Corrupt(PathBuf),
}

/// Where the LAN files live: the config file's directory.
#[derive(Debug, Clone)]
pub struct LanFiles {
    dir: PathBuf,
}

/// What the pinned key of a name says about a key a peer just proved it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinCheck {
    /// The key pinned for this name.
    Known,
    /// Nothing pinned for this name: the people should compare the code.
    New,
    /// Another key is pinned for this name.
    Changed {
        /// The key pinned.
        pinned: IdentityKey,
    },
}

impl LanFiles {
    /// The files beside `config_file`.
    pub fn beside(config_file: &Path) -> Self {
        let dir = config_file.parent().unwrap_or(Path::new(".")).to_owned();
        Self { dir }
    }

    /// The trust store.
    pub fn peers_path(&self) -> PathBuf {
        self.dir.join("lan-peers")
    }

    /// This client's identity, made (and stored owner-only) on first use.
    pub fn identity(&self, random: impl FnOnce() -> [u8; 32]) -> Result<Identity, TrustError> {
        let path = self.dir.join("lan-identity");
        let io = |source| TrustError::Io {
            path: path.clone(),
            source,
        };
        match fs::read_to_string(&path) {
            Ok(text) => {
                // 32 bytes in hex, as a key is written.
                let seed: PublicKey = text
                    .trim()
                    .parse()
                    .map_err(|_| TrustError::Corrupt(path.clone()))?;
                Ok(Identity::from_seed(*seed.as_bytes()))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let identity = Identity::from_seed(random());
                fs::create_dir_all(&self.dir).map_err(io)?;
                let mut file = owner_only(&path).map_err(io)?;
                let seed = PublicKey::from(*identity.seed());
                writeln!(file, "{seed}").map_err(io)?;
                Ok(identity)
            }
            Err(e) => Err(io(e)),
        }
    }

    /// The key pinned for `name`, if any. A missing file pins nothing; lines that do not
    /// parse are skipped.
    pub fn pinned(&self, name: &str) -> Result<Option<IdentityKey>, TrustError> {
        let path = self.peers_path();
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(TrustError::Io { path, source }),
        };
        Ok(text.lines().find_map(|line| {
            let (who, key) = line.trim().split_once(' ')?;
            (who == name).then(|| key.trim().parse().ok()).flatten()
        }))
    }

    /// Checks `key` against what is pinned for `name`.
    pub fn check(&self, name: &str, key: IdentityKey) -> Result<PinCheck, TrustError> {
        Ok(match self.pinned(name)? {
            None => PinCheck::New,
            Some(pinned) if pinned == key => PinCheck::Known,
            Some(pinned) => PinCheck::Changed { pinned },
        })
    }

    /// Remembers `key` for `name` (after the people compared the code).
    pub fn pin(&self, name: &str, key: IdentityKey) -> Result<(), TrustError> {
        let path = self.peers_path();
        let io = |source| TrustError::Io {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(&self.dir).map_err(io)?;
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        writeln!(file, "{name} {key}").map_err(io)
    }
}

fn owner_only(path: &Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_identity_is_made_once_owner_only_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let files = LanFiles::beside(&dir.path().join("sub").join("config.toml"));
        let made = files.identity(|| [5; 32]).unwrap();
        let again = files
            .identity(|| panic!("no second identity is made"))
            .unwrap();
        assert_eq!(made.public(), again.public());
        let mode = fs::metadata(dir.path().join("sub/lan-identity"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        fs::write(dir.path().join("sub/lan-identity"), "garbage\n").unwrap();
        assert!(matches!(
            files.identity(|| [6; 32]),
            Err(TrustError::Corrupt(_))
        ));
    }

    #[test]
    fn a_pinned_key_is_known_another_is_changed() {
        let dir = tempfile::tempdir().unwrap();
        let files = LanFiles::beside(&dir.path().join("config.toml"));
        let (a, b) = (
            Identity::from_seed([1; 32]).public(),
            Identity::from_seed([2; 32]).public(),
        );
        assert_eq!(files.check("bob", a).unwrap(), PinCheck::New);
        files.pin("bob", a).unwrap();
        files.pin("carol", b).unwrap();
        assert_eq!(files.check("bob", a).unwrap(), PinCheck::Known);
        assert_eq!(
            files.check("bob", b).unwrap(),
            PinCheck::Changed { pinned: a }
        );
        assert_eq!(files.check("carol", b).unwrap(), PinCheck::Known);
        // A broken line pins nothing and breaks nothing else.
        let path = files.peers_path();
        let text = fs::read_to_string(&path).unwrap();
        fs::write(&path, format!("dave zz\n{text}")).unwrap();
        assert_eq!(files.check("dave", a).unwrap(), PinCheck::New);
        assert_eq!(files.check("bob", a).unwrap(), PinCheck::Known);
    }
}
