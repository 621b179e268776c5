//! Versioned schema. Each migration runs in one transaction; `PRAGMA user_version` records the
//! version, and a database newer than this build is refused.

use crate::error::StoreError;
use rusqlite::Connection;
use std::path::Path;

/// Schema version this build writes.
pub const SCHEMA_VERSION: i64 = 6;

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
    // 3: fewer pages written per dose (each written page is encrypted and authenticated):
    // events carry their acknowledgement and the outbox holds only what is still to send (no
    // partial index); the chain hash loses its unique index (the chain itself links every hash,
    // and a random-keyed index dirties a random page per dose); the audit log drops
    // AUTOINCREMENT (rows are never deleted, so rowids never repeat, and `sqlite_sequence` was
    // one more page per write).
    r#"
    CREATE TABLE dose_events_v3 (
        sequence INTEGER PRIMARY KEY,
        event_id TEXT NOT NULL UNIQUE,
        record_json TEXT NOT NULL,
        hash TEXT NOT NULL,
        signature TEXT NOT NULL,
        recorded_at TEXT NOT NULL,
        acknowledged_at TEXT
    );
    INSERT INTO dose_events_v3
        SELECT e.sequence, e.event_id, e.record_json, e.hash, e.signature, e.recorded_at,
               o.acknowledged_at
        FROM dose_events e LEFT JOIN outbox o USING (sequence);
    CREATE TABLE outbox_v3 (
        sequence INTEGER PRIMARY KEY REFERENCES dose_events(sequence),
        enqueued_at TEXT NOT NULL
    );
    INSERT INTO outbox_v3 SELECT sequence, enqueued_at FROM outbox WHERE acknowledged_at IS NULL;
    CREATE TABLE audit_log_v3 (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        action TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    INSERT INTO audit_log_v3 SELECT id, at, action, detail FROM audit_log;
    DROP TABLE outbox;
    DROP TABLE audit_log;
    DROP TABLE dose_events;
    ALTER TABLE dose_events_v3 RENAME TO dose_events;
    ALTER TABLE outbox_v3 RENAME TO outbox;
    ALTER TABLE audit_log_v3 RENAME TO audit_log;
    "#,
    // 4: the enrolled patient's templates, which never leave the device: the face template made
    // at enrolment (replaced on re-enrolment) and pill templates per medication. Both are opaque
    // bytes made by the vision crate, encrypted with the database.
    r#"
    CREATE TABLE enrolled_patient (
        singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
        patient_id TEXT NOT NULL,
        face_template BLOB NOT NULL,
        enrolled_at TEXT NOT NULL
    );
    CREATE TABLE pill_templates (
        id INTEGER PRIMARY KEY,
        medication_id TEXT NOT NULL,
        template BLOB NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE INDEX pill_templates_by_medication ON pill_templates(medication_id, id);
    "#,
    // 5: what sync last saw: the server's clock relative to the device's (dose times stay the
    // device's capture times; the skew is kept for review), and the last success and error for
    // the status the app shows.
    r#"
    CREATE TABLE sync_state (
        singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
        clock_skew_ms INTEGER,
        skew_measured_at TEXT,
        last_success_at TEXT,
        last_error TEXT,
        last_error_at TEXT
    );
    INSERT INTO sync_state (singleton) VALUES (1);
    "#,
    // 6: evidence upload, resumable from the store alone: each frame's index within its event
    // (capture order, the number the server knows it by), whether its dose was flagged for
    // review (what the default policy uploads) and when the server acknowledged it; and the
    // study's evidence policy as last given to sync.
    r#"
    ALTER TABLE evidence ADD COLUMN frame_index INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE evidence ADD COLUMN flagged INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE evidence ADD COLUMN uploaded_at TEXT;
    UPDATE evidence SET frame_index = (
        SELECT count(*) FROM evidence AS earlier
        WHERE earlier.sequence = evidence.sequence
          AND (earlier.captured_at_ms < evidence.captured_at_ms
               OR (earlier.captured_at_ms = evidence.captured_at_ms AND earlier.id < evidence.id)));
    UPDATE evidence SET flagged = coalesce((
        SELECT json_extract(record_json, '$.event.outcome') IN ('needs_review', 'not_verified')
        FROM dose_events WHERE dose_events.sequence = evidence.sequence), 0);
    DROP INDEX evidence_by_event;
    CREATE UNIQUE INDEX evidence_by_event ON evidence(sequence, frame_index);
    ALTER TABLE sync_state ADD COLUMN evidence_policy TEXT NOT NULL DEFAULT 'flagged_only';
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
        // SQLite's procedure for rebuilding tables: foreign keys off around the transaction
        // (the pragma is a no-op inside one), checked explicitly before commit.
        connection.execute_batch("PRAGMA foreign_keys = OFF;")?;
        let result = apply(connection, sql, index as i64 + 1);
        connection.execute_batch("PRAGMA foreign_keys = ON;")?;
        result?;
    }
    Ok(())
}

