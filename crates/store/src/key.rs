//! The store's encryption key.
//!
//! The product keeps the key in the OS keyring; until that backend lands (see ARCHITECTURE.md),
//! [`KeyFile`] keeps it in a separate owner-only file next to the data, written atomically.

use crate::error::StoreError;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A raw 256-bit SQLCipher key. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreKey([u8; 32]);

/// SQLCipher settings every connection to a store applies right after `PRAGMA key` (they are
/// not recorded in the file, so a connection without them cannot read it).
///
/// - Pages are authenticated with HMAC-SHA256 rather than SQLCipher 4's default SHA-512: the
///   same tamper detection at a third of the cost per page on CPUs with SHA extensions.
/// - 2 KiB pages instead of 4 KiB: a dose commit dirties about four pages, each encrypted and
///   authenticated whole, so smaller pages halve the crypto per dose; larger stores open a
///   little slower (more pages to check). `bench store` measures both.
pub const CIPHER_SETTINGS: &str =
    "PRAGMA cipher_hmac_algorithm = HMAC_SHA256; PRAGMA cipher_page_size = 2048;";

/// The page size of a plaintext store (benchmark baseline only), equal to the encrypted one.
pub(crate) const PLAINTEXT_SETTINGS: &str = "PRAGMA page_size = 2048;";

impl fmt::Debug for StoreKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("StoreKey(<redacted>)")
    }
}

impl StoreKey {
    /// A fresh random key from the OS RNG.
    pub fn generate() -> Result<Self, StoreError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|error| StoreError::Io {
            action: "drawing random bytes for",
            path: PathBuf::from("the store key"),
            source: std::io::Error::other(error.to_string()),
        })?;
        Ok(Self(bytes))
    }

    /// A key from raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The `PRAGMA key` statement for this raw key (SQLCipher's `x'…'` form skips PBKDF2).
    pub(crate) fn pragma(&self) -> String {
        format!(
            "PRAGMA key = \"x'{}'\"; {CIPHER_SETTINGS}",
            hex::encode_upper(self.0)
        )
    }

    /// The `PRAGMA rekey` statement that re-encrypts every page under this key.
    pub(crate) fn rekey_pragma(&self) -> String {
        format!("PRAGMA rekey = \"x'{}'\";", hex::encode_upper(self.0))
    }

    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    fn from_hex(text: &str) -> Option<Self> {
        let bytes: [u8; 32] = hex::decode(text.trim()).ok()?.try_into().ok()?;
        Some(Self(bytes))
    }
}

/// Where a store's raw key is kept, and how it is rotated crash-safely: a new key is written
/// beside the current one (pending), the database is re-encrypted under it, then it replaces
/// the current one. Opening a store finishes or abandons an interrupted rotation.
pub trait KeyCustody {
    /// Reads the current key.
    fn load(&self) -> Result<StoreKey, StoreError>;
    /// Writes a new random key; refuses to overwrite an existing one.
    fn create(&self) -> Result<StoreKey, StoreError>;
    /// Step 1 of a rotation: a new random key, kept durably beside the current one.
    fn begin_rotation(&self) -> Result<StoreKey, StoreError>;
    /// The key of an unfinished rotation, if one was begun.
    fn pending(&self) -> Result<Option<StoreKey>, StoreError>;
    /// Last step of a rotation: the pending key becomes the key.
    fn finish_rotation(&self) -> Result<(), StoreError>;
    /// Abandons an unfinished rotation whose key never reached the database.
    fn abandon_rotation(&self) -> Result<(), StoreError>;
    /// Where the key is, for messages (no secret).
    fn describe(&self) -> String;
}

/// A key kept in a file readable only by its owner.
#[derive(Debug, Clone)]
pub struct KeyFile {
    path: PathBuf,
}

impl KeyFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where a key being rotated in waits until the database is re-encrypted under it.
    pub fn pending_path(&self) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(".next");
        PathBuf::from(name)
    }
}

impl KeyCustody for KeyFile {
    fn load(&self) -> Result<StoreKey, StoreError> {
        let text = std::fs::read_to_string(&self.path).map_err(|source| StoreError::Io {
            action: "reading the key file",
            path: self.path.clone(),
            source,
        })?;
        StoreKey::from_hex(&text).ok_or_else(|| StoreError::BadKeyFile {
            path: self.path.clone(),
            reason: "expected 64 hex digits".to_string(),
        })
    }

    /// Writes a new random key; refuses to overwrite an existing key file.
    fn create(&self) -> Result<StoreKey, StoreError> {
        write_new_key(&self.path)
    }

    fn begin_rotation(&self) -> Result<StoreKey, StoreError> {
        write_new_key(&self.pending_path())
    }

    /// The key of an unfinished rotation, if one was begun.
    fn pending(&self) -> Result<Option<StoreKey>, StoreError> {
        let pending = KeyFile::new(self.pending_path());
        if pending.path.exists() {
            pending.load().map(Some)
        } else {
            Ok(None)
        }
    }

