//! What an agent usually wants from a message without reading it: one-time codes and the
//! links to click, the likeliest first. Plain scanning, no regular expressions: the rules
//! are few and explicit.

/// Words that make a nearby number a one-time code.
const CODE_WORDS: &[&str] = &[
    "code",
    "otp",
    "passcode",
    "pin",
    "verification",
    "verify",
    "security",
    "one-time",
    "2fa",
    "token",
    "login",
    "sign-in",
    "confirm",
];

/// Words that make a link the likely verification/confirmation link.
const LINK_WORDS: &[&str] = &[
    "verify",
    "verification",
    "confirm",
    "activate",
    "validate",
    "magic",
    "login",
    "signin",
    "sign-in",
    "auth",
    "token",
    "reset",
    "invite",
    "unlock",
];

/// Numbers of 4 to 8 digits standing alone (also `123-456` and `123 456` split codes),
/// those on a line with a code word first. Years and long numbers are left out.
pub fn codes(subject: &str, text: &str) -> Vec<String> {
    let mut scored: Vec<(bool, usize, String)> = Vec::new();
    let mut order = 0;
    for line in std::iter::once(subject).chain(text.lines()) {
        let lower = line.to_lowercase();
        let keyword = CODE_WORDS.iter().any(|w| lower.contains(w));
        for code in digit_groups(line) {
            let year_like =
                code.len() == 4 && (code.starts_with("19") || code.starts_with("20")) && !keyword;
            if year_like || scored.iter().any(|(_, _, c)| *c == code) {
                continue;
            }
            scored.push((keyword, order, code));
            order += 1;
        }
    }
    scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().map(|(_, _, c)| c).take(10).collect()
}

fn digit_groups(line: &str) -> Vec<String> {
    let chars: Vec<char> = line.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit()
            || (i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '.'))
        {
            i += 1;
            continue;
        }
        let mut j = i;
        let mut digits = String::new();
        // Digits, allowing one '-' or ' ' between two groups of 3 ("123-456").
        while j < chars.len() {
            if chars[j].is_ascii_digit() {
                digits.push(chars[j]);
                j += 1;
            } else if (chars[j] == '-' || chars[j] == ' ')
                && digits.len() == 3
                && chars.get(j + 1).is_some_and(char::is_ascii_digit)
                && chars.get(j + 4).is_none_or(|c| !c.is_ascii_digit())
            {
                j += 1;
            } else {
                break;
            }
        }
        let ends_clean = chars.get(j).is_none_or(|c| !c.is_alphanumeric());
        if (4..=8).contains(&digits.len()) && ends_clean {
            out.push(digits);
        }
        i = j.max(i + 1);
    }
    out
}

/// http(s) links in text and in `href="…"` of HTML, without duplicates, the likely
/// verification link first.
pub fn links(text: &str, html: &str) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    for source in [text, html] {
        let mut rest = source;
        while let Some(pos) = find_scheme(rest) {
            let tail = &rest[pos..];
            let end = tail
                .find(|c: char| {
                    c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | ')' | ']')
                })
                .unwrap_or(tail.len());
            let url = tail[..end]
                .trim_end_matches(['.', ',', ';', ':', '!', '?'])
                .replace("&amp;", "&");
            if url.len() > "https://".len() && !found.contains(&url) {
                found.push(url);
            }
            rest = &tail[end.max(1)..];
        }
    }
    let likely = |u: &str| {
        let l = u.to_lowercase();
        LINK_WORDS.iter().any(|w| l.contains(w))
    };
    let (mut first, rest): (Vec<String>, Vec<String>) = found.into_iter().partition(|u| likely(u));
    first.extend(rest);
    first.truncate(50);
    first
}

fn find_scheme(s: &str) -> Option<usize> {
    match (s.find("https://"), s.find("http://")) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_codes_keyword_lines_first() {
        let text = "Order 55512 shipped.\nYour verification code is 482913.\n© 2024 Example";
        assert_eq!(codes("Welcome", text), ["482913", "55512"]);
        assert_eq!(codes("Your code: 123-456", ""), ["123456"]);
        assert_eq!(codes("", "Use 7788 to sign in"), ["7788"]);
        assert!(codes("", "call +1 5551234567 or version 1.2345 or abc12345").is_empty());
        assert!(
            codes("", "Copyright 2025").is_empty(),
            "years are not codes"
        );
    }

    #[test]
    fn finds_links_verification_first() {
        let text = "See https://example.com/blog. Then https://example.com/verify?token=abc&x=1,";
        let html = r#"<a href="https://example.com/confirm?u=1&amp;t=2">Confirm</a> <a href='http://example.com/'>home</a>"#;
        let l = links(text, html);
        assert_eq!(
            l,
            [
                "https://example.com/verify?token=abc&x=1",
                "https://example.com/confirm?u=1&t=2",
                "https://example.com/blog",
                "http://example.com/",
            ]
        );
        assert!(links("no links here", "").is_empty());
    }
}
