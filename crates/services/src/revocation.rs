//! Revocation reaching sessions that are already open.
//!
//! A request is authenticated once, when it arrives; an event stream or a waiting long poll
//! lives on after that, so it asks again, every [`RECHECK_INTERVAL`], the one question
//! here: does the secret that opened it still open it, as the same caller, for the same
//! inbox, within the account's tier? Revoking or rotating a key, deleting its inbox,
//! disabling or deleting a user, an access token's expiry, or lowering the tier under the
//! streams already open: each answers "no" at the next check, so the session ends within
//! 2 s with what a new request would be told. The caches make a check a memory look-up:
//! keys, inboxes and users are evicted by every change (in every process, on PostgreSQL),
//! and a tier is trusted for [`crate::cache::TIER_FRESH`].
//!
//! IMAP, POP3 and SMTP submission ask their own form of the question per command
//! (`Services::mail_key_still_valid`, `Services::submission_login_still_valid`).

use std::time::Duration;

use mailroom_core::Tier;

use crate::wakeup::Caps;
use crate::{Principal, ServiceError, Services, WaitSlot};

/// How often an open stream or a waiting long poll asks whether it may go on. Not a
/// setting: it is what makes revocation reach open sessions within 2 seconds.
pub const RECHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The secret a caller presented, kept by a session that outlives its request, to ask
/// again whether it still opens what it opened. Never printed.
#[derive(Clone)]
pub struct Credential(String);

impl Credential {
    pub fn new(secret: impl Into<String>) -> Credential {
        Credential(secret.into())
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credential(…)")
    }
}

/// Whether two principals are the same caller: the same key (or user) of the same
/// account. A rotated key is a new key, so it is not.
fn same_caller(a: &Principal, b: &Principal) -> bool {
    let id = |p: &Principal| -> (&'static str, String) {
        match p {
            Principal::Account { key_id, .. }
            | Principal::Inbox { key_id, .. }
            | Principal::ApiKey { key_id, .. } => ("key", key_id.clone()),
            Principal::User { user_id, .. } => ("user", user_id.clone()),
        }
    };
    a.account_id() == b.account_id() && a.kind() == b.kind() && id(a) == id(b)
}

fn no_longer_valid() -> ServiceError {
    ServiceError::Unauthenticated(
        "the credential this was opened with no longer works: the key was revoked or \
         rotated, its inbox deleted, or the user disabled or deleted (or the access token \
         expired); authenticate again"
            .into(),
    )
}

impl Services {
    /// The rule every open HTTP stream and waiting long poll asks each
    /// [`RECHECK_INTERVAL`]: whether `credential`, which authenticated as `opened_as`,
    /// still reads inbox `inbox_id`, and whether `slot` still fits the account's caps.
    /// The error is what a new request would be answered: `Unauthenticated` for a
    /// credential that no longer works, `NotFound` for a deleted inbox, `Busy`
    /// (`TOO_MANY_STREAMS`) past a lowered tier's stream cap, each saying why.
    pub async fn still_reads_inbox(
        &self,
        credential: &Credential,
        opened_as: &Principal,
        inbox_id: &str,
        slot: Option<&WaitSlot>,
    ) -> Result<(), ServiceError> {
        let now = match self.authenticate(&credential.0).await {
            Ok(p) if same_caller(&p, opened_as) => p,
            Ok(_) | Err(ServiceError::Unauthenticated(_)) => return Err(no_longer_valid()),
            Err(e) => return Err(e),
        };
        match self.get_inbox(&now, inbox_id).await {
            Ok(_) => {}
            Err(ServiceError::NotFound { .. }) => {
                return Err(ServiceError::NotFound {
                    what: "inbox (it was deleted)",
                });
            }
            Err(e) => return Err(e),
        }
        match slot {
            Some(slot) => self.waiter_still_fits(slot).await,
            None => Ok(()),
        }
    }

    /// Whether a waiter (stream, long poll, IMAP IDLE) still fits its key's and account's
    /// caps; past them (the tier was lowered under the waiters already open) the newest
    /// waiters get `TOO_MANY_STREAMS` and end.
    pub async fn waiter_still_fits(&self, slot: &WaitSlot) -> Result<(), ServiceError> {
        let Some((reason, why)) = self.slot_past_cap(slot).await? else {
            return Ok(());
        };
        metrics::counter!("mailroom_refusals_total", "door" => "streams", "reason" => reason)
            .increment(1);
        let tier = self.account_tier(slot.account_id()).await?;
        Err(ServiceError::Busy {
            code: "TOO_MANY_STREAMS",
            message: format!(
                "ended: the account's tier ({tier}) allows fewer streams than are open ({why}); \
                 the newest are ended first"
            ),
            retry_after_secs: crate::WAIT_RETRY_AFTER_SECS,
        })
    }

    /// The tier of `account_id`, remembered for at most a second (a tier changed by
    /// `mailroom admin set-tier` in another process is seen within that time).
    pub(crate) async fn account_tier(&self, account_id: &str) -> Result<Tier, ServiceError> {
        if let Some(tier) = self.cache().tier(account_id) {
            return Ok(tier);
        }
        let ticket = self.cache().ticket();
        let account = self
            .store()
            .get_account(account_id)
            .await?
            .ok_or(ServiceError::NotFound { what: "account" })?;
        self.cache().put_tier(ticket, account_id, account.tier);
        Ok(account.tier)
    }

    /// How many waiters a key and the account `account_id` may have: the server's budget
    /// (`streams.max_per_key`, `streams.max_per_account`), lowered by the tier's own caps.
    pub(crate) async fn stream_caps(&self, account_id: &str) -> Result<Caps, ServiceError> {
        let server = &self.config().streams;
        let tier = self.account_tier(account_id).await?;
        let limits = self.config().tiers.limits(tier);
        let lower = |server: usize, tier: Option<u64>| {
            tier.map_or(server, |t| {
                server.min(usize::try_from(t).unwrap_or(usize::MAX))
            })
        };
        Ok(Caps {
            per_key: lower(server.per_key, limits.max_streams_per_key),
            per_account: lower(server.per_account, limits.max_streams_per_account),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotated_key_is_another_caller() {
        let key = |id: &str| Principal::Inbox {
            account_id: "acc_a".into(),
            inbox_id: "inb_1".into(),
            key_id: id.into(),
        };
        assert!(same_caller(&key("k1"), &key("k1")));
        assert!(!same_caller(&key("k1"), &key("k2")));
        let user = |owner| Principal::User {
            account_id: "acc_a".into(),
            user_id: "usr_1".into(),
            owner,
        };
        // A user who stopped being an owner is still the same caller (streams only read).
        assert!(same_caller(&user(true), &user(false)));
        assert!(!same_caller(&user(true), &key("usr_1")));
        assert_eq!(format!("{:?}", Credential::new("secret")), "Credential(…)");
    }
}
