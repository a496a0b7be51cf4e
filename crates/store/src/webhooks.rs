//! Webhook endpoints, the fan-out of outbox events into deliveries, and the delivery
//! schedule that the worker leases from.

use mailroom_core::event::NewEvent;
use mailroom_core::ids::{IdKind, new_id};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::error::is_unique_violation;
use crate::events::append_event;
use crate::messages::word_set;
use crate::{EventRow, Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRow {
    pub id: String,
    pub account_id: String,
    pub url: String,
    pub events: Vec<String>,
    pub inbox_ids: Vec<String>,
    pub client_id: Option<String>,
    /// `active`, `disabled` (by the owner, or after a 410) or `unhealthy` (retries ran out).
    pub status: String,
    pub secret_generation: i64,
    /// Until when the previous secret still signs (rotation overlap).
    pub previous_expires_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub inbox_ids: Vec<String>,
    pub client_id: Option<String>,
    pub now: i64,
}

/// A change to a webhook; `None` leaves a field as it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct WebhookUpdate<'a> {
    pub url: Option<&'a str>,
    pub events: Option<&'a [String]>,
    pub inbox_ids: Option<&'a [String]>,
    pub status: Option<&'a str>,
}

/// What [`Store::create_webhook`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateWebhookOutcome {
    Created(WebhookRow),
    /// A repeat of an earlier create with the same `client_id`.
    Existing(WebhookRow),
    /// The account holds `current` webhooks, its tier's limit.
    LimitReached {
        current: u64,
    },
}

/// What a leased delivery needs.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub delivery_id: String,
    pub attempts: i64,
    pub webhook: WebhookRow,
    pub event: EventRow,
}

/// One attempt, as `GET /v1/webhooks/{id}/deliveries` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRow {
    pub delivery_id: String,
    pub event_id: String,
    pub delivery_status: String,
    pub attempted_at: i64,
    pub status_code: Option<i64>,
    pub latency_ms: i64,
    pub error: Option<String>,
}

/// What to do with a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Delivered,
    RetryAt(i64),
    Failed,
}

pub(crate) const WEBHOOK_COLUMNS: &str = "w.id, w.account_id, w.url, w.events, w.inbox_ids, w.client_id, w.status, \
     w.secret_generation, w.previous_expires_at, w.created_at, w.updated_at";

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_owned).collect()
}

pub(crate) fn webhook_from_row(r: &AnyRow, at: usize) -> Result<WebhookRow, StoreError> {
    let events: String = r.try_get(at + 3)?;
    let inbox_ids: String = r.try_get(at + 4)?;
    Ok(WebhookRow {
        id: r.try_get(at)?,
        account_id: r.try_get(at + 1)?,
        url: r.try_get(at + 2)?,
        events: words(&events),
        inbox_ids: words(&inbox_ids),
        client_id: r.try_get(at + 5)?,
        status: r.try_get(at + 6)?,
        secret_generation: r.try_get(at + 7)?,
        previous_expires_at: r.try_get(at + 8)?,
        created_at: r.try_get(at + 9)?,
        updated_at: r.try_get(at + 10)?,
    })
}

/// Whether `webhook` wants `event`.
pub fn matches(webhook: &WebhookRow, event: &EventRow) -> bool {
    if event.event_type == "webhook.test" {
        return event.data["webhook_id"] == webhook.id.as_str();
    }
    let type_ok = webhook
        .events
        .iter()
        .any(|e| e == "*" || *e == event.event_type);
    let inbox_ok = webhook.inbox_ids.is_empty()
        || event
            .inbox_id
            .as_ref()
            .is_some_and(|i| webhook.inbox_ids.contains(i));
    type_ok && inbox_ok && event.created_at >= webhook.created_at
}

