//! Evidence keyframes of dose events: devices upload the JPEG frames of an event one at a time,
//! each acknowledged on its own, so a dropped connection repeats only the frame in flight and a
//! device resumes from the manifest of what the server holds; coordinators list and read them,
//! and every read is written to the audit log.
//!
//! The bytes live in an [`EvidenceStore`] (the `object_store` crate: local files under the data
//! dir by default, any S3-compatible store by URL) under `{device_id}/{event_id}/{index}.jpg`,
//! ids only, never PHI. Metadata lives in the `evidence_frames` table. A slot (event, index) is
//! claimed with the frame's sha256 before its bytes are written and marked stored after, so a
//! slot only ever holds the bytes it was first claimed for: re-sending them is a no-op, other
//! bytes are refused (409), and a claim whose write failed is finished by the next attempt.
//! Logs carry ids, indexes, sizes and codes; never image content.

use crate::AppState;
use crate::auth::{Action, Caller, Source};
use crate::db::{parse, timestamp};
use crate::error::{ApiFailure, ServerError};
use crate::routes::{parse_id, require_device};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dosewitness_domain::{DeviceId, DoseEventId};
use dosewitness_protocol::{
    AckStatus, ApiError, EVIDENCE_HASH_HEADER, EvidenceAck, EvidenceFrameInfo, EvidenceManifest,
    MAX_EVIDENCE_FRAME_BYTES, MAX_EVIDENCE_FRAMES_PER_EVENT,
};
use object_store::ObjectStore;
use object_store::ObjectStoreExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use sha2::{Digest, Sha256};
use sqlx::Row;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use utoipa_axum::{router::OpenApiRouter, routes};

/// The evidence endpoints, merged into [`crate::router`].
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(device_manifest))
        .routes(routes!(upload_frame))
        .routes(routes!(coordinator_manifest))
        .routes(routes!(read_frame))
        .layer(DefaultBodyLimit::max(MAX_EVIDENCE_FRAME_BYTES))
}

/// Where evidence blobs are kept: an object store and a key prefix inside it.
#[derive(Clone)]
pub struct EvidenceStore {
    objects: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    /// The store as it may be shown: no credentials, no query string.
    location: String,
}

impl std::fmt::Debug for EvidenceStore {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("EvidenceStore")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl EvidenceStore {
    /// Files under `directory` (created if missing), each written to a staging file, synced
    /// and renamed into place, so a blob is whole or absent.
    pub fn local(directory: &std::path::Path) -> Result<Self, ServerError> {
        let location = directory.display().to_string();
        let open_error = |reason: String| ServerError::EvidenceStoreOpen {
            location: location.clone(),
            reason,
        };
        std::fs::create_dir_all(directory).map_err(|error| open_error(error.to_string()))?;
        let objects = LocalFileSystem::new_with_prefix(directory)
            .map_err(|error| open_error(error.to_string()))?
            .with_fsync(true);
        Ok(Self {
            objects: Arc::new(objects),
            prefix: ObjectPath::default(),
            location,
        })
    }

    /// The store at `url`: `file:///var/lib/dosewitness/evidence` (as [`Self::local`]), or
    /// `s3://bucket/prefix` for any S3-compatible store, configured by `options` (object_store's
    /// keys, e.g. `aws_endpoint`, `aws_region`, `aws_access_key_id`, `aws_secret_access_key`,
    /// `aws_allow_http`). Errors name the store without credentials.
    pub fn from_url(
        url: &str,
        options: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ServerError> {
        let parsed = url::Url::parse(url).map_err(|error| ServerError::EvidenceStoreOpen {
            location: "(an unparseable evidence URL)".to_string(),
            reason: error.to_string(),
        })?;
        let location = shown_url(&parsed);
        let open_error = |reason: String| ServerError::EvidenceStoreOpen {
            location: location.clone(),
            reason,
        };
        if parsed.scheme() == "file" {
            let directory = parsed
                .to_file_path()
                .map_err(|()| open_error("not an absolute file path".to_string()))?;
            return Self::local(&directory);
        }
        let (objects, prefix) = object_store::parse_url_opts(&parsed, options)
            .map_err(|error| open_error(error.to_string()))?;
        Ok(Self {
            objects: Arc::from(objects),
            prefix,
            location,
        })
    }

    /// The store as it may be shown in messages and logs.
    pub fn location(&self) -> &str {
        &self.location
    }

    fn path(&self, key: &str) -> ObjectPath {
        key.split('/')
            .fold(self.prefix.clone(), |path, part| path.join(part))
    }

    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), ServerError> {
        self.objects
            .put(&self.path(key), bytes.into())
            .await
            .map(|_| ())
            .map_err(|source| ServerError::EvidenceStore {
                action: "writing an evidence frame",
                source,
            })
    }

