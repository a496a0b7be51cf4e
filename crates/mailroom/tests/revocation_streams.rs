//! Issue #12: revocation reaches open HTTP streams. An SSE stream ends within 2 s with a
//! last `revoked` event saying why, and a waiting long poll answers 401 (404 for a deleted
//! inbox), when the key that opened it is rotated or deleted, its inbox deleted, or its user
//! disabled or deleted; a user's next request is refused. Lowering a tier (with the
//! `mailroom admin set-tier` binary, another process) reaches open sessions within 2 s:
//! streams and IDLE past the new stream cap end, mail past the new storage limit is refused
//! at RCPT, and submission with a credential the tier no longer allows gets 535. On SQLite
//! and PostgreSQL. (There is no WebSocket route.)

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::time::{Duration, Instant};

use mailroom_testkit::{Backend, TestAccount, TestServer, on_both_backends};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

on_both_backends!(
    revoked_credentials_end_event_streams,
    revoked_credentials_end_waiting_long_polls,
);

/// What the tests allow between a change and the end of the sessions it reaches.
const WITHIN: Duration = Duration::from_secs(2);

async fn call(s: &TestServer, method: &str, path: &str, key: &str, body: Option<Value>) -> Value {
    let (status, value, _) = s.call(method, path, Some(key), body).await;
    assert!(
        (200..300).contains(&status),
        "{method} {path}: {status} {value}"
    );
    value
}

/// A second inbox of `a`'s account.
async fn second_inbox(s: &TestServer, a: &TestAccount, name: &str) -> TestAccount {
    let r = call(
        s,
        "POST",
        "/v1/inboxes",
        &a.account_key,
        Some(json!({"username": name})),
    )
    .await;
    let r = &r["result"];
    TestAccount {
        inbox_id: r["id"].as_str().unwrap().to_owned(),
        inbox_key: r["inbox_api_key"].as_str().unwrap().to_owned(),
        email: r["email"].as_str().unwrap().to_owned(),
        ..a.clone()
    }
}

/// A user of `a`'s account and an access token of theirs: (user id, token).
async fn user_token(s: &TestServer, a: &TestAccount, email: &str, owner: bool) -> (String, String) {
    let password = "correct horse battery staple";
    let u = call(
        s,
        "POST",
        "/v1/account/users",
        &a.account_key,
        Some(json!({"email": email, "password": password, "is_owner": owner})),
    )
    .await;
    let (status, g, _) = s
        .call(
            "POST",
            "/v1/auth/token",
            None,
            Some(json!({"email": email, "password": password})),
        )
        .await;
    assert_eq!(status, 200, "{g}");
    (
        u["result"]["id"].as_str().unwrap().to_owned(),
        g["access_token"].as_str().unwrap().to_owned(),
    )
}

/// A scoped API key of `a`'s account: (id, secret).
async fn scoped_key(s: &TestServer, a: &TestAccount, scopes: &[&str]) -> (String, String) {
    let k = call(
        s,
        "POST",
        "/v1/keys",
        &a.account_key,
        Some(json!({"name": "stream reader", "scopes": scopes})),
    )
    .await;
    (
        k["id"].as_str().unwrap().to_owned(),
        k["apiKey"].as_str().unwrap().to_owned(),
    )
}

/// An open SSE stream of `inbox`.
async fn open_stream(s: &TestServer, key: &str, inbox: &str) -> reqwest::Response {
    let resp = s
        .http
        .get(s.url(&format!("/v1/inboxes/{inbox}/events")))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "opening a stream");
    resp
}

/// Reads an SSE stream until the server closes it, within `limit` of `since`; the data of
/// its last `revoked` event.
async fn ends_revoked(resp: &mut reqwest::Response, since: Instant, limit: Duration) -> Value {
    let mut seen = String::new();
    let until = tokio::time::Instant::from_std(since + limit);
    loop {
        let chunk = tokio::time::timeout_at(until, resp.chunk())
            .await
            .unwrap_or_else(|_| panic!("still open {limit:?} after the change; saw {seen:?}"))
            .unwrap();
        match chunk {
            Some(c) => seen.push_str(&String::from_utf8_lossy(&c)),
            None => break,
        }
    }
    revoked_data(&seen)
}

