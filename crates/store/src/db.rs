use std::borrow::Cow;
use std::path::Path;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, Executor};

use crate::StoreError;

/// Which SQL database is behind a [`Store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// The handle every part of Mailroom uses to reach the database. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    /// Reads go here. On PostgreSQL this is the same pool as `write`.
    pub(crate) read: AnyPool,
    /// Writes go here. On SQLite this pool has exactly one connection.
    pub(crate) write: AnyPool,
    backend: Backend,
    /// The URL, for a PostgreSQL `LISTEN` connection of its own.
    url: std::sync::Arc<str>,
    /// Deliveries to the group-commit task.
    pub(crate) committer: tokio::sync::mpsc::Sender<crate::messages::Job>,
}

/// How long a connection waits for a lock held by another process (an operator's
/// `mailroom admin` command while the server runs) before giving up.
const SQLITE_BUSY_TIMEOUT_MS: u32 = 10_000;

impl Store {
    /// Opens the database at `url` (`sqlite://PATH` or `postgres://…`), creating a SQLite
    /// file if it does not exist, and brings its schema up to date.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        install_default_drivers();
        let store = if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            Self::open_sqlite_path(path).await?
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = AnyPoolOptions::new()
                .max_connections(16)
                .min_connections(0)
                .acquire_timeout(Duration::from_secs(10))
                .connect(url)
                .await?;
            Store::assemble(pool.clone(), pool, Backend::Postgres, url)
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Opens (or creates) the SQLite database file at `path`.
    pub async fn open_sqlite(path: &Path) -> Result<Store, StoreError> {
        let url = format!("sqlite://{}", path.display());
        Self::open(&url).await
    }

    async fn open_sqlite_path(path: &str) -> Result<Store, StoreError> {
        // Query parameters of the URL are kept; `mode=rwc` creates the file.
        let (file, params) = path.split_once('?').unwrap_or((path, ""));
        let mut url = format!("sqlite://{file}?mode=rwc");
        if !params.is_empty() {
            url.push('&');
            url.push_str(params);
        }
        let write = AnyPoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(sqlite_pragmas)
            .connect(&url)
            .await?;
        let read = AnyPoolOptions::new()
            .max_connections(8)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(sqlite_pragmas)
            .connect(&url)
            .await?;
        Ok(Store::assemble(read, write, Backend::Sqlite, &url))
    }

    /// A store over its pools, with its group-commit task started.
    fn assemble(read: AnyPool, write: AnyPool, backend: Backend, url: &str) -> Store {
        // Enough room that sessions rarely wait to hand over; the committer drains it all.
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(crate::messages::committer(write.clone(), rx));
        if backend == Backend::Sqlite {
            tokio::spawn(checkpointer(read.clone()));
        }
        Store {
            read,
            write,
            backend,
            url: url.into(),
            committer: tx,
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Applies the migrations this build knows and the database lacks. Safe to run from
    /// several processes at once (sqlx takes an advisory lock on PostgreSQL; SQLite has one
    /// writer).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let migrations = match self.backend {
            Backend::Sqlite => SQLITE_MIGRATIONS,
            Backend::Postgres => POSTGRES_MIGRATIONS,
        };
        let migrator = Migrator {
            migrations: Cow::Owned(
                migrations
                    .iter()
                    .map(|(version, description, sql)| {
                        Migration::new(
                            *version,
                            Cow::Borrowed(*description),
                            MigrationType::Simple,
                            sqlx::SqlSafeStr::into_sql_str(*sql),
                            false,
                        )
                    })
                    .collect::<Vec<_>>(),
            ),
            ..Migrator::DEFAULT
        };
        migrator.run(&self.write).await?;
        Ok(())
    }

    /// Tells other processes sharing this database that cached facts about `what` (for
    /// example `inbox:<id>`) are stale. Runs inside the caller's transaction, so the message
    /// is delivered only if the change commits. On SQLite the other process is an
    /// operator's `mailroom admin` command beside the running server (a key rotated from
    /// the command line must stop working in the server at once), so the note is a row
    /// that the server's listener polls.
    pub(crate) async fn notify_stale(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        what: &str,
    ) -> Result<(), StoreError> {
        let sql = match self.backend {
            Backend::Postgres => "SELECT pg_notify('mailroom_stale', $1)",
            Backend::Sqlite => {
                "INSERT INTO stale_notes (what, created_at) VALUES ($1, \
                 CAST(strftime('%s', 'now') AS INTEGER) * 1000)"
            }
        };
        sqlx::query(sql).bind(what).execute(&mut **tx).await?;
        Ok(())
    }

