//! The SMTP server (RFC 5321): the inbound MX listener today; submission (AUTH, issue #4)
//! will run the same session with other rules.
//!
//! - [`server`] accepts connections, enforces the connection limits and graceful shutdown.
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
    /// How long the server waits for the next piece of a message (RFC 5321: 3 minutes
    /// per block; 10 minutes here for slow links).
    pub data_timeout: Duration,
    /// Sessions open at once, in all.
    pub max_connections: usize,
    /// Sessions open at once from one IP address.
    pub max_connections_per_ip: usize,
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
            data_timeout: Duration::from_secs(600),
            max_connections: 1000,
            max_connections_per_ip: 50,
            max_errors: 10,
        }
    }
}
