//! Receiving mail: real SMTP clients (Python's smtplib, lettre, swaks, raw sockets) deliver
//! to the server, and the messages API reads the mail back, on SQLite and PostgreSQL.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use mailroom_testkit::{TestAccount, TestServer, on_both_backends};
use serde_json::Value;

on_both_backends!(
    smtplib_delivers_and_the_api_reads_it_byte_exact,
    lettre_delivers_attachments_that_download_decoded,
    refusals_and_protocol_errors_are_clear,
    smuggling_and_bare_newlines_are_refused,
    size_limit_is_exact,
    pipelining_and_bdat_work,
    a_client_that_disconnects_mid_data_leaves_nothing,
    waiting_for_mail_returns_when_it_arrives,
    messages_can_be_read_labelled_moved_and_deleted,
    replies_are_threaded,
    other_tenants_cannot_read_the_mail,
    swaks_delivers_with_starttls,
    the_event_stream_is_live_and_resumable,
    spf_dkim_and_dmarc_are_checked_and_recorded,
    hostile_messages_are_stored_raw_and_readable,
    a_deleted_inbox_stops_receiving_at_once,
);

/// Recipients are looked up once and then kept in memory; deleting the inbox forgets its
/// address at once, so the next RCPT is refused.
async fn a_deleted_inbox_stops_receiving_at_once(s: TestServer) {
    let a = s.new_account("shortlived").await;
    let mut c = Raw::connect(&s);
    c.transaction(&a.email);
    assert!(c.cmd("RSET").starts_with("250"));
    let resp = s
        .http
        .delete(s.url(&format!("/v1/inboxes/{}", a.inbox_id)))
        .bearer_auth(&a.account_key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(c.cmd("MAIL FROM:<sender@example.com>").starts_with("250"));
    let r = c.cmd(&format!("RCPT TO:<{}>", a.email));
    assert!(r.starts_with("550"), "RCPT to a deleted inbox: {r}");
}

async fn hostile_messages_are_stored_raw_and_readable(s: TestServer) {
    let a = s.new_account("hostile").await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("zero-byte body", Vec::new()),
        ("first line stuffed", b"..starts with a dot\r\n".to_vec()),
        ("no headers", b"just a body line\r\n".to_vec()),
        ("headers only", b"Subject: nothing else\r\n".to_vec()),
        ("8-bit junk", b"Subject: \xff\xfe junk\r\n\r\n\x00\x01\x80\x81\xc3\x28 bytes\r\n".to_vec()),
        ("broken base64", b"Subject: b64\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!not base64***\r\n".to_vec()),
        ("unterminated multipart", b"Subject: mp\r\nContent-Type: multipart/mixed; boundary=\"zz\"\r\n\r\n--zz\r\nContent-Type: text/plain\r\n\r\nhalf\r\n".to_vec()),
        ("bad encoded word", b"Subject: =?utf-8?B?####?= =?x-unknown?Q?a?=\r\n\r\nx\r\n".to_vec()),
        ("latin-1 body", b"Subject: =?iso-8859-1?q?caf=E9?=\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\nd\xe9j\xe0 vu\r\n".to_vec()),
        ("shift_jis body", b"Subject: sjis\r\nContent-Type: text/plain; charset=shift_jis\r\n\r\n\x82\xb1\x82\xf1\x82\xc9\x82\xbf\x82\xcd\r\n".to_vec()),
        ("huge header line", format!("Subject: {}\r\n\r\nx\r\n", "y".repeat(3000)).into_bytes()),
    ];
    for (name, body) in &cases {
        let mut c = Raw::connect(&s);
        c.transaction(&a.email);
        assert!(c.cmd("DATA").starts_with("354"));
        c.send(body);
        c.send(b".\r\n");
        let r = c.reply();
        assert!(r.starts_with("250"), "{name}: {r}");
    }
    let list = api(
        &s,
        &a.inbox_key,
        &format!("/v1/inboxes/{}/messages?limit=50", a.inbox_id),
    )
    .await;
    let msgs = list["result"]["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), cases.len());
    // Oldest first to line up with the cases.
    for (m, (name, body)) in msgs.iter().rev().zip(&cases) {
        let id = m["id"].as_str().unwrap();
        let body: &[u8] = if *name == "first line stuffed" {
            b".starts with a dot\r\n"
        } else {
            body
        };
        let view = s
            .http
            .get(s.url(&format!("/v1/inboxes/{}/messages/{id}", a.inbox_id)))
            .bearer_auth(&a.inbox_key)
            .send()
            .await
            .unwrap();
        assert_eq!(view.status(), 200, "{name}");
        let view: Value = view.json().await.unwrap();
        let raw = s
            .http
            .get(s.url(&format!("/v1/inboxes/{}/messages/{id}/raw", a.inbox_id)))
            .bearer_auth(&a.inbox_key)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert!(raw.ends_with(body), "{name}: stored raw, byte for byte");
        if *name == "latin-1 body" {
            assert_eq!(view["result"]["subject"], "café");
            assert_eq!(
                view["result"]["text"].as_str().unwrap().trim(),
                "déjà vu",
                "decoded to UTF-8"
            );
        }
        if *name == "shift_jis body" {
            assert_eq!(
                view["result"]["text"].as_str().unwrap().trim(),
                "こんにちは",
                "decoded to UTF-8"
            );
        }
    }
    s.stop().await;
}

async fn spf_dkim_and_dmarc_are_checked_and_recorded(s: TestServer) {
    use base64::Engine as _;
    use mail_auth::common::crypto::Ed25519Key;
    use mail_auth::common::headers::HeaderWriter;
    use mail_auth::dkim::DkimSigner;
    let a = s.new_account("checked").await;
    // example.com: SPF allows 127.0.0.1, a DKIM key, a DMARC policy.
    let pkcs8 = Ed25519Key::generate_pkcs8().unwrap();
    let key = Ed25519Key::from_pkcs8_der(&pkcs8).unwrap();
    let public = base64::engine::general_purpose::STANDARD.encode(key.public_key());
    s.dns.txt("example.com", "v=spf1 ip4:127.0.0.1 -all");
    s.dns.txt(
        "sel._domainkey.example.com",
        &format!("v=DKIM1; k=ed25519; p={public}"),
    );
    s.dns.txt("_dmarc.example.com", "v=DMARC1; p=reject");
    // forged.example: SPF forbids every sender; its DMARC policy only asks for reports
    // (p=none), so failing mail is still delivered (p=reject: tests/dmarc_policy.rs).
    s.dns.txt("forged.example", "v=spf1 -all");
    s.dns.txt("_dmarc.forged.example", "v=DMARC1; p=none");
    let body = format!(
        "From: Alice <alice@example.com>\r\nTo: {}\r\nSubject: signed\r\n\r\nHello, signed.\r\n",
        a.email
    );
    let signature = DkimSigner::from_key(key)
        .domain("example.com")
        .selector("sel")
        .headers(["From", "To", "Subject"])
        .sign(body.as_bytes())
        .unwrap();
    let signed = format!("{}{body}", signature.to_header());
    let try_from = |from: &'static str, msg: String| {
        let s = &s;
        let to = a.email.clone();
        async move {
            let mut c = Raw::connect(s);
            assert!(c.cmd("EHLO mail.example.com").starts_with("250"));
            assert!(c.cmd(&format!("MAIL FROM:<{from}>")).starts_with("250"));
            assert!(c.cmd(&format!("RCPT TO:<{to}>")).starts_with("250"));
            assert!(c.cmd("DATA").starts_with("354"));
            c.cmd(&format!("{msg}."))
        }
    };
    let send_from = |from: &'static str, msg: String| {
        let sent = try_from(from, msg);
        async move {
            let r = sent.await;
            assert!(r.starts_with("250"), "{r}");
        }
    };
    send_from("alice@example.com", signed.clone()).await;
    let id = messages(&s, &a).await[0]["id"].as_str().unwrap().to_owned();
    let m = message_of(&s, &a, &id).await;
    let auth = &m["result"]["authentication"];
    assert_eq!(auth["spf"], "pass", "{auth}");
    assert_eq!(auth["dkim"], "pass", "{auth}");
    assert_eq!(auth["dmarc"], "pass", "{auth}");
    assert_eq!(auth["dkim_signatures"][0]["domain"], "example.com");
    assert_eq!(m["result"]["extracted"]["authenticated"], true);
    let raw = raw_text(&s, &a, &id).await;
    assert!(
        raw.starts_with("Authentication-Results: mail.test;"),
        "{raw}"
    );
    let ar_end = raw.find("\r\nReceived: ").unwrap();
    assert!(
        raw[..ar_end].contains("spf=pass")
            && raw[..ar_end].contains("dkim=pass")
            && raw[..ar_end].contains("dmarc=pass"),
        "{raw}"
    );
    // A forged sender: SPF fails and DMARC fails; under p=none the message is still
    // delivered (the verdicts are for the reader to weigh), marked as such.
    send_from(
        "bob@forged.example",
        "From: bob@forged.example\r\nSubject: forged\r\n\r\nTrust me.\r\n".into(),
    )
    .await;
    let list = messages(&s, &a).await;
    let forged = list.iter().find(|m| m["subject"] == "forged").unwrap();
    let m = message_of(&s, &a, forged["id"].as_str().unwrap()).await;
    let auth = &m["result"]["authentication"];
    assert_eq!(auth["spf"], "fail", "{auth}");
    assert_eq!(auth["dkim"], "none", "{auth}");
    assert_eq!(auth["dmarc"], "fail", "{auth}");
    assert_eq!(m["result"]["extracted"]["authenticated"], false);
    // Issue #12: the good signed message with a second From put on top (where mail
    // clients look). Its signature and SPF still pass; DMARC fails (RFC 7489 §6.6.1), and
    // is enforced as p=reject (what the API shows of it when only monitoring:
    // dmarc_policy::the_operator_can_lower_enforcement).
    let r = try_from(
        "alice@example.com",
        signed.replacen(
            "From: Alice",
            "From: Mallory <ceo@bank.example>\r\nFrom: Alice",
            1,
        ),
    )
    .await;
    assert!(r.starts_with("550 5.7.1") && r.contains("From"), "{r}");
    assert_eq!(messages(&s, &a).await.len(), 2, "nothing more was stored");
    // Results that claim to be ours but came with the message are removed (RFC 8601 §5);
    // another server's are kept.
    send_from(
        "bob@forged.example",
        "Authentication-Results: mail.test;\r\n\tdkim=pass header.d=bank.example\r\n\
         Authentication-Results: relay.example; spf=pass\r\n\
         From: bob@forged.example\r\nSubject: claims\r\n\r\nTrust me.\r\n"
            .into(),
    )
    .await;
    let list = messages(&s, &a).await;
    let claims = list.iter().find(|m| m["subject"] == "claims").unwrap();
    let raw = raw_text(&s, &a, claims["id"].as_str().unwrap()).await;
    assert_eq!(
        raw.matches("Authentication-Results: mail.test").count(),
        1,
        "{raw}"
    );
    assert!(
        raw.starts_with("Authentication-Results: mail.test;"),
        "{raw}"
    );
    assert!(!raw.contains("header.d=bank.example"), "{raw}");
    assert!(
        raw.contains("Authentication-Results: relay.example; spf=pass"),
        "{raw}"
    );
    s.stop().await;
}

