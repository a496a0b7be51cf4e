//! Nothing acknowledged is lost: the built binary is loaded with many SMTP sessions,
//! killed with SIGKILL mid-run, and restarted on the same data directory; every message that
//! got a 250 is there, whole, and nothing half-written is.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(dir: &std::path::Path, http: u16, smtp: u16, dns: std::net::SocketAddr) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .args(["serve", "--dev", "--default-domain", "crash.test"])
        .current_dir(dir)
        .env("MAILROOM_HTTP_LISTEN", format!("127.0.0.1:{http}"))
        .env("MAILROOM_SMTP_LISTEN", format!("127.0.0.1:{smtp}"))
        .envs(
            [
                "MAILROOM_SUBMISSION_LISTEN",
                "MAILROOM_SUBMISSIONS_LISTEN",
                "MAILROOM_POP3_LISTEN",
                "MAILROOM_POP3S_LISTEN",
                "MAILROOM_IMAP_LISTEN",
                "MAILROOM_IMAPS_LISTEN",
            ]
            .map(|v| (v, "127.0.0.1:0")),
        )
        .env_remove("MAILROOM_DATABASE_URL")
        .env_remove("MAILROOM_DATA_DIR")
        .env("MAILROOM_LOG", "warn")
        .env("MAILROOM_DNS_RESOLVER", dns.to_string())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // The first start generates the DKIM key: allow for a slow, busy machine.
    for _ in 0..600 {
        if TcpStream::connect(("127.0.0.1", smtp)).is_ok() {
            return child;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the server did not start");
}

fn reply(r: &mut BufReader<TcpStream>) -> Option<String> {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        all.push_str(&line);
        if line.len() < 4 || line.as_bytes()[3] != b'-' {
            return Some(all);
        }
    }
}

/// Sends messages on one connection until `stop`; records (message id, marker) per 250.
fn sender(
    smtp: u16,
    to: String,
    worker: usize,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<(String, String)>>>,
) {
    let Ok(stream) = TcpStream::connect(("127.0.0.1", smtp)) else {
        return;
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    let cmd = |w: &mut TcpStream, r: &mut BufReader<TcpStream>, line: &str| -> Option<String> {
        w.write_all(line.as_bytes()).ok()?;
        reply(r)
    };
    if reply(&mut r).is_none() || cmd(&mut w, &mut r, "EHLO load\r\n").is_none() {
        return;
    }
    let filler = "x".repeat(2000);
    for n in 0.. {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let marker = format!("w{worker}-m{n}");
        let Some(a) = cmd(&mut w, &mut r, "MAIL FROM:<load@example.com>\r\n") else {
            return;
        };
        let Some(b) = cmd(&mut w, &mut r, &format!("RCPT TO:<{to}>\r\n")) else {
            return;
        };
        let Some(c) = cmd(&mut w, &mut r, "DATA\r\n") else {
            return;
        };
        if !(a.starts_with("250") && b.starts_with("250") && c.starts_with("354")) {
            return;
        }
        let body = format!("Subject: {marker}\r\n\r\n{filler}\r\nEND {marker}\r\n.\r\n");
        let Some(done) = cmd(&mut w, &mut r, &body) else {
            return;
        };
        if let Some(id) = done.strip_prefix("250 2.0.0 OK: queued as ") {
            acked.lock().unwrap().push((id.trim().to_owned(), marker));
        } else {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_message_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let (http, smtp) = (free_port(), free_port());
    let dns = mailroom_testkit::TestDns::start().await.unwrap();
    let mut server = start(dir.path(), http, smtp, dns.addr);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = format!("http://127.0.0.1:{http}");
    let created: serde_json::Value = client
        .post(format!("{base}/v1/inboxes"))
        .json(&serde_json::json!({"username": "durable"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = created["result"]["inbox_api_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let inbox = created["result"]["id"].as_str().unwrap().to_owned();

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..20)
        .map(|i| {
            let (stop, acked) = (stop.clone(), acked.clone());
            std::thread::spawn(move || sender(smtp, "durable@crash.test".into(), i, stop, acked))
        })
        .collect();
    // Let the load build up, then kill the server without warning.
    for _ in 0..100 {
        if acked.lock().unwrap().len() >= 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill().unwrap(); // SIGKILL
    server.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 50,
        "the load ran ({} acknowledged)",
        acked.len()
    );

    let mut server = start(dir.path(), http, smtp, dns.addr);
    for (id, marker) in &acked {
        let resp = client
            .get(format!("{base}/v1/inboxes/{inbox}/messages/{id}/raw"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            200,
            "acknowledged message {id} ({marker}) was lost"
        );
        let raw = resp.text().await.unwrap();
        assert!(
            raw.contains(&format!("Subject: {marker}\r\n"))
                && raw.ends_with(&format!("END {marker}\r\n")),
            "{id} is whole"
        );
    }
    // Nothing half-written: every stored message is a whole one.
    let list: serde_json::Value = client
        .get(format!("{base}/v1/inboxes/{inbox}/messages?limit=100"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let total = list["result"]["total"].as_u64().unwrap();
    assert!(total >= acked.len() as u64);
    for m in list["result"]["messages"].as_array().unwrap() {
        let raw = client
            .get(format!(
                "{base}/v1/inboxes/{inbox}/messages/{}/raw",
                m["id"].as_str().unwrap()
            ))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let subject = m["subject"].as_str().unwrap();
        assert!(
            raw.ends_with(&format!("END {subject}\r\n")),
            "a stored message is whole"
        );
    }
    server.kill().unwrap();
    server.wait().unwrap();
}
