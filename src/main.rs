//! `dosewitness`: the command-line entry point. It parses arguments into validated settings,
//! calls the library crates and prints; it holds no business logic of its own.

mod bench;
mod bench_server;
mod demo;
mod faces;
mod huge_pages;
mod seed;
mod serve;
mod store_command;
mod sync_command;
mod ui;
mod users;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Models shipped with this checkout (`models/manifest.json`).
const DEFAULT_MODELS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models");
/// The bundled demo replay.
const DEFAULT_REPLAY_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/replays/demo");

#[derive(Debug, Parser)]
#[command(
    name = "dosewitness",
    version,
    about = "On-device verified medication adherence"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole product once on this machine: clinic backend, device, dose session, sync.
    Demo(demo::DemoArgs),
    /// Send an enrolled device's pending dose events to its clinic server (one pass).
    Sync(sync_command::SyncArgs),
    /// Fill a backend with synthetic studies, patients and dose histories (no real PHI).
    Seed(seed::SeedArgs),
    /// Run the clinic backend.
    Serve(serve::ServeArgs),
    /// Accounts of the clinic backend: add, issue API tokens, list.
    Users {
        #[command(subcommand)]
        command: users::UsersCommand,
    },
    /// Face identity: compare two photos.
    Faces {
        #[command(subcommand)]
        command: faces::FacesCommand,
    },
    /// Measure performance figures (see each subcommand's targets).
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
    /// Inspect, verify, export or re-key a device store.
    Store {
        #[command(subcommand)]
        command: store_command::StoreCommand,
    },
}

/// Large blocks (tract's activation tensors) packed low in one arena, so every model's layers
/// write to memory the caches still hold (crates/hotmem).
#[global_allocator]
static ALLOCATOR: dosewitness_hotmem::PackedLarge = dosewitness_hotmem::PackedLarge::new(1 << 30);

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The commands that run the vision models restart once with a huge-page heap (see
    // huge_pages.rs); the restart's error, if any, is logged below.
    let restart_error = match cli.command {
        Command::Demo(_) | Command::Bench { .. } | Command::Faces { .. } => {
            huge_pages::restart_with_huge_pages()
        }
        _ => None,
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DOSEWITNESS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr);
    // One JSON object per line for log shippers; fields are ids, counts and codes, never PHI.
    if std::env::var("DOSEWITNESS_LOG_FORMAT").is_ok_and(|format| format == "json") {
        logs.json().init();
    } else {
        logs.init();
    }
    if let Some(error) = restart_error {
        tracing::debug!(%error, "running on 4 KiB pages: the restart with a huge-page heap failed");
    }
    let result = match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Users { command } => users::run(command),
        Command::Seed(args) => seed::run(args),
        Command::Sync(args) => sync_command::run(args),
        Command::Store { command } => store_command::run(command),
        Command::Bench { command } => bench::run(command),
        Command::Faces { command } => faces::run(command),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The device's files under a data dir.
#[derive(Debug, Clone)]
struct DevicePaths {
    store: PathBuf,
    /// The raw key, for stores whose key lives in a file (`--key-store file`, the demo).
    key: PathBuf,
    /// The name of the OS keyring entry holding the key (not secret), for keyring stores.
    keyring: PathBuf,
    /// Argon2id parameters, for stores unlocked by passphrase.
    kdf: PathBuf,
}

impl DevicePaths {
    fn under(data_dir: &std::path::Path) -> Self {
        let device = data_dir.join("device");
        Self {
            store: device.join("device.db"),
            key: device.join("store.key"),
            keyring: device.join("store.keyring"),
            kdf: device.join("store.kdf.json"),
        }
    }
}
