//! Shared fixture of the sync tests: a real backend on 127.0.0.1 (SQLite under a temp dir), a
//! study with one patient and regimen, and an enrolled device with a real SQLCipher store.

#![allow(dead_code)] // each test binary uses a different part

pub mod fault_proxy;

use chrono::{Duration, NaiveDate, NaiveTime, Utc};
use dosewitness_domain::{
    CheckScores, DeviceId, DoseEvent, DoseEventId, DoseOutcome, DoseWindow, PatientId, SystemClock,
};
use dosewitness_protocol::{
    CreatePatient, CreateRegimen, CreateSite, CreateStudy, EnrolDevice, NewMedication, RegimenPlan,
};
use dosewitness_server::LoopbackServer;
use dosewitness_store::{DeviceStore, StoreKey};
use dosewitness_sync::{CoordinatorClient, DeviceClient, TlsPolicy};
use std::sync::Arc;

pub const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

pub struct Fixture {
    pub directory: tempfile::TempDir,
    pub backend: LoopbackServer,
    pub device_token: String,
    /// The store's key, for tests that open a second connection to it.
    pub key: StoreKey,
    pub url: String,
    pub store: DeviceStore,
    pub device: DeviceClient,
    pub device_id: DeviceId,
    pub patient_id: PatientId,
    pub plan: RegimenPlan,
}

pub async fn fixture() -> Fixture {
    let directory = tempfile::tempdir().unwrap();
    let backend = LoopbackServer::start(
        &directory.path().join("server.db"),
        0,
        Arc::new(SystemClock),
    )
    .await
    .unwrap();
    fixture_on(directory, backend, &TlsPolicy::default()).await
}

/// As [`fixture`], against an already started `backend` (its database under `directory`),
/// with clients that trust the server per `tls`.
pub async fn fixture_on(
    directory: tempfile::TempDir,
    backend: LoopbackServer,
    tls: &TlsPolicy,
) -> Fixture {
    let url = backend.url.clone();
    let coordinator =
        CoordinatorClient::with_tls(&url, backend.admin_token.clone(), TIMEOUT, tls).unwrap();
    let study = coordinator
        .create_study(&CreateStudy {
            code: "S".into(),
            title: "T".into(),
        })
        .await
        .unwrap();
    let site = coordinator
        .create_site(study, &CreateSite { name: "A".into() })
        .await
        .unwrap();
    let patient_id = coordinator
        .create_patient(
            site,
            &CreatePatient {
                subject_code: "001".into(),
                display_name: "P".into(),
            },
        )
        .await
        .unwrap();
    let plan = coordinator
        .create_regimen(patient_id, &regimen_request("M"))
        .await
        .unwrap();
    let code = coordinator.create_enrolment_code(patient_id).await.unwrap();

    let key = StoreKey::generate().unwrap();
    let mut store =
        DeviceStore::create(&directory.path().join("device.db"), &key, Utc::now()).unwrap();
    let enrolment = DeviceClient::with_tls(&url, None, TIMEOUT, tls)
        .unwrap()
        .enrol(&EnrolDevice {
            code: code.code,
            public_key: store.identity().unwrap().public_key,
            label: "t".into(),
        })
        .await
        .unwrap();
    store
        .save_enrolment(
            enrolment.device_id,
            &url,
            &enrolment.device_token,
            &enrolment.regimens,
            Utc::now(),
        )
        .unwrap();
    let device =
        DeviceClient::with_tls(&url, Some(enrolment.device_token.clone()), TIMEOUT, tls).unwrap();
    Fixture {
        directory,
        backend,
        device_token: enrolment.device_token.clone(),
        key,
        url,
        store,
        device,
        device_id: enrolment.device_id,
        patient_id,
        plan,
    }
}

pub fn dose(fixture: &Fixture, day: i64) -> DoseEvent {
    let scheduled_at = Utc::now() - Duration::days(day);
    DoseEvent {
        id: DoseEventId::generate(scheduled_at),
        device_id: fixture.device_id,
        patient_id: fixture.patient_id,
        regimen_id: fixture.plan.regimen.id,
        medication_id: fixture.plan.medication.id,
        scheduled_at,
        recorded_at: scheduled_at + Duration::minutes(3),
        outcome: DoseOutcome::Verified,
        reasons: vec![],
        scores: CheckScores {
            face_detection: Some(0.9),
            ..CheckScores::default()
        },
    }
}

pub fn append(fixture: &mut Fixture, count: i64) {
    for day in 0..count {
        let event = dose(fixture, day);
        fixture.store.append_dose_event(event, Utc::now()).unwrap();
    }
}

/// A once-daily regimen of `medication`.
pub fn regimen_request(medication: &str) -> CreateRegimen {
    CreateRegimen {
        medication: NewMedication {
            name: medication.into(),
            strength_mg: 10.0,
            form: "tablet".into(),
        },
        units_per_dose: 1,
        time_zone: "UTC".into(),
        dose_times: vec![NaiveTime::from_hms_opt(8, 0, 0).unwrap()],
        window: DoseWindow {
            before_minutes: 60,
            after_minutes: 60,
        },
        start_date: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
        end_date: None,
    }
}

/// The coordinator API of the fixture's backend.
pub fn coordinator(fixture: &Fixture) -> CoordinatorClient {
    CoordinatorClient::new(&fixture.url, fixture.backend.admin_token.clone(), TIMEOUT).unwrap()
}

/// The backend's address, for a fault proxy to forward to.
pub fn upstream(fixture: &Fixture) -> std::net::SocketAddr {
    fixture
        .backend
        .url
        .trim_start_matches("http://")
        .parse()
        .unwrap()
}

/// The device's client, talking to the backend through `proxy`.
pub fn client_via(
    proxy: &fault_proxy::FaultProxy,
    fixture: &Fixture,
    timeout: std::time::Duration,
) -> DeviceClient {
    DeviceClient::new(&proxy.url, Some(fixture.device_token.clone()), timeout).unwrap()
}

/// Drains the fixture's outbox through its own client in batches of `batch_size`.
pub async fn drain(
    fixture: &mut Fixture,
    batch_size: usize,
) -> Result<dosewitness_sync::DrainReport, dosewitness_sync::SyncError> {
    dosewitness_sync::drain_outbox(
        &mut fixture.store,
        &fixture.device,
        fixture.device_id,
        batch_size,
        Utc::now,
    )
    .await
}
