//! Sending over SMTP submission: who may log in, which addresses they may send as, the tier
//! and quota rules, and delivery (hosted recipients get the message at once, with a copy in
//! the sender's Sent mailbox).

use std::net::IpAddr;

use mailroom_core::ids::{IdKind, is_well_formed};
use mailroom_core::secret::{constant_time_eq, hash_secret};
use mailroom_core::time::now_ms;
use mailroom_store::{NewMessage, Recipient, StorageLimit};
use sha2::{Digest, Sha256};

use crate::{Principal, RcptVerdict, ServiceError, Services, parse_facts};

/// Who logged in to submission, and as whom they may send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    pub account_id: String,
    /// `None`: any inbox address of the account (the account SMTP credential); otherwise
    /// exactly this inbox.
    pub inbox: Option<(String, String)>,
    /// A domain credential (seed 001): only inbox addresses of this domain.
    pub domain: Option<String>,
}

/// Why a login was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginRefused {
    /// Wrong user name or password.
    Invalid,
    /// Too many failures from this address or for this user name: wait.
    Throttled,
    /// The account's tier has no SMTP access.
    NotOnTier,
    /// An API key without the scope for this protocol (`smtp`, `pop3`, `imap`).
    MissingScope(&'static str),
}

/// Where one recipient of a submitted message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// An inbox hosted here: delivered at once, no network hop.
    Local { address: String, inbox: Recipient },
    /// An address on another server: queued for delivery.
    Remote(String),
}

impl Destination {
    pub fn address(&self) -> &str {
        match self {
            Destination::Local { address, .. } => address,
            Destination::Remote(a) => a,
        }
    }

    /// `delivered` for hosted inboxes, `queued` for the rest.
    pub fn initial_status(&self) -> &'static str {
        match self {
            Destination::Local { .. } => "delivered",
            Destination::Remote(_) => "queued",
        }
    }
}

/// What a submitted message did.
#[derive(Debug, Clone)]
pub struct Submitted {
    /// The copies stored here: one per hosted recipient inbox, then the Sent copy last.
    pub message_ids: Vec<String>,
}

fn sender_domain(address: &str) -> String {
    address
        .rsplit_once('@')
        .map(|(_, d)| d.to_ascii_lowercase())
        .unwrap_or_default()
}

impl Services {
    /// Checks a submission login (AUTH PLAIN/LOGIN). Accepted secrets: the account SMTP
    /// credential (user name = account id) and an inbox key (user name = the inbox address).
    pub async fn submission_login(
        &self,
        username: &str,
        password: &str,
        client_ip: IpAddr,
    ) -> Result<Result<Sender, LoginRefused>, ServiceError> {
        self.mail_login("smtp", username, password, client_ip).await
    }

    /// A POP3 login: an inbox address with its inbox key, or with an API key that has the
    /// `pop3` scope.
    pub async fn pop3_login(
        &self,
        username: &str,
        password: &str,
        client_ip: IpAddr,
    ) -> Result<Result<Sender, LoginRefused>, ServiceError> {
        self.mail_login("pop3", username, password, client_ip).await
    }

    /// An IMAP login: an inbox address with its inbox key, or with an API key that has the
    /// `imap` scope. The same rule and throttle as POP3 and submission.
    pub async fn imap_login(
        &self,
        username: &str,
        password: &str,
        client_ip: IpAddr,
    ) -> Result<Result<Sender, LoginRefused>, ServiceError> {
        self.mail_login("imap", username, password, client_ip).await
    }

    /// Whether `secret`, which a mail session (`door`) logged in with, still opens that
    /// door for `inbox_id`: false once the key is revoked or rotated or the inbox deleted.
    /// Keys in use are a cache hit; every change to keys evicts them at once.
    pub async fn mail_key_still_valid(
        &self,
        door: &'static str,
        secret: &str,
        inbox_id: &str,
    ) -> bool {
        match self.authenticate(secret).await {
            Ok(p) => p.require_scope(door).is_ok() && p.may_access_inbox(inbox_id),
            Err(_) => false,
        }
    }

