//! Seed 002's scoped API keys over real HTTP, SMTP and POP3.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::process::Command;

use mailroom_core::Tier;
use mailroom_testkit::{TestServer, on_both_backends};
use reqwest::StatusCode;
use serde_json::{Value, json};

on_both_backends!(seed_002_shapes_and_scopes_at_every_door);

async fn call(
    s: &TestServer,
    method: reqwest::Method,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> (StatusCode, Value, reqwest::header::HeaderMap) {
    let mut req = s.http.request(method, s.url(path)).bearer_auth(key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        headers,
    )
}

fn smtp_send(port: u16, user: &str, pass: &str, to: &str) -> String {
    let code = r#"
import smtplib, sys
port, user, pw, to = sys.argv[1:5]
try:
    s = smtplib.SMTP("127.0.0.1", int(port), timeout=20)
    s.starttls()
    s.login(user, pw)
    s.sendmail(user, [to], f"From: {user}\r\nTo: {to}\r\nSubject: by key\r\n\r\nx\r\n".encode())
    print("OK")
except smtplib.SMTPResponseException as e:
    print(e.smtp_code, e.smtp_error.decode())
"#;
    let out = Command::new("python3")
        .args(["-c", code, &port.to_string(), user, pass, to])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn pop3_login(port: u16, user: &str, pass: &str) -> String {
    let code = r#"
import poplib, sys
port, user, pw = sys.argv[1:4]
try:
    p = poplib.POP3("127.0.0.1", int(port), timeout=20)
    p.user(user)
    p.pass_(pw)
    print("OK", p.stat()[0])
    p.quit()
except poplib.error_proto as e:
    print(e.args[0].decode())
"#;
    let out = Command::new("python3")
        .args(["-c", code, &port.to_string(), user, pass])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

async fn seed_002_shapes_and_scopes_at_every_door(s: TestServer) {
    use reqwest::Method;
    let a = s.new_account("keyed").await;
    let b = s.new_account("keyed-target").await;
    s.set_tier(&a.account_id, Tier::Developer).await;
    let srv = s.server.as_ref().unwrap();
    // GET: connection info in the seed's shape.
    let (st, body, headers) = call(
        &s,
        Method::GET,
        "/api/smtp-credentials",
        &a.account_key,
        None,
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert!(
        headers.contains_key("x-ratelimit-limit") && headers.contains_key("x-ratelimit-remaining")
    );
    let smtp = &body["connectionInfo"]["smtp"];
    assert_eq!(smtp["serverName"], "mail.test");
    assert_eq!(smtp["port"], srv.submission_addr.port());
    assert_eq!(smtp["securePort"], srv.submissions_addr.port());
    assert_eq!(smtp["enabled"], true);
    assert_eq!(body["connectionInfo"]["pop3"]["port"], srv.pop3_addr.port());
    assert_eq!(body["connectionInfo"]["imap"]["enabled"], true);
    assert_eq!(body["connectionInfo"]["imap"]["port"], srv.imap_addr.port());
    assert_eq!(body["keys"], json!([]));
    // POST: the key once, camelCase.
    let (st, reader, _) = call(
        &s,
        Method::POST,
        "/api/smtp-credentials",
        &a.account_key,
        Some(json!({"name": "Reader", "scopes": ["api:read", "pop3"]})),
    )
    .await;
    assert_eq!(st, 201, "{reader}");
    for k in [
        "id",
        "name",
        "createdAt",
        "lastUsedAt",
        "isActive",
        "scopes",
        "apiKey",
    ] {
        assert!(reader.get(k).is_some(), "{k} in {reader}");
    }
    assert_eq!(reader["lastUsedAt"], Value::Null);
    assert_eq!(reader["isActive"], true);
    let reader_key = reader["apiKey"].as_str().unwrap().to_owned();
    let (_, sender, _) = call(
        &s,
        Method::POST,
        "/v1/keys",
        &a.account_key,
        Some(json!({"name": "Sender", "scopes": ["smtp", "api:write"]})),
    )
    .await;
    let sender_key = sender["apiKey"].as_str().unwrap().to_owned();
    let (_, listed, _) = call(
        &s,
        Method::GET,
        "/api/smtp-credentials",
        &a.account_key,
        None,
    )
    .await;
    assert_eq!(listed["keys"].as_array().unwrap().len(), 2);
    assert!(listed["keys"][0].get("apiKey").is_none(), "shown once");
    // HTTP: api:read reads; without api:write no changes; account routes need the account key.
    let msgs = format!("/v1/inboxes/{}/messages", a.inbox_id);
    assert_eq!(call(&s, Method::GET, &msgs, &reader_key, None).await.0, 200);
    let (st, e, _) = call(&s, Method::GET, &msgs, &sender_key, None).await;
    assert_eq!(
        (st.as_u16(), e["error"].as_str()),
        (403, Some("SCOPE_REQUIRED")),
        "{e}"
    );
    let (st, e, _) = call(
        &s,
        Method::POST,
        &format!("/v1/inboxes/{}/send", a.inbox_id),
        &reader_key,
        Some(json!({"to": b.email, "subject": "s", "text": "t"})),
    )
    .await;
    assert_eq!(
        (st.as_u16(), e["error"].as_str()),
        (403, Some("SCOPE_REQUIRED"))
    );
    let (st, _, _) = call(
        &s,
        Method::POST,
        &format!("/v1/inboxes/{}/send", a.inbox_id),
        &sender_key,
        Some(json!({"to": b.email, "subject": "s", "text": "t"})),
    )
    .await;
    assert_eq!(st, 201);
    for path in ["/v1/inboxes", "/v1/account", "/api/smtp-credentials"] {
        let (st, e, _) = call(&s, Method::GET, path, &reader_key, None).await;
        assert_eq!(
            (st.as_u16(), e["error"].as_str()),
            (403, Some("ACCOUNT_KEY_REQUIRED")),
            "{path}"
        );
    }
    // SMTP: the smtp scope logs in as an inbox of the account; without it, 535.
    let port = srv.submission_addr.port();
    assert_eq!(smtp_send(port, &a.email, &sender_key, &b.email), "OK");
    let r = smtp_send(port, &a.email, &reader_key, &b.email);
    assert!(r.starts_with("535") && r.contains("smtp scope"), "{r}");
    let r = smtp_send(port, &b.email, &sender_key, &a.email);
    assert!(r.starts_with("535"), "not another account's address: {r}");
    // POP3: the pop3 scope.
    let pop = srv.pop3_addr.port();
    let r = pop3_login(pop, &a.email, &reader_key);
    assert!(r.starts_with("OK"), "{r}");
    assert!(pop3_login(pop, &a.email, &sender_key).contains("pop3 scope"));
    // lastUsedAt without a write per request: visible at once, stored on flush.
    let (_, listed, _) = call(&s, Method::GET, "/v1/keys", &a.account_key, None).await;
    assert!(
        listed["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["lastUsedAt"].is_string()),
        "{listed}"
    );
    srv.services.flush_key_uses().await.unwrap();
    let stored = srv
        .services
        .store()
        .list_api_keys(&a.account_id)
        .await
        .unwrap();
    assert!(stored.iter().all(|k| k.last_used_at.is_some()));
    // Rotate: same name and scopes, the old key fails at once; delete: 204, fails everywhere.
    let reader_id = reader["id"].as_str().unwrap();
    let (st, rotated, _) = call(
        &s,
        Method::POST,
        &format!("/api/smtp-credentials/{reader_id}/rotate"),
        &a.account_key,
        None,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(rotated["name"], "Reader");
    assert_eq!(rotated["scopes"], json!(["api:read", "pop3"]));
    assert_eq!(call(&s, Method::GET, &msgs, &reader_key, None).await.0, 401);
    assert_eq!(
        call(
            &s,
            Method::GET,
            &msgs,
            rotated["apiKey"].as_str().unwrap(),
            None
        )
        .await
        .0,
        200
    );
    let sender_id = sender["id"].as_str().unwrap();
    let resp = s
        .http
        .delete(s.url(&format!("/api/smtp-credentials/{sender_id}")))
        .bearer_auth(&a.account_key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert!(
        smtp_send(port, &a.email, &sender_key, &b.email).starts_with("535"),
        "revoked at SMTP too"
    );
    let resp = s
        .http
        .delete(s.url(&format!("/api/smtp-credentials/{sender_id}")))
        .bearer_auth(&a.account_key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    // Mobile keys; bad input; other tenants.
    let (st, m, _) = call(
        &s,
        Method::POST,
        "/api/smtp-credentials/mobile",
        &a.account_key,
        Some(json!({"name": "iPhone 15", "platform": "ios", "deviceId": "device-identifier"})),
    )
    .await;
    assert_eq!(st, 201);
    assert_eq!(
        m["scopes"],
        json!(["smtp", "pop3", "imap", "api:read", "api:write"])
    );
    for (body, code) in [
        (json!({"name": "x", "scopes": ["root"]}), "INVALID_SCOPES"),
        (json!({"name": "x", "scopes": []}), "INVALID_SCOPES"),
        (json!({"name": "  ", "scopes": ["smtp"]}), "INVALID_NAME"),
        (json!({"name": "x"}), "VALIDATION_ERROR"),
    ] {
        let (st, e, _) = call(
            &s,
            Method::POST,
            "/api/smtp-credentials",
            &a.account_key,
            Some(body),
        )
        .await;
        assert_eq!((st.as_u16(), e["error"].as_str()), (422, Some(code)), "{e}");
    }
    let (st, _, _) = call(&s, Method::GET, "/api/smtp-credentials", &a.inbox_key, None).await;
    assert_eq!(st, 403);
    let resp = s
        .http
        .delete(s.url(&format!(
            "/api/smtp-credentials/{}",
            m["id"].as_str().unwrap()
        )))
        .bearer_auth(&b.account_key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404, "another tenant's key");
    s.stop().await;
}
