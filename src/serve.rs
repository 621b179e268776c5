//! `dosewitness serve`: the clinic backend as a long-running process.

use anyhow::Context;
use dosewitness_domain::SystemClock;
use dosewitness_server::{
    AppState, AuthConfig, Database, EvidenceStore, ServerTls, serve, serve_tls,
};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Where the backend's database is: shared by `serve`, `users` and `seed`.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArgs {
    /// Directory for the backend's SQLite database (`server/server.db` under it); not needed
    /// with `--database-url`.
    #[arg(
        long,
        env = "DOSEWITNESS_DATA_DIR",
        required_unless_present = "database_url"
    )]
    pub data_dir: Option<PathBuf>,
    /// The backend's database instead of the SQLite file under `--data-dir`:
    /// `postgres://user:password@host:5432/dbname` or `sqlite://path/to/server.db`.
    #[arg(long, env = "DOSEWITNESS_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

impl DatabaseArgs {
    /// Opens (creating and migrating if needed) the database these arguments name.
    pub async fn open(&self) -> anyhow::Result<Database> {
        Ok(match (&self.database_url, &self.data_dir) {
            (Some(url), _) => Database::connect(url).await?,
            (None, Some(data_dir)) => {
                let directory = data_dir.join("server");
                std::fs::create_dir_all(&directory)
                    .with_context(|| format!("creating {}", directory.display()))?;
                Database::open_sqlite(&directory.join("server.db")).await?
            }
            (None, None) => anyhow::bail!("give --data-dir or --database-url"),
        })
    }
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    /// Address to listen on. Without --tls-cert/--tls-key it serves plain HTTP: outside
    /// loopback, put a TLS-terminating proxy in front.
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// PEM certificate chain (server certificate first) to serve HTTPS; needs --tls-key.
    #[arg(
        long,
        value_name = "FILE",
        env = "DOSEWITNESS_TLS_CERT",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        value_name = "FILE",
        env = "DOSEWITNESS_TLS_KEY",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    /// Minutes without a request after which a dashboard session is logged off.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u16).range(1..=720))]
    idle_timeout_minutes: u16,
    /// Where evidence frames (JPEG) are kept: `s3://bucket/prefix` for any S3-compatible store
    /// (settings from --evidence-option and the standard AWS_* environment variables) or
    /// `file:///absolute/path`. Default: `server/evidence/` under --data-dir.
    #[arg(long, env = "DOSEWITNESS_EVIDENCE_URL")]
    evidence_url: Option<String>,
    /// A setting of the --evidence-url store, `KEY=VALUE` (object_store's keys, e.g.
    /// `aws_endpoint=http://minio:9000`, `aws_region=eu-central-1`, `aws_allow_http=true`);
    /// repeatable, and it wins over the same AWS_* variable.
    #[arg(long, value_name = "KEY=VALUE", value_parser = key_value)]
    evidence_option: Vec<(String, String)>,
}

fn key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .filter(|(key, _)| !key.is_empty())
        .map(|(key, value)| (key.to_ascii_lowercase(), value.to_string()))
        .ok_or_else(|| "expected KEY=VALUE".to_string())
}

/// The evidence store `args` name.
fn evidence_store(args: &ServeArgs) -> anyhow::Result<EvidenceStore> {
    match (&args.evidence_url, &args.database.data_dir) {
        (Some(url), _) => {
            // The standard AWS_* variables (credentials, region, endpoint), then the explicit
            // options, which the store applies last.
            let mut options: Vec<(String, String)> = std::env::vars()
                .filter(|(key, _)| key.starts_with("AWS_"))
                .map(|(key, value)| (key.to_ascii_lowercase(), value))
                .collect();
            options.extend(args.evidence_option.iter().cloned());
            Ok(EvidenceStore::from_url(url, options)?)
        }
        (None, Some(data_dir)) => Ok(EvidenceStore::local(
            &data_dir.join("server").join("evidence"),
        )?),
        (None, None) => {
            anyhow::bail!("give --evidence-url (or --data-dir) for the devices' evidence frames")
        }
    }
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    // Loaded before the database opens, so a bad certificate or key fails at once, naming it.
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(certificate), Some(key)) => Some(ServerTls::from_pem_files(certificate, key)?),
        (None, None) => None,
        _ => anyhow::bail!("give both --tls-cert and --tls-key, or neither"),
    };
    runtime.block_on(async {
        let database = args.database.open().await?;
        let evidence = evidence_store(&args)?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {} (is the port in use?)", args.listen))?;
        eprintln!(
            "clinic backend ({:?}) listening on {}://{}",
            database.backend(),
            if tls.is_some() { "https" } else { "http" },
            listener.local_addr()?
        );
        if tls.is_none() && !args.listen.ip().is_loopback() {
            eprintln!(
                "warning: serving plain HTTP on {}: a TLS-terminating proxy is required in \
                 front of it (or give --tls-cert and --tls-key)",
                args.listen
            );
        }
        if database.user_count().await? == 0 {
            eprintln!(
                "no accounts yet: create the first admin with \
                 `dosewitness users add --username NAME --role admin --password-stdin` \
                 (same --data-dir or --database-url)"
            );
        }
        let auth = AuthConfig {
            idle_timeout: chrono::Duration::minutes(i64::from(args.idle_timeout_minutes)),
            // Browsers send Secure cookies over HTTPS only; plain HTTP is fine on loopback.
            secure_cookies: tls.is_some() || !args.listen.ip().is_loopback(),
            ..AuthConfig::default()
        };
        eprintln!("evidence frames are kept in {}", evidence.location());
        let state = AppState::new(database, Arc::new(SystemClock))
            .with_auth(auth)
            .with_evidence_store(evidence);
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        match &tls {
            Some(tls) => serve_tls(listener, tls, state, shutdown).await?,
            None => serve(listener, state, shutdown).await?,
        }
        anyhow::Ok(ExitCode::SUCCESS)
    })
}
