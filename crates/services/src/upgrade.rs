//! Upgrade links: how an agent asks its operator for a higher tier.
//!
//! A link is `<upgrade page>?token=<signed token>`. The token names the account, the tier
//! asked for, an expiry (7 days) and a random nonce, and is signed with the master secret,
//! so the operator's page can trust it without a database look-up and nobody can forge or
//! alter one. Issuing a link writes nothing; *redeeming* one records its nonce, so each
//! link grants its upgrade once.

use chrono::{DateTime, Utc};
use mailroom_core::ids::{IdKind, new_id};
use mailroom_core::time::now_ms;
use mailroom_core::{Tier, TierLimits};
use mailroom_store::TierChange;
use serde::{Deserialize, Serialize};

use crate::{Principal, ServiceError, Services, UpgradeContext};

/// How long an upgrade link stays valid.
pub const UPGRADE_LINK_TTL_MS: i64 = 7 * 24 * 3600 * 1000;

const PURPOSE: &str = "upgrade-link";

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    /// account id
    a: String,
    /// target tier
    t: Tier,
    /// expiry, ms since epoch
    e: i64,
    /// nonce, recorded when redeemed
    n: String,
}

/// A link as `POST /v1/upgrade-link` answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpgradeLink {
    pub url: String,
    pub expires_at: String,
    pub target_tier: Tier,
}

/// What a valid token says, for the upgrade page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeLinkInfo {
    pub account_id: String,
    pub current_tier: Tier,
    pub target_tier: Tier,
    pub expires_at_ms: i64,
    pub redeemed: bool,
    pub token: String,
}

impl Services {
    /// The upgrade page links point at.
    pub fn upgrade_page(&self) -> String {
        match &self.config().upgrade_url {
            Some(url) => url.clone(),
            None => format!("{}/upgrade", self.config().public_url.trim_end_matches('/')),
        }
    }

    fn sign_link(&self, account_id: &str, target: Tier) -> (String, i64) {
        let expires = now_ms() + UPGRADE_LINK_TTL_MS;
        let claims = Claims {
            a: account_id.to_owned(),
            t: target,
            e: expires,
            n: new_id(IdKind::Event),
        };
        // Serialising a struct of strings and integers cannot fail.
        let payload = serde_json::to_vec(&claims).unwrap_or_default();
        let token = self.master().sign(PURPOSE, &payload);
        let page = self.upgrade_page();
        let sep = if page.contains('?') { '&' } else { '?' };
        (format!("{page}{sep}token={token}"), expires)
    }

    /// `POST /v1/upgrade-link`: a link asking for `target`, which must be above the
    /// account's tier.
    pub async fn create_upgrade_link(
        &self,
        principal: &Principal,
        target: Tier,
    ) -> Result<UpgradeLink, ServiceError> {
        let account_id = principal.require_account()?;
        let account = self
            .store()
            .get_account(account_id)
            .await?
            .ok_or(ServiceError::NotFound { what: "account" })?;
        if target <= account.tier {
            return Err(ServiceError::Invalid {
                code: "INVALID_TARGET_TIER",
                field: "target_tier",
                message: format!(
                    "the account is already on the {} tier; ask for a higher one ({})",
                    account.tier,
                    Tier::ALL
                        .iter()
                        .filter(|t| **t > account.tier)
                        .map(|t| t.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        let (url, expires) = self.sign_link(account_id, target);
        Ok(UpgradeLink {
            url,
            expires_at: mailroom_core::time::rfc3339(expires),
            target_tier: target,
        })
    }

    /// The `upgrade_context` for a refusal that the lowest tier above `current` satisfying
    /// `unlocks` would lift. `None` if no tier would (then there is nothing to offer).
    pub fn upgrade_context(
        &self,
        account_id: &str,
        current: Tier,
        need: &str,
        unlocks: impl Fn(&TierLimits) -> bool,
    ) -> Option<Box<UpgradeContext>> {
        let target = self.config().tiers.lowest_above(current, unlocks)?;
        let (url, _) = self.sign_link(account_id, target);
        Some(Box::new(UpgradeContext {
            operator_action_label: format!("Upgrade to {} to {need}", target.label()),
            agent_script: format!(
                "Tell your operator: I need to {need}. Here's a direct upgrade link: {url}"
            ),
            operator_action_url: url,
        }))
    }

    /// Checks a token and says what it asks for. Errors name what is wrong with it.
    pub async fn describe_upgrade_token(
        &self,
        token: &str,
    ) -> Result<UpgradeLinkInfo, ServiceError> {
        let claims = self.verify_token(token)?;
        let account = self
            .store()
            .get_account(&claims.a)
            .await?
            .ok_or(ServiceError::NotFound { what: "account" })?;
        Ok(UpgradeLinkInfo {
            redeemed: self.store().upgrade_redeemed(&claims.n).await?,
            account_id: claims.a,
            current_tier: account.tier,
            target_tier: claims.t,
            expires_at_ms: claims.e,
            token: token.to_owned(),
        })
    }

    /// Grants the upgrade a link asks for, once (`mailroom admin redeem-upgrade`).
    pub async fn redeem_upgrade_token(&self, token: &str) -> Result<TierChange, ServiceError> {
        let claims = self.verify_token(token)?;
        if claims.e < now_ms() {
            return Err(ServiceError::Invalid {
                code: "UPGRADE_LINK_EXPIRED",
                field: "token",
                message: format!(
                    "this upgrade link expired at {}; ask the agent for a new one",
                    DateTime::<Utc>::from_timestamp_millis(claims.e).unwrap_or_default()
                ),
            });
        }
        match self
            .store()
            .redeem_upgrade(&claims.n, &claims.a, claims.t, now_ms())
            .await?
        {
            None => Err(ServiceError::Conflict {
                code: "UPGRADE_LINK_USED",
                message: "this upgrade link was already redeemed; each link works once".into(),
            }),
            Some(None) => Err(ServiceError::NotFound { what: "account" }),
            Some(Some(change)) => {
                self.cache().evict_tier(&claims.a);
                Ok(change)
            }
        }
    }

    fn verify_token(&self, token: &str) -> Result<Claims, ServiceError> {
        let bad = || ServiceError::Invalid {
            code: "INVALID_UPGRADE_LINK",
            field: "token",
            message: "this upgrade link is not valid (altered, truncated, or from another server)"
                .into(),
        };
        let payload = self
            .master()
            .verify(PURPOSE, token.trim())
            .ok_or_else(bad)?;
        serde_json::from_slice(&payload).map_err(|_| bad())
    }
}
