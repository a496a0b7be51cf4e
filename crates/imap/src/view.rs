//! The session's view of its selected mailbox: the messages it was told of, in message
//! number order, the keywords it was told of, and what it last saw of the mailbox. Every
//! answer that names a message number, a flag or a count goes through here, so that the
//! rules clients depend on live in one place:
//!
//! - message numbers are positions in this list; a message removed by someone else stays
//!   (marked `gone`, still served from its blob, RFC 2180 §4.1) until an `EXPUNGE` may be
//!   sent, never during FETCH, STORE or SEARCH (RFC 9051 §7.5.1);
//! - `EXISTS` is sent whenever the list grew, before any answer that uses a new number,
//!   even when removals made the count come out the same;
//! - a keyword is announced with `* FLAGS` (and `PERMANENTFLAGS`) before any `FETCH`
//!   answer uses it (RFC 9051 §7.3.5).

use std::collections::HashSet;

use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};
use mailroom_store::{ImapMailbox, ImapMessage, MailboxState, Store, StoreError};

use crate::fmt::flag_list;
use crate::search::in_set;
use crate::session::Out;

/// Flags every mailbox offers.
pub(crate) const SYSTEM_FLAGS: &str = "\\Answered \\Flagged \\Deleted \\Seen \\Draft";

/// At most this many keywords are announced; a mailbox with more still works, but
/// answers may then use a keyword a client was not told of.
const MAX_KEYWORDS: usize = 1000;

/// One message of the selected mailbox.
#[derive(Debug, Clone)]
pub(crate) struct Msg {
    pub(crate) uid: u32,
    pub(crate) modseq: i64,
    pub(crate) flags: Vec<String>,
    /// SHA-256 of the body, as bytes (half the memory of the hex, and no allocation).
    pub(crate) blob: [u8; 32],
    pub(crate) size: i64,
    pub(crate) internal_date: i64,
    /// Removed by someone else; the EXPUNGE is not sent yet.
    pub(crate) gone: bool,
}

/// The blob hash as bytes; the store writes lowercase hex SHA-256.
fn blob_id(hex_hash: &str) -> [u8; 32] {
    let mut id = [0u8; 32];
    if hex::decode_to_slice(hex_hash, &mut id).is_err() {
        tracing::warn!(hash = %hex_hash, "IMAP: a blob hash that is not SHA-256 hex");
    }
    id
}

impl Msg {
    pub(crate) fn blob_hex(&self) -> String {
        hex::encode(self.blob)
    }

    pub(crate) fn from_row(m: ImapMessage) -> Msg {
        Msg {
            uid: u32::try_from(m.uid).unwrap_or(u32::MAX),
            modseq: m.modseq,
            flags: m.flags,
            blob: blob_id(&m.blob_hash),
            size: m.size,
            internal_date: m.internal_date,
            gone: false,
        }
    }

    pub(crate) fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f.eq_ignore_ascii_case(flag))
    }
}

/// The selected mailbox as this session knows it.
pub(crate) struct View {
    pub(crate) mailbox: ImapMailbox,
    pub(crate) read_only: bool,
    pub(crate) msgs: Vec<Msg>,
    /// What the mailbox looked like at the last look.
    pub(crate) known: MailboxState,
    /// Removals seen but not yet reported.
    pub(crate) pending_expunge: bool,
    /// Keywords announced with `* FLAGS`, in the order they were.
    keywords: Vec<String>,
}

/// What a look at the mailbox found that the session must act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Looked {
    Fine,
    /// Deleted or renamed elsewhere; with `allow_expunge` every message was reported
    /// gone, and the session should say BYE.
    MailboxGone,
}

