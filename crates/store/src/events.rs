//! The event outbox.

use mailroom_core::event::NewEvent;
use mailroom_core::ids::{IdKind, new_id};
use sqlx::{Any, Row, Transaction};

use crate::{Store, StoreError};

/// One stored event.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    /// Position in the outbox; streams resume after it.
    pub seq: i64,
    /// Stable id (`evt_…`), the same on every delivery attempt.
    pub id: String,
    pub account_id: String,
    pub inbox_id: Option<String>,
    pub event_type: String,
    pub data: serde_json::Value,
    pub created_at: i64,
}

/// Appends an event inside the caller's transaction, so it commits (or not) with the
/// change it describes.
pub(crate) async fn append_event(
    tx: &mut Transaction<'_, Any>,
    event: &NewEvent,
    now_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO events (id, account_id, inbox_id, type, data, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(new_id(IdKind::Event))
    .bind(&event.account_id)
    .bind(event.inbox_id.as_deref())
    .bind(event.event_type.as_str())
    .bind(event.data.to_string())
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(crate) fn event_from_row(r: &sqlx::any::AnyRow) -> Result<EventRow, StoreError> {
    let data: String = r.try_get(5)?;
    Ok(EventRow {
        seq: r.try_get(0)?,
        id: r.try_get(1)?,
        account_id: r.try_get(2)?,
        inbox_id: r.try_get(3)?,
        event_type: r.try_get(4)?,
        data: serde_json::from_str(&data)
            .map_err(|e| StoreError::Corrupt(format!("event data: {e}")))?,
        created_at: r.try_get(6)?,
    })
}

impl Store {
    /// An inbox's events after `after_seq`, oldest first.
    pub async fn list_inbox_events(
        &self,
        inbox_id: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<EventRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, id, account_id, inbox_id, type, data, created_at FROM events \
             WHERE inbox_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(inbox_id)
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// The position of event `id` of an inbox, for resuming a stream after it.
    pub async fn inbox_event_seq(
        &self,
        inbox_id: &str,
        id: &str,
    ) -> Result<Option<i64>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT seq FROM events WHERE id = $1 AND inbox_id = $2")
                .bind(id)
                .bind(inbox_id)
                .fetch_optional(&self.read)
                .await?,
        )
    }

    /// The position of the newest event in the store (0 when there is none).
    pub async fn latest_event_seq(&self) -> Result<i64, StoreError> {
        let n: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM events")
            .fetch_one(&self.read)
            .await?;
        Ok(n.unwrap_or(0))
    }

    /// The account's events after `after_seq`, oldest first.
    pub async fn list_events(
        &self,
        account_id: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<EventRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, id, account_id, inbox_id, type, data, created_at FROM events \
             WHERE account_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(account_id)
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(event_from_row).collect()
    }
}
