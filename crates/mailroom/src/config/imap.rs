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
        literal_budget: file.literal_budget_bytes.unwrap_or(d.literal_budget),
        literal_deadline: file
            .literal_deadline_secs
            .map(|s| Duration::from_secs(s.max(1)))
            .unwrap_or(d.literal_deadline),
    }
}
