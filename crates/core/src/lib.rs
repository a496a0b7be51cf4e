//! Domain types and rules of Mailroom that need no I/O.
//!
//! Everything here is pure: it can be called from the HTTP API, the mail protocol servers and
//! the CLI alike, and tested without a server. Rules that need the database live in
//! `mailroom-services`, which builds on these.

pub mod event;
pub mod extract;
pub mod ids;
pub mod netaddr;
pub mod secret;
pub mod tier;
pub mod time;
pub mod username;

pub use tier::{Tier, TierLimits, Tiers};
