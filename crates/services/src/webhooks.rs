//! Webhooks: who may register what, the signing secrets, and the signature every delivery
//! carries (Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature`).

use std::net::IpAddr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use mailroom_core::event::SUBSCRIBABLE;
use mailroom_core::ids::{IdKind, is_well_formed, new_id};
use mailroom_core::time::now_ms;
use mailroom_store::{AttemptRow, CreateWebhookOutcome, EventRow, NewWebhook, WebhookRow};

use crate::{Principal, ServiceError, Services};

/// How long a rotated-out secret keeps signing, so receivers can switch without losing
/// deliveries.
pub const ROTATION_OVERLAP_MS: i64 = 24 * 3600 * 1000;

/// Where webhooks may point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WebhookPolicy {
    /// `http://` URLs (development only; otherwise `https://` is required).
    pub allow_http: bool,
    /// Loopback addresses (127.0.0.0/8, ::1).
    pub allow_loopback: bool,
    /// Private, link-local, CGNAT and other non-public addresses.
    pub allow_private: bool,
}

impl WebhookPolicy {
    /// Whether a delivery may connect to `ip` (SSRF protection). The blocks are
    /// `mailroom_core::netaddr`'s, the same outbound mail delivery refuses.
    pub fn allows(&self, ip: IpAddr) -> bool {
        use mailroom_core::netaddr::{SpecialAddress, special_purpose};
        match special_purpose(ip) {
            None => true,
            Some(SpecialAddress::Loopback) => self.allow_loopback,
            Some(_) => self.allow_private,
        }
    }
}

/// A change to a webhook (`PATCH`).
#[derive(Debug, Clone, Default)]
pub struct WebhookPatch {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub inbox_ids: Option<Vec<String>>,
    /// `active` or `disabled`.
    pub status: Option<String>,
}

fn invalid(code: &'static str, field: &'static str, message: impl Into<String>) -> ServiceError {
    ServiceError::Invalid {
        code,
        field,
        message: message.into(),
    }
}

fn webhook_not_found() -> ServiceError {
    ServiceError::NotFound { what: "webhook" }
}

