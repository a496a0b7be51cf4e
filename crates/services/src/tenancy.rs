//! Accounts and inboxes: creation, listing, keys, limits, capabilities.

use mailroom_core::ids::{IdKind, is_well_formed, new_id};
use mailroom_core::secret::{KeyKind, bytes_to_base62, generate_key, random_base62};
use mailroom_core::time::now_ms;
use mailroom_core::{Tier, TierLimits, username};
use mailroom_store::{AccountRow, CreateInboxOutcome, InboxRow, NewInbox, NewKeyRow, TierChange};
use serde::Serialize;

use crate::{Principal, ServiceError, Services};

/// A request to create an inbox (and, without a key, its account).
#[derive(Debug, Clone, Default)]
pub struct CreateInbox {
    /// `None`: a random `agent-…` name is chosen.
    pub username: Option<String>,
    pub client_id: Option<String>,
    /// `None`: the server's default domain.
    pub domain: Option<String>,
}

/// A created (or, for a repeated `client_id`, found) inbox and the secrets to show once.
#[derive(Debug, Clone)]
pub struct CreatedInbox {
    pub inbox: InboxRow,
    pub tier: Tier,
    /// Present when the inbox was created now; `None` on an idempotent repeat (the key was
    /// shown the first time and is not stored in a form that gives it back).
    pub inbox_api_key: Option<String>,
    /// Present only when this call created the account.
    pub account_api_key: Option<String>,
    /// Whether this call created the inbox (false: a `client_id` repeat).
    pub created: bool,
}

/// The limits block of `GET /v1/account` (seed 003). `None` = unlimited (`null`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LimitsView {
    pub max_inboxes: Option<u64>,
    pub current_inboxes: u64,
    pub max_sends_per_day: Option<u64>,
    pub current_sends_today: u64,
    pub max_sends_per_month: Option<u64>,
    pub current_sends_this_month: u64,
    pub webhooks_enabled: bool,
    /// Webhook endpoints the tier allows (`null`: unlimited) and the account holds.
    pub max_webhooks: Option<u64>,
    pub current_webhooks: u64,
    pub custom_domains_enabled: bool,
    pub max_custom_domains: Option<u64>,
    /// Bytes of mail all the account's inboxes may hold (`null`: unlimited) and hold now.
    pub max_storage_bytes: Option<u64>,
    pub current_storage_bytes: u64,
    /// Bytes of mail one inbox may hold (`null`: unlimited).
    pub max_storage_bytes_per_inbox: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct AccountSummary {
    pub account: AccountRow,
    pub limits: LimitsView,
}

/// Seed 000's SMTP credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SmtpCredentials {
    pub host: String,
    pub port: u16,
    pub username: String,
    pub password: String,
}

/// One thing the caller can do now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Capability {
    pub action: &'static str,
    pub description: String,
}

/// One thing the caller cannot do now, and how to change that.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    pub action: &'static str,
    pub reason: String,
    /// An upgrade link when a higher tier would allow it; `None` when the key is the
    /// obstacle (use the account key) or no tier would.
    pub unlock_url: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Capabilities {
    pub tier: Tier,
    pub can: Vec<Capability>,
    pub cannot: Vec<Refusal>,
    pub limits: LimitsView,
}

const MAX_CLIENT_ID_LEN: usize = 255;

pub(crate) fn new_key_row(kind: KeyKind) -> (String, NewKeyRow) {
    let k = generate_key(kind);
    (
        k.secret,
        NewKeyRow {
            id: new_id(IdKind::Key),
            hash: k.hash,
            display_prefix: k.display_prefix,
        },
    )
}

/// Another account's deleted inbox had this address. The answer does not say when the
/// hold ends: that would tell a stranger when the other account deleted it.
fn held(email: &str) -> ServiceError {
    ServiceError::Conflict {
        code: "ADDRESS_HELD",
        message: format!(
            "{email} belonged to an inbox that was deleted recently and is held for the account that had it; choose another username"
        ),
    }
}

fn inbox_not_found() -> ServiceError {
    ServiceError::NotFound { what: "inbox" }
}

/// Refuses, as "not found", an id that is malformed or that this principal may not reach,
/// before any database look-up.
fn check_inbox_id(principal: &Principal, inbox_id: &str) -> Result<(), ServiceError> {
    if is_well_formed(IdKind::Inbox, inbox_id) && principal.may_access_inbox(inbox_id) {
        Ok(())
    } else {
        Err(inbox_not_found())
    }
}

