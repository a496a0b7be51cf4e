//! Sending over HTTP: a JSON request becomes a MIME message (`mail-builder`), then goes the
//! same way as SMTP submission (`Services::submit`): the From rule, the tier, the quota, the
//! delivery and the Sent copy are decided there, once.

use mailroom_core::secret::random_base62;
use mailroom_store::Recipient;

use crate::submission::{Destination, Sender};
use crate::{Principal, ServiceError, Services};

/// At most this many recipients (to + cc + bcc) per message.
pub const MAX_RECIPIENTS: usize = 100;

/// Headers a caller may not set: the ones Mailroom writes, or that change who receives.
const RESERVED_HEADERS: &[&str] = &[
    "from",
    "to",
    "cc",
    "bcc",
    "sender",
    "subject",
    "date",
    "message-id",
    "reply-to",
    "in-reply-to",
    "references",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "content-disposition",
    "received",
    "return-path",
    "dkim-signature",
    "authentication-results",
];

#[derive(Debug, Clone, Default)]
pub struct Attachment {
    pub filename: String,
    pub content_type: String,
    pub content: Vec<u8>,
}

/// A message to send from an inbox.
#[derive(Debug, Clone, Default)]
pub struct SendRequest {
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub bcc: Vec<String>,
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
    pub attachments: Vec<Attachment>,
    pub reply_to: Option<String>,
    pub headers: Vec<(String, String)>,
    /// Threading headers (replies): the Message-ID answered, and the chain before it.
    pub in_reply_to: Option<String>,
    pub references: Vec<String>,
}

/// What kind of answer to a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Reply,
    ReplyAll,
    Forward,
}

/// What an answer adds to the caller's text.
#[derive(Debug, Clone, Default)]
pub struct AnswerRequest {
    /// For a forward: the recipients. For replies: extra recipients (optional).
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub bcc: Vec<String>,
    pub text: Option<String>,
    pub html: Option<String>,
    pub attachments: Vec<Attachment>,
    pub headers: Vec<(String, String)>,
}

