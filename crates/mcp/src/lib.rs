//! Mailroom over the Model Context Protocol.
//!
//! Every tool is one API route: a call becomes that route's HTTP request, with the caller's
//! own key, and the route's answer becomes the tool's result. So a tool is authenticated,
//! scoped, validated and shaped exactly as the route is (its handler calls the same
//! `mailroom_services` functions), and no rule exists twice. The tools' input schemas come
//! from the OpenAPI document of those routes ([`catalogue`]).
//!
//! Two transports share the tools ([`server::Mailroom`]):
//!
//! - `/mcp` on the API listener (Streamable HTTP, [`server::routes`]): a tool call is
//!   dispatched inside the process to the API router ([`backend::InProcess`]), carrying the
//!   `Authorization` header and peer address of the `/mcp` request.
//! - `mailroom mcp --stdio` ([`server::serve_stdio`]): for agent hosts that start MCP
//!   servers as processes; a tool call is sent over HTTP to a running server
//!   ([`backend::Remote`]).

pub mod backend;
pub mod call;
pub mod catalogue;
pub mod server;

pub use backend::{Backend, InProcess, Remote};
pub use server::{Mailroom, routes, serve_stdio};
