//! Fresh databases for tests: a SQLite file in a temporary directory, and, when
//! `MAILROOM_TEST_DATABASE_URL` names a PostgreSQL server, a schema of its own there so that
//! tests run in parallel without seeing each other's rows.

use rand::Rng;
use sqlx::Connection;

use crate::StoreError;

/// The environment variable that turns on the PostgreSQL half of the test suite.
pub const TEST_DATABASE_URL_ENV: &str = "MAILROOM_TEST_DATABASE_URL";

/// A database that exists for one test. The SQLite directory is removed on drop.
#[derive(Debug)]
pub struct TestDatabase {
    /// What `Store::open` (or `MAILROOM_DATABASE_URL`) takes.
    pub url: String,
    /// For a SQLite test database, the directory that holds the file.
    pub dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    /// A new SQLite database in a new temporary directory.
    pub fn sqlite() -> std::io::Result<TestDatabase> {
        let dir = tempfile::Builder::new()
            .prefix("mailroom-test-")
            .tempdir()?;
        let url = format!("sqlite://{}", dir.path().join("mailroom.db").display());
        Ok(TestDatabase {
            url,
            dir: Some(dir),
        })
    }

    /// A new, empty schema on the PostgreSQL server of `MAILROOM_TEST_DATABASE_URL`, or
    /// `None` when that variable is not set.
    pub async fn postgres() -> Result<Option<TestDatabase>, StoreError> {
        let Ok(base) = std::env::var(TEST_DATABASE_URL_ENV) else {
            return Ok(None);
        };
        let schema = format!(
            "mrtest_{}",
            rand::rng()
                .sample_iter(rand::distr::Alphanumeric)
                .take(16)
                .map(|c| char::from(c).to_ascii_lowercase())
                .collect::<String>()
        );
        let mut conn = sqlx::PgConnection::connect(&base).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        let sep = if base.contains('?') { '&' } else { '?' };
        // `options=-c search_path=<schema>` makes every connection of the pool use it.
        let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
        Ok(Some(TestDatabase { url, dir: None }))
    }
}

/// Runs each store test `case(store, &db)` on a fresh SQLite database and, when
/// [`TEST_DATABASE_URL_ENV`] is set, on PostgreSQL: one `mod case { sqlite, postgres }` per
/// case, so each backend passes or fails on its own.
#[macro_export]
macro_rules! store_on_both_backends {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            #[tokio::test]
            async fn sqlite() {
                let db = mailroom_store::testing::TestDatabase::sqlite().unwrap();
                let store = mailroom_store::Store::open(&db.url).await.unwrap();
                super::$case(store, &db).await;
            }

            #[tokio::test]
            async fn postgres() {
                match mailroom_store::testing::TestDatabase::postgres().await.unwrap() {
                    Some(db) => {
                        let store = mailroom_store::Store::open(&db.url).await.unwrap();
                        super::$case(store, &db).await;
                    }
                    None => eprintln!("skipped: MAILROOM_TEST_DATABASE_URL is not set"),
                }
            }
        }
    )*};
}
