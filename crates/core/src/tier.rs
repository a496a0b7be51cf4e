//! Tiers (plans) and their limits.
//!
//! The defaults are seed 003's table; an operator overrides any of them in the config file.
//! `None` means unlimited everywhere: it is shown as `null` in JSON.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Free,
    Developer,
    Growth,
    Enterprise,
}

impl Tier {
    pub const ALL: [Tier; 4] = [Tier::Free, Tier::Developer, Tier::Growth, Tier::Enterprise];

    pub const fn as_str(self) -> &'static str {
        match self {
            Tier::Free => "free",
            Tier::Developer => "developer",
            Tier::Growth => "growth",
            Tier::Enterprise => "enterprise",
        }
    }

    pub fn parse(s: &str) -> Option<Tier> {
        Tier::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Human name for labels ("Upgrade to Developer").
    pub const fn label(self) -> &'static str {
        match self {
            Tier::Free => "Free",
            Tier::Developer => "Developer",
            Tier::Growth => "Growth",
            Tier::Enterprise => "Enterprise",
        }
    }

    /// The next tier up, if any.
    pub fn next(self) -> Option<Tier> {
        match self {
            Tier::Free => Some(Tier::Developer),
            Tier::Developer => Some(Tier::Growth),
            Tier::Growth => Some(Tier::Enterprise),
            Tier::Enterprise => None,
        }
    }

    pub fn is_paid(self) -> bool {
        self != Tier::Free
    }
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a tier allows. Every field may be set in the config file under `[tiers.<name>]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TierLimits {
    /// Inboxes an account may hold; `None` = unlimited.
    pub max_inboxes: Option<u64>,
    /// Messages an account may send per UTC day; 0 = receive only.
    pub max_sends_per_day: Option<u64>,
    /// Messages an account may send per calendar month (UTC).
    pub max_sends_per_month: Option<u64>,
    /// Whether webhooks may be registered.
    pub webhooks_enabled: bool,
    /// Webhook endpoints an account may hold; `None` = unlimited. Each endpoint multiplies
    /// the deliveries one event costs, so a free account gets a few.
    pub max_webhooks: Option<u64>,
    /// Custom domains an account may add; `Some(0)` = none.
    pub max_custom_domains: Option<u64>,
    /// Whether the account may use SMTP submission (seed 000: paid tiers only).
    pub smtp_enabled: bool,
    /// Bytes of mail one inbox may hold (every copy counts, in every folder); `None` =
    /// unlimited.
    pub max_storage_bytes_per_inbox: Option<u64>,
    /// Bytes of mail all inboxes of an account may hold together; `None` = unlimited.
    pub max_storage_bytes_per_account: Option<u64>,
    /// Event streams and waiting long polls per key (IMAP IDLE per inbox), when lower than
    /// the server's `streams.max_per_key`; `None` = the server's budget alone.
    pub max_streams_per_key: Option<u64>,
    /// The same per account, all keys and IMAP IDLE together (`streams.max_per_account`).
    pub max_streams_per_account: Option<u64>,
}

impl Default for TierLimits {
    fn default() -> Self {
        Tier::Free.default_limits()
    }
}

impl TierLimits {
    pub fn can_send(&self) -> bool {
        self.max_sends_per_day != Some(0) && self.max_sends_per_month != Some(0)
    }

    pub fn custom_domains_enabled(&self) -> bool {
        self.max_custom_domains != Some(0)
    }
}

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

impl Tier {
    /// Seed 003's table. Monthly limits are 30× the daily ones. Storage is not in the seed:
    /// per inbox / per account, free 100 MiB / 500 MiB, developer 1 GiB / 10 GiB, growth
    /// 10 GiB / 100 GiB, enterprise unlimited (docs/decisions.md).
    pub fn default_limits(self) -> TierLimits {
        match self {
            Tier::Free => TierLimits {
                max_inboxes: Some(10),
                max_sends_per_day: Some(0),
                max_sends_per_month: Some(0),
                webhooks_enabled: true,
                max_webhooks: Some(3),
                max_custom_domains: Some(0),
                smtp_enabled: false,
                max_storage_bytes_per_inbox: Some(100 * MIB),
                max_storage_bytes_per_account: Some(500 * MIB),
                max_streams_per_key: None,
                max_streams_per_account: None,
            },
            Tier::Developer => TierLimits {
                max_inboxes: None,
                max_sends_per_day: Some(1_000),
                max_sends_per_month: Some(30_000),
                webhooks_enabled: true,
                max_webhooks: Some(10),
                max_custom_domains: Some(5),
                smtp_enabled: true,
                max_storage_bytes_per_inbox: Some(GIB),
                max_storage_bytes_per_account: Some(10 * GIB),
                max_streams_per_key: None,
                max_streams_per_account: None,
            },
            Tier::Growth => TierLimits {
                max_inboxes: None,
                max_sends_per_day: Some(10_000),
                max_sends_per_month: Some(300_000),
                webhooks_enabled: true,
                max_webhooks: Some(50),
                max_custom_domains: None,
                smtp_enabled: true,
                max_storage_bytes_per_inbox: Some(10 * GIB),
                max_storage_bytes_per_account: Some(100 * GIB),
                max_streams_per_key: None,
                max_streams_per_account: None,
            },
            Tier::Enterprise => TierLimits {
                max_inboxes: None,
                max_sends_per_day: None,
                max_sends_per_month: None,
                webhooks_enabled: true,
                max_webhooks: None,
                max_custom_domains: None,
                smtp_enabled: true,
                max_storage_bytes_per_inbox: None,
                max_storage_bytes_per_account: None,
                max_streams_per_key: None,
                max_streams_per_account: None,
            },
        }
    }
}

/// The limits of every tier, as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tiers {
    #[serde(default = "free")]
    pub free: TierLimits,
    #[serde(default = "developer")]
    pub developer: TierLimits,
    #[serde(default = "growth")]
    pub growth: TierLimits,
    #[serde(default = "enterprise")]
    pub enterprise: TierLimits,
}

fn free() -> TierLimits {
    Tier::Free.default_limits()
}
fn developer() -> TierLimits {
    Tier::Developer.default_limits()
}
fn growth() -> TierLimits {
    Tier::Growth.default_limits()
}
fn enterprise() -> TierLimits {
    Tier::Enterprise.default_limits()
}

impl Default for Tiers {
    fn default() -> Self {
        Tiers {
            free: free(),
            developer: developer(),
            growth: growth(),
            enterprise: enterprise(),
        }
    }
}

impl Tiers {
    pub fn limits(&self, tier: Tier) -> &TierLimits {
        match tier {
            Tier::Free => &self.free,
            Tier::Developer => &self.developer,
            Tier::Growth => &self.growth,
            Tier::Enterprise => &self.enterprise,
        }
    }

    /// The lowest tier above `tier` whose limits satisfy `pred`, to name in an upgrade offer.
    pub fn lowest_above(&self, tier: Tier, pred: impl Fn(&TierLimits) -> bool) -> Option<Tier> {
        Tier::ALL
            .into_iter()
            .filter(|t| *t > tier)
            .find(|t| pred(self.limits(*t)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_seed_003() {
        let t = Tiers::default();
        assert_eq!(t.free.max_inboxes, Some(10));
        assert!(!t.free.can_send());
        assert!(!t.free.custom_domains_enabled());
        assert_eq!(t.developer.max_sends_per_day, Some(1000));
        assert_eq!(t.developer.max_custom_domains, Some(5));
        assert_eq!(t.growth.max_sends_per_day, Some(10_000));
        assert_eq!(t.enterprise.max_sends_per_day, None);
        assert!(Tier::ALL.iter().all(|x| t.limits(*x).webhooks_enabled));
        assert_eq!(t.free.max_webhooks, Some(3));
        assert_eq!(t.developer.max_webhooks, Some(10));
        assert_eq!(t.growth.max_webhooks, Some(50));
        assert_eq!(t.enterprise.max_webhooks, None);
        assert_eq!(t.free.max_storage_bytes_per_inbox, Some(100 * MIB));
        assert_eq!(t.free.max_storage_bytes_per_account, Some(500 * MIB));
        assert_eq!(t.enterprise.max_storage_bytes_per_account, None);
    }

    #[test]
    fn partial_config_overrides_one_field() {
        let t: Tiers = toml::from_str("[free]\nmax_inboxes = 3\n").unwrap();
        assert_eq!(t.free.max_inboxes, Some(3));
        assert_eq!(t.free.max_sends_per_day, Some(0));
        assert_eq!(t.developer, Tier::Developer.default_limits());
    }

    #[test]
    fn unknown_limit_names_are_refused() {
        let err = toml::from_str::<Tiers>("[free]\nmax_inbox = 3\n").unwrap_err();
        assert!(err.to_string().contains("max_inbox"), "{err}");
    }
}
