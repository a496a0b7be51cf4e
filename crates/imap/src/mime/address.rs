//! Address lists (RFC 5322 §3.4, with the obsolete forms of §4.4 that real mail still
//! carries) as IMAP needs them: the address structures of ENVELOPE (RFC 3501 §7.4.2,
//! RFC 9051 §7.5.2) and the addresses SEARCH FROM/TO/CC/BCC look in (RFC 3501 §6.4.4 says
//! those keys search the envelope's field, so `user@domain` must match however the header
//! spells it: in angle brackets, with comments around the `@`, after a display name).
//!
//! The parser is forgiving: it never fails, it gives what it can read. Display names are
//! kept as written (encoded words undecoded, RFC 9051 §7.5.2: the client decodes them);
//! only quoting and comments are taken off.

/// One item of an address list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    Mailbox(Mailbox),
    /// `name:` opening a group (RFC 5322 §3.4).
    GroupStart(String),
    /// The `;` closing it.
    GroupEnd,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mailbox {
    /// The display name (or, for `user@host (Name)`, the comment), unquoted.
    pub name: Option<String>,
    /// An obsolete source route (`@a,@b`), RFC 5322 §4.4 obs-route.
    pub route: Option<String>,
    /// The local part, unquoted; empty when the address has none.
    pub local: String,
    /// The domain; `None` when the address has no `@`.
    pub domain: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Atom(String),
    Quoted(String),
    Comment(String),
    /// A domain literal, brackets included.
    Literal(String),
    Special(char),
}

#[derive(Debug, Clone)]
struct Tok {
    kind: Kind,
    /// Whitespace came before it (display names keep one space there).
    spaced: bool,
}

const SPECIALS: &str = "()<>[]:;@\\,.\"";

/// Reads `"…"` (escapes undone) or `(…)` (nested) starting after the opening character.
fn delimited(chars: &[char], mut i: usize, close: char) -> (String, usize) {
    let mut out = String::new();
    let mut depth = 1;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' && i + 1 < chars.len() {
            out.push(chars[i + 1]);
            i += 2;
            continue;
        }
        if close == ')' && c == '(' {
            depth += 1;
        } else if c == close {
            depth -= 1;
            if depth == 0 {
                return (out, i + 1);
            }
        }
        out.push(c);
        i += 1;
    }
    (out, i)
}

fn tokens(text: &str) -> Vec<Tok> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut spaced = false;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            spaced = true;
            i += 1;
            continue;
        }
        let kind = match c {
            '"' => {
                let (s, next) = delimited(&chars, i + 1, '"');
                i = next;
                Kind::Quoted(s)
            }
            '(' => {
                let (s, next) = delimited(&chars, i + 1, ')');
                i = next;
                Kind::Comment(s)
            }
            '[' => {
                let (s, next) = delimited(&chars, i + 1, ']');
                i = next;
                Kind::Literal(format!("[{s}]"))
            }
            c if SPECIALS.contains(c) => {
                i += 1;
                Kind::Special(c)
            }
            _ => {
                let start = i;
                while i < chars.len() && !chars[i].is_whitespace() && !SPECIALS.contains(chars[i]) {
                    i += 1;
                }
                Kind::Atom(chars[start..i].iter().collect())
            }
        };
        out.push(Tok { kind, spaced });
        spaced = false;
    }
    out
}

