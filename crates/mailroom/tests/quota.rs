//! The storage quota over real sockets, with a tiny configured quota: SMTP `452 4.2.2`,
//! IMAP `NO [OVERQUOTA]` and `GETQUOTAROOT` (RFC 9208), HTTP 403 with `upgrade_context`,
//! the numbers of `GET /v1/account`, blob collection and deleting a sent message for good.
//! Each refusal test also shows that another tenant is still served within a second.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::net::SocketAddr;
use std::time::Duration;

use mailroom_core::Tier;
use mailroom_testkit::budget::read_reply;
use mailroom_testkit::{Backend, TestAccount, TestServer};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Free inboxes hold 4 KiB, free accounts 16 KiB; developer inboxes 6000 bytes.
const FREE_INBOX: u64 = 4096;
const DEV_INBOX: u64 = 6000;

async fn start(backend: Backend) -> Option<TestServer> {
    TestServer::start_with(backend, |c| {
        c.tiers.free.max_storage_bytes_per_inbox = Some(FREE_INBOX);
        c.tiers.free.max_storage_bytes_per_account = Some(4 * FREE_INBOX);
        c.tiers.developer.max_storage_bytes_per_inbox = Some(DEV_INBOX);
        c.tiers.developer.max_storage_bytes_per_account = Some(4 * DEV_INBOX);
        // Remote mail goes to a port nobody listens on: it stays queued (deferred).
        c.delivery.relay = Some(mailroom_delivery::Relay {
            host: "127.0.0.1".into(),
            port: mailroom_testkit::free_port(),
            username: None,
            password: None,
            ca_file: None,
        });
        c.collector = mailroom_services::CollectorConfig {
            interval: Duration::from_millis(200),
            grace: Duration::ZERO,
            batch: 10,
        };
    })
    .await
}

mailroom_testkit::on_both_backends_started_by!(
    start;
    smtp_and_imap_refuse_a_full_mailbox,
    api_refuses_sends_that_would_not_fit,
    sent_message_deletes_for_good_and_blobs_are_collected,
);

/// A message of about `size` bytes.
fn message(subject: &str, size: usize) -> String {
    let mut m = format!("From: a@example.com\r\nSubject: {subject}\r\n\r\n");
    while m.len() < size {
        m.push_str("0123456789012345678901234567890123456789012345678901234567890123456789\r\n");
    }
    m
}

/// One SMTP transaction on the MX port; the replies to RCPT and to the end of DATA (or
/// `None` when RCPT was refused).
async fn smtp(addr: SocketAddr, to: &str, body: &str) -> (String, Option<String>) {
    smtp_with(addr, "MAIL FROM:<a@example.com>", to, body).await
}

/// [`smtp`] with the given `MAIL FROM` command (`SIZE=`).
async fn smtp_with(addr: SocketAddr, mail: &str, to: &str, body: &str) -> (String, Option<String>) {
    let (r, mut w) = TcpStream::connect(addr).await.unwrap().into_split();
    let mut r = BufReader::new(r);
    assert!(read_reply(&mut r).await.starts_with("220"));
    let mut say = async |w: &mut OwnedWriteHalf, line: &str| {
        w.write_all(format!("{line}\r\n").as_bytes()).await.unwrap();
        read_reply(&mut r).await
    };
    assert!(say(&mut w, "EHLO client.test").await.starts_with("250"));
    assert!(say(&mut w, mail).await.starts_with("250"));
    let rcpt = say(&mut w, &format!("RCPT TO:<{to}>")).await;
    if !rcpt.starts_with("250") {
        say(&mut w, "QUIT").await;
        return (rcpt, None);
    }
    assert!(say(&mut w, "DATA").await.starts_with("354"));
    let done = say(&mut w, &format!("{body}\r\n.")).await;
    say(&mut w, "QUIT").await;
    (rcpt, Some(done))
}

/// A raw IMAP session.
struct Imap {
    r: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
}

impl Imap {
    async fn login(addr: SocketAddr, a: &TestAccount) -> Imap {
        let (r, w) = TcpStream::connect(addr).await.unwrap().into_split();
        let mut s = Imap {
            r: BufReader::new(r),
            w,
        };
        let mut greeting = String::new();
        s.r.read_line(&mut greeting).await.unwrap();
        let ok = s.cmd(&format!("LOGIN {} {}", a.email, a.inbox_key)).await;
        assert!(ok.last().unwrap().starts_with("t OK"), "{ok:?}");
        s
    }

