//! The device store itself.

use crate::error::StoreError;
use crate::key::{KeyCustody, StoreKey};
use crate::schema::{self, SCHEMA_VERSION};
use chrono::{DateTime, SecondsFormat, Utc};
use dosewitness_domain::{
    DeviceId, DoseEvent, DoseEventId, EvidencePolicy, MedicationId, PatientId,
};
use dosewitness_protocol::chain::verify_chain;
use dosewitness_protocol::{ChainRecord, GENESIS_HASH, RegimenPlan, SignedDoseEvent};
use ed25519_dalek::SigningKey;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use std::path::{Path, PathBuf};

/// An open, decrypted device store.
#[derive(Debug)]
pub struct DeviceStore {
    connection: Connection,
    path: PathBuf,
    /// Read once at open from the encrypted identity row; signs every appended event.
    signing_key: SigningKey,
}

/// The device's identity and, once enrolled, its server credential.
#[derive(Debug, Clone)]
pub struct DeviceIdentity {
    pub device_id: DeviceId,
    /// Hex Ed25519 public key.
    pub public_key: String,
    pub server_url: Option<String>,
    pub enrolled: bool,
}

/// One JPEG keyframe kept as evidence for a dose event. `Debug` shows the size, not the image.
#[derive(Clone, PartialEq, Eq)]
pub struct EvidenceFrame {
    /// Capture time in the session's frame source, milliseconds.
    pub captured_at_ms: u64,
    pub jpeg: Vec<u8>,
}

impl std::fmt::Debug for EvidenceFrame {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "EvidenceFrame({} ms, {} bytes)",
            self.captured_at_ms,
            self.jpeg.len()
        )
    }
}

/// An evidence frame still to upload: the acknowledged event it belongs to and its index (its
/// position in capture order, the number the server knows it by). `Debug` hides the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingEvidence {
    pub sequence: u64,
    pub event_id: DoseEventId,
    pub index: u32,
    pub frame: EvidenceFrame,
}

/// Sync as the app shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncStatus {
    /// Dose events not yet acknowledged by the server.
    pub pending: u64,
    pub last_success_at: Option<DateTime<Utc>>,
    /// The last failure in plain words and when, cleared by the next success.
    pub last_error: Option<(String, DateTime<Utc>)>,
    /// The server's clock minus the device's, when last measured.
    pub clock_skew_ms: Option<i64>,
    pub skew_measured_at: Option<DateTime<Utc>>,
    /// Evidence frames the study's policy sends that the server has not acknowledged yet
    /// (including frames of events still in the outbox).
    pub pending_evidence: u64,
}

/// A summary for `store info` and the demo (counts and ids only, no PHI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreInfo {
    pub path: PathBuf,
    pub schema_version: i64,
    pub device_id: Option<DeviceId>,
    pub dose_events: u64,
    pub pending_sync: u64,
    pub evidence_frames: u64,
    pub last_hash: Option<String>,
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn decode<T: serde::de::DeserializeOwned>(what: &'static str, json: &str) -> Result<T, StoreError> {
    serde_json::from_str(json).map_err(|error| StoreError::Decode {
        what,
        reason: error.to_string(),
    })
}

fn encode<T: serde::Serialize>(what: &'static str, value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|error| StoreError::Decode {
        what,
        reason: error.to_string(),
    })
}

impl DeviceStore {
    /// Creates a new encrypted store at `path` with a fresh device identity. Refuses to touch an
    /// existing file.
    pub fn create(path: &Path, key: &StoreKey, at: DateTime<Utc>) -> Result<Self, StoreError> {
        Self::create_with(path, Some(key), at)
    }

    /// Creates an **unencrypted** store, only so `bench store` can measure SQLCipher's overhead
    /// against plain SQLite in the same run. Never used for patient data.
    pub fn create_plaintext_for_benchmark(
        path: &Path,
        at: DateTime<Utc>,
    ) -> Result<Self, StoreError> {
        Self::create_with(path, None, at)
    }

