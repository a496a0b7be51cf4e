//! `POST /v1/inboxes/{id}/send` over real HTTP, on SQLite and PostgreSQL.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use base64::Engine as _;
use mailroom_core::Tier;
use mailroom_testkit::{Backend, TestServer, on_both_backends};
use reqwest::StatusCode;
use serde_json::{Value, json};

on_both_backends!(
    sends_to_hosted_inboxes_with_attachments,
    bad_input_sends_nothing,
    idempotency_keys_send_once
);

async fn get(s: &TestServer, key: &str, path: &str) -> Value {
    s.get_json(key, path).await
}

async fn send(
    s: &TestServer,
    key: &str,
    inbox: &str,
    body: Value,
    idem: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = s
        .http
        .post(s.url(&format!("/v1/inboxes/{inbox}/send")))
        .bearer_auth(key)
        .json(&body);
    if let Some(k) = idem {
        req = req.header("Idempotency-Key", k);
    }
    let resp = req.send().await.unwrap();
    (resp.status(), resp.json().await.unwrap())
}

async fn sends_to_hosted_inboxes_with_attachments(s: TestServer) {
    let a = s.new_account("writer").await;
    let b = s.new_account("reader").await;
    let c = s.new_account("hidden").await;
    // Free tier: receive only.
    let (st, body) = send(
        &s,
        &a.inbox_key,
        &a.inbox_id,
        json!({"to": b.email, "subject": "x", "text": "x"}),
        None,
    )
    .await;
    assert_eq!(st, 403);
    assert_eq!(body["error"], "SEND_REQUIRES_PAID");
    assert!(body["upgrade_context"]["operator_action_url"].is_string());
    s.set_tier(&a.account_id, Tier::Developer).await;
    let pdf = vec![0u8, 1, 2, 255, 254, 10, 13];
    let (st, body) = send(&s, &a.inbox_key, &a.inbox_id, json!({
        "to": [b.email], "bcc": c.email, "subject": "Quarterly report ☕",
        "text": "Numbers attached.", "html": "<p>Numbers <b>attached</b>.</p>",
        "attachments": [{"filename": "r.bin", "content_type": "application/octet-stream", "content": base64::engine::general_purpose::STANDARD.encode(&pdf)}],
        "headers": {"X-Campaign": "q3"}
    }), None).await;
    assert_eq!(st, 201, "{body}");
    let r = &body["result"];
    assert_eq!(r["recipients"].as_array().unwrap().len(), 2);
    assert!(
        r["recipients"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["status"] == "delivered")
    );
    // The recipient reads it, parsed.
    let list = get(
        &s,
        &b.inbox_key,
        &format!("/v1/inboxes/{}/messages", b.inbox_id),
    )
    .await;
    let mid = list["result"]["messages"][0]["id"].as_str().unwrap();
    let m = get(
        &s,
        &b.inbox_key,
        &format!("/v1/inboxes/{}/messages/{mid}", b.inbox_id),
    )
    .await;
    let m = &m["result"];
    assert_eq!(m["subject"], "Quarterly report ☕");
    assert_eq!(m["from"]["address"], a.email.as_str());
    assert_eq!(m["text"].as_str().unwrap().trim(), "Numbers attached.");
    assert!(m["html"].as_str().unwrap().contains("<b>attached</b>"));
    assert_eq!(m["message_id"], r["message_id"]);
    assert!(
        m["headers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["name"] == "X-Campaign" && h["value"] == "q3")
    );
    assert!(
        m["headers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| !h["name"].as_str().unwrap().eq_ignore_ascii_case("bcc")),
        "Bcc is not in the headers"
    );
    let att = s
        .http
        .get(s.url(&format!(
            "/v1/inboxes/{}/messages/{mid}/attachments/att_0",
            b.inbox_id
        )))
        .bearer_auth(&b.inbox_key)
        .send()
        .await
        .unwrap();
    assert_eq!(att.bytes().await.unwrap().to_vec(), pdf);
    // Bcc got it too; the sender has the Sent copy in the answer's thread.
    assert_eq!(
        get(
            &s,
            &c.inbox_key,
            &format!("/v1/inboxes/{}/messages", c.inbox_id)
        )
        .await["result"]["total"],
        1
    );
    let sent = get(
        &s,
        &a.inbox_key,
        &format!(
            "/v1/inboxes/{}/messages/{}",
            a.inbox_id,
            r["id"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(sent["result"]["mailbox"], "Sent");
    assert_eq!(sent["result"]["thread_id"], r["thread_id"]);
    assert_eq!(
        get(&s, &a.account_key, "/v1/account").await["result"]["limits"]["current_sends_today"],
        2
    );
    s.stop().await;
}

async fn bad_input_sends_nothing(s: TestServer) {
    let a = s.new_account("careful").await;
    let b = s.new_account("target").await;
    s.set_tier(&a.account_id, Tier::Developer).await;
    for (body, code) in [
        (
            json!({"to": format!("{}\r\nBcc: x@y.z", b.email), "subject": "s", "text": "t"}),
            "INVALID_ADDRESS",
        ),
        (
            json!({"to": b.email, "subject": "hi\r\nBcc: evil@example.com", "text": "t"}),
            "INVALID_HEADER_VALUE",
        ),
        (
            json!({"to": b.email, "subject": "s", "text": "t", "headers": {"Bcc": "evil@example.com"}}),
            "INVALID_HEADER",
        ),
        (
            json!({"to": b.email, "subject": "s", "text": "t", "headers": {"X-A": "1\r\nBcc: e@x.y"}}),
            "INVALID_HEADER_VALUE",
        ),
        (
            json!({"to": b.email, "subject": "s", "text": "t", "headers": {"X A": "1"}}),
            "INVALID_HEADER",
        ),
        (
            json!({"to": b.email, "subject": "s", "text": "t", "reply_to": "not an address"}),
            "INVALID_ADDRESS",
        ),
        (json!({"subject": "s", "text": "t"}), "NO_RECIPIENTS"),
        (json!({"to": b.email, "subject": "s"}), "NO_BODY"),
        (
            json!({"to": "nobody-here@mailroom.test", "subject": "s", "text": "t"}),
            "RECIPIENT_NOT_FOUND",
        ),
        (
            json!({"to": b.email, "subject": "s", "text": "t", "attachments": [{"filename": "a", "content_type": "text/plain", "content": "***"}]}),
            "INVALID_ATTACHMENT",
        ),
        (
            json!({"to": b.email, "subject": "s", "text": "t", "bogus": 1}),
            "VALIDATION_ERROR",
        ),
    ] {
        let (st, resp) = send(&s, &a.inbox_key, &a.inbox_id, body, None).await;
        assert_eq!(st, 422, "{resp}");
        assert_eq!(resp["error"], code, "{resp}");
    }
    // Another tenant's inbox: 404; wrong content type: 415.
    let (st, _) = send(
        &s,
        &b.inbox_key,
        &a.inbox_id,
        json!({"to": b.email, "subject": "s", "text": "t"}),
        None,
    )
    .await;
    assert_eq!(st, 404);
    let resp = s
        .http
        .post(s.url(&format!("/v1/inboxes/{}/send", a.inbox_id)))
        .bearer_auth(&a.inbox_key)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
    assert_eq!(
        get(
            &s,
            &b.inbox_key,
            &format!("/v1/inboxes/{}/messages", b.inbox_id)
        )
        .await["result"]["total"],
        0,
        "nothing was sent"
    );
    assert_eq!(
        get(&s, &a.account_key, "/v1/account").await["result"]["limits"]["current_sends_today"],
        0,
        "nothing was counted"
    );
    s.stop().await;
}

async fn idempotency_keys_send_once(s: TestServer) {
    let a = s.new_account("retrying").await;
    let b = s.new_account("once").await;
    s.set_tier(&a.account_id, Tier::Developer).await;
    let body = json!({"to": b.email, "subject": "only once", "text": "t"});
    let (st1, first) = send(&s, &a.inbox_key, &a.inbox_id, body.clone(), Some("k-1")).await;
    let (st2, again) = send(&s, &a.inbox_key, &a.inbox_id, body.clone(), Some("k-1")).await;
    assert_eq!((st1, st2), (StatusCode::CREATED, StatusCode::CREATED));
    assert_eq!(first, again, "the same answer");
    let (st, other) = send(
        &s,
        &a.inbox_key,
        &a.inbox_id,
        json!({"to": b.email, "subject": "different", "text": "t"}),
        Some("k-1"),
    )
    .await;
    assert_eq!(st, 409);
    assert_eq!(other["error"], "IDEMPOTENCY_KEY_REUSED");
    // client_id works the same way.
    let with_cid =
        json!({"to": b.email, "subject": "by client id", "text": "t", "client_id": "c-1"});
    let (_, x) = send(&s, &a.inbox_key, &a.inbox_id, with_cid.clone(), None).await;
    let (_, y) = send(&s, &a.inbox_key, &a.inbox_id, with_cid, None).await;
    assert_eq!(x["result"]["id"], y["result"]["id"]);
    assert_eq!(
        get(
            &s,
            &b.inbox_key,
            &format!("/v1/inboxes/{}/messages", b.inbox_id)
        )
        .await["result"]["total"],
        2,
        "two sends, not four"
    );
    // A failed request gives its key back: the retry runs.
    let (st, _) = send(
        &s,
        &a.inbox_key,
        &a.inbox_id,
        json!({"to": "nobody-here@mailroom.test", "subject": "s", "text": "t"}),
        Some("k-2"),
    )
    .await;
    assert_eq!(st, 422);
    let (st, _) = send(
        &s,
        &a.inbox_key,
        &a.inbox_id,
        json!({"to": "nobody-here@mailroom.test", "subject": "s", "text": "t"}),
        Some("k-2"),
    )
    .await;
    assert_eq!(st, 422, "not a replayed answer, a new attempt");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_quota_is_429() {
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.tiers.developer.max_sends_per_day = Some(1)
    })
    .await
    .unwrap();
    let a = s.new_account("quota").await;
    let b = s.new_account("quota-target").await;
    s.set_tier(&a.account_id, Tier::Developer).await;
    let body = json!({"to": b.email, "subject": "s", "text": "t"});
    let (st, _) = send(&s, &a.inbox_key, &a.inbox_id, body.clone(), None).await;
    assert_eq!(st, 201);
    let (st, resp) = send(&s, &a.inbox_key, &a.inbox_id, body, None).await;
    assert_eq!(st, 429);
    assert_eq!(resp["error"], "SEND_LIMIT_EXCEEDED");
    assert!(resp["message"].as_str().unwrap().contains("resets at"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_and_forwards_keep_the_thread() {
    let s = TestServer::start(Backend::Sqlite).await.unwrap();
    let a = s.new_account("asker").await;
    let b = s.new_account("answerer").await;
    let c = s.new_account("copied").await;
    let d = s.new_account("forwardee").await;
    for acc in [&a, &b] {
        s.set_tier(&acc.account_id, Tier::Developer).await;
    }
    let (_, sent) = send(
        &s,
        &a.inbox_key,
        &a.inbox_id,
        json!({"to": b.email, "cc": c.email, "subject": "Question", "text": "Is it done?"}),
        None,
    )
    .await;
    let original_mid = sent["result"]["message_id"].as_str().unwrap().to_owned();
    let a_thread = sent["result"]["thread_id"].as_str().unwrap().to_owned();
    let got = get(
        &s,
        &b.inbox_key,
        &format!("/v1/inboxes/{}/messages", b.inbox_id),
    )
    .await;
    let mid = got["result"]["messages"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let post = |path: String, body: Value| {
        s.http
            .post(s.url(&path))
            .bearer_auth(&b.inbox_key)
            .json(&body)
            .send()
    };
    // Reply: to the sender only, Re:, In-Reply-To and References, and into a's thread.
    let r = post(
        format!("/v1/inboxes/{}/messages/{mid}/reply", b.inbox_id),
        json!({"text": "Yes."}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let list = get(
        &s,
        &a.inbox_key,
        &format!("/v1/inboxes/{}/messages", a.inbox_id),
    )
    .await;
    let reply = &list["result"]["messages"][0];
    assert_eq!(reply["subject"], "Re: Question");
    assert_eq!(
        reply["thread_id"],
        a_thread.as_str(),
        "the reply joins the asker's thread"
    );
    let full = get(
        &s,
        &a.inbox_key,
        &format!(
            "/v1/inboxes/{}/messages/{}",
            a.inbox_id,
            reply["id"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(full["result"]["in_reply_to"][0], original_mid.as_str());
    assert_eq!(
        full["result"]["references"]
            .as_array()
            .unwrap()
            .last()
            .unwrap(),
        original_mid.as_str()
    );
    assert_eq!(
        get(
            &s,
            &c.inbox_key,
            &format!("/v1/inboxes/{}/messages", c.inbox_id)
        )
        .await["result"]["total"],
        1,
        "a reply does not copy c"
    );
    // Reply-all: the sender and the other recipients, not ourselves.
    let r = post(
        format!("/v1/inboxes/{}/messages/{mid}/reply-all", b.inbox_id),
        json!({"text": "All done."}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    let to: Vec<&str> = body["result"]["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["address"].as_str().unwrap())
        .collect();
    assert_eq!(to, [a.email.as_str(), c.email.as_str()]);
    // Forward: Fwd:, with the original attached.
    let r = post(
        format!("/v1/inboxes/{}/messages/{mid}/forward", b.inbox_id),
        json!({"to": d.email, "text": "FYI"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let fwd = get(
        &s,
        &d.inbox_key,
        &format!("/v1/inboxes/{}/messages", d.inbox_id),
    )
    .await;
    assert_eq!(fwd["result"]["messages"][0]["subject"], "Fwd: Question");
    let fid = fwd["result"]["messages"][0]["id"].as_str().unwrap();
    let full = get(
        &s,
        &d.inbox_key,
        &format!("/v1/inboxes/{}/messages/{fid}", d.inbox_id),
    )
    .await;
    assert!(
        full["result"]["attachments"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["content_type"] == "message/rfc822"),
        "{full}"
    );
    // A forward needs recipients; a missing message is 404.
    let r = post(
        format!("/v1/inboxes/{}/messages/{mid}/forward", b.inbox_id),
        json!({"text": "x"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 422);
    let r = post(
        format!("/v1/inboxes/{}/messages/msg_nothing/reply", b.inbox_id),
        json!({"text": "x"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 404);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sent_mail_carries_a_dkim_signature_that_verifies() {
    use mail_auth::hickory_resolver::config::{
        ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts,
    };
    use mail_auth::{AuthenticatedMessage, DkimResult, MessageAuthenticator};
    let s = TestServer::start(Backend::Sqlite).await.unwrap();
    let a = s.new_account("signer").await;
    let b = s.new_account("verifier").await;
    s.set_tier(&a.account_id, Tier::Developer).await;
    let (st, _) = send(
        &s,
        &a.inbox_key,
        &a.inbox_id,
        json!({"to": b.email, "subject": "signed", "text": "hello"}),
        None,
    )
    .await;
    assert_eq!(st, 201);
    let list = get(
        &s,
        &b.inbox_key,
        &format!("/v1/inboxes/{}/messages", b.inbox_id),
    )
    .await;
    let mid = list["result"]["messages"][0]["id"].as_str().unwrap();
    let raw = s
        .http
        .get(s.url(&format!("/v1/inboxes/{}/messages/{mid}/raw", b.inbox_id)))
        .bearer_auth(&b.inbox_key)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(
        raw.starts_with(b"DKIM-Signature: v=1; a=rsa-sha256;"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
    let text = String::from_utf8_lossy(&raw).into_owned();
    let sig_end = text
        .find("\r\nFrom:")
        .or_else(|| text.find("\r\nfrom:"))
        .unwrap_or(text.len());
    let sig = &text[..sig_end];
    assert!(
        sig.contains("d=mailroom.test;") && sig.contains("s=mailroom1;"),
        "{sig}"
    );
    // Publish what `mailroom dns-records` prints, and verify with an independent verifier.
    let services = &s.server.as_ref().unwrap().services;
    let records = services.dns_records("mailroom.test").await.unwrap();
    let (name, _, value) = records.iter().find(|r| r.0.contains("_domainkey")).unwrap();
    let joined: String = value.split('"').filter(|p| !p.trim().is_empty()).collect();
    s.dns.txt(name, &joined);
    let mut udp = ConnectionConfig::udp();
    udp.port = s.dns.addr.port();
    let config = ResolverConfig::from_name_servers(vec![NameServerConfig::new(
        s.dns.addr.ip(),
        true,
        vec![udp],
    )]);
    let auth = MessageAuthenticator::new(config, ResolverOpts::default()).unwrap();
    let msg = AuthenticatedMessage::parse(&raw).unwrap();
    let results = auth.verify_dkim(&msg).await;
    assert!(!results.is_empty());
    assert_eq!(
        *results[0].result(),
        DkimResult::Pass,
        "{:?}",
        results[0].result()
    );
    // The CLI prints the same record for operators.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .args([
            "dns-records",
            "--database-url",
            &s.database_url,
            "--hostname",
            "mail.test",
            "--default-domain",
            "mailroom.test",
        ])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "mailroom.test.\t3600\tIN\tMX\t10 mail.test.",
        "v=spf1 mx -all",
        "mailroom1._domainkey.mailroom.test.",
        "_dmarc.mailroom.test.",
    ] {
        assert!(printed.contains(want), "{want} in {printed}");
    }
    s.stop().await;
}
