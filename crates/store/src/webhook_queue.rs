//! The webhook queue: the fan-out of outbox events into deliveries, in bounded batches, and
//! the leasing of due deliveries one account at a time, so that the worker can share its
//! delivery slots fairly between accounts.

use std::collections::HashMap;

use mailroom_core::ids::{IdKind, new_id};
use sqlx::Row;

use crate::webhooks::{WEBHOOK_COLUMNS, matches, webhook_from_row};
use crate::{DueDelivery, EventRow, Store, StoreError, WebhookRow};

/// How old an event must be before fan-out reads it on PostgreSQL (see [`Store::fan_out`]).
pub const FANOUT_GRACE_MS: i64 = 500;

/// Rows per multi-row `INSERT`: few round trips, well under either backend's limit of bound
/// parameters (5 per row).
const INSERT_CHUNK: usize = 200;

/// How much one fan-out transaction may do. The writer (SQLite has one) is held for one
/// batch only, so an account with many webhooks and a burst of events costs other writers
/// at most one batch's wait at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FanOutBudget {
    /// Events read per transaction.
    pub events: u32,
    /// Delivery rows written per transaction (an event that needs more is split over
    /// several transactions).
    pub deliveries: u32,
}

/// Where a partly fanned-out event stands: the webhooks up to `webhook_id` (in id order)
/// have their delivery rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FanOutResume {
    pub seq: i64,
    pub webhook_id: String,
}

/// What one fan-out batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FanOutBatch {
    /// Events the cursor moved past.
    pub events: usize,
    /// Delivery rows written.
    pub deliveries: usize,
    /// The budget ran out with events left: call again (without waiting).
    pub more: bool,
    /// Give this to the next call so that it goes on where this one stopped inside an event.
    /// Without it the next call starts the event again; rows already written are skipped
    /// (the insert ignores duplicates), so it is only a shortcut.
    pub resume: Option<FanOutResume>,
    /// PostgreSQL: the next event becomes readable at this time (see [`FANOUT_GRACE_MS`]).
    pub next_visible_at: Option<i64>,
}

/// A due delivery found for an account, not yet leased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueCandidate {
    pub delivery_id: String,
    pub webhook_id: String,
}

