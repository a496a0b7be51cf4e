//! Operator users and their refresh tokens (seed 004). Passwords arrive here already hashed
//! (argon2id) and refresh tokens as SHA-256 hashes: the store never sees either in clear.

use sqlx::Row;

use crate::error::is_unique_violation;
use crate::{Store, StoreError};

/// One user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub id: String,
    pub account_id: String,
    pub email: String,
    pub password_hash: String,
    pub first_name: String,
    pub surname: String,
    pub is_owner: bool,
    pub is_verified: bool,
    pub disabled: bool,
    pub created_at: i64,
    pub modified_at: i64,
}

/// A user to create.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub id: String,
    pub account_id: String,
    pub email: String,
    pub password_hash: String,
    pub first_name: String,
    pub surname: String,
    pub is_owner: bool,
}

/// What presenting a refresh token found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshLookup {
    /// Live: it may be exchanged once.
    Live {
        user_id: String,
        family_id: String,
        expires_at: i64,
    },
    /// It was exchanged already: someone is replaying it. Its family is now revoked.
    Reused,
    /// Unknown, expired or revoked.
    Invalid,
}

const USER_COLUMNS: &str = "id, account_id, email, password_hash, first_name, surname, \
     is_owner, is_verified, disabled, created_at, modified_at";

fn user_from_row(r: &sqlx::any::AnyRow) -> Result<UserRow, StoreError> {
    let flag = |i: usize| -> Result<bool, StoreError> { Ok(r.try_get::<i64, _>(i)? != 0) };
    Ok(UserRow {
        id: r.try_get(0)?,
        account_id: r.try_get(1)?,
        email: r.try_get(2)?,
        password_hash: r.try_get(3)?,
        first_name: r.try_get(4)?,
        surname: r.try_get(5)?,
        is_owner: flag(6)?,
        is_verified: flag(7)?,
        disabled: flag(8)?,
        created_at: r.try_get(9)?,
        modified_at: r.try_get(10)?,
    })
}

impl Store {
    /// Creates a user; `Ok(false)` when the email is taken.
    pub async fn create_user(&self, u: &NewUser, now: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO users (id, account_id, email, password_hash, first_name, surname, \
             is_owner, is_verified, disabled, created_at, modified_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 0, 0, $8, $8)",
        )
        .bind(&u.id)
        .bind(&u.account_id)
        .bind(&u.email)
        .bind(&u.password_hash)
        .bind(&u.first_name)
        .bind(&u.surname)
        .bind(i64::from(u.is_owner))
        .bind(now)
        .execute(&self.write)
        .await;
        match done {
            Ok(_) => Ok(true),
            Err(e) if is_unique_violation(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn user_by_email(&self, email: &str) -> Result<Option<UserRow>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE email = $1"
        )))
        .bind(email)
        .fetch_optional(&self.read)
        .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    pub async fn user_by_id(&self, id: &str) -> Result<Option<UserRow>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.read)
        .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    pub async fn list_users(&self, account_id: &str) -> Result<Vec<UserRow>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE account_id = $1 ORDER BY created_at, id"
        )))
        .bind(account_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(user_from_row).collect()
    }

    /// Disables or enables a user of `account_id`; disabling revokes its refresh tokens.
    /// `Ok(false)`: no such user in that account.
    pub async fn set_user_disabled(
        &self,
        account_id: &str,
        user_id: &str,
        disabled: bool,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write.begin().await?;
        let done = sqlx::query(
            "UPDATE users SET disabled = $1, modified_at = $2 WHERE id = $3 AND account_id = $4",
        )
        .bind(i64::from(disabled))
        .bind(now)
        .bind(user_id)
        .bind(account_id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        if disabled {
            sqlx::query(
                "UPDATE refresh_tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL",
            )
            .bind(now)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        }
        // Other processes forget the user's state (its open streams end within 2 s).
        self.notify_stale(&mut tx, &format!("user:{user_id}"))
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Deletes a user of `account_id` (its refresh tokens go with it).
    pub async fn delete_user(&self, account_id: &str, user_id: &str) -> Result<bool, StoreError> {
        let mut tx = self.write.begin().await?;
        sqlx::query("DELETE FROM refresh_tokens WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM users WHERE id = $1 AND account_id = $2")
            .bind(user_id)
            .bind(account_id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        self.notify_stale(&mut tx, &format!("user:{user_id}"))
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// A grant: revokes every refresh token of the user (seed 004: a new grant expires the
    /// earlier ones) and stores the new one, starting a family.
    pub async fn grant_refresh_token(
        &self,
        user_id: &str,
        token_hash: &str,
        family_id: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.write.begin().await?;
        sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, user_id, family_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token_hash)
        .bind(user_id)
        .bind(family_id)
        .bind(now)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Exchanges a live refresh token for `next_hash` in one transaction. A token that was
    /// exchanged before revokes its family and answers [`RefreshLookup::Reused`].
    pub async fn rotate_refresh_token(
        &self,
        token_hash: &str,
        next_hash: &str,
        now: i64,
    ) -> Result<RefreshLookup, StoreError> {
        let mut tx = self.write.begin().await?;
        let row = sqlx::query(
            "SELECT user_id, family_id, expires_at, replaced_at, revoked_at FROM refresh_tokens \
             WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(RefreshLookup::Invalid);
        };
        let user_id: String = row.try_get(0)?;
        let family_id: String = row.try_get(1)?;
        let expires_at: i64 = row.try_get(2)?;
        let replaced_at: Option<i64> = row.try_get(3)?;
        let revoked_at: Option<i64> = row.try_get(4)?;
        if replaced_at.is_some() {
            sqlx::query(
                "UPDATE refresh_tokens SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL",
            )
            .bind(now)
            .bind(&family_id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(RefreshLookup::Reused);
        }
        if revoked_at.is_some() || expires_at <= now {
            return Ok(RefreshLookup::Invalid);
        }
        // Only one of two racing exchanges wins.
        let done = sqlx::query(
            "UPDATE refresh_tokens SET replaced_at = $1 WHERE token_hash = $2 AND replaced_at IS NULL",
        )
        .bind(now)
        .bind(token_hash)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(RefreshLookup::Invalid);
        }
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, user_id, family_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(next_hash)
        .bind(&user_id)
        .bind(&family_id)
        .bind(now)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(RefreshLookup::Live {
            user_id,
            family_id,
            expires_at,
        })
    }

    /// Revokes the family of a live refresh token (logout). `Ok(false)`: no live token.
    pub async fn revoke_refresh_token(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write.begin().await?;
        let family: Option<String> = sqlx::query_scalar(
            "SELECT family_id FROM refresh_tokens WHERE token_hash = $1 AND revoked_at IS NULL \
             AND replaced_at IS NULL AND expires_at > $2",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(family) = family else {
            return Ok(false);
        };
        sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(&family)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}
