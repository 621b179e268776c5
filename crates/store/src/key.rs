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
        format!("PRAGMA key = \"x'{}'\";", hex::encode_upper(self.0))
    }

    fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    fn from_hex(text: &str) -> Option<Self> {
        let bytes: [u8; 32] = hex::decode(text.trim()).ok()?.try_into().ok()?;
        Some(Self(bytes))
    }
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

    /// Reads the key.
    pub fn load(&self) -> Result<StoreKey, StoreError> {
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
    pub fn create(&self) -> Result<StoreKey, StoreError> {
        if self.path.exists() {
            return Err(StoreError::BadKeyFile {
                path: self.path.clone(),
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
        let temporary = self.path.with_extension("key.tmp");
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
        std::fs::rename(&temporary, &self.path)
            .map_err(io("installing the key file", &self.path))?;
        Ok(key)
    }
}
