//! Seed 002: `/api/smtp-credentials` (and the same resource at `/v1/keys`): connection info
//! for the mail protocols, and named API keys with scopes. Shapes are the seed's, camelCase.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mailroom_core::time::rfc3339;
use mailroom_services::keys::MOBILE_SCOPES;
use mailroom_services::{Principal, RateRule};
use mailroom_store::ApiKeyRow;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, Auth};

/// Credential routes are stricter than the rest (seed 002): per account, per minute.
const CREDENTIAL_RULE: RateRule = RateRule::per_minute(60);

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    pub server_name: String,
    pub port: u16,
    pub secure_port: u16,
    pub enabled: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectionInfo {
    pub smtp: Endpoint,
    pub pop3: Endpoint,
    pub imap: Endpoint,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyView {
    pub id: String,
    pub name: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub is_active: bool,
    pub scopes: Vec<String>,
    /// Only in the answer that creates or rotates the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
}

impl KeyView {
    fn of(r: ApiKeyRow, secret: Option<String>) -> KeyView {
        KeyView {
            id: r.id,
            name: r.name,
            created_at: rfc3339(r.created_at),
            last_used_at: r.last_used_at.map(rfc3339),
            is_active: true,
            scopes: r.scopes,
            api_key: secret,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsView {
    pub connection_info: ConnectionInfo,
    pub keys: Vec<KeyView>,
}

fn limited(state: &AppState, principal: &Principal) -> Result<axum::http::HeaderMap, ApiError> {
    let d = state.limiter.check(
        &format!("credentials:{}", principal.account_id()),
        CREDENTIAL_RULE,
    );
    let mut h = axum::http::HeaderMap::new();
    super::rate_headers(&mut h, &d);
    if !d.allowed {
        let mut e = ApiError::rate_limited(d.reset_after_secs);
        e.message = "Too many attempts. Please try again later.".into();
        return Err(e);
    }
    Ok(h)
}

/// Connection info for SMTP, POP3 and IMAP, and the account's API keys (seed 002).
#[utoipa::path(get, path = "/api/smtp-credentials", tag = "keys", security(("bearer" = [])),
    responses((status = 200, body = CredentialsView), (status = 401, description = "UNAUTHORIZED"), (status = 429, description = "RATE_LIMITED")))]
pub async fn list(
    State(state): State<AppState>,
    Auth(principal): Auth,
) -> Result<Response, ApiError> {
    let headers = limited(&state, &principal)?;
    let keys = state.services.list_api_keys(&principal).await?;
    let c = state.services.config();
    let ep = |port: u16, secure_port: u16, enabled: bool| Endpoint {
        server_name: c.hostname.clone(),
        port,
        secure_port,
        enabled,
    };
    let ports = &state.config.mail_ports;
    let body = CredentialsView {
        connection_info: ConnectionInfo {
            smtp: ep(ports.submission, ports.submissions, true),
            pop3: ep(ports.pop3, ports.pop3s, true),
            imap: ep(ports.imap, ports.imaps, true),
        },
        keys: keys.into_iter().map(|k| KeyView::of(k, None)).collect(),
    };
    Ok((headers, axum::Json(body)).into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyBody {
    pub name: String,
    pub scopes: Vec<String>,
}

/// Create an API key with scopes; the key is in this answer only (`apiKey`).
#[utoipa::path(post, path = "/api/smtp-credentials", tag = "keys", security(("bearer" = [])),
    request_body(content = CreateKeyBody, content_type = "application/json"),
    responses((status = 201, body = KeyView), (status = 422, description = "INVALID_NAME, INVALID_SCOPES"), (status = 429, description = "RATE_LIMITED")))]
pub async fn create(
    State(state): State<AppState>,
    Auth(principal): Auth,
    ApiJson(body): ApiJson<CreateKeyBody>,
) -> Result<Response, ApiError> {
    let headers = limited(&state, &principal)?;
    let (row, secret) = state
        .services
        .create_api_key(&principal, &body.name, &body.scopes, None)
        .await?;
    Ok((
        StatusCode::CREATED,
        headers,
        axum::Json(KeyView::of(row, Some(secret))),
    )
        .into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MobileKeyBody {
    pub name: String,
    pub platform: String,
    pub device_id: String,
}

/// Create a key for a mobile app (smtp, pop3, imap, api:read, api:write).
#[utoipa::path(post, path = "/api/smtp-credentials/mobile", tag = "keys", security(("bearer" = [])),
    request_body(content = MobileKeyBody, content_type = "application/json"),
    responses((status = 201, body = KeyView), (status = 422, description = "validation")))]
pub async fn mobile(
    State(state): State<AppState>,
    Auth(principal): Auth,
    ApiJson(body): ApiJson<MobileKeyBody>,
) -> Result<Response, ApiError> {
    let headers = limited(&state, &principal)?;
    let scopes: Vec<String> = MOBILE_SCOPES.iter().map(|s| (*s).to_owned()).collect();
    let (row, secret) = state
        .services
        .create_api_key(
            &principal,
            &body.name,
            &scopes,
            Some((&body.platform, &body.device_id)),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        headers,
        axum::Json(KeyView::of(row, Some(secret))),
    )
        .into_response())
}

/// Revoke a key: clients using it lose access at once (204).
#[utoipa::path(delete, path = "/api/smtp-credentials/{keyId}", tag = "keys", params(("keyId" = String, Path)), security(("bearer" = [])),
    responses((status = 204, description = "Revoked"), (status = 404, description = "NOT_FOUND")))]
