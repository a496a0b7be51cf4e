//! The headers that say who a message is from, and how often each may appear.
//!
//! RFC 5322 §3.6 allows exactly one `From` and at most one of `Sender`, `Reply-To`, `To`,
//! `Cc`, `Bcc`, `Message-ID`, `In-Reply-To`, `References`, `Subject` and `Date`. A message
//! with two `From` headers is the classic forgery: a checker reads one, a mail client shows
//! the other. So submission (SMTP and the send API) refuses such a message outright, naming
//! the header, before anything else looks at it.

use crate::ServiceError;

/// The headers that may appear at most once (`From` exactly once), with the name used in
/// the refusal.
const AT_MOST_ONCE: &[&str] = &[
    "From",
    "Sender",
    "Reply-To",
    "To",
    "Cc",
    "Bcc",
    "Message-ID",
    "In-Reply-To",
    "References",
    "Subject",
    "Date",
];

/// The error code of a refused header block (HTTP 422; SMTP `550 5.6.0`).
pub const DUPLICATE_HEADER: &str = "DUPLICATE_HEADER";
pub const MISSING_HEADER: &str = "MISSING_HEADER";

/// The names of the header fields of `message`, in order (the header block ends at the
/// first empty line; continuation lines belong to the field above).
fn field_names(message: &[u8]) -> impl Iterator<Item = &[u8]> {
    message
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .take_while(|line| !line.is_empty())
        .filter(|line| !matches!(line.first(), Some(b' ' | b'\t')))
        .filter_map(|line| {
            let colon = line.iter().position(|&b| b == b':')?;
            Some(trim(&line[..colon]))
        })
}

fn trim(name: &[u8]) -> &[u8] {
    let end = name
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    &name[..end]
}

/// How many `From` header fields `message` has (DMARC needs exactly one).
pub fn from_count(message: &[u8]) -> usize {
    field_names(message)
        .filter(|n| n.eq_ignore_ascii_case(b"From"))
        .count()
}

/// Refuses a message whose origin headers break RFC 5322 §3.6's counts.
pub fn check_header_counts(message: &[u8]) -> Result<(), ServiceError> {
    let mut counts = [0usize; AT_MOST_ONCE.len()];
    for name in field_names(message) {
        if let Some(i) = AT_MOST_ONCE
            .iter()
            .position(|h| h.as_bytes().eq_ignore_ascii_case(name))
        {
            counts[i] += 1;
        }
    }
    for (i, n) in counts.iter().enumerate() {
        let name = AT_MOST_ONCE[i];
        if *n > 1 {
            return Err(ServiceError::Invalid {
                code: DUPLICATE_HEADER,
                field: name,
                message: format!(
                    "the message has {n} {name} headers; RFC 5322 allows one (send one {name} header)"
                ),
            });
        }
    }
    if counts[0] == 0 {
        return Err(ServiceError::Invalid {
            code: MISSING_HEADER,
            field: "From",
            message: "the message has no From header; RFC 5322 requires one".to_owned(),
        });
    }
    Ok(())
}

/// Every address in the `From` and `Sender` headers (lowercase), with the header it is
/// in: all must be addresses the sender may send as.
pub fn origin_addresses(message: &[u8]) -> Vec<(&'static str, String)> {
    let Some(msg) = mail_parser::MessageParser::default().parse_headers(message) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (header, list) in [("From", msg.from()), ("Sender", msg.sender())] {
        for addr in list.into_iter().flat_map(|l| l.iter()) {
            if let Some(a) = addr.address.as_deref() {
                out.push((header, a.to_ascii_lowercase()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(m: &[u8]) -> Option<(&'static str, &'static str)> {
        match check_header_counts(m) {
            Ok(()) => None,
            Err(ServiceError::Invalid { code, field, .. }) => Some((code, field)),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn one_of_each_is_fine() {
        let m = b"From: a@x\r\nTo: b@y\r\nSubject: s\r\n\tcontinued: not a header\r\n\r\nFrom: in the body\r\n";
        assert_eq!(code(m), None);
    }

    #[test]
    fn two_froms_are_refused_whatever_their_case_or_spacing() {
        assert_eq!(
            code(b"From: evil@x\r\nfrom : me@y\r\n\r\nbody"),
            Some((DUPLICATE_HEADER, "From"))
        );
        assert_eq!(
            code(b"From: me@y\nSubject: a\nSUBJECT: b\n\nbody"),
            Some((DUPLICATE_HEADER, "Subject"))
        );
        assert_eq!(
            code(b"Sender: a@x\r\nFrom: me@y\r\nSender: b@x\r\n\r\n"),
            Some((DUPLICATE_HEADER, "Sender"))
        );
    }

    #[test]
    fn a_missing_from_is_refused() {
        assert_eq!(code(b"To: b@y\r\n\r\nbody"), Some((MISSING_HEADER, "From")));
    }

    #[test]
    fn every_origin_address_is_listed() {
        let m = b"From: A <A@x.example>, b@y.example\r\nSender: s@x.example\r\n\r\n";
        let all = origin_addresses(m);
        let got: Vec<(&str, &str)> = all.iter().map(|(h, a)| (*h, a.as_str())).collect();
        assert_eq!(
            got,
            [
                ("From", "a@x.example"),
                ("From", "b@y.example"),
                ("Sender", "s@x.example")
            ]
        );
    }
}