/// Reads SSE events (`id`, `event`, `data` of each) until `n` have arrived.
async fn read_events(resp: &mut reqwest::Response, n: usize) -> Vec<(String, String, Value)> {
    let mut buf = String::new();
    let mut events = Vec::new();
    while events.len() < n {
        let chunk = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .expect("the stream stays open");
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let field = |name: &str| {
                block.lines().find_map(|l| {
                    l.strip_prefix(&format!("{name}:"))
                        .map(|v| v.trim().to_owned())
                })
            };
            if let (Some(id), Some(ev), Some(data)) = (field("id"), field("event"), field("data")) {
                events.push((id, ev, serde_json::from_str(&data).unwrap()));
            }
        }
    }
    events
}

async fn the_event_stream_is_live_and_resumable(s: TestServer) {
    let a = s.new_account("streamer").await;
    send_raw(&s, &a.email, "Subject: before\r\n\r\nold").await;
    let url = s.url(&format!("/v1/inboxes/{}/events", a.inbox_id));
    let mut resp = s
        .http
        .get(&url)
        .bearer_auth(&a.inbox_key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    send_raw(&s, &a.email, "Subject: live one\r\n\r\nnew").await;
    let got = read_events(&mut resp, 1).await;
    assert_eq!(got[0].1, "message.received");
    assert_eq!(got[0].2["type"], "message.received");
    assert_eq!(
        got[0].2["data"]["subject"], "live one",
        "starts after connecting, not with history"
    );
    assert_eq!(got[0].2["id"], got[0].0.as_str());
    drop(resp);
    // Two more arrive while disconnected; reconnecting with Last-Event-ID gets both, in order.
    send_raw(&s, &a.email, "Subject: missed 1\r\n\r\nx").await;
    send_raw(&s, &a.email, "Subject: missed 2\r\n\r\nx").await;
    let mut resp = s
        .http
        .get(&url)
        .bearer_auth(&a.inbox_key)
        .header("Last-Event-ID", &got[0].0)
        .send()
        .await
        .unwrap();
    let got = read_events(&mut resp, 2).await;
    let subjects: Vec<&str> = got
        .iter()
        .map(|e| e.2["data"]["subject"].as_str().unwrap())
        .collect();
    assert_eq!(subjects, ["missed 1", "missed 2"]);
    let bad = s
        .http
        .get(&url)
        .bearer_auth(&a.inbox_key)
        .header("Last-Event-ID", "evt_nope")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    let other = s.new_account("stream-nosy").await;
    let denied = s
        .http
        .get(&url)
        .bearer_auth(&other.account_key)
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 404);
    // `resp` is still open: a graceful shutdown must end the stream instead of waiting.
    s.stop().await;
    drop(resp);
}

