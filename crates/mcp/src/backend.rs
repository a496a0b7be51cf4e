//! Where a tool's API request goes: into this process's API router, or over HTTP to a
//! running server.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::request::Parts;
use axum::http::{Request, header};
use mailroom_api::Dispatched;
use mailroom_api::server::PeerAddr;
use tower::ServiceExt as _;

use crate::call::{ApiAnswer, ApiRequest};

/// The largest answer a tool passes on (a message with its bodies and headers fits; raw
/// messages and attachment bytes are links, not tool results).
pub const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// A request could not be made or its answer not read.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("the request could not be built: {0}")]
    Build(String),
    #[error("the server at {url} could not be reached: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the answer could not be read: {0}")]
    Answer(String),
}

/// Makes API requests for tools.
pub trait Backend: Send + Sync + 'static {
    /// Sends `req` on behalf of the caller of the `/mcp` request whose `parts` are given
    /// (none over stdio, where the backend holds the key).
    fn call(
        &self,
        req: ApiRequest,
        parts: Option<&Parts>,
    ) -> impl Future<Output = Result<ApiAnswer, BackendError>> + Send;

    /// The URL links in results start with.
    fn base_url(&self) -> &str;
}

/// The API router of this process: a tool call runs exactly the route's handler.
#[derive(Clone)]
pub struct InProcess {
    router: Router,
    base_url: String,
}

impl InProcess {
    /// `router` is the API (without `/mcp`); `base_url` the server's public URL.
    pub fn new(router: Router, base_url: String) -> InProcess {
        InProcess { router, base_url }
    }
}

/// Headers of the `/mcp` request a dispatched request carries: the caller's credential,
/// and what a trusted proxy said about the client (the API's client-IP rule reads them).
const FORWARDED: [&str; 3] = ["authorization", "x-forwarded-for", "x-forwarded-proto"];

impl Backend for InProcess {
    async fn call(
        &self,
        req: ApiRequest,
        parts: Option<&Parts>,
    ) -> Result<ApiAnswer, BackendError> {
        let mut builder = Request::builder()
            .method(req.method)
            .uri(&req.path_and_query);
        if let Some(parts) = parts {
            for name in FORWARDED {
                for value in parts.headers.get_all(name) {
                    builder = builder.header(name, value.clone());
                }
            }
        }
        let body = match &req.body {
            Some(v) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Body::from(serde_json::to_vec(v).map_err(|e| BackendError::Build(e.to_string()))?)
            }
            None => Body::empty(),
        };
        let mut request = builder
            .body(body)
            .map_err(|e| BackendError::Build(e.to_string()))?;
        if let Some(peer) = parts.and_then(|p| p.extensions.get::<ConnectInfo<PeerAddr>>()) {
            request.extensions_mut().insert(*peer);
        }
        request.extensions_mut().insert(Dispatched);
        let response = match self.router.clone().oneshot(request).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let status = response.status().as_u16();
        let content_type = content_type(response.headers());
        let body = axum::body::to_bytes(response.into_body(), MAX_ANSWER_BYTES)
            .await
            .map_err(|e| BackendError::Answer(e.to_string()))?;
        Ok(ApiAnswer {
            status,
            content_type,
            body: body.to_vec(),
        })
    }

    fn base_url(&self) -> &str {
        &self.base_url
    }
}

fn content_type(headers: &axum::http::HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// A running Mailroom server's API, reached over HTTP with one key (`mailroom mcp --stdio`).
#[derive(Clone)]
pub struct Remote {
    http: reqwest::Client,
    base_url: String,
    key: String,
}

impl Remote {
    /// `base_url`: `https://mail.example.com` (what `MAILROOM_API_URL` holds); `key`: the
    /// key every call presents.
    pub fn new(base_url: &str, key: String) -> Result<Remote, BackendError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // Long enough for the longest wait a route allows (60 s), and then some.
            .timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| BackendError::Build(e.to_string()))?;
        Ok(Remote {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            key,
        })
    }
}

impl Backend for Remote {
    async fn call(
        &self,
        req: ApiRequest,
        _parts: Option<&Parts>,
    ) -> Result<ApiAnswer, BackendError> {
        let url = format!("{}{}", self.base_url, req.path_and_query);
        let method = reqwest::Method::from_bytes(req.method.as_bytes())
            .map_err(|e| BackendError::Build(e.to_string()))?;
        let mut builder = self.http.request(method, &url).bearer_auth(&self.key);
        if let Some(body) = &req.body {
            builder = builder.json(body);
        }
        let unreachable = |e: reqwest::Error| BackendError::Unreachable {
            url: self.base_url.clone(),
            reason: e.to_string(),
        };
        let response = builder.send().await.map_err(unreachable)?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body = response.bytes().await.map_err(unreachable)?;
        Ok(ApiAnswer {
            status,
            content_type,
            body: body.to_vec(),
        })
    }

    fn base_url(&self) -> &str {
        &self.base_url
    }
}
