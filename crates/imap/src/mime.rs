//! The MIME structure of a stored message as IMAP needs it: byte ranges of every entity's
//! header and body (for `BODY[1.2.MIME]` and friends), BODYSTRUCTURE, ENVELOPE, and the
//! decoding BINARY asks for.
//!
//! This is our own small parser rather than `mail-parser`'s, because IMAP sections are byte
//! ranges of the message exactly as stored, and the answers must quote the raw header
//! values (RFC 9051 §7.5.2: ENVELOPE strings are not decoded).

pub mod address;
pub mod transfer;

use std::ops::Range;

use crate::fmt::{nstring, string};

/// Deepest nesting of multiparts and attached messages that is parsed; deeper content is
/// treated as an opaque leaf, so a hostile message cannot make the parser recurse for ever.
const MAX_DEPTH: usize = 32;
/// Most entities parsed in one message.
const MAX_PARTS: usize = 2_000;

/// One MIME entity: its header and body as ranges of the message.
#[derive(Debug)]
pub struct Entity {
    /// The header including the blank line that ends it.
    pub header: Range<usize>,
    pub body: Range<usize>,
    pub mime_type: String,
    pub subtype: String,
    /// Content-Type parameters, names lowercased, values unquoted.
    pub params: Vec<(String, String)>,
    pub kind: Kind,
}

#[derive(Debug)]
pub enum Kind {
    Leaf,
    Multipart(Vec<Entity>),
    /// `message/rfc822`: the attached message.
    Message(Box<Entity>),
}

/// Splits `raw[range]` at the blank line: (header incl. blank line, body).
fn split_header(raw: &[u8], range: Range<usize>) -> (Range<usize>, Range<usize>) {
    let bytes = &raw[range.clone()];
    if bytes.starts_with(b"\r\n") {
        return (range.start..range.start + 2, range.start + 2..range.end);
    }
    if bytes.starts_with(b"\n") {
        return (range.start..range.start + 1, range.start + 1..range.end);
    }
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\n' {
            if bytes[i + 1..].starts_with(b"\r\n") {
                let end = range.start + i + 3;
                return (range.start..end, end..range.end);
            }
            if bytes[i + 1..].starts_with(b"\n") {
                let end = range.start + i + 2;
                return (range.start..end, end..range.end);
            }
        }
        i += 1;
    }
    // No body at all: everything is header.
    (range.clone(), range.end..range.end)
}

/// The header block of a message (up to and including the blank line).
pub fn parse_header_only(raw: &[u8]) -> Range<usize> {
    split_header(raw, 0..raw.len()).0
}

/// The header fields of a header block: (name, raw unfolded value).
pub fn header_fields(header: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut fields: Vec<(String, Vec<u8>)> = Vec::new();
    for line in header.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            if let Some((_, v)) = fields.last_mut() {
                v.extend_from_slice(line);
            }
            continue;
        }
        if let Some(colon) = line.iter().position(|&b| b == b':') {
            let name = String::from_utf8_lossy(&line[..colon]).trim().to_owned();
            let value = trim(&line[colon + 1..]).to_vec();
            fields.push((name, value));
        }
    }
    fields
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end.max(start)]
}

/// The first value of a header field.
pub fn field<'a>(fields: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    fields
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

/// `type/subtype; a=b; c="d"` → (type, subtype, params), lowercased type names.
fn parse_content_type(value: &[u8]) -> (String, String, Vec<(String, String)>) {
    let text = String::from_utf8_lossy(value);
    let mut pieces = split_params(&text);
    let first = pieces.remove(0);
    let (t, s) = first.split_once('/').unwrap_or((first.as_str(), ""));
    let params = pieces
        .iter()
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((k.trim().to_ascii_lowercase(), unquote(v.trim())))
        })
        .collect();
    (
        t.trim().to_ascii_lowercase(),
        s.trim().to_ascii_lowercase(),
        params,
    )
}

/// Splits at `;` outside quotes.
fn split_params(text: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    let mut escaped = false;
    for c in text.chars() {
        if escaped {
            escaped = false;
        } else if c == '\\' && quoted {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == ';' && !quoted {
            out.push(String::new());
            continue;
        }
        if let Some(last) = out.last_mut() {
            last.push(c);
        }
    }
    let single = out.len() == 1;
    out.retain(|p| !p.trim().is_empty() || single);
    if out.is_empty() {
        out.push(String::new());
    }
    out
}

fn unquote(v: &str) -> String {
    match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut escaped = false;
            for c in inner.chars() {
                if c == '\\' && !escaped {
                    escaped = true;
                    continue;
                }
                escaped = false;
                out.push(c);
            }
            out
        }
        None => v.to_owned(),
    }
}

