//! `dosewitness seed`: fills a clinic backend with synthetic studies, patients, regimens and
//! signed dose histories of varied adherence, through the real HTTP API (so every event passes
//! the same signature and chain checks as a device's). For demos and benchmarks; no real PHI.

use anyhow::Context;
use chrono::{Duration, NaiveTime};
use dosewitness_domain::{
    CheckScores, Clock, DoseEvent, DoseEventId, DoseOutcome, DoseWindow, Reason, SystemClock,
};
use dosewitness_protocol::{
    ChainRecord, CreatePatient, CreateRegimen, CreateSite, CreateStudy, DoseEventBatch,
    EnrolDevice, GENESIS_HASH, NewMedication, PROTOCOL_VERSION,
};
use dosewitness_server::{LoopbackServer, random_token};
use dosewitness_sync::{CoordinatorClient, DeviceClient};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Debug, clap::Args)]
pub struct SeedArgs {
    /// The backend's data dir (`server/server.db` under it is created or extended).
    #[arg(long, env = "DOSEWITNESS_DATA_DIR")]
    data_dir: PathBuf,
    #[arg(long, default_value_t = 30)]
    patients: u32,
    #[arg(long, default_value_t = 28)]
    days: u32,
    /// Seed of the pseudo-random adherence draws (same seed, same histories).
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// xorshift64*: reproducible draws in `[0, 1)`.
fn draw(state: &mut u64) -> f64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
}

pub fn run(args: SeedArgs) -> anyhow::Result<ExitCode> {
    let clock = SystemClock;
    let directory = args.data_dir.join("server");
    std::fs::create_dir_all(&directory)
        .with_context(|| format!("creating {}", directory.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let timeout = std::time::Duration::from_secs(30);
    let mut random = args.seed.max(1);
    let (events, bands) = runtime.block_on(async {
        let backend =
            LoopbackServer::start(&directory.join("server.db"), 0, Arc::new(SystemClock)).await?;
        let url = backend.url.clone();
        let coordinator = CoordinatorClient::new(&url, backend.admin_token.clone(), timeout)?;
        let now = clock.now();
        let study_code = format!("SYN-{}", &random_token()?[..8]);
        let study = coordinator
            .create_study(&CreateStudy {
                code: study_code,
                title: "Synthetic adherence study".into(),
            })
            .await?;
        let sites = [
            coordinator
                .create_site(
                    study,
                    &CreateSite {
                        name: "Synthetic site A".into(),
                    },
                )
                .await?,
            coordinator
                .create_site(
                    study,
                    &CreateSite {
                        name: "Synthetic site B".into(),
                    },
                )
                .await?,
        ];
        let start = now - Duration::days(i64::from(args.days));
        let mut total_events = 0usize;
        let mut bands = std::collections::BTreeMap::<String, u32>::new();
        for index in 0..args.patients {
            let site = sites[index as usize % sites.len()];
            let patient = coordinator
                .create_patient(
                    site,
                    &CreatePatient {
                        subject_code: format!("{:03}-{:04}", index % 2 + 1, index + 1),
                        display_name: format!("Synthetic Patient {}", index + 1),
                    },
                )
                .await?;
            let plan = coordinator
                .create_regimen(
                    patient,
                    &CreateRegimen {
                        medication: NewMedication {
                            name: "Syntheticin".into(),
                            strength_mg: 250.0,
                            form: "tablet".into(),
                        },
                        units_per_dose: 1,
                        time_zone: "UTC".into(),
                        dose_times: vec![
                            NaiveTime::from_hms_opt(8, 0, 0).unwrap_or(NaiveTime::MIN),
                            NaiveTime::from_hms_opt(20, 0, 0).unwrap_or(NaiveTime::MIN),
                        ],
                        window: DoseWindow {
                            before_minutes: 60,
                            after_minutes: 120,
                        },
                        start_date: start.date_naive(),
                        end_date: None,
                    },
                )
                .await?;
            let code = coordinator.create_enrolment_code(patient).await?;
            let mut seed = [0u8; 32];
            for chunk in seed.chunks_mut(8) {
                chunk.copy_from_slice(&(draw(&mut random).to_bits()).to_le_bytes());
            }
            let key = ed25519_dalek::SigningKey::from_bytes(&seed);
            let enrolment = DeviceClient::new(&url, None, timeout)?
                .enrol(&EnrolDevice {
                    code: code.code,
                    public_key: hex::encode(key.verifying_key().to_bytes()),
                    label: "synthetic device".into(),
                })
                .await?;
            // Three adherence profiles: good, monitor, outreach.
            let take_probability = [0.93, 0.68, 0.35][index as usize % 3];
            let mut previous_hash = GENESIS_HASH.to_string();
            let mut signed = Vec::new();
            for (sequence, dose) in plan.regimen.scheduled_doses(start, now).iter().enumerate() {
                let roll = draw(&mut random);
                let (outcome, delay_minutes, reasons) = if roll < take_probability * 0.95 {
                    (
                        DoseOutcome::Verified,
                        (draw(&mut random) * 90.0) as i64 - 30,
                        vec![],
                    )
                } else if roll < take_probability {
                    (DoseOutcome::NeedsReview, 10, vec![Reason::IngestionNotSeen])
                } else {
                    (DoseOutcome::Missed, 120, vec![Reason::NoSessionInWindow])
                };
                let recorded_at = dose.scheduled_at + Duration::minutes(delay_minutes);
                let record = ChainRecord {
                    format: ChainRecord::FORMAT,
                    sequence: sequence as u64 + 1,
                    previous_hash: previous_hash.clone(),
                    event: DoseEvent {
                        id: DoseEventId::generate(recorded_at),
                        device_id: enrolment.device_id,
                        patient_id: patient,
                        regimen_id: plan.regimen.id,
                        medication_id: plan.medication.id,
                        scheduled_at: dose.scheduled_at,
                        recorded_at,
                        outcome,
                        reasons,
                        scores: CheckScores {
                            face_detection: (outcome != DoseOutcome::Missed).then_some(0.9),
                            ..CheckScores::default()
                        },
                    },
                }
                .sign(&key);
                previous_hash = record.hash.clone();
                signed.push(record);
            }
            total_events += signed.len();
            let device = DeviceClient::new(&url, Some(enrolment.device_token), timeout)?;
            for batch in signed.chunks(500) {
                device
                    .push_batch(
                        enrolment.device_id,
                        &DoseEventBatch {
                            protocol_version: PROTOCOL_VERSION,
                            events: batch.to_vec(),
                        },
                    )
                    .await?;
            }
            let report = coordinator.adherence(patient, start, now).await?;
            let band = report.band.map_or_else(
                || "none".to_string(),
                |band| format!("{band:?}").to_lowercase(),
            );
            *bands.entry(band).or_default() += 1;
        }
        anyhow::Ok((total_events, bands))
    })?;
    println!(
        "seeded {} patients over {} days: {events} signed dose events in {}",
        args.patients,
        args.days,
        directory.join("server.db").display()
    );
    let summary: Vec<String> = bands
        .iter()
        .map(|(band, count)| format!("{band} {count}"))
        .collect();
    println!("adherence bands: {}", summary.join(", "));
    Ok(ExitCode::SUCCESS)
}