/// What a send did, per recipient.
#[derive(Debug, Clone)]
pub struct SendOutcome {
    /// The sent copy's message id (in the sender's Sent mailbox).
    pub id: String,
    /// The `Message-ID` header.
    pub message_id: String,
    pub thread_id: String,
    pub recipients: Vec<(String, &'static str)>,
}

fn invalid(code: &'static str, field: &'static str, message: impl Into<String>) -> ServiceError {
    ServiceError::Invalid {
        code,
        field,
        message: message.into(),
    }
}

/// A plain `local@domain` address: what the API accepts for recipients (display names go
/// in no field, so nothing can smuggle header syntax).
pub fn check_address(field: &'static str, a: &str) -> Result<String, ServiceError> {
    let a = a.trim();
    let ok = a.len() <= 254
        && a.split_once('@').is_some_and(|(l, d)| {
            !l.is_empty()
                && !d.is_empty()
                && d.contains('.') | (d == "localhost")
                && !a.chars().any(|c| {
                    c.is_control()
                        || c.is_whitespace()
                        || matches!(c, '<' | '>' | ',' | ';' | '"' | '(' | ')' | '\\')
                })
                && a.matches('@').count() == 1
        });
    if !ok {
        return Err(invalid(
            "INVALID_ADDRESS",
            field,
            format!("{a:?} is not an email address like name@example.com"),
        ));
    }
    Ok(a.to_ascii_lowercase())
}

fn check_text(field: &'static str, s: &str, max: usize) -> Result<(), ServiceError> {
    if s.chars()
        .any(|c| c == '\r' || c == '\n' || (c.is_control() && c != '\t'))
    {
        return Err(invalid(
            "INVALID_HEADER_VALUE",
            field,
            format!("{field} must be one line without control characters"),
        ));
    }
    if s.len() > max {
        return Err(invalid(
            "INVALID_HEADER_VALUE",
            field,
            format!("{field} is longer than {max} bytes"),
        ));
    }
    Ok(())
}

impl Services {
    /// `POST /v1/inboxes/{id}/send`.
    pub async fn send_from_inbox(
        &self,
        principal: &Principal,
        inbox_id: &str,
        req: &SendRequest,
    ) -> Result<SendOutcome, ServiceError> {
        principal.require_scope("api:write")?;
        let inbox = self.inbox_of(principal, inbox_id).await?;
        let mut all = Vec::new();
        for (field, list) in [("to", &req.to), ("cc", &req.cc), ("bcc", &req.bcc)] {
            for a in list {
                all.push(check_address(field, a)?);
            }
        }
        if req.to.is_empty() && req.cc.is_empty() && req.bcc.is_empty() {
            return Err(invalid(
                "NO_RECIPIENTS",
                "to",
                "name at least one recipient in to, cc or bcc",
            ));
        }
        if all.len() > MAX_RECIPIENTS {
            return Err(invalid(
                "TOO_MANY_RECIPIENTS",
                "to",
                format!("at most {MAX_RECIPIENTS} recipients per message"),
            ));
        }
        check_text("subject", &req.subject, 998)?;
        if req.text.is_none() && req.html.is_none() {
            return Err(invalid("NO_BODY", "text", "give text, html or both"));
        }
        let reply_to = req
            .reply_to
            .as_deref()
            .map(|r| check_address("reply_to", r))
            .transpose()?;
        for (name, value) in &req.headers {
            let name_ok = !name.is_empty()
                && name.len() <= 76
                && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
            if !name_ok || RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                return Err(invalid(
                    "INVALID_HEADER",
                    "headers",
                    format!("header {name:?} cannot be set; use an X- header for your own data"),
                ));
            }
            check_text("headers", value, 998)?;
        }
        for a in &req.attachments {
            check_text("attachments", &a.filename, 255)?;
            check_text("attachments", &a.content_type, 255)?;
            if !a.content_type.contains('/') {
                return Err(invalid(
                    "INVALID_ATTACHMENT",
                    "attachments",
                    format!(
                        "content_type {:?} is not a MIME type like application/pdf",
                        a.content_type
                    ),
                ));
            }
        }
        // Hosted inboxes get the message at once; other addresses are queued.
        let mut destinations: Vec<Destination> = Vec::new();
        for a in &all {
            match self.submission_recipient(a).await? {
                Some(d) => {
                    if !destinations.iter().any(|x| x.address() == d.address()) {
                        destinations.push(d);
                    }
                }
                None => {
                    return Err(invalid(
                        "RECIPIENT_NOT_FOUND",
                        "to",
                        format!(
                            "{a}: no inbox has this address on this server, and it is not an address on another server that mail can be routed to"
                        ),
                    ));
                }
            }
        }
        let domain = inbox.domain.clone();
        let message_id = format!("{}@{domain}", random_base62(24));
        let mut builder = mail_builder::MessageBuilder::new()
            .from(inbox.email.as_str())
            .subject(req.subject.as_str())
            .message_id(message_id.as_str())
            .date(chrono::Utc::now().timestamp());
        if !req.to.is_empty() {
            builder = builder.to(all[..req.to.len()]
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>());
        }
        if !req.cc.is_empty() {
            builder = builder.cc(all[req.to.len()..req.to.len() + req.cc.len()]
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>());
        }
        if let Some(r) = &reply_to {
            builder = builder.reply_to(r.as_str());
        }
        if let Some(irt) = &req.in_reply_to {
            check_text("in_reply_to", irt, 998)?;
            builder = builder.in_reply_to(irt.as_str());
        }
        if !req.references.is_empty() {
            for r in &req.references {
                check_text("references", r, 998)?;
            }
            builder = builder.references(
                req.references
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>(),
            );
        }
        for (name, value) in &req.headers {
            builder = builder.header(
                name.as_str(),
                mail_builder::headers::raw::Raw::new(value.as_str()),
            );
        }
        // Bare CR or LF in a body would reach receivers as line ends some read and others
        // do not (the stuff of SMTP smuggling): every line ends in CRLF.
        if let Some(t) = &req.text {
            builder = builder.text_body(crlf_text(t));
        }
        if let Some(h) = &req.html {
            builder = builder.html_body(crlf_text(h));
        }
        for a in &req.attachments {
            builder = builder.attachment(
                a.content_type.as_str(),
                a.filename.as_str(),
                a.content.as_slice(),
            );
        }
        let raw = builder.write_to_vec().map_err(|e| {
            invalid(
                "INVALID_MESSAGE",
                "text",
                format!("the message could not be built: {e}"),
            )
        })?;
        // A forwarded message/rfc822 part is written as it was stored: normalise the whole.
        let raw = crlf_lines(&raw).into_owned();
        let sender = Sender {
            account_id: inbox.account_id.clone(),
            inbox: Some((inbox.id.clone(), inbox.email.clone())),
            domain: None,
        };
        let from_inbox = Recipient {
            account_id: inbox.account_id.clone(),
            inbox_id: inbox.id.clone(),
            // `submit` applies the account's storage limits to the Sent copy.
            storage: mailroom_store::StorageLimit::UNLIMITED,
        };
        let done = self
            .submit(&sender, &from_inbox, &inbox.email, &destinations, &raw)
            .await?;
        // The Sent copy is the last one stored.
        let sent_id = done.message_ids.last().cloned().unwrap_or_default();
        let thread_id = self
            .store()
            .get_message(&inbox.id, &sent_id)
            .await?
            .map(|m| m.thread_id)
            .unwrap_or_default();
        Ok(SendOutcome {
            id: sent_id,
            message_id,
            thread_id,
            recipients: destinations
                .iter()
                .map(|d| (d.address().to_owned(), d.initial_status()))
                .collect(),
        })
    }
}

