//! Where mail for a domain goes (RFC 5321 §5.1): its MX hosts by preference, or the domain
//! itself when it has no MX record (the implicit MX), or nowhere for a null MX (RFC 7505)
//! or a domain that does not exist.

use std::net::IpAddr;

use mail_auth::common::cache::NoCache;
use mail_auth::{DnsError, IpLookupStrategy, MessageAuthenticator, RecordSet};
use mailroom_services::mailauth::{MxAnswer, mx_lookup};

/// Why a domain has no route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// It never will: the recipient bounces. The text starts with an enhanced status code.
    Permanent(String),
    /// Perhaps later (a DNS timeout, a server failure).
    Temporary(String),
}

impl RouteError {
    pub fn text(&self) -> &str {
        match self {
            RouteError::Permanent(t) | RouteError::Temporary(t) => t,
        }
    }
}

/// The host names to try for `domain`, best first.
pub async fn mx_hosts(
    resolver: &MessageAuthenticator,
    domain: &str,
) -> Result<Vec<String>, RouteError> {
    match mx_lookup(resolver, domain).await {
        MxAnswer::Hosts(hosts) => Ok(hosts),
        MxAnswer::NoMx => Ok(vec![domain.to_ascii_lowercase()]),
        MxAnswer::NullMx => Err(RouteError::Permanent(format!(
            "5.1.10 {domain} accepts no mail (null MX)"
        ))),
        MxAnswer::NoSuchDomain => Err(RouteError::Permanent(format!(
            "5.1.2 the domain {domain} does not exist"
        ))),
        MxAnswer::Failed(e) => Err(RouteError::Temporary(format!(
            "4.4.3 DNS lookup of the MX of {domain} failed: {e}"
        ))),
    }
}

fn is_nxdomain(e: &mail_auth::Error) -> bool {
    matches!(e, mail_auth::Error::Dns(DnsError::RecordNotFound(code)) if u16::from(*code) == 3)
}

fn is_no_records(e: &mail_auth::Error) -> bool {
    matches!(e, mail_auth::Error::Dns(DnsError::RecordNotFound(code)) if u16::from(*code) != 3)
}

/// The addresses of `host` (IPv4 first), at most `max`.
pub async fn addresses(
    resolver: &MessageAuthenticator,
    host: &str,
    max: usize,
) -> Result<Vec<IpAddr>, RouteError> {
    if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    let fqdn = format!("{}.", host.trim_end_matches('.'));
    match resolver
        .ip_lookup(
            &fqdn,
            IpLookupStrategy::Ipv4thenIpv6,
            max,
            None::<&NoCache<Box<str>, RecordSet<std::net::Ipv4Addr>>>,
            None::<&NoCache<Box<str>, RecordSet<std::net::Ipv6Addr>>>,
        )
        .await
    {
        Ok(ips) if !ips.is_empty() => Ok(ips),
        Ok(_) => Err(RouteError::Temporary(format!(
            "4.4.4 {host} has no address"
        ))),
        Err(e) if is_nxdomain(&e) || is_no_records(&e) => Err(RouteError::Temporary(format!(
            "4.4.4 {host} has no address"
        ))),
        Err(e) => Err(RouteError::Temporary(format!(
            "4.4.3 DNS lookup of {host} failed: {e}"
        ))),
    }
}
