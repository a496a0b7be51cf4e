//! Telling the operator (issue #14): an agent leaves a notice (`POST /v1/notify-operator`),
//! which is stored with an `operator.notified` event (webhooks, event streams) and answered
//! with what to tell the operator, in the shape of `upgrade_context`. The operator lists the
//! account's notices and resolves them.

use mailroom_core::event::NewEvent;
use mailroom_core::ids::{IdKind, is_well_formed, new_id};
use mailroom_core::time::{now_ms, rfc3339};
use mailroom_store::{CreateNoticeOutcome, NewNotice, NoticeRow};

use crate::{Principal, ServiceError, Services};

/// The longest `issue`, in characters.
pub const MAX_ISSUE_CHARS: usize = 2000;
/// The largest `context`, in bytes of its compact JSON.
pub const MAX_CONTEXT_BYTES: usize = 8 * 1024;
/// The longest `action_label`, in characters.
pub const MAX_ACTION_LABEL_CHARS: usize = 200;
/// How many notices an account may have open (not resolved) at once (docs/security.md).
pub const MAX_OPEN_NOTICES: u64 = 100;
/// The refusal code when an account has [`MAX_OPEN_NOTICES`] open.
pub const OPEN_NOTICES_LIMIT: &str = "OPEN_NOTICES_LIMIT";

const DEFAULT_ACTION_LABEL: &str = "Review the agent's notice";

/// What an agent asks its operator.
#[derive(Debug, Clone, Default)]
pub struct NoticeRequest {
    pub issue: String,
    pub context: Option<serde_json::Value>,
    pub action_label: Option<String>,
}

/// The answer to `POST /v1/notify-operator`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoticeCreated {
    pub notice_id: String,
    pub operator_action_url: String,
    pub operator_action_label: String,
    pub agent_script: String,
}

fn invalid(code: &'static str, field: &'static str, message: impl Into<String>) -> ServiceError {
    ServiceError::Invalid {
        code,
        field,
        message: message.into(),
    }
}

/// Checks and trims a request; nothing is stored when this refuses.
fn validate(req: NoticeRequest) -> Result<NoticeRequest, ServiceError> {
    let issue = req.issue.trim().to_owned();
    if issue.is_empty() {
        return Err(invalid(
            "INVALID_ISSUE",
            "issue",
            "issue must say what the operator should know or do",
        ));
    }
    if issue.chars().count() > MAX_ISSUE_CHARS {
        return Err(invalid(
            "INVALID_ISSUE",
            "issue",
            format!("issue is at most {MAX_ISSUE_CHARS} characters; put details in context"),
        ));
    }
    let context = match req.context {
        None | Some(serde_json::Value::Null) => None,
        Some(v @ serde_json::Value::Object(_)) => {
            if v.to_string().len() > MAX_CONTEXT_BYTES {
                return Err(invalid(
                    "INVALID_CONTEXT",
                    "context",
                    format!("context is at most {MAX_CONTEXT_BYTES} bytes of JSON"),
                ));
            }
            Some(v)
        }
        Some(_) => {
            return Err(invalid(
                "INVALID_CONTEXT",
                "context",
                "context must be a JSON object, e.g. {\"inbox_id\": \"…\"}",
            ));
        }
    };
    let action_label = match req.action_label.as_deref().map(str::trim) {
        None => None,
        Some(l) if l.is_empty() || l.chars().count() > MAX_ACTION_LABEL_CHARS => {
            return Err(invalid(
                "INVALID_ACTION_LABEL",
                "action_label",
                format!("action_label is 1 to {MAX_ACTION_LABEL_CHARS} characters"),
            ));
        }
        Some(l) => Some(l.to_owned()),
    };
    Ok(NoticeRequest {
        issue,
        context,
        action_label,
    })
}

impl Services {
    /// Where the operator reads and resolves the account's notices: the API listing on
    /// this server (docs/decisions.md).
    pub fn notices_page(&self) -> String {
        format!(
            "{}/v1/account/notices",
            self.config().public_url.trim_end_matches('/')
        )
    }

