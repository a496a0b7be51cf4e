//! The rules of Mailroom that more than one front end needs, written once.
//!
//! The HTTP API, the SMTP, IMAP and POP3 servers and the CLI all call [`Services`]: to
//! authenticate a secret, to create an inbox, to check a tier limit, to issue an upgrade
//! link. Front ends parse their protocol and shape their answers; they decide nothing that
//! is decided here.

mod auth;
mod cache;
mod collector;
pub mod dkim;
pub mod dmarc;
pub mod dnscache;
pub mod domains;
mod error;
mod inbound;
pub mod keys;
pub mod login_throttle;
pub mod mailauth;
mod messages;
pub mod notices;
pub mod origin;
pub mod ratelimit;
mod revocation;
pub mod secrets;
pub mod send;
pub mod storage;
mod stream;
pub mod submission;
mod tenancy;
mod upgrade;
pub mod users;
mod wakeup;
pub mod webhooks;

use std::sync::Arc;

use mailroom_core::Tiers;
use mailroom_core::secret::MasterSecret;
use mailroom_store::Store;

pub use auth::Principal;
pub use collector::CollectorConfig;
pub use error::{ServiceError, UpgradeContext};
pub use inbound::{InboundEnvelope, ParsedFacts, RcptVerdict, parse_facts};
pub use login_throttle::{LoginThrottlePolicy, Throttled};
pub use messages::{
    AddressView, AttachmentView, Deleted, DeliveryView, Extracted, HeaderView, ListFilter,
    MAX_WAIT, MessagePatch, MessageView, Wait, view_of,
};
pub use notices::{NoticeCreated, NoticeRequest};
pub use ratelimit::{RateDecision, RateLimiter, RateRule};
pub use revocation::{Credential, RECHECK_INTERVAL};
pub use storage::{StorageMeter, StorageReport};
pub use stream::{CursorStep, EventCursor};
pub use tenancy::{
    AccountSummary, Capabilities, Capability, CreateInbox, CreatedInbox, LimitsView, Refusal,
    SmtpCredentials,
};
pub use upgrade::{UpgradeLink, UpgradeLinkInfo};
pub use wakeup::{Caps, InboxSignal, StreamLimits, WAIT_RETRY_AFTER_SECS, WaitSlot};

/// What the services need to know of the server's configuration.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The server's host name (`mail.example.com`): the SMTP host given to clients.
    pub hostname: String,
    /// The mail domain inboxes are created on unless another is named.
    pub default_domain: String,
    /// Where people reach this server's HTTP API (`https://mail.example.com`); links in
    /// answers start with it.
    pub public_url: String,
    /// The operator's upgrade page; `None` = this server's own `/upgrade` page.
    pub upgrade_url: Option<String>,
    /// The port given to SMTP clients for submission with STARTTLS (587, or 2587 in dev).
    pub submission_port: u16,
    pub tiers: Tiers,
    /// Check SPF/DKIM/DMARC on inbound mail (the server: yes; admin commands: no).
    pub check_mail_auth: bool,
    /// The DNS server those checks ask; `None`: the system's resolvers.
    pub dns_resolver: Option<std::net::SocketAddr>,
    /// What checking one inbound message may cost.
    pub auth_budget: mailauth::AuthBudget,
    /// How far DMARC policies act on inbound mail.
    pub dmarc_enforcement: dmarc::DmarcEnforcement,
    /// Where webhooks may point.
    pub webhooks: webhooks::WebhookPolicy,
    /// How long a message may wait in the outbound queue before it bounces.
    pub queue_lifetime: std::time::Duration,
    /// How long a user's access token (JWT) works.
    pub access_token_ttl: std::time::Duration,
    /// Budgets of long polls, event streams and IMAP IDLE.
    pub streams: StreamLimits,
    /// Wrong passwords allowed per client address and per address and user.
    pub login_throttle: login_throttle::LoginThrottlePolicy,
    /// How long a deleted inbox's address stays reserved for the account that had it
    /// (zero: free at once).
    pub deleted_address_hold: std::time::Duration,
}

