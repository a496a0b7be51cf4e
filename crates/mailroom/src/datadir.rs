//! The data directory: created on first start with what a fresh server needs, reused after.
//!
//! - `mailroom.db`: the SQLite database (unless a database URL is configured)
//! - `master.key`: the master secret, 64 hex characters, mode 0600
//! - `tls/cert.pem`, `tls/key.pem`: a self-signed certificate for the host name, unless a
//!   certificate is configured

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use mailroom_core::secret::MasterSecret;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Creates the data directory (mode 0700) if it does not exist.
pub fn ensure_dir(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        tracing::info!(dir = %dir.display(), "created the data directory");
    }
    if !dir.is_dir() {
        bail!("the data directory {} is not a directory", dir.display());
    }
    Ok(())
}

/// Writes `contents` to a new file readable only by its owner. Fails if the file exists, so
/// a secret is never overwritten.
fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(contents)?;
    f.sync_all()?;
    Ok(())
}

/// The master secret: from `given` (the environment), else `master.key` in the data
/// directory, created with mode 0600 on first start.
pub fn master_secret(dir: &Path, given: Option<&str>) -> anyhow::Result<MasterSecret> {
    if let Some(hex) = given {
        return MasterSecret::from_hex(hex)
            .map_err(|e| anyhow::anyhow!("MAILROOM_MASTER_SECRET: {e}"));
    }
    let path = dir.join("master.key");
    if path.exists() {
        let mode = fs::metadata(&path)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{:o}", mode & 0o777),
                "the master secret is readable by other users; run chmod 600 on it"
            );
        }
        let text =
            fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        return MasterSecret::from_hex(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()));
    }
    let secret = MasterSecret::generate();
    write_private(&path, format!("{}\n", secret.to_hex()).as_bytes())?;
    tracing::info!(path = %path.display(), "created the master secret; back it up with the database");
    Ok(secret)
}

/// The certificate chain and key files to serve: the configured ones, or a self-signed pair
/// in `<data>/tls/`, created on first start for `hostname`.
pub fn tls_files(
    dir: &Path,
    hostname: &str,
    configured: Option<(&Path, &Path)>,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    if let Some((cert, key)) = configured {
        return Ok((cert.to_owned(), key.to_owned()));
    }
    let tls_dir = dir.join("tls");
    let cert = tls_dir.join("cert.pem");
    let key = tls_dir.join("key.pem");
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    fs::create_dir_all(&tls_dir)?;
    let mut names = vec![hostname.to_owned()];
    for extra in ["localhost", "127.0.0.1", "::1"] {
        if !names.iter().any(|n| n == extra) {
            names.push(extra.to_owned());
        }
    }
    let generated = rcgen::generate_simple_self_signed(names)
        .context("cannot generate a self-signed certificate")?;
    // Remove a half-written pair from an interrupted first start before writing anew.
    let _ = fs::remove_file(&cert);
    let _ = fs::remove_file(&key);
    write_private(&key, generated.signing_key.serialize_pem().as_bytes())?;
    fs::write(&cert, generated.cert.pem())?;
    tracing::info!(cert = %cert.display(), hostname, "created a self-signed TLS certificate");
    Ok((cert, key))
}

/// A rustls server configuration from PEM files, offering `alpn` protocols.
pub fn tls_config(cert: &Path, key: &Path, alpn: &[&[u8]]) -> anyhow::Result<Arc<ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read the TLS certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} holds no valid PEM certificate", cert.display()))?;
    if certs.is_empty() {
        bail!("{} holds no certificate", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read the TLS private key {}", key.display()))?;
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .context("the TLS certificate and key do not match")?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_start_creates_private_secret_and_certificate_then_reuses_them() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        ensure_dir(&data).unwrap();
        assert_eq!(
            fs::metadata(&data).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let s1 = master_secret(&data, None).unwrap();
        let mode = fs::metadata(data.join("master.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let s2 = master_secret(&data, None).unwrap();
        assert_eq!(s1.to_hex(), s2.to_hex());
        let (cert, key) = tls_files(&data, "mail.test", None).unwrap();
        let pem = fs::read_to_string(&cert).unwrap();
        assert!(pem.contains("BEGIN CERTIFICATE"));
        assert_eq!(
            fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        tls_config(&cert, &key, &[b"http/1.1"]).unwrap();
        let (cert2, _) = tls_files(&data, "mail.test", None).unwrap();
        assert_eq!(fs::read_to_string(cert2).unwrap(), pem);
    }

    #[test]
    fn a_given_secret_wins_and_a_bad_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let hex = "11".repeat(32);
        assert_eq!(master_secret(dir.path(), Some(&hex)).unwrap().to_hex(), hex);
        assert!(!dir.path().join("master.key").exists());
        assert!(master_secret(dir.path(), Some("nothex")).is_err());
    }
}
