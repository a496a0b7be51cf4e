//! One IMAP session: the state machine of RFC 9051 §3 and the commands.
//!
//! A selected mailbox is held in memory as the list of its messages' uids, flags and
//! modseqs (the sequence numbers are positions in that list). Before answering, the
//! session compares the mailbox's (uidnext, highestmodseq, count) with what it last saw and
//! reports what others changed: EXISTS for new messages, FETCH FLAGS for flag changes, and
//! EXPUNGE for removals, except during FETCH, STORE and SEARCH where EXPUNGE may not be
//! sent (RFC 9051 §7.5.1); those wait for the next command that allows them.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use imap_codec::imap_types::auth::AuthMechanism;
use imap_codec::imap_types::command::{
    Command, CommandBody, FetchModifier, SelectParameter, StoreModifier,
};
use imap_codec::imap_types::core::Charset;
use imap_codec::imap_types::extensions::binary::LiteralOrLiteral8;
use imap_codec::imap_types::fetch::MacroOrMessageDataItemNames;
use imap_codec::imap_types::flag::{Flag, StoreResponse, StoreType};
use imap_codec::imap_types::mailbox::{ListMailbox, Mailbox};
use imap_codec::imap_types::sequence::SequenceSet;
use imap_codec::imap_types::status::StatusDataItemName;
use mailroom_core::time::now_ms;
use mailroom_net::sasl::{self, SaslError};
use mailroom_services::submission::LoginRefused;
use mailroom_store::{FlagChange, FlagOutcome, ImapMailbox, MailboxRefusal, NewMessage, Recipient};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

use crate::fmt::{canonical_flag, flag_list, mailbox as mailbox_name, sequence_set};
use crate::op::fetch::FetchError;
use crate::search::in_set;
use crate::view::{Looked, Msg, View};
use crate::{ImapServer, conn};

/// After this many BAD answers in a row the session is closed: a client that sends only
/// garbage is not a client.
const MAX_BAD_IN_A_ROW: u32 = 20;
/// Without a signal from this process, the database is asked for changes by others (the
/// API, other processes) at most this often; a client busy with commands sees them this
/// late at worst, and a command costs one query less.
const SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);
/// How long a client may leave an answer unread before the session is dropped.
const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);
/// The goodbye to a session whose key was revoked (RFC 9051 §7.1.5: BYE, then close).
const REVOKED: &str = "* BYE [AUTHORIZATIONFAILED] the key this session logged in with was revoked";
/// Longest mailbox name.
const MAX_MAILBOX_NAME: usize = 255;

/// The identity of a logged-in session. (No `Debug`: it holds the key.)
pub(crate) struct User {
    pub(crate) account_id: String,
    pub(crate) inbox_id: String,
    /// The key the session logged in with, asked again before each command and while
    /// idling, so that revoking it (or deleting the inbox) ends the session.
    secret: String,
}

/// What the connection loop does after a command.
pub enum Next {
    Continue,
    Logout,
    StartTls,
}

pub struct Session {
    pub server: Arc<ImapServer>,
    pub peer: SocketAddr,
    pub tls: bool,
    pub(crate) user: Option<User>,
    pub(crate) selected: Option<View>,
    /// CONDSTORE enabled (ENABLE, SELECT (CONDSTORE), or a CONDSTORE command).
    pub(crate) condstore: bool,
    /// IMAP4rev2 enabled (ENABLE IMAP4rev2).
    pub(crate) rev2: bool,
    bad_in_a_row: u32,
    /// A BYE was sent outside LOGOUT: the connection ends after this answer.
    pub closing: bool,
    /// The change signal of the logged-in inbox (mail delivered, an APPEND, flags, moves,
    /// API changes in this process) and when the database was last asked: see
    /// [`Session::sync`].
    signal: Option<mailroom_services::InboxSignal>,
    last_check: Option<std::time::Instant>,
}

type Io = std::io::Result<()>;

/// Output of one command, written to the client in pieces.
pub struct Out {
    buf: Vec<u8>,
}

impl Out {
    pub fn new() -> Out {
        Out { buf: Vec::new() }
    }

    pub fn line(&mut self, s: &str) {
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.extend_from_slice(b"\r\n");
    }

    pub fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }

    /// Bytes waiting to be written.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Takes back what was added since [`Out::pending`] was `len` (nothing of it has been
    /// written yet).
    pub fn truncate(&mut self, len: usize) {
        self.buf.truncate(len);
    }

    /// Writes what is pending and then `data`, straight from the caller's buffer: a big
    /// literal (a whole message) is written from the stored message, never copied into
    /// the answer. Small ones are just appended.
    pub async fn write_through<S: AsyncWrite + Unpin>(&mut self, w: &mut S, data: &[u8]) -> Io {
        if data.len() < 16 * 1024 {
            self.buf.extend_from_slice(data);
            return Ok(());
        }
        let write = async {
            if !self.buf.is_empty() {
                w.write_all(&self.buf).await?;
                self.buf.clear();
            }
            w.write_all(data).await
        };
        tokio::time::timeout(WRITE_TIMEOUT, write)
            .await
            .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
    }

    /// Writes what is pending. A client that stops reading (its window stays shut) gets
    /// [`WRITE_TIMEOUT`] and is then dropped, so it cannot hold a session for ever.
    pub async fn flush<S: AsyncWrite + Unpin>(&mut self, w: &mut S) -> Io {
        let write = async {
            if !self.buf.is_empty() {
                w.write_all(&self.buf).await?;
                self.buf.clear();
                // Keep an idle session small: a big answer's buffer is not kept.
                if self.buf.capacity() > 8 * 1024 {
                    self.buf = Vec::new();
                }
            }
            w.flush().await
        };
        tokio::time::timeout(WRITE_TIMEOUT, write)
            .await
            .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
    }
}

impl Default for Out {
    fn default() -> Self {
        Out::new()
    }
}

fn mailbox_str(m: &Mailbox<'_>) -> String {
    match m {
        Mailbox::Inbox => "INBOX".into(),
        Mailbox::Other(o) => String::from_utf8_lossy(o.as_ref()).into_owned(),
    }
}

/// A mailbox name a client may create: no empty levels, no control characters, no
/// wildcards, not too long.
fn valid_new_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_MAILBOX_NAME
        && !name.starts_with('/')
        && !name.contains("//")
        && !name.chars().any(|c| c.is_control() || c == '*' || c == '%')
}