    /// A listener for the stale-cache messages of every process sharing the database:
    /// PostgreSQL `LISTEN`, or on SQLite a poll of the notes written since it started.
    pub async fn stale_listener(&self) -> Result<Option<StaleListener>, StoreError> {
        if self.backend == Backend::Sqlite {
            let seen: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM stale_notes")
                .fetch_one(&self.read)
                .await?;
            return Ok(Some(StaleListener {
                inner: Listening::Sqlite {
                    store: self.clone(),
                    seen: seen.unwrap_or(0),
                    pending: std::collections::VecDeque::new(),
                    cleaned_at: std::time::Instant::now(),
                },
            }));
        }
        let mut listener = sqlx::postgres::PgListener::connect(&self.url).await?;
        listener.listen("mailroom_stale").await?;
        Ok(Some(StaleListener {
            inner: Listening::Postgres(Box::new(listener)),
        }))
    }

    /// A cheap round trip to the database, for `/healthz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    /// Closes every connection; pending writes finish first.
    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }
}

/// How often the WAL is copied back into the database file, beside the writer.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);
/// The WAL size (pages) at which a commit checkpoints by itself: a safety net for when the
/// checkpointer falls behind, large enough that it rarely does.
const AUTOCHECKPOINT_PAGES: u32 = 16_000;

/// Checkpoints the WAL every [`CHECKPOINT_INTERVAL`] from a reading connection until the
/// pools close. SQLite's own automatic checkpoint runs inside the commit that crosses
/// 1,000 pages, so a delivery waited for it: under a stream of small deliveries that was a
/// sixth of the server's time on the commit path. A PASSIVE checkpoint takes no lock a
/// writer needs, so commits go on beside it.
async fn checkpointer(read: AnyPool) {
    loop {
        tokio::time::sleep(CHECKPOINT_INTERVAL).await;
        if read.is_closed() {
            return;
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&read)
            .await
        {
            if read.is_closed() {
                return;
            }
            tracing::warn!(error = %e, "SQLite checkpoint failed; will retry");
        }
    }
}

/// Settings every SQLite connection needs, applied when the pool opens it.
fn sqlite_pragmas(
    conn: &mut sqlx::AnyConnection,
    _meta: sqlx::pool::PoolConnectionMetadata,
) -> futures_util::future::BoxFuture<'_, Result<(), sqlx::Error>> {
    Box::pin(async move {
        // WAL lets readers run beside the writer; synchronous=FULL fsyncs the WAL at every
        // commit, which is what "durable before acknowledged" needs.
        conn.execute("PRAGMA journal_mode = WAL").await?;
        conn.execute("PRAGMA synchronous = FULL").await?;
        conn.execute("PRAGMA foreign_keys = ON").await?;
        let auto = format!("PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_PAGES}");
        conn.execute(sqlx::AssertSqlSafe(auto)).await?;
        let busy = format!("PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}");
        conn.execute(sqlx::AssertSqlSafe(busy)).await?;
        Ok(())
    })
}

type MigrationSource = (i64, &'static str, &'static str);

const SQLITE_MIGRATIONS: &[MigrationSource] = &[
    (
        1,
        "tenancy",
        include_str!("../migrations/sqlite/0001_tenancy.sql"),
    ),
    (
        2,
        "messages",
        include_str!("../migrations/sqlite/0002_messages.sql"),
    ),
    (
        3,
        "webhooks",
        include_str!("../migrations/sqlite/0003_webhooks.sql"),
    ),
    (
        4,
        "idempotency",
        include_str!("../migrations/sqlite/0004_idempotency.sql"),
    ),
    (
        5,
        "dkim",
        include_str!("../migrations/sqlite/0005_dkim.sql"),
    ),
    (
        6,
        "api keys",
        include_str!("../migrations/sqlite/0006_api_keys.sql"),
    ),
    (
        7,
        "outbound queue",
        include_str!("../migrations/sqlite/0007_outbound.sql"),
    ),
    (
        8,
        "users",
        include_str!("../migrations/sqlite/0008_users.sql"),
    ),
    (
        9,
        "domains",
        include_str!("../migrations/sqlite/0009_domains.sql"),
    ),
    (
        10,
        "imap",
        include_str!("../migrations/sqlite/0010_imap.sql"),
    ),
    (
        11,
        "webhook fairness",
        include_str!("../migrations/sqlite/0011_webhook_fairness.sql"),
    ),
    (
        12,
        "storage",
        include_str!("../migrations/sqlite/0012_storage.sql"),
    ),
    (
        13,
        "tenancy holds",
        include_str!("../migrations/sqlite/0013_tenancy_holds.sql"),
    ),
    (
        14,
        "imap recent",
        include_str!("../migrations/sqlite/0014_imap_recent.sql"),
    ),
    (
        15,
        "operator notices",
        include_str!("../migrations/sqlite/0015_operator_notices.sql"),
    ),
];