    /// Whether the credential a submission session logged in with still logs in (a key not
    /// revoked or rotated, an SMTP password not changed). Not throttled and not counted:
    /// the session proved it once already.
    pub async fn submission_login_still_valid(&self, username: &str, password: &str) -> bool {
        let user = username.trim().to_ascii_lowercase();
        matches!(self.check_login("smtp", &user, password).await, Ok(Ok(_)))
    }

    /// A login at a mail protocol door (`smtp`, `pop3`, `imap`), throttled by
    /// [`LoginThrottle`](crate::login_throttle::LoginThrottle) as every door is.
    pub async fn mail_login(
        &self,
        door: &'static str,
        username: &str,
        password: &str,
        client_ip: IpAddr,
    ) -> Result<Result<Sender, LoginRefused>, ServiceError> {
        let user = username.trim().to_ascii_lowercase();
        let throttle = self.login_throttle();
        if throttle.admit(door, client_ip, &user).is_err() {
            return Ok(Err(LoginRefused::Throttled));
        }
        let verdict = self.check_login(door, &user, password).await?;
        match verdict {
            Err(LoginRefused::Invalid) => throttle.failed(client_ip, &user),
            Ok(_) => throttle.succeeded(client_ip, &user),
            Err(_) => {}
        }
        Ok(verdict)
    }

    async fn check_login(
        &self,
        door: &'static str,
        user: &str,
        password: &str,
    ) -> Result<Result<Sender, LoginRefused>, ServiceError> {
        // The account SMTP credential opens submission only.
        if is_well_formed(IdKind::Account, user) && door == "smtp" {
            let Some(account) = self.store().get_account(user).await? else {
                return Ok(Err(LoginRefused::Invalid));
            };
            if !constant_time_eq(self.smtp_password(&account).as_bytes(), password.as_bytes()) {
                return Ok(Err(LoginRefused::Invalid));
            }
            if !self.config().tiers.limits(account.tier).smtp_enabled {
                return Ok(Err(LoginRefused::NotOnTier));
            }
            return Ok(Ok(Sender {
                account_id: account.id,
                inbox: None,
                domain: None,
            }));
        }
        // A domain credential (seed 001): `username@domain` of a verified domain.
        if door == "smtp"
            && let Some((local, domain)) = user.rsplit_once('@')
            && let Some((cred, hash)) = self.store().credential_for_login(domain, local).await?
        {
            if !constant_time_eq(hash_secret(password).as_bytes(), hash.as_bytes()) {
                return Ok(Err(LoginRefused::Invalid));
            }
            let Some(account) = self.store().get_account(&cred.account_id).await? else {
                return Ok(Err(LoginRefused::Invalid));
            };
            if !self.config().tiers.limits(account.tier).smtp_enabled {
                return Ok(Err(LoginRefused::NotOnTier));
            }
            return Ok(Ok(Sender {
                account_id: cred.account_id,
                inbox: None,
                domain: Some(cred.domain),
            }));
        }
        match self.authenticate(password).await {
            Ok(Principal::Inbox {
                account_id,
                inbox_id,
                ..
            }) => {
                let inbox = self.store().get_inbox(&account_id, &inbox_id).await?;
                match inbox {
                    Some(i) if i.email == user => Ok(Ok(Sender {
                        account_id,
                        inbox: Some((inbox_id, i.email)),
                        domain: None,
                    })),
                    _ => Ok(Err(LoginRefused::Invalid)),
                }
            }
            Ok(principal @ Principal::ApiKey { .. }) => {
                if principal.require_scope(door).is_err() {
                    return Ok(Err(LoginRefused::MissingScope(door)));
                }
                match self.store().find_inbox_by_email(user).await? {
                    Some((account_id, inbox_id)) if account_id == principal.account_id() => {
                        Ok(Ok(Sender {
                            account_id,
                            inbox: Some((inbox_id, user.to_owned())),
                            domain: None,
                        }))
                    }
                    _ => Ok(Err(LoginRefused::Invalid)),
                }
            }
            Ok(_) | Err(ServiceError::Unauthenticated(_)) => Ok(Err(LoginRefused::Invalid)),
            Err(e) => Err(e),
        }
    }

