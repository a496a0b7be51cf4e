//! IMAP load: a small client of our own (tags, literals in answers), sessions doing
//! SELECT / FETCH / STORE / SEARCH for a while, and idle connections for memory. The same
//! code drives Mailroom and the reference (Dovecot).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One IMAP connection.
pub struct Client {
    r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: tokio::net::tcp::OwnedWriteHalf,
    n: u64,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Client> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        let (r, w) = s.into_split();
        let mut c = Client {
            r: BufReader::with_capacity(16 * 1024, r),
            w,
            n: 0,
        };
        let mut greeting = String::new();
        c.r.read_line(&mut greeting).await?;
        if !greeting.starts_with("* OK") {
            bail!("greeting: {greeting}");
        }
        Ok(c)
    }

    /// Sends a command and reads its answer (literals included); `Ok` only for a tagged OK.
    pub async fn cmd(&mut self, command: &str) -> anyhow::Result<Vec<u8>> {
        self.n += 1;
        let tag = format!("b{}", self.n);
        self.w
            .write_all(format!("{tag} {command}\r\n").as_bytes())
            .await?;
        let mut all = Vec::new();
        loop {
            let mut line = Vec::new();
            if self.r.read_until(b'\n', &mut line).await? == 0 {
                bail!("connection closed during {command}");
            }
            // A literal: its bytes, then the rest of the line.
            while let Some(n) = literal_len(&line) {
                let start = line.len();
                line.resize(start + n, 0);
                self.r.read_exact(&mut line[start..]).await?;
                if self.r.read_until(b'\n', &mut line).await? == 0 {
                    bail!("connection closed in a literal");
                }
            }
            let tagged = line.starts_with(tag.as_bytes()) && line.get(tag.len()) == Some(&b' ');
            all.extend_from_slice(&line);
            if tagged {
                let rest = &line[tag.len() + 1..];
                if rest.starts_with(b"OK") {
                    return Ok(all);
                }
                bail!("{command}: {}", String::from_utf8_lossy(&line));
            }
        }
    }

    pub async fn login(&mut self, user: &str, pass: &str) -> anyhow::Result<()> {
        self.cmd(&format!("LOGIN {user} {pass}")).await?;
        Ok(())
    }

    /// APPENDs a message with a synchronizing literal.
    pub async fn append(&mut self, mailbox: &str, msg: &[u8]) -> anyhow::Result<()> {
        self.n += 1;
        let tag = format!("b{}", self.n);
        self.w
            .write_all(format!("{tag} APPEND {mailbox} {{{}}}\r\n", msg.len()).as_bytes())
            .await?;
        let mut line = String::new();
        self.r.read_line(&mut line).await?;
        if !line.starts_with('+') {
            bail!("APPEND: {line}");
        }
        self.w.write_all(msg).await?;
        self.w.write_all(b"\r\n").await?;
        loop {
            let mut line = String::new();
            if self.r.read_line(&mut line).await? == 0 {
                bail!("closed during APPEND");
            }
            if line.starts_with(&tag) {
                if line[tag.len()..].trim_start().starts_with("OK") {
                    return Ok(());
                }
                bail!("APPEND: {line}");
            }
        }
    }
}

fn literal_len(line: &[u8]) -> Option<usize> {
    let l = line.strip_suffix(b"\r\n")?;
    let inner = l.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|&b| b == b'{')?;
    std::str::from_utf8(&inner[open + 1..]).ok()?.parse().ok()
}

/// A message of about `size` bytes.
pub fn message(n: usize, size: usize) -> Vec<u8> {
    let mut m = format!(
        "From: load{}@example.com\r\nTo: bench@bench.test\r\nSubject: load message {n}\r\n\
         Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{n}@bench.example>\r\n\r\n",
        n % 7
    )
    .into_bytes();
    let line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n";
    while m.len() + line.len() < size {
        m.extend_from_slice(line);
    }
    m
}

/// Fills a server's INBOX with `count` messages.
pub async fn populate(
    addr: SocketAddr,
    user: &str,
    pass: &str,
    count: usize,
    size: usize,
) -> anyhow::Result<()> {
    let mut c = Client::connect(addr).await?;
    c.login(user, pass).await?;
    for n in 0..count {
        c.append("INBOX", &message(n, size)).await?;
    }
    c.cmd("LOGOUT").await.ok();
    Ok(())
}

