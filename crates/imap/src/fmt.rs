//! Writing IMAP data: strings (quoted or literal), NIL, flags, dates, sequence sets.

/// An IMAP string: quoted when it can be, a literal otherwise (8-bit, CR, LF, long).
pub fn string(s: &[u8]) -> String {
    let quotable = s.len() <= 1024
        && s.iter()
            .all(|&b| b.is_ascii() && b != b'\r' && b != b'\n' && b != 0);
    if quotable {
        let mut out = String::with_capacity(s.len() + 2);
        out.push('"');
        for &b in s {
            if b == b'"' || b == b'\\' {
                out.push('\\');
            }
            out.push(b as char);
        }
        out.push('"');
        out
    } else {
        // Only text goes through here (header values, names). Bytes that are not UTF-8
        // become U+FFFD, and the literal counts what is actually sent.
        let text = String::from_utf8_lossy(s);
        format!("{{{}}}\r\n{}", text.len(), text)
    }
}

/// An nstring: the string, or NIL.
pub fn nstring(s: Option<&[u8]>) -> String {
    match s {
        Some(s) => string(s),
        None => "NIL".into(),
    }
}

/// A mailbox name for LIST/STATUS answers: an atom-safe name as a quoted string, anything
/// else as a literal.
pub fn mailbox(name: &str) -> String {
    string(name.as_bytes())
}

/// The canonical spelling of a flag (system flags in RFC case).
pub fn canonical_flag(flag: &str) -> String {
    const SYSTEM: [&str; 6] = [
        "\\Seen",
        "\\Answered",
        "\\Flagged",
        "\\Deleted",
        "\\Draft",
        "\\Recent",
    ];
    SYSTEM
        .iter()
        .find(|s| s.eq_ignore_ascii_case(flag))
        .map_or_else(|| flag.to_owned(), |s| (*s).to_owned())
}

/// `(\Seen \Flagged)`.
pub fn flag_list(flags: &[String]) -> String {
    format!("({})", flags.join(" "))
}

/// INTERNALDATE: `"17-Jul-1996 02:44:25 +0000"`.
pub fn internal_date(ms: i64) -> String {
    let t = chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default();
    format!("\"{}\"", t.format("%d-%b-%Y %H:%M:%S +0000"))
}

/// Compresses sorted numbers into a sequence set (`1:3,7`).
pub fn sequence_set(nums: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < nums.len() {
        let start = nums[i];
        let mut end = start;
        while i + 1 < nums.len() && nums[i + 1] == end + 1 {
            i += 1;
            end = nums[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings() {
        assert_eq!(string(b"a \"b\\"), "\"a \\\"b\\\\\"");
        assert_eq!(string("é".as_bytes()), "{2}\r\né");
        // Latin-1 bytes: the count matches what is sent.
        let latin = string(b"caf\xe9");
        let (head, body) = latin.split_once("\r\n").unwrap_or_default();
        assert_eq!(head, format!("{{{}}}", body.len()));
        assert_eq!(sequence_set(&[1, 2, 3, 5, 7, 8]), "1:3,5,7:8");
        assert_eq!(internal_date(0), "\"01-Jan-1970 00:00:00 +0000\"");
    }
}
