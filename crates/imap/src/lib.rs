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
mod limits;
mod mime;
mod op;
mod quota;
mod search;
mod session;
mod view;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use imap_codec::CommandCodec;
use imap_codec::decode::Decoder;
use mailroom_net::{ConnLimits, Door, Gate, Refused};
use mailroom_services::Services;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_util::sync::CancellationToken;

use conn::{Frame, ReadLimits};
pub use limits::ImapLimits;
use limits::LiteralBudget;
use session::{Next, Out, Session};

/// RFC 9051 §5.4: the autologout timer is at least 30 minutes.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Before login a client gets less time and smaller literals (enough for LOGIN and
/// AUTHENTICATE), so that unauthenticated connections cost little.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(120);
const LOGIN_MAX_LITERAL: u64 = 8 * 1024;
/// How long sessions in flight may take to finish after shutdown is asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
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
    /// Sessions at once over both listeners, and per address.
    gate: Arc<Gate>,
    /// The per-command budgets (FETCH items, SEARCH keys and time, literal deadline).
    pub limits: ImapLimits,
    /// Bytes of literals in flight over the whole server.
    literals: LiteralBudget,
    /// Slots per account for SEARCH matching on the blocking pool.
    search_slots: limits::AccountSlots,
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
        limits: ImapLimits,
    ) -> ImapServer {
        let flags = flags::FlagWriter::start(services.store().clone());
        ImapServer {
            services,
            tls,
            plaintext_on_loopback,
            hostname,
            idle_timeout: IDLE_TIMEOUT,
            max_message_size,
            gate: Gate::new(Door::Imap, limits.connections.clone()),
            literals: LiteralBudget::new(limits.literal_budget),
            search_slots: limits::AccountSlots::new(limits.search_concurrency_per_account),
            limits,
            headers: cache::HeaderCache::default(),
            flags,
        }
    }
}

/// The default connection budget: 20,000 sessions over both listeners, 500 per address (a
/// whole office behind one NAT still fits). Loopback is not limited per address: a local
/// proxy or webmail brings everyone's connections from there.
pub fn default_connections() -> ConnLimits {
    let mut limits = ConnLimits::new(20_000, 500);
    limits.exempt_loopback = true;
    limits
}

/// RFC 9051 §7.1.5: `BYE` before closing, with a response code saying why.
fn refusal(why: Refused) -> String {
    format!("* BYE [UNAVAILABLE] {why}\r\n")
}

/// Accepts connections on one listener until `shutdown`, then gives sessions a few seconds
/// to finish. `implicit_tls`: port 993 (TLS from the first byte); otherwise 143 with
/// STARTTLS. Both listeners share one [`ImapServer`] (and so one connection budget), so
/// IDLE sessions on either hear of changes made on the other.
pub async fn serve(
    listener: TcpListener,
    server: Arc<ImapServer>,
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
            let (server, stop) = (server.clone(), stop.clone());
            async move {
                handle(stream, peer, server, implicit_tls, stop).await;
                drop(permit);
            }
        },
    )
    .await;
}

async fn handle(
    stream: TcpStream,
    peer: SocketAddr,
    server: Arc<ImapServer>,
    implicit_tls: bool,
    stop: CancellationToken,
) {
    metrics::counter!("mailroom_imap_sessions_total").increment(1);
    let mut session = Session::new(server.clone(), peer, false);
    let acceptor = TlsAcceptor::from(server.tls.clone());
    let handshake_timeout = server.gate.limits().tls_handshake_timeout;
    if implicit_tls {
        let Some(tls) =
            mailroom_net::tls::handshake(&acceptor, stream, handshake_timeout, Door::Imap).await
        else {
            return;
        };
        session.tls = true;
        let _ = run(tls, &mut session, &stop, true).await;
        return;
    }
    if let Some(plain) = run(stream, &mut session, &stop, true).await {
        let Some(tls) =
            mailroom_net::tls::handshake(&acceptor, plain, handshake_timeout, Door::Imap).await
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
        let bounds = ReadLimits {
            max_literal,
            max_command: max_literal + conn::MAX_LINE as u64 * 4,
            budget: &s.server.literals,
            deadline: s.server.limits.literal_deadline,
        };
        let frame = tokio::select! {
            r = tokio::time::timeout(timeout, conn::read_command(&mut conn, &bounds)) => r,
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
            Frame::Fatal(buf, why) => {
                limits::refused(why.reason());
                let tag = conn::tag_of(&buf);
                out.line(&match why {
                    conn::Fatal::TooBig => format!("{tag} BAD [TOOBIG] literal too big"),
                    conn::Fatal::NoBudget => {
                        format!("{tag} BAD [LIMIT] server busy: no room for this literal")
                    }
                    conn::Fatal::Deadline => {
                        format!("{tag} BAD [LIMIT] command not received in time")
                    }
                });
                out.line("* BYE closing: the rest of this command cannot be read");
                let _ = out.flush(conn.get_mut()).await;
                return None;
            }
            Frame::LineTooLong(buf) => {
                let tag = conn::tag_of(&buf);
                if !s.bad(&mut out, &tag, "line too long") {
                    next = Next::Logout;
                }
            }
            Frame::NoBudget(buf) => {
                limits::refused("literal_budget");
                let tag = conn::tag_of(&buf);
                out.line(&format!(
                    "{tag} NO [LIMIT] server busy with other uploads; try again later"
                ));
            }
            Frame::LiteralTooBig(buf) => {
                limits::refused("literal_too_big");
                let tag = conn::tag_of(&buf);
                out.line(&format!(
                    "{tag} NO [TOOBIG] literal too big (at most {max_literal} octets)"
                ));
            }
            // The grant is held until the command has been handled.
            Frame::Command(buf, _grant) => match CommandCodec::default().decode(&buf) {
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
