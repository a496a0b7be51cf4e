//! Seed 004: operator logins (`/v1/auth/token`, `/refresh`, `/revoke`, `/v1/me`) with the
//! seed's shapes and error codes, and the account's users (`/v1/account/users`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mailroom_core::time::rfc3339;
use mailroom_services::users::{CreateUser, MeView, TokenGrant, TokenRefusal};
use mailroom_store::UserRow;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Envelope;
use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, Auth, ClientIp};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantBody {
    /// The user's email (`username` is accepted too).
    #[serde(alias = "username")]
    pub email: String,
    pub password: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshBody {
    pub refresh_token: String,
}

/// Seed 004's error body: `{code, message}`.
/// A throttled login is 429 with `Retry-After`, in the same shape (code `42901`).
fn seed_error(status: StatusCode, refusal: TokenRefusal) -> Response {
    let (status, code, message) = match refusal {
        TokenRefusal::BadCredentials => (
            status,
            40102,
            "Username and password are incorrect".to_owned(),
        ),
        TokenRefusal::InvalidRefreshToken => (status, 40106, "Refresh token is invalid".to_owned()),
        TokenRefusal::Throttled(t) => {
            let secs = t.retry_after.as_secs().max(1);
            let body = serde_json::json!({
                "code": 42901,
                "message": format!("Too many failed logins from this address; retry after {secs} seconds"),
            });
            let mut response = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            return response;
        }
    };
    (
        status,
        Json(serde_json::json!({"code": code, "message": message})),
    )
        .into_response()
}

/// Grant (login): email and password → access token (JWT, 15 minutes) and refresh token.
/// Earlier refresh tokens of the user stop working.
#[utoipa::path(post, path = "/v1/auth/token", tag = "auth", request_body = GrantBody,
    responses((status = 200, description = "{token_type, access_token, expires_at, scope, refresh_token}"),
        (status = 403, description = "{code: 40102, message: \"Username and password are incorrect\"}"),
        (status = 429, description = "{code: 42901, message}: too many failed logins from this address; Retry-After")))]
pub async fn grant(
    State(state): State<AppState>,
    ClientIp(client_ip): ClientIp,
    ApiJson(body): ApiJson<GrantBody>,
) -> Result<Response, ApiError> {
    match state
        .services
        .grant_token(&body.email, &body.password, client_ip)
        .await?
    {
        Ok(grant) => Ok(Json::<TokenGrant>(grant).into_response()),
        Err(r) => Ok(seed_error(StatusCode::FORBIDDEN, r)),
    }
}

/// Refresh: a refresh token → a new access token and a new refresh token (the old one is
/// spent; presenting it again revokes the whole chain).
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "auth", request_body = RefreshBody,
    responses((status = 200, description = "as the grant"),
        (status = 403, description = "{code: 40106, message: \"Refresh token is invalid\"}")))]
pub async fn refresh(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<RefreshBody>,
) -> Result<Response, ApiError> {
    match state.services.refresh_token(&body.refresh_token).await? {
        Ok(grant) => Ok(Json::<TokenGrant>(grant).into_response()),
        Err(r) => Ok(seed_error(StatusCode::FORBIDDEN, r)),
    }
}

/// Revoke (logout): the refresh token, and every token refreshed from the same grant,
/// stop working.
#[utoipa::path(post, path = "/v1/auth/revoke", tag = "auth", request_body = RefreshBody,
    responses((status = 200, description = "{revoked: true}"),
        (status = 401, description = "{code: 40106, message: \"Refresh token is invalid\"}")))]
pub async fn revoke(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<RefreshBody>,
) -> Result<Response, ApiError> {
    match state.services.revoke_token(&body.refresh_token).await? {
        Ok(()) => Ok(Json(serde_json::json!({"revoked": true})).into_response()),
        Err(r) => Ok(seed_error(StatusCode::UNAUTHORIZED, r)),
    }
}

