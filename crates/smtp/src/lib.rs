//! The SMTP server: inbound MX (port 25) and submission (587/465), one session state machine for both. Arrives with issue #3 (receive) and #4 (send).
//!
//! The crate exists so that the workspace has its final shape from the start (DESIGN.md):
//! protocol crates depend on `mailroom-core` and `mailroom-store` only, never on each other.