/// The services, shared by every front end. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Services {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    mail_auth: Option<mailauth::AuthChecker>,
    cache: cache::Cache,
    /// Per-inbox change signals (long polls, streams, IDLE), the webhook worker's signal,
    /// and the count of waiters.
    wakeups: Arc<wakeup::Wakeups>,
    /// Wakes the delivery worker when something was queued.
    queued: tokio::sync::Notify,
    /// DKIM signers by domain.
    dkim: dkim::SignerCache,
    /// API key uses not yet written (`lastUsedAt`).
    key_uses: keys::KeyUses,
    /// Wrong passwords at every door, per client address and per address and user.
    login_throttle: login_throttle::LoginThrottle,
    /// Password hashes (argon2id) computed at once: each takes ~20 MiB and tens of
    /// milliseconds of a core, so a flood of logins queues here instead of taking every
    /// blocking thread (and the memory) of the process.
    hashing: Arc<tokio::sync::Semaphore>,
    /// Cancelled when the server begins to shut down: long polls and event streams end.
    stopping: tokio_util::sync::CancellationToken,
    config: ServiceConfig,
    master: MasterSecret,
}

/// At most this many password hashes run at once (one per core on the 2-core reference
/// machine, and a little more).
const PASSWORD_HASHES_AT_ONCE: usize = 4;

impl Services {
    pub fn new(store: Store, config: ServiceConfig, master: MasterSecret) -> Services {
        let mail_auth = if config.check_mail_auth {
            match mailauth::AuthChecker::new(config.dns_resolver, config.auth_budget) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "no DNS resolver for SPF/DKIM/DMARC; inbound mail is not checked");
                    None
                }
            }
        } else {
            None
        };
        Services {
            inner: Arc::new(Inner {
                store,
                mail_auth,
                cache: cache::Cache::default(),
                wakeups: Arc::default(),
                queued: tokio::sync::Notify::new(),
                stopping: tokio_util::sync::CancellationToken::new(),
                login_throttle: login_throttle::LoginThrottle::new(config.login_throttle),
                hashing: Arc::new(tokio::sync::Semaphore::new(PASSWORD_HASHES_AT_ONCE)),
                dkim: dkim::SignerCache::default(),
                key_uses: keys::KeyUses::default(),
                config,
                master,
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn config(&self) -> &ServiceConfig {
        &self.inner.config
    }

    pub(crate) fn master(&self) -> &MasterSecret {
        &self.inner.master
    }

    /// Tells long polls and event streams to finish, so a graceful shutdown does not wait
    /// for clients that would otherwise stay connected for ever.
    pub fn begin_shutdown(&self) {
        self.inner.stopping.cancel();
    }

    /// Completes when the server begins to shut down.
    pub fn stopping(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.inner.stopping.cancelled()
    }

    /// Tells the delivery worker that the outbound queue has new work.
    pub fn queue_changed(&self) {
        self.inner.queued.notify_one();
    }

    /// Completes when something was queued since the last call (or now, if it was).
    pub async fn queue_wakeup(&self) {
        self.inner.queued.notified().await;
    }

    pub(crate) fn wakeups(&self) -> &Arc<wakeup::Wakeups> {
        &self.inner.wakeups
    }

    pub(crate) fn mail_auth(&self) -> Option<&mailauth::AuthChecker> {
        self.inner.mail_auth.as_ref()
    }

    pub(crate) fn inner_key_uses(&self) -> &keys::KeyUses {
        &self.inner.key_uses
    }

    pub(crate) fn dkim_signers(&self) -> &dkim::SignerCache {
        &self.inner.dkim
    }

    /// Runs a password hash (argon2id) on the blocking pool, at most
    /// [`PASSWORD_HASHES_AT_ONCE`] at a time, never on an async worker.
    pub(crate) async fn hash_work<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let _permit = self.inner.hashing.clone().acquire_owned().await.ok()?;
        tokio::task::spawn_blocking(work).await.ok()
    }

    pub(crate) fn login_throttle(&self) -> &login_throttle::LoginThrottle {
        &self.inner.login_throttle
    }

    pub(crate) fn cache(&self) -> &cache::Cache {
        &self.inner.cache
    }

    /// Keeps this process's cache in step with other processes that share a PostgreSQL
    /// database. Runs until the task is aborted; does nothing on SQLite.
    pub async fn follow_changes(&self) -> Result<(), ServiceError> {
        let Some(mut listener) = self.store().stale_listener().await? else {
            return Ok(());
        };
        loop {
            match listener.next().await {
                mailroom_store::Stale::Thing(what) => match what.strip_prefix("dkim:") {
                    Some(domain) => self.dkim_signers().evict(domain),
                    None => self.cache().apply(&what),
                },
                mailroom_store::Stale::Everything => {
                    self.cache().evict_all();
                    self.dkim_signers().evict_all();
                }
            }
        }
    }
}
