//! POP3 with clients nobody here wrote (Python's poplib, curl), over the same store as the
//! API.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::Command;

use mailroom_testkit::{Backend, TestAccount, TestServer, on_both_backends};
use serde_json::Value;

on_both_backends!(poplib_reads_what_the_api_shows_and_deletes_into_trash);

async fn deliver(s: &TestServer, to: &str, subject: &str, body: &str) {
    s.deliver_smtp(to, &format!("Subject: {subject}\r\n\r\n{body}"))
        .await;
}

fn poplib(port: u16, a: &TestAccount, extra: &[&str]) -> Value {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/clients/pop3_fetch.py"
    );
    let out = Command::new("python3")
        .arg(script)
        .arg(port.to_string())
        .arg(&a.email)
        .arg(&a.inbox_key)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn api(s: &TestServer, a: &TestAccount, path: &str) -> Value {
    s.get_json(&a.inbox_key, path).await
}

async fn poplib_reads_what_the_api_shows_and_deletes_into_trash(s: TestServer) {
    let a = s.new_account("popper").await;
    // A line starting with a dot: stuffed on the SMTP wire, stored as ".dot line", which
    // POP3 must stuff again.
    deliver(&s, &a.email, "first", "one\r\n.dot line").await;
    deliver(&s, &a.email, "second", "two").await;
    let port = s.server.as_ref().unwrap().pop3_addr.port();
    let report = poplib(port, &a, &[]);
    let caps: Vec<&str> = report["caps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for cap in ["TOP", "UIDL", "USER", "SASL", "RESP-CODES"] {
        assert!(caps.contains(&cap), "{cap}: {caps:?}");
    }
    assert_eq!(report["count"], 2);
    let msgs = report["messages"].as_array().unwrap();
    // Oldest first; UIDL is the API's message id; RETR is byte-exact with /raw.
    let list = api(
        &s,
        &a,
        &format!("/v1/inboxes/{}/messages?limit=10", a.inbox_id),
    )
    .await;
    let api_ids: Vec<&str> = list["result"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    let pop_ids: Vec<&str> = msgs.iter().map(|m| m["uidl"].as_str().unwrap()).collect();
    assert_eq!(pop_ids, api_ids);
    let raw = s
        .http
        .get(s.url(&format!(
            "/v1/inboxes/{}/messages/{}/raw",
            a.inbox_id, api_ids[0]
        )))
        .bearer_auth(&a.inbox_key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        msgs[0]["raw"].as_str().unwrap(),
        raw,
        "RETR is byte-exact (dot-stuffing undone by poplib)"
    );
    assert!(raw.contains("\r\n.dot line\r\n"), "{raw}");
    assert!(
        msgs[0]["top"].as_str().unwrap().contains("Subject: first")
            && !msgs[0]["top"].as_str().unwrap().contains("dot line"),
        "TOP 0 is headers only"
    );
    assert_eq!(
        report["size"].as_i64().unwrap(),
        msgs.iter()
            .map(|m| m["raw"].as_str().unwrap().len() as i64)
            .sum::<i64>()
    );
    // RETR marked them read, as the API shows.
    let unread = api(
        &s,
        &a,
        &format!("/v1/inboxes/{}/messages?unread=true", a.inbox_id),
    )
    .await;
    assert_eq!(unread["result"]["total"], 0);
    // DELE + QUIT moves the message to Trash; the next session sees one message.
    poplib(port, &a, &["--delete-first"]);
    let trash = api(
        &s,
        &a,
        &format!("/v1/inboxes/{}/messages?mailbox=Trash", a.inbox_id),
    )
    .await;
    assert_eq!(trash["result"]["messages"][0]["id"], api_ids[0]);
    let again = poplib(
        s.server.as_ref().unwrap().pop3s_addr.port(),
        &a,
        &["--implicit-tls"],
    );
    assert_eq!(again["count"], 1, "over implicit TLS too");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_reads_and_bad_logins_are_refused() {
    let s = TestServer::start(Backend::Sqlite).await.unwrap();
    let a = s.new_account("curled").await;
    deliver(&s, &a.email, "for curl", "hello curl").await;
    let port = s.server.as_ref().unwrap().pop3_addr.port();
    // curl's POP3 client, plain text on loopback (allowed in --dev).
    let out = Command::new("curl")
        .args([
            "-s",
            &format!("pop3://127.0.0.1:{port}/1"),
            "-u",
            &format!("{}:{}", a.email, a.inbox_key),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Subject: for curl") && text.contains("hello curl"),
        "{text}"
    );
    // A raw session: wrong password, commands before login, unknown commands.
    let mut c = BufReader::new(TcpStream::connect(("127.0.0.1", port)).unwrap());
    let mut line = String::new();
    c.read_line(&mut line).unwrap();
    assert!(line.starts_with("+OK"));
    let mut cmd = |l: &str| {
        c.get_mut()
            .write_all(format!("{l}\r\n").as_bytes())
            .unwrap();
        let mut line = String::new();
        c.read_line(&mut line).unwrap();
        line
    };
    assert!(cmd("STAT").starts_with("-ERR log in first"));
    assert!(cmd("USER curled@mailroom.test").starts_with("+OK"));
    assert!(cmd("PASS mr_inb_wrongwrongwrongwrongwrongwrongwr").starts_with("-ERR [AUTH]"));
    assert!(cmd("FROB").starts_with("-ERR unknown command"));
    assert!(cmd(&format!("USER {} {}", "x".repeat(600), "y")).starts_with("-ERR line too long"));
    assert!(cmd("QUIT").starts_with("+OK"));
    s.stop().await;
    // Without --dev, plain text logins need STLS first.
    let s = TestServer::start_with(Backend::Sqlite, |c| c.dev = false)
        .await
        .unwrap();
    let port = s.server.as_ref().unwrap().pop3_addr.port();
    let mut c = BufReader::new(TcpStream::connect(("127.0.0.1", port)).unwrap());
    let mut line = String::new();
    c.read_line(&mut line).unwrap();
    c.get_mut()
        .write_all(b"USER someone@mailroom.test\r\n")
        .unwrap();
    line.clear();
    c.read_line(&mut line).unwrap();
    assert!(line.starts_with("-ERR [AUTH] use STLS first"), "{line}");
    s.stop().await;
}
