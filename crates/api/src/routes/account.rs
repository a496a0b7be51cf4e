//! `/v1/account`, `/v1/account/smtp` (seed 000), `/v1/capabilities`, `/v1/upgrade-link`.

use axum::extract::State;
use mailroom_core::Tier;
use mailroom_core::time::rfc3339;
use mailroom_services::{Capability, LimitsView, Refusal, SmtpCredentials, UpgradeLink};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Envelope;
use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, Auth};

/// Seed 003's account answer. Limits that are unlimited are `null`.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountView {
    pub account_id: String,
    #[schema(value_type = String, example = "free")]
    pub tier: Tier,
    #[schema(value_type = Object)]
    pub limits: LimitsView,
    pub created_at: String,
}

/// Get the account's tier, limits and usage (account key).
#[utoipa::path(
    get, path = "/v1/account", tag = "account",
    security(("bearer" = [])),
    responses(
        (status = 200, body = Envelope<AccountView>),
        (status = 401, description = "UNAUTHORIZED"),
        (status = 403, description = "ACCOUNT_KEY_REQUIRED"),
    )
)]
pub async fn get_account(
    State(state): State<AppState>,
    Auth(principal): Auth,
) -> Result<Envelope<AccountView>, ApiError> {
    let summary = state.services.account_summary(&principal).await?;
    let mut steps = vec!["See what you can do at this tier with GET /v1/capabilities".to_owned()];
    if summary.account.tier.next().is_some() {
        steps.push("Ask your operator for a higher tier with POST /v1/upgrade-link".to_owned());
    }
    Ok(Envelope::new(
        AccountView {
            account_id: summary.account.id,
            tier: summary.account.tier,
            limits: summary.limits,
            created_at: rfc3339(summary.account.created_at),
        },
        steps,
    ))
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = SmtpCredentials)]
pub struct SmtpCredentialsView {
    #[schema(example = "mail.example.com")]
    pub host: String,
    #[schema(example = 587)]
    pub port: u16,
    /// The account id.
    pub username: String,
    /// Stable across calls until it is rotated (`POST /v1/account/smtp/rotate`).
    pub password: String,
}

impl From<SmtpCredentials> for SmtpCredentialsView {
    fn from(c: SmtpCredentials) -> Self {
        SmtpCredentialsView {
            host: c.host,
            port: c.port,
            username: c.username,
            password: c.password,
        }
    }
}

