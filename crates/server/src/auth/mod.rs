//! Who is calling and what they may do.
//!
//! People have accounts (Argon2id password hashes) with one [`Role`], narrowed by [`Scope`]s:
//! coordinators to studies and sites, clinicians to patients. They authenticate with a session
//! cookie from `POST /api/v1/auth/login` (HttpOnly, SameSite=Strict, Secure outside loopback;
//! ended by idle logoff or an absolute lifetime; unsafe requests need the session's CSRF token),
//! or — machine clients — with an API token of an account (`Authorization: Bearer`).
//!
//! [`authenticate`] resolves the credentials once per request into a [`Caller`] kept in the
//! request's extensions; handlers take `Caller` (401 without one) and ask
//! [`Caller::require`] before touching a record. A role that can never do an action gets 403;
//! a record outside the caller's scopes gets the same 404 as a missing one, so scopes do not
//! reveal what exists. Devices are not callers: device routes check the device token only.

pub mod accounts;
mod password;
pub(crate) mod routes;
mod store;
mod throttle;

pub(crate) use store::{AuditFilter, UserKey};
pub(crate) use throttle::LoginThrottle;

use crate::AppState;
use crate::error::ApiFailure;
use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use chrono::Duration;
use dosewitness_domain::{PatientId, SiteId, StudyId};
use dosewitness_protocol::{Role, Scope};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "dw_session";
/// Every API token starts with this, so it is told from a device token without a lookup (and
/// found by secret scanners).
pub const API_TOKEN_PREFIX: &str = "dwt_";
/// Header that carries the session's CSRF token on unsafe requests.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Largest HTML form body read for its `csrf_token` field.
const MAX_FORM_BYTES: usize = 64 * 1024;
/// A session's last-seen time is written at most this often.
const TOUCH_EVERY: Duration = Duration::seconds(30);

/// Session settings of a deployment.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// A session ends after this long without a request (idle logoff).
    pub idle_timeout: Duration,
    /// A session ends this long after login whatever its activity.
    pub absolute_timeout: Duration,
    /// Mark the session cookie `Secure` (HTTPS only). Off only when serving on loopback.
    pub secure_cookies: bool,
}

impl Default for AuthConfig {
    /// 15 minutes idle, 12 hours absolute, `Secure` cookies.
    fn default() -> Self {
        Self {
            idle_timeout: Duration::minutes(15),
            absolute_timeout: Duration::hours(12),
            secure_cookies: true,
        }
    }
}

/// How a caller authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Via {
    Session {
        token_hash: String,
        csrf_token: String,
    },
    ApiToken {
        id: String,
    },
}

/// An authenticated person (or machine client acting for an account).
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub user_id: String,
    pub username: String,
    pub role: Role,
    pub scopes: Vec<Scope>,
    pub via: Via,
    /// Where the request came from, for the audit log.
    pub source: String,
}

/// Where a record sits in the trial: what scope checks compare with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Place {
    pub study: StudyId,
    pub site: Option<SiteId>,
    pub patient: Option<PatientId>,
}

/// What a request does, for [`Caller::require`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    CreateStudy,
    /// Add sites to a study.
    ManageSites,
    /// Add patients to a site; regimens, enrolment codes and device revocation of a patient.
    ManagePatients,
    ReadAdherence,
    /// Review flagged doses and their evidence frames.
    ReviewDoses,
    ManageAccounts,
    ReadAudit,
}

/// The outcome of a permission check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    Allowed,
    /// The role never does this.
    RoleForbidden,
    /// The role does this, but not for this record.
    OutOfScope,
}

