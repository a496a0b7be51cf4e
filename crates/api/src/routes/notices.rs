//! `POST /v1/notify-operator`, `GET /v1/account/notices`,
//! `POST /v1/account/notices/{id}/resolve` (issue #14, "Telling the operator").

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mailroom_core::time::rfc3339;
use mailroom_services::NoticeRequest;
use mailroom_store::NoticeRow;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::Envelope;
use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, Auth};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotifyOperatorBody {
    /// What the operator should know or do: 1–2000 characters.
    #[schema(example = "I need the domain example.com verified to send from it")]
    pub issue: String,
    /// Details for the operator: a JSON object of at most 8 KiB.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub context: Option<serde_json::Value>,
    /// The label of the operator's action (1–200 characters).
    #[serde(default)]
    pub action_label: Option<String>,
}

/// What to tell the operator, in the shape of `upgrade_context`.
#[derive(Debug, Serialize, ToSchema)]
pub struct NoticeCreatedView {
    pub notice_id: String,
    pub operator_action_url: String,
    pub operator_action_label: String,
    pub agent_script: String,
}

/// Leave a notice for the operator (any key of the account; a scoped key needs
/// `api:write`). It is stored until the operator resolves it and announced with an
/// `operator.notified` event (webhooks, event streams).
#[utoipa::path(
    post, path = "/v1/notify-operator", tag = "account",
    request_body(content = NotifyOperatorBody, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 201, body = Envelope<NoticeCreatedView>),
        (status = 401, description = "UNAUTHORIZED"),
        (status = 403, description = "OPEN_NOTICES_LIMIT (100 open notices) or SCOPE_REQUIRED"),
        (status = 422, description = "INVALID_ISSUE, INVALID_CONTEXT, INVALID_ACTION_LABEL or VALIDATION_ERROR, with field"),
    )
)]
pub async fn notify_operator(
    State(state): State<AppState>,
    Auth(principal): Auth,
    ApiJson(body): ApiJson<NotifyOperatorBody>,
) -> Result<Response, ApiError> {
    let req = NoticeRequest {
        issue: body.issue,
        context: body.context,
        action_label: body.action_label,
    };
    let n = state.services.notify_operator(&principal, req).await?;
    let steps = vec![
        n.agent_script.clone(),
        "Your operator sees it in GET /v1/account/notices and resolves it there".to_owned(),
    ];
    let view = NoticeCreatedView {
        notice_id: n.notice_id,
        operator_action_url: n.operator_action_url,
        operator_action_label: n.operator_action_label,
        agent_script: n.agent_script,
    };
    Ok((StatusCode::CREATED, Envelope::new(view, steps)).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct NoticesParams {
    /// `true` to include resolved notices (default: open ones only).
    pub all: Option<bool>,
    /// 1–500, default 100.
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NoticeView {
    pub id: String,
    pub inbox_id: Option<String>,
    pub issue: String,
    #[schema(value_type = Option<Object>)]
    pub context: Option<serde_json::Value>,
    pub action_label: Option<String>,
    pub created_at: String,
    /// `null` while the notice is open.
    pub resolved_at: Option<String>,
}

impl From<NoticeRow> for NoticeView {
    fn from(n: NoticeRow) -> Self {
        NoticeView {
            id: n.id,
            inbox_id: n.inbox_id,
            issue: n.issue,
            context: n.context,
            action_label: n.action_label,
            created_at: rfc3339(n.created_at),
            resolved_at: n.resolved_at.map(rfc3339),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NoticeList {
    pub notices: Vec<NoticeView>,
}

/// The account's notices from its agents, newest first (account key or an owner).
#[utoipa::path(
    get, path = "/v1/account/notices", tag = "account", params(NoticesParams),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Envelope<NoticeList>),
        (status = 401, description = "UNAUTHORIZED"),
        (status = 403, description = "ACCOUNT_KEY_REQUIRED or OWNER_REQUIRED"),
    )
)]
pub async fn list_notices(
    State(state): State<AppState>,
    Auth(principal): Auth,
    ApiQuery(p): ApiQuery<NoticesParams>,
) -> Result<Envelope<NoticeList>, ApiError> {
    let limit = p.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_query(
            "limit",
            "limit must be between 1 and 500",
        ));
    }
    let rows = state
        .services
        .list_notices(&principal, p.all.unwrap_or(false), limit)
        .await?;
    let mut steps = Vec::new();
    if let Some(open) = rows.iter().find(|n| n.resolved_at.is_none()) {
        steps.push(format!(
            "When handled, resolve a notice with POST /v1/account/notices/{}/resolve",
            open.id
        ));
    }
    steps.push("Include resolved notices with ?all=true".to_owned());
    Ok(Envelope::new(
        NoticeList {
            notices: rows.into_iter().map(NoticeView::from).collect(),
        },
        steps,
    ))
}

/// Mark a notice resolved (account key or an owner). Resolving it again changes nothing.
#[utoipa::path(
    post, path = "/v1/account/notices/{id}/resolve", tag = "account",
    params(("id" = String, Path)),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Envelope<NoticeView>),
        (status = 401, description = "UNAUTHORIZED"),
        (status = 403, description = "ACCOUNT_KEY_REQUIRED or OWNER_REQUIRED"),
        (status = 404, description = "NOT_FOUND (also another account's notice)"),
    )
)]
pub async fn resolve_notice(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> Result<Envelope<NoticeView>, ApiError> {
    let row = state.services.resolve_notice(&principal, &id).await?;
    Ok(Envelope::new(
        row.into(),
        vec!["See what is still open with GET /v1/account/notices".to_owned()],
    ))
}
