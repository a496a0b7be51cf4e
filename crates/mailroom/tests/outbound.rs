//! The outbound queue between two real servers: A delivers to B as B's MX, found through a
//! DNS server of the test's own; B checks A's DKIM signature. With B down, A defers and
//! retries; bounces come back to the sender as DSNs. On SQLite and PostgreSQL.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mailroom_core::Tier;
use mailroom_testkit::{Backend, TestAccount, TestServer, free_port};
use serde_json::{Value, json};

mod a_delivers_to_b_with_dkim_and_retries_while_b_is_down {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        a_delivers_to_b_with_dkim_and_retries_while_b_is_down(Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        a_delivers_to_b_with_dkim_and_retries_while_b_is_down(Backend::Postgres).await;
    }
}

const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// B: the domain `b.test` with its MX on a fixed port. A: `a.test`, delivering to that port,
/// retrying after one second. Both ask B's test DNS server, which publishes B's MX and A's
/// SPF and DKIM records.
async fn two_servers(backend: Backend) -> Option<(TestServer, TestServer)> {
    let mx_port = free_port();
    let b = TestServer::start_with(backend, |c| {
        c.hostname = "mx.b.test".into();
        c.default_domain = "b.test".into();
        c.listen.smtp = SocketAddr::new(LOOPBACK, mx_port);
    })
    .await?;
    let dns = b.dns.clone();
    let a = TestServer::start_with(backend, |c| {
        c.hostname = "mail.a.test".into();
        c.default_domain = "a.test".into();
        c.dns_resolver = Some(dns.addr);
        c.delivery.port = mx_port;
        c.delivery.retry_schedule = vec![Duration::from_secs(1)];
        c.delivery.poll_interval = Duration::from_millis(200);
        c.delivery.connect_timeout = Duration::from_secs(2);
    })
    .await?;
    dns.mx("b.test", 10, "mx.b.test");
    dns.ip("mx.b.test", LOOPBACK);
    dns.txt("a.test", "v=spf1 ip4:127.0.0.1 -all");
    let services = &a.server.as_ref().unwrap().services;
    let records = services.dns_records("a.test").await.unwrap();
    let (name, _, value) = records.iter().find(|r| r.0.contains("_domainkey")).unwrap();
    let joined: String = value.split('"').filter(|p| !p.trim().is_empty()).collect();
    dns.txt(name, &joined);
    Some((a, b))
}

