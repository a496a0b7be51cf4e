//! One SMTP session: the protocol state machine.
//!
//! Input is read in chunks and fed to `smtp-proto`'s receivers, so pipelined commands are
//! answered in order and their replies sent together. Safety rules kept here:
//! - DATA ends only at `<CRLF>.<CRLF>` (smtp-proto), and a message holding a bare CR or LF
//!   is refused whole, so `<LF>.<LF>` tricks (SMTP smuggling) cannot split one message into
//!   two here or at any server that relays it.
//! - Bytes pipelined after STARTTLS are discarded, never read as commands inside TLS
//!   (CVE-2011-0411).
//! - Every wait has a timeout; sizes, recipients and errors are bounded.

use std::net::SocketAddr;
use std::sync::Arc;

use mailroom_net::sasl::{self, SaslError};
use mailroom_net::{Permit, refused};
use mailroom_services::submission::{Destination, LoginRefused, Sender};
use mailroom_services::{InboundEnvelope, RcptVerdict, ServiceError, dmarc, storage};
use mailroom_store::Recipient;
use smtp_proto::request::receiver::{
    BdatReceiver, DataReceiver, DummyDataReceiver, RequestReceiver,
};
use smtp_proto::{Error as ProtoError, Request};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::server::{Kind, SmtpServer};

/// The state of one session (it survives STARTTLS, minus what RFC 3207 says to forget).
pub struct Session {
    server: Arc<SmtpServer>,
    peer: SocketAddr,
    /// The connection's slot; given back at `QUIT`, before the `221` is written.
    permit: Permit,
    /// When the message being received began (the `354`, or its first BDAT chunk): it
    /// must be whole within `message_timeout`.
    message_started: Option<tokio::time::Instant>,
    tls: bool,
    helo: Option<String>,
    mail_from: Option<String>,
    /// MX: the hosted inboxes of accepted RCPT commands.
    recipients: Vec<Recipient>,
    /// Submission: where each accepted RCPT goes (hosted or queued).
    destinations: Vec<Destination>,
    /// Accepted RCPT commands (several may name one inbox).
    rcpt_count: usize,
    errors: usize,
    /// Submission: who logged in, and the inbox of the MAIL FROM address.
    sender: Option<Sender>,
    /// Submission: the user name and secret of that login, asked again at each MAIL so
    /// that a revoked key ends what the session may do. (The session is not `Debug`.)
    login: Option<(String, String)>,
    from_inbox: Option<Recipient>,
    /// `MAIL FROM … SIZE=` of this transaction (0 when not given): a recipient it would
    /// not fit is refused at `RCPT` (RFC 1870).
    declared_size: u64,
}

enum Mode {
    Command,
    Data(DataReceiver),
    /// A BDAT chunk; `discard` when the transaction failed (size, no recipients) and the
    /// chunk is read only to stay in step with the client.
    Bdat {
        rx: BdatReceiver,
        discard: bool,
    },
    /// Reading the rest of a DATA message that will be refused (too big).
    DiscardData(DummyDataReceiver),
    /// Reading an AUTH continuation line (base64).
    Auth(AuthStep, Vec<u8>),
}

/// Where an AUTH exchange is.
#[derive(Debug, Clone)]
enum AuthStep {
    /// PLAIN: waiting for the whole response.
    Plain,
    /// LOGIN: waiting for the user name.
    LoginUser,
    /// LOGIN: waiting for the password of this user.
    LoginPassword(String),
}

/// What a run over one stream ended with.
enum End {
    Closed,
    StartTls,
}

impl Session {
    pub fn new(server: Arc<SmtpServer>, peer: SocketAddr, permit: Permit) -> Session {
        Session {
            server,
            peer,
            permit,
            message_started: None,
            tls: false,
            helo: None,
            mail_from: None,
            recipients: Vec::new(),
            destinations: Vec::new(),
            rcpt_count: 0,
            errors: 0,
            sender: None,
            login: None,
            from_inbox: None,
            declared_size: 0,
        }
    }