async fn swaks_delivers_with_starttls(s: TestServer) {
    let a = s.new_account("swaks").await;
    let port = s.server.as_ref().unwrap().smtp_addr.port().to_string();
    let out = Command::new("swaks")
        .args([
            "--server",
            "127.0.0.1",
            "--port",
            &port,
            "--tls",
            "--from",
            "tester@example.net",
            "--to",
            &a.email,
            "--header",
            "Subject: via swaks",
            "--body",
            "Sent by swaks.",
        ])
        .output()
        .expect("swaks is installed (.ci/run installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(
        transcript.contains("STARTTLS") && transcript.contains("250 2.0.0 OK: queued as msg_"),
        "{transcript}"
    );
    let list = messages(&s, &a).await;
    assert_eq!(list[0]["subject"], "via swaks");
    s.stop().await;
}

async fn api(s: &TestServer, key: &str, path: &str) -> Value {
    let resp = s
        .http
        .get(s.url(path))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// One message of `a`'s inbox, parsed (`GET …/messages/{id}`).
async fn message_of(s: &TestServer, a: &TestAccount, id: &str) -> Value {
    api(
        s,
        &a.inbox_key,
        &format!("/v1/inboxes/{}/messages/{id}", a.inbox_id),
    )
    .await
}

/// One message of `a`'s inbox as stored (`GET …/messages/{id}/raw`), as text.
async fn raw_text(s: &TestServer, a: &TestAccount, id: &str) -> String {
    s.http
        .get(s.url(&format!("/v1/inboxes/{}/messages/{id}/raw", a.inbox_id)))
        .bearer_auth(&a.inbox_key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn messages(s: &TestServer, a: &TestAccount) -> Vec<Value> {
    api(
        s,
        &a.inbox_key,
        &format!("/v1/inboxes/{}/messages", a.inbox_id),
    )
    .await["result"]["messages"]
        .as_array()
        .unwrap()
        .clone()
}

/// A line-oriented raw SMTP client for protocol edge cases.
struct Raw {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Raw {
    fn connect(s: &TestServer) -> Raw {
        let addr = s.server.as_ref().unwrap().smtp_addr;
        let w = TcpStream::connect(addr).unwrap();
        w.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut raw = Raw {
            r: BufReader::new(w.try_clone().unwrap()),
            w,
        };
        assert!(raw.reply().starts_with("220 "));
        raw
    }

    /// One whole reply (all its lines), as text.
    fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if self.r.read_line(&mut line).unwrap() == 0 {
                return all;
            }
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return all;
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).unwrap();
    }

    fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    fn transaction(&mut self, to: &str) {
        assert!(self.cmd("EHLO client.test").starts_with("250"));
        assert!(
            self.cmd("MAIL FROM:<sender@example.com>")
                .starts_with("250")
        );
        let r = self.cmd(&format!("RCPT TO:<{to}>"));
        assert!(r.starts_with("250"), "{r}");
    }
}

fn python_send(s: &TestServer, to: &str, message: &[u8], starttls: bool) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.eml");
    std::fs::write(&path, message).unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/clients/smtp_send.py"
    );
    let port = s.server.as_ref().unwrap().smtp_addr.port().to_string();
    let mut cmd = Command::new("python3");
    cmd.args([
        script,
        &port,
        "sender@example.com",
        to,
        path.to_str().unwrap(),
    ]);
    if starttls {
        cmd.arg("--starttls");
    }
    let out = cmd.output().expect("python3 runs");
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    }
    out.status.success()
}

