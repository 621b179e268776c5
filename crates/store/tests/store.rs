//! The device store against real SQLCipher files in temp dirs.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use chrono::{DateTime, Duration, TimeZone, Utc};
use dosewitness_domain::{
    CheckScores, DeviceId, DoseEvent, DoseEventId, DoseOutcome, EvidencePolicy, MedicationId,
    PatientId, RegimenId,
};
use dosewitness_store::{
    CIPHER_SETTINGS, DeviceStore, EvidenceFrame, KeyCustody, KeyFile, StoreError, StoreKey,
};
use std::path::Path;

fn at(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, 8, 0, 0).unwrap() + Duration::minutes(minutes)
}

fn dose(minutes: i64) -> DoseEvent {
    DoseEvent {
        id: DoseEventId::generate(at(minutes)),
        device_id: DeviceId::generate(at(0)),
        patient_id: PatientId::generate(at(0)),
        regimen_id: RegimenId::generate(at(0)),
        medication_id: MedicationId::generate(at(0)),
        scheduled_at: at(0),
        recorded_at: at(minutes),
        outcome: DoseOutcome::Verified,
        reasons: vec![],
        scores: CheckScores {
            face_detection: Some(0.93),
            ..CheckScores::default()
        },
    }
}

fn store_with_events(path: &Path, key: &StoreKey, count: i64) -> DeviceStore {
    let mut store = DeviceStore::create(path, key, at(0)).unwrap();
    for minute in 0..count {
        store.append_dose_event(dose(minute), at(minute)).unwrap();
    }
    store
}

#[test]
fn events_are_chained_signed_enqueued_and_survive_reopening() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("device.db");
    let key = StoreKey::generate().unwrap();
    let store = store_with_events(&path, &key, 5);
    assert_eq!(store.verify().unwrap(), 5);
    drop(store);

    let mut store = DeviceStore::open(&path, &key).unwrap();
    let info = store.info().unwrap();
    assert_eq!((info.dose_events, info.pending_sync), (5, 5));
    let pending = store.pending_events(3).unwrap();
    assert_eq!(
        pending
            .iter()
            .map(|event| event.sequence())
            .collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    store.acknowledge(&[1, 2], at(10)).unwrap();
    store.acknowledge(&[2], at(11)).unwrap();
    assert_eq!(store.info().unwrap().pending_sync, 3);
    assert_eq!(store.pending_events(10).unwrap()[0].sequence(), 3);
    // The chain continues across reopening.
    let sixth = store.append_dose_event(dose(6), at(6)).unwrap();
    assert_eq!(sixth.sequence(), 6);
    assert_eq!(store.verify().unwrap(), 6);
}

#[test]
fn a_wrong_key_is_reported_and_the_file_is_untouched() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("device.db");
    drop(store_with_events(&path, &StoreKey::generate().unwrap(), 2));
    let before = std::fs::read(&path).unwrap();
    let error = DeviceStore::open(&path, &StoreKey::generate().unwrap()).unwrap_err();
    assert!(
        matches!(error, StoreError::WrongKeyOrCorrupt { .. }),
        "{error}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn creating_over_an_existing_file_is_refused() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("device.db");
    std::fs::write(&path, b"something precious").unwrap();
    let error = DeviceStore::create(&path, &StoreKey::generate().unwrap(), at(0)).unwrap_err();
    assert!(matches!(error, StoreError::AlreadyExists { .. }), "{error}");
    assert_eq!(std::fs::read(&path).unwrap(), b"something precious");
}