/// Parses the entity in `raw[range]`.
pub fn parse(raw: &[u8]) -> Entity {
    let mut budget = MAX_PARTS;
    parse_entity(raw, 0..raw.len(), false, 0, &mut budget)
}

fn parse_entity(
    raw: &[u8],
    range: Range<usize>,
    digest: bool,
    depth: usize,
    budget: &mut usize,
) -> Entity {
    *budget = budget.saturating_sub(1);
    let (header, body) = split_header(raw, range);
    let fields = header_fields(&raw[header.clone()]);
    let (mime_type, subtype, params) = match field(&fields, "Content-Type") {
        Some(v) if !trim(v).is_empty() => parse_content_type(v),
        _ if digest => ("message".into(), "rfc822".into(), Vec::new()),
        _ => (
            "text".into(),
            "plain".into(),
            vec![("charset".into(), "us-ascii".into())],
        ),
    };
    let deeper = depth < MAX_DEPTH && *budget > 0;
    let kind = if mime_type == "multipart" && deeper {
        let boundary = params
            .iter()
            .find(|(k, _)| k == "boundary")
            .map(|(_, v)| v.clone());
        match boundary {
            Some(b) if !b.is_empty() => {
                let children = split_multipart(raw, body.clone(), b.as_bytes())
                    .into_iter()
                    .map(|r| parse_entity(raw, r, subtype == "digest", depth + 1, budget))
                    .collect();
                Kind::Multipart(children)
            }
            _ => Kind::Multipart(Vec::new()),
        }
    } else if mime_type == "message" && (subtype == "rfc822" || subtype == "global") && deeper {
        Kind::Message(Box::new(parse_entity(
            raw,
            body.clone(),
            false,
            depth + 1,
            budget,
        )))
    } else {
        Kind::Leaf
    };
    Entity {
        header,
        body,
        mime_type,
        subtype,
        params,
        kind,
    }
}

/// The ranges of the body parts of a multipart body (RFC 2046 §5.1.1): the line break
/// before a delimiter line belongs to the delimiter.
fn split_multipart(raw: &[u8], body: Range<usize>, boundary: &[u8]) -> Vec<Range<usize>> {
    let mut delimiter = b"--".to_vec();
    delimiter.extend_from_slice(boundary);
    let mut parts = Vec::new();
    let mut current: Option<usize> = None;
    let mut line_start = body.start;
    while line_start < body.end {
        let line_end = raw[line_start..body.end]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(body.end, |p| line_start + p + 1);
        let line = &raw[line_start..line_end];
        if line.starts_with(&delimiter) {
            let rest = trim(&line[delimiter.len()..]);
            let closing = rest.starts_with(b"--");
            if rest.is_empty() || closing {
                if let Some(start) = current.take() {
                    // Drop the CRLF (or LF) that precedes the delimiter.
                    let mut end = line_start;
                    if end > start && raw[end - 1] == b'\n' {
                        end -= 1;
                        if end > start && raw[end - 1] == b'\r' {
                            end -= 1;
                        }
                    }
                    parts.push(start..end.max(start));
                }
                if closing {
                    return parts;
                }
                current = Some(line_end);
            }
        }
        line_start = line_end;
    }
    // No closing delimiter: the last part runs to the end.
    if let Some(start) = current {
        parts.push(start..body.end);
    }
    parts
}

/// Where a section path leads.
pub enum Target<'a> {
    /// The whole message (no part numbers).
    Root(&'a Entity),
    Part(&'a Entity),
}

/// Follows part numbers (`1.2.3`) from the message (RFC 9051 §6.4.5).
pub fn resolve<'a>(root: &'a Entity, path: &[u32]) -> Option<Target<'a>> {
    let mut target = Target::Root(root);
    for &n in path {
        let n = n as usize;
        let message_of = |m: &'a Entity| -> Option<&'a Entity> {
            match &m.kind {
                Kind::Multipart(ch) => ch.get(n.checked_sub(1)?),
                _ if n == 1 => Some(m),
                _ => None,
            }
        };
        target = Target::Part(match target {
            Target::Root(m) => message_of(m)?,
            Target::Part(p) => match &p.kind {
                Kind::Multipart(ch) => ch.get(n.checked_sub(1)?)?,
                Kind::Message(inner) => message_of(inner)?,
                Kind::Leaf => return None,
            },
        });
    }
    Some(target)
}

