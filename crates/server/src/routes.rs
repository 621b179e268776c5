//! HTTP routes of `/api/v1`.

use crate::AppState;
use crate::auth::{Action, Caller, Source, bearer, sha256_hex};
use crate::db::{Database, DeviceRecord, Transaction};
use crate::error::ApiFailure;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Duration, Utc};
use dosewitness_domain::{
    DeviceId, Medication, MedicationId, Patient, PatientId, Redacted, Regimen, RegimenId, Site,
    SiteId, Study, StudyId, dose_adherence, proportion_of_days_covered,
};
use dosewitness_protocol::chain::parse_public_key;
use dosewitness_protocol::{
    AckStatus, AdherenceReport, ApiError, BatchAck, CreatePatient, CreateRegimen, CreateSite,
    CreateStudy, Created, DeviceEnrolment, DoseEventBatch, EnrolDevice, EnrolmentCode, EventAck,
    PROTOCOL_VERSION, RegimenPlan,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use utoipa::OpenApi;
use utoipa_axum::{router::OpenApiRouter, routes};

/// How long an enrolment code stays valid.
const ENROLMENT_CODE_LIFETIME: Duration = Duration::hours(72);
/// Most events accepted in one batch.
pub const MAX_BATCH_EVENTS: usize = 1000;
/// Longest accepted free-text field, in characters.
const MAX_TEXT: usize = 200;

/// The API router over `state`.
pub fn router(state: AppState) -> Router {
    let (documented, document) = OpenApiRouter::with_openapi(crate::openapi::ApiDoc::openapi())
        .routes(routes!(metrics))
        .routes(routes!(create_study))
        .routes(routes!(create_site))
        .routes(routes!(create_patient))
        .routes(routes!(create_regimen))
        .routes(routes!(create_enrolment_code))
        .routes(routes!(adherence))
        .routes(routes!(enrol_device))
        .routes(routes!(revoke_device))
        .routes(routes!(ingest))
        .routes(routes!(device_regimens))
        .merge(crate::auth::routes::routes())
        .merge(crate::evidence::routes())
        .split_for_parts();
    let document = document.to_json().unwrap_or_else(|error| {
        tracing::error!(%error, "the OpenAPI document does not serialise");
        "{}".to_string()
    });
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/openapi.json",
            get(move || async move {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    document,
                )
            }),
        )
        .merge(documented)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::auth::authenticate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            count_responses,
        ))
        .with_state(state)
}

/// Largest accepted request body: a full batch of 1000 events is about 0.9 MB.
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

async fn count_responses(
    State(state): State<AppState>,
    request: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    // The route template (`/api/v1/patients/{patient_id}/…`), never the concrete path or query.
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |path| path.as_str().to_string());
    let method = request.method().clone();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    state.metrics.count_response(status);
    tracing::info!(%method, route, status, elapsed_ms = started.elapsed().as_secs_f64() * 1e3, "request");
    response
}

#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format (counts only)", body = String, content_type = "text/plain")))]
async fn metrics(
    State(state): State<AppState>,
) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(),
    )
}

/// `Json<T>` whose rejections are [`ApiFailure`]s with a JSON body.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiFailure;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiFailure::new(
                rejection.status(),
                "invalid_body",
                rejection.body_text(),
            )),
        }
    }
}

pub(crate) async fn require_device(
    state: &AppState,
    headers: &HeaderMap,
    device_id: DeviceId,
) -> Result<DeviceRecord, ApiFailure> {
    let token = bearer(headers).ok_or_else(ApiFailure::unauthorized)?;
    let device = state.database.device_by_token(&sha256_hex(token)).await?;
    match device {
        Some(device) if device.id == device_id && !device.revoked => Ok(device),
        Some(device) if device.revoked => Err(ApiFailure::new(
            StatusCode::FORBIDDEN,
            "device_revoked",
            "this device was revoked",
        )),
        _ => Err(ApiFailure::unauthorized()),
    }
}

