//! Issue #13: IMAP answers stay right while many sessions change the same mailboxes. Twenty
//! sessions over five inboxes mix SELECT, FETCH, STORE, EXPUNGE, APPEND, SEARCH, NOOP and
//! LOGOUT at once; each session's client keeps a model of what it was told and checks
//! every untagged answer against it:
//! - `EXISTS` never shrinks the mailbox (only `EXPUNGE` does, RFC 9051 §7.4.1);
//! - `EXPUNGE` and `FETCH` name a message number the client knows (1 ..= its count);
//! - no `EXPUNGE` during `FETCH`, `STORE` or `SEARCH` (RFC 9051 §7.5.1);
//! - a `FETCH` with `UID` agrees with the UID the client knows at that number, and the UIDs
//!   it knows rise with the numbers;
//! - `FLAGS` use only system flags and keywords announced by `* FLAGS`;
//! - `SEARCH` answers numbers the client knows;
//! - every command ends `OK`.
//!
//! Zero violations, on SQLite and PostgreSQL.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use mailroom_testkit::{TestServer, on_both_backends};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

on_both_backends!(concurrent_sessions_are_told_a_consistent_story);

const INBOXES: usize = 5;
const SESSIONS_PER_INBOX: usize = 4;
const OPS_PER_SESSION: usize = 60;
const KEYWORDS: [&str; 3] = ["$Work", "$Later", "Project-X"];
const SYSTEM: [&str; 6] = [
    "\\Seen",
    "\\Answered",
    "\\Flagged",
    "\\Deleted",
    "\\Draft",
    "\\Recent",
];

/// A small deterministic generator (xorshift), so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// What one client was told about its selected mailbox.
#[derive(Default)]
struct Model {
    /// UIDs by message number (index + 1); `None` where not told yet.
    uids: Vec<Option<u32>>,
    keywords: HashSet<String>,
    violations: Vec<String>,
    /// Changes by other sessions this one was told of (EXISTS while not appending,
    /// EXPUNGE while not expunging): the run really was concurrent.
    others: usize,
}

impl Model {
    fn violation(&mut self, command: &str, line: &str, why: &str) {
        self.violations
            .push(format!("{why}: `{}` (during {command})", line.trim_end()));
    }

    /// Checks one untagged answer and updates the model.
    fn untagged(&mut self, command: &str, line: &str) {
        let rest = &line[2..];
        let verb = command.split(' ').nth(1).unwrap_or("").to_ascii_uppercase();
        let uid_command = verb == "UID";
        if let Some(list) = rest.strip_prefix("FLAGS (") {
            self.keywords = list
                .trim_end()
                .trim_end_matches(')')
                .split(' ')
                .filter(|f| !f.starts_with('\\') && !f.is_empty())
                .map(str::to_owned)
                .collect();
            return;
        }
        if let Some(list) = rest.strip_prefix("SEARCH") {
            for n in list.split_whitespace() {
                let Ok(n) = n.parse::<usize>() else {
                    continue;
                };
                if !uid_command && (n == 0 || n > self.uids.len()) {
                    self.violation(
                        command,
                        line,
                        "SEARCH names a number the client does not know",
                    );
                }
            }
            return;
        }
        let mut words = rest.splitn(3, ' ');
        let (Some(n), Some(kind)) = (words.next(), words.next()) else {
            return;
        };
        let Ok(n) = n.parse::<usize>() else {
            return;
        };
        match kind.trim_end().to_ascii_uppercase().as_str() {
            "EXISTS" => {
                if n > self.uids.len() && verb != "APPEND" && verb != "SELECT" {
                    self.others += 1;
                }
                if n < self.uids.len() {
                    self.violation(command, line, "EXISTS shrank the mailbox without EXPUNGE");
                    self.uids.truncate(n);
                }
                self.uids.resize(n, None);
            }
            "EXPUNGE" => {
                if ["FETCH", "STORE", "SEARCH"].contains(&verb.as_str()) {
                    self.violation(command, line, "EXPUNGE during FETCH, STORE or SEARCH");
                }
                if n == 0 || n > self.uids.len() {
                    self.violation(
                        command,
                        line,
                        "EXPUNGE of a number the client does not know",
                    );
                } else {
                    self.uids.remove(n - 1);
                }
            }
            "FETCH" => self.fetch(command, line, n, words.next().unwrap_or("")),
            _ => {}
        }
    }

