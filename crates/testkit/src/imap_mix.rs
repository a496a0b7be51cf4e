//! An IMAP load mix with a client-side model (issue #13), shared by the concurrency test
//! and `mailroom-bench imap --mix`: sessions mix SELECT, FETCH, STORE, EXPUNGE, APPEND,
//! SEARCH, NOOP and LOGOUT, and each client checks every untagged answer against what it
//! was told before:
//! - `EXISTS` never shrinks the mailbox (only `EXPUNGE` does, RFC 9051 §7.4.1);
//! - `EXPUNGE` and `FETCH` name a message number the client knows (1 ..= its count);
//! - no `EXPUNGE` during `FETCH`, `STORE` or `SEARCH` (RFC 9051 §7.5.1);
//! - a `FETCH` with `UID` agrees with the UID the client knows at that number, and the UIDs
//!   it knows rise with the numbers;
//! - `FLAGS` use only system flags and keywords announced by `* FLAGS`;
//! - `SEARCH` answers numbers the client knows;
//! - every command ends `OK`.

use std::collections::HashSet;
use std::net::SocketAddr;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

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
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// What one client was told about its selected mailbox.
#[derive(Default)]
pub struct Model {
    /// UIDs by message number (index + 1); `None` where not told yet.
    pub uids: Vec<Option<u32>>,
    pub keywords: HashSet<String>,
    pub violations: Vec<String>,
    /// Changes by other sessions this one was told of (EXISTS while not appending,
    /// EXPUNGE while not expunging): the run really was concurrent.
    pub others: usize,
}

impl Model {
    fn violation(&mut self, command: &str, line: &str, why: &str) {
        self.violations
            .push(format!("{why}: `{}` (during {command})", line.trim_end()));
    }

    /// Checks one untagged answer and updates the model.
    pub fn untagged(&mut self, command: &str, line: &str) {
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

pub struct Client {
    r: BufReader<TcpStream>,
    pub model: Model,
    next_tag: u32,
    /// Commands that did not end `OK`, or a connection closed under one.
    pub errors: Vec<String>,
    /// Commands sent.
    pub commands: usize,
}

impl Client {
    pub async fn login(addr: SocketAddr, user: &str, key: &str) -> Client {
        let mut c = Client {
            r: BufReader::new(connect(addr).await),
            model: Model::default(),
            next_tag: 0,
            errors: Vec::new(),
            commands: 0,
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
    pub async fn command(&mut self, command: &str, literal: Option<&[u8]>) -> String {
        self.next_tag += 1;
        self.commands += 1;
        let tag = format!("t{}", self.next_tag);
        let full = format!("{tag} {command}");
        // One write per line, as clients do: a line in two segments waits out Nagle and
        // delayed ACKs (40 ms) on loopback.
        let w = self.r.get_mut();
        w.write_all(format!("{full}\r\n").as_bytes())
            .await
            .expect("write");
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
            let mut data = bytes.to_vec();
            data.extend_from_slice(b"\r\n");
            self.r.get_mut().write_all(&data).await.expect("write");
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

    pub async fn select(&mut self) {
        self.model.uids.clear();
        self.command("SELECT INBOX", None).await;
    }

    /// One random step of the mix.
    pub async fn step(&mut self, rng: &mut Rng, i: usize) {
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

/// A connection with Nagle off, as IMAP clients have it.
async fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).await.expect("connect");
    s.set_nodelay(true).expect("TCP_NODELAY");
    s
}

/// How long a session of the mix runs.
#[derive(Debug, Clone, Copy)]
pub enum Limit {
    /// This many steps.
    Steps(usize),
    /// Until then.
    Until(std::time::Instant),
}

/// What one session of the mix was told that broke the rules, and how much it did.
#[derive(Debug, Default)]
pub struct SessionReport {
    /// Untagged answers that broke a rule, and commands that did not end `OK`.
    pub problems: Vec<String>,
    /// Changes by other sessions this one was told of.
    pub others: usize,
    /// Commands sent (LOGIN and LOGOUT included).
    pub commands: usize,
}

/// One session's run: log in, select, the mix (now and then a LOGOUT and a new session in
/// its place), log out.
pub async fn run_session(
    addr: SocketAddr,
    user: &str,
    key: &str,
    seed: u64,
    limit: Limit,
) -> SessionReport {
    let mut rng = Rng(seed);
    let mut report = SessionReport::default();
    let mut c = Client::login(addr, user, key).await;
    c.select().await;
    let mut i = 0;
    loop {
        let more = match limit {
            Limit::Steps(n) => i < n,
            Limit::Until(t) => std::time::Instant::now() < t,
        };
        if !more {
            break;
        }
        c.step(&mut rng, i).await;
        i += 1;
        if rng.below(25) == 0 {
            c.command("LOGOUT", None).await;
            report.absorb(c);
            c = Client::login(addr, user, key).await;
            c.select().await;
        }
    }
    c.command("LOGOUT", None).await;
    report.absorb(c);
    report
}

impl SessionReport {
    fn absorb(&mut self, c: Client) {
        self.problems.extend(c.model.violations);
        self.problems
            .extend(c.errors.into_iter().map(|e| format!("not OK: {e}")));
        self.others += c.model.others;
        self.commands += c.commands;
    }
}
