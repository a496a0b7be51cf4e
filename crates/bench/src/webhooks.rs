//! Webhook figures: the delay from an SMTP `250` to the webhook arriving at a local
//! receiver, and events delivered per second under a burst.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Arrival times by subject.
#[derive(Clone, Default)]
pub struct Arrivals(pub Arc<Mutex<HashMap<String, Instant>>>);

impl Arrivals {
    pub fn len(&self) -> usize {
        self.0.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn get(&self, subject: &str) -> Option<Instant> {
        self.0.lock().ok()?.get(subject).copied()
    }
}

/// A receiver answering 200 and noting when each message's webhook arrived.
pub async fn receiver() -> anyhow::Result<(SocketAddr, Arrivals)> {
    let arrivals = Arrivals::default();
    let rec = arrivals.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let rec = rec.clone();
            async move {
                let at = Instant::now();
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&body)
                    && let Some(subject) = v["data"]["subject"].as_str()
                    && let Ok(mut m) = rec.0.lock()
                {
                    m.insert(subject.to_owned(), at);
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, arrivals))
}

/// Sends one message on a fresh SMTP session; returns when the 250 arrived.
pub async fn send_one(smtp: SocketAddr, to: &str, subject: &str) -> anyhow::Result<Instant> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let stream = tokio::net::TcpStream::connect(smtp).await?;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    let mut read_reply =
        async |r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>| -> anyhow::Result<String> {
            loop {
                line.clear();
                r.read_line(&mut line).await?;
                if line.is_empty() {
                    bail!("closed");
                }
                if line.as_bytes().get(3) != Some(&b'-') {
                    return Ok(line.clone());
                }
            }
        };
    read_reply(&mut r).await?;
    w.write_all(
        format!("EHLO bench\r\nMAIL FROM:<b@example.com>\r\nRCPT TO:<{to}>\r\nDATA\r\n").as_bytes(),
    )
    .await?;
    for _ in 0..4 {
        read_reply(&mut r).await?;
    }
    w.write_all(format!("Subject: {subject}\r\n\r\nx\r\n.\r\n").as_bytes())
        .await?;
    let done = read_reply(&mut r).await?;
    let at = Instant::now();
    if !done.starts_with("250") {
        bail!("refused: {done}");
    }
    w.write_all(b"QUIT\r\n").await?;
    Ok(at)
}

pub async fn wait_for(arrivals: &Arrivals, n: usize, limit: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    while arrivals.len() < n {
        if start.elapsed() > limit {
            bail!("only {} of {n} webhooks arrived", arrivals.len());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

pub fn create_webhook_body(url: &str) -> String {
    serde_json::json!({"url": url, "events": ["message.received"]}).to_string()
}

pub fn field(v: &serde_json::Value, path: &str) -> anyhow::Result<String> {
    v.pointer(path)
        .and_then(|x| x.as_str())
        .map(str::to_owned)
        .with_context(|| format!("{path} in {v}"))
}
