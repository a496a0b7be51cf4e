//! LIST and LSUB (RFC 9051 §6.3.9): the mailboxes whose names match a pattern. The
//! pattern is the client's (up to a whole command line of `*` and `%`), so matching is
//! dynamic programming over (pattern, name) positions: O(pattern × name) whatever the
//! pattern, where the backtracking it replaces was exponential in the number of wildcards.

use mailroom_store::ImapMailbox;

use crate::fmt::mailbox as mailbox_name;
use crate::session::{Out, Session};

/// Does `name` match a LIST pattern (`*` anything, `%` anything but the delimiter `/`)?
pub(crate) fn pattern_matches(pattern: &[u8], name: &[u8]) -> bool {
    // `prev[j]`: the pattern so far matches `name[..j]`.
    let mut prev = vec![false; name.len() + 1];
    prev[0] = true;
    let mut cur = vec![false; name.len() + 1];
    for (i, &p) in pattern.iter().enumerate() {
        // A run of `*` is one `*`.
        if p == b'*' && i > 0 && pattern[i - 1] == b'*' {
            continue;
        }
        match p {
            b'*' | b'%' => {
                cur[0] = prev[0];
                for j in 1..=name.len() {
                    cur[j] = prev[j] || (cur[j - 1] && (p == b'*' || name[j - 1] != b'/'));
                }
            }
            c => {
                cur[0] = false;
                for j in 1..=name.len() {
                    cur[j] = prev[j - 1] && name[j - 1] == c;
                }
            }
        }
        std::mem::swap(&mut prev, &mut cur);
        if !prev.contains(&true) {
            return false;
        }
    }
    prev[name.len()]
}

impl Session {
    pub(crate) async fn list(
        &mut self,
        reference: &str,
        pattern: &[u8],
        lsub: bool,
        out: &mut Out,
    ) -> Result<(), mailroom_store::StoreError> {
        if pattern.is_empty() {
            // The hierarchy delimiter and root (RFC 9051 §6.3.9).
            out.line("* LIST (\\Noselect) \"/\" \"\"");
            return Ok(());
        }
        let mut full = reference.as_bytes().to_vec();
        full.extend_from_slice(pattern);
        let mailboxes = self
            .server
            .services
            .store()
            .imap_mailboxes(&self.inbox_id())
            .await?;
        let names: Vec<&str> = mailboxes.iter().map(|m| m.name.as_str()).collect();
        // INBOX first, then by name.
        let mut ordered: Vec<&ImapMailbox> = mailboxes.iter().collect();
        ordered.sort_by_key(|m| (m.name != "INBOX", m.name.clone()));
        for mb in ordered {
            let matched = if mb.name == "INBOX" {
                let mut upper = full.clone();
                // INBOX matches case-insensitively.
                if upper.len() >= 5 && upper[..5].eq_ignore_ascii_case(b"INBOX") {
                    upper[..5].copy_from_slice(b"INBOX");
                }
                pattern_matches(&upper, b"INBOX")
            } else {
                pattern_matches(&full, mb.name.as_bytes())
            };
            if !matched || (lsub && !mb.subscribed) {
                continue;
            }
            let child_prefix = format!("{}/", mb.name);
            let children = names.iter().any(|n| n.starts_with(&child_prefix));
            let mut attrs = vec![if children {
                "\\HasChildren"
            } else {
                "\\HasNoChildren"
            }];
            if let Some(s) = mb.special_use.as_deref() {
                attrs.push(s);
            }
            out.line(&format!(
                "* {} ({}) \"/\" {}",
                if lsub { "LSUB" } else { "LIST" },
                attrs.join(" "),
                mailbox_name(&mb.name)
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_patterns() {
        assert!(pattern_matches(b"*", b"a/b"));
        assert!(!pattern_matches(b"%", b"a/b"));
        assert!(pattern_matches(b"a/%", b"a/b"));
        assert!(pattern_matches(b"S%", b"Sent"));
        assert!(!pattern_matches(b"S%", b"Trash"));
        assert!(pattern_matches(b"", b""));
        assert!(!pattern_matches(b"", b"a"));
        assert!(pattern_matches(b"%/%", b"a/b"));
        assert!(!pattern_matches(b"%/%", b"a/b/c"));
        assert!(pattern_matches(b"%/*", b"a/b/c"));
        assert!(pattern_matches(b"a**b", b"ab"));
        assert!(!pattern_matches(b"a%b", b"a/b"));
    }

    /// With backtracking this pattern took time exponential in its wildcards against a name
    /// that almost matches; the assertion is on the answer (it must come at all).
    #[test]
    fn pathological_patterns_are_answered() {
        let pattern = b"*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b";
        let name = vec![b'a'; 255];
        assert!(!pattern_matches(pattern, &name));
        let mut hit = name.clone();
        hit.push(b'b');
        assert!(pattern_matches(pattern, &hit));
        let percent = b"%a%a%a%a%a%a%a%a%a%a%a%a%a%a%a%a%a%a%a%a%b";
        assert!(!pattern_matches(percent, &name));
        assert!(pattern_matches(percent, &hit));
        // A whole line of wildcards against many names.
        let long: Vec<u8> = b"*%".repeat(10_000);
        assert!(pattern_matches(&long, &name));
    }
}
