//! The storage quota, written once: what an inbox and its account may hold (by tier), what
//! they hold now, and the refusal every front end turns into its own answer (SMTP `452
//! 4.2.2`, IMAP `NO [OVERQUOTA]`, HTTP 403 with `upgrade_context`).
//!
//! Checks before the bytes arrive (`RCPT TO`, an IMAP literal's announced size) only read
//! the counters; the store enforces the limit atomically when it writes
//! ([`mailroom_store::StorageLimit`] on each recipient), so concurrent deliveries cannot pass
//! it (docs/decisions.md).

use mailroom_core::{Tier, TierLimits};
use mailroom_store::{Recipient, StorageLimit, StorageScope, StorageUsage, StoreError};
use serde::Serialize;

use crate::{ServiceError, Services};

/// The error code of a write refused for storage.
pub const STORAGE_QUOTA_EXCEEDED: &str = "STORAGE_QUOTA_EXCEEDED";
/// The error code of a send refused because a hosted recipient's mailbox is full.
pub const RECIPIENT_MAILBOX_FULL: &str = "RECIPIENT_MAILBOX_FULL";

/// Bytes held and allowed; `limit: None` = unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StorageMeter {
    pub used_bytes: u64,
    pub limit_bytes: Option<u64>,
}

impl StorageMeter {
    /// Whether `incoming` more bytes would pass the limit.
    pub fn would_overflow(&self, incoming: u64) -> bool {
        self.limit_bytes
            .is_some_and(|l| self.used_bytes.saturating_add(incoming) > l)
    }
}

/// An inbox's storage and its account's, against the tier's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageReport {
    pub account_id: String,
    pub inbox_id: String,
    pub tier: Tier,
    pub inbox: StorageMeter,
    pub account: StorageMeter,
}

impl StorageReport {
    /// The first limit that `incoming` more bytes would pass, if any.
    pub fn over(&self, incoming: u64) -> Option<StorageScope> {
        if self.inbox.would_overflow(incoming) {
            Some(StorageScope::Inbox)
        } else if self.account.would_overflow(incoming) {
            Some(StorageScope::Account)
        } else {
            None
        }
    }

    /// The meter of the tighter of the two limits (what IMAP `GETQUOTA` shows): the one
    /// with the fewest bytes left.
    pub fn tightest(&self) -> StorageMeter {
        let left = |m: &StorageMeter| m.limit_bytes.map(|l| l.saturating_sub(m.used_bytes));
        match (left(&self.inbox), left(&self.account)) {
            (Some(a), Some(b)) if b < a => self.account,
            (None, Some(_)) => self.account,
            _ => self.inbox,
        }
    }
}

/// The storage limits of a tier.
pub fn storage_limit(limits: &TierLimits) -> StorageLimit {
    StorageLimit {
        inbox_bytes: limits.max_storage_bytes_per_inbox,
        account_bytes: limits.max_storage_bytes_per_account,
    }
}

impl Services {
    /// The storage limits of an account of `tier`.
    pub fn storage_limit(&self, tier: Tier) -> StorageLimit {
        storage_limit(self.config().tiers.limits(tier))
    }

    pub(crate) fn report_of(&self, usage: StorageUsage) -> StorageReport {
        let limit = self.storage_limit(usage.tier);
        StorageReport {
            inbox: StorageMeter {
                used_bytes: usage.inbox_bytes,
                limit_bytes: limit.inbox_bytes,
            },
            account: StorageMeter {
                used_bytes: usage.account_bytes,
                limit_bytes: limit.account_bytes,
            },
            account_id: usage.account_id,
            inbox_id: usage.inbox_id,
            tier: usage.tier,
        }
    }

    /// What an inbox and its account hold and may hold.
    pub async fn storage_report(&self, inbox_id: &str) -> Result<StorageReport, ServiceError> {
        let usage = self
            .store()
            .storage_usage(inbox_id)
            .await?
            .ok_or(ServiceError::NotFound { what: "inbox" })?;
        Ok(self.report_of(usage))
    }

