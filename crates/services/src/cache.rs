//! What every request needs and rarely changes, kept in memory: which principal a key hash
//! names, inbox rows, and which inbox an address is. Without it, `GET /v1/inboxes/{id}`
//! costs two database round trips, and every `RCPT TO` one more.
//!
//! Correctness rules:
//! - Every change to keys or inboxes goes through [`crate::Services`], which evicts the
//!   affected entries *after* the change commits.
//! - A reader that loaded a value from the database inserts it only if no eviction happened
//!   since it started (the `epoch` check), so a read racing with a rotation can never put
//!   the old key back.
//! - Other processes sharing a PostgreSQL database hear of changes through `LISTEN/NOTIFY`
//!   (`Store::stale_listener`); a lost listener connection empties the cache.
//! - Account tiers are the exception: `mailroom admin set-tier` may run as another process
//!   on SQLite, where nobody is told, so a remembered tier is trusted for [`TIER_FRESH`]
//!   only. Open sessions re-check every second, so a lowered tier reaches them within 2 s.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use mailroom_core::Tier;
use mailroom_store::{InboxRow, StorageUsage};

use crate::Principal;

/// How long a remembered account tier is trusted (see the module documentation).
pub(crate) const TIER_FRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// Entries kept per map before the map is emptied and refilled (a crude bound: refilling
/// costs one database read per active key).
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Default)]
pub(crate) struct Cache {
    epoch: AtomicU64,
    keys: RwLock<HashMap<String, Principal>>,
    inboxes: RwLock<HashMap<String, InboxRow>>,
    /// Address (lowercase, no `+tag`) to its inbox, and inbox to what it and its account
    /// hold. Only addresses that exist are kept: a client trying random names costs a read
    /// each, not memory.
    recipients: RwLock<Recipients>,
    /// Operator users by id, as a JWT check needs them: every request and every open
    /// stream of a user asks, and disabling or deleting the user evicts.
    users: RwLock<HashMap<String, UserState>>,
    /// Account tiers, each with when it was read ([`TIER_FRESH`]).
    tiers: RwLock<HashMap<String, (Tier, std::time::Instant)>>,
}

/// What authenticating a user's access token needs to know of the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UserState {
    pub account_id: String,
    pub is_owner: bool,
    pub disabled: bool,
}

#[derive(Debug, Default)]
struct Recipients {
    addresses: HashMap<String, String>,
    usage: HashMap<String, Recipient>,
}

/// An inbox found by its address, and what it held when it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Recipient {
    pub usage: StorageUsage,
    pub read_at: std::time::Instant,
}

/// A reader's ticket: taken before reading the database, checked before inserting.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket(u64);

impl Cache {
    pub fn ticket(&self) -> Ticket {
        Ticket(self.epoch.load(Ordering::Acquire))
    }

    pub fn key(&self, hash: &str) -> Option<Principal> {
        read(&self.keys).get(hash).cloned()
    }

    pub fn put_key(&self, ticket: Ticket, hash: &str, principal: &Principal) {
        let mut keys = write(&self.keys);
        if self.epoch.load(Ordering::Acquire) != ticket.0 {
            return;
        }
        if keys.len() >= MAX_ENTRIES {
            keys.clear();
        }
        keys.insert(hash.to_owned(), principal.clone());
    }

    pub fn inbox(&self, inbox_id: &str) -> Option<InboxRow> {
        read(&self.inboxes).get(inbox_id).cloned()
    }

    pub fn put_inbox(&self, ticket: Ticket, inbox: &InboxRow) {
        let mut inboxes = write(&self.inboxes);
        if self.epoch.load(Ordering::Acquire) != ticket.0 {
            return;
        }
        if inboxes.len() >= MAX_ENTRIES {
            inboxes.clear();
        }
        inboxes.insert(inbox.id.clone(), inbox.clone());
    }

    pub fn recipient(&self, email: &str) -> Option<Recipient> {
        let r = read(&self.recipients);
        r.usage.get(r.addresses.get(email)?).cloned()
    }

    pub fn put_recipient(&self, ticket: Ticket, email: &str, recipient: &Recipient) {
        let mut r = write(&self.recipients);
        if self.epoch.load(Ordering::Acquire) != ticket.0 {
            return;
        }
        if r.addresses.len() >= MAX_ENTRIES || r.usage.len() >= MAX_ENTRIES {
            r.addresses.clear();
            r.usage.clear();
        }
        let inbox = recipient.usage.inbox_id.clone();
        r.addresses.insert(email.to_owned(), inbox.clone());
        r.usage.insert(inbox, recipient.clone());
    }

    /// Counts `bytes` just stored in `inbox_id` in its remembered use (the inbox's and its
    /// account's), so that RCPT answers stay close to the truth between reads. Other inboxes
    /// of the account learn of it at their next read, within a second.
    pub fn add_usage(&self, inbox_id: &str, bytes: u64) {
        if let Some(r) = write(&self.recipients).usage.get_mut(inbox_id) {
            r.usage.inbox_bytes += bytes;
            r.usage.account_bytes += bytes;
        }
    }

    /// Forgets the remembered use of every inbox of `account_id` (its tier changed).
    pub fn forget_account_usage(&self, account_id: &str) {
        write(&self.recipients)
            .usage
            .retain(|_, r| r.usage.account_id != account_id);
    }

    /// Forgets the remembered use of `inbox_id` (it proved to be wrong).
    pub fn forget_usage(&self, inbox_id: &str) {
        write(&self.recipients).usage.remove(inbox_id);
    }

