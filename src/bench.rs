//! `dosewitness bench …`: measured figures for the performance targets. Benchmarks, not tests:
//! they print numbers; the issues' targets are compared in the output, never asserted in tests.

use anyhow::Context;
use chrono::{Duration, Utc};
use dosewitness_domain::{
    CheckScores, Clock, DeviceId, DoseEvent, DoseEventId, DoseOutcome, MedicationId, PatientId,
    RegimenId, SystemClock,
};
use dosewitness_store::{DeviceStore, StoreKey};
use std::process::ExitCode;
use std::time::Instant;

#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Signed dose events written per second, SQLCipher vs plain SQLite, and open time.
    Store {
        /// Events to write per store.
        #[arg(long, default_value_t = 2000)]
        events: u32,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(command: BenchCommand) -> anyhow::Result<ExitCode> {
    match command {
        BenchCommand::Store { events, json } => store(events, json),
    }
}

/// A synthetic verified dose event (random ids, no PHI) for benchmarks and crash tests.
pub fn sample_event(index: u32, clock: &dyn Clock) -> DoseEvent {
    let now = clock.now();
    DoseEvent {
        id: DoseEventId::generate(now),
        device_id: DeviceId::generate(now),
        patient_id: PatientId::generate(now),
        regimen_id: RegimenId::generate(now),
        medication_id: MedicationId::generate(now),
        scheduled_at: now - Duration::minutes(i64::from(index % 60)),
        recorded_at: now,
        outcome: DoseOutcome::Verified,
        reasons: Vec::new(),
        scores: CheckScores {
            face_detection: Some(0.93),
            ..CheckScores::default()
        },
    }
}

/// Writes `events` signed events, one durable transaction each; returns events per second.
fn write_events(store: &mut DeviceStore, events: u32, clock: &dyn Clock) -> anyhow::Result<f64> {
    let started = Instant::now();
    for index in 0..events {
        store.append_dose_event(sample_event(index, clock), clock.now())?;
    }
    Ok(f64::from(events) / started.elapsed().as_secs_f64())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn store(events: u32, json: bool) -> anyhow::Result<ExitCode> {
    let clock = SystemClock;
    let directory = tempfile::tempdir().context("creating a temp dir for the benchmark")?;
    let key = StoreKey::generate()?;
    let encrypted_path = directory.path().join("sqlcipher.db");
    let plain_path = directory.path().join("plain.db");

    let mut encrypted = DeviceStore::create(&encrypted_path, &key, clock.now())?;
    let mut plain = DeviceStore::create_plaintext_for_benchmark(&plain_path, clock.now())?;
    // Warm up both (page cache, statement cache), then alternate halves to share any noise.
    write_events(&mut encrypted, 50, &clock)?;
    write_events(&mut plain, 50, &clock)?;
    let half = events / 2;
    let mut encrypted_rates = vec![write_events(&mut encrypted, half, &clock)?];
    let mut plain_rates = vec![write_events(&mut plain, half, &clock)?];
    encrypted_rates.push(write_events(&mut encrypted, events - half, &clock)?);
    plain_rates.push(write_events(&mut plain, events - half, &clock)?);
    let sqlcipher_events_per_s = encrypted_rates.iter().sum::<f64>() / 2.0;
    let plain_events_per_s = plain_rates.iter().sum::<f64>() / 2.0;
    let verify_started = Instant::now();
    let verified = encrypted.verify()?;
    let verify_ms = verify_started.elapsed().as_secs_f64() * 1000.0;
    drop(encrypted);
    drop(plain);

    let mut open_ms: Vec<f64> = (0..21)
        .map(|_| {
            let started = Instant::now();
            let store = DeviceStore::open(&encrypted_path, &key)?;
            let elapsed = started.elapsed().as_secs_f64() * 1000.0;
            drop(store);
            Ok(elapsed)
        })
        .collect::<anyhow::Result<_>>()?;
    let open_ms_median = median(&mut open_ms);
    let overhead_ratio = plain_events_per_s / sqlcipher_events_per_s;
    let report = serde_json::json!({
        "events": events,
        "sqlcipher_events_per_s": sqlcipher_events_per_s,
        "plain_events_per_s": plain_events_per_s,
        "overhead_ratio": overhead_ratio,
        "open_ms_median": open_ms_median,
        "verify_chain_ms": verify_ms,
        "chain_length": verified,
        "transaction_per_event": true,
        "synchronous": "FULL",
        "targets": {"overhead_ratio_max": 1.15, "sqlcipher_events_per_s_min": 2000.0, "open_ms_max": 20.0},
        "measured_at": Utc::now().to_rfc3339(),
    });
    if json {
        println!("{report}");
    } else {
        println!(
            "bench store: {events} signed dose events per store, one durable transaction each"
        );
        println!("  SQLCipher      {sqlcipher_events_per_s:>10.0} events/s   (target ≥ 2000)");
        println!("  plain SQLite   {plain_events_per_s:>10.0} events/s");
        println!("  overhead       {overhead_ratio:>10.2}×          (target ≤ 1.15)");
        println!("  open, raw key  {open_ms_median:>10.2} ms median (target ≤ 20)");
        println!("  verify chain   {verify_ms:>10.1} ms for {verified} events");
    }
    Ok(ExitCode::SUCCESS)
}
