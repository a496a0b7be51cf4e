//! SASL responses as the mail protocols carry them (base64 lines): PLAIN (RFC 4616) and
//! the user name and password lines of LOGIN. One decoder, so that SMTP AUTH, IMAP
//! AUTHENTICATE and POP3 AUTH accept and refuse exactly the same inputs.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

/// The longest SASL response line accepted, in base64 characters. PLAIN carries two names
/// and a password; 4 KiB is far more than any real one needs.
pub const MAX_RESPONSE: usize = 4096;

/// A decoded PLAIN response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plain {
    /// Who to act as; empty when the client names none (every client we know).
    pub authzid: String,
    /// Who logs in.
    pub authcid: String,
    pub password: String,
}

/// Why a SASL response was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    /// The client sent `*` (RFC 4954 §4, RFC 9051 §6.2.2).
    #[error("authentication cancelled")]
    Cancelled,
    #[error("the response is not valid base64")]
    NotBase64,
    #[error("the response is too long")]
    TooLong,
    #[error("malformed PLAIN response (expected authzid NUL user NUL password, in UTF-8)")]
    Malformed,
}

fn decode(line: &str) -> Result<Vec<u8>, SaslError> {
    let line = line.trim();
    if line == "*" {
        return Err(SaslError::Cancelled);
    }
    if line.len() > MAX_RESPONSE {
        return Err(SaslError::TooLong);
    }
    B64.decode(line).map_err(|_| SaslError::NotBase64)
}

/// Decodes a PLAIN response line (`authzid NUL authcid NUL password`, base64).
pub fn decode_plain(line: &str) -> Result<Plain, SaslError> {
    parse_plain(&decode(line)?)
}

/// Reads a PLAIN response that is already base64-decoded (IMAP's SASL-IR arrives so).
pub fn parse_plain(bytes: &[u8]) -> Result<Plain, SaslError> {
    if bytes.len() > MAX_RESPONSE {
        return Err(SaslError::TooLong);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| SaslError::Malformed)?;
    let mut parts = text.split('\0');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(authzid), Some(authcid), Some(password), None) if !authcid.is_empty() => Ok(Plain {
            authzid: authzid.to_owned(),
            authcid: authcid.to_owned(),
            password: password.to_owned(),
        }),
        _ => Err(SaslError::Malformed),
    }
}

/// Decodes one LOGIN line (the user name or the password, base64 of UTF-8 text).
pub fn decode_text(line: &str) -> Result<String, SaslError> {
    String::from_utf8(decode(line)?).map_err(|_| SaslError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_responses() {
        let ok = B64.encode("\0user@example.com\0secret pass");
        assert_eq!(
            decode_plain(&ok),
            Ok(Plain {
                authzid: String::new(),
                authcid: "user@example.com".into(),
                password: "secret pass".into(),
            })
        );
        assert_eq!(decode_plain("*"), Err(SaslError::Cancelled));
        assert_eq!(decode_plain("not base64!"), Err(SaslError::NotBase64));
        for bad in ["user\0pass", "\0\0pass", "a\0b\0c\0d"] {
            assert_eq!(
                decode_plain(&B64.encode(bad)),
                Err(SaslError::Malformed),
                "{bad:?}"
            );
        }
        assert_eq!(
            decode_plain(&B64.encode([0u8, b'u', 0, 0xff])),
            Err(SaslError::Malformed)
        );
        assert_eq!(
            decode_plain(&"A".repeat(MAX_RESPONSE + 4)),
            Err(SaslError::TooLong)
        );
    }

    #[test]
    fn login_lines() {
        assert_eq!(decode_text("dXNlcg=="), Ok("user".into()));
        assert_eq!(decode_text(" * "), Err(SaslError::Cancelled));
    }
}