    async fn get(&self, key: &str) -> Result<Bytes, ServerError> {
        let reading = |source| ServerError::EvidenceStore {
            action: "reading an evidence frame",
            source,
        };
        self.objects
            .get(&self.path(key))
            .await
            .map_err(reading)?
            .bytes()
            .await
            .map_err(reading)
    }
}

/// `url` without user, password, query or fragment.
fn shown_url(url: &url::Url) -> String {
    let mut shown = url.clone();
    // Fails only for URLs that cannot carry credentials, which then have none to hide.
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

/// The blob key of a frame: ids and the index only.
fn object_key(device_id: DeviceId, event_id: DoseEventId, index: u32) -> String {
    format!("{device_id}/{event_id}/{index}.jpg")
}

fn evidence_store(state: &AppState) -> Result<&EvidenceStore, ApiFailure> {
    state.evidence.as_ref().ok_or_else(|| {
        ApiFailure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "evidence_unavailable",
            "this server has no evidence store configured",
        )
    })
}

fn parse_index(text: &str) -> Result<u32, ApiFailure> {
    text.parse::<u32>()
        .ok()
        .filter(|index| *index < MAX_EVIDENCE_FRAMES_PER_EVENT)
        .ok_or_else(|| {
            ApiFailure::bad_request(
                "invalid_index",
                format!(
                    "the frame index must be a number from 0 to {}",
                    MAX_EVIDENCE_FRAMES_PER_EVENT - 1
                ),
            )
        })
}

/// JPEG files start with SOI (FF D8) followed by a marker (FF).
fn is_jpeg(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xFF, 0xD8, 0xFF])
}

