//! `POST /v1/inboxes/{id}/send`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use mailroom_services::send::{Attachment, SendRequest};
use mailroom_store::Idempotency;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::Envelope;
use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Auth, parse_json};

/// One address or a list of them.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachmentBody {
    pub filename: String,
    pub content_type: String,
    /// The bytes, base64.
    pub content: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendBody {
    #[schema(value_type = Option<Vec<String>>)]
    pub to: Option<OneOrMany>,
    #[schema(value_type = Option<Vec<String>>)]
    pub cc: Option<OneOrMany>,
    #[schema(value_type = Option<Vec<String>>)]
    pub bcc: Option<OneOrMany>,
    #[serde(default)]
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
    #[serde(default)]
    pub attachments: Vec<AttachmentBody>,
    pub reply_to: Option<String>,
    /// Extra headers (`X-…`); headers Mailroom writes cannot be set.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Makes the send idempotent, like an `Idempotency-Key` header.
    pub client_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RecipientStatus {
    pub address: String,
    /// `delivered` (into a hosted inbox, at once) or `queued` (for another server; the
    /// sent message's `delivery` shows how it goes, and `message.delivered`,
    /// `message.deferred` and `message.bounced` events follow).
    pub status: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Sent {
    /// The copy in the sender's Sent mailbox.
    pub id: String,
    /// The `Message-ID` header.
    pub message_id: String,
    pub thread_id: String,
    pub recipients: Vec<RecipientStatus>,
}

/// Send a message from this inbox. Hosted recipients get it at once; others are queued
/// for delivery to their mail servers. `Idempotency-Key` (or `client_id`): a repeat with the same body gets the first
/// answer and sends nothing; with another body, 409.
#[utoipa::path(post, path = "/v1/inboxes/{id}/send", tag = "messages",
    params(("id" = String, Path), ("Idempotency-Key" = Option<String>, Header)), security(("bearer" = [])),
    request_body(content = SendBody, content_type = "application/json"),
    responses((status = 201, body = Envelope<Sent>),
        (status = 403, description = "SEND_REQUIRES_PAID (with upgrade_context), FROM_NOT_ALLOWED"),
        (status = 409, description = "IDEMPOTENCY_KEY_REUSED, IDEMPOTENCY_KEY_IN_USE"),
        (status = 422, description = "INVALID_ADDRESS, NO_RECIPIENTS, INVALID_HEADER, INVALID_HEADER_VALUE, RECIPIENT_NOT_FOUND, …"),
        (status = 429, description = "SEND_LIMIT_EXCEEDED")))]
pub async fn send(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(inbox_id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            format!(
                "the request body is too large or unreadable: {}",
                e.body_text()
            ),
        )
    })?;
    check_json(&headers)?;
    let parsed: SendBody = parse_json(&body)?;
    let client_id = parsed.client_id.clone();
    to_completion(async move {
        idempotent(
            &state,
            &principal,
            &inbox_id,
            "send",
            &headers,
            &body,
            client_id,
            || do_send(&state, &principal, &inbox_id, parsed),
        )
        .await
    })
    .await
}

/// Runs a send to its end in a task of its own: a client that hangs up mid-request drops
/// the handler, and a send cancelled between its commit and the recording of its answer
/// would leave the idempotency key "in progress" (and a retry could send twice).
async fn to_completion<F>(f: F) -> Result<Response, ApiError>
where
    F: std::future::Future<Output = Result<Response, ApiError>> + Send + 'static,
{
    match tokio::spawn(f).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "a send task failed");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_ERROR",
                "the send failed; retry with the same Idempotency-Key",
            ))
        }
    }
}

