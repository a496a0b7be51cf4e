//! Live event streams: an inbox's events, read from the outbox in order, waiting for new
//! ones. Every front end that streams (SSE now; webhooks read the same rows) sees the same
//! sequence, and a client that reconnects with the last id it saw misses nothing. A stream
//! whose credential stops working ends within 2 s, saying why (`revocation`).

use std::collections::VecDeque;

use mailroom_core::ids::{IdKind, is_well_formed};
use mailroom_store::EventRow;

use tokio::time::Instant;

use crate::revocation::RECHECK_INTERVAL;
use crate::{Credential, InboxSignal, Principal, ServiceError, Services, WaitSlot};

/// What an [`EventCursor`] gives next.
#[derive(Debug)]
pub enum CursorStep {
    /// The next event of the inbox.
    Event(EventRow),
    /// The stream may not go on, and why: what a new request with its credential would be
    /// answered (the key revoked or rotated, the inbox deleted, the user disabled or
    /// deleted, past a lowered tier's stream cap). The front end says so and closes.
    Ended(ServiceError),
}

/// Reads an inbox's events in order, waiting when there are none, and asking every
/// [`RECHECK_INTERVAL`] whether the credential that opened it still reads the inbox.
pub struct EventCursor {
    services: Services,
    inbox_id: String,
    after_seq: i64,
    pending: VecDeque<EventRow>,
    signal: InboxSignal,
    opened_as: Principal,
    credential: Credential,
    recheck_at: Instant,
    /// The stream's place in its key's and account's budget, for as long as it is open.
    slot: WaitSlot,
}

impl EventCursor {
    /// The next event, or why the stream ends; waits until there is one. `None` when the
    /// server shuts down; errors only when the database fails.
    pub async fn next(&mut self) -> Result<Option<CursorStep>, ServiceError> {
        loop {
            if Instant::now() >= self.recheck_at
                && let Some(end) = self.recheck().await?
            {
                return Ok(Some(CursorStep::Ended(end)));
            }
            if let Some(ev) = self.pending.pop_front() {
                self.after_seq = ev.seq;
                return Ok(Some(CursorStep::Event(ev)));
            }
            self.signal.mark_seen();
            self.services.note_waiter_poll("event_stream");
            let rows = self
                .services
                .store()
                .list_inbox_events(&self.inbox_id, self.after_seq, 100)
                .await?;
            if rows.is_empty() {
                // A change of this inbox in this process wakes us at once; other processes'
                // within the poll interval. The re-check wakes us without looking.
                let poll_at = Instant::now() + self.services.poll_interval();
                loop {
                    let recheck = tokio::select! {
                        _ = self.signal.changed() => false,
                        _ = tokio::time::sleep_until(poll_at) => false,
                        _ = tokio::time::sleep_until(self.recheck_at) => true,
                        _ = self.services.stopping() => return Ok(None),
                    };
                    if !recheck {
                        break;
                    }
                    if let Some(end) = self.recheck().await? {
                        return Ok(Some(CursorStep::Ended(end)));
                    }
                }
            }
            self.pending.extend(rows);
        }
    }

    /// Why the stream may not go on, if it may not; errors only when the database fails.
    async fn recheck(&mut self) -> Result<Option<ServiceError>, ServiceError> {
        self.recheck_at = Instant::now() + RECHECK_INTERVAL;
        let verdict = self
            .services
            .still_reads_inbox(
                &self.credential,
                &self.opened_as,
                &self.inbox_id,
                Some(&self.slot),
            )
            .await;
        match verdict {
            Ok(()) => Ok(None),
            Err(e @ ServiceError::Store(_)) => Err(e),
            Err(end) => Ok(Some(end)),
        }
    }
}

impl Services {
    /// A cursor over inbox `inbox_id`'s events: after event `last_event_id` when given (a
    /// reconnecting client), else only events from now on. `TOO_MANY_STREAMS` when the key
    /// or the account has its share of streams open.
    pub async fn inbox_events(
        &self,
        principal: &Principal,
        credential: Credential,
        inbox_id: &str,
        last_event_id: Option<&str>,
    ) -> Result<EventCursor, ServiceError> {
        self.get_inbox(principal, inbox_id).await?;
        let slot = self.http_wait_slot(principal).await?;
        // Subscribed before the position is read, so nothing recorded after it is missed.
        let signal = self.inbox_signal(inbox_id);
        let after_seq = match last_event_id {
            Some(id) => {
                let seq = if is_well_formed(IdKind::Event, id) {
                    self.store().inbox_event_seq(inbox_id, id).await?
                } else {
                    None
                };
                seq.ok_or(ServiceError::Invalid {
                    code: "INVALID_LAST_EVENT_ID",
                    field: "Last-Event-ID",
                    message: "Last-Event-ID must be the id of an event of this inbox".into(),
                })?
            }
            None => self.store().latest_event_seq().await?,
        };
        Ok(EventCursor {
            services: self.clone(),
            inbox_id: inbox_id.to_owned(),
            after_seq,
            pending: VecDeque::new(),
            signal,
            opened_as: principal.clone(),
            credential,
            recheck_at: Instant::now() + RECHECK_INTERVAL,
            slot,
        })
    }
}