    /// Sends `t <command>` and returns every line up to the tagged answer.
    async fn cmd(&mut self, command: &str) -> Vec<String> {
        self.send(format!("t {command}\r\n").as_bytes()).await
    }

    async fn send(&mut self, data: &[u8]) -> Vec<String> {
        self.w.write_all(data).await.unwrap();
        let mut lines = Vec::new();
        loop {
            let mut l = String::new();
            assert!(
                self.r.read_line(&mut l).await.unwrap() > 0,
                "closed: {lines:?}"
            );
            let done = l.starts_with("t ");
            lines.push(l.trim_end().to_owned());
            if done {
                return lines;
            }
        }
    }

    /// APPEND with a non-synchronizing literal (LITERAL+).
    async fn append(&mut self, data: &[u8]) -> Vec<String> {
        let mut cmd = format!("t APPEND INBOX {{{}+}}\r\n", data.len()).into_bytes();
        cmd.extend_from_slice(data);
        cmd.extend_from_slice(b"\r\n");
        self.send(&cmd).await
    }
}

fn last(lines: &[String]) -> &str {
    lines.last().map(String::as_str).unwrap_or("")
}

async fn limits(s: &TestServer, a: &TestAccount) -> Value {
    s.get_json(&a.account_key, "/v1/account").await["result"]["limits"].clone()
}

async fn used(s: &TestServer, a: &TestAccount) -> u64 {
    limits(s, a).await["current_storage_bytes"]
        .as_u64()
        .unwrap()
}

/// Fills the account's only inbox to exactly its limit with one APPEND.
async fn fill(s: &TestServer, imap: &mut Imap, a: &TestAccount, limit: u64) {
    let room = limit - used(s, a).await;
    let mut data = b"Subject: fill\r\n\r\n".to_vec();
    data.resize(usize::try_from(room).unwrap(), b'x');
    let r = imap.append(&data).await;
    assert!(last(&r).starts_with("t OK"), "{r:?}");
    assert_eq!(used(s, a).await, limit);
}

