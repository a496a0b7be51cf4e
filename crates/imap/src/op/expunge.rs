//! EXPUNGE and UID EXPUNGE (RFC 9051 §6.4.3, RFC 4315 §2.1): removes the `\Deleted`
//! messages (of the given uids, for UID EXPUNGE) and reports each removal.

use std::collections::HashSet;

use imap_codec::imap_types::sequence::SequenceSet;

use crate::search::in_set;
use crate::session::{Done, Next, Out, Session, signal_inbox};

impl Session {
    /// EXPUNGE, or UID EXPUNGE when `only` names the uids.
    pub(crate) async fn expunge_cmd(
        &mut self,
        tag: &str,
        only: Option<&SequenceSet>,
        out: &mut Out,
    ) -> Done {
        self.expunge(tag, only, out).await?;
        Ok(Next::Continue)
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
}