    fn reset(&mut self) {
        self.message_started = None;
        self.mail_from = None;
        self.from_inbox = None;
        self.declared_size = 0;
        self.recipients.clear();
        self.destinations.clear();
        self.rcpt_count = 0;
    }

    fn host(&self) -> &str {
        &self.server.config.hostname
    }

    fn submission(&self) -> bool {
        self.server.kind == Kind::Submission
    }

    fn refused(&self, reason: &'static str) {
        refused(self.server.door(), reason);
    }

    /// How long the next read may wait: the mode's timeout, cut short by the message
    /// deadline while a message is arriving.
    fn read_timeout(&self, mode: &Mode) -> (std::time::Duration, &'static str) {
        let config = &self.server.config;
        let (timeout, reason) = match mode {
            Mode::Command => (config.command_timeout, "command_timeout"),
            _ => (config.data_timeout, "data_timeout"),
        };
        match self.message_started {
            Some(start) => {
                let left = (start + config.message_timeout)
                    .saturating_duration_since(tokio::time::Instant::now());
                if left < timeout {
                    (left, "message_timeout")
                } else {
                    (timeout, reason)
                }
            }
            None => (timeout, reason),
        }
    }
}

/// Runs a session on a plain connection, upgrading it to TLS on STARTTLS.
pub async fn run_session(stream: TcpStream, mut session: Session, stop: CancellationToken) {
    let greeting = format!("220 {} ESMTP Mailroom\r\n", session.host());
    let mut stream = stream;
    if stream.write_all(greeting.as_bytes()).await.is_err() {
        return;
    }
    match run(&mut stream, &mut session, &stop).await {
        End::Closed => {}
        End::StartTls => {
            let Some(mut tls) = handshake(&session, stream).await else {
                return;
            };
            // RFC 3207 §4.2: forget everything learnt before TLS.
            session.tls = true;
            session.helo = None;
            session.reset();
            let _ = run(&mut tls, &mut session, &stop).await;
        }
    }
}

/// Runs a session on a connection that starts with a TLS handshake (port 465).
pub async fn run_tls_session(stream: TcpStream, mut session: Session, stop: CancellationToken) {
    let Some(mut tls) = handshake(&session, stream).await else {
        return;
    };
    session.tls = true;
    let greeting = format!("220 {} ESMTP Mailroom\r\n", session.host());
    if tls.write_all(greeting.as_bytes()).await.is_err() {
        return;
    }
    let _ = run(&mut tls, &mut session, &stop).await;
}

async fn handshake(
    session: &Session,
    stream: TcpStream,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    mailroom_net::tls::handshake(
        &session.server.tls_acceptor(),
        stream,
        session.server.config.connections.tls_handshake_timeout,
        session.server.door(),
    )
    .await
}

