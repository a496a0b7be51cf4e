//! The POP3 server (RFC 1939, with CAPA from RFC 2449 and STLS from RFC 2595), over the same
//! store as the HTTP API: the INBOX mailbox of one inbox, seen through an inbox key.
//!
//! One truth with the API: RETR marks a message read (`\Seen`), and a message deleted with
//! DELE moves to Trash at QUIT, exactly as `DELETE /v1/inboxes/{id}/messages/{mid}` does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mailroom_net::sasl::{self, SaslError};
use mailroom_net::{ConnLimits, Door, Gate, Permit, Refused};
use mailroom_services::Services;
use mailroom_services::submission::LoginRefused;
use mailroom_store::{MessageQuery, MessageRow};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_util::sync::CancellationToken;

/// The longest command line accepted (RFC 2449 §4: 255 octets).
const MAX_LINE: usize = 512;
/// How long sessions in flight may take to finish after shutdown is asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long an answer may wait for a client that does not read it.
const WRITE_TIMEOUT: Duration = Duration::from_secs(120);

/// Limits of the POP3 server.
#[derive(Debug, Clone)]
pub struct Pop3Config {
    /// Sessions at once, in all and per address, and the TLS handshake deadline.
    pub connections: ConnLimits,
    /// Autologout (RFC 1939 §3: at least 10 minutes) while logged in.
    pub idle_timeout: Duration,
    /// Time to log in: the greeting to a successful login, including any AUTH exchange.
    pub login_timeout: Duration,
    /// Messages one session sees at most (the oldest first).
    pub max_messages: u32,
}

impl Default for Pop3Config {
    fn default() -> Self {
        let mut connections = ConnLimits::new(5000, 50);
        // A local webmail or proxy brings everyone's connections from loopback.
        connections.exempt_loopback = true;
        Pop3Config {
            connections,
            idle_timeout: Duration::from_secs(600),
            login_timeout: Duration::from_secs(120),
            max_messages: 10_000,
        }
    }
}

/// What every POP3 session shares (both listeners share one, and one connection budget).
pub struct Pop3Server {
    pub services: Services,
    pub tls: Arc<ServerConfig>,
    /// Allow USER/PASS and AUTH without TLS from loopback addresses (`--dev`).
    pub plaintext_on_loopback: bool,
    pub hostname: String,
    pub config: Pop3Config,
    gate: Arc<Gate>,
}

impl Pop3Server {
    pub fn new(
        services: Services,
        tls: Arc<ServerConfig>,
        config: Pop3Config,
        plaintext_on_loopback: bool,
        hostname: String,
    ) -> Pop3Server {
        let gate = Gate::new(Door::Pop3, config.connections.clone());
        Pop3Server {
            services,
            tls,
            plaintext_on_loopback,
            hostname,
            config,
            gate,
        }
    }
}

/// RFC 2449 §8.1.2: `[SYS/TEMP]` says the refusal is temporary.
fn refusal(why: Refused) -> String {
    format!("-ERR [SYS/TEMP] {why}\r\n")
}

/// Accepts connections until `shutdown`, then gives sessions a few seconds to finish.
/// `implicit_tls`: port 995 (TLS from the first byte); otherwise 110 with STLS.
pub async fn serve(
    listener: TcpListener,
    server: Arc<Pop3Server>,
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
    _permit: Permit,
    server: Arc<Pop3Server>,
    implicit_tls: bool,
    stop: CancellationToken,
) {
    metrics::counter!("mailroom_pop3_sessions_total").increment(1);
    let mut session = Session {
        server: server.clone(),
        peer,
        tls: false,
        user: None,
        mailbox: None,
        login_deadline: tokio::time::Instant::now() + server.config.login_timeout,
    };
    let acceptor = TlsAcceptor::from(server.tls.clone());
    let handshake_timeout = server.config.connections.tls_handshake_timeout;
    if implicit_tls {
        let Some(tls) =
            mailroom_net::tls::handshake(&acceptor, stream, handshake_timeout, Door::Pop3).await
        else {
            return;
        };
        session.tls = true;
        let _ = run(tls, &mut session, &stop, true).await;
        return;
    }
    if let Some(plain) = run(stream, &mut session, &stop, true).await {
        let Some(tls) =
            mailroom_net::tls::handshake(&acceptor, plain, handshake_timeout, Door::Pop3).await
        else {
            return;
        };
        session.tls = true;
        let _ = run(tls, &mut session, &stop, false).await;
    }
}

