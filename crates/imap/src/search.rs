//! SEARCH: which messages match a set of search keys (RFC 9051 §6.4.4).

use imap_codec::imap_types::search::SearchKey;
use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};

use std::cell::OnceCell;

use mailroom_core::time::now_ms;

use crate::mime;
use crate::mime::address::Addr;

/// What a key needs to know of a message.
pub struct Candidate<'a> {
    pub seq: u32,
    pub uid: u32,
    pub flags: &'a [String],
    pub size: i64,
    pub internal_date: i64,
    pub modseq: i64,
    /// The message, parsed once for the whole command, when a key needs it (see
    /// [`needs_content`]).
    pub content: Option<&'a Content<'a>>,
    /// The largest sequence number and uid of the mailbox (for `*`).
    pub max_seq: u32,
    pub max_uid: u32,
}

/// Whether a number is in a sequence set, `*` being `largest`.
pub fn in_set(set: &SequenceSet, n: u32, largest: u32) -> bool {
    let value = |v: &SeqOrUid| match v {
        SeqOrUid::Value(v) => v.get(),
        SeqOrUid::Asterisk => largest,
    };
    set.0.as_ref().iter().any(|s| match s {
        Sequence::Single(v) => value(v) == n,
        Sequence::Range(a, b) => {
            let (a, b) = (value(a), value(b));
            a.min(b) <= n && n <= a.max(b)
        }
    })
}

