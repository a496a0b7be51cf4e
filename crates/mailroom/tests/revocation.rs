//! Issue #12: revoking a key reaches the sessions already open with it. An IMAP session
//! whose inbox key is rotated is told `* BYE` at its next command; one idling with a
//! scoped key that is deleted is told within 2 seconds. On SQLite and PostgreSQL.

use std::time::Duration;

use mailroom_testkit::{TestAccount, TestServer, on_both_backends};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

on_both_backends!(
    a_rotated_inbox_key_ends_its_imap_session,
    a_deleted_key_ends_an_idle_session_within_two_seconds,
);

struct Imap {
    r: BufReader<TcpStream>,
}

impl Imap {
    async fn login(s: &TestServer, user: &str, key: &str) -> Imap {
        let addr = s.server.as_ref().expect("running").imap_addr;
        let mut c = Imap {
            r: BufReader::new(TcpStream::connect(addr).await.expect("connect")),
        };
        assert!(c.line().await.starts_with("* OK"));
        let r = c.cmd("l", &format!("LOGIN {user} {key}")).await;
        assert!(r.last().is_some_and(|l| l.starts_with("l OK")), "{r:?}");
        c
    }

    async fn line(&mut self) -> String {
        let mut buf = Vec::new();
        self.r.read_until(b'\n', &mut buf).await.expect("read");
        String::from_utf8_lossy(&buf).into_owned()
    }

    async fn cmd(&mut self, tag: &str, command: &str) -> Vec<String> {
        let line = format!("{tag} {command}\r\n");
        self.r
            .get_mut()
            .write_all(line.as_bytes())
            .await
            .expect("write");
        let mut lines = Vec::new();
        loop {
            let l = self.line().await;
            if l.is_empty() {
                return lines;
            }
            let done = l.starts_with(&format!("{tag} "));
            lines.push(l);
            if done {
                return lines;
            }
        }
    }

    /// What the server sends until it closes the connection; fails after `limit`.
    async fn closed_within(&mut self, limit: Duration) -> String {
        let mut seen = Vec::new();
        match tokio::time::timeout(limit, self.r.read_to_end(&mut seen)).await {
            Ok(_) => String::from_utf8_lossy(&seen).into_owned(),
            Err(_) => panic!(
                "still open after {limit:?}: {}",
                String::from_utf8_lossy(&seen)
            ),
        }
    }
}

async fn post(s: &TestServer, key: &str, path: &str, body: Value) -> Value {
    let resp = s
        .http
        .post(s.url(path))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .expect("POST");
    assert!(resp.status().is_success(), "POST {path}: {}", resp.status());
    resp.json().await.expect("JSON")
}

async fn a_rotated_inbox_key_ends_its_imap_session(s: TestServer) {
    let a: TestAccount = s.new_account("rotated").await;
    let mut imap = Imap::login(&s, &a.email, &a.inbox_key).await;
    let ok = imap.cmd("n1", "NOOP").await;
    assert!(ok.last().is_some_and(|l| l.starts_with("n1 OK")), "{ok:?}");
    let rotated = post(
        &s,
        &a.account_key,
        &format!("/v1/inboxes/{}/rotate-key", a.inbox_id),
        serde_json::json!({}),
    )
    .await;
    let new_key = rotated["result"]["inbox_api_key"]
        .as_str()
        .expect("a new key")
        .to_owned();
    let bye = imap.cmd("n2", "NOOP").await;
    assert!(
        bye.first()
            .is_some_and(|l| l.starts_with("* BYE [AUTHORIZATIONFAILED]")),
        "{bye:?}"
    );
    assert!(
        !bye.iter().any(|l| l.starts_with("n2 OK")),
        "no command runs after: {bye:?}"
    );
    imap.closed_within(Duration::from_secs(2)).await;
    // The new key logs in as before.
    let mut again = Imap::login(&s, &a.email, &new_key).await;
    let ok = again.cmd("n3", "NOOP").await;
    assert!(ok.last().is_some_and(|l| l.starts_with("n3 OK")), "{ok:?}");
}

