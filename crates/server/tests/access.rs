//! Accounts, sessions, API tokens, authorisation and the audit log, each run on SQLite and on
//! PostgreSQL (`sqlite::NAME`, `postgres::NAME`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::Duration;
use serde_json::{Value, json};
use support::Backend;
use support::app::{ADMIN, Answer, call, regimen_body, send, signed_event, state};

on_every_backend!(
    sessions_use_strict_cookies_and_unsafe_requests_need_the_csrf_token,
    failed_logins_are_throttled_and_do_not_reveal_accounts,
    idle_sessions_are_logged_off,
    api_tokens_act_for_their_account_until_revoked_or_disabled,
    the_audit_log_is_append_only_and_only_admins_read_it,
    authorisation_matrix,
    over_a_real_socket_the_audit_log_records_the_peer,
);

const PASSWORD: &str = "a long enough passphrase";

/// One study with one site and one patient (ids), made by the admin.
struct Branch {
    study: String,
    site: String,
    patient: String,
    device: String,
    device_token: String,
    /// A dose event of the patient, flagged for review.
    event: String,
}

async fn created(state: &dosewitness_server::AppState, path: &str, body: Value) -> Value {
    let (status, answer) = call(state, "POST", path, Some(ADMIN), Some(&body.to_string())).await;
    assert_eq!(status, StatusCode::CREATED, "{path}: {answer}");
    answer
}

