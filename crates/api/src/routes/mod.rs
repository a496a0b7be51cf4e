//! The routes, grouped by resource. Every success answer is an [`Envelope`].

mod account;
mod domains;
mod inboxes;
mod keys;
mod messages;
mod notices;
mod send;
pub(crate) mod system;
mod upgrade_page;
mod users;
mod webhooks;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::error::ApiError;
use crate::server::PeerAddr;

pub(crate) use account::*;
pub(crate) use domains::*;
pub(crate) use inboxes::*;
pub(crate) use keys::*;
pub(crate) use messages::*;
pub(crate) use notices::*;
pub(crate) use send::*;
pub(crate) use users::*;
pub(crate) use webhooks::*;

/// Mailroom's success answer: the result, and what the caller can do next.
#[derive(Debug, Serialize, ToSchema)]
pub struct Envelope<T> {
    pub result: T,
    pub next_steps: Vec<String>,
}

impl<T: Serialize> Envelope<T> {
    pub fn new(result: T, next_steps: Vec<String>) -> Self {
        Envelope { result, next_steps }
    }
}

impl<T: Serialize> IntoResponse for Envelope<T> {
    fn into_response(self) -> Response {
        axum::Json(self).into_response()
    }
}

/// Sends carry attachments in base64: room for a 25 MiB message.
const SEND_BODY_LIMIT: usize = 36 * 1024 * 1024;

pub fn routes(state: &AppState, extra: Router<AppState>) -> Router<AppState> {
    let v1 = extra
        .route(
            "/v1/inboxes",
            post(inboxes::create_inbox).get(inboxes::list_inboxes),
        )
        .route(
            "/v1/inboxes/{id}",
            get(inboxes::get_inbox).delete(inboxes::delete_inbox),
        )
        .route("/v1/inboxes/{id}/rotate-key", post(inboxes::rotate_key))
        .route("/v1/inboxes/{id}/messages", get(messages::list_messages))
        .route(
            "/v1/inboxes/{id}/messages/{mid}",
            get(messages::get_message)
                .patch(messages::patch_message)
                .delete(messages::delete_message),
        )
        .route(
            "/v1/inboxes/{id}/messages/{mid}/raw",
            get(messages::get_raw),
        )
        .route(
            "/v1/inboxes/{id}/messages/{mid}/attachments/{aid}",
            get(messages::get_attachment),
        )
        .route(
            "/v1/inboxes/{id}/send",
            post(send::send).layer(axum::extract::DefaultBodyLimit::max(SEND_BODY_LIMIT)),
        )
        .route("/v1/inboxes/{id}/messages/{mid}/reply", post(send::reply))
        .route(
            "/v1/inboxes/{id}/messages/{mid}/reply-all",
            post(send::reply_all),
        )
        .route(
            "/v1/inboxes/{id}/messages/{mid}/forward",
            post(send::forward),
        )
        .route("/v1/inboxes/{id}/threads", get(messages::list_threads))
        .route("/v1/inboxes/{id}/events", get(messages::inbox_events))
        .route("/v1/inboxes/{id}/threads/{tid}", get(messages::get_thread))
        .route(
            "/v1/webhooks",
            post(webhooks::create_webhook).get(webhooks::list_webhooks),
        )
        .route(
            "/v1/webhooks/{id}",
            get(webhooks::get_webhook)
                .patch(webhooks::patch_webhook)
                .delete(webhooks::delete_webhook),
        )
        .route("/v1/webhooks/{id}/test", post(webhooks::test_webhook))
        .route(
            "/v1/webhooks/{id}/rotate-secret",
            post(webhooks::rotate_secret),
        )
        .route(
            "/v1/webhooks/{id}/deliveries",
            get(webhooks::list_deliveries),
        )
        .route(
            "/v1/webhooks/{id}/deliveries/{did}/replay",
            post(webhooks::replay_delivery),
        )
        .route("/v1/events", get(webhooks::list_events))
        .route("/api/smtp-credentials", get(keys::list).post(keys::create))
        .route("/api/smtp-credentials/mobile", post(keys::mobile))
        .route(
            "/api/smtp-credentials/{key_id}",
            axum::routing::delete(keys::delete),
        )
        .route("/api/smtp-credentials/{key_id}/rotate", post(keys::rotate))
        .route("/v1/keys", get(keys::list).post(keys::create))
        .route("/v1/keys/{key_id}", axum::routing::delete(keys::delete))
        .route("/v1/keys/{key_id}/rotate", post(keys::rotate))
        .route(
            "/v1/domains",
            post(domains::add_domain).get(domains::list_domains),
        )
        .route(
            "/v1/domains/{domain}",
            get(domains::get_domain).delete(domains::delete_domain),
        )
        .route("/v1/domains/{domain}/verify", post(domains::verify_domain))
        .route("/v1/domains/{domain}/zone-file", get(domains::zone_file))
        .route(
            "/api/domains/{domain}/credentials",
            post(domains::create_credential).get(domains::list_credentials),
        )
        .route(
            "/api/domains/{domain}/credentials/{guid}",
            axum::routing::delete(domains::delete_credential),
        )
        .route("/v1/auth/token", post(users::grant))
        .route("/v1/auth/refresh", post(users::refresh))
        .route("/v1/auth/revoke", post(users::revoke))
        .route("/v1/me", get(users::me))
        .route(
            "/v1/account/users",
            get(users::list_users).post(users::create_user),
        )
        .route(
            "/v1/account/users/{id}",
            axum::routing::patch(users::patch_user).delete(users::delete_user),
        )
        .route("/v1/account", get(account::get_account))
        .route("/v1/account/smtp", get(account::get_smtp))
        .route("/v1/account/rotate-key", post(account::rotate_account_key))
        .route("/v1/account/smtp/rotate", post(account::rotate_smtp))
        .route("/v1/capabilities", get(account::get_capabilities))
        .route("/v1/upgrade-link", post(account::create_upgrade_link))
        .route("/v1/notify-operator", post(notices::notify_operator))
        .route("/v1/account/notices", get(notices::list_notices))
        .route(
            "/v1/account/notices/{id}/resolve",
            post(notices::resolve_notice),
        )
        .route("/upgrade", get(upgrade_page::show))
        // One middleware for both checks: each layer costs a boxed service and a state clone
        // per request.
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), guard));
    Router::new()
        .merge(v1)
        .route("/healthz", get(system::healthz))
        .route("/metrics", get(system::metrics))
        .route("/openapi.json", get(system::openapi_json))
        .route("/docs", get(system::docs))
}

