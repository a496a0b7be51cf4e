//! The commands whose cost depends on what the client asks for, one module each (FETCH,
//! SEARCH, LIST), so that each carries its own budget next to its code.

pub(crate) mod fetch;
pub(crate) mod list;
pub(crate) mod search;
pub(crate) mod section;
