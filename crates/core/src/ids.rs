//! Identifiers of the things Mailroom stores.
//!
//! Ids are random, lowercase, prefixed with their kind (`acc_…`, `inbox_…`) so that a
//! human reading a log line, or an agent reading an answer, knows what an id names. They
//! carry no sequence, so they reveal nothing about how many other tenants exist.

use rand::Rng;

/// The kinds of id, with the prefix each carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    Account,
    Inbox,
    Key,
    Event,
    Message,
    Thread,
    Webhook,
    Delivery,
    Attempt,
    /// A message in the outbound queue.
    Queued,
    /// An operator user (seed 004).
    User,
    /// A refresh-token family.
    TokenFamily,
    /// A notice an agent left for its operator (`POST /v1/notify-operator`).
    Notice,
}

impl IdKind {
    pub const fn prefix(self) -> &'static str {
        match self {
            IdKind::Account => "acc_",
            IdKind::Inbox => "inbox_",
            IdKind::Key => "key_",
            IdKind::Event => "evt_",
            IdKind::Message => "msg_",
            IdKind::Thread => "thr_",
            IdKind::Webhook => "wh_",
            IdKind::Delivery => "dlv_",
            IdKind::Attempt => "wha_",
            IdKind::Queued => "q_",
            IdKind::User => "usr_",
            IdKind::TokenFamily => "tf_",
            IdKind::Notice => "ntc_",
        }
    }
}

const ID_ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
const ID_RANDOM_LEN: usize = 20;

/// A new random id of the given kind: the prefix and 20 characters of `[0-9a-z]`
/// (about 103 bits of randomness).
pub fn new_id(kind: IdKind) -> String {
    let mut rng = rand::rng();
    let mut id = String::with_capacity(kind.prefix().len() + ID_RANDOM_LEN);
    id.push_str(kind.prefix());
    for _ in 0..ID_RANDOM_LEN {
        id.push(ID_ALPHABET[rng.random_range(0..ID_ALPHABET.len())] as char);
    }
    id
}

/// Whether `s` has the shape of an id of this kind. Used to answer a malformed id with the
/// same 404 as an unknown one without asking the database.
pub fn is_well_formed(kind: IdKind, s: &str) -> bool {
    match s.strip_prefix(kind.prefix()) {
        Some(rest) => {
            !rest.is_empty()
                && rest.len() <= 64
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_prefix_and_are_well_formed() {
        let a = new_id(IdKind::Account);
        assert!(a.starts_with("acc_"));
        assert_eq!(a.len(), 4 + ID_RANDOM_LEN);
        assert!(is_well_formed(IdKind::Account, &a));
        assert!(!is_well_formed(IdKind::Inbox, &a));
        assert_ne!(a, new_id(IdKind::Account));
    }

    #[test]
    fn malformed_ids_are_rejected() {
        for bad in [
            "",
            "acc_",
            "acc_ABC",
            "acc_a b",
            "inbox_x",
            "acc_../../etc",
            "acc_é",
        ] {
            assert!(!is_well_formed(IdKind::Account, bad), "{bad:?}");
        }
    }
}