async fn send(s: &TestServer, from: &TestAccount, body: Value) -> Value {
    let resp = s
        .http
        .post(s.url(&format!("/v1/inboxes/{}/send", from.inbox_id)))
        .bearer_auth(&from.inbox_key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    body["result"].clone()
}

/// Polls `check` every 100 ms for up to `secs` seconds until it gives `Some`.
async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The delivery status of each recipient of a sent message, by address.
async fn delivery(s: &TestServer, acc: &TestAccount, sent_id: &str) -> Vec<Value> {
    let view = s
        .get_json(
            &acc.inbox_key,
            &format!("/v1/inboxes/{}/messages/{sent_id}", acc.inbox_id),
        )
        .await;
    view["result"]["delivery"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn status_of(s: &TestServer, acc: &TestAccount, sent_id: &str, rcpt: &str) -> Value {
    delivery(s, acc, sent_id)
        .await
        .into_iter()
        .find(|d| d["recipient"] == rcpt)
        .unwrap_or(Value::Null)
}

async fn messages_with_subject(s: &TestServer, acc: &TestAccount, subject: &str) -> Vec<Value> {
    let list = s
        .get_json(
            &acc.inbox_key,
            &format!("/v1/inboxes/{}/messages?limit=100", acc.inbox_id),
        )
        .await;
    list["result"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["subject"] == subject)
        .cloned()
        .collect()
}

async fn event_types(s: &TestServer, acc: &TestAccount) -> Vec<(String, Value)> {
    let ev = s.get_json(&acc.account_key, "/v1/events?limit=500").await;
    ev["result"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap_or("").to_owned(),
                e["data"].clone(),
            )
        })
        .collect()
}

async fn a_delivers_to_b_with_dkim_and_retries_while_b_is_down(backend: Backend) {
    let Some((mut a, mut b)) = two_servers(backend).await else {
        eprintln!("skipped: MAILROOM_TEST_DATABASE_URL is not set");
        return;
    };
    let alice = a.new_account("alice").await;
    a.set_tier(&alice.account_id, Tier::Developer).await;
    let bob = b.new_account("bob").await;
    assert_eq!(bob.email, "bob@b.test");

    // 1. Sent by API on A, delivered to B over SMTP, DKIM-verified by B.
    let sent = send(
        &a,
        &alice,
        json!({"to": bob.email, "subject": "across servers", "text": "hello from A"}),
    )
    .await;
    assert_eq!(sent["recipients"][0]["status"], "queued", "{sent}");
    let sent_id = sent["id"].as_str().unwrap().to_owned();
    let arrived = eventually(20, "the message at B", || async {
        messages_with_subject(&b, &bob, "across servers")
            .await
            .pop()
    })
    .await;
    let mid = arrived["id"].as_str().unwrap();
    let view = b
        .get_json(
            &bob.inbox_key,
            &format!("/v1/inboxes/{}/messages/{mid}", bob.inbox_id),
        )
        .await;
    let auth = &view["result"]["authentication"];
    assert_eq!(auth["dkim"], "pass", "{auth}");
    assert_eq!(auth["dkim_signatures"][0]["domain"], "a.test", "{auth}");
    assert_eq!(auth["spf"], "pass", "{auth}");
    let raw = b
        .http
        .get(b.url(&format!("/v1/inboxes/{}/messages/{mid}/raw", bob.inbox_id)))
        .bearer_auth(&bob.inbox_key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        raw.contains("from mail.a.test") && raw.contains("with ESMTPS"),
        "A says its name and upgrades to TLS when B offers it: {raw}"
    );
    assert_eq!(
        view["result"]["text"].as_str().unwrap().trim(),
        "hello from A"
    );
    let st = eventually(10, "delivered status at A", || async {
        let st = status_of(&a, &alice, &sent_id, &bob.email).await;
        (st["status"] == "delivered").then_some(st)
    })
    .await;
    assert_eq!(st["attempts"], 1, "{st}");
    assert!(
        st["last_response"].as_str().unwrap().starts_with("250"),
        "{st}"
    );
    let events = event_types(&a, &alice).await;
    assert!(
        events
            .iter()
            .any(|(t, d)| t == "message.sent" && d["message_id"] == sent_id.as_str()),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|(t, d)| t == "message.delivered" && d["recipient"] == bob.email.as_str()),
        "{events:?}"
    );

    // 2. B is down: A defers and retries; A restarts meanwhile; once B is back the message
    //    arrives exactly once.
    b.halt().await;
    let sent = send(
        &a,
        &alice,
        json!({"to": bob.email, "subject": "while B is down", "text": "patience"}),
    )
    .await;
    let sent_id = sent["id"].as_str().unwrap().to_owned();
    let st = eventually(20, "deferred status at A", || async {
        let st = status_of(&a, &alice, &sent_id, &bob.email).await;
        (st["status"] == "deferred" && st["attempts"].as_i64() >= Some(2)).then_some(st)
    })
    .await;
    assert!(
        st["last_response"].as_str().unwrap().starts_with("4."),
        "{st}"
    );
    assert!(st["next_attempt_at"].is_string(), "{st}");
    let events = event_types(&a, &alice).await;
    assert!(
        events
            .iter()
            .any(|(t, d)| t == "message.deferred" && d["message_id"] == sent_id.as_str()),
        "{events:?}"
    );

    // The operator's view of the queue, from the CLI, while the server runs.
    let queue = cli(&a, &["queue", "list"]);
    assert!(
        queue.contains(&bob.email) && queue.contains("deferred"),
        "{queue}"
    );

    a.restart().await;
    b.resume().await;
    let arrived = eventually(20, "the deferred message at B", || async {
        let got = messages_with_subject(&b, &bob, "while B is down").await;
        (!got.is_empty()).then_some(got)
    })
    .await;
    let st = eventually(10, "delivered status at A", || async {
        let st = status_of(&a, &alice, &sent_id, &bob.email).await;
        (st["status"] == "delivered").then_some(st)
    })
    .await;
    assert!(st["attempts"].as_i64().unwrap() >= 3, "{st}");
    // Give a duplicate the time to show up, then count.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got = messages_with_subject(&b, &bob, "while B is down").await;
    assert_eq!(got.len(), 1, "delivered exactly once: {arrived:?}");

    // 3. Permanent failures bounce: an unknown user at B (550 5.1.1) and a domain that does
    //    not exist. A hosted recipient on A is delivered at once.
    let carol = a.new_account("carol").await;
    let sent = send(
        &a,
        &alice,
        json!({"to": ["nobody@b.test", "someone@nowhere.test", carol.email], "subject": "some fail", "text": "x"}),
    )
    .await;
    let sent_id = sent["id"].as_str().unwrap().to_owned();
    let statuses: Vec<(String, String)> = sent["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["address"].as_str().unwrap().to_owned(),
                r["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        statuses.contains(&(carol.email.clone(), "delivered".into())),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&("nobody@b.test".into(), "queued".into())),
        "{statuses:?}"
    );
    for rcpt in ["nobody@b.test", "someone@nowhere.test"] {
        let st = eventually(20, "a bounce", || async {
            let st = status_of(&a, &alice, &sent_id, rcpt).await;
            (st["status"] == "bounced").then_some(st)
        })
        .await;
        let resp = st["last_response"].as_str().unwrap();
        if rcpt.ends_with("b.test") {
            assert!(resp.starts_with("550 5.1.1"), "{st}");
        } else {
            assert!(resp.starts_with("5.1.2"), "{st}");
        }
    }
    // The DSNs arrive in alice's inbox, in the thread of the sent message.
    let dsns = eventually(10, "the DSNs", || async {
        let got = messages_with_subject(&a, &alice, "Undelivered Mail Returned to Sender").await;
        (got.len() >= 2).then_some(got)
    })
    .await;
    let mut reported = String::new();
    for d in &dsns {
        let raw = a
            .http
            .get(a.url(&format!(
                "/v1/inboxes/{}/messages/{}/raw",
                alice.inbox_id,
                d["id"].as_str().unwrap()
            )))
            .bearer_auth(&alice.inbox_key)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            raw.contains("multipart/report; report-type=delivery-status"),
            "{raw}"
        );
        assert!(
            raw.contains("Subject: some fail"),
            "the original headers come back: {raw}"
        );
        reported.push_str(&raw);
    }
    assert!(
        reported.contains("Final-Recipient: rfc822; nobody@b.test"),
        "{reported}"
    );
    assert!(
        reported.contains("Final-Recipient: rfc822; someone@nowhere.test"),
        "{reported}"
    );
    assert!(reported.contains("Status: 5.1.1"), "{reported}");
    assert_eq!(
        dsns[0]["thread_id"],
        a.get_json(
            &alice.inbox_key,
            &format!("/v1/inboxes/{}/messages/{sent_id}", alice.inbox_id)
        )
        .await["result"]["thread_id"],
        "the DSN joins the sent message's thread"
    );
    let events = event_types(&a, &alice).await;
    assert!(
        events
            .iter()
            .filter(|(t, d)| t == "message.bounced" && d["message_id"] == sent_id.as_str())
            .count()
            == 2,
        "{events:?}"
    );
    assert_eq!(
        messages_with_subject(&a, &carol, "some fail").await.len(),
        1,
        "the hosted recipient got it"
    );

    // 4. An operator removes a queued message: it is never delivered.
    b.halt().await;
    let sent = send(
        &a,
        &alice,
        json!({"to": bob.email, "subject": "removed", "text": "never"}),
    )
    .await;
    let sent_id = sent["id"].as_str().unwrap().to_owned();
    eventually(20, "a deferral", || async {
        let st = status_of(&a, &alice, &sent_id, &bob.email).await;
        (st["status"] == "deferred").then_some(())
    })
    .await;
    let queue = cli(&a, &["queue", "list", "--status", "deferred"]);
    let qid = queue
        .split_whitespace()
        .find(|w| w.starts_with("q_"))
        .unwrap_or_else(|| panic!("a queue id in {queue}"))
        .to_owned();
    let out = cli(&a, &["queue", "remove", &qid]);
    assert!(out.contains("removed 1"), "{out}");
    let st = status_of(&a, &alice, &sent_id, &bob.email).await;
    assert_eq!(st["status"], "removed", "{st}");
    b.resume().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(messages_with_subject(&b, &bob, "removed").await.is_empty());

    a.stop().await;
    b.stop().await;
}

