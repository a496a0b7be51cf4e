//! Operator users (seed 004): passwords (argon2id), JWT access tokens (HS256, pinned), and
//! refresh tokens that rotate on every use and live at most 30 days.
//!
//! The access token is a short-lived JWT signed with a key derived from the master secret;
//! every request that presents one also checks that the user still exists and is not
//! disabled (a cached look-up that every change evicts), so deleting or disabling a user
//! refuses its next request, and ends its open streams within 2 s (`revocation`). Refresh tokens are
//! random, stored as SHA-256 hashes, and grouped in families: presenting a token that was
//! already exchanged revokes its family (the token was stolen, or replayed).

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine as _;
use mailroom_core::ids::{IdKind, new_id};
use mailroom_core::secret::{constant_time_eq, hash_secret, hmac_sha256, random_base62};
use mailroom_core::time::now_ms;
use mailroom_store::{NewUser, RefreshLookup, UserRow};
use serde::{Deserialize, Serialize};

use crate::cache::UserState;
use crate::{Principal, ServiceError, Services};

/// The absolute lifetime of a refresh-token family (seed 004: 30 days).
pub const REFRESH_TOKEN_TTL_MS: i64 = 30 * 24 * 3600 * 1000;
/// The only algorithm accepted: a token naming another (`none`, `RS256`) is refused before
/// anything else is looked at.
const JWT_HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;
const ISSUER: &str = "mailroom";

/// Why a token request failed; the API answers with seed 004's codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRefusal {
    /// `40102 Username and password are incorrect`.
    BadCredentials,
    /// `40106 Refresh token is invalid`.
    InvalidRefreshToken,
    /// `42901`: too many wrong passwords from this address (or for this user from it);
    /// answered with `Retry-After` before the password is looked at.
    Throttled(crate::Throttled),
}

/// A successful grant or refresh (seed 004's shape).
#[derive(Debug, Clone, Serialize)]
pub struct TokenGrant {
    pub token_type: &'static str,
    pub access_token: String,
    /// Milliseconds since the epoch.
    pub expires_at: i64,
    pub scope: Vec<String>,
    pub refresh_token: String,
}

/// `GET /v1/me` (seed 004's fields).
#[derive(Debug, Clone, Serialize)]
pub struct MeView {
    pub id: String,
    pub account_id: String,
    pub email_address: String,
    pub first_name: String,
    pub surname: String,
    pub gravatar_url: String,
    pub is_owner: bool,
    pub is_verified: bool,
    pub created_at_utc: i64,
    pub modified_at_utc: i64,
}

impl MeView {
    pub fn of(u: &UserRow) -> MeView {
        let digest = {
            use sha2::Digest as _;
            hex::encode(sha2::Sha256::digest(
                u.email.trim().to_lowercase().as_bytes(),
            ))
        };
        MeView {
            id: u.id.clone(),
            account_id: u.account_id.clone(),
            email_address: u.email.clone(),
            first_name: u.first_name.clone(),
            surname: u.surname.clone(),
            gravatar_url: format!("https://www.gravatar.com/avatar/{digest}"),
            is_owner: u.is_owner,
            is_verified: u.is_verified,
            created_at_utc: u.created_at,
            modified_at_utc: u.modified_at,
        }
    }
}

/// A user to create (`POST /v1/account/users`, `mailroom admin user create`).
#[derive(Debug, Clone, Default)]
pub struct CreateUser {
    pub email: String,
    pub password: String,
    pub first_name: String,
    pub surname: String,
    pub is_owner: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    /// The user's email, as in the seed.
    sub: String,
    /// The user id.
    id: String,
    account_id: String,
    name: String,
    scope: Vec<String>,
    is_owner: bool,
    iat: i64,
    /// Seconds since the epoch (RFC 7519).
    exp: i64,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()
}

fn scopes_of(is_owner: bool) -> Vec<String> {
    if is_owner {
        vec!["account".into(), "api:read".into(), "api:write".into()]
    } else {
        vec!["api:read".into(), "api:write".into()]
    }
}