    /// Builds the new store under a temporary name and renames it into place only when it is
    /// complete, so a crash during creation never leaves a half-made store at `path`.
    fn create_with(
        path: &Path,
        key: Option<&StoreKey>,
        at: DateTime<Utc>,
    ) -> Result<Self, StoreError> {
        if path.exists() {
            return Err(StoreError::AlreadyExists {
                path: path.to_path_buf(),
            });
        }
        let mut building = path.as_os_str().to_owned();
        building.push(".creating");
        let building = PathBuf::from(building);
        for leftover in [
            building.clone(),
            companion(&building, "-wal"),
            companion(&building, "-journal"),
        ] {
            // A leftover is an incomplete store from a crash during creation: it never held data.
            let _ = std::fs::remove_file(leftover);
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut connection = Connection::open_with_flags(&building, flags)?;
        configure(&connection, &building, key)?;
        schema::migrate(&mut connection, &building)?;
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|error| StoreError::Io {
            action: "drawing random bytes for the device key in",
            path: path.to_path_buf(),
            source: std::io::Error::other(error.to_string()),
        })?;
        let device_id = DeviceId::generate(at);
        connection.execute(
            "INSERT INTO device_identity (singleton, device_id, signing_key, created_at) VALUES (1, ?1, ?2, ?3)",
            params![device_id.to_string(), seed.as_slice(), timestamp(at)],
        )?;
        audit(
            &connection,
            at,
            "store_created",
            &format!("device {device_id}"),
        )?;
        // Closing checkpoints the WAL into the file, so one rename moves the whole store.
        drop(connection);
        std::fs::rename(&building, path).map_err(|source| StoreError::Io {
            action: "installing the new store at",
            path: path.to_path_buf(),
            source,
        })?;
        Self::open_with(path, key)
    }

    /// Opens an existing store. A wrong key leaves the file untouched; a file whose integrity
    /// check fails is quarantined (renamed aside) and reported.
    pub fn open(path: &Path, key: &StoreKey) -> Result<Self, StoreError> {
        Self::open_with(path, Some(key))
    }

    fn open_with(path: &Path, key: Option<&StoreKey>) -> Result<Self, StoreError> {
        if !path.exists() {
            return Err(StoreError::NotFound {
                path: path.to_path_buf(),
            });
        }
        ensure_writable(path)?;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut connection = Connection::open_with_flags(path, flags)?;
        configure(&connection, path, key)?;
        let integrity: String = connection
            .query_row("PRAGMA quick_check", [], |row| row.get(0))
            .unwrap_or_else(|error| error.to_string());
        if integrity != "ok" {
            drop(connection);
            return Err(quarantine(path, integrity));
        }
        schema::migrate(&mut connection, path)?;
        let signing_key = read_signing_key(&connection)?;
        Ok(Self {
            connection,
            path: path.to_path_buf(),
            signing_key,
        })
    }

    /// Opens the store with the key `key_file` keeps, finishing a key rotation that a crash
    /// interrupted: if the current key does not open the store but the pending key does, the
    /// pending key is installed.
    pub fn open_with_custody(path: &Path, key_file: &dyn KeyCustody) -> Result<Self, StoreError> {
        let current = key_file.load()?;
        match Self::open(path, &current) {
            Err(StoreError::WrongKeyOrCorrupt { .. }) if key_file.pending()?.is_some() => {
                let pending = key_file.pending()?.ok_or(StoreError::WrongKeyOrCorrupt {
                    path: path.to_path_buf(),
                })?;
                let store = Self::open(path, &pending)?;
                key_file.finish_rotation()?;
                Ok(store)
            }
            Ok(store) => {
                if key_file.pending()?.is_some() {
                    // The crash came before the database was re-encrypted: the pending key was
                    // never used.
                    key_file.abandon_rotation()?;
                }
                Ok(store)
            }
            Err(error) => Err(error),
        }
    }

    /// Re-encrypts every page under a new random key and installs it in `key_file`, crash-safely:
    /// the new key is written durably first, then the database is re-encrypted in one
    /// transaction, then the key file is swapped atomically. Returns nothing but success.
    pub fn rekey(
        &mut self,
        key_file: &dyn KeyCustody,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let new_key = key_file.begin_rotation()?;
        // SQLCipher re-encrypts through the rollback journal, not the WAL.
        self.connection
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode = DELETE;")?;
        self.connection.execute_batch(&new_key.rekey_pragma())?;
        self.connection
            .execute_batch("PRAGMA journal_mode = WAL;")?;
        key_file.finish_rotation()?;
        self.audit(at, "store_rekeyed", "store re-encrypted under a new key")
    }