/// The JSON data of the `revoked` event in SSE text, which must be its last event.
fn revoked_data(sse: &str) -> Value {
    let (_, after) = sse
        .split_once("event: revoked\n")
        .unwrap_or_else(|| panic!("no revoked event in {sse:?}"));
    let data = after
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap_or_else(|| panic!("no data in {after:?}"));
    assert!(
        !after.contains("event: "),
        "nothing after the last event: {after:?}"
    );
    serde_json::from_str(data).unwrap()
}

/// Reads an SSE stream until `needle` shows, within `secs`.
async fn read_until(resp: &mut reqwest::Response, needle: &str, secs: u64) {
    let mut seen = String::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !seen.contains(needle) {
        let chunk = tokio::time::timeout_at(until, resp.chunk())
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} within {secs}s; saw {seen:?}"))
            .unwrap()
            .unwrap_or_else(|| panic!("closed before {needle:?}; saw {seen:?}"));
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
}

fn assert_ended(data: &Value, status: u64, code: &str, why: &str) {
    assert_eq!(data["status"], status, "{data}");
    assert_eq!(data["code"], code, "{data}");
    let message = data["message"].as_str().unwrap();
    assert!(message.contains(why), "{data}");
}

async fn revoked_credentials_end_event_streams(s: TestServer) {
    let a = s.new_account("streamer").await;
    let b = second_inbox(&s, &a, "streamer-two").await;
    let (key_id, api_key) = scoped_key(&s, &a, &["api:read"]).await;
    let (owner_id, owner_token) = user_token(&s, &a, "owner@example.com", true).await;
    let (member_id, member_token) = user_token(&s, &a, "member@example.com", false).await;
    let mut by_inbox_key = open_stream(&s, &a.inbox_key, &a.inbox_id).await;
    let mut by_api_key = open_stream(&s, &api_key, &a.inbox_id).await;
    let mut by_owner = open_stream(&s, &owner_token, &a.inbox_id).await;
    let mut by_member = open_stream(&s, &member_token, &a.inbox_id).await;
    let mut on_inbox_b = open_stream(&s, &a.account_key, &b.inbox_id).await;
    let mut unaffected = open_stream(&s, &a.account_key, &a.inbox_id).await;

    // The inbox key is rotated.
    let path = format!("/v1/inboxes/{}/rotate-key", a.inbox_id);
    call(&s, "POST", &path, &a.account_key, Some(json!({}))).await;
    let data = ends_revoked(&mut by_inbox_key, Instant::now(), WITHIN).await;
    assert_ended(&data, 401, "UNAUTHORIZED", "revoked or rotated");

    // The scoped key is deleted.
    call(
        &s,
        "DELETE",
        &format!("/v1/keys/{key_id}"),
        &a.account_key,
        None,
    )
    .await;
    let data = ends_revoked(&mut by_api_key, Instant::now(), WITHIN).await;
    assert_ended(&data, 401, "UNAUTHORIZED", "revoked or rotated");

    // A user is disabled; their next request is refused too.
    let path = format!("/v1/account/users/{owner_id}");
    call(
        &s,
        "PATCH",
        &path,
        &a.account_key,
        Some(json!({"disabled": true})),
    )
    .await;
    let data = ends_revoked(&mut by_owner, Instant::now(), WITHIN).await;
    assert_ended(&data, 401, "UNAUTHORIZED", "user disabled or deleted");
    let (status, _, _) = s.call("GET", "/v1/me", Some(&owner_token), None).await;
    assert_eq!(status, 401);

    // A user is deleted.
    let path = format!("/v1/account/users/{member_id}");
    call(&s, "DELETE", &path, &a.account_key, None).await;
    let data = ends_revoked(&mut by_member, Instant::now(), WITHIN).await;
    assert_ended(&data, 401, "UNAUTHORIZED", "user disabled or deleted");
    let (status, _, _) = s
        .call("GET", "/v1/inboxes", Some(&member_token), None)
        .await;
    assert_eq!(status, 401);

    // The inbox of a stream opened with the account key is deleted.
    let path = format!("/v1/inboxes/{}", b.inbox_id);
    call(&s, "DELETE", &path, &a.account_key, None).await;
    let data = ends_revoked(&mut on_inbox_b, Instant::now(), WITHIN).await;
    assert_ended(&data, 404, "NOT_FOUND", "deleted");

    // The account key's stream of the first inbox went on through all of it.
    s.deliver_smtp(&a.email, "Subject: still here\r\n\r\nhello\r\n")
        .await;
    read_until(&mut unaffected, "message.received", 5).await;
}