impl Store {
    /// Creates a webhook within the account's limit of `max` endpoints (`None`: no limit),
    /// or returns the account's webhook with the same `client_id`. The account row is
    /// locked while counting, so concurrent creates cannot pass the limit together.
    pub async fn create_webhook(
        &self,
        account_id: &str,
        w: &NewWebhook,
        max: Option<u64>,
    ) -> Result<CreateWebhookOutcome, StoreError> {
        if let Some(existing) = self.webhook_by_client_id(account_id, w).await? {
            return Ok(CreateWebhookOutcome::Existing(existing));
        }
        let mut tx = self.write.begin().await?;
        sqlx::query("UPDATE accounts SET updated_at = updated_at WHERE id = $1")
            .bind(account_id)
            .execute(&mut *tx)
            .await?;
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM webhooks WHERE account_id = $1")
            .bind(account_id)
            .fetch_one(&mut *tx)
            .await?;
        let current = u64::try_from(count).unwrap_or(0);
        if max.is_some_and(|m| current >= m) {
            return Ok(CreateWebhookOutcome::LimitReached { current });
        }
        let inserted = sqlx::query(
            "INSERT INTO webhooks (id, account_id, url, events, inbox_ids, client_id, status, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 'active', $7, $7)",
        )
        .bind(&w.id)
        .bind(account_id)
        .bind(&w.url)
        .bind(word_set(&w.events))
        .bind(word_set(&w.inbox_ids))
        .bind(w.client_id.as_deref())
        .bind(w.now)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => tx.commit().await?,
            // A concurrent create with the same client_id won: return its webhook.
            Err(e) if is_unique_violation(&e) && w.client_id.is_some() => {
                drop(tx);
                return match self.webhook_by_client_id(account_id, w).await? {
                    Some(row) => Ok(CreateWebhookOutcome::Existing(row)),
                    None => Err(e.into()),
                };
            }
            Err(e) => return Err(e.into()),
        }
        let row = self
            .get_webhook(account_id, &w.id)
            .await?
            .ok_or_else(|| StoreError::Corrupt("webhook vanished after insert".into()))?;
        Ok(CreateWebhookOutcome::Created(row))
    }

    async fn webhook_by_client_id(
        &self,
        account_id: &str,
        w: &NewWebhook,
    ) -> Result<Option<WebhookRow>, StoreError> {
        let Some(cid) = &w.client_id else {
            return Ok(None);
        };
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks w WHERE w.account_id = $1 AND w.client_id = $2"
        )))
        .bind(account_id)
        .bind(cid)
        .fetch_optional(&self.read)
        .await?;
        row.map(|r| webhook_from_row(&r, 0)).transpose()
    }

    /// How many webhooks the account holds, whatever their status (a disabled one may be
    /// enabled again, so it keeps its place in the limit).
    pub async fn count_webhooks(&self, account_id: &str) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM webhooks WHERE account_id = $1")
            .bind(account_id)
            .fetch_one(&self.read)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    pub async fn get_webhook(
        &self,
        account_id: &str,
        id: &str,
    ) -> Result<Option<WebhookRow>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks w WHERE w.id = $1 AND w.account_id = $2"
        )))
        .bind(id)
        .bind(account_id)
        .fetch_optional(&self.read)
        .await?;
        row.map(|r| webhook_from_row(&r, 0)).transpose()
    }

    pub async fn list_webhooks(&self, account_id: &str) -> Result<Vec<WebhookRow>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks w WHERE w.account_id = $1 ORDER BY w.created_at, w.id"
        )))
        .bind(account_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(|r| webhook_from_row(r, 0)).collect()
    }

    /// Changes what is given; `None` fields stay.
    pub async fn update_webhook(
        &self,
        account_id: &str,
        id: &str,
        change: &WebhookUpdate<'_>,
        now: i64,
    ) -> Result<Option<WebhookRow>, StoreError> {
        let WebhookUpdate {
            url,
            events,
            inbox_ids,
            status,
        } = *change;
        let Some(current) = self.get_webhook(account_id, id).await? else {
            return Ok(None);
        };
        sqlx::query(
            "UPDATE webhooks SET url = $1, events = $2, inbox_ids = $3, status = $4, updated_at = $5 \
             WHERE id = $6 AND account_id = $7",
        )
        .bind(url.unwrap_or(&current.url))
        .bind(word_set(events.unwrap_or(&current.events)))
        .bind(word_set(inbox_ids.unwrap_or(&current.inbox_ids)))
        .bind(status.unwrap_or(&current.status))
        .bind(now)
        .bind(id)
        .bind(account_id)
        .execute(&self.write)
        .await?;
        self.get_webhook(account_id, id).await
    }

    pub async fn delete_webhook(&self, account_id: &str, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM webhooks WHERE id = $1 AND account_id = $2")
            .bind(id)
            .bind(account_id)
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// A new secret generation; the previous one keeps signing until `previous_until`.
    pub async fn rotate_webhook_secret(
        &self,
        account_id: &str,
        id: &str,
        previous_until: i64,
        now: i64,
    ) -> Result<Option<WebhookRow>, StoreError> {
        let done = sqlx::query(
            "UPDATE webhooks SET secret_generation = secret_generation + 1, \
             previous_expires_at = $1, updated_at = $2 WHERE id = $3 AND account_id = $4",
        )
        .bind(previous_until)
        .bind(now)
        .bind(id)
        .bind(account_id)
        .execute(&self.write)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        self.get_webhook(account_id, id).await
    }

    /// Records a `webhook.test` event for this webhook (delivered only to it).
    pub async fn append_webhook_test(
        &self,
        account_id: &str,
        webhook_id: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.write.begin().await?;
        append_event(
            &mut tx,
            &NewEvent::webhook_test(account_id, webhook_id),
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records an attempt and what follows from it, and releases the lease.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_attempt(
        &self,
        delivery_id: &str,
        now: i64,
        status_code: Option<u16>,
        latency_ms: i64,
        error: Option<&str>,
        outcome: AttemptOutcome,
    ) -> Result<(), StoreError> {
        let mut tx = self.write.begin().await?;
        sqlx::query(
            "INSERT INTO webhook_attempts (id, delivery_id, attempted_at, status_code, latency_ms, error) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(new_id(IdKind::Attempt))
        .bind(delivery_id)
        .bind(now)
        .bind(status_code.map(i64::from))
        .bind(latency_ms)
        .bind(error)
        .execute(&mut *tx)
        .await?;
        let (status, next) = match outcome {
            AttemptOutcome::Delivered => ("delivered", now),
            AttemptOutcome::RetryAt(at) => ("pending", at),
            AttemptOutcome::Failed => ("failed", now),
        };
        sqlx::query(
            "UPDATE webhook_deliveries SET status = $1, next_attempt_at = $2, attempts = attempts + 1, \
             lease_until = 0, updated_at = $3 WHERE id = $4",
        )
        .bind(status)
        .bind(next)
        .bind(now)
        .bind(delivery_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Sets a webhook's status from the worker (410 → `disabled`; retries exhausted →
    /// `unhealthy`, recording `webhook.unhealthy` once).
    pub async fn set_webhook_status_by_worker(
        &self,
        webhook: &WebhookRow,
        status: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.write.begin().await?;
        let changed = sqlx::query(
            "UPDATE webhooks SET status = $1, updated_at = $2 WHERE id = $3 AND status = 'active'",
        )
        .bind(status)
        .bind(now)
        .bind(&webhook.id)
        .execute(&mut *tx)
        .await?;
        if changed.rows_affected() > 0 && status == "unhealthy" {
            let event = NewEvent::webhook_unhealthy(&webhook.account_id, &webhook.id, &webhook.url);
            append_event(&mut tx, &event, now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The latest attempts of a webhook's deliveries, newest first.
    pub async fn list_attempts(
        &self,
        account_id: &str,
        webhook_id: &str,
        limit: u32,
    ) -> Result<Vec<AttemptRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.id, d.event_id, d.status, a.attempted_at, a.status_code, a.latency_ms, a.error \
             FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id \
             WHERE d.webhook_id = $1 AND d.account_id = $2 ORDER BY a.attempted_at DESC, a.id LIMIT $3",
        )
        .bind(webhook_id)
        .bind(account_id)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AttemptRow {
                    delivery_id: r.try_get(0)?,
                    event_id: r.try_get(1)?,
                    delivery_status: r.try_get(2)?,
                    attempted_at: r.try_get(3)?,
                    status_code: r.try_get(4)?,
                    latency_ms: r.try_get(5)?,
                    error: r.try_get(6)?,
                })
            })
            .collect()
    }

    /// Makes a delivery due again now (replay). False if the webhook has no such delivery.
    pub async fn replay_delivery(
        &self,
        account_id: &str,
        webhook_id: &str,
        delivery_id: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $1, attempts = 0, \
             lease_until = 0, updated_at = $1 WHERE id = $2 AND webhook_id = $3 AND account_id = $4",
        )
        .bind(now)
        .bind(delivery_id)
        .bind(webhook_id)
        .bind(account_id)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The position of event `id` of an account (to resume `GET /v1/events`).
    pub async fn account_event_seq(
        &self,
        account_id: &str,
        id: &str,
    ) -> Result<Option<i64>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT seq FROM events WHERE id = $1 AND account_id = $2")
                .bind(id)
                .bind(account_id)
                .fetch_optional(&self.read)
                .await?,
        )
    }
}
