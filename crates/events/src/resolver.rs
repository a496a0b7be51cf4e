//! Name resolution for webhook deliveries that refuses addresses the policy forbids, so a
//! webhook URL cannot reach the operator's internal network, also not through a name that
//! resolves (or is rebound) to an internal address. IP literals in URLs are checked when the
//! webhook is registered.

use std::net::SocketAddr;

use mailroom_services::webhooks::WebhookPolicy;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

pub struct PolicyResolver {
    pub policy: WebhookPolicy,
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| policy.allows(a.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(
                    format!("{host} resolves only to addresses webhooks may not reach").into(),
                );
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}
