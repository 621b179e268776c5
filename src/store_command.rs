//! `dosewitness store info|verify|export|rekey --data-dir DIR`.

use crate::DevicePaths;
use anyhow::{Context, bail};
use dosewitness_domain::{Clock, SystemClock};
use dosewitness_store::{
    DeviceStore, KeyCustody, KeyFile, KeyringEntry, PassphraseKdf, StoreError,
};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum StoreCommand {
    /// Create an empty device store: a random key in the OS keyring (default), in an
    /// owner-only key file, or derived from a passphrase with Argon2id for devices without a
    /// keyring.
    Init {
        #[arg(long, env = "DOSEWITNESS_DATA_DIR")]
        data_dir: PathBuf,
        /// Where the random key is kept (ignored with --passphrase-env).
        #[arg(long, value_enum, default_value_t = KeyStore::Keyring)]
        key_store: KeyStore,
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
    /// Re-encrypt the store under a new random key and replace the stored key (keyring entry
    /// or key file), crash-safely.
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

/// Where `store init` keeps a new store's random key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyStore {
    /// The OS keyring: Secret Service on Linux, Keychain on macOS, Credential Manager on
    /// Windows.
    Keyring,
    /// An owner-only file beside the store (for development and kiosks without a keyring;
    /// anyone who can read the data dir can read the store).
    File,
}

/// How to unlock a store: its keyring entry or key file (found beside it), or, for stores
/// created in passphrase mode, a passphrase.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Unlock {
    /// Name of an environment variable holding the passphrase, for stores created in
    /// passphrase mode (Argon2id; parameters in `device/store.kdf.json`).
    #[arg(long, value_name = "VAR")]
    passphrase_env: Option<String>,
}

/// The custody of the key of the store in `paths`, from what `store init` left beside it.
pub(crate) fn key_custody(paths: &DevicePaths) -> anyhow::Result<Box<dyn KeyCustody>> {
    if paths.keyring.exists() {
        let account = std::fs::read_to_string(&paths.keyring)
            .with_context(|| format!("reading {}", paths.keyring.display()))?;
        return Ok(Box::new(KeyringEntry::new(account.trim())));
    }
    if paths.kdf.exists() {
        bail!(
            "this store is unlocked by a passphrase: pass --passphrase-env VAR with the \
             passphrase in VAR"
        );
    }
    Ok(Box::new(KeyFile::new(&paths.key)))
}

/// Opens the device store under `data_dir` the way it was created.
pub(crate) fn open(data_dir: &Path, unlock: &Unlock) -> anyhow::Result<DeviceStore> {
    let paths = DevicePaths::under(data_dir);
    if !paths.store.exists() {
        bail!(
            "no device store at {} (is --data-dir right?)",
            paths.store.display()
        );
    }
    match &unlock.passphrase_env {
        None => Ok(DeviceStore::open_with_custody(
            &paths.store,
            key_custody(&paths)?.as_ref(),
        )?),
        Some(variable) => {
            let passphrase = std::env::var(variable)
                .with_context(|| format!("--passphrase-env {variable}: the variable is not set"))?;
            let kdf = PassphraseKdf::load(&paths.kdf)?;
            Ok(DeviceStore::open(&paths.store, &kdf.derive(&passphrase)?)?)
        }
    }
}

/// Creates the key for a new store under `paths` and records where it is kept.
fn create_key(
    paths: &DevicePaths,
    key_store: KeyStore,
    unlock: &Unlock,
) -> anyhow::Result<dosewitness_store::StoreKey> {
    if let Some(variable) = &unlock.passphrase_env {
        let passphrase = std::env::var(variable)
            .with_context(|| format!("--passphrase-env {variable}: the variable is not set"))?;
        let kdf = PassphraseKdf::recommended()?;
        let key = kdf.derive(&passphrase)?;
        kdf.save(&paths.kdf)?;
        return Ok(key);
    }
    match key_store {
        KeyStore::File => Ok(KeyFile::new(&paths.key).create()?),
        KeyStore::Keyring => {
            KeyringEntry::available().context(
                "cannot keep the store key in the OS keyring; choose --key-store file or \
                 --passphrase-env VAR explicitly",
            )?;
            let entry = KeyringEntry::generate()?;
            let key = entry.create()?;
            // The entry name is not secret; it tells later commands where the key is.
            std::fs::write(&paths.keyring, entry.account())
                .with_context(|| format!("writing {}", paths.keyring.display()))?;
            Ok(key)
        }
    }
}

pub fn run(command: StoreCommand) -> anyhow::Result<ExitCode> {
    match command {
        StoreCommand::Init {
            data_dir,
            key_store,
            unlock,
        } => {
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
            let key = create_key(&paths, key_store, &unlock)?;
            let store = DeviceStore::create(&paths.store, &key, SystemClock.now())?;
            let custody = match (&unlock.passphrase_env, key_store) {
                (Some(_), _) => "a passphrase (Argon2id)".to_string(),
                (None, _) => key_custody(&paths)?.describe(),
            };
            println!(
                "device store created at {}; key kept in {custody}",
                store.path().display()
            );
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
            let custody = key_custody(&paths)?;
            let mut store = DeviceStore::open_with_custody(&paths.store, custody.as_ref())?;
            store.rekey(custody.as_ref(), SystemClock.now())?;
            println!(
                "store re-encrypted under a new key; {} replaced",
                custody.describe()
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
        DeviceStore::open_with_custody(&paths.store, &key_file)?
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