struct Session {
    server: Arc<Pop3Server>,
    peer: SocketAddr,
    tls: bool,
    /// USER given, waiting for PASS.
    user: Option<String>,
    /// After login: the inbox and its messages as of login, with deletion marks.
    mailbox: Option<Mailbox>,
    /// A session that has not logged in by then is closed.
    login_deadline: tokio::time::Instant,
}

impl Session {
    /// How long the next read may wait: the idle timeout, or before login what is left
    /// of the time to log in.
    fn read_timeout(&self) -> (Duration, &'static str) {
        if self.mailbox.is_some() {
            return (self.server.config.idle_timeout, "idle_timeout");
        }
        let left = self
            .login_deadline
            .saturating_duration_since(tokio::time::Instant::now());
        (left.min(self.server.config.idle_timeout), "login_timeout")
    }
}

/// Writes `bytes` within [`WRITE_TIMEOUT`]: a client that stops reading is dropped instead
/// of holding its session (and the answer) for ever.
async fn send<S: AsyncWrite + Unpin>(conn: &mut S, bytes: &[u8]) -> Option<()> {
    match tokio::time::timeout(WRITE_TIMEOUT, conn.write_all(bytes)).await {
        Ok(Ok(())) => Some(()),
        Ok(Err(_)) => None,
        Err(_) => {
            mailroom_net::refused(Door::Pop3, "write_timeout");
            None
        }
    }
}

struct Mailbox {
    inbox_id: String,
    messages: Vec<MessageRow>,
    deleted: Vec<bool>,
    /// The key the session logged in with, asked again before each command, so that
    /// revoking it (or deleting the inbox) ends the session. (No `Debug` here.)
    secret: String,
}

impl Mailbox {
    /// The message numbered `arg` (1-based) if it exists and is not marked deleted.
    fn get(&self, arg: Option<&str>) -> Result<(usize, &MessageRow), &'static str> {
        let n: usize = arg
            .and_then(|a| a.parse().ok())
            .ok_or("-ERR give a message number")?;
        if n == 0 || n > self.messages.len() {
            return Err("-ERR no such message");
        }
        if self.deleted[n - 1] {
            return Err("-ERR message already deleted");
        }
        Ok((n, &self.messages[n - 1]))
    }
}

