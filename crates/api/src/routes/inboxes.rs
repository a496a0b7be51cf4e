//! `/v1/inboxes`: seed 003's tenancy API.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mailroom_core::Tier;
use mailroom_core::time::rfc3339;
use mailroom_services::{CreateInbox, Principal};
use mailroom_store::InboxRow;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::Envelope;
use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, Auth, ClientIp, OptionalAuth};

/// `POST /v1/inboxes` body. Every field is optional.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInboxBody {
    /// The local part of the address (`platform-admin` → `platform-admin@<domain>`):
    /// 1–64 of `a-z 0-9 . - _`, starting and ending with a letter or digit. Omit it for a
    /// random `agent-…` name.
    #[schema(example = "platform-admin")]
    pub username: Option<String>,
    /// Makes the call idempotent within an account: a repeat with the same `client_id`
    /// returns the inbox created the first time (200) instead of a second one.
    #[schema(example = "bootstrap-001")]
    pub client_id: Option<String>,
    /// The mail domain; the server's default domain when omitted.
    pub domain: Option<String>,
}

/// The created inbox, with its keys (shown once).
#[derive(Debug, Serialize, ToSchema)]
pub struct InboxCreated {
    #[schema(example = "inbox_abc123")]
    pub id: String,
    #[schema(example = "acc_xyz789")]
    pub account_id: String,
    pub username: String,
    pub email: String,
    /// The inbox key. `null` when a repeated `client_id` returned an existing inbox: the
    /// key was shown when it was created (rotate it if it was lost).
    pub inbox_api_key: Option<String>,
    /// Only when this call created the account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_api_key: Option<String>,
    #[schema(value_type = String, example = "free")]
    pub tier: Tier,
    pub created_at: String,
}

/// One inbox as lists show it.
#[derive(Debug, Serialize, ToSchema)]
pub struct InboxSummary {
    pub id: String,
    pub email: String,
    #[schema(example = "active")]
    pub status: String,
    pub created_at: String,
}

/// One inbox in full.
#[derive(Debug, Serialize, ToSchema)]
pub struct InboxView {
    pub id: String,
    pub account_id: String,
    pub username: String,
    pub email: String,
    pub status: String,
    pub client_id: Option<String>,
    pub created_at: String,
    /// `GET /v1/inboxes/{id}` only: `{used_bytes, limit_bytes}` of this inbox (`limit_bytes`
    /// null: unlimited). The account's total is in `GET /v1/account`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub storage: Option<mailroom_services::StorageMeter>,
}

