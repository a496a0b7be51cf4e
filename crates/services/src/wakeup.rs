//! Wake-ups, and how many may wait.
//!
//! Everyone who waits for a change (a long poll, an event stream, an IMAP IDLE) waits on the
//! signal of *one inbox*. A change — mail delivered, an APPEND, a flag or a move, an API
//! change, a delivery report — signals the inboxes it touched and nobody else, so an arrival
//! wakes the waiters of its inbox only, and only they look at the database. One more
//! signal, for events, wakes the webhook worker (the one whole-server consumer).
//!
//! Signals exist only while someone waits: the map holds an inbox's sender while at least
//! one [`InboxSignal`] for it lives, and the last one to go removes it. A change to an
//! inbox nobody watches costs one map look-up.
//!
//! Waiting costs a task, a connection and a database look each poll interval, so it has a
//! budget: at most `per_key` waiters per key and `per_account` per account
//! ([`StreamLimits`], lowered by the account's tier when it sets its own caps); a waiter
//! holds a [`WaitSlot`] while it waits. Slots are numbered in the order they were given, so
//! when a tier is lowered under the streams already open, the oldest keep their places and
//! the newest are the ones past the cap ([`Services::slot_past_cap`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

use crate::{Principal, ServiceError, Services};

/// Budgets and timing of waiters (long polls, event streams, IMAP IDLE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// Waiters at once per key (or user token; an IMAP session counts for its inbox).
    pub per_key: usize,
    /// Waiters at once per account, all keys together.
    pub per_account: usize,
    /// How often a waiter looks at the database without a signal: changes made by other
    /// processes that share a PostgreSQL database reach a waiter this way.
    pub poll_interval: Duration,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            per_key: 10,
            per_account: 100,
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// What a refused waiter is told to wait before trying again.
pub const WAIT_RETRY_AFTER_SECS: u64 = 5;

#[derive(Debug, Default)]
pub(crate) struct Wakeups {
    inboxes: Mutex<HashMap<String, Arc<watch::Sender<u64>>>>,
    events: watch::Sender<u64>,
    waiting: Mutex<Waiting>,
    /// Database looks by waiters in this process (see [`Services::note_waiter_poll`]).
    polls: AtomicU64,
}

#[derive(Debug, Default)]
struct Waiting {
    /// The number of the next slot given.
    next: u64,
    /// The slots held, by key and by account.
    keys: HashMap<String, BTreeSet<u64>>,
    accounts: HashMap<String, BTreeSet<u64>>,
}

/// How many waiters one key and one account may have at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub per_key: usize,
    pub per_account: usize,
}

/// What a refused or ended waiter is told: its metrics reason and its message.
pub(crate) type PastCap = (&'static str, String);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn bump(tx: &watch::Sender<u64>) {
    tx.send_modify(|n| *n = n.wrapping_add(1));
}

/// Changes of one inbox, for one waiter. Created marked "seen": it reports only changes
/// signalled after it was made.
#[derive(Debug)]
pub struct InboxSignal {
    rx: watch::Receiver<u64>,
    /// [`InboxSignal::changed`] returned and nobody has looked since: waking does not count
    /// as looking, so a waiter that wakes and then asks [`InboxSignal::has_changed`] (IMAP's
    /// sync) still hears of the change.
    pending: bool,
    tx: Arc<watch::Sender<u64>>,
    inbox_id: String,
    owner: Arc<Wakeups>,
}

impl InboxSignal {
    /// Completes at the next change of the inbox (at once if one came since the last
    /// [`InboxSignal::mark_seen`]).
    pub async fn changed(&mut self) {
        if self.pending {
            return;
        }
        // This signal holds a sender, so the channel never closes under it. Nothing is
        // awaited between the wake and `pending`, so a cancelled wait loses no change.
        let _ = self.rx.changed().await;
        self.pending = true;
    }

    /// Whether the inbox changed since the last [`InboxSignal::mark_seen`].
    pub fn has_changed(&self) -> bool {
        self.pending || self.rx.has_changed().unwrap_or(true)
    }

    /// Forgets the changes so far: call it before looking at the database.
    pub fn mark_seen(&mut self) {
        self.pending = false;
        self.rx.borrow_and_update();
    }

    pub fn inbox_id(&self) -> &str {
        &self.inbox_id
    }
}

impl Drop for InboxSignal {
    fn drop(&mut self) {
        let mut map = lock(&self.owner.inboxes);
        // Clones of the sender are made under this lock only: two references (the map's
        // and ours) mean this is the last waiter of the inbox.
        if Arc::strong_count(&self.tx) <= 2
            && map
                .get(&self.inbox_id)
                .is_some_and(|tx| Arc::ptr_eq(tx, &self.tx))
        {
            map.remove(&self.inbox_id);
        }
    }
}