/// What ended a run over one stream: STLS hands the plain stream back to be wrapped.
async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    s: &mut Session,
    stop: &CancellationToken,
    greet: bool,
) -> Option<S> {
    let mut conn = BufReader::new(stream);
    if greet {
        let hello = format!("+OK {} POP3 Mailroom ready\r\n", s.server.hostname);
        send(conn.get_mut(), hello.as_bytes()).await?;
    }
    let mut line = Vec::new();
    loop {
        line.clear();
        let (timeout, why) = s.read_timeout();
        let read = {
            let mut limited = (&mut conn).take(MAX_LINE as u64 + 1);
            tokio::select! {
                r = tokio::time::timeout(timeout, limited.read_until(b'\n', &mut line)) => Some(r),
                _ = stop.cancelled() => None,
            }
        };
        let Some(read) = read else {
            let _ = send(conn.get_mut(), b"-ERR server shutting down\r\n").await;
            return None;
        };
        match read {
            Err(_) => {
                mailroom_net::refused(Door::Pop3, why);
                let bye: &[u8] = if why == "login_timeout" {
                    b"-ERR too long without logging in\r\n"
                } else {
                    b"-ERR autologout: idle too long\r\n"
                };
                let _ = send(conn.get_mut(), bye).await;
                return None;
            }
            Ok(Err(_)) | Ok(Ok(0)) => return None,
            Ok(Ok(_)) => {}
        }
        if !line.ends_with(b"\n") {
            // Over-long line: drop the rest of it.
            let mut rest = Vec::new();
            let mut limited = (&mut conn).take(64 * 1024);
            let skip = limited.read_until(b'\n', &mut rest);
            if !matches!(tokio::time::timeout(timeout, skip).await, Ok(Ok(n)) if n > 0) {
                return None;
            }
            send(conn.get_mut(), b"-ERR line too long\r\n").await?;
            continue;
        }
        if let Some(mb) = &s.mailbox
            && !s
                .server
                .services
                .mail_key_still_valid("pop3", &mb.secret, &mb.inbox_id)
                .await
        {
            // Nothing marked for deletion is applied: the session did not end with QUIT.
            let _ = send(
                conn.get_mut(),
                b"-ERR [AUTH] the key this session logged in with was revoked\r\n",
            )
            .await;
            return None;
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_owned();
        let mut parts = text.splitn(3, ' ');
        let cmd = parts.next().unwrap_or("").to_ascii_uppercase();
        let a1 = parts.next();
        let a2 = parts.next();
        let mut out: Vec<u8> = Vec::new();
        let mut quit = false;
        let mut stls = false;
        match (cmd.as_str(), s.mailbox.is_some()) {
            ("CAPA", _) => {
                out.extend_from_slice(b"+OK capability list follows\r\nTOP\r\nUIDL\r\nUSER\r\nRESP-CODES\r\nPIPELINING\r\nSASL PLAIN\r\nIMPLEMENTATION Mailroom\r\n");
                if !s.tls && s.mailbox.is_none() {
                    out.extend_from_slice(b"STLS\r\n");
                }
                out.extend_from_slice(b".\r\n");
            }
            ("NOOP", true) => out.extend_from_slice(b"+OK\r\n"),
            ("QUIT", authed) => {
                if authed {
                    match commit_deletions(s).await {
                        Ok(n) => out.extend_from_slice(
                            format!("+OK bye ({n} messages deleted)\r\n").as_bytes(),
                        ),
                        Err(_) => out.extend_from_slice(
                            b"-ERR [SYS/TEMP] some deletions failed; try again\r\n",
                        ),
                    }
                } else {
                    out.extend_from_slice(b"+OK bye\r\n");
                }
                quit = true;
            }
            ("STLS", false) => {
                if s.tls {
                    out.extend_from_slice(b"-ERR already using TLS\r\n");
                } else {
                    out.extend_from_slice(b"+OK begin TLS negotiation\r\n");
                    stls = true;
                }
            }
            ("USER", false) => {
                if !plaintext_allowed(s) {
                    out.extend_from_slice(b"-ERR [AUTH] use STLS first: plain logins are not accepted without TLS\r\n");
                } else if let Some(u) = a1 {
                    s.user = Some(u.to_owned());
                    out.extend_from_slice(b"+OK send PASS\r\n");
                } else {
                    out.extend_from_slice(b"-ERR USER needs a name\r\n");
                }
            }
            ("PASS", false) => {
                let pass = match (a1, a2) {
                    (Some(a), Some(b)) => format!("{a} {b}"),
                    (Some(a), None) => a.to_owned(),
                    _ => String::new(),
                };
                match s.user.take() {
                    None => out.extend_from_slice(b"-ERR send USER first\r\n"),
                    Some(user) => out.extend_from_slice(login(s, &user, &pass).await.as_bytes()),
                }
            }
            ("AUTH", false) => {
                if !plaintext_allowed(s) {
                    out.extend_from_slice(b"-ERR [AUTH] use STLS first\r\n");
                } else if !a1.is_some_and(|m| m.eq_ignore_ascii_case("PLAIN")) {
                    out.extend_from_slice(b"-ERR only AUTH PLAIN is supported\r\n");
                } else {
                    let response = match a2 {
                        Some(r) => r.trim().to_owned(),
                        None => {
                            send(conn.get_mut(), b"+ \r\n").await?;
                            auth_response(&mut conn, s).await?
                        }
                    };
                    match sasl::decode_plain(&response) {
                        Ok(plain) => out.extend_from_slice(
                            login(s, &plain.authcid, &plain.password).await.as_bytes(),
                        ),
                        Err(SaslError::Cancelled) => {
                            out.extend_from_slice(b"-ERR authentication cancelled\r\n")
                        }
                        Err(e) => out.extend_from_slice(format!("-ERR {e}\r\n").as_bytes()),
                    }
                }
            }
            ("STAT", true) => {
                let mb = s.mailbox.as_ref()?;
                let live = mb.messages.iter().zip(&mb.deleted).filter(|(_, d)| !**d);
                let (n, size) = live.fold((0, 0i64), |(n, sz), (m, _)| (n + 1, sz + m.size));
                out.extend_from_slice(format!("+OK {n} {size}\r\n").as_bytes());
            }
            ("LIST", true) | ("UIDL", true) => {
                let mb = s.mailbox.as_ref()?;
                let field = |m: &MessageRow| {
                    if cmd == "LIST" {
                        m.size.to_string()
                    } else {
                        m.id.clone()
                    }
                };
                match a1 {
                    Some(_) => match mb.get(a1) {
                        Ok((n, m)) => {
                            out.extend_from_slice(format!("+OK {n} {}\r\n", field(m)).as_bytes())
                        }
                        Err(e) => out.extend_from_slice(format!("{e}\r\n").as_bytes()),
                    },
                    None => {
                        out.extend_from_slice(b"+OK listing follows\r\n");
                        for (i, m) in mb.messages.iter().enumerate() {
                            if !mb.deleted[i] {
                                out.extend_from_slice(
                                    format!("{} {}\r\n", i + 1, field(m)).as_bytes(),
                                );
                            }
                        }
                        out.extend_from_slice(b".\r\n");
                    }
                }
            }
            ("RETR", true) | ("TOP", true) => {
                let lines = if cmd == "TOP" {
                    match a2.and_then(|n| n.trim().parse::<usize>().ok()) {
                        Some(n) => Some(n),
                        None => {
                            send(
                                conn.get_mut(),
                                b"-ERR TOP needs a message number and a line count\r\n",
                            )
                            .await?;
                            continue;
                        }
                    }
                } else {
                    None
                };
                out.extend_from_slice(retrieve(s, a1, lines).await.as_slice());
            }
            ("DELE", true) => {
                let mb = s.mailbox.as_mut()?;
                match mb.get(a1).map(|(n, _)| n) {
                    Ok(n) => {
                        mb.deleted[n - 1] = true;
                        out.extend_from_slice(format!("+OK message {n} deleted\r\n").as_bytes());
                    }
                    Err(e) => out.extend_from_slice(format!("{e}\r\n").as_bytes()),
                }
            }
            ("RSET", true) => {
                let mb = s.mailbox.as_mut()?;
                mb.deleted.iter_mut().for_each(|d| *d = false);
                out.extend_from_slice(b"+OK\r\n");
            }
            (_, false)
                if [
                    "STAT", "LIST", "UIDL", "RETR", "TOP", "DELE", "RSET", "NOOP",
                ]
                .contains(&cmd.as_str()) =>
            {
                out.extend_from_slice(b"-ERR log in first (USER/PASS or AUTH PLAIN)\r\n");
            }
            (_, true) if ["USER", "PASS", "AUTH", "STLS"].contains(&cmd.as_str()) => {
                out.extend_from_slice(b"-ERR already logged in\r\n");
            }
            _ => out.extend_from_slice(b"-ERR unknown command\r\n"),
        }
        send(conn.get_mut(), &out).await?;
        if quit {
            let _ = conn.get_mut().shutdown().await;
            return None;
        }
        if stls {
            // Anything pipelined after STLS is dropped (RFC 2595 §4).
            return Some(conn.into_inner());
        }
    }
}

/// Reads the continuation line of `AUTH PLAIN` (RFC 5034) within the time left to log in.
/// `None` ends the session (timeout, EOF, or a line longer than any PLAIN response).
async fn auth_response<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut BufReader<S>,
    s: &Session,
) -> Option<String> {
    let (timeout, why) = s.read_timeout();
    let mut l = Vec::new();
    let mut limited = (&mut *conn).take(sasl::MAX_RESPONSE as u64 + 2);
    let read = limited.read_until(b'\n', &mut l);
    match tokio::time::timeout(timeout, read).await {
        Ok(Ok(n)) if n > 0 && l.ends_with(b"\n") => {
            Some(String::from_utf8_lossy(&l).trim().to_owned())
        }
        Ok(_) => None,
        Err(_) => {
            mailroom_net::refused(Door::Pop3, why);
            let _ = send(conn.get_mut(), b"-ERR too long without logging in\r\n").await;
            None
        }
    }
}

