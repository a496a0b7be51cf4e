//! STORE and UID STORE (RFC 9051 §6.4.6) with CONDSTORE's UNCHANGEDSINCE (RFC 7162
//! §3.2): flag changes go through the group-commit task (`imap::flags`), and the answers
//! carry the flags as stored.

use std::collections::HashSet;

use imap_codec::imap_types::command::StoreModifier;
use imap_codec::imap_types::flag::{Flag, StoreResponse, StoreType};
use imap_codec::imap_types::sequence::SequenceSet;
use mailroom_store::{FlagChange, FlagOutcome};

use crate::fmt::{canonical_flag, sequence_set};
use crate::session::{Done, Next, Out, Session, signal_inbox};
use crate::view::View;

/// The flags a client asks to store (STORE, APPEND): canonical spelling, each once, and
/// never `\Recent`, which is the server's to set.
pub(crate) fn store_flags(flags: &[Flag<'_>]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for f in flags {
        let s = canonical_flag(&f.to_string());
        if s == "\\Recent" || out.iter().any(|o| o.eq_ignore_ascii_case(&s)) {
            continue;
        }
        out.push(s);
    }
    out
}

/// A message's flags after STORE `kind` of `flags` (compared without case, as IMAP
/// flags are).
fn new_flags(kind: &StoreType, old: &[String], flags: &[String]) -> Vec<String> {
    match kind {
        StoreType::Replace => flags.to_vec(),
        StoreType::Add => {
            let mut f = old.to_vec();
            for x in flags {
                if !f.iter().any(|y| y.eq_ignore_ascii_case(x)) {
                    f.push(x.clone());
                }
            }
            f
        }
        StoreType::Remove => old
            .iter()
            .filter(|y| !flags.iter().any(|x| x.eq_ignore_ascii_case(y)))
            .cloned()
            .collect(),
    }
}

/// What the untagged FETCH answers of a STORE carry.
struct Report {
    /// `.SILENT`: no FLAGS.
    silent: bool,
    /// UID STORE: the UID of each message.
    uid: bool,
    /// CONDSTORE: the MODSEQ of each message.
    condstore: bool,
}

impl Report {
    /// One `* n FETCH` per message named (`idx`) that is still there; under `.SILENT` only
    /// for the ones this STORE changed (`touched`), and only under CONDSTORE.
    fn fetch_lines(&self, view: &View, idx: &[usize], touched: &HashSet<u32>, out: &mut Out) {
        for &i in idx {
            let m = &view.msgs[i];
            if m.gone {
                continue;
            }
            // .SILENT still reports modseqs of changed messages under CONDSTORE.
            if self.silent && !(self.condstore && touched.contains(&m.uid)) {
                continue;
            }
            let mut parts = Vec::new();
            if !self.silent {
                parts.push(format!("FLAGS {}", m.flag_text()));
            }
            if self.uid {
                parts.push(format!("UID {}", m.uid));
            }
            if self.condstore {
                parts.push(format!("MODSEQ ({})", m.modseq));
            }
            out.line(&format!("* {} FETCH ({})", i + 1, parts.join(" ")));
        }
    }
}

impl Session {
    /// STORE with its modifiers: UNCHANGEDSINCE is the only one.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn store_cmd(
        &mut self,
        tag: &str,
        set: &SequenceSet,
        kind: &StoreType,
        response: &StoreResponse,
        flags: &[Flag<'_>],
        uid: bool,
        modifiers: &[StoreModifier],
        out: &mut Out,
    ) -> Done {
        let unchanged_since = modifiers
            .iter()
            .map(|m| match m {
                StoreModifier::UnchangedSince(v) => *v,
            })
            .next();
        let flags = store_flags(flags);
        self.store(tag, set, kind, response, &flags, uid, unchanged_since, out)
            .await?;
        Ok(Next::Continue)
    }

    #[allow(clippy::too_many_arguments)]
    async fn store(
        &mut self,
        tag: &str,
        set: &SequenceSet,
        kind: &StoreType,
        response: &StoreResponse,
        flags: &[String],
        uid: bool,
        unchanged_since: Option<u64>,
        out: &mut Out,
    ) -> Result<(), mailroom_store::StoreError> {
        self.sync(out, uid).await?;
        let idx = match self.resolve(set, uid) {
            Ok(i) => i,
            Err(why) => {
                let _ = self.bad(out, tag, why);
                return Ok(());
            }
        };
        if unchanged_since.is_some() {
            self.condstore = true;
        }
        let condstore = self.condstore;
        let Some(sel) = self.selected.as_mut() else {
            return Ok(());
        };
        if sel.read_only {
            out.line(&format!(
                "{tag} NO [READ-ONLY] the mailbox was opened with EXAMINE"
            ));
            return Ok(());
        }
        let mut changes: Vec<(i64, Vec<String>)> = Vec::new();
        let mut modified: Vec<u32> = Vec::new();
        for &i in &idx {
            let m = &sel.msgs[i];
            if m.gone {
                continue;
            }
            if let Some(u) = unchanged_since
                && m.modseq as u64 > u
            {
                modified.push(if uid { m.uid } else { i as u32 + 1 });
                continue;
            }
            let new = new_flags(kind, &m.flags, flags);
            // With UNCHANGEDSINCE every message gets a new modseq (RFC 7162 §3.2).
            if new != m.flags || unchanged_since.is_some() {
                changes.push((i64::from(m.uid), new));
            }
        }
        let mut touched: HashSet<u32> = HashSet::new();
        if !changes.is_empty() {
            let since = unchanged_since.map(|u| i64::try_from(u).unwrap_or(i64::MAX));
            let FlagOutcome {
                modseq,
                changed,
                refused,
            } = self
                .server
                .flags
                .set(FlagChange {
                    mailbox: sel.mailbox.id.clone(),
                    changes: changes.clone(),
                    unchanged_since: since,
                })
                .await?;
            for (u, new) in changes {
                if changed.contains(&u)
                    && let Ok(i) = sel.msgs.binary_search_by_key(&(u as u32), |m| m.uid)
                {
                    sel.msgs[i].flags = new;
                    sel.msgs[i].modseq = modseq;
                    touched.insert(u as u32);
                }
            }
            for u in refused {
                if let Ok(i) = sel.msgs.binary_search_by_key(&(u as u32), |m| m.uid) {
                    modified.push(if uid { u as u32 } else { i as u32 + 1 });
                }
            }
            signal_inbox(&self.server, &self.user);
        }
        let silent = matches!(response, StoreResponse::Silent);
        if !silent {
            sel.announce_keywords(&idx, out);
        }
        let report = Report {
            silent,
            uid,
            condstore,
        };
        report.fetch_lines(sel, &idx, &touched, out);
        modified.sort_unstable();
        if modified.is_empty() {
            out.line(&format!(
                "{tag} OK {}STORE completed",
                if uid { "UID " } else { "" }
            ));
        } else {
            out.line(&format!(
                "{tag} OK [MODIFIED {}] some messages changed since",
                sequence_set(&modified)
            ));
        }
        Ok(())
    }
}
