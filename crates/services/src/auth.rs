//! Who is calling: one function turns a presented secret into a [`Principal`], for every
//! door (HTTP today; SMTP, IMAP and POP3 call the same function).

use mailroom_core::secret::{hash_secret, looks_like_key};

use crate::{ServiceError, Services};

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The account key: manages everything in the account.
    Account { account_id: String, key_id: String },
    /// An inbox key: reaches its own inbox only.
    Inbox {
        account_id: String,
        inbox_id: String,
        key_id: String,
    },
    /// A named API key (seed 002): the account's inboxes, as far as its scopes allow.
    ApiKey {
        account_id: String,
        key_id: String,
        scopes: Vec<String>,
    },
    /// An operator user's access token (seed 004). An owner may do what the account key
    /// does; other users reach the account's mail (`api:read`, `api:write`) only.
    User {
        account_id: String,
        user_id: String,
        owner: bool,
    },
}

impl Principal {
    pub fn account_id(&self) -> &str {
        match self {
            Principal::Account { account_id, .. }
            | Principal::Inbox { account_id, .. }
            | Principal::ApiKey { account_id, .. }
            | Principal::User { account_id, .. } => account_id,
        }
    }

    /// The account id, if this principal may manage the account.
    pub fn require_account(&self) -> Result<&str, ServiceError> {
        match self {
            Principal::Account { account_id, .. }
            | Principal::User {
                account_id,
                owner: true,
                ..
            } => Ok(account_id),
            Principal::User { owner: false, .. } => Err(ServiceError::Forbidden {
                code: "OWNER_REQUIRED",
                message:
                    "this needs the account API key or an owner's login; this user is not an owner"
                        .into(),
            }),
            Principal::Inbox { .. } | Principal::ApiKey { .. } => Err(ServiceError::Forbidden {
                code: "ACCOUNT_KEY_REQUIRED",
                message:
                    "this needs the account API key; inbox keys and scoped API keys reach only mail"
                        .into(),
            }),
        }
    }

    /// Refuses what may not manage an inbox (delete it, rotate its key): the account key,
    /// an owner, and an inbox key for its own inbox may; scoped API keys and users who are
    /// not owners only read and send (docs/security.md has the whole table).
    pub fn require_inbox_manager(&self) -> Result<(), ServiceError> {
        match self {
            Principal::Inbox { .. } => Ok(()),
            _ => self.require_account().map(|_| ()),
        }
    }

    /// Whether this principal may act on inbox `inbox_id` (of its own account; the store
    /// checks the account).
    pub fn may_access_inbox(&self, inbox_id: &str) -> bool {
        match self {
            Principal::Account { .. } | Principal::ApiKey { .. } | Principal::User { .. } => true,
            Principal::Inbox { inbox_id: own, .. } => own == inbox_id,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Principal::Account { .. } => "account",
            Principal::Inbox { .. } => "inbox",
            Principal::ApiKey { .. } => "api",
            Principal::User { .. } => "user",
        }
    }

    /// Refuses a scoped API key without `scope` (`app` and `internal` grant every scope);
    /// account and inbox keys are not scoped.
    pub fn require_scope(&self, scope: &str) -> Result<(), ServiceError> {
        match self {
            Principal::ApiKey { scopes, .. }
                if !scopes
                    .iter()
                    .any(|s| s == scope || s == "app" || s == "internal") =>
            {
                Err(ServiceError::Forbidden {
                    code: "SCOPE_REQUIRED",
                    message: format!("this API key lacks the {scope} scope"),
                })
            }
            // A user's token is for the HTTP API; the mail doors take keys.
            Principal::User { .. } if !scope.starts_with("api:") => Err(ServiceError::Forbidden {
                code: "SCOPE_REQUIRED",
                message: format!("a user's access token does not open {scope}; use an API key"),
            }),
            _ => Ok(()),
        }
    }

    /// Whether this principal manages the account (the account key, or an owner).
    pub fn is_account_manager(&self) -> bool {
        self.require_account().is_ok()
    }
}

impl Services {
    /// Resolves a presented key. Anything that is not a live key gets the same answer, so a
    /// caller learns nothing from the difference between a malformed, unknown, rotated or
    /// deleted key.
    pub async fn authenticate(&self, secret: &str) -> Result<Principal, ServiceError> {
        let invalid = || ServiceError::Unauthenticated("invalid API key".into());
        if secret.starts_with("eyJ") && secret.matches('.').count() == 2 {
            return self.authenticate_jwt(secret).await;
        }
        if !looks_like_key(secret) {
            return Err(invalid());
        }
        let hash = hash_secret(secret);
        if let Some(principal) = self.cache().key(&hash) {
            self.note_key_use(&principal);
            return Ok(principal);
        }
        let ticket = self.cache().ticket();
        let Some(key) = self.store().find_key(&hash).await? else {
            return Err(invalid());
        };
        let principal = match (key.kind.as_str(), key.inbox_id) {
            ("account", _) => Principal::Account {
                account_id: key.account_id,
                key_id: key.key_id,
            },
            ("inbox", Some(inbox_id)) => Principal::Inbox {
                account_id: key.account_id,
                inbox_id,
                key_id: key.key_id,
            },
            ("api", _) => Principal::ApiKey {
                account_id: key.account_id,
                key_id: key.key_id,
                scopes: key.scopes,
            },
            (kind, _) => {
                tracing::warn!(key_id = %key.key_id, kind, "key of unknown kind refused");
                return Err(invalid());
            }
        };
        self.cache().put_key(ticket, &hash, &principal);
        self.note_key_use(&principal);
        Ok(principal)
    }
}