/// Whether `role` with `scopes` may do `action` on a record at `place` (`None`: a check of the
/// role alone, before the record is looked up).
pub(crate) fn decide(
    role: Role,
    scopes: &[Scope],
    action: Action,
    place: Option<&Place>,
) -> Decision {
    let in_study = |place: &Place| scopes.contains(&Scope::Study(place.study));
    let in_site = |place: &Place| {
        place
            .site
            .is_some_and(|site| scopes.contains(&Scope::Site(site)))
    };
    let own_patient = |place: &Place| {
        place
            .patient
            .is_some_and(|patient| scopes.contains(&Scope::Patient(patient)))
    };
    let scoped = |allowed: bool| {
        if allowed {
            Decision::Allowed
        } else {
            Decision::OutOfScope
        }
    };
    match (role, action) {
        (Role::Admin, _) => Decision::Allowed,
        (Role::Coordinator, Action::ManageSites) => {
            place.map_or(Decision::Allowed, |place| scoped(in_study(place)))
        }
        (
            Role::Coordinator,
            Action::ManagePatients | Action::ReadAdherence | Action::ReviewDoses,
        ) => place.map_or(Decision::Allowed, |place| {
            scoped(in_study(place) || in_site(place))
        }),
        (Role::Clinician, Action::ReadAdherence) => {
            place.map_or(Decision::Allowed, |place| scoped(own_patient(place)))
        }
        _ => Decision::RoleForbidden,
    }
}

impl Caller {
    /// The audit log's "who".
    pub(crate) fn actor(&self) -> String {
        match &self.via {
            Via::Session { .. } => format!("user:{}", self.username),
            Via::ApiToken { id } => format!("user:{} token:{id}", self.username),
        }
    }

    /// Appends "this caller did `action` on `entity`" to the audit log, timed now.
    pub(crate) async fn audit(
        &self,
        state: &AppState,
        action: &str,
        entity: &str,
    ) -> Result<(), crate::ServerError> {
        state
            .database
            .audit(
                state.clock.now(),
                &self.actor(),
                &self.source,
                action,
                entity,
            )
            .await
    }

    /// Refuses `action` if the caller's role never does it (403).
    pub(crate) fn require_role(&self, action: Action) -> Result<(), ApiFailure> {
        match decide(self.role, &self.scopes, action, None) {
            Decision::RoleForbidden => Err(forbidden()),
            Decision::Allowed | Decision::OutOfScope => Ok(()),
        }
    }

    /// Refuses `action` on the record `what` at `place`: 403 for the role, 404 when the record
    /// is missing (`place` is `None`) or outside the caller's scopes.
    pub(crate) fn require(
        &self,
        action: Action,
        place: Option<Place>,
        what: &str,
    ) -> Result<Place, ApiFailure> {
        self.require_role(action)?;
        let place = place.ok_or_else(|| ApiFailure::not_found(what))?;
        match decide(self.role, &self.scopes, action, Some(&place)) {
            Decision::Allowed => Ok(place),
            Decision::RoleForbidden => Err(forbidden()),
            Decision::OutOfScope => Err(ApiFailure::not_found(what)),
        }
    }
}

fn forbidden() -> ApiFailure {
    ApiFailure::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        "your role does not allow this",
    )
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiFailure;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Self>()
            .cloned()
            .ok_or_else(ApiFailure::unauthorized)
    }
}

/// The peer address of a request, for the audit log: `local` for in-process calls.
#[derive(Debug, Clone)]
pub(crate) struct Source(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Source {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(source_of(&parts.extensions)))
    }
}

fn source_of(extensions: &axum::http::Extensions) -> String {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "local".to_string(), |info| info.0.ip().to_string())
}

