//! Serving the router over plain TCP or TLS, with a connection budget, a deadline for
//! request headers (slowloris), and graceful shutdown.
//!
//! This is our own accept loop over hyper rather than `axum::serve`, which has no
//! connection cap and no way to set hyper's header-read timeout. Each accepted connection
//! is admitted through the HTTP door's [`Gate`] first; only then does its TLS handshake
//! (with a deadline) and HTTP run, in the connection's own task, so a client that connects
//! and sends nothing holds up nobody and costs one slot for a bounded time.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::extract::connect_info::Connected;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use mailroom_net::{ConnLimits, Door, Gate, Permit, Refused, refused};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tower::{Service, ServiceExt as _};

/// The peer of a connection, and whether it came over TLS. Handlers read it through
/// `ConnectInfo<PeerAddr>`.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr {
    pub addr: SocketAddr,
    pub tls: bool,
}

impl Connected<PeerAddr> for PeerAddr {
    fn connect_info(peer: PeerAddr) -> Self {
        peer
    }
}

/// The HTTP door's budgets.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Connections at once, in all and per address; the TLS handshake deadline.
    pub connections: ConnLimits,
    /// How long a client may take to send a request's headers, from the first byte of a
    /// request (or the connection's start) to the blank line after its headers.
    pub header_read_timeout: Duration,
    /// How long requests in flight may take to finish after shutdown is asked for.
    pub shutdown_grace: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        let mut connections = ConnLimits::new(10_000, 256);
        // A connection over the budget is refused at once: HTTP clients retry on 503.
        connections.per_ip_wait = Duration::ZERO;
        connections.tls_handshake_timeout = Duration::from_secs(10);
        HttpLimits {
            connections,
            header_read_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// The answer to a plain-HTTP connection over the budget, written before it is closed.
fn refusal_response(why: Refused) -> String {
    let body = format!(
        "{{\"error\":\"TOO_MANY_CONNECTIONS\",\"message\":\"{why}\",\"next_steps\":[\"Close idle connections or reuse one keep-alive connection, then retry.\"]}}"
    );
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Serves `router` on `tcp` (over TLS when `tls` is given) until `shutdown` completes,
/// then lets requests in flight finish (up to [`HttpLimits::shutdown_grace`]).
pub async fn serve(
    tcp: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    router: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let gate = Gate::new(Door::Http, limits.connections.clone());
    let make = router.into_make_service_with_connect_info::<PeerAddr>();
    let acceptor = tls.map(TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    // CONNECT for HTTP/2 WebSockets, as axum::serve does.
    builder
        .http2()
        .timer(TokioTimer::new())
        .enable_connect_protocol();
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        let (stream, addr) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = tcp.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let conn = Connection {
            gate: gate.clone(),
            acceptor: acceptor.clone(),
            make: make.clone(),
            builder: builder.clone(),
            handshake_timeout: limits.connections.tls_handshake_timeout,
        };
        let watcher = graceful.watcher();
        tokio::spawn(async move { conn.run(stream, addr, watcher).await });
    }
    drop(tcp);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTP connections still open after the grace period; closing them");
    }
    Ok(())
}

type MakeService = axum::extract::connect_info::IntoMakeServiceWithConnectInfo<Router, PeerAddr>;

/// What one connection's task needs.
struct Connection {
    gate: Arc<Gate>,
    acceptor: Option<TlsAcceptor>,
    make: MakeService,
    builder: Arc<Builder<TokioExecutor>>,
    handshake_timeout: Duration,
}

impl Connection {
    async fn run(
        self,
        mut stream: TcpStream,
        addr: SocketAddr,
        watcher: hyper_util::server::graceful::Watcher,
    ) {
        let permit = match self.gate.admit(addr.ip()).await {
            Ok(p) => p,
            Err(why) => {
                refused(Door::Http, why.reason());
                if self.acceptor.is_none() {
                    let answer = refusal_response(why);
                    let write = stream.write_all(answer.as_bytes());
                    let _ = tokio::time::timeout(Duration::from_secs(5), write).await;
                }
                return;
            }
        };
        match &self.acceptor {
            None => {
                let peer = PeerAddr { addr, tls: false };
                self.http(stream, peer, permit, watcher).await;
            }
            Some(acceptor) => {
                let handshake = mailroom_net::tls::handshake(
                    acceptor,
                    stream,
                    self.handshake_timeout,
                    Door::Http,
                );
                if let Some(tls) = handshake.await {
                    let peer = PeerAddr { addr, tls: true };
                    self.http(tls, peer, permit, watcher).await;
                }
            }
        }
    }

    async fn http<S>(
        &self,
        io: S,
        peer: PeerAddr,
        _permit: Permit,
        watcher: hyper_util::server::graceful::Watcher,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut make = self.make.clone();
        let service = match Service::<PeerAddr>::call(&mut make, peer).await {
            Ok(s) => s,
            Err(e) => match e {},
        }
        .map_request(|req: Request<Incoming>| req.map(Body::new));
        let hyper_service = TowerToHyperService::new(service);
        let conn = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), hyper_service);
        if let Err(e) = watcher.watch(conn).await {
            tracing::debug!(peer = %peer.addr, error = %e, "HTTP connection ended with an error");
        }
    }
}
