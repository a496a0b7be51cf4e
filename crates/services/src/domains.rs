//! Custom domains (seed 003's tier limit, DESIGN.md's routes) and their SMTP credentials
//! (seed 001).
//!
//! A domain is added with a DKIM key of its own and the DNS records to publish; a check
//! looks the records up and marks the domain verified once MX, SPF and DKIM are in place.
//! Only then does it take inboxes, receive mail and get SMTP credentials.

use mailroom_core::secret::{hash_secret, random_base62, random_uuid};
use mailroom_core::time::now_ms;
use mailroom_store::{AddDomain, CredentialRow, DomainCheck, DomainRow};
use serde::Serialize;

use crate::mailauth::MxAnswer;
use crate::{Principal, ServiceError, Services};

/// One DNS record to publish, and what the last check found.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct RecordView {
    /// `mx`, `spf`, `dkim`, `dmarc`.
    pub purpose: String,
    #[serde(rename = "type")]
    pub record_type: String,
    pub name: String,
    pub value: String,
    /// `pending` (not checked yet), `verified`, `missing`, `mismatch`.
    pub status: String,
    /// Whether verification needs it (DMARC is recommended, not required).
    pub required: bool,
}

/// A domain as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DomainView {
    pub domain: String,
    /// `pending` or `verified`.
    pub status: &'static str,
    pub verified: bool,
    pub created_at: String,
    pub verified_at: Option<String>,
    pub checked_at: Option<String>,
    pub records: Vec<RecordView>,
}

/// A credential just created: the only time its password is shown.
#[derive(Debug, Clone)]
pub struct NewCredential {
    pub row: CredentialRow,
    pub password: String,
}

fn invalid(code: &'static str, field: &'static str, message: impl Into<String>) -> ServiceError {
    ServiceError::Invalid {
        code,
        field,
        message: message.into(),
    }
}

/// A domain name as DNS writes it: lower case, dot-separated labels of letters, digits and
/// hyphens, at least two labels.
pub fn normalize_domain(domain: &str) -> Result<String, ServiceError> {
    let d = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    let ok = d.len() <= 253
        && d.contains('.')
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if !ok {
        return Err(invalid(
            "INVALID_DOMAIN",
            "domain",
            format!("{domain:?} is not a domain name like example.com"),
        ));
    }
    Ok(d)
}

fn unquote(value: &str) -> String {
    value.split('"').filter(|p| !p.trim().is_empty()).collect()
}

/// The TXT record that proves an account's claim: `_mailroom-verification.<domain>`.
pub const VERIFICATION_PREFIX: &str = "_mailroom-verification";

/// `domain`'s records for `account_id`: the ownership proof first, then what mail needs.
async fn records_of(
    services: &Services,
    account_id: &str,
    domain: &str,
) -> Result<Vec<(String, &'static str, String)>, ServiceError> {
    let mut records = vec![(
        format!("{VERIFICATION_PREFIX}.{domain}."),
        "TXT",
        format!("\"{}\"", services.verification_token(account_id, domain)),
    )];
    records.extend(services.dns_records(domain).await?);
    Ok(records)
}

impl Services {
    /// The TXT value that proves `account_id` controls `domain`. MX, SPF and DKIM records
    /// are the same whoever claims the domain, so they cannot say which claim is the
    /// owner's; this one is derived from the master secret and the claim, so only the
    /// account that was shown it can have put it in the domain's DNS.
    pub fn verification_token(&self, account_id: &str, domain: &str) -> String {
        let subject = format!("{account_id}:{domain}");
        format!(
            "mailroom-verification={}",
            mailroom_core::secret::bytes_to_base62(
                &self.master().derive("domain-verification", &subject),
                32
            )
        )
    }