fn store_flags(flags: &[Flag<'_>]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for f in flags {
        let s = canonical_flag(&f.to_string());
        // \Recent is the server's to set (and Mailroom never sets it).
        if s == "\\Recent" || out.iter().any(|o| o.eq_ignore_ascii_case(&s)) {
            continue;
        }
        out.push(s);
    }
    out
}

impl Session {
    pub fn new(server: Arc<ImapServer>, peer: SocketAddr, tls: bool) -> Session {
        Session {
            server: server.clone(),
            peer,
            tls,
            user: None,
            selected: None,
            condstore: false,
            rev2: false,
            bad_in_a_row: 0,
            closing: false,
            signal: None,
            last_check: None,
        }
    }

    fn plaintext_allowed(&self) -> bool {
        self.tls || (self.server.plaintext_on_loopback && self.peer.ip().is_loopback())
    }

    pub fn logged_in(&self) -> bool {
        self.user.is_some()
    }

    pub fn capabilities(&self) -> String {
        let mut caps = String::from(
            "IMAP4rev1 IMAP4rev2 LITERAL+ SASL-IR ID ENABLE IDLE NAMESPACE UNSELECT UIDPLUS MOVE CHILDREN SPECIAL-USE CONDSTORE BINARY STATUS=SIZE WITHIN ",
        );
        caps.push_str(crate::quota::CAPABILITIES);
        if self.user.is_none() {
            if !self.tls {
                caps.push_str(" STARTTLS");
            }
            if self.plaintext_allowed() {
                caps.push_str(" AUTH=PLAIN");
            } else {
                caps.push_str(" LOGINDISABLED");
            }
        }
        caps
    }

    /// A BAD answer, counted: too many in a row end the session.
    pub fn bad(&mut self, out: &mut Out, tag: &str, text: &str) -> bool {
        self.bad_in_a_row += 1;
        out.line(&format!("{tag} BAD {text}"));
        if self.bad_in_a_row >= MAX_BAD_IN_A_ROW {
            out.line("* BYE too many bad commands");
            return false;
        }
        true
    }

