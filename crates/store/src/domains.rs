//! Custom domains and their SMTP credentials (seeds 001, 003).

use mailroom_core::event::NewEvent;
use sqlx::Row;

use crate::error::is_unique_violation;
use crate::events::append_event;
use crate::{Store, StoreError};

/// One custom domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainRow {
    pub domain: String,
    pub account_id: String,
    pub created_at: i64,
    pub verified_at: Option<i64>,
    pub checked_at: Option<i64>,
    /// JSON of the last check's per-record results.
    pub last_check: Option<String>,
}

/// One SMTP credential of a domain (without its password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialRow {
    pub id: i64,
    pub guid: String,
    pub account_id: String,
    pub domain: String,
    pub username: String,
    pub created_at: i64,
    pub modified_at: i64,
}

/// What adding a domain did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddDomain {
    Added,
    /// This account has claimed it already.
    AlreadyClaimed,
    /// Another account has verified it.
    Taken,
    /// The account has as many domains as its tier allows.
    LimitReached,
}

/// What a check that found the records did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainCheck {
    /// Recorded; `verified` says whether the domain is (now) this account's.
    Recorded { verified: bool },
    /// Another account verified the domain first; this claim stays unverified.
    TakenByOther,
}

const DOMAIN_COLUMNS: &str = "domain, account_id, created_at, verified_at, checked_at, last_check";
const CREDENTIAL_COLUMNS: &str = "id, guid, account_id, domain, username, created_at, modified_at";

fn domain_from_row(r: &sqlx::any::AnyRow) -> Result<DomainRow, StoreError> {
    Ok(DomainRow {
        domain: r.try_get(0)?,
        account_id: r.try_get(1)?,
        created_at: r.try_get(2)?,
        verified_at: r.try_get(3)?,
        checked_at: r.try_get(4)?,
        last_check: r.try_get(5)?,
    })
}

fn credential_from_row(r: &sqlx::any::AnyRow) -> Result<CredentialRow, StoreError> {
    Ok(CredentialRow {
        id: r.try_get(0)?,
        guid: r.try_get(1)?,
        account_id: r.try_get(2)?,
        domain: r.try_get(3)?,
        username: r.try_get(4)?,
        created_at: r.try_get(5)?,
        modified_at: r.try_get(6)?,
    })
}

impl Store {
    /// Adds a domain to an account, counting it against `max` in the same transaction.
    pub async fn add_domain(
        &self,
        account_id: &str,
        domain: &str,
        max: Option<u64>,
        now: i64,
    ) -> Result<AddDomain, StoreError> {
        let mut tx = self.write.begin().await?;
        sqlx::query("UPDATE accounts SET updated_at = updated_at WHERE id = $1")
            .bind(account_id)
            .execute(&mut *tx)
            .await?;
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM domains WHERE account_id = $1")
            .bind(account_id)
            .fetch_one(&mut *tx)
            .await?;
        // Unverified claims of other accounts do not block this one: the TXT proof
        // decides who gets the domain (verify).
        let claims = sqlx::query("SELECT account_id, verified_at FROM domains WHERE domain = $1")
            .bind(domain)
            .fetch_all(&mut *tx)
            .await?;
        for c in &claims {
            let owner: String = c.try_get(0)?;
            let verified: Option<i64> = c.try_get(1)?;
            if owner == account_id {
                return Ok(AddDomain::AlreadyClaimed);
            }
            if verified.is_some() {
                return Ok(AddDomain::Taken);
            }
        }
        if max.is_some_and(|m| u64::try_from(count).unwrap_or(0) >= m) {
            return Ok(AddDomain::LimitReached);
        }
        let done =
            sqlx::query("INSERT INTO domains (domain, account_id, created_at) VALUES ($1, $2, $3)")
                .bind(domain)
                .bind(account_id)
                .bind(now)
                .execute(&mut *tx)
                .await;
        match done {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => return Ok(AddDomain::AlreadyClaimed),
            Err(e) => return Err(e.into()),
        }
        tx.commit().await?;
        Ok(AddDomain::Added)
    }

