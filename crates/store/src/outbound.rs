//! The outbound queue: sent messages waiting for (or done with) delivery to other servers.
//!
//! A message enters the queue in the same transaction that files the sender's Sent copy
//! (see [`OutboundSpec`]), so a submission that was acknowledged is always queued. Workers
//! lease due recipients for a while; a lease that runs out (the process died) makes the
//! recipient due again. Every result is written with its event, and a bounce (DSN) with
//! the result that caused it, in one transaction.

use mailroom_core::event::{EventType, NewEvent};
use mailroom_core::ids::{IdKind, new_id};
use sqlx::{Any, Row, Transaction};

use crate::events::append_event;
use crate::messages::{NewMessage, StoredMessage, insert_message};
use crate::{Store, StoreError};

/// What the queue must know of a sent message, carried by the Sent copy's [`NewMessage`].
#[derive(Debug, Clone, Default)]
pub struct OutboundSpec {
    /// The envelope sender (`MAIL FROM`).
    pub mail_from: String,
    /// Addresses delivered locally already: recorded as `delivered`.
    pub local: Vec<String>,
    /// Addresses on other servers: queued.
    pub remote: Vec<String>,
    /// When an undelivered recipient gives up and bounces.
    pub expires_at: i64,
}

/// A recipient due for a delivery attempt, with what the attempt needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueRecipient {
    pub outbound_id: String,
    pub recipient: String,
    pub domain: String,
    pub attempts: i64,
    pub account_id: String,
    pub inbox_id: String,
    /// The Sent copy.
    pub message_id: String,
    pub mail_from: String,
    pub blob_hash: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// The result of one attempt for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientOutcome {
    Delivered,
    /// A temporary failure: try again at this time.
    Deferred {
        next_attempt_at: i64,
    },
    /// A permanent failure, or the queue lifetime ran out.
    Bounced,
}

/// One result to record.
#[derive(Debug, Clone)]
pub struct RecipientResult {
    pub outbound_id: String,
    pub recipient: String,
    pub outcome: RecipientOutcome,
    /// The remote server's reply, or what went wrong before there was one.
    pub response: String,
    /// Its event (`message.delivered`, `message.deferred`, `message.bounced`).
    pub event: NewEvent,
    /// The DSN that goes to the sender with a bounce.
    pub bounce: Option<NewMessage>,
}

/// The status of one recipient of a sent message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientStatus {
    pub outbound_id: String,
    pub recipient: String,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: Option<i64>,
    pub last_response: Option<String>,
    pub updated_at: i64,
}

/// A queue entry as operators see it (`mailroom queue list`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEntry {
    pub outbound_id: String,
    pub account_id: String,
    pub mail_from: String,
    pub size: i64,
    pub created_at: i64,
    pub expires_at: i64,
    pub recipients: Vec<RecipientStatus>,
}

fn domain_of(address: &str) -> String {
    address
        .rsplit_once('@')
        .map(|(_, d)| d.to_ascii_lowercase())
        .unwrap_or_default()
}

