//! Inbox usernames: the local part of an inbox address.
//!
//! The rules are deliberately narrower than RFC 5321 allows, so that every address works in
//! every mail client and every HTTP URL without quoting: lowercase ASCII letters, digits and
//! `.`, `-`, `_`; it starts and ends with a letter or digit; no `..`; at most 64 characters
//! (the RFC's limit for a local part). Input is lowercased first, because mail systems treat
//! local parts case-insensitively in practice and two inboxes that differ only in case would
//! confuse everyone.

use thiserror::Error;

/// The longest username accepted (RFC 5321 §4.5.3.1.1).
pub const MAX_LEN: usize = 64;

/// Names that mail standards and abuse handling give a meaning on every domain
/// (RFC 2142, RFC 5321 §4.5.1, and the daemon names bounces come from). Nobody may own them
/// as an inbox: mail to them must reach the operator.
pub const RESERVED: &[&str] = &[
    "abuse",
    "admin",
    "administrator",
    "hostmaster",
    "mailer-daemon",
    "noc",
    "nobody",
    "postmaster",
    "root",
    "security",
    "webmaster",
];

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UsernameError {
    #[error("username is empty; give 1 to {MAX_LEN} characters such as \"my-agent\"")]
    Empty,
    #[error("username is {0} characters long; the limit is {MAX_LEN}")]
    TooLong(usize),
    #[error("username contains {0:?}; use only lowercase letters a-z, digits 0-9 and . - _")]
    BadCharacter(char),
    #[error("username must start and end with a letter or digit")]
    BadEdge,
    #[error("username must not contain two dots in a row")]
    DoubleDot,
    #[error("username {0:?} is reserved for the mail system (RFC 2142); choose another")]
    Reserved(String),
}

/// Validates and normalises a username; returns the lowercase form to store.
pub fn normalize(input: &str) -> Result<String, UsernameError> {
    let name = input.trim().to_ascii_lowercase();
    if name.is_empty() {
        return Err(UsernameError::Empty);
    }
    let len = name.chars().count();
    if len > MAX_LEN {
        return Err(UsernameError::TooLong(len));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_')))
    {
        return Err(UsernameError::BadCharacter(c));
    }
    let first = name.as_bytes()[0];
    let last = name.as_bytes()[name.len() - 1];
    if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
        return Err(UsernameError::BadEdge);
    }
    if name.contains("..") {
        return Err(UsernameError::DoubleDot);
    }
    if RESERVED.contains(&name.as_str()) {
        return Err(UsernameError::Reserved(name));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_lowercases() {
        assert_eq!(normalize("Platform-Admin").unwrap(), "platform-admin");
        assert_eq!(normalize("a").unwrap(), "a");
        assert_eq!(normalize("agent.001_x").unwrap(), "agent.001_x");
        assert_eq!(normalize(&"a".repeat(64)).unwrap().len(), 64);
    }

    #[test]
    fn rejects_hostile_and_malformed_names() {
        let cases: &[(&str, UsernameError)] = &[
            ("", UsernameError::Empty),
            ("   ", UsernameError::Empty),
            (&"a".repeat(65), UsernameError::TooLong(65)),
            ("a b", UsernameError::BadCharacter(' ')),
            ("a@b", UsernameError::BadCharacter('@')),
            ("é", UsernameError::BadCharacter('é')),
            ("a\r\nRCPT", UsernameError::BadCharacter('\r')),
            ("a\0", UsernameError::BadCharacter('\0')),
            ("../x", UsernameError::BadCharacter('/')),
            ("-a", UsernameError::BadEdge),
            ("a.", UsernameError::BadEdge),
            ("a..b", UsernameError::DoubleDot),
            ("Postmaster", UsernameError::Reserved("postmaster".into())),
            ("abuse", UsernameError::Reserved("abuse".into())),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input).as_ref(), Err(want), "{input:?}");
        }
    }
}
