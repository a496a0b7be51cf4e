//! A small HTTP/1.1 keep-alive load generator: each connection sends one request, reads the
//! whole answer (Content-Length bodies, as axum sends), and repeats until the time is up.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, Clone)]
pub struct Request {
    bytes: Vec<u8>,
}

impl Request {
    pub fn get(addr: SocketAddr, path: &str, key: Option<&str>) -> Request {
        Self::build("GET", addr, path, key, "")
    }

    pub fn post(addr: SocketAddr, path: &str, key: Option<&str>, body: &str) -> Request {
        Self::build("POST", addr, path, key, body)
    }

    fn build(method: &str, addr: SocketAddr, path: &str, key: Option<&str>, body: &str) -> Request {
        let mut s = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
        if let Some(k) = key {
            s.push_str(&format!("Authorization: Bearer {k}\r\n"));
        }
        if method == "POST" {
            s.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        s.push_str("\r\n");
        s.push_str(body);
        Request {
            bytes: s.into_bytes(),
        }
    }
}

pub struct Load {
    req: Request,
    connections: usize,
    duration: Duration,
}

impl Load {
    pub fn new(req: Request, connections: usize, duration: Duration) -> Load {
        Load {
            req,
            connections,
            duration,
        }
    }
}

#[derive(Debug)]
pub struct Outcome {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
}

/// Reads one answer; returns its status and body.
async fn read_answer(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<(u16, Vec<u8>)> {
    buf.clear();
    let mut chunk = [0u8; 16 * 1024];
    let header_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed");
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..header_end]).context("non-UTF-8 header")?;
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status")?;
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .context("answer without Content-Length")?;
    while buf.len() < header_end + len {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed mid-body");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok((status, buf[header_end..header_end + len].to_vec()))
}

/// One request on a new connection; its status.
pub async fn one(addr: SocketAddr, req: &Request) -> anyhow::Result<u16> {
    Ok(one_body(addr, req).await?.0)
}

async fn one_body(addr: SocketAddr, req: &Request) -> anyhow::Result<(u16, serde_json::Value)> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(&req.bytes).await?;
    let mut buf = Vec::new();
    let (status, body) = read_answer(&mut s, &mut buf).await?;
    Ok((
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    ))
}

pub async fn create_account(addr: SocketAddr) -> anyhow::Result<(String, String, String)> {
    let (status, v) = one_body(addr, &Request::post(addr, "/v1/inboxes", None, "")).await?;
    if status != 201 {
        bail!("creating an account: {status} {v}");
    }
    let s = |k: &str| v["result"][k].as_str().map(str::to_owned).context("field");
    Ok((s("account_api_key")?, s("id")?, s("inbox_api_key")?))
}

pub async fn account_id(addr: SocketAddr, key: &str) -> anyhow::Result<String> {
    let (_, v) = one_body(addr, &Request::get(addr, "/v1/account", Some(key))).await?;
    v["result"]["account_id"]
        .as_str()
        .map(str::to_owned)
        .context("account id")
}

pub async fn create_inboxes(addr: SocketAddr, key: &str, n: usize) -> anyhow::Result<()> {
    for _ in 0..n {
        let (status, v) =
            one_body(addr, &Request::post(addr, "/v1/inboxes", Some(key), "")).await?;
        if status != 201 {
            bail!("creating an inbox: {status} {v}");
        }
    }
    Ok(())
}

pub async fn run_load(addr: SocketAddr, load: Load) -> anyhow::Result<Outcome> {
    let start = Instant::now();
    let deadline = start + load.duration;
    let mut tasks = Vec::new();
    for _ in 0..load.connections {
        let req = load.req.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(100_000);
            let mut errors = 0u64;
            let mut buf = Vec::with_capacity(16 * 1024);
            let mut conn: Option<TcpStream> = None;
            while Instant::now() < deadline {
                if conn.is_none() {
                    match TcpStream::connect(addr).await {
                        Ok(s) => {
                            let _ = s.set_nodelay(true);
                            conn = Some(s);
                        }
                        Err(_) => {
                            errors += 1;
                            continue;
                        }
                    }
                }
                let Some(s) = conn.as_mut() else { continue };
                let t = Instant::now();
                let ok = match s.write_all(&req.bytes).await {
                    Ok(()) => read_answer(s, &mut buf)
                        .await
                        .map(|(st, _)| st < 400)
                        .unwrap_or(false),
                    Err(_) => false,
                };
                if ok {
                    lat.push(t.elapsed().as_micros() as u32);
                } else {
                    errors += 1;
                    conn = None;
                }
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await?;
        all.extend(lat);
        errors += e;
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
        rps: all.len() as f64 / secs,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        errors,
    })
}

/// POSTs JSON and returns the answer's JSON (any status).
pub async fn post_json(
    addr: SocketAddr,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> anyhow::Result<serde_json::Value> {
    Ok(one_body(addr, &Request::post(addr, path, key, body))
        .await?
        .1)
}
