//! `dosewitness store info|verify|export|rekey --data-dir DIR`.

use crate::DevicePaths;
use anyhow::{Context, bail};
use dosewitness_domain::{Clock, SystemClock};
use dosewitness_store::{DeviceStore, KeyFile, PassphraseKdf, StoreError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum StoreCommand {
    /// Create an empty device store: a random key in an owner-only key file (default), or a key
    /// derived from a passphrase with Argon2id for devices without a keyring.
    Init {
        #[arg(long, env = "DOSEWITNESS_DATA_DIR")]
        data_dir: PathBuf,
        #[command(flatten)]
        unlock: Unlock,
    },
    /// Show the store's identity and counts (no PHI).
    Info {
        #[arg(long, env = "DOSEWITNESS_DATA_DIR")]
        data_dir: PathBuf,
        #[command(flatten)]
        unlock: Unlock,
    },
    /// Verify every hash, signature and link of the dose-event chain.
    Verify {
        #[arg(long, env = "DOSEWITNESS_DATA_DIR")]
        data_dir: PathBuf,
        #[command(flatten)]
        unlock: Unlock,
    },
    /// Write every signed dose event as JSON Lines to a new file (it holds clinical data:
    /// keep it as protected as the device).
    Export {
        #[arg(long, env = "DOSEWITNESS_DATA_DIR")]
        data_dir: PathBuf,
        #[command(flatten)]
        unlock: Unlock,
        /// The file to create; an existing file is never overwritten.
        #[arg(long)]
        out: PathBuf,
    },
    /// Re-encrypt the store under a new random key and replace the key file, crash-safely.
    Rekey {
        #[arg(long, env = "DOSEWITNESS_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// Test support for the crash-safety test: append COUNT synthetic signed events, printing
    /// `committed SEQUENCE EVENT_ID` after each commit. Creates the store if absent.
    #[command(hide = true)]
    StressWrite {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        count: u32,
    },
}

/// How to unlock the store: the key file (default) or, chosen explicitly, a passphrase.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Unlock {
    /// Name of an environment variable holding the passphrase, for stores created in
    /// passphrase mode (Argon2id; parameters in `device/store.kdf.json`).
    #[arg(long, value_name = "VAR")]
    passphrase_env: Option<String>,
}

fn open(data_dir: &Path, unlock: &Unlock) -> anyhow::Result<DeviceStore> {
    let paths = DevicePaths::under(data_dir);
    if !paths.store.exists() {
        bail!(
            "no device store at {} (is --data-dir right?)",
            paths.store.display()
        );
    }
    match &unlock.passphrase_env {
        None => Ok(DeviceStore::open_with_key_file(
            &paths.store,
            &KeyFile::new(&paths.key),
        )?),
        Some(variable) => {
            let passphrase = std::env::var(variable)
                .with_context(|| format!("--passphrase-env {variable}: the variable is not set"))?;
            let kdf = PassphraseKdf::load(&paths.kdf)?;
            Ok(DeviceStore::open(&paths.store, &kdf.derive(&passphrase)?)?)
        }
    }
}

pub fn run(command: StoreCommand) -> anyhow::Result<ExitCode> {
    match command {
        StoreCommand::Init { data_dir, unlock } => {
            let paths = DevicePaths::under(&data_dir);
            if paths.store.exists() {
                bail!(
                    "a device store already exists at {}; it was left untouched",
                    paths.store.display()
                );
            }
            let directory = paths.store.parent().unwrap_or(&data_dir);
            std::fs::create_dir_all(directory)
                .with_context(|| format!("creating {}", directory.display()))?;
            let key = match &unlock.passphrase_env {
                None => KeyFile::new(&paths.key).create()?,
                Some(variable) => {
                    let passphrase = std::env::var(variable).with_context(|| {
                        format!("--passphrase-env {variable}: the variable is not set")
                    })?;
                    let kdf = PassphraseKdf::recommended()?;
                    let key = kdf.derive(&passphrase)?;
                    kdf.save(&paths.kdf)?;
                    key
                }
            };
            let store = DeviceStore::create(&paths.store, &key, SystemClock.now())?;
            println!("device store created at {}", store.path().display());
        }
        StoreCommand::Info { data_dir, unlock } => {
            let info = open(&data_dir, &unlock)?.info()?;
            println!("store:           {}", info.path.display());
            println!("schema version:  {}", info.schema_version);
            println!(
                "device:          {}",
                info.device_id
                    .map_or_else(|| "-".to_string(), |id| id.to_string())
            );
            println!("dose events:     {}", info.dose_events);
            println!("pending sync:    {}", info.pending_sync);
            println!("evidence frames: {}", info.evidence_frames);
            println!(
                "last hash:       {}",
                info.last_hash.unwrap_or_else(|| "-".to_string())
            );
        }
        StoreCommand::Verify { data_dir, unlock } => {
            let count = open(&data_dir, &unlock)?.verify()?;
            println!(
                "chain verified: {count} signed dose event(s), every hash, signature and link intact"
            );
        }
        StoreCommand::Export {
            data_dir,
            unlock,
            out,
        } => {
            let store = open(&data_dir, &unlock)?;
            let count = store
                .verify()
                .context("refusing to export a chain that does not verify")?;
            export(&store, &out)?;
            eprintln!("exported {count} signed dose event(s) to {}", out.display());
        }
        StoreCommand::Rekey { data_dir } => {
            let paths = DevicePaths::under(&data_dir);
            let mut store = open(&data_dir, &Unlock::default())?;
            store.rekey(&KeyFile::new(&paths.key), SystemClock.now())?;
            println!(
                "store re-encrypted under a new key; key file {} replaced",
                paths.key.display()
            );
        }
        StoreCommand::StressWrite { data_dir, count } => stress_write(&data_dir, count)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn export(store: &DeviceStore, out: &Path) -> anyhow::Result<()> {
    let mut temporary = out.as_os_str().to_owned();
    temporary.push(".partial");
    let temporary = PathBuf::from(temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temporary)
        .with_context(|| format!("creating {}", temporary.display()))?;
    for event in store.all_events()? {
        serde_json::to_writer(&mut file, &event)?;
        file.write_all(b"\n")?;
    }
    file.sync_all()?;
    if out.exists() {
        std::fs::remove_file(&temporary)?;
        bail!("{} already exists; choose a new file", out.display());
    }
    std::fs::rename(&temporary, out).with_context(|| format!("creating {}", out.display()))?;
    Ok(())
}

fn stress_write(data_dir: &Path, count: u32) -> anyhow::Result<()> {
    let clock = SystemClock;
    let paths = DevicePaths::under(data_dir);
    let key_file = KeyFile::new(&paths.key);
    let mut store = if paths.store.exists() {
        DeviceStore::open_with_key_file(&paths.store, &key_file)?
    } else {
        std::fs::create_dir_all(paths.store.parent().unwrap_or(data_dir))?;
        let key = match key_file.load() {
            Ok(key) => key,
            Err(StoreError::Io { .. }) => key_file.create()?,
            Err(error) => return Err(error.into()),
        };
        DeviceStore::create(&paths.store, &key, clock.now())?
    };
    let stdout = std::io::stdout();
    for index in 0..count {
        let event = crate::bench::sample_event(index, &clock);
        let signed = store.append_dose_event(event, clock.now())?;
        let mut lock = stdout.lock();
        writeln!(
            lock,
            "committed {} {}",
            signed.sequence(),
            signed.record.event.id
        )?;
        lock.flush()?;
    }
    Ok(())
}