const POSTGRES_MIGRATIONS: &[MigrationSource] = &[
    (
        1,
        "tenancy",
        include_str!("../migrations/postgres/0001_tenancy.sql"),
    ),
    (
        2,
        "messages",
        include_str!("../migrations/postgres/0002_messages.sql"),
    ),
    (
        3,
        "webhooks",
        include_str!("../migrations/postgres/0003_webhooks.sql"),
    ),
    (
        4,
        "idempotency",
        include_str!("../migrations/postgres/0004_idempotency.sql"),
    ),
    (
        5,
        "dkim",
        include_str!("../migrations/postgres/0005_dkim.sql"),
    ),
    (
        6,
        "api keys",
        include_str!("../migrations/postgres/0006_api_keys.sql"),
    ),
    (
        7,
        "outbound queue",
        include_str!("../migrations/postgres/0007_outbound.sql"),
    ),
    (
        8,
        "users",
        include_str!("../migrations/postgres/0008_users.sql"),
    ),
    (
        9,
        "domains",
        include_str!("../migrations/postgres/0009_domains.sql"),
    ),
    (
        10,
        "imap",
        include_str!("../migrations/postgres/0010_imap.sql"),
    ),
    (
        11,
        "webhook fairness",
        include_str!("../migrations/postgres/0011_webhook_fairness.sql"),
    ),
    (
        12,
        "storage",
        include_str!("../migrations/postgres/0012_storage.sql"),
    ),
    (
        13,
        "tenancy holds",
        include_str!("../migrations/postgres/0013_tenancy_holds.sql"),
    ),
    (
        14,
        "imap recent",
        include_str!("../migrations/postgres/0014_imap_recent.sql"),
    ),
    (
        15,
        "operator notices",
        include_str!("../migrations/postgres/0015_operator_notices.sql"),
    ),
];

/// Receives stale-cache messages from other processes (PostgreSQL `LISTEN`, or a poll of
/// SQLite's `stale_notes`).
pub struct StaleListener {
    inner: Listening,
}

enum Listening {
    Postgres(Box<sqlx::postgres::PgListener>),
    Sqlite {
        store: Store,
        /// The last note handed out.
        seen: i64,
        pending: std::collections::VecDeque<String>,
        cleaned_at: std::time::Instant,
    },
}

/// How often the SQLite listener looks for notes; an operator's change reaches the
/// server's cache within this.
const SQLITE_STALE_POLL: Duration = Duration::from_millis(250);
/// Notes older than this are deleted by the listener (every process has read them), once
/// a minute: not per poll, since the writer is shared with deliveries.
const SQLITE_STALE_KEEP_MS: i64 = 10 * 60 * 1000;
const SQLITE_STALE_CLEANUP: Duration = Duration::from_secs(60);

/// What a [`StaleListener`] heard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stale {
    /// Facts about this thing changed (`inbox:<id>`).
    Thing(String),
    /// The connection was lost and messages may have been missed: forget everything.
    Everything,
}

impl StaleListener {
    /// The next message. After a lost connection it answers [`Stale::Everything`] once and
    /// reconnects on the next call.
    pub async fn next(&mut self) -> Stale {
        match &mut self.inner {
            Listening::Postgres(listener) => match listener.try_recv().await {
                Ok(Some(n)) => Stale::Thing(n.payload().to_owned()),
                Ok(None) => Stale::Everything,
                Err(e) => {
                    tracing::warn!(error = %e, "stale-cache listener failed; retrying");
                    tokio_sleep_1s().await;
                    Stale::Everything
                }
            },
            Listening::Sqlite {
                store,
                seen,
                pending,
                cleaned_at,
            } => loop {
                if let Some(what) = pending.pop_front() {
                    return Stale::Thing(what);
                }
                tokio::time::sleep(SQLITE_STALE_POLL).await;
                if cleaned_at.elapsed() > SQLITE_STALE_CLEANUP {
                    *cleaned_at = std::time::Instant::now();
                    if let Err(e) = sqlx::query("DELETE FROM stale_notes WHERE created_at < $1")
                        .bind(mailroom_core::time::now_ms() - SQLITE_STALE_KEEP_MS)
                        .execute(&store.write)
                        .await
                    {
                        tracing::warn!(error = %e, "deleting old stale-cache notes failed");
                    }
                }
                match poll_notes(store, *seen).await {
                    Ok(notes) => {
                        for (seq, what) in notes {
                            *seen = seq;
                            pending.push_back(what);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "reading stale-cache notes failed; retrying");
                        return Stale::Everything;
                    }
                }
            },
        }
    }
}

/// Notes after `seen`, oldest first.
async fn poll_notes(store: &Store, seen: i64) -> Result<Vec<(i64, String)>, StoreError> {
    Ok(
        sqlx::query_as("SELECT seq, what FROM stale_notes WHERE seq > $1 ORDER BY seq LIMIT 1000")
            .bind(seen)
            .fetch_all(&store.read)
            .await?,
    )
}

async fn tokio_sleep_1s() {
    tokio::time::sleep(Duration::from_secs(1)).await;
}
