//! The POP3 server over the shared store. Arrives with issue #6.
//!
//! The crate exists so that the workspace has its final shape from the start (DESIGN.md):
//! protocol crates depend on `mailroom-core` and `mailroom-store` only, never on each other.
