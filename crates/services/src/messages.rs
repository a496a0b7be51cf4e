//! Reading and organising messages: every front end that shows mail (HTTP now, IMAP and
//! POP3 later) goes through these, so access and the meaning of "read" or "deleted" are
//! decided once.

use std::time::Duration;

use mailroom_core::extract;
use mailroom_core::ids::{IdKind, is_well_formed};
use mailroom_core::time::rfc3339;
use mailroom_store::{MessageQuery, MessageRow, STANDARD_MAILBOXES};
use serde::Serialize;

use crate::revocation::RECHECK_INTERVAL;
use crate::{Credential, Principal, ServiceError, Services};

/// The longest `wait=` a list request may hold.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

fn message_not_found() -> ServiceError {
    ServiceError::NotFound { what: "message" }
}

/// An address as shown in JSON.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AddressView {
    pub name: Option<String>,
    pub address: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AttachmentView {
    /// `att_<n>`: its position among the message's attachments.
    pub id: String,
    pub filename: Option<String>,
    pub content_type: String,
    pub size: usize,
    pub inline: bool,
    pub content_id: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HeaderView {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Extracted {
    pub codes: Vec<String>,
    pub links: Vec<String>,
    /// Whether the message that carries them passed DMARC: a one-time code from a message
    /// that did not may be a forgery, whatever its From says.
    pub authenticated: bool,
}

/// A message in full, parsed.
#[derive(Debug, Clone, Serialize)]
pub struct MessageView {
    pub id: String,
    pub inbox_id: String,
    pub thread_id: String,
    pub mailbox: String,
    pub from: Option<AddressView>,
    pub to: Vec<AddressView>,
    pub cc: Vec<AddressView>,
    pub reply_to: Vec<AddressView>,
    pub subject: Option<String>,
    pub date: Option<String>,
    pub received_at: String,
    pub message_id: Option<String>,
    pub in_reply_to: Vec<String>,
    pub references: Vec<String>,
    pub text: Option<String>,
    pub html: Option<String>,
    pub attachments: Vec<AttachmentView>,
    pub headers: Vec<HeaderView>,
    pub labels: Vec<String>,
    pub read: bool,
    pub size: i64,
    /// SPF/DKIM/DMARC verdicts, when the message was checked.
    pub authentication: Option<serde_json::Value>,
    pub extracted: Extracted,
    /// For a message sent from here: where each recipient stands (`delivered`, `queued`,
    /// `deferred`, `bounced`, `removed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery: Option<Vec<DeliveryView>>,
}

/// The delivery status of one recipient of a sent message.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryView {
    pub recipient: String,
    pub status: String,
    pub attempts: i64,
    /// The last reply of the recipient's server, or what went wrong before there was one.
    pub last_response: Option<String>,
    /// When the next attempt is due (queued and deferred recipients).
    pub next_attempt_at: Option<String>,
    pub updated_at: String,
}

/// A change to a message (`PATCH`).
#[derive(Debug, Clone, Default)]
pub struct MessagePatch {
    pub read: Option<bool>,
    pub add_labels: Vec<String>,
    pub remove_labels: Vec<String>,
    pub mailbox: Option<String>,
}

/// What `DELETE` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    MovedToTrash,
    Removed,
}

/// Filters of `GET …/messages` (see `MessageQuery`), with `after` as a message id.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub query: MessageQuery,
    pub after: Option<String>,
    pub wait: Option<Wait>,
}

/// A long poll's wait: how long at most, and the secret the request presented, which the
/// waiting poll asks again every second (`Services::still_reads_inbox`), so a revoked
/// credential ends it within 2 s.
#[derive(Debug, Clone)]
pub struct Wait {
    pub duration: Duration,
    pub credential: Credential,
}

fn addr_list(a: Option<&mail_parser::Address<'_>>) -> Vec<AddressView> {
    a.map(|a| {
        a.iter()
            .map(|x| AddressView {
                name: x.name.as_deref().map(str::to_owned),
                address: x.address.as_deref().map(str::to_owned),
            })
            .collect()
    })
    .unwrap_or_default()
}

fn text_list(v: &mail_parser::HeaderValue<'_>) -> Vec<String> {
    v.as_text_list()
        .map(|l| l.iter().map(|s| s.to_string()).collect())
        .or_else(|| v.as_text().map(|s| vec![s.to_owned()]))
        .unwrap_or_default()
}