/// Plain HTTP is accepted from loopback (for `--dev` and local tools) and from trusted
/// proxies that say the client used HTTPS; anywhere else the API answers only over TLS
/// (seed 004: calls over plain HTTP fail).
fn secure_transport(state: &AppState, req: &Request) -> Result<(), ApiError> {
    let Some(peer) = req.extensions().get::<ConnectInfo<PeerAddr>>().map(|c| c.0) else {
        return Ok(());
    };
    if peer.tls || peer.addr.ip().is_loopback() {
        return Ok(());
    }
    let via_trusted_https = state.config.trusted_proxies.contains(&peer.addr.ip())
        && req
            .headers()
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
    if !via_trusted_https {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "HTTPS_REQUIRED",
            "the API is served over HTTPS only; use https://",
        ));
    }
    Ok(())
}

/// Every API route passes here: the transport check, then the rate limit.
async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Err(e) = secure_transport(&state, &req) {
        return e.into_response();
    }
    rate_limit(&state, req, next).await
}

/// One rate limit for every API route: per verified credential (an API key or a user's
/// token, by a keyed hash of it), or per client IP for a request without one or with one
/// that is not valid, so that a fresh random `Authorization` per request does not escape
/// the address's budget. Every answer says where the caller stands (`X-RateLimit-Limit`,
/// `X-RateLimit-Remaining`); over the limit it is 429 with `Retry-After`. Routes with a
/// stricter limit of their own (account creation, credentials) report that one instead.
///
/// The credential is checked here once (a cache hit for keys in use); the principal found
/// is handed to the handler's extractor, which does not check it again.
async fn rate_limit(state: &AppState, req: Request, next: Next) -> Response {
    let Some(rule) = state.config.request_rule else {
        return next.run(req).await;
    };
    if req.extensions().get::<crate::Dispatched>().is_some() {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    let verified = match crate::extract::presented_key_of(&parts) {
        Some(key) => match state.services.authenticate(&key).await {
            Ok(principal) => Some((key, principal)),
            Err(_) => None,
        },
        None => None,
    };
    let bucket = match verified {
        Some((key, principal)) => {
            use std::hash::BuildHasher as _;
            parts.extensions.insert(crate::extract::Verified(principal));
            format!(
                "req:cred:{:016x}",
                state.bucket_hasher.hash_one(key.as_bytes())
            )
        }
        None => {
            let peer = parts
                .extensions
                .get::<ConnectInfo<PeerAddr>>()
                .map(|c| c.0.addr.ip())
                .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
            let ip =
                crate::extract::client_ip_of(&parts.headers, peer, &state.config.trusted_proxies);
            format!("req:ip:{ip}")
        }
    };
    let req = Request::from_parts(parts, body);
    let d = state.limiter.check(&bucket, rule);
    let mut resp = if d.allowed {
        next.run(req).await
    } else {
        ApiError::rate_limited(d.reset_after_secs).into_response()
    };
    if !resp.headers().contains_key("x-ratelimit-limit") {
        rate_headers(resp.headers_mut(), &d);
    }
    resp
}

/// `X-RateLimit-Limit` and `X-RateLimit-Remaining` (seed 001) for a decision of the limiter.
pub(crate) fn rate_headers(h: &mut axum::http::HeaderMap, d: &mailroom_services::RateDecision) {
    h.insert("x-ratelimit-limit", axum::http::HeaderValue::from(d.limit));
    h.insert(
        "x-ratelimit-remaining",
        axum::http::HeaderValue::from(d.remaining),
    );
}

pub async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "no such route; the API is described at /openapi.json and /docs",
    )
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        "this route does not take that method; see /docs",
    )
}
