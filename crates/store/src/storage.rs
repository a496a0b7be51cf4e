//! Storage: the bytes each inbox and account holds, charged in the transaction that adds
//! or removes a message row, and the collection of blobs nobody uses any more.
//!
//! The rule (docs/decisions.md, storage quota): a write that adds bytes raises the inbox's
//! and the account's `storage_bytes` with a conditional `UPDATE … WHERE storage_bytes + n
//! <= limit`. SQLite has one writer and PostgreSQL locks the row for the update and
//! re-checks the condition on the row it locked, so concurrent deliveries never pass a
//! limit: one of them finds the row full and its transaction stores nothing.

use sqlx::{Any, Row, Transaction};

use crate::{Store, StoreError};

/// The storage limits one write must stay within; `None` = unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StorageLimit {
    pub inbox_bytes: Option<u64>,
    pub account_bytes: Option<u64>,
}

impl StorageLimit {
    pub const UNLIMITED: StorageLimit = StorageLimit {
        inbox_bytes: None,
        account_bytes: None,
    };
}

/// Which limit a write would have passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageScope {
    Inbox,
    Account,
}

impl StorageScope {
    pub fn as_str(self) -> &'static str {
        match self {
            StorageScope::Inbox => "inbox",
            StorageScope::Account => "account",
        }
    }
}

/// What an inbox and its account hold now, and the account's tier (whose limits apply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageUsage {
    pub account_id: String,
    pub inbox_id: String,
    pub tier: mailroom_core::Tier,
    pub inbox_bytes: u64,
    pub account_bytes: u64,
}

/// What one round of blob collection removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Collected {
    /// Finished queue entries whose Sent copy is gone.
    pub outbound: u64,
    pub blobs: u64,
    pub bytes: u64,
}

fn limit_value(limit: Option<u64>) -> i64 {
    limit.map_or(i64::MAX, |l| i64::try_from(l).unwrap_or(i64::MAX))
}

/// Adds `bytes` (negative: frees them) to an inbox and its account, refusing with
/// [`StoreError::StorageFull`] when that would pass `limit`. Nothing is changed on refusal
/// (the caller's transaction is rolled back anyway).
pub(crate) async fn charge(
    tx: &mut Transaction<'_, Any>,
    account_id: &str,
    inbox_id: &str,
    bytes: i64,
    limit: StorageLimit,
) -> Result<(), StoreError> {
    if bytes == 0 {
        return Ok(());
    }
    let (inbox_limit, account_limit) = if bytes < 0 {
        (i64::MAX, i64::MAX)
    } else {
        (
            limit_value(limit.inbox_bytes),
            limit_value(limit.account_bytes),
        )
    };
    for (table, id, max, scope) in [
        ("inboxes", inbox_id, inbox_limit, StorageScope::Inbox),
        ("accounts", account_id, account_limit, StorageScope::Account),
    ] {
        let sql = format!(
            "UPDATE {table} SET storage_bytes = CASE WHEN storage_bytes + $1 < 0 THEN 0 \
             ELSE storage_bytes + $1 END WHERE id = $2 AND ($1 <= 0 OR storage_bytes + $1 <= $3)"
        );
        let n = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(bytes)
            .bind(id)
            .bind(max)
            .execute(&mut **tx)
            .await?
            .rows_affected();
        if n == 0 && bytes > 0 {
            let exists: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT storage_bytes FROM {table} WHERE id = $1"
            )))
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?;
            if exists.is_some() {
                return Err(StoreError::StorageFull {
                    inbox_id: inbox_id.to_owned(),
                    scope,
                });
            }
        }
    }
    Ok(())
}

/// Frees the bytes of message rows about to be deleted: (account, inbox, size) each.
pub(crate) async fn release(
    tx: &mut Transaction<'_, Any>,
    rows: &[(String, String, i64)],
) -> Result<(), StoreError> {
    let mut sums: Vec<(&str, &str, i64)> = Vec::new();
    for (account, inbox, size) in rows {
        match sums.iter_mut().find(|(a, i, _)| a == account && i == inbox) {
            Some(entry) => entry.2 += size,
            None => sums.push((account, inbox, *size)),
        }
    }
    for (account, inbox, size) in sums {
        charge(tx, account, inbox, -size, StorageLimit::UNLIMITED).await?;
    }
    Ok(())
}

/// The condition "nothing uses blob `b`": no message row and no queue entry.
const UNUSED: &str = "NOT EXISTS (SELECT 1 FROM messages m WHERE m.blob_hash = b.hash) \
     AND NOT EXISTS (SELECT 1 FROM outbound o WHERE o.blob_hash = b.hash)";

