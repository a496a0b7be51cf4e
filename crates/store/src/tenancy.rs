//! Accounts, inboxes and their keys.

use mailroom_core::Tier;
use mailroom_core::event::NewEvent;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use crate::error::is_unique_violation;
use crate::events::append_event;
use crate::{Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRow {
    pub id: String,
    pub tier: Tier,
    pub smtp_password_generation: i64,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxRow {
    pub id: String,
    pub account_id: String,
    pub username: String,
    pub domain: String,
    pub email: String,
    pub status: String,
    pub client_id: Option<String>,
    pub created_at: i64,
}

/// An inbox about to be created.
#[derive(Debug, Clone)]
pub struct NewInbox {
    pub id: String,
    pub username: String,
    pub domain: String,
    pub client_id: Option<String>,
    pub created_at: i64,
}

impl NewInbox {
    pub fn email(&self) -> String {
        format!("{}@{}", self.username, self.domain)
    }
}

/// A key about to be stored: only its hash and display prefix.
#[derive(Debug, Clone)]
pub struct NewKeyRow {
    pub id: String,
    pub hash: String,
    pub display_prefix: String,
}

/// What a presented key resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub key_id: String,
    pub account_id: String,
    pub inbox_id: Option<String>,
    pub kind: String,
    /// Scopes of a named API key (empty for account and inbox keys).
    pub scopes: Vec<String>,
}

/// A named API key, as lists show it (seed 002).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRow {
    pub id: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub platform: Option<String>,
    pub device_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateInboxOutcome {
    Created(InboxRow),
    /// The account already has an inbox with this `client_id`: nothing was created.
    Existing(InboxRow),
    /// The address is taken (by this or another account).
    EmailTaken,
    /// The address belonged to an inbox of another account that was deleted; it is held
    /// for that account until `until` (ms).
    AddressHeld {
        until: i64,
    },
    /// The account holds `current` inboxes, its tier's limit.
    LimitReached {
        current: u64,
    },
    /// The account does not exist (deleted while the request ran).
    NoAccount,
}

/// How long an idempotency key replays its first answer (24 h, as payment APIs keep them).
pub const IDEMPOTENCY_KEY_TTL_MS: i64 = 24 * 3600 * 1000;
/// How long a key may stay "in progress" before it is taken as abandoned. Sends run to
/// their end even when the client hangs up, so only a process that died leaves one.
pub const IDEMPOTENCY_IN_PROGRESS_MS: i64 = 10 * 60 * 1000;

/// What an idempotency key says about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Idempotency {
    /// First use: run the request, then complete (or release) the key.
    New,
    /// Seen with the same body: answer this again.
    Replay { status: i64, response: String },
    /// Seen with another body.
    OtherRequest,
    /// The first request is still running.
    InProgress,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierChange {
    pub previous: Tier,
    pub tier: Tier,
}

const INBOX_COLUMNS: &str =
    "id, account_id, username, domain, email, status, client_id, created_at";

fn inbox_from_row(row: &AnyRow) -> Result<InboxRow, StoreError> {
    Ok(InboxRow {
        id: row.try_get(0)?,
        account_id: row.try_get(1)?,
        username: row.try_get(2)?,
        domain: row.try_get(3)?,
        email: row.try_get(4)?,
        status: row.try_get(5)?,
        client_id: row.try_get(6)?,
        created_at: row.try_get(7)?,
    })
}

fn account_from_row(row: &AnyRow) -> Result<AccountRow, StoreError> {
    let tier: String = row.try_get(1)?;
    Ok(AccountRow {
        id: row.try_get(0)?,
        tier: Tier::parse(&tier)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown tier {tier:?} in accounts")))?,
        smtp_password_generation: row.try_get(2)?,
        created_at: row.try_get(3)?,
    })
}

impl Store {
    /// Creates an account with its first inbox, the account key and the inbox key, in one
    /// transaction. Returns `EmailTaken` (and creates nothing) if the address is taken.
    pub async fn create_account_with_inbox(
        &self,
        account_id: &str,
        tier: Tier,
        inbox: &NewInbox,
        account_key: &NewKeyRow,
        inbox_key: &NewKeyRow,
    ) -> Result<CreateInboxOutcome, StoreError> {
        let mut tx = self.write.begin().await?;
        sqlx::query(
            "INSERT INTO accounts (id, tier, created_at, updated_at) VALUES ($1, $2, $3, $3)",
        )
        .bind(account_id)
        .bind(tier.as_str())
        .bind(inbox.created_at)
        .execute(&mut *tx)
        .await?;
        insert_key(
            &mut tx,
            account_id,
            None,
            "account",
            account_key,
            inbox.created_at,
        )
        .await?;
        let outcome = insert_inbox(&mut tx, account_id, inbox, inbox_key).await?;
        if matches!(outcome, CreateInboxOutcome::Created(_)) {
            tx.commit().await?;
        }
        Ok(outcome)
    }

    /// Creates another inbox in an existing account, unless the account already has one
    /// with the same `client_id` (then that one is returned) or is at `max_inboxes`.
    /// The account row is locked for the check so that concurrent creates cannot both pass
    /// the limit.
    pub async fn create_inbox(
        &self,
        account_id: &str,
        inbox: &NewInbox,
        inbox_key: &NewKeyRow,
        max_inboxes: Option<u64>,
    ) -> Result<CreateInboxOutcome, StoreError> {
        let mut tx = self.write.begin().await?;
        // Touching the row takes its lock on PostgreSQL (SQLite has one writer anyway).
        let locked = sqlx::query("UPDATE accounts SET updated_at = $1 WHERE id = $2")
            .bind(inbox.created_at)
            .bind(account_id)
            .execute(&mut *tx)
            .await?;
        if locked.rows_affected() == 0 {
            return Ok(CreateInboxOutcome::NoAccount);
        }
        if let Some(client_id) = &inbox.client_id
            && let Some(existing) = inbox_by_client_id(&mut tx, account_id, client_id).await?
        {
            return Ok(CreateInboxOutcome::Existing(existing));
        }
        if let Some(max) = max_inboxes {
            let current: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM inboxes WHERE account_id = $1")
                    .bind(account_id)
                    .fetch_one(&mut *tx)
                    .await?;
            let current = u64::try_from(current).unwrap_or(0);
            if current >= max {
                return Ok(CreateInboxOutcome::LimitReached { current });
            }
        }
        let outcome = insert_inbox(&mut tx, account_id, inbox, inbox_key).await?;
        if matches!(outcome, CreateInboxOutcome::Created(_)) {
            tx.commit().await?;
        }
        Ok(outcome)
    }

    pub async fn get_account(&self, account_id: &str) -> Result<Option<AccountRow>, StoreError> {
        let row = sqlx::query(
            "SELECT id, tier, smtp_password_generation, created_at FROM accounts WHERE id = $1",
        )
        .bind(account_id)
        .fetch_optional(&self.read)
        .await?;
        row.as_ref().map(account_from_row).transpose()
    }

    /// The inbox `inbox_id` if it belongs to `account_id`. Another account's inbox is
    /// simply not found: callers answer 404 and reveal nothing.
    pub async fn get_inbox(
        &self,
        account_id: &str,
        inbox_id: &str,
    ) -> Result<Option<InboxRow>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {INBOX_COLUMNS} FROM inboxes WHERE id = $1 AND account_id = $2"
        )))
        .bind(inbox_id)
        .bind(account_id)
        .fetch_optional(&self.read)
        .await?;
        row.as_ref().map(inbox_from_row).transpose()
    }

    /// A page of the account's inboxes, oldest first, and the total count.
    pub async fn list_inboxes(
        &self,
        account_id: &str,
        limit: u32,
        offset: u64,
    ) -> Result<(Vec<InboxRow>, u64), StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {INBOX_COLUMNS} FROM inboxes WHERE account_id = $1 \
             ORDER BY created_at, id LIMIT $2 OFFSET $3"
        )))
        .bind(account_id)
        .bind(i64::from(limit))
        .bind(i64::try_from(offset).unwrap_or(i64::MAX))
        .fetch_all(&self.read)
        .await?;
        let total = self.count_inboxes(account_id).await?;
        let inboxes = rows.iter().map(inbox_from_row).collect::<Result<_, _>>()?;
        Ok((inboxes, total))
    }

    pub async fn count_inboxes(&self, account_id: &str) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM inboxes WHERE account_id = $1")
            .bind(account_id)
            .fetch_one(&self.read)
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Deletes an inbox of the account and every key scoped to it, and holds its address
    /// for the account until `held_until` (ms; `None`: free at once). Returns the deleted
    /// inbox, or `None` if the account has no such inbox.
    pub async fn delete_inbox(
        &self,
        account_id: &str,
        inbox_id: &str,
        now_ms: i64,
        held_until: Option<i64>,
    ) -> Result<Option<InboxRow>, StoreError> {
        let mut tx = self.write.begin().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {INBOX_COLUMNS} FROM inboxes WHERE id = $1 AND account_id = $2"
        )))
        .bind(inbox_id)
        .bind(account_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(inbox) = row.as_ref().map(inbox_from_row).transpose()? else {
            return Ok(None);
        };
        sqlx::query("DELETE FROM api_keys WHERE inbox_id = $1")
            .bind(inbox_id)
            .execute(&mut *tx)
            .await?;
        // Its messages go with it (ON DELETE CASCADE): the account no longer holds their
        // bytes, and their blobs are left to the collector.
        sqlx::query(
            "UPDATE accounts SET storage_bytes = CASE WHEN storage_bytes > \
             (SELECT storage_bytes FROM inboxes WHERE id = $1) THEN storage_bytes - \
             (SELECT storage_bytes FROM inboxes WHERE id = $1) ELSE 0 END WHERE id = $2",
        )
        .bind(inbox_id)
        .bind(account_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM inboxes WHERE id = $1")
            .bind(inbox_id)
            .execute(&mut *tx)
            .await?;
        if let Some(until) = held_until.filter(|u| *u > now_ms) {
            crate::holds::hold_address_in(&mut tx, &inbox, until).await?;
        }
        self.notify_stale(&mut tx, &format!("inbox:{inbox_id}"))
            .await?;
        append_event(
            &mut tx,
            &NewEvent::inbox_deleted(account_id, inbox_id, &inbox.email),
            now_ms,
        )
        .await?;
        tx.commit().await?;
        Ok(Some(inbox))
    }

    /// Replaces the inbox key of an inbox: the old one stops working when this commits.
    /// Returns false if the account has no such inbox.
    pub async fn rotate_inbox_key(
        &self,
        account_id: &str,
        inbox_id: &str,
        key: &NewKeyRow,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write.begin().await?;
        let exists: Option<String> =
            sqlx::query_scalar("SELECT id FROM inboxes WHERE id = $1 AND account_id = $2")
                .bind(inbox_id)
                .bind(account_id)
                .fetch_optional(&mut *tx)
                .await?;
        if exists.is_none() {
            return Ok(false);
        }
        sqlx::query("DELETE FROM api_keys WHERE inbox_id = $1 AND kind = 'inbox'")
            .bind(inbox_id)
            .execute(&mut *tx)
            .await?;
        insert_key(&mut tx, account_id, Some(inbox_id), "inbox", key, now_ms).await?;
        self.notify_stale(&mut tx, &format!("inbox:{inbox_id}"))
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The inbox with this address, on any account: `(account_id, inbox_id)`.
    pub async fn find_inbox_by_email(
        &self,
        email: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        let row = sqlx::query("SELECT account_id, id FROM inboxes WHERE email = $1")
            .bind(email)
            .fetch_optional(&self.read)
            .await?;
        row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
    }

    /// Stores a named API key.
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_api_key(
        &self,
        account_id: &str,
        key: &NewKeyRow,
        name: &str,
        scopes: &[String],
        platform: Option<&str>,
        device_id: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_keys (id, account_id, inbox_id, kind, hash, display_prefix, created_at, \
             name, scopes, platform, device_id) VALUES ($1, $2, NULL, 'api', $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&key.id)
        .bind(account_id)
        .bind(&key.hash)
        .bind(&key.display_prefix)
        .bind(now_ms)
        .bind(name)
        .bind(crate::messages::word_set(scopes))
        .bind(platform)
        .bind(device_id)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// The account's named API keys, oldest first.
    pub async fn list_api_keys(&self, account_id: &str) -> Result<Vec<ApiKeyRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, scopes, created_at, last_used_at, platform, device_id FROM api_keys \
             WHERE account_id = $1 AND kind = 'api' ORDER BY created_at, id",
        )
        .bind(account_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                let scopes: String = r.try_get(2)?;
                let name: Option<String> = r.try_get(1)?;
                Ok(ApiKeyRow {
                    id: r.try_get(0)?,
                    name: name.unwrap_or_default(),
                    scopes: scopes.split_whitespace().map(str::to_owned).collect(),
                    created_at: r.try_get(3)?,
                    last_used_at: r.try_get(4)?,
                    platform: r.try_get(5)?,
                    device_id: r.try_get(6)?,
                })
            })
            .collect()
    }

    /// Deletes a named API key of the account. False if there is none.
    pub async fn delete_api_key(&self, account_id: &str, key_id: &str) -> Result<bool, StoreError> {
        let mut tx = self.write.begin().await?;
        let done =
            sqlx::query("DELETE FROM api_keys WHERE id = $1 AND account_id = $2 AND kind = 'api'")
                .bind(key_id)
                .bind(account_id)
                .execute(&mut *tx)
                .await?;
        self.notify_stale(&mut tx, &format!("key:{key_id}")).await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// Replaces a named API key by a new one with the same name and scopes, atomically.
    pub async fn rotate_api_key(
        &self,
        account_id: &str,
        key_id: &str,
        new: &NewKeyRow,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write.begin().await?;
        let copied = sqlx::query(
            "INSERT INTO api_keys (id, account_id, inbox_id, kind, hash, display_prefix, created_at, \
             name, scopes, platform, device_id) \
             SELECT $1, account_id, NULL, 'api', $2, $3, $4, name, scopes, platform, device_id \
             FROM api_keys WHERE id = $5 AND account_id = $6 AND kind = 'api'",
        )
        .bind(&new.id)
        .bind(&new.hash)
        .bind(&new.display_prefix)
        .bind(now_ms)
        .bind(key_id)
        .bind(account_id)
        .execute(&mut *tx)
        .await?;
        if copied.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM api_keys WHERE id = $1 AND account_id = $2")
            .bind(key_id)
            .bind(account_id)
            .execute(&mut *tx)
            .await?;
        self.notify_stale(&mut tx, &format!("key:{key_id}")).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Records when keys were last used (the server batches uses in memory).
    pub async fn record_key_uses(&self, uses: &[(String, i64)]) -> Result<(), StoreError> {
        if uses.is_empty() {
            return Ok(());
        }
        let mut tx = self.write.begin().await?;
        for (key_id, at) in uses {
            sqlx::query(
                "UPDATE api_keys SET last_used_at = $1 WHERE id = $2 \
                 AND (last_used_at IS NULL OR last_used_at < $1)",
            )
            .bind(*at)
            .bind(key_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Resolves a key by its hash.
    pub async fn find_key(&self, hash: &str) -> Result<Option<KeyRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, account_id, inbox_id, kind, scopes FROM api_keys WHERE hash = $1",
        )
        .bind(hash)
        .fetch_optional(&self.read)
        .await?;
        row.map(|r| {
            let scopes: String = r.try_get(4)?;
            Ok(KeyRecord {
                key_id: r.try_get(0)?,
                account_id: r.try_get(1)?,
                inbox_id: r.try_get(2)?,
                kind: r.try_get(3)?,
                scopes: scopes.split_whitespace().map(str::to_owned).collect(),
            })
        })
        .transpose()
    }

    /// Sets an account's tier and records `account.upgraded` / `account.downgraded` in the
    /// same transaction. Returns `None` if there is no such account; no event is written
    /// when the tier does not change.
    pub async fn set_tier(
        &self,
        account_id: &str,
        tier: Tier,
        now_ms: i64,
    ) -> Result<Option<TierChange>, StoreError> {
        let mut tx = self.write.begin().await?;
        let change = set_tier_in(&mut tx, account_id, tier, now_ms).await?;
        self.notify_stale(&mut tx, &format!("account:{account_id}"))
            .await?;
        tx.commit().await?;
        Ok(change)
    }

    /// Redeems a single-use upgrade link: records its nonce and sets the tier, atomically.
    /// Returns `Ok(None)` if the nonce was redeemed before (nothing changes).
    pub async fn redeem_upgrade(
        &self,
        nonce: &str,
        account_id: &str,
        tier: Tier,
        now_ms: i64,
    ) -> Result<Option<Option<TierChange>>, StoreError> {
        let mut tx = self.write.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO redeemed_upgrade_links (nonce, account_id, target_tier, redeemed_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(nonce)
        .bind(account_id)
        .bind(tier.as_str())
        .bind(now_ms)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let change = set_tier_in(&mut tx, account_id, tier, now_ms).await?;
        self.notify_stale(&mut tx, &format!("account:{account_id}"))
            .await?;
        tx.commit().await?;
        Ok(Some(change))
    }

    /// Whether an upgrade link's nonce has been redeemed.
    pub async fn upgrade_redeemed(&self, nonce: &str) -> Result<bool, StoreError> {
        let n: Option<String> =
            sqlx::query_scalar("SELECT nonce FROM redeemed_upgrade_links WHERE nonce = $1")
                .bind(nonce)
                .fetch_optional(&self.read)
                .await?;
        Ok(n.is_some())
    }

    /// The newest DKIM key of a domain: (selector, algorithm, sealed private key, public key).
    pub async fn dkim_key(
        &self,
        domain: &str,
    ) -> Result<Option<(String, String, Vec<u8>, String)>, StoreError> {
        let row = sqlx::query(
            "SELECT selector, algorithm, sealed_key, public_key FROM dkim_keys WHERE domain = $1 \
             ORDER BY created_at DESC LIMIT 1",
        )
        .bind(domain)
        .fetch_optional(&self.read)
        .await?;
        row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)))
            .transpose()
    }

    /// Stores a DKIM key unless the domain already has one with this selector.
    pub async fn insert_dkim_key(
        &self,
        domain: &str,
        selector: &str,
        algorithm: &str,
        sealed_key: &[u8],
        public_key: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO dkim_keys (domain, selector, algorithm, sealed_key, public_key, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (domain, selector) DO NOTHING",
        )
        .bind(domain)
        .bind(selector)
        .bind(algorithm)
        .bind(sealed_key)
        .bind(public_key)
        .bind(now_ms)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Claims an idempotency key for a request with this body hash.
    pub async fn claim_idempotency_key(
        &self,
        account_id: &str,
        key: &str,
        request_hash: &str,
        now_ms: i64,
    ) -> Result<Idempotency, StoreError> {
        // A key answers repeats for a day; one still "in progress" after ten minutes
        // belongs to a request that will never finish (the process went down): both are
        // free again.
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE account_id = $1 AND key = $2 \
             AND (created_at < $3 OR (response IS NULL AND created_at < $4))",
        )
        .bind(account_id)
        .bind(key)
        .bind(now_ms - IDEMPOTENCY_KEY_TTL_MS)
        .bind(now_ms - IDEMPOTENCY_IN_PROGRESS_MS)
        .execute(&self.write)
        .await?;
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (account_id, key, request_hash, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(account_id)
        .bind(key)
        .bind(request_hash)
        .bind(now_ms)
        .execute(&self.write)
        .await;
        match inserted {
            Ok(_) => return Ok(Idempotency::New),
            Err(e) if is_unique_violation(&e) => {}
            Err(e) => return Err(e.into()),
        }
        let row = sqlx::query(
            "SELECT request_hash, status, response FROM idempotency_keys \
             WHERE account_id = $1 AND key = $2",
        )
        .bind(account_id)
        .bind(key)
        .fetch_optional(&self.read)
        .await?;
        let Some(row) = row else {
            // Released by a failed first request just now: try again.
            return Box::pin(self.claim_idempotency_key(account_id, key, request_hash, now_ms))
                .await;
        };
        let hash: String = row.try_get(0)?;
        if hash != request_hash {
            return Ok(Idempotency::OtherRequest);
        }
        let status: Option<i64> = row.try_get(1)?;
        let response: Option<String> = row.try_get(2)?;
        Ok(match (status, response) {
            (Some(status), Some(response)) => Idempotency::Replay { status, response },
            _ => Idempotency::InProgress,
        })
    }

    /// Stores the answer of the request that claimed the key.
    pub async fn complete_idempotency_key(
        &self,
        account_id: &str,
        key: &str,
        status: i64,
        response: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE idempotency_keys SET status = $1, response = $2 WHERE account_id = $3 AND key = $4",
        )
        .bind(status)
        .bind(response)
        .bind(account_id)
        .bind(key)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Gives a key back after its request failed, so that a retry can run.
    pub async fn release_idempotency_key(
        &self,
        account_id: &str,
        key: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE account_id = $1 AND key = $2 AND response IS NULL",
        )
        .bind(account_id)
        .bind(key)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Sends counted for the account in a period key (`d:YYYY-MM-DD` or `m:YYYY-MM`).
    pub async fn send_count(&self, account_id: &str, period: &str) -> Result<u64, StoreError> {
        let n: Option<i64> = sqlx::query_scalar(
            "SELECT count FROM send_counts WHERE account_id = $1 AND period = $2",
        )
        .bind(account_id)
        .bind(period)
        .fetch_optional(&self.read)
        .await?;
        Ok(n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0))
    }
}