    fn fetch(&mut self, command: &str, line: &str, n: usize, items: &str) {
        if n == 0 || n > self.uids.len() {
            self.violation(command, line, "FETCH of a number the client does not know");
            return;
        }
        if let Some(uid) = number_after(items, "UID ") {
            match self.uids[n - 1] {
                Some(known) if known != uid => {
                    self.violation(command, line, "FETCH gives another UID for a number");
                }
                _ => self.uids[n - 1] = Some(uid),
            }
            let before = self.uids[..n - 1].iter().rev().find_map(|u| *u);
            let after = self.uids[n..].iter().find_map(|u| *u);
            if before.is_some_and(|b| b >= uid) || after.is_some_and(|a| a <= uid) {
                self.violation(command, line, "UIDs do not rise with message numbers");
            }
        }
        if let Some(start) = items.find("FLAGS (") {
            let list = &items[start + 7..];
            let list = &list[..list.find(')').unwrap_or(list.len())];
            for f in list.split_whitespace() {
                let known =
                    SYSTEM.iter().any(|s| s.eq_ignore_ascii_case(f)) || self.keywords.contains(f);
                if !known {
                    self.violation(command, line, "FLAGS uses a keyword never announced");
                }
            }
        }
    }
}

fn number_after(s: &str, key: &str) -> Option<u32> {
    let i = s.find(key)?;
    s[i + key.len()..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

struct Client {
    r: BufReader<TcpStream>,
    model: Model,
    next_tag: u32,
    errors: Vec<String>,
}

impl Client {
    async fn login(addr: SocketAddr, user: &str, key: &str) -> Client {
        let mut c = Client {
            r: BufReader::new(TcpStream::connect(addr).await.expect("connect")),
            model: Model::default(),
            next_tag: 0,
            errors: Vec::new(),
        };
        let greeting = c.line().await;
        assert!(greeting.starts_with("* OK"), "{greeting}");
        let done = c.command(&format!("LOGIN {user} {key}"), None).await;
        assert!(done.contains("OK"), "{done}");
        c
    }

    /// One line of the answer, a literal's bytes replaced by a mark.
    async fn line(&mut self) -> String {
        let mut line = String::new();
        loop {
            let mut part = Vec::new();
            self.r.read_until(b'\n', &mut part).await.expect("read");
            if part.is_empty() {
                return line;
            }
            let part = String::from_utf8_lossy(&part).into_owned();
            let literal = part
                .trim_end()
                .strip_suffix('}')
                .and_then(|s| s.rsplit_once('{'))
                .and_then(|(_, n)| n.parse::<usize>().ok());
            line.push_str(part.trim_end());
            match literal {
                Some(n) => {
                    let mut skip = vec![0u8; n];
                    self.r.read_exact(&mut skip).await.expect("a literal");
                    line.push_str("<literal>");
                }
                None => return line,
            }
        }
    }

    /// Sends a command (and a literal after the server's go-ahead), checks every untagged
    /// answer, and returns the tagged one.
    async fn command(&mut self, command: &str, literal: Option<&[u8]>) -> String {
        self.next_tag += 1;
        let tag = format!("t{}", self.next_tag);
        let full = format!("{tag} {command}");
        let w = self.r.get_mut();
        w.write_all(full.as_bytes()).await.expect("write");
        w.write_all(b"\r\n").await.expect("write");
        if let Some(bytes) = literal {
            loop {
                let l = self.line().await;
                if l.starts_with('+') {
                    break;
                }
                if l.starts_with(&tag) || l.is_empty() {
                    self.errors.push(format!("{full}: {l}"));
                    return l;
                }
                self.model.untagged(&full, &l);
            }
            let w = self.r.get_mut();
            w.write_all(bytes).await.expect("write");
            w.write_all(b"\r\n").await.expect("write");
        }
        loop {
            let l = self.line().await;
            if l.is_empty() {
                self.errors.push(format!("{full}: connection closed"));
                return l;
            }
            if l.starts_with("* ") {
                self.model.untagged(&full, &l);
                continue;
            }
            if l.starts_with(&format!("{tag} ")) {
                if !l[tag.len() + 1..].starts_with("OK") {
                    self.errors.push(format!("{full}: {l}"));
                }
                return l;
            }
        }
    }

    async fn select(&mut self) {
        self.model.uids.clear();
        self.command("SELECT INBOX", None).await;
    }

    /// One random step of the mix.
    async fn step(&mut self, rng: &mut Rng, i: usize) {
        let count = self.model.uids.len();
        let some = |rng: &mut Rng| {
            if count == 0 {
                "1:*".to_owned()
            } else {
                let a = rng.below(count) + 1;
                let b = (a + rng.below(3)).min(count);
                format!("{a}:{b}")
            }
        };
        match rng.below(12) {
            0 => {
                self.select().await;
            }
            1 | 2 => {
                self.command("FETCH 1:* (UID FLAGS)", None).await;
            }
            3 => {
                let set = some(rng);
                self.command(
                    &format!(
                        "FETCH {set} (UID FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)] RFC822.SIZE)"
                    ),
                    None,
                )
                .await;
            }
            4 | 5 => {
                let set = some(rng);
                let kw = KEYWORDS[rng.below(KEYWORDS.len())];
                let op = if rng.below(2) == 0 { "+" } else { "-" };
                self.command(&format!("STORE {set} {op}FLAGS ({kw} \\Flagged)"), None)
                    .await;
            }
            6 => {
                let set = some(rng);
                self.command(&format!("STORE {set} +FLAGS.SILENT (\\Deleted)"), None)
                    .await;
            }
            7 => {
                self.command("EXPUNGE", None).await;
            }
            8 | 9 => {
                let msg = format!(
                    "From: a@example.com\r\nTo: b@example.com\r\nSubject: step {i}\r\n\r\nbody {i}\r\n"
                );
                self.command(
                    &format!("APPEND INBOX {{{}}}", msg.len()),
                    Some(msg.as_bytes()),
                )
                .await;
            }
            10 => {
                self.command("SEARCH UNSEEN", None).await;
            }
            _ => {
                self.command("NOOP", None).await;
            }
        }
    }
}

/// One session's run: log in, select, the mix, log out. Returns its violations and errors,
/// and how many changes by others it was told of.
async fn run_session(
    addr: SocketAddr,
    user: String,
    key: String,
    seed: u64,
) -> (Vec<String>, usize) {
    let mut rng = Rng(seed);
    let mut c = Client::login(addr, &user, &key).await;
    c.select().await;
    for i in 0..OPS_PER_SESSION {
        c.step(&mut rng, i).await;
        // Now and then a session leaves and a new one takes its place (LOGOUT mid-run).
        if rng.below(25) == 0 {
            c.command("LOGOUT", None).await;
            let model_errors = std::mem::take(&mut c.errors);
            let violations = std::mem::take(&mut c.model.violations);
            let others = c.model.others;
            c = Client::login(addr, &user, &key).await;
            c.errors = model_errors;
            c.model.violations = violations;
            c.model.others = others;
            c.select().await;
        }
    }
    c.command("LOGOUT", None).await;
    let mut out = c.model.violations;
    out.extend(c.errors.into_iter().map(|e| format!("not OK: {e}")));
    (out, c.model.others)
}

async fn concurrent_sessions_are_told_a_consistent_story(s: TestServer) {
    let addr = s.server.as_ref().expect("running").imap_addr;
    let mut inboxes = Vec::new();
    for i in 0..INBOXES {
        let a = s.new_account(&format!("concurrent{i}")).await;
        for j in 0..3 {
            s.deliver_smtp(
                &a.email,
                &format!(
                    "From: x@example.net\r\nTo: {}\r\nSubject: seed {j}\r\n\r\nhello\r\n",
                    a.email
                ),
            )
            .await;
        }
        inboxes.push(a);
    }
    let mut tasks = Vec::new();
    for (i, a) in inboxes.iter().enumerate() {
        for j in 0..SESSIONS_PER_INBOX {
            let seed = 0x9E37_79B9_7F4A_7C15 ^ ((i * 31 + j) as u64 + 1);
            tasks.push(tokio::spawn(run_session(
                addr,
                a.email.clone(),
                a.inbox_key.clone(),
                seed,
            )));
        }
    }
    let mut problems = Vec::new();
    let mut others = 0;
    for t in tasks {
        let (r, n) = tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .expect("a session finishes in time")
            .expect("a session does not panic");
        problems.extend(r);
        others += n;
    }
    let sessions = INBOXES * SESSIONS_PER_INBOX;
    assert!(
        others >= sessions,
        "the sessions were told of only {others} changes by others: not a concurrent run"
    );
    assert!(
        problems.is_empty(),
        "{} problems over {sessions} sessions, first ones:\n{}",
        problems.len(),
        problems
            .iter()
            .take(25)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    s.stop().await;
}