/// Runs `run` at most once per idempotency key (`Idempotency-Key` header, or `client_id`):
/// a repeat with the same request gets the first answer; with another request, 409.
#[allow(clippy::too_many_arguments)]
async fn idempotent<F, Fut>(
    state: &AppState,
    principal: &mailroom_services::Principal,
    inbox_id: &str,
    scope: &str,
    headers: &HeaderMap,
    body: &Bytes,
    client_id: Option<String>,
    run: F,
) -> Result<Response, ApiError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<Envelope<Sent>, ApiError>>,
{
    // Access first: a key for another inbox learns nothing from idempotency answers. (The
    // scope the action needs is checked by the action.)
    state.services.inbox_of(principal, inbox_id).await?;
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(|k| format!("key:{}", k.trim()))
        .or_else(|| client_id.map(|c| format!("client_id:{c}")));
    if key.as_ref().is_some_and(|k| k.len() > 300) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_IDEMPOTENCY_KEY",
            "the Idempotency-Key is longer than 255 characters",
        ));
    }
    let account_id = principal.account_id().to_owned();
    let store = state.services.store();
    if let Some(k) = &key {
        let mut h = Sha256::new();
        h.update(scope.as_bytes());
        h.update([0]);
        h.update(inbox_id.as_bytes());
        h.update([0]);
        h.update(body);
        match store
            .claim_idempotency_key(
                &account_id,
                k,
                &hex::encode(h.finalize()),
                mailroom_core::time::now_ms(),
            )
            .await
            .map_err(mailroom_services::ServiceError::from)?
        {
            Idempotency::New => {}
            Idempotency::Replay { status, response } => {
                let status = StatusCode::from_u16(u16::try_from(status).unwrap_or(200))
                    .unwrap_or(StatusCode::OK);
                return Ok((
                    status,
                    [(header::CONTENT_TYPE, "application/json")],
                    response,
                )
                    .into_response());
            }
            Idempotency::OtherRequest => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "IDEMPOTENCY_KEY_REUSED",
                    "this Idempotency-Key was used for a different request; use a new key",
                ));
            }
            Idempotency::InProgress => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "IDEMPOTENCY_KEY_IN_USE",
                    "a request with this Idempotency-Key is still running; retry shortly",
                ));
            }
        }
    }
    let outcome = run().await;
    match (&key, outcome) {
        (Some(k), Ok(resp_body)) => {
            let text = serde_json::to_string(&resp_body).unwrap_or_default();
            store
                .complete_idempotency_key(&account_id, k, 201, &text)
                .await
                .map_err(mailroom_services::ServiceError::from)?;
            Ok((
                StatusCode::CREATED,
                [(header::CONTENT_TYPE, "application/json")],
                text,
            )
                .into_response())
        }
        (None, Ok(resp_body)) => Ok((StatusCode::CREATED, resp_body).into_response()),
        (k, Err(e)) => {
            if let Some(k) = k {
                let _ = store.release_idempotency_key(&account_id, k).await;
            }
            Err(e)
        }
    }
}

fn decode_attachments(list: Vec<AttachmentBody>) -> Result<Vec<Attachment>, ApiError> {
    let mut attachments = Vec::with_capacity(list.len());
    for a in list {
        let content = base64::engine::general_purpose::STANDARD
            .decode(a.content.trim())
            .map_err(|_| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "INVALID_ATTACHMENT",
                    format!("attachment {:?}: content is not valid base64", a.filename),
                )
                .with_field("attachments")
            })?;
        attachments.push(Attachment {
            filename: a.filename,
            content_type: a.content_type,
            content,
        });
    }
    Ok(attachments)
}

fn sent_envelope(inbox_id: &str, done: mailroom_services::send::SendOutcome) -> Envelope<Sent> {
    let steps = vec![
        format!(
            "The sent copy: GET /v1/inboxes/{inbox_id}/messages/{}",
            done.id
        ),
        format!(
            "The conversation: GET /v1/inboxes/{inbox_id}/threads/{}",
            done.thread_id
        ),
    ];
    Envelope::new(
        Sent {
            id: done.id,
            message_id: done.message_id,
            thread_id: done.thread_id,
            recipients: done
                .recipients
                .into_iter()
                .map(|(address, status)| RecipientStatus {
                    address,
                    status: status.to_owned(),
                })
                .collect(),
        },
        steps,
    )
}

