//! Custom domains (`/v1/domains…`) and seed 001's domain SMTP credentials
//! (`/api/domains/{domain}/credentials`, with the seed's `{success, message, …}` bodies).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mailroom_services::domains::DomainView;
use mailroom_services::{Principal, RateRule, ServiceError};
use mailroom_store::CredentialRow;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::Envelope;
use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, Auth, OptionalAuth, parse_json};

/// Seed 001's credential routes are stricter than the rest: per account, per minute.
const CREDENTIAL_RULE: RateRule = RateRule::per_minute(60);

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddDomainBody {
    /// The domain, like `example.com`.
    pub domain: String,
}

fn domain_steps(d: &DomainView) -> Vec<String> {
    if d.verified {
        vec![
            format!(
                "Create inboxes on it: POST /v1/inboxes {{\"username\": \"…\", \"domain\": \"{}\"}}",
                d.domain
            ),
            format!(
                "SMTP credentials for it: POST /api/domains/{}/credentials {{\"username\": \"…\"}}",
                d.domain
            ),
        ]
    } else {
        vec![format!(
            "Publish the records (or GET /v1/domains/{}/zone-file), then POST /v1/domains/{}/verify",
            d.domain, d.domain
        )]
    }
}

/// Add a custom domain (paid tiers): its DKIM key is made, and the answer lists the DNS
/// records to publish.
#[utoipa::path(post, path = "/v1/domains", tag = "domains", security(("bearer" = [])),
    request_body = AddDomainBody,
    responses((status = 201, description = "The domain and its records"),
        (status = 403, description = "DOMAINS_REQUIRE_PAID, DOMAIN_LIMIT_REACHED (with upgrade_context)"),
        (status = 409, description = "DOMAIN_TAKEN"), (status = 422, description = "INVALID_DOMAIN")))]
pub async fn add_domain(
    State(state): State<AppState>,
    Auth(principal): Auth,
    ApiJson(body): ApiJson<AddDomainBody>,
) -> Result<Response, ApiError> {
    let d = state.services.add_domain(&principal, &body.domain).await?;
    let steps = domain_steps(&d);
    Ok((StatusCode::CREATED, Envelope::new(d, steps)).into_response())
}

/// The account's domains.
#[utoipa::path(get, path = "/v1/domains", tag = "domains", security(("bearer" = [])),
    responses((status = 200, description = "{domains: [...]}")))]
pub async fn list_domains(
    State(state): State<AppState>,
    Auth(principal): Auth,
) -> Result<Envelope<Value>, ApiError> {
    let list = state.services.list_domains(&principal).await?;
    Ok(Envelope::new(
        json!({ "domains": list }),
        vec!["Add one with POST /v1/domains {\"domain\": \"example.com\"}".into()],
    ))
}

/// One domain with the status of each record.
#[utoipa::path(get, path = "/v1/domains/{domain}", tag = "domains", security(("bearer" = [])),
    params(("domain" = String, Path)),
    responses((status = 200, description = "The domain"), (status = 404, description = "NOT_FOUND")))]
pub async fn get_domain(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(domain): Path<String>,
) -> Result<Envelope<DomainView>, ApiError> {
    let d = state.services.get_domain(&principal, &domain).await?;
    let steps = domain_steps(&d);
    Ok(Envelope::new(d, steps))
}

/// Look the records up now; the domain is verified once MX, SPF and DKIM are found.
#[utoipa::path(post, path = "/v1/domains/{domain}/verify", tag = "domains", security(("bearer" = [])),
    params(("domain" = String, Path)),
    responses((status = 200, description = "The domain after the check"), (status = 404, description = "NOT_FOUND")))]
pub async fn verify_domain(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(domain): Path<String>,
) -> Result<Envelope<DomainView>, ApiError> {
    let d = state.services.verify_domain(&principal, &domain).await?;
    let steps = domain_steps(&d);
    Ok(Envelope::new(d, steps))
}

