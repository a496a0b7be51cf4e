//! SEARCH (RFC 9051 §6.4.4) under a budget. Keys that need only flags, sizes and dates
//! run first, on the session's task; keys that need message text run on the blocking pool
//! (lowercasing and MIME decoding are CPU work that must not hold an async worker), each
//! message parsed once for all the keys. One command may read at most
//! [`crate::ImapLimits::search_byte_budget`] bytes of messages and spend at most
//! [`crate::ImapLimits::search_time_budget`]; past either it ends with `NO [LIMIT]`
//! (RFC 5530), as does a search with more than `max_search_keys` keys.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use imap_codec::imap_types::ToStatic;
use imap_codec::imap_types::core::Charset;
use imap_codec::imap_types::search::SearchKey;

use crate::fmt::{sequence_set, string};
use crate::limits::refused;
use crate::mime;
use crate::search::{self, Candidate, Content};
use crate::session::{Done, Next, Out, Session};
use crate::view::Msg;

/// Why a search stopped.
pub(crate) enum SearchError {
    Store(mailroom_store::StoreError),
    /// Past the time or byte budget (the `reason` label).
    Budget(&'static str),
}

impl From<mailroom_store::StoreError> for SearchError {
    fn from(e: mailroom_store::StoreError) -> SearchError {
        SearchError::Store(e)
    }
}

/// What is left of one command's budget.
struct Budget {
    deadline: Instant,
    bytes_left: u64,
}

impl Budget {
    /// Takes `bytes` more message bytes; `Err` past either budget.
    fn spend(&mut self, bytes: u64) -> Result<(), SearchError> {
        if Instant::now() >= self.deadline {
            return Err(SearchError::Budget("search_time"));
        }
        self.bytes_left = self
            .bytes_left
            .checked_sub(bytes)
            .ok_or(SearchError::Budget("search_bytes"))?;
        Ok(())
    }
}

/// A message's bytes for the content keys: a cached header block or a whole message.
enum Text {
    Shared(Arc<[u8]>),
    Owned(Vec<u8>),
}

impl Text {
    fn bytes(&self) -> &[u8] {
        match self {
            Text::Shared(a) => a,
            Text::Owned(v) => v,
        }
    }
}

fn candidate<'a>(
    m: &'a Msg,
    seq: u32,
    content: Option<&'a Content<'a>>,
    max_seq: u32,
    max_uid: u32,
) -> Candidate<'a> {
    Candidate {
        seq,
        uid: m.uid,
        flags: &m.flags,
        recent: m.recent,
        size: m.size,
        internal_date: m.internal_date,
        modseq: m.modseq,
        content,
        max_seq,
        max_uid,
    }
}

/// Batches of at most 64 messages and 8 MiB, so a search over big messages holds a
/// bounded amount of them at once.
fn batches(msgs: &[Msg], passed: &[usize]) -> Vec<Vec<usize>> {
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut bytes = 0i64;
    for &i in passed {
        let size = msgs[i].size;
        match batches.last_mut() {
            Some(b) if b.len() < 64 && bytes + size <= 8 * 1024 * 1024 => {
                b.push(i);
                bytes += size;
            }
            _ => {
                batches.push(vec![i]);
                bytes = size;
            }
        }
    }
    batches
}

/// Matches one batch on the blocking pool: `(index, message, its text)` in, the indexes
/// that match every content key out.
async fn match_batch(
    slots: &tokio::sync::Semaphore,
    keys: Arc<Vec<SearchKey<'static>>>,
    batch: Vec<(usize, Msg, Text)>,
    deadline: Instant,
    max_seq: u32,
    max_uid: u32,
) -> Result<Vec<usize>, SearchError> {
    let work = move || {
        let mut hits = Vec::new();
        for (i, m, text) in &batch {
            if Instant::now() >= deadline {
                return Err(SearchError::Budget("search_time"));
            }
            let content = Content::new(text.bytes());
            let c = candidate(m, *i as u32 + 1, Some(&content), max_seq, max_uid);
            if search::matches_all(&keys, &c) {
                hits.push(*i);
            }
        }
        Ok(hits)
    };
    // Waiting for a slot counts against the command's time.
    let permit = tokio::time::timeout_at(deadline.into(), slots.acquire()).await;
    let Ok(Ok(_permit)) = permit else {
        return Err(SearchError::Budget("search_time"));
    };
    match tokio::task::spawn_blocking(work).await {
        Ok(r) => r,
        // A panic in matching is a bug; the command fails, the session goes on.
        Err(e) => {
            tracing::error!(error = %e, "IMAP: SEARCH matching failed");
            Err(SearchError::Budget("search_failed"))
        }
    }
}

