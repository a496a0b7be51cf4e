//! `[tenancy]` in the file: rules of accounts and their inboxes. See
//! docs/configuration.md.

use std::time::Duration;

use anyhow::bail;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileTenancy {
    deleted_address_hold_days: Option<u64>,
}

/// The longest hold accepted (ten years): past that the number is a typo.
const MAX_HOLD_DAYS: u64 = 3650;

/// How long a deleted inbox's address stays reserved for its account: the flag or
/// `MAILROOM_TENANCY_DELETED_ADDRESS_HOLD_DAYS`, then the file, then 30 days. Zero frees
/// addresses at once.
pub(super) fn deleted_address_hold(
    flag: Option<u64>,
    file: &FileTenancy,
) -> anyhow::Result<Duration> {
    let days = flag.or(file.deleted_address_hold_days).unwrap_or(30);
    if days > MAX_HOLD_DAYS {
        bail!("tenancy.deleted_address_hold_days must be at most {MAX_HOLD_DAYS}");
    }
    Ok(Duration::from_secs(days * 86_400))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_then_file_then_thirty_days() {
        let file = FileTenancy {
            deleted_address_hold_days: Some(7),
        };
        let day = Duration::from_secs(86_400);
        assert_eq!(
            deleted_address_hold(Some(0), &file).ok(),
            Some(Duration::ZERO)
        );
        assert_eq!(deleted_address_hold(None, &file).ok(), Some(day * 7));
        assert_eq!(
            deleted_address_hold(None, &FileTenancy::default()).ok(),
            Some(day * 30)
        );
        assert!(deleted_address_hold(Some(100_000), &file).is_err());
    }
}