    /// The inbox a sender may send as `address` from, or a refusal naming the rule.
    pub async fn sending_inbox(
        &self,
        sender: &Sender,
        address: &str,
    ) -> Result<Recipient, ServiceError> {
        let refused = || ServiceError::Forbidden {
            code: "FROM_NOT_ALLOWED",
            message: format!(
                "<{address}> is not an address you may send from (From address validation: use an inbox address of your account)"
            ),
        };
        let address = address.trim().to_ascii_lowercase();
        if let Some(domain) = &sender.domain
            && !address.ends_with(&format!("@{domain}"))
        {
            return Err(ServiceError::Forbidden {
                code: "FROM_NOT_ALLOWED",
                message: format!(
                    "<{address}> is not an address you may send from (From address validation: this credential sends as addresses of {domain} only)"
                ),
            });
        }
        match &sender.inbox {
            // The storage limits are the account's tier's; `submit` sets them.
            Some((inbox_id, email)) if *email == address => Ok(Recipient {
                account_id: sender.account_id.clone(),
                inbox_id: inbox_id.clone(),
                storage: StorageLimit::UNLIMITED,
            }),
            Some(_) => Err(refused()),
            None => match self.store().find_inbox_by_email(&address).await? {
                Some((account_id, inbox_id)) if account_id == sender.account_id => Ok(Recipient {
                    account_id,
                    inbox_id,
                    storage: StorageLimit::UNLIMITED,
                }),
                _ => Err(refused()),
            },
        }
    }