async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    s: &mut Session,
    stop: &CancellationToken,
) -> End {
    let mut receiver = RequestReceiver::default();
    let mut mode = Mode::Command;
    let mut message: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let mut out = String::new();
    // Bytes of the command line read so far, and whether it is already too long.
    let mut line_len = 0usize;
    let mut overlong = false;
    loop {
        let (timeout, timeout_reason) = s.read_timeout(&mode);
        let read = tokio::select! {
            r = tokio::time::timeout(timeout, stream.read(&mut chunk)) => r,
            _ = stop.cancelled(), if matches!(mode, Mode::Command) => {
                let _ = stream.write_all(format!("421 4.3.2 {} shutting down\r\n", s.host()).as_bytes()).await;
                return End::Closed;
            }
        };
        let n = match read {
            Ok(Ok(0)) | Ok(Err(_)) => return End::Closed,
            Ok(Ok(n)) => n,
            Err(_) => {
                s.refused(timeout_reason);
                let what = if timeout_reason == "message_timeout" {
                    "the message took too long to arrive"
                } else {
                    "timeout"
                };
                let _ = stream
                    .write_all(format!("421 4.4.2 {} {what}, closing\r\n", s.host()).as_bytes())
                    .await;
                return End::Closed;
            }
        };
        let mut bytes = chunk[..n].iter();
        let mut close = false;
        let mut starttls = false;
        while bytes.len() > 0 && !close {
            match &mut mode {
                Mode::Command
                    if overlong
                        || line_len + next_line_len(bytes.as_slice()) > MAX_COMMAND_LINE =>
                {
                    // Skip the rest of an over-long line, then answer once.
                    let rest = bytes.as_slice();
                    match rest.iter().position(|b| *b == b'\n') {
                        Some(pos) => {
                            bytes = rest[pos + 1..].iter();
                            receiver = RequestReceiver::default();
                            line_len = 0;
                            overlong = false;
                            s.errors += 1;
                            out.push_str("500 5.5.2 Line too long\r\n");
                            if s.errors >= s.server.config.max_errors {
                                s.refused("max_errors");
                                out.push_str("421 4.7.0 Too many errors, closing\r\n");
                                close = true;
                            }
                        }
                        None => {
                            bytes = [].iter();
                            overlong = true;
                        }
                    }
                }
                Mode::Command => {
                    let rest = bytes.as_slice();
                    line_len = match rest.iter().position(|b| *b == b'\n') {
                        Some(_) => 0,
                        None => line_len + rest.len(),
                    };
                    match receiver.ingest(&mut bytes) {
                        Ok(req) => match command(s, req, &mut out).await {
                            Action::None => {}
                            Action::Data => {
                                message.clear();
                                s.message_started = Some(tokio::time::Instant::now());
                                mode = Mode::Data(data_receiver());
                            }
                            Action::Bdat {
                                size,
                                last,
                                discard,
                            } => {
                                if !discard && s.message_started.is_none() {
                                    s.message_started = Some(tokio::time::Instant::now());
                                }
                                mode = Mode::Bdat {
                                    rx: BdatReceiver::new(size, last),
                                    discard,
                                };
                            }
                            Action::Quit => {
                                // The session is over: the peer may open its next
                                // connection as soon as it reads the 221.
                                s.permit.release();
                                close = true;
                            }
                            Action::Auth(step) => mode = Mode::Auth(step, Vec::new()),
                            Action::StartTls => {
                                // Anything pipelined after STARTTLS is dropped unread.
                                starttls = true;
                                break;
                            }
                        },
                        Err(ProtoError::NeedsMoreData { .. }) => break,
                        Err(e) => {
                            s.errors += 1;
                            out.push_str(&proto_error_reply(&e));
                            if s.errors >= s.server.config.max_errors {
                                s.refused("max_errors");
                                out.push_str("421 4.7.0 Too many errors, closing\r\n");
                                close = true;
                            }
                        }
                    }
                }
                Mode::Data(rx) => {
                    if rx.ingest(&mut bytes, &mut message) {
                        mode = Mode::Command;
                        out.push_str(&finish_message(s, &message).await);
                        message.clear();
                        s.reset();
                    } else if message.len() > s.server.config.max_message_size {
                        s.refused("max_message_size");
                        mode = Mode::DiscardData(DummyDataReceiver::new_data(rx));
                        message = Vec::new();
                    }
                }
                Mode::Auth(step, buf) => {
                    let rest = bytes.as_slice();
                    let nl = rest.iter().position(|b| *b == b'\n');
                    let take = nl.map_or(rest.len(), |p| p + 1);
                    buf.extend_from_slice(&rest[..take]);
                    bytes = rest[take..].iter();
                    if buf.len() > sasl::MAX_RESPONSE + 2 {
                        out.push_str("500 5.5.2 Line too long\r\n");
                        mode = Mode::Command;
                    } else if nl.is_some() {
                        let line = String::from_utf8_lossy(buf).trim().to_owned();
                        let step = step.clone();
                        mode = Mode::Command;
                        if let Some(next) = auth_continue(s, step, &line, &mut out).await {
                            mode = Mode::Auth(next, Vec::new());
                        }
                    }
                }
                Mode::DiscardData(rx) => {
                    if rx.ingest(&mut bytes) {
                        out.push_str("552 5.3.4 Message exceeds the size limit\r\n");
                        mode = Mode::Command;
                        s.reset();
                    }
                }
                Mode::Bdat { rx, discard } => {
                    let done = if *discard {
                        let mut scratch = Vec::new();
                        rx.ingest(&mut bytes, &mut scratch)
                    } else {
                        rx.ingest(&mut bytes, &mut message)
                    };
                    if !*discard && message.len() > s.server.config.max_message_size {
                        // Refuse now; read the rest of this chunk and drop it. The
                        // transaction is over, so later chunks get 503.
                        s.refused("max_message_size");
                        *discard = true;
                        message = Vec::new();
                        s.reset();
                        out.push_str("552 5.3.4 Message exceeds the size limit\r\n");
                    }
                    if done {
                        let (last, discarded) = (rx.is_last, *discard);
                        mode = Mode::Command;
                        if discarded {
                            // Already answered.
                        } else if last {
                            out.push_str(&finish_message(s, &message).await);
                            message.clear();
                            s.reset();
                        } else {
                            out.push_str(&format!(
                                "250 2.0.0 {} octets received\r\n",
                                message.len()
                            ));
                        }
                    }
                }
            }
        }
        if !out.is_empty() {
            if stream.write_all(out.as_bytes()).await.is_err() {
                return End::Closed;
            }
            out.clear();
        }
        if close {
            let _ = stream.shutdown().await;
            return End::Closed;
        }
        if starttls {
            return End::StartTls;
        }
    }
}

