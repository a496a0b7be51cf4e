//! `/v1/inboxes/{id}/messages` and `/threads`: reading and organising received mail.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use mailroom_core::time::rfc3339;
use mailroom_services::{
    CursorStep, Deleted, ListFilter, MAX_WAIT, MessagePatch, MessageView, ServiceError, Wait,
};
use mailroom_store::{MessageQuery, MessageRow};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::Envelope;
use super::inboxes::{DEFAULT_PAGE, MAX_PAGE};
use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, Auth, AuthSession};

/// One message as lists show it.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageSummary {
    pub id: String,
    pub thread_id: String,
    pub mailbox: String,
    pub from: Option<String>,
    pub subject: Option<String>,
    pub received_at: String,
    pub size: i64,
    pub read: bool,
    pub labels: Vec<String>,
}

impl From<&MessageRow> for MessageSummary {
    fn from(r: &MessageRow) -> Self {
        MessageSummary {
            id: r.id.clone(),
            thread_id: r.thread_id.clone(),
            mailbox: r.mailbox.clone(),
            from: r.from_addr.clone(),
            subject: r.subject.clone(),
            received_at: rfc3339(r.internal_date),
            size: r.size,
            read: r.is_read(),
            labels: r.labels.clone(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MessageList {
    pub messages: Vec<MessageSummary>,
    pub total: u64,
    pub limit: u32,
    pub offset: u64,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct MessageParams {
    /// `true`: only unread; `false`: only read.
    pub unread: Option<bool>,
    /// Sender address contains this (case-insensitive).
    pub from: Option<String>,
    /// Subject contains this (case-insensitive).
    pub subject: Option<String>,
    /// Has this label.
    pub label: Option<String>,
    /// Received at or after this time (RFC 3339, or Unix seconds).
    pub since: Option<String>,
    /// Only messages that arrived after this message id (for polling).
    pub after: Option<String>,
    /// Seconds (at most 60) to hold the request open until a matching message arrives.
    pub wait: Option<u64>,
    /// INBOX (default), Sent, Drafts, Trash, Junk, Archive; `all` for every mailbox.
    pub mailbox: Option<String>,
    pub limit: Option<u32>,
    pub offset: Option<u64>,
}

fn parse_since(s: &str) -> Result<i64, ApiError> {
    if let Ok(secs) = s.parse::<i64>() {
        return Ok(secs.saturating_mul(1000));
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|d| d.timestamp_millis())
        .map_err(|_| ApiError::bad_query("since", "since must be an RFC 3339 time or Unix seconds"))
}

/// List messages, newest first; `wait` turns the call into a long poll.
#[utoipa::path(get, path = "/v1/inboxes/{id}/messages", tag = "messages",
    params(("id" = String, Path), MessageParams), security(("bearer" = [])),
    responses((status = 200, body = Envelope<MessageList>), (status = 400, description = "INVALID_QUERY"),
        (status = 404, description = "NOT_FOUND"), (status = 422, description = "INVALID_AFTER, INVALID_MAILBOX"),
        (status = 401, description = "UNAUTHORIZED; with wait=, also when the key is revoked or rotated, its inbox deleted or its user disabled or deleted while the poll waits (answered within 2 s)"),
        (status = 429, description = "TOO_MANY_STREAMS (with wait=): the key or account has its share of streams and long polls open (Retry-After), or a lowered tier left this poll past its cap")))]
pub async fn list_messages(
    State(state): State<AppState>,
    AuthSession {
        principal,
        credential,
    }: AuthSession,
    Path(inbox_id): Path<String>,
    ApiQuery(p): ApiQuery<MessageParams>,
) -> Result<Envelope<MessageList>, ApiError> {
    let limit = p.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_query(
            "limit",
            format!("limit must be between 1 and {MAX_PAGE}"),
        ));
    }
    if p.wait.is_some_and(|w| w > MAX_WAIT.as_secs()) {
        return Err(ApiError::bad_query(
            "wait",
            format!("wait must be at most {} seconds", MAX_WAIT.as_secs()),
        ));
    }
    let mailbox = match p.mailbox.as_deref() {
        None => Some("INBOX".to_owned()),
        Some(m) if m.eq_ignore_ascii_case("all") => None,
        Some(m) => Some(m.to_owned()),
    };
    let filter = ListFilter {
        query: MessageQuery {
            mailbox,
            unread: p.unread,
            from_contains: p.from,
            subject_contains: p.subject,
            label: p.label,
            since_ms: p.since.as_deref().map(parse_since).transpose()?,
            limit,
            offset: p.offset.unwrap_or(0),
            ..MessageQuery::default()
        },
        after: p.after,
        wait: p.wait.filter(|w| *w > 0).map(|secs| Wait {
            duration: Duration::from_secs(secs),
            credential,
        }),
    };
    let (rows, total) = state
        .services
        .list_messages(&principal, &inbox_id, &filter)
        .await?;
    let mut steps = Vec::new();
    if let Some(newest) = rows.first() {
        steps.push(format!(
            "Read a message with GET /v1/inboxes/{inbox_id}/messages/{}",
            newest.id
        ));
        steps.push(format!(
            "Wait for the next message with GET /v1/inboxes/{inbox_id}/messages?after={}&wait=30",
            newest.id
        ));
    } else {
        steps.push(format!(
            "Wait for mail with GET /v1/inboxes/{inbox_id}/messages?wait=30"
        ));
    }
    Ok(Envelope::new(
        MessageList {
            messages: rows.iter().map(MessageSummary::from).collect(),
            total,
            limit,
            offset: filter.query.offset,
        },
        steps,
    ))
}

/// A message, parsed: addresses, text and HTML bodies, attachments, headers, and the codes
/// and links an agent usually wants.
#[utoipa::path(get, path = "/v1/inboxes/{id}/messages/{mid}", tag = "messages",
    params(("id" = String, Path), ("mid" = String, Path)), security(("bearer" = [])),
    responses((status = 200, description = "The message"), (status = 404, description = "NOT_FOUND")))]
