//! APPEND (RFC 9051 §6.3.12): a message from the client, stored like any delivery
//! (`Store::deliver`: one blob, the storage quota counted, the inbox's waiters woken).

use imap_codec::imap_types::datetime::DateTime;
use imap_codec::imap_types::extensions::binary::LiteralOrLiteral8;
use imap_codec::imap_types::flag::Flag;
use imap_codec::imap_types::mailbox::Mailbox;
use mailroom_core::time::now_ms;
use mailroom_store::{NewMessage, Recipient};
use sha2::{Digest, Sha256};

use super::store::store_flags;
use crate::session::{Done, Next, Out, Session, mailbox_str, signal_inbox};

impl Session {
    /// APPEND with its literal (`literal8` for BINARY) and the optional flags and date.
    pub(crate) async fn append_cmd(
        &mut self,
        tag: &str,
        mailbox: &Mailbox<'_>,
        flags: &[Flag<'_>],
        date: Option<DateTime>,
        message: &LiteralOrLiteral8<'_>,
        out: &mut Out,
    ) -> Done {
        let data = match message {
            LiteralOrLiteral8::Literal(l) => l.as_ref().to_vec(),
            LiteralOrLiteral8::Literal8(l) => l.data.to_vec(),
        };
        let date = date.map(|d| d.as_ref().timestamp_millis());
        let name = mailbox_str(mailbox);
        self.append(tag, &name, &store_flags(flags), date, data, out)
            .await?;
        Ok(Next::Continue)
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
}
