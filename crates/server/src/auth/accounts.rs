//! Creating accounts and API tokens: shared by the HTTP API, the `dosewitness users` command
//! and the loopback server's bootstrap account.

use super::{password, sha256_hex};
use crate::{Database, ServerError, random_token};
use chrono::{DateTime, Utc};
use dosewitness_domain::Redacted;
use dosewitness_protocol::{ApiTokenIssued, Role, Scope};
use uuid::Uuid;

/// A new account.
#[derive(Debug, Clone)]
pub struct NewAccount {
    pub username: String,
    /// `None`: the account cannot log in with a password (API tokens only).
    pub password: Option<Redacted<String>>,
    pub role: Role,
    pub scopes: Vec<Scope>,
}

/// Why an account or token could not be created.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("{0}")]
    Invalid(String),
    #[error("the username {0:?} is taken")]
    Taken(String),
    #[error("no account {0:?}")]
    UnknownUser(String),
    #[error(transparent)]
    Server(#[from] ServerError),
}

/// Whether `username` is acceptable: 3 to 64 of `a-z 0-9 . _ @ -`, lower case.
pub(crate) fn check_username(username: &str) -> Result<(), AccountError> {
    let valid = (3..=64).contains(&username.len())
        && username
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._@-".contains(c));
    if valid {
        Ok(())
    } else {
        Err(AccountError::Invalid(
            "username must be 3 to 64 characters of a-z, 0-9, '.', '_', '@' or '-'".into(),
        ))
    }
}

/// Hashes on a blocking thread: Argon2id takes tens of milliseconds of CPU.
pub(crate) async fn hash_password(password: String) -> Result<String, ServerError> {
    tokio::task::spawn_blocking(move || password::hash(&password))
        .await
        .map_err(|error| ServerError::Io {
            action: "hashing a password",
            source: std::io::Error::other(error.to_string()),
        })?
}

impl Database {
    /// Creates an account after checking its username, password strength and that every scope
    /// fits the role and names an existing study, site or patient. Returns its id.
    pub async fn create_account(
        &self,
        account: &NewAccount,
        at: DateTime<Utc>,
    ) -> Result<String, AccountError> {
        check_username(&account.username)?;
        self.check_scopes(account.role, &account.scopes).await?;
        let password_hash = match &account.password {
            Some(password) => {
                if let Some(weakness) = password::weakness(password.expose(), &account.username) {
                    return Err(AccountError::Invalid(weakness));
                }
                Some(hash_password(password.expose().clone()).await?)
            }
            None => None,
        };
        let user_id = Uuid::now_v7().to_string();
        let inserted = self
            .insert_user(
                &user_id,
                &account.username,
                password_hash.as_deref(),
                account.role,
                &account.scopes,
                at,
            )
            .await?;
        if !inserted {
            return Err(AccountError::Taken(account.username.clone()));
        }
        Ok(user_id)
    }

    /// Checks that every scope fits `role` and names an existing study, site or patient.
    pub(crate) async fn check_scopes(
        &self,
        role: Role,
        scopes: &[Scope],
    ) -> Result<(), AccountError> {
        for scope in scopes {
            if !scope.fits(role) {
                return Err(AccountError::Invalid(format!(
                    "a {} cannot be given a {} scope (coordinators: study or site; clinicians: patient; admins: none)",
                    role.as_str(),
                    match scope {
                        Scope::Study(_) => "study",
                        Scope::Site(_) => "site",
                        Scope::Patient(_) => "patient",
                    }
                )));
            }
            let exists = match *scope {
                Scope::Study(id) => self.study_place(id).await?.is_some(),
                Scope::Site(id) => self.site_place(id).await?.is_some(),
                Scope::Patient(id) => self.patient_place(id).await?.is_some(),
            };
            if !exists {
                return Err(AccountError::Invalid(format!(
                    "scope {scope:?} names a record that does not exist"
                )));
            }
        }
        Ok(())
    }

    /// Every account, oldest first (no password hashes).
    pub async fn list_accounts(&self) -> Result<Vec<dosewitness_protocol::UserView>, ServerError> {
        self.users().await
    }

    /// Issues a new random API token for `username`'s account.
    pub async fn issue_api_token(
        &self,
        username: &str,
        label: &str,
        at: DateTime<Utc>,
    ) -> Result<ApiTokenIssued, AccountError> {
        let token = format!("{}{}", super::API_TOKEN_PREFIX, random_token()?);
        let id = self.register_api_token(username, label, &token, at).await?;
        Ok(ApiTokenIssued { id, token })
    }

    /// Registers `token` (`dwt_` and at least 32 more characters, chosen by the caller) as an API token of
    /// `username`'s account; returns the token's id.
    pub async fn register_api_token(
        &self,
        username: &str,
        label: &str,
        token: &str,
        at: DateTime<Utc>,
    ) -> Result<String, AccountError> {
        if !token.starts_with(super::API_TOKEN_PREFIX)
            || token.len() < super::API_TOKEN_PREFIX.len() + 32
        {
            return Err(AccountError::Invalid(format!(
                "an API token is {} followed by at least 32 characters",
                super::API_TOKEN_PREFIX
            )));
        }
        if label.is_empty() || label.chars().count() > 200 || label.chars().any(char::is_control) {
            return Err(AccountError::Invalid(
                "label must be 1 to 200 printable characters".into(),
            ));
        }
        let user = self
            .user(super::UserKey::Username(username))
            .await?
            .ok_or_else(|| AccountError::UnknownUser(username.to_string()))?;
        let id = Uuid::now_v7().to_string();
        self.insert_api_token(&id, &sha256_hex(token), &user.id, label, at)
            .await?;
        Ok(id)
    }
}
