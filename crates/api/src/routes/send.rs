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
    #[schema(value_type = Vec<String>)]
    pub to: Option<OneOrMany>,
    #[schema(value_type = Vec<String>)]
    pub cc: Option<OneOrMany>,
    #[schema(value_type = Vec<String>)]
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
    /// `delivered` (into a hosted inbox).
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

/// Send a message from this inbox. Recipients must be inboxes hosted on this server for
/// now. `Idempotency-Key` (or `client_id`): a repeat with the same body gets the first
/// answer and sends nothing; with another body, 409.
#[utoipa::path(post, path = "/v1/inboxes/{id}/send", tag = "messages",
    params(("id" = String, Path), ("Idempotency-Key" = Option<String>, Header)), security(("bearer" = [])),
    request_body(content = SendBody, content_type = "application/json"),
    responses((status = 201, body = Envelope<Sent>),
        (status = 403, description = "SEND_REQUIRES_PAID (with upgrade_context), FROM_NOT_ALLOWED"),
        (status = 409, description = "IDEMPOTENCY_KEY_REUSED, IDEMPOTENCY_KEY_IN_USE"),
        (status = 422, description = "INVALID_ADDRESS, NO_RECIPIENTS, INVALID_HEADER, INVALID_HEADER_VALUE, RECIPIENT_NOT_REACHABLE, …"),
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
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/json")
        });
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "send the body as JSON with the header Content-Type: application/json",
        ));
    }
    let parsed: SendBody = parse_json(&body)?;
    // Access first: a key for another inbox learns nothing from idempotency answers.
    state.services.get_inbox(&principal, &inbox_id).await?;
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(|k| format!("key:{}", k.trim()))
        .or_else(|| parsed.client_id.as_ref().map(|c| format!("client_id:{c}")));
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
        h.update(inbox_id.as_bytes());
        h.update([0]);
        h.update(&body);
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
    let outcome = do_send(&state, &principal, &inbox_id, parsed).await;
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

async fn do_send(
    state: &AppState,
    principal: &mailroom_services::Principal,
    inbox_id: &str,
    body: SendBody,
) -> Result<Envelope<Sent>, ApiError> {
    let mut attachments = Vec::with_capacity(body.attachments.len());
    for a in body.attachments {
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
    let req = SendRequest {
        to: body.to.map(OneOrMany::into_vec).unwrap_or_default(),
        cc: body.cc.map(OneOrMany::into_vec).unwrap_or_default(),
        bcc: body.bcc.map(OneOrMany::into_vec).unwrap_or_default(),
        subject: body.subject,
        text: body.text,
        html: body.html,
        attachments,
        reply_to: body.reply_to,
        headers: body.headers.into_iter().collect(),
    };
    let done = state
        .services
        .send_from_inbox(principal, inbox_id, &req)
        .await?;
    let steps = vec![
        format!(
            "The sent copy: GET /v1/inboxes/{inbox_id}/messages/{}",
            done.id
        ),
        format!(
            "Replies will join thread {}: GET /v1/inboxes/{inbox_id}/threads/{}",
            done.thread_id, done.thread_id
        ),
    ];
    Ok(Envelope::new(
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
    ))
}
