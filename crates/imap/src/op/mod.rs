//! The commands, one module per command family (in the manner of Stalwart's `op/`): each
//! is an `impl Session` block whose `*_cmd` methods take the fields of one parsed
//! `CommandBody` variant, so `Session::handle` stays a table. FETCH, SEARCH and LIST also
//! carry their own budgets next to their code.

pub(crate) mod append;
pub(crate) mod auth;
pub(crate) mod basic;
pub(crate) mod copy;
pub(crate) mod expunge;
pub(crate) mod fetch;
pub(crate) mod idle;
pub(crate) mod list;
pub(crate) mod mailbox;
pub(crate) mod search;
pub(crate) mod section;
pub(crate) mod select;
pub(crate) mod store;
