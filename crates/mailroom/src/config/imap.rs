//! `[imap]` in the file: the IMAP door's connection limits and per-command budgets
//! (FETCH items, SEARCH keys, time and bytes, literals in flight). See
//! docs/configuration.md.

use std::time::Duration;

use mailroom_imap::ImapLimits;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileImap {
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    per_ip_wait_ms: Option<u64>,
    tls_handshake_timeout_secs: Option<u64>,
    max_fetch_items: Option<usize>,
    max_search_keys: Option<usize>,
    search_time_budget_ms: Option<u64>,
    search_byte_budget: Option<u64>,
    search_concurrency_per_account: Option<usize>,
    literal_budget_bytes: Option<u64>,
    literal_deadline_secs: Option<u64>,
}

/// The IMAP limits: the file over [`ImapLimits::default`]. Counts are at least 1 and
/// durations at least a millisecond, so a typo cannot turn a door into a wall.
pub(super) fn resolve(file: &FileImap) -> ImapLimits {
    let d = ImapLimits::default();
    ImapLimits {
        connections: super::conn_limits(
            &d.connections,
            file.max_connections,
            file.max_connections_per_ip,
            file.per_ip_wait_ms,
            file.tls_handshake_timeout_secs,
        ),
        max_fetch_items: file.max_fetch_items.unwrap_or(d.max_fetch_items).max(1),
        max_search_keys: file.max_search_keys.unwrap_or(d.max_search_keys).max(1),
        search_time_budget: file
            .search_time_budget_ms
            .map(|ms| Duration::from_millis(ms.max(1)))
            .unwrap_or(d.search_time_budget),
        search_byte_budget: file.search_byte_budget.unwrap_or(d.search_byte_budget),
        search_concurrency_per_account: file
            .search_concurrency_per_account
            .unwrap_or(d.search_concurrency_per_account)
            .max(1),
        literal_budget: file.literal_budget_bytes.unwrap_or(d.literal_budget),
        literal_deadline: file
            .literal_deadline_secs
            .map(|s| Duration::from_secs(s.max(1)))
            .unwrap_or(d.literal_deadline),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imap_budgets_come_from_the_file() {
        let file: FileImap = toml::from_str(
            "max_fetch_items = 10\nmax_search_keys = 0\nsearch_time_budget_ms = 250\n\
             search_byte_budget = 1000\nsearch_concurrency_per_account = 0\nliteral_budget_bytes = 5000\nliteral_deadline_secs = 7\n\
             max_connections_per_ip = 3\n",
        )
        .expect("valid [imap]");
        let l = resolve(&file);
        assert_eq!(l.max_fetch_items, 10);
        assert_eq!(l.max_search_keys, 1, "at least one key");
        assert_eq!(l.search_time_budget, Duration::from_millis(250));
        assert_eq!(l.search_byte_budget, 1000);
        assert_eq!(l.search_concurrency_per_account, 1, "at least one slot");
        assert_eq!(l.literal_budget, 5000);
        assert_eq!(l.literal_deadline, Duration::from_secs(7));
        assert_eq!(l.connections.max_per_ip, 3);
        let d = resolve(&FileImap::default());
        assert_eq!(d.max_fetch_items, 64);
        assert_eq!(d.literal_budget, 256 * 1024 * 1024);
        assert!(toml::from_str::<FileImap>("max_fetch_itmes = 1").is_err());
    }
}
