//! Storage for Mailroom: one [`Store`] over SQLite (the embedded default) or PostgreSQL.
//!
//! Both backends run the same SQL through sqlx's `Any` driver: `$1` placeholders, integer
//! milliseconds for time, text ids. Where the dialects differ (the migrations, row locks
//! for queue work later), the [`Backend`] says which one is in use. SQLite gets one writer
//! connection and a pool of readers, which is how SQLite wants to be used (one writer at a
//! time in WAL mode) and keeps writers from failing with `SQLITE_BUSY`.
//!
//! Every method that changes state and that someone may want to hear about also writes its
//! event row in the same transaction (see `mailroom_core::event`).

mod batch;
mod db;
mod domains;
mod error;
mod events;
mod holds;
mod imap;
mod messages;
mod notices;
mod outbound;
mod storage;
mod tenancy;
pub mod testing;
mod users;
mod webhook_queue;
mod webhooks;

pub use db::{Backend, Stale, StaleListener, Store};
pub use domains::{AddDomain, CredentialRow, DomainCheck, DomainRow};
pub use error::StoreError;
pub use events::EventRow;
pub use imap::{
    FlagChange, FlagOutcome, ImapMailbox, ImapMessage, MailboxCounts, MailboxRefusal, MailboxState,
};
pub use messages::{
    MessageQuery, MessageRow, NewMessage, Recipient, STANDARD_MAILBOXES, StoredMessage, mailbox_id,
};
pub use notices::{CreateNoticeOutcome, NewNotice, NoticeRow};
pub use outbound::{
    DueRecipient, OutboundSpec, QueueEntry, RecipientOutcome, RecipientResult, RecipientStatus,
};
pub use storage::{Collected, StorageLimit, StorageScope, StorageUsage};
pub use tenancy::{
    AccountRow, ApiKeyRow, CreateInboxOutcome, Idempotency, InboxRow, KeyRecord, NewInbox,
    NewKeyRow, SendQuota, TierChange,
};
pub use users::{NewUser, RefreshLookup, UserRow};
pub use webhook_queue::{DueCandidate, FANOUT_GRACE_MS, FanOutBatch, FanOutBudget, FanOutResume};
pub use webhooks::{
    AttemptOutcome, AttemptRow, CreateWebhookOutcome, DueDelivery, NewWebhook, WebhookRow,
    WebhookUpdate, matches,
};