/// A DATA receiver that knows the message starts at the beginning of a line: the CRLF
/// that ended the DATA command counts, so an empty message (`DATA`, `.`) ends at once and a
/// first line starting with a dot is unstuffed like any other.
fn data_receiver() -> DataReceiver {
    let mut rx = DataReceiver::new();
    let mut scratch = Vec::new();
    rx.ingest(&mut b"\r\n".iter(), &mut scratch);
    rx
}

/// The longest command line accepted, CRLF included. RFC 5321 asks for at least 512;
/// extensions make lines longer, so this allows 4096 (what smtp-proto buffers).
const MAX_COMMAND_LINE: usize = 4096;

/// Length of the line at the start of `rest`, up to and including its LF (all of `rest` if
/// it has none yet).
fn next_line_len(rest: &[u8]) -> usize {
    rest.iter()
        .position(|b| *b == b'\n')
        .map_or(rest.len(), |p| p + 1)
}

enum Action {
    None,
    Auth(AuthStep),
    Data,
    Bdat {
        size: usize,
        last: bool,
        discard: bool,
    },
    Quit,
    StartTls,
}

fn reply(out: &mut String, line: &str) {
    out.push_str(line);
    out.push_str("\r\n");
}

/// Whether the credential a submission session logged in with still logs in (true when
/// it has not logged in). A revoked one ends the login and any transaction: the session
/// must log in again.
async fn login_still_valid(s: &mut Session) -> bool {
    let Some((user, password)) = s.login.clone() else {
        return true;
    };
    if s.server
        .services
        .submission_login_still_valid(&user, &password)
        .await
    {
        return true;
    }
    s.reset();
    s.sender = None;
    s.login = None;
    false
}

