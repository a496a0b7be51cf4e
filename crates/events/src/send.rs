//! One delivery: the signed POST, what its answer means (delivered, retry when, failed),
//! and the record of the attempt.

use std::time::{Duration, Instant};

use mailroom_core::time::{now_ms, rfc3339};
use mailroom_store::{AttemptOutcome, DueDelivery};
use rand::Rng;

use crate::{Held, WebhookWorker};

/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

impl WebhookWorker {
    fn payload(&self, d: &DueDelivery) -> Vec<u8> {
        let mut data = d.event.data.clone();
        if let (Some(inbox), Some(mid)) = (
            d.event.inbox_id.as_deref(),
            d.event.data.get("message_id").and_then(|v| v.as_str()),
        ) && let Some(obj) = data.as_object_mut()
        {
            obj.insert(
                "url".into(),
                format!(
                    "{}/v1/inboxes/{inbox}/messages/{mid}",
                    self.config.public_url.trim_end_matches('/')
                )
                .into(),
            );
        }
        let body = serde_json::json!({
            "type": d.event.event_type,
            "timestamp": rfc3339(d.event.created_at),
            "data": data,
        });
        let bytes = body.to_string().into_bytes();
        if bytes.len() <= 256 * 1024 {
            return bytes;
        }
        // Too big for a webhook: say so, and where to fetch the whole thing.
        serde_json::json!({
            "type": d.event.event_type,
            "timestamp": rfc3339(d.event.created_at),
            "data": {"truncated": true, "event_id": d.event.id},
        })
        .to_string()
        .into_bytes()
    }

    /// Sends `d`; `_held` is its place in the global, account and endpoint budgets,
    /// given back when this returns.
    pub(crate) async fn deliver(self: std::sync::Arc<Self>, d: DueDelivery, _held: Held) {
        let body = self.payload(&d);
        let now = now_ms();
        let timestamp = now / 1000;
        let signature = self
            .services
            .sign_webhook(&d.webhook, &d.event.id, timestamp, &body, now);
        let started = Instant::now();
        let sent = self
            .client
            .post(&d.webhook.url)
            .header("content-type", "application/json")
            .header("webhook-id", &d.event.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        let latency_ms = started.elapsed().as_millis() as i64;
        let attempt = d.attempts + 1;
        let retry = |after: Option<Duration>| -> AttemptOutcome {
            match self.config.retry_schedule.get(d.attempts as usize) {
                Some(delay) => {
                    let delay = after.map_or_else(|| jitter(*delay), |a| a.min(MAX_RETRY_AFTER));
                    AttemptOutcome::RetryAt(now_ms() + delay.as_millis() as i64)
                }
                None => AttemptOutcome::Failed,
            }
        };
        let (code, error, outcome) = match sent {
            Ok(resp) => {
                let status = resp.status();
                let retry_after = retry_after(resp.headers());
                if status.is_success() {
                    (Some(status.as_u16()), None, AttemptOutcome::Delivered)
                } else if status.as_u16() == 410 {
                    (
                        Some(410),
                        Some("410 Gone: endpoint disabled".to_owned()),
                        AttemptOutcome::Failed,
                    )
                } else if matches!(status.as_u16(), 429 | 503) {
                    (Some(status.as_u16()), None, retry(retry_after))
                } else {
                    (Some(status.as_u16()), None, retry(None))
                }
            }
            Err(e) => {
                let why = if e.is_timeout() {
                    "timed out".to_owned()
                } else if e.is_redirect() {
                    "redirects are not followed".to_owned()
                } else {
                    error_chain(&e)
                };
                (None, Some(why), retry(None))
            }
        };
        metrics::counter!("mailroom_webhook_attempts_total", "result" => match outcome {
            AttemptOutcome::Delivered => "delivered",
            AttemptOutcome::RetryAt(_) => "retry",
            AttemptOutcome::Failed => "failed",
        })
        .increment(1);
        let store = self.services.store();
        if let Err(e) = store
            .record_attempt(
                &d.delivery_id,
                now_ms(),
                code,
                latency_ms,
                error.as_deref(),
                outcome,
            )
            .await
        {
            tracing::error!(error = %e, delivery = %d.delivery_id, "could not record a webhook attempt");
            return;
        }
        let new_status = match (code, outcome) {
            (Some(410), _) => Some("disabled"),
            (_, AttemptOutcome::Failed) => Some("unhealthy"),
            _ => None,
        };
        if let Some(status) = new_status {
            tracing::warn!(webhook = %d.webhook.id, url = %d.webhook.url, attempt, status, "webhook endpoint marked {status}");
            if let Err(e) = store
                .set_webhook_status_by_worker(&d.webhook, status, now_ms())
                .await
            {
                tracing::error!(error = %e, "could not mark a webhook {status}");
            }
            self.services.events_recorded();
        }
    }
}

/// ±10 % so that retries of many deliveries do not arrive in lockstep.
fn jitter(d: Duration) -> Duration {
    let f: f64 = rand::rng().random_range(0.9..1.1);
    d.mul_f64(f)
}

/// `Retry-After`: seconds or an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let ms = at.timestamp_millis() - now_ms();
    Some(Duration::from_millis(ms.max(0) as u64))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s.chars().take(500).collect()
}