pub(crate) fn parse_id<T: std::str::FromStr>(
    text: &str,
    what: &'static str,
) -> Result<T, ApiFailure> {
    text.parse()
        .map_err(|_| ApiFailure::bad_request("invalid_id", format!("{what} is not a valid id")))
}

fn check_text(value: &str, field: &'static str) -> Result<(), ApiFailure> {
    let length = value.chars().count();
    if length == 0 || length > MAX_TEXT || value.chars().any(char::is_control) {
        return Err(ApiFailure::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            format!("{field} must be 1 to {MAX_TEXT} printable characters"),
        ));
    }
    Ok(())
}

#[utoipa::path(post, path = "/api/v1/studies", tag = "trial", request_body = CreateStudy, responses((status = 201, body = Created<StudyId>), (status = 401, description = "no or invalid credentials", body = ApiError), (status = 403, description = "the role does not allow this, or a CSRF failure", body = ApiError), (status = 409, description = "conflict", body = ApiError), (status = 422, description = "a field is invalid", body = ApiError)), security(("api_token" = []), ("session" = [])))]
async fn create_study(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateStudy>,
) -> Result<(StatusCode, Json<Created<StudyId>>), ApiFailure> {
    caller.require_role(Action::CreateStudy)?;
    check_text(&body.code, "code")?;
    check_text(&body.title, "title")?;
    let now = state.clock.now();
    let study = Study {
        id: StudyId::generate(now),
        code: body.code,
        title: body.title,
    };
    if !state.database.insert_study(&study, now).await? {
        return Err(ApiFailure::new(
            StatusCode::CONFLICT,
            "duplicate",
            "a study with this code exists",
        ));
    }
    caller
        .audit(&state, "create_study", &study.id.to_string())
        .await?;
    Ok((StatusCode::CREATED, Json(Created { id: study.id })))
}

#[utoipa::path(post, path = "/api/v1/studies/{study_id}/sites", tag = "trial", params(("study_id" = String, Path, description = "study id")), request_body = CreateSite, responses((status = 201, body = Created<SiteId>), (status = 400, description = "malformed request", body = ApiError), (status = 401, description = "no or invalid credentials", body = ApiError), (status = 403, description = "the role does not allow this, or a CSRF failure", body = ApiError), (status = 404, description = "unknown, or outside the caller's scopes", body = ApiError), (status = 422, description = "a field is invalid", body = ApiError)), security(("api_token" = []), ("session" = [])))]
async fn create_site(
    State(state): State<AppState>,
    caller: Caller,
    Path(study_id): Path<String>,
    ApiJson(body): ApiJson<CreateSite>,
) -> Result<(StatusCode, Json<Created<SiteId>>), ApiFailure> {
    caller.require_role(Action::ManageSites)?;
    let study_id: StudyId = parse_id(&study_id, "study id")?;
    let place = state.database.study_place(study_id).await?;
    caller.require(Action::ManageSites, place, "study")?;
    check_text(&body.name, "name")?;
    let now = state.clock.now();
    let site = Site {
        id: SiteId::generate(now),
        study_id,
        name: body.name,
    };
    state.database.insert_site(&site, now).await?;
    caller
        .audit(&state, "create_site", &site.id.to_string())
        .await?;
    Ok((StatusCode::CREATED, Json(Created { id: site.id })))
}

