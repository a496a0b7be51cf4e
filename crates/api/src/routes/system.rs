//! Health, metrics, and the API's own description.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use crate::AppState;
use crate::openapi::{docs_html, openapi_document};

/// `GET /healthz`: 200 when the database answers, 503 when it does not.
#[utoipa::path(get, path = "/healthz", tag = "system",
    responses((status = 200, description = "{status: \"ok\", database}"),
        (status = 503, description = "the database does not answer")))]
pub async fn healthz(State(state): State<AppState>) -> Response {
    match state.services.store().ping().await {
        Ok(()) => (
            StatusCode::OK,
            axum::Json(serde_json::json!({"status": "ok", "database": state.services.store().backend().name()})),
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "health check: database unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(serde_json::json!({"status": "unavailable", "error": "database unreachable"})),
            )
                .into_response()
        }
    }
}

/// `GET /metrics`: Prometheus text format.
/// The Prometheus scrape. It tells who is being refused and how much mail flows, so it is
/// for this host (loopback, after trusted proxies are looked through) or for a scraper with
/// the configured token; anyone else gets 404, as if there were nothing here.
pub async fn metrics(
    State(state): State<AppState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<crate::server::PeerAddr>,
    headers: axum::http::HeaderMap,
) -> Response {
    let client =
        crate::extract::client_ip_of(&headers, peer.addr.ip(), &state.config.trusted_proxies);
    let token_ok = state.config.metrics_token.as_deref().is_some_and(|want| {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|got| {
                mailroom_core::secret::constant_time_eq(got.trim().as_bytes(), want.as_bytes())
            })
    });
    if !client.is_loopback() && !token_ok {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    }
    match &state.metrics {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are not enabled\n").into_response(),
    }
}

pub async fn openapi_json() -> Response {
    axum::Json(openapi_document()).into_response()
}

pub async fn docs() -> Html<String> {
    Html(docs_html(&openapi_document()))
}