#[test]
fn nothing_readable_reaches_the_disk() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("device.db");
    let key = StoreKey::generate().unwrap();
    let mut store = store_with_events(&path, &key, 3);
    let mut event = dose(9);
    event.reasons = vec![dosewitness_domain::Reason::IngestionNotSeen];
    store.append_dose_event(event, at(9)).unwrap();
    store
        .enrol_face(
            PatientId::generate(at(9)),
            b"FACE-TEMPLATE-DESCRIPTORS",
            at(9),
        )
        .unwrap();
    // Keep the connection open so the WAL still holds recent pages.
    let needles: [&[u8]; 5] = [
        b"CREATE TABLE",
        b"dose_events",
        b"ingestion_not_seen",
        b"verified",
        b"FACE-TEMPLATE",
    ];
    let mut files = 0;
    for entry in std::fs::read_dir(directory.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        files += 1;
        for needle in needles {
            assert!(
                !bytes.windows(needle.len()).any(|window| window == needle),
                "found {:?} in plaintext",
                String::from_utf8_lossy(needle)
            );
        }
    }
    assert!(
        files >= 2,
        "expected the database and its WAL, found {files} files"
    );
    drop(store);
}

#[test]
fn face_and_pill_templates_are_kept_and_a_re_enrolment_replaces_the_face() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("device.db");
    let key = StoreKey::generate().unwrap();
    let mut store = DeviceStore::create(&path, &key, at(0)).unwrap();
    assert_eq!(store.enrolled_face().unwrap(), None);
    let patient = PatientId::generate(at(0));
    store.enrol_face(patient, b"first template", at(1)).unwrap();
    store
        .enrol_face(patient, b"second template", at(2))
        .unwrap();
    let aspirin = MedicationId::generate(at(0));
    let other = MedicationId::generate(at(1));
    store.add_pill_template(aspirin, b"front", at(3)).unwrap();
    store.add_pill_template(aspirin, b"back", at(4)).unwrap();
    store.add_pill_template(other, b"other", at(5)).unwrap();
    drop(store);
    let store = DeviceStore::open(&path, &key).unwrap();
    assert_eq!(
        store.enrolled_face().unwrap(),
        Some((patient, b"second template".to_vec()))
    );
    assert_eq!(
        store.pill_templates(aspirin).unwrap(),
        vec![b"front".to_vec(), b"back".to_vec()]
    );
    assert_eq!(
        store.pill_templates(other).unwrap(),
        vec![b"other".to_vec()]
    );
}

#[test]
fn sync_status_shows_pending_last_success_and_the_last_error_until_a_success() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("device.db");
    let key = StoreKey::generate().unwrap();
    let mut store = store_with_events(&path, &key, 3);
    let fresh = store.sync_status().unwrap();
    assert_eq!(fresh.pending, 3);
    assert_eq!(
        (fresh.last_success_at, fresh.last_error.clone()),
        (None, None)
    );
    store.record_sync_outcome(None, at(10)).unwrap();
    store
        .record_sync_outcome(Some("the clinic server could not be reached"), at(11))
        .unwrap();
    store.record_clock_skew(-1_250, at(11)).unwrap();
    drop(store);
    let mut store = DeviceStore::open(&path, &key).unwrap();
    let failed = store.sync_status().unwrap();
    assert_eq!(failed.last_success_at, Some(at(10)));
    assert_eq!(
        failed.last_error,
        Some(("the clinic server could not be reached".to_string(), at(11)))
    );
    assert_eq!(
        (failed.clock_skew_ms, failed.skew_measured_at),
        (Some(-1_250), Some(at(11)))
    );
    store.record_sync_outcome(None, at(12)).unwrap();
    let recovered = store.sync_status().unwrap();
    assert_eq!(recovered.last_success_at, Some(at(12)));
    assert_eq!(recovered.last_error, None);
}

#[test]
fn tampering_with_a_stored_event_is_detected() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("device.db");
    let key_file = KeyFile::new(directory.path().join("store.key"));
    let key = key_file.create().unwrap();
    assert_eq!(format!("{key:?}"), "StoreKey(<redacted>)");
    drop(store_with_events(&path, &key, 3));
    {
        // An attacker holding the key edits an outcome directly in the database.
        let key_hex = std::fs::read_to_string(key_file.path()).unwrap();
        let connection = rusqlite::Connection::open(&path).unwrap();
        connection
            .execute_batch(&format!(
                "PRAGMA key = \"x'{key_hex}'\"; {CIPHER_SETTINGS} UPDATE dose_events SET record_json = replace(record_json, 'verified', 'missed') WHERE sequence = 2;"
            ))
            .unwrap();
    }
    let store = DeviceStore::open(&path, &key).unwrap();
    let error = store.verify().unwrap_err();
    assert!(error.to_string().contains("event 2"), "{error}");
}