/// Counts lines (CRLF or LF endings, plus an unterminated last line).
fn count_lines(b: &[u8]) -> usize {
    let n = b.iter().filter(|&&c| c == b'\n').count();
    if b.last().is_some_and(|&c| c != b'\n') {
        n + 1
    } else {
        n
    }
}

fn params_list(params: &[(String, String)]) -> String {
    if params.is_empty() {
        return "NIL".into();
    }
    let items: Vec<String> = params
        .iter()
        .map(|(k, v)| {
            format!(
                "{} {}",
                string(k.to_ascii_uppercase().as_bytes()),
                string(v.as_bytes())
            )
        })
        .collect();
    format!("({})", items.join(" "))
}

fn disposition(fields: &[(String, Vec<u8>)]) -> String {
    match field(fields, "Content-Disposition") {
        Some(v) if !trim(v).is_empty() => {
            let text = String::from_utf8_lossy(v);
            let mut pieces = split_params(&text);
            let kind = pieces.remove(0);
            let params: Vec<(String, String)> = pieces
                .iter()
                .filter_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    Some((k.trim().to_ascii_lowercase(), unquote(v.trim())))
                })
                .collect();
            format!(
                "({} {})",
                string(kind.trim().to_ascii_uppercase().as_bytes()),
                params_list(&params)
            )
        }
        _ => "NIL".into(),
    }
}

/// BODYSTRUCTURE (`extended`) or BODY of an entity.
pub fn body_structure(raw: &[u8], e: &Entity, extended: bool) -> String {
    let fields = header_fields(&raw[e.header.clone()]);
    let ext_tail = |out: &mut String| {
        out.push(' ');
        out.push_str(&disposition(&fields));
        out.push(' ');
        out.push_str(&nstring(field(&fields, "Content-Language")));
        out.push(' ');
        out.push_str(&nstring(field(&fields, "Content-Location")));
    };
    match &e.kind {
        Kind::Multipart(children) => {
            let mut out = String::from("(");
            if children.is_empty() {
                // RFC 9051 requires at least one part; describe an empty text part.
                out.push_str(
                    "(\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 0 0)",
                );
            }
            for c in children {
                out.push_str(&body_structure(raw, c, extended));
            }
            out.push(' ');
            out.push_str(&string(e.subtype.to_ascii_uppercase().as_bytes()));
            if extended {
                out.push(' ');
                out.push_str(&params_list(&e.params));
                ext_tail(&mut out);
            }
            out.push(')');
            out
        }
        _ => {
            let body = &raw[e.body.clone()];
            let encoding = field(&fields, "Content-Transfer-Encoding")
                .map(|v| String::from_utf8_lossy(trim(v)).to_ascii_uppercase())
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "7BIT".into());
            let mut out = format!(
                "({} {} {} {} {} {} {}",
                string(e.mime_type.to_ascii_uppercase().as_bytes()),
                string(e.subtype.to_ascii_uppercase().as_bytes()),
                params_list(&e.params),
                nstring(field(&fields, "Content-ID")),
                nstring(field(&fields, "Content-Description")),
                string(encoding.as_bytes()),
                body.len()
            );
            match &e.kind {
                Kind::Message(inner) => {
                    out.push(' ');
                    out.push_str(&envelope(&raw[inner.header.clone()]));
                    out.push(' ');
                    out.push_str(&body_structure(raw, inner, extended));
                    out.push_str(&format!(" {}", count_lines(body)));
                }
                _ if e.mime_type == "text" => out.push_str(&format!(" {}", count_lines(body))),
                _ => {}
            }
            if extended {
                out.push(' ');
                out.push_str(&nstring(field(&fields, "Content-MD5")));
                ext_tail(&mut out);
            }
            out.push(')');
            out
        }
    }
}