async fn set_tier_in(
    tx: &mut Transaction<'_, Any>,
    account_id: &str,
    tier: Tier,
    now_ms: i64,
) -> Result<Option<TierChange>, StoreError> {
    let current: Option<String> = sqlx::query_scalar("SELECT tier FROM accounts WHERE id = $1")
        .bind(account_id)
        .fetch_optional(&mut **tx)
        .await?;
    let Some(current) = current else {
        return Ok(None);
    };
    let previous = Tier::parse(&current)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown tier {current:?} in accounts")))?;
    if previous != tier {
        sqlx::query("UPDATE accounts SET tier = $1, updated_at = $2 WHERE id = $3")
            .bind(tier.as_str())
            .bind(now_ms)
            .bind(account_id)
            .execute(&mut **tx)
            .await?;
        let event = NewEvent::tier_changed(
            account_id,
            previous.as_str(),
            tier.as_str(),
            tier > previous,
        );
        append_event(tx, &event, now_ms).await?;
    }
    Ok(Some(TierChange { previous, tier }))
}

async fn insert_key(
    tx: &mut Transaction<'_, Any>,
    account_id: &str,
    inbox_id: Option<&str>,
    kind: &str,
    key: &NewKeyRow,
    now_ms: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO api_keys (id, account_id, inbox_id, kind, hash, display_prefix, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&key.id)
    .bind(account_id)
    .bind(inbox_id)
    .bind(kind)
    .bind(&key.hash)
    .bind(&key.display_prefix)
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Inserts the inbox, its key and its `inbox.created` event: `Created`, or `EmailTaken`
/// or `AddressHeld` (then the caller must not commit).
async fn insert_inbox(
    tx: &mut Transaction<'_, Any>,
    account_id: &str,
    inbox: &NewInbox,
    key: &NewKeyRow,
) -> Result<CreateInboxOutcome, StoreError> {
    let email = inbox.email();
    let inserted = sqlx::query(
        "INSERT INTO inboxes (id, account_id, username, domain, email, status, client_id, created_at) \
         VALUES ($1, $2, $3, $4, $5, 'active', $6, $7)",
    )
    .bind(&inbox.id)
    .bind(account_id)
    .bind(&inbox.username)
    .bind(&inbox.domain)
    .bind(&email)
    .bind(inbox.client_id.as_deref())
    .bind(inbox.created_at)
    .execute(&mut **tx)
    .await;
    match inserted {
        Ok(_) => {}
        // The (account_id, client_id) pair cannot collide here: the caller checked it
        // under the account lock. So a unique violation is the address.
        Err(e) if is_unique_violation(&e) => return Ok(CreateInboxOutcome::EmailTaken),
        Err(e) => return Err(e.into()),
    }
    // After the insert, not before: on PostgreSQL an insert that waited for a concurrent
    // delete of the same address sees that delete's hold here.
    if let Some(until) =
        crate::holds::take_hold_in(tx, &email, account_id, inbox.created_at).await?
    {
        return Ok(CreateInboxOutcome::AddressHeld { until });
    }
    insert_key(
        tx,
        account_id,
        Some(&inbox.id),
        "inbox",
        key,
        inbox.created_at,
    )
    .await?;
    crate::messages::create_standard_mailboxes(tx, &inbox.id, inbox.created_at).await?;
    append_event(
        tx,
        &NewEvent::inbox_created(account_id, &inbox.id, &email),
        inbox.created_at,
    )
    .await?;
    Ok(CreateInboxOutcome::Created(InboxRow {
        id: inbox.id.clone(),
        account_id: account_id.to_owned(),
        username: inbox.username.clone(),
        domain: inbox.domain.clone(),
        email,
        status: "active".into(),
        client_id: inbox.client_id.clone(),
        created_at: inbox.created_at,
    }))
}

async fn inbox_by_client_id(
    tx: &mut Transaction<'_, Any>,
    account_id: &str,
    client_id: &str,
) -> Result<Option<InboxRow>, StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {INBOX_COLUMNS} FROM inboxes WHERE account_id = $1 AND client_id = $2"
    )))
    .bind(account_id)
    .bind(client_id)
    .fetch_optional(&mut **tx)
    .await?;
    row.as_ref().map(inbox_from_row).transpose()
}

