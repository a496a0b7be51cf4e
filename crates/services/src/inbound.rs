//! Receiving mail: which recipients this server accepts, and how an accepted message is
//! stamped, parsed for its facts, and stored.

use mailroom_core::time::now_ms;
use mailroom_store::{NewMessage, Recipient, StoredMessage};
use sha2::{Digest, Sha256};

use crate::dmarc::DmarcDisposition;
use crate::mailauth::AuthVerdict;
use crate::{ServiceError, Services};

/// The answer to `RCPT TO`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptVerdict {
    Accept(Recipient),
    /// The domain is ours but no inbox has this address.
    UnknownUser,
    /// The domain is not ours: this server never relays.
    RelayDenied,
    /// The inbox (or its account) holds all the storage its tier allows: a temporary
    /// failure (`452 4.2.2`), so the sender tries again later.
    MailboxFull,
}

/// What the SMTP session knows of a message's transport.
#[derive(Debug, Clone)]
pub struct InboundEnvelope {
    pub client_ip: std::net::IpAddr,
    pub helo: String,
    pub mail_from: String,
    pub recipients: Vec<Recipient>,
    pub tls: bool,
}

/// The facts the message list shows, read from the headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedFacts {
    pub message_id: Option<String>,
    pub references: Vec<String>,
    pub subject: Option<String>,
    pub from_addr: Option<String>,
}

/// Reads the facts of a message. Malformed or missing headers give `None`s, never an error:
/// every accepted message is stored raw and readable.
pub fn parse_facts(raw: &[u8]) -> ParsedFacts {
    let Some(msg) = mail_parser::MessageParser::default().parse_headers(raw) else {
        return ParsedFacts::default();
    };
    let mut references: Vec<String> = msg
        .references()
        .as_text_list()
        .map(|l| l.iter().map(|s| s.to_string()).collect())
        .or_else(|| msg.references().as_text().map(|s| vec![s.to_owned()]))
        .unwrap_or_default();
    if let Some(irt) = msg
        .in_reply_to()
        .as_text_list()
        .and_then(|l| l.last().map(|s| s.to_string()))
        .or_else(|| msg.in_reply_to().as_text().map(str::to_owned))
        && !references.contains(&irt)
    {
        references.push(irt);
    }
    ParsedFacts {
        message_id: msg.message_id().map(str::to_owned),
        references,
        subject: msg.subject().map(str::to_owned),
        from_addr: msg
            .from()
            .and_then(|a| a.first())
            .and_then(|a| a.address.as_deref())
            .map(str::to_ascii_lowercase),
    }
}

/// How long a recipient's storage use read at RCPT is taken as current.
const USAGE_FRESH: std::time::Duration = std::time::Duration::from_secs(1);

impl Services {
    /// Decides `RCPT TO:<address>` for inbound mail. `+tag` sub-addresses reach the inbox
    /// of the part before the `+`.
    pub async fn inbound_recipient(&self, address: &str) -> Result<RcptVerdict, ServiceError> {
        self.inbound_recipient_sized(address, 0).await
    }

    /// [`Services::inbound_recipient`] for a message announced as `declared_size` bytes
    /// (`MAIL FROM … SIZE=`; 0 when unknown): a mailbox it would not fit is
    /// [`RcptVerdict::MailboxFull`].
    pub async fn inbound_recipient_sized(
        &self,
        address: &str,
        declared_size: u64,
    ) -> Result<RcptVerdict, ServiceError> {
        let Some((local, domain)) = address.rsplit_once('@') else {
            return Ok(RcptVerdict::UnknownUser);
        };
        let domain = domain.to_ascii_lowercase();
        // The default domain, or a verified custom domain of some account.
        if domain != self.config().default_domain
            && self.store().verified_domain(&domain).await?.is_none()
        {
            return Ok(RcptVerdict::RelayDenied);
        }
        let local = local
            .split('+')
            .next()
            .unwrap_or(local)
            .to_ascii_lowercase();
        let email = format!("{local}@{domain}");
        let Some(usage) = self.usage_by_email(&email).await? else {
            return Ok(RcptVerdict::UnknownUser);
        };
        let report = self.report_of(usage);
        if report.over(declared_size.max(1)).is_some() {
            return Ok(RcptVerdict::MailboxFull);
        }
        Ok(RcptVerdict::Accept(Recipient {
            storage: self.storage_limit(report.tier),
            account_id: report.account_id,
            inbox_id: report.inbox_id,
        }))
    }