fn placeholders(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Store {
    /// Turns outbox events into deliveries for the webhooks that want them, and moves the
    /// fan-out cursor past them, within `budget` (one transaction).
    pub async fn fan_out(
        &self,
        budget: FanOutBudget,
        resume: Option<&FanOutResume>,
        now: i64,
    ) -> Result<FanOutBatch, StoreError> {
        // On PostgreSQL a transaction may take a sequence number and commit after a later
        // one is visible; reading past it would skip its event for good. Events are read
        // only once they are FANOUT_GRACE_MS old, so every transaction shorter than that
        // has committed. SQLite has one writer: sequence order is commit order.
        let visible_until = match self.backend() {
            crate::Backend::Postgres => now - FANOUT_GRACE_MS,
            crate::Backend::Sqlite => i64::MAX,
        };
        // A look without the writer first: most calls find nothing to do.
        let next: Option<(i64, i64)> = sqlx::query(
            "SELECT e.seq, e.created_at FROM events e, outbox_cursors c \
             WHERE c.name = 'webhooks' AND e.seq > c.seq ORDER BY e.seq LIMIT 1",
        )
        .fetch_optional(&self.read)
        .await?
        .map(|r| Ok::<_, StoreError>((r.try_get(0)?, r.try_get(1)?)))
        .transpose()?;
        match next {
            None => return Ok(FanOutBatch::default()),
            Some((_, created)) if created > visible_until => {
                return Ok(FanOutBatch {
                    next_visible_at: Some(created + FANOUT_GRACE_MS),
                    ..FanOutBatch::default()
                });
            }
            Some(_) => {}
        }
        let mut tx = self.write.begin().await?;
        // Touching the cursor row locks it on PostgreSQL: one process fans out at a time.
        sqlx::query("UPDATE outbox_cursors SET seq = seq WHERE name = 'webhooks'")
            .execute(&mut *tx)
            .await?;
        let cursor: i64 =
            sqlx::query_scalar("SELECT seq FROM outbox_cursors WHERE name = 'webhooks'")
                .fetch_one(&mut *tx)
                .await?;
        let rows = sqlx::query(
            "SELECT seq, id, account_id, inbox_id, type, data, created_at FROM events \
             WHERE seq > $1 AND created_at <= $3 ORDER BY seq LIMIT $2",
        )
        .bind(cursor)
        .bind(i64::from(budget.events.max(1)))
        .bind(visible_until)
        .fetch_all(&mut *tx)
        .await?;
        let events: Vec<EventRow> = rows
            .iter()
            .map(crate::events::event_from_row)
            .collect::<Result<_, _>>()?;
        let mut batch = FanOutBatch {
            more: events.len() >= budget.events.max(1) as usize,
            ..FanOutBatch::default()
        };
        let mut hooks_of: HashMap<String, Vec<WebhookRow>> = HashMap::new();
        let mut last = cursor;
        let room = budget.deliveries.max(1) as usize;
        for event in &events {
            if !hooks_of.contains_key(&event.account_id) {
                let hooks = active_webhooks(&mut tx, &event.account_id).await?;
                hooks_of.insert(event.account_id.clone(), hooks);
            }
            let hooks = hooks_of.get(&event.account_id).map(Vec::as_slice);
            let whole = fan_out_event(
                &mut tx,
                hooks.unwrap_or_default(),
                event,
                resume,
                room,
                &mut batch,
                now,
            )
            .await?;
            if !whole {
                batch.more = true;
                break;
            }
            last = event.seq;
            batch.events += 1;
        }
        if last != cursor {
            sqlx::query("UPDATE outbox_cursors SET seq = $1 WHERE name = 'webhooks'")
                .bind(last)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(batch)
    }

    /// The first account, after `after` in id order, with a delivery that is due at `now`
    /// and not leased. The worker walks accounts with this, round-robin.
    pub async fn next_due_account(
        &self,
        after: &str,
        now: i64,
    ) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT account_id FROM webhook_deliveries WHERE status = 'pending' \
             AND account_id > $1 AND next_attempt_at <= $2 AND lease_until < $2 \
             ORDER BY account_id LIMIT 1",
        )
        .bind(after)
        .bind(now)
        .fetch_optional(&self.read)
        .await?)
    }

    /// Up to `limit` due deliveries of one account, oldest first, leaving out the webhooks
    /// in `skip` (endpoints that have their share in flight). Nothing is leased.
    pub async fn due_deliveries_of(
        &self,
        account_id: &str,
        now: i64,
        limit: u32,
        skip: &[String],
    ) -> Result<Vec<DueCandidate>, StoreError> {
        let not_in = if skip.is_empty() {
            String::new()
        } else {
            format!("AND webhook_id NOT IN ({}) ", placeholders(4, skip.len()))
        };
        let sql = format!(
            "SELECT id, webhook_id FROM webhook_deliveries WHERE status = 'pending' \
             AND account_id = $1 AND next_attempt_at <= $2 AND lease_until < $2 {not_in}\
             ORDER BY next_attempt_at, id LIMIT $3"
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(account_id)
            .bind(now)
            .bind(i64::from(limit));
        for w in skip {
            q = q.bind(w);
        }
        let rows = q.fetch_all(&self.read).await?;
        rows.iter()
            .map(|r| {
                Ok(DueCandidate {
                    delivery_id: r.try_get(0)?,
                    webhook_id: r.try_get(1)?,
                })
            })
            .collect()
    }

    /// Leases the deliveries `ids` until `lease_until`, in one transaction, and returns
    /// those it got (one leased meanwhile by another process, or no longer pending, is left
    /// out).
    pub async fn lease_deliveries(
        &self,
        ids: &[String],
        now: i64,
        lease_until: i64,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "UPDATE webhook_deliveries SET lease_until = $1 WHERE lease_until < $2 \
             AND status = 'pending' AND id IN ({}) RETURNING id",
            placeholders(3, ids.len())
        );
        let mut q = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql))
            .bind(lease_until)
            .bind(now);
        for id in ids {
            q = q.bind(id);
        }
        let mut tx = self.write.begin().await?;
        let leased = q.fetch_all(&mut *tx).await?;
        tx.commit().await?;
        if leased.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT d.id, d.attempts, e.seq, e.id, e.account_id, e.inbox_id, e.type, e.data, \
             e.created_at, {WEBHOOK_COLUMNS} FROM webhook_deliveries d \
             JOIN webhooks w ON w.id = d.webhook_id JOIN events e ON e.id = d.event_id \
             WHERE d.id IN ({}) ORDER BY d.next_attempt_at, d.id",
            placeholders(1, leased.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in &leased {
            q = q.bind(id);
        }
        let rows = q.fetch_all(&self.read).await?;
        rows.iter()
            .map(|r| {
                let data: String = r.try_get(7)?;
                Ok(DueDelivery {
                    delivery_id: r.try_get(0)?,
                    attempts: r.try_get(1)?,
                    event: EventRow {
                        seq: r.try_get(2)?,
                        id: r.try_get(3)?,
                        account_id: r.try_get(4)?,
                        inbox_id: r.try_get(5)?,
                        event_type: r.try_get(6)?,
                        data: serde_json::from_str(&data)
                            .map_err(|e| StoreError::Corrupt(format!("event data: {e}")))?,
                        created_at: r.try_get(8)?,
                    },
                    webhook: webhook_from_row(r, 9)?,
                })
            })
            .collect()
    }
}