fn to_sql(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The device that recorded `event_id`, if the server has the event.
async fn event_device(
    state: &AppState,
    event_id: DoseEventId,
) -> Result<Option<DeviceId>, ServerError> {
    let row = sqlx::query("SELECT device_id FROM dose_events WHERE event_id = $1")
        .bind(event_id.to_string())
        .fetch_optional(&state.database.pool)
        .await?;
    row.map(|row| parse(&row.try_get::<String, _>(0)?))
        .transpose()
}

/// Refuses unless `event_id` is stored and was recorded by `device_id`.
async fn require_event_of(
    state: &AppState,
    event_id: DoseEventId,
    device_id: DeviceId,
) -> Result<(), ApiFailure> {
    match event_device(state, event_id).await? {
        Some(owner) if owner == device_id => Ok(()),
        Some(_) => Err(ApiFailure::new(
            StatusCode::FORBIDDEN,
            "wrong_device",
            "this dose event was recorded by another device",
        )),
        None => Err(ApiFailure::new(
            StatusCode::NOT_FOUND,
            "unknown_event",
            "dose event not found; send the event before its evidence",
        )),
    }
}

/// The frames stored for `event_id`, by index.
async fn manifest(state: &AppState, event_id: DoseEventId) -> Result<EvidenceManifest, ApiFailure> {
    let rows = sqlx::query(
        "SELECT frame_index, sha256, size_bytes, stored_at FROM evidence_frames
         WHERE event_id = $1 AND stored_at IS NOT NULL ORDER BY frame_index",
    )
    .bind(event_id.to_string())
    .fetch_all(&state.database.pool)
    .await?;
    let decode_error = |what: &str| ServerError::Decode(format!("evidence frame {what}"));
    let frames = rows
        .iter()
        .map(|row| {
            let stored_at: String = row.try_get(3)?;
            Ok(EvidenceFrameInfo {
                index: u32::try_from(row.try_get::<i64, _>(0)?)
                    .map_err(|_| decode_error("index"))?,
                sha256: row.try_get(1)?,
                size_bytes: u64::try_from(row.try_get::<i64, _>(2)?)
                    .map_err(|_| decode_error("size"))?,
                received_at: chrono::DateTime::parse_from_rfc3339(&stored_at)
                    .map_err(|_| decode_error("time"))?
                    .with_timezone(&chrono::Utc),
            })
        })
        .collect::<Result<Vec<_>, ServerError>>()?;
    Ok(EvidenceManifest { event_id, frames })
}

/// `GET /api/v1/devices/{device_id}/dose-events/{event_id}/evidence`: what the server holds,
/// so a device resumes an interrupted upload without re-sending stored frames.
#[utoipa::path(get, path = "/api/v1/devices/{device_id}/dose-events/{event_id}/evidence", tag = "evidence", params(("device_id" = String, Path, description = "device id"), ("event_id" = String, Path, description = "dose event id")), responses((status = 200, description = "the frames the server holds", body = EvidenceManifest), (status = 401, body = ApiError), (status = 403, description = "revoked, or another device's event", body = ApiError), (status = 404, body = ApiError)), security(("device_token" = [])))]
async fn device_manifest(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((device_id, event_id)): Path<(String, String)>,
) -> Result<Json<EvidenceManifest>, ApiFailure> {
    let device_id: DeviceId = parse_id(&device_id, "device id")?;
    let device = require_device(&state, &headers, device_id).await?;
    let event_id: DoseEventId = parse_id(&event_id, "dose event id")?;
    require_event_of(&state, event_id, device.id).await?;
    Ok(Json(manifest(&state, event_id).await?))
}

/// What became of one upload.
enum Upload {
    Stored,
    AlreadyStored,
}

/// `PUT /api/v1/devices/{device_id}/dose-events/{event_id}/evidence/{index}`: one JPEG frame,
/// its sha256 in [`EVIDENCE_HASH_HEADER`].
#[utoipa::path(put, path = "/api/v1/devices/{device_id}/dose-events/{event_id}/evidence/{index}", tag = "evidence", params(("device_id" = String, Path, description = "device id"), ("event_id" = String, Path, description = "dose event id"), ("index" = u32, Path, description = "frame index, 0 to 63"), ("x-content-sha256" = String, Header, description = "hex sha256 of the body")), request_body(content = Vec<u8>, content_type = "image/jpeg"), responses((status = 201, description = "stored", body = EvidenceAck), (status = 200, description = "already stored (same bytes)", body = EvidenceAck), (status = 400, description = "hash mismatch or bad index", body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError), (status = 409, description = "other bytes already in this slot", body = ApiError), (status = 413, body = ApiError), (status = 415, description = "not a JPEG", body = ApiError), (status = 503, description = "no evidence store", body = ApiError)), security(("device_token" = [])))]
async fn upload_frame(
    State(state): State<AppState>,
    Source(source): Source,
    Path((device_id, event_id, index)): Path<(String, String, String)>,
    request: Request,
) -> Result<(StatusCode, Json<EvidenceAck>), ApiFailure> {
    let device_id: DeviceId = parse_id(&device_id, "device id")?;
    let device = require_device(&state, request.headers(), device_id).await?;
    let event_id: DoseEventId = parse_id(&event_id, "dose event id")?;
    let index = parse_index(&index)?;
    let store = evidence_store(&state)?;
    require_event_of(&state, event_id, device.id).await?;
    let declared = request
        .headers()
        .get(EVIDENCE_HASH_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(str::to_ascii_lowercase)
        .filter(|value| value.len() == 64 && value.bytes().all(|byte| byte.is_ascii_hexdigit()))
        .ok_or_else(|| {
            ApiFailure::bad_request(
                "missing_content_hash",
                format!("send the frame's sha256 as 64 hex digits in {EVIDENCE_HASH_HEADER}"),
            )
        })?;
    let body = Bytes::from_request(request, &())
        .await
        .map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiFailure::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "frame_too_large",
                    format!("an evidence frame may be at most {MAX_EVIDENCE_FRAME_BYTES} bytes"),
                )
            } else {
                ApiFailure::new(rejection.status(), "invalid_body", rejection.body_text())
            }
        })?;
    if !is_jpeg(&body) {
        return Err(ApiFailure::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not_jpeg",
            "evidence frames must be JPEG images",
        ));
    }
    let sha256 = hex::encode(Sha256::digest(&body));
    if sha256 != declared {
        return Err(ApiFailure::bad_request(
            "hash_mismatch",
            format!("the body's sha256 differs from {EVIDENCE_HASH_HEADER}; resend the frame"),
        ));
    }
    let size = body.len();
    let outcome = store_frame(&state, store, device.id, event_id, index, &sha256, body).await?;
    let status = match outcome {
        Upload::Stored => {
            state
                .metrics
                .evidence_frames_stored
                .fetch_add(1, Ordering::Relaxed);
            state
                .database
                .audit(
                    state.clock.now(),
                    &device.audit_actor(),
                    &source,
                    "upload_evidence",
                    &format!("{event_id}/{index}"),
                )
                .await?;
            tracing::info!(device = %device.id, event = %event_id, index, bytes = size, "evidence frame stored");
            AckStatus::Accepted
        }
        Upload::AlreadyStored => {
            state
                .metrics
                .evidence_frames_duplicate
                .fetch_add(1, Ordering::Relaxed);
            AckStatus::Duplicate
        }
    };
    let code = match status {
        AckStatus::Accepted => StatusCode::CREATED,
        AckStatus::Duplicate => StatusCode::OK,
    };
    Ok((
        code,
        Json(EvidenceAck {
            event_id,
            index,
            sha256,
            status,
        }),
    ))
}