async fn smtplib_delivers_and_the_api_reads_it_byte_exact(s: TestServer) {
    let a = s.new_account("agent").await;
    let body =
        b"From: Alice <alice@example.com>\r\nTo: agent@mailroom.test\r\nSubject: Your code\r\n\
Message-ID: <one@example.com>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\n\
Your verification code is 482913.\r\n..a line that began with a dot\r\n\
Confirm: https://example.com/verify?t=abc\r\n";
    for starttls in [false, true] {
        assert!(
            python_send(&s, &a.email, body, starttls),
            "smtplib was refused"
        );
    }
    let list = messages(&s, &a).await;
    assert_eq!(list.len(), 2);
    let id = list[0]["id"].as_str().unwrap();
    assert_eq!(list[0]["from"], "alice@example.com");
    assert_eq!(list[0]["subject"], "Your code");
    assert_eq!(list[0]["read"], false);
    // Byte-exact: our Received header, then exactly the client's message (smtplib
    // dot-stuffs "..a line" on the wire; the server unstuffs it back).
    let raw = s
        .http
        .get(s.url(&format!("/v1/inboxes/{}/messages/{id}/raw", a.inbox_id)))
        .bearer_auth(&a.inbox_key)
        .send()
        .await
        .unwrap();
    assert_eq!(raw.headers()["content-type"], "message/rfc822");
    let raw = raw.bytes().await.unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.starts_with("Authentication-Results: mail.test;"),
        "{text}"
    );
    assert!(
        text.contains("\r\nReceived: from client.test ([127.0.0.1])"),
        "{text}"
    );
    assert!(raw.ends_with(body), "{}", String::from_utf8_lossy(&raw));
    let m = api(
        &s,
        &a.inbox_key,
        &format!("/v1/inboxes/{}/messages/{id}", a.inbox_id),
    )
    .await;
    let r = &m["result"];
    assert_eq!(r["from"]["address"], "alice@example.com");
    assert_eq!(r["from"]["name"], "Alice");
    assert_eq!(r["to"][0]["address"], "agent@mailroom.test");
    assert_eq!(r["message_id"], "one@example.com");
    assert_eq!(r["extracted"]["codes"][0], "482913");
    assert_eq!(
        r["extracted"]["links"][0],
        "https://example.com/verify?t=abc"
    );
    assert!(
        r["text"]
            .as_str()
            .unwrap()
            .contains("\n..a line that began with a dot")
    );
    assert!(
        r["headers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["name"] == "Received")
    );
    s.stop().await;
}

