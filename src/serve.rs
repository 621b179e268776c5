//! `dosewitness serve`: the clinic backend as a long-running process.

use anyhow::Context;
use dosewitness_domain::SystemClock;
use dosewitness_server::{AppState, Database, serve};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Directory for the backend's SQLite database (`server/server.db` under it); not needed
    /// with `--database-url`.
    #[arg(
        long,
        env = "DOSEWITNESS_DATA_DIR",
        required_unless_present = "database_url"
    )]
    data_dir: Option<PathBuf>,
    /// The backend's database instead of the SQLite file under `--data-dir`:
    /// `postgres://user:password@host:5432/dbname` or `sqlite://path/to/server.db`.
    #[arg(long, env = "DOSEWITNESS_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Address to listen on. Plain HTTP: put a TLS-terminating proxy in front outside loopback.
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// Bearer token for coordinator endpoints (at least 32 characters).
    #[arg(long, env = "DOSEWITNESS_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: String,
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    if args.admin_token.len() < 32 {
        anyhow::bail!("--admin-token must be at least 32 characters (e.g. `openssl rand -hex 32`)");
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let database = match (&args.database_url, &args.data_dir) {
            (Some(url), _) => Database::connect(url).await?,
            (None, Some(data_dir)) => {
                let directory = data_dir.join("server");
                std::fs::create_dir_all(&directory)
                    .with_context(|| format!("creating {}", directory.display()))?;
                Database::open_sqlite(&directory.join("server.db")).await?
            }
            (None, None) => anyhow::bail!("give --data-dir or --database-url"),
        };
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {} (is the port in use?)", args.listen))?;
        eprintln!(
            "clinic backend ({:?}) listening on http://{}",
            database.backend(),
            listener.local_addr()?
        );
        let state = AppState::new(database, Arc::new(SystemClock), args.admin_token);
        serve(listener, state, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
        anyhow::Ok(ExitCode::SUCCESS)
    })
}