/// Retires the blobs among `hashes` that nothing uses any more: they are left to the
/// collector, which deletes them after its grace period, counted from now. An IMAP session
/// that has not yet been told of an expunge (RFC 2180 §4.1) still serves the message from
/// its blob in the meantime; the space counts as free at once (see `release`).
pub(crate) async fn retire_unused_blobs(
    tx: &mut Transaction<'_, Any>,
    hashes: &[String],
) -> Result<(), StoreError> {
    let sql = format!("UPDATE blobs AS b SET created_at = $2 WHERE b.hash = $1 AND {UNUSED}");
    let now = mailroom_core::time::now_ms();
    for hash in hashes {
        sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
            .bind(hash)
            .bind(now)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

impl Store {
    /// What the inbox and its account hold, with the account's tier; `None` for an
    /// unknown inbox.
    pub async fn storage_usage(&self, inbox_id: &str) -> Result<Option<StorageUsage>, StoreError> {
        let row = sqlx::query(
            "SELECT i.account_id, i.id, a.tier, i.storage_bytes, a.storage_bytes \
             FROM inboxes i JOIN accounts a ON a.id = i.account_id WHERE i.id = $1",
        )
        .bind(inbox_id)
        .fetch_optional(&self.read)
        .await?;
        row.as_ref().map(usage_from_row).transpose()
    }

    /// The inbox with this address (as [`Store::find_inbox_by_email`]) with its storage
    /// usage, in one query: what `RCPT TO` needs.
    pub async fn storage_usage_by_email(
        &self,
        email: &str,
    ) -> Result<Option<StorageUsage>, StoreError> {
        let row = sqlx::query(
            "SELECT i.account_id, i.id, a.tier, i.storage_bytes, a.storage_bytes \
             FROM inboxes i JOIN accounts a ON a.id = i.account_id WHERE i.email = $1",
        )
        .bind(email)
        .fetch_optional(&self.read)
        .await?;
        row.as_ref().map(usage_from_row).transpose()
    }

    /// The bytes an account's inboxes hold together.
    pub async fn account_storage(&self, account_id: &str) -> Result<u64, StoreError> {
        let n: Option<i64> = sqlx::query_scalar("SELECT storage_bytes FROM accounts WHERE id = $1")
            .bind(account_id)
            .fetch_optional(&self.read)
            .await?;
        Ok(n.map_or(0, |n| u64::try_from(n).unwrap_or(0)))
    }

    /// One round of collection: queue entries that are finished (no recipient queued or
    /// deferred) and whose Sent copy is gone, then blobs that nothing uses and that are
    /// older than `older_than_ms` (a grace period, so a blob being written is left alone).
    /// At most `batch` of each per round; call again while it returns a full batch.
    pub async fn collect_garbage(
        &self,
        older_than_ms: i64,
        batch: u32,
    ) -> Result<Collected, StoreError> {
        let mut done = Collected::default();
        let mut tx = self.write.begin().await?;
        let finished: Vec<String> = sqlx::query_scalar(
            "SELECT o.id FROM outbound o WHERE o.created_at < $1 \
             AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.id = o.message_id) \
             AND NOT EXISTS (SELECT 1 FROM outbound_recipients r WHERE r.outbound_id = o.id \
             AND r.status IN ('queued', 'deferred')) LIMIT $2",
        )
        .bind(older_than_ms)
        .bind(i64::from(batch))
        .fetch_all(&mut *tx)
        .await?;
        for id in &finished {
            done.outbound += sqlx::query("DELETE FROM outbound WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        let unused = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT b.hash, b.size FROM blobs b WHERE b.created_at < $1 AND {UNUSED} LIMIT $2"
        )))
        .bind(older_than_ms)
        .bind(i64::from(batch))
        .fetch_all(&mut *tx)
        .await?;
        for row in &unused {
            let hash: String = row.try_get(0)?;
            let size: i64 = row.try_get(1)?;
            // Checked again: a delivery may have started to use it since the SELECT.
            let n = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM blobs AS b WHERE b.hash = $1 AND b.created_at < $2 AND {UNUSED}"
            )))
            .bind(&hash)
            .bind(older_than_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            done.blobs += n;
            if n > 0 {
                done.bytes += u64::try_from(size).unwrap_or(0);
            }
        }
        tx.commit().await?;
        Ok(done)
    }
}

fn usage_from_row(r: &sqlx::any::AnyRow) -> Result<StorageUsage, StoreError> {
    let tier: String = r.try_get(2)?;
    let bytes = |i: usize| -> Result<u64, StoreError> {
        Ok(u64::try_from(r.try_get::<i64, _>(i)?).unwrap_or(0))
    };
    Ok(StorageUsage {
        account_id: r.try_get(0)?,
        inbox_id: r.try_get(1)?,
        tier: mailroom_core::Tier::parse(&tier)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown tier {tier:?}")))?,
        inbox_bytes: bytes(3)?,
        account_bytes: bytes(4)?,
    })
}
