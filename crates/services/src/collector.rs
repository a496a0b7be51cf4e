//! The blob collector: a background task that removes what nobody uses any more, in
//! bounded batches — finished queue entries whose Sent copy was deleted, and blobs that no
//! message and no queue entry refers to (expunged mail, deleted inboxes and mailboxes).

use std::time::Duration;

use mailroom_store::Collected;
use tokio_util::sync::CancellationToken;

use crate::{ServiceError, Services};

/// How the collector runs (`[storage]` in the configuration file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CollectorConfig {
    /// Time between rounds.
    pub interval: Duration,
    /// How old an unused blob must be before it is removed, so that a blob written by a
    /// delivery that has not committed yet is never taken.
    pub grace: Duration,
    /// Most blobs (and most queue entries) removed per transaction.
    pub batch: u32,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig {
            interval: Duration::from_secs(300),
            grace: Duration::from_secs(3600),
            batch: 500,
        }
    }
}

/// A round never runs more batches than this, so one round stays short; the rest waits for
/// the next round.
const MAX_BATCHES_PER_ROUND: usize = 100;

impl Services {
    /// One round of collection: batches until one comes back short.
    pub async fn collect_garbage(
        &self,
        config: &CollectorConfig,
    ) -> Result<Collected, ServiceError> {
        let grace = i64::try_from(config.grace.as_millis()).unwrap_or(i64::MAX);
        let cutoff = mailroom_core::time::now_ms().saturating_sub(grace);
        let mut total = Collected::default();
        for _ in 0..MAX_BATCHES_PER_ROUND {
            let done = self.store().collect_garbage(cutoff, config.batch).await?;
            total.outbound += done.outbound;
            total.blobs += done.blobs;
            total.bytes += done.bytes;
            if done.blobs < u64::from(config.batch) && done.outbound < u64::from(config.batch) {
                break;
            }
        }
        if total.blobs > 0 {
            metrics::counter!("mailroom_blobs_collected_total").increment(total.blobs);
            metrics::counter!("mailroom_blob_bytes_collected_total").increment(total.bytes);
        }
        Ok(total)
    }

    /// Runs [`Services::collect_garbage`] every `config.interval` until `stop`.
    pub async fn run_collector(self, config: CollectorConfig, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(config.interval) => {}
                _ = stop.cancelled() => return,
            }
            match self.collect_garbage(&config).await {
                Ok(done) if done.blobs > 0 || done.outbound > 0 => tracing::info!(
                    blobs = done.blobs,
                    bytes = done.bytes,
                    queue_entries = done.outbound,
                    "collected unused blobs"
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "blob collection failed; retrying next round"),
            }
        }
    }
}
