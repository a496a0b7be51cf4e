//! Events out: the webhook worker.
//!
//! It reads the outbox (the `events` table every change writes into, in its own
//! transaction), turns each event into one delivery per webhook that wants it, and sends the
//! deliveries: signed (Standard Webhooks), at least once, with the same `webhook-id` on every
//! retry, on a schedule that spans about a day and a half. Deliveries are leased in the
//! database, so several processes sharing PostgreSQL never send one twice at once, and a
//! restart loses nothing: what was not delivered is still pending.
//!
//! Fairness: every free account is a possible attacker, and a webhook that never answers
//! holds a delivery slot until the timeout. So the slots are shared out: at most
//! `max_in_flight_per_account` of one account's deliveries and `max_per_endpoint` of one
//! endpoint's are in flight at once, and each lease round walks the accounts with due
//! deliveries round-robin (one turn each, starting after the last account served), so an
//! account with nothing in flight gets the next free slot whatever another account's
//! backlog. The fan-out works in bounded batches (events and delivery rows per
//! transaction), so a burst for an account with many webhooks never holds the writer long.

mod resolver;
mod send;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use mailroom_core::time::now_ms;
use mailroom_services::Services;
use mailroom_store::{DueDelivery, FanOutBudget, FanOutResume};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Settings of the worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Delays before the 2nd, 3rd, … attempt; the first is immediate.
    pub retry_schedule: Vec<Duration>,
    /// Time allowed for one delivery (connect, send, answer).
    pub timeout: Duration,
    /// Slots and fan-out batches.
    pub budgets: Budgets,
    /// Base of links in payloads (`…/v1/inboxes/{id}/messages/{mid}`).
    pub public_url: String,
}

/// How much the worker does at once (`[webhooks]` in the config file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budgets {
    /// Deliveries in flight at once, in all.
    pub max_in_flight: usize,
    /// Deliveries in flight at once for one account (all its endpoints).
    pub max_in_flight_per_account: usize,
    /// Deliveries in flight at once to one endpoint.
    pub max_per_endpoint: usize,
    /// What one fan-out transaction may do.
    pub fan_out: FanOutBudget,
}

impl Default for Budgets {
    fn default() -> Self {
        Budgets {
            max_in_flight: 128,
            max_in_flight_per_account: 8,
            max_per_endpoint: 4,
            fan_out: FanOutBudget {
                events: 200,
                deliveries: 1000,
            },
        }
    }
}

/// A lease lasts longer than any delivery may take; an expired lease (a crashed process)
/// makes the delivery due again.
const LEASE: Duration = Duration::from_secs(120);
/// The longest pause between looks at the outbox and the schedule without a wake-up (other
/// processes' events, retries coming due).
const IDLE_POLL: Duration = Duration::from_millis(200);
/// How long after a new event the fan-out waits for others. Under a connection-per-message
/// load, fanning out each event in its own write transaction cost a second fsync per
/// message; 50 ms adds that much to a webhook's latency and takes most of that cost away.
const FAN_OUT_GATHER: Duration = Duration::from_millis(50);
/// Accounts one lease round may visit, so that a round stays short however many accounts
/// have work; the next round goes on from where this one stopped.
const MAX_ACCOUNTS_PER_ROUND: usize = 1000;

pub struct WebhookWorker {
    services: Services,
    client: reqwest::Client,
    config: WorkerConfig,
    in_flight: Mutex<InFlight>,
}

/// Deliveries in flight in this process, per account and per endpoint.
#[derive(Debug, Default)]
struct InFlight {
    accounts: HashMap<String, usize>,
    /// webhook id → (its account, deliveries in flight).
    endpoints: HashMap<String, (String, usize)>,
}

/// A delivery's place in the budgets: a global permit and its account's and endpoint's
/// counts, given back on drop.
pub(crate) struct Held {
    worker: Arc<WebhookWorker>,
    account: String,
    webhook: String,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut f = self.worker.in_flight();
        if let Some(n) = f.accounts.get_mut(&self.account) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                f.accounts.remove(&self.account);
            }
        }
        if let Some((_, n)) = f.endpoints.get_mut(&self.webhook) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                f.endpoints.remove(&self.webhook);
            }
        }
    }
}

/// Where the worker stands between rounds.
#[derive(Debug, Default)]
struct Progress {
    /// Inside an event split over fan-out batches.
    resume: Option<FanOutResume>,
    /// The last account a lease round served; the next round starts after it.
    after: String,
}

