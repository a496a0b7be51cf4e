//! IDLE (RFC 2177): the session waits for changes to the selected mailbox (or just for
//! DONE), holding a place in the inbox's and the account's budget of waiters.

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, BufReader};
use tokio_util::sync::CancellationToken;

use crate::conn;
use crate::session::{Done, Next, Out, REVOKED, Session};

impl Session {
    /// IDLE (RFC 2177): reports changes as they come, woken by the inbox's change signal
    /// or the poll interval, until DONE, the autologout, a revoked key or shutdown.
    pub(crate) async fn idle<S: AsyncRead + AsyncWrite + Unpin + Send>(
        &mut self,
        tag: &str,
        conn: &mut BufReader<S>,
        out: &mut Out,
        stop: &CancellationToken,
    ) -> Done {
        // IDLE holds a place in the inbox's and the account's budget of waiters.
        let slot = match &self.user {
            Some(u) => self
                .server
                .services
                .imap_wait_slot(&u.account_id, &u.inbox_id)
                .await
                .map_err(|e| e.to_string()),
            None => Err("log in first".to_owned()),
        };
        let slot = match slot {
            Ok(slot) => slot,
            Err(why) => {
                out.line(&format!("{tag} NO [LIMIT] {why}"));
                return Ok(Next::Continue);
            }
        };
        out.line("+ idling");
        let poll = self.server.services.poll_interval();
        let deadline = tokio::time::Instant::now() + self.server.idle_timeout;
        loop {
            if !self.still_authorized().await {
                out.line(REVOKED);
                return Ok(Next::Logout);
            }
            // A lowered tier may leave this IDLE past the account's cap: the newest go.
            if let Err(e @ mailroom_services::ServiceError::Busy { .. }) =
                self.server.services.waiter_still_fits(&slot).await
            {
                out.line(&format!("* BYE [LIMIT] {e}"));
                return Ok(Next::Logout);
            }
            self.server.services.note_waiter_poll("imap_idle");
            if let Err(e) = self.sync(out, true).await {
                tracing::warn!(error = %e, "IMAP IDLE: cannot check the mailbox");
            }
            out.flush(conn.get_mut()).await?;
            tokio::select! {
                r = conn.fill_buf() => {
                    if r.map(|b| b.is_empty()).unwrap_or(true) {
                        return Ok(Next::Logout);
                    }
                    break;
                }
                _ = async {
                    match self.signal.as_mut() {
                        Some(s) => s.changed().await,
                        None => std::future::pending().await,
                    }
                } => {}
                _ = tokio::time::sleep(poll) => {}
                _ = tokio::time::sleep_until(deadline) => {
                    out.line("* BYE autologout: idle for too long");
                    return Ok(Next::Logout);
                }
                _ = stop.cancelled() => {
                    out.line("* BYE server shutting down");
                    return Ok(Next::Logout);
                }
            }
        }
        let mut line = Vec::new();
        match tokio::time::timeout(
            std::time::Duration::from_secs(60),
            conn::read_line(conn, &mut line),
        )
        .await
        {
            Ok(Ok(true)) => {}
            _ => return Ok(Next::Logout),
        }
        if String::from_utf8_lossy(&line)
            .trim()
            .eq_ignore_ascii_case("DONE")
        {
            if let Err(e) = self.sync(out, true).await {
                tracing::warn!(error = %e, "IMAP IDLE: cannot check the mailbox");
            }
            out.line(&format!("{tag} OK IDLE terminated"));
        } else {
            let _ = self.bad(out, tag, "expected DONE to end IDLE");
        }
        Ok(Next::Continue)
    }
}