/// Hashes a password with argon2id (RFC 9106 defaults of the `argon2` crate), in PHC form.
pub fn hash_password(password: &str) -> Result<String, ServiceError> {
    let salt = SaltString::encode_b64(random_base62(22).as_bytes()).map_err(|e| {
        ServiceError::Invalid {
            code: "INVALID_PASSWORD",
            field: "password",
            message: format!("cannot hash the password: {e}"),
        }
    })?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ServiceError::Invalid {
            code: "INVALID_PASSWORD",
            field: "password",
            message: format!("cannot hash the password: {e}"),
        })
}

fn password_matches(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

fn check_new_user(u: &CreateUser) -> Result<String, ServiceError> {
    let email = u.email.trim().to_ascii_lowercase();
    crate::send::check_address("email", &email).map_err(|_| ServiceError::Invalid {
        code: "INVALID_EMAIL",
        field: "email",
        message: format!(
            "{:?} is not an email address like jane@example.com",
            u.email
        ),
    })?;
    if u.password.chars().count() < 10 || u.password.len() > 1024 {
        return Err(ServiceError::Invalid {
            code: "WEAK_PASSWORD",
            field: "password",
            message: "the password must be 10 to 1024 characters long".into(),
        });
    }
    for (field, v) in [("first_name", &u.first_name), ("surname", &u.surname)] {
        if v.chars().count() > 100 || v.chars().any(char::is_control) {
            return Err(ServiceError::Invalid {
                code: "INVALID_NAME",
                field,
                message: "names are one line of at most 100 characters".into(),
            });
        }
    }
    Ok(email)
}

impl Services {
    fn jwt_key(&self) -> [u8; 32] {
        self.master().derive("jwt-hs256", "")
    }

    fn sign_jwt(&self, claims: &Claims) -> Result<String, ServiceError> {
        let payload = serde_json::to_vec(claims).map_err(|e| ServiceError::Invalid {
            code: "INTERNAL",
            field: "token",
            message: e.to_string(),
        })?;
        let signing_input = format!("{}.{}", b64(JWT_HEADER.as_bytes()), b64(&payload));
        let sig = hmac_sha256(&self.jwt_key(), &[signing_input.as_bytes()]);
        Ok(format!("{signing_input}.{}", b64(&sig)))
    }

    /// Checks a JWT's header, signature and expiry, then that its user still exists, is
    /// enabled, and belongs to the account named in the token.
    pub(crate) async fn authenticate_jwt(&self, token: &str) -> Result<Principal, ServiceError> {
        let invalid = || ServiceError::Unauthenticated("invalid or expired access token".into());
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        let header: serde_json::Value = unb64(h)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(invalid)?;
        if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
            return Err(invalid());
        }
        let expected = hmac_sha256(&self.jwt_key(), &[format!("{h}.{p}").as_bytes()]);
        let given = unb64(s).ok_or_else(invalid)?;
        if !constant_time_eq(&given, &expected) {
            return Err(invalid());
        }
        let claims: Claims = unb64(p)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(invalid)?;
        if claims.iss != ISSUER || claims.exp * 1000 <= now_ms() {
            return Err(invalid());
        }
        let user = self.user_state(&claims.id).await?.ok_or_else(invalid)?;
        if user.disabled || user.account_id != claims.account_id {
            return Err(invalid());
        }
        Ok(Principal::User {
            account_id: user.account_id,
            user_id: claims.id,
            owner: user.is_owner,
        })
    }

    /// What a token check needs of user `user_id`: from memory while nothing changed it
    /// (disabling, enabling and deleting evict it, in every process), so a request or an
    /// open stream's once-a-second check costs no database read.
    async fn user_state(&self, user_id: &str) -> Result<Option<UserState>, ServiceError> {
        if let Some(state) = self.cache().user(user_id) {
            return Ok(Some(state));
        }
        let ticket = self.cache().ticket();
        let Some(user) = self.store().user_by_id(user_id).await? else {
            return Ok(None);
        };
        let state = UserState {
            account_id: user.account_id,
            is_owner: user.is_owner,
            disabled: user.disabled,
        };
        self.cache().put_user(ticket, user_id, &state);
        Ok(Some(state))
    }

    fn access_token(&self, user: &UserRow, now: i64) -> Result<(String, i64), ServiceError> {
        let ttl = i64::try_from(self.config().access_token_ttl.as_millis()).unwrap_or(900_000);
        let expires_at = now + ttl;
        let claims = Claims {
            iss: ISSUER.into(),
            sub: user.email.clone(),
            id: user.id.clone(),
            account_id: user.account_id.clone(),
            name: format!("{} {}", user.first_name, user.surname)
                .trim()
                .to_owned(),
            scope: scopes_of(user.is_owner),
            is_owner: user.is_owner,
            iat: now / 1000,
            exp: expires_at / 1000,
        };
        Ok((self.sign_jwt(&claims)?, expires_at))
    }

    /// Grant (login): email and password give an access token and a refresh token, and
    /// the user's earlier refresh tokens stop working.
    pub async fn grant_token(
        &self,
        email: &str,
        password: &str,
        client_ip: std::net::IpAddr,
    ) -> Result<Result<TokenGrant, TokenRefusal>, ServiceError> {
        let email = email.trim().to_ascii_lowercase();
        let throttle = self.login_throttle();
        if let Err(t) = throttle.admit("http", client_ip, &email) {
            return Ok(Err(TokenRefusal::Throttled(t)));
        }
        let user = self.store().user_by_email(&email).await?;
        // Hash even for an unknown user, the same way, so timing does not tell which
        // emails exist.
        let phc = user
            .as_ref()
            .map_or_else(|| DUMMY_HASH.to_owned(), |u| u.password_hash.clone());
        let candidate = password.to_owned();
        let matches = self
            .hash_work(move || password_matches(&candidate, &phc))
            .await
            .unwrap_or(false);
        let Some(user) = user.filter(|u| matches && !u.disabled) else {
            throttle.failed(client_ip, &email);
            return Ok(Err(TokenRefusal::BadCredentials));
        };
        throttle.succeeded(client_ip, &email);
        let now = now_ms();
        let refresh = format!("mr_rt_{}", random_base62(64));
        self.store()
            .grant_refresh_token(
                &user.id,
                &hash_secret(&refresh),
                &new_id(IdKind::TokenFamily),
                now,
                now + REFRESH_TOKEN_TTL_MS,
            )
            .await?;
        let (access_token, expires_at) = self.access_token(&user, now)?;
        Ok(Ok(TokenGrant {
            token_type: "bearer",
            access_token,
            expires_at,
            scope: scopes_of(user.is_owner),
            refresh_token: refresh,
        }))
    }

    /// Refresh: a live refresh token gives a new access token and a new refresh token; the
    /// old one is spent. Presenting a spent one revokes its whole family.
    pub async fn refresh_token(
        &self,
        refresh_token: &str,
    ) -> Result<Result<TokenGrant, TokenRefusal>, ServiceError> {
        let now = now_ms();
        let next = format!("mr_rt_{}", random_base62(64));
        let found = self
            .store()
            .rotate_refresh_token(&hash_secret(refresh_token), &hash_secret(&next), now)
            .await?;
        let RefreshLookup::Live { user_id, .. } = found else {
            if found == RefreshLookup::Reused {
                tracing::warn!("a spent refresh token was presented again; its family is revoked");
            }
            return Ok(Err(TokenRefusal::InvalidRefreshToken));
        };
        let Some(user) = self.store().user_by_id(&user_id).await? else {
            return Ok(Err(TokenRefusal::InvalidRefreshToken));
        };
        if user.disabled {
            return Ok(Err(TokenRefusal::InvalidRefreshToken));
        }
        let (access_token, expires_at) = self.access_token(&user, now)?;
        Ok(Ok(TokenGrant {
            token_type: "bearer",
            access_token,
            expires_at,
            scope: scopes_of(user.is_owner),
            refresh_token: next,
        }))
    }

    /// Logout: the refresh token's family stops working.
    pub async fn revoke_token(
        &self,
        refresh_token: &str,
    ) -> Result<Result<(), TokenRefusal>, ServiceError> {
        if self
            .store()
            .revoke_refresh_token(&hash_secret(refresh_token), now_ms())
            .await?
        {
            Ok(Ok(()))
        } else {
            Ok(Err(TokenRefusal::InvalidRefreshToken))
        }
    }

    /// The user behind a JWT.
    pub async fn me(&self, principal: &Principal) -> Result<MeView, ServiceError> {
        let Principal::User { user_id, .. } = principal else {
            return Err(ServiceError::Forbidden {
                code: "USER_TOKEN_REQUIRED",
                message: "GET /v1/me describes a logged-in user; present the access token of POST /v1/auth/token".into(),
            });
        };
        let user = self
            .store()
            .user_by_id(user_id)
            .await?
            .ok_or(ServiceError::NotFound { what: "user" })?;
        Ok(MeView::of(&user))
    }

    /// Creates a user in `account_id` (callers check who may).
    pub async fn create_user_in(
        &self,
        account_id: &str,
        u: &CreateUser,
    ) -> Result<UserRow, ServiceError> {
        let email = check_new_user(u)?;
        let password = u.password.clone();
        let password_hash = self
            .hash_work(move || hash_password(&password))
            .await
            .ok_or_else(|| ServiceError::Invalid {
                code: "INTERNAL",
                field: "password",
                message: "the password could not be hashed; try again".to_owned(),
            })??;
        let new = NewUser {
            id: new_id(IdKind::User),
            account_id: account_id.to_owned(),
            email: email.clone(),
            password_hash,
            first_name: u.first_name.trim().to_owned(),
            surname: u.surname.trim().to_owned(),
            is_owner: u.is_owner,
        };
        if !self.store().create_user(&new, now_ms()).await? {
            return Err(ServiceError::Conflict {
                code: "EMAIL_TAKEN",
                message: format!("a user with the email {email} exists already"),
            });
        }
        self.store()
            .user_by_id(&new.id)
            .await?
            .ok_or(ServiceError::NotFound { what: "user" })
    }

    /// `POST /v1/account/users`: the account key or an owner.
    pub async fn create_user(
        &self,
        principal: &Principal,
        u: &CreateUser,
    ) -> Result<UserRow, ServiceError> {
        let account_id = principal.require_account()?.to_owned();
        if self.store().get_account(&account_id).await?.is_none() {
            return Err(ServiceError::NotFound { what: "account" });
        }
        self.create_user_in(&account_id, u).await
    }

    pub async fn list_users(&self, principal: &Principal) -> Result<Vec<UserRow>, ServiceError> {
        let account_id = principal.require_account()?;
        Ok(self.store().list_users(account_id).await?)
    }

    pub async fn delete_user(
        &self,
        principal: &Principal,
        user_id: &str,
    ) -> Result<(), ServiceError> {
        let account_id = principal.require_account()?;
        if !self.store().delete_user(account_id, user_id).await? {
            return Err(ServiceError::NotFound { what: "user" });
        }
        self.cache().evict_user(user_id);
        Ok(())
    }

    pub async fn set_user_disabled(
        &self,
        principal: &Principal,
        user_id: &str,
        disabled: bool,
    ) -> Result<UserRow, ServiceError> {
        let account_id = principal.require_account()?;
        if !self
            .store()
            .set_user_disabled(account_id, user_id, disabled, now_ms())
            .await?
        {
            return Err(ServiceError::NotFound { what: "user" });
        }
        self.cache().evict_user(user_id);
        self.store()
            .user_by_id(user_id)
            .await?
            .ok_or(ServiceError::NotFound { what: "user" })
    }
}

/// An argon2id hash of a random password, verified against when the email is unknown.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$8r2fHQyYBbvL0h1WLrVSt/wQeU9S0rOcKIiv0fWQbBM";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(password_matches("correct horse battery", &h));
        assert!(!password_matches("wrong horse battery", &h));
        assert!(!password_matches("x", "not a hash"));
        // The dummy hash parses (it is verified against for unknown users).
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
    }
}
