//! The MCP server: the tools over Streamable HTTP (`/mcp`) and over stdio.

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use mailroom_api::AppState;
use mailroom_api::extract::Auth;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt as _};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::backend::{Backend, InProcess, Remote};
use crate::call;
use crate::catalogue::{Catalogue, MissingRoute};

/// Sends carry attachments in base64; the send route itself allows 36 MiB.
const MAX_REQUEST_BYTES: usize = 36 * 1024 * 1024;

const INSTRUCTIONS: &str = "Mailroom: email for agents. Each tool is one route of the Mailroom \
    HTTP API and answers its {result, next_steps}: follow next_steps. Errors have isError \
    and the API's error code (NOT_FOUND, SEND_REQUIRES_PAID, …); a tier refusal carries \
    upgrade_context with a link and a script for your operator. Start with get_capabilities \
    or list_inboxes; wait_for_message waits for mail (a verification code: see \
    extracted.codes in get_message).";

/// The MCP server: the tool catalogue, and where tool calls go.
pub struct Mailroom<B> {
    catalogue: Arc<Catalogue>,
    backend: Arc<B>,
}

impl<B> Clone for Mailroom<B> {
    fn clone(&self) -> Self {
        Mailroom {
            catalogue: self.catalogue.clone(),
            backend: self.backend.clone(),
        }
    }
}

impl<B: Backend> Mailroom<B> {
    pub fn new(backend: B) -> Result<Mailroom<B>, MissingRoute> {
        Ok(Mailroom {
            catalogue: Arc::new(Catalogue::new()?),
            backend: Arc::new(backend),
        })
    }

    /// Runs one tool call; every failure a caller can act on is a tool result with
    /// `isError`, never a protocol error (which clients hide from the model).
    pub async fn run(
        &self,
        name: &str,
        args: &rmcp::model::JsonObject,
        parts: Option<&Parts>,
    ) -> CallToolResult {
        let Some(binding) = self.catalogue.binding(name) else {
            return tool_error(
                "UNKNOWN_TOOL",
                format!("no tool named `{name}`; see list_tools"),
            );
        };
        let request = match call::request(binding, args) {
            Ok(r) => r,
            Err(e) => return tool_error("INVALID_ARGUMENTS", e.to_string()),
        };
        match self.backend.call(request.clone(), parts).await {
            Ok(answer) => call::result(binding, &request, answer, self.backend.base_url()),
            Err(e) => tool_error("API_UNREACHABLE", e.to_string()),
        }
    }
}

fn tool_error(code: &str, message: String) -> CallToolResult {
    CallToolResult::structured_error(json!({
        "error": code,
        "message": message,
        "next_steps": ["Check the tool's name and arguments with list_tools"],
    }))
}

impl<B: Backend> ServerHandler for Mailroom<B> {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("mailroom", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(
            self.catalogue.tools().to_vec(),
        ))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.catalogue.tool(name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = request.arguments.unwrap_or_default();
        let parts = context.extensions.get::<Parts>();
        Ok(self.run(&request.name, &args, parts).await.into())
    }
}

/// `/mcp` for the API router: Streamable HTTP, stateless (every request stands alone, so any
/// process sharing the database can answer it), with JSON answers. `api` is the API router
/// tool calls are dispatched to; `stop` ends open requests at shutdown.
///
/// Every request must present a valid key (the API's `Auth` rule, 401 otherwise, before any
/// MCP is spoken); each tool call presents it again to its route, which applies its scopes.
/// The `Host` check rmcp offers against DNS rebinding is off: it guards servers that trust
/// whoever reaches them, and this one trusts only keys, which a rebinding page does not have.
pub fn routes(
    state: &AppState,
    api: Router,
    stop: CancellationToken,
) -> Result<Router<AppState>, MissingRoute> {
    let base_url = state.services.config().public_url.clone();
    let mcp = Mailroom::new(InProcess::new(api, base_url))?;
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .disable_allowed_hosts()
        .with_max_request_body_bytes(MAX_REQUEST_BYTES)
        .with_cancellation_token(stop);
    let service = StreamableHttpService::new(
        move || Ok(mcp.clone()),
        Arc::new(NeverSessionManager::default()),
        config,
    );
    Ok(Router::new().route_service("/mcp", service).route_layer(
        axum::middleware::from_fn_with_state(state.clone(), require_key),
    ))
}

/// 401 (as every API route answers it) unless the request presents a valid key.
async fn require_key(_auth: Auth, req: Request, next: Next) -> Response {
    next.run(req).await
}

/// Errors of `mailroom mcp --stdio`.
#[derive(Debug, thiserror::Error)]
pub enum StdioError {
    #[error(transparent)]
    Catalogue(#[from] MissingRoute),
    #[error(transparent)]
    Backend(#[from] crate::backend::BackendError),
    #[error("MCP over stdio: {0}")]
    Protocol(String),
}

/// Speaks MCP on standard input and output until the client closes them, sending each tool
/// call to the server at `api_url` with `key`.
pub async fn serve_stdio(api_url: &str, key: String) -> Result<(), StdioError> {
    let mcp = Mailroom::new(Remote::new(api_url, key)?)?;
    let running = mcp
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| StdioError::Protocol(e.to_string()))?;
    running
        .waiting()
        .await
        .map_err(|e| StdioError::Protocol(e.to_string()))?;
    Ok(())
}
