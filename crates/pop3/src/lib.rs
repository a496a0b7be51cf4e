//! The POP3 server (RFC 1939, with CAPA from RFC 2449 and STLS from RFC 2595), over the same
//! store as the HTTP API: the INBOX mailbox of one inbox, seen through an inbox key.
//!
//! One truth with the API: RETR marks a message read (`\Seen`), and a message deleted with
//! DELE moves to Trash at QUIT, exactly as `DELETE /v1/inboxes/{id}/messages/{mid}` does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use mailroom_services::Services;
use mailroom_services::submission::LoginRefused;
use mailroom_store::{MessageQuery, MessageRow};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The longest command line accepted (RFC 2449 §4: 255 octets).
const MAX_LINE: usize = 512;
/// RFC 1939 §3: the autologout timer is at least 10 minutes.
const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Messages one session sees at most.
const MAX_MESSAGES: u32 = 10_000;

/// What every POP3 session shares.
pub struct Pop3Server {
    pub services: Services,
    pub tls: Arc<ServerConfig>,
    /// Port 995: TLS from the first byte.
    pub implicit_tls: bool,
    /// Allow USER/PASS and AUTH without TLS from loopback addresses (`--dev`).
    pub plaintext_on_loopback: bool,
    pub hostname: String,
    pub idle_timeout: Duration,
}

impl Pop3Server {
    pub fn new(
        services: Services,
        tls: Arc<ServerConfig>,
        implicit_tls: bool,
        plaintext_on_loopback: bool,
        hostname: String,
    ) -> Pop3Server {
        Pop3Server {
            services,
            tls,
            implicit_tls,
            plaintext_on_loopback,
            hostname,
            idle_timeout: IDLE_TIMEOUT,
        }
    }
}

/// Accepts connections until `shutdown`, then gives sessions a few seconds to finish.
pub async fn serve(listener: TcpListener, server: Arc<Pop3Server>, shutdown: CancellationToken) {
    let tracker = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "POP3 accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let server = server.clone();
        let stop = shutdown.clone();
        tracker.spawn(async move { handle(stream, peer, server, stop).await });
    }
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(10), tracker.wait()).await;
}

async fn handle(
    stream: TcpStream,
    peer: SocketAddr,
    server: Arc<Pop3Server>,
    stop: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    metrics::counter!("mailroom_pop3_sessions_total").increment(1);
    let mut session = Session {
        server: server.clone(),
        peer,
        tls: false,
        user: None,
        mailbox: None,
    };
    if server.implicit_tls {
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

struct Session {
    server: Arc<Pop3Server>,
    peer: SocketAddr,
    tls: bool,
    /// USER given, waiting for PASS.
    user: Option<String>,
    /// After login: the inbox and its messages as of login, with deletion marks.
    mailbox: Option<Mailbox>,
}

struct Mailbox {
    inbox_id: String,
    messages: Vec<MessageRow>,
    deleted: Vec<bool>,
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
        conn.get_mut().write_all(hello.as_bytes()).await.ok()?;
    }
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = {
            let mut limited = (&mut conn).take(MAX_LINE as u64 + 1);
            tokio::select! {
                r = tokio::time::timeout(s.server.idle_timeout, limited.read_until(b'\n', &mut line)) => Some(r),
                _ = stop.cancelled() => None,
            }
        };
        let Some(read) = read else {
            let _ = conn
                .get_mut()
                .write_all(b"-ERR server shutting down\r\n")
                .await;
            return None;
        };
        match read {
            Err(_) => {
                let _ = conn
                    .get_mut()
                    .write_all(b"-ERR autologout: idle too long\r\n")
                    .await;
                return None;
            }
            Ok(Err(_)) | Ok(Ok(0)) => return None,
            Ok(Ok(_)) => {}
        }
        if !line.ends_with(b"\n") {
            // Over-long line: drop the rest of it.
            let mut rest = Vec::new();
            let _ = (&mut conn)
                .take(64 * 1024)
                .read_until(b'\n', &mut rest)
                .await;
            conn.get_mut()
                .write_all(b"-ERR line too long\r\n")
                .await
                .ok()?;
            continue;
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
                            conn.get_mut().write_all(b"+ \r\n").await.ok()?;
                            let mut l = Vec::new();
                            (&mut conn)
                                .take(MAX_LINE as u64)
                                .read_until(b'\n', &mut l)
                                .await
                                .ok()?;
                            String::from_utf8_lossy(&l).trim().to_owned()
                        }
                    };
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(&response)
                        .unwrap_or_default();
                    let text = String::from_utf8_lossy(&decoded).into_owned();
                    let mut f = text.split('\0');
                    match (f.next(), f.next(), f.next()) {
                        (Some(_), Some(u), Some(p)) => {
                            let (u, p) = (u.to_owned(), p.to_owned());
                            out.extend_from_slice(login(s, &u, &p).await.as_bytes());
                        }
                        _ => out.extend_from_slice(b"-ERR malformed AUTH PLAIN response\r\n"),
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
                            conn.get_mut()
                                .write_all(b"-ERR TOP needs a message number and a line count\r\n")
                                .await
                                .ok()?;
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
        conn.get_mut().write_all(&out).await.ok()?;
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
                limit: MAX_MESSAGES,
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
