//! Named API keys with scopes (seed 002): created, listed, revoked and rotated by the
//! account key. `lastUsedAt` is kept in memory and written in batches, not on every request.

use std::collections::HashMap;
use std::sync::Mutex;

use mailroom_core::ids::{IdKind, is_well_formed, new_id};
use mailroom_core::secret::{hash_secret, random_base62};
use mailroom_core::time::now_ms;
use mailroom_store::{ApiKeyRow, NewKeyRow};

use crate::{Principal, ServiceError, Services};

/// The scopes seed 002 defines.
pub const SCOPES: &[&str] = &[
    "smtp",
    "pop3",
    "imap",
    "api:read",
    "api:write",
    "app",
    "internal",
];

/// The scopes a mobile key gets: a mail app reads and sends over the protocols and the API.
pub const MOBILE_SCOPES: &[&str] = &["smtp", "pop3", "imap", "api:read", "api:write"];

/// Key uses not yet written to the database.
#[derive(Debug, Default)]
pub(crate) struct KeyUses(Mutex<HashMap<String, i64>>);

fn invalid(code: &'static str, field: &'static str, message: impl Into<String>) -> ServiceError {
    ServiceError::Invalid {
        code,
        field,
        message: message.into(),
    }
}

/// A named key is `mr_key_` + 32 base62 characters.
fn new_api_key() -> (String, NewKeyRow) {
    let secret = format!("mr_key_{}", random_base62(32));
    (
        secret.clone(),
        NewKeyRow {
            id: new_id(IdKind::Key),
            hash: hash_secret(&secret),
            display_prefix: mailroom_core::secret::display_prefix(&secret),
        },
    )
}

impl Services {
    pub(crate) fn note_key_use(&self, principal: &Principal) {
        if let Principal::ApiKey { key_id, .. } = principal {
            let mut uses = self
                .inner_key_uses()
                .0
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            uses.insert(key_id.clone(), now_ms());
        }
    }

    /// Writes the remembered key uses (`lastUsedAt`) in one transaction.
    pub async fn flush_key_uses(&self) -> Result<(), ServiceError> {
        let uses: Vec<(String, i64)> = {
            let mut map = self
                .inner_key_uses()
                .0
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            map.drain().collect()
        };
        Ok(self.store().record_key_uses(&uses).await?)
    }

    fn check_name(name: &str) -> Result<String, ServiceError> {
        let name = name.trim();
        if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
            return Err(invalid(
                "INVALID_NAME",
                "name",
                "name must be 1 to 100 characters",
            ));
        }
        Ok(name.to_owned())
    }

    /// The account's API keys, with `lastUsedAt` as of now.
    pub async fn list_api_keys(
        &self,
        principal: &Principal,
    ) -> Result<Vec<ApiKeyRow>, ServiceError> {
        let account_id = principal.require_account()?;
        let mut rows = self.store().list_api_keys(account_id).await?;
        let uses = self
            .inner_key_uses()
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for r in &mut rows {
            if let Some(at) = uses.get(&r.id) {
                r.last_used_at = Some(r.last_used_at.unwrap_or(0).max(*at));
            }
        }
        Ok(rows)
    }

    /// Creates a key (shown once).
    pub async fn create_api_key(
        &self,
        principal: &Principal,
        name: &str,
        scopes: &[String],
        mobile: Option<(&str, &str)>,
    ) -> Result<(ApiKeyRow, String), ServiceError> {
        let account_id = principal.require_account()?.to_owned();
        let name = Self::check_name(name)?;
        if scopes.is_empty() {
            return Err(invalid(
                "INVALID_SCOPES",
                "scopes",
                format!("give at least one scope: {}", SCOPES.join(", ")),
            ));
        }
        for s in scopes {
            if !SCOPES.contains(&s.as_str()) {
                return Err(invalid(
                    "INVALID_SCOPES",
                    "scopes",
                    format!("unknown scope {s:?}; use {}", SCOPES.join(", ")),
                ));
            }
        }
        let mut scopes = scopes.to_vec();
        scopes.dedup();
        if let Some((platform, device)) = mobile {
            for (field, v) in [("platform", platform), ("deviceId", device)] {
                if v.trim().is_empty() || v.len() > 200 || v.chars().any(char::is_control) {
                    return Err(invalid(
                        "VALIDATION_ERROR",
                        if field == "platform" {
                            "platform"
                        } else {
                            "deviceId"
                        },
                        format!("{field} must be 1 to 200 characters"),
                    ));
                }
            }
        }
        let (secret, key) = new_api_key();
        let now = now_ms();
        self.store()
            .insert_api_key(
                &account_id,
                &key,
                &name,
                &scopes,
                mobile.map(|m| m.0),
                mobile.map(|m| m.1),
                now,
            )
            .await?;
        Ok((
            ApiKeyRow {
                id: key.id,
                name,
                scopes,
                created_at: now,
                last_used_at: None,
                platform: mobile.map(|m| m.0.to_owned()),
                device_id: mobile.map(|m| m.1.to_owned()),
            },
            secret,
        ))
    }

    /// Revokes a key: it fails at once, everywhere.
    pub async fn delete_api_key(
        &self,
        principal: &Principal,
        key_id: &str,
    ) -> Result<(), ServiceError> {
        let account_id = principal.require_account()?;
        let found = is_well_formed(IdKind::Key, key_id)
            && self.store().delete_api_key(account_id, key_id).await?;
        self.cache().evict_key(key_id);
        if !found {
            return Err(ServiceError::NotFound { what: "key" });
        }
        Ok(())
    }

    /// A new key with the same name and scopes; the old one fails at once.
    pub async fn rotate_api_key(
        &self,
        principal: &Principal,
        key_id: &str,
    ) -> Result<(ApiKeyRow, String), ServiceError> {
        let account_id = principal.require_account()?.to_owned();
        let (secret, key) = new_api_key();
        let rotated = is_well_formed(IdKind::Key, key_id)
            && self
                .store()
                .rotate_api_key(&account_id, key_id, &key, now_ms())
                .await?;
        self.cache().evict_key(key_id);
        if !rotated {
            return Err(ServiceError::NotFound { what: "key" });
        }
        let row = self
            .store()
            .list_api_keys(&account_id)
            .await?
            .into_iter()
            .find(|r| r.id == key.id)
            .ok_or(ServiceError::NotFound { what: "key" })?;
        Ok((row, secret))
    }
}
