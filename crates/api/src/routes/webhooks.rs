//! `/v1/webhooks` and `/v1/events`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mailroom_core::time::rfc3339;
use mailroom_services::webhooks::WebhookPatch;
use mailroom_store::WebhookRow;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::Envelope;
use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, Auth};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookBody {
    /// `https://…` (plain http only in development).
    pub url: String,
    /// Event types, or `["*"]` for all.
    pub events: Vec<String>,
    /// Only events of these inboxes (default: every inbox of the account).
    #[serde(default)]
    pub inbox_ids: Vec<String>,
    /// Idempotency within the account.
    pub client_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookView {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub inbox_ids: Vec<String>,
    /// `active`, `disabled` or `unhealthy`.
    pub status: String,
    /// The signing secret: only when the webhook is created or its secret rotated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl WebhookView {
    fn of(w: &WebhookRow, secret: Option<String>) -> WebhookView {
        WebhookView {
            id: w.id.clone(),
            url: w.url.clone(),
            events: w.events.clone(),
            inbox_ids: w.inbox_ids.clone(),
            status: w.status.clone(),
            secret,
            created_at: rfc3339(w.created_at),
            updated_at: rfc3339(w.updated_at),
        }
    }
}

/// Register a webhook. The answer holds its signing secret (`whsec_…`).
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", security(("bearer" = [])),
    request_body(content = CreateWebhookBody, content_type = "application/json"),
    responses((status = 201, body = Envelope<WebhookView>), (status = 200, description = "A repeated client_id: the existing webhook"),
        (status = 403, description = "WEBHOOK_LIMIT_REACHED (the tier's max_webhooks, with upgrade_context), WEBHOOKS_REQUIRE_UPGRADE, ACCOUNT_KEY_REQUIRED"),
        (status = 422, description = "INVALID_URL, URL_NOT_ALLOWED, INVALID_EVENTS, INVALID_INBOX_IDS")))]
pub async fn create_webhook(
    State(state): State<AppState>,
    Auth(principal): Auth,
    ApiJson(body): ApiJson<CreateWebhookBody>,
) -> Result<Response, ApiError> {
    let (row, secret, created) = state
        .services
        .create_webhook(
            &principal,
            &body.url,
            &body.events,
            &body.inbox_ids,
            body.client_id,
        )
        .await?;
    let steps = vec![
        "Save secret: verify each delivery's webhook-signature with it (Standard Webhooks)"
            .to_owned(),
        format!("Send a test event with POST /v1/webhooks/{}/test", row.id),
        format!(
            "See delivery attempts with GET /v1/webhooks/{}/deliveries",
            row.id
        ),
    ];
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Envelope::new(WebhookView::of(&row, Some(secret)), steps),
    )
        .into_response())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    pub webhooks: Vec<WebhookView>,
    pub total: usize,
}

/// The account's webhooks.
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks", security(("bearer" = [])),
    responses((status = 200, body = Envelope<WebhookList>)))]
pub async fn list_webhooks(
    State(state): State<AppState>,
    Auth(principal): Auth,
) -> Result<Envelope<WebhookList>, ApiError> {
    let rows = state.services.list_webhooks(&principal).await?;
    Ok(Envelope::new(
        WebhookList {
            total: rows.len(),
            webhooks: rows.iter().map(|w| WebhookView::of(w, None)).collect(),
        },
        vec!["Register one with POST /v1/webhooks".to_owned()],
    ))
}

/// One webhook.
#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Envelope<WebhookView>), (status = 404, description = "NOT_FOUND")))]
pub async fn get_webhook(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> Result<Envelope<WebhookView>, ApiError> {
    let w = state.services.get_webhook(&principal, &id).await?;
    let mut steps = Vec::new();
    if w.status != "active" {
        steps.push(format!(
            "Turn it back on with PATCH /v1/webhooks/{id} {{\"status\": \"active\"}}"
        ));
    }
    steps.push(format!(
        "See delivery attempts with GET /v1/webhooks/{id}/deliveries"
    ));
    Ok(Envelope::new(WebhookView::of(&w, None), steps))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchWebhookBody {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub inbox_ids: Option<Vec<String>>,
    /// `active` (also to revive a disabled or unhealthy endpoint) or `disabled`.
    pub status: Option<String>,
}

/// Change a webhook's URL, events, inboxes or status.
#[utoipa::path(patch, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)), security(("bearer" = [])),
    request_body(content = PatchWebhookBody, content_type = "application/json"),
    responses((status = 200, body = Envelope<WebhookView>), (status = 404, description = "NOT_FOUND"), (status = 422, description = "validation")))]
