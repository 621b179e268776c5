//! The device store: every dose a device records, encrypted at rest, hash-chained and signed,
//! with an outbox for sync. The only crate that depends on rusqlite.
//!
//! - The database is SQLCipher (AES-256 pages + HMAC), opened with a raw 256-bit [`StoreKey`]
//!   (no KDF cost at open). Temp storage stays in memory; WAL with `synchronous = FULL`.
//! - [`DeviceStore::append_dose_event`] chains, signs and enqueues an event in one transaction:
//!   either all of it is durable or none of it is.
//! - A store is never created over an existing file, and a file that fails its integrity check
//!   is renamed aside (quarantined), never deleted.

mod error;
mod key;
mod os_keyring;
mod schema;
mod store;

pub use error::StoreError;
pub use key::{CIPHER_SETTINGS, KeyCustody, KeyFile, PassphraseKdf, StoreKey};
pub use os_keyring::{KEYRING_SERVICE, KeyringEntry};
pub use schema::SCHEMA_VERSION;
pub use store::{
    DeviceIdentity, DeviceStore, EvidenceFrame, PendingEvidence, StoreInfo, SyncStatus,
};
