//! `dosewitness users`: accounts of the clinic backend, managed on its database directly (the
//! first admin has to come from somewhere; later ones can also be made over the API).

use crate::serve::DatabaseArgs;
use anyhow::Context;
use dosewitness_domain::{Clock, Redacted, SystemClock};
use dosewitness_protocol::{Role, Scope};
use dosewitness_server::NewAccount;
use std::io::BufRead;
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum UsersCommand {
    /// Create an account.
    Add(AddArgs),
    /// Issue an API token for an account (printed once; the server keeps only its hash).
    Token {
        #[command(flatten)]
        database: DatabaseArgs,
        #[arg(long)]
        username: String,
        /// What the token is for, e.g. "nightly FHIR export".
        #[arg(long)]
        label: String,
    },
    /// List the accounts.
    List {
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    #[arg(long)]
    username: String,
    /// admin, coordinator or clinician.
    #[arg(long)]
    role: Role,
    /// What the account may reach: `study:ID` or `site:ID` (coordinators), `patient:ID`
    /// (clinicians). Repeatable.
    #[arg(long = "scope", value_parser = parse_scope)]
    scopes: Vec<Scope>,
    /// Read the password from this environment variable.
    #[arg(long, conflicts_with = "password_stdin")]
    password_env: Option<String>,
    /// Read the password from the first line of standard input.
    #[arg(long)]
    password_stdin: bool,
}

fn parse_scope(text: &str) -> Result<Scope, String> {
    let (kind, id) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not KIND:ID (study:…, site:…, patient:…)"))?;
    let bad_id = |_| format!("{id:?} is not a valid id");
    match kind {
        "study" => Ok(Scope::Study(id.parse().map_err(bad_id)?)),
        "site" => Ok(Scope::Site(id.parse().map_err(bad_id)?)),
        "patient" => Ok(Scope::Patient(id.parse().map_err(bad_id)?)),
        other => Err(format!(
            "unknown scope kind {other:?}; use study, site or patient"
        )),
    }
}

pub fn run(command: UsersCommand) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        match command {
            UsersCommand::Add(args) => add(args).await,
            UsersCommand::Token {
                database,
                username,
                label,
            } => {
                let database = database.open().await?;
                let issued = database
                    .issue_api_token(&username, &label, SystemClock.now())
                    .await?;
                eprintln!(
                    "API token {} for {username} ({label}); shown once, keep it secret:",
                    issued.id
                );
                println!("{}", issued.token);
                Ok(ExitCode::SUCCESS)
            }
            UsersCommand::List { database } => {
                let database = database.open().await?;
                let users = database.list_accounts().await?;
                println!("{}", serde_json::to_string_pretty(&users)?);
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

async fn add(args: AddArgs) -> anyhow::Result<ExitCode> {
    let password = if let Some(variable) = &args.password_env {
        Some(std::env::var(variable).with_context(|| {
            format!("--password-env {variable}: that environment variable is not set")
        })?)
    } else if args.password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        Some(line.trim_end_matches(['\r', '\n']).to_string())
    } else {
        None
    };
    let password_given = password.is_some();
    let database = args.database.open().await?;
    let account = NewAccount {
        username: args.username.clone(),
        password: password.map(Redacted::new),
        role: args.role,
        scopes: args.scopes,
    };
    let id = database.create_account(&account, SystemClock.now()).await?;
    println!("{id}");
    eprintln!(
        "created {} account {}{}",
        args.role.as_str(),
        args.username,
        if password_given {
            ""
        } else {
            " without a password (API tokens only: `dosewitness users token`)"
        }
    );
    Ok(ExitCode::SUCCESS)
}
