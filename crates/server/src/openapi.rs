//! The OpenAPI 3 document served at `/openapi.json`. Paths come from the `#[utoipa::path]`
//! attribute on each handler and are collected by the same `OpenApiRouter` that routes them, so a
//! route cannot exist undocumented; schemas are derived from the wire types in `protocol`.

use utoipa::openapi::OpenApi as Document;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "DoseWitness clinic backend",
        description = "Enrolment, idempotent ingest of signed dose events, adherence, accounts and audit. \
            Errors are `{\"code\", \"message\"}`; clients branch on `code`."
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "trial", description = "Studies, sites, patients, regimens and adherence"),
        (name = "devices", description = "Device enrolment, ingest and regimen pull"),
        (name = "evidence", description = "Evidence keyframes of flagged doses"),
        (name = "accounts", description = "Login, accounts, API tokens and the audit log"),
        (name = "operations", description = "Health and metrics"),
    )
)]
pub(crate) struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, document: &mut Document) {
        let components = document.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An account's API token (`dwt_…`), for machine clients",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "device_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The device credential issued at enrolment"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::auth::SESSION_COOKIE,
                "Session cookie from POST /api/v1/auth/login; unsafe requests also need X-CSRF-Token",
            ))),
        );
    }
}
