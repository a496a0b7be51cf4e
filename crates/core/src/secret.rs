//! Secrets: machine-generated keys, their hashes, and secrets derived from the server's
//! master secret.
//!
//! A key is shown to its owner once and stored only as a SHA-256 hash (keys are 190 bits of
//! randomness, so a fast hash is safe; a slow one would cost every request). Secrets that
//! must be shown again (the account SMTP password) are *derived* from the master secret with
//! HMAC, so nothing in the database gives them back.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Length of the random part of a key: 32 base62 characters, about 190 bits.
pub const KEY_RANDOM_LEN: usize = 32;

/// What a key opens. The kind is visible in the key (`mr_acc_…`, `mr_inb_…`) so that a
/// person who finds one in a log knows how much it can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// Manages everything in one account.
    Account,
    /// Reads and sends for one inbox only.
    Inbox,
}

impl KeyKind {
    pub const fn prefix(self) -> &'static str {
        match self {
            KeyKind::Account => "mr_acc_",
            KeyKind::Inbox => "mr_inb_",
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            KeyKind::Account => "account",
            KeyKind::Inbox => "inbox",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "account" => Some(KeyKind::Account),
            "inbox" => Some(KeyKind::Inbox),
            _ => None,
        }
    }
}

/// A newly generated key: the secret (show it once) and what may be stored.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub secret: String,
    pub hash: String,
    pub display_prefix: String,
}

/// Generates a key of the given kind.
pub fn generate_key(kind: KeyKind) -> NewKey {
    let secret = format!("{}{}", kind.prefix(), random_base62(KEY_RANDOM_LEN));
    NewKey {
        hash: hash_secret(&secret),
        display_prefix: display_prefix(&secret),
        secret,
    }
}

/// `n` random characters of `[0-9A-Za-z]`.
pub fn random_base62(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| BASE62[rng.random_range(0..BASE62.len())] as char)
        .collect()
}

/// A random (version 4) UUID in its usual text form, for ids that other systems expect
/// as UUIDs (seed 001's `user_smtp_guid`).
pub fn random_uuid() -> String {
    let mut b: [u8; 16] = rand::rng().random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Compares two secrets (or their hashes) in time that does not depend on where they
/// differ, so an answer's timing tells an attacker nothing about how close a guess was.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The stored form of a key: lowercase hex SHA-256.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The part of a key that may be shown in lists and logs: its kind prefix and four more
/// characters, never enough to guess the rest.
pub fn display_prefix(secret: &str) -> String {
    secret.chars().take(11).collect()
}

/// Whether a presented string could be a Mailroom key at all; anything else is refused
/// without a database look-up.
pub fn looks_like_key(s: &str) -> bool {
    s.starts_with("mr_")
        && s.len() <= 128
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The server's master secret: 32 random bytes created on first start (or given by the
/// operator). Every derived secret and signature comes from it, each under its own purpose
/// label so that no two uses can be confused.
#[derive(Clone)]
pub struct MasterSecret([u8; 32]);

impl std::fmt::Debug for MasterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterSecret(…)")
    }
}

