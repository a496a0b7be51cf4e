//! `[delivery]` in the file, and the flags of outbound delivery: the queue's schedule, the
//! relay (with the CA its certificate is checked against), and whether MX delivery may
//! reach non-public addresses. See docs/configuration.md and docs/security.md.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use serde::Deserialize;

use super::ServeArgs;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileDelivery {
    relay: Option<String>,
    relay_username: Option<String>,
    relay_password: Option<String>,
    relay_ca_file: Option<PathBuf>,
    allow_private_destinations: Option<bool>,
    port: Option<u16>,
    pub(super) queue_lifetime_hours: Option<u64>,
    retry_schedule_secs: Option<Vec<u64>>,
    concurrency: Option<usize>,
    connect_timeout_secs: Option<u64>,
    timeout_secs: Option<u64>,
}

/// The delivery flags added for issue 12 (the relay's own flags are in [`ServeArgs`]).
#[derive(Debug, Clone, Default, Args)]
pub struct DeliveryArgs {
    /// Let MX delivery connect to loopback, private, link-local and other special-purpose
    /// addresses (`=false` to forbid it under --dev). [default: off; --dev: on]
    #[arg(
        long = "delivery-allow-private-destinations",
        env = "MAILROOM_DELIVERY_ALLOW_PRIVATE_DESTINATIONS",
        value_name = "BOOL",
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub allow_private_destinations: Option<bool>,

    /// PEM file of CA certificates (or the relay's own certificate) trusted for the
    /// relay's TLS certificate, besides the public and system roots.
    #[arg(
        long = "relay-ca-file",
        env = "MAILROOM_RELAY_CA_FILE",
        value_name = "FILE"
    )]
    pub relay_ca_file: Option<PathBuf>,
}

/// The `[delivery]` settings, with the flags over the file.
pub(super) fn resolve_delivery(
    args: &ServeArgs,
    file: &FileDelivery,
    hostname: &str,
    dev: bool,
) -> anyhow::Result<mailroom_delivery::DeliveryConfig> {
    let mut d = mailroom_delivery::DeliveryConfig::new(hostname.to_owned());
    if let Some(port) = file.port {
        d.port = port;
    }
    if let Some(schedule) = &file.retry_schedule_secs {
        if schedule.is_empty() || schedule.contains(&0) {
            bail!("delivery.retry_schedule_secs must list delays of at least 1 second");
        }
        d.retry_schedule = schedule
            .iter()
            .map(|s| std::time::Duration::from_secs(*s))
            .collect();
    }
    if let Some(n) = file.concurrency {
        d.concurrency = n.clamp(1, 1024);
    }
    if let Some(s) = file.connect_timeout_secs {
        d.connect_timeout = std::time::Duration::from_secs(s.max(1));
    }
    if let Some(s) = file.timeout_secs {
        d.timeout = std::time::Duration::from_secs(s.max(1));
    }
    d.allow_private_destinations = args
        .delivery
        .allow_private_destinations
        .or(file.allow_private_destinations)
        .unwrap_or(dev);
    let ca_file = args
        .delivery
        .relay_ca_file
        .clone()
        .or(file.relay_ca_file.clone());
    let relay = args.relay.clone().or(file.relay.clone());
    if let Some(relay) = relay {
        let (host, port) = relay
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
            .with_context(|| {
                format!("the relay {relay:?} must be HOST:PORT, like smtp.example.com:587")
            })?;
        d.relay = Some(mailroom_delivery::Relay {
            host: host.to_owned(),
            port,
            username: args.relay_username.clone().or(file.relay_username.clone()),
            password: args.relay_password.clone().or(file.relay_password.clone()),
            ca_file,
        });
    } else if ca_file.is_some() {
        bail!("delivery.relay_ca_file is for a relay: set delivery.relay too");
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(
        args: &ServeArgs,
        toml: &str,
        dev: bool,
    ) -> anyhow::Result<mailroom_delivery::DeliveryConfig> {
        let file: FileDelivery = toml::from_str(toml)?;
        resolve_delivery(args, &file, "mx.example.org", dev)
    }

    #[test]
    fn private_destinations_follow_dev_unless_set() {
        let args = ServeArgs::default();
        assert!(
            !resolve(&args, "", false)
                .unwrap()
                .allow_private_destinations
        );
        assert!(resolve(&args, "", true).unwrap().allow_private_destinations);
        let off = "allow_private_destinations = false";
        assert!(
            !resolve(&args, off, true)
                .unwrap()
                .allow_private_destinations
        );
        let mut on = ServeArgs::default();
        on.delivery.allow_private_destinations = Some(true);
        assert!(resolve(&on, off, false).unwrap().allow_private_destinations);
    }

    #[test]
    fn the_flags_parse() {
        use clap::Parser;
        use mailroom_services::dmarc::DmarcEnforcement;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let cli = Cli::try_parse_from([
            "mailroom",
            "--delivery-allow-private-destinations",
            "--relay-ca-file",
            "/etc/relay-ca.pem",
            "--smtp-dmarc-enforcement",
            "quarantine-only",
        ])
        .unwrap();
        assert_eq!(cli.serve.delivery.allow_private_destinations, Some(true));
        assert_eq!(
            cli.serve.delivery.relay_ca_file,
            Some(PathBuf::from("/etc/relay-ca.pem"))
        );
        assert_eq!(
            cli.serve.smtp_dmarc_enforcement,
            Some(DmarcEnforcement::QuarantineOnly)
        );
        let cli = Cli::try_parse_from(["mailroom", "--delivery-allow-private-destinations=false"])
            .unwrap();
        assert_eq!(cli.serve.delivery.allow_private_destinations, Some(false));
        assert!(Cli::try_parse_from(["mailroom", "--smtp-dmarc-enforcement", "strict"]).is_err());
    }

    #[test]
    fn the_ca_file_belongs_to_the_relay() {
        let args = ServeArgs::default();
        let d = resolve(
            &args,
            "relay = \"smtp.example.net:587\"\nrelay_ca_file = \"/etc/ca.pem\"",
            false,
        )
        .unwrap();
        let relay = d.relay.unwrap();
        assert_eq!(relay.ca_file, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!((relay.host.as_str(), relay.port), ("smtp.example.net", 587));
        assert!(resolve(&args, "relay_ca_file = \"/etc/ca.pem\"", false).is_err());
    }
}
