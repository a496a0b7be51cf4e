//! What DNS may cost an inbound message: answers are cached in the server (positive and
//! negative, also when the DNS server sends no SOA), a mute DNS server costs a message at
//! most the time budget (and its checks say `temperror`), and at most a few DKIM signatures
//! are checked.

use std::time::{Duration, Instant};

use mailroom_testkit::budget::read_reply;
use mailroom_testkit::{Backend, DnsBehaviour, TestAccount, TestServer};
use serde_json::Value;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Delivers `message` from `mail_from` to `to` over a plain SMTP session; returns the reply
/// to the end of DATA.
async fn deliver(s: &TestServer, mail_from: &str, to: &str, message: &str) -> String {
    let addr = s.server.as_ref().expect("running").smtp_addr;
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    assert!(read_reply(&mut r).await.starts_with("220"));
    for cmd in [
        "EHLO mail.example.com".to_owned(),
        format!("MAIL FROM:<{mail_from}>"),
        format!("RCPT TO:<{to}>"),
        "DATA".to_owned(),
    ] {
        w.write_all(format!("{cmd}\r\n").as_bytes())
            .await
            .expect("write");
        let reply = read_reply(&mut r).await;
        assert!(
            reply.starts_with('2') || reply.starts_with('3'),
            "{cmd}: {reply}"
        );
    }
    w.write_all(format!("{message}\r\n.\r\nQUIT\r\n").as_bytes())
        .await
        .expect("write");
    read_reply(&mut r).await
}

async fn newest_authentication(s: &TestServer, a: &TestAccount) -> Value {
    let list = s
        .get_json(
            &a.inbox_key,
            &format!("/v1/inboxes/{}/messages?limit=1", a.inbox_id),
        )
        .await;
    let id = list["result"]["messages"][0]["id"]
        .as_str()
        .expect("a message")
        .to_owned();
    let m = s
        .get_json(
            &a.inbox_key,
            &format!("/v1/inboxes/{}/messages/{id}", a.inbox_id),
        )
        .await;
    m["result"]["authentication"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_cached_positive_and_negative() {
    let s = TestServer::start(Backend::Sqlite).await.expect("a server");
    let a = s.new_account("cached").await;
    s.dns.txt("example.com", "v=spf1 ip4:127.0.0.1 -all");
    s.dns.txt("_dmarc.example.com", "v=DMARC1; p=none");
    let msg = |from: &str| format!("From: {from}\r\nSubject: hi\r\n\r\nhello");
    let reply = deliver(&s, "alice@example.com", &a.email, &msg("alice@example.com")).await;
    assert!(reply.starts_with("250"), "{reply}");
    assert_eq!(newest_authentication(&s, &a).await["spf"], "pass");
    let after_first = s.dns.queries();
    assert!(after_first > 0, "the first message asked DNS");
    // The test server's answers have a TTL of 1 s: past it, only the server's own floor
    // keeps them.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for _ in 0..4 {
        let reply = deliver(&s, "alice@example.com", &a.email, &msg("alice@example.com")).await;
        assert!(reply.starts_with("250"), "{reply}");
    }
    assert_eq!(
        s.dns.queries(),
        after_first,
        "later messages from the same sender ask DNS nothing"
    );
    // A domain with no records at all: NXDOMAIN without an SOA, kept all the same.
    let reply = deliver(
        &s,
        "bob@nothing.example",
        &a.email,
        &msg("bob@nothing.example"),
    )
    .await;
    assert!(reply.starts_with("250"), "{reply}");
    assert_eq!(newest_authentication(&s, &a).await["spf"], "none");
    let after_negative = s.dns.queries();
    assert!(after_negative > after_first);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let reply = deliver(
        &s,
        "bob@nothing.example",
        &a.email,
        &msg("bob@nothing.example"),
    )
    .await;
    assert!(reply.starts_with("250"), "{reply}");
    assert_eq!(
        s.dns.queries(),
        after_negative,
        "the negative answers were kept"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mute_dns_server_costs_a_message_at_most_the_budget() {
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.auth_budget.time = Duration::from_secs(1);
    })
    .await
    .expect("a server");
    let a = s.new_account("patient").await;
    let other = s.new_account("other").await;
    let before = s.refusals("smtp", "auth_time_budget").await;
    s.dns.set_behaviour(DnsBehaviour {
        mute: true,
        ..DnsBehaviour::default()
    });
    let started = Instant::now();
    let (reply, ()) = tokio::join!(
        deliver(
            &s,
            "alice@slow.example",
            &a.email,
            "From: alice@slow.example\r\nSubject: slow dns\r\n\r\nhello"
        ),
        async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            s.other_tenant_reads_api(&other.account_key).await;
        }
    );
    let took = started.elapsed();
    assert!(reply.starts_with("250"), "{reply}");
    // The budget, plus the store and the session: far below the resolver's own retries.
    assert!(took < Duration::from_secs(3), "took {took:?}");
    s.dns.set_behaviour(DnsBehaviour::default());
    let auth = newest_authentication(&s, &a).await;
    assert_eq!(auth["spf"], "temperror", "{auth}");
    assert_eq!(auth["dmarc"], "temperror", "{auth}");
    assert!(s.refusals("smtp", "auth_time_budget").await > before);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_a_few_dkim_signatures_are_checked() {
    use base64::Engine as _;
    use mail_auth::common::crypto::Ed25519Key;
    use mail_auth::common::headers::HeaderWriter;
    use mail_auth::dkim::DkimSigner;
    let s = TestServer::start(Backend::Sqlite).await.expect("a server");
    let max = s.config.auth_budget.max_dkim_signatures;
    let a = s.new_account("signed").await;
    let before = s.refusals("smtp", "max_dkim_signatures").await;
    let body = format!(
        "From: alice@example.com\r\nTo: {}\r\nSubject: signed many times\r\n\r\nHello.\r\n",
        a.email
    );
    let mut headers = String::new();
    for i in 0..max + 3 {
        let pkcs8 = Ed25519Key::generate_pkcs8().expect("a key");
        let key = Ed25519Key::from_pkcs8_der(&pkcs8).expect("a key");
        let public = base64::engine::general_purpose::STANDARD.encode(key.public_key());
        s.dns.txt(
            &format!("s{i}._domainkey.example.com"),
            &format!("v=DKIM1; k=ed25519; p={public}"),
        );
        let sig = DkimSigner::from_key(key)
            .domain("example.com")
            .selector(format!("s{i}"))
            .headers(["From", "To", "Subject"])
            .sign(body.as_bytes())
            .expect("a signature");
        headers.push_str(&sig.to_header());
    }
    let message = format!("{headers}{body}");
    let reply = deliver(&s, "alice@example.com", &a.email, message.trim_end()).await;
    assert!(reply.starts_with("250"), "{reply}");
    let auth = newest_authentication(&s, &a).await;
    let sigs = auth["dkim_signatures"].as_array().expect("signatures");
    assert_eq!(sigs.len(), max, "{auth}");
    assert_eq!(auth["dkim"], "pass", "{auth}");
    assert!(s.refusals("smtp", "max_dkim_signatures").await > before);
    s.stop().await;
}