async fn command(
    s: &mut Session,
    req: Request<std::borrow::Cow<'_, str>>,
    out: &mut String,
) -> Action {
    // Revocation reaches an open session at its next command (QUIT goes through; a BDAT
    // chunk's bytes are already on their way, and its transaction began while valid).
    if !matches!(req, Request::Quit | Request::Bdat { .. }) && !login_still_valid(s).await {
        reply(
            out,
            "535 5.7.8 The credential this session logged in with was revoked; log in again",
        );
        return Action::None;
    }
    match req {
        Request::Ehlo { host } => {
            s.reset();
            s.helo = Some(host.to_string());
            let mut caps = vec![
                format!("{} greets {}", s.host(), host),
                "PIPELINING".to_owned(),
                format!("SIZE {}", s.server.config.max_message_size),
                "8BITMIME".to_owned(),
                "SMTPUTF8".to_owned(),
                "ENHANCEDSTATUSCODES".to_owned(),
                "CHUNKING".to_owned(),
            ];
            if !s.tls {
                caps.push("STARTTLS".to_owned());
            }
            if s.submission() && s.tls {
                caps.push("AUTH PLAIN LOGIN".to_owned());
            }
            let last = caps.len() - 1;
            for (i, c) in caps.iter().enumerate() {
                out.push_str(&format!("250{}{c}\r\n", if i == last { ' ' } else { '-' }));
            }
            Action::None
        }
        Request::Helo { host } | Request::Lhlo { host } => {
            s.reset();
            s.helo = Some(host.to_string());
            reply(out, &format!("250 {}", s.host()));
            Action::None
        }
        Request::StartTls => {
            if s.tls {
                reply(out, "503 5.5.1 TLS is already active");
                return Action::None;
            }
            reply(out, "220 2.0.0 Ready to start TLS");
            Action::StartTls
        }
        Request::Mail { from } => {
            if s.helo.is_none() {
                reply(out, "503 5.5.1 Send EHLO or HELO first");
            } else if s.mail_from.is_some() {
                reply(out, "503 5.5.1 Nested MAIL command; send RSET first");
            } else if s.submission() && s.sender.is_none() {
                reply(out, "530 5.7.0 Authentication required");
            } else if from.size > s.server.config.max_message_size {
                s.refused("max_message_size");
                reply(
                    out,
                    &format!(
                        "552 5.3.4 Message size exceeds the limit of {} bytes",
                        s.server.config.max_message_size
                    ),
                );
            } else if let Some(sender) = s.sender.clone() {
                let address = from.address.to_string();
                match s.server.services.sending_inbox(&sender, &address).await {
                    Ok(inbox) => {
                        s.from_inbox = Some(inbox);
                        s.mail_from = Some(address);
                        reply(out, "250 2.1.0 OK");
                    }
                    Err(ServiceError::Forbidden { message, .. }) => {
                        reply(out, &format!("550 5.7.1 {}", printable(&message)));
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "sender check failed");
                        reply(out, "451 4.3.0 Temporary failure; try again later");
                    }
                }
            } else {
                s.mail_from = Some(from.address.to_string());
                s.declared_size = u64::try_from(from.size).unwrap_or(u64::MAX);
                reply(out, "250 2.1.0 OK");
            }
            Action::None
        }
        Request::Rcpt { to } => {
            if s.mail_from.is_none() {
                reply(out, "503 5.5.1 Send MAIL FROM first");
                return Action::None;
            }
            if s.rcpt_count >= s.server.config.max_recipients {
                s.refused("max_recipients");
                reply(
                    out,
                    &format!(
                        "452 4.5.3 Too many recipients (at most {} per message)",
                        s.server.config.max_recipients
                    ),
                );
                return Action::None;
            }
            let address = to.address.to_string();
            if s.submission() {
                match s.server.services.submission_recipient(&address).await {
                    Ok(Some(dest)) => {
                        s.rcpt_count += 1;
                        if !s.destinations.iter().any(|d| d.address() == dest.address()) {
                            s.destinations.push(dest);
                        }
                        reply(out, "250 2.1.5 OK");
                    }
                    Err(ServiceError::Forbidden { code, message })
                        if code == storage::RECIPIENT_MAILBOX_FULL =>
                    {
                        s.refused("storage_quota");
                        reply(out, &format!("452 4.2.2 {}", printable(&message)));
                    }
                    Ok(None) => {
                        s.errors += 1;
                        reply(
                            out,
                            &format!(
                                "550 5.1.1 <{}>: no such mailbox here, and not an address on another server",
                                printable(&address)
                            ),
                        )
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "recipient check failed");
                        reply(
                            out,
                            "451 4.3.0 Temporary failure checking the recipient; try again later",
                        );
                    }
                }
                return Action::None;
            }
            let declared = s.declared_size;
            match s
                .server
                .services
                .inbound_recipient_sized(&address, declared)
                .await
            {
                Ok(RcptVerdict::Accept(rcpt)) => {
                    s.rcpt_count += 1;
                    if !s.recipients.contains(&rcpt) {
                        s.recipients.push(rcpt);
                    }
                    reply(out, "250 2.1.5 OK");
                }
                Ok(RcptVerdict::UnknownUser) => {
                    s.errors += 1;
                    reply(
                        out,
                        &format!("550 5.1.1 <{}>: no such mailbox here", printable(&address)),
                    );
                }
                Ok(RcptVerdict::MailboxFull) => {
                    s.refused("storage_quota");
                    reply(
                        out,
                        &format!(
                            "452 4.2.2 <{}>: mailbox full; try again later",
                            printable(&address)
                        ),
                    );
                }
                Ok(RcptVerdict::RelayDenied) => {
                    s.errors += 1;
                    reply(
                        out,
                        &format!("554 5.7.1 <{}>: relay access denied", printable(&address)),
                    );
                }
                Err(e) => {
                    tracing::error!(error = %e, "recipient check failed");
                    reply(
                        out,
                        "451 4.3.0 Temporary failure checking the recipient; try again later",
                    );
                }
            }
            Action::None
        }
        Request::Data => {
            if let Some(r) = transaction_ready(s) {
                reply(out, r);
                return Action::None;
            }
            reply(out, "354 Start mail input; end with <CRLF>.<CRLF>");
            Action::Data
        }
        Request::Bdat {
            chunk_size,
            is_last,
        } => {
            // A refused chunk still has to be read past to stay in step with the client.
            let discard = match transaction_ready(s) {
                Some(r) => {
                    reply(out, r);
                    true
                }
                None => false,
            };
            Action::Bdat {
                size: chunk_size,
                last: is_last,
                discard,
            }
        }
        Request::Rset => {
            s.reset();
            reply(out, "250 2.0.0 OK");
            Action::None
        }
        Request::Noop { .. } => {
            reply(out, "250 2.0.0 OK");
            Action::None
        }
        Request::Quit => {
            reply(out, &format!("221 2.0.0 {} closing connection", s.host()));
            Action::Quit
        }
        Request::Vrfy { .. } => {
            reply(
                out,
                "252 2.5.2 Cannot VRFY user; send the message and it will be tried",
            );
            Action::None
        }
        Request::Auth {
            mechanism,
            initial_response,
        } => {
            if !s.submission() {
                reply(
                    out,
                    "503 5.5.1 AUTH is not available on this port; use submission (587)",
                );
                return Action::None;
            }
            if !s.tls {
                reply(
                    out,
                    "538 5.7.11 Encryption required: plain authentication is not supported; send STARTTLS first",
                );
                return Action::None;
            }
            if s.sender.is_some() {
                reply(out, "503 5.5.1 Already authenticated");
                return Action::None;
            }
            let initial = initial_response.trim().to_owned();
            let first = if mechanism == smtp_proto::AUTH_PLAIN {
                AuthStep::Plain
            } else if mechanism == smtp_proto::AUTH_LOGIN {
                AuthStep::LoginUser
            } else {
                reply(
                    out,
                    "504 5.5.4 Unrecognized authentication type; use PLAIN or LOGIN",
                );
                return Action::None;
            };
            if initial.is_empty() {
                // Ask for the response: PLAIN's in one line, LOGIN's user name first.
                reply(
                    out,
                    if matches!(first, AuthStep::Plain) {
                        "334 "
                    } else {
                        "334 VXNlcm5hbWU6"
                    },
                );
                return Action::Auth(first);
            }
            match auth_continue(s, first, &initial, out).await {
                Some(step) => Action::Auth(step),
                None => Action::None,
            }
        }
        Request::Expn { .. }
        | Request::Help { .. }
        | Request::Etrn { .. }
        | Request::Atrn { .. }
        | Request::Burl { .. } => {
            reply(out, "502 5.5.1 Command not implemented");
            Action::None
        }
    }
}

