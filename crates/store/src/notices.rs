//! Notices an agent leaves for its operator (`POST /v1/notify-operator`, issue #14).

use mailroom_core::event::NewEvent;
use sqlx::Row;

use crate::events::append_event;
use crate::{Store, StoreError};

/// A notice about to be stored.
#[derive(Debug, Clone)]
pub struct NewNotice {
    pub id: String,
    pub account_id: String,
    pub inbox_id: Option<String>,
    pub issue: String,
    /// A JSON object, already checked.
    pub context: Option<serde_json::Value>,
    pub action_label: Option<String>,
    pub created_at: i64,
}

/// One stored notice.
#[derive(Debug, Clone, PartialEq)]
pub struct NoticeRow {
    pub id: String,
    pub account_id: String,
    pub inbox_id: Option<String>,
    pub issue: String,
    pub context: Option<serde_json::Value>,
    pub action_label: Option<String>,
    pub created_at: i64,
    pub resolved_at: Option<i64>,
}

/// What [`Store::create_notice`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum CreateNoticeOutcome {
    Created,
    /// The account already has `open` open notices, `max` or more: nothing was stored.
    LimitReached {
        open: u64,
    },
    NoAccount,
}

fn notice_from_row(r: &sqlx::any::AnyRow) -> Result<NoticeRow, StoreError> {
    let context: Option<String> = r.try_get(4)?;
    let context = context
        .map(|c| serde_json::from_str(&c))
        .transpose()
        .map_err(|e| StoreError::Corrupt(format!("notice context: {e}")))?;
    Ok(NoticeRow {
        id: r.try_get(0)?,
        account_id: r.try_get(1)?,
        inbox_id: r.try_get(2)?,
        issue: r.try_get(3)?,
        context,
        action_label: r.try_get(5)?,
        created_at: r.try_get(6)?,
        resolved_at: r.try_get(7)?,
    })
}

impl Store {
    /// Stores `notice` and its `event` in one transaction, unless the account already has
    /// `max_open` open notices (counted under the account row's lock, so concurrent
    /// callers cannot pass the budget together).
    pub async fn create_notice(
        &self,
        notice: &NewNotice,
        event: &NewEvent,
        max_open: u64,
    ) -> Result<CreateNoticeOutcome, StoreError> {
        let mut tx = self.write.begin().await?;
        // Touching the row takes its lock on PostgreSQL (SQLite has one writer anyway).
        let locked = sqlx::query("UPDATE accounts SET updated_at = $1 WHERE id = $2")
            .bind(notice.created_at)
            .bind(&notice.account_id)
            .execute(&mut *tx)
            .await?;
        if locked.rows_affected() == 0 {
            return Ok(CreateNoticeOutcome::NoAccount);
        }
        let open: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM operator_notices WHERE account_id = $1 AND resolved_at IS NULL",
        )
        .bind(&notice.account_id)
        .fetch_one(&mut *tx)
        .await?;
        let open = u64::try_from(open).unwrap_or(0);
        if open >= max_open {
            return Ok(CreateNoticeOutcome::LimitReached { open });
        }
        sqlx::query(
            "INSERT INTO operator_notices (id, account_id, inbox_id, issue, context, action_label, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&notice.id)
        .bind(&notice.account_id)
        .bind(notice.inbox_id.as_deref())
        .bind(&notice.issue)
        .bind(notice.context.as_ref().map(|c| c.to_string()))
        .bind(notice.action_label.as_deref())
        .bind(notice.created_at)
        .execute(&mut *tx)
        .await?;
        append_event(&mut tx, event, notice.created_at).await?;
        tx.commit().await?;
        Ok(CreateNoticeOutcome::Created)
    }

    /// The account's notices, newest first: only the open ones unless `include_resolved`.
    pub async fn list_notices(
        &self,
        account_id: Option<&str>,
        include_resolved: bool,
        limit: u32,
    ) -> Result<Vec<NoticeRow>, StoreError> {
        // `$1 = 1` lets resolved notices through; static SQL for each account filter.
        let all = i64::from(include_resolved);
        let rows =
            match account_id {
                Some(a) => sqlx::query(
                    "SELECT id, account_id, inbox_id, issue, context, action_label, created_at, \
                     resolved_at FROM operator_notices \
                     WHERE account_id = $3 AND ($1 = 1 OR resolved_at IS NULL) \
                     ORDER BY created_at DESC, id DESC LIMIT $2",
                )
                .bind(all)
                .bind(i64::from(limit))
                .bind(a)
                .fetch_all(&self.read)
                .await?,
                None => sqlx::query(
                    "SELECT id, account_id, inbox_id, issue, context, action_label, created_at, \
                     resolved_at FROM operator_notices WHERE ($1 = 1 OR resolved_at IS NULL) \
                     ORDER BY created_at DESC, id DESC LIMIT $2",
                )
                .bind(all)
                .bind(i64::from(limit))
                .fetch_all(&self.read)
                .await?,
            };
        rows.iter().map(notice_from_row).collect()
    }

    /// Marks notice `id` of `account_id` resolved at `now_ms` (once: a resolved notice
    /// keeps its first time). `None` if the account has no such notice.
    pub async fn resolve_notice(
        &self,
        account_id: &str,
        id: &str,
        now_ms: i64,
    ) -> Result<Option<NoticeRow>, StoreError> {
        let mut tx = self.write.begin().await?;
        sqlx::query(
            "UPDATE operator_notices SET resolved_at = $1 \
             WHERE id = $2 AND account_id = $3 AND resolved_at IS NULL",
        )
        .bind(now_ms)
        .bind(id)
        .bind(account_id)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(
            "SELECT id, account_id, inbox_id, issue, context, action_label, created_at, \
             resolved_at FROM operator_notices WHERE id = $1 AND account_id = $2",
        )
        .bind(id)
        .bind(account_id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.as_ref().map(notice_from_row).transpose()
    }
}
