//! `dosewitness demo`: the product's main job end to end on one machine, with no camera and no
//! network beyond loopback.

use crate::ui::{Steps, format_duration, progress_done, progress_line};
use crate::{DEFAULT_MODELS_DIR, DEFAULT_REPLAY_DIR, DevicePaths};
use anyhow::{Context, anyhow, bail};
use chrono::{Duration, NaiveTime, Timelike};
use chrono_tz::Tz;
use dosewitness_capture::{FrameSource, ReplaySource};
use dosewitness_domain::{Clock, DoseWindow, EvidencePolicy, SystemClock};
use dosewitness_edge::{Perception, dose_event_for, enrol, run_dose_session, sync_now};
use dosewitness_protocol::{CreatePatient, CreateRegimen, CreateSite, CreateStudy, NewMedication};
use dosewitness_server::LoopbackServer;
use dosewitness_store::{DeviceStore, KeyCustody, KeyFile};
use dosewitness_sync::{CoordinatorClient, RetryPolicy};
use dosewitness_vision::dose_session::SessionConfig;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

const HTTP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Directory for every file the demo writes (default: a new temp dir, kept and printed).
    /// Must be empty or not exist.
    #[arg(long, env = "DOSEWITNESS_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Directory holding `manifest.json` and the ONNX models.
    #[arg(long, default_value = DEFAULT_MODELS_DIR)]
    models_dir: PathBuf,
    /// Replay (directory with `replay.json` and frames) used instead of a camera.
    #[arg(long, default_value = DEFAULT_REPLAY_DIR)]
    replay: PathBuf,
    /// Loopback port for the clinic backend (0 picks a free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// The demo patient's IANA time zone.
    #[arg(long, default_value = "UTC")]
    time_zone: String,
}

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let time_zone: Tz = args.time_zone.parse().map_err(|_| {
        anyhow!(
            "--time-zone {:?} is not an IANA time zone name (e.g. Europe/Berlin)",
            args.time_zone
        )
    })?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut steps = Steps::new(9);

    let data_dir = steps.run("Prepare the data dir", || {
        let dir = prepare_data_dir(args.data_dir.as_deref())?;
        let detail = dir.display().to_string();
        Ok((dir, detail))
    })?;
    let device_paths = DevicePaths::under(&data_dir);

    let perception = steps.run("Load the on-device models", || {
        let perception = Perception::load(&args.models_dir)?;
        let entry = perception.face_detector().model().entry().clone();
        Ok((
            perception,
            format!(
                "{} (sha256 {}… verified)",
                entry.name,
                entry.sha256.get(..12).unwrap_or("")
            ),
        ))
    })?;

    let backend = steps.run("Start the clinic backend", || {
        let server_db = data_dir.join("server").join("server.db");
        let backend =
            runtime.block_on(LoopbackServer::start(&server_db, args.port, clock.clone()))?;
        let detail = format!("{} (SQLite {})", backend.url, server_db.display());
        Ok((backend, detail))
    })?;
    let server_url = backend.url.clone();
    let coordinator =
        CoordinatorClient::new(&server_url, backend.admin_token.clone(), HTTP_TIMEOUT)?;

    let now = clock.now();
    let (patient_id, plan, enrolment_code) =
        steps.run("Create study, site, patient and regimen", || {
            runtime.block_on(async {
                let study = coordinator
                    .create_study(&CreateStudy {
                        code: "DW-DEMO".into(),
                        title: "DoseWitness demonstration study".into(),
                    })
                    .await?;
                let site = coordinator
                    .create_site(
                        study,
                        &CreateSite {
                            name: "Demo site".into(),
                        },
                    )
                    .await?;
                let patient = coordinator
                    .create_patient(
                        site,
                        &CreatePatient {
                            subject_code: "001-0001".into(),
                            display_name: "Demo Patient".into(),
                        },
                    )
                    .await?;
                let local_now = now.with_timezone(&time_zone);
                let dose_time = NaiveTime::from_hms_opt(local_now.hour(), local_now.minute(), 0)
                    .ok_or_else(|| anyhow!("invalid local time"))?;
                let plan = coordinator
                    .create_regimen(
                        patient,
                        &CreateRegimen {
                            medication: NewMedication {
                                name: "Metformin".into(),
                                strength_mg: 500.0,
                                form: "tablet".into(),
                            },
                            units_per_dose: 1,
                            time_zone: time_zone.name().to_string(),
                            dose_times: vec![dose_time],
                            window: DoseWindow {
                                before_minutes: 60,
                                after_minutes: 120,
                            },
                            start_date: local_now.date_naive(),
                            end_date: None,
                        },
                    )
                    .await?;
                let code = coordinator.create_enrolment_code(patient).await?;
                let detail = format!(
                    "subject 001-0001, 1 × 500 mg daily at {} {}, window −60/+120 min",
                    dose_time.format("%H:%M"),
                    time_zone.name()
                );
                anyhow::Ok(((patient, plan, code.code), detail))
            })
        })?;

    let mut store = steps.run("Create the encrypted device store and enrol it", || {
        let directory = device_paths
            .store
            .parent()
            .ok_or_else(|| anyhow!("bad store path"))?;
        std::fs::create_dir_all(directory)
            .with_context(|| format!("creating {}", directory.display()))?;
        let key = KeyFile::new(&device_paths.key).create()?;
        let mut store = DeviceStore::create(&device_paths.store, &key, clock.now())?;
        let enrolment = runtime.block_on(enrol(
            &mut store,
            &server_url,
            &enrolment_code,
            "demo replay device",
            HTTP_TIMEOUT,
            clock.now(),
        ))?;
        let detail = format!(
            "SQLCipher {}; device {}",
            device_paths.store.display(),
            enrolment.device_id
        );
        Ok((store, detail))
    })?;

    let session_started_at = clock.now();
    let report = steps.run("Run the dose session on the replay", || {
        let mut replay = ReplaySource::open(&args.replay)?;
        let frame_count = replay.len();
        let description = replay.describe();
        let report = run_dose_session(
            &perception,
            &mut replay as &mut dyn FrameSource,
            &SessionConfig::default(),
            |frame| {
                progress_line(&format!(
                    "frame {}/{frame_count} · {} face(s) · {:.1} ms",
                    frame.sequence + 1,
                    frame.faces,
                    frame.inference_ms
                ));
            },
        )?;
        progress_done();
        let face = report.face;
        let detail = format!(
            "{description}: face presence {} after {} frames (best score {:.2}, {:.1} ms/frame)",
            if face.passed == Some(true) {
                "confirmed"
            } else {
                "NOT confirmed"
            },
            report.frames_processed,
            face.best_score,
            report.perception_ms_total / f64::from(report.frames_processed.max(1)),
        );
        Ok((report, detail))
    })?;

    let signed = steps.run("Record the dose event", || {
        let scheduled = plan
            .regimen
            .dose_window_at(session_started_at)
            .ok_or_else(|| {
                anyhow!("no dose window is open now; the regimen was set up for this minute")
            })?;
        let device_id = store.identity()?.device_id;
        let event = dose_event_for(&plan, &scheduled, device_id, &report, session_started_at);
        let signed = store.append_dose_event(event, clock.now())?;
        let detail = format!(
            "{} · sequence {} · hash {}…",
            signed.record.event.outcome.code(),
            signed.sequence(),
            &signed.hash[..16]
        );
        Ok((signed, detail))
    })?;

    steps.run("Sync to the clinic backend", || {
        let policy = RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        };
        let pass = runtime.block_on(sync_now(
            &mut store,
            HTTP_TIMEOUT,
            &policy,
            EvidencePolicy::FlaggedOnly,
            || clock.now(),
        ))?;
        let drained = pass.drained;
        if drained.still_pending > 0 {
            bail!("{} events still pending after sync", drained.still_pending);
        }
        Ok((
            (),
            format!(
                "{} accepted, {} duplicate, {} batch(es) over HTTP, {} retries; {} regimen(s) pulled",
                drained.accepted,
                drained.duplicates,
                drained.batches,
                pass.retries,
                pass.pulled.regimens
            ),
        ))
    })?;

    let adherence = steps.run("Read adherence back from the backend", || {
        let from = plan
            .regimen
            .scheduled_doses(now - Duration::days(1), now + Duration::days(1));
        let start = from.first().map_or(now, |dose| dose.window_opens);
        let report =
            runtime.block_on(coordinator.adherence(patient_id, start, now + Duration::hours(3)))?;
        let detail = format!(
            "{} of {} scheduled doses verified on time",
            report.verified_on_time, report.scheduled
        );
        Ok((report, detail))
    })?;

    let chain_length = store.verify()?;
    drop(backend);
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));

    println!();
    println!("DoseWitness demo — summary");
    for record in steps.records() {
        println!(
            "  {:<47} {:>8}  {}",
            record.name,
            format_duration(record.elapsed),
            record.detail
        );
    }
    println!();
    println!(
        "  Dose outcome:   {} (checks run: face presence with BlazeFace; identity, liveness,",
        signed.record.event.outcome.code()
    );
    println!("                  pill and ingestion checks are not built yet)");
    let reasons: Vec<String> = signed
        .record
        .event
        .reasons
        .iter()
        .map(|reason| format!("{reason:?}"))
        .collect();
    if !reasons.is_empty() {
        println!("  Reasons:        {}", reasons.join(", "));
    }
    match (adherence.ratio, adherence.band) {
        (Some(ratio), Some(band)) => println!(
            "  Adherence:      {:.0}% ({} of {} doses verified on time; band {:?}) — read from the backend",
            ratio * 100.0,
            adherence.verified_on_time,
            adherence.scheduled,
            band
        ),
        _ => println!("  Adherence:      no doses scheduled in the period"),
    }
    println!("  Device chain:   {chain_length} signed event(s), hash chain verified");
    println!("  Data lives in:  {}", data_dir.display());
    println!(
        "    device store  {} (SQLCipher, key in {})",
        device_paths.store.display(),
        device_paths.key.display()
    );
    println!(
        "    backend DB    {}",
        data_dir.join("server").join("server.db").display()
    );

    let verified = signed.record.event.outcome == dosewitness_domain::DoseOutcome::Verified;
    if !verified {
        eprintln!("demo: the dose was not verified from the replay; see the reasons above");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Creates (or checks) the data dir: it must be writable and hold no earlier run.
fn prepare_data_dir(requested: Option<&Path>) -> anyhow::Result<PathBuf> {
    let directory = match requested {
        Some(directory) => {
            std::fs::create_dir_all(directory)
                .with_context(|| format!("creating --data-dir {}", directory.display()))?;
            let mut entries = std::fs::read_dir(directory)
                .with_context(|| format!("reading --data-dir {}", directory.display()))?;
            if entries.next().is_some() {
                bail!(
                    "--data-dir {} is not empty; the demo writes a fresh device and backend, so give it a new or empty directory",
                    directory.display()
                );
            }
            directory.to_path_buf()
        }
        None => tempfile::Builder::new()
            .prefix("dosewitness-demo-")
            .tempdir()
            .context("creating a temporary data dir")?
            .keep(),
    };
    let probe = directory.join(".write-probe");
    std::fs::write(&probe, b"")
        .with_context(|| format!("--data-dir {} is not writable", directory.display()))?;
    std::fs::remove_file(&probe).with_context(|| format!("cleaning up {}", probe.display()))?;
    for part in ["device", "server"] {
        std::fs::create_dir_all(directory.join(part))
            .with_context(|| format!("creating {}", directory.join(part).display()))?;
    }
    Ok(directory)
}