/// Handles one AUTH response (the initial one or a continuation line). Returns the next
/// step when the exchange goes on.
async fn auth_continue(
    s: &mut Session,
    step: AuthStep,
    line: &str,
    out: &mut String,
) -> Option<AuthStep> {
    let decoded = match step {
        AuthStep::Plain => sasl::decode_plain(line).map(|p| (p.authcid, p.password)),
        AuthStep::LoginUser => match sasl::decode_text(line) {
            Ok(user) => {
                reply(out, "334 UGFzc3dvcmQ6");
                return Some(AuthStep::LoginPassword(user));
            }
            Err(e) => Err(e),
        },
        AuthStep::LoginPassword(user) => sasl::decode_text(line).map(|p| (user, p)),
    };
    let (user, password) = match decoded {
        Ok(up) => up,
        Err(SaslError::Cancelled) => {
            reply(out, "501 5.0.0 Authentication cancelled");
            return None;
        }
        Err(SaslError::NotBase64) => {
            reply(
                out,
                "501 5.5.2 Cannot decode the response (base64 expected)",
            );
            return None;
        }
        Err(e) => {
            reply(out, &format!("501 5.5.2 {e}"));
            return None;
        }
    };
    match s
        .server
        .services
        .submission_login(&user, &password, s.peer.ip())
        .await
    {
        Ok(Ok(sender)) => {
            s.sender = Some(sender);
            s.login = Some((user, password));
            reply(out, "235 2.7.0 Authentication successful");
        }
        Ok(Err(LoginRefused::Invalid)) => {
            s.errors += 1;
            reply(out, "535 5.7.8 Authentication credentials invalid");
        }
        Ok(Err(LoginRefused::Throttled)) => {
            reply(out, "454 4.7.0 Too many failed logins; try again later");
        }
        Ok(Err(LoginRefused::MissingScope(scope))) => {
            s.errors += 1;
            reply(out, &format!("535 5.7.8 This key lacks the {scope} scope"));
        }
        Ok(Err(LoginRefused::NotOnTier)) => {
            reply(
                out,
                "535 5.7.8 SMTP access requires a paid tier (GET /v1/capabilities)",
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "login check failed");
            reply(out, "454 4.7.0 Temporary authentication failure");
        }
    }
    None
}

