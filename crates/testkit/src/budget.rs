//! Helpers for budget tests: every budget test pushes one tenant past a limit and shows
//! that another tenant, from another address, is still served within a second.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

use crate::TestServer;

/// The address "another tenant" connects from: loopback, but not 127.0.0.1, so that
/// per-address budgets spent by the test's attacker do not apply to it.
pub const OTHER_ADDRESS: [u8; 4] = [127, 0, 0, 2];

/// Connects to `addr` from the source address `from` (any 127.0.0.0/8 address works on
/// Linux loopback).
pub async fn connect_from(addr: SocketAddr, from: IpAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("a socket");
    socket
        .bind(SocketAddr::new(from, 0))
        .expect("bind to the source address");
    socket.connect(addr).await.expect("connect")
}

/// Runs `f`, failing the test if it takes a second or more: the promise every budget test
/// makes about the tenants it does not push.
pub async fn within_a_second<F: Future>(what: &str, f: F) -> F::Output {
    let started = std::time::Instant::now();
    match tokio::time::timeout(Duration::from_secs(1), f).await {
        Ok(v) => v,
        Err(_) => panic!(
            "{what}: not served within a second (waited {:?})",
            started.elapsed()
        ),
    }
}

/// Reads lines from `r` until one that does not continue (SMTP's `250-`), and returns it.
pub async fn read_reply<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> String {
    loop {
        let mut line = String::new();
        let n = r.read_line(&mut line).await.expect("a reply line");
        if n == 0 || line.as_bytes().get(3) != Some(&b'-') {
            return line;
        }
    }
}

impl TestServer {
    /// The sum of `mailroom_refusals_total{door, reason}` on `/metrics`. The recorder is
    /// shared by every server of the test process, so compare before and after.
    pub async fn refusals(&self, door: &str, reason: &str) -> u64 {
        let text = self
            .http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("the metrics text");
        let door = format!("door=\"{door}\"");
        let reason = format!("reason=\"{reason}\"");
        text.lines()
            .filter(|l| l.starts_with("mailroom_refusals_total{"))
            .filter(|l| l.contains(&door) && l.contains(&reason))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// Another tenant's whole SMTP delivery, from [`OTHER_ADDRESS`]: greeting, EHLO, MAIL,
    /// RCPT, DATA and the final 250. Fails unless it is all done within a second.
    pub async fn other_tenant_delivers(&self, to: &str) {
        let addr = self.server.as_ref().expect("running").smtp_addr;
        within_a_second("another tenant's SMTP delivery", async {
            let stream = connect_from(addr, IpAddr::from(OTHER_ADDRESS)).await;
            let (r, mut w) = stream.into_split();
            let mut r = BufReader::new(r);
            assert!(read_reply(&mut r).await.starts_with("220"));
            for (cmd, want) in [
                ("EHLO other.test".to_owned(), "250"),
                ("MAIL FROM:<other@example.com>".to_owned(), "250"),
                (format!("RCPT TO:<{to}>"), "250"),
                ("DATA".to_owned(), "354"),
                ("Subject: still served\r\n\r\nhello\r\n.".to_owned(), "250"),
                ("QUIT".to_owned(), "221"),
            ] {
                w.write_all(format!("{cmd}\r\n").as_bytes())
                    .await
                    .expect("write");
                let reply = read_reply(&mut r).await;
                assert!(reply.starts_with(want), "{cmd}: {reply}");
            }
        })
        .await;
    }

    /// Another tenant's API call (`GET /v1/account` with its key), from [`OTHER_ADDRESS`],
    /// answered 200 within a second.
    pub async fn other_tenant_reads_api(&self, account_key: &str) {
        let client = reqwest::Client::builder()
            .no_proxy()
            .local_address(IpAddr::from(OTHER_ADDRESS))
            .build()
            .expect("an HTTP client");
        within_a_second("another tenant's API call", async {
            let resp = client
                .get(self.url("/v1/account"))
                .bearer_auth(account_key)
                .send()
                .await
                .expect("GET /v1/account");
            assert_eq!(resp.status().as_u16(), 200);
        })
        .await;
    }
}