/// A waiter's place in the budget; dropping it frees the place.
#[derive(Debug)]
pub struct WaitSlot {
    owner: Arc<Wakeups>,
    id: u64,
    key: String,
    account: String,
}

impl WaitSlot {
    pub fn account_id(&self) -> &str {
        &self.account
    }
}

impl Drop for WaitSlot {
    fn drop(&mut self) {
        let mut guard = lock(&self.owner.waiting);
        let w = &mut *guard;
        for (map, k) in [(&mut w.keys, &self.key), (&mut w.accounts, &self.account)] {
            if let Some(held) = map.get_mut(k) {
                held.remove(&self.id);
                if held.is_empty() {
                    map.remove(k);
                }
            }
        }
    }
}

impl Wakeups {
    pub(crate) fn signal(self: &Arc<Self>, inbox_id: &str) -> InboxSignal {
        let mut map = lock(&self.inboxes);
        let tx = map
            .entry(inbox_id.to_owned())
            .or_insert_with(|| Arc::new(watch::Sender::new(0)))
            .clone();
        drop(map);
        let mut rx = tx.subscribe();
        rx.borrow_and_update();
        InboxSignal {
            rx,
            pending: false,
            tx,
            inbox_id: inbox_id.to_owned(),
            owner: self.clone(),
        }
    }

    pub(crate) fn inbox_changed(&self, inbox_id: &str) {
        // Under the lock, without cloning the sender: a clone outside it would make the
        // last waiter's drop think it is not the last.
        if let Some(tx) = lock(&self.inboxes).get(inbox_id) {
            bump(tx);
        }
    }

    pub(crate) fn events_recorded(&self) {
        bump(&self.events);
    }

    pub(crate) fn events(&self) -> watch::Receiver<u64> {
        self.events.subscribe()
    }

    pub(crate) fn watched_inboxes(&self) -> usize {
        lock(&self.inboxes).len()
    }

    /// `door` names the refusal in metrics; `what` ("streams or long polls") and `whose`
    /// ("this key") name it to the client.
    fn admit(
        self: &Arc<Self>,
        caps: Caps,
        (door, what, whose): (&'static str, &str, &str),
        key: String,
        account: &str,
    ) -> Result<WaitSlot, ServiceError> {
        let mut w = lock(&self.waiting);
        let on_key = w.keys.get(&key).map_or(0, BTreeSet::len);
        let on_account = w.accounts.get(account).map_or(0, BTreeSet::len);
        let refusal = past_cap(caps, (what, whose), on_key, on_account);
        let Some((reason, why)) = refusal else {
            let id = w.next;
            w.next += 1;
            w.keys.entry(key.clone()).or_default().insert(id);
            w.accounts.entry(account.to_owned()).or_default().insert(id);
            return Ok(WaitSlot {
                owner: self.clone(),
                id,
                key,
                account: account.to_owned(),
            });
        };
        drop(w);
        let message = format!("{why}; close one, or retry after {WAIT_RETRY_AFTER_SECS} seconds");
        metrics::counter!("mailroom_refusals_total", "door" => door, "reason" => reason)
            .increment(1);
        Err(ServiceError::Busy {
            code: "TOO_MANY_STREAMS",
            message,
            retry_after_secs: WAIT_RETRY_AFTER_SECS,
        })
    }
}

impl Wakeups {
    /// Whether `slot` is past `caps`: more older slots of its key (or account) are held
    /// than the caps allow, so the newest go first.
    fn slot_past_cap(&self, slot: &WaitSlot, caps: Caps, labels: (&str, &str)) -> Option<PastCap> {
        let w = lock(&self.waiting);
        let older = |held: Option<&BTreeSet<u64>>| held.map_or(0, |h| h.range(..slot.id).count());
        let on_key = older(w.keys.get(&slot.key));
        let on_account = older(w.accounts.get(&slot.account));
        past_cap(caps, labels, on_key, on_account)
    }
}

/// Whether one more waiter, with `on_key` and `on_account` already there, is past `caps`.
fn past_cap(
    caps: Caps,
    (what, whose): (&str, &str),
    on_key: usize,
    on_account: usize,
) -> Option<PastCap> {
    if on_key >= caps.per_key {
        Some((
            "waiters_per_key",
            format!(
                "{whose} already has {on_key} {what} open (at most {})",
                caps.per_key
            ),
        ))
    } else if on_account >= caps.per_account {
        Some((
            "waiters_per_account",
            format!(
                "this account already has {on_account} {what} open (at most {})",
                caps.per_account
            ),
        ))
    } else {
        None
    }
}

/// How HTTP waiters and IMAP IDLEs are named in metrics and to the client.
const HTTP_WAITERS: (&str, &str, &str) = ("streams", "streams or long polls", "this key");
const IMAP_WAITERS: (&str, &str, &str) = ("imap", "IDLE sessions", "this inbox");

/// The name a principal's waiters are counted under.
fn wait_key(principal: &Principal) -> String {
    match principal {
        Principal::Account { key_id, .. }
        | Principal::Inbox { key_id, .. }
        | Principal::ApiKey { key_id, .. } => format!("key:{key_id}"),
        Principal::User { user_id, .. } => format!("user:{user_id}"),
    }
}

impl Services {
    /// The change signal of inbox `inbox_id`, for a waiter (no access check: callers have
    /// checked that the waiter may read the inbox).
    pub fn inbox_signal(&self, inbox_id: &str) -> InboxSignal {
        self.wakeups().signal(inbox_id)
    }

