//! The IMAP server (RFC 9051 IMAP4rev2 and RFC 3501 IMAP4rev1) over the same store as the
//! HTTP API: the mailboxes of one inbox, seen through an inbox key (or an API key with the
//! `imap` scope).
//!
//! Commands are parsed with `imap-codec`; this crate frames them (lines and literals, with
//! limits), runs the state machine (`session`) and writes the answers. One truth with the
//! API: `\Seen` is the API's `read`, an APPENDed message is an API message, and flags,
//! moves and deletions are the same rows.

mod cache;
mod conn;
mod flags;
mod fmt;
mod mime;
mod search;
mod session;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use imap_codec::CommandCodec;
use imap_codec::decode::Decoder;
use mailroom_services::Services;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use conn::Frame;
use session::{Next, Out, Session};

/// RFC 9051 §5.4: the autologout timer is at least 30 minutes.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Before login a client gets less time and smaller literals (enough for LOGIN and
/// AUTHENTICATE), so that unauthenticated connections cost little.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(120);
const LOGIN_MAX_LITERAL: u64 = 8 * 1024;
/// Sessions at once, over both listeners.
const MAX_SESSIONS: usize = 20_000;
/// Sessions at once from one address (a whole office behind one NAT still fits). Loopback
/// is not limited: a local proxy or webmail brings everyone's connections from there.
const MAX_SESSIONS_PER_IP: usize = 500;
/// The read buffer of a connection: small, so that idle connections cost little; longer
/// lines and literals still work (they grow their own buffers).
const READ_BUFFER: usize = 2048;

/// What every IMAP session shares.
pub struct ImapServer {
    pub services: Services,
    pub tls: Arc<ServerConfig>,
    /// Allow LOGIN and AUTHENTICATE without TLS from loopback addresses (`--dev`).
    pub plaintext_on_loopback: bool,
    pub hostname: String,
    pub idle_timeout: Duration,
    /// Largest message APPEND accepts (the SMTP size limit).
    pub max_message_size: u64,
    /// Bumped whenever a session changes a mailbox, so that IDLE sessions look at once.
    changes: tokio::sync::watch::Sender<u64>,
    sessions: AtomicUsize,
    per_ip: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
    /// Header blocks by blob hash (SEARCH on header keys).
    headers: cache::HeaderCache,
    /// Group commit of flag changes.
    flags: flags::FlagWriter,
}

impl ImapServer {
    /// Needs a Tokio runtime (it starts the flag committer).
    pub fn new(
        services: Services,
        tls: Arc<ServerConfig>,
        plaintext_on_loopback: bool,
        hostname: String,
        max_message_size: u64,
    ) -> ImapServer {
        let flags = flags::FlagWriter::start(services.store().clone());
        ImapServer {
            services,
            tls,
            plaintext_on_loopback,
            hostname,
            idle_timeout: IDLE_TIMEOUT,
            max_message_size,
            changes: tokio::sync::watch::Sender::new(0),
            sessions: AtomicUsize::new(0),
            per_ip: Default::default(),
            headers: cache::HeaderCache::default(),
            flags,
        }
    }

    /// Tells IDLE sessions that something changed.
    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Counts a session from `ip`; `false` (and nothing counted) when that address has
    /// its share already.
    fn admit(&self, ip: std::net::IpAddr) -> bool {
        if ip.is_loopback() {
            return true;
        }
        let mut map = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= MAX_SESSIONS_PER_IP {
            return false;
        }
        *n += 1;
        true
    }

    fn release(&self, ip: std::net::IpAddr) {
        if ip.is_loopback() {
            return;
        }
        let mut map = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&ip);
            }
        }
    }
}

/// Accepts connections on one listener until `shutdown`, then gives sessions a few seconds
/// to finish. `implicit_tls`: port 993 (TLS from the first byte); otherwise 143 with
/// STARTTLS. Both listeners share one [`ImapServer`], so IDLE sessions on either hear of
/// changes made on the other.
pub async fn serve(
    listener: TcpListener,
    server: Arc<ImapServer>,
    implicit_tls: bool,
    shutdown: CancellationToken,
) {
    let tracker = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "IMAP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let server = server.clone();
        let stop = shutdown.clone();
        tracker.spawn(async move {
            let total_ok = server.sessions.fetch_add(1, Ordering::Relaxed) < MAX_SESSIONS;
            if total_ok && server.admit(peer.ip()) {
                handle(stream, peer, server.clone(), implicit_tls, stop).await;
                server.release(peer.ip());
            } else {
                metrics::counter!("mailroom_imap_refused_total").increment(1);
                let mut stream = stream;
                let bye = stream
                    .write_all(b"* BYE [UNAVAILABLE] too many connections; try again later\r\n");
                let _ = tokio::time::timeout(Duration::from_secs(5), bye).await;
            }
            server.sessions.fetch_sub(1, Ordering::Relaxed);
        });
    }
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(10), tracker.wait()).await;
}