#[utoipa::path(post, path = "/api/v1/sites/{site_id}/patients", tag = "trial", params(("site_id" = String, Path, description = "site id")), request_body = CreatePatient, responses((status = 201, body = Created<PatientId>), (status = 400, description = "malformed request", body = ApiError), (status = 401, description = "no or invalid credentials", body = ApiError), (status = 403, description = "the role does not allow this, or a CSRF failure", body = ApiError), (status = 404, description = "unknown, or outside the caller's scopes", body = ApiError), (status = 409, description = "conflict", body = ApiError), (status = 422, description = "a field is invalid", body = ApiError)), security(("api_token" = []), ("session" = [])))]
async fn create_patient(
    State(state): State<AppState>,
    caller: Caller,
    Path(site_id): Path<String>,
    ApiJson(body): ApiJson<CreatePatient>,
) -> Result<(StatusCode, Json<Created<PatientId>>), ApiFailure> {
    caller.require_role(Action::ManagePatients)?;
    let site_id: SiteId = parse_id(&site_id, "site id")?;
    let place = state.database.site_place(site_id).await?;
    caller.require(Action::ManagePatients, place, "site")?;
    check_text(&body.subject_code, "subject_code")?;
    check_text(&body.display_name, "display_name")?;
    let now = state.clock.now();
    let patient = Patient {
        id: PatientId::generate(now),
        site_id,
        subject_code: body.subject_code,
        display_name: Redacted::new(body.display_name),
    };
    if !state.database.insert_patient(&patient, now).await? {
        return Err(ApiFailure::new(
            StatusCode::CONFLICT,
            "duplicate",
            "this subject code is already enrolled at the site",
        ));
    }
    caller
        .audit(&state, "create_patient", &patient.id.to_string())
        .await?;
    Ok((StatusCode::CREATED, Json(Created { id: patient.id })))
}

#[utoipa::path(post, path = "/api/v1/patients/{patient_id}/regimens", tag = "trial", params(("patient_id" = String, Path, description = "patient id")), request_body = CreateRegimen, responses((status = 201, body = RegimenPlan), (status = 400, description = "malformed request", body = ApiError), (status = 401, description = "no or invalid credentials", body = ApiError), (status = 403, description = "the role does not allow this, or a CSRF failure", body = ApiError), (status = 404, description = "unknown, or outside the caller's scopes", body = ApiError), (status = 422, description = "a field is invalid", body = ApiError)), security(("api_token" = []), ("session" = [])))]
async fn create_regimen(
    State(state): State<AppState>,
    caller: Caller,
    Path(patient_id): Path<String>,
    ApiJson(body): ApiJson<CreateRegimen>,
) -> Result<(StatusCode, Json<RegimenPlan>), ApiFailure> {
    caller.require_role(Action::ManagePatients)?;
    let patient_id: PatientId = parse_id(&patient_id, "patient id")?;
    let place = state.database.patient_place(patient_id).await?;
    caller.require(Action::ManagePatients, place, "patient")?;
    check_text(&body.medication.name, "medication.name")?;
    check_text(&body.medication.form, "medication.form")?;
    let unprocessable = |message: String| {
        ApiFailure::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_regimen", message)
    };
    if !(body.medication.strength_mg.is_finite() && body.medication.strength_mg > 0.0) {
        return Err(unprocessable(
            "medication.strength_mg must be a positive number".into(),
        ));
    }
    if body.units_per_dose == 0 {
        return Err(unprocessable("units_per_dose must be at least 1".into()));
    }
    let time_zone = body.time_zone.parse().map_err(|_| {
        unprocessable(format!(
            "time_zone {:?} is not an IANA time zone",
            body.time_zone
        ))
    })?;
    let now = state.clock.now();
    let medication = Medication {
        id: MedicationId::generate(now),
        name: body.medication.name,
        strength_mg: body.medication.strength_mg,
        form: body.medication.form,
    };
    let regimen = Regimen {
        id: RegimenId::generate(now),
        patient_id,
        medication_id: medication.id,
        units_per_dose: body.units_per_dose,
        time_zone,
        dose_times: body.dose_times,
        window: body.window,
        start_date: body.start_date,
        end_date: body.end_date,
    };
    regimen
        .validate()
        .map_err(|error| unprocessable(error.to_string()))?;
    let plan = RegimenPlan {
        regimen,
        medication,
    };
    state.database.insert_regimen(&plan, now).await?;
    caller
        .audit(&state, "create_regimen", &plan.regimen.id.to_string())
        .await?;
    Ok((StatusCode::CREATED, Json(plan)))
}