    /// Runs one parsed command.
    pub async fn handle<S: AsyncRead + AsyncWrite + Unpin + Send>(
        &mut self,
        cmd: Command<'_>,
        conn: &mut BufReader<S>,
        out: &mut Out,
        stop: &CancellationToken,
    ) -> std::io::Result<Next> {
        let tag = cmd.tag.as_ref().to_owned();
        if !self.still_authorized().await {
            out.line(REVOKED);
            return Ok(Next::Logout);
        }
        let authed = self.user.is_some();
        let selected = self.selected.is_some();
        let name = cmd.body.name().to_ascii_uppercase();
        // Commands of a state the session is not in.
        let state_error = match &cmd.body {
            CommandBody::Capability
            | CommandBody::Noop
            | CommandBody::Logout
            | CommandBody::Id { .. } => None,
            CommandBody::StartTLS
            | CommandBody::Authenticate { .. }
            | CommandBody::Login { .. } => authed.then_some("already logged in"),
            CommandBody::Check
            | CommandBody::Close
            | CommandBody::Expunge
            | CommandBody::ExpungeUid { .. }
            | CommandBody::Search { .. }
            | CommandBody::Fetch { .. }
            | CommandBody::Store { .. }
            | CommandBody::Copy { .. }
            | CommandBody::Move { .. }
            | CommandBody::Unselect => {
                if !authed {
                    Some("log in first")
                } else if !selected {
                    Some("no mailbox selected")
                } else {
                    None
                }
            }
            _ => (!authed).then_some("log in first"),
        };
        if let Some(why) = state_error {
            if !self.bad(out, &tag, &format!("{name}: {why}")) {
                return Ok(Next::Logout);
            }
            return Ok(Next::Continue);
        }
        self.bad_in_a_row = 0;
        let store_failed = |out: &mut Out, e: &dyn std::fmt::Display| {
            tracing::error!(error = %e, "IMAP: store failure");
            out.line(&format!(
                "{tag} NO [UNAVAILABLE] temporary failure; try again"
            ));
        };
        if crate::quota::is_quota_command(&cmd.body) {
            let mailbox = match &cmd.body {
                CommandBody::GetQuotaRoot { mailbox } => Some(mailbox_str(mailbox)),
                _ => None,
            };
            let (services, inbox_id) = (&self.server.services, self.inbox_id());
            if let Err(e) = crate::quota::command(
                services,
                &inbox_id,
                &tag,
                &cmd.body,
                mailbox.as_deref(),
                out,
            )
            .await
            {
                store_failed(out, &e);
            }
            return Ok(Next::Continue);
        }
        match cmd.body {
            CommandBody::Capability => {
                out.line(&format!("* CAPABILITY {}", self.capabilities()));
                out.line(&format!("{tag} OK CAPABILITY completed"));
            }
            CommandBody::Noop | CommandBody::Check => {
                if let Err(e) = self.sync(out, true).await {
                    store_failed(out, &e);
                    return Ok(Next::Continue);
                }
                out.line(&format!("{tag} OK {name} completed"));
            }
            CommandBody::Logout => {
                out.line("* BYE Mailroom IMAP logging out");
                out.line(&format!("{tag} OK LOGOUT completed"));
                return Ok(Next::Logout);
            }
            CommandBody::Id { .. } => {
                out.line(&format!(
                    "* ID (\"name\" \"Mailroom\" \"version\" \"{}\")",
                    env!("CARGO_PKG_VERSION")
                ));
                out.line(&format!("{tag} OK ID completed"));
            }
            CommandBody::StartTLS => {
                if self.tls {
                    out.line(&format!("{tag} BAD TLS is already active"));
                } else {
                    out.line(&format!("{tag} OK Begin TLS negotiation now"));
                    return Ok(Next::StartTls);
                }
            }
            CommandBody::Login { username, password } => {
                if !self.plaintext_allowed() {
                    out.line(&format!(
                        "{tag} NO [PRIVACYREQUIRED] use STARTTLS (or port 993) first: plain-text logins are not accepted without TLS"
                    ));
                } else {
                    let user = String::from_utf8_lossy(username.as_ref()).into_owned();
                    let pass = String::from_utf8_lossy(password.declassify().as_ref()).into_owned();
                    self.login(&tag, &user, &pass, out).await;
                }
            }
            CommandBody::Authenticate {
                mechanism,
                initial_response,
            } => {
                if !self.plaintext_allowed() {
                    out.line(&format!(
                        "{tag} NO [PRIVACYREQUIRED] use STARTTLS (or port 993) first"
                    ));
                } else if !matches!(mechanism, AuthMechanism::Plain) {
                    out.line(&format!(
                        "{tag} NO [CANNOT] only AUTHENTICATE PLAIN is supported"
                    ));
                } else {
                    let plain = match initial_response {
                        Some(r) => sasl::parse_plain(r.declassify()),
                        None => {
                            out.line("+ ");
                            out.flush(conn.get_mut()).await?;
                            let mut line = Vec::new();
                            match tokio::time::timeout(
                                std::time::Duration::from_secs(60),
                                conn::read_line(conn, &mut line),
                            )
                            .await
                            {
                                Ok(Ok(true)) => {}
                                _ => return Ok(Next::Logout),
                            }
                            sasl::decode_plain(&String::from_utf8_lossy(&line))
                        }
                    };
                    match plain {
                        Ok(p) => self.login(&tag, &p.authcid, &p.password, out).await,
                        Err(SaslError::Cancelled) => {
                            out.line(&format!("{tag} BAD authentication cancelled"))
                        }
                        Err(e) => out.line(&format!("{tag} BAD {e}")),
                    }
                }
            }
            CommandBody::Enable { capabilities } => {
                let mut enabled = Vec::new();
                for c in capabilities.as_ref() {
                    let c = c.to_string().to_ascii_uppercase();
                    if c == "CONDSTORE" {
                        self.condstore = true;
                        enabled.push(c);
                    } else if c == "IMAP4REV2" {
                        self.rev2 = true;
                        enabled.push("IMAP4rev2".to_owned());
                    }
                }
                out.line(format!("* ENABLED {}", enabled.join(" ")).trim_end());
                out.line(&format!("{tag} OK ENABLE completed"));
            }
            CommandBody::Namespace => {
                out.line("* NAMESPACE ((\"\" \"/\")) NIL NIL");
                out.line(&format!("{tag} OK NAMESPACE completed"));
            }
            CommandBody::Select {
                mailbox,
                parameters,
            }
            | CommandBody::Examine {
                mailbox,
                parameters,
            } => {
                let read_only = name == "EXAMINE";
                if parameters
                    .iter()
                    .any(|p| matches!(p, SelectParameter::CondStore))
                {
                    self.condstore = true;
                }
                if parameters
                    .iter()
                    .any(|p| matches!(p, SelectParameter::QResync { .. }))
                {
                    out.line(&format!("{tag} BAD QRESYNC is not supported"));
                    return Ok(Next::Continue);
                }
                if let Err(e) = self
                    .select(&tag, &mailbox_str(&mailbox), read_only, out)
                    .await
                {
                    store_failed(out, &e);
                }
            }
            CommandBody::Unselect | CommandBody::Close => {
                if name == "CLOSE"
                    && let Some(sel) = &self.selected
                    && !sel.read_only
                {
                    let uids: Vec<i64> = sel
                        .msgs
                        .iter()
                        .filter(|m| m.has("\\Deleted"))
                        .map(|m| i64::from(m.uid))
                        .collect();
                    if !uids.is_empty() {
                        let store = self.server.services.store();
                        if let Err(e) = store.imap_expunge(&sel.mailbox.id, &uids).await {
                            store_failed(out, &e);
                            return Ok(Next::Continue);
                        }
                        signal_inbox(&self.server, &self.user);
                    }
                }
                self.selected = None;
                out.line(&format!("{tag} OK {name} completed"));
            }
            CommandBody::Create { mailbox } => {
                let name = mailbox_str(&mailbox);
                let name = name.strip_suffix('/').unwrap_or(&name).to_owned();
                if let Err(e) = self.create(&tag, &name, out).await {
                    store_failed(out, &e);
                }
            }
            CommandBody::Delete { mailbox } => {
                let name = mailbox_str(&mailbox);
                let inbox_id = self.inbox_id();
                match self.server.services.store().imap_delete_mailbox(&inbox_id, &name).await {
                    Ok(Ok(())) => {
                        signal_inbox(&self.server, &self.user);
                        out.line(&format!("{tag} OK DELETE completed"));
                    }
                    Ok(Err(MailboxRefusal::NotFound)) => {
                        out.line(&format!("{tag} NO [NONEXISTENT] no such mailbox"))
                    }
                    Ok(Err(MailboxRefusal::Standard)) => out.line(&format!(
                        "{tag} NO [CANNOT] the standard mailboxes (INBOX, Sent, Drafts, Trash, Junk, Archive) cannot be deleted"
                    )),
                    Ok(Err(MailboxRefusal::HasChildren)) => out.line(&format!(
                        "{tag} NO [INUSE] delete the mailboxes inside it first"
                    )),
                    Ok(Err(MailboxRefusal::Exists)) => out.line(&format!("{tag} NO cannot delete")),
                    Err(e) => store_failed(out, &e),
                }
            }
            CommandBody::Rename { from, to } => {
                let (from, to) = (mailbox_str(&from), mailbox_str(&to));
                let to = to.strip_suffix('/').unwrap_or(&to).to_owned();
                if !valid_new_name(&to) {
                    out.line(&format!("{tag} NO [CANNOT] invalid mailbox name"));
                    return Ok(Next::Continue);
                }
                let inbox_id = self.inbox_id();
                match self
                    .server
                    .services
                    .store()
                    .imap_rename_mailbox(&inbox_id, &from, &to)
                    .await
                {
                    Ok(Ok(())) => {
                        signal_inbox(&self.server, &self.user);
                        // The selected mailbox (or one above it) renamed by this session:
                        // follow it, since uids and UIDVALIDITY stay.
                        if let Some(sel) = self.selected.as_mut() {
                            let old = sel.mailbox.name.clone();
                            if old == from || old.starts_with(&format!("{from}/")) {
                                let renamed = format!("{to}{}", &old[from.len()..]);
                                sel.mailbox.id = mailroom_store::mailbox_id(&inbox_id, &renamed);
                                sel.mailbox.name = renamed;
                            }
                        }
                        out.line(&format!("{tag} OK RENAME completed"));
                    }
                    Ok(Err(MailboxRefusal::NotFound)) => {
                        out.line(&format!("{tag} NO [NONEXISTENT] no such mailbox"))
                    }
                    Ok(Err(MailboxRefusal::Exists)) => {
                        out.line(&format!("{tag} NO [ALREADYEXISTS] that name is taken"))
                    }
                    Ok(Err(_)) => out.line(&format!(
                        "{tag} NO [CANNOT] the standard mailboxes keep their names"
                    )),
                    Err(e) => store_failed(out, &e),
                }
            }
            CommandBody::Subscribe { mailbox } | CommandBody::Unsubscribe { mailbox } => {
                let inbox_id = self.inbox_id();
                let on = name == "SUBSCRIBE";
                match self
                    .server
                    .services
                    .store()
                    .imap_subscribe(&inbox_id, &mailbox_str(&mailbox), on)
                    .await
                {
                    Ok(true) => out.line(&format!("{tag} OK {name} completed")),
                    Ok(false) => out.line(&format!("{tag} NO [NONEXISTENT] no such mailbox")),
                    Err(e) => store_failed(out, &e),
                }
            }
            CommandBody::List {
                reference,
                mailbox_wildcard,
            }
            | CommandBody::Lsub {
                reference,
                mailbox_wildcard,
            } => {
                let lsub = name == "LSUB";
                let reference = mailbox_str(&reference);
                let pattern = match &mailbox_wildcard {
                    ListMailbox::Token(t) => t.as_ref().to_vec(),
                    ListMailbox::String(s) => s.as_ref().to_vec(),
                };
                if let Err(e) = self.list(&reference, &pattern, lsub, out).await {
                    store_failed(out, &e);
                    return Ok(Next::Continue);
                }
                out.line(&format!("{tag} OK {name} completed"));
            }
            CommandBody::Status {
                mailbox,
                item_names,
            } => {
                if let Err(e) = self
                    .status(&tag, &mailbox_str(&mailbox), &item_names, out)
                    .await
                {
                    store_failed(out, &e);
                }
            }
            CommandBody::Append {
                mailbox,
                flags,
                date,
                message,
            } => {
                let data = match &message {
                    LiteralOrLiteral8::Literal(l) => l.as_ref().to_vec(),
                    LiteralOrLiteral8::Literal8(l) => l.data.to_vec(),
                };
                let date = date.map(|d| d.as_ref().timestamp_millis());
                if let Err(e) = self
                    .append(
                        &tag,
                        &mailbox_str(&mailbox),
                        &store_flags(&flags),
                        date,
                        data,
                        out,
                    )
                    .await
                {
                    store_failed(out, &e);
                }
            }
            CommandBody::Expunge | CommandBody::ExpungeUid { .. } => {
                let only = match &cmd.body {
                    CommandBody::ExpungeUid { sequence_set } => Some(sequence_set.clone()),
                    _ => None,
                };
                if let Err(e) = self.expunge(&tag, only.as_ref(), out).await {
                    store_failed(out, &e);
                }
            }
            CommandBody::Search {
                charset,
                criteria,
                uid,
            } => {
                if let Some(cs) = &charset {
                    let cs = match cs {
                        Charset::Atom(a) => a.as_ref().to_owned(),
                        Charset::Quoted(q) => q.as_ref().to_owned(),
                    };
                    if !cs.eq_ignore_ascii_case("UTF-8") && !cs.eq_ignore_ascii_case("US-ASCII") {
                        out.line(&format!(
                            "{tag} NO [BADCHARSET (UTF-8 US-ASCII)] unsupported charset"
                        ));
                        return Ok(Next::Continue);
                    }
                }
                if let Err(e) = self.search(&tag, criteria.as_ref(), uid, out).await {
                    store_failed(out, &e);
                }
            }
            CommandBody::Fetch {
                sequence_set,
                macro_or_item_names,
                uid,
                modifiers,
            } => {
                let the_macro;
                let items = match macro_or_item_names {
                    MacroOrMessageDataItemNames::Macro(m) => {
                        the_macro = m;
                        the_macro.expand()
                    }
                    MacroOrMessageDataItemNames::MessageDataItemNames(items) => items,
                };
                let changed_since = modifiers.iter().find_map(|m| match m {
                    FetchModifier::ChangedSince(v) => Some(v.get()),
                    FetchModifier::Vanished => None,
                });
                if modifiers
                    .iter()
                    .any(|m| matches!(m, FetchModifier::Vanished))
                {
                    out.line(&format!(
                        "{tag} BAD VANISHED needs QRESYNC, which is not supported"
                    ));
                    return Ok(Next::Continue);
                }
                if let Err(e) = self
                    .fetch(&tag, &sequence_set, &items, uid, changed_since, conn, out)
                    .await
                {
                    match e {
                        FetchError::Io(e) => return Err(e),
                        FetchError::Store(e) => store_failed(out, &e),
                    }
                }
            }
            CommandBody::Store {
                sequence_set,
                kind,
                response,
                flags,
                uid,
                modifiers,
            } => {
                let unchanged_since = modifiers
                    .iter()
                    .map(|m| match m {
                        StoreModifier::UnchangedSince(v) => *v,
                    })
                    .next();
                if let Err(e) = self
                    .store(
                        &tag,
                        &sequence_set,
                        &kind,
                        &response,
                        &store_flags(&flags),
                        uid,
                        unchanged_since,
                        out,
                    )
                    .await
                {
                    store_failed(out, &e);
                }
            }
            CommandBody::Copy {
                sequence_set,
                mailbox,
                uid,
            }
            | CommandBody::Move {
                sequence_set,
                mailbox,
                uid,
            } => {
                let moving = name == "MOVE";
                if let Err(e) = self
                    .copy_or_move(
                        &tag,
                        &sequence_set,
                        &mailbox_str(&mailbox),
                        uid,
                        moving,
                        out,
                    )
                    .await
                {
                    store_failed(out, &e);
                }
            }
            CommandBody::Idle => {
                return self.idle(&tag, conn, out, stop).await;
            }
            _ => {
                if !self.bad(out, &tag, &format!("{name} is not supported")) {
                    return Ok(Next::Logout);
                }
            }
        }
        Ok(Next::Continue)
    }