/// Queues `spec` for the Sent copy `sent`, with its `message.sent` event and a
/// `message.delivered` event for each hosted recipient.
pub(crate) async fn insert_outbound(
    tx: &mut Transaction<'_, Any>,
    msg: &NewMessage,
    spec: &OutboundSpec,
    sent: &StoredMessage,
    account_id: &str,
) -> Result<(), StoreError> {
    let now = msg.internal_date;
    let id = new_id(IdKind::Queued);
    sqlx::query(
        "INSERT INTO outbound (id, account_id, inbox_id, message_id, mail_from, blob_hash, size, \
         created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&id)
    .bind(account_id)
    .bind(&sent.inbox_id)
    .bind(&sent.id)
    .bind(&spec.mail_from)
    .bind(&msg.hash)
    .bind(msg.raw.len() as i64)
    .bind(now)
    .bind(spec.expires_at)
    .execute(&mut **tx)
    .await?;
    let mut seen = std::collections::HashSet::new();
    let all = spec
        .local
        .iter()
        .map(|a| (a, "delivered"))
        .chain(spec.remote.iter().map(|a| (a, "queued")));
    for (address, status) in all {
        let address = address.to_ascii_lowercase();
        if !seen.insert(address.clone()) {
            continue;
        }
        sqlx::query(
            "INSERT INTO outbound_recipients (outbound_id, recipient, domain, status, attempts, \
             next_attempt_at, last_response, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&id)
        .bind(&address)
        .bind(domain_of(&address))
        .bind(status)
        .bind(if status == "delivered" { 1i64 } else { 0 })
        .bind(now)
        .bind(if status == "delivered" {
            Some("250 delivered to a hosted inbox")
        } else {
            None
        })
        .bind(now)
        .execute(&mut **tx)
        .await?;
        if status == "delivered" {
            let event = NewEvent::delivery_status(
                EventType::MessageDelivered,
                account_id,
                &sent.inbox_id,
                serde_json::json!({
                    "message_id": sent.id,
                    "inbox_id": sent.inbox_id,
                    "recipient": address,
                    "status": "delivered",
                    "response": "250 delivered to a hosted inbox",
                    "attempts": 1,
                }),
            );
            append_event(tx, &event, now).await?;
        }
    }
    let recipients: Vec<String> = seen.into_iter().collect();
    let event = NewEvent::message_sent(
        account_id,
        &sent.inbox_id,
        serde_json::json!({
            "message_id": sent.id,
            "inbox_id": sent.inbox_id,
            "thread_id": sent.thread_id,
            "queue_id": id,
            "subject": msg.subject,
            "recipients": recipients,
            "sent_at": mailroom_core::time::rfc3339(now),
        }),
    );
    append_event(tx, &event, now).await?;
    Ok(())
}

fn status_from_row(r: &sqlx::any::AnyRow) -> Result<RecipientStatus, StoreError> {
    let status: String = r.try_get(2)?;
    let next: i64 = r.try_get(4)?;
    Ok(RecipientStatus {
        outbound_id: r.try_get(0)?,
        recipient: r.try_get(1)?,
        next_attempt_at: matches!(status.as_str(), "queued" | "deferred").then_some(next),
        status,
        attempts: r.try_get(3)?,
        last_response: r.try_get(5)?,
        updated_at: r.try_get(6)?,
    })
}

const STATUS_COLUMNS: &str = "r.outbound_id, r.recipient, r.status, r.attempts, r.next_attempt_at, r.last_response, \
     r.updated_at";

impl Store {
    /// Leases up to `limit` due recipients until `lease_until`, oldest due first. A
    /// recipient leased by another worker is skipped; one whose lease ran out is due again.
    pub async fn lease_due_recipients(
        &self,
        now: i64,
        limit: u32,
        lease_until: i64,
    ) -> Result<Vec<DueRecipient>, StoreError> {
        let candidates = sqlx::query(
            "SELECT outbound_id, recipient FROM outbound_recipients \
             WHERE status IN ('queued', 'deferred') AND next_attempt_at <= $1 AND lease_until < $1 \
             ORDER BY next_attempt_at LIMIT $2",
        )
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let mut leased = Vec::with_capacity(candidates.len());
        let mut tx = self.write.begin().await?;
        for c in &candidates {
            let id: String = c.try_get(0)?;
            let rcpt: String = c.try_get(1)?;
            let done = sqlx::query(
                "UPDATE outbound_recipients SET lease_until = $1 WHERE outbound_id = $2 \
                 AND recipient = $3 AND lease_until < $4 AND status IN ('queued', 'deferred')",
            )
            .bind(lease_until)
            .bind(&id)
            .bind(&rcpt)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() > 0 {
                leased.push((id, rcpt));
            }
        }
        tx.commit().await?;
        let mut due = Vec::with_capacity(leased.len());
        for (id, rcpt) in leased {
            let row = sqlx::query(
                "SELECT r.outbound_id, r.recipient, r.domain, r.attempts, o.account_id, \
                 o.inbox_id, o.message_id, o.mail_from, o.blob_hash, o.created_at, o.expires_at \
                 FROM outbound_recipients r JOIN outbound o ON o.id = r.outbound_id \
                 WHERE r.outbound_id = $1 AND r.recipient = $2",
            )
            .bind(&id)
            .bind(&rcpt)
            .fetch_optional(&self.read)
            .await?;
            let Some(r) = row else { continue };
            due.push(DueRecipient {
                outbound_id: r.try_get(0)?,
                recipient: r.try_get(1)?,
                domain: r.try_get(2)?,
                attempts: r.try_get(3)?,
                account_id: r.try_get(4)?,
                inbox_id: r.try_get(5)?,
                message_id: r.try_get(6)?,
                mail_from: r.try_get(7)?,
                blob_hash: r.try_get(8)?,
                created_at: r.try_get(9)?,
                expires_at: r.try_get(10)?,
            });
        }
        Ok(due)
    }

    /// Records attempt results, their events and bounces in one transaction, and releases
    /// the leases.
    pub async fn record_recipient_results(
        &self,
        results: &[RecipientResult],
        now: i64,
    ) -> Result<(), StoreError> {
        if results.is_empty() {
            return Ok(());
        }
        let mut tx = self.write.begin().await?;
        for r in results {
            let (status, next) = match r.outcome {
                RecipientOutcome::Delivered => ("delivered", now),
                RecipientOutcome::Deferred { next_attempt_at } => ("deferred", next_attempt_at),
                RecipientOutcome::Bounced => ("bounced", now),
            };
            // Only a recipient still waiting changes: an operator may have removed it
            // while the attempt ran.
            let changed = sqlx::query(
                "UPDATE outbound_recipients SET status = $1, next_attempt_at = $2, \
                 attempts = attempts + 1, lease_until = 0, last_response = $3, updated_at = $4 \
                 WHERE outbound_id = $5 AND recipient = $6 AND status IN ('queued', 'deferred')",
            )
            .bind(status)
            .bind(next)
            .bind(&r.response)
            .bind(now)
            .bind(&r.outbound_id)
            .bind(&r.recipient)
            .execute(&mut *tx)
            .await?;
            if changed.rows_affected() == 0 {
                continue;
            }
            append_event(&mut tx, &r.event, now).await?;
            if let Some(bounce) = &r.bounce {
                insert_message(&mut tx, bounce).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Gives leased recipients back without an attempt (the worker is stopping).
    pub async fn release_recipients(&self, keys: &[(String, String)]) -> Result<(), StoreError> {
        let mut tx = self.write.begin().await?;
        for (id, rcpt) in keys {
            sqlx::query(
                "UPDATE outbound_recipients SET lease_until = 0 WHERE outbound_id = $1 \
                 AND recipient = $2",
            )
            .bind(id)
            .bind(rcpt)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Releases every lease: for a single-process SQLite server at start, where a lease
    /// can only be left over from a run that died (with PostgreSQL, other processes may
    /// hold live leases; theirs run out instead).
    pub async fn release_all_recipient_leases(&self) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE outbound_recipients SET lease_until = 0 WHERE lease_until > 0 \
             AND status IN ('queued', 'deferred')",
        )
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected())
    }

    /// The recipients of a sent message and where each stands, or nothing for a message
    /// that was not sent from here.
    pub async fn delivery_status(
        &self,
        message_id: &str,
    ) -> Result<Vec<RecipientStatus>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {STATUS_COLUMNS} FROM outbound_recipients r JOIN outbound o \
             ON o.id = r.outbound_id WHERE o.message_id = $1 ORDER BY r.recipient"
        )))
        .bind(message_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(status_from_row).collect()
    }

    /// Queue entries with at least one recipient in `statuses` (all when empty), oldest
    /// first.
    pub async fn list_queue(
        &self,
        statuses: &[&str],
        limit: u32,
    ) -> Result<Vec<QueueEntry>, StoreError> {
        let wanted = |s: &str| statuses.is_empty() || statuses.contains(&s);
        let rows = sqlx::query(
            "SELECT id, account_id, mail_from, size, created_at, expires_at FROM outbound \
             ORDER BY created_at, id",
        )
        .fetch_all(&self.read)
        .await?;
        let mut entries = Vec::new();
        for row in rows {
            let id: String = row.try_get(0)?;
            let recipients = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {STATUS_COLUMNS} FROM outbound_recipients r WHERE r.outbound_id = $1 \
                 ORDER BY r.recipient"
            )))
            .bind(&id)
            .fetch_all(&self.read)
            .await?
            .iter()
            .map(status_from_row)
            .collect::<Result<Vec<_>, _>>()?;
            if !recipients.iter().any(|r| wanted(&r.status)) {
                continue;
            }
            entries.push(QueueEntry {
                outbound_id: id,
                account_id: row.try_get(1)?,
                mail_from: row.try_get(2)?,
                size: row.try_get(3)?,
                created_at: row.try_get(4)?,
                expires_at: row.try_get(5)?,
                recipients,
            });
            if entries.len() >= limit as usize {
                break;
            }
        }
        Ok(entries)
    }

    /// Makes the waiting recipients of one entry (or of every entry) due now. Returns how
    /// many recipients were touched.
    pub async fn retry_queue(
        &self,
        outbound_id: Option<&str>,
        now: i64,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE outbound_recipients SET next_attempt_at = $1, updated_at = $1 \
             WHERE status IN ('queued', 'deferred') AND ($2 = '' OR outbound_id = $2)",
        )
        .bind(now)
        .bind(outbound_id.unwrap_or(""))
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected())
    }

    /// Takes an entry's waiting recipients out of the queue without a bounce. Returns how
    /// many recipients were removed.
    pub async fn remove_from_queue(&self, outbound_id: &str, now: i64) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE outbound_recipients SET status = 'removed', lease_until = 0, \
             last_response = 'removed from the queue by an operator', updated_at = $1 \
             WHERE outbound_id = $2 AND status IN ('queued', 'deferred')",
        )
        .bind(now)
        .bind(outbound_id)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected())
    }
}