/// Delete a domain (refused while inboxes use it).
#[utoipa::path(delete, path = "/v1/domains/{domain}", tag = "domains", security(("bearer" = [])),
    params(("domain" = String, Path)),
    responses((status = 204), (status = 404, description = "NOT_FOUND"), (status = 409, description = "DOMAIN_IN_USE")))]
pub async fn delete_domain(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(domain): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.services.delete_domain(&principal, &domain).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The records in zone-file syntax (`text/plain`).
#[utoipa::path(get, path = "/v1/domains/{domain}/zone-file", tag = "domains", security(("bearer" = [])),
    params(("domain" = String, Path)),
    responses((status = 200, content_type = "text/plain", description = "Zone-file lines"), (status = 404, description = "NOT_FOUND")))]
pub async fn zone_file(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(domain): Path<String>,
) -> Result<Response, ApiError> {
    let text = state.services.zone_file(&principal, &domain).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

// ---- Seed 001 ----

fn seed(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

/// A service refusal in seed 001's shape.
fn seed_error(e: ServiceError) -> Response {
    match e {
        ServiceError::Unauthenticated(_) => seed(
            StatusCode::UNAUTHORIZED,
            json!({"success": false, "message": "Unauthorized"}),
        ),
        ServiceError::NotFound { what } => seed(
            StatusCode::NOT_FOUND,
            json!({"success": false, "message": format!("{} not found", capitalize(what))}),
        ),
        ServiceError::Invalid { field, message, .. } => seed(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"success": false, "message": "Validation failed.", "errors": {field: [message]}}),
        ),
        ServiceError::Forbidden { message, .. } | ServiceError::TierLimit { message, .. } => seed(
            StatusCode::FORBIDDEN,
            json!({"success": false, "message": message}),
        ),
        ServiceError::Conflict { message, .. } => seed(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"success": false, "message": "Validation failed.", "errors": {"username": [message]}}),
        ),
        ServiceError::Busy { message, .. } => seed(
            StatusCode::TOO_MANY_REQUESTS,
            json!({"success": false, "message": message}),
        ),
        ServiceError::Store(e) => {
            tracing::error!(error = %e, "domain credential request failed");
            seed(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"success": false, "message": "An error occurred while processing the request."}),
            )
        }
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

#[allow(clippy::result_large_err)] // The error is the answer, built once per request.
/// Authenticates in seed 001's terms (401 `{success: false, message: "Unauthorized"}`) and
/// applies the credential routes' rate limit, returning its headers.
fn seed_auth(
    state: &AppState,
    auth: Result<OptionalAuth, ApiError>,
) -> Result<(Principal, HeaderMap), Response> {
    let unauthorized = || {
        seed(
            StatusCode::UNAUTHORIZED,
            json!({"success": false, "message": "Unauthorized"}),
        )
    };
    let principal = match auth {
        Ok(OptionalAuth(Some(p))) => p,
        _ => return Err(unauthorized()),
    };
    let d = state.limiter.check(
        &format!("domain-credentials:{}", principal.account_id()),
        CREDENTIAL_RULE,
    );
    let mut h = HeaderMap::new();
    super::rate_headers(&mut h, &d);
    if !d.allowed {
        h.insert(header::RETRY_AFTER, HeaderValue::from(d.reset_after_secs));
        let mut resp = seed(
            StatusCode::TOO_MANY_REQUESTS,
            json!({"success": false, "message": "Too many attempts. Please try again later."}),
        );
        resp.headers_mut().extend(h);
        return Err(resp);
    }
    Ok((principal, h))
}

fn credential_json(c: &CredentialRow, password: Option<&str>) -> Value {
    let mut v = json!({
        "id": c.id,
        "user_smtp_guid": c.guid,
        "username": c.username,
        "created_at": c.created_at / 1000,
        "modified_at": c.modified_at / 1000,
        "remote_synced": true,
    });
    if let Some(p) = password {
        v["password"] = json!(p);
    }
    v
}

