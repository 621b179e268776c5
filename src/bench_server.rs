//! `dosewitness bench server`: ingest throughput and latency of the clinic backend with
//! concurrent devices, over real HTTP on loopback, on SQLite (a temp file) and, when given a
//! URL, on PostgreSQL.

use anyhow::Context;
use chrono::{Duration, Utc};
use dosewitness_domain::{CheckScores, Clock, DoseEvent, DoseEventId, DoseOutcome, SystemClock};
use dosewitness_protocol::{
    ChainRecord, DoseEventBatch, EnrolDevice, GENESIS_HASH, PROTOCOL_VERSION, SignedDoseEvent,
};
use dosewitness_server::{Database, LoopbackServer};
use dosewitness_sync::{CoordinatorClient, DeviceClient};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, clap::Args)]
pub struct ServerBenchArgs {
    /// Devices sending at the same time.
    #[arg(long, default_value_t = 8)]
    devices: u32,
    /// Signed events each device sends.
    #[arg(long, default_value_t = 1_500)]
    events: u32,
    /// Events per batch (one HTTP request).
    #[arg(long, default_value_t = 50)]
    batch: usize,
    /// Also measure this PostgreSQL database (it must be empty or a DoseWitness database);
    /// e.g. postgres://user@127.0.0.1:5432/bench.
    #[arg(long, env = "DOSEWITNESS_BENCH_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    #[arg(long)]
    json: bool,
}

pub fn run(args: ServerBenchArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let directory = tempfile::tempdir().context("creating a temp dir for the benchmark")?;
    let mut results = vec![runtime.block_on(async {
        let database = Database::open_sqlite(&directory.path().join("server.db")).await?;
        measure("sqlite", database, &args).await
    })?];
    if let Some(url) = &args.database_url {
        results.push(runtime.block_on(async {
            let database = Database::connect(url).await?;
            measure("postgres", database, &args).await
        })?);
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "devices": args.devices,
                "events_per_device": args.events,
                "batch": args.batch,
                "databases": results,
                "targets": {"events_per_s_min": 5000.0, "p99_ms_max": 50.0},
                "measured_at": Utc::now().to_rfc3339(),
            })
        );
    } else {
        println!(
            "bench server: {} devices × {} signed events, batches of {}, real HTTP on loopback",
            args.devices, args.events, args.batch
        );
        for result in &results {
            println!(
                "  {:<9} {:>8.0} events/s (target ≥ 5000)   batch latency p50 {:>6.1} ms, p99 {:>6.1} ms (target ≤ 50)",
                result["database"].as_str().unwrap_or("?"),
                result["events_per_s"].as_f64().unwrap_or(f64::NAN),
                result["p50_ms"].as_f64().unwrap_or(f64::NAN),
                result["p99_ms"].as_f64().unwrap_or(f64::NAN),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Enrols the devices, signs their events (untimed), then times every device sending its
/// batches at once.
async fn measure(
    name: &str,
    database: Database,
    args: &ServerBenchArgs,
) -> anyhow::Result<serde_json::Value> {
    let clock = SystemClock;
    let timeout = std::time::Duration::from_secs(60);
    let backend = LoopbackServer::start_with(database, 0, Arc::new(SystemClock)).await?;
    let coordinator = CoordinatorClient::new(&backend.url, backend.admin_token.clone(), timeout)?;
    let run_id = &dosewitness_server::random_token()?[..8];
    let site = crate::bench::bench_site(&coordinator, &format!("BENCH-{run_id}")).await?;
    let mut senders = Vec::new();
    for index in 0..args.devices {
        let (code, plan) =
            crate::bench::bench_patient(&coordinator, site, &format!("B-{index}"), clock.now())
                .await?;
        let key = ed25519_dalek::SigningKey::from_bytes(&random_seed()?);
        let enrolment = DeviceClient::new(&backend.url, None, timeout)?
            .enrol(&EnrolDevice {
                code,
                public_key: hex::encode(key.verifying_key().to_bytes()),
                label: "bench".into(),
            })
            .await?;
        let events = signed_history(&key, &enrolment.device_id, &plan, args.events);
        let client = DeviceClient::new(&backend.url, Some(enrolment.device_token), timeout)?;
        senders.push((client, enrolment.device_id, events));
    }
    let started = Instant::now();
    let tasks: Vec<_> = senders
        .into_iter()
        .map(|(client, device_id, events)| {
            let batch = args.batch.max(1);
            tokio::spawn(async move {
                let mut latencies_ms = Vec::new();
                for chunk in events.chunks(batch) {
                    let sent = Instant::now();
                    client
                        .push_batch(
                            device_id,
                            &DoseEventBatch {
                                protocol_version: PROTOCOL_VERSION,
                                events: chunk.to_vec(),
                            },
                        )
                        .await?;
                    latencies_ms.push(sent.elapsed().as_secs_f64() * 1000.0);
                }
                anyhow::Ok(latencies_ms)
            })
        })
        .collect();
    let mut latencies_ms = Vec::new();
    for task in tasks {
        latencies_ms.extend(task.await??);
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies_ms.sort_by(f64::total_cmp);
    let percentile = |p: f64| {
        let index = ((latencies_ms.len() as f64 - 1.0) * p).round() as usize;
        latencies_ms.get(index).copied().unwrap_or(f64::NAN)
    };
    let events = f64::from(args.devices) * f64::from(args.events);
    Ok(serde_json::json!({
        "database": name,
        "events": events,
        "seconds": seconds,
        "events_per_s": events / seconds,
        "requests": latencies_ms.len(),
        "p50_ms": percentile(0.50),
        "p99_ms": percentile(0.99),
    }))
}

fn random_seed() -> anyhow::Result<[u8; 32]> {
    let bytes = hex::decode(dosewitness_server::random_token()?)?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("random_token is not 32 bytes"))
}

/// `count` chained, signed daily doses of `plan`, the most recent yesterday.
fn signed_history(
    key: &ed25519_dalek::SigningKey,
    device_id: &dosewitness_domain::DeviceId,
    plan: &dosewitness_protocol::RegimenPlan,
    count: u32,
) -> Vec<SignedDoseEvent> {
    let first = Utc::now() - Duration::days(i64::from(count));
    let mut previous_hash = GENESIS_HASH.to_string();
    (0..count)
        .map(|index| {
            let scheduled_at = first + Duration::days(i64::from(index));
            let signed = ChainRecord {
                format: ChainRecord::FORMAT,
                sequence: u64::from(index) + 1,
                previous_hash: previous_hash.clone(),
                event: DoseEvent {
                    id: DoseEventId::generate(scheduled_at),
                    device_id: *device_id,
                    patient_id: plan.regimen.patient_id,
                    regimen_id: plan.regimen.id,
                    medication_id: plan.medication.id,
                    scheduled_at,
                    recorded_at: scheduled_at + Duration::minutes(4),
                    outcome: DoseOutcome::Verified,
                    reasons: vec![],
                    scores: CheckScores {
                        face_detection: Some(0.93),
                        ..CheckScores::default()
                    },
                },
            }
            .sign(key);
            previous_hash = signed.hash.clone();
            signed
        })
        .collect()
}