fn check_json(headers: &HeaderMap) -> Result<(), ApiError> {
    crate::extract::require_json(crate::extract::is_json_content_type(headers))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AnswerBody {
    /// Forward: the recipients. Replies: extra recipients.
    #[schema(value_type = Option<Vec<String>>)]
    pub to: Option<OneOrMany>,
    #[schema(value_type = Option<Vec<String>>)]
    pub cc: Option<OneOrMany>,
    #[schema(value_type = Option<Vec<String>>)]
    pub bcc: Option<OneOrMany>,
    pub text: Option<String>,
    pub html: Option<String>,
    #[serde(default)]
    pub attachments: Vec<AttachmentBody>,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    pub client_id: Option<String>,
}

async fn answer(
    state: AppState,
    principal: mailroom_services::Principal,
    inbox_id: String,
    mid: String,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
    kind: mailroom_services::send::Answer,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            format!(
                "the request body is too large or unreadable: {}",
                e.body_text()
            ),
        )
    })?;
    let parsed: AnswerBody = if body.iter().all(u8::is_ascii_whitespace) {
        AnswerBody::default()
    } else {
        check_json(&headers)?;
        parse_json(&body)?
    };
    let scope = format!("{kind:?}:{mid}");
    let client_id = parsed.client_id.clone();
    to_completion(async move {
        idempotent(
            &state,
            &principal,
            &inbox_id,
            &scope,
            &headers,
            &body,
            client_id,
            || async {
                let req = mailroom_services::send::AnswerRequest {
                    to: parsed.to.map(OneOrMany::into_vec).unwrap_or_default(),
                    cc: parsed.cc.map(OneOrMany::into_vec).unwrap_or_default(),
                    bcc: parsed.bcc.map(OneOrMany::into_vec).unwrap_or_default(),
                    text: parsed.text,
                    html: parsed.html,
                    attachments: decode_attachments(parsed.attachments)?,
                    headers: parsed.headers.into_iter().collect(),
                };
                let done = state
                    .services
                    .answer(&principal, &inbox_id, &mid, kind, req)
                    .await?;
                Ok(sent_envelope(&inbox_id, done))
            },
        )
        .await
    })
    .await
}

/// Reply to the sender of a message (`Re:`, `In-Reply-To`, `References`, same thread).
#[utoipa::path(post, path = "/v1/inboxes/{id}/messages/{mid}/reply", tag = "messages",
    params(("id" = String, Path), ("mid" = String, Path)), security(("bearer" = [])),
    request_body(content = AnswerBody, content_type = "application/json"),
    responses((status = 201, body = Envelope<Sent>), (status = 404, description = "NOT_FOUND"), (status = 422, description = "validation")))]
pub async fn reply(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path((inbox_id, mid)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    answer(
        state,
        principal,
        inbox_id,
        mid,
        headers,
        body,
        mailroom_services::send::Answer::Reply,
    )
    .await
}

/// Reply to the sender and every other recipient of a message.
#[utoipa::path(post, path = "/v1/inboxes/{id}/messages/{mid}/reply-all", tag = "messages",
    params(("id" = String, Path), ("mid" = String, Path)), security(("bearer" = [])),
    request_body(content = AnswerBody, content_type = "application/json"),
    responses((status = 201, body = Envelope<Sent>), (status = 404, description = "NOT_FOUND"), (status = 422, description = "validation")))]
pub async fn reply_all(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path((inbox_id, mid)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    answer(
        state,
        principal,
        inbox_id,
        mid,
        headers,
        body,
        mailroom_services::send::Answer::ReplyAll,
    )
    .await
}

/// Forward a message (`Fwd:`, the original attached as message/rfc822) to `to`.
#[utoipa::path(post, path = "/v1/inboxes/{id}/messages/{mid}/forward", tag = "messages",
    params(("id" = String, Path), ("mid" = String, Path)), security(("bearer" = [])),
    request_body(content = AnswerBody, content_type = "application/json"),
    responses((status = 201, body = Envelope<Sent>), (status = 404, description = "NOT_FOUND"), (status = 422, description = "validation")))]
pub async fn forward(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path((inbox_id, mid)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    answer(
        state,
        principal,
        inbox_id,
        mid,
        headers,
        body,
        mailroom_services::send::Answer::Forward,
    )
    .await
}

async fn do_send(
    state: &AppState,
    principal: &mailroom_services::Principal,
    inbox_id: &str,
    body: SendBody,
) -> Result<Envelope<Sent>, ApiError> {
    let req = SendRequest {
        to: body.to.map(OneOrMany::into_vec).unwrap_or_default(),
        cc: body.cc.map(OneOrMany::into_vec).unwrap_or_default(),
        bcc: body.bcc.map(OneOrMany::into_vec).unwrap_or_default(),
        subject: body.subject,
        text: body.text,
        html: body.html,
        attachments: decode_attachments(body.attachments)?,
        reply_to: body.reply_to,
        headers: body.headers.into_iter().collect(),
        ..SendRequest::default()
    };
    let done = state
        .services
        .send_from_inbox(principal, inbox_id, &req)
        .await?;
    Ok(sent_envelope(inbox_id, done))
}
