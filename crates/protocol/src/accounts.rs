//! Accounts, sessions, API tokens and the audit log: bodies of `/api/v1/auth/*`,
//! `/api/v1/users*`, `/api/v1/api-tokens*` and `/api/v1/audit`.

use chrono::{DateTime, Utc};
use dosewitness_domain::{PatientId, SiteId, StudyId};
use serde::{Deserialize, Serialize};

/// What a person may do. Scopes narrow `Coordinator` (studies, sites) and `Clinician`
/// (patients); an `Admin` is not scoped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Coordinator,
    Clinician,
}

impl Role {
    pub const ALL: [Self; 3] = [Self::Admin, Self::Coordinator, Self::Clinician];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Coordinator => "coordinator",
            Self::Clinician => "clinician",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|role| role.as_str() == text)
            .ok_or_else(|| format!("unknown role {text:?}; use admin, coordinator or clinician"))
    }
}

/// One part of the trial a person is given: `{"kind": "study", "id": "…"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Scope {
    /// Every site and patient of a study (coordinators).
    Study(StudyId),
    /// Every patient of one site (coordinators).
    Site(SiteId),
    /// One patient (clinicians).
    Patient(PatientId),
}

impl Scope {
    /// Whether a person in `role` can be given this scope.
    pub fn fits(self, role: Role) -> bool {
        matches!(
            (role, self),
            (Role::Coordinator, Self::Study(_) | Self::Site(_))
                | (Role::Clinician, Self::Patient(_))
        )
    }
}

/// `POST /api/v1/users`. `password` may be left out for accounts that only use API tokens.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub username: String,
    #[serde(default)]
    pub password: Option<String>,
    pub role: Role,
    #[serde(default)]
    pub scopes: Vec<Scope>,
}

impl std::fmt::Debug for CreateUser {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("CreateUser")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("role", &self.role)
            .field("scopes", &self.scopes)
            .finish()
    }
}

/// `PUT /api/v1/users/{user_id}/scopes`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SetScopes {
    pub scopes: Vec<Scope>,
}

/// An account as `GET /api/v1/users` and `GET /api/v1/auth/me` show it (never its hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserView {
    pub id: String,
    pub username: String,
    pub role: Role,
    pub scopes: Vec<Scope>,
    pub created_at: DateTime<Utc>,
    pub disabled: bool,
}

/// `POST /api/v1/auth/login` (JSON or an HTML form).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Login {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Login")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// The answer to a login (and to `GET /api/v1/auth/me`), alongside the `dw_session` cookie. Unsafe requests of the session
/// (POST, PUT, DELETE) must carry `csrf_token` in an `X-CSRF-Token` header or, for HTML forms,
/// a `csrf_token` form field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionInfo {
    pub user: UserView,
    /// `None` when the caller used an API token (no session, no CSRF).
    pub csrf_token: Option<String>,
    /// The session ends after this long without a request.
    pub idle_timeout_seconds: u64,
}

/// `POST /api/v1/users/{user_id}/api-tokens`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateApiToken {
    pub label: String,
}

/// A new API token: shown once, stored by the server only as a hash. Send it as
/// `Authorization: Bearer <token>`; it acts with its account's role and scopes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiTokenIssued {
    pub id: String,
    pub token: String,
}

impl std::fmt::Debug for ApiTokenIssued {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ApiTokenIssued")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// One row of the append-only audit log, as `GET /api/v1/audit` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    /// `user:NAME`, `user:NAME token:ID`, `device:ID` or `anonymous`.
    pub actor: String,
    pub action: String,
    /// The record acted on (ids only, never names).
    pub entity: String,
    /// Where the request came from (the peer address), `local` for in-process calls.
    pub source: String,
}

/// A page of `GET /api/v1/audit`: pass `next_after` as `after` for the next page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    pub next_after: Option<i64>,
}
