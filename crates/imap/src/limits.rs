//! The budgets of the IMAP door, from configuration: what one command may cost (FETCH
//! items, SEARCH keys, time and bytes), and the bytes of literals in flight over the whole
//! server. Every limit here is a security boundary: anyone can create a free account.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mailroom_net::{ConnLimits, Door};
use tokio::sync::Semaphore;

/// Every configurable IMAP limit, passed to [`crate::ImapServer::new`] in one piece.
#[derive(Debug, Clone)]
pub struct ImapLimits {
    /// Sessions at once over both listeners, and per address.
    pub connections: ConnLimits,
    /// Items in one FETCH (after the macros are expanded); more get `BAD [LIMIT]`.
    pub max_fetch_items: usize,
    /// Search keys in one SEARCH (counted through AND, OR and NOT); more get `NO [LIMIT]`.
    pub max_search_keys: usize,
    /// Wall-clock time one SEARCH may spend reading and matching message text.
    pub search_time_budget: Duration,
    /// Message bytes one SEARCH may read for content keys.
    pub search_byte_budget: u64,
    /// SEARCH batches one account may have matching on the blocking pool at once, however
    /// many sessions it opens: an account's content searches take at most this many
    /// threads, so the OS shares the CPU between accounts rather than between sessions. A
    /// batch that waits for its account's slot past the command's time budget ends it with
    /// `NO [LIMIT]`; other accounts never wait for it.
    pub search_concurrency_per_account: usize,
    /// Bytes of literals being received at once over the whole server.
    pub literal_budget: u64,
    /// Once a command's first literal has been announced, the whole command must have
    /// arrived within this time, so a client trickling bytes cannot hold budget for ever.
    pub literal_deadline: Duration,
}

impl Default for ImapLimits {
    fn default() -> ImapLimits {
        ImapLimits {
            connections: crate::default_connections(),
            max_fetch_items: 64,
            max_search_keys: 64,
            search_time_budget: Duration::from_secs(10),
            search_byte_budget: 1024 * 1024 * 1024,
            search_concurrency_per_account: 2,
            literal_budget: 256 * 1024 * 1024,
            literal_deadline: Duration::from_secs(60),
        }
    }
}

/// Non-synchronizing literals up to this size are always taken (RFC 7888 LITERAL-: the
/// client may send them without waiting, so refusing them would desynchronise the stream).
pub const SMALL_LITERAL: u64 = 4096;

/// The server-wide byte budget for literals in flight. A [`Grant`] holds its bytes until the
/// command that carried the literal has been handled.
#[derive(Debug)]
pub struct LiteralBudget {
    limit: u64,
    used: Arc<AtomicU64>,
}

impl LiteralBudget {
    pub fn new(limit: u64) -> LiteralBudget {
        LiteralBudget {
            limit,
            used: Arc::new(AtomicU64::new(0)),
        }
    }

    /// An empty grant, to add literals to.
    pub fn grant(&self) -> Grant {
        Grant {
            used: self.used.clone(),
            bytes: 0,
        }
    }

    /// Adds `n` bytes to `grant` if the budget has room; `false` (and nothing taken) if not.
    pub fn try_take(&self, grant: &mut Grant, n: u64) -> bool {
        let mut cur = self.used.load(Ordering::Relaxed);
        loop {
            let Some(next) = cur.checked_add(n).filter(|&v| v <= self.limit) else {
                return false;
            };
            match self
                .used
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    grant.bytes += n;
                    return true;
                }
                Err(actual) => cur = actual,
            }
        }
    }

    /// Adds `n` bytes whatever the budget says (small non-synchronizing literals).
    pub fn force_take(&self, grant: &mut Grant, n: u64) {
        self.used.fetch_add(n, Ordering::AcqRel);
        grant.bytes += n;
    }

    /// Bytes held now.
    #[cfg(test)]
    pub fn in_flight(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }
}

/// Bytes of the literal budget held by one command; given back on drop.
#[derive(Debug)]
pub struct Grant {
    used: Arc<AtomicU64>,
    bytes: u64,
}

impl Drop for Grant {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.used.fetch_sub(self.bytes, Ordering::AcqRel);
        }
    }
}

/// Slots per account for work on the blocking pool (see
/// [`ImapLimits::search_concurrency_per_account`]). An account's entry exists only while
/// one of its sessions holds or waits for a slot.
#[derive(Debug)]
pub struct AccountSlots {
    per_account: usize,
    map: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl AccountSlots {
    pub fn new(per_account: usize) -> AccountSlots {
        AccountSlots {
            per_account: per_account.max(1),
            map: Mutex::default(),
        }
    }

    /// The slots of `account`, held (as an entry of the map) until the handle is dropped.
    pub fn of(&self, account: &str) -> Slots<'_> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let sem = map
            .entry(account.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_account)))
            .clone();
        Slots {
            owner: self,
            account: account.to_owned(),
            sem,
        }
    }

    #[cfg(test)]
    fn accounts(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// One account's slots; its map entry goes with the last handle.
pub struct Slots<'a> {
    owner: &'a AccountSlots,
    account: String,
    sem: Arc<Semaphore>,
}

impl Slots<'_> {
    pub fn semaphore(&self) -> &Semaphore {
        &self.sem
    }
}

impl Drop for Slots<'_> {
    fn drop(&mut self) {
        let mut map = self.owner.map.lock().unwrap_or_else(|e| e.into_inner());
        // The map's reference and this one: nobody else holds or waits.
        if Arc::strong_count(&self.sem) == 2 {
            map.remove(&self.account);
        }
    }
}

/// Counts an IMAP refusal in `mailroom_refusals_total{door="imap", reason}`.
pub fn refused(reason: &'static str) {
    mailroom_net::refused(Door::Imap, reason);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_are_given_back() {
        let b = LiteralBudget::new(100);
        let mut g = b.grant();
        assert!(b.try_take(&mut g, 60));
        let mut h = b.grant();
        assert!(!b.try_take(&mut h, 50));
        assert!(b.try_take(&mut h, 40));
        assert_eq!(b.in_flight(), 100);
        drop(g);
        assert_eq!(b.in_flight(), 40);
        assert!(b.try_take(&mut h, 60));
        drop(h);
        assert_eq!(b.in_flight(), 0);
    }

    #[test]
    fn account_slots_are_per_account_and_go_away() {
        let slots = AccountSlots::new(1);
        let a = slots.of("acc_a");
        let held = a.semaphore().try_acquire().expect("a slot");
        let a2 = slots.of("acc_a");
        assert!(a2.semaphore().try_acquire().is_err(), "one per account");
        let b = slots.of("acc_b");
        assert!(
            b.semaphore().try_acquire().is_ok(),
            "another account is not held up"
        );
        assert_eq!(slots.accounts(), 2);
        drop(b);
        assert_eq!(slots.accounts(), 1);
        drop(held);
        drop(a2);
        drop(a);
        assert_eq!(slots.accounts(), 0);
    }
}
