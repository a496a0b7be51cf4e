//! FETCH (RFC 9051 §6.4.5) under a budget. One command costs at most one copy of each
//! message it reads: items are capped ([`crate::ImapLimits::max_fetch_items`]), items
//! that give the same answer (`BODY[]` and `BODY.PEEK[]`, or the same item twice) are
//! answered once, and literals that are ranges of the stored message are written to the
//! socket from it rather than copied into the answer.

use std::collections::HashSet;

use imap_codec::imap_types::command::FetchModifier;
use imap_codec::imap_types::fetch::{MacroOrMessageDataItemNames, MessageDataItemName};
use imap_codec::imap_types::sequence::SequenceSet;
use mailroom_store::{FlagChange, FlagOutcome};
use tokio::io::{AsyncRead, AsyncWrite, BufReader};

use super::section::{Data, binary_data, section_data, section_spec};
use crate::fmt::internal_date;
use crate::limits::refused;
use crate::mime;
use crate::session::{CmdError, Done, Next, Out, Session, signal_inbox};
use crate::view::Msg;

/// Literals up to this size are copied into the answer buffer; bigger ones are written
/// straight from the message.
const COPY_BELOW: usize = 16 * 1024;

/// One piece of a FETCH answer.
enum Piece {
    Text(Vec<u8>),
    /// A range of the stored message.
    Raw(std::ops::Range<usize>),
    /// Bytes made for this answer (a header subset, decoded BINARY content).
    Owned(Vec<u8>),
}

/// The answer for one message, built as pieces.
struct Answer {
    pieces: Vec<Piece>,
    first: bool,
}

impl Answer {
    fn new(seq: usize) -> Answer {
        Answer {
            pieces: vec![Piece::Text(format!("* {seq} FETCH (").into_bytes())],
            first: true,
        }
    }

    fn text(&mut self, s: &[u8]) {
        if let Some(Piece::Text(t)) = self.pieces.last_mut() {
            t.extend_from_slice(s);
        } else {
            self.pieces.push(Piece::Text(s.to_vec()));
        }
    }

    /// Starts an item: the separator, then `s`.
    fn item(&mut self, s: &str) {
        if !self.first {
            self.text(b" ");
        }
        self.first = false;
        self.text(s.as_bytes());
    }

    /// `label` then the literal of `data`. BINARY literals holding NUL are `~{N}`.
    fn literal(&mut self, label: &str, data: Data, raw: &[u8], binary: bool) {
        let bytes: &[u8] = match &data {
            Data::Raw(r) => &raw[r.clone()],
            Data::Owned(v) => v,
        };
        let tilde = if binary && bytes.contains(&0) {
            "~"
        } else {
            ""
        };
        self.item(&format!("{label} {tilde}{{{}}}\r\n", bytes.len()));
        match data {
            Data::Raw(r) if r.len() >= COPY_BELOW => self.pieces.push(Piece::Raw(r)),
            Data::Owned(v) if v.len() >= COPY_BELOW => self.pieces.push(Piece::Owned(v)),
            _ => {
                let copy = bytes.to_vec();
                self.text(&copy);
            }
        }
    }

    /// Writes what is built so far: text into `out`, big literals straight to the socket.
    /// Called after every item, so one item's made bytes (a decoded part, a header
    /// subset) are gone before the next item makes its own.
    async fn write_pending<S: AsyncWrite + Unpin>(
        &mut self,
        raw: &[u8],
        out: &mut Out,
        w: &mut S,
    ) -> Io {
        for p in self.pieces.drain(..) {
            match p {
                Piece::Text(t) => out.bytes(&t),
                Piece::Raw(r) => out.write_through(w, &raw[r]).await?,
                Piece::Owned(v) => out.write_through(w, &v).await?,
            }
        }
        Ok(())
    }
}

type Io = std::io::Result<()>;

/// The item that gives the same answer: `BODY.PEEK[...]` answers as `BODY[...]`.
fn answer_key<'a>(item: &MessageDataItemName<'a>) -> MessageDataItemName<'a> {
    let mut k = item.clone();
    match &mut k {
        MessageDataItemName::BodyExt { peek, .. } | MessageDataItemName::Binary { peek, .. } => {
            *peek = false;
        }
        _ => {}
    }
    k
}