async fn lettre_delivers_attachments_that_download_decoded(s: TestServer) {
    use lettre::message::{Attachment, MultiPart, SinglePart, header::ContentType};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let a = s.new_account("files").await;
    let pdf: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let email = Message::builder()
        .from("Bob <bob@example.org>".parse().unwrap())
        .to(a.email.parse().unwrap())
        .subject("Crème brûlée report")
        .multipart(
            MultiPart::mixed()
                .singlepart(SinglePart::plain("Voilà le rapport.".to_owned()))
                .singlepart(
                    Attachment::new("report.pdf".into())
                        .body(pdf.clone(), ContentType::parse("application/pdf").unwrap()),
                ),
        )
        .unwrap();
    let port = s.server.as_ref().unwrap().smtp_addr.port();
    let mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .build();
    mailer.send(email).await.unwrap();
    let list = messages(&s, &a).await;
    let id = list[0]["id"].as_str().unwrap();
    let m = api(
        &s,
        &a.inbox_key,
        &format!("/v1/inboxes/{}/messages/{id}", a.inbox_id),
    )
    .await;
    let r = &m["result"];
    assert_eq!(r["subject"], "Crème brûlée report");
    assert_eq!(r["text"].as_str().unwrap().trim(), "Voilà le rapport.");
    let att = &r["attachments"][0];
    assert_eq!(att["filename"], "report.pdf");
    assert_eq!(att["content_type"], "application/pdf");
    assert_eq!(att["size"], 70_000);
    let resp = s
        .http
        .get(s.url(&format!(
            "/v1/inboxes/{}/messages/{id}/attachments/{}",
            a.inbox_id,
            att["id"].as_str().unwrap()
        )))
        .bearer_auth(&a.inbox_key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "application/pdf");
    assert_eq!(
        resp.headers()["content-disposition"],
        "attachment; filename=\"report.pdf\""
    );
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    assert_eq!(resp.bytes().await.unwrap().to_vec(), pdf);
    // An HTML attachment without a name is a download too, never a page in the API's origin.
    s.deliver_smtp(
        &a.email,
        "Subject: page\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\
         --b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n\
         --b\r\nContent-Type: text/html\r\nContent-Disposition: attachment\r\n\r\n\
         <script>alert(1)</script>\r\n--b--\r\n",
    )
    .await;
    let list = api(
        &s,
        &a.inbox_key,
        &format!("/v1/inboxes/{}/messages?limit=10", a.inbox_id),
    )
    .await;
    let page = list["result"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["subject"] == "page")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let resp = s
        .http
        .get(s.url(&format!(
            "/v1/inboxes/{}/messages/{page}/attachments/att_0",
            a.inbox_id
        )))
        .bearer_auth(&a.inbox_key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-disposition"], "attachment");
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    let missing = s
        .http
        .get(s.url(&format!(
            "/v1/inboxes/{}/messages/{id}/attachments/att_9",
            a.inbox_id
        )))
        .bearer_auth(&a.inbox_key)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    s.stop().await;
}

async fn refusals_and_protocol_errors_are_clear(s: TestServer) {
    let a = s.new_account("guarded").await;
    let mut c = Raw::connect(&s);
    assert!(
        c.cmd("MAIL FROM:<x@example.com>").starts_with("503 5.5.1"),
        "MAIL before EHLO"
    );
    let ehlo = c.cmd("EHLO client.test");
    for cap in [
        "PIPELINING",
        "SIZE",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
        "STARTTLS",
    ] {
        assert!(ehlo.contains(cap), "{cap} in {ehlo}");
    }
    assert!(
        c.cmd("RCPT TO:<agent@mailroom.test>").starts_with("503"),
        "RCPT before MAIL"
    );
    assert!(c.cmd("DATA").starts_with("503"));
    assert!(c.cmd("MAIL FROM:<x@example.com>").starts_with("250"));
    assert!(
        c.cmd("MAIL FROM:<y@example.com>").starts_with("503"),
        "nested MAIL"
    );
    assert!(
        c.cmd("RCPT TO:<nobody@mailroom.test>")
            .starts_with("550 5.1.1")
    );
    assert!(
        c.cmd("RCPT TO:<someone@gmail.com>")
            .starts_with("554 5.7.1"),
        "never relays"
    );
    assert!(c.cmd("DATA").starts_with("554"), "no valid recipients");
    assert!(
        c.cmd(&format!("RCPT TO:<{}>", a.email.to_uppercase()))
            .starts_with("250"),
        "case-insensitive"
    );
    assert!(
        c.cmd("RCPT TO:<guarded+news@mailroom.test>")
            .starts_with("250"),
        "sub-addressing"
    );
    assert!(c.cmd("RSET").starts_with("250"));
    assert!(
        c.cmd("DATA").starts_with("503"),
        "RSET ended the transaction"
    );
    assert!(c.cmd("FOO bar").starts_with("500"));
    assert!(
        c.cmd("AUTH PLAIN AGZvbwBiYXI=").starts_with("503"),
        "no AUTH on the MX port"
    );
    assert!(c.cmd("VRFY agent").starts_with("252"));
    assert!(c.cmd("NOOP").starts_with("250"));
    let long = format!("NOOP {}", "x".repeat(5000));
    assert!(c.cmd(&long).starts_with("500 5.5.2"), "over-long line");
    assert!(c.cmd("QUIT").starts_with("221"));
    // Too many recipients.
    let s2 = &s;
    let mut c = Raw::connect(s2);
    c.transaction(&a.email);
    let mut last = String::new();
    for i in 0..100 {
        last = c.cmd(&format!("RCPT TO:<guarded+{i}@mailroom.test>"));
    }
    assert!(last.starts_with("452 4.5.3"), "{last}");
    assert!(messages(&s, &a).await.is_empty(), "nothing was delivered");
    s.stop().await;
}

async fn smuggling_and_bare_newlines_are_refused(s: TestServer) {
    let a = s.new_account("smuggle").await;
    let mut c = Raw::connect(&s);
    c.transaction(&a.email);
    assert!(c.cmd("DATA").starts_with("354"));
    // A smuggling attempt: "<LF>.<LF>" must not end the message, and the whole message,
    // holding bare LFs, is refused; the "smuggled" commands are never executed.
    c.send(b"Subject: first\r\n\r\nhello\n.\nMAIL FROM:<evil@example.com>\r\nRCPT TO:<smuggle@mailroom.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nx\r\n.\r\n");
    let r = c.reply();
    assert!(r.starts_with("554 5.6.0"), "{r}");
    // Bare CR too.
    c.transaction_again(&a.email);
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(b"Subject: cr\r\n\r\nhello\r.\rworld\r\n.\r\n");
    assert!(c.reply().starts_with("554 5.6.0"));
    assert!(
        messages(&s, &a).await.is_empty(),
        "nothing stored, nothing smuggled"
    );
    s.stop().await;
}

impl Raw {
    fn transaction_again(&mut self, to: &str) {
        assert!(
            self.cmd("MAIL FROM:<sender@example.com>")
                .starts_with("250")
        );
        assert!(self.cmd(&format!("RCPT TO:<{to}>")).starts_with("250"));
    }
}

async fn size_limit_is_exact(_default: TestServer) {
    _default.stop().await;
    let backend = if _is_pg() {
        mailroom_testkit::Backend::Postgres
    } else {
        mailroom_testkit::Backend::Sqlite
    };
    let s = TestServer::start_with(backend, |c| c.smtp.max_message_size = 2000)
        .await
        .unwrap();
    let a = s.new_account("sized").await;
    let header = b"Subject: s\r\n\r\n";
    let fill = |n: usize| {
        let mut m = header.to_vec();
        while m.len() < n - 2 {
            m.push(b'a');
        }
        m.extend_from_slice(b"\r\n");
        m
    };
    let mut c = Raw::connect(&s);
    assert!(c.cmd("EHLO x").contains("SIZE 2000"));
    assert!(
        c.cmd("MAIL FROM:<a@example.com> SIZE=2001")
            .starts_with("552"),
        "declared too big"
    );
    c.transaction_again(&a.email);
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(&fill(2000));
    c.send(b".\r\n");
    let r = c.reply();
    assert!(r.starts_with("250"), "exactly at the limit: {r}");
    c.transaction_again(&a.email);
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(&fill(2001));
    c.send(b".\r\n");
    let r = c.reply();
    assert!(r.starts_with("552 5.3.4"), "one byte over: {r}");
    assert!(c.cmd("NOOP").starts_with("250"), "the session goes on");
    assert_eq!(messages(&s, &a).await.len(), 1);
    s.stop().await;
}

fn _is_pg() -> bool {
    std::thread::current()
        .name()
        .is_some_and(|n| n.ends_with("postgres"))
}

async fn pipelining_and_bdat_work(s: TestServer) {
    let a = s.new_account("piper").await;
    let mut c = Raw::connect(&s);
    assert!(c.cmd("EHLO x").starts_with("250"));
    // All commands in one write; the replies come back in order.
    c.send(format!("MAIL FROM:<p@example.com>\r\nRCPT TO:<{}>\r\nRCPT TO:<nobody@mailroom.test>\r\nDATA\r\n", a.email).as_bytes());
    assert!(c.reply().starts_with("250"));
    assert!(c.reply().starts_with("250"));
    assert!(c.reply().starts_with("550"));
    assert!(c.reply().starts_with("354"));
    c.send(b"Subject: piped\r\n\r\nbody\r\n.\r\nNOOP\r\n");
    assert!(c.reply().starts_with("250 2.0.0 OK: queued as msg_"));
    assert!(
        c.reply().starts_with("250"),
        "the NOOP pipelined after the dot"
    );
    // BDAT (CHUNKING): two chunks, the last one with LAST.
    c.transaction_again(&a.email);
    let part1 = b"Subject: chunked\r\n\r\nfirst ";
    let part2 = b"second\r\n";
    c.send(format!("BDAT {}\r\n", part1.len()).as_bytes());
    c.send(part1);
    assert!(c.reply().starts_with("250"));
    c.send(format!("BDAT {} LAST\r\n", part2.len()).as_bytes());
    c.send(part2);
    assert!(c.reply().starts_with("250 2.0.0 OK"));
    // BDAT without a transaction: refused, and the chunk is skipped, not run as commands.
    c.send(b"BDAT 6 LAST\r\nQUIT\r\n");
    assert!(c.reply().starts_with("503"));
    assert!(c.cmd("NOOP").starts_with("250"), "still in step");
    let list = messages(&s, &a).await;
    let subjects: Vec<&str> = list
        .iter()
        .map(|m| m["subject"].as_str().unwrap())
        .collect();
    assert_eq!(subjects, ["chunked", "piped"]);
    s.stop().await;
}

async fn a_client_that_disconnects_mid_data_leaves_nothing(s: TestServer) {
    let a = s.new_account("halfway").await;
    {
        let mut c = Raw::connect(&s);
        c.transaction(&a.email);
        assert!(c.cmd("DATA").starts_with("354"));
        c.send(b"Subject: never finished\r\n\r\nhalf a mess");
    } // dropped: the connection closes mid-DATA
    // A client that never sends a byte is timed out (tested with a short timeout below).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(messages(&s, &a).await.is_empty());
    s.stop().await;
    let s = TestServer::start_with(mailroom_testkit::Backend::Sqlite, |c| {
        c.smtp.command_timeout = Duration::from_millis(300);
    })
    .await
    .unwrap();
    let addr = s.server.as_ref().unwrap().smtp_addr;
    let mut silent = TcpStream::connect(addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut all = String::new();
    silent.read_to_string(&mut all).unwrap();
    assert!(
        all.starts_with("220 ") && all.contains("421 4.4.2"),
        "{all}"
    );
    s.stop().await;
}

async fn waiting_for_mail_returns_when_it_arrives(s: TestServer) {
    let a = s.new_account("waiter").await;
    let url = s.url(&format!("/v1/inboxes/{}/messages?wait=20", a.inbox_id));
    let req = s.http.get(url).bearer_auth(&a.inbox_key).send();
    let started = std::time::Instant::now();
    let waiter = tokio::spawn(req);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "the request waits");
    let email = a.email.clone();
    let addr = s.server.as_ref().unwrap().smtp_addr;
    tokio::task::spawn_blocking(move || {
        let mut c = Raw {
            r: BufReader::new(TcpStream::connect(addr).unwrap()),
            w: TcpStream::connect(addr).unwrap(),
        };
        drop(c.w);
        let w = c.r.get_ref().try_clone().unwrap();
        c.w = w;
        assert!(c.reply().starts_with("220"));
        c.transaction(&email);
        assert!(c.cmd("DATA").starts_with("354"));
        assert!(c.cmd("Subject: wake up\r\n\r\nhi\r\n.").starts_with("250"));
    })
    .await
    .unwrap();
    let resp = waiter.await.unwrap().unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["result"]["messages"][0]["subject"], "wake up");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered on arrival, not at the timeout"
    );
    // Polling with after= and nothing newer: an empty list after the wait.
    let id = body["result"]["messages"][0]["id"].as_str().unwrap();
    let t = std::time::Instant::now();
    let r = api(
        &s,
        &a.inbox_key,
        &format!("/v1/inboxes/{}/messages?after={id}&wait=1", a.inbox_id),
    )
    .await;
    assert!(r["result"]["messages"].as_array().unwrap().is_empty());
    assert!(t.elapsed() >= Duration::from_millis(900));
    let bad = s
        .http
        .get(s.url(&format!("/v1/inboxes/{}/messages?wait=61", a.inbox_id)))
        .bearer_auth(&a.inbox_key)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    s.stop().await;
}