/// The logged-in user (seed 004's fields), from an access token.
#[utoipa::path(get, path = "/v1/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, description = "{id, account_id, email_address, first_name, surname, gravatar_url, is_owner, is_verified, created_at_utc, modified_at_utc}")))]
pub async fn me(
    State(state): State<AppState>,
    Auth(principal): Auth,
) -> Result<Response, ApiError> {
    let me: MeView = state.services.me(&principal).await?;
    Ok(Json(me).into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserBody {
    pub email: String,
    /// At least 10 characters. Stored as an argon2id hash.
    pub password: String,
    #[serde(default)]
    pub first_name: String,
    #[serde(default)]
    pub surname: String,
    /// Owners may do what the account key does.
    #[serde(default)]
    pub is_owner: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchUserBody {
    /// A disabled user cannot log in, and its tokens stop working at once.
    pub disabled: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub id: String,
    pub email: String,
    pub first_name: String,
    pub surname: String,
    pub is_owner: bool,
    pub is_verified: bool,
    pub disabled: bool,
    pub created_at: String,
}

impl UserView {
    fn of(u: UserRow) -> UserView {
        UserView {
            id: u.id,
            email: u.email,
            first_name: u.first_name,
            surname: u.surname,
            is_owner: u.is_owner,
            is_verified: u.is_verified,
            disabled: u.disabled,
            created_at: rfc3339(u.created_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserList {
    pub users: Vec<UserView>,
}

/// Create an operator user (account key or an owner's token).
#[utoipa::path(post, path = "/v1/account/users", tag = "auth", security(("bearer" = [])),
    request_body = CreateUserBody,
    responses((status = 201, body = Envelope<UserView>), (status = 409, description = "EMAIL_TAKEN"),
        (status = 422, description = "INVALID_EMAIL, WEAK_PASSWORD")))]
pub async fn create_user(
    State(state): State<AppState>,
    Auth(principal): Auth,
    ApiJson(body): ApiJson<CreateUserBody>,
) -> Result<Response, ApiError> {
    let user = state
        .services
        .create_user(
            &principal,
            &CreateUser {
                email: body.email,
                password: body.password,
                first_name: body.first_name,
                surname: body.surname,
                is_owner: body.is_owner,
            },
        )
        .await?;
    let email = user.email.clone();
    Ok((
        StatusCode::CREATED,
        Envelope::new(
            UserView::of(user),
            vec![format!(
                "The user logs in with POST /v1/auth/token {{\"email\": \"{email}\", \"password\": …}}"
            )],
        ),
    )
        .into_response())
}

/// The account's users.
#[utoipa::path(get, path = "/v1/account/users", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = Envelope<UserList>)))]
pub async fn list_users(
    State(state): State<AppState>,
    Auth(principal): Auth,
) -> Result<Envelope<UserList>, ApiError> {
    let users = state.services.list_users(&principal).await?;
    Ok(Envelope::new(
        UserList {
            users: users.into_iter().map(UserView::of).collect(),
        },
        vec!["Add one with POST /v1/account/users".into()],
    ))
}

/// Disable or enable a user.
#[utoipa::path(patch, path = "/v1/account/users/{id}", tag = "auth", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = PatchUserBody,
    responses((status = 200, body = Envelope<UserView>), (status = 404, description = "NOT_FOUND")))]
pub async fn patch_user(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<PatchUserBody>,
) -> Result<Envelope<UserView>, ApiError> {
    let user = state
        .services
        .set_user_disabled(&principal, &id, body.disabled)
        .await?;
    Ok(Envelope::new(UserView::of(user), Vec::new()))
}

/// Delete a user: its tokens stop working at once.
#[utoipa::path(delete, path = "/v1/account/users/{id}", tag = "auth", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 204), (status = 404, description = "NOT_FOUND")))]
pub async fn delete_user(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.services.delete_user(&principal, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