pub async fn get_message(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path((inbox_id, mid)): Path<(String, String)>,
) -> Result<Envelope<MessageView>, ApiError> {
    let view = state
        .services
        .message_view(&principal, &inbox_id, &mid)
        .await?;
    let mut steps = vec![format!(
        "The original bytes: GET /v1/inboxes/{inbox_id}/messages/{mid}/raw"
    )];
    if !view.read {
        steps.push(format!(
            "Mark it read with PATCH /v1/inboxes/{inbox_id}/messages/{mid} {{\"read\": true}}"
        ));
    }
    steps.push(format!(
        "The whole conversation: GET /v1/inboxes/{inbox_id}/threads/{}",
        view.thread_id
    ));
    Ok(Envelope::new(view, steps))
}

/// The message exactly as received (`message/rfc822`).
#[utoipa::path(get, path = "/v1/inboxes/{id}/messages/{mid}/raw", tag = "messages",
    params(("id" = String, Path), ("mid" = String, Path)), security(("bearer" = [])),
    responses((status = 200, content_type = "message/rfc822", description = "The raw message"), (status = 404, description = "NOT_FOUND")))]
pub async fn get_raw(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path((inbox_id, mid)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (_, raw) = state
        .services
        .message_raw(&principal, &inbox_id, &mid)
        .await?;
    Ok((
        [
            (header::CONTENT_TYPE, "message/rfc822"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        raw,
    )
        .into_response())
}

/// One attachment, decoded, with its content type.
#[utoipa::path(get, path = "/v1/inboxes/{id}/messages/{mid}/attachments/{aid}", tag = "messages",
    params(("id" = String, Path), ("mid" = String, Path), ("aid" = String, Path)), security(("bearer" = [])),
    responses((status = 200, description = "The attachment's bytes"), (status = 404, description = "NOT_FOUND")))]
pub async fn get_attachment(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path((inbox_id, mid, aid)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let (name, content_type, bytes) = state
        .services
        .attachment(&principal, &inbox_id, &mid, &aid)
        .await?;
    let mut resp = ([(header::CONTENT_TYPE, content_type)], bytes).into_response();
    // Always a download, never rendered: an HTML attachment shown inline would run in the
    // API's origin. And no sniffing a type other than the one given.
    let disposition = match name {
        Some(name) => {
            let safe: String = name
                .chars()
                .filter(|c| !c.is_control() && *c != '"' && *c != '\\')
                .collect();
            format!("attachment; filename=\"{safe}\"")
        }
        None => "attachment".to_owned(),
    };
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_DISPOSITION,
        disposition
            .parse()
            .unwrap_or_else(|_| header::HeaderValue::from_static("attachment")),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    Ok(resp)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchMessageBody {
    pub read: Option<bool>,
    #[serde(default)]
    pub add_labels: Vec<String>,
    #[serde(default)]
    pub remove_labels: Vec<String>,
    /// Move to this mailbox (INBOX, Sent, Drafts, Trash, Junk, Archive).
    pub mailbox: Option<String>,
}

/// Mark read or unread, label, or move a message.
#[utoipa::path(patch, path = "/v1/inboxes/{id}/messages/{mid}", tag = "messages",
    params(("id" = String, Path), ("mid" = String, Path)), security(("bearer" = [])),
    request_body(content = PatchMessageBody, content_type = "application/json"),
    responses((status = 200, body = Envelope<MessageSummary>), (status = 404, description = "NOT_FOUND"),
        (status = 422, description = "INVALID_LABEL, INVALID_MAILBOX, VALIDATION_ERROR")))]
pub async fn patch_message(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path((inbox_id, mid)): Path<(String, String)>,
    ApiJson(body): ApiJson<PatchMessageBody>,
) -> Result<Envelope<MessageSummary>, ApiError> {
    let patch = MessagePatch {
        read: body.read,
        add_labels: body.add_labels,
        remove_labels: body.remove_labels,
        mailbox: body.mailbox,
    };
    let row = state
        .services
        .update_message(&principal, &inbox_id, &mid, &patch)
        .await?;
    Ok(Envelope::new(
        MessageSummary::from(&row),
        vec![format!(
            "List by label with GET /v1/inboxes/{inbox_id}/messages?label=…"
        )],
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MessageDeleted {
    pub id: String,
    /// `trash` (moved to Trash) or `deleted` (removed for good, from Trash).
    pub outcome: &'static str,
}

/// Delete a message: it moves to Trash; deleting it from Trash removes it.
#[utoipa::path(delete, path = "/v1/inboxes/{id}/messages/{mid}", tag = "messages",
    params(("id" = String, Path), ("mid" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Envelope<MessageDeleted>), (status = 404, description = "NOT_FOUND")))]
pub async fn delete_message(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path((inbox_id, mid)): Path<(String, String)>,
) -> Result<Envelope<MessageDeleted>, ApiError> {
    let outcome = state
        .services
        .delete_message(&principal, &inbox_id, &mid)
        .await?;
    let (outcome, step) = match outcome {
        Deleted::MovedToTrash => (
            "trash",
            "Delete it again to remove it for good, or move it back with PATCH {\"mailbox\": \"INBOX\"}",
        ),
        Deleted::Removed => ("deleted", "The message is gone"),
    };
    Ok(Envelope::new(
        MessageDeleted { id: mid, outcome },
        vec![step.to_owned()],
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ThreadSummary {
    pub id: String,
    pub messages: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ThreadList {
    pub threads: Vec<ThreadSummary>,
    pub total: u64,
    pub limit: u32,
    pub offset: u64,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ThreadParams {
    pub limit: Option<u32>,
    pub offset: Option<u64>,
}

/// Conversations, most recently active first.
#[utoipa::path(get, path = "/v1/inboxes/{id}/threads", tag = "messages",
    params(("id" = String, Path), ThreadParams), security(("bearer" = [])),
    responses((status = 200, body = Envelope<ThreadList>), (status = 404, description = "NOT_FOUND")))]
pub async fn list_threads(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(inbox_id): Path<String>,
    ApiQuery(p): ApiQuery<ThreadParams>,
) -> Result<Envelope<ThreadList>, ApiError> {
    let limit = p.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_query(
            "limit",
            format!("limit must be between 1 and {MAX_PAGE}"),
        ));
    }
    let offset = p.offset.unwrap_or(0);
    let (threads, total) = state
        .services
        .list_threads(&principal, &inbox_id, limit, offset)
        .await?;
    Ok(Envelope::new(
        ThreadList {
            threads: threads
                .into_iter()
                .map(|(id, messages)| ThreadSummary { id, messages })
                .collect(),
            total,
            limit,
            offset,
        },
        vec![format!(
            "Read a conversation with GET /v1/inboxes/{inbox_id}/threads/{{thread_id}}"
        )],
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ThreadView {
    pub id: String,
    pub messages: Vec<MessageSummary>,
}

/// The messages of a conversation, oldest first.
#[utoipa::path(get, path = "/v1/inboxes/{id}/threads/{tid}", tag = "messages",
    params(("id" = String, Path), ("tid" = String, Path)), security(("bearer" = [])),
    responses((status = 200, body = Envelope<ThreadView>), (status = 404, description = "NOT_FOUND")))]
pub async fn get_thread(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path((inbox_id, tid)): Path<(String, String)>,
) -> Result<Envelope<ThreadView>, ApiError> {
    let rows = state
        .services
        .thread_messages(&principal, &inbox_id, &tid)
        .await?;
    Ok(Envelope::new(
        ThreadView {
            id: tid,
            messages: rows.iter().map(MessageSummary::from).collect(),
        },
        vec!["Read a message with GET /v1/inboxes/{id}/messages/{mid}".to_owned()],
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventParams {
    /// Resume after this event id (the same as the `Last-Event-ID` header).
    pub after: Option<String>,
}

/// A Server-Sent Events stream of this inbox's events (`message.received` with the
/// message summary), oldest first. Without `Last-Event-ID` (or `after`) it starts with the
/// next event; with it, it resumes right after that event. When the stream may not go on
/// (its key revoked or rotated, its inbox deleted, its user disabled or deleted, a lowered
/// tier's stream cap) a last event `revoked` says why, within 2 s, and the stream closes.
#[utoipa::path(get, path = "/v1/inboxes/{id}/events", tag = "messages",
    params(("id" = String, Path), EventParams), security(("bearer" = [])),
    responses((status = 200, content_type = "text/event-stream", description = "events: `id`, `event` (the type) and `data` ({id, type, timestamp, data}); a last `revoked` event ({status, code, message}) when the stream is ended"),
        (status = 404, description = "NOT_FOUND"), (status = 422, description = "INVALID_LAST_EVENT_ID"),
        (status = 429, description = "TOO_MANY_STREAMS: the key or account has its share of streams and long polls open (Retry-After)")))]
pub async fn inbox_events(
    State(state): State<AppState>,
    AuthSession {
        principal,
        credential,
    }: AuthSession,
    Path(inbox_id): Path<String>,
    headers: axum::http::HeaderMap,
    ApiQuery(p): ApiQuery<EventParams>,
) -> Result<Response, ApiError> {
    use axum::response::sse::{KeepAlive, Sse};
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(p.after);
    let cursor = state
        .services
        .inbox_events(&principal, credential, &inbox_id, last.as_deref())
        .await?;
    // `None` once the stream has said its last word.
    let stream = futures_util::stream::unfold(Some(cursor), |cursor| async move {
        let mut cursor = cursor?;
        match cursor.next().await {
            Ok(None) => None,
            Ok(Some(CursorStep::Event(ev))) => {
                let event = sse_event(&ev);
                Some((Ok::<_, std::convert::Infallible>(event), Some(cursor)))
            }
            Ok(Some(CursorStep::Ended(why))) => Some((Ok(revoked_event(why)), None)),
            Err(e) => {
                tracing::warn!(error = %e, "event stream ended: store error");
                None
            }
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

fn sse_event(ev: &mailroom_store::EventRow) -> axum::response::sse::Event {
    let payload = serde_json::json!({
        "id": ev.id,
        "type": ev.event_type,
        "timestamp": rfc3339(ev.created_at),
        "data": ev.data,
    });
    axum::response::sse::Event::default()
        .id(ev.id.clone())
        .event(ev.event_type.clone())
        .data(payload.to_string())
}

/// The last event of a stream that may not go on: the status and error a new request with
/// the same credential would get, and why.
fn revoked_event(why: ServiceError) -> axum::response::sse::Event {
    let e = ApiError::from(why);
    let payload = serde_json::json!({
        "status": e.status.as_u16(),
        "code": e.code,
        "message": e.message,
    });
    axum::response::sse::Event::default()
        .event("revoked")
        .data(payload.to_string())
}
