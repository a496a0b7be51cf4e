//! DKIM for outgoing mail: one RSA-2048 key per domain, generated on first start, stored
//! sealed with a key derived from the master secret, used to sign every accepted message.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use mail_auth::common::crypto::{RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{DkimSigner, Done};
use mailroom_core::time::now_ms;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs1KeyDer};

use crate::{ServiceError, Services};

/// The selector of the keys generated here.
pub const SELECTOR: &str = "mailroom1";

/// The headers a signature covers. The origin headers are listed twice: a signer signs
/// each instance in the message, and a name listed once more than it appears signs "no
/// such header" (RFC 6376 §5.4.2, over-signing), so a `From` (or `Subject`…) added later,
/// on top where mail clients look, breaks the signature instead of riding along.
const SIGNED_HEADERS: &[&str] = &[
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "From",
    "Sender",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Reply-To",
];

pub(crate) type Signer = DkimSigner<RsaKey<Sha256>, Done>;

/// Signers by domain, built once from the stored key.
#[derive(Default)]
pub(crate) struct SignerCache(Mutex<HashMap<String, Arc<Signer>>>);

impl std::fmt::Debug for SignerCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignerCache")
    }
}

impl SignerCache {
    /// Forgets the signer of `domain` (its key was deleted).
    pub(crate) fn evict(&self, domain: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(domain);
    }

    pub(crate) fn evict_all(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

fn crypto_error(what: &str) -> ServiceError {
    ServiceError::Store(mailroom_store::StoreError::Corrupt(format!(
        "DKIM key: {what}"
    )))
}

impl Services {
    fn seal_key(&self, domain: &str) -> Result<LessSafeKey, ServiceError> {
        let key = self.master().derive("dkim-key-seal", domain);
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, &key)
            .map_err(|_| crypto_error("bad sealing key"))?;
        Ok(LessSafeKey::new(unbound))
    }

    /// Creates the domain's DKIM key if it has none. Slow (RSA key generation), so it runs
    /// on a blocking thread; call it at start, not per message.
    pub async fn ensure_dkim_key(&self, domain: &str) -> Result<(), ServiceError> {
        if self.store().dkim_key(domain).await?.is_some() {
            return Ok(());
        }
        let pair = tokio::task::spawn_blocking(|| {
            mail_auth::dkim::generate::DkimKeyPair::generate_rsa(2048)
        })
        .await
        .map_err(|_| crypto_error("key generation task failed"))?
        .map_err(|e| crypto_error(&e.to_string()))?;
        let mut nonce = [0u8; 12];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
            .map_err(|_| crypto_error("no randomness"))?;
        let mut sealed = pair.private_key().to_vec();
        self.seal_key(domain)?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(domain.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| crypto_error("sealing failed"))?;
        let mut stored = nonce.to_vec();
        stored.extend_from_slice(&sealed);
        self.store()
            .insert_dkim_key(
                domain,
                SELECTOR,
                "rsa-sha256",
                &stored,
                &STANDARD.encode(pair.public_key()),
                now_ms(),
            )
            .await?;
        tracing::info!(
            domain,
            selector = SELECTOR,
            "created the DKIM key; publish it (mailroom dns-records)"
        );
        Ok(())
    }

    async fn signer(&self, domain: &str) -> Result<Option<Arc<Signer>>, ServiceError> {
        if let Some(s) = self
            .dkim_signers()
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(domain)
        {
            return Ok(Some(s.clone()));
        }
        let Some((selector, _alg, stored, _public)) = self.store().dkim_key(domain).await? else {
            return Ok(None);
        };
        if stored.len() < 12 {
            return Err(crypto_error("sealed key too short"));
        }
        let (nonce, sealed) = stored.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| crypto_error("bad nonce"))?;
        let mut buf = sealed.to_vec();
        let der = self
            .seal_key(domain)?
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(domain.as_bytes()),
                &mut buf,
            )
            .map_err(|_| crypto_error("cannot open the sealed key (another master secret?)"))?
            .to_vec();
        let key =
            RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(der)))
                .map_err(|e| crypto_error(&e.to_string()))?;
        let signer = Arc::new(
            DkimSigner::from_key(key)
                .domain(domain)
                .selector(selector)
                .headers(SIGNED_HEADERS.iter().copied()),
        );
        self.dkim_signers()
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(domain.to_owned(), signer.clone());
        Ok(Some(signer))
    }

    /// `message` with a `DKIM-Signature` for `domain` on top (unchanged if the domain has no
    /// key).
    pub async fn dkim_sign(&self, domain: &str, message: &[u8]) -> Result<Vec<u8>, ServiceError> {
        let Some(signer) = self.signer(domain).await? else {
            tracing::warn!(domain, "no DKIM key for this domain; sending unsigned");
            return Ok(message.to_vec());
        };
        let signature = signer
            .sign(message)
            .map_err(|e| crypto_error(&e.to_string()))?;
        let mut out = signature.to_header().into_bytes();
        out.extend_from_slice(message);
        Ok(out)
    }

    /// The DNS records to publish for `domain`: (name, type, value).
    pub async fn dns_records(
        &self,
        domain: &str,
    ) -> Result<Vec<(String, &'static str, String)>, ServiceError> {
        let host = &self.config().hostname;
        let mut records = vec![
            (format!("{domain}."), "MX", format!("10 {host}.")),
            (format!("{domain}."), "TXT", "\"v=spf1 mx -all\"".to_owned()),
        ];
        if let Some((selector, _alg, _sealed, public)) = self.store().dkim_key(domain).await? {
            let value = format!("v=DKIM1; k=rsa; p={}", published_key(&public));
            // DNS strings are at most 255 bytes: split, as zone files allow.
            let chunks: Vec<String> = value
                .as_bytes()
                .chunks(255)
                .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
                .collect();
            records.push((
                format!("{selector}._domainkey.{domain}."),
                "TXT",
                chunks.join(" "),
            ));
        }
        records.push((
            format!("_dmarc.{domain}."),
            "TXT",
            format!("\"v=DMARC1; p=quarantine; rua=mailto:postmaster@{domain}\""),
        ));
        Ok(records)
    }
}

