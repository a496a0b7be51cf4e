use mailroom_store::StoreError;
use serde::Serialize;
use thiserror::Error;

/// Seed 000's `upgrade_context`: what an agent shows its operator when a tier blocks it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpgradeContext {
    pub operator_action_url: String,
    pub operator_action_label: String,
    pub agent_script: String,
}

/// Why a service refused. Each front end maps these to its own answers (an HTTP status and
/// error code, an SMTP reply, an IMAP `NO`), so the meaning is decided once.
#[derive(Debug, Error)]
pub enum ServiceError {
    /// No secret, or one that matches nothing.
    #[error("{0}")]
    Unauthenticated(String),
    /// The secret is valid but may not do this (for example an inbox key asking for the
    /// account). `code` is the stable machine-readable reason.
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    /// The thing does not exist *for this caller*: another tenant's ids land here too.
    #[error("{what} not found")]
    NotFound { what: &'static str },
    /// Input that cannot be accepted, naming the field.
    #[error("{field}: {message}")]
    Invalid {
        code: &'static str,
        field: &'static str,
        message: String,
    },
    /// A clash with existing state (a taken username).
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// The account's tier does not allow this.
    #[error("{message}")]
    TierLimit {
        code: &'static str,
        message: String,
        upgrade: Option<Box<UpgradeContext>>,
    },
    /// Too many of something at once for this key or account (open streams): try again
    /// after `retry_after_secs`, or close one.
    #[error("{message}")]
    Busy {
        code: &'static str,
        message: String,
        retry_after_secs: u64,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}