/// ENVELOPE of a message header block (RFC 3501 §7.4.2, RFC 9051 §7.5.2). Strings are the
/// raw header values (encoded words are the client's to decode).
pub fn envelope(header: &[u8]) -> String {
    let fields = header_fields(header);
    let list = |name: &str| address::parse(field(&fields, name).unwrap_or_default());
    let from = list("From");
    // "If the Sender or Reply-To lines are absent in the [RFC-2822] header, or are present
    // but empty, the server sets the corresponding member of the envelope to be the same
    // value as the from member" (RFC 3501 §7.4.2).
    let or_from = |l: Vec<address::Addr>| if l.is_empty() { from.clone() } else { l };
    let sender = or_from(list("Sender"));
    let reply_to = or_from(list("Reply-To"));
    format!(
        "({} {} {} {} {} {} {} {} {} {})",
        nstring(field(&fields, "Date")),
        nstring(field(&fields, "Subject")),
        addresses(&from),
        addresses(&sender),
        addresses(&reply_to),
        addresses(&list("To")),
        addresses(&list("Cc")),
        addresses(&list("Bcc")),
        nstring(field(&fields, "In-Reply-To")),
        nstring(field(&fields, "Message-ID")),
    )
}

/// An address list as IMAP writes it: `((name adl mailbox host) …)`, NIL when empty.
/// Groups are a start with NIL host and an end with NIL mailbox and host (RFC 3501
/// §7.4.2); so a mailbox must never have a NIL host, or the client would read it as a
/// group: an address without a domain (or local part) gets a placeholder instead, as
/// Dovecot writes it.
fn addresses(list: &[address::Addr]) -> String {
    use address::Addr;
    let mut out = String::new();
    for item in list {
        match item {
            Addr::Mailbox(m) => {
                let local = if m.local.is_empty() {
                    "MISSING_MAILBOX"
                } else {
                    m.local.as_str()
                };
                let host = m
                    .domain
                    .as_deref()
                    .filter(|d| !d.is_empty())
                    .unwrap_or("MISSING_DOMAIN");
                out.push_str(&format!(
                    "({} {} {} {})",
                    nstring(m.name.as_deref().map(str::as_bytes)),
                    nstring(m.route.as_deref().map(str::as_bytes)),
                    string(local.as_bytes()),
                    string(host.as_bytes()),
                ));
            }
            Addr::GroupStart(name) => {
                out.push_str(&format!("(NIL NIL {} NIL)", string(name.as_bytes())));
            }
            Addr::GroupEnd => out.push_str("(NIL NIL NIL NIL)"),
        }
    }
    if out.is_empty() {
        "NIL".into()
    } else {
        format!("({out})")
    }
}