/// An address fit to echo in a reply line.
fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(254).collect()
}

fn transaction_ready(s: &Session) -> Option<&'static str> {
    if s.mail_from.is_none() {
        Some("503 5.5.1 Send MAIL FROM first")
    } else if s.recipients.is_empty() && s.destinations.is_empty() {
        Some("554 5.5.1 No valid recipients")
    } else {
        None
    }
}

fn proto_error_reply(e: &ProtoError) -> String {
    match e {
        ProtoError::UnknownCommand => "500 5.5.1 Unknown command\r\n".to_owned(),
        ProtoError::InvalidSenderAddress => "501 5.1.7 Bad sender address syntax\r\n".to_owned(),
        ProtoError::InvalidRecipientAddress => {
            "501 5.1.3 Bad recipient address syntax\r\n".to_owned()
        }
        ProtoError::SyntaxError { syntax } => format!("501 5.5.4 Syntax: {syntax}\r\n"),
        ProtoError::InvalidParameter { param } => {
            format!("501 5.5.4 Invalid parameter {param}\r\n")
        }
        ProtoError::UnsupportedParameter { param } => {
            format!(
                "504 5.5.4 Unsupported parameter {}\r\n",
                param
                    .chars()
                    .filter(|c| c.is_ascii_graphic())
                    .take(64)
                    .collect::<String>()
            )
        }
        ProtoError::ResponseTooLong => "500 5.5.2 Line too long\r\n".to_owned(),
        ProtoError::NeedsMoreData { .. } | ProtoError::InvalidResponse { .. } => {
            "500 5.5.2 Syntax error\r\n".to_owned()
        }
    }
}

