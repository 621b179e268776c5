//! The server database: connection, migrations and every query, behind one [`Database`] type
//! over SQLite (the embedded default, a file under the data dir) or PostgreSQL (multi-site).
//!
//! One query path for both: sqlx's `Any` driver with `$1, $2 …` numbered placeholders (SQLite
//! reads `$N` as parameter N). Timestamps are TEXT in RFC 3339 with microseconds in UTC, so text
//! order is time order in both. Only the schema (one migration list per dialect, same version
//! numbers) and the way ingest takes its per-device lock differ between the dialects.

use crate::error::ServerError;
use chrono::{DateTime, SecondsFormat, Utc};
use dosewitness_domain::{
    DeviceId, DoseEvent, Medication, Patient, PatientId, Redacted, Site, SiteId, Study, StudyId,
};
use dosewitness_protocol::{RegimenPlan, SignedDoseEvent};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Any, AnyPool, ConnectOptions, Connection, Row};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

/// A transaction on the server database.
pub type Transaction = sqlx::Transaction<'static, Any>;

/// Which database engine a [`Database`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// SQLite schema, one transaction per entry; entry `i` is schema version `i + 1`.
const SQLITE_MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE studies (
        id TEXT PRIMARY KEY, code TEXT NOT NULL UNIQUE, title TEXT NOT NULL, created_at TEXT NOT NULL);
    CREATE TABLE sites (
        id TEXT PRIMARY KEY, study_id TEXT NOT NULL REFERENCES studies(id), name TEXT NOT NULL,
        created_at TEXT NOT NULL);
    CREATE TABLE patients (
        id TEXT PRIMARY KEY, site_id TEXT NOT NULL REFERENCES sites(id), subject_code TEXT NOT NULL,
        display_name TEXT NOT NULL, created_at TEXT NOT NULL, UNIQUE (site_id, subject_code));
    CREATE TABLE medications (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, strength_mg REAL NOT NULL, form TEXT NOT NULL);
    CREATE TABLE regimens (
        id TEXT PRIMARY KEY, patient_id TEXT NOT NULL REFERENCES patients(id),
        medication_id TEXT NOT NULL REFERENCES medications(id), plan_json TEXT NOT NULL,
        created_at TEXT NOT NULL);
    CREATE TABLE enrolment_codes (
        code_hash TEXT PRIMARY KEY, patient_id TEXT NOT NULL REFERENCES patients(id),
        expires_at TEXT NOT NULL, used_at TEXT);
    CREATE TABLE devices (
        id TEXT PRIMARY KEY, patient_id TEXT NOT NULL REFERENCES patients(id),
        public_key TEXT NOT NULL, token_hash TEXT NOT NULL UNIQUE, label TEXT NOT NULL,
        enrolled_at TEXT NOT NULL, revoked_at TEXT);
    CREATE TABLE dose_events (
        event_id TEXT PRIMARY KEY, device_id TEXT NOT NULL REFERENCES devices(id),
        sequence INTEGER NOT NULL, patient_id TEXT NOT NULL, regimen_id TEXT NOT NULL,
        scheduled_at TEXT NOT NULL, recorded_at TEXT NOT NULL, outcome TEXT NOT NULL,
        record_json TEXT NOT NULL, hash TEXT NOT NULL, signature TEXT NOT NULL,
        received_at TEXT NOT NULL, UNIQUE (device_id, sequence));
    CREATE INDEX dose_events_patient ON dose_events(patient_id, scheduled_at);
    CREATE TABLE anomalies (
        id INTEGER PRIMARY KEY AUTOINCREMENT, device_id TEXT NOT NULL, sequence INTEGER,
        kind TEXT NOT NULL, detail TEXT NOT NULL, at TEXT NOT NULL);
    CREATE TABLE audit_log (
        id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, actor TEXT NOT NULL,
        action TEXT NOT NULL, entity TEXT NOT NULL);