impl Services {
    pub(crate) fn limits(&self, tier: Tier) -> &TierLimits {
        self.config().tiers.limits(tier)
    }

    fn validate_create(&self, req: &CreateInbox) -> Result<NewInbox, ServiceError> {
        let username = match &req.username {
            Some(name) => username::normalize(name).map_err(|e| ServiceError::Invalid {
                code: "INVALID_USERNAME",
                field: "username",
                message: e.to_string(),
            })?,
            None => format!("agent-{}", random_base62(10).to_ascii_lowercase()),
        };
        let default_domain = &self.config().default_domain;
        // A custom domain is checked against the account once it is known (create_inbox).
        let domain = match &req.domain {
            None => default_domain.clone(),
            Some(d) => d.trim().trim_end_matches('.').to_ascii_lowercase(),
        };
        if let Some(cid) = &req.client_id
            && (cid.is_empty()
                || cid.len() > MAX_CLIENT_ID_LEN
                || cid.chars().any(|c| c.is_control()))
        {
            return Err(ServiceError::Invalid {
                code: "INVALID_CLIENT_ID",
                field: "client_id",
                message: format!(
                    "client_id must be 1 to {MAX_CLIENT_ID_LEN} characters without control characters"
                ),
            });
        }
        Ok(NewInbox {
            id: new_id(IdKind::Inbox),
            username,
            domain,
            client_id: req.client_id.clone(),
            created_at: now_ms(),
        })
    }

    /// `POST /v1/inboxes`. Without a principal: a new free account and its first inbox.
    /// With the account key: another inbox in that account, within the tier's limit.
    pub async fn create_inbox(
        &self,
        principal: Option<&Principal>,
        req: &CreateInbox,
    ) -> Result<CreatedInbox, ServiceError> {
        let new = self.validate_create(req)?;
        let (inbox_secret, inbox_key) = new_key_row(KeyKind::Inbox);
        let taken = || ServiceError::Conflict {
            code: "USERNAME_TAKEN",
            message: format!("{} is taken; choose another username", new.email()),
        };
        let Some(principal) = principal else {
            if new.domain != self.config().default_domain {
                return Err(ServiceError::Invalid {
                    code: "DOMAIN_NOT_AVAILABLE",
                    field: "domain",
                    message: format!(
                        "a new account's first inbox is on {}; custom domains come after (POST /v1/domains)",
                        self.config().default_domain
                    ),
                });
            }
            let account_id = new_id(IdKind::Account);
            let (account_secret, account_key) = new_key_row(KeyKind::Account);
            let tier = Tier::Free;
            return match self
                .store()
                .create_account_with_inbox(&account_id, tier, &new, &account_key, &inbox_key)
                .await?
            {
                CreateInboxOutcome::Created(inbox) => {
                    tracing::info!(account_id, inbox_id = %inbox.id, "account created");
                    Ok(CreatedInbox {
                        inbox,
                        tier,
                        inbox_api_key: Some(inbox_secret),
                        account_api_key: Some(account_secret),
                        created: true,
                    })
                }
                CreateInboxOutcome::EmailTaken => Err(taken()),
                CreateInboxOutcome::AddressHeld { .. } => Err(held(&new.email())),
                other => Err(ServiceError::Store(mailroom_store::StoreError::Corrupt(
                    format!("unexpected outcome creating an account: {other:?}"),
                ))),
            };
        };
        let account_id = principal.require_account()?;
        if new.domain != self.config().default_domain {
            let usable = self
                .store()
                .get_domain(account_id, &new.domain)
                .await?
                .is_some_and(|d| d.verified_at.is_some());
            if !usable {
                return Err(ServiceError::Invalid {
                    code: "DOMAIN_NOT_AVAILABLE",
                    field: "domain",
                    message: format!(
                        "inboxes can be created on {} or on a verified domain of this account; {} is neither (POST /v1/domains, then verify it)",
                        self.config().default_domain,
                        new.domain
                    ),
                });
            }
        }
        let account = self
            .store()
            .get_account(account_id)
            .await?
            .ok_or_else(|| ServiceError::Unauthenticated("invalid API key".into()))?;
        let limits = self.limits(account.tier);
        match self
            .store()
            .create_inbox(account_id, &new, &inbox_key, limits.max_inboxes)
            .await?
        {
            CreateInboxOutcome::Created(inbox) => Ok(CreatedInbox {
                inbox,
                tier: account.tier,
                inbox_api_key: Some(inbox_secret),
                account_api_key: None,
                created: true,
            }),
            CreateInboxOutcome::Existing(inbox) => Ok(CreatedInbox {
                inbox,
                tier: account.tier,
                inbox_api_key: None,
                account_api_key: None,
                created: false,
            }),
            CreateInboxOutcome::EmailTaken => Err(taken()),
            CreateInboxOutcome::AddressHeld { .. } => Err(held(&new.email())),
            CreateInboxOutcome::LimitReached { current } => Err(ServiceError::TierLimit {
                code: "INBOX_LIMIT_REACHED",
                message: format!(
                    "the {} tier allows {current} inboxes and this account has {current}; \
                     delete one or upgrade",
                    account.tier
                ),
                upgrade: self.upgrade_context(
                    account_id,
                    account.tier,
                    "create more inboxes",
                    |l| l.max_inboxes.is_none_or(|m| m > current),
                ),
            }),
            CreateInboxOutcome::NoAccount => {
                Err(ServiceError::Unauthenticated("invalid API key".into()))
            }
        }
    }