/// Claims the slot for `sha256` (or finds it claimed), writes the bytes if they are not stored
/// yet and marks the slot stored.
async fn store_frame(
    state: &AppState,
    store: &EvidenceStore,
    device_id: DeviceId,
    event_id: DoseEventId,
    index: u32,
    sha256: &str,
    body: Bytes,
) -> Result<Upload, ApiFailure> {
    let pool = &state.database.pool;
    let key = object_key(device_id, event_id, index);
    let claimed = sqlx::query(
        "INSERT INTO evidence_frames (event_id, frame_index, device_id, sha256, size_bytes, object_key, claimed_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
    )
    .bind(event_id.to_string())
    .bind(i64::from(index))
    .bind(device_id.to_string())
    .bind(sha256)
    .bind(to_sql(body.len() as u64))
    .bind(&key)
    .bind(timestamp(state.clock.now()))
    .execute(pool)
    .await?
    .rows_affected()
        == 1;
    if !claimed {
        let row = sqlx::query(
            "SELECT sha256, stored_at FROM evidence_frames WHERE event_id = $1 AND frame_index = $2",
        )
        .bind(event_id.to_string())
        .bind(i64::from(index))
        .fetch_one(pool)
        .await?;
        let stored_sha256: String = row.try_get(0)?;
        if stored_sha256 != sha256 {
            tracing::warn!(device = %device_id, event = %event_id, index, "conflicting evidence frame refused");
            return Err(ApiFailure::new(
                StatusCode::CONFLICT,
                "evidence_conflict",
                format!("frame {index} of this event is already stored with other content"),
            ));
        }
        if row.try_get::<Option<String>, _>(1)?.is_some() {
            return Ok(Upload::AlreadyStored);
        }
        // Claimed with these bytes by an attempt whose write failed or is still running:
        // writing the same bytes again is harmless.
    }
    store.put(&key, body).await?;
    let marked = sqlx::query(
        "UPDATE evidence_frames SET stored_at = $3 WHERE event_id = $1 AND frame_index = $2 AND stored_at IS NULL",
    )
    .bind(event_id.to_string())
    .bind(i64::from(index))
    .bind(timestamp(state.clock.now()))
    .execute(pool)
    .await?
    .rows_affected();
    Ok(if marked == 1 {
        Upload::Stored
    } else {
        Upload::AlreadyStored
    })
}

/// `GET /api/v1/dose-events/{event_id}/evidence`: the frames of an event (audited).
#[utoipa::path(get, path = "/api/v1/dose-events/{event_id}/evidence", tag = "evidence", params(("event_id" = String, Path, description = "dose event id")), responses((status = 200, body = EvidenceManifest), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 404, description = "unknown, or outside the caller's scopes", body = ApiError)), security(("api_token" = []), ("session" = [])))]
async fn coordinator_manifest(
    State(state): State<AppState>,
    caller: Caller,
    Path(event_id): Path<String>,
) -> Result<Json<EvidenceManifest>, ApiFailure> {
    caller.require_role(Action::ReviewDoses)?;
    let event_id: DoseEventId = parse_id(&event_id, "dose event id")?;
    let place = state.database.event_place(&event_id.to_string()).await?;
    caller.require(Action::ReviewDoses, place, "dose event")?;
    let manifest = manifest(&state, event_id).await?;
    caller
        .audit(&state, "list_evidence", &event_id.to_string())
        .await?;
    Ok(Json(manifest))
}

