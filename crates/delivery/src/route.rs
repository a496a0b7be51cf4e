//! Where mail for a domain goes (RFC 5321 §5.1): its MX hosts by preference, or the domain
//! itself when it has no MX record (the implicit MX), or nowhere for a null MX (RFC 7505)
//! or a domain that does not exist.

use std::net::IpAddr;

use mail_auth::common::cache::NoCache;
use mail_auth::{DnsError, IpLookupStrategy, MX, MessageAuthenticator, RecordSet};

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

fn is_nxdomain(e: &mail_auth::Error) -> bool {
    matches!(e, mail_auth::Error::Dns(DnsError::RecordNotFound(code)) if u16::from(*code) == 3)
}

fn is_no_records(e: &mail_auth::Error) -> bool {
    matches!(e, mail_auth::Error::Dns(DnsError::RecordNotFound(code)) if u16::from(*code) != 3)
}

/// The host names to try for `domain`, best first.
pub async fn mx_hosts(
    resolver: &MessageAuthenticator,
    domain: &str,
) -> Result<Vec<String>, RouteError> {
    let fqdn = format!("{}.", domain.trim_end_matches('.'));
    match resolver
        .mx_lookup(fqdn.as_str(), None::<&NoCache<Box<str>, RecordSet<MX>>>)
        .await
    {
        Ok(set) => {
            let mut hosts = Vec::new();
            for mx in set.rrset.iter() {
                for exchange in mx.exchanges.iter() {
                    let host = exchange.trim_end_matches('.').to_ascii_lowercase();
                    if host.is_empty() {
                        if set.rrset.len() == 1 && mx.exchanges.len() == 1 {
                            return Err(RouteError::Permanent(format!(
                                "5.1.10 {domain} accepts no mail (null MX)"
                            )));
                        }
                        continue;
                    }
                    if !hosts.contains(&host) {
                        hosts.push(host);
                    }
                }
            }
            if hosts.is_empty() {
                // An empty answer: the implicit MX.
                hosts.push(domain.to_ascii_lowercase());
            }
            Ok(hosts)
        }
        Err(e) if is_nxdomain(&e) => Err(RouteError::Permanent(format!(
            "5.1.2 the domain {domain} does not exist"
        ))),
        Err(e) if is_no_records(&e) => Ok(vec![domain.to_ascii_lowercase()]),
        Err(e) => Err(RouteError::Temporary(format!(
            "4.4.3 DNS lookup of the MX of {domain} failed: {e}"
        ))),
    }
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
