//! `dosewitness store info|verify --data-dir DIR`.

use crate::DevicePaths;
use dosewitness_store::{DeviceStore, KeyFile};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum StoreCommand {
    /// Show the store's identity and counts.
    Info {
        #[arg(long, env = "DOSEWITNESS_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// Verify every hash, signature and link of the dose-event chain.
    Verify {
        #[arg(long, env = "DOSEWITNESS_DATA_DIR")]
        data_dir: PathBuf,
    },
}

fn open(data_dir: &std::path::Path) -> anyhow::Result<DeviceStore> {
    let paths = DevicePaths::under(data_dir);
    let key = KeyFile::new(&paths.key).load()?;
    Ok(DeviceStore::open(&paths.store, &key)?)
}

pub fn run(command: StoreCommand) -> anyhow::Result<ExitCode> {
    match command {
        StoreCommand::Info { data_dir } => {
            let info = open(&data_dir)?.info()?;
            println!("store:           {}", info.path.display());
            println!("schema version:  {}", info.schema_version);
            println!(
                "device:          {}",
                info.device_id
                    .map_or_else(|| "-".to_string(), |id| id.to_string())
            );
            println!("dose events:     {}", info.dose_events);
            println!("pending sync:    {}", info.pending_sync);
            println!(
                "last hash:       {}",
                info.last_hash.unwrap_or_else(|| "-".to_string())
            );
        }
        StoreCommand::Verify { data_dir } => {
            let count = open(&data_dir)?.verify()?;
            println!(
                "chain verified: {count} signed dose event(s), every hash, signature and link intact"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