/// The items with those that give the same answer as an earlier one left out.
fn distinct<'a, 'b>(items: &'b [MessageDataItemName<'a>]) -> Vec<&'b MessageDataItemName<'a>> {
    let mut seen: Vec<MessageDataItemName<'a>> = Vec::new();
    let mut out = Vec::new();
    for item in items {
        let key = answer_key(item);
        if !seen.contains(&key) {
            seen.push(key);
            out.push(item);
        }
    }
    out
}

fn needs_body(items: &[&MessageDataItemName<'_>]) -> bool {
    items.iter().any(|i| {
        matches!(
            i,
            MessageDataItemName::Body
                | MessageDataItemName::BodyExt { .. }
                | MessageDataItemName::BodyStructure
                | MessageDataItemName::Envelope
                | MessageDataItemName::Rfc822
                | MessageDataItemName::Rfc822Header
                | MessageDataItemName::Rfc822Text
                | MessageDataItemName::Binary { .. }
                | MessageDataItemName::BinarySize { .. }
        )
    })
}

fn sets_seen(items: &[&MessageDataItemName<'_>]) -> bool {
    items.iter().any(|i| {
        matches!(
            i,
            MessageDataItemName::BodyExt { peek: false, .. }
                | MessageDataItemName::Binary { peek: false, .. }
                | MessageDataItemName::Rfc822
                | MessageDataItemName::Rfc822Text
        )
    })
}

/// Which of UID, FLAGS and MODSEQ an answer has said already.
#[derive(Default)]
struct Said {
    uid: bool,
    flags: bool,
    modseq: bool,
}

/// Adds one item to `a`. `Err` is the text of a `NO` that ends the command.
fn item(
    a: &mut Answer,
    item: &MessageDataItemName<'_>,
    m: &Msg,
    raw: &[u8],
    root: Option<&mime::Entity>,
    said: &mut Said,
) -> Result<(), &'static str> {
    use MessageDataItemName as I;
    match item {
        I::Uid => {
            said.uid = true;
            a.item(&format!("UID {}", m.uid));
        }
        I::Flags => {
            said.flags = true;
            a.item(&format!("FLAGS {}", m.flag_text()));
        }
        I::InternalDate => a.item(&format!("INTERNALDATE {}", internal_date(m.internal_date))),
        I::Rfc822Size => a.item(&format!("RFC822.SIZE {}", m.size)),
        I::ModSeq => {
            said.modseq = true;
            a.item(&format!("MODSEQ ({})", m.modseq));
        }
        _ => {
            let Some(root) = root else { return Ok(()) };
            content_item(a, item, raw, root)?;
        }
    }
    Ok(())
}

/// The items that need the message.
fn content_item(
    a: &mut Answer,
    item: &MessageDataItemName<'_>,
    raw: &[u8],
    root: &mime::Entity,
) -> Result<(), &'static str> {
    use MessageDataItemName as I;
    match item {
        I::Envelope => {
            a.item("ENVELOPE ");
            a.text(mime::envelope(&raw[root.header.clone()]).as_bytes());
        }
        I::BodyStructure | I::Body => {
            let ext = matches!(item, I::BodyStructure);
            a.item(if ext { "BODYSTRUCTURE " } else { "BODY " });
            a.text(mime::body_structure(raw, root, ext).as_bytes());
        }
        I::Rfc822 => a.literal("RFC822", Data::Raw(0..raw.len()), raw, false),
        I::Rfc822Header => a.literal("RFC822.HEADER", Data::Raw(root.header.clone()), raw, false),
        I::Rfc822Text => a.literal("RFC822.TEXT", Data::Raw(root.body.clone()), raw, false),
        I::BodyExt {
            section,
            partial: part,
            ..
        } => {
            let data = section_data(raw, root, section).unwrap_or(Data::Owned(Vec::new()));
            let (data, origin) = data.partial(*part);
            let label = format!("BODY[{}]{origin}", section_spec(section));
            a.literal(&label, data, raw, false);
        }
        I::Binary {
            section,
            partial: part,
            ..
        } => {
            let (spec, data) = binary_data(raw, root, section)?;
            let (data, origin) = data.partial(*part);
            a.literal(&format!("BINARY[{spec}]{origin}"), data, raw, true);
        }
        I::BinarySize { section } => {
            let (spec, data) = binary_data(raw, root, section)?;
            let len = match data {
                Data::Raw(r) => r.len(),
                Data::Owned(v) => v.len(),
            };
            a.item(&format!("BINARY.SIZE[{spec}] {len}"));
        }
        _ => {}
    }
    Ok(())
}