    /// The inbox `inbox_id` as this principal may read it (`api:read` for scoped keys);
    /// anything else is "not found".
    pub async fn get_inbox(
        &self,
        principal: &Principal,
        inbox_id: &str,
    ) -> Result<InboxRow, ServiceError> {
        principal.require_scope("api:read")?;
        self.inbox_of(principal, inbox_id).await
    }

    /// The inbox `inbox_id` if this principal may reach it at all (no scope check: callers
    /// check the scope their action needs).
    pub async fn inbox_of(
        &self,
        principal: &Principal,
        inbox_id: &str,
    ) -> Result<InboxRow, ServiceError> {
        check_inbox_id(principal, inbox_id)?;
        if let Some(inbox) = self.cache().inbox(inbox_id) {
            return if inbox.account_id == principal.account_id() {
                Ok(inbox)
            } else {
                Err(inbox_not_found())
            };
        }
        let ticket = self.cache().ticket();
        let inbox = self
            .store()
            .get_inbox(principal.account_id(), inbox_id)
            .await?
            .ok_or_else(inbox_not_found)?;
        self.cache().put_inbox(ticket, &inbox);
        Ok(inbox)
    }

    pub async fn list_inboxes(
        &self,
        principal: &Principal,
        limit: u32,
        offset: u64,
    ) -> Result<(Vec<InboxRow>, u64), ServiceError> {
        let account_id = principal.require_account()?;
        Ok(self.store().list_inboxes(account_id, limit, offset).await?)
    }

    pub async fn delete_inbox(
        &self,
        principal: &Principal,
        inbox_id: &str,
    ) -> Result<InboxRow, ServiceError> {
        check_inbox_id(principal, inbox_id)?;
        principal.require_inbox_manager()?;
        let now = now_ms();
        let hold =
            i64::try_from(self.config().deleted_address_hold.as_millis()).unwrap_or(i64::MAX);
        let held_until = (hold > 0).then(|| now.saturating_add(hold));
        let deleted = self
            .store()
            .delete_inbox(principal.account_id(), inbox_id, now, held_until)
            .await?;
        // Evict even when nothing was deleted: it costs nothing and keeps the rule simple.
        self.cache().evict_inbox(inbox_id);
        deleted.ok_or_else(inbox_not_found)
    }

    /// Issues a new inbox key; the old one stops working at once. Returns the inbox and
    /// the new key (shown once).
    pub async fn rotate_inbox_key(
        &self,
        principal: &Principal,
        inbox_id: &str,
    ) -> Result<(InboxRow, String), ServiceError> {
        principal.require_inbox_manager()?;
        let inbox = self.get_inbox(principal, inbox_id).await?;
        let (secret, key) = new_key_row(KeyKind::Inbox);
        let rotated = self
            .store()
            .rotate_inbox_key(principal.account_id(), inbox_id, &key, now_ms())
            .await?;
        self.cache().evict_inbox(inbox_id);
        if !rotated {
            return Err(inbox_not_found());
        }
        Ok((inbox, secret))
    }