#[utoipa::path(post, path = "/api/v1/patients/{patient_id}/enrolment-codes", tag = "devices", params(("patient_id" = String, Path, description = "patient id")), responses((status = 201, description = "a one-time code, valid 72 h", body = EnrolmentCode), (status = 400, description = "malformed request", body = ApiError), (status = 401, description = "no or invalid credentials", body = ApiError), (status = 403, description = "the role does not allow this, or a CSRF failure", body = ApiError), (status = 404, description = "unknown, or outside the caller's scopes", body = ApiError)), security(("api_token" = []), ("session" = [])))]
async fn create_enrolment_code(
    State(state): State<AppState>,
    caller: Caller,
    Path(patient_id): Path<String>,
) -> Result<(StatusCode, Json<EnrolmentCode>), ApiFailure> {
    caller.require_role(Action::ManagePatients)?;
    let patient_id: PatientId = parse_id(&patient_id, "patient id")?;
    let place = state.database.patient_place(patient_id).await?;
    caller.require(Action::ManagePatients, place, "patient")?;
    let now = state.clock.now();
    let code = crate::random_token()?;
    let expires_at = now + ENROLMENT_CODE_LIFETIME;
    state
        .database
        .insert_enrolment_code(&sha256_hex(&code), patient_id, expires_at)
        .await?;
    caller
        .audit(&state, "create_enrolment_code", &patient_id.to_string())
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(EnrolmentCode {
            code,
            patient_id,
            expires_at,
        }),
    ))
}

/// Revokes a device (lost, stolen, replaced): its token stops working at once; what it already
/// delivered stays. Idempotent: revoking again keeps the first revocation time.
#[utoipa::path(post, path = "/api/v1/devices/{device_id}/revoke", tag = "devices", params(("device_id" = String, Path, description = "device id")), responses((status = 204, description = "revoked (idempotent)"), (status = 400, description = "malformed request", body = ApiError), (status = 401, description = "no or invalid credentials", body = ApiError), (status = 403, description = "the role does not allow this, or a CSRF failure", body = ApiError), (status = 404, description = "unknown, or outside the caller's scopes", body = ApiError)), security(("api_token" = []), ("session" = [])))]
async fn revoke_device(
    State(state): State<AppState>,
    caller: Caller,
    Path(device_id): Path<String>,
) -> Result<StatusCode, ApiFailure> {
    caller.require_role(Action::ManagePatients)?;
    let device_id: DeviceId = parse_id(&device_id, "device id")?;
    let place = state.database.device_place(device_id).await?;
    caller.require(Action::ManagePatients, place, "device")?;
    let now = state.clock.now();
    if !state.database.revoke_device(device_id, now).await? {
        return Err(ApiFailure::not_found("device"));
    }
    caller
        .audit(&state, "revoke_device", &device_id.to_string())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v1/devices/enrol", tag = "devices", request_body = EnrolDevice, responses((status = 201, description = "the device credential, shown once", body = DeviceEnrolment), (status = 400, description = "malformed request", body = ApiError), (status = 403, description = "unknown, used or expired code", body = ApiError), (status = 422, description = "a field is invalid", body = ApiError)))]
async fn enrol_device(
    State(state): State<AppState>,
    Source(source): Source,
    ApiJson(body): ApiJson<EnrolDevice>,
) -> Result<(StatusCode, Json<DeviceEnrolment>), ApiFailure> {
    check_text(&body.label, "label")?;
    parse_public_key(&body.public_key).map_err(|_| {
        ApiFailure::bad_request("invalid_public_key", "public_key must be a hex Ed25519 key")
    })?;
    let now = state.clock.now();
    let device_token = crate::random_token()?;
    let device = DeviceRecord {
        id: DeviceId::generate(now),
        patient_id: PatientId::generate(now), // replaced by the code's patient in the transaction
        public_key: body.public_key,
        revoked: false,
    };
    let patient_id = state
        .database
        .enrol_device(
            &sha256_hex(&body.code),
            &device,
            &sha256_hex(&device_token),
            &body.label,
            now,
        )
        .await?
        .ok_or_else(|| {
            ApiFailure::new(
                StatusCode::FORBIDDEN,
                "invalid_enrolment_code",
                "the enrolment code is unknown, used or expired",
            )
        })?;
    let patient = state
        .database
        .patient(patient_id)
        .await?
        .ok_or_else(|| ApiFailure::not_found("patient"))?;
    let site = state
        .database
        .site(patient.site_id)
        .await?
        .ok_or_else(|| ApiFailure::not_found("site"))?;
    let study = state
        .database
        .study(site.study_id)
        .await?
        .ok_or_else(|| ApiFailure::not_found("study"))?;
    let regimens = state.database.regimens_of(patient_id).await?;
    state
        .database
        .audit(
            now,
            &device.audit_actor(),
            &source,
            "enrol_device",
            &patient_id.to_string(),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(DeviceEnrolment {
            device_id: device.id,
            patient,
            site,
            study,
            device_token,
            regimens,
            server_time: now,
        }),
    ))
}