impl From<&InboxRow> for InboxView {
    fn from(r: &InboxRow) -> Self {
        InboxView {
            id: r.id.clone(),
            account_id: r.account_id.clone(),
            username: r.username.clone(),
            email: r.email.clone(),
            status: r.status.clone(),
            client_id: r.client_id.clone(),
            created_at: rfc3339(r.created_at),
            storage: None,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InboxList {
    pub inboxes: Vec<InboxSummary>,
    pub total: u64,
    pub limit: u32,
    pub offset: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InboxDeleted {
    pub id: String,
    pub email: String,
    pub deleted: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyRotated {
    pub id: String,
    pub email: String,
    /// The new inbox key (shown once). The old one no longer works.
    pub inbox_api_key: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct Page {
    /// 1–100, default 50.
    pub limit: Option<u32>,
    /// Default 0.
    pub offset: Option<u64>,
}

pub const MAX_PAGE: u32 = 100;
pub const DEFAULT_PAGE: u32 = 50;

impl Page {
    pub fn resolve(&self) -> Result<(u32, u64), ApiError> {
        let limit = self.limit.unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(ApiError::bad_query(
                "limit",
                format!("limit must be between 1 and {MAX_PAGE}"),
            ));
        }
        Ok((limit, self.offset.unwrap_or(0)))
    }
}

/// Create an inbox. Without a key: a new account (free tier) and its first inbox; the
/// answer holds the account key, shown only this once. With the account key: another
/// inbox in that account.
#[utoipa::path(
    post, path = "/v1/inboxes", tag = "inboxes",
    request_body(content = CreateInboxBody, content_type = "application/json"),
    security((), ("bearer" = [])),
    responses(
        (status = 201, description = "Inbox (and account) created", body = Envelope<InboxCreated>),
        (status = 200, description = "A repeated client_id: the existing inbox", body = Envelope<InboxCreated>),
        (status = 403, description = "INBOX_LIMIT_REACHED (with upgrade_context) or ACCOUNT_KEY_REQUIRED"),
        (status = 409, description = "USERNAME_TAKEN"),
        (status = 422, description = "INVALID_USERNAME, INVALID_CLIENT_ID, DOMAIN_NOT_AVAILABLE, VALIDATION_ERROR"),
        (status = 429, description = "RATE_LIMITED (unauthenticated creations per IP)"),
    )
)]
pub async fn create_inbox(
    State(state): State<AppState>,
    OptionalAuth(principal): OptionalAuth,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<CreateInboxBody>,
) -> Result<Response, Response> {
    let decision = match &principal {
        None => {
            let d = state.limiter.check(
                &format!("inbox-create:ip:{ip}"),
                state.config.inbox_create_rule,
            );
            if !d.allowed {
                let mut resp = ApiError::rate_limited(d.reset_after_secs).into_response();
                super::rate_headers(resp.headers_mut(), &d);
                return Err(resp);
            }
            Some(d)
        }
        Some(_) => None,
    };
    let req = CreateInbox {
        username: body.username,
        client_id: body.client_id,
        domain: body.domain,
    };
    let result = state.services.create_inbox(principal.as_ref(), &req).await;
    let mut resp = match result {
        Ok(created) => {
            let email = created.inbox.email.clone();
            let id = created.inbox.id.clone();
            let mut steps = Vec::new();
            if created.account_api_key.is_some() {
                steps.push("Save account_api_key securely — it's only returned once".to_owned());
                steps.push("Use account_api_key to create additional inboxes".to_owned());
                steps.push("Use inbox_api_key to access this specific inbox".to_owned());
            } else if created.created {
                steps.push("Save inbox_api_key securely — it's only returned once".to_owned());
                steps.push(format!(
                    "Give inbox_api_key to the agent that uses {email}; it reaches only this inbox"
                ));
                steps.push("List all inboxes with GET /v1/inboxes".to_owned());
            } else {
                steps.push(format!(
                    "An inbox with this client_id already exists ({email}); nothing new was created"
                ));
                steps.push(format!(
                    "Its key was shown when it was created; if it is lost, POST /v1/inboxes/{id}/rotate-key"
                ));
            }
            steps.push(format!("Mail sent to {email} arrives in this inbox"));
            let status = if created.created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            let body = InboxCreated {
                id,
                account_id: created.inbox.account_id.clone(),
                username: created.inbox.username.clone(),
                email,
                inbox_api_key: created.inbox_api_key,
                account_api_key: created.account_api_key,
                tier: created.tier,
                created_at: rfc3339(created.inbox.created_at),
            };
            (status, Envelope::new(body, steps)).into_response()
        }
        Err(e) => ApiError::from(e).into_response(),
    };
    if let Some(d) = decision {
        super::rate_headers(resp.headers_mut(), &d);
    }
    Ok(resp)
}

/// List the account's inboxes (account key), oldest first.
#[utoipa::path(
    get, path = "/v1/inboxes", tag = "inboxes", params(Page),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Envelope<InboxList>),
        (status = 400, description = "INVALID_QUERY"),
        (status = 401, description = "UNAUTHORIZED"),
        (status = 403, description = "ACCOUNT_KEY_REQUIRED"),
    )
)]
pub async fn list_inboxes(
    State(state): State<AppState>,
    Auth(principal): Auth,
    ApiQuery(page): ApiQuery<Page>,
) -> Result<Envelope<InboxList>, ApiError> {
    let (limit, offset) = page.resolve()?;
    let (rows, total) = state
        .services
        .list_inboxes(&principal, limit, offset)
        .await?;
    let mut steps = vec!["Get one inbox with GET /v1/inboxes/{id}".to_owned()];
    if offset + u64::from(limit) < total {
        steps.push(format!(
            "More inboxes: GET /v1/inboxes?limit={limit}&offset={}",
            offset + u64::from(limit)
        ));
    }
    steps.push("Create another inbox with POST /v1/inboxes".to_owned());
    Ok(Envelope::new(
        InboxList {
            inboxes: rows
                .iter()
                .map(|r| InboxSummary {
                    id: r.id.clone(),
                    email: r.email.clone(),
                    status: r.status.clone(),
                    created_at: rfc3339(r.created_at),
                })
                .collect(),
            total,
            limit,
            offset,
        },
        steps,
    ))
}