"#,
    r#"
    -- v2: accounts, sessions, API tokens; the audit log records where a request came from and
    -- refuses updates and deletes.
    CREATE TABLE users (
        id TEXT PRIMARY KEY, username TEXT NOT NULL UNIQUE, password_hash TEXT,
        role TEXT NOT NULL CHECK (role IN ('admin', 'coordinator', 'clinician')),
        created_at TEXT NOT NULL, disabled_at TEXT);
    CREATE TABLE user_scopes (
        user_id TEXT NOT NULL REFERENCES users(id),
        kind TEXT NOT NULL CHECK (kind IN ('study', 'site', 'patient')), target_id TEXT NOT NULL,
        PRIMARY KEY (user_id, kind, target_id));
    CREATE TABLE sessions (
        token_hash TEXT PRIMARY KEY, user_id TEXT NOT NULL REFERENCES users(id),
        csrf_token TEXT NOT NULL, created_at TEXT NOT NULL, last_seen_at TEXT NOT NULL,
        source TEXT NOT NULL);
    CREATE TABLE api_tokens (
        id TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE,
        user_id TEXT NOT NULL REFERENCES users(id), label TEXT NOT NULL, created_at TEXT NOT NULL,
        revoked_at TEXT);
    ALTER TABLE audit_log ADD COLUMN source TEXT NOT NULL DEFAULT '';
    CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
        BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
    CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
        BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
"#,
    r#"
    -- v3: evidence keyframes (JPEG) of dose events, uploaded by devices one frame at a time. The
    -- bytes live in the evidence object store under `object_key` (device id / event id / index:
    -- no PHI). A slot is claimed with the frame's sha256 before the bytes are written and
    -- `stored_at` is set once they are, so a slot only ever holds the bytes it was claimed for.
    CREATE TABLE evidence_frames (
        event_id TEXT NOT NULL REFERENCES dose_events(event_id), frame_index INTEGER NOT NULL,
        device_id TEXT NOT NULL REFERENCES devices(id), sha256 TEXT NOT NULL,
        size_bytes INTEGER NOT NULL, object_key TEXT NOT NULL, claimed_at TEXT NOT NULL,
        stored_at TEXT, PRIMARY KEY (event_id, frame_index));
"#,
];

/// PostgreSQL schema: the same versions as [`SQLITE_MIGRATIONS`]. Integers are BIGINT (Rust
/// `i64`), REAL is DOUBLE PRECISION, and the TEXT columns that are ordered or compared by
/// range use the "C" collation so that text order is byte order whatever the database locale.
const POSTGRES_MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE studies (
        id TEXT PRIMARY KEY, code TEXT NOT NULL UNIQUE, title TEXT NOT NULL, created_at TEXT NOT NULL);
    CREATE TABLE sites (
        id TEXT PRIMARY KEY, study_id TEXT NOT NULL REFERENCES studies(id), name TEXT NOT NULL,
        created_at TEXT NOT NULL);
    CREATE TABLE patients (
        id TEXT PRIMARY KEY, site_id TEXT NOT NULL REFERENCES sites(id), subject_code TEXT NOT NULL,
        display_name TEXT NOT NULL, created_at TEXT NOT NULL, UNIQUE (site_id, subject_code));
    CREATE TABLE medications (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, strength_mg DOUBLE PRECISION NOT NULL,
        form TEXT NOT NULL);
    CREATE TABLE regimens (
        id TEXT COLLATE "C" PRIMARY KEY, patient_id TEXT NOT NULL REFERENCES patients(id),
        medication_id TEXT NOT NULL REFERENCES medications(id), plan_json TEXT NOT NULL,
        created_at TEXT NOT NULL);
    CREATE TABLE enrolment_codes (
        code_hash TEXT PRIMARY KEY, patient_id TEXT NOT NULL REFERENCES patients(id),
        expires_at TEXT COLLATE "C" NOT NULL, used_at TEXT);
    CREATE TABLE devices (
        id TEXT PRIMARY KEY, patient_id TEXT NOT NULL REFERENCES patients(id),
        public_key TEXT NOT NULL, token_hash TEXT NOT NULL UNIQUE, label TEXT NOT NULL,
        enrolled_at TEXT NOT NULL, revoked_at TEXT);
    CREATE TABLE dose_events (
        event_id TEXT PRIMARY KEY, device_id TEXT NOT NULL REFERENCES devices(id),
        sequence BIGINT NOT NULL, patient_id TEXT NOT NULL, regimen_id TEXT NOT NULL,
        scheduled_at TEXT COLLATE "C" NOT NULL, recorded_at TEXT NOT NULL, outcome TEXT NOT NULL,
        record_json TEXT NOT NULL, hash TEXT NOT NULL, signature TEXT NOT NULL,
        received_at TEXT NOT NULL, UNIQUE (device_id, sequence));
    CREATE INDEX dose_events_patient ON dose_events(patient_id, scheduled_at);
    CREATE TABLE anomalies (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, device_id TEXT NOT NULL,
        sequence BIGINT, kind TEXT NOT NULL, detail TEXT NOT NULL, at TEXT NOT NULL);
    CREATE TABLE audit_log (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, at TEXT NOT NULL, actor TEXT NOT NULL,
        action TEXT NOT NULL, entity TEXT NOT NULL);