fn plaintext_allowed(s: &Session) -> bool {
    s.tls || (s.server.plaintext_on_loopback && s.peer.ip().is_loopback())
}

async fn login(s: &mut Session, user: &str, pass: &str) -> String {
    match s.server.services.pop3_login(user, pass, s.peer.ip()).await {
        Ok(Ok(sender)) => {
            let Some((inbox_id, _)) = sender.inbox else {
                return "-ERR [AUTH] log in with an inbox address and its key\r\n".to_owned();
            };
            let store = s.server.services.store();
            let query = MessageQuery {
                mailbox: Some("INBOX".into()),
                limit: s.server.config.max_messages,
                ascending: true,
                ..MessageQuery::default()
            };
            match store.list_messages(&inbox_id, &query).await {
                Ok((messages, _)) => {
                    let n = messages.len();
                    s.mailbox = Some(Mailbox {
                        inbox_id,
                        deleted: vec![false; n],
                        messages,
                        secret: pass.to_owned(),
                    });
                    format!("+OK {n} messages\r\n")
                }
                Err(e) => {
                    tracing::error!(error = %e, "POP3: cannot list the mailbox");
                    "-ERR [SYS/TEMP] cannot open the mailbox; try again\r\n".to_owned()
                }
            }
        }
        Ok(Err(LoginRefused::MissingScope(scope))) => {
            format!("-ERR [AUTH] this key lacks the {scope} scope\r\n")
        }
        Ok(Err(LoginRefused::Throttled)) => {
            "-ERR [LOGIN-DELAY] too many failed logins; try again later\r\n".to_owned()
        }
        Ok(Err(_)) => "-ERR [AUTH] invalid user name or password\r\n".to_owned(),
        Err(e) => {
            tracing::error!(error = %e, "POP3 login check failed");
            "-ERR [SYS/TEMP] temporary failure\r\n".to_owned()
        }
    }
}

