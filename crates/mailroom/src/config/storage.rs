//! `[storage]` in the file: the blob collector. The storage limits themselves are tier
//! limits (`[tiers.<name>] max_storage_bytes_per_inbox`, `max_storage_bytes_per_account`).
//! See docs/configuration.md.

use std::time::Duration;

use anyhow::bail;
use mailroom_services::CollectorConfig;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileStorage {
    collect_interval_secs: Option<u64>,
    collect_grace_secs: Option<u64>,
    collect_batch: Option<u32>,
}

pub(super) fn resolve_storage(file: &FileStorage) -> anyhow::Result<CollectorConfig> {
    let d = CollectorConfig::default();
    let c = CollectorConfig {
        interval: file
            .collect_interval_secs
            .map_or(d.interval, Duration::from_secs),
        grace: file.collect_grace_secs.map_or(d.grace, Duration::from_secs),
        batch: file.collect_batch.unwrap_or(d.batch),
    };
    if c.interval.is_zero() {
        bail!("storage.collect_interval_secs must be at least 1");
    }
    if c.batch == 0 || c.batch > 10_000 {
        bail!("storage.collect_batch must be between 1 and 10000");
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bounds() {
        let c = resolve_storage(&FileStorage::default()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c, CollectorConfig::default());
        let zero = FileStorage {
            collect_batch: Some(0),
            ..FileStorage::default()
        };
        assert!(resolve_storage(&zero).is_err());
    }
}