    async fn limits_view(&self, account: &AccountRow) -> Result<LimitsView, ServiceError> {
        let limits = self.limits(account.tier);
        let now = chrono::Utc::now();
        let day = format!("d:{}", now.format("%Y-%m-%d"));
        let month = format!("m:{}", now.format("%Y-%m"));
        Ok(LimitsView {
            max_inboxes: limits.max_inboxes,
            current_inboxes: self.store().count_inboxes(&account.id).await?,
            max_sends_per_day: limits.max_sends_per_day,
            current_sends_today: self.store().send_count(&account.id, &day).await?,
            max_sends_per_month: limits.max_sends_per_month,
            current_sends_this_month: self.store().send_count(&account.id, &month).await?,
            webhooks_enabled: limits.webhooks_enabled,
            max_webhooks: limits.max_webhooks,
            current_webhooks: self.store().count_webhooks(&account.id).await?,
            custom_domains_enabled: limits.custom_domains_enabled(),
            max_custom_domains: limits.max_custom_domains,
            max_storage_bytes: limits.max_storage_bytes_per_account,
            current_storage_bytes: self.store().account_storage(&account.id).await?,
            max_storage_bytes_per_inbox: limits.max_storage_bytes_per_inbox,
        })
    }

    async fn account_of(&self, principal: &Principal) -> Result<AccountRow, ServiceError> {
        self.store()
            .get_account(principal.account_id())
            .await?
            .ok_or_else(|| ServiceError::Unauthenticated("invalid API key".into()))
    }

    /// `GET /v1/account`.
    pub async fn account_summary(
        &self,
        principal: &Principal,
    ) -> Result<AccountSummary, ServiceError> {
        principal.require_account()?;
        let account = self.account_of(principal).await?;
        let limits = self.limits_view(&account).await?;
        Ok(AccountSummary { account, limits })
    }

    /// `GET /v1/account/smtp` (seed 000): the account's SMTP credentials on paid tiers.
    /// The password is derived from the master secret, so it is stable across calls and
    /// never stored.
    pub async fn smtp_credentials(
        &self,
        principal: &Principal,
    ) -> Result<SmtpCredentials, ServiceError> {
        principal.require_account()?;
        let account = self.account_of(principal).await?;
        if !self.limits(account.tier).smtp_enabled {
            return Err(ServiceError::TierLimit {
                code: "SMTP_REQUIRES_PAID",
                message: "SMTP access requires a paid tier subscription".into(),
                upgrade: self.upgrade_context(
                    &account.id,
                    account.tier,
                    "enable SMTP access",
                    |l| l.smtp_enabled,
                ),
            });
        }
        Ok(SmtpCredentials {
            host: self.config().hostname.clone(),
            port: self.config().submission_port,
            username: account.id.clone(),
            password: self.smtp_password(&account),
        })
    }

    /// The account's SMTP password: HMAC of the account id and its rotation generation.
    pub fn smtp_password(&self, account: &AccountRow) -> String {
        let subject = format!("{}:{}", account.id, account.smtp_password_generation);
        format!(
            "smtp_{}",
            bytes_to_base62(&self.master().derive("account-smtp-password", &subject), 32)
        )
    }