    /// Tells the waiters of these inboxes (only) that something changed in them, and the
    /// webhook worker that events may have been recorded.
    ///
    /// What the inboxes hold may have changed too, so the storage use remembered for RCPT
    /// is forgotten (inbound delivery, which counts its own bytes, uses
    /// [`Services::deliveries_signalled`] instead).
    pub fn inboxes_changed<'a>(&self, inbox_ids: impl IntoIterator<Item = &'a str>) {
        let w = self.wakeups();
        for id in inbox_ids {
            self.cache().forget_usage(id);
            w.inbox_changed(id);
        }
        w.events_recorded();
    }

    /// Wakes the inboxes' waiters and the webhook worker after inbound deliveries whose
    /// bytes were added to the remembered storage use.
    pub(crate) fn deliveries_signalled<'a>(&self, inbox_ids: impl IntoIterator<Item = &'a str>) {
        let w = self.wakeups();
        for id in inbox_ids {
            w.inbox_changed(id);
        }
        w.events_recorded();
    }

    /// [`Services::inboxes_changed`] for one inbox.
    pub fn inbox_changed(&self, inbox_id: &str) {
        self.inboxes_changed([inbox_id]);
    }

    /// Tells the webhook worker that events were recorded that no inbox waiter needs
    /// (a `webhook.test`, a replay).
    pub fn events_recorded(&self) {
        self.wakeups().events_recorded();
    }

    /// A receiver that changes whenever events may have been recorded in this process: the
    /// webhook worker's wake-up.
    pub fn event_signal(&self) -> watch::Receiver<u64> {
        self.wakeups().events()
    }

    /// How many inboxes have a waiter now (a gauge, and what tests check cleanup with).
    pub fn watched_inboxes(&self) -> usize {
        self.wakeups().watched_inboxes()
    }

    /// A place for one HTTP waiter (event stream or long poll) of `principal`, or
    /// `TOO_MANY_STREAMS` when its key or account has its share (the server's budget, or
    /// the account's tier's when lower).
    pub async fn http_wait_slot(&self, principal: &Principal) -> Result<WaitSlot, ServiceError> {
        let caps = self.stream_caps(principal.account_id()).await?;
        self.wakeups().admit(
            caps,
            HTTP_WAITERS,
            wait_key(principal),
            principal.account_id(),
        )
    }

    /// A place for an IMAP IDLE of a session logged in to `inbox_id`; an IMAP session
    /// counts under its inbox (as if under that inbox's key).
    pub async fn imap_wait_slot(
        &self,
        account_id: &str,
        inbox_id: &str,
    ) -> Result<WaitSlot, ServiceError> {
        let caps = self.stream_caps(account_id).await?;
        self.wakeups()
            .admit(caps, IMAP_WAITERS, format!("imap:{inbox_id}"), account_id)
    }

    /// Why `slot` is now past its caps (the account's tier was lowered under the waiters
    /// already open), or `None` while it fits. The oldest waiters keep their places.
    pub(crate) async fn slot_past_cap(
        &self,
        slot: &WaitSlot,
    ) -> Result<Option<PastCap>, ServiceError> {
        let caps = self.stream_caps(slot.account_id()).await?;
        let (_, what, whose) = if slot.key.starts_with("imap:") {
            IMAP_WAITERS
        } else {
            HTTP_WAITERS
        };
        Ok(self.wakeups().slot_past_cap(slot, caps, (what, whose)))
    }

    /// Counts one database look by a waiter (`long_poll`, `event_stream`, `imap_idle`):
    /// `mailroom_waiter_polls_total`, and [`Services::waiter_polls`] for this server.
    pub fn note_waiter_poll(&self, waiter: &'static str) {
        self.wakeups().polls.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("mailroom_waiter_polls_total", "waiter" => waiter).increment(1);
    }

    /// Database looks by waiters of this server so far (what a wake-up costs).
    pub fn waiter_polls(&self) -> u64 {
        self.wakeups().polls.load(Ordering::Relaxed)
    }

    /// How often waiters look at the database without a signal.
    pub fn poll_interval(&self) -> Duration {
        self.config().streams.poll_interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: (&str, &str, &str) = ("streams", "streams", "this key");

    fn limits(per_key: usize, per_account: usize) -> Caps {
        Caps {
            per_key,
            per_account,
        }
    }

    #[tokio::test]
    async fn a_change_wakes_only_the_waiters_of_its_inbox() {
        let w = Arc::new(Wakeups::default());
        let mut x = w.signal("inbox_x");
        let mut x2 = w.signal("inbox_x");
        let y = w.signal("inbox_y");
        let mut events = w.events();
        events.borrow_and_update();
        assert!(!x.has_changed() && !y.has_changed());
        w.inbox_changed("inbox_x");
        assert!(x.has_changed() && x2.has_changed());
        assert!(!y.has_changed(), "a change of X woke a waiter of Y");
        // A waiter of X wakes at once; one of Y does not.
        tokio::time::timeout(Duration::from_secs(1), x.changed())
            .await
            .expect("X's waiter wakes");
        assert!(x.has_changed(), "waking is not looking");
        x.mark_seen();
        assert!(!x.has_changed());
        x2.mark_seen();
        assert!(!x2.has_changed());
        let mut y = y;
        assert!(
            tokio::time::timeout(Duration::from_millis(50), y.changed())
                .await
                .is_err()
        );
        // The webhook worker's signal is separate.
        assert!(!events.has_changed().unwrap());
        w.events_recorded();
        assert!(events.has_changed().unwrap());
    }

    #[tokio::test]
    async fn signals_live_only_while_someone_waits() {
        let w = Arc::new(Wakeups::default());
        let a = w.signal("inbox_a");
        let b = w.signal("inbox_a");
        let c = w.signal("inbox_c");
        assert_eq!(w.watched_inboxes(), 2);
        drop(a);
        assert_eq!(w.watched_inboxes(), 2, "b still waits on inbox_a");
        drop(b);
        assert_eq!(w.watched_inboxes(), 1);
        drop(c);
        assert_eq!(w.watched_inboxes(), 0);
        // Signalling an inbox nobody watches creates nothing.
        w.inbox_changed("inbox_z");
        assert_eq!(w.watched_inboxes(), 0);
        // A new waiter after the last one left gets a fresh signal that still works.
        let mut d = w.signal("inbox_a");
        w.inbox_changed("inbox_a");
        tokio::time::timeout(Duration::from_secs(1), d.changed())
            .await
            .expect("wakes");
    }

    #[test]
    fn waiters_are_capped_per_key_and_per_account() {
        let w = Arc::new(Wakeups::default());
        let l = limits(2, 3);
        let k1a = w.admit(l, T, "key:1".into(), "acc_a").unwrap();
        let _k1b = w.admit(l, T, "key:1".into(), "acc_a").unwrap();
        let refused = w.admit(l, T, "key:1".into(), "acc_a").unwrap_err();
        assert!(
            matches!(refused, ServiceError::Busy { code: "TOO_MANY_STREAMS", retry_after_secs, .. } if retry_after_secs > 0)
        );
        // Another key of the same account: one more fits the account's 3.
        let _k2 = w.admit(l, T, "key:2".into(), "acc_a").unwrap();
        let refused = w.admit(l, T, "key:3".into(), "acc_a").unwrap_err();
        assert!(refused.to_string().contains("account"), "{refused}");
        // Another account is not affected.
        let _other = w.admit(l, T, "key:9".into(), "acc_b").unwrap();
        // A slot given back is free again.
        drop(k1a);
        let _again = w.admit(l, T, "key:1".into(), "acc_a").unwrap();
        assert!(w.admit(l, T, "key:1".into(), "acc_a").is_err());
    }

    #[test]
    fn under_lowered_caps_the_newest_waiters_are_past_them() {
        let w = Arc::new(Wakeups::default());
        let wide = limits(10, 10);
        let a = w.admit(wide, T, "key:1".into(), "acc_a").unwrap();
        let b = w.admit(wide, T, "key:2".into(), "acc_a").unwrap();
        let c = w.admit(wide, T, "key:1".into(), "acc_a").unwrap();
        let labels = (T.1, T.2);
        let narrow = limits(10, 2);
        assert!(w.slot_past_cap(&a, narrow, labels).is_none());
        assert!(w.slot_past_cap(&b, narrow, labels).is_none());
        let (reason, _) = w
            .slot_past_cap(&c, narrow, labels)
            .expect("the newest is past");
        assert_eq!(reason, "waiters_per_account");
        let (reason, _) = w
            .slot_past_cap(&c, limits(1, 10), labels)
            .expect("past its key's cap");
        assert_eq!(reason, "waiters_per_key");
        // Once an older one goes, the newest fits again.
        drop(a);
        assert!(w.slot_past_cap(&c, narrow, labels).is_none());
    }
}
