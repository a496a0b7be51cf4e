//! The events Mailroom records: names and payload shapes.
//!
//! Every state change someone may want to hear about writes one row in the `events` table,
//! in the same transaction as the change (the outbox pattern). Webhooks and live streams
//! read from there, so an event is never announced for a change that did not commit, and
//! never lost for one that did. This crate names the events and shapes their data; the
//! store writes them; delivery (webhooks, streams) builds on top.

use serde::Serialize;

/// The kinds of event, with the names that appear as `type` in payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum EventType {
    #[serde(rename = "account.upgraded")]
    AccountUpgraded,
    #[serde(rename = "account.downgraded")]
    AccountDowngraded,
    #[serde(rename = "inbox.created")]
    InboxCreated,
    #[serde(rename = "inbox.deleted")]
    InboxDeleted,
    #[serde(rename = "message.received")]
    MessageReceived,
    #[serde(rename = "message.sent")]
    MessageSent,
    #[serde(rename = "message.delivered")]
    MessageDelivered,
    #[serde(rename = "message.deferred")]
    MessageDeferred,
    #[serde(rename = "message.bounced")]
    MessageBounced,
    #[serde(rename = "domain.verified")]
    DomainVerified,
    #[serde(rename = "webhook.unhealthy")]
    WebhookUnhealthy,
    #[serde(rename = "webhook.test")]
    WebhookTest,
    #[serde(rename = "operator.notified")]
    OperatorNotified,
}

/// Every event type a webhook may subscribe to, including those that later parts of
/// Mailroom record (sending, domains).
pub const SUBSCRIBABLE: &[&str] = &[
    "message.received",
    "message.sent",
    "message.delivered",
    "message.deferred",
    "message.bounced",
    "account.upgraded",
    "account.downgraded",
    "domain.verified",
    "inbox.created",
    "inbox.deleted",
    "webhook.unhealthy",
    "operator.notified",
];

impl EventType {
    pub const fn as_str(self) -> &'static str {
        match self {
            EventType::AccountUpgraded => "account.upgraded",
            EventType::AccountDowngraded => "account.downgraded",
            EventType::InboxCreated => "inbox.created",
            EventType::InboxDeleted => "inbox.deleted",
            EventType::MessageReceived => "message.received",
            EventType::MessageSent => "message.sent",
            EventType::MessageDelivered => "message.delivered",
            EventType::MessageDeferred => "message.deferred",
            EventType::MessageBounced => "message.bounced",
            EventType::DomainVerified => "domain.verified",
            EventType::WebhookUnhealthy => "webhook.unhealthy",
            EventType::WebhookTest => "webhook.test",
            EventType::OperatorNotified => "operator.notified",
        }
    }
}

/// An event about to be written with the change that caused it.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_type: EventType,
    pub account_id: String,
    pub inbox_id: Option<String>,
    /// The `data` object of the payload.
    pub data: serde_json::Value,
}

impl NewEvent {
    /// `account.upgraded` or `account.downgraded`, by comparing the tiers' order.
    pub fn tier_changed(account_id: &str, from: &str, to: &str, upgraded: bool) -> NewEvent {
        NewEvent {
            event_type: if upgraded {
                EventType::AccountUpgraded
            } else {
                EventType::AccountDowngraded
            },
            account_id: account_id.to_owned(),
            inbox_id: None,
            data: serde_json::json!({
                "account_id": account_id,
                "previous_tier": from,
                "tier": to,
            }),
        }
    }

    pub fn inbox_created(account_id: &str, inbox_id: &str, email: &str) -> NewEvent {
        NewEvent {
            event_type: EventType::InboxCreated,
            account_id: account_id.to_owned(),
            inbox_id: Some(inbox_id.to_owned()),
            data: serde_json::json!({"inbox_id": inbox_id, "email": email}),
        }
    }

    /// `message.received`, with the summary an agent needs to decide whether to fetch it.
    pub fn message_received(account_id: &str, inbox_id: &str, data: serde_json::Value) -> NewEvent {
        NewEvent {
            event_type: EventType::MessageReceived,
            account_id: account_id.to_owned(),
            inbox_id: Some(inbox_id.to_owned()),
            data,
        }
    }

    /// `message.sent`: a message was accepted for delivery (by the API or SMTP submission);
    /// `data` lists its recipients.
    pub fn message_sent(account_id: &str, inbox_id: &str, data: serde_json::Value) -> NewEvent {
        NewEvent {
            event_type: EventType::MessageSent,
            account_id: account_id.to_owned(),
            inbox_id: Some(inbox_id.to_owned()),
            data,
        }
    }

    /// What happened to one recipient of a sent message: `message.delivered`,
    /// `message.deferred` (a temporary failure; it will be retried) or `message.bounced`.
    pub fn delivery_status(
        event_type: EventType,
        account_id: &str,
        inbox_id: &str,
        data: serde_json::Value,
    ) -> NewEvent {
        NewEvent {
            event_type,
            account_id: account_id.to_owned(),
            inbox_id: Some(inbox_id.to_owned()),
            data,
        }
    }

    /// `domain.verified`: a custom domain's DNS records were found and it is in use.
    pub fn domain_verified(account_id: &str, domain: &str) -> NewEvent {
        NewEvent {
            event_type: EventType::DomainVerified,
            account_id: account_id.to_owned(),
            inbox_id: None,
            data: serde_json::json!({"domain": domain}),
        }
    }

    /// `webhook.unhealthy`: an endpoint failed every retry of a delivery.
    pub fn webhook_unhealthy(account_id: &str, webhook_id: &str, url: &str) -> NewEvent {
        NewEvent {
            event_type: EventType::WebhookUnhealthy,
            account_id: account_id.to_owned(),
            inbox_id: None,
            data: serde_json::json!({"webhook_id": webhook_id, "url": url}),
        }
    }

    /// `webhook.test`: delivered only to the webhook it names.
    pub fn webhook_test(account_id: &str, webhook_id: &str) -> NewEvent {
        NewEvent {
            event_type: EventType::WebhookTest,
            account_id: account_id.to_owned(),
            inbox_id: None,
            data: serde_json::json!({"webhook_id": webhook_id, "message": "This is a test event from Mailroom."}),
        }
    }

    pub fn inbox_deleted(account_id: &str, inbox_id: &str, email: &str) -> NewEvent {
        NewEvent {
            event_type: EventType::InboxDeleted,
            account_id: account_id.to_owned(),
            inbox_id: Some(inbox_id.to_owned()),
            data: serde_json::json!({"inbox_id": inbox_id, "email": email}),
        }
    }

    /// `operator.notified`: an agent left a notice for its operator. `data` has every
    /// field every time (`inbox_id`, `context`, `action_label` may be null).
    pub fn operator_notified(
        account_id: &str,
        inbox_id: Option<&str>,
        data: serde_json::Value,
    ) -> NewEvent {
        NewEvent {
            event_type: EventType::OperatorNotified,
            account_id: account_id.to_owned(),
            inbox_id: inbox_id.map(str::to_owned),
            data,
        }
    }
}