impl Session {
    /// FETCH with its macro (ALL, FAST, FULL) or items and its modifiers: CHANGEDSINCE;
    /// VANISHED needs QRESYNC and is refused.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn fetch_cmd<S: AsyncRead + AsyncWrite + Unpin + Send>(
        &mut self,
        tag: &str,
        set: &SequenceSet,
        what: MacroOrMessageDataItemNames<'_>,
        uid: bool,
        modifiers: &[FetchModifier],
        conn: &mut BufReader<S>,
        out: &mut Out,
    ) -> Done {
        let the_macro;
        let items = match what {
            MacroOrMessageDataItemNames::Macro(m) => {
                the_macro = m;
                the_macro.expand()
            }
            MacroOrMessageDataItemNames::MessageDataItemNames(items) => items,
        };
        let changed_since = modifiers.iter().find_map(|m| match m {
            FetchModifier::ChangedSince(v) => Some(v.get()),
            FetchModifier::Vanished => None,
        });
        if modifiers
            .iter()
            .any(|m| matches!(m, FetchModifier::Vanished))
        {
            out.line(&format!(
                "{tag} BAD VANISHED needs QRESYNC, which is not supported"
            ));
            return Ok(Next::Continue);
        }
        self.fetch(tag, set, &items, uid, changed_since, conn, out)
            .await?;
        Ok(Next::Continue)
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn fetch<S: AsyncRead + AsyncWrite + Unpin + Send>(
        &mut self,
        tag: &str,
        set: &SequenceSet,
        items: &[MessageDataItemName<'_>],
        uid: bool,
        changed_since: Option<u64>,
        conn: &mut BufReader<S>,
        out: &mut Out,
    ) -> Result<(), CmdError> {
        let max = self.server.limits.max_fetch_items;
        if items.len() > max {
            refused("fetch_items");
            out.line(&format!(
                "{tag} NO [LIMIT] too many FETCH items (at most {max})"
            ));
            return Ok(());
        }
        // New mail (and, for UID commands, removals) first, so `1:*` covers it.
        self.sync(out, uid).await.map_err(CmdError::Store)?;
        let mut idx = match self.resolve(set, uid) {
            Ok(i) => i,
            Err(why) => {
                let _ = self.bad(out, tag, why);
                return Ok(());
            }
        };
        // Whether to mark read is decided on the items as sent: `BODY.PEEK[] BODY[]` sets
        // \Seen even though only one answer is given.
        let marks_seen = sets_seen(&items.iter().collect::<Vec<_>>());
        let items = distinct(items);
        let wants_modseq = changed_since.is_some()
            || items
                .iter()
                .any(|i| matches!(i, MessageDataItemName::ModSeq));
        if wants_modseq {
            self.condstore = true;
        }
        if let (Some(since), Some(sel)) = (changed_since, self.selected.as_ref()) {
            idx.retain(|&i| sel.msgs[i].modseq as u64 > since);
        }
        let newly_seen = if marks_seen {
            self.mark_seen_for_fetch(&idx).await?
        } else {
            HashSet::new()
        };
        // Keywords the answers use are announced first (RFC 9051 §7.3.5).
        if let Some(view) = self.selected.as_mut() {
            view.announce_keywords(&idx, out);
        }
        let any_gone = self
            .answer_each(&idx, &items, uid, wants_modseq, &newly_seen, conn, out)
            .await?;
        match any_gone {
            Err(why) => out.line(&format!("{tag} NO {why}")),
            Ok(true) => out.line(&format!(
                "{tag} NO [EXPUNGEISSUED] some messages were expunged meanwhile"
            )),
            Ok(false) => out.line(&format!(
                "{tag} OK {}FETCH completed",
                if uid { "UID " } else { "" }
            )),
        }
        Ok(())
    }

    /// Marks the messages read first, in one transaction, so the answers carry the new
    /// flags. Returns the uids that changed.
    async fn mark_seen_for_fetch(&mut self, idx: &[usize]) -> Result<HashSet<u32>, CmdError> {
        let mut newly_seen = HashSet::new();
        let Some(sel) = self.selected.as_mut() else {
            return Ok(newly_seen);
        };
        if sel.read_only {
            return Ok(newly_seen);
        }
        let changes: Vec<(i64, Vec<String>)> = idx
            .iter()
            .map(|&i| &sel.msgs[i])
            .filter(|m| !m.gone && !m.has("\\Seen"))
            .map(|m| {
                let mut f = m.flags.clone();
                f.push("\\Seen".into());
                (i64::from(m.uid), f)
            })
            .collect();
        if changes.is_empty() {
            return Ok(newly_seen);
        }
        let FlagOutcome {
            modseq, changed, ..
        } = self
            .server
            .flags
            .set(FlagChange {
                mailbox: sel.mailbox.id.clone(),
                changes,
                unchanged_since: None,
            })
            .await
            .map_err(CmdError::Store)?;
        for &i in idx {
            let m = &mut sel.msgs[i];
            if changed.contains(&i64::from(m.uid)) {
                m.flags.push("\\Seen".into());
                m.modseq = modseq;
                newly_seen.insert(m.uid);
            }
        }
        signal_inbox(&self.server, &self.user);
        Ok(newly_seen)
    }

    /// Answers for each message in turn, holding one message at a time. `Ok(Ok(true))`
    /// when some were gone; `Ok(Err(why))` for a `NO` that ended the command.
    #[allow(clippy::too_many_arguments)]
    async fn answer_each<S: AsyncRead + AsyncWrite + Unpin + Send>(
        &mut self,
        idx: &[usize],
        items: &[&MessageDataItemName<'_>],
        uid: bool,
        wants_modseq: bool,
        newly_seen: &HashSet<u32>,
        conn: &mut BufReader<S>,
        out: &mut Out,
    ) -> Result<Result<bool, &'static str>, CmdError> {
        let condstore = self.condstore;
        let needs_body = needs_body(items);
        let store = self.server.services.store().clone();
        let Some(sel) = self.selected.as_ref() else {
            return Ok(Ok(false));
        };
        let mut any_gone = false;
        for &i in idx {
            // A message removed elsewhere but not yet reported is still served while its
            // body exists (it may have moved to another mailbox).
            let m = &sel.msgs[i];
            let raw = if needs_body {
                match store
                    .get_blob(&m.blob_hex())
                    .await
                    .map_err(CmdError::Store)?
                {
                    Some(r) => r,
                    None => {
                        any_gone = true;
                        continue;
                    }
                }
            } else {
                Vec::new()
            };
            let root = needs_body.then(|| mime::parse(&raw));
            let mark = out.pending();
            let mut a = Answer::new(i + 1);
            let mut said = Said::default();
            for it in items {
                if let Err(why) = item(&mut a, it, m, &raw, root.as_ref(), &mut said) {
                    // Earlier items may be on their way already: the answer is closed
                    // (still valid with the items it has) before the tagged NO. With no
                    // item yet, nothing but its start was written, and that is taken back.
                    if a.first {
                        out.truncate(mark);
                    } else {
                        a.text(b")\r\n");
                        a.write_pending(&raw, out, conn.get_mut())
                            .await
                            .map_err(CmdError::Io)?;
                    }
                    return Ok(Err(why));
                }
                a.write_pending(&raw, out, conn.get_mut())
                    .await
                    .map_err(CmdError::Io)?;
            }
            if uid && !said.uid {
                a.item(&format!("UID {}", m.uid));
            }
            if newly_seen.contains(&m.uid) && !said.flags {
                a.item(&format!("FLAGS {}", m.flag_text()));
                said.flags = true;
            }
            if condstore && (said.flags || wants_modseq) && !said.modseq {
                a.item(&format!("MODSEQ ({})", m.modseq));
            }
            a.text(b")\r\n");
            a.write_pending(&raw, out, conn.get_mut())
                .await
                .map_err(CmdError::Io)?;
            if out.pending() > 256 * 1024 {
                out.flush(conn.get_mut()).await.map_err(CmdError::Io)?;
            }
        }
        Ok(Ok(any_gone))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imap_codec::imap_types::fetch::Section;

    #[test]
    fn the_same_answer_is_given_once() {
        let body = |peek| MessageDataItemName::BodyExt {
            section: None,
            partial: None,
            peek,
        };
        let header = MessageDataItemName::BodyExt {
            section: Some(Section::Header(None)),
            partial: None,
            peek: true,
        };
        let items = vec![
            body(true),
            MessageDataItemName::Uid,
            body(false),
            body(true),
            header.clone(),
            MessageDataItemName::Uid,
            header,
        ];
        let d = distinct(&items);
        assert_eq!(d.len(), 3, "{d:?}");
        // The first spelling is kept (its PEEK decides nothing: sets_seen looks at all).
        assert_eq!(d[0], &body(true));
        assert_eq!(d[1], &MessageDataItemName::Uid);
    }
}
