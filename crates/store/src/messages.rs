//! Messages: bodies (blobs), mailboxes, message rows, threads, and delivery with group
//! commit.
//!
//! Delivery goes through one committer task: every session hands its message over a
//! channel, and the committer writes everything that is waiting in one transaction, so many
//! concurrent deliveries share one fsync. A message is acknowledged (its `deliver` call
//! returns) only after that transaction commits.

use mailroom_core::ids::{IdKind, new_id};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, Row, Transaction};
use tokio::sync::{mpsc, oneshot};

use crate::tenancy::SendQuota;
use crate::{Store, StoreError};

/// The folders every inbox has, with their IMAP special-use attribute (RFC 6154).
pub const STANDARD_MAILBOXES: [(&str, Option<&str>); 6] = [
    ("INBOX", None),
    ("Sent", Some("\\Sent")),
    ("Drafts", Some("\\Drafts")),
    ("Trash", Some("\\Trash")),
    ("Junk", Some("\\Junk")),
    ("Archive", Some("\\Archive")),
];

/// The id of an inbox's mailbox.
pub fn mailbox_id(inbox_id: &str, name: &str) -> String {
    format!("{inbox_id}/{name}")
}

pub(crate) async fn create_standard_mailboxes(
    tx: &mut Transaction<'_, Any>,
    inbox_id: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    for (name, special) in STANDARD_MAILBOXES {
        sqlx::query(
            "INSERT INTO mailboxes (id, inbox_id, name, special_use, uidvalidity, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(mailbox_id(inbox_id, name))
        .bind(inbox_id)
        .bind(name)
        .bind(special)
        .bind(now_ms / 1000)
        .bind(now_ms)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// One recipient inbox of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub account_id: String,
    pub inbox_id: String,
    /// The storage limits of the inbox's account, checked when the copy is stored.
    pub storage: crate::StorageLimit,
}

/// A message to store, with the facts the caller parsed from it.
#[derive(Debug, Clone, Default)]
pub struct NewMessage {
    /// The bytes exactly as they will be served (`/raw`, IMAP `BODY[]`).
    pub raw: Vec<u8>,
    /// Lowercase hex SHA-256 of `raw`.
    pub hash: String,
    pub internal_date: i64,
    pub recipients: Vec<Recipient>,
    /// The mailbox to file into (`INBOX` for received mail).
    pub mailbox: String,
    /// `Message-ID` without angle brackets.
    pub message_id: Option<String>,
    /// `In-Reply-To` and `References` ids, without angle brackets, most recent last.
    pub references: Vec<String>,
    pub subject: Option<String>,
    pub from_addr: Option<String>,
    pub envelope_from: Option<String>,
    /// JSON of the SPF/DKIM/DMARC verdicts.
    pub auth_results: Option<String>,
    /// Flags to start with (`\Seen` for sent copies).
    pub flags: Vec<String>,
    /// For a Sent copy: its recipients, queued in the same transaction.
    pub outbound: Option<crate::outbound::OutboundSpec>,
}

/// One stored copy of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub id: String,
    pub inbox_id: String,
    pub thread_id: String,
    pub uid: i64,
}

/// A message row (without its body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRow {
    pub seq: i64,
    pub id: String,
    pub account_id: String,
    pub inbox_id: String,
    pub mailbox: String,
    pub uid: i64,
    pub modseq: i64,
    pub blob_hash: String,
    pub size: i64,
    pub internal_date: i64,
    pub flags: Vec<String>,
    pub labels: Vec<String>,
    pub thread_id: String,
    pub message_id: Option<String>,
    pub subject: Option<String>,
    pub from_addr: Option<String>,
    pub envelope_from: Option<String>,
    pub auth_results: Option<String>,
}

impl MessageRow {
    pub fn is_read(&self) -> bool {
        self.flags.iter().any(|f| f.eq_ignore_ascii_case("\\Seen"))
    }
}

const MESSAGE_COLUMNS: &str = "m.seq, m.id, m.account_id, m.inbox_id, b.name, m.uid, m.modseq, \
     m.blob_hash, m.size, m.internal_date, m.flags, m.labels, m.thread_id, m.message_id, \
     m.subject, m.from_addr, m.envelope_from, m.auth_results";

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_owned).collect()
}

