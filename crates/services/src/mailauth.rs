//! SPF, DKIM and DMARC for inbound mail (`mail-auth`), with a resolver the operator can
//! point anywhere (tests point it at a DNS server of their own), parsed answers cached in
//! the server ([`crate::dnscache`]), and a time budget per message: a slow or lossy DNS
//! server makes the checks `temperror`, never a session that stalls.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mail_auth::{DkimOutput, DmarcOutput, SpfOutput};

use mail_auth::common::headers::HeaderWriter;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use mail_auth::hickory_resolver::system_conf::read_system_conf;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    AuthenticatedMessage, AuthenticationResults, DkimResult, DmarcResult, MessageAuthenticator,
    SpfResult,
};
use serde::Serialize;

use crate::dmarc::{DmarcDisposition, DmarcPolicy};
use crate::dnscache::{DnsCaches, resolver_options};

/// How much checking one message may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthBudget {
    /// SPF, DKIM and DMARC together, DNS included. Past it, what is not done yet is
    /// `temperror` (RFC 7208 §2.6.6, RFC 6376 §3.9, RFC 7489 §6.6.3).
    pub time: Duration,
    /// DKIM signatures checked per message; the rest are ignored (RFC 6376 §6.1 lets a
    /// verifier limit them). Each costs a DNS lookup and an RSA verification.
    pub max_dkim_signatures: usize,
}

impl Default for AuthBudget {
    fn default() -> Self {
        AuthBudget {
            time: Duration::from_secs(5),
            max_dkim_signatures: 5,
        }
    }
}

/// The verdicts on one message, as stored and shown by the API.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AuthVerdict {
    pub spf: &'static str,
    /// Overall: `pass` if any signature passes, `none` if there is none.
    pub dkim: &'static str,
    pub dmarc: &'static str,
    /// The author domain whose DMARC record was evaluated (empty when none was).
    pub dmarc_domain: String,
    /// What that domain asks for failing mail; `reject` for a message with several
    /// `From` fields ([`crate::dmarc`]).
    pub dmarc_policy: DmarcPolicy,
    /// What this server did about it, within `smtp.dmarc_enforcement`.
    pub dmarc_disposition: DmarcDisposition,
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
    caches: DnsCaches,
    budget: AuthBudget,
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
        None => {
            let (config, opts) = read_system_conf().map_err(|e| e.to_string())?;
            MessageAuthenticator::new(config, resolver_options(opts))
        }
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
            let mut opts = resolver_options(ResolverOpts::default());
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
    pub fn new(nameserver: Option<SocketAddr>, budget: AuthBudget) -> Result<AuthChecker, String> {
        Ok(AuthChecker {
            authenticator: resolver(nameserver)?,
            caches: DnsCaches::new(),
            budget,
        })
    }

    /// The parsed answers kept, for tests and metrics.
    pub fn caches(&self) -> &DnsCaches {
        &self.caches
    }

    /// SPF (for the MAIL FROM identity, or HELO for the null sender), DKIM and DMARC,
    /// within the budget.
    pub async fn check(
        &self,
        raw: &[u8],
        ip: IpAddr,
        helo: &str,
        mail_from: &str,
        hostname: &str,
    ) -> AuthVerdict {
        let deadline = tokio::time::Instant::now() + self.budget.time;
        let mut over_budget = false;
        let auth = &self.authenticator;
        let spf_params = if mail_from.is_empty() {
            SpfParameters::verify_ehlo(ip, helo, hostname)
        } else {
            SpfParameters::verify_mail_from(ip, helo, hostname, mail_from)
        };
        let spf_domain = mail_from.rsplit_once('@').map_or(helo, |(_, d)| d);
        let spf =
            match tokio::time::timeout_at(deadline, auth.verify_spf(self.caches.with(spf_params)))
                .await
            {
                Ok(spf) => spf,
                Err(_) => {
                    over_budget = true;
                    SpfOutput::new(spf_domain.to_owned()).with_result(SpfResult::TempError)
                }
            };
        let Some(mut msg) = AuthenticatedMessage::parse(raw) else {
            let header = AuthenticationResults::new(hostname)
                .with_spf_mailfrom_result(&spf, ip, mail_from, helo)
                .to_header();
            return AuthVerdict {
                spf: spf_str(spf.result()),
                dkim: "none",
                dmarc: "none",
                dmarc_domain: String::new(),
                dmarc_policy: DmarcPolicy::None,
                dmarc_disposition: DmarcDisposition::None,
                dkim_signatures: Vec::new(),
                header,
            };
        };
        if msg.dkim_headers.len() > self.budget.max_dkim_signatures {
            metrics::counter!("mailroom_refusals_total", "door" => "smtp", "reason" => "max_dkim_signatures").increment(1);
            msg.dkim_headers.truncate(self.budget.max_dkim_signatures);
        }
        let msg = msg;
        let dkim: Vec<DkimOutput<'_>> =
            match tokio::time::timeout_at(deadline, auth.verify_dkim(self.caches.with(&msg))).await
            {
                Ok(d) => d,
                Err(_) => {
                    over_budget = true;
                    msg.dkim_headers
                        .iter()
                        .map(|h| DkimOutput::temp_err(timeout_error()).with_signature(&h.header))
                        .collect()
                }
            };
        let dmarc_params = DmarcParameters::new(&msg, &dkim, spf_domain, &spf);
        let dmarc = match tokio::time::timeout_at(
            deadline,
            auth.verify_dmarc(self.caches.with(dmarc_params)),
        )
        .await
        {
            Ok(d) => d,
            Err(_) => {
                over_budget = true;
                let from_domain = msg
                    .from()
                    .rsplit_once('@')
                    .map_or("", |(_, d)| d)
                    .to_owned();
                DmarcOutput::new(from_domain)
                    .with_spf_result(DmarcResult::TempError(timeout_error()))
                    .with_dkim_result(DmarcResult::TempError(timeout_error()))
            }
        };
        // RFC 7489 §6.6.1: a message with other than one From has no one author domain to
        // check, and is the classic way to show a reader one sender and a checker another.
        // With several, it is as if the domain shown had asked for rejection.
        let from_count = crate::origin::from_count(raw);
        let mut dmarc_policy = DmarcPolicy::from(dmarc.policy());
        let dmarc = if from_count == 1 {
            dmarc
        } else {
            if from_count > 1 {
                dmarc_policy = DmarcPolicy::Reject;
            }
            DmarcOutput::new(dmarc.domain().to_owned())
                .with_spf_result(DmarcResult::Fail(mail_auth::Error::NotAligned))
                .with_dkim_result(DmarcResult::Fail(mail_auth::Error::NotAligned))
        };
        if over_budget {
            metrics::counter!("mailroom_refusals_total", "door" => "smtp", "reason" => "auth_time_budget").increment(1);
            tracing::debug!(%ip, mail_from, "SPF/DKIM/DMARC over the time budget: temperror");
        }
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
            dmarc_domain: dmarc.domain().to_owned(),
            dmarc_policy,
            dmarc_disposition: DmarcDisposition::None,
            dkim_signatures,
            header,
        }
    }
}

/// What a check cut short by the budget records.
fn timeout_error() -> mail_auth::Error {
    mail_auth::Error::Dns(mail_auth::DnsError::Resolver(
        "DNS time budget exceeded".to_owned(),
    ))
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
