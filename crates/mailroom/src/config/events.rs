//! `[webhooks]` and `[streams]` in the file: the budgets of the webhook worker and of
//! waiters (event streams, long polls, IMAP IDLE). See docs/configuration.md.

use std::time::Duration;

use anyhow::bail;
use mailroom_services::StreamLimits;
use mailroom_store::FanOutBudget;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileWebhooks {
    timeout_secs: Option<u64>,
    max_in_flight: Option<usize>,
    max_in_flight_per_account: Option<usize>,
    max_per_endpoint: Option<usize>,
    fan_out_events: Option<u32>,
    fan_out_deliveries: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileStreams {
    max_per_key: Option<usize>,
    max_per_account: Option<usize>,
    poll_interval_ms: Option<u64>,
}

/// The webhook worker's budgets.
pub type WebhookBudgets = mailroom_events::Budgets;

/// Time allowed for one delivery (10 s).
pub(super) fn webhook_timeout(file: &FileWebhooks) -> anyhow::Result<Duration> {
    let t = file.timeout_secs.unwrap_or(10);
    if !(1..=300).contains(&t) {
        bail!("webhooks.timeout_secs must be between 1 and 300");
    }
    Ok(Duration::from_secs(t))
}

pub(super) fn resolve_webhooks(file: &FileWebhooks) -> anyhow::Result<WebhookBudgets> {
    let d = WebhookBudgets::default();
    let b = WebhookBudgets {
        max_in_flight: file.max_in_flight.unwrap_or(d.max_in_flight),
        max_in_flight_per_account: file
            .max_in_flight_per_account
            .unwrap_or(d.max_in_flight_per_account),
        max_per_endpoint: file.max_per_endpoint.unwrap_or(d.max_per_endpoint),
        fan_out: FanOutBudget {
            events: file.fan_out_events.unwrap_or(d.fan_out.events),
            deliveries: file.fan_out_deliveries.unwrap_or(d.fan_out.deliveries),
        },
    };
    if b.max_in_flight == 0
        || b.max_in_flight_per_account == 0
        || b.max_per_endpoint == 0
        || b.fan_out.events == 0
        || b.fan_out.deliveries == 0
    {
        bail!("the [webhooks] slots and fan-out sizes must be at least 1");
    }
    Ok(b)
}

pub(super) fn resolve_streams(file: &FileStreams) -> anyhow::Result<StreamLimits> {
    let d = StreamLimits::default();
    let s = StreamLimits {
        per_key: file.max_per_key.unwrap_or(d.per_key),
        per_account: file.max_per_account.unwrap_or(d.per_account),
        poll_interval: file
            .poll_interval_ms
            .map(Duration::from_millis)
            .unwrap_or(d.poll_interval),
    };
    if s.per_key == 0 || s.per_account == 0 {
        bail!("streams.max_per_key and streams.max_per_account must be at least 1");
    }
    if !(50..=60_000).contains(&s.poll_interval.as_millis()) {
        bail!("streams.poll_interval_ms must be between 50 and 60000");
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let b = resolve_webhooks(&FileWebhooks::default()).unwrap();
        assert_eq!(b, WebhookBudgets::default());
        assert_eq!(b.max_in_flight_per_account, 8);
        let f: FileWebhooks = toml::from_str("max_in_flight_per_account = 2\n").unwrap();
        assert_eq!(resolve_webhooks(&f).unwrap().max_in_flight_per_account, 2);
        let f: FileWebhooks = toml::from_str("max_per_endpoint = 0\n").unwrap();
        assert!(resolve_webhooks(&f).is_err());
        let s = resolve_streams(&FileStreams::default()).unwrap();
        assert_eq!((s.per_key, s.per_account), (10, 100));
        let f: FileStreams = toml::from_str("max_per_key = 3\npoll_interval_ms = 500\n").unwrap();
        let s = resolve_streams(&f).unwrap();
        assert_eq!(
            (s.per_key, s.poll_interval),
            (3, Duration::from_millis(500))
        );
        assert!(toml::from_str::<FileStreams>("max_per_keys = 3\n").is_err());
    }
}
