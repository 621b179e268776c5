//! Versioned schema. Each migration runs in one transaction; `PRAGMA user_version` records the
//! version, and a database newer than this build is refused.

use crate::error::StoreError;
use rusqlite::Connection;
use std::path::Path;

/// Schema version this build writes.
pub const SCHEMA_VERSION: i64 = 2;

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
    // 2: evidence keyframes (JPEG, encrypted with the database), purged after sync per retention.
    r#"
    CREATE TABLE evidence (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        sequence INTEGER NOT NULL REFERENCES dose_events(sequence),
        captured_at_ms INTEGER NOT NULL,
        jpeg BLOB NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE INDEX evidence_by_event ON evidence(sequence);
    "#,
];

/// Brings `connection` to [`SCHEMA_VERSION`].
pub(crate) fn migrate(connection: &mut Connection, path: &Path) -> Result<(), StoreError> {
    migrate_to(connection, path, SCHEMA_VERSION)
}

/// Applies the migrations after the current version up to `target`, one transaction each.
fn migrate_to(connection: &mut Connection, path: &Path, target: i64) -> Result<(), StoreError> {
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
        .take(usize::try_from(target - current).unwrap_or(0))
    {
        let transaction = connection.transaction()?;
        transaction.execute_batch(sql)?;
        transaction.pragma_update(None, "user_version", index as i64 + 1)?;
        transaction.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema_of(connection: &Connection) -> Vec<(String, String)> {
        let mut statement = connection
            .prepare("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name")
            .unwrap();
        statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    fn encrypted(path: &Path) -> Connection {
        let connection = Connection::open(path).unwrap();
        connection.execute_batch("PRAGMA key = \"x'00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF'\";").unwrap();
        connection
    }

    #[test]
    fn every_historical_schema_migrates_to_the_fresh_schema() {
        let directory = tempfile::tempdir().unwrap();
        let fresh_path = directory.path().join("fresh.db");
        let mut fresh = encrypted(&fresh_path);
        migrate(&mut fresh, &fresh_path).unwrap();
        let expected = schema_of(&fresh);
        assert!(expected.iter().any(|(name, _)| name == "evidence"));
        for version in 0..SCHEMA_VERSION {
            let path = directory.path().join(format!("v{version}.db"));
            let mut old = encrypted(&path);
            migrate_to(&mut old, &path, version).unwrap();
            let at: i64 = old
                .query_row("PRAGMA user_version", [], |row| row.get(0))
                .unwrap();
            assert_eq!(at, version);
            drop(old);
            let mut reopened = encrypted(&path);
            migrate(&mut reopened, &path).unwrap();
            assert_eq!(
                schema_of(&reopened),
                expected,
                "schema migrated from v{version}"
            );
        }
    }

    #[test]
    fn a_newer_database_is_refused_untouched() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("future.db");
        let mut connection = encrypted(&path);
        connection
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        let error = migrate(&mut connection, &path).unwrap_err();
        assert!(
            matches!(error, StoreError::NewerSchema { found, .. } if found == SCHEMA_VERSION + 1)
        );
        assert!(
            schema_of(&connection).is_empty(),
            "nothing was created in a newer database"
        );
    }
}
