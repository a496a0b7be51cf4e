//! The OpenAPI document (generated from the handlers' annotations by utoipa) and `/docs`,
//! a page rendered from it on the server, so it works with no network access and no
//! JavaScript.

use std::fmt::Write as _;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Mailroom API",
        description = "Email for AI agents: create an account and inboxes in one call, read and \
                       send mail, and learn from every answer what you may do next. \
                       Authenticate with `Authorization: Bearer <key>` (or Basic with the key as \
                       user name). Success answers are `{\"result\": …, \"next_steps\": […]}`; \
                       errors are `{\"error\": CODE, \"message\": …}`."
    ),
    paths(
        routes::create_inbox,
        routes::list_inboxes,
        routes::get_inbox,
        routes::delete_inbox,
        routes::rotate_key,
        routes::get_account,
        routes::get_smtp,
        routes::rotate_account_key,
        routes::rotate_smtp,
        routes::get_capabilities,
        routes::create_upgrade_link,
        routes::notify_operator,
        routes::list_notices,
        routes::resolve_notice,
        routes::list_messages,
        routes::get_message,
        routes::get_raw,
        routes::get_attachment,
        routes::patch_message,
        routes::delete_message,
        routes::list_threads,
        routes::get_thread,
        routes::inbox_events,
        routes::list,
        routes::create,
        routes::mobile,
        routes::delete,
        routes::rotate,
        routes::v1_doc::list_v1,
        routes::v1_doc::create_v1,
        routes::v1_doc::delete_v1,
        routes::v1_doc::rotate_v1,
        crate::routes::system::healthz,
        routes::send,
        routes::reply,
        routes::reply_all,
        routes::forward,
        routes::create_webhook,
        routes::list_webhooks,
        routes::get_webhook,
        routes::patch_webhook,
        routes::delete_webhook,
        routes::test_webhook,
        routes::rotate_secret,
        routes::list_deliveries,
        routes::replay_delivery,
        routes::list_events,
        routes::add_domain,
        routes::list_domains,
        routes::get_domain,
        routes::verify_domain,
        routes::delete_domain,
        routes::zone_file,
        routes::create_credential,
        routes::list_credentials,
        routes::delete_credential,
        routes::grant,
        routes::refresh,
        routes::revoke,
        routes::me,
        routes::create_user,
        routes::list_users,
        routes::patch_user,
        routes::delete_user,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "inboxes", description = "Accounts and inboxes (seed 003)"),
        (name = "messages", description = "Received mail: list, wait, read, label, move, delete, threads"),
        (name = "webhooks", description = "Signed webhooks with retries (Standard Webhooks), and the account's event log"),
        (name = "keys", description = "API keys with scopes, and mail client connection info (seed 002)"),
        (name = "account", description = "Tier, limits, SMTP credentials, capabilities, upgrades, notices to the operator"),
        (name = "domains", description = "Custom domains, their DNS records and verification, and their SMTP credentials (seed 001)"),
        (name = "auth", description = "Operator users: password login, JWT access and refresh tokens (seed 004)"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An account key (mr_acc_…) or inbox key (mr_inb_…)"))
                    .build(),
            ),
        );
    }
}

/// The OpenAPI 3.1 document of the API.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

pub(crate) fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A readable page of every route: method, path, summary, parameters, body and answers.
pub(crate) fn docs_html(doc: &utoipa::openapi::OpenApi) -> String {
    let json = serde_json::to_value(doc).unwrap_or_default();
    let mut html = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Mailroom API</title><style>body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;\
         margin:2rem auto;padding:0 1rem;color:#222}code{background:#f3f3f3;padding:.1rem .3rem;\
         border-radius:4px}section{border-top:1px solid #ddd;padding:.5rem 0}.m{font-weight:700;\
         text-transform:uppercase;margin-right:.5rem}table{border-collapse:collapse}td{padding:.1rem \
         .6rem .1rem 0;vertical-align:top}</style></head><body><h1>Mailroom API</h1>",
    );
    if let Some(d) = json.pointer("/info/description").and_then(|v| v.as_str()) {
        let _ = write!(html, "<p>{}</p>", escape_html(d));
    }
    html.push_str(
        "<p>Machine-readable: <a href=\"/openapi.json\"><code>/openapi.json</code></a> (OpenAPI 3.1).</p>",
    );
    let empty = serde_json::Map::new();
    let paths = json
        .get("paths")
        .and_then(|p| p.as_object())
        .unwrap_or(&empty);
    for (path, item) in paths {
        let Some(item) = item.as_object() else {
            continue;
        };
        for method in ["get", "post", "put", "patch", "delete"] {
            let Some(op) = item.get(method) else { continue };
            let _ = write!(
                html,
                "<section><p><span class=\"m\">{method}</span><code>{}</code></p>",
                escape_html(path)
            );
            for key in ["summary", "description"] {
                if let Some(s) = op.get(key).and_then(|v| v.as_str()) {
                    let _ = write!(html, "<p>{}</p>", escape_html(s));
                }
            }
            if let Some(params) = op.get("parameters").and_then(|v| v.as_array()) {
                html.push_str("<p>Parameters:</p><table>");
                for p in params {
                    let _ = write!(
                        html,
                        "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                        escape_html(p.get("name").and_then(|v| v.as_str()).unwrap_or("")),
                        escape_html(p.get("in").and_then(|v| v.as_str()).unwrap_or("")),
                        escape_html(p.get("description").and_then(|v| v.as_str()).unwrap_or("")),
                    );
                }
                html.push_str("</table>");
            }
            if let Some(responses) = op.get("responses").and_then(|v| v.as_object()) {
                html.push_str("<p>Answers:</p><table>");
                for (status, r) in responses {
                    let _ = write!(
                        html,
                        "<tr><td><code>{}</code></td><td>{}</td></tr>",
                        escape_html(status),
                        escape_html(r.get("description").and_then(|v| v.as_str()).unwrap_or("")),
                    );
                }
                html.push_str("</table>");
            }
            html.push_str("</section>");
        }
    }
    html.push_str("</body></html>");
    html
}