/// The operations measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `SELECT INBOX`.
    Select,
    /// `UID FETCH <one> (FLAGS ENVELOPE BODY.PEEK[])` of a random message.
    FetchOne,
    /// `FETCH 1:* (UID FLAGS)`: what a client does to resynchronise.
    FetchFlags,
    /// `UID STORE <one> +FLAGS/-FLAGS (\Flagged)`, alternating.
    Store,
    /// `UID SEARCH UNSEEN FROM load3`: flags and a header.
    Search,
}

impl Op {
    pub const ALL: [Op; 5] = [
        Op::Select,
        Op::FetchOne,
        Op::FetchFlags,
        Op::Store,
        Op::Search,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Op::Select => "SELECT INBOX",
            Op::FetchOne => "UID FETCH one (FLAGS ENVELOPE BODY.PEEK[])",
            Op::FetchFlags => "FETCH 1:* (UID FLAGS)",
            Op::Store => "UID STORE one ±FLAGS (\\Flagged)",
            Op::Search => "UID SEARCH UNSEEN FROM load3",
        }
    }
}

/// Runs `op` from `sessions` logged-in sessions (INBOX selected) for `duration`; ops/s.
pub async fn run_op(
    addr: SocketAddr,
    user: &str,
    pass: &str,
    sessions: usize,
    count: usize,
    op: Op,
    duration: Duration,
) -> anyhow::Result<f64> {
    let done = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for _ in 0..sessions {
        let mut c = Client::connect(addr).await?;
        c.login(user, pass).await?;
        c.cmd("SELECT INBOX").await?;
        clients.push(c);
    }
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for (i, mut c) in clients.into_iter().enumerate() {
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let mut k: usize = i * 7919;
            let mut round: usize = 0;
            let mut uid = 1;
            while Instant::now() < deadline {
                // A new random message every other command, so that a STORE pair sets and
                // then clears a flag on the same message (both are real changes).
                if round.is_multiple_of(2) {
                    k = k
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407)
                        >> 1;
                    uid = k % count + 1;
                }
                round += 1;
                let command = match op {
                    Op::Select => "SELECT INBOX".to_owned(),
                    Op::FetchOne => format!("UID FETCH {uid} (FLAGS ENVELOPE BODY.PEEK[])"),
                    Op::FetchFlags => "FETCH 1:* (UID FLAGS)".to_owned(),
                    Op::Store => format!(
                        "UID STORE {uid} {}FLAGS.SILENT (\\Flagged)",
                        if round % 2 == 1 { '+' } else { '-' }
                    ),
                    Op::Search => "UID SEARCH UNSEEN FROM load3".to_owned(),
                };
                c.cmd(&command).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            c.cmd("LOGOUT").await.ok();
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await?.context("an IMAP session failed")?;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64())
}

/// Opens `n` connections and logs each in (and SELECTs INBOX with `select`); they stay
/// open while the returned clients live.
impl Client {
    /// Announces a synchronizing literal of `size` bytes on APPEND and, if the server asks
    /// for it, sends only `send` bytes of it (the command stays open). `Ok(true)`: the
    /// server sent the `+` continuation; `Ok(false)`: it refused (`NO [LIMIT]`).
    pub async fn start_append(&mut self, size: usize, send: usize) -> anyhow::Result<bool> {
        self.n += 1;
        let tag = format!("b{}", self.n);
        self.w
            .write_all(format!("{tag} APPEND INBOX {{{size}}}\r\n").as_bytes())
            .await?;
        let mut line = String::new();
        self.r.read_line(&mut line).await?;
        if line.starts_with(&format!("{tag} NO")) {
            return Ok(false);
        }
        if !line.starts_with('+') {
            bail!("APPEND: {line}");
        }
        let chunk = vec![b'x'; 64 * 1024];
        let mut left = send.min(size);
        while left > 0 {
            let n = left.min(chunk.len());
            self.w.write_all(&chunk[..n]).await?;
            left -= n;
        }
        Ok(true)
    }
}

pub async fn idle_connections(
    addr: SocketAddr,
    user: &str,
    pass: &str,
    n: usize,
    select: bool,
) -> anyhow::Result<Vec<Client>> {
    let mut all = Vec::with_capacity(n);
    let mut pending = Vec::new();
    for i in 0..n {
        let (user, pass) = (user.to_owned(), pass.to_owned());
        pending.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await?;
            c.login(&user, &pass).await?;
            if select {
                c.cmd("SELECT INBOX").await?;
            }
            anyhow::Ok(c)
        }));
        if pending.len() == 100 || i + 1 == n {
            for t in pending.drain(..) {
                all.push(t.await??);
            }
        }
    }
    Ok(all)
}