    /// Forgets the inbox, its address and every key scoped to it.
    pub fn evict_inbox(&self, inbox_id: &str) {
        let mut keys = write(&self.keys);
        let mut inboxes = write(&self.inboxes);
        let mut recipients = write(&self.recipients);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        keys.retain(|_, p| !matches!(p, Principal::Inbox { inbox_id: id, .. } if id == inbox_id));
        inboxes.remove(inbox_id);
        recipients.usage.remove(inbox_id);
        recipients.addresses.retain(|_, inbox| inbox != inbox_id);
    }

    /// Forgets a named API key.
    pub fn evict_key(&self, key_id: &str) {
        let mut keys = write(&self.keys);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        keys.retain(|_, p| !matches!(p, Principal::ApiKey { key_id: id, .. } if id == key_id));
    }

    /// Forgets the account key of `account_id` (it was rotated).
    pub fn evict_account_key(&self, account_id: &str) {
        let mut keys = write(&self.keys);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        keys.retain(
            |_, p| !matches!(p, Principal::Account { account_id: id, .. } if id == account_id),
        );
    }

    pub fn user(&self, user_id: &str) -> Option<UserState> {
        read(&self.users).get(user_id).cloned()
    }

    pub fn put_user(&self, ticket: Ticket, user_id: &str, state: &UserState) {
        let mut users = write(&self.users);
        if self.epoch.load(Ordering::Acquire) != ticket.0 {
            return;
        }
        if users.len() >= MAX_ENTRIES {
            users.clear();
        }
        users.insert(user_id.to_owned(), state.clone());
    }

    /// Forgets a user (disabled, enabled or deleted).
    pub fn evict_user(&self, user_id: &str) {
        let mut users = write(&self.users);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        users.remove(user_id);
    }

    /// The tier of `account_id` if it was read less than [`TIER_FRESH`] ago.
    pub fn tier(&self, account_id: &str) -> Option<Tier> {
        read(&self.tiers)
            .get(account_id)
            .filter(|(_, at)| at.elapsed() < TIER_FRESH)
            .map(|(t, _)| *t)
    }

    pub fn put_tier(&self, ticket: Ticket, account_id: &str, tier: Tier) {
        let mut tiers = write(&self.tiers);
        if self.epoch.load(Ordering::Acquire) != ticket.0 {
            return;
        }
        if tiers.len() >= MAX_ENTRIES {
            tiers.retain(|_, (_, at)| at.elapsed() < TIER_FRESH);
        }
        tiers.insert(account_id.to_owned(), (tier, std::time::Instant::now()));
    }

    /// Forgets the tier of `account_id` and the storage use remembered with it (its tier
    /// changed).
    pub fn evict_tier(&self, account_id: &str) {
        let mut tiers = write(&self.tiers);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        tiers.remove(account_id);
        drop(tiers);
        self.forget_account_usage(account_id);
    }

    /// Forgets everything (a missed notification, or a change too broad to name).
    pub fn evict_all(&self) {
        let mut keys = write(&self.keys);
        let mut inboxes = write(&self.inboxes);
        let mut recipients = write(&self.recipients);
        let mut users = write(&self.users);
        let mut tiers = write(&self.tiers);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        keys.clear();
        inboxes.clear();
        recipients.addresses.clear();
        recipients.usage.clear();
        users.clear();
        tiers.clear();
    }

    /// Applies a stale-cache message from another process (`inbox:<id>`).
    pub fn apply(&self, what: &str) {
        match what.split_once(':') {
            Some(("inbox", id)) => self.evict_inbox(id),
            Some(("key", id)) => self.evict_key(id),
            Some(("user", id)) => self.evict_user(id),
            Some(("account", id)) => {
                self.evict_account_key(id);
                self.evict_tier(id);
            }
            _ => self.evict_all(),
        }
    }
}

// A poisoned lock means a thread panicked while holding it; the maps are still valid
// (every write is a single insert/remove/retain), so carry on.
fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inbox_key(inbox: &str) -> Principal {
        Principal::Inbox {
            account_id: "acc_a".into(),
            inbox_id: inbox.into(),
            key_id: "key_1".into(),
        }
    }

    #[test]
    fn a_read_that_raced_an_eviction_is_not_cached() {
        let c = Cache::default();
        let t = c.ticket();
        c.evict_inbox("inbox_1");
        c.put_key(t, "h", &inbox_key("inbox_1"));
        assert!(c.key("h").is_none());
        let t = c.ticket();
        c.put_key(t, "h", &inbox_key("inbox_1"));
        assert!(c.key("h").is_some());
    }

    #[test]
    fn evicting_an_inbox_forgets_its_keys_only() {
        let c = Cache::default();
        let t = c.ticket();
        c.put_key(t, "h1", &inbox_key("inbox_1"));
        c.put_key(t, "h2", &inbox_key("inbox_2"));
        c.apply("inbox:inbox_1");
        assert!(c.key("h1").is_none());
        assert!(c.key("h2").is_some());
        c.apply("something-else");
        assert!(c.key("h2").is_none());
    }

    #[test]
    fn evicting_an_inbox_forgets_its_address() {
        let c = Cache::default();
        let at = std::time::Instant::now();
        let r = |inbox: &str| Recipient {
            usage: StorageUsage {
                account_id: "acc_a".into(),
                inbox_id: inbox.into(),
                tier: mailroom_core::Tier::Free,
                inbox_bytes: 0,
                account_bytes: 0,
            },
            read_at: at,
        };
        let t = c.ticket();
        c.put_recipient(t, "a@x", &r("inbox_1"));
        c.put_recipient(t, "b@x", &r("inbox_2"));
        c.evict_inbox("inbox_1");
        assert!(c.recipient("a@x").is_none());
        assert_eq!(c.recipient("b@x"), Some(r("inbox_2")));
        // A lookup that started before the eviction does not put the address back.
        c.put_recipient(t, "a@x", &r("inbox_1"));
        assert!(c.recipient("a@x").is_none());
    }
}