/// `GET /api/v1/dose-events/{event_id}/evidence/{index}`: one frame's JPEG bytes (audited
/// before they are sent; checked against the sha256 recorded at upload).
#[utoipa::path(get, path = "/api/v1/dose-events/{event_id}/evidence/{index}", tag = "evidence", params(("event_id" = String, Path, description = "dose event id"), ("index" = u32, Path)), responses((status = 200, description = "the JPEG (sha256 in x-content-sha256)", body = Vec<u8>, content_type = "image/jpeg"), (status = 401, body = ApiError), (status = 403, body = ApiError), (status = 404, body = ApiError), (status = 503, body = ApiError)), security(("api_token" = []), ("session" = [])))]
async fn read_frame(
    State(state): State<AppState>,
    caller: Caller,
    Path((event_id, index)): Path<(String, String)>,
) -> Result<Response, ApiFailure> {
    caller.require_role(Action::ReviewDoses)?;
    let event_id: DoseEventId = parse_id(&event_id, "dose event id")?;
    let place = state.database.event_place(&event_id.to_string()).await?;
    caller.require(Action::ReviewDoses, place, "dose event")?;
    let index = parse_index(&index)?;
    let store = evidence_store(&state)?;
    let row = sqlx::query(
        "SELECT sha256, object_key FROM evidence_frames
         WHERE event_id = $1 AND frame_index = $2 AND stored_at IS NOT NULL",
    )
    .bind(event_id.to_string())
    .bind(i64::from(index))
    .fetch_optional(&state.database.pool)
    .await?
    .ok_or_else(|| ApiFailure::not_found("evidence frame"))?;
    let sha256: String = row.try_get(0)?;
    let key: String = row.try_get(1)?;
    let bytes = store.get(&key).await?;
    if hex::encode(Sha256::digest(&bytes)) != sha256 {
        tracing::error!(event = %event_id, index, "stored evidence frame does not match its recorded sha256");
        return Err(ServerError::Decode(format!("evidence frame {event_id}/{index}")).into());
    }
    caller
        .audit(&state, "read_evidence", &format!("{event_id}/{index}"))
        .await?;
    let hash_header = HeaderValue::from_str(&sha256)
        .map_err(|_| ServerError::Decode(format!("evidence frame {event_id}/{index} hash")))?;
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (HeaderName::from_static(EVIDENCE_HASH_HEADER), hash_header),
        ],
        bytes,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_keys_hold_ids_and_the_index_only() {
        let at = chrono::DateTime::UNIX_EPOCH;
        let device_id = DeviceId::generate(at);
        let event_id = DoseEventId::generate(at);
        assert_eq!(
            object_key(device_id, event_id, 3),
            format!("{device_id}/{event_id}/3.jpg")
        );
    }

    #[test]
    fn shown_urls_carry_no_credentials() {
        let url = url::Url::parse("s3://key:secret@bucket/prefix?token=abc#x").unwrap();
        let shown = shown_url(&url);
        assert_eq!(shown, "s3://bucket/prefix");
        let error = EvidenceStore::from_url("unknown://bucket/prefix", Vec::new()).unwrap_err();
        assert!(
            error.to_string().contains("unknown://bucket/prefix"),
            "{error}"
        );
    }

    #[test]
    fn only_jpeg_magic_passes_and_indexes_are_bounded() {
        assert!(is_jpeg(&[0xFF, 0xD8, 0xFF, 0xE0]));
        assert!(!is_jpeg(b"\x89PNG\r\n"));
        assert!(!is_jpeg(&[0xFF, 0xD8]));
        assert_eq!(parse_index("0").unwrap(), 0);
        assert!(parse_index(&MAX_EVIDENCE_FRAMES_PER_EVENT.to_string()).is_err());
        assert!(parse_index("-1").is_err());
    }

    #[tokio::test]
    async fn a_local_store_keeps_blobs_under_its_directory() {
        let directory = tempfile::tempdir().unwrap();
        let root = directory.path().join("evidence");
        let url = url::Url::from_directory_path(&root).unwrap();
        let store = EvidenceStore::from_url(url.as_str(), Vec::new()).unwrap();
        store
            .put(
                "device/event/0.jpg",
                Bytes::from_static(b"\xFF\xD8\xFFjpeg"),
            )
            .await
            .unwrap();
        assert_eq!(
            std::fs::read(root.join("device/event/0.jpg")).unwrap(),
            b"\xFF\xD8\xFFjpeg"
        );
        assert_eq!(
            store.get("device/event/0.jpg").await.unwrap().as_ref(),
            b"\xFF\xD8\xFFjpeg"
        );
    }
}