/// The account's active webhooks in id order (the order a split event resumes in).
async fn active_webhooks(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    account_id: &str,
) -> Result<Vec<WebhookRow>, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {WEBHOOK_COLUMNS} FROM webhooks w WHERE w.account_id = $1 AND w.status = 'active' \
         ORDER BY w.id"
    )))
    .bind(account_id)
    .fetch_all(&mut **tx)
    .await?;
    let mut hooks = rows
        .iter()
        .map(|r| webhook_from_row(r, 0))
        .collect::<Result<Vec<_>, _>>()?;
    // Byte order, whatever the database's collation: a resume point compares in Rust.
    hooks.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(hooks)
}

/// Writes `event`'s deliveries within what is left of the batch's room. `false` when the
/// event did not fit (whole or in part): the batch ends there, with `resume` set if part
/// of it was written.
async fn fan_out_event(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    hooks: &[WebhookRow],
    event: &EventRow,
    resume: Option<&FanOutResume>,
    room: usize,
    batch: &mut FanOutBatch,
    now: i64,
) -> Result<bool, StoreError> {
    let done_up_to = resume
        .filter(|r| r.seq == event.seq)
        .map(|r| r.webhook_id.as_str());
    let wanted: Vec<&WebhookRow> = hooks
        .iter()
        .filter(|h| done_up_to.is_none_or(|d| h.id.as_str() > d) && matches(h, event))
        .collect();
    if wanted.len() > room - batch.deliveries && batch.deliveries > 0 {
        // Leave this event whole to the next batch.
        return Ok(false);
    }
    // Only rows actually written count against the budget: a call without the resume
    // point walks past the rows an earlier batch wrote (they cost a look-up, not a write)
    // and still makes progress.
    let mut done = 0;
    while done < wanted.len() && batch.deliveries < room {
        let n = (room - batch.deliveries).min(wanted.len() - done);
        let part = &wanted[done..done + n];
        batch.deliveries += insert_deliveries(tx, part, event, now).await?;
        done += n;
    }
    if done < wanted.len() {
        batch.resume = Some(FanOutResume {
            seq: event.seq,
            webhook_id: wanted[done - 1].id.clone(),
        });
        return Ok(false);
    }
    Ok(true)
}

/// Writes one pending delivery per webhook for `event` (duplicates are ignored); returns
/// how many rows were new.
async fn insert_deliveries(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    hooks: &[&WebhookRow],
    event: &EventRow,
    now: i64,
) -> Result<usize, StoreError> {
    let mut written = 0;
    for chunk in hooks.chunks(INSERT_CHUNK) {
        let values = (0..chunk.len())
            .map(|i| {
                let b = i * 5;
                format!(
                    "(${}, ${}, ${}, ${}, 'pending', ${}, ${}, ${})",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5,
                    b + 5,
                    b + 5
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO webhook_deliveries (id, webhook_id, account_id, event_id, status, \
             next_attempt_at, created_at, updated_at) VALUES {values} \
             ON CONFLICT (webhook_id, event_id) DO NOTHING"
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for h in chunk {
            q = q
                .bind(new_id(IdKind::Delivery))
                .bind(&h.id)
                .bind(&h.account_id)
                .bind(&event.id)
                .bind(now);
        }
        written += q.execute(&mut **tx).await?.rows_affected() as usize;
    }
    Ok(written)
}