"#,
    r#"
    -- v2: as in SQLite. Timestamps compared by range use the "C" collation.
    CREATE TABLE users (
        id TEXT PRIMARY KEY, username TEXT NOT NULL UNIQUE, password_hash TEXT,
        role TEXT NOT NULL CHECK (role IN ('admin', 'coordinator', 'clinician')),
        created_at TEXT NOT NULL, disabled_at TEXT);
    CREATE TABLE user_scopes (
        user_id TEXT NOT NULL REFERENCES users(id),
        kind TEXT NOT NULL CHECK (kind IN ('study', 'site', 'patient')), target_id TEXT NOT NULL,
        PRIMARY KEY (user_id, kind, target_id));
    CREATE TABLE sessions (
        token_hash TEXT PRIMARY KEY, user_id TEXT NOT NULL REFERENCES users(id),
        csrf_token TEXT NOT NULL, created_at TEXT COLLATE "C" NOT NULL,
        last_seen_at TEXT COLLATE "C" NOT NULL, source TEXT NOT NULL);
    CREATE TABLE api_tokens (
        id TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE,
        user_id TEXT NOT NULL REFERENCES users(id), label TEXT NOT NULL, created_at TEXT NOT NULL,
        revoked_at TEXT);
    ALTER TABLE audit_log ADD COLUMN source TEXT NOT NULL DEFAULT '';
    CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$;
    CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
        FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
    CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
        FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
"#,
    r#"
    -- v3: evidence keyframes, as in SQLite.
    CREATE TABLE evidence_frames (
        event_id TEXT NOT NULL REFERENCES dose_events(event_id), frame_index BIGINT NOT NULL,
        device_id TEXT NOT NULL REFERENCES devices(id), sha256 TEXT NOT NULL,
        size_bytes BIGINT NOT NULL, object_key TEXT NOT NULL, claimed_at TEXT NOT NULL,
        stored_at TEXT, PRIMARY KEY (event_id, frame_index));
"#,
];

const _: () = assert!(
    SQLITE_MIGRATIONS.len() == POSTGRES_MIGRATIONS.len(),
    "every schema version exists in both dialects"
);

/// Key of the PostgreSQL advisory lock that serialises migrations between server processes.
const MIGRATION_LOCK_KEY: i64 = 0x646f_7365_7769_746e; // "dosewitn"

impl Backend {
    fn migrations(self) -> &'static [&'static str] {
        match self {
            Self::Sqlite => SQLITE_MIGRATIONS,
            Self::Postgres => POSTGRES_MIGRATIONS,
        }
    }
}

pub(crate) fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn decode<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, ServerError> {
    serde_json::from_str(json).map_err(|error| ServerError::Decode(error.to_string()))
}

fn encode<T: serde::Serialize>(value: &T) -> Result<String, ServerError> {
    serde_json::to_string(value).map_err(|error| ServerError::Decode(error.to_string()))
}

pub(crate) fn parse<T: std::str::FromStr>(text: &str) -> Result<T, ServerError> {
    text.parse()
        .map_err(|_| ServerError::Decode(format!("bad id {text:?}")))
}

/// `url` as it may be shown in messages and logs: no password and no query string (which may
/// carry `password=`). A URL that does not parse is not shown at all.
fn redacted_url(url: &str) -> String {
    match AnyConnectOptions::from_str(url) {
        Ok(options) => {
            let mut url = options.database_url;
            // Fails only for URLs that cannot have a password, which then have none to hide.
            let _ = url.set_password(None);
            url.set_query(None);
            url.set_fragment(None);
            url.to_string()
        }
        Err(_) => "(an unparseable database URL)".to_string(),
    }
}

