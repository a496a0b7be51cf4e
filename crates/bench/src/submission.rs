//! Submission load: authenticated sessions (STARTTLS, AUTH PLAIN with an inbox key), each
//! sending messages one after another, as a mail client or an agent's SMTP library does.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mailroom_delivery::client::Connection;

pub struct SubmissionLoad {
    pub addr: SocketAddr,
    /// `None`: plain SMTP without TLS or AUTH (a reference such as smtp-sink).
    pub login: Option<(String, String)>,
    pub from: String,
    pub rcpt: String,
    pub sessions: usize,
    pub messages: usize,
    pub size: usize,
}

pub struct Outcome {
    pub accepted: usize,
    pub failed: usize,
    pub per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

fn message(size: usize, from: &str, rcpt: &str, session: usize, n: usize) -> Vec<u8> {
    let mut m = format!(
        "From: {from}\r\nTo: {rcpt}\r\nSubject: submission {session}-{n}\r\n\
         Message-ID: <s{session}.{n}@bench.example>\r\n\r\n"
    )
    .into_bytes();
    let line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n";
    while m.len() + line.len() < size {
        m.extend_from_slice(line);
    }
    m
}

async fn session(load: &SubmissionLoad, id: usize) -> anyhow::Result<(Vec<u32>, usize)> {
    let t = Duration::from_secs(60);
    let mut conn = Connection::connect(load.addr, t, t)
        .await?
        .map_err(|r| anyhow::anyhow!("greeting: {}", r.line()))?;
    conn.ehlo("bench.example").await?;
    if let Some((user, pass)) = &load.login {
        conn = match conn
            .starttls(
                "localhost",
                mailroom_delivery::tls::opportunistic(),
                "bench.example",
            )
            .await?
        {
            Ok(c) => c,
            Err((_, r)) => bail!("STARTTLS refused: {}", r.line()),
        };
        let auth = conn.auth_plain(user, pass).await?;
        if !auth.is_positive() {
            bail!("AUTH refused: {}", auth.line());
        }
    }
    let mut lat = Vec::with_capacity(load.messages);
    let mut failed = 0;
    for n in 0..load.messages {
        let body = message(load.size, &load.from, &load.rcpt, id, n);
        let started = Instant::now();
        let mail = conn.command(&format!("MAIL FROM:<{}>", load.from)).await?;
        let rcpt = conn.command(&format!("RCPT TO:<{}>", load.rcpt)).await?;
        if !mail.is_positive() || !rcpt.is_positive() {
            failed += 1;
            conn.command("RSET").await?;
            continue;
        }
        match conn.data(&body).await? {
            Ok(done) if done.is_positive() => lat.push(started.elapsed().as_micros() as u32),
            _ => failed += 1,
        }
    }
    conn.quit().await;
    Ok((lat, failed))
}

pub async fn run(load: SubmissionLoad) -> anyhow::Result<Outcome> {
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
        let (lat, f) = t.await?.context("a submission session failed")?;
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
    Ok(Outcome {
        accepted: all.len(),
        failed,
        per_sec: all.len() as f64 / secs,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
    })
}