/// RETR (all) or TOP (headers and `lines` body lines), dot-stuffed and terminated.
async fn retrieve(s: &mut Session, arg: Option<&str>, lines: Option<usize>) -> Vec<u8> {
    let Some(mb) = s.mailbox.as_ref() else {
        return b"-ERR log in first\r\n".to_vec();
    };
    let (row, inbox_id) = match mb.get(arg) {
        Ok((_, m)) => (m.clone(), mb.inbox_id.clone()),
        Err(e) => return format!("{e}\r\n").into_bytes(),
    };
    let store = s.server.services.store();
    let raw = match store.get_blob(&row.blob_hash).await {
        Ok(Some(raw)) => raw,
        _ => return b"-ERR [SYS/TEMP] cannot read the message\r\n".to_vec(),
    };
    let content: &[u8] = match lines {
        None => &raw,
        Some(k) => {
            let body_start = raw
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|p| p + 4)
                .unwrap_or(raw.len());
            let mut end = body_start;
            for _ in 0..k {
                match raw[end..].windows(2).position(|w| w == b"\r\n") {
                    Some(p) => end += p + 2,
                    None => {
                        end = raw.len();
                        break;
                    }
                }
            }
            &raw[..end]
        }
    };
    if lines.is_none() && !row.is_read() {
        // One truth with the API: a retrieved message is read.
        let mut flags = row.flags.clone();
        flags.push("\\Seen".into());
        let _ = store
            .update_message(&inbox_id, &row.id, &flags, &row.labels, None)
            .await;
    }
    let mut out = format!("+OK {} octets\r\n", row.size).into_bytes();
    let mut at_line_start = true;
    for &b in content {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// QUIT in the TRANSACTION state: messages marked with DELE move to Trash.
async fn commit_deletions(s: &mut Session) -> Result<usize, ()> {
    let Some(mb) = s.mailbox.as_ref() else {
        return Ok(0);
    };
    let store = s.server.services.store();
    let mut n = 0;
    for (m, d) in mb.messages.iter().zip(&mb.deleted) {
        if *d {
            store
                .update_message(&mb.inbox_id, &m.id, &m.flags, &m.labels, Some("Trash"))
                .await
                .map_err(|_| ())?;
            n += 1;
        }
    }
    Ok(n)
}