    pub(crate) fn inbox_id(&self) -> String {
        self.user
            .as_ref()
            .map(|u| u.inbox_id.clone())
            .unwrap_or_default()
    }

    /// Whether the key this session logged in with still opens IMAP for its inbox (true
    /// before login). A cache hit while the key lives; a revoked or rotated key, or a
    /// deleted inbox, is gone from the cache at once.
    async fn still_authorized(&self) -> bool {
        match &self.user {
            Some(u) => {
                self.server
                    .services
                    .mail_key_still_valid("imap", &u.secret, &u.inbox_id)
                    .await
            }
            None => true,
        }
    }

    async fn login(&mut self, tag: &str, user: &str, pass: &str, out: &mut Out) {
        let services = &self.server.services;
        match services.imap_login(user, pass, self.peer.ip()).await {
            Ok(Ok(sender)) => {
                let Some((inbox_id, _)) = sender.inbox else {
                    out.line(&format!(
                        "{tag} NO [AUTHENTICATIONFAILED] log in with an inbox address and its key"
                    ));
                    return;
                };
                self.signal = Some(services.inbox_signal(&inbox_id));
                self.user = Some(User {
                    account_id: sender.account_id,
                    inbox_id,
                    secret: pass.to_owned(),
                });
                metrics::counter!("mailroom_imap_logins_total").increment(1);
                out.line(&format!(
                    "{tag} OK [CAPABILITY {}] logged in",
                    self.capabilities()
                ));
            }
            Ok(Err(LoginRefused::MissingScope(scope))) => out.line(&format!(
                "{tag} NO [AUTHORIZATIONFAILED] this key lacks the {scope} scope"
            )),
            Ok(Err(LoginRefused::Throttled)) => out.line(&format!(
                "{tag} NO [UNAVAILABLE] too many failed logins; try again later"
            )),
            Ok(Err(_)) => out.line(&format!(
                "{tag} NO [AUTHENTICATIONFAILED] invalid user name or password"
            )),
            Err(e) => {
                tracing::error!(error = %e, "IMAP login check failed");
                out.line(&format!("{tag} NO [UNAVAILABLE] temporary failure"));
            }
        }
    }