    async fn records_for(&self, row: &DomainRow) -> Result<Vec<RecordView>, ServiceError> {
        let last: Vec<RecordView> = row
            .last_check
            .as_deref()
            .and_then(|j| serde_json::from_str(j).ok())
            .unwrap_or_default();
        let records = records_of(self, &row.account_id, &row.domain).await?;
        Ok(records
            .into_iter()
            .map(|(name, kind, value)| {
                let purpose = if name.starts_with(VERIFICATION_PREFIX) {
                    "verification"
                } else if kind == "MX" {
                    "mx"
                } else if name.contains("._domainkey.") {
                    "dkim"
                } else if name.starts_with("_dmarc.") {
                    "dmarc"
                } else {
                    "spf"
                };
                let status = last
                    .iter()
                    .find(|r| r.purpose == purpose)
                    .map(|r| r.status.clone())
                    .unwrap_or_else(|| "pending".to_owned());
                RecordView {
                    purpose: purpose.to_owned(),
                    record_type: kind.to_owned(),
                    name,
                    value,
                    status,
                    required: purpose != "dmarc",
                }
            })
            .collect())
    }

    async fn domain_view(&self, row: &DomainRow) -> Result<DomainView, ServiceError> {
        Ok(DomainView {
            domain: row.domain.clone(),
            status: if row.verified_at.is_some() {
                "verified"
            } else {
                "pending"
            },
            verified: row.verified_at.is_some(),
            created_at: mailroom_core::time::rfc3339(row.created_at),
            verified_at: row.verified_at.map(mailroom_core::time::rfc3339),
            checked_at: row.checked_at.map(mailroom_core::time::rfc3339),
            records: self.records_for(row).await?,
        })
    }

    async fn own_domain(
        &self,
        principal: &Principal,
        domain: &str,
    ) -> Result<DomainRow, ServiceError> {
        let account_id = principal.require_account()?;
        let Ok(domain) = normalize_domain(domain) else {
            return Err(ServiceError::NotFound { what: "domain" });
        };
        self.store()
            .get_domain(account_id, &domain)
            .await?
            .ok_or(ServiceError::NotFound { what: "domain" })
    }

    /// `POST /v1/domains`: a paid tier, within its custom-domain limit.
    pub async fn add_domain(
        &self,
        principal: &Principal,
        domain: &str,
    ) -> Result<DomainView, ServiceError> {
        let account_id = principal.require_account()?;
        let account = self
            .store()
            .get_account(account_id)
            .await?
            .ok_or(ServiceError::NotFound { what: "account" })?;
        let limits = self.limits(account.tier).clone();
        if !limits.custom_domains_enabled() {
            return Err(ServiceError::TierLimit {
                code: "DOMAINS_REQUIRE_PAID",
                message: format!(
                    "custom domains are not available on the {} tier",
                    account.tier
                ),
                upgrade: self.upgrade_context(
                    &account.id,
                    account.tier,
                    "use custom domains",
                    |l| l.custom_domains_enabled(),
                ),
            });
        }
        let domain = normalize_domain(domain)?;
        let c = self.config();
        if domain == c.default_domain
            || domain == c.hostname
            || domain.ends_with(&format!(".{}", c.default_domain))
        {
            return Err(ServiceError::Conflict {
                code: "DOMAIN_TAKEN",
                message: format!("{domain} belongs to this server"),
            });
        }
        match self
            .store()
            .add_domain(account_id, &domain, limits.max_custom_domains, now_ms())
            .await?
        {
            AddDomain::Added => {}
            AddDomain::AlreadyClaimed => {
                return Err(ServiceError::Conflict {
                    code: "DOMAIN_TAKEN",
                    message: format!(
                        "{domain} is already added to this account; see GET /v1/domains/{domain}"
                    ),
                });
            }
            AddDomain::Taken => {
                return Err(ServiceError::Conflict {
                    code: "DOMAIN_TAKEN",
                    message: format!("{domain} is verified by another account on this server"),
                });
            }
            AddDomain::LimitReached => {
                let max = limits.max_custom_domains.unwrap_or(0);
                return Err(ServiceError::TierLimit {
                    code: "DOMAIN_LIMIT_REACHED",
                    message: format!(
                        "the {} tier allows {max} custom domains; delete one or upgrade",
                        account.tier
                    ),
                    upgrade: self.upgrade_context(
                        &account.id,
                        account.tier,
                        "add more custom domains",
                        move |l| l.max_custom_domains.is_none_or(|m| m > max),
                    ),
                });
            }
        }
        self.ensure_dkim_key(&domain).await?;
        let row = self
            .store()
            .get_domain(account_id, &domain)
            .await?
            .ok_or(ServiceError::NotFound { what: "domain" })?;
        self.domain_view(&row).await
    }

