//! SMTP load: N concurrent clients, each sending M messages of S bytes (with PIPELINING of
//! MAIL/RCPT/DATA), timing each message from MAIL to the final 250. Either one session per
//! client for all its messages, or a new connection per message (greeting, EHLO, the
//! transaction, QUIT), the way Postfix's `smtp-source` and most MTAs deliver.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

pub struct SmtpLoad {
    pub addr: SocketAddr,
    pub rcpt: String,
    pub sessions: usize,
    pub messages: usize,
    pub size: usize,
    /// A new connection (and EHLO) for every message.
    pub connection_per_message: bool,
}

pub struct SmtpOutcome {
    pub accepted: usize,
    pub failed: usize,
    pub per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

async fn reply(r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> anyhow::Result<String> {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            bail!("connection closed");
        }
        all.push_str(&line);
        if line.len() < 4 || line.as_bytes()[3] != b'-' {
            return Ok(all);
        }
    }
}

fn message(size: usize, session: usize, n: usize, rcpt: &str) -> Vec<u8> {
    let mut m = format!(
        "From: load@example.com\r\nTo: {rcpt}\r\nSubject: load {session}-{n}\r\n\
         Message-ID: <{session}.{n}@bench.example>\r\n\r\n"
    )
    .into_bytes();
    let line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n";
    while m.len() + line.len() < size {
        m.extend_from_slice(line);
    }
    while m.len() < size - 2 {
        m.push(b'x');
    }
    m.extend_from_slice(b"\r\n.\r\n");
    m
}

type Reader = BufReader<tokio::net::tcp::OwnedReadHalf>;
type Writer = tokio::net::tcp::OwnedWriteHalf;

/// Connects, reads the greeting and says EHLO.
async fn open(load: &SmtpLoad) -> anyhow::Result<(Reader, Writer)> {
    let stream = TcpStream::connect(load.addr).await?;
    stream.set_nodelay(true)?;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let greeting = reply(&mut r).await?;
    if !greeting.starts_with("220") {
        bail!("greeting: {greeting}");
    }
    w.write_all(b"EHLO bench.example\r\n").await?;
    let ehlo = reply(&mut r).await?;
    if !ehlo.starts_with("250") {
        bail!("EHLO refused: {ehlo}");
    }
    Ok((r, w))
}

/// One transaction; `Ok(true)` when the message was accepted.
async fn transaction(
    r: &mut Reader,
    w: &mut Writer,
    envelope: &str,
    body: &[u8],
) -> anyhow::Result<bool> {
    w.write_all(envelope.as_bytes()).await?;
    let (a, b, c) = (reply(r).await?, reply(r).await?, reply(r).await?);
    if !(a.starts_with("250") && b.starts_with("250") && c.starts_with("354")) {
        w.write_all(b"RSET\r\n").await?;
        reply(r).await?;
        return Ok(false);
    }
    w.write_all(body).await?;
    Ok(reply(r).await?.starts_with("250"))
}

async fn session(load: &SmtpLoad, id: usize) -> anyhow::Result<(Vec<u32>, usize)> {
    let mut lat = Vec::with_capacity(load.messages);
    let mut failed = 0;
    let envelope = format!(
        "MAIL FROM:<load@example.com>\r\nRCPT TO:<{}>\r\nDATA\r\n",
        load.rcpt
    );
    let mut conn = None;
    for n in 0..load.messages {
        let body = message(load.size, id, n, &load.rcpt);
        let t = Instant::now();
        let (r, w) = match conn.as_mut() {
            Some(c) => c,
            None => match open(load).await {
                Ok(c) => conn.insert(c),
                Err(_) if load.connection_per_message => {
                    // A refused connection (421) counts as a refused message.
                    failed += 1;
                    continue;
                }
                Err(e) => return Err(e),
            },
        };
        if transaction(r, w, &envelope, &body).await? {
            lat.push(t.elapsed().as_micros() as u32);
        } else {
            failed += 1;
        }
        if load.connection_per_message
            && let Some((mut r, mut w)) = conn.take()
        {
            w.write_all(b"QUIT\r\n").await?;
            let _ = reply(&mut r).await;
        }
    }
    if let Some((_, mut w)) = conn {
        w.write_all(b"QUIT\r\n").await?;
    }
    Ok((lat, failed))
}

pub async fn run(load: SmtpLoad) -> anyhow::Result<SmtpOutcome> {
    let load = std::sync::Arc::new(load);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..load.sessions {
        let load = load.clone();
        tasks.push(tokio::spawn(async move { session(&load, i).await }));
    }
    let mut all = Vec::new();
    let mut failed = 0;
    for t in tasks {
        let (lat, f) = t.await?.context("an SMTP session failed")?;
        all.extend(lat);
        failed += f;
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| {
        if all.is_empty() {
            0.0
        } else {
            all[((all.len() as f64 * p) as usize).min(all.len() - 1)] as f64 / 1000.0
        }
    };
    Ok(SmtpOutcome {
        accepted: all.len(),
        failed,
        per_sec: all.len() as f64 / secs,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
    })
}

/// Waits until something accepts TCP connections on `addr`.
pub async fn wait_listening(addr: SocketAddr) -> anyhow::Result<()> {
    for _ in 0..200 {
        if TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("nothing listens on {addr}")
}