impl MasterSecret {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        MasterSecret(bytes)
    }

    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill(&mut bytes);
        MasterSecret(bytes)
    }

    /// Parses the 64 hex characters of the master secret file or `MAILROOM_MASTER_SECRET`.
    pub fn from_hex(s: &str) -> Result<Self, &'static str> {
        let bytes =
            hex::decode(s.trim()).map_err(|_| "the master secret must be 64 hex characters")?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "the master secret must be 64 hex characters (32 bytes)")?;
        Ok(MasterSecret(arr))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// HMAC-SHA256(master, purpose ‖ 0x00 ‖ subject).
    pub fn derive(&self, purpose: &str, subject: &str) -> [u8; 32] {
        let mut mac = self.mac();
        mac.update(purpose.as_bytes());
        mac.update(&[0]);
        mac.update(subject.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// A signed token: `base64url(payload).base64url(hmac)`. The payload is readable by
    /// anyone who has the token, so it must not hold secrets.
    pub fn sign(&self, purpose: &str, payload: &[u8]) -> String {
        let body = URL_SAFE_NO_PAD.encode(payload);
        let mut mac = self.mac();
        mac.update(purpose.as_bytes());
        mac.update(&[0]);
        mac.update(body.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{body}.{sig}")
    }

    /// Checks a token made by [`MasterSecret::sign`] with the same purpose and returns its
    /// payload. Comparison is constant-time.
    pub fn verify(&self, purpose: &str, token: &str) -> Option<Vec<u8>> {
        let (body, sig) = token.split_once('.')?;
        let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
        let mut mac = self.mac();
        mac.update(purpose.as_bytes());
        mac.update(&[0]);
        mac.update(body.as_bytes());
        mac.verify_slice(&sig).ok()?;
        URL_SAFE_NO_PAD.decode(body).ok()
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length; 32 bytes cannot fail.
        <HmacSha256 as Mac>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!())
    }
}

/// HMAC-SHA256 of the concatenated `parts` under `key` (any length).
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length; construction cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Encodes 32 bytes as base62 characters (for derived passwords that people copy into mail
/// clients: no symbols that need quoting).
pub fn bytes_to_base62(bytes: &[u8], len: usize) -> String {
    // Each output character consumes one byte modulo 62; the small bias this leaves is
    // irrelevant for a 32-character secret drawn from a 256-bit HMAC.
    bytes
        .iter()
        .cycle()
        .take(len)
        .enumerate()
        .map(|(i, b)| BASE62[((*b as usize) + i / bytes.len()) % BASE62.len()] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefixed_and_hashed() {
        let k = generate_key(KeyKind::Account);
        assert!(k.secret.starts_with("mr_acc_"));
        assert_eq!(k.secret.len(), 7 + KEY_RANDOM_LEN);
        assert_eq!(k.hash, hash_secret(&k.secret));
        assert_eq!(k.hash.len(), 64);
        assert!(!k.hash.contains(&k.secret));
        assert!(looks_like_key(&k.secret));
        assert_eq!(k.display_prefix.len(), 11);
        assert_ne!(k.secret, generate_key(KeyKind::Account).secret);
    }

    #[test]
    fn non_keys_are_recognised() {
        for s in [
            "",
            "Bearer",
            "dm_live_x",
            "mr_a b",
            "mr_ä",
            &"mr_".repeat(50),
        ] {
            assert!(!looks_like_key(s), "{s:?}");
        }
    }

    #[test]
    fn signatures_verify_and_reject_tampering() {
        let m = MasterSecret::generate();
        let t = m.sign("upgrade", b"{\"a\":1}");
        assert_eq!(m.verify("upgrade", &t).as_deref(), Some(&b"{\"a\":1}"[..]));
        assert!(m.verify("other-purpose", &t).is_none());
        let other = MasterSecret::generate();
        assert!(other.verify("upgrade", &t).is_none());
        let mut tampered = t.clone();
        tampered.insert(1, 'x');
        assert!(m.verify("upgrade", &tampered).is_none());
        assert!(m.verify("upgrade", "no-dot").is_none());
    }

    #[test]
    fn derivation_is_stable_and_separated() {
        let m = MasterSecret::from_hex(&"ab".repeat(32)).unwrap();
        assert_eq!(m.derive("smtp", "acc_1"), m.derive("smtp", "acc_1"));
        assert_ne!(m.derive("smtp", "acc_1"), m.derive("smtp", "acc_2"));
        assert_ne!(m.derive("smtp", "acc_1"), m.derive("dkim", "acc_1"));
        assert!(MasterSecret::from_hex("zz").is_err());
        assert_eq!(
            MasterSecret::from_hex(&m.to_hex()).unwrap().to_hex(),
            m.to_hex()
        );
    }

    #[test]
    fn base62_encoding_has_requested_length() {
        let s = bytes_to_base62(&[255u8; 32], 40);
        assert_eq!(s.len(), 40);
        assert!(s.bytes().all(|b| b.is_ascii_alphanumeric()));
    }
}