/// Starts a long poll (`wait=`) of `inbox`; its answer is the status, the body and when it
/// came.
fn long_poll(
    s: &TestServer,
    key: &str,
    inbox: &str,
) -> tokio::task::JoinHandle<(u16, Value, Instant)> {
    let req = s
        .http
        .get(s.url(&format!("/v1/inboxes/{inbox}/messages?wait=30")))
        .bearer_auth(key);
    tokio::spawn(async move {
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.json().await.unwrap();
        (status, body, Instant::now())
    })
}

/// Lets a started long poll reach its wait.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

async fn answered_within(
    poll: tokio::task::JoinHandle<(u16, Value, Instant)>,
    since: Instant,
) -> (u16, Value) {
    let (status, body, at) = tokio::time::timeout(WITHIN * 2, poll)
        .await
        .expect("the poll is answered")
        .unwrap();
    assert!(
        at.duration_since(since) <= WITHIN,
        "answered after {:?}",
        at.duration_since(since)
    );
    (status, body)
}

async fn revoked_credentials_end_waiting_long_polls(s: TestServer) {
    let a = s.new_account("poller").await;
    let b = second_inbox(&s, &a, "poller-two").await;
    let (user_id, token) = user_token(&s, &a, "poller@example.com", false).await;
    let by_inbox_key = long_poll(&s, &a.inbox_key, &a.inbox_id);
    let by_user = long_poll(&s, &token, &a.inbox_id);
    let on_inbox_b = long_poll(&s, &a.account_key, &b.inbox_id);
    settle().await;

    let path = format!("/v1/inboxes/{}/rotate-key", a.inbox_id);
    call(&s, "POST", &path, &a.account_key, Some(json!({}))).await;
    let (status, body) = answered_within(by_inbox_key, Instant::now()).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "UNAUTHORIZED", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("revoked or rotated"),
        "{body}"
    );

    let path = format!("/v1/account/users/{user_id}");
    call(
        &s,
        "PATCH",
        &path,
        &a.account_key,
        Some(json!({"disabled": true})),
    )
    .await;
    let (status, body) = answered_within(by_user, Instant::now()).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("user disabled"),
        "{body}"
    );

    let path = format!("/v1/inboxes/{}", b.inbox_id);
    call(&s, "DELETE", &path, &a.account_key, None).await;
    let (status, body) = answered_within(on_inbox_b, Instant::now()).await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("deleted"),
        "{body}"
    );
}

