//! Test backends: a SQLite file in a temp dir, or a throwaway PostgreSQL cluster of our own.
//!
//! PostgreSQL: `initdb` runs once into a template directory (kept in the temp dir between
//! runs); each test copies it, starts its own postmaster on a free 127.0.0.1 port (socket in the test's temp dir) and
//! stops it with `pg_ctl stop -m immediate` when its [`TestDatabase`] drops, so no server
//! outlives the test. As root (initdb refuses root) the cluster belongs to the `postgres` user
//! and every PostgreSQL command runs through `runuser -u postgres --`.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)] // tests fail loudly by design

use dosewitness_server::Database;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// A database engine the suite runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// An open, migrated, empty database and what keeps it alive: drop it last.
#[derive(Debug)]
pub struct TestDatabase {
    pub database: Database,
    pub url: String,
    /// Declared before the directory so the server stops before its files are removed.
    cluster: Option<PostgresCluster>,
    directory: tempfile::TempDir,
}

impl TestDatabase {
    pub async fn open(backend: Backend) -> Self {
        let directory = tempfile::tempdir().unwrap();
        match backend {
            Backend::Sqlite => {
                let path = directory.path().join("server.db");
                let database = Database::open_sqlite(&path).await.unwrap();
                Self {
                    database,
                    url: format!("sqlite://{}", path.display()),
                    cluster: None,
                    directory,
                }
            }
            Backend::Postgres => {
                let cluster = PostgresCluster::start(directory.path());
                let url = cluster.url();
                let database = Database::connect(&url)
                    .await
                    .unwrap_or_else(|error| panic!("connecting to the test cluster: {error}"));
                Self {
                    database,
                    url,
                    cluster: Some(cluster),
                    directory,
                }
            }
        }
    }
}

/// A running postmaster over a copy of the template cluster.
#[derive(Debug)]
struct PostgresCluster {
    data: PathBuf,
    port: u16,
}

impl PostgresCluster {
    fn start(directory: &Path) -> Self {
        let installation = installation();
        let template = template(installation);
        make_accessible(installation, directory);
        let data = directory.join("data");
        run(Command::new("cp").arg("-a").arg(template).arg(&data));
        let log = directory.join("postgres.log");
        // A free port can be taken between our probe and the postmaster's bind: try a few.
        let mut failures = String::new();
        for _ in 0..5 {
            let port = free_port();
            let options = format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off \
                 -c synchronous_commit=off -c full_page_writes=off",
                directory.display()
            );
            let output = installation
                .command("pg_ctl")
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(&log)
                .arg("-w")
                .arg("-o")
                .arg(options)
                .arg("start")
                .output()
                .unwrap();
            if output.status.success() {
                return Self { data, port };
            }
            failures.push_str(&describe(&output));
            failures.push_str(&std::fs::read_to_string(&log).unwrap_or_default());
        }
        panic!("could not start a PostgreSQL test cluster:\n{failures}");
    }

    fn url(&self) -> String {
        format!("postgres://app@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PostgresCluster {
    fn drop(&mut self) {
        let Some(installation) = INSTALLATION.get().and_then(|found| found.as_ref().ok()) else {
            return;
        };
        let _ = installation
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// Where the PostgreSQL server binaries are, and whether they must run as `postgres`.
#[derive(Debug)]
struct Installation {
    bin: PathBuf,
    uid: String,
    as_postgres_user: bool,
}

impl Installation {
    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if self.as_postgres_user {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }
}

static INSTALLATION: OnceLock<Result<Installation, String>> = OnceLock::new();

fn installation() -> &'static Installation {
    INSTALLATION
        .get_or_init(find_installation)
        .as_ref()
        .unwrap_or_else(|message| panic!("{message}"))
}

fn find_installation() -> Result<Installation, String> {
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()));
    let mut candidates: Vec<PathBuf> = from_pg_config.into_iter().collect();
    let mut versioned: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .collect();
    // Newest major version first.
    versioned.sort_by_key(|bin| {
        let version = bin
            .parent()
            .and_then(Path::file_name)
            .and_then(|name| name.to_str())
            .and_then(|name| name.parse::<u32>().ok());
        std::cmp::Reverse(version)
    });
    candidates.extend(versioned);
    let bin = candidates
        .into_iter()
        .find(|bin| bin.join("initdb").is_file() && bin.join("pg_ctl").is_file())
        .ok_or_else(|| {
            "PostgreSQL server binaries (initdb, pg_ctl) not found via `pg_config --bindir` or in \
             /usr/lib/postgresql/*/bin; the server suite runs on PostgreSQL too: \
             `apt-get install postgresql`"
                .to_string()
        })?;
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map_err(|error| format!("running `id -u`: {error}"))?;
    let uid = String::from_utf8_lossy(&uid.stdout).trim().to_string();
    let as_postgres_user = uid == "0";
    if as_postgres_user
        && !Command::new("id")
            .arg("postgres")
            .output()
            .is_ok_and(|output| output.status.success())
    {
        return Err(
            "running as root, but there is no `postgres` user to run initdb as \
             (`apt-get install postgresql` creates it)"
                .to_string(),
        );
    }
    Ok(Installation {
        bin,
        uid,
        as_postgres_user,
    })
}

/// The template cluster (its data directory), made by `initdb` at most once per test binary.
///
/// It is kept between runs in the temp dir, one per installation and user, because a static
/// is never dropped: a per-process template would be left behind by every run. It is made in a
/// scratch directory and renamed into place, so a half-made template is never used, and a
/// concurrent binary that loses the rename uses the winner's.
fn template(installation: &Installation) -> &'static Path {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let name: String = format!("{}-uid{}", installation.bin.display(), installation.uid)
            .chars()
            .map(|character| {
                if character.is_ascii_alphanumeric() {
                    character
                } else {
                    '-'
                }
            })
            .collect();
        let directory = std::env::temp_dir().join(format!("dosewitness-pg-template-v1{name}"));
        let data = directory.join("data");
        if data.join("global/pg_control").is_file() {
            return data;
        }
        let _ = std::fs::remove_dir_all(&directory);
        let scratch = tempfile::Builder::new()
            .prefix("dosewitness-pg-initdb-")
            .tempdir()
            .unwrap();
        make_accessible(installation, scratch.path());
        run(installation
            .command("initdb")
            .arg("-D")
            .arg(scratch.path().join("data"))
            .args([
                "-U",
                "app",
                "--auth=trust",
                "--no-locale",
                "-E",
                "UTF8",
                "--no-sync",
            ]));
        let scratch = scratch.keep();
        if std::fs::rename(&scratch, &directory).is_err() {
            let _ = std::fs::remove_dir_all(&scratch);
        }
        assert!(
            data.join("global/pg_control").is_file(),
            "no PostgreSQL template cluster at {}",
            data.display()
        );
        data
    })
}

/// Lets the `postgres` user own `directory` when the commands run as that user.
fn make_accessible(installation: &Installation, directory: &Path) {
    if installation.as_postgres_user {
        run(Command::new("chown").arg("postgres:").arg(directory));
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("running {command:?}: {error}"));
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}",
        describe(&output)
    );
}

fn describe(output: &Output) -> String {
    format!(
        "{}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
pub mod app;
