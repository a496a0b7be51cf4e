//! Accepting SMTP connections.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mailroom_services::Services;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::SmtpConfig;
use crate::session::{Session, run_session};

/// Which service a listener offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Inbound mail for hosted inboxes (port 25): no AUTH, never relays.
    Mx,
    /// Mail from authenticated clients (587 with STARTTLS, or 465 with `implicit_tls`).
    Submission { implicit_tls: bool },
}

/// What every SMTP session shares.
pub struct SmtpServer {
    pub services: Services,
    pub config: SmtpConfig,
    pub tls: Arc<ServerConfig>,
    pub kind: Kind,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    total: Mutex<usize>,
}

impl SmtpServer {
    pub fn new(
        services: Services,
        config: SmtpConfig,
        tls: Arc<ServerConfig>,
        kind: Kind,
    ) -> SmtpServer {
        SmtpServer {
            services,
            config,
            tls,
            kind,
            per_ip: Mutex::new(HashMap::new()),
            total: Mutex::new(0),
        }
    }

    pub(crate) fn tls_acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.tls.clone())
    }

    /// Takes a connection slot for `ip`, or says which limit is full.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, &'static str> {
        let mut total = self.total.lock().unwrap_or_else(|e| e.into_inner());
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if *total >= self.config.max_connections {
            return Err("too many connections; try again later");
        }
        let n = per_ip.entry(ip).or_insert(0);
        if *n >= self.config.max_connections_per_ip {
            return Err("too many connections from your address; try again later");
        }
        *n += 1;
        *total += 1;
        Ok(Slot {
            server: self.clone(),
            ip,
        })
    }
}

/// A held connection slot, released on drop.
struct Slot {
    server: Arc<SmtpServer>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut total = self.server.total.lock().unwrap_or_else(|e| e.into_inner());
        let mut per_ip = self.server.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        *total = total.saturating_sub(1);
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

/// How long sessions in flight may take to finish after shutdown is asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Accepts connections on `listener` until `shutdown`, then waits for sessions in flight.
pub async fn serve(listener: TcpListener, server: Arc<SmtpServer>, shutdown: CancellationToken) {
    let tracker = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "SMTP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let server = server.clone();
        let stop = shutdown.clone();
        tracker.spawn(async move { handle(stream, peer, server, stop).await });
    }
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("SMTP sessions still open after the grace period; closing them");
    }
}

async fn handle(
    mut stream: TcpStream,
    peer: SocketAddr,
    server: Arc<SmtpServer>,
    stop: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let slot = match server.admit(peer.ip()) {
        Ok(slot) => slot,
        Err(why) => {
            metrics::counter!("mailroom_smtp_connections_refused_total").increment(1);
            let _ = stream
                .write_all(format!("421 4.7.0 {} {why}\r\n", server.config.hostname).as_bytes())
                .await;
            return;
        }
    };
    metrics::counter!("mailroom_smtp_sessions_total").increment(1);
    let session = Session::new(server.clone(), peer);
    if matches!(server.kind, Kind::Submission { implicit_tls: true }) {
        crate::session::run_tls_session(stream, session, stop).await;
    } else {
        run_session(stream, session, stop).await;
    }
    drop(slot);
}