    /// Where the store lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The device's identity.
    pub fn identity(&self) -> Result<DeviceIdentity, StoreError> {
        let (device_id, server_url, token): (String, Option<String>, Option<String>) =
            self.connection.query_row(
                "SELECT device_id, server_url, device_token FROM device_identity",
                [],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )?;
        Ok(DeviceIdentity {
            device_id: device_id.parse().map_err(|_| StoreError::Decode {
                what: "device id",
                reason: "not a UUID".to_string(),
            })?,
            public_key: hex::encode(self.signing_key.verifying_key().to_bytes()),
            server_url,
            enrolled: token.is_some(),
        })
    }

    /// Records a completed enrolment: the server's id for this device replaces the local one,
    /// with the credential and the regimens, in one transaction.
    pub fn save_enrolment(
        &mut self,
        device_id: DeviceId,
        server_url: &str,
        device_token: &str,
        regimens: &[RegimenPlan],
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        transaction.execute(
            "UPDATE device_identity SET device_id = ?1, server_url = ?2, device_token = ?3",
            params![device_id.to_string(), server_url, device_token],
        )?;
        upsert_regimens(&transaction, regimens, at)?;
        audit(
            &transaction,
            at,
            "enrolled",
            &format!("device {device_id}, {} regimens", regimens.len()),
        )?;
        transaction.commit()?;
        Ok(())
    }