#[test]
fn a_corrupt_store_is_quarantined_not_deleted() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("device.db");
    let key = StoreKey::generate().unwrap();
    drop(store_with_events(&path, &key, 40));
    // Flip bytes in a page after the first one: page 1 still decrypts, a later page fails HMAC.
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() > 8192, "store should span several pages");
    for byte in &mut bytes[4096 + 100..4096 + 200] {
        *byte ^= 0x5a;
    }
    std::fs::write(&path, &bytes).unwrap();
    let error = DeviceStore::open(&path, &key).unwrap_err();
    let StoreError::Corrupt { quarantined_to, .. } = &error else {
        panic!("expected Corrupt, got {error}");
    };
    assert!(!path.exists(), "the corrupt file must be moved aside");
    assert_eq!(
        std::fs::read(quarantined_to).unwrap(),
        bytes,
        "quarantined bytes are kept intact"
    );
    // And a new store is not silently created in its place by open().
    assert!(matches!(
        DeviceStore::open(&path, &key),
        Err(StoreError::NotFound { .. })
    ));
}

#[test]
fn key_files_are_owner_only_and_never_overwritten() {
    let directory = tempfile::tempdir().unwrap();
    let file = KeyFile::new(directory.path().join("store.key"));
    let key = file.create().unwrap();
    assert_eq!(file.load().unwrap(), key);
    assert!(file.create().is_err());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(file.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    std::fs::write(file.path(), "not hex").unwrap();
    assert!(matches!(file.load(), Err(StoreError::BadKeyFile { .. })));
}

#[test]
fn evidence_is_kept_with_its_event_and_purged_only_after_delivery_and_retention() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("device.db");
    let key = StoreKey::generate().unwrap();
    let mut store = DeviceStore::create(&path, &key, at(0)).unwrap();
    let frame = |ms: u64| EvidenceFrame {
        captured_at_ms: ms,
        jpeg: format!("JPEG-MARKER-{ms}").into_bytes(),
    };
    let first = store
        .append_dose_event_with_evidence(dose(1), &[frame(40), frame(10)], at(1))
        .unwrap();
    let second = store
        .append_dose_event_with_evidence(dose(2), &[frame(5)], at(2))
        .unwrap();
    let kept = store.evidence_for(first.sequence()).unwrap();
    assert_eq!(
        kept.iter()
            .map(|frame| frame.captured_at_ms)
            .collect::<Vec<_>>(),
        vec![10, 40]
    );
    assert_eq!(format!("{:?}", kept[0]), "EvidenceFrame(10 ms, 14 bytes)");

    // Evidence is ciphertext on disk like everything else.
    for entry in std::fs::read_dir(directory.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!bytes.windows(11).any(|window| window == b"JPEG-MARKER"));
    }

    store.acknowledge(&[first.sequence()], at(10)).unwrap();
    let retain = Duration::days(1);
    assert_eq!(
        store
            .purge_delivered_evidence(retain, at(10) + Duration::hours(2))
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .purge_delivered_evidence(retain, at(10) + Duration::days(2))
            .unwrap(),
        2
    );
    assert!(store.evidence_for(first.sequence()).unwrap().is_empty());
    // The undelivered event keeps its evidence however old it is.
    assert_eq!(store.evidence_for(second.sequence()).unwrap().len(), 1);
    assert_eq!(
        store
            .purge_delivered_evidence(Duration::zero(), at(0) + Duration::days(400))
            .unwrap(),
        0
    );
    assert_eq!(store.info().unwrap().evidence_frames, 1);
    store.verify().unwrap();
}