pub async fn patch_webhook(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<PatchWebhookBody>,
) -> Result<Envelope<WebhookView>, ApiError> {
    let patch = WebhookPatch {
        url: body.url,
        events: body.events,
        inbox_ids: body.inbox_ids,
        status: body.status,
    };
    let w = state
        .services
        .update_webhook(&principal, &id, &patch)
        .await?;
    Ok(Envelope::new(
        WebhookView::of(&w, None),
        vec![format!("Check it with POST /v1/webhooks/{id}/test")],
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookDeleted {
    pub id: String,
    pub deleted: bool,
}

/// Delete a webhook; pending deliveries to it are dropped.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Envelope<WebhookDeleted>), (status = 404, description = "NOT_FOUND")))]
pub async fn delete_webhook(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> Result<Envelope<WebhookDeleted>, ApiError> {
    state.services.delete_webhook(&principal, &id).await?;
    Ok(Envelope::new(
        WebhookDeleted { id, deleted: true },
        vec!["Register another with POST /v1/webhooks".to_owned()],
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Queued {
    pub id: String,
    pub queued: bool,
}

/// Send a `webhook.test` event to this webhook.
#[utoipa::path(post, path = "/v1/webhooks/{id}/test", tag = "webhooks", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 202, body = Envelope<Queued>), (status = 404, description = "NOT_FOUND")))]
pub async fn test_webhook(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    state.services.test_webhook(&principal, &id).await?;
    let steps = vec![format!(
        "Watch the attempt with GET /v1/webhooks/{id}/deliveries"
    )];
    Ok((
        StatusCode::ACCEPTED,
        Envelope::new(Queued { id, queued: true }, steps),
    )
        .into_response())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SecretRotated {
    pub id: String,
    pub secret: String,
    /// Until then deliveries are signed with both the new and the previous secret.
    pub previous_secret_valid_until: Option<String>,
}

/// A new signing secret; the previous one keeps signing (alongside) for 24 hours.
#[utoipa::path(post, path = "/v1/webhooks/{id}/rotate-secret", tag = "webhooks", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Envelope<SecretRotated>), (status = 404, description = "NOT_FOUND")))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> Result<Envelope<SecretRotated>, ApiError> {
    let (w, secret) = state
        .services
        .rotate_webhook_secret(&principal, &id)
        .await?;
    Ok(Envelope::new(
        SecretRotated {
            id: w.id,
            secret,
            previous_secret_valid_until: w.previous_expires_at.map(rfc3339),
        },
        vec!["Deploy the new secret to the receiver within 24 hours".to_owned()],
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptView {
    pub delivery_id: String,
    pub event_id: String,
    /// The delivery's state: `pending`, `delivered` or `failed`.
    pub delivery_status: String,
    pub attempted_at: String,
    pub status_code: Option<i64>,
    pub latency_ms: i64,
    pub error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptList {
    pub attempts: Vec<AttemptView>,
}

/// The latest delivery attempts (newest first, up to 100).
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks", params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Envelope<AttemptList>), (status = 404, description = "NOT_FOUND")))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> Result<Envelope<AttemptList>, ApiError> {
    let rows = state
        .services
        .webhook_attempts(&principal, &id, 100)
        .await?;
    Ok(Envelope::new(
        AttemptList {
            attempts: rows
                .into_iter()
                .map(|a| AttemptView {
                    delivery_id: a.delivery_id,
                    event_id: a.event_id,
                    delivery_status: a.delivery_status,
                    attempted_at: rfc3339(a.attempted_at),
                    status_code: a.status_code,
                    latency_ms: a.latency_ms,
                    error: a.error,
                })
                .collect(),
        },
        vec![format!(
            "Send a delivery again with POST /v1/webhooks/{id}/deliveries/{{delivery_id}}/replay"
        )],
    ))
}

/// Deliver an event again now (same `webhook-id`).
#[utoipa::path(post, path = "/v1/webhooks/{id}/deliveries/{did}/replay", tag = "webhooks",
    params(("id" = String, Path), ("did" = String, Path)), security(("bearer" = [])),
    responses((status = 202, body = Envelope<Queued>), (status = 404, description = "NOT_FOUND")))]
pub async fn replay_delivery(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path((id, did)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    state
        .services
        .replay_delivery(&principal, &id, &did)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Envelope::new(
            Queued {
                id: did,
                queued: true,
            },
            vec![format!("Watch it with GET /v1/webhooks/{id}/deliveries")],
        ),
    )
        .into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventsParams {
    /// Events after this event id.
    pub after: Option<String>,
    /// 1–500, default 100.
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub timestamp: String,
    pub inbox_id: Option<String>,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventList {
    pub events: Vec<EventView>,
}

/// The account's events, oldest first, resumable with `after`.
#[utoipa::path(get, path = "/v1/events", tag = "webhooks", params(EventsParams), security(("bearer" = [])),
    responses((status = 200, body = Envelope<EventList>), (status = 422, description = "INVALID_AFTER")))]
pub async fn list_events(
    State(state): State<AppState>,
    Auth(principal): Auth,
    ApiQuery(p): ApiQuery<EventsParams>,
) -> Result<Envelope<EventList>, ApiError> {
    let limit = p.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_query(
            "limit",
            "limit must be between 1 and 500",
        ));
    }
    let rows = state
        .services
        .account_events(&principal, p.after.as_deref(), limit)
        .await?;
    let next = rows
        .last()
        .map(|e| format!("More: GET /v1/events?after={}", e.id));
    Ok(Envelope::new(
        EventList {
            events: rows
                .into_iter()
                .map(|e| EventView {
                    id: e.id,
                    event_type: e.event_type,
                    timestamp: rfc3339(e.created_at),
                    inbox_id: e.inbox_id,
                    data: e.data,
                })
                .collect(),
        },
        next.into_iter().collect(),
    ))
}
