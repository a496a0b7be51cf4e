//! The outbound queue worker: it takes due recipients from the durable queue, finds each
//! domain's mail servers, delivers over SMTP with opportunistic STARTTLS, and records what
//! happened to every recipient (with its event, and a DSN to the sender for a bounce).
//!
//! Messages enter the queue in the transaction that files the sender's Sent copy (see
//! `mailroom_store::OutboundSpec`); DKIM signing happened before that, at submission. The
//! worker never holds a message only in memory: it leases recipients for a while, and a
//! lease that runs out (the process died) makes them due again, so nothing accepted is
//! lost. A restart between a remote server's `250` and the write of that result is the one
//! window in which a message can go out twice; it is as small as one database commit.

pub mod client;
mod connect;
pub mod dsn;
pub mod route;
pub mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mail_auth::MessageAuthenticator;
use mailroom_core::event::{EventType, NewEvent};
use mailroom_core::time::now_ms;
use mailroom_services::Services;
use mailroom_store::{DueRecipient, NewMessage, Recipient, RecipientOutcome, RecipientResult};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::client::{ClientError, Connection, Reply};
use crate::route::RouteError;

/// A smarthost that receives all outbound mail instead of each domain's MX.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Relay {
    pub host: String,
    pub port: u16,
    /// AUTH PLAIN with these, only over TLS (or to a loopback relay).
    pub username: Option<String>,
    pub password: Option<String>,
    /// PEM certificates trusted for the relay besides the public and system roots (an
    /// operator's own CA, or the relay's self-signed certificate).
    pub ca_file: Option<std::path::PathBuf>,
}

/// How the worker delivers.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// The name this server gives in EHLO and in DSNs.
    pub hostname: String,
    /// The port of remote mail servers (25; tests point it elsewhere).
    pub port: u16,
    pub relay: Option<Relay>,
    /// Delays after the 1st, 2nd, … failed attempt; the last one repeats until the queue
    /// lifetime runs out.
    pub retry_schedule: Vec<Duration>,
    /// Destinations delivered to at the same time.
    pub concurrency: usize,
    pub connect_timeout: Duration,
    /// Time allowed for each reply (the final reply to DATA included).
    pub timeout: Duration,
    /// DNS server for MX lookups; `None`: the system's.
    pub dns_resolver: Option<SocketAddr>,
    /// How often the queue is looked at when nothing wakes the worker.
    pub poll_interval: Duration,
    /// Whether MX delivery may connect to loopback, private, link-local and other
    /// special-purpose addresses (`mailroom_core::netaddr`). Off in production: a tenant
    /// who controls a domain's DNS would otherwise make the server talk SMTP to the
    /// operator's own network. On under `--dev`, where test peers live on 127.0.0.1. The
    /// relay is the operator's choice and is never checked.
    pub allow_private_destinations: bool,
}

impl DeliveryConfig {
    pub fn new(hostname: String) -> DeliveryConfig {
        DeliveryConfig {
            hostname,
            port: 25,
            relay: None,
            retry_schedule: default_retry_schedule(),
            concurrency: 16,
            connect_timeout: Duration::from_secs(30),
            timeout: Duration::from_secs(300),
            dns_resolver: None,
            poll_interval: Duration::from_secs(1),
            allow_private_destinations: false,
        }
    }
}

/// 1 min, 5 min, 15 min, 30 min, 1 h, 2 h, then every 4 h until the lifetime (5 days by
/// default) runs out: about 33 attempts in all.
pub fn default_retry_schedule() -> Vec<Duration> {
    [60, 300, 900, 1800, 3600, 7200, 14_400]
        .into_iter()
        .map(Duration::from_secs)
        .collect()
}

/// How long one worker holds recipients before another may take them.
const LEASE: Duration = Duration::from_secs(15 * 60);
/// Recipients taken from the queue at once.
const BATCH: u32 = 256;
/// MX hosts, and addresses per host, tried for one destination.
const MAX_HOSTS: usize = 5;
const MAX_ADDRESSES: usize = 4;

/// The worker cannot start.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error(transparent)]
    Tls(#[from] tls::TlsSetupError),
}

/// The outbound delivery worker.
pub struct DeliveryWorker {
    services: Services,
    config: DeliveryConfig,
    resolver: Option<MessageAuthenticator>,
    /// Verified TLS for the relay (its roots loaded once), when there is one.
    relay_tls: Option<Arc<rustls::ClientConfig>>,
    /// Recipients leased by deliveries in flight, given back if the worker stops first.
    in_flight: std::sync::Mutex<std::collections::HashSet<(String, String)>>,
}