/// Stored form of a word set: " a b " (leading and trailing space) so that one word can be
/// matched with `LIKE '% a %'`.
pub(crate) fn word_set(items: &[String]) -> String {
    if items.is_empty() {
        String::new()
    } else {
        format!(" {} ", items.join(" "))
    }
}

fn message_from_row(r: &AnyRow) -> Result<MessageRow, StoreError> {
    let flags: String = r.try_get(10)?;
    let labels: String = r.try_get(11)?;
    Ok(MessageRow {
        seq: r.try_get(0)?,
        id: r.try_get(1)?,
        account_id: r.try_get(2)?,
        inbox_id: r.try_get(3)?,
        mailbox: r.try_get(4)?,
        uid: r.try_get(5)?,
        modseq: r.try_get(6)?,
        blob_hash: r.try_get(7)?,
        size: r.try_get(8)?,
        internal_date: r.try_get(9)?,
        flags: words(&flags),
        labels: words(&labels),
        thread_id: r.try_get(12)?,
        message_id: r.try_get(13)?,
        subject: r.try_get(14)?,
        from_addr: r.try_get(15)?,
        envelope_from: r.try_get(16)?,
        auth_results: r.try_get(17)?,
    })
}

/// Filters of a message list.
#[derive(Debug, Clone, Default)]
pub struct MessageQuery {
    pub mailbox: Option<String>,
    pub unread: Option<bool>,
    pub from_contains: Option<String>,
    pub subject_contains: Option<String>,
    pub label: Option<String>,
    pub since_ms: Option<i64>,
    /// Only messages newer than this one (by `seq`).
    pub after_seq: Option<i64>,
    pub thread_id: Option<String>,
    pub limit: u32,
    pub offset: u64,
    /// Oldest first instead of newest first.
    pub ascending: bool,
}

pub(crate) struct Job {
    msgs: Vec<NewMessage>,
    quota: Option<SendQuota>,
    reply: oneshot::Sender<Result<Vec<Vec<StoredMessage>>, StoreError>>,
}

impl Job {
    fn bytes(&self) -> usize {
        self.msgs.iter().map(|m| m.raw.len()).sum()
    }
}

/// Most jobs, and most bytes, one group commit takes.
const MAX_BATCH: usize = 256;
const MAX_BATCH_BYTES: usize = 64 * 1024 * 1024;

