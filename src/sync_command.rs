//! `dosewitness sync --data-dir DIR`: one sync pass of an enrolled device's outbox.

use dosewitness_domain::{Clock, EvidencePolicy, SystemClock};
use dosewitness_sync::{RetryPolicy, TlsPolicy};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    #[arg(long, env = "DOSEWITNESS_DATA_DIR")]
    data_dir: PathBuf,
    #[command(flatten)]
    unlock: crate::store_command::Unlock,
    /// Attempts before giving up on a transient failure (network, 429, 5xx).
    #[arg(long, default_value_t = 6)]
    attempts: u32,
    /// Seconds to wait for each HTTP answer.
    #[arg(long, default_value_t = 30)]
    timeout_s: u64,
    /// Which doses' evidence frames to upload: those flagged for review, or all (only when the
    /// study protocol says so).
    #[arg(long, value_enum, default_value_t = EvidenceArg::Flagged)]
    evidence: EvidenceArg,
    /// Trust only this PEM certificate (the server's self-signed certificate, or the CA that
    /// issued it) instead of the system's trust store.
    #[arg(long, value_name = "FILE", env = "DOSEWITNESS_PIN_CERTIFICATE")]
    pin_certificate: Option<PathBuf>,
}

/// `--evidence`: the study's evidence policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum EvidenceArg {
    /// Doses that need review or did not verify.
    Flagged,
    /// Every dose with evidence.
    All,
}

impl From<EvidenceArg> for EvidencePolicy {
    fn from(argument: EvidenceArg) -> Self {
        match argument {
            EvidenceArg::Flagged => Self::FlaggedOnly,
            EvidenceArg::All => Self::All,
        }
    }
}

pub fn run(args: SyncArgs) -> anyhow::Result<ExitCode> {
    let tls = match &args.pin_certificate {
        Some(path) => TlsPolicy::pinned_file(path)?,
        None => TlsPolicy::platform_roots(),
    };
    let mut store = crate::store_command::open(&args.data_dir, &args.unlock)?;
    let policy = RetryPolicy {
        max_attempts: args.attempts.max(1),
        ..RetryPolicy::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let clock = SystemClock;
    let pass = runtime.block_on(dosewitness_edge::sync_now_with_tls(
        &mut store,
        std::time::Duration::from_secs(args.timeout_s),
        &tls,
        &policy,
        args.evidence.into(),
        || clock.now(),
    ))?;
    let report = pass.drained;
    println!(
        "sync: {} accepted, {} already on the server, {} batch(es), {} retries; {} still pending",
        report.accepted, report.duplicates, report.batches, pass.retries, report.still_pending
    );
    let skew = pass.pulled.clock_skew_ms.map_or_else(
        || "not measured (no Date header)".to_string(),
        |skew| format!("{:+.1} s (server minus device)", skew as f64 / 1000.0),
    );
    println!(
        "schedule: {} regimen(s) from the server; clock skew {skew}",
        pass.pulled.regimens
    );
    let evidence = pass.evidence;
    println!(
        "evidence ({}): {} frame(s) uploaded, {} already on the server; {} still pending",
        EvidencePolicy::from(args.evidence).code(),
        evidence.uploaded,
        evidence.already_on_server,
        evidence.still_pending
    );
    Ok(ExitCode::SUCCESS)
}
