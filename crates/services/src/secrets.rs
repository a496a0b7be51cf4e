//! Rotating the account's own secrets (issue #12): the account key and the account SMTP
//! password. Allowed to whoever manages the account (the account key, an owner:
//! `Principal::require_account`) and to the operator (`mailroom admin account …`). The old
//! secret stops working when the change commits: the key cache is evicted here and, in
//! other processes, by the store's stale-cache note; the SMTP password is checked against
//! the account row at every login and at every MAIL of an open submission session.

use mailroom_core::ids::{IdKind, is_well_formed};
use mailroom_core::secret::KeyKind;
use mailroom_core::time::now_ms;

use crate::tenancy::new_key_row;
use crate::{Principal, ServiceError, Services, SmtpCredentials};

/// A new account key, shown once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotatedAccountKey {
    pub account_id: String,
    pub account_api_key: String,
}

/// A rotated SMTP password, and whether the account's tier lets it log in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotatedSmtp {
    pub credentials: SmtpCredentials,
    /// False on a tier without SMTP access: the password is ready for when it has.
    pub smtp_enabled: bool,
}

fn no_account() -> ServiceError {
    ServiceError::NotFound { what: "account" }
}

impl Services {
    /// `POST /v1/account/rotate-key`.
    pub async fn rotate_account_key(
        &self,
        principal: &Principal,
    ) -> Result<RotatedAccountKey, ServiceError> {
        let account_id = principal.require_account()?.to_owned();
        self.rotate_account_key_of(&account_id).await
    }

    /// The operator's rotation of `account_id`'s key (no principal: the operator has the
    /// database).
    pub async fn rotate_account_key_of(
        &self,
        account_id: &str,
    ) -> Result<RotatedAccountKey, ServiceError> {
        if !is_well_formed(IdKind::Account, account_id) {
            return Err(no_account());
        }
        let (secret, key) = new_key_row(KeyKind::Account);
        let rotated = self
            .store()
            .rotate_account_key(account_id, &key, now_ms())
            .await?;
        // After the commit, so that no reader can put the old key back (cache.rs).
        self.cache().evict_account_key(account_id);
        if !rotated {
            return Err(no_account());
        }
        tracing::info!(account_id, "account key rotated");
        Ok(RotatedAccountKey {
            account_id: account_id.to_owned(),
            account_api_key: secret,
        })
    }

    /// `POST /v1/account/smtp/rotate`. Allowed on every tier: a password that leaked
    /// before a downgrade must not come back to life with the next upgrade.
    pub async fn rotate_smtp_password(
        &self,
        principal: &Principal,
    ) -> Result<RotatedSmtp, ServiceError> {
        let account_id = principal.require_account()?.to_owned();
        self.rotate_smtp_password_of(&account_id).await
    }

    /// The operator's rotation of `account_id`'s SMTP password.
    pub async fn rotate_smtp_password_of(
        &self,
        account_id: &str,
    ) -> Result<RotatedSmtp, ServiceError> {
        if !is_well_formed(IdKind::Account, account_id) {
            return Err(no_account());
        }
        self.store()
            .next_smtp_password_generation(account_id, now_ms())
            .await?
            .ok_or_else(no_account)?;
        let account = self
            .store()
            .get_account(account_id)
            .await?
            .ok_or_else(no_account)?;
        tracing::info!(account_id, "account SMTP password rotated");
        Ok(RotatedSmtp {
            smtp_enabled: self.limits(account.tier).smtp_enabled,
            credentials: SmtpCredentials {
                host: self.config().hostname.clone(),
                port: self.config().submission_port,
                username: account.id.clone(),
                password: self.smtp_password(&account),
            },
        })
    }

    /// The account an operator names: its id, an inbox address or a user's email.
    pub async fn account_named(&self, who: &str) -> Result<String, ServiceError> {
        let who = who.trim();
        if is_well_formed(IdKind::Account, who) {
            return match self.store().get_account(who).await? {
                Some(a) => Ok(a.id),
                None => Err(no_account()),
            };
        }
        let email = who.to_ascii_lowercase();
        if let Some((account_id, _)) = self.store().find_inbox_by_email(&email).await? {
            return Ok(account_id);
        }
        match self.store().user_by_email(&email).await? {
            Some(user) => Ok(user.account_id),
            None => Err(no_account()),
        }
    }
}