#[utoipa::path(get, path = "/api/v1/devices/{device_id}/regimens", tag = "devices", params(("device_id" = String, Path, description = "device id")), responses((status = 200, body = Vec<RegimenPlan>), (status = 401, description = "no or invalid credentials", body = ApiError), (status = 403, description = "the device was revoked", body = ApiError)), security(("device_token" = [])))]
async fn device_regimens(
    State(state): State<AppState>,
    Source(source): Source,
    headers: HeaderMap,
    Path(device_id): Path<String>,
) -> Result<Json<Vec<RegimenPlan>>, ApiFailure> {
    let device_id: DeviceId = parse_id(&device_id, "device id")?;
    let device = require_device(&state, &headers, device_id).await?;
    let regimens = state.database.regimens_of(device.patient_id).await?;
    state
        .database
        .audit(
            state.clock.now(),
            &device.audit_actor(),
            &source,
            "read_regimens",
            &device.patient_id.to_string(),
        )
        .await?;
    Ok(Json(regimens))
}

#[utoipa::path(post, path = "/api/v1/devices/{device_id}/dose-events", tag = "devices", params(("device_id" = String, Path, description = "device id")), request_body = DoseEventBatch, responses((status = 200, description = "per-event acknowledgements", body = BatchAck), (status = 400, description = "malformed request", body = ApiError), (status = 401, description = "no or invalid credentials", body = ApiError), (status = 403, description = "the device was revoked", body = ApiError), (status = 409, description = "chain gap or fork, or a write conflict (retry)", body = ApiError), (status = 413, description = "too many events", body = ApiError), (status = 422, description = "bad signature or wrong device", body = ApiError)), security(("device_token" = [])))]
async fn ingest(
    State(state): State<AppState>,
    Source(source): Source,
    headers: HeaderMap,
    Path(device_id): Path<String>,
    ApiJson(batch): ApiJson<DoseEventBatch>,
) -> Result<Json<BatchAck>, ApiFailure> {
    let device_id: DeviceId = parse_id(&device_id, "device id")?;
    let device = require_device(&state, &headers, device_id).await?;
    if batch.protocol_version != PROTOCOL_VERSION {
        return Err(ApiFailure::bad_request(
            "unsupported_protocol_version",
            format!(
                "protocol_version {} is not supported; this server speaks {PROTOCOL_VERSION}",
                batch.protocol_version
            ),
        ));
    }
    if batch.events.len() > MAX_BATCH_EVENTS {
        return Err(ApiFailure::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!("at most {MAX_BATCH_EVENTS} events per batch"),
        ));
    }
    let key = parse_public_key(&device.public_key)
        .map_err(|_| ApiFailure::from(crate::ServerError::Decode("device key".into())))?;
    let now = state.clock.now();
    // Signatures and device ids first, outside the device's chain lock: the CPU-heavy part of
    // a batch then runs in parallel with other devices' writes.
    if let Err(rejection) = check_signatures(&device, &key, &batch) {
        return Err(reject_batch(&state, &device, rejection, now).await);
    }
    let mut transaction = state.database.begin_ingest(device.id).await?;
    let acks = match store_batch(&mut transaction, &device, &batch, now).await? {
        Ok(acks) => acks,
        Err(rejection) => {
            // All-or-nothing: roll the whole batch back, then record the anomaly on its own.
            transaction.rollback().await?;
            return Err(reject_batch(&state, &device, rejection, now).await);
        }
    };
    // In the batch's transaction: the events and their audit row are stored together (and with
    // one fsync instead of two).
    Database::audit_in(
        &mut transaction,
        now,
        &device.audit_actor(),
        &source,
        "ingest_dose_events",
        &device.patient_id.to_string(),
    )
    .await?;
    transaction.commit().await.map_err(ApiFailure::from)?;
    let accepted = acks
        .iter()
        .filter(|ack| ack.status == AckStatus::Accepted)
        .count();
    let ordering = std::sync::atomic::Ordering::Relaxed;
    state
        .metrics
        .dose_events_accepted
        .fetch_add(accepted as u64, ordering);
    state
        .metrics
        .dose_events_duplicate
        .fetch_add((acks.len() - accepted) as u64, ordering);
    tracing::info!(device = %device.id, events = batch.events.len(), accepted, "dose events ingested");
    Ok(Json(BatchAck {
        acks,
        server_time: now,
    }))
}

