//! Extractors: turn a request into typed input, or into a clear error answer.

use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use base64::Engine as _;
use mailroom_services::{Credential, Principal};
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::error::ApiError;
use crate::server::PeerAddr;

/// A JSON body. An empty body counts as `{}` (so `POST /v1/inboxes` with no body makes an
/// inbox with a random name); anything else must be `application/json` and parse into `T`.
/// Errors name what to fix: 415 for the wrong content type, 400 for malformed JSON, 422 for
/// JSON of the wrong shape (with the field), 413 for a body over the limit.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let is_json = is_json_content_type(req.headers());
        let bytes = Bytes::from_request(req, state).await.map_err(|e| match e {
            BytesRejection::FailedToBufferBody(_) => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                format!(
                    "the request body is larger than {} bytes",
                    state.config.max_body_bytes
                ),
            ),
            other => ApiError::new(StatusCode::BAD_REQUEST, "INVALID_BODY", other.body_text()),
        })?;
        let body: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            require_json(is_json)?;
            &bytes
        };
        parse_json(body).map(ApiJson)
    }
}

/// Whether the request says its body is JSON (`application/json` or `…+json`).
pub fn is_json_content_type(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            let mime = ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            mime == "application/json" || mime.ends_with("+json")
        })
}

/// 415 unless the body is declared JSON.
pub fn require_json(is_json: bool) -> Result<(), ApiError> {
    if is_json {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "send the body as JSON with the header Content-Type: application/json",
        ))
    }
}

/// Parses JSON into `T`, naming the offending field when the shape is wrong.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Ok(v) => {
            de.end().map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "INVALID_JSON",
                    format!("the body is not valid JSON: {e}"),
                )
            })?;
            Ok(v)
        }
        Err(err) => {
            let path = err.path().to_string();
            let inner = err.into_inner();
            let message = inner.to_string();
            if inner.is_syntax() || inner.is_eof() {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "INVALID_JSON",
                    format!("the body is not valid JSON: {message}"),
                ));
            }
            let field = if path != "." {
                Some(path)
            } else {
                // "unknown field `x`" and "missing field `x`" name it in the message.
                message.split('`').nth(1).map(str::to_owned)
            };
            let mut e = ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "VALIDATION_ERROR",
                message,
            );
            e.field = field;
            Err(e)
        }
    }
}

/// Query parameters, with a 400 naming the parameter when they do not parse.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded_de(query);
        match de {
            Ok(v) => Ok(ApiQuery(v)),
            Err((field, message)) => Err(ApiError::bad_query(&field, message)),
        }
    }
}

fn serde_urlencoded_de<T: DeserializeOwned>(query: &str) -> Result<T, (String, String)> {
    axum::extract::Query::<T>::try_from_uri(&format!("/?{query}").parse().map_err(|_| {
        (
            "query".to_owned(),
            "the query string is malformed".to_owned(),
        )
    })?)
    .map(|q| q.0)
    .map_err(|e| {
        let message = e.body_text();
        let field = message.split('`').nth(1).unwrap_or("query").to_owned();
        (field, message)
    })
}

/// The key presented in `Authorization`: `Bearer <key>`, or Basic with the key as the user
/// name and any (usually empty) password, as seed 004 describes.
fn presented_key(parts: &Parts) -> Result<Option<String>, ApiError> {
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let malformed = || {
        ApiError::unauthorized(
            "malformed Authorization header; send `Authorization: Bearer <key>` \
             or Basic auth with the key as user name",
        )
    };
    let value = value.to_str().map_err(|_| malformed())?.trim();
    let (scheme, rest) = value.split_once(' ').ok_or_else(malformed)?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Ok(Some(rest.to_owned()));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .map_err(|_| malformed())?;
        let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
        let user = decoded.split_once(':').map_or(decoded.as_str(), |(u, _)| u);
        return Ok(Some(user.to_owned()));
    }
    Err(malformed())
}

/// The principal the rate limiter already verified for this request.
#[derive(Debug, Clone)]
pub(crate) struct Verified(pub Principal);

/// The key a request presents, if its `Authorization` header is well-formed.
pub(crate) fn presented_key_of(parts: &Parts) -> Option<String> {
    presented_key(parts).ok().flatten()
}

/// A caller that presented a valid key.
#[derive(Debug, Clone)]
pub struct Auth(pub Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match OptionalAuth::from_request_parts(parts, state).await?.0 {
            Some(p) => Ok(Auth(p)),
            None => Err(ApiError::unauthorized(
                "missing API key; send `Authorization: Bearer <key>`",
            )),
        }
    }
}

/// A caller that presented a valid key, and the key itself: for a request that lives on
/// after it is authenticated (an event stream, a waiting long poll), which asks again every
/// second whether the key still works (`Services::still_reads_inbox`).
#[derive(Debug, Clone)]
pub struct AuthSession {
    pub principal: Principal,
    pub credential: Credential,
}

impl FromRequestParts<AppState> for AuthSession {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Auth(principal) = Auth::from_request_parts(parts, state).await?;
        // Auth succeeded, so a well-formed key was presented.
        let key = presented_key(parts)?.ok_or_else(|| {
            ApiError::unauthorized("missing API key; send `Authorization: Bearer <key>`")
        })?;
        Ok(AuthSession {
            principal,
            credential: Credential::new(key),
        })
    }
}

/// A caller that may or may not present a key; a key that is presented must be valid.
#[derive(Debug, Clone)]
pub struct OptionalAuth(pub Option<Principal>);

impl FromRequestParts<AppState> for OptionalAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(Verified(principal)) = parts.extensions.get::<Verified>() {
            return Ok(OptionalAuth(Some(principal.clone())));
        }
        let Some(key) = presented_key(parts)? else {
            return Ok(OptionalAuth(None));
        };
        let principal = state.services.authenticate(&key).await?;
        Ok(OptionalAuth(Some(principal)))
    }
}

/// The client's IP address: the peer's, or, when the peer is a trusted proxy, the last
/// address in `X-Forwarded-For` that is not a trusted proxy.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let peer = peer_of(parts);
        Ok(ClientIp(client_ip(
            parts,
            peer.ip(),
            &state.config.trusted_proxies,
        )))
    }
}

pub(crate) fn peer_of(parts: &Parts) -> SocketAddr {
    parts
        .extensions
        .get::<ConnectInfo<PeerAddr>>()
        .map(|c| c.0.addr)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))
}

pub(crate) fn client_ip(parts: &Parts, peer: IpAddr, trusted: &[IpAddr]) -> IpAddr {
    client_ip_of(&parts.headers, peer, trusted)
}

/// The client's address from the peer and, for a trusted proxy, `X-Forwarded-For`.
pub(crate) fn client_ip_of(
    headers: &axum::http::HeaderMap,
    peer: IpAddr,
    trusted: &[IpAddr],
) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    forwarded
        .into_iter()
        .rev()
        .find(|ip| !trusted.contains(ip))
        .unwrap_or(peer)
}
