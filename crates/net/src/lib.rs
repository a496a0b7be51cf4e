//! What every Mailroom mail front end shares, written once: the accept loop with its
//! connection budgets ([`gate`]), the TLS handshake with a deadline ([`tls`]), SASL PLAIN
//! and LOGIN decoding ([`sasl`]), and the one counter every refusal increments
//! ([`refused`]).
//!
//! SMTP, submission, IMAP and POP3 each used to have their own accept loop, connection
//! counting, handshake timeout and PLAIN decoding, and they drifted apart (POP3 had no
//! connection cap and no timeout on its AUTH continuation). Now each front end only says
//! how to refuse in its protocol and what to do with an admitted connection.

pub mod gate;
pub mod listener;
pub mod sasl;
pub mod tls;

pub use gate::{AddrKey, ConnLimits, Gate, Permit, Refused};
pub use listener::serve;

/// A door into the server: the `door` label of every refusal and connection metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Door {
    /// Inbound SMTP (MX, port 25).
    Smtp,
    /// SMTP submission (587 and 465).
    Submission,
    Imap,
    Pop3,
    /// The HTTP API.
    Http,
    /// Outgoing webhook deliveries.
    Webhooks,
    /// Event streams and long polls of the HTTP API.
    Streams,
}

impl Door {
    pub fn as_str(&self) -> &'static str {
        match self {
            Door::Smtp => "smtp",
            Door::Submission => "submission",
            Door::Imap => "imap",
            Door::Pop3 => "pop3",
            Door::Http => "http",
            Door::Webhooks => "webhooks",
            Door::Streams => "streams",
        }
    }
}

impl std::fmt::Display for Door {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counts a refusal: `mailroom_refusals_total{door, reason}`. Every budget that says no
/// calls this, so one query shows what the server is refusing and why.
pub fn refused(door: Door, reason: &'static str) {
    metrics::counter!("mailroom_refusals_total", "door" => door.as_str(), "reason" => reason)
        .increment(1);
}