/// A display name: words joined by one space where the header had whitespace.
fn phrase(toks: &[Tok]) -> Option<String> {
    let mut out = String::new();
    for t in toks {
        let word = match &t.kind {
            Kind::Atom(s) | Kind::Quoted(s) | Kind::Literal(s) => s.as_str(),
            Kind::Special(c) if *c != '<' && *c != '>' => {
                out.push(*c);
                continue;
            }
            _ => continue,
        };
        if t.spaced && !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    let out = out.trim().to_owned();
    (!out.is_empty()).then_some(out)
}

/// A dot-atom (local part or domain): whitespace and comments between its pieces are
/// not part of it (RFC 5322 §4.4 obs-local-part, obs-domain).
fn dotted(toks: &[Tok]) -> String {
    let mut out = String::new();
    for t in toks {
        match &t.kind {
            Kind::Atom(s) | Kind::Quoted(s) | Kind::Literal(s) => out.push_str(s),
            Kind::Special('.') => out.push('.'),
            _ => {}
        }
    }
    out
}

fn last_comment(toks: &[Tok]) -> Option<String> {
    toks.iter().rev().find_map(|t| match &t.kind {
        Kind::Comment(c) if !c.trim().is_empty() => Some(c.trim().to_owned()),
        _ => None,
    })
}

/// An addr-spec (with an optional obsolete route before it) into a mailbox.
fn addr_spec(toks: &[Tok], name: Option<String>) -> Option<Mailbox> {
    let toks: Vec<Tok> = toks
        .iter()
        .filter(|t| !matches!(t.kind, Kind::Comment(_)))
        .cloned()
        .collect();
    let mut rest = &toks[..];
    let mut route = None;
    if matches!(rest.first().map(|t| &t.kind), Some(Kind::Special('@'))) {
        if let Some(colon) = rest.iter().position(|t| t.kind == Kind::Special(':')) {
            let r: String = rest[..colon]
                .iter()
                .map(|t| match &t.kind {
                    Kind::Atom(s) | Kind::Literal(s) => s.clone(),
                    Kind::Special(c) => c.to_string(),
                    _ => String::new(),
                })
                .collect();
            route = Some(r);
            rest = &rest[colon + 1..];
        }
    }
    if rest.is_empty() {
        return None;
    }
    let (local, domain) = match rest.iter().rposition(|t| t.kind == Kind::Special('@')) {
        Some(at) => (dotted(&rest[..at]), Some(dotted(&rest[at + 1..]))),
        None => (dotted(rest), None),
    };
    if local.is_empty() && domain.as_deref().is_none_or(str::is_empty) {
        return None;
    }
    Some(Mailbox {
        name,
        route,
        local,
        domain,
    })
}

/// The tokens of one mailbox so far: before `<`, inside `<…>`, and after `>`.
#[derive(Default)]
struct Pending {
    before: Vec<Tok>,
    angle: Option<Vec<Tok>>,
    after: Vec<Tok>,
}

impl Pending {
    fn push(&mut self, t: Tok) {
        if self.angle.is_some() {
            self.after.push(t);
        } else {
            self.before.push(t);
        }
    }

    /// The mailbox these tokens make, if any (`Sender: ` or a stray comma make none).
    fn take(&mut self) -> Option<Mailbox> {
        let p = std::mem::take(self);
        match p.angle {
            Some(inside) => {
                let name = phrase(&p.before)
                    .or_else(|| last_comment(&p.after))
                    .or_else(|| last_comment(&p.before));
                addr_spec(&inside, name)
            }
            None => {
                let name = last_comment(&p.before);
                addr_spec(&p.before, name)
            }
        }
    }
}

/// Parses an address-list (or mailbox-list) header value.
pub fn parse(value: &[u8]) -> Vec<Addr> {
    let text = String::from_utf8_lossy(value);
    let toks = tokens(&text);
    let mut out = Vec::new();
    let mut pending = Pending::default();
    let mut in_group = false;
    let mut i = 0;
    while i < toks.len() {
        let t = &toks[i];
        i += 1;
        match t.kind {
            Kind::Special('<') if pending.angle.is_none() => {
                let mut inside = Vec::new();
                while i < toks.len() && toks[i].kind != Kind::Special('>') {
                    inside.push(toks[i].clone());
                    i += 1;
                }
                i += 1; // the `>`
                pending.angle = Some(inside);
            }
            Kind::Special(',') => out.extend(pending.take().map(Addr::Mailbox)),
            Kind::Special(':') if !in_group && pending.angle.is_none() => {
                let name = phrase(&pending.before).unwrap_or_default();
                pending = Pending::default();
                out.push(Addr::GroupStart(name));
                in_group = true;
            }
            Kind::Special(';') if in_group => {
                out.extend(pending.take().map(Addr::Mailbox));
                out.push(Addr::GroupEnd);
                in_group = false;
            }
            _ => pending.push(t.clone()),
        }
    }
    out.extend(pending.take().map(Addr::Mailbox));
    if in_group {
        out.push(Addr::GroupEnd);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mb(name: Option<&str>, local: &str, domain: Option<&str>) -> Addr {
        Addr::Mailbox(Mailbox {
            name: name.map(str::to_owned),
            route: None,
            local: local.into(),
            domain: domain.map(str::to_owned),
        })
    }

    #[test]
    fn the_common_forms() {
        assert_eq!(
            parse(b"\"Ann Example\" <ann@example.com>"),
            vec![mb(Some("Ann Example"), "ann", Some("example.com"))]
        );
        assert_eq!(
            parse(b"Ann Example <ann@example.com>, bob@example.org"),
            vec![
                mb(Some("Ann Example"), "ann", Some("example.com")),
                mb(None, "bob", Some("example.org")),
            ]
        );
        assert_eq!(
            parse(b"user@domain (Real Name)"),
            vec![mb(Some("Real Name"), "user", Some("domain"))]
        );
        assert_eq!(
            parse(b"\"Doe, John\" <j@x.org>"),
            vec![mb(Some("Doe, John"), "j", Some("x.org"))]
        );
        assert_eq!(
            parse(b"\"\" <user@domain>"),
            vec![mb(None, "user", Some("domain"))]
        );
        assert_eq!(parse(b"user"), vec![mb(None, "user", None)]);
        assert_eq!(parse(b""), vec![]);
        assert_eq!(parse(b" , ,"), vec![]);
    }

    #[test]
    fn comments_and_whitespace_inside_the_address_are_not_part_of_it() {
        assert_eq!(
            parse(b"<user-from (comment)@ (comment) domain.org>"),
            vec![mb(None, "user-from", Some("domain.org"))]
        );
        assert_eq!(
            parse(b"\"john q\"@example.com"),
            vec![mb(None, "john q", Some("example.com"))]
        );
        assert_eq!(
            parse(b"a@[127.0.0.1]"),
            vec![mb(None, "a", Some("[127.0.0.1]"))]
        );
    }

    #[test]
    fn routes_groups_and_encoded_words() {
        assert_eq!(
            parse(b"<@route:user@domain>"),
            vec![Addr::Mailbox(Mailbox {
                name: None,
                route: Some("@route".into()),
                local: "user".into(),
                domain: Some("domain".into()),
            })]
        );
        assert_eq!(
            parse(b"group: g1@d1.org, g2@d2.org;, group2: g3@d3.org;"),
            vec![
                Addr::GroupStart("group".into()),
                mb(None, "g1", Some("d1.org")),
                mb(None, "g2", Some("d2.org")),
                Addr::GroupEnd,
                Addr::GroupStart("group2".into()),
                mb(None, "g3", Some("d3.org")),
                Addr::GroupEnd,
            ]
        );
        assert_eq!(
            parse(b"undisclosed-recipients:;"),
            vec![
                Addr::GroupStart("undisclosed-recipients".into()),
                Addr::GroupEnd
            ]
        );
        assert_eq!(
            parse(b"=?utf-8?q?J=C3=B6rg?= <j@x.de>"),
            vec![mb(Some("=?utf-8?q?J=C3=B6rg?="), "j", Some("x.de"))]
        );
    }
}