    /// `POST /v1/notify-operator`: any key of the account (a scoped key needs `api:write`).
    pub async fn notify_operator(
        &self,
        principal: &Principal,
        req: NoticeRequest,
    ) -> Result<NoticeCreated, ServiceError> {
        principal.require_scope("api:write")?;
        let req = validate(req)?;
        let account_id = principal.account_id();
        let inbox_id = match principal {
            Principal::Inbox { inbox_id, .. } => Some(inbox_id.clone()),
            _ => None,
        };
        let notice = NewNotice {
            id: new_id(IdKind::Notice),
            account_id: account_id.to_owned(),
            inbox_id,
            issue: req.issue,
            context: req.context,
            action_label: req.action_label,
            created_at: now_ms(),
        };
        let event = NewEvent::operator_notified(
            account_id,
            notice.inbox_id.as_deref(),
            serde_json::json!({
                "notice_id": notice.id,
                "inbox_id": notice.inbox_id,
                "issue": notice.issue,
                "context": notice.context,
                "action_label": notice.action_label,
                "created_at": rfc3339(notice.created_at),
            }),
        );
        match self
            .store()
            .create_notice(&notice, &event, MAX_OPEN_NOTICES)
            .await?
        {
            CreateNoticeOutcome::Created => {}
            CreateNoticeOutcome::NoAccount => {
                return Err(ServiceError::NotFound { what: "account" });
            }
            CreateNoticeOutcome::LimitReached { open } => {
                return Err(ServiceError::Forbidden {
                    code: OPEN_NOTICES_LIMIT,
                    message: format!(
                        "the account has {open} open notices (at most {MAX_OPEN_NOTICES}); \
                         the operator resolves them with POST /v1/account/notices/{{id}}/resolve"
                    ),
                });
            }
        }
        match &notice.inbox_id {
            Some(id) => self.inbox_changed(id),
            None => self.events_recorded(),
        }
        let url = self.notices_page();
        let label = notice
            .action_label
            .clone()
            .unwrap_or_else(|| DEFAULT_ACTION_LABEL.to_owned());
        Ok(NoticeCreated {
            agent_script: format!(
                "Tell your operator: {} (notice {}). Review and resolve it at {url}",
                notice.issue, notice.id
            ),
            notice_id: notice.id,
            operator_action_url: url,
            operator_action_label: label,
        })
    }

    /// `GET /v1/account/notices`: the account's notices, newest first (account key or an
    /// owner).
    pub async fn list_notices(
        &self,
        principal: &Principal,
        include_resolved: bool,
        limit: u32,
    ) -> Result<Vec<NoticeRow>, ServiceError> {
        let account_id = principal.require_account()?;
        Ok(self
            .store()
            .list_notices(Some(account_id), include_resolved, limit)
            .await?)
    }

    /// `POST /v1/account/notices/{id}/resolve`. Another account's notice is not found.
    pub async fn resolve_notice(
        &self,
        principal: &Principal,
        id: &str,
    ) -> Result<NoticeRow, ServiceError> {
        let account_id = principal.require_account()?;
        if !is_well_formed(IdKind::Notice, id) {
            return Err(ServiceError::NotFound { what: "notice" });
        }
        self.store()
            .resolve_notice(account_id, id, now_ms())
            .await?
            .ok_or(ServiceError::NotFound { what: "notice" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(issue: &str) -> NoticeRequest {
        NoticeRequest {
            issue: issue.to_owned(),
            ..NoticeRequest::default()
        }
    }

    fn field(r: Result<NoticeRequest, ServiceError>) -> &'static str {
        match r {
            Err(ServiceError::Invalid { field, .. }) => field,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn bad_input_names_its_field() {
        assert_eq!(field(validate(req("  "))), "issue");
        assert_eq!(
            field(validate(req(&"x".repeat(MAX_ISSUE_CHARS + 1)))),
            "issue"
        );
        let mut r = req("ok");
        r.context = Some(serde_json::json!([1]));
        assert_eq!(field(validate(r)), "context");
        let mut r = req("ok");
        r.context = Some(serde_json::json!({"a": "x".repeat(MAX_CONTEXT_BYTES)}));
        assert_eq!(field(validate(r)), "context");
        let mut r = req("ok");
        r.action_label = Some(" ".into());
        assert_eq!(field(validate(r)), "action_label");
    }

    #[test]
    fn good_input_is_trimmed() {
        let mut r = req("  Please verify the domain  ");
        r.context = Some(serde_json::Value::Null);
        r.action_label = Some(" Verify ".into());
        let ok = validate(r).ok();
        let ok = ok.as_ref();
        assert_eq!(
            ok.map(|r| r.issue.as_str()),
            Some("Please verify the domain")
        );
        assert_eq!(ok.and_then(|r| r.context.clone()), None);
        assert_eq!(ok.and_then(|r| r.action_label.as_deref()), Some("Verify"));
    }
}
