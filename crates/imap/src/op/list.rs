//! LIST and LSUB (RFC 9051 §6.3.9): the mailboxes whose names match a pattern. The
//! pattern is the client's (up to a whole command line of `*` and `%`), so matching is
//! dynamic programming over (pattern, name) positions: O(pattern × name) whatever the
//! pattern, where the backtracking it replaces was exponential in the number of wildcards.

use imap_codec::imap_types::mailbox::{ListMailbox, Mailbox};
use mailroom_store::ImapMailbox;

use crate::fmt::mailbox as mailbox_name;
use crate::session::{Done, Next, Out, Session, mailbox_str};

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

/// Whether a mailbox name matches the full pattern (reference + pattern); INBOX in any
/// case (RFC 9051 §5.1).
fn name_matches(full: &[u8], name: &str) -> bool {
    if name == "INBOX" {
        let mut upper = full.to_vec();
        if upper.len() >= 5 && upper[..5].eq_ignore_ascii_case(b"INBOX") {
            upper[..5].copy_from_slice(b"INBOX");
        }
        pattern_matches(&upper, b"INBOX")
    } else {
        pattern_matches(full, name.as_bytes())
    }
}

/// The names LSUB lists for a `%` pattern although they are not subscribed: the parents
/// of subscribed mailboxes where the `%` stops, i.e. the parent matches and the subscribed
/// mailbox below it does not. RFC 3501 §6.3.9: with "foo/bar" subscribed and "foo" not,
/// `LSUB "" "%"` "must return foo, not foo/bar, in the LSUB response, and it MUST be
/// flagged with the \Noselect attribute" (whether or not "foo" exists).
fn unsubscribed_parents(full: &[u8], mailboxes: &[ImapMailbox]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if !full.contains(&b'%') {
        return out;
    }
    let subscribed = |n: &str| mailboxes.iter().any(|m| m.subscribed && m.name == n);
    for mb in mailboxes.iter().filter(|m| m.subscribed) {
        if name_matches(full, &mb.name) {
            continue;
        }
        for (i, _) in mb.name.match_indices('/') {
            let parent = &mb.name[..i];
            if !parent.is_empty()
                && !subscribed(parent)
                && name_matches(full, parent)
                && !out.iter().any(|p| p == parent)
            {
                out.push(parent.to_owned());
            }
        }
    }
    out
}

impl Session {
    /// LIST, or LSUB when `lsub` (only subscribed mailboxes, and their unsubscribed
    /// parents as `\Noselect`).
    pub(crate) async fn list_cmd(
        &mut self,
        tag: &str,
        reference: &Mailbox<'_>,
        wildcard: &ListMailbox<'_>,
        lsub: bool,
        out: &mut Out,
    ) -> Done {
        let reference = mailbox_str(reference);
        let pattern = match wildcard {
            ListMailbox::Token(t) => t.as_ref().to_vec(),
            ListMailbox::String(s) => s.as_ref().to_vec(),
        };
        self.list(&reference, &pattern, lsub, out).await?;
        let name = if lsub { "LSUB" } else { "LIST" };
        out.line(&format!("{tag} OK {name} completed"));
        Ok(Next::Continue)
    }

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
        let has_children = |name: &str| {
            let prefix = format!("{name}/");
            mailboxes.iter().any(|m| m.name.starts_with(&prefix))
        };
        // (name, attributes): the matching mailboxes, and for LSUB the parents it lists.
        let mut rows: Vec<(String, Vec<&str>)> = Vec::new();
        for mb in &mailboxes {
            if !name_matches(&full, &mb.name) || (lsub && !mb.subscribed) {
                continue;
            }
            let mut attrs = vec![if has_children(&mb.name) {
                "\\HasChildren"
            } else {
                "\\HasNoChildren"
            }];
            if let Some(s) = mb.special_use.as_deref() {
                attrs.push(s);
            }
            rows.push((mb.name.clone(), attrs));
        }
        if lsub {
            for parent in unsubscribed_parents(&full, &mailboxes) {
                rows.push((parent, vec!["\\Noselect", "\\HasChildren"]));
            }
        }
        // INBOX first, then by name.
        rows.sort_by(|a, b| (a.0 != "INBOX", &a.0).cmp(&(b.0 != "INBOX", &b.0)));
        for (name, attrs) in rows {
            out.line(&format!(
                "* {} ({}) \"/\" {}",
                if lsub { "LSUB" } else { "LIST" },
                attrs.join(" "),
                mailbox_name(&name)
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

    #[test]
    fn lsub_lists_the_unsubscribed_parent_where_percent_stops() {
        let mb = |name: &str, subscribed| ImapMailbox {
            id: name.into(),
            name: name.into(),
            special_use: None,
            uidvalidity: 1,
            uidnext: 1,
            highestmodseq: 1,
            subscribed,
            first_recent_uid: 1,
        };
        let boxes = vec![
            mb("box", false),
            mb("box/test", true),
            mb("box/test2", false),
            mb("box/test2/test", true),
            mb("box/test3/test3", true),
        ];
        assert_eq!(
            unsubscribed_parents(b"box/%", &boxes),
            vec!["box/test2".to_owned(), "box/test3".to_owned()]
        );
        assert_eq!(unsubscribed_parents(b"%", &boxes), vec!["box".to_owned()]);
        // `*` reaches the subscribed mailboxes themselves.
        assert!(unsubscribed_parents(b"box/*", &boxes).is_empty());
        assert!(unsubscribed_parents(b"*test", &boxes).is_empty());
        assert!(unsubscribed_parents(b"other/%", &boxes).is_empty());
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