    /// The inbox as a recipient that carries its account's storage limits, so that the
    /// store refuses a copy that would pass them.
    pub async fn storage_recipient(
        &self,
        account_id: &str,
        inbox_id: &str,
    ) -> Result<Recipient, ServiceError> {
        let tier = match self.store().get_account(account_id).await? {
            Some(a) => a.tier,
            None => return Err(ServiceError::NotFound { what: "account" }),
        };
        Ok(Recipient {
            account_id: account_id.to_owned(),
            inbox_id: inbox_id.to_owned(),
            storage: self.storage_limit(tier),
        })
    }

    /// Refuses early when `incoming` more bytes would not fit the inbox (an IMAP APPEND's
    /// announced literal, a COPY's messages). The store checks again when it writes.
    pub async fn check_storage(&self, inbox_id: &str, incoming: u64) -> Result<(), ServiceError> {
        let report = self.storage_report(inbox_id).await?;
        match report.over(incoming) {
            Some(scope) => Err(self.storage_refusal(&report.account_id, report.tier, scope)),
            None => Ok(()),
        }
    }

    /// The refusal for a write over the storage limit of `scope`, with an upgrade offer
    /// when a higher tier holds more.
    pub fn storage_refusal(
        &self,
        account_id: &str,
        tier: Tier,
        scope: StorageScope,
    ) -> ServiceError {
        let pick = move |l: &TierLimits| match scope {
            StorageScope::Inbox => l.max_storage_bytes_per_inbox,
            StorageScope::Account => l.max_storage_bytes_per_account,
        };
        let limit = pick(self.config().tiers.limits(tier)).unwrap_or(0);
        ServiceError::TierLimit {
            code: STORAGE_QUOTA_EXCEEDED,
            message: format!(
                "the {} storage limit of {limit} bytes is reached; delete mail (expunged and deleted messages are freed at once) or upgrade",
                scope.as_str()
            ),
            upgrade: self.upgrade_context(account_id, tier, "store more mail", move |l| {
                pick(l).is_none_or(|m| m > limit)
            }),
        }
    }

    /// Turns the store's [`StoreError::StorageFull`] into the refusal for the inbox it
    /// names; other errors pass through.
    pub(crate) async fn storage_error(&self, err: StoreError) -> ServiceError {
        match err {
            StoreError::StorageFull { inbox_id, scope } => {
                match self.store().storage_usage(&inbox_id).await {
                    Ok(Some(u)) => self.storage_refusal(&u.account_id, u.tier, scope),
                    Ok(None) => ServiceError::NotFound { what: "inbox" },
                    Err(e) => e.into(),
                }
            }
            other => other.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(inbox: (u64, Option<u64>), account: (u64, Option<u64>)) -> StorageReport {
        StorageReport {
            account_id: "acc".into(),
            inbox_id: "inbox".into(),
            tier: Tier::Free,
            inbox: StorageMeter {
                used_bytes: inbox.0,
                limit_bytes: inbox.1,
            },
            account: StorageMeter {
                used_bytes: account.0,
                limit_bytes: account.1,
            },
        }
    }

    #[test]
    fn the_first_limit_passed_is_named() {
        let r = report((90, Some(100)), (90, Some(1000)));
        assert_eq!(r.over(10), None, "exactly full fits");
        assert_eq!(r.over(11), Some(StorageScope::Inbox));
        let r = report((10, Some(100)), (995, Some(1000)));
        assert_eq!(r.over(6), Some(StorageScope::Account));
        assert_eq!(report((5, None), (5, None)).over(u64::MAX), None);
    }

    #[test]
    fn tightest_is_the_one_with_least_room() {
        let r = report((10, Some(100)), (995, Some(1000)));
        assert_eq!(r.tightest(), r.account);
        let r = report((10, Some(100)), (10, None));
        assert_eq!(r.tightest(), r.inbox);
        let r = report((10, None), (10, Some(50)));
        assert_eq!(r.tightest(), r.account);
    }
}