/// The committer: takes every waiting delivery and writes them in one transaction.
pub(crate) async fn committer(write: AnyPool, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.recv().await {
        let mut bytes = first.bytes();
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(job) => {
                    bytes += job.bytes();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        metrics::histogram!("mailroom_store_group_commit_size").record(jobs.len() as f64);
        let refs: Vec<&Job> = jobs.iter().collect();
        match commit_batch(&write, &refs).await {
            Ok(results) => {
                for (job, stored) in jobs.into_iter().zip(results) {
                    let _ = job.reply.send(Ok(stored));
                }
            }
            Err(e) if jobs.len() > 1 => {
                // One bad job (or one over its sending quota) must not fail the others:
                // retry each on its own.
                if !matches!(
                    e,
                    StoreError::QuotaExceeded(_) | StoreError::StorageFull { .. }
                ) {
                    tracing::warn!(error = %e, batch = jobs.len(), "group commit failed; retrying one by one");
                }
                for job in jobs {
                    let result = commit_batch(&write, &[&job])
                        .await
                        .map(|mut r| r.pop().unwrap_or_default());
                    let _ = job.reply.send(result);
                }
            }
            Err(e) => {
                if let Some(job) = jobs.pop() {
                    let _ = job.reply.send(Err(e));
                }
            }
        }
    }
}

async fn commit_batch(
    write: &AnyPool,
    jobs: &[&Job],
) -> Result<Vec<Vec<Vec<StoredMessage>>>, StoreError> {
    let mut tx = write.begin().await?;
    // Mailboxes first, in one order, as every writer takes them (see `lock_mailboxes`):
    // the send quota below is an account row.
    let mailboxes: Vec<String> = jobs
        .iter()
        .flat_map(|j| j.msgs.iter())
        .flat_map(|m| {
            m.recipients
                .iter()
                .map(|r| mailbox_id(&r.inbox_id, &m.mailbox))
        })
        .collect();
    let mailboxes: Vec<&str> = mailboxes.iter().map(String::as_str).collect();
    crate::imap::lock_mailboxes(&mut tx, &mailboxes).await?;
    for job in jobs {
        if let Some(q) = &job.quota
            && let Err(which) = crate::tenancy::reserve_sends_in(&mut tx, q).await?
        {
            return Err(StoreError::QuotaExceeded(which));
        }
    }
    // Every job's messages in one go (few statements for the whole batch), then the
    // results handed back job by job.
    let msgs: Vec<&NewMessage> = jobs.iter().flat_map(|j| j.msgs.iter()).collect();
    let mut stored = crate::batch::insert_messages(&mut tx, &msgs)
        .await?
        .into_iter();
    let all = jobs
        .iter()
        .map(|j| stored.by_ref().take(j.msgs.len()).collect())
        .collect();
    tx.commit().await?;
    Ok(all)
}

/// Stores one message in `tx` (a bounce, say, written with other changes).
pub(crate) async fn insert_message(
    tx: &mut Transaction<'_, Any>,
    msg: &NewMessage,
) -> Result<Vec<StoredMessage>, StoreError> {
    Ok(crate::batch::insert_messages(tx, &[msg])
        .await?
        .pop()
        .unwrap_or_default())
}

/// The thread of the newest message in the inbox whose Message-ID is among `references`,
/// or a new thread.
pub(crate) async fn find_thread(
    tx: &mut Transaction<'_, Any>,
    inbox_id: &str,
    references: &[String],
) -> Result<String, StoreError> {
    // The most recent references matter most; a long chain is cut to its last 20.
    let refs = &references[references.len().saturating_sub(20)..];
    if !refs.is_empty() {
        let placeholders: Vec<String> = (0..refs.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "SELECT thread_id FROM messages WHERE inbox_id = $1 AND message_id IN ({}) \
             ORDER BY seq DESC LIMIT 1",
            placeholders.join(", ")
        );
        let mut q = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql)).bind(inbox_id);
        for r in refs {
            q = q.bind(r);
        }
        if let Some(thread) = q.fetch_optional(&mut **tx).await? {
            return Ok(thread);
        }
    }
    Ok(new_id(IdKind::Thread))
}

impl Store {
    /// Stores a message for its recipients and returns once it is durable. Concurrent
    /// calls are committed together.
    pub async fn deliver(&self, msg: NewMessage) -> Result<Vec<StoredMessage>, StoreError> {
        Ok(self
            .deliver_all(vec![msg], None)
            .await?
            .pop()
            .unwrap_or_default())
    }