/// Whether `data` has a CR not followed by LF, or an LF not preceded by CR.
pub fn has_bare_cr_or_lf(data: &[u8]) -> bool {
    // Jump from line end to line end (memchr scans a word at a time): on a 10 KB message
    // this was a byte-at-a-time loop that cost as much as hashing it.
    let mut at = 0;
    while let Some(i) = memchr::memchr2(b'\r', b'\n', &data[at..]) {
        let i = at + i;
        if data[i] == b'\n' || data.get(i + 1) != Some(&b'\n') {
            return true;
        }
        at = i + 2;
    }
    false
}

async fn finish_message(s: &mut Session, data: &[u8]) -> String {
    if has_bare_cr_or_lf(data) {
        metrics::counter!("mailroom_smtp_messages_rejected_total", "reason" => "bare_newline")
            .increment(1);
        return "554 5.6.0 Message refused: it contains a bare CR or LF; lines must end with CRLF\r\n".to_owned();
    }
    if let (Some(sender), Some(from_inbox)) = (s.sender.clone(), s.from_inbox.clone()) {
        return match s
            .server
            .services
            .submit(
                &sender,
                &from_inbox,
                s.mail_from.as_deref().unwrap_or_default(),
                &s.destinations,
                data,
            )
            .await
        {
            Ok(done) => {
                metrics::counter!("mailroom_smtp_submitted_total").increment(1);
                format!(
                    "250 2.0.0 OK: queued as {}\r\n",
                    done.message_ids.first().map(String::as_str).unwrap_or("-")
                )
            }
            Err(ServiceError::Forbidden { code, message })
                if code == storage::RECIPIENT_MAILBOX_FULL =>
            {
                s.refused("storage_quota");
                format!("452 4.2.2 {}\r\n", printable(&message))
            }
            Err(ServiceError::Forbidden { message, .. }) => {
                format!("550 5.7.1 {}\r\n", printable(&message))
            }
            // A header block RFC 5322 does not allow (two From headers, say).
            Err(ServiceError::Invalid { message, .. }) => {
                format!("550 5.6.0 {}\r\n", printable(&message))
            }
            Err(ServiceError::TierLimit {
                code,
                message,
                upgrade,
            }) => {
                let link = upgrade
                    .map(|u| format!(" Upgrade: {}", u.operator_action_url))
                    .unwrap_or_default();
                if code == storage::STORAGE_QUOTA_EXCEEDED {
                    s.refused("storage_quota");
                    format!("452 4.2.2 {}{link}\r\n", printable(&message))
                } else if code == "SEND_LIMIT_EXCEEDED" {
                    format!("452 4.7.1 {}{link}\r\n", printable(&message))
                } else {
                    format!("554 5.7.1 {}{link}\r\n", printable(&message))
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "could not store a submitted message");
                "451 4.3.0 Could not store the message; try again later\r\n".to_owned()
            }
        };
    }
    let envelope = InboundEnvelope {
        client_ip: s.peer.ip(),
        helo: s.helo.clone().unwrap_or_default(),
        mail_from: s.mail_from.clone().unwrap_or_default(),
        recipients: s.recipients.clone(),
        tls: s.tls,
    };
    match s.server.services.receive(&envelope, data).await {
        Ok(stored) => {
            metrics::counter!("mailroom_smtp_messages_accepted_total").increment(1);
            let id = stored.first().map(|m| m.id.as_str()).unwrap_or("-");
            format!("250 2.0.0 OK: queued as {id}\r\n")
        }
        Err(ServiceError::TierLimit { code, .. }) if code == storage::STORAGE_QUOTA_EXCEEDED => {
            s.refused("storage_quota");
            "452 4.2.2 Mailbox full: a recipient holds all the mail its plan allows; try again later\r\n".to_owned()
        }
        Err(ServiceError::Forbidden { code, message }) if code == dmarc::DMARC_REJECTED => {
            s.refused("dmarc_reject");
            format!("550 5.7.1 {}\r\n", printable(&message))
        }
        Err(e) => {
            tracing::error!(error = %e, "could not store an inbound message");
            "451 4.3.0 Could not store the message; try again later\r\n".to_owned()
        }
    }
}
