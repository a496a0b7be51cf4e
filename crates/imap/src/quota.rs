//! IMAP QUOTA (RFC 9208) over the storage rule of `mailroom_services::storage`:
//! `GETQUOTAROOT`, `GETQUOTA` and a refused `SETQUOTA`, and the `NO [OVERQUOTA]` answer of
//! APPEND and COPY.
//!
//! Every mailbox of an inbox has one quota root, `""`, whose one resource is STORAGE in
//! units of 1024 bytes: of the inbox's and the account's limits, the one with less room
//! left. An inbox without limits has no quota root.

use imap_codec::imap_types::command::CommandBody;
use imap_codec::imap_types::core::AString;
use mailroom_net::{Door, refused};
use mailroom_services::{ServiceError, Services, StorageMeter};
use mailroom_store::{StorageLimit, StorageScope, StoreError};

use crate::session::{Done, Next, Out, Session, mailbox_str};

/// The one quota root of an inbox.
const ROOT: &str = "";

/// `QUOTA QUOTA=RES-STORAGE` for the CAPABILITY line.
pub(crate) const CAPABILITIES: &str = "QUOTA QUOTA=RES-STORAGE";

/// The storage limits of an account (for the copies APPEND and COPY store).
pub(crate) async fn storage_limit(
    services: &Services,
    account_id: &str,
) -> Result<StorageLimit, StoreError> {
    Ok(match services.store().get_account(account_id).await? {
        Some(account) => services.storage_limit(account.tier),
        None => StorageLimit::UNLIMITED,
    })
}

/// The answer to a write over the storage limit: `NO [OVERQUOTA]`, counted.
pub(crate) fn over_quota(out: &mut Out, tag: &str, scope: StorageScope) {
    refused(Door::Imap, "storage_quota");
    out.line(&format!(
        "{tag} NO [OVERQUOTA] the {} storage limit is reached; expunge mail or ask for a larger plan",
        scope.as_str()
    ));
}

fn astring(s: &AString<'_>) -> String {
    String::from_utf8_lossy(s.as_ref()).into_owned()
}

/// `* QUOTA "" (STORAGE used limit)` in KiB, usage rounded up, the limit down.
fn quota_line(meter: &StorageMeter) -> Option<String> {
    let limit = meter.limit_bytes? / 1024;
    let used = meter.used_bytes.div_ceil(1024);
    Some(format!("* QUOTA \"{ROOT}\" (STORAGE {used} {limit})"))
}

/// Runs GETQUOTAROOT, GETQUOTA or SETQUOTA for the inbox `inbox_id`. `mailbox` is the
/// GETQUOTAROOT mailbox's name as the session resolves it (`INBOX` for any case of it).
pub(crate) async fn command(
    services: &Services,
    inbox_id: &str,
    tag: &str,
    body: &CommandBody<'_>,
    mailbox: Option<&str>,
    out: &mut Out,
) -> Result<(), StoreError> {
    match body {
        CommandBody::SetQuota { .. } => {
            out.line(&format!(
                "{tag} NO [NOPERM] quotas come from the account's plan and cannot be set here"
            ));
        }
        CommandBody::GetQuota { root } => {
            let meter = meter(services, inbox_id).await?;
            match quota_line(&meter) {
                Some(line) if astring(root) == ROOT => {
                    out.line(&line);
                    out.line(&format!("{tag} OK GETQUOTA completed"));
                }
                _ => out.line(&format!("{tag} NO [NONEXISTENT] no such quota root")),
            }
        }
        CommandBody::GetQuotaRoot { .. } => {
            let name = mailbox.unwrap_or("INBOX");
            if services
                .store()
                .imap_mailbox(inbox_id, name)
                .await?
                .is_none()
            {
                out.line(&format!("{tag} NO [NONEXISTENT] no such mailbox"));
                return Ok(());
            }
            let meter = meter(services, inbox_id).await?;
            let quoted = crate::fmt::mailbox(name);
            match quota_line(&meter) {
                Some(line) => {
                    out.line(&format!("* QUOTAROOT {quoted} \"{ROOT}\""));
                    out.line(&line);
                }
                None => out.line(&format!("* QUOTAROOT {quoted}")),
            }
            out.line(&format!("{tag} OK GETQUOTAROOT completed"));
        }
        _ => out.line(&format!("{tag} BAD not a QUOTA command")),
    }
    Ok(())
}

impl Session {
    /// GETQUOTA, GETQUOTAROOT or SETQUOTA (`body`) for the logged-in inbox.
    pub(crate) async fn quota_cmd(
        &mut self,
        tag: &str,
        body: &CommandBody<'_>,
        out: &mut Out,
    ) -> Done {
        let mailbox = match body {
            CommandBody::GetQuotaRoot { mailbox } => Some(mailbox_str(mailbox)),
            _ => None,
        };
        let inbox_id = self.inbox_id();
        command(
            &self.server.services,
            &inbox_id,
            tag,
            body,
            mailbox.as_deref(),
            out,
        )
        .await?;
        Ok(Next::Continue)
    }
}

async fn meter(services: &Services, inbox_id: &str) -> Result<StorageMeter, StoreError> {
    match services.storage_report(inbox_id).await {
        Ok(report) => Ok(report.tightest()),
        Err(ServiceError::Store(e)) => Err(e),
        Err(_) => Ok(StorageMeter {
            used_bytes: 0,
            limit_bytes: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_is_in_kib() {
        let m = StorageMeter {
            used_bytes: 1025,
            limit_bytes: Some(10 * 1024 + 1000),
        };
        assert_eq!(
            quota_line(&m).as_deref(),
            Some("* QUOTA \"\" (STORAGE 2 10)")
        );
        let unlimited = StorageMeter {
            used_bytes: 5,
            limit_bytes: None,
        };
        assert_eq!(quota_line(&unlimited), None);
    }
}