/// curl, a client nobody here wrote, sees the last event and a stream that ends cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_sees_a_revoked_stream_end() {
    let s = TestServer::start(Backend::Sqlite).await.unwrap();
    let a = s.new_account("curler").await;
    let (key_id, secret) = scoped_key(&s, &a, &["api:read"]).await;
    let url = s.url(&format!("/v1/inboxes/{}/events", a.inbox_id));
    let mut curl = tokio::process::Command::new("curl")
        .args(["-sS", "-N", "--max-time", "30", "-H"])
        .arg(format!("Authorization: Bearer {secret}"))
        .arg(&url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("curl runs");
    // Once curl's stream waits on the inbox, a delivered message's event reaches it.
    let services = s.server.as_ref().unwrap().services.clone();
    let until = Instant::now() + Duration::from_secs(10);
    while services.watched_inboxes() == 0 {
        assert!(Instant::now() < until, "curl's stream never opened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut out = BufReader::new(curl.stdout.take().unwrap());
    s.deliver_smtp(&a.email, "Subject: one\r\n\r\none\r\n")
        .await;
    let mut line = String::new();
    while !line.starts_with("event: message.received") {
        line.clear();
        tokio::time::timeout(Duration::from_secs(10), out.read_line(&mut line))
            .await
            .expect("the first event")
            .unwrap();
    }
    call(
        &s,
        "DELETE",
        &format!("/v1/keys/{key_id}"),
        &a.account_key,
        None,
    )
    .await;
    let since = Instant::now();
    let mut rest = String::new();
    tokio::time::timeout(WITHIN, out.read_to_string(&mut rest))
        .await
        .expect("curl's stream ends within 2 s")
        .unwrap();
    let status = curl.wait().await.unwrap();
    assert!(since.elapsed() <= WITHIN);
    assert!(status.success(), "curl exits cleanly: {status}; {rest}");
    let data = revoked_data(&rest);
    assert_ended(&data, 401, "UNAUTHORIZED", "revoked or rotated");
    s.stop().await;
}

/// PostgreSQL, two processes: a user disabled through one server ends the user's stream on
/// the other within 2 s (the user state each caches is evicted by `pg_notify`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_disabled_on_one_server_ends_its_stream_on_another() {
    // Both servers sign and check access tokens with the same master secret.
    let Some(s) = TestServer::start_with(Backend::Postgres, |c| {
        c.master_secret = Some("ab".repeat(32));
    })
    .await
    else {
        eprintln!("skipped: MAILROOM_TEST_DATABASE_URL is not set");
        return;
    };
    let other = s.start_beside().await;
    let a = s.new_account("two-servers").await;
    let (user_id, token) = user_token(&s, &a, "far@example.com", true).await;
    let mut far = open_stream(&other, &token, &a.inbox_id).await;
    // The other server has the user's state in memory now.
    let (status, _, _) = other.call("GET", "/v1/me", Some(&token), None).await;
    assert_eq!(status, 200);
    let path = format!("/v1/account/users/{user_id}");
    call(
        &s,
        "PATCH",
        &path,
        &a.account_key,
        Some(json!({"disabled": true})),
    )
    .await;
    let data = ends_revoked(&mut far, Instant::now(), WITHIN).await;
    assert_ended(&data, 401, "UNAUTHORIZED", "user disabled or deleted");
    let (status, _, _) = other.call("GET", "/v1/me", Some(&token), None).await;
    assert_eq!(status, 401);
    other.stop().await;
    s.stop().await;
}

/// `mailroom admin set-tier`, the operator's command, run as its own process against `s`'s
/// database.
fn admin_set_tier(s: &TestServer, account_id: &str, tier: &str) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .args(["admin", "set-tier", account_id, tier])
        .args(["--database-url", &s.database_url])
        .env("MAILROOM_DATA_DIR", &s.config.data_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "set-tier: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The reply to `RCPT TO:<to>` at the MX listener.
async fn rcpt_reply(s: &TestServer, to: &str) -> String {
    let addr = s.server.as_ref().unwrap().smtp_addr;
    let mut c = BufReader::new(TcpStream::connect(addr).await.unwrap());
    let reply = async |c: &mut BufReader<TcpStream>, cmd: Option<String>| {
        if let Some(cmd) = cmd {
            c.get_mut()
                .write_all(format!("{cmd}\r\n").as_bytes())
                .await
                .unwrap();
        }
        loop {
            let mut line = String::new();
            c.read_line(&mut line).await.unwrap();
            if line.as_bytes().get(3) != Some(&b'-') {
                return line;
            }
        }
    };
    reply(&mut c, None).await;
    reply(&mut c, Some("EHLO tier.test".into())).await;
    reply(&mut c, Some("MAIL FROM:<someone@example.com>".into())).await;
    let r = reply(&mut c, Some(format!("RCPT TO:<{to}>"))).await;
    reply(&mut c, Some("QUIT".into())).await;
    r
}

/// A submission session (Python's smtplib) logged in with the account SMTP credential: it
/// prints the reply to MAIL, then waits for a line on stdin and prints the next one.
fn submission_session(
    s: &TestServer,
    (user, password): (&str, &str),
    sender: &str,
) -> std::process::Child {
    let port = s.server.as_ref().unwrap().submission_addr.port();
    let script = r#"
import smtplib, sys
port, user, pw, sender = sys.argv[1:5]
s = smtplib.SMTP("127.0.0.1", int(port), timeout=20)
s.starttls()
s.login(user, pw)
print(s.mail(sender)[0], flush=True)
s.rset()
sys.stdin.readline()
print(s.mail(sender)[0], flush=True)
"#;
    std::process::Command::new("python3")
        .args(["-c", script, &port.to_string(), user, password, sender])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs")
}

/// An IMAP session of `a`'s inbox in IDLE.
async fn idling(s: &TestServer, a: &TestAccount) -> BufReader<TcpStream> {
    let addr = s.server.as_ref().unwrap().imap_addr;
    let mut c = BufReader::new(TcpStream::connect(addr).await.unwrap());
    for cmd in [
        format!("l LOGIN {} {}", a.email, a.inbox_key),
        "s SELECT INBOX".to_owned(),
        "i IDLE".to_owned(),
    ] {
        c.get_mut()
            .write_all(format!("{cmd}\r\n").as_bytes())
            .await
            .unwrap();
        let tag = &cmd[..2];
        loop {
            let mut line = String::new();
            c.read_line(&mut line).await.unwrap();
            assert!(!line.is_empty(), "closed at {cmd}");
            if line.starts_with(tag) || (tag == "i " && line.starts_with("+ ")) {
                assert!(!line.contains(" NO ") && !line.contains(" BAD "), "{line}");
                break;
            }
        }
    }
    c
}

/// Lowering a tier, with the operator's command in another process, reaches what is open
/// within 2 s: the free tier here allows 2 streams per account and 4 KiB per inbox.
async fn a_lowered_tier_reaches_open_sessions(backend: Backend) {
    let Some(s) = TestServer::start_with(backend, |c| {
        c.tiers.free.max_streams_per_account = Some(2);
        c.tiers.free.max_storage_bytes_per_inbox = Some(4096);
    })
    .await
    else {
        eprintln!("skipped: MAILROOM_TEST_DATABASE_URL is not set");
        return;
    };
    let a = s.new_account("downgraded").await;
    s.set_tier(&a.account_id, mailroom_core::Tier::Developer)
        .await;
    let b = second_inbox(&s, &a, "downgraded-two").await;
    let big = format!("Subject: big\r\n\r\n{}\r\n", "x".repeat(6000));
    s.deliver_smtp(&a.email, &big).await;
    // Four waiters, oldest first: two streams of B, one of A, an IDLE of A.
    let mut first = open_stream(&s, &a.account_key, &b.inbox_id).await;
    let mut second = open_stream(&s, &a.account_key, &b.inbox_id).await;
    let mut third = open_stream(&s, &a.account_key, &a.inbox_id).await;
    let mut idle = idling(&s, &a).await;
    let smtp = call(&s, "GET", "/v1/account/smtp", &a.account_key, None).await;
    let r = &smtp["result"];
    let login = (
        r["username"].as_str().unwrap(),
        r["password"].as_str().unwrap(),
    );
    let mut submit = submission_session(&s, login, &a.email);
    let mut submit_out = std::io::BufReader::new(submit.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut submit_out, &mut line).unwrap();
    assert_eq!(line.trim(), "250", "MAIL on the developer tier");
    assert!(rcpt_reply(&s, &a.email).await.starts_with("250"));

    admin_set_tier(&s, &a.account_id, "free");
    let since = Instant::now();

    // The newest stream is past the free tier's 2 and ends, saying why.
    let data = ends_revoked(&mut third, since, WITHIN).await;
    assert_ended(&data, 429, "TOO_MANY_STREAMS", "tier (free)");
    // So does the IDLE.
    let mut rest = Vec::new();
    let left = WITHIN.saturating_sub(since.elapsed());
    tokio::time::timeout(left, idle.read_to_end(&mut rest))
        .await
        .expect("the IDLE session ends within 2 s")
        .unwrap();
    let rest = String::from_utf8_lossy(&rest);
    assert!(
        rest.contains("* BYE [LIMIT]") && rest.contains("free"),
        "{rest:?}"
    );
    // A new stream does not fit.
    let (status, body, _) = s
        .call(
            "GET",
            &format!("/v1/inboxes/{}/events", b.inbox_id),
            Some(&a.account_key),
            None,
        )
        .await;
    assert_eq!(status, 429, "{body}");
    // Mail past the free tier's 4 KiB per inbox is refused at RCPT.
    let rcpt = rcpt_reply(&s, &a.email).await;
    assert!(rcpt.starts_with("452 4.2.2"), "{rcpt}");
    // The account SMTP credential no longer opens submission: the next MAIL is refused.
    std::io::Write::write_all(submit.stdin.as_mut().unwrap(), b"go\n").unwrap();
    line.clear();
    std::io::BufRead::read_line(&mut submit_out, &mut line).unwrap();
    assert_eq!(line.trim(), "535", "MAIL on the free tier");
    let _ = submit.wait();
    assert!(
        since.elapsed() <= WITHIN,
        "all within 2 s: {:?}",
        since.elapsed()
    );
    // The two oldest streams go on.
    s.deliver_smtp(&b.email, "Subject: small\r\n\r\nsmall\r\n")
        .await;
    read_until(&mut first, "message.received", 5).await;
    read_until(&mut second, "message.received", 5).await;
}

mod a_lowered_tier_reaches_open_sessions {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::a_lowered_tier_reaches_open_sessions(mailroom_testkit::Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::a_lowered_tier_reaches_open_sessions(mailroom_testkit::Backend::Postgres).await;
    }
}