    async fn find_mailbox(
        &self,
        name: &str,
    ) -> Result<Option<ImapMailbox>, mailroom_store::StoreError> {
        let name = if name.eq_ignore_ascii_case("INBOX") {
            "INBOX"
        } else {
            name
        };
        self.server
            .services
            .store()
            .imap_mailbox(&self.inbox_id(), name)
            .await
    }

    async fn select(
        &mut self,
        tag: &str,
        name: &str,
        read_only: bool,
        out: &mut Out,
    ) -> Result<(), mailroom_store::StoreError> {
        let previous = self.selected.take();
        if previous.is_some() && self.rev2 {
            out.line("* OK [CLOSED] previous mailbox closed");
        }
        let store = self.server.services.store();
        let wanted = if name.eq_ignore_ascii_case("INBOX") {
            "INBOX"
        } else {
            name
        };
        // SELECT of the mailbox already selected, unchanged since: the list in memory is
        // still right, and one small query says so.
        if let Some(prev) = previous
            && prev.mailbox.name == wanted
            && !prev.pending_expunge
            && store.imap_state(&prev.mailbox.id).await? == Some(prev.known)
        {
            mark_seen(&mut self.signal);
            self.last_check = Some(std::time::Instant::now());
            let mut mb = prev.mailbox;
            mb.uidnext = prev.known.uidnext;
            mb.highestmodseq = prev.known.highestmodseq;
            return self.announce(tag, mb, prev.msgs, read_only, out);
        }
        let Some(mb) = self.find_mailbox(name).await? else {
            out.line(&format!("{tag} NO [NONEXISTENT] no such mailbox"));
            return Ok(());
        };
        // The mailbox row was read first: anything newer than it is reported by the next
        // check (a message already listed is not reported twice).
        mark_seen(&mut self.signal);
        self.last_check = Some(std::time::Instant::now());
        let msgs: Vec<Msg> = store
            .imap_messages(&mb.id)
            .await?
            .into_iter()
            .map(Msg::from_row)
            .collect();
        self.announce(tag, mb, msgs, read_only, out)
    }

    /// The answer to SELECT/EXAMINE; the mailbox becomes the selected one.
    fn announce(
        &mut self,
        tag: &str,
        mb: ImapMailbox,
        msgs: Vec<Msg>,
        read_only: bool,
        out: &mut Out,
    ) -> Result<(), mailroom_store::StoreError> {
        let view = View::open(mb, msgs, read_only);
        out.line(&format!("* {} EXISTS", view.msgs.len()));
        if !self.rev2 {
            out.line("* 0 RECENT");
            if let Some(i) = view.msgs.iter().position(|m| !m.has("\\Seen")) {
                out.line(&format!("* OK [UNSEEN {}] first unseen", i + 1));
            }
        }
        view.flags_lines(out);
        let mb = &view.mailbox;
        out.line(&format!("* OK [UIDVALIDITY {}] UIDs valid", mb.uidvalidity));
        out.line(&format!(
            "* OK [UIDNEXT {}] predicted next UID",
            view.known.uidnext
        ));
        out.line(&format!(
            "* OK [HIGHESTMODSEQ {}] highest modseq",
            view.known.highestmodseq
        ));
        if self.rev2 {
            let special = mb
                .special_use
                .as_deref()
                .map(|s| format!(" {s}"))
                .unwrap_or_default();
            out.line(&format!(
                "* LIST (\\HasNoChildren{special}) \"/\" {}",
                mailbox_name(&mb.name)
            ));
        }
        out.line(&format!(
            "{tag} OK [{}] {} completed",
            if read_only { "READ-ONLY" } else { "READ-WRITE" },
            if read_only { "EXAMINE" } else { "SELECT" }
        ));
        self.selected = Some(view);
        Ok(())
    }