    /// Last step of a rotation: the pending key becomes the key (an atomic rename).
    fn finish_rotation(&self) -> Result<(), StoreError> {
        std::fs::rename(self.pending_path(), &self.path).map_err(|source| StoreError::Io {
            action: "installing the rotated key file",
            path: self.path.clone(),
            source,
        })
    }

    /// Abandons an unfinished rotation whose key never reached the database.
    fn abandon_rotation(&self) -> Result<(), StoreError> {
        std::fs::remove_file(self.pending_path()).map_err(|source| StoreError::Io {
            action: "removing the unused pending key file",
            path: self.pending_path(),
            source,
        })
    }

    fn describe(&self) -> String {
        format!("key file {}", self.path.display())
    }
}

/// Writes a fresh random key to `path` (owner-only, fsynced, atomically installed); refuses to
/// overwrite.
fn write_new_key(path: &Path) -> Result<StoreKey, StoreError> {
    if path.exists() {
        return Err(StoreError::BadKeyFile {
            path: path.to_path_buf(),
            reason: "a key file already exists; refusing to replace it".to_string(),
        });
    }
    let key = StoreKey::generate()?;
    let io = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Io {
            action,
            path,
            source,
        }
    };
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    // A leftover temp file is our own half-written key from a crash, never a live key.
    let _ = std::fs::remove_file(&temporary);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&temporary)
        .map_err(io("creating the key file", &temporary))?;
    file.write_all(key.to_hex().as_bytes())
        .map_err(io("writing the key file", &temporary))?;
    file.sync_all()
        .map_err(io("syncing the key file", &temporary))?;
    std::fs::rename(&temporary, path).map_err(io("installing the key file", path))?;
    if let Some(directory) = path.parent()
        && let Ok(directory) = std::fs::File::open(directory)
    {
        // Make the rename itself durable.
        let _ = directory.sync_all();
    }
    Ok(key)
}

/// Argon2id parameters and salt for deriving the store key from a passphrase, kept in a small
/// JSON file beside the store (not secret; without it the passphrase cannot be turned back into
/// the key).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassphraseKdf {
    pub algorithm: String,
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// Hex, 16 random bytes.
    pub salt: String,
}

impl PassphraseKdf {
    /// OWASP's Argon2id recommendation for interactive use: 64 MiB, 3 passes, 1 lane.
    pub fn recommended() -> Result<Self, StoreError> {
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).map_err(|error| StoreError::Io {
            action: "drawing random bytes for",
            path: PathBuf::from("the passphrase salt"),
            source: std::io::Error::other(error.to_string()),
        })?;
        Ok(Self {
            algorithm: "argon2id-v19".to_string(),
            memory_kib: 64 * 1024,
            iterations: 3,
            parallelism: 1,
            salt: hex::encode(salt),
        })
    }

    /// Derives the raw store key from `passphrase`. The cost is paid here, once per unlock; the
    /// database is then opened with the raw key (no second KDF inside SQLCipher).
    pub fn derive(&self, passphrase: &str) -> Result<StoreKey, StoreError> {
        let invalid = StoreError::Passphrase;
        if self.algorithm != "argon2id-v19" {
            return Err(invalid(format!(
                "unsupported algorithm {:?}",
                self.algorithm
            )));
        }
        if passphrase.chars().count() < 8 {
            return Err(invalid(
                "the passphrase must be at least 8 characters".to_string(),
            ));
        }
        let salt = hex::decode(&self.salt).map_err(|_| invalid("salt is not hex".to_string()))?;
        let params =
            argon2::Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
                .map_err(|error| invalid(error.to_string()))?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut key = [0u8; 32];
        argon
            .hash_password_into(passphrase.as_bytes(), &salt, &mut key)
            .map_err(|error| invalid(error.to_string()))?;
        Ok(StoreKey::from_bytes(key))
    }

    /// Reads the parameters from `path`.
    pub fn load(path: &Path) -> Result<Self, StoreError> {
        let text = std::fs::read_to_string(path).map_err(|source| StoreError::Io {
            action: "reading the passphrase parameters",
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|error| StoreError::BadKeyFile {
            path: path.to_path_buf(),
            reason: error.to_string(),
        })
    }

    /// Writes the parameters to a new file at `path` (never overwrites).
    pub fn save(&self, path: &Path) -> Result<(), StoreError> {
        let text = serde_json::to_string_pretty(self).map_err(|error| StoreError::BadKeyFile {
            path: path.to_path_buf(),
            reason: error.to_string(),
        })?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|source| StoreError::Io {
                action: "creating the passphrase parameters",
                path: path.to_path_buf(),
                source,
            })?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|source| StoreError::Io {
                action: "writing the passphrase parameters",
                path: path.to_path_buf(),
                source,
            })
    }
}
