//! `dosewitness sync --data-dir DIR`: one sync pass of an enrolled device's outbox.

use crate::DevicePaths;
use anyhow::bail;
use dosewitness_domain::{Clock, SystemClock};
use dosewitness_store::{DeviceStore, KeyFile};
use dosewitness_sync::RetryPolicy;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    #[arg(long, env = "DOSEWITNESS_DATA_DIR")]
    data_dir: PathBuf,
    /// Attempts before giving up on a transient failure (network, 429, 5xx).
    #[arg(long, default_value_t = 6)]
    attempts: u32,
    /// Seconds to wait for each HTTP answer.
    #[arg(long, default_value_t = 30)]
    timeout_s: u64,
}

pub fn run(args: SyncArgs) -> anyhow::Result<ExitCode> {
    let paths = DevicePaths::under(&args.data_dir);
    if !paths.store.exists() {
        bail!(
            "no device store at {} (is --data-dir right?)",
            paths.store.display()
        );
    }
    let mut store = DeviceStore::open_with_key_file(&paths.store, &KeyFile::new(&paths.key))?;
    let policy = RetryPolicy {
        max_attempts: args.attempts.max(1),
        ..RetryPolicy::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let clock = SystemClock;
    let (report, retries) = runtime.block_on(dosewitness_edge::sync_now(
        &mut store,
        std::time::Duration::from_secs(args.timeout_s),
        &policy,
        || clock.now(),
    ))?;
    println!(
        "sync: {} accepted, {} already on the server, {} batch(es), {retries} retries; {} still pending",
        report.accepted, report.duplicates, report.batches, report.still_pending
    );
    Ok(ExitCode::SUCCESS)
}