pub async fn delete(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(key_id): Path<String>,
) -> Result<Response, ApiError> {
    let headers = limited(&state, &principal)?;
    state.services.delete_api_key(&principal, &key_id).await?;
    Ok((StatusCode::NO_CONTENT, headers).into_response())
}

/// A new key with the same name and scopes; the old one is revoked in the same step.
#[utoipa::path(post, path = "/api/smtp-credentials/{keyId}/rotate", tag = "keys", params(("keyId" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = KeyView), (status = 404, description = "NOT_FOUND")))]
pub async fn rotate(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(key_id): Path<String>,
) -> Result<Response, ApiError> {
    let headers = limited(&state, &principal)?;
    let (row, secret) = state.services.rotate_api_key(&principal, &key_id).await?;
    Ok((headers, axum::Json(KeyView::of(row, Some(secret)))).into_response())
}

/// `/v1/keys…` serve the same handlers as seed 002's `/api/smtp-credentials…`, under the
/// API's own prefix. These items only describe them in the OpenAPI document (the router
/// mounts `list`, `create`, `delete` and `rotate` at both places), so that SDKs generated
/// from the document know both.
pub(crate) mod v1_doc {
    #[utoipa::path(get, path = "/v1/keys", tag = "keys", security(("bearer" = [])),
        responses((status = 200, description = "as GET /api/smtp-credentials: {keys: [...]}")))]
    #[allow(dead_code)]
    pub fn list_v1() {}

    #[utoipa::path(post, path = "/v1/keys", tag = "keys", security(("bearer" = [])),
        responses((status = 201, description = "as POST /api/smtp-credentials: the key, shown once")))]
    #[allow(dead_code)]
    pub fn create_v1() {}

    #[utoipa::path(delete, path = "/v1/keys/{key_id}", tag = "keys", params(("key_id" = String, Path)),
        security(("bearer" = [])), responses((status = 200, description = "as DELETE /api/smtp-credentials/{keyId}")))]
    #[allow(dead_code)]
    pub fn delete_v1() {}

    #[utoipa::path(post, path = "/v1/keys/{key_id}/rotate", tag = "keys", params(("key_id" = String, Path)),
        security(("bearer" = [])), responses((status = 200, description = "as POST /api/smtp-credentials/{keyId}/rotate: the new key, shown once")))]
    #[allow(dead_code)]
    pub fn rotate_v1() {}
}