    /// The server URL and bearer token, once enrolled.
    pub fn server_credential(&self) -> Result<(String, String), StoreError> {
        let (url, token): (Option<String>, Option<String>) = self.connection.query_row(
            "SELECT server_url, device_token FROM device_identity",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        url.zip(token).ok_or(StoreError::NotEnrolled)
    }

    /// Stores the regimens the server sent (new ones added, changed ones replaced).
    pub fn save_regimens(
        &mut self,
        regimens: &[RegimenPlan],
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        upsert_regimens(&transaction, regimens, at)?;
        transaction.commit()?;
        Ok(())
    }

    /// Records the server's clock minus the device's, measured at `at`.
    pub fn record_clock_skew(&mut self, skew_ms: i64, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.connection.execute(
            "UPDATE sync_state SET clock_skew_ms = ?1, skew_measured_at = ?2",
            params![skew_ms, timestamp(at)],
        )?;
        Ok(())
    }

    /// Records how a sync pass ended: success clears the last error; a failure keeps its
    /// plain-words message (no PHI: messages name servers and codes).
    pub fn record_sync_outcome(
        &mut self,
        error: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        match error {
            None => self.connection.execute(
                "UPDATE sync_state SET last_success_at = ?1, last_error = NULL, last_error_at = NULL",
                params![timestamp(at)],
            )?,
            Some(message) => self.connection.execute(
                "UPDATE sync_state SET last_error = ?1, last_error_at = ?2",
                params![message, timestamp(at)],
            )?,
        };
        Ok(())
    }

    /// What the app shows about sync: pending events, last success, last error, clock skew.
    pub fn sync_status(&self) -> Result<SyncStatus, StoreError> {
        let pending: i64 = self
            .connection
            .query_row("SELECT count(*) FROM outbox", [], |row| row.get(0))?;
        let (clock_skew_ms, [skew_measured_at, last_success_at, last_error, last_error_at]) =
            self.connection.query_row(
                "SELECT clock_skew_ms, skew_measured_at, last_success_at, last_error, last_error_at
                 FROM sync_state",
                [],
                |row| {
                    let texts: [Option<String>; 4] =
                        [row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?];
                    Ok((row.get::<_, Option<i64>>(0)?, texts))
                },
            )?;
        let time = |text: Option<String>| text.map(|text| parse_timestamp(&text)).transpose();
        Ok(SyncStatus {
            pending: u64::try_from(pending).unwrap_or(0),
            last_success_at: time(last_success_at)?,
            last_error: last_error.zip(time(last_error_at)?),
            clock_skew_ms,
            skew_measured_at: time(skew_measured_at)?,
            pending_evidence: self.pending_evidence_count()?,
        })
    }

    /// The regimens this device follows.
    pub fn regimens(&self) -> Result<Vec<RegimenPlan>, StoreError> {
        let mut statement = self
            .connection
            .prepare("SELECT plan_json FROM regimens ORDER BY regimen_id")?;
        let rows = statement.query_map([], |row| row.get::<_, String>(0))?;
        rows.map(|json| decode("regimen", &json?)).collect()
    }

    /// Chains, signs and stores `event`, and enqueues it for sync, in one durable transaction.
    /// Returns the signed event.
    pub fn append_dose_event(
        &mut self,
        event: DoseEvent,
        at: DateTime<Utc>,
    ) -> Result<SignedDoseEvent, StoreError> {
        self.append_dose_event_with_evidence(event, &[], at)
    }

    /// As [`Self::append_dose_event`], keeping `evidence` keyframes with the event in the same
    /// transaction (encrypted with the database).
    pub fn append_dose_event_with_evidence(
        &mut self,
        event: DoseEvent,
        evidence: &[EvidenceFrame],
        at: DateTime<Utc>,
    ) -> Result<SignedDoseEvent, StoreError> {
        let path = self.path.clone();
        self.write_dose_event(event, evidence, at)
            .map_err(|error| classify_write_error(error, &path))
    }

    fn write_dose_event(
        &mut self,
        event: DoseEvent,
        evidence: &[EvidenceFrame],
        at: DateTime<Utc>,
    ) -> Result<SignedDoseEvent, StoreError> {
        let key = self.signing_key.clone();
        let flagged = event.outcome.is_flagged();
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let last: Option<(i64, String)> = transaction
            .prepare_cached(
                "SELECT sequence, hash FROM dose_events ORDER BY sequence DESC LIMIT 1",
            )?
            .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()?;
        let (sequence, previous_hash) = match last {
            Some((sequence, hash)) => (sequence_from_sql(sequence)? + 1, hash),
            None => (1, GENESIS_HASH.to_string()),
        };
        let signed = ChainRecord {
            format: ChainRecord::FORMAT,
            sequence,
            previous_hash,
            event,
        }
        .sign(&key);
        transaction
            .prepare_cached(
                "INSERT INTO dose_events (sequence, event_id, record_json, hash, signature, recorded_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                sequence_to_sql(sequence),
                signed.record.event.id.to_string(),
                encode("dose event", &signed.record)?,
                signed.hash,
                signed.signature,
                timestamp(signed.record.event.recorded_at),
            ],
        )?;
        transaction
            .prepare_cached("INSERT INTO outbox (sequence, enqueued_at) VALUES (?1, ?2)")?
            .execute(params![sequence_to_sql(sequence), timestamp(at)])?;
        // Frames are numbered in capture order (ties keep the given order): the index is how
        // the server knows each frame.
        let mut in_capture_order: Vec<&EvidenceFrame> = evidence.iter().collect();
        in_capture_order.sort_by_key(|frame| frame.captured_at_ms);
        for (index, frame) in in_capture_order.into_iter().enumerate() {
            transaction.execute(
                "INSERT INTO evidence (sequence, captured_at_ms, jpeg, created_at, frame_index, flagged)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    sequence_to_sql(sequence),
                    sequence_to_sql(frame.captured_at_ms),
                    frame.jpeg.as_slice(),
                    timestamp(at),
                    sequence_to_sql(index as u64),
                    flagged,
                ],
            )?;
        }
        // No audit row: the chained, signed event is itself the record of this write, and
        // `recorded_at` says when. The audit log records what changes the store otherwise
        // (creation, enrolment, re-keying, evidence purges).
        transaction.commit()?;
        Ok(signed)
    }

    /// Enrols (or re-enrols) the patient's face on this device: `template` is the vision crate's
    /// serialised face template. It replaces any earlier one, and is kept only here, encrypted.
    pub fn enrol_face(
        &mut self,
        patient_id: PatientId,
        template: &[u8],
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.write_with_audit(
            "INSERT INTO enrolled_patient (singleton, patient_id, face_template, enrolled_at)
             VALUES (1, ?1, ?2, ?3)
             ON CONFLICT (singleton) DO UPDATE SET patient_id = excluded.patient_id,
                 face_template = excluded.face_template, enrolled_at = excluded.enrolled_at",
            params![patient_id.to_string(), template, timestamp(at)],
            (at, "face_enrolled", &format!("patient {patient_id}")),
        )
    }

    /// The enrolled patient and their face template, if a face was enrolled.
    pub fn enrolled_face(&self) -> Result<Option<(PatientId, Vec<u8>)>, StoreError> {
        let row: Option<(String, Vec<u8>)> = self
            .connection
            .query_row(
                "SELECT patient_id, face_template FROM enrolled_patient",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        row.map(|(patient_id, template)| {
            let patient_id = patient_id.parse().map_err(|_| StoreError::Decode {
                what: "enrolled patient id",
                reason: patient_id.clone(),
            })?;
            Ok((patient_id, template))
        })
        .transpose()
    }

    /// Keeps one more reference template of the pill of `medication_id`.
    pub fn add_pill_template(
        &mut self,
        medication_id: MedicationId,
        template: &[u8],
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.write_with_audit(
            "INSERT INTO pill_templates (medication_id, template, created_at) VALUES (?1, ?2, ?3)",
            params![medication_id.to_string(), template, timestamp(at)],
            (
                at,
                "pill_template_added",
                &format!("medication {medication_id}"),
            ),
        )
    }

    /// Runs one write and its audit row (`at`, action, detail) in one `IMMEDIATE` transaction.
    fn write_with_audit(
        &mut self,
        sql: &str,
        parameters: impl rusqlite::Params,
        (at, action, detail): (DateTime<Utc>, &str, &str),
    ) -> Result<(), StoreError> {
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        transaction.execute(sql, parameters)?;
        audit(&transaction, at, action, detail)?;
        transaction.commit()?;
        Ok(())
    }

    /// The pill templates of `medication_id`, oldest first.
    pub fn pill_templates(&self, medication_id: MedicationId) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut statement = self
            .connection
            .prepare("SELECT template FROM pill_templates WHERE medication_id = ?1 ORDER BY id")?;
        let rows = statement.query_map([medication_id.to_string()], |row| row.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The evidence keyframes kept for event `sequence`, in capture order.
    pub fn evidence_for(&self, sequence: u64) -> Result<Vec<EvidenceFrame>, StoreError> {
        let mut statement = self.connection.prepare(
            "SELECT captured_at_ms, jpeg FROM evidence WHERE sequence = ?1 ORDER BY frame_index",
        )?;
        let rows = statement.query_map([sequence_to_sql(sequence)], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?))
        })?;
        rows.map(|row| {
            let (captured_at_ms, jpeg) = row?;
            Ok(EvidenceFrame {
                captured_at_ms: sequence_from_sql(captured_at_ms)?,
                jpeg,
            })
        })
        .collect()
    }

    /// Deletes the evidence of events the server acknowledged more than `retain` before `now`;
    /// evidence of events not yet delivered is never purged, nor are frames the evidence policy
    /// sends that the server has not acknowledged yet. Returns the number of frames deleted.
    pub fn purge_delivered_evidence(
        &mut self,
        retain: chrono::Duration,
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let cutoff = timestamp(now - retain);
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let deleted = transaction.execute(
            &format!(
                "DELETE FROM evidence WHERE sequence IN
                   (SELECT sequence FROM dose_events WHERE acknowledged_at <= ?1)
                 AND NOT ({TO_UPLOAD})"
            ),
            params![cutoff],
        )?;
        if deleted > 0 {
            audit(
                &transaction,
                now,
                "evidence_purged",
                &format!("{deleted} frames acknowledged before {cutoff}"),
            )?;
        }
        transaction.commit()?;
        Ok(deleted)
    }

    /// Sets the study's evidence policy, which decides which frames sync uploads (and so which
    /// frames a purge must keep until uploaded). Recorded in the audit log when it changes.
    pub fn set_evidence_policy(
        &mut self,
        policy: EvidencePolicy,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if self.evidence_policy()? == policy {
            return Ok(());
        }
        self.write_with_audit(
            "UPDATE sync_state SET evidence_policy = ?1",
            params![policy.code()],
            (
                at,
                "evidence_policy_set",
                &format!("evidence policy {}", policy.code()),
            ),
        )
    }

    /// The study's evidence policy as last set ([`EvidencePolicy::FlaggedOnly`] until then).
    pub fn evidence_policy(&self) -> Result<EvidencePolicy, StoreError> {
        let code: String =
            self.connection
                .query_row("SELECT evidence_policy FROM sync_state", [], |row| {
                    row.get(0)
                })?;
        EvidencePolicy::from_code(&code).ok_or(StoreError::Decode {
            what: "evidence policy",
            reason: code,
        })
    }

    /// Frames the evidence policy sends that the server has not acknowledged, including frames
    /// of events not delivered yet.
    pub fn pending_evidence_count(&self) -> Result<u64, StoreError> {
        let count: i64 = self.connection.query_row(
            &format!("SELECT count(*) FROM evidence WHERE {TO_UPLOAD}"),
            [],
            |row| row.get(0),
        )?;
        sequence_from_sql(count)
    }

    /// Delivered events with frames to upload under the evidence policy, oldest first, as
    /// (sequence, event id). Evidence follows its event: the server refuses frames of events it
    /// does not hold.
    pub fn events_with_pending_evidence(&self) -> Result<Vec<(u64, DoseEventId)>, StoreError> {
        let mut statement = self.connection.prepare(&format!(
            "SELECT DISTINCT e.sequence, d.event_id FROM evidence e JOIN dose_events d USING (sequence)
             WHERE d.acknowledged_at IS NOT NULL AND {TO_UPLOAD} ORDER BY e.sequence"
        ))?;
        let rows = statement.query_map([], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
        })?;
        rows.map(|row| {
            let (sequence, event_id) = row?;
            Ok((sequence_from_sql(sequence)?, parse_event_id(&event_id)?))
        })
        .collect()
    }

    /// The frames of delivered event `sequence` still to upload under the evidence policy, by
    /// index.
    pub fn pending_evidence_of(&self, sequence: u64) -> Result<Vec<PendingEvidence>, StoreError> {
        let mut statement = self.connection.prepare(&format!(
            "SELECT d.event_id, e.frame_index, e.captured_at_ms, e.jpeg
             FROM evidence e JOIN dose_events d USING (sequence)
             WHERE e.sequence = ?1 AND d.acknowledged_at IS NOT NULL AND {TO_UPLOAD}
             ORDER BY e.frame_index"
        ))?;
        let rows = statement.query_map([sequence_to_sql(sequence)], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, Vec<u8>>(3)?,
            ))
        })?;
        rows.map(|row| {
            let (event_id, index, captured_at_ms, jpeg) = row?;
            Ok(PendingEvidence {
                sequence,
                event_id: parse_event_id(&event_id)?,
                index: u32::try_from(index).map_err(|_| StoreError::Decode {
                    what: "evidence frame index",
                    reason: index.to_string(),
                })?,
                frame: EvidenceFrame {
                    captured_at_ms: sequence_from_sql(captured_at_ms)?,
                    jpeg,
                },
            })
        })
        .collect()
    }

    /// Records that the server holds frame `index` of event `sequence` (its image left the
    /// device; audited). Idempotent.
    pub fn mark_evidence_uploaded(
        &mut self,
        sequence: u64,
        index: u32,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let marked = transaction.execute(
            "UPDATE evidence SET uploaded_at = ?3
             WHERE sequence = ?1 AND frame_index = ?2 AND uploaded_at IS NULL",
            params![sequence_to_sql(sequence), i64::from(index), timestamp(at)],
        )?;
        if marked > 0 {
            audit(
                &transaction,
                at,
                "evidence_uploaded",
                &format!("event {sequence} frame {index}"),
            )?;
        }
        transaction.commit()?;
        Ok(())
    }

    fn load_events(&self, sql: &str, limit: i64) -> Result<Vec<SignedDoseEvent>, StoreError> {
        let mut statement = self.connection.prepare(sql)?;
        let rows = statement.query_map([limit], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
            ))
        })?;
        rows.map(|row| {
            let (record_json, hash, signature) = row?;
            Ok(SignedDoseEvent {
                record: decode("dose event", &record_json)?,
                hash,
                signature,
            })
        })
        .collect()
    }

    /// Up to `limit` events not yet acknowledged by the server, oldest first.
    pub fn pending_events(&self, limit: usize) -> Result<Vec<SignedDoseEvent>, StoreError> {
        self.load_events(
            "SELECT e.record_json, e.hash, e.signature FROM outbox o JOIN dose_events e USING (sequence)
             ORDER BY o.sequence LIMIT ?1",
            i64::try_from(limit).unwrap_or(i64::MAX),
        )
    }

    /// Marks events acknowledged by the server. Idempotent.
    pub fn acknowledge(&mut self, sequences: &[u64], at: DateTime<Utc>) -> Result<(), StoreError> {
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut mark = transaction.prepare(
                "UPDATE dose_events SET acknowledged_at = ?2 WHERE sequence = ?1 AND acknowledged_at IS NULL",
            )?;
            let mut dequeue = transaction.prepare("DELETE FROM outbox WHERE sequence = ?1")?;
            for sequence in sequences {
                mark.execute(params![sequence_to_sql(*sequence), timestamp(at)])?;
                dequeue.execute(params![sequence_to_sql(*sequence)])?;
            }
        }
        transaction.commit()?;
        Ok(())
    }

    /// Every event, in chain order.
    pub fn all_events(&self) -> Result<Vec<SignedDoseEvent>, StoreError> {
        self.load_events(
            "SELECT record_json, hash, signature FROM dose_events ORDER BY sequence LIMIT ?1",
            i64::MAX,
        )
    }

    /// Verifies every hash, signature and link of the chain; returns the number of events.
    pub fn verify(&self) -> Result<usize, StoreError> {
        let events = self.all_events()?;
        verify_chain(&events, &self.signing_key.verifying_key())?;
        Ok(events.len())
    }

    /// Counts for display.
    pub fn info(&self) -> Result<StoreInfo, StoreError> {
        let count = |sql: &str| -> Result<u64, StoreError> {
            let value = self
                .connection
                .query_row(sql, [], |row| row.get::<_, i64>(0))?;
            sequence_from_sql(value)
        };
        Ok(StoreInfo {
            path: self.path.clone(),
            schema_version: SCHEMA_VERSION,
            device_id: self.identity().ok().map(|identity| identity.device_id),
            dose_events: count("SELECT count(*) FROM dose_events")?,
            pending_sync: count("SELECT count(*) FROM outbox")?,
            evidence_frames: count("SELECT count(*) FROM evidence")?,
            last_hash: self
                .connection
                .query_row(
                    "SELECT hash FROM dose_events ORDER BY sequence DESC LIMIT 1",
                    [],
                    |row| row.get(0),
                )
                .optional()?,
        })
    }

    fn audit(&self, at: DateTime<Utc>, action: &str, detail: &str) -> Result<(), StoreError> {
        audit(&self.connection, at, action, detail)
    }
}

