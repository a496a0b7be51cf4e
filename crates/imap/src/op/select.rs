//! SELECT and EXAMINE (RFC 9051 §6.3.2, §6.3.3), UNSELECT (RFC 3691) and CLOSE
//! (§6.4.1): opening the mailbox that becomes the session's [`View`], and leaving it.

use imap_codec::imap_types::command::SelectParameter;
use imap_codec::imap_types::mailbox::Mailbox;
use mailroom_store::ImapMailbox;

use crate::fmt::mailbox as mailbox_name;
use crate::session::{Done, Next, Out, Session, mailbox_str, mark_seen, signal_inbox};
use crate::view::{Msg, View};

impl Session {
    /// SELECT, or EXAMINE when `read_only`. `(CONDSTORE)` enables CONDSTORE; QRESYNC is
    /// refused.
    pub(crate) async fn select_cmd(
        &mut self,
        tag: &str,
        mailbox: &Mailbox<'_>,
        parameters: &[SelectParameter],
        read_only: bool,
        out: &mut Out,
    ) -> Done {
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
        self.select(tag, &mailbox_str(mailbox), read_only, out)
            .await?;
        Ok(Next::Continue)
    }

    /// UNSELECT, or CLOSE (`expunge`), which first removes the `\Deleted` messages of a
    /// mailbox opened read-write, silently (RFC 9051 §6.4.1: no EXPUNGE responses).
    pub(crate) async fn close_cmd(&mut self, tag: &str, expunge: bool, out: &mut Out) -> Done {
        if expunge
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
                store.imap_expunge(&sel.mailbox.id, &uids).await?;
                signal_inbox(&self.server, &self.user);
            }
        }
        self.selected = None;
        let name = if expunge { "CLOSE" } else { "UNSELECT" };
        out.line(&format!("{tag} OK {name} completed"));
        Ok(Next::Continue)
    }

    /// The mailbox `name` of the logged-in inbox (INBOX in any case is INBOX).
    pub(crate) async fn find_mailbox(
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

    /// Opens the mailbox `name` (read-only for EXAMINE); the previous one is closed
    /// first, without expunging.
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
            return self.announce(tag, mb, prev.msgs, read_only, out).await;
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
        self.announce(tag, mb, msgs, read_only, out).await
    }

    /// The answer to SELECT/EXAMINE; the mailbox becomes the selected one.
    async fn announce(
        &mut self,
        tag: &str,
        mb: ImapMailbox,
        msgs: Vec<Msg>,
        read_only: bool,
        out: &mut Out,
    ) -> Result<(), mailroom_store::StoreError> {
        let mut view = View::open(mb, msgs, read_only, !self.rev2);
        view.claim_recent(self.server.services.store()).await?;
        out.line(&format!("* {} EXISTS", view.msgs.len()));
        if !self.rev2 {
            out.line(&format!("* {} RECENT", view.recent_count()));
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
}
