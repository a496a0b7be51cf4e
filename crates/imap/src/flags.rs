//! Group commit for flag changes: every session's STORE (and the `\Seen` a FETCH sets)
//! goes to one task that writes whatever is waiting in one transaction, so concurrent
//! sessions share one fsync instead of queueing behind one each (the same idea as the
//! store's delivery committer). A change is answered only after its transaction commits.

use mailroom_store::{FlagChange, FlagOutcome, Store, StoreError};
use tokio::sync::{mpsc, oneshot};

/// Most changes one transaction takes.
const MAX_BATCH: usize = 256;

struct Job {
    change: FlagChange,
    reply: oneshot::Sender<Result<FlagOutcome, StoreError>>,
}

pub struct FlagWriter {
    tx: mpsc::Sender<Job>,
}

impl FlagWriter {
    /// Starts the committer task (needs a Tokio runtime).
    pub fn start(store: Store) -> FlagWriter {
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(committer(store, rx));
        FlagWriter { tx }
    }

    /// Writes one change; returns once it is durable.
    pub async fn set(&self, change: FlagChange) -> Result<FlagOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job { change, reply })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

async fn committer(store: Store, mut rx: mpsc::Receiver<Job>) {
    while let Some(first) = rx.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        metrics::histogram!("mailroom_imap_flag_commit_size").record(jobs.len() as f64);
        let changes: Vec<FlagChange> = jobs.iter().map(|j| j.change.clone()).collect();
        match store.imap_set_flags_batch(&changes).await {
            Ok(outcomes) => {
                for (job, outcome) in jobs.into_iter().zip(outcomes) {
                    let _ = job.reply.send(Ok(outcome));
                }
            }
            Err(e) if jobs.len() > 1 => {
                // One bad change must not fail the others: each on its own.
                tracing::warn!(error = %e, batch = jobs.len(), "IMAP flag batch failed; retrying one by one");
                for job in jobs {
                    let result = store
                        .imap_set_flags_batch(std::slice::from_ref(&job.change))
                        .await
                        .and_then(|mut o| {
                            o.pop()
                                .ok_or_else(|| StoreError::Corrupt("no outcome".into()))
                        });
                    let _ = job.reply.send(result);
                }
            }
            Err(e) => {
                if let Some(job) = jobs.pop() {
                    let _ = job.reply.send(Err(e));
                }
            }
        }
    }
}