/// Runs the `mailroom` binary against `s`'s database and returns its output, asserting
/// success.
fn cli(s: &TestServer, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .args(args)
        .args(["--database-url", &s.database_url])
        .env("MAILROOM_DATA_DIR", &s.config.data_dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "mailroom {args:?}: {text}");
    text
}

/// The queue survives SIGKILL: the built binary (A) accepts messages for B while B is
/// down, is killed without warning, and restarted; once B is up every message arrives,
/// each exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_mail_survives_sigkill() {
    use std::process::{Child, Command, Stdio};
    let mx_port = free_port();
    let mut b = TestServer::start_with(Backend::Sqlite, |c| {
        c.hostname = "mx.b.test".into();
        c.default_domain = "b.test".into();
        c.listen.smtp = SocketAddr::new(LOOPBACK, mx_port);
    })
    .await
    .unwrap();
    let bob = b.new_account("bob").await;
    let dns = b.dns.clone();
    dns.mx("b.test", 10, "mx.b.test");
    dns.ip("mx.b.test", LOOPBACK);
    b.halt().await;

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mailroom.toml");
    std::fs::write(
        &config,
        format!("[delivery]\nport = {mx_port}\nretry_schedule_secs = [1]\n"),
    )
    .unwrap();
    let http = free_port();
    let start = || -> Child {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mailroom"))
            .args([
                "serve",
                "--dev",
                "--hostname",
                "mail.a.test",
                "--default-domain",
                "a.test",
            ])
            .arg("--config")
            .arg(&config)
            .current_dir(dir.path())
            .env("MAILROOM_HTTP_LISTEN", format!("127.0.0.1:{http}"))
            .envs(
                [
                    "MAILROOM_SMTP_LISTEN",
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
            .env("MAILROOM_DNS_RESOLVER", dns.addr.to_string())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        // The first start generates the DKIM key: allow for a slow, busy machine.
        for _ in 0..600 {
            if std::net::TcpStream::connect(("127.0.0.1", http)).is_ok() {
                return child;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("the server did not start");
    };
    let mut server = start();
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{http}");
    let created: Value = client
        .post(format!("{base}/v1/inboxes"))
        .json(&json!({"username": "alice"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = &created["result"];
    let (account, inbox, key) = (
        r["account_id"].as_str().unwrap().to_owned(),
        r["id"].as_str().unwrap().to_owned(),
        r["inbox_api_key"].as_str().unwrap().to_owned(),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .args(["admin", "set-tier", &account, "developer", "--data-dir"])
        .arg(dir.path().join("data"))
        .env_remove("MAILROOM_DATABASE_URL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n = 8;
    for i in 0..n {
        let resp = client
            .post(format!("{base}/v1/inboxes/{inbox}/send"))
            .bearer_auth(&key)
            .json(&json!({"to": bob.email, "subject": format!("survivor {i}"), "text": "x"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 201);
    }
    server.kill().unwrap(); // SIGKILL
    server.wait().unwrap();

    b.resume().await;
    let mut server = start();
    let got = eventually(30, "every queued message at B", || async {
        let list = b
            .get_json(
                &bob.inbox_key,
                &format!("/v1/inboxes/{}/messages?limit=100", bob.inbox_id),
            )
            .await;
        let msgs = list["result"]["messages"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        (msgs.len() >= n).then_some(msgs)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let list = b
        .get_json(
            &bob.inbox_key,
            &format!("/v1/inboxes/{}/messages?limit=100", bob.inbox_id),
        )
        .await;
    let mut subjects: Vec<String> = list["result"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["subject"].as_str().unwrap_or("").to_owned())
        .collect();
    subjects.sort();
    let want: Vec<String> = (0..n).map(|i| format!("survivor {i}")).collect();
    assert_eq!(
        subjects,
        want,
        "each exactly once ({} seen before)",
        got.len()
    );
    server.kill().unwrap();
    server.wait().unwrap();
    b.stop().await;
}

/// With a relay configured, every remote recipient goes to it, whatever DNS says: here B's
/// MX port is A's smarthost and DNS has no MX record for B's domain at all. B offers
/// STARTTLS with its self-signed certificate, which A is given as the relay's CA (a relay's
/// certificate is always verified).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_receives_all_outbound_mail() {
    let mx_port = free_port();
    let b = TestServer::start_with(Backend::Sqlite, |c| {
        c.hostname = "mx.b.test".into();
        c.default_domain = "b.test".into();
        c.listen.smtp = SocketAddr::new(LOOPBACK, mx_port);
    })
    .await
    .unwrap();
    let relay_cert = b.server.as_ref().unwrap().tls_cert_path.clone();
    let a = TestServer::start_with(Backend::Sqlite, |c| {
        c.hostname = "mail.a.test".into();
        c.default_domain = "a.test".into();
        c.delivery.relay = Some(mailroom_delivery::Relay {
            host: "127.0.0.1".into(),
            port: mx_port,
            username: None,
            password: None,
            ca_file: Some(relay_cert),
        });
    })
    .await
    .unwrap();
    let alice = a.new_account("alice").await;
    a.set_tier(&alice.account_id, Tier::Developer).await;
    let bob = b.new_account("bob").await;
    let sent = send(
        &a,
        &alice,
        json!({"to": bob.email, "subject": "via the relay", "text": "hi"}),
    )
    .await;
    let sent_id = sent["id"].as_str().unwrap().to_owned();
    eventually(20, "the message at B", || async {
        messages_with_subject(&b, &bob, "via the relay").await.pop()
    })
    .await;
    let st = eventually(10, "delivered", || async {
        let st = status_of(&a, &alice, &sent_id, &bob.email).await;
        (st["status"] == "delivered").then_some(st)
    })
    .await;
    assert_eq!(st["attempts"], 1, "{st}");
    a.stop().await;
    b.stop().await;
}

/// A graceful stop in the middle of a delivery gives the recipient back to the queue at
/// once (its lease is released), instead of leaving it leased for 15 minutes: here the
/// remote server accepts the connection and never answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_mid_delivery_gives_the_recipient_back() {
    use sqlx::Connection as _;
    let black_hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = black_hole.local_addr().unwrap().port();
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = black_hole.accept().await {
            held.push(sock); // accepted, never answered
            let _ = seen_tx.send(()).await;
        }
    });
    let mut a = TestServer::start_with(Backend::Sqlite, |c| {
        c.hostname = "mail.a.test".into();
        c.default_domain = "a.test".into();
        c.delivery.port = port;
    })
    .await
    .unwrap();
    a.dns.mx("b.test", 10, "mx.b.test");
    a.dns.ip("mx.b.test", LOOPBACK);
    let alice = a.new_account("alice").await;
    a.set_tier(&alice.account_id, Tier::Developer).await;
    send(
        &a,
        &alice,
        json!({"to": "bob@b.test", "subject": "cut short", "text": "x"}),
    )
    .await;
    tokio::time::timeout(Duration::from_secs(20), seen_rx.recv())
        .await
        .expect("the worker connects to the remote server")
        .unwrap();
    let url = a.database_url.clone();
    a.halt().await; // graceful, and the data stays for the look below
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let (status, lease): (String, i64) =
        sqlx::query_as("SELECT status, lease_until FROM outbound_recipients")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        (status.as_str(), lease),
        ("queued", 0),
        "given back, not left leased"
    );
}

/// A relay that wants a login: A hands everything to B's submission port, upgrading with
/// STARTTLS and logging in with AUTH PLAIN (B's inbox address and key), as it would with
/// a provider's smarthost. B accepts it as that inbox's own mail (it files a Sent copy).
/// B's certificate is self-signed (for 127.0.0.1 among others), so A is given it as the
/// relay's CA: the relay's certificate is verified (tests/relay_tls.rs for refusals).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_with_a_login_gets_tls_and_auth() {
    let b = TestServer::start_with(Backend::Sqlite, |c| {
        c.hostname = "smarthost.b.test".into();
        c.default_domain = "b.test".into();
    })
    .await
    .unwrap();
    let on_b = b.new_account("alice").await;
    b.set_tier(&on_b.account_id, Tier::Developer).await;
    let relay_port = b.server.as_ref().unwrap().submission_addr.port();
    let relay_cert = b.server.as_ref().unwrap().tls_cert_path.clone();
    let key = on_b.inbox_key.clone();
    let a = TestServer::start_with(Backend::Sqlite, |c| {
        c.hostname = "mail.a.test".into();
        c.default_domain = "b.test".into();
        c.delivery.relay = Some(mailroom_delivery::Relay {
            host: "127.0.0.1".into(),
            port: relay_port,
            username: Some("alice@b.test".into()),
            password: Some(key),
            ca_file: Some(relay_cert),
        });
    })
    .await
    .unwrap();
    let on_a = a.new_account("alice").await;
    a.set_tier(&on_a.account_id, Tier::Developer).await;
    let sent = send(
        &a,
        &on_a,
        json!({"to": "carol@c.test", "subject": "through the smarthost", "text": "hi"}),
    )
    .await;
    let sent_id = sent["id"].as_str().unwrap().to_owned();
    let st = eventually(20, "delivered to the relay", || async {
        let st = status_of(&a, &on_a, &sent_id, "carol@c.test").await;
        (st["status"] == "delivered").then_some(st)
    })
    .await;
    assert!(
        st["last_response"].as_str().unwrap().starts_with("250"),
        "{st}"
    );
    // B took it as alice's own submission: her Sent mailbox has it.
    let sent_at_b = b
        .get_json(
            &on_b.inbox_key,
            &format!("/v1/inboxes/{}/messages?mailbox=Sent", on_b.inbox_id),
        )
        .await;
    assert_eq!(
        sent_at_b["result"]["messages"][0]["subject"], "through the smarthost",
        "{sent_at_b}"
    );
    a.stop().await;
    b.stop().await;
}