impl View {
    /// The view of a mailbox just read: `mb` first, then `msgs` (a message that came in
    /// between is in the list, and the numbers cover it).
    pub(crate) fn open(mb: ImapMailbox, msgs: Vec<Msg>, read_only: bool) -> View {
        let known = MailboxState {
            uidnext: mb
                .uidnext
                .max(msgs.last().map_or(0, |m| i64::from(m.uid) + 1)),
            highestmodseq: msgs
                .iter()
                .map(|m| m.modseq)
                .fold(mb.highestmodseq, i64::max),
            count: msgs.len() as i64,
            uidvalidity: mb.uidvalidity,
        };
        let mut view = View {
            mailbox: mb,
            read_only,
            msgs,
            known,
            pending_expunge: false,
            keywords: Vec::new(),
        };
        let all: Vec<usize> = (0..view.msgs.len()).collect();
        view.learn_keywords(&all);
        view
    }

    /// Adds the keywords of these messages to the announced set; true if any was new.
    fn learn_keywords(&mut self, idx: &[usize]) -> bool {
        let mut new = false;
        for &i in idx {
            for f in &self.msgs[i].flags {
                if !f.starts_with('\\')
                    && self.keywords.len() < MAX_KEYWORDS
                    && !self.keywords.iter().any(|k| k.eq_ignore_ascii_case(f))
                {
                    self.keywords.push(f.clone());
                    new = true;
                }
            }
        }
        new
    }

    /// `* FLAGS (…)` and the `PERMANENTFLAGS` that go with it.
    pub(crate) fn flags_lines(&self, out: &mut Out) {
        let extra: String = self.keywords.iter().map(|k| format!(" {k}")).collect();
        out.line(&format!("* FLAGS ({SYSTEM_FLAGS}{extra})"));
        if self.read_only {
            out.line("* OK [PERMANENTFLAGS ()] read-only");
        } else {
            out.line(&format!(
                "* OK [PERMANENTFLAGS ({SYSTEM_FLAGS}{extra} \\*)] flags permitted"
            ));
        }
    }

    /// Before answering with the flags of these messages: announces keywords the session
    /// has not been told of.
    pub(crate) fn announce_keywords(&mut self, idx: &[usize], out: &mut Out) {
        if self.learn_keywords(idx) {
            self.flags_lines(out);
        }
    }

    /// `* n FETCH (FLAGS …)` for message `i` (a change the session did not ask for, or
    /// the answer to STORE), keywords announced first.
    pub(crate) fn tell_flags(&mut self, i: usize, uid: bool, modseq: bool, out: &mut Out) {
        self.announce_keywords(&[i], out);
        let m = &self.msgs[i];
        let uid = if uid {
            format!("UID {} ", m.uid)
        } else {
            String::new()
        };
        let modseq = if modseq {
            format!(" MODSEQ ({})", m.modseq)
        } else {
            String::new()
        };
        out.line(&format!(
            "* {} FETCH ({uid}FLAGS {}{modseq})",
            i + 1,
            flag_list(&m.flags)
        ));
    }

    /// Reports removals (`* n EXPUNGE`, highest first so the numbers stay right) of the
    /// messages `remove` picks, and takes them out of the list.
    pub(crate) fn expunge_where(&mut self, out: &mut Out, remove: impl Fn(&Msg) -> bool) {
        for i in (0..self.msgs.len()).rev() {
            if remove(&self.msgs[i]) {
                out.line(&format!("* {} EXPUNGE", i + 1));
                self.msgs.remove(i);
            }
        }
    }

