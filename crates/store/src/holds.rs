//! Addresses of deleted inboxes, held for the account that had them (issue #12), and the
//! rotation of account secrets: the account key and the SMTP password's generation.

use sqlx::{Any, Row, Transaction};

use crate::tenancy::{InboxRow, NewKeyRow};
use crate::{Store, StoreError};

/// Holds `inbox`'s address for its account until `until` (ms), replacing an older hold.
pub(crate) async fn hold_address_in(
    tx: &mut Transaction<'_, Any>,
    inbox: &InboxRow,
    until: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO address_holds (email, domain, account_id, held_until) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (email) DO UPDATE SET domain = $2, account_id = $3, held_until = $4",
    )
    .bind(&inbox.email)
    .bind(&inbox.domain)
    .bind(&inbox.account_id)
    .bind(until)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Whether `account_id` may take `email` at `now`: `Some(until)` when another account's
/// hold forbids it; otherwise a hold that no longer binds (the account's own, or expired)
/// is deleted and `None` answered.
pub(crate) async fn take_hold_in(
    tx: &mut Transaction<'_, Any>,
    email: &str,
    account_id: &str,
    now: i64,
) -> Result<Option<i64>, StoreError> {
    let row = sqlx::query("SELECT account_id, held_until FROM address_holds WHERE email = $1")
        .bind(email)
        .fetch_optional(&mut **tx)
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let holder: String = row.try_get(0)?;
    let until: i64 = row.try_get(1)?;
    if holder != account_id && until > now {
        return Ok(Some(until));
    }
    sqlx::query("DELETE FROM address_holds WHERE email = $1")
        .bind(email)
        .execute(&mut **tx)
        .await?;
    Ok(None)
}

impl Store {
    /// The hold on `email`, if any: `(account_id, held_until)`, expired or not.
    pub async fn address_hold(&self, email: &str) -> Result<Option<(String, i64)>, StoreError> {
        let row = sqlx::query("SELECT account_id, held_until FROM address_holds WHERE email = $1")
            .bind(email)
            .fetch_optional(&self.read)
            .await?;
        row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
    }

    /// Replaces the account key: the old one stops working when this commits (and, in
    /// other processes, when they hear `account:<id>`). False if there is no such account.
    pub async fn rotate_account_key(
        &self,
        account_id: &str,
        key: &NewKeyRow,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write.begin().await?;
        let touched = sqlx::query("UPDATE accounts SET updated_at = $1 WHERE id = $2")
            .bind(now_ms)
            .bind(account_id)
            .execute(&mut *tx)
            .await?;
        if touched.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM api_keys WHERE account_id = $1 AND kind = 'account'")
            .bind(account_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO api_keys (id, account_id, inbox_id, kind, hash, display_prefix, created_at) \
             VALUES ($1, $2, NULL, 'account', $3, $4, $5)",
        )
        .bind(&key.id)
        .bind(account_id)
        .bind(&key.hash)
        .bind(&key.display_prefix)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        self.notify_stale(&mut tx, &format!("account:{account_id}"))
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Moves the account's SMTP password to its next generation (the password is derived
    /// from the master secret and the generation, never stored). Returns the new
    /// generation, or `None` if there is no such account.
    pub async fn next_smtp_password_generation(
        &self,
        account_id: &str,
        now_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        let mut tx = self.write.begin().await?;
        let touched = sqlx::query(
            "UPDATE accounts SET smtp_password_generation = smtp_password_generation + 1, \
             updated_at = $1 WHERE id = $2",
        )
        .bind(now_ms)
        .bind(account_id)
        .execute(&mut *tx)
        .await?;
        if touched.rows_affected() == 0 {
            return Ok(None);
        }
        let generation: i64 =
            sqlx::query_scalar("SELECT smtp_password_generation FROM accounts WHERE id = $1")
                .bind(account_id)
                .fetch_one(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(Some(generation))
    }
}
