//! The server database: connection, migrations and every query. SQLite now; the PostgreSQL
//! backend arrives behind this same type (see ARCHITECTURE.md).

use crate::error::ServerError;
use chrono::{DateTime, SecondsFormat, Utc};
use dosewitness_domain::{
    DeviceId, DoseEvent, Medication, Patient, PatientId, Redacted, Site, SiteId, Study, StudyId,
};
use dosewitness_protocol::{RegimenPlan, SignedDoseEvent};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, Sqlite, SqlitePool, Transaction};
use std::path::Path;
use std::time::Duration;

const MIGRATIONS: &[&str] = &[r#"
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
"#];

fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn decode<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, ServerError> {
    serde_json::from_str(json).map_err(|error| ServerError::Decode(error.to_string()))
}

fn encode<T: serde::Serialize>(value: &T) -> Result<String, ServerError> {
    serde_json::to_string(value).map_err(|error| ServerError::Decode(error.to_string()))
}

fn parse<T: std::str::FromStr>(text: &str) -> Result<T, ServerError> {
    text.parse()
        .map_err(|_| ServerError::Decode(format!("bad id {text:?}")))
}

/// A device as the server knows it.
#[derive(Debug, Clone)]
pub struct DeviceRecord {
    pub id: DeviceId,
    pub patient_id: PatientId,
    pub public_key: String,
    pub revoked: bool,
}

/// The server database.
#[derive(Debug, Clone)]
pub struct Database {
    pool: SqlitePool,
}

impl Database {
    /// Opens (creating if needed) the SQLite database at `path` and migrates it.
    pub async fn open_sqlite(path: &Path) -> Result<Self, ServerError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|error| ServerError::DatabaseOpen {
                location: path.display().to_string(),
                reason: error.to_string(),
            })?;
        let database = Self { pool };
        database.migrate().await?;
        Ok(database)
    }

    async fn migrate(&self) -> Result<(), ServerError> {
        sqlx::raw_sql("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
            .execute(&self.pool)
            .await?;
        let applied: i64 = sqlx::query("SELECT count(*) FROM schema_migrations")
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        for (index, sql) in MIGRATIONS
            .iter()
            .enumerate()
            .skip(usize::try_from(applied).unwrap_or(0))
        {
            let mut transaction = self.pool.begin().await?;
            sqlx::raw_sql(*sql).execute(&mut *transaction).await?;
            sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)")
                .bind(index as i64 + 1)
                .bind(timestamp(Utc::now()))
                .execute(&mut *transaction)
                .await?;
            transaction.commit().await?;
        }
        Ok(())
    }

    pub async fn begin(&self) -> Result<Transaction<'static, Sqlite>, ServerError> {
        Ok(self.pool.begin().await?)
    }

    pub async fn audit(
        &self,
        at: DateTime<Utc>,
        actor: &str,
        action: &str,
        entity: &str,
    ) -> Result<(), ServerError> {
        sqlx::query("INSERT INTO audit_log (at, actor, action, entity) VALUES (?, ?, ?, ?)")
            .bind(timestamp(at))
            .bind(actor)
            .bind(action)
            .bind(entity)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn insert_study(
        &self,
        study: &Study,
        at: DateTime<Utc>,
    ) -> Result<bool, ServerError> {
        let result = sqlx::query("INSERT INTO studies (id, code, title, created_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING")
            .bind(study.id.to_string())
            .bind(&study.code)
            .bind(&study.title)
            .bind(timestamp(at))
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() == 1)
    }

    pub async fn study(&self, id: StudyId) -> Result<Option<Study>, ServerError> {
        let row = sqlx::query("SELECT code, title FROM studies WHERE id = ?")
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
        sqlx::query("INSERT INTO sites (id, study_id, name, created_at) VALUES (?, ?, ?, ?)")
            .bind(site.id.to_string())
            .bind(site.study_id.to_string())
            .bind(&site.name)
            .bind(timestamp(at))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn site(&self, id: SiteId) -> Result<Option<Site>, ServerError> {
        let row = sqlx::query("SELECT study_id, name FROM sites WHERE id = ?")
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
            "INSERT INTO patients (id, site_id, subject_code, display_name, created_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
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
            sqlx::query("SELECT site_id, subject_code, display_name FROM patients WHERE id = ?")
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
        sqlx::query("INSERT INTO medications (id, name, strength_mg, form) VALUES (?, ?, ?, ?)")
            .bind(medication.id.to_string())
            .bind(&medication.name)
            .bind(medication.strength_mg)
            .bind(&medication.form)
            .execute(&mut *transaction)
            .await?;
        sqlx::query("INSERT INTO regimens (id, patient_id, medication_id, plan_json, created_at) VALUES (?, ?, ?, ?, ?)")
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
        let rows = sqlx::query("SELECT plan_json FROM regimens WHERE patient_id = ? ORDER BY id")
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
            "INSERT INTO enrolment_codes (code_hash, patient_id, expires_at) VALUES (?, ?, ?)",
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
            "UPDATE enrolment_codes SET used_at = ? WHERE code_hash = ? AND used_at IS NULL AND expires_at > ? RETURNING patient_id",
        )
        .bind(timestamp(at))
        .bind(code_hash)
        .bind(timestamp(at))
        .fetch_optional(&mut *transaction)
        .await?;
        let Some(row) = claimed else {
            return Ok(None);
        };
        let patient_id: PatientId = parse(&row.try_get::<String, _>(0)?)?;
        sqlx::query(
            "INSERT INTO devices (id, patient_id, public_key, token_hash, label, enrolled_at) VALUES (?, ?, ?, ?, ?, ?)",
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

    pub async fn device_by_token(
        &self,
        token_hash: &str,
    ) -> Result<Option<DeviceRecord>, ServerError> {
        let row = sqlx::query(
            "SELECT id, patient_id, public_key, revoked_at FROM devices WHERE token_hash = ?",
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
        transaction: &mut Transaction<'static, Sqlite>,
        device_id: DeviceId,
    ) -> Result<Option<(u64, String)>, ServerError> {
        let row = sqlx::query("SELECT sequence, hash FROM dose_events WHERE device_id = ? ORDER BY sequence DESC LIMIT 1")
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
        transaction: &mut Transaction<'static, Sqlite>,
        device_id: DeviceId,
        sequence: u64,
    ) -> Result<Option<String>, ServerError> {
        let row = sqlx::query("SELECT hash FROM dose_events WHERE device_id = ? AND sequence = ?")
            .bind(device_id.to_string())
            .bind(i64::try_from(sequence).unwrap_or(i64::MAX))
            .fetch_optional(&mut **transaction)
            .await?;
        row.map(|row| Ok(row.try_get(0)?)).transpose()
    }

    pub async fn insert_dose_event(
        transaction: &mut Transaction<'static, Sqlite>,
        device_id: DeviceId,
        signed: &SignedDoseEvent,
        at: DateTime<Utc>,
    ) -> Result<(), ServerError> {
        let event = &signed.record.event;
        sqlx::query(
            "INSERT INTO dose_events (event_id, device_id, sequence, patient_id, regimen_id, scheduled_at, recorded_at, outcome, record_json, hash, signature, received_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            "INSERT INTO anomalies (device_id, sequence, kind, detail, at) VALUES (?, ?, ?, ?, ?)",
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
            sqlx::query("SELECT count(*) FROM anomalies WHERE device_id = ?")
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
            "SELECT record_json FROM dose_events WHERE patient_id = ? AND scheduled_at >= ? AND scheduled_at < ? ORDER BY scheduled_at",
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
