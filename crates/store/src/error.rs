use std::path::PathBuf;

/// Errors of the device store. They name files and sequence numbers, never PHI.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("a device store already exists at {path}; open it instead of creating a new one")]
    AlreadyExists { path: PathBuf },
    #[error("no device store at {path}")]
    NotFound { path: PathBuf },
    #[error(
        "the device store {path} could not be decrypted: the key is wrong or the file is \
         damaged; the file was left untouched"
    )]
    WrongKeyOrCorrupt { path: PathBuf },
    #[error(
        "the device store {path} is corrupt ({detail}); it was moved aside to {quarantined_to} \
         and kept for recovery"
    )]
    Corrupt {
        path: PathBuf,
        quarantined_to: PathBuf,
        detail: String,
    },
    #[error(
        "the device store {path} has schema version {found}, newer than this build supports ({supported}); update DoseWitness"
    )]
    NewerSchema {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error(
        "the disk holding {path} is full: the dose was not recorded (nothing was half-written); free some space and record it again"
    )]
    DiskFull { path: PathBuf },
    #[error(
        "the device store {path} could not be written ({detail}): the dose was not recorded (nothing was half-written)"
    )]
    WriteFailed { path: PathBuf, detail: String },
    #[error(
        "the device store {path} or its directory is not writable ({detail}): no dose can be \
         recorded until its permissions or mount are fixed; nothing was changed"
    )]
    ReadOnly { path: PathBuf, detail: String },
    #[error("this device is not enrolled yet")]
    NotEnrolled,
    #[error("the passphrase cannot unlock a store: {0}")]
    Passphrase(String),
    #[error("{action} (entry '{account}'): {reason}")]
    Keyring {
        account: String,
        action: &'static str,
        reason: String,
    },
    #[error("the key file {path} is invalid: {reason}")]
    BadKeyFile { path: PathBuf, reason: String },
    #[error("{action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("device store query failed")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored record {what} could not be decoded: {reason}")]
    Decode { what: &'static str, reason: String },
    #[error(transparent)]
    Chain(#[from] dosewitness_protocol::ChainError),
}