/// SQL condition on an `evidence` row: not acknowledged by the server, and sent under the
/// evidence policy in `sync_state` (flagged doses always; every dose under `all`).
const TO_UPLOAD: &str = "uploaded_at IS NULL
    AND (flagged = 1 OR (SELECT evidence_policy FROM sync_state) = 'all')";

fn parse_event_id(text: &str) -> Result<DoseEventId, StoreError> {
    text.parse().map_err(|_| StoreError::Decode {
        what: "dose event id",
        reason: "not a UUID".to_string(),
    })
}

/// A store must be writable, and so must its directory (SQLite keeps the WAL beside it):
/// otherwise SQLite fails later with a misleading "unable to open" or a read-only error in the
/// middle of recording a dose. Checked by trying, which is what counts (permission bits, ACLs,
/// read-only mounts).
fn ensure_writable(path: &Path) -> Result<(), StoreError> {
    let read_only = |source: std::io::Error| StoreError::ReadOnly {
        path: path.to_path_buf(),
        detail: source.to_string(),
    };
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(read_only)?;
    let directory = path.parent().unwrap_or(Path::new("."));
    let probe = directory.join(format!(".write-probe-{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(read_only)?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

fn upsert_regimens(
    connection: &Connection,
    regimens: &[RegimenPlan],
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    for plan in regimens {
        connection.execute(
            "INSERT INTO regimens (regimen_id, plan_json, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (regimen_id) DO UPDATE SET plan_json = excluded.plan_json, updated_at = excluded.updated_at",
            params![plan.regimen.id.to_string(), encode("regimen", plan)?, timestamp(at)],
        )?;
    }
    Ok(())
}

fn parse_timestamp(text: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(text)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|error| StoreError::Decode {
            what: "timestamp",
            reason: error.to_string(),
        })
}

/// Sets the key, proves it decrypts page 1, and applies the connection settings.
fn configure(
    connection: &Connection,
    path: &Path,
    key: Option<&StoreKey>,
) -> Result<(), StoreError> {
    // SQLCipher logs decryption failures to stderr itself; we report them as typed errors.
    connection.execute_batch("PRAGMA cipher_log_level = NONE;")?;
    match key {
        Some(key) => connection.execute_batch(&key.pragma())?,
        None => connection.execute_batch(crate::key::PLAINTEXT_SETTINGS)?,
    }
    // SQLCipher only notices a wrong key on first read; probe before anything else so the
    // error is "wrong key", not a misleading one from a later statement.
    let probe: Result<i64, _> =
        connection.query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get(0));
    if probe.is_err() {
        return Err(StoreError::WrongKeyOrCorrupt {
            path: path.to_path_buf(),
        });
    }
    connection.execute_batch(
        "PRAGMA cipher_memory_security = ON;
         PRAGMA temp_store = MEMORY;
         PRAGMA foreign_keys = ON;
         PRAGMA busy_timeout = 5000;
         PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;",
    )?;
    Ok(())
}

/// The device's Ed25519 signing key from the (encrypted) identity row.
fn read_signing_key(connection: &Connection) -> Result<SigningKey, StoreError> {
    let seed: Vec<u8> =
        connection.query_row("SELECT signing_key FROM device_identity", [], |row| {
            row.get(0)
        })?;
    let seed: [u8; 32] = seed.try_into().map_err(|_| StoreError::Decode {
        what: "device signing key",
        reason: "expected 32 bytes".to_string(),
    })?;
    Ok(SigningKey::from_bytes(&seed))
}

fn audit(
    connection: &Connection,
    at: DateTime<Utc>,
    action: &str,
    detail: &str,
) -> Result<(), StoreError> {
    connection.execute(
        "INSERT INTO audit_log (at, action, detail) VALUES (?1, ?2, ?3)",
        params![timestamp(at), action, detail],
    )?;
    Ok(())
}

/// Turns "disk full" and write failures into errors that say what happened and that the dose
/// was not written (the transaction rolled back), instead of a bare SQLite code.
fn classify_write_error(error: StoreError, path: &Path) -> StoreError {
    let StoreError::Sqlite(inner) = &error else {
        return error;
    };
    let rusqlite::Error::SqliteFailure(failure, _) = inner else {
        return error;
    };
    match failure.code {
        rusqlite::ErrorCode::DiskFull => StoreError::DiskFull {
            path: path.to_path_buf(),
        },
        rusqlite::ErrorCode::SystemIoFailure
        | rusqlite::ErrorCode::ReadOnly
        | rusqlite::ErrorCode::CannotOpen => StoreError::WriteFailed {
            path: path.to_path_buf(),
            detail: inner.to_string(),
        },
        _ => error,
    }
}

/// `path` with `suffix` appended (SQLite's `-wal`, `-shm`, `-journal` companions).
fn companion(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// SQLite integers are signed; sequences and counts never exceed `i64::MAX`.
fn sequence_to_sql(sequence: u64) -> i64 {
    i64::try_from(sequence).unwrap_or(i64::MAX)
}

fn sequence_from_sql(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Decode {
        what: "sequence",
        reason: format!("negative value {value}"),
    })
}

/// Renames a corrupt store (and its WAL and shared-memory files) aside; never deletes.
fn quarantine(path: &Path, detail: String) -> StoreError {
    let suffix = Utc::now().format("%Y%m%dT%H%M%SZ");
    let quarantined_to = path.with_extension(format!("corrupt-{suffix}"));
    let rename = |from: &Path, to: &Path| std::fs::rename(from, to);
    if let Err(source) = rename(path, &quarantined_to) {
        return StoreError::Io {
            action: "quarantining the corrupt store",
            path: path.to_path_buf(),
            source,
        };
    }
    for suffix in ["-wal", "-shm"] {
        let from = companion(path, suffix);
        if from.exists() {
            let _ = rename(&from, &companion(&quarantined_to, suffix));
        }
    }
    StoreError::Corrupt {
        path: path.to_path_buf(),
        quarantined_to,
        detail,
    }
}
