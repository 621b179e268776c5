//! Versioned schema. Each migration runs in one transaction; `PRAGMA user_version` records the
//! version, and a database newer than this build is refused.

use crate::error::StoreError;
use rusqlite::Connection;
use std::path::Path;

/// Schema version this build writes.
pub const SCHEMA_VERSION: i64 = 1;

const MIGRATIONS: &[&str] = &[
    // 1: device identity, regimens, chained dose events, outbox, local audit log.
    r#"
    CREATE TABLE device_identity (
        singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
        device_id TEXT NOT NULL,
        signing_key BLOB NOT NULL,
        server_url TEXT,
        device_token TEXT,
        enrolment_json TEXT,
        created_at TEXT NOT NULL
    );
    CREATE TABLE regimens (
        regimen_id TEXT PRIMARY KEY,
        plan_json TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE dose_events (
        sequence INTEGER PRIMARY KEY,
        event_id TEXT NOT NULL UNIQUE,
        record_json TEXT NOT NULL,
        hash TEXT NOT NULL UNIQUE,
        signature TEXT NOT NULL,
        recorded_at TEXT NOT NULL
    );
    CREATE TABLE outbox (
        sequence INTEGER PRIMARY KEY REFERENCES dose_events(sequence),
        enqueued_at TEXT NOT NULL,
        acknowledged_at TEXT
    );
    CREATE INDEX outbox_pending ON outbox(sequence) WHERE acknowledged_at IS NULL;
    CREATE TABLE audit_log (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        action TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    "#,
];

/// Brings `connection` to [`SCHEMA_VERSION`].
pub(crate) fn migrate(connection: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let current: i64 = connection.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    if current > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            path: path.to_path_buf(),
            found: current,
            supported: SCHEMA_VERSION,
        });
    }
    for (index, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(current).unwrap_or(0))
    {
        let transaction = connection.transaction()?;
        transaction.execute_batch(sql)?;
        transaction.pragma_update(None, "user_version", index as i64 + 1)?;
        transaction.commit()?;
    }
    Ok(())
}