/// Records a refused batch as an anomaly and answers with its 4xx.
async fn reject_batch(
    state: &AppState,
    device: &DeviceRecord,
    rejection: Rejection,
    now: DateTime<Utc>,
) -> ApiFailure {
    if let Err(error) = state
        .database
        .record_anomaly(
            device.id,
            Some(rejection.sequence),
            rejection.kind,
            &rejection.detail,
            now,
        )
        .await
    {
        return error.into();
    }
    tracing::warn!(device = %device.id, sequence = rejection.sequence, kind = rejection.kind, "dose event batch rejected");
    state
        .metrics
        .batches_rejected
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    ApiFailure::new(rejection.status, rejection.kind, rejection.detail)
}

/// Checks every event's signature and that it names this device and its patient.
fn check_signatures(
    device: &DeviceRecord,
    key: &ed25519_dalek::VerifyingKey,
    batch: &DoseEventBatch,
) -> Result<(), Rejection> {
    for signed in &batch.events {
        let sequence = signed.sequence();
        let event = &signed.record.event;
        if let Err(error) = signed.verify(key) {
            return Err(Rejection {
                sequence,
                kind: "bad_signature",
                status: StatusCode::UNPROCESSABLE_ENTITY,
                detail: error.to_string(),
            });
        }
        if event.device_id != device.id || event.patient_id != device.patient_id {
            return Err(Rejection {
                sequence,
                kind: "wrong_device",
                status: StatusCode::UNPROCESSABLE_ENTITY,
                detail: format!("event {sequence} names another device or patient"),
            });
        }
    }
    Ok(())
}

/// Why a batch was refused: the first offending event.
struct Rejection {
    sequence: u64,
    kind: &'static str,
    status: StatusCode,
    detail: String,
}