async fn a_deleted_key_ends_an_idle_session_within_two_seconds(s: TestServer) {
    let a = s.new_account("idler").await;
    let key = post(
        &s,
        &a.account_key,
        "/v1/keys",
        serde_json::json!({"name": "mail client", "scopes": ["imap"]}),
    )
    .await;
    let (id, secret) = (
        key["id"].as_str().expect("an id").to_owned(),
        key["apiKey"].as_str().expect("the key").to_owned(),
    );
    let mut imap = Imap::login(&s, &a.email, &secret).await;
    let r = imap.cmd("s", "SELECT INBOX").await;
    assert!(r.last().is_some_and(|l| l.starts_with("s OK")), "{r:?}");
    imap.r
        .get_mut()
        .write_all(b"i IDLE\r\n")
        .await
        .expect("write");
    assert!(imap.line().await.starts_with("+ "));
    let resp = s
        .http
        .delete(s.url(&format!("/v1/keys/{id}")))
        .bearer_auth(&a.account_key)
        .send()
        .await
        .expect("DELETE");
    assert!(resp.status().is_success(), "{}", resp.status());
    let rest = imap.closed_within(Duration::from_secs(2)).await;
    assert!(rest.contains("* BYE [AUTHORIZATIONFAILED]"), "{rest:?}");
}

/// POP3: the next command after the inbox key is rotated gets `-ERR` and the connection
/// closes; messages marked for deletion stay (no QUIT).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_inbox_key_ends_its_pop3_session() {
    let s = TestServer::start(mailroom_testkit::Backend::Sqlite)
        .await
        .expect("a server");
    let a = s.new_account("popper").await;
    s.deliver_smtp(&a.email, "Subject: keep\r\n\r\nkeep me\r\n")
        .await;
    let addr = s.server.as_ref().expect("running").pop3_addr;
    let stream = TcpStream::connect(addr).await.expect("connect");
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    let say = async |r: &mut BufReader<TcpStream>, cmd: &str| -> String {
        r.get_mut()
            .write_all(format!("{cmd}\r\n").as_bytes())
            .await
            .expect("write");
        let mut l = String::new();
        r.read_line(&mut l).await.expect("read");
        l
    };
    r.read_line(&mut line).await.expect("greeting");
    assert!(
        say(&mut r, &format!("USER {}", a.email))
            .await
            .starts_with("+OK")
    );
    assert!(
        say(&mut r, &format!("PASS {}", a.inbox_key))
            .await
            .starts_with("+OK 1 messages")
    );
    assert!(say(&mut r, "DELE 1").await.starts_with("+OK"));
    post(
        &s,
        &a.account_key,
        &format!("/v1/inboxes/{}/rotate-key", a.inbox_id),
        serde_json::json!({}),
    )
    .await;
    let answer = say(&mut r, "STAT").await;
    assert!(answer.starts_with("-ERR [AUTH]"), "{answer}");
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), r.read_to_end(&mut rest))
        .await
        .expect("closed")
        .expect("read");
    let list = s
        .get_json(
            &a.account_key,
            &format!("/v1/inboxes/{}/messages", a.inbox_id),
        )
        .await;
    assert_eq!(list["result"]["total"], 1, "the DELE was not applied");
    s.stop().await;
}

/// SMTP submission (Python's smtplib over STARTTLS): a session whose inbox key is rotated
/// gets `535` at its next command (a NOOP here), is logged out, and sends nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_stops_a_submission_session() {
    use std::io::{BufRead, Write};
    let s = TestServer::start(mailroom_testkit::Backend::Sqlite)
        .await
        .expect("a server");
    let a = s.new_account("submitter").await;
    s.set_tier(&a.account_id, mailroom_core::Tier::Developer)
        .await;
    let port = s.server.as_ref().expect("running").submission_addr.port();
    let script = r#"
import smtplib, sys
port, user, pw = sys.argv[1:4]
s = smtplib.SMTP("127.0.0.1", int(port), timeout=20)
s.starttls()
s.login(user, pw)
print(s.mail(user)[0], flush=True)
print(s.rset()[0], flush=True)
sys.stdin.readline()
print(s.noop()[0], flush=True)
print(s.mail(user)[0], flush=True)
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script, &port.to_string(), &a.email, &a.inbox_key])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("MAIL");
    assert_eq!(line.trim(), "250", "MAIL before the rotation");
    line.clear();
    out.read_line(&mut line).expect("RSET");
    post(
        &s,
        &a.account_key,
        &format!("/v1/inboxes/{}/rotate-key", a.inbox_id),
        serde_json::json!({}),
    )
    .await;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("write");
    line.clear();
    out.read_line(&mut line).expect("NOOP");
    assert_eq!(line.trim(), "535", "the next command after the rotation");
    line.clear();
    out.read_line(&mut line).expect("MAIL again");
    assert_eq!(line.trim(), "530", "logged out: MAIL needs a login again");
    let _ = child.wait();
    s.stop().await;
}