impl Services {
    fn check_webhook_url(&self, raw: &str) -> Result<String, ServiceError> {
        let policy = self.config().webhooks;
        let url = url::Url::parse(raw.trim())
            .map_err(|e| invalid("INVALID_URL", "url", format!("not a valid URL: {e}")))?;
        match url.scheme() {
            "https" => {}
            "http" if policy.allow_http => {}
            "http" => {
                return Err(invalid(
                    "INVALID_URL",
                    "url",
                    "webhook URLs must use https://",
                ));
            }
            other => {
                return Err(invalid(
                    "INVALID_URL",
                    "url",
                    format!("unsupported scheme {other:?}; use https://"),
                ));
            }
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid(
                "INVALID_URL",
                "url",
                "credentials in the URL are not allowed",
            ));
        }
        let host = url
            .host()
            .ok_or_else(|| invalid("INVALID_URL", "url", "the URL has no host"))?;
        let literal = match host {
            url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
            url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
            url::Host::Domain(d) if d.eq_ignore_ascii_case("localhost") => {
                Some(IpAddr::from([127, 0, 0, 1]))
            }
            url::Host::Domain(_) => None,
        };
        if let Some(ip) = literal
            && !policy.allows(ip)
        {
            return Err(invalid(
                "URL_NOT_ALLOWED",
                "url",
                "webhooks may not point at loopback, private or link-local addresses",
            ));
        }
        if raw.len() > 2048 {
            return Err(invalid(
                "INVALID_URL",
                "url",
                "the URL is longer than 2048 characters",
            ));
        }
        Ok(url.to_string())
    }

    fn check_events(events: &[String]) -> Result<Vec<String>, ServiceError> {
        if events.is_empty() {
            return Err(invalid(
                "INVALID_EVENTS",
                "events",
                format!(
                    "name at least one event: {} or \"*\"",
                    SUBSCRIBABLE.join(", ")
                ),
            ));
        }
        for e in events {
            if e != "*" && !SUBSCRIBABLE.contains(&e.as_str()) {
                return Err(invalid(
                    "INVALID_EVENTS",
                    "events",
                    format!(
                        "unknown event {e:?}; use {} or \"*\"",
                        SUBSCRIBABLE.join(", ")
                    ),
                ));
            }
        }
        let mut out = events.to_vec();
        out.dedup();
        Ok(out)
    }

    async fn check_inbox_ids(
        &self,
        principal: &Principal,
        ids: &[String],
    ) -> Result<(), ServiceError> {
        for id in ids {
            self.get_inbox(principal, id).await.map_err(|_| {
                invalid(
                    "INVALID_INBOX_IDS",
                    "inbox_ids",
                    format!("{id:?} is not an inbox of this account"),
                )
            })?;
        }
        Ok(())
    }

    async fn require_webhooks(
        &self,
        principal: &Principal,
    ) -> Result<mailroom_store::AccountRow, ServiceError> {
        let account_id = principal.require_account()?.to_owned();
        let account = self
            .store()
            .get_account(&account_id)
            .await?
            .ok_or_else(|| ServiceError::Unauthenticated("invalid API key".into()))?;
        if !self.config().tiers.limits(account.tier).webhooks_enabled {
            metrics::counter!("mailroom_refusals_total", "door" => "webhooks", "reason" => "not_on_tier")
                .increment(1);
            return Err(ServiceError::TierLimit {
                code: "WEBHOOKS_REQUIRE_UPGRADE",
                message: format!("webhooks are not enabled on the {} tier", account.tier),
                upgrade: self.upgrade_context(&account_id, account.tier, "use webhooks", |l| {
                    l.webhooks_enabled
                }),
            });
        }
        Ok(account)
    }

    /// The signing secret of a webhook's generation: `whsec_` + base64 of 32 bytes derived
    /// from the master secret. Never stored.
    pub fn webhook_secret(&self, webhook_id: &str, generation: i64) -> String {
        let key = self
            .master()
            .derive("webhook-secret", &format!("{webhook_id}:{generation}"));
        format!("whsec_{}", STANDARD.encode(key))
    }

    /// `webhook-signature` for a delivery: `v1,<base64 HMAC-SHA256(id.timestamp.body)>`, with
    /// the previous secret's signature too while the rotation overlap lasts.
    pub fn sign_webhook(
        &self,
        webhook: &WebhookRow,
        msg_id: &str,
        timestamp: i64,
        body: &[u8],
        now: i64,
    ) -> String {
        let mut generations = vec![webhook.secret_generation];
        if webhook.previous_expires_at.is_some_and(|t| t > now) && webhook.secret_generation > 0 {
            generations.push(webhook.secret_generation - 1);
        }
        generations
            .into_iter()
            .map(|g| {
                let secret = self.webhook_secret(&webhook.id, g);
                let key = STANDARD
                    .decode(&secret["whsec_".len()..])
                    .unwrap_or_default();
                let ts = timestamp.to_string();
                let sig = mailroom_core::secret::hmac_sha256(
                    &key,
                    &[msg_id.as_bytes(), b".", ts.as_bytes(), b".", body],
                );
                format!("v1,{}", STANDARD.encode(sig))
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// `POST /v1/webhooks`: the webhook and its secret; `false` when a `client_id` repeat
    /// returned an existing one.
    pub async fn create_webhook(
        &self,
        principal: &Principal,
        url: &str,
        events: &[String],
        inbox_ids: &[String],
        client_id: Option<String>,
    ) -> Result<(WebhookRow, String, bool), ServiceError> {
        let account = self.require_webhooks(principal).await?;
        let url = self.check_webhook_url(url)?;
        let events = Self::check_events(events)?;
        self.check_inbox_ids(principal, inbox_ids).await?;
        if let Some(c) = &client_id
            && (c.is_empty() || c.len() > 255)
        {
            return Err(invalid(
                "INVALID_CLIENT_ID",
                "client_id",
                "client_id must be 1 to 255 characters",
            ));
        }
        let max = self.limits(account.tier).max_webhooks;
        let outcome = self
            .store()
            .create_webhook(
                &account.id,
                &NewWebhook {
                    id: new_id(IdKind::Webhook),
                    url,
                    events,
                    inbox_ids: inbox_ids.to_vec(),
                    client_id,
                    now: now_ms(),
                },
                max,
            )
            .await?;
        let (row, created) = match outcome {
            CreateWebhookOutcome::Created(row) => (row, true),
            CreateWebhookOutcome::Existing(row) => (row, false),
            CreateWebhookOutcome::LimitReached { current } => {
                metrics::counter!("mailroom_refusals_total", "door" => "webhooks", "reason" => "webhook_limit")
                    .increment(1);
                return Err(ServiceError::TierLimit {
                    code: "WEBHOOK_LIMIT_REACHED",
                    message: format!(
                        "the {} tier allows {current} webhooks and this account has {current}; \
                         delete one (DELETE /v1/webhooks/{{id}}) or upgrade",
                        account.tier
                    ),
                    upgrade: self.upgrade_context(
                        &account.id,
                        account.tier,
                        "register more webhooks",
                        move |l| l.max_webhooks.is_none_or(|m| m > current),
                    ),
                });
            }
        };
        let secret = self.webhook_secret(&row.id, row.secret_generation);
        Ok((row, secret, created))
    }

    pub async fn list_webhooks(
        &self,
        principal: &Principal,
    ) -> Result<Vec<WebhookRow>, ServiceError> {
        let account_id = principal.require_account()?;
        Ok(self.store().list_webhooks(account_id).await?)
    }

    pub async fn get_webhook(
        &self,
        principal: &Principal,
        id: &str,
    ) -> Result<WebhookRow, ServiceError> {
        let account_id = principal.require_account()?;
        if !is_well_formed(IdKind::Webhook, id) {
            return Err(webhook_not_found());
        }
        self.store()
            .get_webhook(account_id, id)
            .await?
            .ok_or_else(webhook_not_found)
    }

    pub async fn update_webhook(
        &self,
        principal: &Principal,
        id: &str,
        patch: &WebhookPatch,
    ) -> Result<WebhookRow, ServiceError> {
        self.get_webhook(principal, id).await?;
        let account_id = self.require_webhooks(principal).await?.id;
        let url = patch
            .url
            .as_deref()
            .map(|u| self.check_webhook_url(u))
            .transpose()?;
        let events = patch
            .events
            .as_deref()
            .map(Self::check_events)
            .transpose()?;
        if let Some(ids) = &patch.inbox_ids {
            self.check_inbox_ids(principal, ids).await?;
        }
        if let Some(s) = &patch.status
            && s != "active"
            && s != "disabled"
        {
            return Err(invalid(
                "INVALID_STATUS",
                "status",
                "status is \"active\" or \"disabled\"",
            ));
        }
        self.store()
            .update_webhook(
                &account_id,
                id,
                &mailroom_store::WebhookUpdate {
                    url: url.as_deref(),
                    events: events.as_deref(),
                    inbox_ids: patch.inbox_ids.as_deref(),
                    status: patch.status.as_deref(),
                },
                now_ms(),
            )
            .await?
            .ok_or_else(webhook_not_found)
    }

    pub async fn delete_webhook(
        &self,
        principal: &Principal,
        id: &str,
    ) -> Result<(), ServiceError> {
        self.get_webhook(principal, id).await?;
        self.store()
            .delete_webhook(principal.account_id(), id)
            .await?;
        Ok(())
    }

    /// A new secret (shown once); the previous one keeps signing for 24 hours.
    pub async fn rotate_webhook_secret(
        &self,
        principal: &Principal,
        id: &str,
    ) -> Result<(WebhookRow, String), ServiceError> {
        self.get_webhook(principal, id).await?;
        let now = now_ms();
        let row = self
            .store()
            .rotate_webhook_secret(principal.account_id(), id, now + ROTATION_OVERLAP_MS, now)
            .await?
            .ok_or_else(webhook_not_found)?;
        let secret = self.webhook_secret(&row.id, row.secret_generation);
        Ok((row, secret))
    }

    /// Sends a `webhook.test` event to this webhook.
    pub async fn test_webhook(&self, principal: &Principal, id: &str) -> Result<(), ServiceError> {
        self.get_webhook(principal, id).await?;
        self.store()
            .append_webhook_test(principal.account_id(), id, now_ms())
            .await?;
        self.events_recorded();
        Ok(())
    }

    pub async fn webhook_attempts(
        &self,
        principal: &Principal,
        id: &str,
        limit: u32,
    ) -> Result<Vec<AttemptRow>, ServiceError> {
        self.get_webhook(principal, id).await?;
        Ok(self
            .store()
            .list_attempts(principal.account_id(), id, limit)
            .await?)
    }

    pub async fn replay_delivery(
        &self,
        principal: &Principal,
        id: &str,
        delivery_id: &str,
    ) -> Result<(), ServiceError> {
        self.get_webhook(principal, id).await?;
        if !is_well_formed(IdKind::Delivery, delivery_id)
            || !self
                .store()
                .replay_delivery(principal.account_id(), id, delivery_id, now_ms())
                .await?
        {
            return Err(ServiceError::NotFound { what: "delivery" });
        }
        self.events_recorded();
        Ok(())
    }

    /// `GET /v1/events`: the account's events after `after` (an event id), oldest first.
    pub async fn account_events(
        &self,
        principal: &Principal,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<EventRow>, ServiceError> {
        let account_id = principal.require_account()?;
        let after_seq = match after {
            None => 0,
            Some(id) => {
                let seq = if is_well_formed(IdKind::Event, id) {
                    self.store().account_event_seq(account_id, id).await?
                } else {
                    None
                };
                seq.ok_or_else(|| {
                    invalid(
                        "INVALID_AFTER",
                        "after",
                        "after must be the id of an event of this account",
                    )
                })?
            }
        };
        Ok(self
            .store()
            .list_events(account_id, after_seq, limit)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_blocks_internal_addresses() {
        let strict = WebhookPolicy::default();
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!strict.allows(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:4700::1111"] {
            assert!(strict.allows(ip.parse().unwrap()), "{ip}");
        }
        let dev = WebhookPolicy {
            allow_http: true,
            allow_loopback: true,
            allow_private: false,
        };
        assert!(dev.allows("127.0.0.1".parse().unwrap()));
        assert!(!dev.allows("10.0.0.1".parse().unwrap()));
    }
}