async fn branch(state: &dosewitness_server::AppState, code: &str, key_seed: u8) -> Branch {
    let study = created(
        state,
        "/api/v1/studies",
        json!({"code": code, "title": "Study"}),
    )
    .await;
    let study = study["id"].as_str().unwrap().to_string();
    let site = created(
        state,
        &format!("/api/v1/studies/{study}/sites"),
        json!({"name": "Site"}),
    )
    .await;
    let site = site["id"].as_str().unwrap().to_string();
    let patient = created(
        state,
        &format!("/api/v1/sites/{site}/patients"),
        json!({"subject_code": format!("{code}-001"), "display_name": "Pat Example"}),
    )
    .await;
    let patient = patient["id"].as_str().unwrap().to_string();
    let plan = created(
        state,
        &format!("/api/v1/patients/{patient}/regimens"),
        regimen(),
    )
    .await;
    let code = created(
        state,
        &format!("/api/v1/patients/{patient}/enrolment-codes"),
        json!({}),
    )
    .await;
    let key = ed25519_dalek::SigningKey::from_bytes(&[key_seed; 32]);
    let enrolment = json!({
        "code": code["code"],
        "public_key": hex::encode(key.verifying_key().as_bytes()),
        "label": "tablet",
    });
    let (status, device) = call(
        state,
        "POST",
        "/api/v1/devices/enrol",
        None,
        Some(&enrolment.to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{device}");
    let device_id = device["device_id"].as_str().unwrap().to_string();
    let device_token = device["device_token"].as_str().unwrap().to_string();
    let event = one_dose_event(state, &key, &device_id, &device_token, &plan).await;
    Branch {
        study,
        site,
        patient,
        device: device_id,
        device_token,
        event,
    }
}

fn regimen() -> Value {
    serde_json::from_str(&regimen_body(&["08:00:00"], 30, 60)).unwrap()
}

/// Ingests one signed dose event (flagged for review) from the device; returns its id.
async fn one_dose_event(
    state: &dosewitness_server::AppState,
    key: &ed25519_dalek::SigningKey,
    device_id: &str,
    device_token: &str,
    plan: &Value,
) -> String {
    use chrono::TimeZone;
    let plan: dosewitness_protocol::RegimenPlan = serde_json::from_value(plan.clone()).unwrap();
    let signed = signed_event(
        key,
        device_id.parse().unwrap(),
        &plan,
        None,
        chrono::Utc.with_ymd_and_hms(2026, 3, 1, 7, 0, 0).unwrap(),
        dosewitness_domain::DoseOutcome::NeedsReview,
    );
    let batch = dosewitness_protocol::DoseEventBatch {
        protocol_version: dosewitness_protocol::PROTOCOL_VERSION,
        events: vec![signed.clone()],
    };
    let (status, answer) = call(
        state,
        "POST",
        &format!("/api/v1/devices/{device_id}/dose-events"),
        Some(device_token),
        Some(&serde_json::to_string(&batch).unwrap()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    signed.record.event.id.to_string()
}

/// Creates an account through the API; returns its id.
async fn account(
    state: &dosewitness_server::AppState,
    username: &str,
    role: &str,
    scopes: Value,
    password: Option<&str>,
) -> String {
    let body = json!({"username": username, "role": role, "scopes": scopes, "password": password});
    created(state, "/api/v1/users", body).await["id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn token_for(state: &dosewitness_server::AppState, user_id: &str) -> String {
    created(
        state,
        &format!("/api/v1/users/{user_id}/api-tokens"),
        json!({"label": "tests"}),
    )
    .await["token"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn login(state: &dosewitness_server::AppState, username: &str, password: &str) -> Answer {
    let request = Request::post("/api/v1/auth/login")
        .header("content-type", "application/json")
        .body(Body::from(
            json!({"username": username, "password": password}).to_string(),
        ))
        .unwrap();
    send(state, request).await
}

/// The `name=value` part of a login's `Set-Cookie`.
fn session_cookie(answer: &Answer) -> String {
    let set_cookie = answer.headers["set-cookie"].to_str().unwrap();
    set_cookie.split(';').next().unwrap().to_string()
}

/// A request with the session cookie and optional CSRF token and JSON body.
fn with_session(
    method: &str,
    path: &str,
    cookie: &str,
    csrf: Option<&str>,
    body: Option<Value>,
) -> Request<Body> {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("cookie", cookie)
        .header("host", "clinic.example");
    if let Some(csrf) = csrf {
        request = request.header("x-csrf-token", csrf);
    }
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    request
        .body(body.map_or_else(Body::empty, |body| Body::from(body.to_string())))
        .unwrap()
}

async fn audit_actions(state: &dosewitness_server::AppState, action: &str) -> Vec<Value> {
    let (status, page) = call(
        state,
        "GET",
        &format!("/api/v1/audit?action={action}&limit=1000"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["entries"].as_array().unwrap().clone()
}

async fn sessions_use_strict_cookies_and_unsafe_requests_need_the_csrf_token(backend: Backend) {
    let (state, _database, _clock) = state(backend).await;
    let a = branch(&state, "A", 1).await;
    account(
        &state,
        "coord.a",
        "coordinator",
        json!([{"kind": "study", "id": a.study}]),
        Some(PASSWORD),
    )
    .await;
    let answer = login(&state, "Coord.A", PASSWORD).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let set_cookie = answer.headers["set-cookie"].to_str().unwrap().to_string();
    for attribute in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert_eq!(answer.body["user"]["username"], "coord.a");
    assert!(answer.body["user"].get("password_hash").is_none());
    let csrf = answer.body["csrf_token"].as_str().unwrap().to_string();
    let cookie = session_cookie(&answer);

    let me = send(
        &state,
        with_session("GET", "/api/v1/auth/me", &cookie, None, None),
    )
    .await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["user"]["role"], "coordinator");
    assert_eq!(me.body["csrf_token"], csrf.as_str());

    let path = format!("/api/v1/studies/{}/sites", a.study);
    let site = || Some(json!({"name": "Second site"}));
    // No token, a wrong token, and the right token from another origin: refused, nothing stored.
    let refused = [
        with_session("POST", &path, &cookie, None, site()),
        with_session("POST", &path, &cookie, Some("0123"), site()),
        {
            let mut request = with_session("POST", &path, &cookie, Some(&csrf), site());
            request
                .headers_mut()
                .insert("origin", "https://evil.example".parse().unwrap());
            request
        },
    ];
    for request in refused {
        let answer = send(&state, request).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
        assert_eq!(answer.body["code"], "csrf_failed");
    }
    assert_eq!(audit_actions(&state, "create_site").await.len(), 1); // the admin's, in branch()
    let answer = send(
        &state,
        with_session("POST", &path, &cookie, Some(&csrf), site()),
    )
    .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    let entries = audit_actions(&state, "create_site").await;
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1]["actor"], "user:coord.a");
    assert_eq!(entries[1]["source"], "local");

    // An HTML form logout carries the token as a field; afterwards the cookie is dead.
    let form = |token: &str| {
        Request::post("/api/v1/auth/logout")
            .header("cookie", cookie.as_str())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(format!("csrf_token={token}")))
            .unwrap()
    };
    assert_eq!(
        send(&state, form("nope")).await.status,
        StatusCode::FORBIDDEN
    );
    let answer = send(&state, form(&csrf)).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{}", answer.body);
    assert!(
        answer.headers["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let me = send(
        &state,
        with_session("GET", "/api/v1/auth/me", &cookie, None, None),
    )
    .await;
    assert_eq!(me.status, StatusCode::UNAUTHORIZED);
    assert_eq!(me.body["code"], "session_expired");
}

async fn failed_logins_are_throttled_and_do_not_reveal_accounts(backend: Backend) {
    let (state, _database, clock) = state(backend).await;
    account(&state, "alice", "admin", json!([]), Some(PASSWORD)).await;
    let unknown = login(&state, "nobody", PASSWORD).await;
    let wrong = login(&state, "alice", "not the passphrase").await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        (wrong.status, &wrong.body),
        (unknown.status, &unknown.body),
        "an unknown account and a wrong password look the same"
    );
    for _ in 0..4 {
        assert_eq!(
            login(&state, "alice", "still not it!").await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    // Five failures for alice: even the right password waits now.
    let throttled = login(&state, "alice", PASSWORD).await;
    assert_eq!(
        throttled.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        throttled.body
    );
    let retry_after: i64 = throttled.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=15 * 60).contains(&retry_after), "{retry_after}");
    clock.advance(Duration::seconds(retry_after));
    let answer = login(&state, "alice", PASSWORD).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let failures = audit_actions(&state, "login_failed").await;
    assert_eq!(failures.len(), 6);
    assert!(failures.iter().all(|entry| entry["actor"] == "anonymous"));
    assert!(
        failures
            .iter()
            .all(|entry| !entry.to_string().contains("passphrase")),
        "no password in the audit log"
    );
    assert_eq!(audit_actions(&state, "login_throttled").await.len(), 1);
    // Malformed logins are a 4xx, not a 500.
    let (status, _) = call(
        &state,
        "POST",
        "/api/v1/auth/login",
        None,
        Some(r#"{"username":"alice"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

async fn idle_sessions_are_logged_off(backend: Backend) {
    let (state, _database, clock) = state(backend).await;
    account(&state, "carol", "admin", json!([]), Some(PASSWORD)).await;
    let answer = login(&state, "carol", PASSWORD).await;
    assert_eq!(answer.body["idle_timeout_seconds"], 15 * 60);
    let cookie = session_cookie(&answer);
    let me = || with_session("GET", "/api/v1/auth/me", &cookie, None, None);
    // Activity keeps the session alive past the idle timeout in total.
    for _ in 0..3 {
        clock.advance(Duration::minutes(14));
        assert_eq!(send(&state, me()).await.status, StatusCode::OK);
    }
    clock.advance(Duration::minutes(16));
    let answer = send(&state, me()).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.body["code"], "session_expired");
    let expired = audit_actions(&state, "session_expired").await;
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0]["actor"], "user:carol");
    // Ended for good: logging in again gives a new session.
    assert_eq!(send(&state, me()).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        login(&state, "carol", PASSWORD).await.status,
        StatusCode::OK
    );
}

async fn api_tokens_act_for_their_account_until_revoked_or_disabled(backend: Backend) {
    let (state, _database, _clock) = state(backend).await;
    let a = branch(&state, "A", 1).await;
    let b = branch(&state, "B", 2).await;
    let clinician = account(
        &state,
        "dr.who",
        "clinician",
        json!([{"kind": "patient", "id": a.patient}]),
        None,
    )
    .await;
    let issued = created(
        &state,
        &format!("/api/v1/users/{clinician}/api-tokens"),
        json!({"label": "report export"}),
    )
    .await;
    let token = issued["token"].as_str().unwrap();
    assert!(token.starts_with("dwt_"), "{token}");
    let adherence = |patient: &str| {
        format!(
            "/api/v1/patients/{patient}/adherence?from=2026-03-01T00:00:00Z&to=2026-03-02T00:00:00Z"
        )
    };
    assert_eq!(
        call(&state, "GET", &adherence(&a.patient), Some(token), None)
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        call(&state, "GET", &adherence(&b.patient), Some(token), None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    // Scopes can be replaced; they are checked as at creation.
    let scopes = |body: Value| {
        let state = &state;
        let path = format!("/api/v1/users/{clinician}/scopes");
        async move {
            call(state, "PUT", &path, Some(ADMIN), Some(&body.to_string()))
                .await
                .0
        }
    };
    for refused in [
        json!({"scopes": [{"kind": "study", "id": b.study}]}),
        json!({"scopes": [{"kind": "patient", "id": b.study}]}),
    ] {
        assert_eq!(scopes(refused).await, StatusCode::UNPROCESSABLE_ENTITY);
    }
    assert_eq!(
        scopes(json!({"scopes": [{"kind": "patient", "id": b.patient}]})).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        call(&state, "GET", &adherence(&a.patient), Some(token), None)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(&state, "GET", &adherence(&b.patient), Some(token), None)
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        scopes(json!({"scopes": [{"kind": "patient", "id": a.patient}]})).await,
        StatusCode::NO_CONTENT
    );
    // A password-less account cannot log in, whatever is typed.
    assert_eq!(
        login(&state, "dr.who", "").await.status,
        StatusCode::UNAUTHORIZED
    );
    // Revoked: the token stops at once.
    let (status, _) = call(
        &state,
        "POST",
        &format!(
            "/api/v1/api-tokens/{}/revoke",
            issued["id"].as_str().unwrap()
        ),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        call(&state, "GET", &adherence(&a.patient), Some(token), None)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    // Disabling an account ends its other tokens and its password logins.
    let second = token_for(&state, &clinician).await;
    assert_eq!(
        call(&state, "GET", &adherence(&a.patient), Some(&second), None)
            .await
            .0,
        StatusCode::OK
    );
    let (status, _) = call(
        &state,
        "POST",
        &format!("/api/v1/users/{clinician}/disable"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        call(&state, "GET", &adherence(&a.patient), Some(&second), None)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    // A device token is not a person's token.
    assert_eq!(
        call(
            &state,
            "GET",
            &adherence(&a.patient),
            Some(&a.device_token),
            None
        )
        .await
        .0,
        StatusCode::UNAUTHORIZED
    );
    // Accounts are checked: weak password, scope that does not fit the role, unknown record,
    // taken username.
    let bad = [
        json!({"username": "eve", "role": "admin", "password": "short"}),
        json!({"username": "eve", "role": "clinician", "scopes": [{"kind": "study", "id": a.study}]}),
        json!({"username": "eve", "role": "coordinator", "scopes": [{"kind": "study", "id": b.patient}]}),
        json!({"username": "Eve Smith", "role": "admin"}),
        json!({"username": "eve", "role": "superuser"}),
    ];
    for body in bad {
        let (status, answer) = call(
            &state,
            "POST",
            "/api/v1/users",
            Some(ADMIN),
            Some(&body.to_string()),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body} -> {answer}"
        );
    }
    let (status, _) = call(
        &state,
        "POST",
        "/api/v1/users",
        Some(ADMIN),
        Some(&json!({"username": "dr.who", "role": "admin"}).to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, users) = call(&state, "GET", "/api/v1/users", Some(ADMIN), None).await;
    assert_eq!(status, StatusCode::OK);
    let listed = users.to_string();
    assert!(
        listed.contains("dr.who") && !listed.contains("argon2"),
        "{listed}"
    );
}

async fn the_audit_log_is_append_only_and_only_admins_read_it(backend: Backend) {
    let (state, database, _clock) = state(backend).await;
    let a = branch(&state, "A", 1).await;
    let coordinator = account(
        &state,
        "coord.a",
        "coordinator",
        json!([{"kind": "study", "id": a.study}]),
        None,
    )
    .await;
    let token = token_for(&state, &coordinator).await;
    let (status, _) = call(&state, "GET", "/api/v1/audit", Some(&token), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, page) = call(&state, "GET", "/api/v1/audit?limit=2", Some(ADMIN), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["entries"].as_array().unwrap().len(), 2);
    let after = page["next_after"].as_i64().unwrap();
    let (_, rest) = call(
        &state,
        "GET",
        &format!("/api/v1/audit?after={after}&limit=1000"),
        Some(ADMIN),
        None,
    )
    .await;
    let rest = rest["entries"].as_array().unwrap();
    assert!(
        rest.iter()
            .all(|entry| entry["id"].as_i64().unwrap() > after)
    );
    let enrol = rest
        .iter()
        .find(|entry| entry["action"] == "enrol_device")
        .unwrap();
    assert_eq!(enrol["actor"], format!("device:{}", a.device));
    assert_eq!(enrol["entity"], a.patient.as_str());
    for query in ["limit=0", "limit=abc", "colour=red"] {
        let (status, _) = call(
            &state,
            "GET",
            &format!("/api/v1/audit?{query}"),
            Some(ADMIN),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
    }
    // The database itself refuses to change or remove audit rows.
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&database.url).await.unwrap();
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM audit_log WHERE actor <> 'x'")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let before = count().await;
    for statement in ["UPDATE audit_log SET actor = 'x'", "DELETE FROM audit_log"] {
        let error = sqlx::query(statement).execute(&pool).await.unwrap_err();
        assert!(error.to_string().contains("append-only"), "{error}");
    }
    assert_eq!(count().await, before);
}

/// One line of the matrix: method, (path in scope, path out of scope), body, expected status
/// per caller in scope, and out of scope.
type Row = (&'static str, (String, String), Value, [u16; 6], [u16; 6]);

/// Every role × every people-facing endpoint × a record in scope (study A) and one out of scope
/// (study B). The table below is the access policy as the product defines it.
async fn authorisation_matrix(backend: Backend) {
    let (state, _database, _clock) = state(backend).await;
    let a = branch(&state, "A", 1).await;
    let b = branch(&state, "B", 2).await;
    let study_coordinator = account(
        &state,
        "coord.study",
        "coordinator",
        json!([{"kind": "study", "id": a.study}]),
        None,
    )
    .await;
    let site_coordinator = account(
        &state,
        "coord.site",
        "coordinator",
        json!([{"kind": "site", "id": a.site}]),
        None,
    )
    .await;
    let clinician = account(
        &state,
        "clinician",
        "clinician",
        json!([{"kind": "patient", "id": a.patient}]),
        None,
    )
    .await;
    let callers = [
        ("admin", Some(ADMIN.to_string())),
        (
            "study coordinator",
            Some(token_for(&state, &study_coordinator).await),
        ),
        (
            "site coordinator",
            Some(token_for(&state, &site_coordinator).await),
        ),
        ("clinician", Some(token_for(&state, &clinician).await)),
        ("device", Some(a.device_token.clone())),
        ("anonymous", None),
    ];
    let regimen = regimen();
    let period = "from=2026-03-01T00:00:00Z&to=2026-03-02T00:00:00Z";
    // (endpoint, method, path for A, path for B, body, expected status per caller for A, for B)
    // Callers in order: admin, study coordinator, site coordinator, clinician, device, anonymous.
    const OK: u16 = 200;
    const MADE: u16 = 201;
    const DONE: u16 = 204;
    const NO: u16 = 403;
    const HIDDEN: u16 = 404;
    const WHO: u16 = 401;
    let study_only = |path: &str| (path.to_string(), path.to_string());
    let table: Vec<Row> = vec![
        (
            "POST",
            study_only("/api/v1/studies"),
            json!({"code": "NEW", "title": "T"}),
            [MADE, NO, NO, NO, WHO, WHO],
            [HIDDEN; 6], // unused: one path
        ),
        (
            "POST",
            (
                format!("/api/v1/studies/{}/sites", a.study),
                format!("/api/v1/studies/{}/sites", b.study),
            ),
            json!({"name": "S"}),
            [MADE, MADE, HIDDEN, NO, WHO, WHO],
            [MADE, HIDDEN, HIDDEN, NO, WHO, WHO],
        ),
        (
            "POST",
            (
                format!("/api/v1/sites/{}/patients", a.site),
                format!("/api/v1/sites/{}/patients", b.site),
            ),
            json!({"subject_code": "{n}", "display_name": "P"}),
            [MADE, MADE, MADE, NO, WHO, WHO],
            [MADE, HIDDEN, HIDDEN, NO, WHO, WHO],
        ),
        (
            "POST",
            (
                format!("/api/v1/patients/{}/regimens", a.patient),
                format!("/api/v1/patients/{}/regimens", b.patient),
            ),
            regimen,
            [MADE, MADE, MADE, NO, WHO, WHO],
            [MADE, HIDDEN, HIDDEN, NO, WHO, WHO],
        ),
        (
            "POST",
            (
                format!("/api/v1/patients/{}/enrolment-codes", a.patient),
                format!("/api/v1/patients/{}/enrolment-codes", b.patient),
            ),
            json!({}),
            [MADE, MADE, MADE, NO, WHO, WHO],
            [MADE, HIDDEN, HIDDEN, NO, WHO, WHO],
        ),
        (
            "GET",
            (
                format!("/api/v1/patients/{}/adherence?{period}", a.patient),
                format!("/api/v1/patients/{}/adherence?{period}", b.patient),
            ),
            Value::Null,
            [OK, OK, OK, OK, WHO, WHO],
            [OK, HIDDEN, HIDDEN, HIDDEN, WHO, WHO],
        ),
        (
            "POST",
            (
                format!("/api/v1/devices/{}/revoke", a.device),
                format!("/api/v1/devices/{}/revoke", b.device),
            ),
            Value::Null,
            [DONE, DONE, DONE, NO, WHO, WHO],
            [DONE, HIDDEN, HIDDEN, NO, WHO, WHO],
        ),
        (
            "GET",
            (
                format!("/api/v1/dose-events/{}/evidence", a.event),
                format!("/api/v1/dose-events/{}/evidence", b.event),
            ),
            Value::Null,
            [OK, OK, OK, NO, WHO, WHO],
            [OK, HIDDEN, HIDDEN, NO, WHO, WHO],
        ),
        (
            "GET",
            study_only("/api/v1/users"),
            Value::Null,
            [OK, NO, NO, NO, WHO, WHO],
            [HIDDEN; 6],
        ),
        (
            "POST",
            study_only("/api/v1/users"),
            json!({"username": "new.{n}", "role": "admin"}),
            [MADE, NO, NO, NO, WHO, WHO],
            [HIDDEN; 6],
        ),
        (
            "GET",
            study_only("/api/v1/audit"),
            Value::Null,
            [OK, NO, NO, NO, WHO, WHO],
            [HIDDEN; 6],
        ),
    ];
    let mut checked = 0;
    let mut counter = 0;
    for (method, (path_a, path_b), body, expect_a, expect_b) in &table {
        let targets: Vec<(&String, &[u16; 6])> = if path_a == path_b {
            vec![(path_a, expect_a)]
        } else {
            vec![(path_a, expect_a), (path_b, expect_b)]
        };
        for (path, expected) in targets {
            for ((who, token), expected) in callers.iter().zip(expected) {
                counter += 1;
                let body = (!body.is_null())
                    .then(|| body.to_string().replace("{n}", &counter.to_string()));
                let (status, answer) =
                    call(&state, method, path, token.as_deref(), body.as_deref()).await;
                assert_eq!(
                    status.as_u16(),
                    *expected,
                    "{who} {method} {path}: {answer}"
                );
                if status.is_client_error() {
                    // Refusals say why without echoing records.
                    assert!(
                        answer["code"].is_string(),
                        "{who} {method} {path}: {answer}"
                    );
                    assert!(!answer.to_string().contains("Pat Example"));
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 6 * (4 + 2 * 7));
}

/// Over a real socket: the loopback server's cookie is not `Secure` (plain HTTP on loopback is
/// allowed), and the audit log records the peer address.
async fn over_a_real_socket_the_audit_log_records_the_peer(backend: Backend) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let database = support::TestDatabase::open(backend).await;
    let clock = std::sync::Arc::new(dosewitness_domain::SystemClock);
    let server =
        dosewitness_server::LoopbackServer::start_with(database.database.clone(), 0, clock)
            .await
            .unwrap();
    let address = server.url.trim_start_matches("http://").to_string();
    let exchange = |request: String| {
        let address = address.clone();
        async move {
            let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).await.unwrap();
            response
        }
    };
    let body = json!({"username": "ops", "role": "admin", "password": PASSWORD}).to_string();
    let response = exchange(format!(
        "POST /api/v1/users HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        server.admin_token,
        body.len()
    ))
    .await;
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    let body = json!({"username": "ops", "password": PASSWORD}).to_string();
    let response = exchange(format!(
        "POST /api/v1/auth/login HTTP/1.1\r\nHost: {address}\r\nOrigin: http://{address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ))
    .await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let cookie_line = response
        .lines()
        .find(|line| line.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap();
    assert!(
        cookie_line.contains("HttpOnly") && !cookie_line.contains("Secure"),
        "{cookie_line}"
    );
    let response = exchange(format!(
        "GET /api/v1/audit?action=login HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        server.admin_token
    ))
    .await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(r#""source":"127.0.0.1""#), "{response}");
    assert!(response.contains(r#""actor":"user:ops""#), "{response}");

    // A new loopback server on the same database revokes the previous one's token.
    let clock = std::sync::Arc::new(dosewitness_domain::SystemClock);
    let second =
        dosewitness_server::LoopbackServer::start_with(database.database.clone(), 0, clock)
            .await
            .unwrap();
    let state = dosewitness_server::AppState::new(
        database.database.clone(),
        std::sync::Arc::new(dosewitness_domain::SystemClock),
    );
    let (old, _) = call(
        &state,
        "GET",
        "/api/v1/users",
        Some(&server.admin_token),
        None,
    )
    .await;
    let (new, _) = call(
        &state,
        "GET",
        "/api/v1/users",
        Some(&second.admin_token),
        None,
    )
    .await;
    assert_eq!((old, new), (StatusCode::UNAUTHORIZED, StatusCode::OK));
}

/// `/openapi.json` is an OpenAPI 3 document whose every operation is routed (no 404/405 from the
/// router itself), names its security, and covers the account and ingest endpoints.
#[tokio::test]
async fn the_openapi_document_lists_routed_operations() {
    let (state, _database, _clock) = state(Backend::Sqlite).await;
    let (status, document) = call(&state, "GET", "/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        document["openapi"].as_str().unwrap().starts_with("3."),
        "{document}"
    );
    let paths = document["paths"].as_object().unwrap();
    for expected in [
        "/api/v1/auth/login",
        "/api/v1/users",
        "/api/v1/audit",
        "/api/v1/devices/{device_id}/dose-events",
        "/api/v1/patients/{patient_id}/adherence",
    ] {
        assert!(paths.contains_key(expected), "{expected} missing");
    }
    let schemes = document["components"]["securitySchemes"]
        .as_object()
        .unwrap();
    for scheme in ["api_token", "device_token", "session"] {
        assert!(schemes.contains_key(scheme), "{scheme}");
    }
    let mut operations = 0;
    for (path, item) in paths {
        let concrete = path
            .split('/')
            .map(|segment| {
                if segment.starts_with('{') {
                    "0190a0b0-0000-7000-8000-000000000000"
                } else {
                    segment
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        for method in ["get", "post", "put", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            operations += 1;
            let request = Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(&concrete)
                .header("authorization", format!("Bearer {ADMIN}"))
                .body(Body::empty())
                .unwrap();
            let answer = send(&state, request).await;
            // The router's own 404 and 405 have no JSON body; handlers always answer with one.
            let unrouted =
                matches!(answer.status.as_u16(), 404 | 405) && !answer.body["code"].is_string();
            assert!(!unrouted, "{method} {path} is documented but not routed");
            let documented = &item[method];
            assert!(
                documented["responses"]
                    .as_object()
                    .is_some_and(|r| !r.is_empty()),
                "{method} {path}"
            );
        }
    }
    assert!(operations >= 20, "{operations} operations");
}
