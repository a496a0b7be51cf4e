//! What the IMAP server needs of the store beyond what the API uses: mailboxes as IMAP sees
//! them (create, rename, delete, subscribe), a mailbox's messages by uid, flag changes with
//! modseqs (CONDSTORE), copy, move and expunge.
//!
//! Every write bumps the affected mailboxes' `highestmodseq`, so that other sessions (and
//! other processes sharing a PostgreSQL database) notice the change by comparing a
//! mailbox's (uidnext, highestmodseq, message count) with what they last saw.

use mailroom_core::ids::{IdKind, new_id};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use crate::messages::{STANDARD_MAILBOXES, mailbox_id, word_set};
use crate::{Store, StoreError};

/// A mailbox as IMAP sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImapMailbox {
    pub id: String,
    pub name: String,
    pub special_use: Option<String>,
    pub uidvalidity: i64,
    pub uidnext: i64,
    pub highestmodseq: i64,
    pub subscribed: bool,
    /// The first uid no session has been told of as `\Recent` (RFC 3501 §2.3.2).
    pub first_recent_uid: i64,
}

/// Numbers of a mailbox (STATUS).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MailboxCounts {
    pub messages: i64,
    pub unseen: i64,
    pub deleted: i64,
    pub size: i64,
    /// Messages no session was told of as `\Recent` yet.
    pub recent: i64,
}

/// What tells a session that a mailbox changed: any new message raises `uidnext`, any flag
/// change or move raises `highestmodseq`, and a removal lowers `count` unless a new message
/// came too (which raises `uidnext`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MailboxState {
    pub uidnext: i64,
    pub highestmodseq: i64,
    pub count: i64,
    /// A mailbox deleted and made again under the same name has a new one.
    pub uidvalidity: i64,
}

/// One message of a mailbox, without its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImapMessage {
    pub uid: i64,
    pub modseq: i64,
    pub id: String,
    pub blob_hash: String,
    pub size: i64,
    pub internal_date: i64,
    pub flags: Vec<String>,
}

/// Flags to set on messages of one mailbox: (uid, new flag list), optionally only where
/// the message's modseq is not above `unchanged_since` (CONDSTORE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagChange {
    pub mailbox: String,
    pub changes: Vec<(i64, Vec<String>)>,
    pub unchanged_since: Option<i64>,
}

/// What a [`FlagChange`] did: its modseq, the uids changed, and the uids left alone
/// because they changed since `unchanged_since`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagOutcome {
    pub modseq: i64,
    pub changed: Vec<i64>,
    pub refused: Vec<i64>,
}

/// Why a mailbox operation was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailboxRefusal {
    Exists,
    NotFound,
    /// The six standard mailboxes stay (the API files mail into them).
    Standard,
    /// A mailbox with children cannot be deleted (RFC 9051 §6.3.5 allows refusing).
    HasChildren,
}

const MESSAGE_COLUMNS: &str = "uid, modseq, id, blob_hash, size, internal_date, flags";

fn message_from_row(r: &AnyRow) -> Result<ImapMessage, StoreError> {
    let flags: String = r.try_get(6)?;
    Ok(ImapMessage {
        uid: r.try_get(0)?,
        modseq: r.try_get(1)?,
        id: r.try_get(2)?,
        blob_hash: r.try_get(3)?,
        size: r.try_get(4)?,
        internal_date: r.try_get(5)?,
        flags: flags.split_whitespace().map(str::to_owned).collect(),
    })
}

fn mailbox_from_row(r: &AnyRow) -> Result<ImapMailbox, StoreError> {
    Ok(ImapMailbox {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        special_use: r.try_get(2)?,
        uidvalidity: r.try_get(3)?,
        uidnext: r.try_get(4)?,
        highestmodseq: r.try_get(5)?,
        subscribed: r.try_get::<i64, _>(6)? != 0,
        first_recent_uid: r.try_get(7)?,
    })
}

const MAILBOX_COLUMNS: &str =
    "id, name, special_use, uidvalidity, uidnext, highestmodseq, subscribed, first_recent_uid";

fn is_standard(name: &str) -> bool {
    STANDARD_MAILBOXES
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case(name))
}