/// The header lines of a header block whose names are (or, with `not`, are not) in
/// `names`, followed by the blank line (RFC 9051 §6.4.5 HEADER.FIELDS).
pub fn header_subset(header: &[u8], names: &[String], not: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut keep = false;
    for line in header.split_inclusive(|&b| b == b'\n') {
        let bare = line.strip_suffix(b"\n").unwrap_or(line);
        let bare = bare.strip_suffix(b"\r").unwrap_or(bare);
        if bare.is_empty() {
            continue;
        }
        if bare[0] != b' ' && bare[0] != b'\t' {
            let name = bare
                .iter()
                .position(|&b| b == b':')
                .map(|p| String::from_utf8_lossy(&bare[..p]).trim().to_owned())
                .unwrap_or_default();
            let listed = names.iter().any(|n| n.eq_ignore_ascii_case(&name));
            keep = listed != not;
        }
        if keep {
            out.extend_from_slice(bare);
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

pub use transfer::UnknownEncoding;

/// The body of a leaf entity with its Content-Transfer-Encoding undone (RFC 3516).
pub fn decode_body(raw: &[u8], e: &Entity) -> Result<Vec<u8>, UnknownEncoding> {
    let fields = header_fields(&raw[e.header.clone()]);
    let encoding = transfer::encoding_name(field(&fields, "Content-Transfer-Encoding"));
    transfer::decode(&encoding, &raw[e.body.clone()])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const MSG: &[u8] = b"From: \"Ann Example\" <ann@example.com>\r\nTo: bob@example.org, Team: c@d.e;\r\nSubject: hi\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\npreamble\r\n--XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhello\r\nworld\r\n--XX\r\nContent-Type: application/octet-stream; name=a.bin\r\nContent-Transfer-Encoding: base64\r\n\r\nAAEC/w==\r\n--XX--\r\nepilogue\r\n";

    #[test]
    fn sections_are_byte_ranges() {
        let root = parse(MSG);
        let Some(Target::Part(p1)) = resolve(&root, &[1]) else {
            panic!()
        };
        assert_eq!(&MSG[p1.body.clone()], b"hello\r\nworld");
        let Some(Target::Part(p2)) = resolve(&root, &[2]) else {
            panic!()
        };
        assert_eq!(decode_body(MSG, p2).unwrap(), vec![0, 1, 2, 255]);
        assert!(resolve(&root, &[3]).is_none());
        assert!(resolve(&root, &[1, 1]).is_none());
        let bs = body_structure(MSG, &root, true);
        assert!(
            bs.starts_with("((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"utf-8\") NIL NIL \"7BIT\" 12 2"),
            "{bs}"
        );
        assert!(bs.contains("\"MIXED\" (\"BOUNDARY\" \"XX\")"), "{bs}");
    }

    #[test]
    fn envelope_quotes_addresses_and_groups() {
        let root = parse(MSG);
        let env = envelope(&MSG[root.header.clone()]);
        assert!(
            env.contains("((\"Ann Example\" NIL \"ann\" \"example.com\"))"),
            "{env}"
        );
        assert!(env.contains("((NIL NIL \"bob\" \"example.org\")(NIL NIL \"Team\" NIL)(NIL NIL \"c\" \"d.e\")(NIL NIL NIL NIL))"), "{env}");
    }

    /// RFC 3501 §7.4.2: absent or empty Sender and Reply-To are the From list; absent
    /// fields are NIL; a mailbox never has a NIL host (that would open a group).
    #[test]
    fn envelope_defaults_and_edges() {
        let env = envelope(b"From: user@domain (Real Name)\r\nSender: \r\nCc: nobody\r\n\r\n");
        let from = "((\"Real Name\" NIL \"user\" \"domain\"))";
        assert_eq!(
            env,
            format!(
                "(NIL NIL {from} {from} {from} NIL ((NIL NIL \"nobody\" \"MISSING_DOMAIN\")) NIL NIL NIL)"
            )
        );
        let env = envelope(b"From: <@route:user@domain>\r\nReply-To: a@b\r\n\r\n");
        assert!(
            env.contains("((NIL \"@route\" \"user\" \"domain\")) ((NIL \"@route\" \"user\" \"domain\")) ((NIL NIL \"a\" \"b\"))"),
            "{env}"
        );
        assert_eq!(
            envelope(b"\r\n"),
            "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"
        );
    }

    #[test]
    fn header_fields_subset() {
        let root = parse(MSG);
        let h = header_subset(&MSG[root.header.clone()], &["subject".into()], false);
        assert_eq!(h, b"Subject: hi\r\n\r\n");
    }

    /// Mangled messages (bytes flipped, cut, duplicated) never panic the parser, and every
    /// range it gives is inside the message.
    #[test]
    fn mangled_messages_do_not_panic() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..3000 {
            let mut m = MSG.to_vec();
            for _ in 0..(next() % 8) {
                let i = (next() as usize) % m.len().max(1);
                match next() % 4 {
                    0 => m[i] = (next() % 256) as u8,
                    1 => m.truncate(i),
                    2 => {
                        let specials = b"\r\n-:;\"<>(=\n";
                        m.insert(i, specials[(next() as usize) % specials.len()]);
                    }
                    _ => {
                        let j = (i + (next() as usize) % 40).min(m.len());
                        let chunk = m[i..j].to_vec();
                        m.splice(i..i, chunk);
                    }
                }
                if m.is_empty() {
                    break;
                }
            }
            let root = parse(&m);
            let _ = body_structure(&m, &root, true);
            let _ = body_structure(&m, &root, false);
            let _ = envelope(&m[root.header.clone()]);
            for path in [&[][..], &[1], &[2], &[1, 1], &[2, 1, 3]] {
                if let Some(Target::Part(p)) = resolve(&root, path) {
                    assert!(p.header.end <= m.len() && p.body.end <= m.len());
                    let _ = decode_body(&m, p);
                    let _ = header_subset(&m[p.header.clone()], &["subject".into()], true);
                }
            }
        }
    }

    #[test]
    fn hostile_nesting_is_bounded() {
        let mut m = Vec::new();
        for i in 0..200 {
            m.extend_from_slice(
                format!("Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n")
                    .as_bytes(),
            );
        }
        let root = parse(&m);
        let _ = body_structure(&m, &root, true);
    }
}