/// Whether any key needs the message's bytes (headers or body).
pub fn needs_content(keys: &[SearchKey<'_>]) -> bool {
    keys.iter().any(|k| match k {
        SearchKey::And(ks) => needs_content(ks.as_ref()),
        SearchKey::Not(k) => needs_content(std::slice::from_ref(k.as_ref())),
        SearchKey::Or(a, b) => {
            needs_content(std::slice::from_ref(a.as_ref()))
                || needs_content(std::slice::from_ref(b.as_ref()))
        }
        SearchKey::Bcc(_)
        | SearchKey::Body(_)
        | SearchKey::Cc(_)
        | SearchKey::From(_)
        | SearchKey::Header(..)
        | SearchKey::SentBefore(_)
        | SearchKey::SentOn(_)
        | SearchKey::SentSince(_)
        | SearchKey::Subject(_)
        | SearchKey::Text(_)
        | SearchKey::To(_) => true,
        _ => false,
    })
}

/// Whether any key needs the body (BODY, TEXT); the others need only the header.
pub fn needs_body(keys: &[SearchKey<'_>]) -> bool {
    keys.iter().any(|k| match k {
        SearchKey::And(ks) => needs_body(ks.as_ref()),
        SearchKey::Not(k) => needs_body(std::slice::from_ref(k.as_ref())),
        SearchKey::Or(a, b) => {
            needs_body(std::slice::from_ref(a.as_ref()))
                || needs_body(std::slice::from_ref(b.as_ref()))
        }
        SearchKey::Body(_) | SearchKey::Text(_) => true,
        _ => false,
    })
}

/// Whether a MODSEQ key is among the keys (the answer then carries the highest modseq).
pub fn uses_modseq(keys: &[SearchKey<'_>]) -> bool {
    keys.iter().any(|k| match k {
        SearchKey::And(ks) => uses_modseq(ks.as_ref()),
        SearchKey::Not(k) => uses_modseq(std::slice::from_ref(k.as_ref())),
        SearchKey::Or(a, b) => {
            uses_modseq(std::slice::from_ref(a.as_ref()))
                || uses_modseq(std::slice::from_ref(b.as_ref()))
        }
        SearchKey::ModSequence { .. } => true,
        _ => false,
    })
}

fn has_flag(flags: &[String], f: &str) -> bool {
    flags.iter().any(|x| x.eq_ignore_ascii_case(f))
}

/// One message as the content keys see it. Each part of it (the header fields, the
/// lowercased body and text) is worked out at most once per command, however many keys
/// look at it, so the cost of a SEARCH is one parse per message rather than one per key.
pub struct Content<'a> {
    raw: &'a [u8],
    header_end: usize,
    /// (name, lowercased raw value and RFC 2047-decoded value), in order.
    fields: OnceCell<Vec<(String, String)>>,
    /// For From, To, Cc and Bcc: the field as [`Content::fields`] has it plus its
    /// addresses written out, lowercased.
    addresses: OnceCell<[String; 4]>,
    /// The decoded text and HTML parts, lowercased.
    decoded: OnceCell<String>,
    body: OnceCell<String>,
    text: OnceCell<String>,
    date: OnceCell<Option<chrono::NaiveDate>>,
}

impl<'a> Content<'a> {
    /// `raw` is the whole message, or only its header block when no key needs the body.
    pub fn new(raw: &'a [u8]) -> Content<'a> {
        Content {
            raw,
            header_end: mime::parse_header_only(raw).end,
            fields: OnceCell::new(),
            addresses: OnceCell::new(),
            decoded: OnceCell::new(),
            body: OnceCell::new(),
            text: OnceCell::new(),
            date: OnceCell::new(),
        }
    }

    fn fields(&self) -> &[(String, String)] {
        self.fields.get_or_init(|| {
            mime::header_fields(&self.raw[..self.header_end])
                .into_iter()
                .map(|(n, v)| {
                    let text = String::from_utf8_lossy(&v);
                    let value = format!("{text}\n{}\n", decode_words(&text)).to_lowercase();
                    (n, value)
                })
                .collect()
        })
    }

    /// The lowercased values of the field `name`, one after another.
    fn header(&self, name: &str) -> Option<String> {
        let mut out: Option<String> = None;
        for (n, v) in self.fields() {
            if n.eq_ignore_ascii_case(name) {
                out.get_or_insert_with(String::new).push_str(v);
            }
        }
        out
    }

    /// What SEARCH FROM/TO/CC/BCC look in. RFC 3501 §6.4.4 has them search the envelope
    /// structure's field: so besides the field as written (raw and with encoded words
    /// decoded), each address is written out as `name <local@domain>` (display name
    /// decoded), and a group as its name. `user@domain` then matches an address however
    /// the header spells it (`<user (c)@ domain>`, `user@domain (Name)`), and a display name
    /// matches in its decoded form.
    fn address_field(&self, name: &str) -> &str {
        const NAMES: [&str; 4] = ["From", "To", "Cc", "Bcc"];
        let all = self.addresses.get_or_init(|| {
            let raw = mime::header_fields(&self.raw[..self.header_end]);
            NAMES.map(|field| {
                let mut out = self.header(field).unwrap_or_default();
                for (_, value) in raw.iter().filter(|(n, _)| n.eq_ignore_ascii_case(field)) {
                    for a in mime::address::parse(value) {
                        let line = match a {
                            Addr::Mailbox(m) => {
                                let name = m.name.as_deref().map(decode_words);
                                let domain = m.domain.map(|d| format!("@{d}")).unwrap_or_default();
                                match name {
                                    Some(n) => format!("{n} <{}{domain}>", m.local),
                                    None => format!("{}{domain}", m.local),
                                }
                            }
                            Addr::GroupStart(g) => decode_words(&g),
                            Addr::GroupEnd => continue,
                        };
                        out.push_str(&line.to_lowercase());
                        out.push('\n');
                    }
                }
                out
            })
        });
        NAMES
            .iter()
            .position(|n| n.eq_ignore_ascii_case(name))
            .map_or("", |i| all[i].as_str())
    }

    fn decoded(&self) -> &str {
        self.decoded
            .get_or_init(|| decoded_text(self.raw).to_lowercase())
    }

    /// The body as it is plus its decoded text, lowercased.
    fn body(&self) -> &str {
        self.body.get_or_init(|| {
            let mut s = String::from_utf8_lossy(&self.raw[self.header_end..]).to_lowercase();
            s.push('\n');
            s.push_str(self.decoded());
            s
        })
    }

    /// The whole message as it is plus its decoded text, lowercased.
    fn text(&self) -> &str {
        self.text.get_or_init(|| {
            let mut s = String::from_utf8_lossy(self.raw).to_lowercase();
            s.push('\n');
            s.push_str(self.decoded());
            s
        })
    }

    /// The day of the first Date field.
    fn date(&self) -> Option<chrono::NaiveDate> {
        *self.date.get_or_init(|| {
            let fields = mime::header_fields(&self.raw[..self.header_end]);
            let (_, v) = fields
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("Date"))?;
            chrono::DateTime::parse_from_rfc2822(String::from_utf8_lossy(v).trim())
                .ok()
                .map(|d| d.date_naive())
        })
    }
}

/// Case-insensitive substring test in text already lowercased.
fn contains(lowered: &str, needle: &[u8]) -> bool {
    let needle = String::from_utf8_lossy(needle).to_lowercase();
    needle.is_empty() || lowered.contains(&needle)
}

/// Decodes RFC 2047 encoded words with mail-parser (by parsing a one-field header).
fn decode_words(text: &str) -> String {
    if !text.contains("=?") {
        return text.to_owned();
    }
    let fake = format!("Subject: {text}\r\n\r\n");
    mail_parser::MessageParser::default()
        .parse_headers(fake.as_bytes())
        .and_then(|m| m.subject().map(str::to_owned))
        .unwrap_or_else(|| text.to_owned())
}

fn day_of(ms: i64) -> chrono::NaiveDate {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .date_naive()
}

/// Whether a message matches every key.
pub fn matches_all(keys: &[SearchKey<'_>], c: &Candidate<'_>) -> bool {
    keys.iter().all(|k| matches(k, c))
}

fn matches(key: &SearchKey<'_>, c: &Candidate<'_>) -> bool {
    let header = |name: &str| c.content.and_then(|m| m.header(name)).unwrap_or_default();
    let date = || c.content.and_then(Content::date);
    let addresses = |name: &str| c.content.map_or("", |m| m.address_field(name));
    match key {
        SearchKey::And(ks) => matches_all(ks.as_ref(), c),
        SearchKey::SequenceSet(set) => in_set(set, c.seq, c.max_seq),
        SearchKey::All => true,
        SearchKey::Answered => has_flag(c.flags, "\\Answered"),
        SearchKey::Unanswered => !has_flag(c.flags, "\\Answered"),
        SearchKey::Deleted => has_flag(c.flags, "\\Deleted"),
        SearchKey::Undeleted => !has_flag(c.flags, "\\Deleted"),
        SearchKey::Draft => has_flag(c.flags, "\\Draft"),
        SearchKey::Undraft => !has_flag(c.flags, "\\Draft"),
        SearchKey::Flagged => has_flag(c.flags, "\\Flagged"),
        SearchKey::Unflagged => !has_flag(c.flags, "\\Flagged"),
        SearchKey::Seen => has_flag(c.flags, "\\Seen"),
        SearchKey::Unseen => !has_flag(c.flags, "\\Seen"),
        // No message is \Recent in Mailroom (IMAP4rev2 dropped it).
        SearchKey::Recent | SearchKey::New => false,
        SearchKey::Old => true,
        SearchKey::Keyword(k) => has_flag(c.flags, k.as_ref()),
        SearchKey::Unkeyword(k) => !has_flag(c.flags, k.as_ref()),
        SearchKey::Larger(n) => c.size > i64::from(*n),
        SearchKey::Smaller(n) => c.size < i64::from(*n),
        SearchKey::Before(d) => day_of(c.internal_date) < *d.as_ref(),
        SearchKey::On(d) => day_of(c.internal_date) == *d.as_ref(),
        SearchKey::Since(d) => day_of(c.internal_date) >= *d.as_ref(),
        SearchKey::Older(secs) => c.internal_date <= now_ms() - i64::from(secs.get()) * 1000,
        SearchKey::Younger(secs) => c.internal_date >= now_ms() - i64::from(secs.get()) * 1000,
        SearchKey::SentBefore(d) => date().is_some_and(|x| x < *d.as_ref()),
        SearchKey::SentOn(d) => date().is_some_and(|x| x == *d.as_ref()),
        SearchKey::SentSince(d) => date().is_some_and(|x| x >= *d.as_ref()),
        SearchKey::Bcc(s) => contains(addresses("Bcc"), s.as_ref()),
        SearchKey::Cc(s) => contains(addresses("Cc"), s.as_ref()),
        SearchKey::From(s) => contains(addresses("From"), s.as_ref()),
        SearchKey::To(s) => contains(addresses("To"), s.as_ref()),
        SearchKey::Subject(s) => contains(&header("Subject"), s.as_ref()),
        SearchKey::Header(name, value) => {
            let name = String::from_utf8_lossy(name.as_ref());
            match c.content.and_then(|m| m.header(&name)) {
                // An empty value matches every message that has the field.
                Some(text) => value.as_ref().is_empty() || contains(&text, value.as_ref()),
                None => false,
            }
        }
        SearchKey::Body(s) => c.content.is_some_and(|m| contains(m.body(), s.as_ref())),
        SearchKey::Text(s) => c.content.is_some_and(|m| contains(m.text(), s.as_ref())),
        SearchKey::Uid(set) => in_set(set, c.uid, c.max_uid),
        SearchKey::Not(k) => !matches(k, c),
        SearchKey::Or(a, b) => matches(a, c) || matches(b, c),
        SearchKey::ModSequence { modseq, .. } => c.modseq as u64 >= *modseq,
    }
}

/// The decoded text and HTML parts (so that a search finds words in base64 or
/// quoted-printable bodies too).
fn decoded_text(whole: &[u8]) -> String {
    let mut out = String::new();
    if let Some(m) = mail_parser::MessageParser::default().parse(whole) {
        for i in 0..m.text_body.len() {
            if let Some(t) = m.body_text(i) {
                out.push('\n');
                out.push_str(&t);
            }
        }
        for i in 0..m.html_body.len() {
            if let Some(t) = m.body_html(i) {
                out.push('\n');
                out.push_str(&t);
            }
        }
    }
    out
}

/// How many keys a search has, counting those inside AND, OR and NOT (what
/// [`crate::ImapLimits::max_search_keys`] bounds).
pub fn count_keys(keys: &[SearchKey<'_>]) -> usize {
    keys.iter()
        .map(|k| match k {
            SearchKey::And(ks) => 1 + count_keys(ks.as_ref()),
            SearchKey::Not(k) => 1 + count_keys(std::slice::from_ref(k.as_ref())),
            SearchKey::Or(a, b) => {
                1 + count_keys(std::slice::from_ref(a.as_ref()))
                    + count_keys(std::slice::from_ref(b.as_ref()))
            }
            _ => 1,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_keys_see_addresses_however_they_are_written() {
        let raw = b"From: <user-from (comment)@ (comment) domain.org>\r\nTo: =?utf-8?q?J=C3=B6rg?= <jo@x.de>, grp: a@b.c;\r\n\r\nbody\r\n";
        let c = Content::new(raw);
        let from = c.address_field("from");
        assert!(contains(from, b"USER-FROM@domain.org"), "{from}");
        assert!(contains(from, b"ser-fro"), "{from}");
        let to = c.address_field("To");
        assert!(contains(to, "jörg".as_bytes()), "{to}");
        assert!(contains(to, "Jörg <jo@".as_bytes()), "{to}");
        assert!(contains(to, b"grp") && contains(to, b"a@b.c"), "{to}");
        assert!(!contains(c.address_field("Cc"), b"a"));
    }
}