/// Raises a mailbox's highestmodseq by one and returns the new value.
async fn bump_modseq(tx: &mut Transaction<'_, Any>, mailbox: &str) -> Result<i64, StoreError> {
    sqlx::query_scalar(
        "UPDATE mailboxes SET highestmodseq = highestmodseq + 1 WHERE id = $1 \
         RETURNING highestmodseq",
    )
    .bind(mailbox)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| StoreError::Corrupt(format!("mailbox {mailbox} missing")))
}

/// Locks mailbox rows for the rest of the transaction, in one order (by id), before any
/// message row: every writer takes a mailbox before its messages (`bump_modseq` and
/// `take_uid` come first in flag changes and deliveries), so an expunge or a move that
/// took a message first and its mailbox second could deadlock with them on PostgreSQL.
/// (SQLite has one writer at a time; the updates change nothing.)
pub(crate) async fn lock_mailboxes(
    tx: &mut Transaction<'_, Any>,
    ids: &[&str],
) -> Result<(), StoreError> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    for id in ids {
        sqlx::query("UPDATE mailboxes SET uidnext = uidnext WHERE id = $1")
            .bind(id)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Takes the next uid of a mailbox (and a modseq for the new message).
async fn take_uid(tx: &mut Transaction<'_, Any>, mailbox: &str) -> Result<(i64, i64), StoreError> {
    let row = sqlx::query(
        "UPDATE mailboxes SET uidnext = uidnext + 1, highestmodseq = highestmodseq + 1 \
         WHERE id = $1 RETURNING uidnext - 1, highestmodseq",
    )
    .bind(mailbox)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| StoreError::Corrupt(format!("mailbox {mailbox} missing")))?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}

use crate::storage::{StorageLimit, release, retire_unused_blobs};

/// A removed message row: its blob and whose storage it freed.
fn removed_from_row(r: &AnyRow) -> Result<(String, (String, String, i64)), StoreError> {
    Ok((r.try_get(0)?, (r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)))
}