fn with_headers(mut resp: Response, h: HeaderMap) -> Response {
    resp.headers_mut().extend(h);
    resp
}

/// Seed 001: create an SMTP credential for a verified domain of the caller. It logs in to
/// submission as `username@domain`; the password is shown only in this answer.
#[utoipa::path(post, path = "/api/domains/{domain}/credentials", tag = "domains", security(("bearer" = [])),
    params(("domain" = String, Path)),
    responses((status = 201, description = "{success, message, data: {credential: {id, user_smtp_guid, username, created_at, modified_at, password, remote_synced}}}"),
        (status = 401, description = "{success: false, message: \"Unauthorized\"}"),
        (status = 404, description = "{success: false, message}"),
        (status = 422, description = "{success: false, message: \"Validation failed.\", errors}"),
        (status = 429, description = "Too many attempts; Retry-After")))]
pub async fn create_credential(
    State(state): State<AppState>,
    auth: Result<OptionalAuth, ApiError>,
    Path(domain): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let (principal, h) = match seed_auth(&state, auth) {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    #[derive(Deserialize)]
    struct Body {
        username: Option<String>,
    }
    let username = match parse_json::<Body>(if body.is_empty() { b"{}" } else { &body }) {
        Ok(Body { username: Some(u) }) => u,
        Ok(Body { username: None }) => {
            return with_headers(
                seed(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({"success": false, "message": "Validation failed.", "errors": {"username": ["The username field is required."]}}),
                ),
                h,
            );
        }
        Err(e) => {
            return with_headers(
                seed(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({"success": false, "message": "Validation failed.", "errors": {"username": [e.message]}}),
                ),
                h,
            );
        }
    };
    let resp = match state
        .services
        .create_credential(&principal, &domain, &username)
        .await
    {
        Ok(c) => seed(
            StatusCode::CREATED,
            json!({
                "success": true,
                "message": "Credential created successfully.",
                "data": {"credential": credential_json(&c.row, Some(&c.password))},
            }),
        ),
        Err(e) => seed_error(e),
    };
    with_headers(resp, h)
}

/// Seed 001: the domain's credentials (without passwords).
#[utoipa::path(get, path = "/api/domains/{domain}/credentials", tag = "domains", security(("bearer" = [])),
    params(("domain" = String, Path)),
    responses((status = 200, description = "{success, message, data: {credentials: [...]}}")))]
pub async fn list_credentials(
    State(state): State<AppState>,
    auth: Result<OptionalAuth, ApiError>,
    Path(domain): Path<String>,
) -> Response {
    let (principal, h) = match seed_auth(&state, auth) {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let resp = match state.services.list_credentials(&principal, &domain).await {
        Ok(list) => seed(
            StatusCode::OK,
            json!({
                "success": true,
                "message": "Credentials retrieved successfully.",
                "data": {"credentials": list.iter().map(|c| credential_json(c, None)).collect::<Vec<_>>()},
            }),
        ),
        Err(e) => seed_error(e),
    };
    with_headers(resp, h)
}

/// Seed 001: delete a credential; it stops logging in at once.
#[utoipa::path(delete, path = "/api/domains/{domain}/credentials/{guid}", tag = "domains", security(("bearer" = [])),
    params(("domain" = String, Path), ("guid" = String, Path)),
    responses((status = 200, description = "{success: true, message}"), (status = 404, description = "Credential not found")))]
pub async fn delete_credential(
    State(state): State<AppState>,
    auth: Result<OptionalAuth, ApiError>,
    Path((domain, guid)): Path<(String, String)>,
) -> Response {
    let (principal, h) = match seed_auth(&state, auth) {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let resp = match state
        .services
        .delete_credential(&principal, &domain, &guid)
        .await
    {
        Ok(()) => seed(
            StatusCode::OK,
            json!({"success": true, "message": "Credential deleted successfully."}),
        ),
        Err(e) => seed_error(e),
    };
    with_headers(resp, h)
}