async fn smtp_and_imap_refuse_a_full_mailbox(s: TestServer) {
    let running = s.server.as_ref().unwrap();
    let (mx, imap_addr) = (running.smtp_addr, running.imap_addr);
    let a = s.new_account("full").await;
    let other = s.new_account("roomy").await;
    let l = limits(&s, &a).await;
    assert_eq!(l["max_storage_bytes_per_inbox"], FREE_INBOX);
    assert_eq!(l["max_storage_bytes"], 4 * FREE_INBOX);
    assert_eq!(l["current_storage_bytes"], 0);
    // Room for one, not for two: the second DATA is a temporary failure.
    let (rcpt, done) = smtp(mx, &a.email, &message("one", 2500)).await;
    assert!(rcpt.starts_with("250") && done.as_deref().unwrap().starts_with("250"));
    let after_one = used(&s, &a).await;
    assert!(after_one > 2500, "{after_one}");
    let before = s.refusals("smtp", "storage_quota").await;
    let (rcpt, done) = smtp(mx, &a.email, &message("two", 2500)).await;
    assert!(rcpt.starts_with("250"), "{rcpt}");
    assert!(
        done.as_deref().unwrap().starts_with("452 4.2.2"),
        "{done:?}"
    );
    assert_eq!(used(&s, &a).await, after_one, "nothing stored");
    assert!(s.refusals("smtp", "storage_quota").await > before);
    // Announced with SIZE= (RFC 1870): refused at RCPT already.
    let (rcpt, _) = smtp_with(mx, "MAIL FROM:<a@example.com> SIZE=2500", &a.email, "x").await;
    assert!(rcpt.starts_with("452 4.2.2"), "{rcpt}");
    let (rcpt, done) = smtp_with(mx, "MAIL FROM:<a@example.com> SIZE=500", &a.email, "x").await;
    assert!(rcpt.starts_with("250"), "{rcpt}");
    assert!(done.unwrap().starts_with("250"), "a small one still fits");
    s.other_tenant_delivers(&other.email).await;

    // IMAP: fill to the byte, then APPEND and COPY are refused.
    let mut imap = Imap::login(imap_addr, &a).await;
    let caps = imap.cmd("CAPABILITY").await;
    assert!(caps[0].contains(" QUOTA QUOTA=RES-STORAGE"), "{caps:?}");
    fill(&s, &mut imap, &a, FREE_INBOX).await;
    let before = s.refusals("imap", "storage_quota").await;
    let r = imap.append(b"Subject: more\r\n\r\nx").await;
    assert!(last(&r).starts_with("t NO [OVERQUOTA]"), "{r:?}");
    imap.cmd("SELECT INBOX").await;
    let r = imap.cmd("COPY 1 Archive").await;
    assert!(last(&r).starts_with("t NO [OVERQUOTA]"), "{r:?}");
    assert!(s.refusals("imap", "storage_quota").await >= before + 2);
    // A move stays within the inbox and is never over quota.
    let r = imap.cmd("MOVE 1 Archive").await;
    assert!(last(&r).starts_with("t OK"), "{r:?}");
    let r = imap.cmd("GETQUOTAROOT INBOX").await;
    assert_eq!(
        r,
        [
            "* QUOTAROOT \"INBOX\" \"\"",
            "* QUOTA \"\" (STORAGE 4 4)",
            "t OK GETQUOTAROOT completed"
        ]
    );
    let r = imap.cmd("GETQUOTA \"\"").await;
    assert_eq!(r[0], "* QUOTA \"\" (STORAGE 4 4)");
    assert!(last(&imap.cmd("GETQUOTA \"other\"").await).starts_with("t NO"));
    assert!(last(&imap.cmd("SETQUOTA \"\" (STORAGE 100000)").await).starts_with("t NO"));
    assert!(last(&imap.cmd("GETQUOTAROOT Nope").await).starts_with("t NO [NONEXISTENT]"));

    // Full: RCPT itself is refused, for this inbox only.
    let before = s.refusals("smtp", "storage_quota").await;
    let (rcpt, _) = smtp(mx, &a.email, "Subject: x\r\n\r\nx").await;
    assert!(rcpt.starts_with("452 4.2.2"), "{rcpt}");
    assert!(s.refusals("smtp", "storage_quota").await > before);
    s.other_tenant_delivers(&other.email).await;
    s.other_tenant_reads_api(&other.account_key).await;
    assert_eq!(used(&s, &a).await, FREE_INBOX);
    let view = s
        .get_json(&a.inbox_key, &format!("/v1/inboxes/{}", a.inbox_id))
        .await;
    assert_eq!(view["result"]["storage"]["used_bytes"], FREE_INBOX);
    assert_eq!(view["result"]["storage"]["limit_bytes"], FREE_INBOX);

    // Expunging frees the space at once; the blob goes with the last copy, after a grace.
    let store = running.services.store();
    let (rows, _) = store
        .list_messages(
            &a.inbox_id,
            &mailroom_store::MessageQuery {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let hashes: Vec<String> = rows.iter().map(|m| m.blob_hash.clone()).collect();
    assert_eq!(hashes.len(), 3);
    for mailbox in ["INBOX", "Archive"] {
        imap.cmd(&format!("SELECT {mailbox}")).await;
        imap.cmd("STORE 1:* +FLAGS.SILENT (\\Deleted)").await;
        let r = imap.cmd("EXPUNGE").await;
        assert!(last(&r).starts_with("t OK"), "{r:?}");
    }
    assert_eq!(used(&s, &a).await, 0);
    // The blobs wait out the collector's grace (a session not yet told of the expunge
    // still serves them), then go.
    for h in &hashes {
        assert!(
            store.get_blob(h).await.unwrap().is_some(),
            "blob {h} kept a while"
        );
    }
    store
        .collect_garbage(mailroom_core::time::now_ms() + 1000, 100)
        .await
        .unwrap();
    for h in &hashes {
        assert!(
            store.get_blob(h).await.unwrap().is_none(),
            "blob {h} collected"
        );
    }
    let (rcpt, done) = smtp(mx, &a.email, &message("again", 500)).await;
    assert!(rcpt.starts_with("250") && done.unwrap().starts_with("250"));
    s.stop().await;
}

async fn send(s: &TestServer, a: &TestAccount, body: Value) -> (u16, Value) {
    let (status, body, _) = s
        .call(
            "POST",
            &format!("/v1/inboxes/{}/send", a.inbox_id),
            Some(&a.inbox_key),
            Some(body),
        )
        .await;
    (status, body)
}

/// One message from `a` (its inbox key) to `to` over submission with Python's smtplib:
/// `OK` or the refusal as `CODE text`.
async fn submit(s: &TestServer, a: &TestAccount, to: &str) -> String {
    let port = s.server.as_ref().unwrap().submission_addr.port();
    let (email, key, to) = (a.email.clone(), a.inbox_key.clone(), to.to_owned());
    let body = format!("From: {email}\r\nTo: {to}\r\nSubject: sub\r\n\r\nhello\r\n");
    tokio::task::spawn_blocking(move || {
        mailroom_testkit::smtplib(port, &email, &key, &email, &to, &body)
    })
    .await
    .unwrap()
}

async fn api_refuses_sends_that_would_not_fit(s: TestServer) {
    let imap_addr = s.server.as_ref().unwrap().imap_addr;
    let sender = s.new_account("sender").await;
    let full = s.new_account("fullrcpt").await;
    let other = s.new_account("bystander").await;
    s.set_tier(&sender.account_id, Tier::Developer).await;
    // A hosted recipient whose mailbox is full: a clear refusal, nothing sent.
    let mut imap = Imap::login(imap_addr, &full).await;
    fill(&s, &mut imap, &full, FREE_INBOX).await;
    let before = s.refusals("http", "storage_quota").await;
    let (status, body) = send(
        &s,
        &sender,
        json!({"to": full.email, "subject": "hi", "text": "hi"}),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "RECIPIENT_MAILBOX_FULL");
    assert!(
        body["message"].as_str().unwrap().contains(&full.email),
        "{body}"
    );
    assert_eq!(used(&s, &sender).await, 0, "no Sent copy either");
    assert_eq!(limits(&s, &sender).await["current_sends_today"], 0);
    // The same over SMTP submission (Python's smtplib): 452 4.2.2 at RCPT.
    let before_sub = s.refusals("submission", "storage_quota").await;
    let r = submit(&s, &sender, &full.email).await;
    assert!(r.starts_with("452") && r.contains("4.2.2"), "{r}");
    assert!(s.refusals("submission", "storage_quota").await > before_sub);
    // The sender's own inbox full: 403 with the way up.
    let mut imap = Imap::login(imap_addr, &sender).await;
    fill(&s, &mut imap, &sender, DEV_INBOX).await;
    let (status, body) = send(
        &s,
        &sender,
        json!({"to": other.email, "subject": "hi", "text": "hi"}),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "STORAGE_QUOTA_EXCEEDED");
    let up = &body["upgrade_context"];
    assert!(
        up["operator_action_url"]
            .as_str()
            .unwrap()
            .starts_with("http"),
        "{body}"
    );
    assert!(
        up["operator_action_label"]
            .as_str()
            .unwrap()
            .contains("Growth"),
        "{body}"
    );
    assert!(up["agent_script"].is_string());
    let r = submit(&s, &sender, &other.email).await;
    assert!(
        r.starts_with("452") && r.contains("4.2.2") && r.contains("Upgrade"),
        "{r}"
    );
    assert!(s.refusals("http", "storage_quota").await >= before + 2);
    assert_eq!(used(&s, &other).await, 0, "nothing delivered");
    s.other_tenant_reads_api(&other.account_key).await;
    s.other_tenant_delivers(&other.email).await;
    s.stop().await;
}

async fn sent_message_deletes_for_good_and_blobs_are_collected(s: TestServer) {
    let running = s.server.as_ref().unwrap();
    let store = running.services.store().clone();
    let a = s.new_account("deleter").await;
    s.set_tier(&a.account_id, Tier::Developer).await;
    let (status, body) = send(
        &s,
        &a,
        json!({"to": "bob@example.com", "subject": "out", "text": "bye"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = body["result"]["id"].as_str().unwrap().to_owned();
    let hash = store
        .get_message(&a.inbox_id, &id)
        .await
        .unwrap()
        .unwrap()
        .blob_hash;
    let path = format!("/v1/inboxes/{}/messages/{id}", a.inbox_id);
    // To Trash, then for good: the queue entry's hold on the blob no longer blocks it.
    for _ in 0..2 {
        let (status, body, _) = s.call("DELETE", &path, Some(&a.inbox_key), None).await;
        assert!(status == 200 || status == 204, "{status} {body}");
    }
    let (status, _, _) = s.call("GET", &path, Some(&a.inbox_key), None).await;
    assert_eq!(status, 404);
    assert_eq!(used(&s, &a).await, 0);
    // The queue still needs the bytes until delivery is finished.
    assert!(store.get_blob(&hash).await.unwrap().is_some());

    // A deleted inbox's mail: its blobs go with the next collection round.
    let b = s.new_account("leaver").await;
    s.deliver_smtp(&b.email, &message("kept", 300)).await;
    let (rows, _) = store
        .list_messages(
            &b.inbox_id,
            &mailroom_store::MessageQuery {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let blob = rows[0].blob_hash.clone();
    let (status, body, _) = s
        .call(
            "DELETE",
            &format!("/v1/inboxes/{}", b.inbox_id),
            Some(&b.account_key),
            None,
        )
        .await;
    assert!(status == 200 || status == 204, "{status} {body}");
    assert_eq!(used(&s, &b).await, 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.get_blob(&blob).await.unwrap().is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "the blob was never collected"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.stop().await;
}

/// Python's imaplib (a client nobody here wrote) reads the quota root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imaplib_reads_the_quota_root() {
    let s = start(Backend::Sqlite).await.unwrap();
    let a = s.new_account("pyquota").await;
    s.deliver_smtp(&a.email, &message("py", 2000)).await;
    let port = s.server.as_ref().unwrap().imap_addr.port();
    let code = r#"
import imaplib, sys
port, user, pw = sys.argv[1:4]
c = imaplib.IMAP4("127.0.0.1", int(port))
c.login(user, pw)
typ, data = c.getquotaroot("INBOX")
print(typ)
for d in data:
    for x in d:
        print(x.decode())
c.logout()
"#;
    let out = tokio::process::Command::new("python3")
        .args(["-c", code, &port.to_string(), &a.email, &a.inbox_key])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "OK", "{text}");
    assert!(lines.contains(&"\"INBOX\" \"\""), "{text}");
    assert!(lines.contains(&"\"\" (STORAGE 3 4)"), "{text}");
    s.stop().await;
}

/// A full account is told so by `GET /v1/capabilities`, with the way up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_say_when_the_account_is_full() {
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.tiers.free.max_storage_bytes_per_inbox = Some(FREE_INBOX);
        c.tiers.free.max_storage_bytes_per_account = Some(FREE_INBOX);
    })
    .await
    .unwrap();
    let a = s.new_account("capfull").await;
    let actions = |v: &Value, list: &str| -> Vec<String> {
        v["result"][list]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["action"].as_str().unwrap().to_owned())
            .collect()
    };
    let caps = s.get_json(&a.account_key, "/v1/capabilities").await;
    assert!(
        actions(&caps, "can").contains(&"mail.receive".to_owned()),
        "{caps}"
    );
    assert_eq!(caps["result"]["limits"]["max_storage_bytes"], FREE_INBOX);
    let mut imap = Imap::login(s.server.as_ref().unwrap().imap_addr, &a).await;
    fill(&s, &mut imap, &a, FREE_INBOX).await;
    let caps = s.get_json(&a.account_key, "/v1/capabilities").await;
    assert!(
        !actions(&caps, "can").contains(&"mail.receive".to_owned()),
        "{caps}"
    );
    let refusal = caps["result"]["cannot"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["action"] == "mail.receive")
        .unwrap()
        .clone();
    assert!(
        refusal["reason"].as_str().unwrap().contains("452 4.2.2"),
        "{refusal}"
    );
    assert!(refusal["unlock_url"].is_string(), "{refusal}");
    s.stop().await;
}
