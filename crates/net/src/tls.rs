//! The TLS handshake, with a deadline: a client that connects and then sends nothing (or
//! a byte a minute) must not hold a connection slot for longer than the handshake may take.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::{Door, refused};

/// Runs the server side of a handshake on `stream`; `None` when it failed or took longer
/// than `timeout` (counted as a `tls_handshake_timeout` refusal).
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    acceptor: &TlsAcceptor,
    stream: S,
    timeout: Duration,
    door: Door,
) -> Option<TlsStream<S>> {
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::debug!(%door, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            refused(door, "tls_handshake_timeout");
            tracing::debug!(%door, "TLS handshake timed out");
            None
        }
    }
}
