//! The two TLS client policies of delivery.
//!
//! - To a domain's MX: opportunistic (RFC 7435). Encrypt whenever the server offers it,
//!   without checking its certificate: mail servers commonly present self-signed or
//!   mismatched certificates, and refusing them would only push delivery back to plaintext.
//!   Authenticated MX delivery (MTA-STS, DANE) is a separate policy.
//! - To the operator's relay: verified. The relay is named by the operator and usually
//!   gets a password, so its certificate must chain to a trusted root (the Mozilla roots
//!   shipped in `webpki-roots`, the system's roots, and the operator's own CA file) and be
//!   valid for the relay's host name (or IP address). Otherwise anyone in the middle could
//!   take the password and every message.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The relay's TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read the relay CA file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("the relay CA file {path} holds no certificate")]
    EmptyCaFile { path: String },
    #[error("the TLS client configuration is invalid: {0}")]
    Config(#[from] rustls::Error),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The configuration of opportunistic STARTTLS to MX hosts: any certificate is accepted.
pub fn opportunistic() -> Arc<ClientConfig> {
    static CONFIG: std::sync::OnceLock<Arc<ClientConfig>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = provider();
            let config = ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map(|b| {
                    b.dangerous()
                        .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
                        .with_no_client_auth()
                });
            match config {
                Ok(c) => Arc::new(c),
                // The ring provider supports the default versions; this cannot fail.
                Err(e) => panic!("the TLS client configuration is invalid: {e}"),
            }
        })
        .clone()
}

/// The configuration of TLS to the relay: certificates are verified against the public
/// roots, the system's, and those in `ca_file` (PEM), and the name is checked.
pub fn verified(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::debug!(error = %e, "a system root certificate could not be loaded");
    }
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        let shown = path.display().to_string();
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| TlsSetupError::CaFile {
                path: shown.clone(),
                reason: e.to_string(),
            })?;
        if certs.is_empty() {
            return Err(TlsSetupError::EmptyCaFile { path: shown });
        }
        for cert in certs {
            roots.add(cert).map_err(|e| TlsSetupError::CaFile {
                path: shown.clone(),
                reason: e.to_string(),
            })?;
        }
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_ca_file_is_an_error() {
        let dir = std::env::temp_dir().join(format!("mailroom-ca-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let missing = dir.join("missing.pem");
        assert!(matches!(
            verified(Some(&missing)),
            Err(TlsSetupError::CaFile { .. })
        ));
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").expect("write a file");
        assert!(matches!(
            verified(Some(&empty)),
            Err(TlsSetupError::EmptyCaFile { .. })
        ));
        assert!(verified(None).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
