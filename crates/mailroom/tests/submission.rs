//! SMTP submission (587 STARTTLS, 465 implicit TLS): seed 000's smtplib example, swaks and
//! lettre as clients, and every refusal.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use mailroom_core::Tier;
use mailroom_testkit::{Backend, TestAccount, TestServer, on_both_backends, smtplib};
use serde_json::{Value, json};

on_both_backends!(
    seed_000_smtplib_example_sends_to_a_hosted_inbox,
    swaks_and_lettre_submit_with_inbox_keys,
    forged_origin_headers_are_refused,
);

/// Issue #12: a message that names another tenant in a second `From` (or a `Sender`) is
/// refused at DATA, naming the header, and nothing is stored or sent; an honest one is
/// signed with the origin headers over-signed, so one added later breaks the signature.
async fn forged_origin_headers_are_refused(s: TestServer) {
    let a = s.new_account("honest").await;
    let b = s.new_account("victim").await;
    s.set_tier(&a.account_id, Tier::Developer).await;
    let creds = api(&s, &a.account_key, "/v1/account/smtp").await;
    let (user, pass) = (
        creds["result"]["username"].as_str().unwrap().to_owned(),
        creds["result"]["password"].as_str().unwrap().to_owned(),
    );
    let port = s.server.as_ref().unwrap().submission_addr.port();
    let send = |headers: String| {
        smtplib(
            port,
            &user,
            &pass,
            &a.email,
            &b.email,
            &format!("{headers}To: {}\r\n\r\nbody\r\n", b.email),
        )
    };
    let r = send(format!(
        "From: {}\r\nFrom: {}\r\nSubject: two\r\n",
        b.email, a.email
    ));
    assert!(
        r.starts_with("550") && r.contains("5.6.0") && r.contains("2 From headers"),
        "two From headers: {r}"
    );
    let r = send(format!("From: {}\r\nSubject: a\r\nSubject: b\r\n", a.email));
    assert!(r.starts_with("550 5.6.0") && r.contains("Subject"), "{r}");
    let r = send(format!("From: {}\r\nSender: {}\r\n", a.email, b.email));
    assert!(
        r.starts_with("550") && r.contains(&b.email) && r.contains("From address validation"),
        "another tenant as Sender: {r}"
    );
    let r = send(format!(
        "From: {}, {}\r\nSender: {}\r\n",
        a.email, b.email, a.email
    ));
    assert!(
        r.starts_with("550") && r.contains(&b.email),
        "two mailboxes in From: {r}"
    );
    let listed = |key: String, inbox: String| {
        let s = &s;
        async move {
            api(s, &key, &format!("/v1/inboxes/{inbox}/messages?limit=10")).await["result"]["total"]
                .as_u64()
                .unwrap_or_else(|| panic!("a total"))
        }
    };
    assert_eq!(
        listed(b.inbox_key.clone(), b.inbox_id.clone()).await,
        0,
        "nothing reached the victim"
    );

    // An honest message goes through, signed with From over-signed.
    assert_eq!(
        send(format!("From: {}\r\nSubject: fine\r\n", a.email)),
        "OK"
    );
    let list = api(
        &s,
        &b.inbox_key,
        &format!("/v1/inboxes/{}/messages?limit=10", b.inbox_id),
    )
    .await;
    let id = list["result"]["messages"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let raw = s
        .http
        .get(s.url(&format!("/v1/inboxes/{}/messages/{id}/raw", b.inbox_id)))
        .bearer_auth(&b.inbox_key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let sig = raw
        .split("\r\n")
        .skip_while(|l| !l.starts_with("DKIM-Signature:"))
        .take_while(|l| l.starts_with("DKIM-Signature:") || l.starts_with([' ', '\t']))
        .collect::<String>()
        .replace([' ', '\t'], "");
    let h = sig
        .split(';')
        .find_map(|t| t.strip_prefix("h="))
        .unwrap_or_else(|| panic!("no h= in {sig}"));
    let froms = h
        .split(':')
        .filter(|n| n.eq_ignore_ascii_case("from"))
        .count();
    assert_eq!(froms, 2, "From signed once more than it appears: h={h}");
    assert!(
        h.split(':').any(|n| n.eq_ignore_ascii_case("sender")),
        "an absent Sender is signed as absent: h={h}"
    );
}

async fn api(s: &TestServer, key: &str, path: &str) -> Value {
    s.get_json(key, path).await
}

async fn inbox(s: &TestServer, a: &TestAccount, name: &str) -> (String, String, String) {
    let r: Value = s
        .http
        .post(s.url("/v1/inboxes"))
        .bearer_auth(&a.account_key)
        .json(&json!({"username": name}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let f = |k: &str| r["result"][k].as_str().unwrap().to_owned();
    (f("id"), f("email"), f("inbox_api_key"))
}

async fn seed_000_smtplib_example_sends_to_a_hosted_inbox(s: TestServer) {
    let a = s.new_account("my-agent").await;
    let b = s.new_account("user").await;
    s.set_tier(&a.account_id, Tier::Developer).await;
    let smtp = api(&s, &a.account_key, "/v1/account/smtp").await;
    let r = &smtp["result"];
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/clients/seed000_smtplib.py"
    );
    let out = Command::new("python3")
        .args([
            script,
            "127.0.0.1",
            &r["port"].to_string(),
            r["username"].as_str().unwrap(),
            r["password"].as_str().unwrap(),
            &a.email,
            &b.email,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = api(
        &s,
        &b.inbox_key,
        &format!("/v1/inboxes/{}/messages", b.inbox_id),
    )
    .await;
    assert_eq!(list["result"]["messages"][0]["subject"], "Hello via SMTP");
    let id = list["result"]["messages"][0]["id"].as_str().unwrap();
    let m = api(
        &s,
        &b.inbox_key,
        &format!("/v1/inboxes/{}/messages/{id}", b.inbox_id),
    )
    .await;
    assert_eq!(
        m["result"]["text"].as_str().unwrap().trim(),
        "Sent using daimon.email SMTP credentials!"
    );
    // A copy in the sender's Sent mailbox, already read; the send is counted.
    let sent = api(
        &s,
        &a.inbox_key,
        &format!("/v1/inboxes/{}/messages?mailbox=Sent", a.inbox_id),
    )
    .await;
    assert_eq!(sent["result"]["messages"][0]["subject"], "Hello via SMTP");
    assert_eq!(sent["result"]["messages"][0]["read"], true);
    let account = api(&s, &a.account_key, "/v1/account").await;
    assert_eq!(account["result"]["limits"]["current_sends_today"], 1);
    s.stop().await;
}

async fn swaks_and_lettre_submit_with_inbox_keys(s: TestServer) {
    let a = s.new_account("sender").await;
    let b = s.new_account("receiver").await;
    s.set_tier(&a.account_id, Tier::Growth).await;
    let server = s.server.as_ref().unwrap();
    // swaks: STARTTLS on 587, AUTH LOGIN with the inbox address and key.
    let out = Command::new("swaks")
        .args([
            "--server",
            "127.0.0.1",
            "--port",
            &server.submission_addr.port().to_string(),
            "--tls",
            "--auth",
            "LOGIN",
            "--auth-user",
            &a.email,
            "--auth-password",
            &a.inbox_key,
            "--from",
            &a.email,
            "--to",
            &b.email,
            "--header",
            "Subject: via swaks",
            "--body",
            "hi",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // lettre: implicit TLS on 465, AUTH PLAIN.
    use lettre::transport::smtp::authentication::{Credentials, Mechanism};
    use lettre::transport::smtp::client::{Tls, TlsParameters};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let tls = TlsParameters::builder("localhost".into())
        .dangerous_accept_invalid_certs(true)
        .build()
        .unwrap();
    let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(server.submissions_addr.port())
        .tls(Tls::Wrapper(tls))
        .credentials(Credentials::new(a.email.clone(), a.inbox_key.clone()))
        .authentication(vec![Mechanism::Plain])
        .build();
    let email = Message::builder()
        .from(a.email.parse().unwrap())
        .to(b.email.parse().unwrap())
        .subject("via lettre")
        .body("hello".to_owned())
        .unwrap();
    mailer.send(email).await.unwrap();
    let list = api(
        &s,
        &b.inbox_key,
        &format!("/v1/inboxes/{}/messages", b.inbox_id),
    )
    .await;
    let subjects: Vec<&str> = list["result"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["subject"].as_str().unwrap())
        .collect();
    assert_eq!(subjects, ["via lettre", "via swaks"]);
    s.stop().await;
}

/// A raw client for the refusals.
struct Raw {
    r: BufReader<Box<dyn ReadWrite>>,
}

trait ReadWrite: std::io::Read + std::io::Write + Send {}
impl<T: std::io::Read + std::io::Write + Send> ReadWrite for T {}

impl Raw {
    fn plain(port: u16) -> Raw {
        let t = TcpStream::connect(("127.0.0.1", port)).unwrap();
        t.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut raw = Raw {
            r: BufReader::new(Box::new(t)),
        };
        assert!(raw.reply().starts_with("220"));
        raw
    }

    fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if self.r.read_line(&mut line).unwrap() == 0 {
                return all;
            }
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }

    fn cmd(&mut self, line: &str) -> String {
        self.r
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap();
        self.reply()
    }
}

fn plain_auth(user: &str, pass: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_says_why() {
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.tiers.developer.max_sends_per_day = Some(2)
    })
    .await
    .unwrap();
    let a = s.new_account("strict").await;
    let b = s.new_account("target").await;
    let (_, other_email, _) = inbox(&s, &a, "strict-two").await;
    let port = s.server.as_ref().unwrap().submission_addr.port();
    let body = |from: &str| format!("From: {from}\r\nTo: {}\r\nSubject: t\r\n\r\nx\r\n", b.email);

    // No AUTH before TLS, and no AUTH offered before it.
    let mut c = Raw::plain(port);
    let ehlo = c.cmd("EHLO x");
    assert!(
        ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"),
        "{ehlo}"
    );
    assert!(
        c.cmd(&format!(
            "AUTH PLAIN {}",
            plain_auth(&a.email, &a.inbox_key)
        ))
        .starts_with("538 5.7.11")
    );
    // No relaying without AUTH.
    assert!(
        c.cmd("MAIL FROM:<strict@mailroom.test>")
            .starts_with("530 5.7.0")
    );

    // Free tier: the account credential is refused; an inbox key logs in but cannot send.
    let free = smtplib(
        port,
        &a.email,
        &a.inbox_key,
        &a.email,
        &b.email,
        &body(&a.email),
    );
    assert!(
        free.starts_with("554") && free.contains("receive-only"),
        "{free}"
    );
    s.set_tier(&a.account_id, Tier::Developer).await;
    let creds = api(&s, &a.account_key, "/v1/account/smtp").await;
    let (user, pass) = (
        creds["result"]["username"].as_str().unwrap().to_owned(),
        creds["result"]["password"].as_str().unwrap().to_owned(),
    );

    // Wrong password.
    let wrong = smtplib(
        port,
        &user,
        "smtp_wrong",
        &a.email,
        &b.email,
        &body(&a.email),
    );
    assert!(
        wrong.starts_with("535") && wrong.contains("5.7.8"),
        "{wrong}"
    );
    // Envelope sender and From header must be the account's.
    let r = smtplib(port, &user, &pass, &b.email, &b.email, &body(&a.email));
    assert!(
        r.starts_with("550") && r.contains("From address validation"),
        "{r}"
    );
    let r = smtplib(port, &user, &pass, &a.email, &b.email, &body(&b.email));
    assert!(r.starts_with("550") && r.contains("From header"), "{r}");
    // An inbox key sends as its own inbox only, not as another inbox of the account.
    let r = smtplib(
        port,
        &a.email,
        &a.inbox_key,
        &other_email,
        &b.email,
        &body(&other_email),
    );
    assert!(r.starts_with("550"), "{r}");
    // An unknown address on a domain hosted here is refused at RCPT.
    let r = smtplib(
        port,
        &user,
        &pass,
        &a.email,
        "nobody-here@mailroom.test",
        &body(&a.email),
    );
    assert!(
        r.starts_with("550") && r.contains("5.1.1") && r.contains("no such mailbox"),
        "{r}"
    );
    // The account credential may send as any inbox of the account; two sends fill the day.
    assert_eq!(
        smtplib(port, &user, &pass, &a.email, &b.email, &body(&a.email)),
        "OK"
    );
    assert_eq!(
        smtplib(
            port,
            &user,
            &pass,
            &other_email,
            &b.email,
            &body(&other_email)
        ),
        "OK"
    );
    let over = smtplib(port, &user, &pass, &a.email, &b.email, &body(&a.email));
    assert!(
        over.starts_with("452")
            && over.contains("daily sending limit of 2")
            && over.contains("resets at"),
        "{over}"
    );
    let acc = api(&s, &a.account_key, "/v1/account").await;
    assert_eq!(acc["result"]["limits"]["current_sends_today"], 2);
    let got = api(
        &s,
        &b.inbox_key,
        &format!("/v1/inboxes/{}/messages", b.inbox_id),
    )
    .await;
    assert_eq!(
        got["result"]["total"], 2,
        "exactly the accepted messages arrived"
    );

    // Repeated wrong passwords are throttled (5 failures per user name in 15 minutes;
    // smtplib tries PLAIN then LOGIN, so each of its logins may count twice), and then even
    // the right password is refused for a while.
    let wrong_key = "mr_inb_wrongwrongwrongwrongwrongwrongwr";
    let first = smtplib(port, &b.email, wrong_key, &b.email, &a.email, "x");
    assert!(first.starts_with("535"), "{first}");
    let mut throttled = false;
    for _ in 0..5 {
        if smtplib(port, &b.email, wrong_key, &b.email, &a.email, "x").starts_with("454") {
            throttled = true;
            break;
        }
    }
    assert!(throttled, "wrong passwords are throttled");
    let r = smtplib(port, &b.email, &b.inbox_key, &b.email, &a.email, "x");
    assert!(
        r.starts_with("454"),
        "throttled even with the right key: {r}"
    );
    s.stop().await;
}
