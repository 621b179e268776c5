//! `/api/v1/auth/*`, `/api/v1/users*`, `/api/v1/api-tokens*` and `/api/v1/audit`.

use super::accounts::{AccountError, NewAccount};
use super::{
    Action, AuditFilter, Caller, SESSION_COOKIE, Source, UserKey, Via, password, sha256_hex,
};
use crate::AppState;
use crate::error::ApiFailure;
use crate::routes::ApiJson;
use axum::Json;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dosewitness_domain::Redacted;
use dosewitness_protocol::{
    ApiError, ApiTokenIssued, AuditPage, CreateApiToken, CreateUser, Created, Login, SessionInfo,
    SetScopes, UserView,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use utoipa_axum::{router::OpenApiRouter, routes};

/// Most audit rows in one page.
const MAX_AUDIT_PAGE: i64 = 1000;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(me))
        .routes(routes!(create_user, list_users))
        .routes(routes!(set_scopes))
        .routes(routes!(disable_user))
        .routes(routes!(create_api_token))
        .routes(routes!(revoke_api_token))
        .routes(routes!(audit))
}

impl From<AccountError> for ApiFailure {
    fn from(error: AccountError) -> Self {
        match error {
            AccountError::Invalid(message) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message)
            }
            AccountError::Taken(_) => Self::new(
                StatusCode::CONFLICT,
                "duplicate",
                "an account with this username exists",
            ),
            AccountError::UnknownUser(_) => Self::not_found("account"),
            AccountError::Server(error) => error.into(),
        }
    }
}

/// A body sent as JSON or as an HTML form (`application/x-www-form-urlencoded`).
struct JsonOrForm<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonOrForm<T> {
    type Rejection = ApiFailure;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_form = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.starts_with("application/x-www-form-urlencoded"));
        if is_form {
            axum::Form::<T>::from_request(request, state)
                .await
                .map(|axum::Form(value)| Self(value))
                .map_err(|rejection| {
                    ApiFailure::new(rejection.status(), "invalid_body", rejection.body_text())
                })
        } else {
            ApiJson::<T>::from_request(request, state)
                .await
                .map(|ApiJson(value)| Self(value))
        }
    }
}

fn session_cookie(state: &AppState, value: &str, expire: bool) -> Result<HeaderValue, ApiFailure> {
    let mut cookie = format!("{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict");
    if expire {
        cookie.push_str("; Max-Age=0");
    }
    if state.auth.secure_cookies {
        cookie.push_str("; Secure");
    }
    HeaderValue::from_str(&cookie)
        .map_err(|_| ApiFailure::from(crate::ServerError::Decode("session cookie".into())))
}

fn invalid_credentials() -> ApiFailure {
    ApiFailure::new(
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
        "the username or password is wrong",
    )
}

#[utoipa::path(post, path = "/api/v1/auth/login", tag = "accounts", request_body(content = Login, description = "JSON or an HTML form"), responses((status = 200, description = "logged in; the dw_session cookie is set", body = SessionInfo), (status = 401, description = "wrong username or password", body = ApiError), (status = 403, description = "cross-site request", body = ApiError), (status = 429, description = "too many failed logins; see Retry-After", body = ApiError)))]
async fn login(
    State(state): State<AppState>,
    Source(source): Source,
    headers: HeaderMap,
    JsonOrForm(body): JsonOrForm<Login>,
) -> Result<Response, ApiFailure> {
    super::check_origin(&headers)?;
    let now = state.clock.now();
    let username = body.username.trim().to_lowercase();
    if let Err(seconds) = state.login_throttle.check(&username, &source, now) {
        state
            .database
            .audit(now, "anonymous", &source, "login_throttled", &username)
            .await?;
        return Err(ApiFailure::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_attempts",
            format!("too many failed logins; try again in {seconds} s"),
        )
        .retry_after(seconds));
    }
    let row = if super::accounts::check_username(&username).is_ok() {
        state.database.login_row(&username).await?
    } else {
        None
    };
    let stored = row
        .as_ref()
        .filter(|row| !row.disabled)
        .and_then(|row| row.password_hash.clone());
    let password = body.password;
    let matches =
        tokio::task::spawn_blocking(move || password::verify(&password, stored.as_deref()))
            .await
            .unwrap_or(false);
    let Some(row) = row.filter(|_| matches) else {
        state.login_throttle.failed(&username, &source, now);
        state
            .database
            .audit(now, "anonymous", &source, "login_failed", &username)
            .await?;
        return Err(invalid_credentials());
    };
    state.login_throttle.succeeded(&username);
    let token = crate::random_token()?;
    let csrf_token = crate::random_token()?;
    let token_hash = sha256_hex(&token);
    state
        .database
        .insert_session(
            &token_hash,
            &row.user_id,
            &csrf_token,
            now,
            &source,
            now - state.auth.idle_timeout,
        )
        .await?;
    let user = state
        .database
        .user(UserKey::Id(&row.user_id))
        .await?
        .ok_or_else(invalid_credentials)?;
    state
        .database
        .audit(
            now,
            &format!("user:{}", user.username),
            &source,
            "login",
            &user.id,
        )
        .await?;
    let info = SessionInfo {
        user,
        csrf_token: Some(csrf_token),
        idle_timeout_seconds: idle_seconds(&state),
    };
    let mut response = Json(info).into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&state, &token, false)?);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