    /// The inbox with this address (lowercase, without `+tag`) and what it and its
    /// account hold, from memory when read less than [`USAGE_FRESH`] ago: a peer
    /// delivering a message per connection asks for the same few recipients again and
    /// again. The storage check at RCPT is an early answer only; the commit charges the
    /// message atomically and refuses it (452 at DATA) if it no longer fits.
    pub(crate) async fn usage_by_email(
        &self,
        email: &str,
    ) -> Result<Option<mailroom_store::StorageUsage>, ServiceError> {
        if let Some(r) = self.cache().recipient(email)
            && r.read_at.elapsed() < USAGE_FRESH
        {
            return Ok(Some(r.usage));
        }
        let ticket = self.cache().ticket();
        let Some(usage) = self.store().storage_usage_by_email(email).await? else {
            return Ok(None);
        };
        let r = crate::cache::Recipient {
            usage: usage.clone(),
            read_at: std::time::Instant::now(),
        };
        self.cache().put_recipient(ticket, email, &r);
        Ok(Some(usage))
    }

    /// Stores an accepted message for its recipients, with a `Received` header prepended,
    /// and returns once it is durable. When a recipient's storage would pass its limit,
    /// nothing is stored and the answer is the storage refusal (`STORAGE_QUOTA_EXCEEDED`):
    /// the sender tries the whole message again later, and `RCPT TO` then refuses only the
    /// full mailbox (docs/decisions.md).
    pub async fn receive(
        &self,
        envelope: &InboundEnvelope,
        data: &[u8],
    ) -> Result<Vec<StoredMessage>, ServiceError> {
        let now = now_ms();
        let received = format!(
            "Received: from {helo} ([{ip}])\r\n\tby {host} (Mailroom) with {proto};\r\n\t{date}\r\n",
            helo = sanitize_header_word(&envelope.helo),
            ip = envelope.client_ip,
            host = self.config().hostname,
            proto = if envelope.tls { "ESMTPS" } else { "ESMTP" },
            date = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(now)
                .unwrap_or_default()
                .to_rfc2822(),
        );
        let verdict = self.auth_verdict(envelope, data).await;
        let disposition = verdict
            .as_ref()
            .map_or(DmarcDisposition::None, |v| v.dmarc_disposition);
        if disposition == DmarcDisposition::Reject {
            return Err(dmarc_refusal(verdict.as_ref(), data));
        }
        let auth_header = verdict.as_ref().map(|v| v.header.as_str()).unwrap_or("");
        // RFC 8601 §5: results that claim to come from us, but came with the message, are
        // forgeries; only the one we add below may say so.
        let data = &*strip_auth_results_of(data, &self.config().hostname);
        let mut raw = Vec::with_capacity(auth_header.len() + received.len() + data.len());
        // Newest trace field on top: our Authentication-Results, then our Received.
        raw.extend_from_slice(auth_header.as_bytes());
        raw.extend_from_slice(received.as_bytes());
        raw.extend_from_slice(data);
        let facts = parse_facts(data);
        let hash = hex::encode(Sha256::digest(&raw));
        let size = raw.len() as u64;
        let stored = match self
            .store()
            .deliver(NewMessage {
                raw,
                hash,
                internal_date: now,
                recipients: envelope.recipients.clone(),
                // A failure under p=quarantine (or p=reject, when only quarantining).
                mailbox: if disposition == DmarcDisposition::Quarantine {
                    "Junk".into()
                } else {
                    "INBOX".into()
                },
                message_id: facts.message_id,
                references: facts.references,
                subject: facts.subject,
                from_addr: facts.from_addr,
                envelope_from: Some(envelope.mail_from.clone()),
                auth_results: verdict.as_ref().and_then(|v| serde_json::to_string(v).ok()),
                flags: Vec::new(),
                outbound: None,
            })
            .await
        {
            Ok(stored) => stored,
            Err(e) => {
                if let mailroom_store::StoreError::StorageFull { inbox_id, .. } = &e {
                    // The next RCPT for it reads the truth (and is refused there).
                    self.cache().forget_usage(inbox_id);
                }
                return Err(self.storage_error(e).await);
            }
        };
        for m in &stored {
            self.cache().add_usage(&m.inbox_id, size);
        }
        self.deliveries_signalled(stored.iter().map(|m| m.inbox_id.as_str()));
        Ok(stored)
    }
}

impl Services {
    /// SPF, DKIM and DMARC of an arriving message, with what its DMARC result does to it
    /// here; `None` when this process does not check (admin commands).
    async fn auth_verdict(&self, envelope: &InboundEnvelope, data: &[u8]) -> Option<AuthVerdict> {
        let checker = self.mail_auth()?;
        let mut verdict = checker
            .check(
                data,
                envelope.client_ip,
                &envelope.helo,
                &envelope.mail_from,
                &self.config().hostname,
            )
            .await;
        verdict.dmarc_disposition = crate::dmarc::disposition(
            verdict.dmarc,
            verdict.dmarc_policy,
            self.config().dmarc_enforcement,
        );
        Some(verdict)
    }
}

