//! The store key in the operating system's keyring: Secret Service on Linux (GNOME Keyring,
//! KWallet), Keychain on macOS, Credential Manager on Windows, through the `keyring` crate.
//!
//! A rotation keeps the key being rotated in under a second entry (`ACCOUNT.next`) until the
//! database is re-encrypted, exactly as [`crate::KeyFile`] keeps `store.key.next`.

use crate::error::StoreError;
use crate::key::{KeyCustody, StoreKey};

/// The keyring service name every DoseWitness store key is filed under.
pub const KEYRING_SERVICE: &str = "org.dosewitness.device-store";

/// One store's key in the OS keyring, named by an account string that is not secret (kept in
/// the data dir so the store can find its key again).
#[derive(Debug, Clone)]
pub struct KeyringEntry {
    account: String,
}

impl KeyringEntry {
    pub fn new(account: impl Into<String>) -> Self {
        Self {
            account: account.into(),
        }
    }

    /// A fresh random account name for a new store.
    pub fn generate() -> Result<Self, StoreError> {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).map_err(|error| StoreError::Keyring {
            account: String::new(),
            action: "drawing a random entry name",
            reason: error.to_string(),
        })?;
        Ok(Self::new(format!("store-{}", hex::encode(bytes))))
    }

    pub fn account(&self) -> &str {
        &self.account
    }

    /// Whether this platform's keyring answers at all (on Linux: a Secret Service is running
    /// on the session bus and its default collection can be unlocked).
    pub fn available() -> Result<(), StoreError> {
        match keyring::Entry::store_status() {
            Ok(()) => Ok(()),
            Err(error) => Err(unavailable("", "reaching the OS keyring", error)),
        }
    }

    fn pending_account(&self) -> String {
        format!("{}.next", self.account)
    }

    fn entry(&self, account: &str, action: &'static str) -> Result<keyring::Entry, StoreError> {
        keyring::Entry::new(KEYRING_SERVICE, account)
            .map_err(|error| unavailable(account, action, &error))
    }

    fn read(&self, account: &str) -> Result<Option<StoreKey>, StoreError> {
        let action = "reading the store key from the OS keyring";
        match self.entry(account, action)?.get_secret() {
            Ok(secret) => {
                let bytes: [u8; 32] =
                    secret
                        .try_into()
                        .map_err(|secret: Vec<u8>| StoreError::Keyring {
                            account: account.to_string(),
                            action,
                            reason: format!(
                                "the entry holds {} bytes, not a 32-byte key",
                                secret.len()
                            ),
                        })?;
                Ok(Some(StoreKey::from_bytes(bytes)))
            }
            Err(keyring::Error::NoEntry) => Ok(None),
            Err(error) => Err(unavailable(account, action, &error)),
        }
    }

    fn write_new(&self, account: &str) -> Result<StoreKey, StoreError> {
        if self.read(account)?.is_some() {
            return Err(StoreError::Keyring {
                account: account.to_string(),
                action: "creating the store key in the OS keyring",
                reason: "an entry already exists; refusing to replace a key that may still \
                         unlock a store"
                    .to_string(),
            });
        }
        let key = StoreKey::generate()?;
        self.entry(account, "writing the store key to the OS keyring")?
            .set_secret(key.as_bytes())
            .map_err(|error| {
                unavailable(account, "writing the store key to the OS keyring", &error)
            })?;
        Ok(key)
    }

    fn delete(&self, account: &str, action: &'static str) -> Result<(), StoreError> {
        match self.entry(account, action)?.delete_credential() {
            Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
            Err(error) => Err(unavailable(account, action, &error)),
        }
    }
}

impl KeyCustody for KeyringEntry {
    fn load(&self) -> Result<StoreKey, StoreError> {
        self.read(&self.account)?
            .ok_or_else(|| StoreError::Keyring {
                account: self.account.clone(),
                action: "reading the store key from the OS keyring",
                reason: "no such entry (was the keyring reset, or is this another user's session?)"
                    .to_string(),
            })
    }

    fn create(&self) -> Result<StoreKey, StoreError> {
        self.write_new(&self.account)
    }

    fn begin_rotation(&self) -> Result<StoreKey, StoreError> {
        self.write_new(&self.pending_account())
    }

    fn pending(&self) -> Result<Option<StoreKey>, StoreError> {
        self.read(&self.pending_account())
    }

    fn finish_rotation(&self) -> Result<(), StoreError> {
        // Not one atomic step as a rename is, but safe in either order of a crash: until the
        // pending entry is deleted, opening finds the current entry working and drops the
        // (now identical) pending one.
        let pending = self
            .read(&self.pending_account())?
            .ok_or_else(|| StoreError::Keyring {
                account: self.pending_account(),
                action: "finishing a key rotation",
                reason: "the pending key is missing".to_string(),
            })?;
        self.entry(
            &self.account,
            "installing the rotated key in the OS keyring",
        )?
        .set_secret(pending.as_bytes())
        .map_err(|error| {
            unavailable(
                &self.account,
                "installing the rotated key in the OS keyring",
                &error,
            )
        })?;
        self.delete(
            &self.pending_account(),
            "removing the pending key from the OS keyring",
        )
    }

    fn abandon_rotation(&self) -> Result<(), StoreError> {
        self.delete(
            &self.pending_account(),
            "removing the unused pending key from the OS keyring",
        )
    }

    fn describe(&self) -> String {
        format!("OS keyring entry {KEYRING_SERVICE}/{}", self.account)
    }
}

fn unavailable(account: &str, action: &'static str, error: &keyring::Error) -> StoreError {
    let reason = match error {
        keyring::Error::NoDefaultStore | keyring::Error::NoStorageAccess(_) => format!(
            "the OS keyring is not available ({error}); on Linux start a Secret Service such as \
             gnome-keyring in this session, or create the store with a key file or a passphrase"
        ),
        other => other.to_string(),
    };
    StoreError::Keyring {
        account: account.to_string(),
        action,
        reason,
    }
}