    /// Stores a submitted message: checks the From header and the tier, counts the quota
    /// (one send per recipient), delivers to hosted recipients and files a copy in Sent.
    ///
    /// Recipients on other servers are queued in the same transaction that files the Sent
    /// copy, so an acknowledged message is always either delivered or queued.
    pub async fn submit(
        &self,
        sender: &Sender,
        from_inbox: &Recipient,
        envelope_from: &str,
        destinations: &[Destination],
        data: &[u8],
    ) -> Result<Submitted, ServiceError> {
        // Exactly one From, at most one Sender, To, Subject… (RFC 5322 §3.6): two From
        // headers are how a message says one thing to a checker and another to a reader.
        crate::origin::check_header_counts(data)?;
        let facts = parse_facts(data);
        let header_from = facts.from_addr.clone().unwrap_or_default();
        let mut origins = vec![("From", header_from.clone())];
        for o in crate::origin::origin_addresses(data) {
            if !origins.contains(&o) {
                origins.push(o);
            }
        }
        for (header, address) in &origins {
            self.sending_inbox(sender, address).await.map_err(|_| ServiceError::Forbidden {
                code: "FROM_NOT_ALLOWED",
                message: format!(
                    "the {header} header <{address}> is not an address you may send from (From address validation)"
                ),
            })?;
        }
        let account = self
            .store()
            .get_account(&sender.account_id)
            .await?
            .ok_or_else(|| ServiceError::Unauthenticated("invalid credentials".into()))?;
        let limits = self.config().tiers.limits(account.tier).clone();
        if !limits.can_send() {
            return Err(ServiceError::TierLimit {
                code: "SEND_REQUIRES_PAID",
                message: format!(
                    "the {} tier is receive-only; sending needs a paid tier",
                    account.tier
                ),
                upgrade: self
                    .upgrade_context(&account.id, account.tier, "send email", |l| l.can_send()),
            });
        }
        let now = chrono::Utc::now();
        let quota = mailroom_store::SendQuota {
            account_id: account.id.clone(),
            n: destinations.len() as u64,
            day: format!("d:{}", now.format("%Y-%m-%d")),
            month: format!("m:{}", now.format("%Y-%m")),
            max_day: limits.max_sends_per_day,
            max_month: limits.max_sends_per_month,
        };
        // Every accepted message is signed for the sending inbox's domain.
        let domain = sender_domain(&header_from);
        let signed = self.dkim_sign(&domain, data).await?;
        let data = signed.as_slice();
        let hash = hex::encode(Sha256::digest(data));
        let mut local: Vec<Recipient> = Vec::new();
        for d in destinations {
            if let Destination::Local { inbox, .. } = d
                && !local.contains(inbox)
            {
                local.push(inbox.clone());
            }
        }
        let internal_date = now_ms();
        let base = NewMessage {
            raw: data.to_vec(),
            hash,
            internal_date,
            recipients: local,
            mailbox: "INBOX".into(),
            message_id: facts.message_id,
            references: facts.references,
            subject: facts.subject,
            from_addr: facts.from_addr,
            envelope_from: Some(header_from),
            auth_results: None,
            flags: Vec::new(),
            outbound: None,
        };
        let lifetime = i64::try_from(self.config().queue_lifetime.as_millis()).unwrap_or(i64::MAX);
        let outbound = mailroom_store::OutboundSpec {
            mail_from: envelope_from.to_ascii_lowercase(),
            local: destinations
                .iter()
                .filter(|d| matches!(d, Destination::Local { .. }))
                .map(|d| d.address().to_owned())
                .collect(),
            remote: destinations
                .iter()
                .filter(|d| matches!(d, Destination::Remote(_)))
                .map(|d| d.address().to_owned())
                .collect(),
            expires_at: internal_date.saturating_add(lifetime),
        };
        // The Sent copy counts against the sender's own storage.
        let from_inbox = Recipient {
            storage: self.storage_limit(account.tier),
            ..from_inbox.clone()
        };
        let sent = NewMessage {
            recipients: vec![from_inbox.clone()],
            mailbox: "Sent".into(),
            flags: vec!["\\Seen".into()],
            outbound: Some(outbound),
            ..base.clone()
        };
        // The quota, the hosted copies, the Sent copy and the queue entry commit together:
        // one transaction, shared with other messages committing at the same moment.
        let mut batch = Vec::with_capacity(2);
        if !base.recipients.is_empty() {
            batch.push(base);
        }
        batch.push(sent);
        let stored = match self.store().deliver_all(batch, Some(quota)).await {
            Ok(stored) => stored,
            Err(mailroom_store::StoreError::QuotaExceeded(which)) => {
                return Err(self.over_quota(&account, &limits, which, now));
            }
            Err(mailroom_store::StoreError::StorageFull { inbox_id, scope })
                if inbox_id == from_inbox.inbox_id =>
            {
                return Err(self.storage_refusal(&account.id, account.tier, scope));
            }
            Err(mailroom_store::StoreError::StorageFull { inbox_id, .. }) => {
                return Err(recipient_full(destinations, &inbox_id));
            }
            Err(e) => return Err(e.into()),
        };
        let stored: Vec<_> = stored.into_iter().flatten().collect();
        self.inboxes_changed(stored.iter().map(|m| m.inbox_id.as_str()));
        let ids: Vec<String> = stored.into_iter().map(|m| m.id).collect();
        self.queue_changed();
        Ok(Submitted { message_ids: ids })
    }