/// The refusal of a message that failed DMARC under `p=reject` (SMTP `550 5.7.1`).
fn dmarc_refusal(verdict: Option<&AuthVerdict>, data: &[u8]) -> ServiceError {
    let domain = verdict.map_or("", |v| v.dmarc_domain.as_str());
    let message = if domain.is_empty() || crate::origin::from_count(data) > 1 {
        "DMARC: the message has several From header fields, so no domain's DMARC policy can \
         vouch for its sender; refused"
            .to_owned()
    } else {
        format!(
            "DMARC: the message failed authentication for {domain}, whose DMARC policy \
             (p=reject) asks that such mail be refused"
        )
    };
    ServiceError::Forbidden {
        code: crate::dmarc::DMARC_REJECTED,
        message,
    }
}

/// `data` without its `Authentication-Results` header fields whose authserv-id is
/// `authserv_id` (ours). Fields of other servers, and the body, are left as they are.
pub fn strip_auth_results_of<'a>(data: &'a [u8], authserv_id: &str) -> std::borrow::Cow<'a, [u8]> {
    // Header fields with their continuation lines, up to the empty line.
    let mut fields: Vec<(usize, usize)> = Vec::new();
    let mut at = 0;
    let mut header_end = data.len();
    while at < data.len() {
        let end = data[at..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(data.len(), |i| at + i + 1);
        let line = &data[at..end];
        if line == b"\r\n" || line == b"\n" {
            header_end = at;
            break;
        }
        match (line.first(), fields.last_mut()) {
            (Some(b' ' | b'\t'), Some(last)) => last.1 = end,
            _ => fields.push((at, end)),
        }
        at = end;
    }
    let ours = |field: &[u8]| {
        let Some(colon) = field.iter().position(|&b| b == b':') else {
            return false;
        };
        if !field[..colon]
            .trim_ascii()
            .eq_ignore_ascii_case(b"Authentication-Results")
        {
            return false;
        }
        let value = &field[colon + 1..];
        let id_end = value.iter().position(|&b| b == b';').unwrap_or(value.len());
        value[..id_end]
            .trim_ascii()
            .eq_ignore_ascii_case(authserv_id.as_bytes())
    };
    if !fields.iter().any(|&(a, b)| ours(&data[a..b])) {
        return std::borrow::Cow::Borrowed(data);
    }
    let mut out = Vec::with_capacity(data.len());
    for &(a, b) in &fields {
        if !ours(&data[a..b]) {
            out.extend_from_slice(&data[a..b]);
        }
    }
    out.extend_from_slice(&data[header_end.min(data.len())..]);
    std::borrow::Cow::Owned(out)
}

/// A HELO name fit for a header: printable ASCII without spaces, at most 255 characters.
fn sanitize_header_word(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect();
    if cleaned.is_empty() {
        "unknown".to_owned()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_from_headers() {
        let raw = b"From: \"Alice\" <Alice@Example.com>\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\n\
            Message-ID: <m2@x>\r\nIn-Reply-To: <m1@x>\r\nReferences: <m0@x> <m1@x>\r\n\r\nbody";
        let f = parse_facts(raw);
        assert_eq!(f.message_id.as_deref(), Some("m2@x"));
        assert_eq!(f.subject.as_deref(), Some("café"));
        assert_eq!(f.from_addr.as_deref(), Some("alice@example.com"));
        assert_eq!(f.references, ["m0@x", "m1@x"]);
    }

    #[test]
    fn junk_gives_empty_facts() {
        for raw in [
            &b""[..],
            b"\xff\xfe\x00garbage",
            b"no headers at all",
            b"Subject",
        ] {
            let f = parse_facts(raw);
            assert!(f.message_id.is_none(), "{raw:?}");
        }
    }

    #[test]
    fn only_our_authentication_results_are_removed() {
        let m = b"Authentication-Results: mail.test;\r\n\tdkim=pass header.d=bank.example\r\n\
            Authentication-Results: other.example; spf=fail\r\n\
            authentication-results:   MAIL.TEST ; dmarc=pass\r\n\
            Subject: hi\r\n\r\nAuthentication-Results: mail.test; in the body\r\n";
        let out = strip_auth_results_of(m, "mail.test");
        assert_eq!(
            &*out,
            &b"Authentication-Results: other.example; spf=fail\r\nSubject: hi\r\n\r\n\
               Authentication-Results: mail.test; in the body\r\n"[..]
        );
        let clean = b"Subject: x\r\n\r\nbody";
        assert!(matches!(
            strip_auth_results_of(clean, "mail.test"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn helo_cannot_inject_headers() {
        assert_eq!(
            sanitize_header_word("evil\r\nX-Injected: 1"),
            "evilX-Injected:1"
        );
        assert_eq!(sanitize_header_word(""), "unknown");
    }
}