impl DeliveryWorker {
    /// A worker for `config`; an error when the relay's CA file cannot be read.
    pub fn new(
        services: Services,
        config: DeliveryConfig,
    ) -> Result<DeliveryWorker, DeliveryError> {
        let resolver = match mailroom_services::mailauth::resolver(config.dns_resolver) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::error!(error = %e, "no DNS resolver: outbound mail is deferred until one works");
                None
            }
        };
        let relay_tls = match &config.relay {
            Some(r) => Some(tls::verified(r.ca_file.as_deref())?),
            None => None,
        };
        Ok(DeliveryWorker {
            services,
            config,
            resolver,
            relay_tls,
            in_flight: std::sync::Mutex::default(),
        })
    }

    /// Delivers until `stop`; then lets deliveries in flight finish for a few seconds and
    /// gives the rest of their recipients back to the queue.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        if self.services.store().backend() == mailroom_store::Backend::Sqlite {
            match self.services.store().release_all_recipient_leases().await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(recipients = n, "took back deliveries left by a stopped run")
                }
                Err(e) => tracing::warn!(error = %e, "cannot release old delivery leases"),
            }
        }
        let slots = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
        let mut tasks: JoinSet<()> = JoinSet::new();
        loop {
            while tasks.try_join_next().is_some() {}
            if slots.available_permits() > 0 {
                let now = now_ms();
                let lease_until = now + LEASE.as_millis() as i64;
                match self
                    .services
                    .store()
                    .lease_due_recipients(now, BATCH, lease_until)
                    .await
                {
                    Ok(due) if !due.is_empty() => {
                        metrics::counter!("mailroom_delivery_leased_total")
                            .increment(due.len() as u64);
                        for (_, group) in group_by_destination(due, self.config.relay.is_some()) {
                            let Ok(permit) = slots.clone().acquire_owned().await else {
                                return;
                            };
                            let me = self.clone();
                            tasks.spawn(async move {
                                me.deliver_and_record(group).await;
                                drop(permit);
                            });
                        }
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot read the outbound queue"),
                }
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.services.queue_wakeup() => {}
                _ = tokio::time::sleep(self.config.poll_interval) => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        // Deliveries in flight finish if they can; the recipients of the others go back
        // to the queue at once (another process, or the next start, takes them).
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        let left: Vec<(String, String)> = self
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .collect();
        if !left.is_empty() {
            match self.services.store().release_recipients(&left).await {
                Ok(()) => tracing::info!(
                    recipients = left.len(),
                    "gave unfinished deliveries back to the queue"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot give unfinished deliveries back; their leases run out")
                }
            }
        }
    }

    async fn deliver_and_record(&self, group: Vec<DueRecipient>) {
        let keys: Vec<(String, String)> = group
            .iter()
            .map(|d| (d.outbound_id.clone(), d.recipient.clone()))
            .collect();
        self.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(keys.iter().cloned());
        self.deliver_and_record_inner(group, &keys).await;
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        for k in &keys {
            in_flight.remove(k);
        }
    }

    async fn deliver_and_record_inner(&self, group: Vec<DueRecipient>, keys: &[(String, String)]) {
        let attempts = self.deliver_group(&group).await;
        let now = now_ms();
        let results = self.results(&group, attempts, now).await;
        match self
            .services
            .store()
            .record_recipient_results(&results, now)
            .await
        {
            // The sender's inbox got delivery events (and, for a bounce, the DSN): wake its
            // waiters and the webhook worker.
            Ok(()) => self
                .services
                .inboxes_changed(group.iter().map(|r| r.inbox_id.as_str())),
            Err(e) => {
                tracing::error!(error = %e, "cannot record delivery results; they will be retried");
                let _ = self.services.store().release_recipients(keys).await;
            }
        }
    }

    /// Tries every recipient of one destination over (at most) one connection.
    async fn deliver_group(&self, group: &[DueRecipient]) -> Vec<Attempt> {
        let Some(first) = group.first() else {
            return Vec::new();
        };
        let all = |a: Attempt| group.iter().map(|_| a.clone()).collect::<Vec<_>>();
        let session = match self.open(&first.domain).await {
            Ok(s) => s,
            Err(RouteError::Permanent(text)) => return all(Attempt::permanent(text, None)),
            Err(RouteError::Temporary(text)) => return all(Attempt::temporary(text, None)),
        };
        let (mut conn, mta) = session;
        let mut attempts: Vec<Option<Attempt>> = vec![None; group.len()];
        // One transaction per message, in queue order.
        let mut order: Vec<&str> = Vec::new();
        for d in group {
            if !order.contains(&d.outbound_id.as_str()) {
                order.push(&d.outbound_id);
            }
        }
        let mut broken: Option<String> = None;
        for outbound_id in order {
            let idx: Vec<usize> = (0..group.len())
                .filter(|&i| group[i].outbound_id == outbound_id)
                .collect();
            if let Some(err) = &broken {
                for &i in &idx {
                    attempts[i] = Some(Attempt::temporary(err.clone(), Some(mta.clone())));
                }
                continue;
            }
            let head = &group[idx[0]];
            let body = match self.services.store().get_blob(&head.blob_hash).await {
                Ok(Some(b)) => b,
                Ok(None) => {
                    for &i in &idx {
                        attempts[i] = Some(Attempt::permanent(
                            "5.3.0 the message body is missing from the store".into(),
                            None,
                        ));
                    }
                    continue;
                }
                Err(e) => {
                    for &i in &idx {
                        attempts[i] = Some(Attempt::temporary(
                            format!("4.3.0 cannot read the message: {e}"),
                            None,
                        ));
                    }
                    continue;
                }
            };
            match self.transaction(&mut conn, head, &idx, group, &body).await {
                Ok(results) => {
                    for (i, a) in results {
                        attempts[i] = Some(a.with_mta(&mta));
                    }
                }
                Err(e) => {
                    let text = format!("4.4.2 connection to {mta} lost: {e}");
                    for &i in &idx {
                        attempts[i] = Some(Attempt::temporary(text.clone(), Some(mta.clone())));
                    }
                    broken = Some(text);
                }
            }
        }
        if broken.is_none() {
            conn.quit().await;
        }
        attempts
            .into_iter()
            .map(|a| a.unwrap_or_else(|| Attempt::temporary("4.0.0 not attempted".into(), None)))
            .collect()
    }

    /// MAIL, RCPT for each recipient, DATA. Returns each recipient's attempt.
    async fn transaction(
        &self,
        conn: &mut Connection,
        head: &DueRecipient,
        idx: &[usize],
        group: &[DueRecipient],
        body: &[u8],
    ) -> Result<Vec<(usize, Attempt)>, ClientError> {
        let size = if conn.has_extension("SIZE") {
            format!(" SIZE={}", body.len())
        } else {
            String::new()
        };
        let mail = conn
            .command(&format!("MAIL FROM:<{}>{size}", head.mail_from))
            .await?;
        if !mail.is_positive() {
            conn.command("RSET").await?;
            return Ok(idx
                .iter()
                .map(|&i| (i, Attempt::from_reply(&mail)))
                .collect());
        }
        let mut out = Vec::with_capacity(idx.len());
        let mut accepted = Vec::new();
        for &i in idx {
            let reply = conn
                .command(&format!("RCPT TO:<{}>", group[i].recipient))
                .await?;
            if reply.is_positive() {
                accepted.push(i);
            } else {
                out.push((i, Attempt::from_reply(&reply)));
            }
        }
        if accepted.is_empty() {
            conn.command("RSET").await?;
            return Ok(out);
        }
        let last = match conn.data(body).await? {
            Ok(final_reply) => final_reply,
            Err(refused) => {
                conn.command("RSET").await?;
                refused
            }
        };
        for i in accepted {
            out.push((i, Attempt::from_reply(&last)));
        }
        Ok(out)
    }

    /// What each attempt means for its recipient, with events and DSNs.
    async fn results(
        &self,
        group: &[DueRecipient],
        attempts: Vec<Attempt>,
        now: i64,
    ) -> Vec<RecipientResult> {
        let mut results = Vec::with_capacity(group.len());
        let mut failed: HashMap<String, Vec<(usize, dsn::FailedRecipient)>> = HashMap::new();
        for (i, (due, attempt)) in group.iter().zip(attempts).enumerate() {
            let attempts_so_far = due.attempts + 1;
            let (outcome, response) = if attempt.delivered {
                (RecipientOutcome::Delivered, attempt.text.clone())
            } else if attempt.permanent {
                (RecipientOutcome::Bounced, attempt.text.clone())
            } else if now >= due.expires_at {
                (
                    RecipientOutcome::Bounced,
                    format!(
                        "4.4.7 delivery time expired after {attempts_so_far} attempts; last error: {}",
                        attempt.text
                    ),
                )
            } else {
                let idx = usize::try_from(due.attempts)
                    .unwrap_or(0)
                    .min(self.config.retry_schedule.len().saturating_sub(1));
                let delay = self
                    .config
                    .retry_schedule
                    .get(idx)
                    .copied()
                    .unwrap_or(Duration::from_secs(3600));
                let next = (now + delay.as_millis() as i64).min(due.expires_at.max(now));
                (
                    RecipientOutcome::Deferred {
                        next_attempt_at: next,
                    },
                    attempt.text.clone(),
                )
            };
            let (event_type, status) = match outcome {
                RecipientOutcome::Delivered => (EventType::MessageDelivered, "delivered"),
                RecipientOutcome::Deferred { .. } => (EventType::MessageDeferred, "deferred"),
                RecipientOutcome::Bounced => (EventType::MessageBounced, "bounced"),
            };
            metrics::counter!("mailroom_delivery_results_total", "status" => status).increment(1);
            let mut data = serde_json::json!({
                "message_id": due.message_id,
                "inbox_id": due.inbox_id,
                "queue_id": due.outbound_id,
                "recipient": due.recipient,
                "status": status,
                "response": response,
                "attempts": attempts_so_far,
                "remote_mta": attempt.mta,
            });
            if let RecipientOutcome::Deferred { next_attempt_at } = outcome {
                data["next_attempt_at"] = mailroom_core::time::rfc3339(next_attempt_at).into();
            }
            if outcome == RecipientOutcome::Bounced {
                failed.entry(due.outbound_id.clone()).or_default().push((
                    i,
                    dsn::FailedRecipient {
                        address: due.recipient.clone(),
                        // A DSN's failure is permanent even when the last error was not.
                        status: {
                            let st = dsn::status_of(&response);
                            match st.strip_prefix('4') {
                                Some(rest) => format!("5{rest}"),
                                None => st,
                            }
                        },
                        diagnostic: response.clone(),
                        remote_mta: attempt.mta.clone(),
                    },
                ));
            }
            results.push(RecipientResult {
                outbound_id: due.outbound_id.clone(),
                recipient: due.recipient.clone(),
                outcome,
                response,
                event: NewEvent::delivery_status(event_type, &due.account_id, &due.inbox_id, data),
                bounce: None,
            });
        }
        // One DSN per message, carried by its first bounced recipient's result.
        for (_, list) in failed {
            let Some(&(first, _)) = list.first() else {
                continue;
            };
            let due = &group[first];
            let recipients: Vec<dsn::FailedRecipient> = list.into_iter().map(|(_, f)| f).collect();
            if let Some(bounce) = self.bounce_message(due, &recipients, now).await {
                results[first].bounce = Some(bounce);
            }
        }
        results
    }

    /// The DSN for `recipients` of `due`'s message, filed in the sender's inbox.
    async fn bounce_message(
        &self,
        due: &DueRecipient,
        recipients: &[dsn::FailedRecipient],
        now: i64,
    ) -> Option<NewMessage> {
        if due.mail_from.is_empty() {
            // Never bounce a bounce.
            return None;
        }
        let original = match self.services.store().get_blob(&due.blob_hash).await {
            Ok(Some(b)) => b,
            _ => Vec::new(),
        };
        let raw = dsn::build(&dsn::Report {
            reporting_mta: &self.config.hostname,
            to: &due.mail_from,
            arrival_ms: due.created_at,
            now_ms: now,
            recipients,
            original: &original,
        });
        let facts = mailroom_services::parse_facts(&raw);
        let original_facts = mailroom_services::parse_facts(&original);
        Some(NewMessage {
            hash: hex::encode(Sha256::digest(&raw)),
            internal_date: now,
            recipients: vec![Recipient {
                account_id: due.account_id.clone(),
                inbox_id: due.inbox_id.clone(),
                // Counted, never refused: a bounce is small and tells the sender something
                // they need to know.
                storage: mailroom_store::StorageLimit::UNLIMITED,
            }],
            mailbox: "INBOX".into(),
            message_id: facts.message_id,
            // The bounce joins the sent message's thread.
            references: original_facts.message_id.into_iter().collect(),
            subject: facts.subject,
            from_addr: facts.from_addr,
            envelope_from: Some(String::new()),
            auth_results: None,
            flags: Vec::new(),
            outbound: None,
            raw,
        })
    }
}

/// The result of one attempt for one recipient, before it is turned into an outcome.
#[derive(Debug, Clone)]
struct Attempt {
    delivered: bool,
    permanent: bool,
    text: String,
    mta: Option<String>,
}

impl Attempt {
    fn permanent(text: String, mta: Option<String>) -> Attempt {
        Attempt {
            delivered: false,
            permanent: true,
            text,
            mta,
        }
    }

    fn temporary(text: String, mta: Option<String>) -> Attempt {
        Attempt {
            delivered: false,
            permanent: false,
            text,
            mta,
        }
    }

    fn from_reply(reply: &Reply) -> Attempt {
        Attempt {
            delivered: (200..300).contains(&reply.code),
            permanent: reply.is_permanent(),
            text: reply.line(),
            mta: None,
        }
    }

    fn with_mta(mut self, mta: &str) -> Attempt {
        self.mta = Some(mta.to_owned());
        self
    }
}

/// Recipients grouped by where they go: their domain, or the relay for all.
fn group_by_destination(due: Vec<DueRecipient>, relay: bool) -> Vec<(String, Vec<DueRecipient>)> {
    let mut groups: Vec<(String, Vec<DueRecipient>)> = Vec::new();
    for d in due {
        let key = if relay {
            String::new()
        } else {
            d.domain.clone()
        };
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, list)) => list.push(d),
            None => groups.push((key, vec![d])),
        }
    }
    groups
}
