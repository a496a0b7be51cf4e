//! The SMTP server (RFC 5321): the inbound MX listener and submission (587/465, AUTH), one
//! session with two sets of rules.
//!
//! - [`server`] runs the shared accept loop (`mailroom_net`: connection budgets, TLS
//!   handshake deadline, graceful shutdown) for both kinds.
//! - [`session`] is the protocol: commands parsed by `smtp-proto`, replies, DATA and BDAT,
//!   STARTTLS, the limits on size, recipients, errors and time.
//! - Nothing here decides who may receive mail or how it is stored: that is
//!   `mailroom_services` (`inbound_recipient`, `receive`), which acknowledges a message only
//!   once it is durable.

pub mod server;
pub mod session;

use std::time::Duration;

pub use server::{Kind, SmtpServer, serve};

/// Limits of the SMTP server. The defaults serve one busy peer MTA.
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    /// Name in the greeting and `Received` headers.
    pub hostname: String,
    /// Largest message accepted, in bytes (advertised as `SIZE`).
    pub max_message_size: usize,
    /// Recipients per message.
    pub max_recipients: usize,
    /// How long the server waits for the next command (RFC 5321 §4.5.3.2: 5 minutes).
    pub command_timeout: Duration,
    /// How long the server waits for the next piece of a message (RFC 5321 §4.5.3.2.5:
    /// 3 minutes per block).
    pub data_timeout: Duration,
    /// How long one message may take to arrive whole, from the `354` (or the first BDAT
    /// chunk) to its last byte. Per-read timeouts alone let a client trickle a byte every
    /// few minutes and hold a session (and its buffer) for days.
    pub message_timeout: Duration,
    /// Sessions at once, in all and per address, and the TLS handshake deadline.
    pub connections: mailroom_net::ConnLimits,
    /// Bad commands before the session is closed.
    pub max_errors: usize,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            hostname: "localhost".into(),
            max_message_size: 25 * 1024 * 1024,
            max_recipients: 100,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(180),
            message_timeout: Duration::from_secs(600),
            connections: mailroom_net::ConnLimits::new(1000, 50),
            max_errors: 10,
        }
    }
}
