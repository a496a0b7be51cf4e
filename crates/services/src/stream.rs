//! Live event streams: an inbox's events, read from the outbox in order, waiting for new
//! ones. Every front end that streams (SSE now; webhooks read the same rows) sees the same
//! sequence, and a client that reconnects with the last id it saw misses nothing.

use std::collections::VecDeque;

use mailroom_core::ids::{IdKind, is_well_formed};
use mailroom_store::EventRow;

use crate::{InboxSignal, Principal, ServiceError, Services, WaitSlot};

/// Reads an inbox's events in order, waiting when there are none.
pub struct EventCursor {
    services: Services,
    inbox_id: String,
    after_seq: i64,
    pending: VecDeque<EventRow>,
    signal: InboxSignal,
    /// The stream's place in its key's and account's budget, for as long as it is open.
    _slot: WaitSlot,
}

impl EventCursor {
    /// The next event; waits until there is one. `None` when the server shuts down; errors
    /// only when the database fails.
    pub async fn next(&mut self) -> Result<Option<EventRow>, ServiceError> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                self.after_seq = ev.seq;
                return Ok(Some(ev));
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
                // within the poll interval.
                tokio::select! {
                    _ = self.signal.changed() => {}
                    _ = tokio::time::sleep(self.services.poll_interval()) => {}
                    _ = self.services.stopping() => return Ok(None),
                }
            }
            self.pending.extend(rows);
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
        inbox_id: &str,
        last_event_id: Option<&str>,
    ) -> Result<EventCursor, ServiceError> {
        self.get_inbox(principal, inbox_id).await?;
        let slot = self.http_wait_slot(principal)?;
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
            _slot: slot,
        })
    }
}