impl Store {
    /// Every mailbox of an inbox, by name.
    pub async fn imap_mailboxes(&self, inbox_id: &str) -> Result<Vec<ImapMailbox>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {MAILBOX_COLUMNS} FROM mailboxes WHERE inbox_id = $1 ORDER BY name"
        )))
        .bind(inbox_id)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(mailbox_from_row).collect()
    }

    /// One mailbox of an inbox by its exact name.
    pub async fn imap_mailbox(
        &self,
        inbox_id: &str,
        name: &str,
    ) -> Result<Option<ImapMailbox>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {MAILBOX_COLUMNS} FROM mailboxes WHERE id = $1"
        )))
        .bind(mailbox_id(inbox_id, name))
        .fetch_optional(&self.read)
        .await?;
        row.as_ref().map(mailbox_from_row).transpose()
    }

    /// The numbers STATUS answers with.
    pub async fn imap_counts(&self, mailbox: &str) -> Result<MailboxCounts, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*), \
             CAST(COALESCE(SUM(CASE WHEN flags LIKE '% \\\\Seen %' ESCAPE '\\' THEN 0 ELSE 1 END), 0) AS BIGINT), \
             CAST(COALESCE(SUM(CASE WHEN flags LIKE '% \\\\Deleted %' ESCAPE '\\' THEN 1 ELSE 0 END), 0) AS BIGINT), \
             CAST(COALESCE(SUM(size), 0) AS BIGINT), \
             CAST(COALESCE(SUM(CASE WHEN uid >= (SELECT b.first_recent_uid FROM mailboxes b \
                  WHERE b.id = $1) THEN 1 ELSE 0 END), 0) AS BIGINT) \
             FROM messages WHERE mailbox_id = $1",
        )
        .bind(mailbox)
        .fetch_one(&self.read)
        .await?;
        Ok(MailboxCounts {
            messages: row.try_get(0)?,
            unseen: row.try_get(1)?,
            deleted: row.try_get(2)?,
            size: row.try_get(3)?,
            recent: row.try_get(4)?,
        })
    }

    /// Claims the messages of `mailbox` with uids below `below` that no session was told
    /// of as `\Recent` yet, for the calling session alone (RFC 3501 §2.3.2). Returns the
    /// first uid claimed: the session's recent messages are `first ..below` (none when
    /// `first >= below`). A compare-and-set, so two sessions never claim the same uid.
    pub async fn imap_claim_recent(&self, mailbox: &str, below: i64) -> Result<i64, StoreError> {
        loop {
            // Read from the read pool (not behind the writer); the update below only
            // succeeds if nobody moved it since.
            let first: Option<i64> =
                sqlx::query_scalar("SELECT first_recent_uid FROM mailboxes WHERE id = $1")
                    .bind(mailbox)
                    .fetch_optional(&self.read)
                    .await?;
            let Some(first) = first else {
                return Ok(below);
            };
            if first >= below {
                return Ok(first);
            }
            let done = sqlx::query(
                "UPDATE mailboxes SET first_recent_uid = $2 \
                 WHERE id = $1 AND first_recent_uid = $3",
            )
            .bind(mailbox)
            .bind(below)
            .bind(first)
            .execute(&self.write)
            .await?;
            if done.rows_affected() == 1 {
                return Ok(first);
            }
        }
    }

    /// What a session compares to notice changes made elsewhere.
    pub async fn imap_state(&self, mailbox: &str) -> Result<Option<MailboxState>, StoreError> {
        let row = sqlx::query(
            "SELECT b.uidnext, b.highestmodseq, \
             (SELECT COUNT(*) FROM messages m WHERE m.mailbox_id = b.id), b.uidvalidity \
             FROM mailboxes b WHERE b.id = $1",
        )
        .bind(mailbox)
        .fetch_optional(&self.read)
        .await?;
        row.map(|r| {
            Ok(MailboxState {
                uidnext: r.try_get(0)?,
                highestmodseq: r.try_get(1)?,
                count: r.try_get(2)?,
                uidvalidity: r.try_get(3)?,
            })
        })
        .transpose()
    }

    /// Every message of a mailbox, by uid.
    pub async fn imap_messages(&self, mailbox: &str) -> Result<Vec<ImapMessage>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE mailbox_id = $1 ORDER BY uid"
        )))
        .bind(mailbox)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(message_from_row).collect()
    }

    /// Messages of a mailbox whose modseq is above `modseq` (new ones and changed ones).
    pub async fn imap_changed_since(
        &self,
        mailbox: &str,
        modseq: i64,
    ) -> Result<Vec<ImapMessage>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE mailbox_id = $1 AND modseq > $2 \
             ORDER BY uid"
        )))
        .bind(mailbox)
        .bind(modseq)
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(message_from_row).collect()
    }

    /// Several blobs in one query (SEARCH over message text), by hash.
    pub async fn imap_blobs(
        &self,
        hashes: &[String],
    ) -> Result<std::collections::HashMap<String, Vec<u8>>, StoreError> {
        let mut out = std::collections::HashMap::with_capacity(hashes.len());
        for chunk in hashes.chunks(100) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT hash, data FROM blobs WHERE hash IN ({})",
                placeholders.join(", ")
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for h in chunk {
                q = q.bind(h);
            }
            for row in q.fetch_all(&self.read).await? {
                out.insert(row.try_get(0)?, row.try_get(1)?);
            }
        }
        Ok(out)
    }

    /// The uids of a mailbox, ascending.
    pub async fn imap_uids(&self, mailbox: &str) -> Result<Vec<i64>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT uid FROM messages WHERE mailbox_id = $1 ORDER BY uid")
                .bind(mailbox)
                .fetch_all(&self.read)
                .await?,
        )
    }

    /// Sets the flags of messages (uid → new flag list) in one transaction with one new
    /// modseq. With `unchanged_since` (CONDSTORE), messages whose modseq is above it are
    /// left alone and returned in the second list. Returns the new modseq and the uids that
    /// were changed.
    pub async fn imap_set_flags(
        &self,
        mailbox: &str,
        changes: &[(i64, Vec<String>)],
        unchanged_since: Option<i64>,
    ) -> Result<FlagOutcome, StoreError> {
        let job = FlagChange {
            mailbox: mailbox.to_owned(),
            changes: changes.to_vec(),
            unchanged_since,
        };
        let mut all = self
            .imap_set_flags_batch(std::slice::from_ref(&job))
            .await?;
        all.pop()
            .ok_or_else(|| StoreError::Corrupt("no outcome for a flag change".into()))
    }

    /// Several sessions' flag changes in one transaction (one fsync for all: group commit,
    /// as deliveries have). Each change gets its own modseq.
    pub async fn imap_set_flags_batch(
        &self,
        jobs: &[FlagChange],
    ) -> Result<Vec<FlagOutcome>, StoreError> {
        let mut tx = self.write.begin().await?;
        let mailboxes: Vec<&str> = jobs.iter().map(|j| j.mailbox.as_str()).collect();
        lock_mailboxes(&mut tx, &mailboxes).await?;
        let mut outcomes = Vec::with_capacity(jobs.len());
        for job in jobs {
            let modseq = bump_modseq(&mut tx, &job.mailbox).await?;
            let mut changed = Vec::with_capacity(job.changes.len());
            let mut refused = Vec::new();
            for (uid, flags) in &job.changes {
                let n = sqlx::query(
                    "UPDATE messages SET flags = $1, modseq = $2 \
                     WHERE mailbox_id = $3 AND uid = $4 AND modseq <= $5",
                )
                .bind(word_set(flags))
                .bind(modseq)
                .bind(&job.mailbox)
                .bind(uid)
                .bind(job.unchanged_since.unwrap_or(i64::MAX))
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if n == 1 {
                    changed.push(*uid);
                } else if job.unchanged_since.is_some() {
                    refused.push(*uid);
                }
            }
            outcomes.push(FlagOutcome {
                modseq,
                changed,
                refused,
            });
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    /// Copies messages (by uid) into another mailbox of the same inbox, with new uids and
    /// ids; the bodies are shared, but each copy counts against `limit`. Returns (source
    /// uid, new uid) pairs; over the limit, [`StoreError::StorageFull`] and nothing copied.
    pub async fn imap_copy(
        &self,
        from: &str,
        uids: &[i64],
        to: &str,
        limit: StorageLimit,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        let mut tx = self.write.begin().await?;
        lock_mailboxes(&mut tx, &[from, to]).await?;
        let mut pairs = Vec::with_capacity(uids.len());
        for &uid in uids {
            let exists = sqlx::query(
                "SELECT account_id, inbox_id, size FROM messages WHERE mailbox_id = $1 AND uid = $2",
            )
            .bind(from)
            .bind(uid)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(source) = exists else {
                continue;
            };
            let (account, inbox, size): (String, String, i64) =
                (source.try_get(0)?, source.try_get(1)?, source.try_get(2)?);
            crate::storage::charge(&mut tx, &account, &inbox, size, limit).await?;
            let (new_uid, modseq) = take_uid(&mut tx, to).await?;
            sqlx::query(
                "INSERT INTO messages (id, account_id, inbox_id, mailbox_id, uid, modseq, \
                 blob_hash, size, internal_date, flags, labels, thread_id, message_id, subject, \
                 from_addr, envelope_from, auth_results) \
                 SELECT $1, account_id, inbox_id, $2, $3, $4, blob_hash, size, internal_date, \
                 flags, labels, thread_id, message_id, subject, from_addr, envelope_from, \
                 auth_results FROM messages WHERE mailbox_id = $5 AND uid = $6",
            )
            .bind(new_id(IdKind::Message))
            .bind(to)
            .bind(new_uid)
            .bind(modseq)
            .bind(from)
            .bind(uid)
            .execute(&mut *tx)
            .await?;
            pairs.push((uid, new_uid));
        }
        tx.commit().await?;
        Ok(pairs)
    }

    /// Moves messages (by uid) into another mailbox of the same inbox: the same message
    /// (id, API view) with a new uid there. Returns (old uid, new uid) pairs.
    pub async fn imap_move(
        &self,
        from: &str,
        uids: &[i64],
        to: &str,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        let mut tx = self.write.begin().await?;
        let mut pairs = Vec::with_capacity(uids.len());
        for &uid in uids {
            let exists: Option<String> =
                sqlx::query_scalar("SELECT id FROM messages WHERE mailbox_id = $1 AND uid = $2")
                    .bind(from)
                    .bind(uid)
                    .fetch_optional(&mut *tx)
                    .await?;
            let Some(id) = exists else { continue };
            let (new_uid, modseq) = take_uid(&mut tx, to).await?;
            sqlx::query("UPDATE messages SET mailbox_id = $1, uid = $2, modseq = $3 WHERE id = $4")
                .bind(to)
                .bind(new_uid)
                .bind(modseq)
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            pairs.push((uid, new_uid));
        }
        if !pairs.is_empty() {
            bump_modseq(&mut tx, from).await?;
        }
        tx.commit().await?;
        Ok(pairs)
    }

    /// Removes messages (by uid) for good. Returns the uids removed.
    pub async fn imap_expunge(&self, mailbox: &str, uids: &[i64]) -> Result<Vec<i64>, StoreError> {
        let mut tx = self.write.begin().await?;
        lock_mailboxes(&mut tx, &[mailbox]).await?;
        let mut gone = Vec::with_capacity(uids.len());
        let mut hashes = Vec::new();
        let mut freed = Vec::new();
        for &uid in uids {
            let row = sqlx::query(
                "DELETE FROM messages WHERE mailbox_id = $1 AND uid = $2 \
                 RETURNING blob_hash, account_id, inbox_id, size",
            )
            .bind(mailbox)
            .bind(uid)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = row {
                let (h, f) = removed_from_row(&row)?;
                gone.push(uid);
                freed.push(f);
                if !hashes.contains(&h) {
                    hashes.push(h);
                }
            }
        }
        if !gone.is_empty() {
            bump_modseq(&mut tx, mailbox).await?;
            release(&mut tx, &freed).await?;
            retire_unused_blobs(&mut tx, &hashes).await?;
        }
        tx.commit().await?;
        Ok(gone)
    }

    /// Creates a mailbox. Its UIDVALIDITY is new for the inbox, also when a mailbox of the
    /// same name existed before.
    pub async fn imap_create_mailbox(
        &self,
        inbox_id: &str,
        name: &str,
        now_ms: i64,
    ) -> Result<Result<ImapMailbox, MailboxRefusal>, StoreError> {
        let mut tx = self.write.begin().await?;
        let exists: Option<String> = sqlx::query_scalar(
            "SELECT id FROM mailboxes WHERE inbox_id = $1 AND LOWER(name) = LOWER($2)",
        )
        .bind(inbox_id)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
        if exists.is_some() {
            return Ok(Err(MailboxRefusal::Exists));
        }
        let uidvalidity = next_uidvalidity(&mut tx, inbox_id, now_ms).await?;
        let id = mailbox_id(inbox_id, name);
        sqlx::query(
            "INSERT INTO mailboxes (id, inbox_id, name, special_use, uidvalidity, created_at) \
             VALUES ($1, $2, $3, NULL, $4, $5)",
        )
        .bind(&id)
        .bind(inbox_id)
        .bind(name)
        .bind(uidvalidity)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Ok(ImapMailbox {
            id,
            name: name.to_owned(),
            special_use: None,
            uidvalidity,
            uidnext: 1,
            highestmodseq: 1,
            subscribed: true,
            first_recent_uid: 1,
        }))
    }

    /// Deletes a mailbox and its messages. The standard mailboxes and mailboxes with
    /// children (`name/…`) stay.
    pub async fn imap_delete_mailbox(
        &self,
        inbox_id: &str,
        name: &str,
    ) -> Result<Result<(), MailboxRefusal>, StoreError> {
        if is_standard(name) {
            return Ok(Err(MailboxRefusal::Standard));
        }
        let mut tx = self.write.begin().await?;
        let id = mailbox_id(inbox_id, name);
        let found: Option<String> = sqlx::query_scalar("SELECT id FROM mailboxes WHERE id = $1")
            .bind(&id)
            .fetch_optional(&mut *tx)
            .await?;
        if found.is_none() {
            return Ok(Err(MailboxRefusal::NotFound));
        }
        let children: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM mailboxes WHERE inbox_id = $1 AND SUBSTR(name, 1, CAST($2 AS INTEGER)) = $3",
        )
        .bind(inbox_id)
        .bind(name.chars().count() as i64 + 1)
        .bind(format!("{name}/"))
        .fetch_one(&mut *tx)
        .await?;
        if children > 0 {
            return Ok(Err(MailboxRefusal::HasChildren));
        }
        lock_mailboxes(&mut tx, &[&id]).await?;
        let rows = sqlx::query(
            "DELETE FROM messages WHERE mailbox_id = $1 \
             RETURNING blob_hash, account_id, inbox_id, size",
        )
        .bind(&id)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM mailboxes WHERE id = $1")
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        let (mut unique, freed): (Vec<String>, Vec<_>) = rows
            .iter()
            .map(removed_from_row)
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .unzip();
        unique.sort();
        unique.dedup();
        release(&mut tx, &freed).await?;
        retire_unused_blobs(&mut tx, &unique).await?;
        tx.commit().await?;
        Ok(Ok(()))
    }

    /// Renames a mailbox and its children (`from/…` becomes `to/…`). Messages keep their
    /// uids and the mailbox its UIDVALIDITY. The standard mailboxes keep their names.
    pub async fn imap_rename_mailbox(
        &self,
        inbox_id: &str,
        from: &str,
        to: &str,
    ) -> Result<Result<(), MailboxRefusal>, StoreError> {
        if is_standard(from) {
            return Ok(Err(MailboxRefusal::Standard));
        }
        let mut tx = self.write.begin().await?;
        let taken: Option<String> = sqlx::query_scalar(
            "SELECT id FROM mailboxes WHERE inbox_id = $1 AND LOWER(name) = LOWER($2)",
        )
        .bind(inbox_id)
        .bind(to)
        .fetch_optional(&mut *tx)
        .await?;
        if taken.is_some() || is_standard(to) {
            return Ok(Err(MailboxRefusal::Exists));
        }
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM mailboxes WHERE inbox_id = $1 AND (name = $2 OR SUBSTR(name, 1, CAST($3 AS INTEGER)) = $4)",
        )
        .bind(inbox_id)
        .bind(from)
        .bind(from.chars().count() as i64 + 1)
        .bind(format!("{from}/"))
        .fetch_all(&mut *tx)
        .await?;
        if !names.iter().any(|n| n == from) {
            return Ok(Err(MailboxRefusal::NotFound));
        }
        for old in names {
            let new = format!("{to}{}", &old[from.len()..]);
            let (old_id, new_id) = (mailbox_id(inbox_id, &old), mailbox_id(inbox_id, &new));
            // The id contains the name: a new row, the messages moved to it, the old row gone.
            sqlx::query(
                "INSERT INTO mailboxes (id, inbox_id, name, special_use, uidvalidity, uidnext, \
                 highestmodseq, subscribed, created_at) \
                 SELECT $1, inbox_id, $2, special_use, uidvalidity, uidnext, highestmodseq + 1, \
                 subscribed, created_at FROM mailboxes WHERE id = $3",
            )
            .bind(&new_id)
            .bind(&new)
            .bind(&old_id)
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE messages SET mailbox_id = $1 WHERE mailbox_id = $2")
                .bind(&new_id)
                .bind(&old_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM mailboxes WHERE id = $1")
                .bind(&old_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Ok(()))
    }

    /// Marks a mailbox subscribed or not. `false` when it does not exist.
    pub async fn imap_subscribe(
        &self,
        inbox_id: &str,
        name: &str,
        subscribed: bool,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query("UPDATE mailboxes SET subscribed = $1 WHERE id = $2")
            .bind(i64::from(subscribed))
            .bind(mailbox_id(inbox_id, name))
            .execute(&self.write)
            .await?
            .rows_affected();
        Ok(n == 1)
    }
}