    /// Stores several messages in one transaction (all or none), after counting `quota`
    /// in the same transaction: a message counts against the sending limits exactly when
    /// it is stored. Over a limit: [`StoreError::QuotaExceeded`] and nothing is stored.
    pub async fn deliver_all(
        &self,
        msgs: Vec<NewMessage>,
        quota: Option<SendQuota>,
    ) -> Result<Vec<Vec<StoredMessage>>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.committer
            .send(Job { msgs, quota, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Messages of an inbox matching `q`.
    pub async fn list_messages(
        &self,
        inbox_id: &str,
        q: &MessageQuery,
    ) -> Result<(Vec<MessageRow>, u64), StoreError> {
        let mut conds = vec!["m.inbox_id = $1".to_owned()];
        let mut binds: Vec<Bind> = vec![Bind::Text(inbox_id.to_owned())];
        let mut push = |cond: &str, b: Option<Bind>| match b {
            Some(b) => {
                binds.push(b);
                conds.push(cond.replace('?', &format!("${}", binds.len())));
            }
            None => conds.push(cond.to_owned()),
        };
        if let Some(mb) = &q.mailbox {
            push(
                "m.mailbox_id = ?",
                Some(Bind::Text(mailbox_id(inbox_id, mb))),
            );
        }
        match q.unread {
            Some(true) => push("m.flags NOT LIKE '% \\\\Seen %' ESCAPE '\\'", None),
            Some(false) => push("m.flags LIKE '% \\\\Seen %' ESCAPE '\\'", None),
            None => {}
        }
        if let Some(f) = &q.from_contains {
            push(
                "LOWER(COALESCE(m.from_addr, '')) LIKE ? ESCAPE '\\'",
                Some(Bind::Text(like_contains(f))),
            );
        }
        if let Some(s) = &q.subject_contains {
            push(
                "LOWER(COALESCE(m.subject, '')) LIKE ? ESCAPE '\\'",
                Some(Bind::Text(like_contains(s))),
            );
        }
        if let Some(l) = &q.label {
            push(
                "m.labels LIKE ? ESCAPE '\\'",
                Some(Bind::Text(format!("% {} %", escape_like(l)))),
            );
        }
        if let Some(since) = q.since_ms {
            push("m.internal_date >= ?", Some(Bind::Int(since)));
        }
        if let Some(after) = q.after_seq {
            push("m.seq > ?", Some(Bind::Int(after)));
        }
        if let Some(t) = &q.thread_id {
            push("m.thread_id = ?", Some(Bind::Text(t.clone())));
        }
        let where_ = conds.join(" AND ");
        let order = if q.ascending { "ASC" } else { "DESC" };
        let n = binds.len();
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id \
             WHERE {where_} ORDER BY m.seq {order} LIMIT ${} OFFSET ${}",
            n + 1,
            n + 2
        );
        let count_sql = format!("SELECT COUNT(*) FROM messages m WHERE {where_}");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        let mut count = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(count_sql));
        for b in &binds {
            query = b.bind(query);
            count = match b {
                Bind::Text(s) => count.bind(s.clone()),
                Bind::Int(i) => count.bind(*i),
            };
        }
        let rows = query
            .bind(i64::from(q.limit))
            .bind(i64::try_from(q.offset).unwrap_or(i64::MAX))
            .fetch_all(&self.read)
            .await?;
        let total = count.fetch_one(&self.read).await?;
        let messages = rows
            .iter()
            .map(message_from_row)
            .collect::<Result<_, _>>()?;
        Ok((messages, u64::try_from(total).unwrap_or(0)))
    }