    pub async fn get_domain(
        &self,
        principal: &Principal,
        domain: &str,
    ) -> Result<DomainView, ServiceError> {
        let row = self.own_domain(principal, domain).await?;
        self.domain_view(&row).await
    }

    pub async fn list_domains(
        &self,
        principal: &Principal,
    ) -> Result<Vec<DomainView>, ServiceError> {
        let account_id = principal.require_account()?;
        let mut out = Vec::new();
        for row in self.store().list_domains(account_id).await? {
            out.push(self.domain_view(&row).await?);
        }
        Ok(out)
    }

    pub async fn delete_domain(
        &self,
        principal: &Principal,
        domain: &str,
    ) -> Result<(), ServiceError> {
        let row = self.own_domain(principal, domain).await?;
        match self
            .store()
            .delete_domain(&row.account_id, &row.domain)
            .await?
        {
            None => Err(ServiceError::NotFound { what: "domain" }),
            Some(0) => {
                // The key may have gone with the last claim; the next signature reads it
                // again (other processes hear `dkim:<domain>` from the store).
                self.dkim_signers().evict(&row.domain);
                Ok(())
            }
            Some(n) => Err(ServiceError::Conflict {
                code: "DOMAIN_IN_USE",
                message: format!("{n} inboxes use {}; delete them first", row.domain),
            }),
        }
    }

    /// The records in zone-file syntax, ready to paste.
    pub async fn zone_file(
        &self,
        principal: &Principal,
        domain: &str,
    ) -> Result<String, ServiceError> {
        let row = self.own_domain(principal, domain).await?;
        let mut out = format!("; DNS records for {} (Mailroom)\n", row.domain);
        for (name, kind, value) in records_of(self, &row.account_id, &row.domain).await? {
            out.push_str(&format!("{name}\t3600\tIN\t{kind}\t{value}\n"));
        }
        Ok(out)
    }

    /// Looks the records up and marks the domain verified when MX, SPF and DKIM are right.
    pub async fn verify_domain(
        &self,
        principal: &Principal,
        domain: &str,
    ) -> Result<DomainView, ServiceError> {
        let row = self.own_domain(principal, domain).await?;
        let resolver = crate::mailauth::resolver(self.config().dns_resolver).map_err(|e| {
            ServiceError::Invalid {
                code: "DNS_UNAVAILABLE",
                field: "domain",
                message: format!("no DNS resolver: {e}"),
            }
        })?;
        let host = self
            .config()
            .hostname
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let txt = |name: String| {
            let resolver = &resolver;
            async move {
                resolver
                    .txt_raw_lookup(name.as_str())
                    .await
                    .ok()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
            }
        };
        let mut results = Vec::new();
        for r in self.records_for(&row).await? {
            let status = match r.purpose.as_str() {
                "mx" => match crate::mailauth::mx_lookup(&resolver, &row.domain).await {
                    MxAnswer::Hosts(hosts) if hosts.contains(&host) => "verified",
                    MxAnswer::Hosts(_) | MxAnswer::NullMx => "mismatch",
                    _ => "missing",
                },
                "spf" => match txt(row.domain.clone()).await {
                    Some(t) if t.contains("v=spf1") && (t.contains("mx") || t.contains(&host)) => {
                        "verified"
                    }
                    Some(t) if t.contains("v=spf1") => "mismatch",
                    _ => "missing",
                },
                // Several claimants' tokens may be published at once; the resolver joins
                // the records, and a token is 32 characters no other account can know.
                "verification" => match txt(r.name.clone()).await {
                    Some(t) if t.contains(&unquote(&r.value)) => "verified",
                    Some(t) if t.contains("mailroom-verification=") => "mismatch",
                    _ => "missing",
                },
                "dkim" => {
                    let want = unquote(&r.value);
                    let want_key = want.split("p=").nth(1).unwrap_or("").trim();
                    match txt(r.name.clone()).await {
                        Some(t)
                            if !want_key.is_empty() && t.replace(' ', "").contains(want_key) =>
                        {
                            "verified"
                        }
                        Some(t) if t.contains("v=DKIM1") || t.contains("p=") => "mismatch",
                        _ => "missing",
                    }
                }
                _ => match txt(r.name.clone()).await {
                    Some(t) if t.contains("v=DMARC1") => "verified",
                    _ => "missing",
                },
            };
            results.push(RecordView {
                status: status.to_owned(),
                ..r
            });
        }
        let verified = results
            .iter()
            .filter(|r| r.required)
            .all(|r| r.status == "verified");
        let json = serde_json::to_string(&results).unwrap_or_default();
        match self
            .store()
            .record_domain_check(&row.account_id, &row.domain, &json, verified, now_ms())
            .await?
        {
            DomainCheck::Recorded { .. } => {}
            DomainCheck::TakenByOther => {
                return Err(ServiceError::Conflict {
                    code: "DOMAIN_TAKEN",
                    message: format!(
                        "{} was verified by another account first; its DNS holds that account's proof",
                        row.domain
                    ),
                });
            }
        }
        let row = self.own_domain(principal, &row.domain).await?;
        self.domain_view(&row).await
    }

