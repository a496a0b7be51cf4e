//! One IMAP session: the state machine of RFC 9051 §3. `handle` checks that a command
//! fits the session's state and hands it to its method in `op/` (one module per command
//! family); what every command shares stays here: the answer buffer, BAD counting, and
//! `sync`, which reports others' changes to the selected mailbox.
//!
//! A selected mailbox is held in memory as the list of its messages' uids, flags and
//! modseqs (the sequence numbers are positions in that list, see [`View`]). Before
//! answering, the session compares the mailbox's (uidnext, highestmodseq, count) with what
//! it last saw and reports what others changed: EXISTS for new messages, FETCH FLAGS for
//! flag changes, and EXPUNGE for removals, except during FETCH, STORE and SEARCH where
//! EXPUNGE may not be sent (RFC 9051 §7.5.1); those wait for the next command that allows
//! them.

use std::net::SocketAddr;
use std::sync::Arc;

use imap_codec::imap_types::command::{Command, CommandBody};
use imap_codec::imap_types::mailbox::Mailbox;
use imap_codec::imap_types::sequence::SequenceSet;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

use crate::ImapServer;
use crate::view::{Looked, View};

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
pub(crate) const REVOKED: &str =
    "* BYE [AUTHORIZATIONFAILED] the key this session logged in with was revoked";

/// The identity of a logged-in session. (No `Debug`: it holds the key.)
pub(crate) struct User {
    pub(crate) account_id: String,
    pub(crate) inbox_id: String,
    /// The key the session logged in with, asked again before each command and while
    /// idling, so that revoking it (or deleting the inbox) ends the session.
    pub(crate) secret: String,
}

/// What the connection loop does after a command.
pub enum Next {
    Continue,
    Logout,
    StartTls,
}

/// Why a command did not finish. The two end differently: a failed connection ends the
/// session, a failed store is answered `NO [UNAVAILABLE]` and the session goes on.
pub(crate) enum CmdError {
    Io(std::io::Error),
    Store(mailroom_store::StoreError),
}

impl From<mailroom_store::StoreError> for CmdError {
    fn from(e: mailroom_store::StoreError) -> CmdError {
        CmdError::Store(e)
    }
}

impl From<std::io::Error> for CmdError {
    fn from(e: std::io::Error) -> CmdError {
        CmdError::Io(e)
    }
}

/// What a command's method returns: what the connection loop does next, or why the
/// command failed (see [`CmdError`]).
pub(crate) type Done = Result<Next, CmdError>;

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
    pub(crate) signal: Option<mailroom_services::InboxSignal>,
    pub(crate) last_check: Option<std::time::Instant>,
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

/// A mailbox name as the client sent it (INBOX in any case is `Mailbox::Inbox`).
pub(crate) fn mailbox_str(m: &Mailbox<'_>) -> String {
    match m {
        Mailbox::Inbox => "INBOX".into(),
        Mailbox::Other(o) => String::from_utf8_lossy(o.as_ref()).into_owned(),
    }
}