/// Validates a label: 1–64 printable characters without spaces.
fn check_label(label: &str) -> Result<(), ServiceError> {
    if label.is_empty()
        || label.len() > 64
        || !label.chars().all(|c| {
            c.is_ascii_graphic() || (!c.is_ascii() && !c.is_control() && !c.is_whitespace())
        })
    {
        return Err(ServiceError::Invalid {
            code: "INVALID_LABEL",
            field: "labels",
            message: format!("label {label:?} must be 1 to 64 characters without spaces"),
        });
    }
    Ok(())
}

fn check_mailbox(name: &str) -> Result<&'static str, ServiceError> {
    STANDARD_MAILBOXES
        .iter()
        .map(|(n, _)| *n)
        .find(|n| n.eq_ignore_ascii_case(name))
        .ok_or_else(|| ServiceError::Invalid {
            code: "INVALID_MAILBOX",
            field: "mailbox",
            message: format!(
                "mailbox {name:?} does not exist; use one of {}",
                STANDARD_MAILBOXES
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
}

impl Services {
    async fn message_row(
        &self,
        principal: &Principal,
        inbox_id: &str,
        message_id: &str,
    ) -> Result<MessageRow, ServiceError> {
        self.inbox_of(principal, inbox_id).await?;
        if !is_well_formed(IdKind::Message, message_id) {
            return Err(message_not_found());
        }
        self.store()
            .get_message(inbox_id, message_id)
            .await?
            .ok_or_else(message_not_found)
    }

    /// `GET …/messages`: newest first. With `wait`, an empty answer is held until a matching
    /// message arrives or the time is up.
    pub async fn list_messages(
        &self,
        principal: &Principal,
        inbox_id: &str,
        filter: &ListFilter,
    ) -> Result<(Vec<MessageRow>, u64), ServiceError> {
        self.get_inbox(principal, inbox_id).await?;
        let mut query = filter.query.clone();
        if let Some(mb) = &query.mailbox {
            query.mailbox = Some(check_mailbox(mb)?.to_owned());
        }
        if let Some(after) = &filter.after {
            let seq = if is_well_formed(IdKind::Message, after) {
                self.store().message_seq(inbox_id, after).await?
            } else {
                None
            };
            query.after_seq = Some(seq.ok_or(ServiceError::Invalid {
                code: "INVALID_AFTER",
                field: "after",
                message: "after must be the id of a message of this inbox".into(),
            })?);
        }
        let Some(wait) = &filter.wait else {
            return Ok(self.store().list_messages(inbox_id, &query).await?);
        };
        self.wait_for_messages(principal, inbox_id, &query, wait)
            .await
    }

    /// A long poll: looks at the inbox when it changes (and every poll interval), and asks
    /// every [`RECHECK_INTERVAL`] whether the credential still reads it; a revoked one
    /// ends the wait with the error a new request would get.
    async fn wait_for_messages(
        &self,
        principal: &Principal,
        inbox_id: &str,
        query: &MessageQuery,
        wait: &Wait,
    ) -> Result<(Vec<MessageRow>, u64), ServiceError> {
        enum Woke {
            Look,
            Recheck,
            Stop,
        }
        let deadline = tokio::time::Instant::now() + wait.duration.min(MAX_WAIT);
        let mut recheck_at = tokio::time::Instant::now() + RECHECK_INTERVAL;
        // Subscribed before the first look, so that a change between the look and the wait
        // is not missed.
        let mut signal = self.inbox_signal(inbox_id);
        let mut slot = None;
        loop {
            signal.mark_seen();
            self.note_waiter_poll("long_poll");
            let (rows, total) = self.store().list_messages(inbox_id, query).await?;
            if !rows.is_empty() {
                return Ok((rows, total));
            }
            // Only a poll that waits holds a place in the key's and the account's budget.
            if slot.is_none() {
                slot = Some(self.http_wait_slot(principal).await?);
            }
            // Wake on a change of this inbox in this process, and every poll interval for
            // mail that another process (sharing PostgreSQL) stored.
            let tick = tokio::time::Instant::now() + self.poll_interval();
            loop {
                let woke = tokio::select! {
                    _ = signal.changed() => Woke::Look,
                    _ = tokio::time::sleep_until(deadline.min(tick)) => Woke::Look,
                    _ = tokio::time::sleep_until(recheck_at) => Woke::Recheck,
                    _ = self.stopping() => Woke::Stop,
                };
                match woke {
                    Woke::Look => break,
                    Woke::Stop => return Ok((rows, total)),
                    Woke::Recheck => {
                        recheck_at = tokio::time::Instant::now() + RECHECK_INTERVAL;
                        self.still_reads_inbox(
                            &wait.credential,
                            principal,
                            inbox_id,
                            slot.as_ref(),
                        )
                        .await?;
                    }
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok((rows, total));
            }
        }
    }

    /// The raw bytes of a message, exactly as received.
    pub async fn message_raw(
        &self,
        principal: &Principal,
        inbox_id: &str,
        message_id: &str,
    ) -> Result<(MessageRow, Vec<u8>), ServiceError> {
        principal.require_scope("api:read")?;
        let row = self.message_row(principal, inbox_id, message_id).await?;
        let raw = self
            .store()
            .get_blob(&row.blob_hash)
            .await?
            .ok_or_else(|| {
                ServiceError::Store(mailroom_store::StoreError::Corrupt(format!(
                    "blob of {message_id} missing"
                )))
            })?;
        Ok((row, raw))
    }

    /// A message parsed for reading.
    pub async fn message_view(
        &self,
        principal: &Principal,
        inbox_id: &str,
        message_id: &str,
    ) -> Result<MessageView, ServiceError> {
        let (row, raw) = self.message_raw(principal, inbox_id, message_id).await?;
        let mut view = view_of(&row, &raw);
        let delivery = self.store().delivery_status(&row.id).await?;
        if !delivery.is_empty() {
            view.delivery = Some(
                delivery
                    .into_iter()
                    .map(|d| DeliveryView {
                        recipient: d.recipient,
                        status: d.status,
                        attempts: d.attempts,
                        last_response: d.last_response,
                        next_attempt_at: d.next_attempt_at.map(rfc3339),
                        updated_at: rfc3339(d.updated_at),
                    })
                    .collect(),
            );
        }
        Ok(view)
    }

    /// One attachment, decoded: (filename, content type, bytes).
    pub async fn attachment(
        &self,
        principal: &Principal,
        inbox_id: &str,
        message_id: &str,
        attachment_id: &str,
    ) -> Result<(Option<String>, String, Vec<u8>), ServiceError> {
        let (_, raw) = self.message_raw(principal, inbox_id, message_id).await?;
        let not_found = || ServiceError::NotFound { what: "attachment" };
        let index: usize = attachment_id
            .strip_prefix("att_")
            .and_then(|n| n.parse().ok())
            .ok_or_else(not_found)?;
        use mail_parser::MimeHeaders;
        let msg = mail_parser::MessageParser::default()
            .parse(&raw)
            .ok_or_else(not_found)?;
        let part = msg.attachments().nth(index).ok_or_else(not_found)?;
        Ok((
            part.attachment_name().map(str::to_owned),
            content_type_of(part),
            part.contents().to_vec(),
        ))
    }

    /// `PATCH …/messages/{mid}`.
    pub async fn update_message(
        &self,
        principal: &Principal,
        inbox_id: &str,
        message_id: &str,
        patch: &MessagePatch,
    ) -> Result<MessageRow, ServiceError> {
        principal.require_scope("api:write")?;
        let row = self.message_row(principal, inbox_id, message_id).await?;
        for l in patch.add_labels.iter().chain(&patch.remove_labels) {
            check_label(l)?;
        }
        let mailbox = patch.mailbox.as_deref().map(check_mailbox).transpose()?;
        let mut flags = row.flags.clone();
        match patch.read {
            Some(true) if !row.is_read() => flags.push("\\Seen".into()),
            Some(false) => flags.retain(|f| !f.eq_ignore_ascii_case("\\Seen")),
            _ => {}
        }
        let mut labels = row.labels.clone();
        for l in &patch.add_labels {
            if !labels.contains(l) {
                labels.push(l.clone());
            }
        }
        labels.retain(|l| !patch.remove_labels.contains(l));
        self.store()
            .update_message(inbox_id, message_id, &flags, &labels, mailbox)
            .await?;
        // IMAP sessions of this inbox see the change at once.
        self.inbox_changed(inbox_id);
        self.message_row(principal, inbox_id, message_id).await
    }

    /// `DELETE …/messages/{mid}`: to Trash; from Trash, for good.
    pub async fn delete_message(
        &self,
        principal: &Principal,
        inbox_id: &str,
        message_id: &str,
    ) -> Result<Deleted, ServiceError> {
        principal.require_scope("api:write")?;
        let row = self.message_row(principal, inbox_id, message_id).await?;
        let deleted = if row.mailbox == "Trash" {
            self.store().delete_message(inbox_id, message_id).await?;
            Deleted::Removed
        } else {
            self.store()
                .update_message(inbox_id, message_id, &row.flags, &row.labels, Some("Trash"))
                .await?;
            Deleted::MovedToTrash
        };
        self.inbox_changed(inbox_id);
        Ok(deleted)
    }

    /// Threads of an inbox: (thread id, messages, newest message row).
    pub async fn list_threads(
        &self,
        principal: &Principal,
        inbox_id: &str,
        limit: u32,
        offset: u64,
    ) -> Result<(Vec<(String, i64)>, u64), ServiceError> {
        self.get_inbox(principal, inbox_id).await?;
        let (threads, total) = self.store().list_threads(inbox_id, limit, offset).await?;
        Ok((threads.into_iter().map(|(t, n, _)| (t, n)).collect(), total))
    }

    /// The messages of a thread, oldest first.
    pub async fn thread_messages(
        &self,
        principal: &Principal,
        inbox_id: &str,
        thread_id: &str,
    ) -> Result<Vec<MessageRow>, ServiceError> {
        self.get_inbox(principal, inbox_id).await?;
        if !is_well_formed(IdKind::Thread, thread_id) {
            return Err(ServiceError::NotFound { what: "thread" });
        }
        let query = MessageQuery {
            thread_id: Some(thread_id.to_owned()),
            limit: 500,
            ascending: true,
            ..MessageQuery::default()
        };
        let (rows, _) = self.store().list_messages(inbox_id, &query).await?;
        if rows.is_empty() {
            return Err(ServiceError::NotFound { what: "thread" });
        }
        Ok(rows)
    }
}

fn content_type_of(part: &mail_parser::MessagePart<'_>) -> String {
    use mail_parser::MimeHeaders;
    part.content_type()
        .map(|ct| match &ct.c_subtype {
            Some(sub) => format!("{}/{}", ct.c_type, sub),
            None => ct.c_type.to_string(),
        })
        .unwrap_or_else(|| "application/octet-stream".to_owned())
        .to_ascii_lowercase()
}

/// Parses a stored message for reading. Anything unparseable gives empty fields, never an
/// error: the raw message is always there.
pub fn view_of(row: &MessageRow, raw: &[u8]) -> MessageView {
    use mail_parser::MimeHeaders;
    let parsed = mail_parser::MessageParser::default().parse(raw);
    let (mut view_from, mut to, mut cc, mut reply_to) = (None, vec![], vec![], vec![]);
    let (mut date, mut in_reply_to, mut references) = (None, vec![], vec![]);
    let (mut text, mut html, mut attachments, mut headers) = (None, None, vec![], vec![]);
    if let Some(m) = &parsed {
        view_from = addr_list(m.from()).into_iter().next();
        to = addr_list(m.to());
        cc = addr_list(m.cc());
        reply_to = addr_list(m.reply_to());
        date = m.date().map(|d| d.to_rfc3339());
        in_reply_to = text_list(m.in_reply_to());
        references = text_list(m.references());
        text = m.body_text(0).map(|t| t.into_owned());
        html = m.body_html(0).map(|t| t.into_owned());
        attachments = m
            .attachments()
            .enumerate()
            .map(|(i, p)| AttachmentView {
                id: format!("att_{i}"),
                filename: p.attachment_name().map(str::to_owned),
                content_type: content_type_of(p),
                size: p.contents().len(),
                inline: p
                    .content_disposition()
                    .is_some_and(|d| d.c_type.eq_ignore_ascii_case("inline")),
                content_id: p.content_id().map(str::to_owned),
            })
            .collect();
        headers = m
            .headers_raw()
            .map(|(name, value)| HeaderView {
                name: name.to_owned(),
                value: value.trim().to_owned(),
            })
            .collect();
    }
    let subject = parsed
        .as_ref()
        .and_then(|m| m.subject().map(str::to_owned))
        .or_else(|| row.subject.clone());
    let authentication: Option<serde_json::Value> = row
        .auth_results
        .as_deref()
        .and_then(|a| serde_json::from_str(a).ok());
    let mut extracted = Extracted {
        codes: extract::codes(
            subject.as_deref().unwrap_or(""),
            text.as_deref().unwrap_or(""),
        ),
        links: extract::links(text.as_deref().unwrap_or(""), html.as_deref().unwrap_or("")),
        authenticated: false,
    };
    extracted.authenticated = authentication
        .as_ref()
        .is_some_and(|a| a["dmarc"] == "pass");
    MessageView {
        id: row.id.clone(),
        inbox_id: row.inbox_id.clone(),
        thread_id: row.thread_id.clone(),
        mailbox: row.mailbox.clone(),
        from: view_from,
        to,
        cc,
        reply_to,
        subject,
        date,
        received_at: rfc3339(row.internal_date),
        message_id: row.message_id.clone(),
        in_reply_to,
        references,
        text,
        html,
        attachments,
        headers,
        labels: row.labels.clone(),
        read: row.is_read(),
        size: row.size,
        authentication,
        extracted,
        delivery: None,
    }
}