#[test]
fn evidence_upload_state_follows_the_policy_survives_reopening_and_guards_the_purge() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("device.db");
    let key = StoreKey::generate().unwrap();
    let mut store = DeviceStore::create(&path, &key, at(0)).unwrap();
    let frame = |ms: u64| EvidenceFrame {
        captured_at_ms: ms,
        jpeg: vec![0xFF, 0xD8, 0xFF, (ms % 256) as u8],
    };
    let with_outcome = |minute: i64, outcome: DoseOutcome| DoseEvent {
        outcome,
        ..dose(minute)
    };
    let verified = store
        .append_dose_event_with_evidence(dose(1), &[frame(1)], at(1))
        .unwrap();
    let flagged = store
        .append_dose_event_with_evidence(
            with_outcome(2, DoseOutcome::NeedsReview),
            &[frame(30), frame(10), frame(20)],
            at(2),
        )
        .unwrap();
    let failed = store
        .append_dose_event_with_evidence(
            with_outcome(3, DoseOutcome::NotVerified),
            &[frame(5)],
            at(3),
        )
        .unwrap();
    assert_eq!(
        store.evidence_policy().unwrap(),
        EvidencePolicy::FlaggedOnly
    );
    assert_eq!(store.pending_evidence_count().unwrap(), 4, "flagged frames");
    assert_eq!(store.sync_status().unwrap().pending_evidence, 4);
    assert!(
        store.events_with_pending_evidence().unwrap().is_empty(),
        "evidence waits for its event to be delivered"
    );

    store
        .acknowledge(
            &[verified.sequence(), flagged.sequence(), failed.sequence()],
            at(10),
        )
        .unwrap();
    assert_eq!(
        store.events_with_pending_evidence().unwrap(),
        vec![
            (flagged.sequence(), flagged.record.event.id),
            (failed.sequence(), failed.record.event.id)
        ],
        "only flagged doses under the default policy"
    );
    let pending = store.pending_evidence_of(flagged.sequence()).unwrap();
    assert_eq!(
        pending
            .iter()
            .map(|frame| (frame.index, frame.frame.captured_at_ms))
            .collect::<Vec<_>>(),
        vec![(0, 10), (1, 20), (2, 30)],
        "indexes follow capture order"
    );
    assert_eq!(pending[0].event_id, flagged.record.event.id);
    store
        .mark_evidence_uploaded(flagged.sequence(), 0, at(11))
        .unwrap();
    store
        .mark_evidence_uploaded(flagged.sequence(), 0, at(12))
        .unwrap();

    // Nothing is purged that the policy still has to send, however old.
    let long_after = at(10) + Duration::days(400);
    assert_eq!(
        store
            .purge_delivered_evidence(Duration::days(1), long_after)
            .unwrap(),
        2,
        "the verified dose's frame and the uploaded flagged frame"
    );
    assert_eq!(store.evidence_for(verified.sequence()).unwrap().len(), 0);
    assert_eq!(store.evidence_for(flagged.sequence()).unwrap().len(), 2);
    drop(store);

    // The upload state is in the store: a restart resumes where it stopped.
    let mut store = DeviceStore::open(&path, &key).unwrap();
    assert_eq!(
        store
            .pending_evidence_of(flagged.sequence())
            .unwrap()
            .iter()
            .map(|frame| frame.index)
            .collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(store.pending_evidence_count().unwrap(), 3);

    // Under `All` a verified dose's frames are sent too (and kept until they are).
    let later = store
        .append_dose_event_with_evidence(dose(20), &[frame(7)], at(20))
        .unwrap();
    store
        .set_evidence_policy(EvidencePolicy::All, at(21))
        .unwrap();
    assert_eq!(store.evidence_policy().unwrap(), EvidencePolicy::All);
    assert_eq!(store.pending_evidence_count().unwrap(), 4);
    store.acknowledge(&[later.sequence()], at(22)).unwrap();
    assert_eq!(
        store
            .purge_delivered_evidence(Duration::zero(), long_after)
            .unwrap(),
        0
    );
    assert!(
        store
            .events_with_pending_evidence()
            .unwrap()
            .contains(&(later.sequence(), later.record.event.id))
    );
    for pending in store.pending_evidence_of(later.sequence()).unwrap() {
        store
            .mark_evidence_uploaded(pending.sequence, pending.index, at(23))
            .unwrap();
    }
    assert_eq!(
        store
            .purge_delivered_evidence(Duration::zero(), long_after)
            .unwrap(),
        1
    );
    store.verify().unwrap();
}

