//! The HTTP API.
//!
//! Handlers are thin: they parse (the extractors in [`extract`]), call
//! [`mailroom_services::Services`], and shape the answer into Mailroom's envelope
//! (`{"result": …, "next_steps": […]}`) or error (`{"error": CODE, "message": …}`).
//! [`server`] serves the router over plain HTTP (loopback, or behind a trusted proxy) or
//! TLS.

pub mod error;
pub mod extract;
mod metrics_layer;
mod openapi;
mod routes;
pub mod server;

use std::net::IpAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use mailroom_services::{RateLimiter, RateRule, Services};
use metrics_exporter_prometheus::PrometheusHandle;

pub use openapi::openapi_document;

/// Settings of the HTTP front end.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Unauthenticated `POST /v1/inboxes` per client IP.
    pub inbox_create_rule: RateRule,
    /// Peers whose `X-Forwarded-For` / `X-Forwarded-Proto` are believed.
    pub trusted_proxies: Vec<IpAddr>,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Ports of the mail listeners, for connection info answers.
    pub mail_ports: MailPorts,
    /// Requests per minute on the API for each presented credential (key or token), and
    /// for each client IP without one; `None`: unlimited.
    pub request_rule: Option<RateRule>,
    /// Who may read `/metrics`: clients on this host (loopback) always; others only with
    /// `Authorization: Bearer <token>` when a token is set.
    pub metrics_token: Option<String>,
}

/// The ports mail clients connect to.
#[derive(Debug, Clone, Default)]
pub struct MailPorts {
    pub submission: u16,
    pub submissions: u16,
    pub pop3: u16,
    pub pop3s: u16,
    pub imap: u16,
    pub imaps: u16,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            inbox_create_rule: RateRule::per_hour(10),
            trusted_proxies: Vec::new(),
            max_body_bytes: 64 * 1024,
            mail_ports: MailPorts::default(),
            request_rule: Some(RateRule::per_minute(6000)),
            metrics_token: None,
        }
    }
}

/// Everything a handler may use. Passed explicitly as axum state; no globals.
///
/// One `Arc` around everything: axum clones the state for every middleware of every
/// request, and one reference count is cheaper to bump and drop than one per field.
#[derive(Clone)]
pub struct AppState(Arc<AppStateInner>);

/// The fields of [`AppState`], reached through it (`state.services`).
pub struct AppStateInner {
    pub services: Services,
    pub config: ApiConfig,
    pub limiter: RateLimiter,
    /// Keyed (per process, at random) hashing of presented credentials into rate-limit
    /// buckets: cheap, and nobody can aim at another caller's bucket.
    pub bucket_hasher: std::collections::hash_map::RandomState,
    pub metrics: Option<PrometheusHandle>,
}

impl std::ops::Deref for AppState {
    type Target = AppStateInner;

    fn deref(&self) -> &AppStateInner {
        &self.0
    }
}

impl AppState {
    pub fn new(services: Services, config: ApiConfig, metrics: Option<PrometheusHandle>) -> Self {
        AppState(Arc::new(AppStateInner {
            services,
            config,
            limiter: RateLimiter::new(),
            bucket_hasher: std::collections::hash_map::RandomState::new(),
            metrics,
        }))
    }
}

/// A request that a front end inside this process (the MCP endpoint) hands to the router
/// on behalf of a caller whose own request the rate limit counted already: it is not
/// counted twice. Only code in this process can attach an extension, never a client.
#[derive(Debug, Clone, Copy)]
pub struct Dispatched;

/// The whole HTTP API.
pub fn router(state: AppState) -> Router {
    router_with(state, Router::new())
}

/// The HTTP API with `extra` routes (the MCP endpoint) behind the same transport check and
/// rate limit as every API route.
pub fn router_with(state: AppState, extra: Router<AppState>) -> Router {
    let body_limit = state.config.max_body_bytes;
    routes::routes(&state, extra)
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn(metrics_layer::record))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            error::panic_response,
        ))
        .with_state(state)
}