    /// One message of an inbox, by id.
    pub async fn get_message(
        &self,
        inbox_id: &str,
        message_id: &str,
    ) -> Result<Option<MessageRow>, StoreError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id \
             WHERE m.id = $1 AND m.inbox_id = $2"
        )))
        .bind(message_id)
        .bind(inbox_id)
        .fetch_optional(&self.read)
        .await?;
        row.as_ref().map(message_from_row).transpose()
    }

    /// The `seq` of a message of an inbox (for `after=` polling).
    pub async fn message_seq(
        &self,
        inbox_id: &str,
        message_id: &str,
    ) -> Result<Option<i64>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT seq FROM messages WHERE id = $1 AND inbox_id = $2")
                .bind(message_id)
                .bind(inbox_id)
                .fetch_optional(&self.read)
                .await?,
        )
    }

    /// The bytes of a blob.
    pub async fn get_blob(&self, hash: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(sqlx::query_scalar("SELECT data FROM blobs WHERE hash = $1")
            .bind(hash)
            .fetch_optional(&self.read)
            .await?)
    }

    /// Sets the flags and labels of a message and, when `mailbox` is given, moves it there
    /// (a new uid in the target mailbox, as IMAP MOVE does). Bumps the modseq.
    pub async fn update_message(
        &self,
        inbox_id: &str,
        message_id: &str,
        flags: &[String],
        labels: &[String],
        mailbox: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write.begin().await?;
        let current: Option<String> =
            sqlx::query_scalar("SELECT mailbox_id FROM messages WHERE id = $1 AND inbox_id = $2")
                .bind(message_id)
                .bind(inbox_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(current) = current else {
            return Ok(false);
        };
        match mailbox
            .map(|m| mailbox_id(inbox_id, m))
            .filter(|t| *t != current)
        {
            // A move: a new uid in the target mailbox, as IMAP MOVE gives.
            Some(target) => {
                let row = sqlx::query(
                    "UPDATE mailboxes SET uidnext = uidnext + 1, highestmodseq = highestmodseq + 1 \
                     WHERE id = $1 RETURNING uidnext - 1, highestmodseq",
                )
                .bind(&target)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| StoreError::Corrupt(format!("mailbox {target} missing")))?;
                let uid: i64 = row.try_get(0)?;
                let modseq: i64 = row.try_get(1)?;
                sqlx::query(
                    "UPDATE messages SET flags = $1, labels = $2, modseq = $3, mailbox_id = $4, \
                     uid = $5 WHERE id = $6",
                )
                .bind(word_set(flags))
                .bind(word_set(labels))
                .bind(modseq)
                .bind(&target)
                .bind(uid)
                .bind(message_id)
                .execute(&mut *tx)
                .await?;
            }
            None => {
                let modseq: i64 = sqlx::query_scalar(
                    "UPDATE mailboxes SET highestmodseq = highestmodseq + 1 WHERE id = $1 \
                     RETURNING highestmodseq",
                )
                .bind(&current)
                .fetch_one(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE messages SET flags = $1, labels = $2, modseq = $3 WHERE id = $4",
                )
                .bind(word_set(flags))
                .bind(word_set(labels))
                .bind(modseq)
                .bind(message_id)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Removes a message of an inbox for good (its blob stays while others use it).
    pub async fn delete_message(
        &self,
        inbox_id: &str,
        message_id: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write.begin().await?;
        let row = sqlx::query(
            "DELETE FROM messages WHERE id = $1 AND inbox_id = $2 \
             RETURNING blob_hash, account_id, size",
        )
        .bind(message_id)
        .bind(inbox_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(false);
        };
        let hash: String = row.try_get(0)?;
        let gone = [(row.try_get(1)?, inbox_id.to_owned(), row.try_get(2)?)];
        crate::storage::release(&mut tx, &gone).await?;
        // A Sent copy's blob stays while its queue entry needs it; the collector takes both
        // once delivery is finished.
        crate::storage::retire_unused_blobs(&mut tx, &[hash]).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Threads of an inbox, most recently active first: (thread id, message count, newest seq).
    pub async fn list_threads(
        &self,
        inbox_id: &str,
        limit: u32,
        offset: u64,
    ) -> Result<(Vec<(String, i64, i64)>, u64), StoreError> {
        let rows = sqlx::query(
            "SELECT thread_id, COUNT(*), MAX(seq) FROM messages WHERE inbox_id = $1 \
             GROUP BY thread_id ORDER BY MAX(seq) DESC LIMIT $2 OFFSET $3",
        )
        .bind(inbox_id)
        .bind(i64::from(limit))
        .bind(i64::try_from(offset).unwrap_or(i64::MAX))
        .fetch_all(&self.read)
        .await?;
        let total: i64 = sqlx::query_scalar(
            "SELECT COUNT(DISTINCT thread_id) FROM messages WHERE inbox_id = $1",
        )
        .bind(inbox_id)
        .fetch_one(&self.read)
        .await?;
        let threads = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect::<Result<_, StoreError>>()?;
        Ok((threads, u64::try_from(total).unwrap_or(0)))
    }
}

/// A value bound to a dynamically built query.
#[derive(Debug, Clone)]
enum Bind {
    Text(String),
    Int(i64),
}

impl Bind {
    fn bind<'q>(
        &self,
        q: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>,
    ) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments> {
        match self {
            Bind::Text(s) => q.bind(s.clone()),
            Bind::Int(i) => q.bind(*i),
        }
    }
}

/// Escapes `\`, `%` and `_` for a `LIKE … ESCAPE '\'` pattern, so user text matches
/// literally.
fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn like_contains(s: &str) -> String {
    format!("%{}%", escape_like(&s.to_lowercase()))
}