    /// Seed 001: a credential `username` on a verified domain of the caller's account; the
    /// password is random and shown once.
    pub async fn create_credential(
        &self,
        principal: &Principal,
        domain: &str,
        username: &str,
    ) -> Result<NewCredential, ServiceError> {
        let row = self.own_domain(principal, domain).await?;
        if row.verified_at.is_none() {
            return Err(invalid(
                "DOMAIN_NOT_VERIFIED",
                "domain",
                format!(
                    "{} is not verified yet; publish its DNS records and POST /v1/domains/{}/verify",
                    row.domain, row.domain
                ),
            ));
        }
        let username = username.trim().to_ascii_lowercase();
        let ok = !username.is_empty()
            && username.len() <= 64
            && username
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            && !username.starts_with('.')
            && !username.ends_with('.');
        if !ok {
            return Err(invalid(
                "INVALID_USERNAME",
                "username",
                "The username must be 1 to 64 letters, digits, dots, hyphens or underscores.",
            ));
        }
        let password = random_base62(32);
        let guid = random_uuid();
        match self
            .store()
            .create_credential(
                &row.account_id,
                &row.domain,
                &guid,
                &username,
                &hash_secret(&password),
                now_ms(),
            )
            .await?
        {
            Some(row) => Ok(NewCredential { row, password }),
            None => Err(invalid(
                "USERNAME_TAKEN",
                "username",
                "The username has already been taken.",
            )),
        }
    }

    pub async fn list_credentials(
        &self,
        principal: &Principal,
        domain: &str,
    ) -> Result<Vec<CredentialRow>, ServiceError> {
        let row = self.own_domain(principal, domain).await?;
        Ok(self
            .store()
            .list_credentials(&row.account_id, &row.domain)
            .await?)
    }

    pub async fn delete_credential(
        &self,
        principal: &Principal,
        domain: &str,
        guid: &str,
    ) -> Result<(), ServiceError> {
        let row = self.own_domain(principal, domain).await?;
        if !self
            .store()
            .delete_credential(&row.account_id, &row.domain, guid)
            .await?
        {
            return Err(ServiceError::NotFound { what: "credential" });
        }
        Ok(())
    }

    /// Whether `domain` is the default domain or a verified custom domain (of anyone).
    pub async fn is_hosted_domain(&self, domain: &str) -> Result<bool, ServiceError> {
        let d = domain.trim().to_ascii_lowercase();
        if d == self.config().default_domain {
            return Ok(true);
        }
        Ok(self.store().verified_domain(&d).await?.is_some())
    }
}