    /// The indexes (into the list) a sequence set names. `Err` for message numbers that
    /// do not exist.
    pub(crate) fn resolve(&self, set: &SequenceSet, uid: bool) -> Result<Vec<usize>, &'static str> {
        if uid {
            let max = self.msgs.last().map_or(0, |m| m.uid);
            if self.msgs.is_empty() {
                return Ok(Vec::new());
            }
            return Ok((0..self.msgs.len())
                .filter(|&i| in_set(set, self.msgs[i].uid, max))
                .collect());
        }
        let n = self.msgs.len() as u32;
        // `1:*` in an empty mailbox names nothing (clients send it to mean "all"); a number
        // that does not exist is an error.
        let has_star = set.0.as_ref().iter().any(|s| match s {
            Sequence::Single(v) => matches!(v, SeqOrUid::Asterisk),
            Sequence::Range(a, b) => {
                matches!(a, SeqOrUid::Asterisk) || matches!(b, SeqOrUid::Asterisk)
            }
        });
        if n == 0 && has_star {
            return Ok(Vec::new());
        }
        for s in set.0.as_ref() {
            let check = |v: &SeqOrUid| match v {
                SeqOrUid::Value(v) => v.get() <= n,
                SeqOrUid::Asterisk => n > 0,
            };
            let ok = match s {
                Sequence::Single(v) => check(v),
                Sequence::Range(a, b) => check(a) && check(b),
            };
            if !ok {
                return Err("invalid message sequence number (no such message)");
            }
        }
        Ok((0..self.msgs.len())
            .filter(|&i| in_set(set, i as u32 + 1, n))
            .collect())
    }

    /// Looks at the mailbox and reports what others changed: new messages (`EXISTS`),
    /// flag changes (`FETCH`), and removals (`EXPUNGE`, only when `allow_expunge`).
    pub(crate) async fn look(
        &mut self,
        store: &Store,
        out: &mut Out,
        allow_expunge: bool,
        condstore: bool,
    ) -> Result<Looked, StoreError> {
        let Some(state) = store.imap_state(&self.mailbox.id).await? else {
            // The mailbox was deleted (or renamed) under us: everything is gone.
            for m in &mut self.msgs {
                m.gone = true;
            }
            self.pending_expunge = true;
            if allow_expunge {
                self.expunge_where(out, |_| true);
                self.pending_expunge = false;
                return Ok(Looked::MailboxGone);
            }
            return Ok(Looked::Fine);
        };
        if state == self.known && !(self.pending_expunge && allow_expunge) {
            return Ok(Looked::Fine);
        }
        let live = self.msgs.iter().filter(|m| !m.gone).count() as i64;
        if state.count != live || state.uidnext != self.known.uidnext {
            let uids: HashSet<i64> = store
                .imap_uids(&self.mailbox.id)
                .await?
                .into_iter()
                .collect();
            for m in &mut self.msgs {
                if !uids.contains(&i64::from(m.uid)) && !m.gone {
                    m.gone = true;
                    self.pending_expunge = true;
                }
            }
        }
        let mut flag_changes: Vec<u32> = Vec::new();
        let mut added = false;
        if state.highestmodseq != self.known.highestmodseq || state.uidnext != self.known.uidnext {
            let changed = store
                .imap_changed_since(&self.mailbox.id, self.known.highestmodseq)
                .await?;
            let max_uid = self.msgs.last().map_or(0, |m| m.uid);
            for row in changed {
                let uid = u32::try_from(row.uid).unwrap_or(u32::MAX);
                match self.msgs.binary_search_by_key(&uid, |m| m.uid) {
                    Ok(i) => {
                        let m = &mut self.msgs[i];
                        if m.gone {
                            continue;
                        }
                        m.modseq = row.modseq;
                        if m.flags != row.flags {
                            m.flags = row.flags;
                            flag_changes.push(uid);
                        }
                    }
                    Err(_) if uid > max_uid => {
                        self.msgs.push(Msg::from_row(row));
                        added = true;
                    }
                    Err(_) => {}
                }
            }
        }
        if allow_expunge && self.pending_expunge {
            self.expunge_where(out, |m| m.gone);
            self.pending_expunge = false;
        }
        // After the removals, so that the count is the one the client ends up with; and
        // whenever the list grew, even if removals made the count come out the same.
        if added {
            out.line(&format!("* {} EXISTS", self.msgs.len()));
        }
        for uid in flag_changes {
            if let Ok(i) = self.msgs.binary_search_by_key(&uid, |m| m.uid) {
                self.tell_flags(i, true, condstore, out);
            }
        }
        self.known = state;
        Ok(Looked::Fine)
    }
}