    /// A domain of this account (another account's domain is `None`, as if it did not
    /// exist).
    pub async fn get_domain(
        &self,
        account_id: &str,
        domain: &str,
    ) -> Result<Option<DomainRow>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DOMAIN_COLUMNS} FROM domains WHERE domain = $1 AND account_id = $2"
        )))
        .bind(domain)
        .bind(account_id)
        .fetch_optional(&self.read)
        .await?;
        row.as_ref().map(domain_from_row).transpose()
    }

    /// A verified domain, whoever owns it (inbound mail, logins).
    pub async fn verified_domain(&self, domain: &str) -> Result<Option<DomainRow>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DOMAIN_COLUMNS} FROM domains WHERE domain = $1 AND verified_at IS NOT NULL"
        )))
        .bind(domain)
        .fetch_optional(&self.read)
        .await?;
        row.as_ref().map(domain_from_row).transpose()
    }

    pub async fn list_domains(&self, account_id: &str) -> Result<Vec<DomainRow>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DOMAIN_COLUMNS} FROM domains WHERE account_id = $1 ORDER BY created_at, domain"
        )))
        .bind(account_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(domain_from_row).collect()
    }

    /// Records a check; `verified` sets `verified_at` the first time, with its
    /// `domain.verified` event, unless another account verified the domain first. The
    /// winner's verification removes the other accounts' unverified claims, in the same
    /// transaction.
    pub async fn record_domain_check(
        &self,
        account_id: &str,
        domain: &str,
        result_json: &str,
        verified: bool,
        now: i64,
    ) -> Result<DomainCheck, StoreError> {
        let mut tx = self.write.begin().await?;
        sqlx::query(
            "UPDATE domains SET checked_at = $1, last_check = $2 WHERE domain = $3 AND account_id = $4",
        )
        .bind(now)
        .bind(result_json)
        .bind(domain)
        .bind(account_id)
        .execute(&mut *tx)
        .await?;
        let mine: Option<Option<i64>> = sqlx::query_scalar(
            "SELECT verified_at FROM domains WHERE domain = $1 AND account_id = $2",
        )
        .bind(domain)
        .bind(account_id)
        .fetch_optional(&mut *tx)
        .await?;
        let already = matches!(mine, Some(Some(_)));
        if verified && !already {
            // The partial unique index (one verified claim per domain) settles a race
            // between two accounts verifying at once.
            let first = sqlx::query(
                "UPDATE domains SET verified_at = $1 WHERE domain = $2 AND account_id = $3 \
                 AND verified_at IS NULL AND NOT EXISTS (SELECT 1 FROM domains o \
                 WHERE o.domain = $2 AND o.verified_at IS NOT NULL)",
            )
            .bind(now)
            .bind(domain)
            .bind(account_id)
            .execute(&mut *tx)
            .await;
            let first = match first {
                Ok(done) => done.rows_affected() > 0,
                Err(e) if is_unique_violation(&e) => false,
                Err(e) => return Err(e.into()),
            };
            if !first {
                drop(tx);
                return Ok(DomainCheck::TakenByOther);
            }
            sqlx::query("DELETE FROM domains WHERE domain = $1 AND account_id <> $2")
                .bind(domain)
                .bind(account_id)
                .execute(&mut *tx)
                .await?;
            append_event(&mut tx, &NewEvent::domain_verified(account_id, domain), now).await?;
        }
        tx.commit().await?;
        Ok(DomainCheck::Recorded {
            verified: verified || already,
        })
    }

    /// Deletes the account's claim of a domain with its credentials; the domain's DKIM key
    /// and the addresses held on it go with the last claim. `Ok(None)`: no such domain;
    /// `Ok(Some(n))` with n > 0: inboxes still use it, nothing deleted.
    pub async fn delete_domain(
        &self,
        account_id: &str,
        domain: &str,
    ) -> Result<Option<i64>, StoreError> {
        let mut tx = self.write.begin().await?;
        let exists: Option<String> =
            sqlx::query_scalar("SELECT domain FROM domains WHERE domain = $1 AND account_id = $2")
                .bind(domain)
                .bind(account_id)
                .fetch_optional(&mut *tx)
                .await?;
        if exists.is_none() {
            return Ok(None);
        }
        let inboxes: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM inboxes WHERE domain = $1 AND account_id = $2",
        )
        .bind(domain)
        .bind(account_id)
        .fetch_one(&mut *tx)
        .await?;
        if inboxes > 0 {
            return Ok(Some(inboxes));
        }
        sqlx::query("DELETE FROM domain_credentials WHERE domain = $1 AND account_id = $2")
            .bind(domain)
            .bind(account_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM domains WHERE domain = $1 AND account_id = $2")
            .bind(domain)
            .bind(account_id)
            .execute(&mut *tx)
            .await?;
        let others: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM domains WHERE domain = $1")
            .bind(domain)
            .fetch_one(&mut *tx)
            .await?;
        if others == 0 {
            // Whoever proves the domain next gets a key of their own, and its addresses.
            sqlx::query("DELETE FROM dkim_keys WHERE domain = $1")
                .bind(domain)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM address_holds WHERE domain = $1")
                .bind(domain)
                .execute(&mut *tx)
                .await?;
            self.notify_stale(&mut tx, &format!("dkim:{domain}"))
                .await?;
        }
        tx.commit().await?;
        Ok(Some(0))
    }

    /// Creates a credential; `Ok(None)` when the username is taken in the domain.
    pub async fn create_credential(
        &self,
        account_id: &str,
        domain: &str,
        guid: &str,
        username: &str,
        password_hash: &str,
        now: i64,
    ) -> Result<Option<CredentialRow>, StoreError> {
        let done = sqlx::query(
            "INSERT INTO domain_credentials (guid, account_id, domain, username, password_hash, \
             created_at, modified_at) VALUES ($1, $2, $3, $4, $5, $6, $6)",
        )
        .bind(guid)
        .bind(account_id)
        .bind(domain)
        .bind(username)
        .bind(password_hash)
        .bind(now)
        .execute(&self.write)
        .await;
        match done {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CREDENTIAL_COLUMNS} FROM domain_credentials WHERE guid = $1"
        )))
        .bind(guid)
        .fetch_one(&self.write)
        .await?;
        Ok(Some(credential_from_row(&row)?))
    }

    pub async fn list_credentials(
        &self,
        account_id: &str,
        domain: &str,
    ) -> Result<Vec<CredentialRow>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CREDENTIAL_COLUMNS} FROM domain_credentials WHERE domain = $1 \
             AND account_id = $2 ORDER BY id"
        )))
        .bind(domain)
        .bind(account_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(credential_from_row).collect()
    }

    pub async fn delete_credential(
        &self,
        account_id: &str,
        domain: &str,
        guid: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "DELETE FROM domain_credentials WHERE guid = $1 AND domain = $2 AND account_id = $3",
        )
        .bind(guid)
        .bind(domain)
        .bind(account_id)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// The credential `username` of a verified `domain` with its password hash (login).
    pub async fn credential_for_login(
        &self,
        domain: &str,
        username: &str,
    ) -> Result<Option<(CredentialRow, String)>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {CREDENTIAL_COLUMNS}, password_hash FROM domain_credentials c \
             WHERE c.domain = $1 AND c.username = $2 AND EXISTS (SELECT 1 FROM domains d \
             WHERE d.domain = c.domain AND d.account_id = c.account_id \
             AND d.verified_at IS NOT NULL)"
        )))
        .bind(domain)
        .bind(username)
        .fetch_optional(&self.read)
        .await?;
        row.map(|r| Ok((credential_from_row(&r)?, r.try_get(7)?)))
            .transpose()
    }
}
