//! The accept loop every mail front end runs: accept, admit through the door's [`Gate`],
//! hand the connection to the protocol, and on shutdown give sessions in flight a grace
//! period.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::{Gate, Permit, Refused, refused};

/// How long the one-line refusal to a connection over the budget may take to write.
const REFUSAL_WRITE: Duration = Duration::from_secs(5);

/// Accepts connections on `listener` until `shutdown`, then waits up to `grace` for the
/// sessions in flight.
///
/// Each accepted connection is admitted in its own task (admission may wait a moment for a
/// slot, and must not hold up the accept loop). A refused connection gets the one line
/// `refusal` writes for that reason, in the protocol's words, and is counted in
/// `mailroom_refusals_total`; an admitted one goes to `handler` with its [`Permit`].
pub async fn serve<H, F>(
    listener: TcpListener,
    gate: Arc<Gate>,
    shutdown: CancellationToken,
    grace: Duration,
    refusal: fn(Refused) -> String,
    handler: H,
) where
    H: Fn(TcpStream, SocketAddr, Permit) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let door = gate.door();
    let handler = Arc::new(handler);
    let tracker = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let (mut stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(%door, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let gate = gate.clone();
        let handler = handler.clone();
        tracker.spawn(async move {
            match gate.admit(peer.ip()).await {
                Ok(permit) => handler(stream, peer, permit).await,
                Err(why) => {
                    refused(door, why.reason());
                    let line = refusal(why);
                    let _ = tokio::time::timeout(REFUSAL_WRITE, stream.write_all(line.as_bytes()))
                        .await;
                }
            }
        });
    }
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(%door, "sessions still open after the grace period; closing them");
    }
}
