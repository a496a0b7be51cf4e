use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://USER@HOST/DB")]
    UnsupportedUrl(String),
    #[error("the store is shutting down")]
    Closed,
    /// A sending limit (`day` or `month`) would be passed; nothing was stored.
    #[error("the {0} sending limit is reached")]
    QuotaExceeded(&'static str),
    /// Storing would pass an inbox's or an account's storage limit; nothing was stored.
    #[error("the {} storage limit is reached", scope.as_str())]
    StorageFull {
        inbox_id: String,
        scope: crate::StorageScope,
    },
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
}

/// Whether an error is a unique-constraint violation (a duplicate that the caller turns
/// into a conflict answer).
pub(crate) fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}