/// Checks the chain links of `batch` (signatures were checked by [`check_signatures`]) and
/// stores every new event inside `transaction`; the outer `Result` is a database failure, the
/// inner one a rejected batch.
async fn store_batch(
    transaction: &mut Transaction,
    device: &DeviceRecord,
    batch: &DoseEventBatch,
    now: DateTime<Utc>,
) -> Result<Result<Vec<EventAck>, Rejection>, crate::ServerError> {
    let mut head = Database::chain_head(transaction, device.id).await?;
    let mut acks = Vec::with_capacity(batch.events.len());
    for signed in &batch.events {
        let sequence = signed.sequence();
        let event = &signed.record.event;
        let reject = |kind: &'static str, status: StatusCode, detail: String| {
            Ok(Err(Rejection {
                sequence,
                kind,
                status,
                detail,
            }))
        };
        let head_sequence = head.as_ref().map_or(0, |(sequence, _)| *sequence);
        if sequence <= head_sequence {
            match Database::stored_hash(transaction, device.id, sequence).await? {
                Some(hash) if hash == signed.hash => {
                    acks.push(EventAck {
                        event_id: event.id,
                        sequence,
                        status: AckStatus::Duplicate,
                    });
                    continue;
                }
                _ => {
                    return reject(
                        "chain_fork",
                        StatusCode::CONFLICT,
                        format!("event {sequence} differs from the stored event {sequence}"),
                    );
                }
            }
        }
        if let Err(error) = signed.verify_link(
            head.as_ref()
                .map(|(sequence, hash)| (*sequence, hash.as_str())),
        ) {
            return reject("chain_gap", StatusCode::CONFLICT, error.to_string());
        }
        Database::insert_dose_event(transaction, device.id, signed, now).await?;
        acks.push(EventAck {
            event_id: event.id,
            sequence,
            status: AckStatus::Accepted,
        });
        head = Some((sequence, signed.hash.clone()));
    }
    Ok(Ok(acks))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Period {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
}

#[utoipa::path(get, path = "/api/v1/patients/{patient_id}/adherence", tag = "trial", params(("patient_id" = String, Path, description = "patient id"), ("from" = String, Query, description = "RFC 3339"), ("to" = String, Query, description = "RFC 3339")), responses((status = 200, body = AdherenceReport), (status = 400, description = "malformed request", body = ApiError), (status = 401, description = "no or invalid credentials", body = ApiError), (status = 403, description = "the role does not allow this, or a CSRF failure", body = ApiError), (status = 404, description = "unknown, or outside the caller's scopes", body = ApiError)), security(("api_token" = []), ("session" = [])))]
async fn adherence(
    State(state): State<AppState>,
    caller: Caller,
    Path(patient_id): Path<String>,
    period: Result<Query<Period>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AdherenceReport>, ApiFailure> {
    caller.require_role(Action::ReadAdherence)?;
    let patient_id: PatientId = parse_id(&patient_id, "patient id")?;
    let place = state.database.patient_place(patient_id).await?;
    caller.require(Action::ReadAdherence, place, "patient")?;
    let Query(Period { from, to }) = period.map_err(|rejection| {
        ApiFailure::bad_request(
            "invalid_query",
            format!(
                "{}; expected ?from=RFC3339&to=RFC3339",
                rejection.body_text()
            ),
        )
    })?;
    if to <= from {
        return Err(ApiFailure::bad_request(
            "invalid_query",
            "`to` must be after `from`",
        ));
    }
    let schedule: Vec<_> = state
        .database
        .regimens_of(patient_id)
        .await?
        .iter()
        .flat_map(|plan| plan.regimen.scheduled_doses(from, to))
        .collect();
    let events = state.database.dose_events_of(patient_id, from, to).await?;
    let summary = dose_adherence(&schedule, &events);
    caller
        .audit(&state, "read_adherence", &patient_id.to_string())
        .await?;
    Ok(Json(AdherenceReport {
        patient_id,
        from,
        to,
        scheduled: summary.scheduled,
        verified_on_time: summary.verified_on_time,
        awaiting_review: summary.awaiting_review,
        ratio: summary.ratio(),
        band: summary.band(),
        proportion_of_days_covered: proportion_of_days_covered(&schedule, &events),
    }))
}
