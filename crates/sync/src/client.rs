//! Typed HTTP clients over reqwest.

use chrono::{DateTime, Utc};
use dosewitness_domain::{DeviceId, DoseEventId, PatientId, SiteId, StudyId};
use dosewitness_protocol::{
    AdherenceReport, ApiError, BatchAck, CreatePatient, CreateRegimen, CreateSite, CreateStudy,
    Created, DeviceEnrolment, DoseEventBatch, EVIDENCE_HASH_HEADER, EnrolDevice, EnrolmentCode,
    EvidenceAck, EvidenceManifest, RegimenPlan,
};
use dosewitness_store::StoreError;
use reqwest::{Client, RequestBuilder, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

use crate::tls::TlsPolicy;

/// Errors talking to the clinic backend, in words a person can act on.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("the clinic server at {url} could not be reached: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the clinic server answered {status} ({code}): {message}")]
    Rejected {
        status: u16,
        code: String,
        message: String,
        /// The server's `Retry-After`, in seconds, when it sent one.
        retry_after_s: Option<u64>,
    },
    #[error("the clinic server's answer could not be understood: {0}")]
    Protocol(String),
    #[error("the HTTP client could not be built: {0}")]
    Client(String),
    /// A server address the client will not use: not a URL, or plain `http://` off loopback.
    #[error("refusing the server address {url}: {reason}")]
    ServerUrl { url: String, reason: &'static str },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SyncError {
    /// True for failures that may pass on their own: the network, timeouts, 408, 429, 5xx, and
    /// a 409 `write_conflict` (another request for this device was being stored at the same
    /// moment). Any other 4xx means the request itself is wrong and is not retried.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Rejected { status, code, .. } => {
                matches!(*status, 408 | 429 | 500..) || (*status == 409 && code == "write_conflict")
            }
            Self::Protocol(_) | Self::Client(_) | Self::ServerUrl { .. } | Self::Store(_) => false,
        }
    }

    /// The server's requested wait, if any.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::Rejected {
                retry_after_s: Some(seconds),
                ..
            } => Some(std::time::Duration::from_secs(*seconds)),
            _ => None,
        }
    }
}

/// A reqwest client for `base_url`, which must be `https://` (or `http://` on loopback), with
/// `tls`'s trust anchors.
fn build_client(base_url: &str, timeout: Duration, tls: &TlsPolicy) -> Result<Client, SyncError> {
    crate::tls::check_server_url(base_url)?;
    tls.apply(Client::builder())
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("dosewitness/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|error| SyncError::Client(error.to_string()))
}

async fn send<T: DeserializeOwned>(url: &str, request: RequestBuilder) -> Result<T, SyncError> {
    Ok(send_dated(url, request).await?.0)
}

/// Sends `request` and returns the raw body of a successful answer.
async fn send_for_bytes(url: &str, request: RequestBuilder) -> Result<Vec<u8>, SyncError> {
    let (status, retry_after_s, bytes) = exchange(url, request).await?;
    if !status.is_success() {
        return Err(rejected(status, retry_after_s, &bytes));
    }
    Ok(bytes)
}

/// Sends `request` and reads the whole answer: status, `Retry-After` (seconds) and body.
async fn exchange(
    url: &str,
    request: RequestBuilder,
) -> Result<(StatusCode, Option<u64>, Vec<u8>), SyncError> {
    let response = request
        .send()
        .await
        .map_err(|error| unreachable(url, error))?;
    let status = response.status();
    let retry_after_s = retry_after_seconds(&response);
    let bytes = read_body(url, response).await?;
    Ok((status, retry_after_s, bytes))
}

/// The error for a request that got no answer, with the cause (refused connection, timeout, a
/// certificate the client does not trust, …) in the reason.
fn unreachable(url: &str, error: reqwest::Error) -> SyncError {
    SyncError::Unreachable {
        url: url.to_string(),
        reason: crate::tls::error_chain(&error.without_url()),
    }
}

fn retry_after_seconds(response: &reqwest::Response) -> Option<u64> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
}

async fn read_body(url: &str, response: reqwest::Response) -> Result<Vec<u8>, SyncError> {
    Ok(response
        .bytes()
        .await
        .map_err(|error| SyncError::Unreachable {
            url: url.to_string(),
            reason: format!(
                "the connection dropped while reading the answer: {}",
                error.without_url()
            ),
        })?
        .to_vec())
}

/// The error for a non-success answer with `bytes` as its body.
fn rejected(status: StatusCode, retry_after_s: Option<u64>, bytes: &[u8]) -> SyncError {
    let body: Option<ApiError> = serde_json::from_slice(bytes).ok();
    SyncError::Rejected {
        status: status.as_u16(),
        code: body
            .as_ref()
            .map_or_else(|| status_code_word(status), |body| body.code.clone()),
        message: body.map_or_else(|| "no details".to_string(), |body| body.message),
        retry_after_s,
    }
}

