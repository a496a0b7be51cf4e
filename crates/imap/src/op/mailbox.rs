//! Mailbox management: CREATE, DELETE, RENAME, SUBSCRIBE and UNSUBSCRIBE, STATUS (RFC
//! 9051 §6.3.4–§6.3.8, §6.3.11). The standard mailboxes (INBOX, Sent, Drafts, Trash, Junk,
//! Archive) can be neither deleted nor renamed: the API and delivery rely on them.

use imap_codec::imap_types::mailbox::Mailbox;
use imap_codec::imap_types::status::StatusDataItemName;
use mailroom_core::time::now_ms;
use mailroom_store::MailboxRefusal;

use crate::fmt::mailbox as mailbox_name;
use crate::session::{Done, Next, Out, Session, mailbox_str, signal_inbox};

/// Longest mailbox name.
const MAX_MAILBOX_NAME: usize = 255;

/// A mailbox name a client may create: no empty levels, no control characters, no
/// wildcards, not too long.
fn valid_new_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_MAILBOX_NAME
        && !name.starts_with('/')
        && !name.contains("//")
        && !name.chars().any(|c| c.is_control() || c == '*' || c == '%')
}

impl Session {
    /// CREATE; a trailing delimiter only says the client means to put mailboxes inside.
    pub(crate) async fn create_cmd(
        &mut self,
        tag: &str,
        mailbox: &Mailbox<'_>,
        out: &mut Out,
    ) -> Done {
        let name = mailbox_str(mailbox);
        let name = name.strip_suffix('/').unwrap_or(&name).to_owned();
        self.create(tag, &name, out).await?;
        Ok(Next::Continue)
    }

    pub(crate) async fn delete_cmd(
        &mut self,
        tag: &str,
        mailbox: &Mailbox<'_>,
        out: &mut Out,
    ) -> Done {
        let name = mailbox_str(mailbox);
        let inbox_id = self.inbox_id();
        match self.server.services.store().imap_delete_mailbox(&inbox_id, &name).await? {
            Ok(()) => {
                signal_inbox(&self.server, &self.user);
                out.line(&format!("{tag} OK DELETE completed"));
            }
            Err(MailboxRefusal::NotFound) => {
                out.line(&format!("{tag} NO [NONEXISTENT] no such mailbox"))
            }
            Err(MailboxRefusal::Standard) => out.line(&format!(
                "{tag} NO [CANNOT] the standard mailboxes (INBOX, Sent, Drafts, Trash, Junk, Archive) cannot be deleted"
            )),
            Err(MailboxRefusal::HasChildren) => out.line(&format!(
                "{tag} NO [INUSE] delete the mailboxes inside it first"
            )),
            Err(MailboxRefusal::Exists) => out.line(&format!("{tag} NO cannot delete")),
        }
        Ok(Next::Continue)
    }

    /// RENAME, of the mailbox and the ones inside it.
    pub(crate) async fn rename_cmd(
        &mut self,
        tag: &str,
        from: &Mailbox<'_>,
        to: &Mailbox<'_>,
        out: &mut Out,
    ) -> Done {
        let (from, to) = (mailbox_str(from), mailbox_str(to));
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
            .await?
        {
            Ok(()) => {
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
            Err(MailboxRefusal::NotFound) => {
                out.line(&format!("{tag} NO [NONEXISTENT] no such mailbox"))
            }
            Err(MailboxRefusal::Exists) => {
                out.line(&format!("{tag} NO [ALREADYEXISTS] that name is taken"))
            }
            Err(_) => out.line(&format!(
                "{tag} NO [CANNOT] the standard mailboxes keep their names"
            )),
        }
        Ok(Next::Continue)
    }

    /// SUBSCRIBE (`on`) or UNSUBSCRIBE.
    pub(crate) async fn subscribe_cmd(
        &mut self,
        tag: &str,
        mailbox: &Mailbox<'_>,
        on: bool,
        out: &mut Out,
    ) -> Done {
        let inbox_id = self.inbox_id();
        let name = if on { "SUBSCRIBE" } else { "UNSUBSCRIBE" };
        let store = self.server.services.store();
        if store
            .imap_subscribe(&inbox_id, &mailbox_str(mailbox), on)
            .await?
        {
            out.line(&format!("{tag} OK {name} completed"));
        } else {
            out.line(&format!("{tag} NO [NONEXISTENT] no such mailbox"));
        }
        Ok(Next::Continue)
    }

    pub(crate) async fn status_cmd(
        &mut self,
        tag: &str,
        mailbox: &Mailbox<'_>,
        items: &[StatusDataItemName],
        out: &mut Out,
    ) -> Done {
        self.status(tag, &mailbox_str(mailbox), items, out).await?;
        Ok(Next::Continue)
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
                StatusDataItemName::Recent => format!("RECENT {}", counts.recent),
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
