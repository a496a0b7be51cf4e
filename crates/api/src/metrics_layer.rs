//! Request metrics for Prometheus: a counter and a latency histogram per route template
//! (never per raw path, which would make one series per inbox id).

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use metrics::SharedString;

pub async fn record(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    // A static string for the method: no allocation for it per request.
    let method: &'static str = match *req.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::PUT => "PUT",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    };
    let resp = next.run(req).await;
    let status = resp.status().as_str().to_owned();
    let labels = [
        ("method", SharedString::const_str(method)),
        ("route", SharedString::from(route)),
        ("status", SharedString::from(status)),
    ];
    metrics::counter!("mailroom_http_requests_total", &labels).increment(1);
    metrics::histogram!("mailroom_http_request_duration_seconds", &labels[..2])
        .record(start.elapsed().as_secs_f64());
    resp
}
