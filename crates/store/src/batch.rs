//! Writing a group commit's messages with few statements.
//!
//! Each statement is a round trip to the database (on SQLite, to the connection's own
//! thread and back), and under a load of many small deliveries those hand-offs, not the
//! writing, were most of the cost. So a batch is written in phases, each one statement
//! for the whole batch where it can be: the bodies, the uids of each mailbox, the message
//! rows, the events, and one storage charge per inbox. Only thread lookups (for messages
//! that reference others) and queued outbound recipients stay per message.

use std::collections::HashMap;

use mailroom_core::event::NewEvent;
use mailroom_core::ids::{IdKind, new_id};
use sqlx::{Any, Row, Transaction};

use crate::StoreError;
use crate::messages::{NewMessage, StoredMessage, find_thread, mailbox_id, word_set};

/// Rows per multi-row `INSERT`. Binding costs grow with the square of a statement's
/// parameters on SQLite (sqlx looks each one's name up, and SQLite finds a name by a
/// linear walk), so statements stay small: 25 rows of at most 16 columns.
const ROWS_PER_INSERT: usize = 25;

/// One message row to insert: the copy of `msg` in one recipient inbox.
struct Copy<'a> {
    msg: &'a NewMessage,
    account_id: &'a str,
    inbox_id: &'a str,
    storage: crate::StorageLimit,
    mailbox_id: String,
    id: String,
    uid: i64,
    modseq: i64,
    thread_id: String,
}

/// The next (uid, modseq) pairs taken for one mailbox.
struct Uids {
    uid: i64,
    modseq: i64,
    left: i64,
}

impl Iterator for Uids {
    type Item = (i64, i64);

    fn next(&mut self) -> Option<(i64, i64)> {
        if self.left == 0 {
            return None;
        }
        let pair = (self.uid, self.modseq);
        self.uid += 1;
        self.modseq += 1;
        self.left -= 1;
        Some(pair)
    }
}

/// Stores `msgs` (each for its recipients) in `tx`. Returns the stored copies of each
/// message, in order. A recipient whose inbox is gone by now gets no copy.
pub(crate) async fn insert_messages(
    tx: &mut Transaction<'_, Any>,
    msgs: &[&NewMessage],
) -> Result<Vec<Vec<StoredMessage>>, StoreError> {
    insert_blobs(tx, msgs).await?;
    let mut uids = allocate_uids(tx, msgs).await?;
    // Threads: a message may reply to one earlier in this very batch.
    let mut batch_threads: HashMap<(&str, &str), String> = HashMap::new();
    let mut copies = Vec::new();
    let mut stored = Vec::with_capacity(msgs.len());
    for msg in msgs {
        let mut mine = Vec::with_capacity(msg.recipients.len());
        for rcpt in &msg.recipients {
            let mbox = mailbox_id(&rcpt.inbox_id, &msg.mailbox);
            let Some((uid, modseq)) = uids.get_mut(&mbox).and_then(Iterator::next) else {
                // The inbox was deleted between RCPT and commit: nothing to file into.
                tracing::info!(inbox_id = %rcpt.inbox_id, "recipient inbox vanished before delivery");
                continue;
            };
            let in_batch = msg
                .references
                .iter()
                .rev()
                .find_map(|r| batch_threads.get(&(rcpt.inbox_id.as_str(), r.as_str())));
            let thread_id = match in_batch {
                Some(t) => t.clone(),
                None => find_thread(tx, &rcpt.inbox_id, &msg.references).await?,
            };
            if let Some(mid) = &msg.message_id {
                batch_threads.insert((rcpt.inbox_id.as_str(), mid.as_str()), thread_id.clone());
            }
            let copy = Copy {
                msg,
                account_id: &rcpt.account_id,
                inbox_id: &rcpt.inbox_id,
                storage: rcpt.storage,
                mailbox_id: mbox,
                id: new_id(IdKind::Message),
                uid,
                modseq,
                thread_id,
            };
            mine.push(StoredMessage {
                id: copy.id.clone(),
                inbox_id: rcpt.inbox_id.clone(),
                thread_id: copy.thread_id.clone(),
                uid,
            });
            copies.push(copy);
        }
        stored.push(mine);
    }
    charge_storage(tx, &copies).await?;
    insert_rows(tx, &copies).await?;
    insert_events(tx, &copies).await?;
    for (msg, mine) in msgs.iter().zip(&stored) {
        if let (Some(spec), Some(sent), Some(rcpt)) =
            (&msg.outbound, mine.first(), msg.recipients.first())
        {
            crate::outbound::insert_outbound(tx, msg, spec, sent, &rcpt.account_id).await?;
        }
    }
    Ok(stored)
}