/// The public key as DNS publishes it: SubjectPublicKeyInfo (RFC 6376 §3.6.1 says so, and
/// OpenDKIM reads `p=` with `d2i_PUBKEY`, which takes nothing else). Keys are stored as
/// ring makes them, the bare PKCS#1 `RSAPublicKey`; that is wrapped here.
fn published_key(stored_base64: &str) -> String {
    match STANDARD.decode(stored_base64) {
        Ok(der) if is_pkcs1_rsa_public_key(&der) => STANDARD.encode(spki_from_pkcs1(&der)),
        _ => stored_base64.to_owned(),
    }
}

/// A DER SEQUENCE whose first element is an INTEGER (the modulus): PKCS#1, not SPKI (whose
/// first element is the algorithm SEQUENCE).
fn is_pkcs1_rsa_public_key(der: &[u8]) -> bool {
    let Some(&0x30) = der.first() else {
        return false;
    };
    let header = match der.get(1) {
        Some(&n) if n < 0x80 => 2,
        Some(&n) => 2 + usize::from(n & 0x7f),
        None => return false,
    };
    der.get(header) == Some(&0x02)
}

/// `SEQUENCE { SEQUENCE { rsaEncryption, NULL }, BIT STRING { pkcs1 } }`.
fn spki_from_pkcs1(pkcs1: &[u8]) -> Vec<u8> {
    const RSA_ALGORITHM: [u8; 15] = [
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut bits = vec![0x00];
    bits.extend_from_slice(pkcs1);
    let mut body = RSA_ALGORITHM.to_vec();
    body.extend(der_tlv(0x03, &bits));
    der_tlv(0x30, &body)
}

fn der_tlv(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = value.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|&b| b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(value);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pkcs1_key_is_published_as_spki() {
        // The shape of a 2048-bit key: SEQUENCE (270 bytes) { INTEGER, INTEGER }.
        let mut pkcs1 = vec![0x30, 0x82, 0x01, 0x0a, 0x02, 0x82, 0x01, 0x01];
        pkcs1.resize(270, 0xab);
        let spki = STANDARD
            .decode(published_key(&STANDARD.encode(&pkcs1)))
            .unwrap();
        assert_eq!(spki.len(), 294);
        assert!(
            STANDARD
                .encode(&spki)
                .starts_with("MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8A")
        );
        assert!(spki.ends_with(&pkcs1));
        // Already SPKI: unchanged.
        let again = STANDARD.encode(&spki);
        assert_eq!(published_key(&again), again);
    }
}
