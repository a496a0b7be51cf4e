//! Events out: the webhook worker.
//!
//! It reads the outbox (the `events` table every change writes into, in its own
//! transaction), turns each event into one delivery per webhook that wants it, and sends the
//! deliveries: signed (Standard Webhooks), at least once, with the same `webhook-id` on every
//! retry, on a schedule that spans about a day and a half. Deliveries are leased in the
//! database, so several processes sharing PostgreSQL never send one twice at once, and a
//! restart loses nothing: what was not delivered is still pending.

mod resolver;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mailroom_core::time::{now_ms, rfc3339};
use mailroom_services::Services;
use mailroom_store::{AttemptOutcome, DueDelivery};
use rand::Rng;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Settings of the worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Delays before the 2nd, 3rd, … attempt; the first is immediate.
    pub retry_schedule: Vec<Duration>,
    /// Time allowed for one delivery (connect, send, answer).
    pub timeout: Duration,
    /// Deliveries in flight at once, in all.
    pub max_in_flight: usize,
    /// Deliveries in flight at once to one endpoint.
    pub max_per_endpoint: usize,
    /// Base of links in payloads (`…/v1/inboxes/{id}/messages/{mid}`).
    pub public_url: String,
}

/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);
/// A lease lasts longer than any delivery may take; an expired lease (a crashed process)
/// makes the delivery due again.
const LEASE: Duration = Duration::from_secs(120);

pub struct WebhookWorker {
    services: Services,
    client: reqwest::Client,
    config: WorkerConfig,
    endpoints: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl WebhookWorker {
    pub fn new(services: Services, config: WorkerConfig) -> Result<WebhookWorker, reqwest::Error> {
        let policy = services.config().webhooks;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .no_proxy()
            .user_agent(concat!("Mailroom-Webhooks/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(resolver::PolicyResolver { policy }))
            .build()?;
        Ok(WebhookWorker {
            services,
            client,
            config,
            endpoints: Mutex::new(HashMap::new()),
        })
    }

    fn endpoint(&self, webhook_id: &str) -> Arc<Semaphore> {
        let mut map = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(webhook_id.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.config.max_per_endpoint)))
            .clone()
    }

    /// Runs until `stop`; deliveries in flight then get a few seconds to finish (the rest
    /// stay leased and become due again when the lease runs out).
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let global = Arc::new(Semaphore::new(self.config.max_in_flight));
        let mut tasks = JoinSet::new();
        let mut wake = self.services.arrivals();
        loop {
            if stop.is_cancelled() {
                break;
            }
            wake.borrow_and_update();
            let now = now_ms();
            if let Err(e) = self.services.store().fan_out(500, now).await {
                tracing::warn!(error = %e, "webhook fan-out failed; retrying");
            }
            let free = global.available_permits() as u32;
            let mut leased = 0;
            if free > 0 {
                match self
                    .services
                    .store()
                    .lease_due_deliveries(now, free, now + LEASE.as_millis() as i64)
                    .await
                {
                    Ok(due) => {
                        leased = due.len();
                        for d in due {
                            let Ok(permit) = global.clone().acquire_owned().await else {
                                break;
                            };
                            tasks.spawn(self.clone().deliver(d, permit));
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "leasing webhook deliveries failed"),
                }
            }
            while tasks.try_join_next().is_some() {}
            if leased == 0 {
                tokio::select! {
                    _ = wake.changed() => {}
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = stop.cancelled() => break,
                }
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        tasks.shutdown().await;
    }

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

    async fn deliver(self: Arc<Self>, d: DueDelivery, _global: OwnedSemaphorePermit) {
        let Ok(_endpoint) = self.endpoint(&d.webhook.id).acquire_owned().await else {
            return;
        };
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
            self.services.mail_arrived();
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