/// Every stored copy counts against its inbox's and account's storage, charged once per
/// inbox for the whole batch. Over a limit the batch fails whole
/// ([`StoreError::StorageFull`]) and the committer retries its deliveries one by one, so
/// only the one that does not fit is refused.
async fn charge_storage(
    tx: &mut Transaction<'_, Any>,
    copies: &[Copy<'_>],
) -> Result<(), StoreError> {
    let mut per_inbox: Vec<(&str, &str, crate::StorageLimit, i64)> = Vec::new();
    for c in copies {
        let size = c.msg.raw.len() as i64;
        match per_inbox
            .iter_mut()
            .find(|(_, inbox, _, _)| *inbox == c.inbox_id)
        {
            Some((_, _, _, n)) => *n += size,
            None => per_inbox.push((c.account_id, c.inbox_id, c.storage, size)),
        }
    }
    for (account_id, inbox_id, limit, bytes) in per_inbox {
        crate::storage::charge(tx, account_id, inbox_id, bytes, limit).await?;
    }
    Ok(())
}

/// Each body once (bodies are shared by hash). A body used again is made young again (and
/// locked for this transaction), so the collector's grace period also covers a body that
/// was unused a moment ago.
async fn insert_blobs(
    tx: &mut Transaction<'_, Any>,
    msgs: &[&NewMessage],
) -> Result<(), StoreError> {
    let now = mailroom_core::time::now_ms();
    let mut seen = std::collections::HashSet::new();
    let blobs: Vec<&NewMessage> = msgs
        .iter()
        .copied()
        .filter(|m| seen.insert(m.hash.as_str()))
        .collect();
    for chunk in blobs.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO blobs (hash, size, data, created_at) VALUES {} \
             ON CONFLICT (hash) DO UPDATE SET created_at = excluded.created_at",
            placeholders(chunk.len(), 4)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for m in chunk {
            q = q
                .bind(&m.hash)
                .bind(m.raw.len() as i64)
                .bind(m.raw.as_slice())
                .bind(now);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// The (uid, modseq) pairs of each mailbox the batch files into, taken with one `UPDATE`
/// per mailbox. A mailbox that no longer exists is missing from the map.
async fn allocate_uids(
    tx: &mut Transaction<'_, Any>,
    msgs: &[&NewMessage],
) -> Result<HashMap<String, Uids>, StoreError> {
    let mut counts: Vec<(String, i64)> = Vec::new();
    for msg in msgs {
        for rcpt in &msg.recipients {
            let mbox = mailbox_id(&rcpt.inbox_id, &msg.mailbox);
            match counts.iter_mut().find(|(m, _)| *m == mbox) {
                Some((_, n)) => *n += 1,
                None => counts.push((mbox, 1)),
            }
        }
    }
    // In one order (by id), as every writer takes mailboxes: see `lock_mailboxes`.
    counts.sort();
    let mut out = HashMap::with_capacity(counts.len());
    for (mbox, n) in counts {
        let row = sqlx::query(
            "UPDATE mailboxes SET uidnext = uidnext + $2, highestmodseq = highestmodseq + $2 \
             WHERE id = $1 RETURNING uidnext, highestmodseq",
        )
        .bind(&mbox)
        .bind(n)
        .fetch_optional(&mut **tx)
        .await?;
        if let Some(row) = row {
            let (uidnext, highest): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
            // Before the update the next uid was `uidnext - n`; modseqs continue from the
            // old highest.
            let uids = Uids {
                uid: uidnext - n,
                modseq: highest - n + 1,
                left: n,
            };
            out.insert(mbox, uids);
        }
    }
    Ok(out)
}

async fn insert_rows(tx: &mut Transaction<'_, Any>, copies: &[Copy<'_>]) -> Result<(), StoreError> {
    for chunk in copies.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO messages (id, account_id, inbox_id, mailbox_id, uid, modseq, blob_hash, \
             size, internal_date, flags, labels, thread_id, message_id, subject, from_addr, \
             envelope_from, auth_results) VALUES {}",
            row_placeholders(chunk.len())
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for c in chunk {
            let m = c.msg;
            q = q
                .bind(&c.id)
                .bind(c.account_id)
                .bind(c.inbox_id)
                .bind(&c.mailbox_id)
                .bind(c.uid)
                .bind(c.modseq)
                .bind(&m.hash)
                .bind(m.raw.len() as i64)
                .bind(m.internal_date)
                .bind(word_set(&m.flags))
                .bind(&c.thread_id)
                .bind(m.message_id.as_deref())
                .bind(m.subject.as_deref())
                .bind(m.from_addr.as_deref())
                .bind(m.envelope_from.as_deref())
                .bind(m.auth_results.as_deref());
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// A `message.received` event for each copy filed into an INBOX.
async fn insert_events(
    tx: &mut Transaction<'_, Any>,
    copies: &[Copy<'_>],
) -> Result<(), StoreError> {
    let events: Vec<(NewEvent, i64)> = copies
        .iter()
        .filter(|c| c.msg.mailbox == "INBOX")
        .map(|c| {
            let m = c.msg;
            let event = NewEvent::message_received(
                c.account_id,
                c.inbox_id,
                serde_json::json!({
                    "message_id": c.id,
                    "inbox_id": c.inbox_id,
                    "thread_id": c.thread_id,
                    "from": m.from_addr,
                    "subject": m.subject,
                    "size": m.raw.len(),
                    "received_at": mailroom_core::time::rfc3339(m.internal_date),
                }),
            );
            (event, m.internal_date)
        })
        .collect();
    for chunk in events.chunks(ROWS_PER_INSERT) {
        let sql = format!(
            "INSERT INTO events (id, account_id, inbox_id, type, data, created_at) VALUES {}",
            placeholders(chunk.len(), 6)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (e, at) in chunk {
            q = q
                .bind(new_id(IdKind::Event))
                .bind(e.account_id.as_str())
                .bind(e.inbox_id.as_deref())
                .bind(e.event_type.as_str())
                .bind(e.data.to_string())
                .bind(*at);
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// `($1, $2, …), ($n+1, …)` for `rows` rows of `width` parameters.
fn placeholders(rows: usize, width: usize) -> String {
    let mut out = String::with_capacity(rows * width * 5);
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for c in 0..width {
            if c > 0 {
                out.push_str(", ");
            }
            out.push_str(&format!("${}", r * width + c + 1));
        }
        out.push(')');
    }
    out
}

/// The message rows' placeholders: 16 parameters and the literal empty `labels`.
fn row_placeholders(rows: usize) -> String {
    let mut out = String::new();
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        let p = |c: usize| format!("${}", r * 16 + c + 1);
        let first: Vec<String> = (0..10).map(p).collect();
        let rest: Vec<String> = (10..16).map(p).collect();
        out.push_str(&format!("({}, '', {})", first.join(", "), rest.join(", ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_number_every_parameter_once() {
        assert_eq!(placeholders(2, 3), "($1, $2, $3), ($4, $5, $6)");
        let rows = row_placeholders(2);
        assert!(rows.starts_with("($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, '', $11,"));
        assert!(rows.ends_with("$27, $28, $29, $30, $31, $32)"));
    }
}
