//! Undoing a Content-Transfer-Encoding (RFC 2045 §6) for BINARY (RFC 3516 §4.2): the
//! client asks for the part's content as it was before encoding, and BINARY.SIZE is the
//! length of exactly that.
//!
//! Both decoders are forgiving, as RFC 2045 §6.7 (note 1) and §6.8 ask of decoders: what
//! a careless encoder or a transport wrote is read the way the sender meant it rather than
//! refused.

/// The content transfer encoding a header names, lowercased; "" when none is given.
pub fn encoding_name(value: Option<&[u8]>) -> String {
    let text = String::from_utf8_lossy(value.unwrap_or_default()).to_ascii_lowercase();
    // A comment or stray parameter after the token is not part of it.
    text.split(|c: char| c.is_whitespace() || c == ';' || c == '(')
        .find(|t| !t.is_empty())
        .unwrap_or_default()
        .to_owned()
}

/// Why BINARY cannot decode a part (RFC 3516 §4.3: `NO [UNKNOWN-CTE]`).
#[derive(Debug, PartialEq, Eq)]
pub struct UnknownEncoding;

/// `body` decoded from the encoding named `encoding` (as [`encoding_name`] gives it).
pub fn decode(encoding: &str, body: &[u8]) -> Result<Vec<u8>, UnknownEncoding> {
    match encoding {
        "" | "7bit" | "8bit" | "binary" => Ok(body.to_vec()),
        "base64" => Ok(base64(body)),
        "quoted-printable" => Ok(quoted_printable(body)),
        _ => Err(UnknownEncoding),
    }
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Quoted-printable (RFC 2045 §6.7), line by line:
/// - trailing spaces and tabs of a line are dropped (rule 3: a transport may have added
///   them; whitespace that matters was encoded as `=20`/`=09`);
/// - a line that then ends in `=` is a soft line break (rule 5): no line break is kept,
///   which also covers a last line ending in a bare `=` (the CRLF before a boundary belongs
///   to the boundary, RFC 2046 §5.1.1, so a part often ends that way);
/// - `=XX` is one octet, in upper or lower case hex (note 1 asks decoders to accept
///   lowercase); an `=` not followed by two hex digits is kept as it is.
///
/// Hard line breaks stay as they were written (CRLF, or a bare LF in a stored message
/// that had them).
pub fn quoted_printable(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    for line in body.split_inclusive(|&b| b == b'\n') {
        let (content, ending): (&[u8], &[u8]) = if let Some(c) = line.strip_suffix(b"\r\n") {
            (c, b"\r\n")
        } else if let Some(c) = line.strip_suffix(b"\n") {
            (c, b"\n")
        } else {
            (line, b"")
        };
        let end = content
            .iter()
            .rposition(|&b| b != b' ' && b != b'\t')
            .map_or(0, |p| p + 1);
        let mut content = &content[..end];
        let soft = content.last() == Some(&b'=');
        if soft {
            content = &content[..content.len() - 1];
        }
        let mut i = 0;
        while i < content.len() {
            let c = content[i];
            if c == b'=' {
                if let (Some(h), Some(l)) = (
                    content.get(i + 1).copied().and_then(hex),
                    content.get(i + 2).copied().and_then(hex),
                ) {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
            }
            out.push(c);
            i += 1;
        }
        if !soft {
            out.extend_from_slice(ending);
        }
    }
    out
}

fn sextet(c: u8) -> Option<u32> {
    let v = match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    };
    Some(u32::from(v))
}

/// Base64 (RFC 2045 §6.8): characters outside the alphabet (line breaks, whitespace) are
/// ignored, as the RFC says; `=` ends a quantum, so bodies that are several encoded pieces
/// one after another decode whole; bits left over at the end of the data are dropped.
pub fn base64(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() / 4 * 3);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &c in body {
        if c == b'=' {
            acc = 0;
            bits = 0;
            continue;
        }
        let Some(v) = sextet(c) else { continue };
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_printable_soft_breaks_whitespace_and_hex() {
        assert_eq!(quoted_printable(b"hel=\r\nlo\r\n"), b"hello\r\n");
        // Whitespace before the soft break was encoded text; after `=` it was transport's.
        assert_eq!(quoted_printable(b"foo =\r\nbar"), b"foo bar");
        assert_eq!(quoted_printable(b"foo= \t\r\nbar"), b"foobar");
        // Trailing whitespace of a line is not content; encoded whitespace is.
        assert_eq!(quoted_printable(b"foo \t \r\nbar\t\r\n"), b"foo\r\nbar\r\n");
        assert_eq!(quoted_printable(b"foo=20\r\n=09x"), b"foo \r\n\tx");
        assert_eq!(quoted_printable(b"=C3=A9=c3=a9=3D"), "éé=".as_bytes());
        // A bare `=` at the very end: a soft break with nothing after it.
        assert_eq!(quoted_printable(b"no newline="), b"no newline");
        assert_eq!(quoted_printable(b"="), b"");
        // Not an escape: kept as written.
        assert_eq!(quoted_printable(b"a=G1 =4"), b"a=G1 =4");
        assert_eq!(quoted_printable(b"lf\nonly=\nend\n"), b"lf\nonlyend\n");
        assert_eq!(quoted_printable(b""), b"");
    }

    #[test]
    fn base64_ignores_line_breaks_and_whitespace() {
        assert_eq!(base64(b"aGVs\r\nbG8g\r\n d29y bGQ=\r\n"), b"hello world");
        assert_eq!(base64(b"AAEC/w=="), [0, 1, 2, 255]);
        // Two pieces, each padded.
        assert_eq!(base64(b"aGk=\r\naGk=\r\n"), b"hihi");
        // No padding, and a stray character left at the end.
        assert_eq!(base64(b"aGk"), b"hi");
        assert_eq!(base64(b"aGk=x"), b"hi");
        assert_eq!(base64(b"\r\n"), b"");
    }

    #[test]
    fn encoding_names() {
        assert_eq!(encoding_name(Some(b" Base64 ")), "base64");
        assert_eq!(
            encoding_name(Some(b"quoted-printable (x)")),
            "quoted-printable"
        );
        assert_eq!(encoding_name(None), "");
        assert_eq!(decode("x-uuencode", b"x"), Err(UnknownEncoding));
    }
}