pub(crate) fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Equal strings, compared through their digests so timing does not reveal a common prefix.
pub(crate) fn same_secret(a: &str, b: &str) -> bool {
    Sha256::digest(a.as_bytes()) == Sha256::digest(b.as_bytes())
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all("cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// Refuses a cross-site request: an `Origin` header that names another host than `Host`.
fn check_origin(headers: &HeaderMap) -> Result<(), ApiFailure> {
    let Some(origin) = headers.get("origin").and_then(|value| value.to_str().ok()) else {
        return Ok(());
    };
    let origin_host = origin
        .split_once("://")
        .map_or(origin, |(_, rest)| rest)
        .trim_end_matches('/');
    let host = headers.get("host").and_then(|value| value.to_str().ok());
    if host == Some(origin_host) {
        Ok(())
    } else {
        Err(csrf_failed("the request came from another site"))
    }
}

fn csrf_failed(message: &str) -> ApiFailure {
    ApiFailure::new(StatusCode::FORBIDDEN, "csrf_failed", message.to_string())
}

fn session_expired() -> ApiFailure {
    ApiFailure::new(
        StatusCode::UNAUTHORIZED,
        "session_expired",
        "your session has ended; log in again",
    )
}

fn is_unsafe(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Middleware of every route: resolves a bearer API token or a session cookie into
/// a [`Caller`] (no credentials: no caller, and handlers that need one answer 401). Sessions are
/// ended when idle or too old; their unsafe requests must carry the CSRF token (header, or the
/// `csrf_token` field of a form body) and must not come from another origin.
pub(crate) async fn authenticate(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiFailure> {
    let source = source_of(request.extensions());
    // Other bearer tokens are device tokens, checked by the device routes themselves.
    let api_token = bearer(request.headers()).filter(|token| token.starts_with(API_TOKEN_PREFIX));
    let caller = if let Some(token) = api_token {
        let caller = state
            .database
            .caller_by_api_token(&sha256_hex(token), &source)
            .await?;
        Some(caller.ok_or_else(ApiFailure::unauthorized)?)
    } else if let Some(session_token) = cookie(request.headers(), SESSION_COOKIE) {
        let token_hash = sha256_hex(session_token);
        let session = state
            .database
            .session(&token_hash)
            .await?
            .ok_or_else(session_expired)?;
        let now = state.clock.now();
        let config = &state.auth;
        if now - session.last_seen_at > config.idle_timeout
            || now - session.created_at > config.absolute_timeout
        {
            state.database.delete_session(&token_hash).await?;
            let actor = state
                .database
                .user(UserKey::Id(&session.user_id))
                .await?
                .map_or_else(
                    || "anonymous".to_string(),
                    |user| format!("user:{}", user.username),
                );
            state
                .database
                .audit(now, &actor, &source, "session_expired", &session.user_id)
                .await?;
            return Err(session_expired());
        }
        let via = Via::Session {
            token_hash: token_hash.clone(),
            csrf_token: session.csrf_token.clone(),
        };
        let caller = state
            .database
            .caller_by_user(&session.user_id, via, &source)
            .await?
            .ok_or_else(session_expired)?;
        if now - session.last_seen_at > TOUCH_EVERY {
            state.database.touch_session(&token_hash, now).await?;
        }
        Some(caller)
    } else {
        None
    };
    let mut request = request;
    if let Some(caller) = caller {
        if let Via::Session { csrf_token, .. } = &caller.via
            && is_unsafe(request.method())
        {
            request = check_csrf(request, csrf_token).await?;
        }
        request.extensions_mut().insert(caller);
    }
    Ok(next.run(request).await)
}

/// Checks an unsafe session request's CSRF token; a form body is read for its `csrf_token`
/// field and handed on unchanged.
async fn check_csrf(request: Request, expected: &str) -> Result<Request, ApiFailure> {
    check_origin(request.headers())?;
    if let Some(sent) = request
        .headers()
        .get(CSRF_HEADER)
        .and_then(|value| value.to_str().ok())
    {
        return if same_secret(sent, expected) {
            Ok(request)
        } else {
            Err(csrf_failed("the CSRF token does not match this session"))
        };
    }
    let is_form = request
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(csrf_failed(
            "send the session's CSRF token in an X-CSRF-Token header",
        ));
    }
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| {
            ApiFailure::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("form bodies are limited to {MAX_FORM_BYTES} bytes"),
            )
        })?;
    let sent = form_urlencoded::parse(&bytes)
        .find(|(key, _)| key == "csrf_token")
        .map(|(_, value)| value.into_owned());
    match sent {
        Some(sent) if same_secret(&sent, expected) => {
            Ok(Request::from_parts(parts, Body::from(bytes)))
        }
        Some(_) => Err(csrf_failed("the CSRF token does not match this session")),
        None => Err(csrf_failed("the form has no csrf_token field")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn ids() -> (StudyId, SiteId, PatientId) {
        (
            Uuid::now_v7()
                .to_string()
                .parse()
                .unwrap_or_else(|_| unreachable!()),
            Uuid::now_v7()
                .to_string()
                .parse()
                .unwrap_or_else(|_| unreachable!()),
            Uuid::now_v7()
                .to_string()
                .parse()
                .unwrap_or_else(|_| unreachable!()),
        )
    }

    #[test]
    fn scopes_narrow_roles_and_roles_bound_actions() {
        let (study, site, patient) = ids();
        let (other_study, other_site, other_patient) = ids();
        let here = Place {
            study,
            site: Some(site),
            patient: Some(patient),
        };
        let elsewhere = Place {
            study: other_study,
            site: Some(other_site),
            patient: Some(other_patient),
        };
        // A site coordinator reaches the site's patients, not another study's.
        let site_scope = [Scope::Site(site)];
        assert_eq!(
            decide(
                Role::Coordinator,
                &site_scope,
                Action::ReadAdherence,
                Some(&here)
            ),
            Decision::Allowed
        );
        assert_eq!(
            decide(
                Role::Coordinator,
                &site_scope,
                Action::ReadAdherence,
                Some(&elsewhere)
            ),
            Decision::OutOfScope
        );
        // Adding sites needs the study scope, not a site scope.
        let study_level = Place {
            study,
            site: None,
            patient: None,
        };
        assert_eq!(
            decide(
                Role::Coordinator,
                &site_scope,
                Action::ManageSites,
                Some(&study_level)
            ),
            Decision::OutOfScope
        );
        assert_eq!(
            decide(
                Role::Coordinator,
                &[Scope::Study(study)],
                Action::ManageSites,
                Some(&study_level)
            ),
            Decision::Allowed
        );
        // A clinician reads their own patient's adherence and does nothing else.
        let own = [Scope::Patient(patient)];
        assert_eq!(
            decide(Role::Clinician, &own, Action::ReadAdherence, Some(&here)),
            Decision::Allowed
        );
        assert_eq!(
            decide(
                Role::Clinician,
                &own,
                Action::ReadAdherence,
                Some(&elsewhere)
            ),
            Decision::OutOfScope
        );
        assert_eq!(
            decide(Role::Clinician, &own, Action::ManagePatients, Some(&here)),
            Decision::RoleForbidden
        );
        // Only admins manage accounts and read the audit log, whatever the scopes.
        for action in [
            Action::ManageAccounts,
            Action::ReadAudit,
            Action::CreateStudy,
        ] {
            assert_eq!(decide(Role::Admin, &[], action, None), Decision::Allowed);
            assert_eq!(
                decide(Role::Coordinator, &[Scope::Study(study)], action, None),
                Decision::RoleForbidden
            );
        }
    }

    #[test]
    fn cookies_and_origins_are_read_strictly() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "cookie",
            "a=1; dw_session=abc; dw_session_x=zzz"
                .parse()
                .unwrap_or_else(|_| unreachable!()),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&headers, "dw"), None);
        headers.insert(
            "host",
            "clinic.example:8443"
                .parse()
                .unwrap_or_else(|_| unreachable!()),
        );
        assert!(check_origin(&headers).is_ok());
        headers.insert(
            "origin",
            "https://clinic.example:8443"
                .parse()
                .unwrap_or_else(|_| unreachable!()),
        );
        assert!(check_origin(&headers).is_ok());
        headers.insert(
            "origin",
            "https://evil.example"
                .parse()
                .unwrap_or_else(|_| unreachable!()),
        );
        assert!(check_origin(&headers).is_err());
    }
}
