//! SPF, DKIM and DMARC for inbound mail (`mail-auth`), with a resolver the operator can
//! point anywhere (tests point it at a DNS server of their own).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mail_auth::common::headers::HeaderWriter;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    AuthenticatedMessage, AuthenticationResults, DkimResult, DmarcResult, MessageAuthenticator,
    SpfResult,
};
use serde::Serialize;

/// The verdicts on one message, as stored and shown by the API.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AuthVerdict {
    pub spf: &'static str,
    /// Overall: `pass` if any signature passes, `none` if there is none.
    pub dkim: &'static str,
    pub dmarc: &'static str,
    /// Each DKIM signature: signing domain, selector, result.
    pub dkim_signatures: Vec<DkimSignatureVerdict>,
    /// The `Authentication-Results` header field, CRLF-terminated.
    #[serde(skip)]
    pub header: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DkimSignatureVerdict {
    pub domain: String,
    pub selector: String,
    pub result: &'static str,
}

/// Checks inbound messages.
pub struct AuthChecker {
    authenticator: MessageAuthenticator,
}

impl std::fmt::Debug for AuthChecker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthChecker")
    }
}

/// A DNS resolver asking `nameserver` (UDP, then TCP), or the system's resolvers when
/// `None`. Inbound checks and outbound MX lookups use the same one, so one setting points
/// both at the operator's (or a test's) DNS server.
pub fn resolver(nameserver: Option<SocketAddr>) -> Result<MessageAuthenticator, String> {
    match nameserver {
        None => MessageAuthenticator::new_system_conf(),
        Some(ns) => {
            let mut udp = ConnectionConfig::udp();
            udp.port = ns.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = ns.port();
            let config = ResolverConfig::from_name_servers(vec![NameServerConfig::new(
                ns.ip(),
                true,
                vec![udp, tcp],
            )]);
            let mut opts = ResolverOpts::default();
            opts.timeout = Duration::from_secs(3);
            opts.attempts = 2;
            opts.use_hosts_file = ResolveHosts::Never;
            MessageAuthenticator::new(config, opts)
        }
    }
    .map_err(|e| e.to_string())
}

/// What DNS says about a domain's mail servers (RFC 5321 §5.1, RFC 7505).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MxAnswer {
    /// MX host names, best preference first, lower case, without the trailing dot.
    Hosts(Vec<String>),
    /// The domain exists but has no MX record: the domain itself is the implicit MX.
    NoMx,
    /// A null MX (`0 .`): the domain accepts no mail.
    NullMx,
    /// NXDOMAIN.
    NoSuchDomain,
    /// The lookup failed (timeout, server failure): try later.
    Failed(String),
}

/// Looks up the MX records of `domain`. Delivery routes by it and domain verification
/// checks it, so both read DNS the same way.
pub async fn mx_lookup(resolver: &MessageAuthenticator, domain: &str) -> MxAnswer {
    use mail_auth::common::cache::NoCache;
    use mail_auth::{DnsError, MX, RecordSet};
    let fqdn = format!("{}.", domain.trim_end_matches('.'));
    match resolver
        .mx_lookup(fqdn.as_str(), None::<&NoCache<Box<str>, RecordSet<MX>>>)
        .await
    {
        Ok(set) => {
            let all: Vec<String> = set
                .rrset
                .iter()
                .flat_map(|mx| mx.exchanges.iter())
                .map(|e| e.trim_end_matches('.').to_ascii_lowercase())
                .collect();
            if all.len() == 1 && all[0].is_empty() {
                return MxAnswer::NullMx;
            }
            let mut hosts: Vec<String> = Vec::new();
            for h in all {
                if !h.is_empty() && !hosts.contains(&h) {
                    hosts.push(h);
                }
            }
            if hosts.is_empty() {
                MxAnswer::NoMx
            } else {
                MxAnswer::Hosts(hosts)
            }
        }
        Err(mail_auth::Error::Dns(DnsError::RecordNotFound(code))) if u16::from(code) == 3 => {
            MxAnswer::NoSuchDomain
        }
        Err(mail_auth::Error::Dns(DnsError::RecordNotFound(_))) => MxAnswer::NoMx,
        Err(e) => MxAnswer::Failed(e.to_string()),
    }
}

impl AuthChecker {
    /// A checker asking `nameserver`, or the system's resolvers when `None`.
    pub fn new(nameserver: Option<SocketAddr>) -> Result<AuthChecker, String> {
        Ok(AuthChecker {
            authenticator: resolver(nameserver)?,
        })
    }

    /// SPF (for the MAIL FROM identity, or HELO for the null sender), DKIM and DMARC.
    pub async fn check(
        &self,
        raw: &[u8],
        ip: IpAddr,
        helo: &str,
        mail_from: &str,
        hostname: &str,
    ) -> AuthVerdict {
        let auth = &self.authenticator;
        let spf = if mail_from.is_empty() {
            auth.verify_spf(SpfParameters::verify_ehlo(ip, helo, hostname))
                .await
        } else {
            auth.verify_spf(SpfParameters::verify_mail_from(
                ip, helo, hostname, mail_from,
            ))
            .await
        };
        let Some(msg) = AuthenticatedMessage::parse(raw) else {
            let header = AuthenticationResults::new(hostname)
                .with_spf_mailfrom_result(&spf, ip, mail_from, helo)
                .to_header();
            return AuthVerdict {
                spf: spf_str(spf.result()),
                dkim: "none",
                dmarc: "none",
                dkim_signatures: Vec::new(),
                header,
            };
        };
        let dkim = auth.verify_dkim(&msg).await;
        let mail_from_domain = mail_from.rsplit_once('@').map_or(helo, |(_, d)| d);
        let dmarc = auth
            .verify_dmarc(DmarcParameters::new(&msg, &dkim, mail_from_domain, &spf))
            .await;
        let header = AuthenticationResults::new(hostname)
            .with_spf_mailfrom_result(&spf, ip, mail_from, helo)
            .with_dkim_results(&dkim, msg.from())
            .with_dmarc_result(&dmarc)
            .to_header();
        let dkim_signatures: Vec<DkimSignatureVerdict> = dkim
            .iter()
            .map(|o| DkimSignatureVerdict {
                domain: o.signature().map(|s| s.d.clone()).unwrap_or_default(),
                selector: o.signature().map(|s| s.s.clone()).unwrap_or_default(),
                result: dkim_str(o.result()),
            })
            .collect();
        let overall = if dkim.is_empty() {
            "none"
        } else if dkim.iter().any(|o| *o.result() == DkimResult::Pass) {
            "pass"
        } else {
            dkim_signatures[0].result
        };
        AuthVerdict {
            spf: spf_str(spf.result()),
            dkim: overall,
            dmarc: dmarc_str(&dmarc.result()),
            dkim_signatures,
            header,
        }
    }
}

fn spf_str(r: SpfResult) -> &'static str {
    match r {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
        SpfResult::None => "none",
    }
}

fn dkim_str(r: &DkimResult) -> &'static str {
    match r {
        DkimResult::Pass => "pass",
        DkimResult::Neutral(_) => "neutral",
        DkimResult::Fail(_) => "fail",
        DkimResult::PermError(_) => "permerror",
        DkimResult::TempError(_) => "temperror",
        DkimResult::None => "none",
    }
}

fn dmarc_str(r: &DmarcResult) -> &'static str {
    match r {
        DmarcResult::Pass => "pass",
        DmarcResult::Fail(_) => "fail",
        DmarcResult::TempError(_) => "temperror",
        DmarcResult::PermError(_) => "permerror",
        DmarcResult::None => "none",
    }
}