/// As [`send`], with the server's `Date` header (its clock when it answered, to the second).
async fn send_dated<T: DeserializeOwned>(
    url: &str,
    request: RequestBuilder,
) -> Result<(T, Option<DateTime<Utc>>), SyncError> {
    let response = request
        .send()
        .await
        .map_err(|error| unreachable(url, error))?;
    let status = response.status();
    let server_date = response
        .headers()
        .get(reqwest::header::DATE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| DateTime::parse_from_rfc2822(value).ok())
        .map(|date| date.with_timezone(&Utc));
    let retry_after_s = retry_after_seconds(&response);
    let bytes = read_body(url, response).await?;
    if !status.is_success() {
        return Err(rejected(status, retry_after_s, &bytes));
    }
    let body =
        serde_json::from_slice(&bytes).map_err(|error| SyncError::Protocol(error.to_string()))?;
    Ok((body, server_date))
}

fn status_code_word(status: StatusCode) -> String {
    status
        .canonical_reason()
        .unwrap_or("error")
        .to_lowercase()
        .replace(' ', "_")
}

/// The API of one enrolled (or enrolling) device.
#[derive(Debug, Clone)]
pub struct DeviceClient {
    http: Client,
    base_url: String,
    token: Option<String>,
}

impl DeviceClient {
    /// A client for the server at `base_url` (e.g. `https://clinic.example/`; plain `http://`
    /// only on loopback), with the device's bearer token once it has one, trusting the
    /// platform's roots.
    pub fn new(
        base_url: &str,
        token: Option<String>,
        timeout: Duration,
    ) -> Result<Self, SyncError> {
        Self::with_tls(base_url, token, timeout, &TlsPolicy::default())
    }