#[test]
fn rekeying_re_encrypts_and_an_interrupted_rotation_recovers() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("device.db");
    let key_file = KeyFile::new(directory.path().join("store.key"));
    let old_key = key_file.create().unwrap();
    let mut store = DeviceStore::create(&path, &old_key, at(0)).unwrap();
    store.append_dose_event(dose(1), at(1)).unwrap();
    store.rekey(&key_file, at(2)).unwrap();
    drop(store);
    assert!(matches!(
        DeviceStore::open(&path, &old_key),
        Err(StoreError::WrongKeyOrCorrupt { .. })
    ));
    let new_key = key_file.load().unwrap();
    assert_ne!(new_key, old_key);
    assert_eq!(
        DeviceStore::open(&path, &new_key)
            .unwrap()
            .verify()
            .unwrap(),
        1
    );
    assert!(!key_file.pending_path().exists());

    // A crash after the new key was written but before the database used it: the pending key
    // is dropped and the current one still opens the store.
    let unused = key_file.begin_rotation().unwrap();
    let store = DeviceStore::open_with_custody(&path, &key_file).unwrap();
    assert_eq!(store.verify().unwrap(), 1);
    assert!(!key_file.pending_path().exists());
    assert_ne!(unused, key_file.load().unwrap());
    drop(store);

    // A crash after the database was re-encrypted but before the key file was swapped: the
    // pending key opens it and is installed.
    let mut store = DeviceStore::open(&path, &new_key).unwrap();
    let pending = key_file.begin_rotation().unwrap();
    store.append_dose_event(dose(2), at(3)).unwrap();
    drop(store);
    // Re-encrypt under the pending key the way `rekey` does, then "crash" before the swap.
    let pending_hex = std::fs::read_to_string(key_file.pending_path()).unwrap();
    let current_hex = std::fs::read_to_string(key_file.path()).unwrap();
    let connection = rusqlite::Connection::open(&path).unwrap();
    connection
        .execute_batch(&format!(
            "PRAGMA key = \"x'{current_hex}'\"; {CIPHER_SETTINGS} PRAGMA journal_mode = DELETE; PRAGMA rekey = \"x'{pending_hex}'\";"
        ))
        .unwrap();
    drop(connection);
    let store = DeviceStore::open_with_custody(&path, &key_file).unwrap();
    assert_eq!(store.verify().unwrap(), 2);
    assert_eq!(key_file.load().unwrap(), pending);
    assert!(!key_file.pending_path().exists());
}

#[test]
fn a_passphrase_store_opens_only_with_its_passphrase() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("device.db");
    let kdf_path = directory.path().join("store.kdf.json");
    let kdf = dosewitness_store::PassphraseKdf::recommended().unwrap();
    kdf.save(&kdf_path).unwrap();
    assert!(
        kdf.save(&kdf_path).is_err(),
        "parameters are never overwritten"
    );
    let key = kdf.derive("correct horse battery staple").unwrap();
    drop(store_with_events(&path, &key, 2));

    let loaded = dosewitness_store::PassphraseKdf::load(&kdf_path).unwrap();
    assert_eq!(loaded, kdf);
    let again = loaded.derive("correct horse battery staple").unwrap();
    assert_eq!(
        DeviceStore::open(&path, &again).unwrap().verify().unwrap(),
        2
    );
    let wrong = loaded.derive("correct horse battery stable").unwrap();
    assert!(matches!(
        DeviceStore::open(&path, &wrong),
        Err(StoreError::WrongKeyOrCorrupt { .. })
    ));
    // A different salt is a different key.
    let other_salt = dosewitness_store::PassphraseKdf::recommended().unwrap();
    assert_ne!(
        other_salt.derive("correct horse battery staple").unwrap(),
        again
    );
    assert!(loaded.derive("short").is_err());
}