fn idle_seconds(state: &AppState) -> u64 {
    u64::try_from(state.auth.idle_timeout.num_seconds()).unwrap_or(0)
}

#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "accounts", responses((status = 204, description = "the session ended"), (status = 400, description = "malformed request", body = ApiError), (status = 401, description = "no or invalid credentials", body = ApiError), (status = 403, description = "the role does not allow this, or a CSRF failure", body = ApiError)), security(("session" = [])))]
async fn logout(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiFailure> {
    let Via::Session { token_hash, .. } = &caller.via else {
        return Err(ApiFailure::bad_request(
            "not_a_session",
            "API tokens are not logged out; revoke the token instead",
        ));
    };
    state.database.delete_session(token_hash).await?;
    caller.audit(&state, "logout", &caller.user_id).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&state, "", true)?);
    Ok(response)
}

#[utoipa::path(get, path = "/api/v1/auth/me", tag = "accounts", responses((status = 200, body = SessionInfo), (status = 401, description = "no or invalid credentials", body = ApiError)), security(("api_token" = []), ("session" = [])))]
async fn me(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<SessionInfo>, ApiFailure> {
    let user = state
        .database
        .user(UserKey::Id(&caller.user_id))
        .await?
        .ok_or_else(ApiFailure::unauthorized)?;
    let csrf_token = match caller.via {
        Via::Session { csrf_token, .. } => Some(csrf_token),
        Via::ApiToken { .. } => None,
    };
    Ok(Json(SessionInfo {
        user,
        csrf_token,
        idle_timeout_seconds: idle_seconds(&state),
    }))
}

#[utoipa::path(post, path = "/api/v1/users", tag = "accounts", request_body = CreateUser, responses((status = 201, body = Created<String>), (status = 401, description = "no or invalid credentials", body = ApiError), (status = 403, description = "the role does not allow this, or a CSRF failure", body = ApiError), (status = 409, description = "conflict", body = ApiError), (status = 422, description = "a field is invalid", body = ApiError)), security(("api_token" = []), ("session" = [])))]
async fn create_user(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateUser>,
) -> Result<(StatusCode, Json<Created<String>>), ApiFailure> {
    caller.require_role(Action::ManageAccounts)?;
    let now = state.clock.now();
    let account = NewAccount {
        username: body.username,
        password: body.password.map(Redacted::new),
        role: body.role,
        scopes: body.scopes,
    };
    let id = state.database.create_account(&account, now).await?;
    caller.audit(&state, "create_user", &id).await?;
    Ok((StatusCode::CREATED, Json(Created { id })))
}

#[utoipa::path(get, path = "/api/v1/users", tag = "accounts", responses((status = 200, body = Vec<UserView>), (status = 401, description = "no or invalid credentials", body = ApiError), (status = 403, description = "the role does not allow this, or a CSRF failure", body = ApiError)), security(("api_token" = []), ("session" = [])))]
async fn list_users(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<UserView>>, ApiFailure> {
    caller.require_role(Action::ManageAccounts)?;
    Ok(Json(state.database.users().await?))
}

#[utoipa::path(put, path = "/api/v1/users/{user_id}/scopes", tag = "accounts", params(("user_id" = String, Path, description = "account id")), request_body = SetScopes, responses((status = 204, description = "scopes replaced"), (status = 401, description = "no or invalid credentials", body = ApiError), (status = 403, description = "the role does not allow this, or a CSRF failure", body = ApiError), (status = 404, description = "unknown, or outside the caller's scopes", body = ApiError), (status = 422, description = "a field is invalid", body = ApiError)), security(("api_token" = []), ("session" = [])))]
async fn set_scopes(
    State(state): State<AppState>,
    caller: Caller,
    Path(user_id): Path<String>,
    ApiJson(body): ApiJson<SetScopes>,
) -> Result<StatusCode, ApiFailure> {
    caller.require_role(Action::ManageAccounts)?;
    let user = state
        .database
        .user(UserKey::Id(&user_id))
        .await?
        .ok_or_else(|| ApiFailure::not_found("account"))?;
    state.database.check_scopes(user.role, &body.scopes).await?;
    state.database.set_scopes(&user.id, &body.scopes).await?;
    caller.audit(&state, "set_scopes", &user.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/users/{user_id}/disable", tag = "accounts", params(("user_id" = String, Path, description = "account id")), responses((status = 204, description = "disabled: sessions ended, tokens revoked"), (status = 401, description = "no or invalid credentials", body = ApiError), (status = 403, description = "the role does not allow this, or a CSRF failure", body = ApiError), (status = 404, description = "unknown, or outside the caller's scopes", body = ApiError)), security(("api_token" = []), ("session" = [])))]
async fn disable_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(user_id): Path<String>,
) -> Result<StatusCode, ApiFailure> {
    caller.require_role(Action::ManageAccounts)?;
    let now = state.clock.now();
    if !state.database.disable_user(&user_id, now).await? {
        return Err(ApiFailure::not_found("account"));
    }
    caller.audit(&state, "disable_user", &user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/users/{user_id}/api-tokens", tag = "accounts", params(("user_id" = String, Path, description = "account id")), request_body = CreateApiToken, responses((status = 201, description = "the token, shown once", body = ApiTokenIssued), (status = 401, description = "no or invalid credentials", body = ApiError), (status = 403, description = "the role does not allow this, or a CSRF failure", body = ApiError), (status = 404, description = "unknown, or outside the caller's scopes", body = ApiError), (status = 422, description = "a field is invalid", body = ApiError)), security(("api_token" = []), ("session" = [])))]
async fn create_api_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(user_id): Path<String>,
    ApiJson(body): ApiJson<CreateApiToken>,
) -> Result<(StatusCode, Json<ApiTokenIssued>), ApiFailure> {
    caller.require_role(Action::ManageAccounts)?;
    let user = state
        .database
        .user(UserKey::Id(&user_id))
        .await?
        .filter(|user| !user.disabled)
        .ok_or_else(|| ApiFailure::not_found("account"))?;
    let now = state.clock.now();
    let issued = state
        .database
        .issue_api_token(&user.username, &body.label, now)
        .await?;
    caller.audit(&state, "issue_api_token", &issued.id).await?;
    Ok((StatusCode::CREATED, Json(issued)))
}

#[utoipa::path(post, path = "/api/v1/api-tokens/{token_id}/revoke", tag = "accounts", params(("token_id" = String, Path, description = "API token id")), responses((status = 204, description = "revoked (idempotent)"), (status = 401, description = "no or invalid credentials", body = ApiError), (status = 403, description = "the role does not allow this, or a CSRF failure", body = ApiError), (status = 404, description = "unknown, or outside the caller's scopes", body = ApiError)), security(("api_token" = []), ("session" = [])))]
async fn revoke_api_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(token_id): Path<String>,
) -> Result<StatusCode, ApiFailure> {
    caller.require_role(Action::ManageAccounts)?;
    let now = state.clock.now();
    if !state.database.revoke_api_token(&token_id, now).await? {
        return Err(ApiFailure::not_found("API token"));
    }
    caller.audit(&state, "revoke_api_token", &token_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    actor: Option<String>,
    action: Option<String>,
    entity: Option<String>,
    after: Option<i64>,
    limit: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "accounts", params(("actor" = Option<String>, Query), ("action" = Option<String>, Query), ("entity" = Option<String>, Query), ("after" = Option<i64>, Query, description = "id of the last row of the previous page"), ("limit" = Option<i64>, Query, description = "1 to 1000, default 100")), responses((status = 200, body = AuditPage), (status = 400, description = "malformed request", body = ApiError), (status = 401, description = "no or invalid credentials", body = ApiError), (status = 403, description = "the role does not allow this, or a CSRF failure", body = ApiError)), security(("api_token" = []), ("session" = [])))]
async fn audit(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AuditPage>, ApiFailure> {
    caller.require_role(Action::ReadAudit)?;
    let Query(query) = query.map_err(|rejection| {
        ApiFailure::bad_request(
            "invalid_query",
            format!(
                "{}; expected ?actor=&action=&entity=&after=ID&limit=N",
                rejection.body_text()
            ),
        )
    })?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_AUDIT_PAGE).contains(&limit) {
        return Err(ApiFailure::bad_request(
            "invalid_query",
            format!("limit must be 1 to {MAX_AUDIT_PAGE}"),
        ));
    }
    let entries = state
        .database
        .audit_entries(&AuditFilter {
            actor: query.actor,
            action: query.action,
            entity: query.entity,
            after: query.after,
            limit,
        })
        .await?;
    caller.audit(&state, "read_audit", "audit_log").await?;
    let next_after = (entries.len() == usize::try_from(limit).unwrap_or(usize::MAX))
        .then(|| entries.last().map(|entry| entry.id))
        .flatten();
    Ok(Json(AuditPage {
        entries,
        next_after,
    }))
}