impl Session {
    /// SEARCH with its charset: the keys are matched as UTF-8, so only UTF-8 and its
    /// subset US-ASCII are accepted (RFC 9051 §6.4.4: `NO [BADCHARSET]` otherwise).
    pub(crate) async fn search_cmd(
        &mut self,
        tag: &str,
        charset: Option<&Charset<'_>>,
        keys: &[SearchKey<'_>],
        uid: bool,
        out: &mut Out,
    ) -> Done {
        if let Some(cs) = charset {
            let cs = match cs {
                Charset::Atom(a) => a.as_ref().to_owned(),
                Charset::Quoted(q) => q.as_ref().to_owned(),
            };
            if !cs.eq_ignore_ascii_case("UTF-8") && !cs.eq_ignore_ascii_case("US-ASCII") {
                out.line(&format!(
                    "{tag} NO [BADCHARSET (UTF-8 US-ASCII)] unsupported charset"
                ));
                return Ok(Next::Continue);
            }
        }
        self.search(tag, keys, uid, out).await?;
        Ok(Next::Continue)
    }

    pub(crate) async fn search(
        &mut self,
        tag: &str,
        keys: &[SearchKey<'_>],
        uid: bool,
        out: &mut Out,
    ) -> Result<(), mailroom_store::StoreError> {
        let max = self.server.limits.max_search_keys;
        if search::count_keys(keys) > max {
            refused("search_keys");
            out.line(&format!(
                "{tag} NO [LIMIT] too many search keys (at most {max})"
            ));
            return Ok(());
        }
        let with_modseq = search::uses_modseq(keys);
        if with_modseq {
            self.condstore = true;
        }
        self.sync(out, uid).await?;
        let matched = match self.matching(keys).await {
            Ok(m) => m,
            Err(SearchError::Store(e)) => return Err(e),
            Err(SearchError::Budget(reason)) => {
                refused(reason);
                out.line(&format!(
                    "{tag} NO [LIMIT] search too costly; narrow it down"
                ));
                return Ok(());
            }
        };
        self.answer_search(tag, uid, with_modseq, matched, out);
        Ok(())
    }

    /// The indexes of the messages that match.
    async fn matching(&self, keys: &[SearchKey<'_>]) -> Result<Vec<usize>, SearchError> {
        let limits = &self.server.limits;
        let mut budget = Budget {
            deadline: Instant::now() + limits.search_time_budget,
            bytes_left: limits.search_byte_budget,
        };
        let store = self.server.services.store().clone();
        let Some(sel) = self.selected.as_ref() else {
            return Ok(Vec::new());
        };
        let max_seq = sel.msgs.len() as u32;
        let max_uid = sel.msgs.last().map_or(0, |m| m.uid);
        let (content_keys, cheap_keys): (Vec<&SearchKey<'_>>, Vec<&SearchKey<'_>>) = keys
            .iter()
            .partition(|k| search::needs_content(std::slice::from_ref(*k)));
        let passed: Vec<usize> = (0..sel.msgs.len())
            .filter(|&i| !sel.msgs[i].gone)
            .filter(|&i| {
                let c = candidate(&sel.msgs[i], i as u32 + 1, None, max_seq, max_uid);
                cheap_keys
                    .iter()
                    .all(|k| search::matches_all(std::slice::from_ref(*k), &c))
            })
            .collect();
        if content_keys.is_empty() {
            return Ok(passed);
        }
        let content_keys: Arc<Vec<SearchKey<'static>>> =
            Arc::new(content_keys.iter().map(|k| k.to_static()).collect());
        // Header keys only: header blocks from the cache, the misses read in one go.
        let headers_only = !search::needs_body(&content_keys);
        let cache = &self.server.headers;
        let account = self.user.as_ref().map_or("", |u| u.account_id.as_str());
        let slots = self.server.search_slots.of(account);
        let slots = slots.semaphore();
        let mut matched = Vec::new();
        for chunk in batches(&sel.msgs, &passed) {
            let hashes: Vec<String> = chunk.iter().map(|&i| sel.msgs[i].blob_hex()).collect();
            let mut texts: HashMap<String, Text> = HashMap::new();
            let mut missing: Vec<String> = Vec::new();
            for hash in &hashes {
                match cache.get(hash).filter(|_| headers_only) {
                    Some(h) => {
                        texts.insert(hash.clone(), Text::Shared(h));
                    }
                    None => missing.push(hash.clone()),
                }
            }
            let read: u64 = chunk.iter().map(|&i| sel.msgs[i].size.max(0) as u64).sum();
            if !missing.is_empty() {
                budget.spend(read)?;
                for (hash, raw) in store.imap_blobs(&missing).await? {
                    let header = cache.put(&hash, &raw[mime::parse_header_only(&raw)]);
                    let text = if headers_only {
                        Text::Shared(header)
                    } else {
                        Text::Owned(raw)
                    };
                    texts.insert(hash, text);
                }
            }
            budget.spend(0)?;
            let batch: Vec<(usize, Msg, Text)> = chunk
                .iter()
                .zip(&hashes)
                .filter_map(|(&i, h)| Some((i, sel.msgs[i].clone(), texts.remove(h)?)))
                .collect();
            let keys = content_keys.clone();
            let hits = match_batch(slots, keys, batch, budget.deadline, max_seq, max_uid).await?;
            matched.extend(hits);
        }
        Ok(matched)
    }

    /// `* SEARCH` (or `* ESEARCH` under IMAP4rev2) and the tagged OK.
    fn answer_search(
        &self,
        tag: &str,
        uid: bool,
        with_modseq: bool,
        matched: Vec<usize>,
        out: &mut Out,
    ) {
        let Some(sel) = self.selected.as_ref() else {
            return;
        };
        let mut hits: Vec<u32> = Vec::new();
        let mut highest = 0i64;
        for i in matched {
            let m = &sel.msgs[i];
            hits.push(if uid { m.uid } else { i as u32 + 1 });
            highest = highest.max(m.modseq);
        }
        if self.rev2 {
            let mut line = format!("* ESEARCH (TAG {})", string(tag.as_bytes()));
            if uid {
                line.push_str(" UID");
            }
            if !hits.is_empty() {
                line.push_str(&format!(" ALL {}", sequence_set(&hits)));
                if with_modseq {
                    line.push_str(&format!(" MODSEQ {highest}"));
                }
            }
            out.line(&line);
        } else {
            let mut line = String::from("* SEARCH");
            for h in &hits {
                line.push_str(&format!(" {h}"));
            }
            if with_modseq && !hits.is_empty() {
                line.push_str(&format!(" (MODSEQ {highest})"));
            }
            out.line(&line);
        }
        out.line(&format!(
            "{tag} OK {}SEARCH completed",
            if uid { "UID " } else { "" }
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_budget_ends_a_search() {
        let mut b = Budget {
            deadline: Instant::now() + Duration::from_secs(60),
            bytes_left: 100,
        };
        assert!(b.spend(60).is_ok());
        assert!(matches!(
            b.spend(50),
            Err(SearchError::Budget("search_bytes"))
        ));
        let mut late = Budget {
            deadline: Instant::now(),
            bytes_left: 100,
        };
        assert!(matches!(
            late.spend(0),
            Err(SearchError::Budget("search_time"))
        ));
    }
}