fn inbox_steps(principal: &Principal, id: &str) -> Vec<String> {
    let mut steps = vec![format!(
        "Replace this inbox's key with POST /v1/inboxes/{id}/rotate-key"
    )];
    if principal.is_account_manager() {
        steps.push(format!("Delete it with DELETE /v1/inboxes/{id}"));
    }
    steps.push("See what this key may do with GET /v1/capabilities".to_owned());
    steps
}

/// Get one inbox (account key, or the inbox's own key).
#[utoipa::path(
    get, path = "/v1/inboxes/{id}", tag = "inboxes",
    params(("id" = String, Path, description = "inbox id (inbox_…)")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Envelope<InboxView>),
        (status = 401, description = "UNAUTHORIZED"),
        (status = 404, description = "NOT_FOUND (also for other tenants' inboxes)"),
    )
)]
pub async fn get_inbox(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> Result<Envelope<InboxView>, ApiError> {
    let inbox = state.services.get_inbox(&principal, &id).await?;
    let storage = state.services.storage_report(&inbox.id).await?;
    Ok(Envelope::new(
        InboxView {
            storage: Some(storage.inbox),
            ..InboxView::from(&inbox)
        },
        inbox_steps(&principal, &inbox.id),
    ))
}

/// Delete an inbox and its keys.
#[utoipa::path(
    delete, path = "/v1/inboxes/{id}", tag = "inboxes",
    params(("id" = String, Path, description = "inbox id (inbox_…)")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Envelope<InboxDeleted>),
        (status = 401, description = "UNAUTHORIZED"),
        (status = 404, description = "NOT_FOUND"),
    )
)]
pub async fn delete_inbox(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> Result<Envelope<InboxDeleted>, ApiError> {
    let inbox = state.services.delete_inbox(&principal, &id).await?;
    let steps = vec![
        format!(
            "{} no longer receives mail and its key no longer works",
            inbox.email
        ),
        "Create another inbox with POST /v1/inboxes".to_owned(),
    ];
    Ok(Envelope::new(
        InboxDeleted {
            id: inbox.id,
            email: inbox.email,
            deleted: true,
        },
        steps,
    ))
}

/// Replace an inbox's key. The old key stops working at once; other inboxes are untouched.
#[utoipa::path(
    post, path = "/v1/inboxes/{id}/rotate-key", tag = "inboxes",
    params(("id" = String, Path, description = "inbox id (inbox_…)")),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Envelope<KeyRotated>),
        (status = 401, description = "UNAUTHORIZED"),
        (status = 404, description = "NOT_FOUND"),
    )
)]
pub async fn rotate_key(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> Result<Envelope<KeyRotated>, ApiError> {
    let (inbox, key) = state.services.rotate_inbox_key(&principal, &id).await?;
    let steps = vec![
        "Save inbox_api_key securely — it's only returned once".to_owned(),
        "The previous key no longer works; update every agent and mail client that used it"
            .to_owned(),
    ];
    Ok(Envelope::new(
        KeyRotated {
            id: inbox.id,
            email: inbox.email,
            inbox_api_key: key,
        },
        steps,
    ))
}