    /// Reports what others changed in the selected mailbox (see [`View::look`]), unless
    /// the session looked a moment ago and nothing signalled a change since.
    pub async fn sync(
        &mut self,
        out: &mut Out,
        allow_expunge: bool,
    ) -> Result<(), mailroom_store::StoreError> {
        let condstore = self.condstore;
        let Some(view) = self.selected.as_mut() else {
            return Ok(());
        };
        let signalled = self.signal.as_ref().is_none_or(|s| s.has_changed());
        let fresh = self.last_check.is_some_and(|t| t.elapsed() < SYNC_INTERVAL);
        if fresh && !signalled && !(view.pending_expunge && allow_expunge) {
            return Ok(());
        }
        mark_seen(&mut self.signal);
        self.last_check = Some(std::time::Instant::now());
        let store = self.server.services.store();
        if view.look(store, out, allow_expunge, condstore).await? == Looked::MailboxGone {
            out.line("* BYE the selected mailbox was deleted or renamed elsewhere");
            self.closing = true;
        }
        Ok(())
    }

    async fn create(
        &mut self,
        tag: &str,
        name: &str,
        out: &mut Out,
    ) -> Result<(), mailroom_store::StoreError> {
        if name.eq_ignore_ascii_case("INBOX") {
            out.line(&format!("{tag} NO [ALREADYEXISTS] INBOX exists"));
            return Ok(());
        }
        if !valid_new_name(name) {
            out.line(&format!(
                "{tag} NO [CANNOT] invalid mailbox name (no empty levels, control characters, * or %)"
            ));
            return Ok(());
        }
        let store = self.server.services.store();
        let inbox_id = self.inbox_id();
        // Superior levels are made as well (RFC 9051 §6.3.4).
        let mut prefix = String::new();
        let levels: Vec<&str> = name.split('/').collect();
        for (i, level) in levels.iter().enumerate() {
            if i > 0 {
                prefix.push('/');
            }
            prefix.push_str(level);
            let last = i + 1 == levels.len();
            match store
                .imap_create_mailbox(&inbox_id, &prefix, now_ms())
                .await?
            {
                Ok(_) => {}
                Err(MailboxRefusal::Exists) if !last => {}
                Err(MailboxRefusal::Exists) => {
                    out.line(&format!("{tag} NO [ALREADYEXISTS] mailbox exists"));
                    return Ok(());
                }
                Err(_) => {
                    out.line(&format!("{tag} NO [CANNOT] cannot create"));
                    return Ok(());
                }
            }
        }
        signal_inbox(&self.server, &self.user);
        out.line(&format!("{tag} OK CREATE completed"));
        Ok(())
    }

    async fn status(
        &mut self,
        tag: &str,
        name: &str,
        items: &[StatusDataItemName],
        out: &mut Out,
    ) -> Result<(), mailroom_store::StoreError> {
        let Some(mb) = self.find_mailbox(name).await? else {
            out.line(&format!("{tag} NO [NONEXISTENT] no such mailbox"));
            return Ok(());
        };
        let store = self.server.services.store();
        let counts = store.imap_counts(&mb.id).await?;
        let mut parts = Vec::new();
        for item in items {
            parts.push(match item {
                StatusDataItemName::Messages => format!("MESSAGES {}", counts.messages),
                StatusDataItemName::Recent => "RECENT 0".to_owned(),
                StatusDataItemName::UidNext => format!("UIDNEXT {}", mb.uidnext),
                StatusDataItemName::UidValidity => format!("UIDVALIDITY {}", mb.uidvalidity),
                StatusDataItemName::Unseen => format!("UNSEEN {}", counts.unseen),
                StatusDataItemName::Deleted => format!("DELETED {}", counts.deleted),
                StatusDataItemName::Size => format!("SIZE {}", counts.size),
                StatusDataItemName::HighestModSeq => format!("HIGHESTMODSEQ {}", mb.highestmodseq),
                StatusDataItemName::DeletedStorage => format!("DELETED-STORAGE {}", 0),
            });
        }
        out.line(&format!(
            "* STATUS {} ({})",
            mailbox_name(&mb.name),
            parts.join(" ")
        ));
        self.sync(out, true).await?;
        out.line(&format!("{tag} OK STATUS completed"));
        Ok(())
    }

    async fn append(
        &mut self,
        tag: &str,
        name: &str,
        flags: &[String],
        date: Option<i64>,
        data: Vec<u8>,
        out: &mut Out,
    ) -> Result<(), mailroom_store::StoreError> {
        let Some(mb) = self.find_mailbox(name).await? else {
            out.line(&format!("{tag} NO [TRYCREATE] no such mailbox"));
            return Ok(());
        };
        if data.is_empty() {
            out.line(&format!("{tag} NO an empty message cannot be appended"));
            return Ok(());
        }
        let Some(user) = self.user.as_ref() else {
            return Ok(());
        };
        let facts = mailroom_services::parse_facts(&data);
        let hash = hex::encode(Sha256::digest(&data));
        let storage = crate::quota::storage_limit(&self.server.services, &user.account_id).await?;
        // The fields not named (no envelope sender, no SPF/DKIM verdicts, and whatever is
        // added to NewMessage later) keep their defaults.
        let msg = NewMessage {
            hash,
            internal_date: date.unwrap_or_else(now_ms),
            recipients: vec![Recipient {
                account_id: user.account_id.clone(),
                inbox_id: user.inbox_id.clone(),
                storage,
            }],
            mailbox: mb.name.clone(),
            message_id: facts.message_id,
            references: facts.references,
            subject: facts.subject,
            from_addr: facts.from_addr,
            flags: flags.to_vec(),
            raw: data,
            ..NewMessage::default()
        };
        let stored = match self.server.services.store().deliver(msg).await {
            Err(mailroom_store::StoreError::StorageFull { scope, .. }) => {
                crate::quota::over_quota(out, tag, scope);
                return Ok(());
            }
            other => other?,
        };
        let Some(stored) = stored.first() else {
            out.line(&format!("{tag} NO [NONEXISTENT] the mailbox went away"));
            return Ok(());
        };
        // Wakes this inbox's waiters (IDLE, long polls, streams) and the webhook worker.
        signal_inbox(&self.server, &self.user);
        self.sync(out, true).await?;
        out.line(&format!(
            "{tag} OK [APPENDUID {} {}] APPEND completed",
            mb.uidvalidity, stored.uid
        ));
        Ok(())
    }