    /// `GET /v1/capabilities`: what this key may do now, and what it may not and why.
    pub async fn capabilities(&self, principal: &Principal) -> Result<Capabilities, ServiceError> {
        let account = self.account_of(principal).await?;
        let limits = self.limits(account.tier);
        let view = self.limits_view(&account).await?;
        let mut can = Vec::new();
        let mut cannot = Vec::new();
        let is_account = principal.is_account_manager();
        let tier = account.tier;
        let upgrade_url = |need: &str, pred: &dyn Fn(&TierLimits) -> bool| {
            self.upgrade_context(&account.id, tier, need, pred)
                .map(|u| u.operator_action_url)
        };
        let mut allow = |action: &'static str, description: &str| {
            can.push(Capability {
                action,
                description: description.to_owned(),
            })
        };
        match view.max_storage_bytes {
            Some(max) if view.current_storage_bytes >= max => cannot.push(Refusal {
                action: "mail.receive",
                reason: format!(
                    "the account holds all the {max} bytes of mail the {tier} tier allows; new mail is deferred (SMTP 452 4.2.2) until some is deleted"
                ),
                unlock_url: upgrade_url("store more mail", &|l| {
                    l.max_storage_bytes_per_account.is_none_or(|m| m > max)
                }),
            }),
            _ => allow("mail.receive", "receive mail at your inbox address"),
        }
        allow("inbox.read", "read your inbox (GET /v1/inboxes/{id})");
        allow(
            "inbox.rotate_key",
            "replace an inbox key (POST /v1/inboxes/{id}/rotate-key)",
        );
        allow(
            "capabilities.read",
            "ask what you may do (GET /v1/capabilities)",
        );
        let account_only = |action: &'static str| Refusal {
            action,
            reason: "needs the account API key; this is an inbox key".into(),
            unlock_url: None,
        };
        if is_account {
            allow("inbox.list", "list the account's inboxes (GET /v1/inboxes)");
            allow("inbox.delete", "delete an inbox (DELETE /v1/inboxes/{id})");
            allow(
                "account.read",
                "see tier, limits and usage (GET /v1/account)",
            );
            allow(
                "upgrade_link.create",
                "ask the operator for a higher tier (POST /v1/upgrade-link)",
            );
            let under_limit = limits.max_inboxes.is_none_or(|m| view.current_inboxes < m);
            if under_limit {
                allow("inbox.create", "create another inbox (POST /v1/inboxes)");
            } else {
                let current = view.current_inboxes;
                cannot.push(Refusal {
                    action: "inbox.create",
                    reason: format!("the {tier} tier allows {current} inboxes and all are in use"),
                    unlock_url: upgrade_url("create more inboxes", &|l| {
                        l.max_inboxes.is_none_or(|m| m > current)
                    }),
                });
            }
        } else {
            for action in [
                "inbox.list",
                "inbox.delete",
                "account.read",
                "upgrade_link.create",
                "inbox.create",
            ] {
                cannot.push(account_only(action));
            }
        }
        if limits.can_send() {
            allow(
                "mail.send",
                "send mail from your inbox (HTTP, or SMTP submission)",
            );
        } else {
            cannot.push(Refusal {
                action: "mail.send",
                reason: format!("the {tier} tier is receive-only"),
                unlock_url: upgrade_url("send email", &|l| l.can_send()),
            });
        }
        if limits.smtp_enabled && is_account {
            allow(
                "smtp.credentials",
                "get SMTP credentials (GET /v1/account/smtp)",
            );
        } else if !limits.smtp_enabled {
            cannot.push(Refusal {
                action: "smtp.credentials",
                reason: "SMTP access requires a paid tier".into(),
                unlock_url: upgrade_url("enable SMTP access", &|l| l.smtp_enabled),
            });
        } else {
            cannot.push(account_only("smtp.credentials"));
        }
        let webhooks_left = limits
            .max_webhooks
            .is_none_or(|m| view.current_webhooks < m);
        if limits.webhooks_enabled && webhooks_left {
            allow("webhooks.manage", "register webhooks for account events");
        } else if limits.webhooks_enabled {
            allow(
                "webhooks.manage",
                "change, test and delete the account's webhooks",
            );
            let current = view.current_webhooks;
            cannot.push(Refusal {
                action: "webhooks.create",
                reason: format!("the {tier} tier allows {current} webhooks and all are in use"),
                unlock_url: upgrade_url("register more webhooks", &|l| {
                    l.max_webhooks.is_none_or(|m| m > current)
                }),
            });
        } else {
            cannot.push(Refusal {
                action: "webhooks.manage",
                reason: format!("webhooks are not enabled on the {tier} tier"),
                unlock_url: upgrade_url("use webhooks", &|l| l.webhooks_enabled),
            });
        }
        if limits.custom_domains_enabled() {
            allow("domains.manage", "add custom domains");
        } else {
            cannot.push(Refusal {
                action: "domains.manage",
                reason: format!("custom domains are not available on the {tier} tier"),
                unlock_url: upgrade_url("use custom domains", &|l| l.custom_domains_enabled()),
            });
        }
        Ok(Capabilities {
            tier,
            can,
            cannot,
            limits: view,
        })
    }

    /// Operator action: set an account's tier (records `account.upgraded`/`downgraded`).
    pub async fn set_tier(&self, account_id: &str, tier: Tier) -> Result<TierChange, ServiceError> {
        if !is_well_formed(IdKind::Account, account_id) {
            return Err(ServiceError::NotFound { what: "account" });
        }
        let change = self
            .store()
            .set_tier(account_id, tier, now_ms())
            .await?
            .ok_or(ServiceError::NotFound { what: "account" })?;
        // The remembered tier, and the storage use remembered for RCPT with it.
        self.cache().evict_tier(account_id);
        Ok(change)
    }
}