/// Sends to count against an account's limits, with the periods they fall in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendQuota {
    pub account_id: String,
    pub n: u64,
    /// `d:YYYY-MM-DD`
    pub day: String,
    /// `m:YYYY-MM`
    pub month: String,
    pub max_day: Option<u64>,
    pub max_month: Option<u64>,
}

/// Counts sends inside the caller's transaction, locking the account row first (PostgreSQL)
/// so that concurrent sends cannot pass a limit together.
pub(crate) async fn reserve_sends_in(
    tx: &mut Transaction<'_, Any>,
    q: &SendQuota,
) -> Result<Result<(), &'static str>, StoreError> {
    sqlx::query("UPDATE accounts SET updated_at = updated_at WHERE id = $1")
        .bind(&q.account_id)
        .execute(&mut **tx)
        .await?;
    for (period, max, which) in [(&q.day, q.max_day, "day"), (&q.month, q.max_month, "month")] {
        let current: Option<i64> = sqlx::query_scalar(
            "SELECT count FROM send_counts WHERE account_id = $1 AND period = $2",
        )
        .bind(&q.account_id)
        .bind(period)
        .fetch_optional(&mut **tx)
        .await?;
        let current = u64::try_from(current.unwrap_or(0)).unwrap_or(0);
        if max.is_some_and(|m| current + q.n > m) {
            return Ok(Err(which));
        }
    }
    for period in [&q.day, &q.month] {
        sqlx::query(
            "INSERT INTO send_counts (account_id, period, count) VALUES ($1, $2, $3) \
             ON CONFLICT (account_id, period) DO UPDATE SET count = send_counts.count + $3",
        )
        .bind(&q.account_id)
        .bind(period)
        .bind(i64::try_from(q.n).unwrap_or(i64::MAX))
        .execute(&mut **tx)
        .await?;
    }
    Ok(Ok(()))
}