    /// As [`DeviceClient::new`], trusting the server's certificate per `tls` (e.g. pinned).
    pub fn with_tls(
        base_url: &str,
        token: Option<String>,
        timeout: Duration,
        tls: &TlsPolicy,
    ) -> Result<Self, SyncError> {
        Ok(Self {
            http: build_client(base_url, timeout, tls)?,
            base_url: base_url.trim_end_matches('/').to_string(),
            token,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    fn authorised(&self, request: RequestBuilder) -> RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Enrols with a one-time code, registering the device's public key.
    pub async fn enrol(&self, request: &EnrolDevice) -> Result<DeviceEnrolment, SyncError> {
        let url = self.url("/api/v1/devices/enrol");
        send(&url, self.http.post(&url).json(request)).await
    }

    /// Sends one batch of signed events.
    pub async fn push_batch(
        &self,
        device_id: DeviceId,
        batch: &DoseEventBatch,
    ) -> Result<BatchAck, SyncError> {
        let url = self.url(&format!("/api/v1/devices/{device_id}/dose-events"));
        send(&url, self.authorised(self.http.post(&url).json(batch))).await
    }

    /// The regimens the device must follow now.
    pub async fn regimens(&self, device_id: DeviceId) -> Result<Vec<RegimenPlan>, SyncError> {
        Ok(self.regimens_and_clock(device_id).await?.0)
    }

    /// The regimens the device must follow now, and the server's clock (HTTP `Date`, to the
    /// second) when it answered.
    pub async fn regimens_and_clock(
        &self,
        device_id: DeviceId,
    ) -> Result<(Vec<RegimenPlan>, Option<DateTime<Utc>>), SyncError> {
        let url = self.url(&format!("/api/v1/devices/{device_id}/regimens"));
        send_dated(&url, self.authorised(self.http.get(&url))).await
    }

    /// The evidence frames the server holds for one of this device's events.
    pub async fn evidence_manifest(
        &self,
        device_id: DeviceId,
        event_id: DoseEventId,
    ) -> Result<EvidenceManifest, SyncError> {
        let url = self.url(&format!(
            "/api/v1/devices/{device_id}/dose-events/{event_id}/evidence"
        ));
        send(&url, self.authorised(self.http.get(&url))).await
    }

    /// Uploads evidence frame `index` (JPEG bytes) of one of this device's events, with its
    /// sha256 so the server can tell a damaged body from the frame.
    pub async fn put_evidence(
        &self,
        device_id: DeviceId,
        event_id: DoseEventId,
        index: u32,
        jpeg: &[u8],
    ) -> Result<EvidenceAck, SyncError> {
        let url = self.url(&format!(
            "/api/v1/devices/{device_id}/dose-events/{event_id}/evidence/{index}"
        ));
        let request = self
            .http
            .put(&url)
            .header(reqwest::header::CONTENT_TYPE, "image/jpeg")
            .header(EVIDENCE_HASH_HEADER, crate::sha256_hex(jpeg))
            .body(jpeg.to_vec());
        send(&url, self.authorised(request)).await
    }
}

/// The coordinator API, authenticated with a bearer token.
#[derive(Debug, Clone)]
pub struct CoordinatorClient {
    http: Client,
    base_url: String,
    token: String,
}

impl CoordinatorClient {
    /// A client for the server at `base_url` (plain `http://` only on loopback), trusting the
    /// platform's roots.
    pub fn new(base_url: &str, token: String, timeout: Duration) -> Result<Self, SyncError> {
        Self::with_tls(base_url, token, timeout, &TlsPolicy::default())
    }

    /// As [`CoordinatorClient::new`], trusting the server's certificate per `tls`.
    pub fn with_tls(
        base_url: &str,
        token: String,
        timeout: Duration,
        tls: &TlsPolicy,
    ) -> Result<Self, SyncError> {
        Ok(Self {
            http: build_client(base_url, timeout, tls)?,
            base_url: base_url.trim_end_matches('/').to_string(),
            token,
        })
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, SyncError> {
        let url = format!("{}{path}", self.base_url);
        send(
            &url,
            self.http.post(&url).bearer_auth(&self.token).json(body),
        )
        .await
    }

    pub async fn create_study(&self, body: &CreateStudy) -> Result<StudyId, SyncError> {
        Ok(self
            .post::<_, Created<StudyId>>("/api/v1/studies", body)
            .await?
            .id)
    }

    pub async fn create_site(
        &self,
        study_id: StudyId,
        body: &CreateSite,
    ) -> Result<SiteId, SyncError> {
        Ok(self
            .post::<_, Created<SiteId>>(&format!("/api/v1/studies/{study_id}/sites"), body)
            .await?
            .id)
    }

    pub async fn create_patient(
        &self,
        site_id: SiteId,
        body: &CreatePatient,
    ) -> Result<PatientId, SyncError> {
        Ok(self
            .post::<_, Created<PatientId>>(&format!("/api/v1/sites/{site_id}/patients"), body)
            .await?
            .id)
    }

    pub async fn create_regimen(
        &self,
        patient_id: PatientId,
        body: &CreateRegimen,
    ) -> Result<RegimenPlan, SyncError> {
        self.post(&format!("/api/v1/patients/{patient_id}/regimens"), body)
            .await
    }

    /// Revokes a device: its token stops working at once.
    pub async fn revoke_device(&self, device_id: DeviceId) -> Result<(), SyncError> {
        let url = format!("{}/api/v1/devices/{device_id}/revoke", self.base_url);
        let response = self
            .http
            .post(&url)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|error| unreachable(&url, error))?;
        match response.status() {
            status if status.is_success() => Ok(()),
            status => Err(SyncError::Rejected {
                status: status.as_u16(),
                code: status_code_word(status),
                message: "revocation refused".to_string(),
                retry_after_s: None,
            }),
        }
    }

    pub async fn create_enrolment_code(
        &self,
        patient_id: PatientId,
    ) -> Result<EnrolmentCode, SyncError> {
        self.post(
            &format!("/api/v1/patients/{patient_id}/enrolment-codes"),
            &serde_json::json!({}),
        )
        .await
    }

    /// The evidence frames of a dose event (the server audits the read).
    pub async fn evidence(&self, event_id: DoseEventId) -> Result<EvidenceManifest, SyncError> {
        let url = format!("{}/api/v1/dose-events/{event_id}/evidence", self.base_url);
        send(&url, self.http.get(&url).bearer_auth(&self.token)).await
    }

    /// The JPEG bytes of evidence frame `index` of a dose event (the server audits the read).
    pub async fn evidence_frame(
        &self,
        event_id: DoseEventId,
        index: u32,
    ) -> Result<Vec<u8>, SyncError> {
        let url = format!(
            "{}/api/v1/dose-events/{event_id}/evidence/{index}",
            self.base_url
        );
        send_for_bytes(&url, self.http.get(&url).bearer_auth(&self.token)).await
    }

    /// Adherence of a patient over `[from, to)`.
    pub async fn adherence(
        &self,
        patient_id: PatientId,
        from: chrono::DateTime<chrono::Utc>,
        to: chrono::DateTime<chrono::Utc>,
    ) -> Result<AdherenceReport, SyncError> {
        let url = format!("{}/api/v1/patients/{patient_id}/adherence", self.base_url);
        let query = [("from", from.to_rfc3339()), ("to", to.to_rfc3339())];
        send(
            &url,
            self.http.get(&url).bearer_auth(&self.token).query(&query),
        )
        .await
    }
}