    /// The indexes (into the selected mailbox's list) a sequence set names. `Err` for
    /// message numbers that do not exist.
    pub(crate) fn resolve(&self, set: &SequenceSet, uid: bool) -> Result<Vec<usize>, &'static str> {
        match self.selected.as_ref() {
            Some(view) => view.resolve(set, uid),
            None => Ok(Vec::new()),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn store(
        &mut self,
        tag: &str,
        set: &SequenceSet,
        kind: &StoreType,
        response: &StoreResponse,
        flags: &[String],
        uid: bool,
        unchanged_since: Option<u64>,
        out: &mut Out,
    ) -> Result<(), mailroom_store::StoreError> {
        self.sync(out, uid).await?;
        let idx = match self.resolve(set, uid) {
            Ok(i) => i,
            Err(why) => {
                let _ = self.bad(out, tag, why);
                return Ok(());
            }
        };
        if unchanged_since.is_some() {
            self.condstore = true;
        }
        let condstore = self.condstore;
        let Some(sel) = self.selected.as_mut() else {
            return Ok(());
        };
        if sel.read_only {
            out.line(&format!(
                "{tag} NO [READ-ONLY] the mailbox was opened with EXAMINE"
            ));
            return Ok(());
        }
        let mut changes: Vec<(i64, Vec<String>)> = Vec::new();
        let mut modified: Vec<u32> = Vec::new();
        for &i in &idx {
            let m = &sel.msgs[i];
            if m.gone {
                continue;
            }
            if let Some(u) = unchanged_since
                && m.modseq as u64 > u
            {
                modified.push(if uid { m.uid } else { i as u32 + 1 });
                continue;
            }
            let new: Vec<String> = match kind {
                StoreType::Replace => flags.to_vec(),
                StoreType::Add => {
                    let mut f = m.flags.clone();
                    for x in flags {
                        if !f.iter().any(|y| y.eq_ignore_ascii_case(x)) {
                            f.push(x.clone());
                        }
                    }
                    f
                }
                StoreType::Remove => m
                    .flags
                    .iter()
                    .filter(|y| !flags.iter().any(|x| x.eq_ignore_ascii_case(y)))
                    .cloned()
                    .collect(),
            };
            // With UNCHANGEDSINCE every message gets a new modseq (RFC 7162 §3.2).
            if new != m.flags || unchanged_since.is_some() {
                changes.push((i64::from(m.uid), new));
            }
        }
        let mut touched: HashSet<u32> = HashSet::new();
        if !changes.is_empty() {
            let since = unchanged_since.map(|u| i64::try_from(u).unwrap_or(i64::MAX));
            let FlagOutcome {
                modseq,
                changed,
                refused,
            } = self
                .server
                .flags
                .set(FlagChange {
                    mailbox: sel.mailbox.id.clone(),
                    changes: changes.clone(),
                    unchanged_since: since,
                })
                .await?;
            for (u, new) in changes {
                if changed.contains(&u)
                    && let Ok(i) = sel.msgs.binary_search_by_key(&(u as u32), |m| m.uid)
                {
                    sel.msgs[i].flags = new;
                    sel.msgs[i].modseq = modseq;
                    touched.insert(u as u32);
                }
            }
            for u in refused {
                if let Ok(i) = sel.msgs.binary_search_by_key(&(u as u32), |m| m.uid) {
                    modified.push(if uid { u as u32 } else { i as u32 + 1 });
                }
            }
            signal_inbox(&self.server, &self.user);
        }
        let silent = matches!(response, StoreResponse::Silent);
        if !silent {
            sel.announce_keywords(&idx, out);
        }
        for &i in &idx {
            let m = &sel.msgs[i];
            if m.gone {
                continue;
            }
            // .SILENT still reports modseqs of changed messages under CONDSTORE.
            if silent && !(condstore && touched.contains(&m.uid)) {
                continue;
            }
            let mut parts = Vec::new();
            if !silent {
                parts.push(format!("FLAGS {}", flag_list(&m.flags)));
            }
            if uid {
                parts.push(format!("UID {}", m.uid));
            }
            if condstore {
                parts.push(format!("MODSEQ ({})", m.modseq));
            }
            out.line(&format!("* {} FETCH ({})", i + 1, parts.join(" ")));
        }
        modified.sort_unstable();
        if modified.is_empty() {
            out.line(&format!(
                "{tag} OK {}STORE completed",
                if uid { "UID " } else { "" }
            ));
        } else {
            out.line(&format!(
                "{tag} OK [MODIFIED {}] some messages changed since",
                sequence_set(&modified)
            ));
        }
        Ok(())
    }

    async fn expunge(
        &mut self,
        tag: &str,
        only: Option<&SequenceSet>,
        out: &mut Out,
    ) -> Result<(), mailroom_store::StoreError> {
        self.sync(out, true).await?;
        let store = self.server.services.store().clone();
        let Some(sel) = self.selected.as_mut() else {
            return Ok(());
        };
        if sel.read_only {
            out.line(&format!(
                "{tag} NO [READ-ONLY] the mailbox was opened with EXAMINE"
            ));
            return Ok(());
        }
        let max_uid = sel.msgs.last().map_or(0, |m| m.uid);
        let uids: Vec<i64> = sel
            .msgs
            .iter()
            .filter(|m| m.has("\\Deleted"))
            .filter(|m| only.is_none_or(|set| in_set(set, m.uid, max_uid)))
            .map(|m| i64::from(m.uid))
            .collect();
        if !uids.is_empty() {
            let gone: HashSet<i64> = store
                .imap_expunge(&sel.mailbox.id, &uids)
                .await?
                .into_iter()
                .collect();
            for i in (0..sel.msgs.len()).rev() {
                if gone.contains(&i64::from(sel.msgs[i].uid)) {
                    out.line(&format!("* {} EXPUNGE", i + 1));
                    sel.msgs.remove(i);
                }
            }
            signal_inbox(&self.server, &self.user);
        }
        self.sync(out, true).await?;
        out.line(&format!("{tag} OK EXPUNGE completed"));
        Ok(())
    }

    async fn copy_or_move(
        &mut self,
        tag: &str,
        set: &SequenceSet,
        target: &str,
        uid: bool,
        moving: bool,
        out: &mut Out,
    ) -> Result<(), mailroom_store::StoreError> {
        self.sync(out, uid).await?;
        let idx = match self.resolve(set, uid) {
            Ok(i) => i,
            Err(why) => {
                let _ = self.bad(out, tag, why);
                return Ok(());
            }
        };
        let Some(dest) = self.find_mailbox(target).await? else {
            out.line(&format!("{tag} NO [TRYCREATE] no such mailbox"));
            return Ok(());
        };
        let store = self.server.services.store().clone();
        let account_id = self.user.as_ref().map(|u| u.account_id.clone());
        let limit = match (&account_id, moving) {
            // A move stays within the inbox: its storage does not change.
            (Some(a), false) => crate::quota::storage_limit(&self.server.services, a).await?,
            _ => mailroom_store::StorageLimit::UNLIMITED,
        };
        let Some(sel) = self.selected.as_mut() else {
            return Ok(());
        };
        if moving && sel.read_only {
            out.line(&format!(
                "{tag} NO [READ-ONLY] the mailbox was opened with EXAMINE"
            ));
            return Ok(());
        }
        let uids: Vec<i64> = idx
            .iter()
            .map(|&i| &sel.msgs[i])
            .filter(|m| !m.gone)
            .map(|m| i64::from(m.uid))
            .collect();
        let pairs = if uids.is_empty() {
            Vec::new()
        } else if moving {
            store.imap_move(&sel.mailbox.id, &uids, &dest.id).await?
        } else {
            match store
                .imap_copy(&sel.mailbox.id, &uids, &dest.id, limit)
                .await
            {
                Err(mailroom_store::StoreError::StorageFull { scope, .. }) => {
                    crate::quota::over_quota(out, tag, scope);
                    return Ok(());
                }
                other => other?,
            }
        };
        if !pairs.is_empty() {
            signal_inbox(&self.server, &self.user);
        }
        let src: Vec<u32> = pairs.iter().map(|p| p.0 as u32).collect();
        let dst: Vec<u32> = pairs.iter().map(|p| p.1 as u32).collect();
        let code = if pairs.is_empty() {
            String::new()
        } else {
            format!(
                "[COPYUID {} {} {}] ",
                dest.uidvalidity,
                sequence_set(&src),
                sequence_set(&dst)
            )
        };
        if moving {
            if !code.is_empty() {
                out.line(&format!("* OK {code}moved"));
            }
            let moved: HashSet<u32> = src.into_iter().collect();
            for i in (0..sel.msgs.len()).rev() {
                if moved.contains(&sel.msgs[i].uid) {
                    out.line(&format!("* {} EXPUNGE", i + 1));
                    sel.msgs.remove(i);
                }
            }
            self.sync(out, true).await?;
            out.line(&format!("{tag} OK MOVE completed"));
        } else {
            out.line(&format!("{tag} OK {code}COPY completed"));
        }
        Ok(())
    }

    async fn idle<S: AsyncRead + AsyncWrite + Unpin + Send>(
        &mut self,
        tag: &str,
        conn: &mut BufReader<S>,
        out: &mut Out,
        stop: &CancellationToken,
    ) -> std::io::Result<Next> {
        // IDLE holds a place in the inbox's and the account's budget of waiters.
        let slot = match &self.user {
            Some(u) => self
                .server
                .services
                .imap_wait_slot(&u.account_id, &u.inbox_id)
                .await
                .map_err(|e| e.to_string()),
            None => Err("log in first".to_owned()),
        };
        let slot = match slot {
            Ok(slot) => slot,
            Err(why) => {
                out.line(&format!("{tag} NO [LIMIT] {why}"));
                return Ok(Next::Continue);
            }
        };
        out.line("+ idling");
        let poll = self.server.services.poll_interval();
        let deadline = tokio::time::Instant::now() + self.server.idle_timeout;
        loop {
            if !self.still_authorized().await {
                out.line(REVOKED);
                return Ok(Next::Logout);
            }
            // A lowered tier may leave this IDLE past the account's cap: the newest go.
            if let Err(e @ mailroom_services::ServiceError::Busy { .. }) =
                self.server.services.waiter_still_fits(&slot).await
            {
                out.line(&format!("* BYE [LIMIT] {e}"));
                return Ok(Next::Logout);
            }
            self.server.services.note_waiter_poll("imap_idle");
            if let Err(e) = self.sync(out, true).await {
                tracing::warn!(error = %e, "IMAP IDLE: cannot check the mailbox");
            }
            out.flush(conn.get_mut()).await?;
            tokio::select! {
                r = conn.fill_buf() => {
                    if r.map(|b| b.is_empty()).unwrap_or(true) {
                        return Ok(Next::Logout);
                    }
                    break;
                }
                _ = async {
                    match self.signal.as_mut() {
                        Some(s) => s.changed().await,
                        None => std::future::pending().await,
                    }
                } => {}
                _ = tokio::time::sleep(poll) => {}
                _ = tokio::time::sleep_until(deadline) => {
                    out.line("* BYE autologout: idle for too long");
                    return Ok(Next::Logout);
                }
                _ = stop.cancelled() => {
                    out.line("* BYE server shutting down");
                    return Ok(Next::Logout);
                }
            }
        }
        let mut line = Vec::new();
        match tokio::time::timeout(
            std::time::Duration::from_secs(60),
            conn::read_line(conn, &mut line),
        )
        .await
        {
            Ok(Ok(true)) => {}
            _ => return Ok(Next::Logout),
        }
        if String::from_utf8_lossy(&line)
            .trim()
            .eq_ignore_ascii_case("DONE")
        {
            if let Err(e) = self.sync(out, true).await {
                tracing::warn!(error = %e, "IMAP IDLE: cannot check the mailbox");
            }
            out.line(&format!("{tag} OK IDLE terminated"));
        } else {
            let _ = self.bad(out, tag, "expected DONE to end IDLE");
        }
        Ok(Next::Continue)
    }
}

/// Tells the inbox's waiters (other sessions in IDLE, long polls, streams) and the webhook
/// worker that this session changed something. (Free functions, so that a command holding
/// the selected mailbox mutably can still call them.)
pub(crate) fn signal_inbox(server: &ImapServer, user: &Option<User>) {
    if let Some(u) = user {
        server.services.inbox_changed(&u.inbox_id);
    }
}

fn mark_seen(signal: &mut Option<mailroom_services::InboxSignal>) {
    if let Some(s) = signal.as_mut() {
        s.mark_seen();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_names() {
        assert!(valid_new_name("Work/2026"));
        assert!(!valid_new_name("a//b"));
        assert!(!valid_new_name("a*"));
    }
}