async fn insert_audit<'e>(
    executor: impl sqlx::Executor<'e, Database = Any>,
    at: DateTime<Utc>,
    actor: &str,
    source: &str,
    action: &str,
    entity: &str,
) -> Result<(), ServerError> {
    sqlx::query(
        "INSERT INTO audit_log (at, actor, action, entity, source) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(timestamp(at))
    .bind(actor)
    .bind(action)
    .bind(entity)
    .bind(source)
    .execute(executor)
    .await?;
    Ok(())
}

/// A device as the server knows it.
#[derive(Debug, Clone)]
pub struct DeviceRecord {
    pub id: DeviceId,
    pub patient_id: PatientId,
    pub public_key: String,
    pub revoked: bool,
}

impl DeviceRecord {
    /// How the audit log names this device as an actor (`device:ID`), beside
    /// `Caller::actor`'s `user:NAME` forms.
    pub fn audit_actor(&self) -> String {
        format!("device:{}", self.id)
    }
}

/// The server database.
#[derive(Debug, Clone)]
pub struct Database {
    pub(crate) pool: AnyPool,
    pub(crate) backend: Backend,
}

impl Database {
    /// Opens (creating if needed) the SQLite database at `path` and migrates it.
    pub async fn open_sqlite(path: &Path) -> Result<Self, ServerError> {
        let location = path.display().to_string();
        // Absolute, because the Any driver reopens the file through a URL.
        let path = std::path::absolute(path).map_err(|error| ServerError::DatabaseOpen {
            location: location.clone(),
            reason: error.to_string(),
        })?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true);
        Self::open_sqlite_with(options, location).await
    }

    /// Connects to the database at `url` and migrates it: `postgres://user:password@host/db`
    /// (also `postgresql://`) or `sqlite://path` (created if missing, as `sqlite://path?mode=rwc`
    /// would be). Errors name the location without its password.
    pub async fn connect(url: &str) -> Result<Self, ServerError> {
        let location = redacted_url(url);
        let open_error = |reason: String| ServerError::DatabaseOpen {
            location: location.clone(),
            reason,
        };
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|error| open_error(error.to_string()))?
                .create_if_missing(true);
            let location = options.get_filename().display().to_string();
            return Self::open_sqlite_with(options, location).await;
        }
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(open_error(
                "unsupported database URL; use postgres://… or sqlite://…".to_string(),
            ));
        }
        sqlx::any::install_default_drivers();
        let options =
            AnyConnectOptions::from_str(url).map_err(|error| open_error(error.to_string()))?;
        // One plain connection first: the pool would retry a refused connection until its
        // timeout and then report only that it timed out.
        options
            .connect()
            .await
            .map_err(|error| open_error(error.to_string()))?
            .close()
            .await
            .map_err(|error| open_error(error.to_string()))?;
        let pool = AnyPoolOptions::new()
            .max_connections(10)
            .connect_with(options)
            .await
            .map_err(|error| open_error(error.to_string()))?;
        let database = Self {
            pool,
            backend: Backend::Postgres,
        };
        database.migrate().await?;
        Ok(database)
    }

    async fn open_sqlite_with(
        options: SqliteConnectOptions,
        location: String,
    ) -> Result<Self, ServerError> {
        let open_error = |error: sqlx::Error| ServerError::DatabaseOpen {
            location: location.clone(),
            reason: error.to_string(),
        };
        // The journal mode is a property of the file: set it once here. The pool's connections
        // are made by the Any driver from a URL, which carries only the file and open mode;
        // foreign keys and the 5 s busy timeout are on by default there, and `synchronous` is
        // set per connection below.
        let options = options
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        options
            .connect()
            .await
            .map_err(open_error)?
            .close()
            .await
            .map_err(open_error)?;
        sqlx::any::install_default_drivers();
        let any_options =
            AnyConnectOptions::from_url(&options.to_url_lossy()).map_err(open_error)?;
        // One connection: SQLite takes one writer at a time anyway, and a single pooled
        // connection turns lock contention (busy-handler sleeps, a p99 of ~800 ms with eight
        // devices in `bench server`) into a fair queue.
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .after_connect(|connection, _| {
                Box::pin(async move {
                    sqlx::raw_sql("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON")
                        .execute(connection)
                        .await?;
                    Ok(())
                })
            })
            .connect_with(any_options)
            .await
            .map_err(open_error)?;
        let database = Self {
            pool,
            backend: Backend::Sqlite,
        };
        database.migrate().await?;
        Ok(database)
    }

    /// The engine this database runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A transaction that holds the database's writer lock: SQLite's `BEGIN IMMEDIATE`, or a
    /// PostgreSQL advisory lock on `key` held until the transaction ends.
    async fn begin_exclusive(&self, key: i64) -> Result<Transaction, ServerError> {
        match self.backend {
            Backend::Sqlite => Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?),
            Backend::Postgres => {
                let mut transaction = self.pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(key)
                    .execute(&mut *transaction)
                    .await?;
                Ok(transaction)
            }
        }
    }

    /// Applies the missing schema versions, each in its own transaction. Safe to run from
    /// several processes at once: each version is checked and applied under the writer lock.
    async fn migrate(&self) -> Result<(), ServerError> {
        let create_table = match self.backend {
            Backend::Sqlite => {
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
            }
            Backend::Postgres => {
                "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at TEXT NOT NULL)"
            }
        };
        let mut transaction = self.begin_exclusive(MIGRATION_LOCK_KEY).await?;
        sqlx::raw_sql(create_table)
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        for (index, sql) in self.backend.migrations().iter().enumerate() {
            let version = i64::try_from(index + 1).unwrap_or(i64::MAX);
            let mut transaction = self.begin_exclusive(MIGRATION_LOCK_KEY).await?;
            let applied = sqlx::query("SELECT version FROM schema_migrations WHERE version = $1")
                .bind(version)
                .fetch_optional(&mut *transaction)
                .await?;
            if applied.is_some() {
                continue;
            }
            sqlx::raw_sql(*sql).execute(&mut *transaction).await?;
            sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
                .bind(version)
                .bind(timestamp(Utc::now()))
                .execute(&mut *transaction)
                .await?;
            transaction.commit().await?;
            tracing::info!(version, backend = ?self.backend, "server schema migrated");
        }
        Ok(())
    }

    /// Begins the transaction of one ingest batch from `device_id`, holding that device's chain
    /// lock until it ends: a second batch from the same device waits, then sees the first one's
    /// events (so a re-sent batch is acknowledged as duplicates and a fork is rejected, never
    /// stored twice). SQLite has one writer anyway (`BEGIN IMMEDIATE`); PostgreSQL locks the
    /// device's row. `UNIQUE (device_id, sequence)` stays as the backstop.
    pub async fn begin_ingest(&self, device_id: DeviceId) -> Result<Transaction, ServerError> {
        match self.backend {
            Backend::Sqlite => Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?),
            Backend::Postgres => {
                let mut transaction = self.pool.begin().await?;
                sqlx::query("SELECT id FROM devices WHERE id = $1 FOR UPDATE")
                    .bind(device_id.to_string())
                    .execute(&mut *transaction)
                    .await?;
                Ok(transaction)
            }
        }
    }

    /// As [`Database::audit`], inside `transaction`: the row is kept only if the transaction
    /// commits, together with what it records.
    pub async fn audit_in(
        transaction: &mut Transaction,
        at: DateTime<Utc>,
        actor: &str,
        source: &str,
        action: &str,
        entity: &str,
    ) -> Result<(), ServerError> {
        insert_audit(&mut **transaction, at, actor, source, action, entity).await
    }

    /// Appends a row to the audit log: who (`actor`), from where (`source`, the peer address),
    /// what (`action`) on which record (`entity`, an id). The table refuses updates and deletes.
    pub async fn audit(
        &self,
        at: DateTime<Utc>,
        actor: &str,
        source: &str,
        action: &str,
        entity: &str,
    ) -> Result<(), ServerError> {
        insert_audit(&self.pool, at, actor, source, action, entity).await
    }

    pub async fn insert_study(
        &self,
        study: &Study,
        at: DateTime<Utc>,
    ) -> Result<bool, ServerError> {
        let result = sqlx::query("INSERT INTO studies (id, code, title, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING")
            .bind(study.id.to_string())
            .bind(&study.code)
            .bind(&study.title)
            .bind(timestamp(at))
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() == 1)
    }

    pub async fn study(&self, id: StudyId) -> Result<Option<Study>, ServerError> {
        let row = sqlx::query("SELECT code, title FROM studies WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            Ok(Study {
                id,
                code: row.try_get(0)?,
                title: row.try_get(1)?,
            })
        })
        .transpose()
    }

    pub async fn insert_site(&self, site: &Site, at: DateTime<Utc>) -> Result<(), ServerError> {
        sqlx::query("INSERT INTO sites (id, study_id, name, created_at) VALUES ($1, $2, $3, $4)")
            .bind(site.id.to_string())
            .bind(site.study_id.to_string())
            .bind(&site.name)
            .bind(timestamp(at))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn site(&self, id: SiteId) -> Result<Option<Site>, ServerError> {
        let row = sqlx::query("SELECT study_id, name FROM sites WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            Ok(Site {
                id,
                study_id: parse(&row.try_get::<String, _>(0)?)?,
                name: row.try_get(1)?,
            })
        })
        .transpose()
    }

    /// Inserts a patient; `false` when the subject code is already used at the site.
    pub async fn insert_patient(
        &self,
        patient: &Patient,
        at: DateTime<Utc>,
    ) -> Result<bool, ServerError> {
        let result = sqlx::query(
            "INSERT INTO patients (id, site_id, subject_code, display_name, created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(patient.id.to_string())
        .bind(patient.site_id.to_string())
        .bind(&patient.subject_code)
        .bind(patient.display_name.expose())
        .bind(timestamp(at))
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    pub async fn patient(&self, id: PatientId) -> Result<Option<Patient>, ServerError> {
        let row =
            sqlx::query("SELECT site_id, subject_code, display_name FROM patients WHERE id = $1")
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await?;
        row.map(|row| {
            Ok(Patient {
                id,
                site_id: parse(&row.try_get::<String, _>(0)?)?,
                subject_code: row.try_get(1)?,
                display_name: Redacted::new(row.try_get(2)?),
            })
        })
        .transpose()
    }

    pub async fn insert_regimen(
        &self,
        plan: &RegimenPlan,
        at: DateTime<Utc>,
    ) -> Result<(), ServerError> {
        let mut transaction = self.pool.begin().await?;
        let medication: &Medication = &plan.medication;
        sqlx::query(
            "INSERT INTO medications (id, name, strength_mg, form) VALUES ($1, $2, $3, $4)",
        )
        .bind(medication.id.to_string())
        .bind(&medication.name)
        .bind(medication.strength_mg)
        .bind(&medication.form)
        .execute(&mut *transaction)
        .await?;
        sqlx::query("INSERT INTO regimens (id, patient_id, medication_id, plan_json, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(plan.regimen.id.to_string())
            .bind(plan.regimen.patient_id.to_string())
            .bind(medication.id.to_string())
            .bind(encode(plan)?)
            .bind(timestamp(at))
            .execute(&mut *transaction)
            .await?;
        transaction.commit().await?;
        Ok(())
    }

    pub async fn regimens_of(
        &self,
        patient_id: PatientId,
    ) -> Result<Vec<RegimenPlan>, ServerError> {
        let rows = sqlx::query("SELECT plan_json FROM regimens WHERE patient_id = $1 ORDER BY id")
            .bind(patient_id.to_string())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| decode(&row.try_get::<String, _>(0)?))
            .collect()
    }

    pub async fn insert_enrolment_code(
        &self,
        code_hash: &str,
        patient_id: PatientId,
        expires_at: DateTime<Utc>,
    ) -> Result<(), ServerError> {
        sqlx::query(
            "INSERT INTO enrolment_codes (code_hash, patient_id, expires_at) VALUES ($1, $2, $3)",
        )
        .bind(code_hash)
        .bind(patient_id.to_string())
        .bind(timestamp(expires_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Consumes an unused, unexpired enrolment code and registers the device, atomically.
    /// Returns the patient, or `None` when the code is unknown, used or expired.
    pub async fn enrol_device(
        &self,
        code_hash: &str,
        device: &DeviceRecord,
        token_hash: &str,
        label: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<PatientId>, ServerError> {
        let mut transaction = self.pool.begin().await?;
        let claimed = sqlx::query(
            "UPDATE enrolment_codes SET used_at = $1 WHERE code_hash = $2 AND used_at IS NULL AND expires_at > $1 RETURNING patient_id",
        )
        .bind(timestamp(at))
        .bind(code_hash)
        .fetch_optional(&mut *transaction)
        .await?;
        let Some(row) = claimed else {
            return Ok(None);
        };
        let patient_id: PatientId = parse(&row.try_get::<String, _>(0)?)?;
        sqlx::query(
            "INSERT INTO devices (id, patient_id, public_key, token_hash, label, enrolled_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(device.id.to_string())
        .bind(patient_id.to_string())
        .bind(&device.public_key)
        .bind(token_hash)
        .bind(label)
        .bind(timestamp(at))
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(Some(patient_id))
    }

    /// Marks a device revoked (the first revocation time is kept); `false` if no such device.
    pub async fn revoke_device(
        &self,
        device_id: DeviceId,
        at: DateTime<Utc>,
    ) -> Result<bool, ServerError> {
        let result =
            sqlx::query("UPDATE devices SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1")
                .bind(device_id.to_string())
                .bind(timestamp(at))
                .execute(&self.pool)
                .await?;
        Ok(result.rows_affected() == 1)
    }

    pub async fn device_by_token(
        &self,
        token_hash: &str,
    ) -> Result<Option<DeviceRecord>, ServerError> {
        let row = sqlx::query(
            "SELECT id, patient_id, public_key, revoked_at FROM devices WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| {
            Ok(DeviceRecord {
                id: parse(&row.try_get::<String, _>(0)?)?,
                patient_id: parse(&row.try_get::<String, _>(1)?)?,
                public_key: row.try_get(2)?,
                revoked: row.try_get::<Option<String>, _>(3)?.is_some(),
            })
        })
        .transpose()
    }

    /// The device's last stored (sequence, hash), within `transaction`.
    pub async fn chain_head(
        transaction: &mut Transaction,
        device_id: DeviceId,
    ) -> Result<Option<(u64, String)>, ServerError> {
        let row = sqlx::query("SELECT sequence, hash FROM dose_events WHERE device_id = $1 ORDER BY sequence DESC LIMIT 1")
            .bind(device_id.to_string())
            .fetch_optional(&mut **transaction)
            .await?;
        row.map(|row| {
            Ok((
                u64::try_from(row.try_get::<i64, _>(0)?).unwrap_or(0),
                row.try_get(1)?,
            ))
        })
        .transpose()
    }

    /// The stored hash of a device's event `sequence`, if stored.
    pub async fn stored_hash(
        transaction: &mut Transaction,
        device_id: DeviceId,
        sequence: u64,
    ) -> Result<Option<String>, ServerError> {
        let row =
            sqlx::query("SELECT hash FROM dose_events WHERE device_id = $1 AND sequence = $2")
                .bind(device_id.to_string())
                .bind(i64::try_from(sequence).unwrap_or(i64::MAX))
                .fetch_optional(&mut **transaction)
                .await?;
        row.map(|row| Ok(row.try_get(0)?)).transpose()
    }

    pub async fn insert_dose_event(
        transaction: &mut Transaction,
        device_id: DeviceId,
        signed: &SignedDoseEvent,
        at: DateTime<Utc>,
    ) -> Result<(), ServerError> {
        let event = &signed.record.event;
        sqlx::query(
            "INSERT INTO dose_events (event_id, device_id, sequence, patient_id, regimen_id, scheduled_at, recorded_at, outcome, record_json, hash, signature, received_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(event.id.to_string())
        .bind(device_id.to_string())
        .bind(i64::try_from(signed.record.sequence).unwrap_or(i64::MAX))
        .bind(event.patient_id.to_string())
        .bind(event.regimen_id.to_string())
        .bind(timestamp(event.scheduled_at))
        .bind(timestamp(event.recorded_at))
        .bind(event.outcome.code())
        .bind(encode(&signed.record)?)
        .bind(&signed.hash)
        .bind(&signed.signature)
        .bind(timestamp(at))
        .execute(&mut **transaction)
        .await?;
        Ok(())
    }

    /// Records a chain anomaly (gap, fork, bad signature) outside any rolled-back batch.
    pub async fn record_anomaly(
        &self,
        device_id: DeviceId,
        sequence: Option<u64>,
        kind: &str,
        detail: &str,
        at: DateTime<Utc>,
    ) -> Result<(), ServerError> {
        sqlx::query(
            "INSERT INTO anomalies (device_id, sequence, kind, detail, at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(device_id.to_string())
        .bind(sequence.and_then(|value| i64::try_from(value).ok()))
        .bind(kind)
        .bind(detail)
        .bind(timestamp(at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Number of recorded anomalies for a device.
    pub async fn anomaly_count(&self, device_id: DeviceId) -> Result<i64, ServerError> {
        Ok(
            sqlx::query("SELECT count(*) FROM anomalies WHERE device_id = $1")
                .bind(device_id.to_string())
                .fetch_one(&self.pool)
                .await?
                .try_get(0)?,
        )
    }

    /// A patient's dose events whose scheduled time lies in `[from, to)`.
    pub async fn dose_events_of(
        &self,
        patient_id: PatientId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<DoseEvent>, ServerError> {
        let rows = sqlx::query(
            "SELECT record_json FROM dose_events WHERE patient_id = $1 AND scheduled_at >= $2 AND scheduled_at < $3 ORDER BY scheduled_at",
        )
        .bind(patient_id.to_string())
        .bind(timestamp(from))
        .bind(timestamp(to))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let record: dosewitness_protocol::ChainRecord =
                    decode(&row.try_get::<String, _>(0)?)?;
                Ok(record.event)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

    use super::*;

    #[tokio::test]
    async fn sqlite_binds_numbered_placeholders_by_number() {
        let directory = tempfile::tempdir().unwrap();
        let database = Database::open_sqlite(&directory.path().join("server.db"))
            .await
            .unwrap();
        assert_eq!(database.backend(), Backend::Sqlite);
        let row = sqlx::query("SELECT $2 || '/' || $1, $1 = $3")
            .bind("first")
            .bind("second")
            .bind("first")
            .fetch_one(&database.pool)
            .await
            .unwrap();
        assert_eq!(row.try_get::<String, _>(0).unwrap(), "second/first");
        assert_eq!(row.try_get::<i64, _>(1).unwrap(), 1);
    }

    #[tokio::test]
    async fn reopening_applies_no_migration_twice() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("server.db");
        drop(Database::open_sqlite(&path).await.unwrap());
        let database = Database::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        let versions: Vec<i64> =
            sqlx::query("SELECT version FROM schema_migrations ORDER BY version")
                .fetch_all(&database.pool)
                .await
                .unwrap()
                .iter()
                .map(|row| row.try_get(0).unwrap())
                .collect();
        let expected: Vec<i64> = (1..=SQLITE_MIGRATIONS.len() as i64).collect();
        assert_eq!(versions, expected);
        let journal: String = sqlx::query("PRAGMA journal_mode")
            .fetch_one(&database.pool)
            .await
            .unwrap()
            .try_get(0)
            .unwrap();
        assert_eq!(journal, "wal");
        let foreign_keys: i64 = sqlx::query("PRAGMA foreign_keys")
            .fetch_one(&database.pool)
            .await
            .unwrap()
            .try_get(0)
            .unwrap();
        assert_eq!(foreign_keys, 1);
    }

    #[tokio::test]
    async fn open_errors_name_the_location_without_the_password() {
        let error = Database::connect("postgres://app:hunter2@127.0.0.1:1/clinic?password=hunter2")
            .await
            .unwrap_err();
        let message = error.to_string();
        assert!(
            matches!(error, ServerError::DatabaseOpen { .. }),
            "{message}"
        );
        assert!(
            message.contains("postgres://app@127.0.0.1:1/clinic"),
            "{message}"
        );
        assert!(!message.contains("hunter2"), "{message}");
        let error = Database::connect("mysql://root:hunter2@localhost/db")
            .await
            .unwrap_err();
        let message = error.to_string();
        assert!(message.contains("unsupported database URL"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }
}
