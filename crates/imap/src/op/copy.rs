//! COPY and MOVE (RFC 9051 §6.4.7, §6.4.8) with UIDPLUS's COPYUID (RFC 4315): copies
//! count against the storage quota, a move stays within the inbox and does not.

use std::collections::HashSet;

use imap_codec::imap_types::mailbox::Mailbox;
use imap_codec::imap_types::sequence::SequenceSet;

use crate::fmt::sequence_set;
use crate::session::{Done, Next, Out, Session, mailbox_str, signal_inbox};

impl Session {
    /// COPY, or MOVE when `moving` (UID forms when `uid`).
    pub(crate) async fn copy_cmd(
        &mut self,
        tag: &str,
        set: &SequenceSet,
        mailbox: &Mailbox<'_>,
        uid: bool,
        moving: bool,
        out: &mut Out,
    ) -> Done {
        let target = mailbox_str(mailbox);
        self.copy_or_move(tag, set, &target, uid, moving, out)
            .await?;
        Ok(Next::Continue)
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
}