/// Why a command cannot run in the session's state (RFC 9051 §3), if it cannot.
fn state_error(body: &CommandBody<'_>, authed: bool, selected: bool) -> Option<&'static str> {
    match body {
        CommandBody::Capability
        | CommandBody::Noop
        | CommandBody::Logout
        | CommandBody::Id { .. } => None,
        CommandBody::StartTLS | CommandBody::Authenticate { .. } | CommandBody::Login { .. } => {
            authed.then_some("already logged in")
        }
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
    }
}

/// The answer to a command the store failed under: the client may try again.
fn store_failed(out: &mut Out, tag: &str, e: &mailroom_store::StoreError) {
    tracing::error!(error = %e, "IMAP: store failure");
    out.line(&format!(
        "{tag} NO [UNAVAILABLE] temporary failure; try again"
    ));
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

    pub(crate) fn plaintext_allowed(&self) -> bool {
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

    /// [`Session::bad`] as what the connection loop does next.
    pub(crate) fn bad_next(&mut self, out: &mut Out, tag: &str, text: &str) -> Next {
        if self.bad(out, tag, text) {
            Next::Continue
        } else {
            Next::Logout
        }
    }

    /// Runs one parsed command: checks the key and the state, then hands the command's
    /// fields to its method (one per command, in `op/`).
    pub async fn handle<S: AsyncRead + AsyncWrite + Unpin + Send>(
        &mut self,
        cmd: Command<'_>,
        conn: &mut BufReader<S>,
        out: &mut Out,
        stop: &CancellationToken,
    ) -> std::io::Result<Next> {
        let tag = cmd.tag.as_ref().to_owned();
        let tag = tag.as_str();
        if !self.still_authorized().await {
            out.line(REVOKED);
            return Ok(Next::Logout);
        }
        let name = cmd.body.name();
        if let Some(why) = state_error(&cmd.body, self.user.is_some(), self.selected.is_some()) {
            return Ok(self.bad_next(out, tag, &format!("{name}: {why}")));
        }
        self.bad_in_a_row = 0;
        match self.dispatch(tag, name, cmd.body, conn, out, stop).await {
            Ok(next) => Ok(next),
            Err(CmdError::Io(e)) => Err(e),
            Err(CmdError::Store(e)) => {
                store_failed(out, tag, &e);
                Ok(Next::Continue)
            }
        }
    }

    /// One method call per command: the arm unpacks the variant, the method (in `op/`)
    /// does the rest.
    async fn dispatch<S: AsyncRead + AsyncWrite + Unpin + Send>(
        &mut self,
        tag: &str,
        name: &str,
        body: CommandBody<'_>,
        conn: &mut BufReader<S>,
        out: &mut Out,
        stop: &CancellationToken,
    ) -> Done {
        use CommandBody as C;
        match body {
            C::Capability => self.capability_cmd(tag, out),
            C::Noop => self.noop_cmd(tag, "NOOP", out).await,
            C::Check => self.noop_cmd(tag, "CHECK", out).await,
            C::Logout => self.logout_cmd(tag, out),
            C::Id { .. } => self.id_cmd(tag, out),
            C::Enable { capabilities } => self.enable_cmd(tag, capabilities.as_ref(), out),
            C::Namespace => self.namespace_cmd(tag, out),
            C::StartTLS => self.starttls_cmd(tag, out),
            C::Login { username, password } => self.login_cmd(tag, &username, &password, out).await,
            C::Authenticate {
                mechanism: m,
                initial_response: r,
            } => self.authenticate_cmd(tag, &m, r, conn, out).await,
            C::Select {
                mailbox: m,
                parameters: p,
            } => self.select_cmd(tag, &m, &p, false, out).await,
            C::Examine {
                mailbox: m,
                parameters: p,
            } => self.select_cmd(tag, &m, &p, true, out).await,
            C::Unselect => self.close_cmd(tag, false, out).await,
            C::Close => self.close_cmd(tag, true, out).await,
            C::Create { mailbox } => self.create_cmd(tag, &mailbox, out).await,
            C::Delete { mailbox } => self.delete_cmd(tag, &mailbox, out).await,
            C::Rename { from, to } => self.rename_cmd(tag, &from, &to, out).await,
            C::Subscribe { mailbox } => self.subscribe_cmd(tag, &mailbox, true, out).await,
            C::Unsubscribe { mailbox } => self.subscribe_cmd(tag, &mailbox, false, out).await,
            C::List {
                reference: r,
                mailbox_wildcard: w,
            } => self.list_cmd(tag, &r, &w, false, out).await,
            C::Lsub {
                reference: r,
                mailbox_wildcard: w,
            } => self.list_cmd(tag, &r, &w, true, out).await,
            C::Status {
                mailbox: m,
                item_names: i,
            } => self.status_cmd(tag, &m, &i, out).await,
            C::Append {
                mailbox: m,
                flags: f,
                date: d,
                message,
            } => self.append_cmd(tag, &m, &f, d, &message, out).await,
            C::Expunge => self.expunge_cmd(tag, None, out).await,
            C::ExpungeUid { sequence_set: s } => self.expunge_cmd(tag, Some(&s), out).await,
            C::Search {
                charset: c,
                criteria: k,
                uid,
            } => self.search_cmd(tag, c.as_ref(), k.as_ref(), uid, out).await,
            C::Fetch {
                sequence_set: s,
                macro_or_item_names: w,
                uid,
                modifiers: m,
            } => self.fetch_cmd(tag, &s, w, uid, &m, conn, out).await,
            C::Store {
                sequence_set: s,
                kind: k,
                response: r,
                flags: f,
                uid,
                modifiers: m,
            } => self.store_cmd(tag, &s, &k, &r, &f, uid, &m, out).await,
            C::Copy {
                sequence_set: s,
                mailbox: m,
                uid,
            } => self.copy_cmd(tag, &s, &m, uid, false, out).await,
            C::Move {
                sequence_set: s,
                mailbox: m,
                uid,
            } => self.copy_cmd(tag, &s, &m, uid, true, out).await,
            C::Idle => self.idle(tag, conn, out, stop).await,
            body @ (C::GetQuota { .. } | C::GetQuotaRoot { .. } | C::SetQuota { .. }) => {
                self.quota_cmd(tag, &body, out).await
            }
            _ => Ok(self.bad_next(out, tag, &format!("{name} is not supported"))),
        }
    }

    pub(crate) fn inbox_id(&self) -> String {
        self.user
            .as_ref()
            .map(|u| u.inbox_id.clone())
            .unwrap_or_default()
    }

    /// The indexes (into the selected mailbox's list) a sequence set names. `Err` for
    /// message numbers that do not exist.
    pub(crate) fn resolve(&self, set: &SequenceSet, uid: bool) -> Result<Vec<usize>, &'static str> {
        match self.selected.as_ref() {
            Some(view) => view.resolve(set, uid),
            None => Ok(Vec::new()),
        }
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
}

/// Tells the inbox's waiters (other sessions in IDLE, long polls, streams) and the webhook
/// worker that this session changed something. (Free functions, so that a command holding
/// the selected mailbox mutably can still call them.)
pub(crate) fn signal_inbox(server: &ImapServer, user: &Option<User>) {
    if let Some(u) = user {
        server.services.inbox_changed(&u.inbox_id);
    }
}

pub(crate) fn mark_seen(signal: &mut Option<mailroom_services::InboxSignal>) {
    if let Some(s) = signal.as_mut() {
        s.mark_seen();
    }
}
