//! Sending over SMTP submission: who may log in, which addresses they may send as, the tier
//! and quota rules, and delivery (hosted recipients get the message at once, with a copy in
//! the sender's Sent mailbox).

use std::net::IpAddr;

use mailroom_core::ids::{IdKind, is_well_formed};
use mailroom_core::time::now_ms;
use mailroom_store::{NewMessage, Recipient};
use sha2::{Digest, Sha256};

use crate::ratelimit::RateRule;
use crate::{Principal, RcptVerdict, ServiceError, Services, parse_facts};

/// Failed logins allowed per client IP, and per user name, in 15 minutes.
pub const AUTH_FAILURES_PER_IP: RateRule = RateRule {
    limit: 10,
    window: std::time::Duration::from_secs(900),
};
pub const AUTH_FAILURES_PER_USER: RateRule = RateRule {
    limit: 5,
    window: std::time::Duration::from_secs(900),
};

/// Who logged in to submission, and as whom they may send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    pub account_id: String,
    /// `None`: any inbox address of the account (the account SMTP credential); otherwise
    /// exactly this inbox.
    pub inbox: Option<(String, String)>,
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

/// What a submitted message did.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub message_ids: Vec<String>,
}

fn sender_domain(address: &str) -> String {
    address
        .rsplit_once('@')
        .map(|(_, d)| d.to_ascii_lowercase())
        .unwrap_or_default()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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

    /// A login at a mail protocol door (`smtp`, `pop3`), throttled per IP and user name.
    pub async fn mail_login(
        &self,
        door: &'static str,
        username: &str,
        password: &str,
        client_ip: IpAddr,
    ) -> Result<Result<Sender, LoginRefused>, ServiceError> {
        let user = username.trim().to_ascii_lowercase();
        let ip_key = format!("auth-fail:ip:{client_ip}");
        let user_key = format!("auth-fail:user:{user}");
        let limiter = self.auth_failures();
        if limiter.is_exhausted(&ip_key, AUTH_FAILURES_PER_IP)
            || limiter.is_exhausted(&user_key, AUTH_FAILURES_PER_USER)
        {
            return Ok(Err(LoginRefused::Throttled));
        }
        let verdict = self.check_login(door, &user, password).await?;
        if matches!(verdict, Err(LoginRefused::Invalid)) {
            limiter.check(&ip_key, AUTH_FAILURES_PER_IP);
            limiter.check(&user_key, AUTH_FAILURES_PER_USER);
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
        match &sender.inbox {
            Some((inbox_id, email)) if *email == address => Ok(Recipient {
                account_id: sender.account_id.clone(),
                inbox_id: inbox_id.clone(),
            }),
            Some(_) => Err(refused()),
            None => match self.store().find_inbox_by_email(&address).await? {
                Some((account_id, inbox_id)) if account_id == sender.account_id => Ok(Recipient {
                    account_id,
                    inbox_id,
                }),
                _ => Err(refused()),
            },
        }
    }

    /// Stores a submitted message: checks the From header and the tier, counts the quota
    /// (one send per recipient), delivers to hosted recipients and files a copy in Sent.
    pub async fn submit(
        &self,
        sender: &Sender,
        from_inbox: &Recipient,
        recipients: &[Recipient],
        data: &[u8],
    ) -> Result<Submitted, ServiceError> {
        let facts = parse_facts(data);
        let header_from = facts.from_addr.clone().unwrap_or_default();
        self.sending_inbox(sender, &header_from).await.map_err(|_| ServiceError::Forbidden {
            code: "FROM_NOT_ALLOWED",
            message: format!(
                "the From header <{header_from}> is not an address you may send from (From address validation)"
            ),
        })?;
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
        let day = format!("d:{}", now.format("%Y-%m-%d"));
        let month = format!("m:{}", now.format("%Y-%m"));
        if let Err(which) = self
            .store()
            .reserve_sends(
                &account.id,
                recipients.len() as u64,
                &day,
                &month,
                limits.max_sends_per_day,
                limits.max_sends_per_month,
            )
            .await?
        {
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
            return Err(ServiceError::TierLimit {
                code: "SEND_LIMIT_EXCEEDED",
                message: format!(
                    "the {} sending limit of {limit} messages is reached; it resets at {resets}",
                    if which == "day" { "daily" } else { "monthly" }
                ),
                upgrade: self.upgrade_context(
                    &account.id,
                    account.tier,
                    "send more email",
                    move |l| {
                        if which == "day" {
                            l.max_sends_per_day.is_none_or(|m| m > limit)
                        } else {
                            l.max_sends_per_month.is_none_or(|m| m > limit)
                        }
                    },
                ),
            });
        }
        // Every accepted message is signed for the sending inbox's domain.
        let domain = sender_domain(&header_from);
        let signed = self.dkim_sign(&domain, data).await?;
        let data = signed.as_slice();
        let hash = hex::encode(Sha256::digest(data));
        let base = NewMessage {
            raw: data.to_vec(),
            hash,
            internal_date: now_ms(),
            recipients: recipients.to_vec(),
            mailbox: "INBOX".into(),
            message_id: facts.message_id,
            references: facts.references,
            subject: facts.subject,
            from_addr: facts.from_addr,
            envelope_from: Some(header_from),
            auth_results: None,
            flags: Vec::new(),
        };
        let mut ids: Vec<String> = self
            .store()
            .deliver(base.clone())
            .await?
            .into_iter()
            .map(|m| m.id)
            .collect();
        let sent = NewMessage {
            recipients: vec![from_inbox.clone()],
            mailbox: "Sent".into(),
            flags: vec!["\\Seen".into()],
            ..base
        };
        ids.extend(self.store().deliver(sent).await?.into_iter().map(|m| m.id));
        self.mail_arrived();
        Ok(Submitted { message_ids: ids })
    }

    /// Decides `RCPT TO` on submission: hosted inboxes only, for now.
    pub async fn submission_recipient(
        &self,
        address: &str,
    ) -> Result<Option<Recipient>, ServiceError> {
        Ok(match self.inbound_recipient(address).await? {
            RcptVerdict::Accept(r) => Some(r),
            RcptVerdict::UnknownUser | RcptVerdict::RelayDenied => None,
        })
    }
}