/// Get SMTP credentials for direct sending (paid tiers; seed 000).
#[utoipa::path(
    get, path = "/v1/account/smtp", tag = "account",
    security(("bearer" = [])),
    responses(
        (status = 200, body = Envelope<SmtpCredentialsView>),
        (status = 401, description = "UNAUTHORIZED"),
        (status = 403, description = "SMTP_REQUIRES_PAID (with upgrade_context) or ACCOUNT_KEY_REQUIRED"),
    )
)]
pub async fn get_smtp(
    State(state): State<AppState>,
    Auth(principal): Auth,
) -> Result<Envelope<SmtpCredentialsView>, ApiError> {
    let creds = state.services.smtp_credentials(&principal).await?;
    let port = creds.port;
    Ok(Envelope::new(
        creds.into(),
        vec![
            "Configure your SMTP client with these credentials".to_owned(),
            format!("Use STARTTLS on port {port} (TLS encryption required)"),
            "Send from any inbox address associated with your account".to_owned(),
            "Sending limits apply - check GET /v1/account for daily/monthly quotas".to_owned(),
        ],
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CapabilitiesView {
    #[schema(value_type = String)]
    pub tier: Tier,
    #[schema(value_type = Vec<Object>)]
    pub can: Vec<Capability>,
    #[schema(value_type = Vec<Object>)]
    pub cannot: Vec<Refusal>,
    #[schema(value_type = Object)]
    pub limits: LimitsView,
}

/// What this key may do now, what it may not and how to unlock it.
#[utoipa::path(
    get, path = "/v1/capabilities", tag = "account",
    security(("bearer" = [])),
    responses(
        (status = 200, body = Envelope<CapabilitiesView>),
        (status = 401, description = "UNAUTHORIZED"),
    )
)]
pub async fn get_capabilities(
    State(state): State<AppState>,
    Auth(principal): Auth,
) -> Result<Envelope<CapabilitiesView>, ApiError> {
    let caps = state.services.capabilities(&principal).await?;
    let mut steps = Vec::new();
    if caps.cannot.iter().any(|r| r.unlock_url.is_some()) {
        steps.push("Give an unlock_url to your operator to lift a tier limit".to_owned());
    }
    steps.push("Check usage against limits with GET /v1/account".to_owned());
    Ok(Envelope::new(
        CapabilitiesView {
            tier: caps.tier,
            can: caps.can,
            cannot: caps.cannot,
            limits: caps.limits,
        },
        steps,
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpgradeLinkBody {
    /// `developer`, `growth` or `enterprise`: above the account's tier.
    #[schema(value_type = String, example = "developer")]
    pub target_tier: Tier,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UpgradeLinkView {
    pub url: String,
    pub expires_at: String,
    #[schema(value_type = String)]
    pub target_tier: Tier,
}

impl From<UpgradeLink> for UpgradeLinkView {
    fn from(l: UpgradeLink) -> Self {
        UpgradeLinkView {
            url: l.url,
            expires_at: l.expires_at,
            target_tier: l.target_tier,
        }
    }
}

/// A signed, single-use link to the operator's upgrade page, valid 7 days.
#[utoipa::path(
    post, path = "/v1/upgrade-link", tag = "account",
    request_body(content = UpgradeLinkBody, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 200, body = Envelope<UpgradeLinkView>),
        (status = 401, description = "UNAUTHORIZED"),
        (status = 403, description = "ACCOUNT_KEY_REQUIRED"),
        (status = 422, description = "INVALID_TARGET_TIER or VALIDATION_ERROR"),
    )
)]
pub async fn create_upgrade_link(
    State(state): State<AppState>,
    Auth(principal): Auth,
    ApiJson(body): ApiJson<UpgradeLinkBody>,
) -> Result<Envelope<UpgradeLinkView>, ApiError> {
    let link = state
        .services
        .create_upgrade_link(&principal, body.target_tier)
        .await?;
    let steps = vec![
        format!(
            "Tell your operator: I need the {} tier. Here's a direct upgrade link: {}",
            link.target_tier.label(),
            link.url
        ),
        "The link works once and expires at expires_at".to_owned(),
    ];
    Ok(Envelope::new(link.into(), steps))
}

/// A new account key (shown once), in the shape `POST /v1/inboxes` shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountKeyRotated {
    pub account_id: String,
    /// The new account key. Only returned now; the previous one no longer works.
    pub account_api_key: String,
}

/// Replace the account key (account key or an owner's login). The old key stops working
/// at once, also in other processes; inbox keys and scoped API keys are untouched.
#[utoipa::path(
    post, path = "/v1/account/rotate-key", tag = "account",
    security(("bearer" = [])),
    responses(
        (status = 200, body = Envelope<AccountKeyRotated>),
        (status = 401, description = "UNAUTHORIZED"),
        (status = 403, description = "ACCOUNT_KEY_REQUIRED or OWNER_REQUIRED"),
    )
)]
pub async fn rotate_account_key(
    State(state): State<AppState>,
    Auth(principal): Auth,
) -> Result<Envelope<AccountKeyRotated>, ApiError> {
    let rotated = state.services.rotate_account_key(&principal).await?;
    Ok(Envelope::new(
        AccountKeyRotated {
            account_id: rotated.account_id,
            account_api_key: rotated.account_api_key,
        },
        vec![
            "Save account_api_key securely — it's only returned once".to_owned(),
            "The previous account key no longer works; update every agent that used it"
                .to_owned(),
            "Inbox keys and scoped API keys still work; rotate them with POST /v1/inboxes/{id}/rotate-key and POST /v1/keys/{key_id}/rotate".to_owned(),
        ],
    ))
}

/// Replace the account SMTP password (account key or an owner's login). The old password
/// stops working at once, also for the next command of a submission session already
/// logged in with it. The answer has the shape of `GET /v1/account/smtp`.
#[utoipa::path(
    post, path = "/v1/account/smtp/rotate", tag = "account",
    security(("bearer" = [])),
    responses(
        (status = 200, body = Envelope<SmtpCredentialsView>),
        (status = 401, description = "UNAUTHORIZED"),
        (status = 403, description = "ACCOUNT_KEY_REQUIRED or OWNER_REQUIRED"),
    )
)]
pub async fn rotate_smtp(
    State(state): State<AppState>,
    Auth(principal): Auth,
) -> Result<Envelope<SmtpCredentialsView>, ApiError> {
    let rotated = state.services.rotate_smtp_password(&principal).await?;
    let port = rotated.credentials.port;
    let mut steps = vec![
        "The previous SMTP password no longer works; update every SMTP client with this one"
            .to_owned(),
        format!("Use STARTTLS on port {port} (TLS encryption required)"),
    ];
    if rotated.smtp_enabled {
        steps.push("GET /v1/account/smtp shows these credentials again".to_owned());
    } else {
        steps.push(
            "SMTP access requires a paid tier: this password logs in once the account is upgraded (POST /v1/upgrade-link)"
                .to_owned(),
        );
    }
    Ok(Envelope::new(rotated.credentials.into(), steps))
}