/// `text` with every line end CRLF: a bare CR, a bare LF, and CRLF itself each become
/// one CRLF. Borrowed when it already is.
pub fn crlf_lines(text: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let bare = text.iter().enumerate().any(|(i, &b)| match b {
        b'\r' => text.get(i + 1) != Some(&b'\n'),
        b'\n' => i == 0 || text[i - 1] != b'\r',
        _ => false,
    });
    if !bare {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = Vec::with_capacity(text.len() + 16);
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                if text.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    std::borrow::Cow::Owned(out)
}

/// [`crlf_lines`] of a text (only ASCII is added, so it stays UTF-8).
fn crlf_text(text: &str) -> String {
    String::from_utf8_lossy(&crlf_lines(text.as_bytes())).into_owned()
}

/// "Re: subject" / "Fwd: subject", without stacking prefixes.
pub fn prefixed(prefix: &str, subject: &str) -> String {
    let trimmed = subject.trim();
    if trimmed
        .to_ascii_lowercase()
        .starts_with(&format!("{}:", prefix.to_ascii_lowercase()))
    {
        trimmed.to_owned()
    } else {
        format!("{prefix}: {trimmed}")
    }
}

impl Services {
    /// Reply, reply-all or forward to message `message_id` of the inbox.
    pub async fn answer(
        &self,
        principal: &Principal,
        inbox_id: &str,
        message_id: &str,
        kind: Answer,
        req: AnswerRequest,
    ) -> Result<SendOutcome, ServiceError> {
        principal.require_scope("api:write")?;
        let inbox = self.inbox_of(principal, inbox_id).await?;
        let view = self.message_view(principal, inbox_id, message_id).await?;
        let me = inbox.email.to_ascii_lowercase();
        let subject = view.subject.clone().unwrap_or_default();
        let mut send = SendRequest {
            cc: req.cc,
            bcc: req.bcc,
            text: req.text,
            html: req.html,
            attachments: req.attachments,
            headers: req.headers,
            ..SendRequest::default()
        };
        match kind {
            Answer::Reply | Answer::ReplyAll => {
                let target = view
                    .reply_to
                    .first()
                    .or(view.from.as_ref())
                    .and_then(|a| a.address.clone())
                    .ok_or_else(|| {
                        invalid(
                            "NO_REPLY_ADDRESS",
                            "message",
                            "the message has no From or Reply-To address to answer",
                        )
                    })?;
                let mut to = vec![target];
                if kind == Answer::ReplyAll {
                    for a in view.to.iter().chain(&view.cc) {
                        if let Some(addr) = &a.address {
                            let addr = addr.to_ascii_lowercase();
                            if addr != me && !to.iter().any(|t| t.eq_ignore_ascii_case(&addr)) {
                                to.push(addr);
                            }
                        }
                    }
                }
                to.extend(req.to);
                send.to = to;
                send.subject = prefixed("Re", &subject);
                if let Some(mid) = &view.message_id {
                    send.in_reply_to = Some(mid.clone());
                    send.references = view.references.clone();
                    send.references.push(mid.clone());
                }
            }
            Answer::Forward => {
                send.to = req.to;
                send.subject = prefixed("Fwd", &subject);
                let (_, raw) = self.message_raw(principal, inbox_id, message_id).await?;
                send.attachments.push(Attachment {
                    filename: "forwarded.eml".into(),
                    content_type: "message/rfc822".into(),
                    content: raw,
                });
                if send.text.is_none() && send.html.is_none() {
                    send.text = Some(format!("Forwarded message: {subject}"));
                }
            }
        }
        self.send_from_inbox(principal, inbox_id, &send).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_cannot_carry_header_syntax() {
        for bad in [
            "",
            "a",
            "a@",
            "@b.c",
            "a@b",
            "a b@c.d",
            "a@b.c\r\nBcc: x@y.z",
            "\"x\"@y.z",
            "<a@b.c>",
            "a@b.c, d@e.f",
            "a@@b.c",
        ] {
            assert!(check_address("to", bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            check_address("to", " Agent@Example.COM ").unwrap(),
            "agent@example.com"
        );
    }

    #[test]
    fn line_ends_become_crlf() {
        assert_eq!(&*crlf_lines(b"a\rb\nc"), b"a\r\nb\r\nc");
        assert_eq!(&*crlf_lines(b"\n\r\r\n\r"), b"\r\n\r\n\r\n\r\n");
        assert_eq!(&*crlf_lines(b"x\n\ny"), b"x\r\n\r\ny");
        assert!(matches!(
            crlf_lines(b"a\r\nb\r\n"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert!(matches!(crlf_lines(b""), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn prefixes_do_not_stack() {
        assert_eq!(prefixed("Re", "hello"), "Re: hello");
        assert_eq!(prefixed("Re", "RE: hello"), "RE: hello");
        assert_eq!(prefixed("Fwd", "Re: hello"), "Fwd: Re: hello");
    }

    #[test]
    fn header_values_are_one_line() {
        assert!(check_text("subject", "hi\r\nBcc: x@y.z", 998).is_err());
        assert!(check_text("subject", "hi\nx", 998).is_err());
        assert!(check_text("subject", "café ☕ tab\there", 998).is_ok());
    }
}