    /// The refusal for a send over the daily or monthly limit, saying when it resets.
    fn over_quota(
        &self,
        account: &mailroom_store::AccountRow,
        limits: &mailroom_core::TierLimits,
        which: &'static str,
        now: chrono::DateTime<chrono::Utc>,
    ) -> ServiceError {
        let (limit, resets) = if which == "day" {
            let tomorrow = (now + chrono::Duration::days(1))
                .format("%Y-%m-%dT00:00:00Z")
                .to_string();
            (limits.max_sends_per_day.unwrap_or(0), tomorrow)
        } else {
            let next = if now.format("%m").to_string() == "12" {
                format!(
                    "{}-01-01T00:00:00Z",
                    now.format("%Y").to_string().parse::<i32>().unwrap_or(0) + 1
                )
            } else {
                let m: u32 = now.format("%m").to_string().parse().unwrap_or(1);
                format!("{}-{:02}-01T00:00:00Z", now.format("%Y"), m + 1)
            };
            (limits.max_sends_per_month.unwrap_or(0), next)
        };
        ServiceError::TierLimit {
            code: "SEND_LIMIT_EXCEEDED",
            message: format!(
                "the {} sending limit of {limit} messages is reached; it resets at {resets}",
                if which == "day" { "daily" } else { "monthly" }
            ),
            upgrade: self.upgrade_context(&account.id, account.tier, "send more email", move |l| {
                if which == "day" {
                    l.max_sends_per_day.is_none_or(|m| m > limit)
                } else {
                    l.max_sends_per_month.is_none_or(|m| m > limit)
                }
            }),
        }
    }

    /// Decides `RCPT TO` on submission: a hosted inbox, an address on another server, or
    /// `None` for an unknown address on a domain hosted here.
    pub async fn submission_recipient(
        &self,
        address: &str,
    ) -> Result<Option<Destination>, ServiceError> {
        let address = address.trim();
        Ok(match self.inbound_recipient(address).await? {
            RcptVerdict::Accept(inbox) => Some(Destination::Local {
                address: address.to_ascii_lowercase(),
                inbox,
            }),
            RcptVerdict::UnknownUser => None,
            RcptVerdict::RelayDenied if is_routable_address(address) => {
                Some(Destination::Remote(address.to_ascii_lowercase()))
            }
            RcptVerdict::RelayDenied => None,
            RcptVerdict::MailboxFull => return Err(mailbox_full(address)),
        })
    }
}

/// The refusal for a send to a hosted mailbox that holds all its tier allows. The sender
/// can do nothing about another tenant's storage, so there is no upgrade offer.
pub fn mailbox_full(address: &str) -> ServiceError {
    ServiceError::Forbidden {
        code: crate::storage::RECIPIENT_MAILBOX_FULL,
        message: format!(
            "the mailbox of <{}> is full; nothing was sent, try again later",
            address.trim().to_ascii_lowercase()
        ),
    }
}

/// [`mailbox_full`] for the destination whose inbox is `inbox_id`.
fn recipient_full(destinations: &[Destination], inbox_id: &str) -> ServiceError {
    let address = destinations
        .iter()
        .find_map(|d| match d {
            Destination::Local { address, inbox } if inbox.inbox_id == inbox_id => {
                Some(address.as_str())
            }
            _ => None,
        })
        .unwrap_or("a recipient");
    mailbox_full(address)
}

/// Whether `address` looks deliverable over SMTP: a local part and a domain name with at
/// least one dot, printable ASCII only (no spaces, no brackets that would break `RCPT TO`).
pub fn is_routable_address(address: &str) -> bool {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return false;
    };
    let printable = |s: &str| {
        s.bytes().all(|b| {
            b.is_ascii_graphic()
                && !matches!(
                    b,
                    b'<' | b'>' | b'(' | b')' | b',' | b';' | b'\\' | b'"' | b'[' | b']'
                )
        })
    };
    !local.is_empty()
        && local.len() <= 64
        && printable(local)
        && printable(domain)
        && !domain.ends_with('.')
        && crate::domains::normalize_domain(domain).is_ok()
}

#[cfg(test)]
mod tests {
    use super::is_routable_address;

    #[test]
    fn routable_addresses() {
        for ok in [
            "bob@example.com",
            "a.b+tag@mx.example.co.uk",
            "x@a-b.example",
        ] {
            assert!(is_routable_address(ok), "{ok}");
        }
        for bad in [
            "no-at-sign",
            "@example.com",
            "bob@localhost",
            "bob@example.com.",
            "bob@-bad.example",
            "bob@exa mple.com",
            "b<o>b@example.com",
            "bob@ example.com",
            "bob@exam_ple.com",
        ] {
            assert!(!is_routable_address(bad), "{bad}");
        }
    }
}
