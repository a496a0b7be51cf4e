//! Delivery status notifications (RFC 3464): the bounce a sender gets when a recipient
//! fails for good, as `multipart/report; report-type=delivery-status` with a human part,
//! the machine-readable status, and the original message's headers (RFC 6522).

/// One failed recipient.
#[derive(Debug, Clone)]
pub struct FailedRecipient {
    pub address: String,
    /// Enhanced status code (`5.1.1`).
    pub status: String,
    /// The remote server's reply, or why there was none.
    pub diagnostic: String,
    /// The host that answered, when one did.
    pub remote_mta: Option<String>,
}

/// Everything a DSN says.
#[derive(Debug, Clone)]
pub struct Report<'a> {
    /// This server's host name (`Reporting-MTA`, the `From:` domain).
    pub reporting_mta: &'a str,
    /// Who gets the DSN (the original envelope sender).
    pub to: &'a str,
    pub arrival_ms: i64,
    pub now_ms: i64,
    pub recipients: &'a [FailedRecipient],
    /// The original message; only its header section is returned.
    pub original: &'a [u8],
}

/// The enhanced status code in a reply (`550 5.1.1 …` → `5.1.1`), or one made from the
/// reply code's class.
pub fn status_of(reply: &str) -> String {
    let mut words = reply.split_whitespace();
    let code = words.next().unwrap_or("");
    if let Some(w) = words.next() {
        let parts: Vec<&str> = w.split('.').collect();
        if parts.len() == 3
            && matches!(parts[0], "2" | "4" | "5")
            && parts[1..]
                .iter()
                .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
        {
            return w.to_owned();
        }
    }
    match code.as_bytes().first() {
        Some(b'4') => "4.0.0".to_owned(),
        Some(b'2') => "2.0.0".to_owned(),
        _ => "5.0.0".to_owned(),
    }
}

/// The header section of a message (up to and without the blank line), at most 64 KiB.
fn header_section(message: &[u8]) -> &[u8] {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 2)
        .unwrap_or(message.len());
    &message[..end.min(64 * 1024)]
}

/// A header value without CR/LF, so nothing in a reply can add a header field.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

fn rfc2822(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc2822()
}

/// The complete DSN message, CRLF line ends.
pub fn build(report: &Report<'_>) -> Vec<u8> {
    let boundary = format!("mailroom-dsn-{}", mailroom_core::secret::random_base62(16));
    let host = one_line(report.reporting_mta);
    let date = rfc2822(report.now_ms);
    let mut human = String::from("This is the mail system at host ");
    human.push_str(&host);
    human.push_str(
        ".\r\n\r\nYour message could not be delivered to one or more recipients. \
         It has not been delivered to the recipients listed below, and no further \
         attempts will be made.\r\n\r\n",
    );
    for r in report.recipients {
        human.push_str(&format!(
            "<{}>: {}\r\n",
            one_line(&r.address),
            one_line(&r.diagnostic)
        ));
    }
    let mut status = format!(
        "Reporting-MTA: dns; {host}\r\nArrival-Date: {}\r\n",
        rfc2822(report.arrival_ms)
    );
    for r in report.recipients {
        status.push_str(&format!(
            "\r\nFinal-Recipient: rfc822; {}\r\nAction: failed\r\nStatus: {}\r\n",
            one_line(&r.address),
            one_line(&r.status)
        ));
        if let Some(mta) = &r.remote_mta {
            status.push_str(&format!("Remote-MTA: dns; {}\r\n", one_line(mta)));
        }
        status.push_str(&format!(
            "Diagnostic-Code: smtp; {}\r\nLast-Attempt-Date: {date}\r\n",
            one_line(&r.diagnostic)
        ));
    }
    let mut out = Vec::with_capacity(human.len() + status.len() + 4096);
    let message_id = format!("<dsn.{}@{host}>", mailroom_core::secret::random_base62(20));
    out.extend_from_slice(
        format!(
            "From: Mail Delivery System <MAILER-DAEMON@{host}>\r\n\
             To: <{}>\r\n\
             Subject: Undelivered Mail Returned to Sender\r\n\
             Date: {date}\r\n\
             Message-ID: {message_id}\r\n\
             Auto-Submitted: auto-replied\r\n\
             MIME-Version: 1.0\r\n\
             Content-Type: multipart/report; report-type=delivery-status;\r\n\
             \tboundary=\"{boundary}\"\r\n\
             \r\n\
             This is a MIME-encapsulated message.\r\n\
             \r\n\
             --{boundary}\r\n\
             Content-Description: Notification\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\
             \r\n\
             {human}\r\n\
             --{boundary}\r\n\
             Content-Description: Delivery report\r\n\
             Content-Type: message/delivery-status\r\n\
             \r\n\
             {status}\r\n\
             --{boundary}\r\n\
             Content-Description: Undelivered Message Headers\r\n\
             Content-Type: text/rfc822-headers\r\n\
             \r\n",
            one_line(report.to)
        )
        .as_bytes(),
    );
    out.extend_from_slice(header_section(report.original));
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes() {
        assert_eq!(status_of("550 5.1.1 no such user"), "5.1.1");
        assert_eq!(status_of("451 try later"), "4.0.0");
        assert_eq!(status_of("554 transaction failed"), "5.0.0");
        assert_eq!(status_of("5.1.2 the domain does not exist"), "5.0.0");
    }

    #[test]
    fn dsn_parses_as_a_report() {
        let original = b"From: a@x.test\r\nSubject: hi\r\nMessage-ID: <1@x>\r\n\r\nsecret body\r\n";
        let raw = build(&Report {
            reporting_mta: "mail.x.test",
            to: "a@x.test",
            arrival_ms: 0,
            now_ms: 1000,
            recipients: &[FailedRecipient {
                address: "b@y.test".into(),
                status: "5.1.1".into(),
                diagnostic: "550 5.1.1 no such user\r\nX-Evil: 1".into(),
                remote_mta: Some("mx.y.test".into()),
            }],
            original,
        });
        let text = String::from_utf8(raw.clone()).unwrap();
        assert!(text.contains("report-type=delivery-status"));
        assert!(text.contains("Final-Recipient: rfc822; b@y.test"));
        assert!(text.contains("Status: 5.1.1"));
        assert!(!text.contains("secret body"), "only headers are returned");
        assert!(
            !text.contains("\r\nX-Evil"),
            "a reply cannot add header fields"
        );
        let msg = mail_parser::MessageParser::default().parse(&raw).unwrap();
        assert_eq!(msg.subject(), Some("Undelivered Mail Returned to Sender"));
        assert_eq!(msg.parts.len(), 4, "root, notification, status, headers");
    }
}