async fn handle(
    stream: TcpStream,
    peer: SocketAddr,
    server: Arc<ImapServer>,
    implicit_tls: bool,
    stop: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    metrics::counter!("mailroom_imap_sessions_total").increment(1);
    let mut session = Session::new(server.clone(), peer, false);
    if implicit_tls {
        let Ok(Ok(tls)) = tokio::time::timeout(
            Duration::from_secs(30),
            TlsAcceptor::from(server.tls.clone()).accept(stream),
        )
        .await
        else {
            return;
        };
        session.tls = true;
        let _ = run(tls, &mut session, &stop, true).await;
        return;
    }
    if let Some(plain) = run(stream, &mut session, &stop, true).await {
        let Ok(Ok(tls)) = tokio::time::timeout(
            Duration::from_secs(30),
            TlsAcceptor::from(server.tls.clone()).accept(plain),
        )
        .await
        else {
            return;
        };
        session.tls = true;
        let _ = run(tls, &mut session, &stop, false).await;
    }
}

/// Serves commands over one stream. STARTTLS hands the plain stream back to be wrapped;
/// anything the client pipelined after STARTTLS is dropped with the read buffer.
async fn run<S: AsyncRead + AsyncWrite + Unpin + Send>(
    stream: S,
    s: &mut Session,
    stop: &CancellationToken,
    greet: bool,
) -> Option<S> {
    let mut conn = BufReader::with_capacity(READ_BUFFER, stream);
    let mut out = Out::new();
    if greet {
        out.line(&format!(
            "* OK [CAPABILITY {}] {} Mailroom IMAP ready",
            s.capabilities(),
            s.server.hostname
        ));
        out.flush(conn.get_mut()).await.ok()?;
    }
    loop {
        let (max_literal, timeout) = if s.logged_in() {
            (s.server.max_message_size, s.server.idle_timeout)
        } else {
            (LOGIN_MAX_LITERAL, LOGIN_TIMEOUT.min(s.server.idle_timeout))
        };
        let max_command = max_literal + conn::MAX_LINE as u64 * 4;
        let frame = tokio::select! {
            r = tokio::time::timeout(timeout, conn::read_command(&mut conn, max_literal, max_command)) => r,
            _ = stop.cancelled() => {
                out.line("* BYE server shutting down");
                let _ = out.flush(conn.get_mut()).await;
                return None;
            }
        };
        let frame = match frame {
            Err(_) => {
                out.line("* BYE autologout: idle for too long");
                let _ = out.flush(conn.get_mut()).await;
                return None;
            }
            Ok(Err(_)) | Ok(Ok(Frame::Eof)) => return None,
            Ok(Ok(f)) => f,
        };
        let mut next = Next::Continue;
        match frame {
            Frame::Eof => return None,
            Frame::Fatal(why) => {
                out.line(&format!("* BYE [TOOBIG] {why}"));
                let _ = out.flush(conn.get_mut()).await;
                return None;
            }
            Frame::LineTooLong(buf) => {
                let tag = conn::tag_of(&buf);
                if !s.bad(&mut out, &tag, "line too long") {
                    next = Next::Logout;
                }
            }
            Frame::LiteralTooBig(buf) => {
                let tag = conn::tag_of(&buf);
                out.line(&format!(
                    "{tag} NO [TOOBIG] literal too big (at most {max_literal} octets)"
                ));
            }
            Frame::Command(buf) => match CommandCodec::default().decode(&buf) {
                // Boxed: the command's state lives on the heap only while it runs, so an
                // idle session's task stays small.
                Ok((_, cmd)) => match Box::pin(s.handle(cmd, &mut conn, &mut out, stop)).await {
                    Ok(n) => next = n,
                    Err(_) => return None,
                },
                Err(_) => {
                    let tag = conn::tag_of(&buf);
                    let word = buf
                        .split(|&b| b == b' ' || b == b'\r')
                        .nth(1)
                        .map(|w| {
                            String::from_utf8_lossy(&w[..w.len().min(32)]).to_ascii_uppercase()
                        })
                        .unwrap_or_default();
                    let text = if word.is_empty() {
                        "missing command".to_owned()
                    } else {
                        format!("{word}: unknown command or invalid arguments")
                    };
                    if !s.bad(&mut out, &tag, &text) {
                        next = Next::Logout;
                    }
                }
            },
        }
        out.flush(conn.get_mut()).await.ok()?;
        if s.closing {
            next = Next::Logout;
        }
        match next {
            Next::Continue => {}
            Next::Logout => {
                let _ =
                    tokio::time::timeout(Duration::from_secs(5), conn.get_mut().shutdown()).await;
                return None;
            }
            Next::StartTls => return Some(conn.into_inner()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_parses_what_clients_send() {
        for line in [
            "a LIST \"\" *\r\n",
            "a LIST \"\" Old*\r\n",
            "a LIST \"\" \"Old*\"\r\n",
        ] {
            let r = CommandCodec::default().decode(line.as_bytes());
            assert!(r.is_ok(), "{line}: {r:?}");
        }
    }
}