async fn send_raw(s: &TestServer, to: &str, message: &str) {
    s.deliver_smtp(to, message).await;
}

async fn messages_can_be_read_labelled_moved_and_deleted(s: TestServer) {
    let a = s.new_account("organiser").await;
    send_raw(&s, &a.email, "From: x@example.com\r\nSubject: one\r\n\r\n1").await;
    let id = messages(&s, &a).await[0]["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/inboxes/{}/messages/{id}", a.inbox_id);
    let patch = |body: Value| {
        s.http
            .patch(s.url(&path))
            .bearer_auth(&a.inbox_key)
            .json(&body)
            .send()
    };
    let r: Value = patch(serde_json::json!({"read": true, "add_labels": ["otp", "important"]}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["result"]["read"], true);
    assert_eq!(
        r["result"]["labels"],
        serde_json::json!(["otp", "important"])
    );
    let unread = api(
        &s,
        &a.inbox_key,
        &format!("/v1/inboxes/{}/messages?unread=true", a.inbox_id),
    )
    .await;
    assert_eq!(unread["result"]["total"], 0);
    let labelled = api(
        &s,
        &a.inbox_key,
        &format!("/v1/inboxes/{}/messages?label=otp", a.inbox_id),
    )
    .await;
    assert_eq!(labelled["result"]["total"], 1);
    let bad = patch(serde_json::json!({"mailbox": "Nowhere"}))
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    let bad = patch(serde_json::json!({"add_labels": ["has space"]}))
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    let r: Value = patch(serde_json::json!({"mailbox": "Archive", "remove_labels": ["important"]}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["result"]["mailbox"], "Archive");
    assert_eq!(r["result"]["labels"], serde_json::json!(["otp"]));
    assert!(
        messages(&s, &a).await.is_empty(),
        "INBOX is the default list"
    );
    let archived = api(
        &s,
        &a.inbox_key,
        &format!("/v1/inboxes/{}/messages?mailbox=Archive", a.inbox_id),
    )
    .await;
    assert_eq!(archived["result"]["total"], 1);
    let del: Value = s
        .http
        .delete(s.url(&path))
        .bearer_auth(&a.inbox_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(del["result"]["outcome"], "trash");
    let del: Value = s
        .http
        .delete(s.url(&path))
        .bearer_auth(&a.inbox_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(del["result"]["outcome"], "deleted");
    let gone = s
        .http
        .get(s.url(&path))
        .bearer_auth(&a.inbox_key)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
    s.stop().await;
}

async fn replies_are_threaded(s: TestServer) {
    let a = s.new_account("threader").await;
    send_raw(
        &s,
        &a.email,
        "Message-ID: <t1@example.com>\r\nSubject: question\r\n\r\n?",
    )
    .await;
    send_raw(&s, &a.email, "Message-ID: <t2@example.com>\r\nIn-Reply-To: <t1@example.com>\r\nReferences: <t1@example.com>\r\nSubject: Re: question\r\n\r\n!").await;
    send_raw(
        &s,
        &a.email,
        "Message-ID: <u1@example.com>\r\nSubject: other\r\n\r\n.",
    )
    .await;
    let threads = api(
        &s,
        &a.inbox_key,
        &format!("/v1/inboxes/{}/threads", a.inbox_id),
    )
    .await;
    assert_eq!(threads["result"]["total"], 2);
    let big = threads["result"]["threads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["messages"] == 2)
        .unwrap();
    let t = api(
        &s,
        &a.inbox_key,
        &format!(
            "/v1/inboxes/{}/threads/{}",
            a.inbox_id,
            big["id"].as_str().unwrap()
        ),
    )
    .await;
    let subjects: Vec<&str> = t["result"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["subject"].as_str().unwrap())
        .collect();
    assert_eq!(subjects, ["question", "Re: question"], "oldest first");
    let missing = s
        .http
        .get(s.url(&format!("/v1/inboxes/{}/threads/thr_nothing", a.inbox_id)))
        .bearer_auth(&a.inbox_key)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    s.stop().await;
}

async fn other_tenants_cannot_read_the_mail(s: TestServer) {
    let a = s.new_account("private").await;
    let b = s.new_account("nosy").await;
    send_raw(&s, &a.email, "Subject: secret\r\n\r\nfor a only").await;
    let id = messages(&s, &a).await[0]["id"].as_str().unwrap().to_owned();
    for path in [
        format!("/v1/inboxes/{}/messages", a.inbox_id),
        format!("/v1/inboxes/{}/messages/{id}", a.inbox_id),
        format!("/v1/inboxes/{}/messages/{id}/raw", a.inbox_id),
        format!("/v1/inboxes/{}/messages/{id}", b.inbox_id),
        format!("/v1/inboxes/{}/threads", a.inbox_id),
    ] {
        for key in [&b.account_key, &b.inbox_key] {
            let resp = s
                .http
                .get(s.url(&path))
                .bearer_auth(key)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 404, "{path}");
        }
    }
    // The account key of the owner reads it.
    api(
        &s,
        &a.account_key,
        &format!("/v1/inboxes/{}/messages/{id}", a.inbox_id),
    )
    .await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits_answer_421() {
    let s = TestServer::start_with(mailroom_testkit::Backend::Sqlite, |c| {
        c.smtp.connections.max_per_ip = 2;
    })
    .await
    .unwrap();
    let first = Raw::connect(&s);
    let second = Raw::connect(&s);
    let addr = s.server.as_ref().unwrap().smtp_addr;
    let mut third = BufReader::new(TcpStream::connect(addr).unwrap());
    let mut line = String::new();
    third.read_line(&mut line).unwrap();
    assert!(
        line.starts_with("421 4.7.0") && line.contains("too many connections from your address"),
        "{line}"
    );
    drop((first, second));
    // Slots are given back when sessions end.
    let mut ok = false;
    for _ in 0..50 {
        let mut r = BufReader::new(TcpStream::connect(addr).unwrap());
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        if line.starts_with("220") {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "a new session is admitted once the others closed");
    s.stop().await;
    let s = TestServer::start_with(mailroom_testkit::Backend::Sqlite, |c| {
        c.smtp.connections.max_connections = 1
    })
    .await
    .unwrap();
    let _held = Raw::connect(&s);
    let mut next =
        BufReader::new(TcpStream::connect(s.server.as_ref().unwrap().smtp_addr).unwrap());
    let mut line = String::new();
    next.read_line(&mut line).unwrap();
    assert!(
        line.starts_with("421 4.7.0") && line.contains("too many connections"),
        "{line}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_and_from_filters_select_messages() {
    let s = TestServer::start(mailroom_testkit::Backend::Sqlite)
        .await
        .unwrap();
    let a = s.new_account("filtered").await;
    send_raw(
        &s,
        &a.email,
        "From: old@example.com\r\nSubject: old\r\n\r\nx",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let cut = mailroom_core::time::rfc3339(mailroom_core::time::now_ms());
    send_raw(
        &s,
        &a.email,
        "From: New@Example.com\r\nSubject: new\r\n\r\nx",
    )
    .await;
    let path = format!("/v1/inboxes/{}/messages?since={}", a.inbox_id, cut);
    let r = api(&s, &a.inbox_key, &path).await;
    let subjects: Vec<&str> = r["result"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["subject"].as_str().unwrap())
        .collect();
    assert_eq!(subjects, ["new"]);
    let r = api(
        &s,
        &a.inbox_key,
        &format!("/v1/inboxes/{}/messages?from=new%40example", a.inbox_id),
    )
    .await;
    assert_eq!(r["result"]["total"], 1);
    let bad = s
        .http
        .get(s.url(&format!(
            "/v1/inboxes/{}/messages?since=yesterday",
            a.inbox_id
        )))
        .bearer_auth(&a.inbox_key)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let bad = s
        .http
        .get(s.url(&format!(
            "/v1/inboxes/{}/messages?after=msg_unknown",
            a.inbox_id
        )))
        .bearer_auth(&a.inbox_key)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    s.stop().await;
}
