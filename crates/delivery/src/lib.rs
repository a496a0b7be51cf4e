//! The durable outbound queue: MX resolution, DKIM signing, retries, DSNs. Arrives with issue #4.
//!
//! The crate exists so that the workspace has its final shape from the start (DESIGN.md):
//! protocol crates depend on `mailroom-core` and `mailroom-store` only, never on each other.
