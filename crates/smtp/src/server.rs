//! Accepting SMTP connections: the shared accept loop of `mailroom_net` with SMTP's words
//! for a refusal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mailroom_net::{Door, Gate, Permit, Refused};
use mailroom_services::Services;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_util::sync::CancellationToken;

use crate::SmtpConfig;
use crate::session::{Session, run_session, run_tls_session};

/// Which service a listener offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Inbound mail for hosted inboxes (port 25): no AUTH, never relays.
    Mx,
    /// Mail from authenticated clients (587 with STARTTLS, 465 with implicit TLS).
    Submission,
}

/// What every SMTP session of one kind shares; both submission listeners share one, so
/// an address's connection budget counts both ports.
pub struct SmtpServer {
    pub services: Services,
    pub config: SmtpConfig,
    pub tls: Arc<ServerConfig>,
    pub kind: Kind,
    gate: Arc<Gate>,
}

impl SmtpServer {
    pub fn new(
        services: Services,
        config: SmtpConfig,
        tls: Arc<ServerConfig>,
        kind: Kind,
    ) -> SmtpServer {
        let door = match kind {
            Kind::Mx => Door::Smtp,
            Kind::Submission => Door::Submission,
        };
        let gate = Gate::new(door, config.connections.clone());
        SmtpServer {
            services,
            config,
            tls,
            kind,
            gate,
        }
    }

    pub(crate) fn tls_acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.tls.clone())
    }

    pub(crate) fn door(&self) -> Door {
        self.gate.door()
    }
}

/// How long sessions in flight may take to finish after shutdown is asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// The reply to a connection over the budget (RFC 5321 §3.1: a `421` greeting, then close).
fn refusal(why: Refused) -> String {
    format!("421 4.7.0 {why}\r\n")
}

/// Accepts connections on `listener` until `shutdown`, then waits for sessions in flight.
/// `implicit_tls`: port 465 (TLS from the first byte).
pub async fn serve(
    listener: TcpListener,
    server: Arc<SmtpServer>,
    implicit_tls: bool,
    shutdown: CancellationToken,
) {
    let gate = server.gate.clone();
    let stop = shutdown.clone();
    mailroom_net::serve(
        listener,
        gate,
        shutdown,
        SHUTDOWN_GRACE,
        refusal,
        move |stream, peer, permit| {
            handle(
                stream,
                peer,
                permit,
                server.clone(),
                implicit_tls,
                stop.clone(),
            )
        },
    )
    .await;
}

async fn handle(
    stream: TcpStream,
    peer: SocketAddr,
    permit: Permit,
    server: Arc<SmtpServer>,
    implicit_tls: bool,
    stop: CancellationToken,
) {
    metrics::counter!("mailroom_smtp_sessions_total", "door" => server.door().as_str())
        .increment(1);
    let session = Session::new(server, peer, permit);
    if implicit_tls {
        run_tls_session(stream, session, stop).await;
    } else {
        run_session(stream, session, stop).await;
    }
}