fn apply(connection: &mut Connection, sql: &str, version: i64) -> Result<(), StoreError> {
    let transaction = connection.transaction()?;
    transaction.execute_batch(sql)?;
    let violations: i64 =
        transaction.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |row| {
            row.get(0)
        })?;
    if violations > 0 {
        return Err(StoreError::Decode {
            what: "migrated schema",
            reason: format!("{violations} foreign-key violations after migration {version}"),
        });
    }
    transaction.pragma_update(None, "user_version", version)?;
    transaction.commit()?;
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
        connection
            .execute_batch(&format!(
                "PRAGMA key = \"x'00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF'\"; {}",
                crate::CIPHER_SETTINGS
            ))
            .unwrap();
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
    fn migrating_v2_to_v3_keeps_events_acknowledgements_and_pending_work() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("v2.db");
        let mut old = encrypted(&path);
        migrate_to(&mut old, &path, 2).unwrap();
        old.execute_batch(
            "INSERT INTO dose_events VALUES (1, 'e1', '{}', 'h1', 's1', '2026-01-01T08:00:00Z');
             INSERT INTO dose_events VALUES (2, 'e2', '{}', 'h2', 's2', '2026-01-01T20:00:00Z');
             INSERT INTO outbox VALUES (1, '2026-01-01T08:00:01Z', '2026-01-01T09:00:00Z');
             INSERT INTO outbox VALUES (2, '2026-01-01T20:00:01Z', NULL);
             INSERT INTO evidence (sequence, captured_at_ms, jpeg, created_at)
                 VALUES (2, 5, x'FFD8', '2026-01-01T20:00:01Z');
             INSERT INTO audit_log (at, action, detail) VALUES ('2026-01-01T08:00:00Z', 'a', 'b');",
        )
        .unwrap();
        migrate(&mut old, &path).unwrap();
        let events: Vec<(i64, String, Option<String>)> = old
            .prepare("SELECT sequence, hash, acknowledged_at FROM dose_events ORDER BY sequence")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            events,
            vec![
                (
                    1,
                    "h1".to_string(),
                    Some("2026-01-01T09:00:00Z".to_string())
                ),
                (2, "h2".to_string(), None),
            ]
        );
        let pending: Vec<i64> = old
            .prepare("SELECT sequence FROM outbox")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            pending,
            vec![2],
            "only the unacknowledged event is still to send"
        );
        let evidence: i64 = old
            .query_row(
                "SELECT count(*) FROM evidence WHERE sequence = 2",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(evidence, 1);
        let audit: i64 = old
            .query_row("SELECT count(*) FROM audit_log", [], |row| row.get(0))
            .unwrap();
        assert_eq!(audit, 1);
    }

    #[test]
    fn migrating_v5_to_v6_numbers_frames_in_capture_order_and_flags_doses_to_review() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("v5.db");
        let mut old = encrypted(&path);
        migrate_to(&mut old, &path, 5).unwrap();
        old.execute_batch(
            r#"INSERT INTO dose_events VALUES
                 (1, 'e1', '{"event":{"outcome":"verified"}}', 'h1', 's1', '2026-01-01T08:00:00Z', NULL),
                 (2, 'e2', '{"event":{"outcome":"needs_review"}}', 'h2', 's2', '2026-01-02T08:00:00Z', NULL),
                 (3, 'e3', '{"event":{"outcome":"not_verified"}}', 'h3', 's3', '2026-01-03T08:00:00Z', NULL);
             INSERT INTO evidence (sequence, captured_at_ms, jpeg, created_at) VALUES
                 (1, 40, x'FFD801', '2026-01-01T08:00:01Z'),
                 (1, 10, x'FFD802', '2026-01-01T08:00:01Z'),
                 (2, 7, x'FFD803', '2026-01-02T08:00:01Z'),
                 (2, 7, x'FFD804', '2026-01-02T08:00:01Z'),
                 (3, 1, x'FFD805', '2026-01-03T08:00:01Z');"#,
        )
        .unwrap();
        migrate(&mut old, &path).unwrap();
        // (sequence, jpeg, frame_index, flagged, uploaded_at)
        type Row = (i64, Vec<u8>, i64, i64, Option<String>);
        let frames: Vec<Row> = old
            .prepare(
                "SELECT sequence, jpeg, frame_index, flagged, uploaded_at FROM evidence
                 ORDER BY sequence, frame_index",
            )
            .unwrap()
            .query_map([], |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                ))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            frames,
            vec![
                (1, vec![0xFF, 0xD8, 0x02], 0, 0, None),
                (1, vec![0xFF, 0xD8, 0x01], 1, 0, None),
                (2, vec![0xFF, 0xD8, 0x03], 0, 1, None),
                (2, vec![0xFF, 0xD8, 0x04], 1, 1, None),
                (3, vec![0xFF, 0xD8, 0x05], 0, 1, None),
            ]
        );
        let policy: String = old
            .query_row("SELECT evidence_policy FROM sync_state", [], |row| {
                row.get(0)
            })
            .unwrap();
        assert_eq!(policy, "flagged_only");
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