impl WebhookWorker {
    pub fn new(services: Services, config: WorkerConfig) -> Result<WebhookWorker, reqwest::Error> {
        let policy = services.config().webhooks;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .no_proxy()
            .user_agent(concat!("Mailroom-Webhooks/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(resolver::PolicyResolver { policy }))
            .build()?;
        Ok(WebhookWorker {
            services,
            client,
            config,
            in_flight: Mutex::new(InFlight::default()),
        })
    }

    fn in_flight(&self) -> MutexGuard<'_, InFlight> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs until `stop`; deliveries in flight then get a few seconds to finish (the rest
    /// stay leased and become due again when the lease runs out).
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let global = Arc::new(Semaphore::new(self.config.budgets.max_in_flight.max(1)));
        let mut tasks = JoinSet::new();
        let mut wake = self.services.event_signal();
        let mut progress = Progress::default();
        loop {
            if stop.is_cancelled() {
                break;
            }
            wake.borrow_and_update();
            let now = now_ms();
            let (more_events, visible_at) = self.fan_out(&mut progress, now).await;
            let leased = self
                .lease_round(&global, &mut tasks, &mut progress, now)
                .await;
            while tasks.try_join_next().is_some() {}
            if more_events || leased > 0 {
                continue;
            }
            let pause = visible_at
                .map(|at| Duration::from_millis(at.saturating_sub(now_ms()).max(1) as u64))
                .map_or(IDLE_POLL, |d| d.min(IDLE_POLL));
            tokio::select! {
                _ = wake.changed() => {
                    // Let a burst of arrivals gather: one fan-out transaction (and one
                    // fsync) for all of them, instead of one for each message.
                    tokio::select! {
                        _ = tokio::time::sleep(FAN_OUT_GATHER) => {}
                        _ = stop.cancelled() => break,
                    }
                }
                // A delivery finished: its slot may go to whoever waits.
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                _ = tokio::time::sleep(pause) => {}
                _ = stop.cancelled() => break,
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        tasks.shutdown().await;
    }

    /// One fan-out batch. Returns whether more events wait, and when the next one becomes
    /// readable (PostgreSQL's grace period).
    async fn fan_out(&self, progress: &mut Progress, now: i64) -> (bool, Option<i64>) {
        match self
            .services
            .store()
            .fan_out(self.config.budgets.fan_out, progress.resume.as_ref(), now)
            .await
        {
            Ok(batch) => {
                progress.resume = batch.resume;
                (batch.more, batch.next_visible_at)
            }
            Err(e) => {
                tracing::warn!(error = %e, "webhook fan-out failed; retrying");
                progress.resume = None;
                (false, None)
            }
        }
    }

    /// Room left for `account`, and its endpoints that have their share in flight.
    fn room_of(&self, account: &str) -> (usize, Vec<String>) {
        let f = self.in_flight();
        let used = f.accounts.get(account).copied().unwrap_or(0);
        let busy = f
            .endpoints
            .iter()
            .filter(|(_, (a, n))| a == account && *n >= self.config.budgets.max_per_endpoint)
            .map(|(w, _)| w.clone())
            .collect();
        (
            self.config
                .budgets
                .max_in_flight_per_account
                .saturating_sub(used),
            busy,
        )
    }

    fn endpoint_load(&self, webhook: &str) -> usize {
        self.in_flight()
            .endpoints
            .get(webhook)
            .map_or(0, |(_, n)| *n)
    }

    /// Picks due deliveries account by account (round-robin, each account within its
    /// room), leases them in one transaction and starts them. Returns how many started.
    async fn lease_round(
        self: &Arc<Self>,
        global: &Arc<Semaphore>,
        tasks: &mut JoinSet<()>,
        progress: &mut Progress,
        now: i64,
    ) -> usize {
        let mut free = global.available_permits();
        if free == 0 {
            return 0;
        }
        let store = self.services.store();
        let mut picks = Vec::new();
        let mut visited = HashSet::new();
        let mut cursor = progress.after.clone();
        let mut wrapped = cursor.is_empty();
        while free > 0 && visited.len() < MAX_ACCOUNTS_PER_ROUND {
            let account = match store.next_due_account(&cursor, now).await {
                Ok(Some(a)) => a,
                Ok(None) if !wrapped => {
                    wrapped = true;
                    cursor.clear();
                    continue;
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "looking for due webhook deliveries failed");
                    break;
                }
            };
            if !visited.insert(account.clone()) {
                break;
            }
            cursor.clone_from(&account);
            let (room, busy) = self.room_of(&account);
            let room = room.min(free);
            if room == 0 {
                continue;
            }
            let candidates = match store
                .due_deliveries_of(&account, now, (room * 2) as u32, &busy)
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "reading due webhook deliveries failed");
                    break;
                }
            };
            let mut taken: HashMap<String, usize> = HashMap::new();
            let mut took = 0;
            for c in candidates {
                if took == room {
                    break;
                }
                let t = taken.entry(c.webhook_id.clone()).or_insert(0);
                if self.endpoint_load(&c.webhook_id) + *t >= self.config.budgets.max_per_endpoint {
                    continue;
                }
                *t += 1;
                took += 1;
                picks.push(c.delivery_id);
            }
            if took > 0 {
                free -= took;
                progress.after.clone_from(&account);
            }
        }
        let leased = match store
            .lease_deliveries(&picks, now, now + LEASE.as_millis() as i64)
            .await
        {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "leasing webhook deliveries failed");
                return 0;
            }
        };
        let mut started = 0;
        for d in leased {
            // Only this loop takes permits, and it counted them: this never fails.
            let Ok(permit) = global.clone().try_acquire_owned() else {
                break;
            };
            let held = self.hold(&d, permit);
            tasks.spawn(self.clone().deliver(d, held));
            started += 1;
        }
        started
    }

    fn hold(self: &Arc<Self>, d: &DueDelivery, permit: OwnedSemaphorePermit) -> Held {
        let account = d.webhook.account_id.clone();
        let webhook = d.webhook.id.clone();
        let mut f = self.in_flight();
        *f.accounts.entry(account.clone()).or_insert(0) += 1;
        f.endpoints
            .entry(webhook.clone())
            .or_insert_with(|| (account.clone(), 0))
            .1 += 1;
        drop(f);
        Held {
            worker: self.clone(),
            account,
            webhook,
            _permit: permit,
        }
    }
}
