//! `GET /upgrade?token=…`: the page an upgrade link opens when the operator has not
//! configured a billing page of their own. It checks the link and tells the operator exactly
//! how to grant it: `mailroom admin redeem-upgrade <token>`, which works once.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use mailroom_core::time::{now_ms, rfc3339};
use mailroom_services::ServiceError;
use serde::Deserialize;

use crate::AppState;
use crate::extract::ApiQuery;
use crate::openapi::escape_html;

#[derive(Debug, Deserialize)]
pub struct TokenQuery {
    token: Option<String>,
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t} · Mailroom</title><style>body{{font:16px/1.5 system-ui,sans-serif;\
         max-width:42rem;margin:3rem auto;padding:0 1rem;color:#222}}code,pre{{background:#f3f3f3;\
         padding:.1rem .3rem;border-radius:4px}}pre{{padding:.8rem;overflow-x:auto}}</style></head>\
         <body><h1>{t}</h1>{body}</body></html>",
        t = escape_html(title)
    );
    (status, Html(html)).into_response()
}

pub async fn show(State(state): State<AppState>, ApiQuery(q): ApiQuery<TokenQuery>) -> Response {
    let Some(token) = q.token.filter(|t| !t.is_empty()) else {
        return page(
            StatusCode::BAD_REQUEST,
            "Upgrade link incomplete",
            "<p>This page needs the <code>token</code> of an upgrade link. Ask the agent for the whole link.</p>",
        );
    };
    match state.services.describe_upgrade_token(&token).await {
        Ok(info) => {
            let status_line = if info.redeemed {
                "<p><strong>This link has already been used.</strong> Each link grants its upgrade once.</p>".to_owned()
            } else if info.expires_at_ms < now_ms() {
                format!(
                    "<p><strong>This link expired at {}.</strong> Ask the agent for a new one.</p>",
                    rfc3339(info.expires_at_ms)
                )
            } else {
                format!(
                    "<p>To grant it, run on the server:</p><pre>mailroom admin redeem-upgrade '{}'</pre>\
                     <p>or set the tier directly with <code>mailroom admin set-tier {} {}</code>. \
                     The link is valid until {} and works once.</p>",
                    escape_html(&info.token),
                    escape_html(&info.account_id),
                    info.target_tier,
                    rfc3339(info.expires_at_ms),
                )
            };
            let body = format!(
                "<p>Account <code>{}</code> (now on the <strong>{}</strong> tier) asks to be moved to \
                 the <strong>{}</strong> tier.</p>{status_line}",
                escape_html(&info.account_id),
                info.current_tier.label(),
                info.target_tier.label(),
            );
            page(StatusCode::OK, "Upgrade request", &body)
        }
        Err(ServiceError::Store(e)) => {
            tracing::error!(error = %e, "upgrade page: store error");
            page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again shortly",
                "<p>The server could not reach its database.</p>",
            )
        }
        Err(e) => page(
            StatusCode::BAD_REQUEST,
            "Upgrade link not valid",
            &format!("<p>{}</p>", escape_html(&e.to_string())),
        ),
    }
}