/// The next UIDVALIDITY for a new mailbox of an inbox: the time in seconds, or one more
/// than the last one given, whichever is larger.
async fn next_uidvalidity(
    tx: &mut Transaction<'_, Any>,
    inbox_id: &str,
    now_ms: i64,
) -> Result<i64, StoreError> {
    let last: Option<i64> =
        sqlx::query_scalar("SELECT last FROM imap_uidvalidity WHERE inbox_id = $1")
            .bind(inbox_id)
            .fetch_optional(&mut **tx)
            .await?;
    let existing: i64 = sqlx::query_scalar(
        "SELECT COALESCE(MAX(uidvalidity), 0) FROM mailboxes WHERE inbox_id = $1",
    )
    .bind(inbox_id)
    .fetch_one(&mut **tx)
    .await?;
    let next = (now_ms / 1000)
        .max(last.unwrap_or(0) + 1)
        .max(existing + 1)
        .min(i64::from(u32::MAX));
    sqlx::query(
        "INSERT INTO imap_uidvalidity (inbox_id, last) VALUES ($1, $2) \
         ON CONFLICT (inbox_id) DO UPDATE SET last = $2",
    )
    .bind(inbox_id)
    .bind(next)
    .execute(&mut **tx)
    .await?;
    Ok(next)
}
