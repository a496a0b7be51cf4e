//! Custom domains and seed 001's domain SMTP credentials over real HTTP, DNS and SMTP, on
//! SQLite and PostgreSQL.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use mailroom_core::Tier;
use mailroom_testkit::{TestServer, on_both_backends};
use serde_json::{Value, json};

on_both_backends!(domains_verify_receive_and_send_with_seed_001_credentials);

async fn call(
    s: &TestServer,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    s.call(method, path, key, body).await
}

/// A message from a domain credential, through Python's smtplib.
fn smtplib(port: u16, user: &str, pass: &str, from: &str, to: &str) -> String {
    let body =
        format!("From: {from}\r\nTo: {to}\r\nSubject: from a domain credential\r\n\r\nhello\r\n");
    mailroom_testkit::smtplib(port, user, pass, from, to, &body)
}

async fn domains_verify_receive_and_send_with_seed_001_credentials(s: TestServer) {
    let a = s.new_account("domain-owner").await;
    let other = s.new_account("domain-stranger").await;
    let key = a.account_key.clone();

    // Free tier: no custom domains, with the way up.
    let (st, e, _) = call(
        &s,
        "POST",
        "/v1/domains",
        Some(&key),
        Some(json!({"domain": "agents.example"})),
    )
    .await;
    assert_eq!(st, 403, "{e}");
    assert_eq!(e["error"], "DOMAINS_REQUIRE_PAID");
    assert!(
        e["upgrade_context"]["operator_action_url"].is_string(),
        "{e}"
    );
    s.set_tier(&a.account_id, Tier::Developer).await;
    s.set_tier(&other.account_id, Tier::Developer).await;

    // Added, with its records.
    let (st, d, _) = call(
        &s,
        "POST",
        "/v1/domains",
        Some(&key),
        Some(json!({"domain": "Agents.Example"})),
    )
    .await;
    assert_eq!(st, 201, "{d}");
    let d = &d["result"];
    assert_eq!(d["domain"], "agents.example");
    assert_eq!(d["status"], "pending");
    let records = d["records"].as_array().unwrap();
    let purposes: Vec<&str> = records
        .iter()
        .map(|r| r["purpose"].as_str().unwrap())
        .collect();
    assert_eq!(
        purposes,
        ["verification", "mx", "spf", "dkim", "dmarc"],
        "{d}"
    );
    assert!(records.iter().all(|r| r["status"] == "pending"));
    let dkim = records.iter().find(|r| r["purpose"] == "dkim").unwrap();
    assert_eq!(dkim["name"], "mailroom1._domainkey.agents.example.");
    assert!(dkim["value"].as_str().unwrap().contains("p=MII"), "{dkim}");
    openssl_reads_the_dkim_key(dkim["value"].as_str().unwrap());

    // Bad input and clashes change nothing.
    for (body, status, code) in [
        (json!({"domain": "not a domain"}), 422, "INVALID_DOMAIN"),
        (json!({"domain": "agents.example"}), 409, "DOMAIN_TAKEN"),
        (json!({"domain": "mailroom.test"}), 409, "DOMAIN_TAKEN"),
    ] {
        let (st, e, _) = call(&s, "POST", "/v1/domains", Some(&key), Some(body)).await;
        assert_eq!((st, e["error"].as_str().unwrap()), (status, code), "{e}");
    }
    // Another tenant's domain is not found, whatever the route. (Another account may
    // claim it too while it is unverified: tenancy_domains.rs.)
    for (m, p) in [
        ("GET", "/v1/domains/agents.example"),
        ("POST", "/v1/domains/agents.example/verify"),
        ("GET", "/v1/domains/agents.example/zone-file"),
        ("DELETE", "/v1/domains/agents.example"),
    ] {
        let (st, _, _) = call(&s, m, p, Some(&other.account_key), None).await;
        assert_eq!(st, 404, "{m} {p}");
    }
    // Inbox keys do not manage domains.
    let (st, _, _) = call(&s, "GET", "/v1/domains", Some(&a.inbox_key), None).await;
    assert_eq!(st, 403);

    // The zone file is what to paste.
    let (st, zone, _) = call(
        &s,
        "GET",
        "/v1/domains/agents.example/zone-file",
        Some(&key),
        None,
    )
    .await;
    assert_eq!(st, 200);
    let zone = zone.as_str().unwrap().to_owned();
    assert!(
        zone.contains("agents.example.\t3600\tIN\tMX\t10 mail.test."),
        "{zone}"
    );
    assert!(
        zone.contains("mailroom1._domainkey.agents.example.\t3600\tIN\tTXT"),
        "{zone}"
    );

    // Not verified yet: no inboxes, no credentials.
    let (st, e, _) = call(
        &s,
        "POST",
        "/v1/inboxes",
        Some(&key),
        Some(json!({"username": "support", "domain": "agents.example"})),
    )
    .await;
    assert_eq!(
        (st, e["error"].as_str().unwrap()),
        (422, "DOMAIN_NOT_AVAILABLE"),
        "{e}"
    );
    let (st, e, _) = call(
        &s,
        "POST",
        "/api/domains/agents.example/credentials",
        Some(&key),
        Some(json!({"username": "myuser"})),
    )
    .await;
    assert_eq!(st, 422, "{e}");
    assert_eq!(e["success"], false);
    assert!(
        e["errors"]["domain"][0]
            .as_str()
            .unwrap()
            .contains("not verified"),
        "{e}"
    );

    // A check before the records exist finds them missing.
    let (st, v, _) = call(
        &s,
        "POST",
        "/v1/domains/agents.example/verify",
        Some(&key),
        None,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["result"]["status"], "pending");
    assert!(
        v["result"]["records"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "missing"),
        "{v}"
    );

    // Publish the records in DNS; the check verifies the domain.
    let proof = records
        .iter()
        .find(|r| r["purpose"] == "verification")
        .unwrap();
    assert_eq!(proof["name"], "_mailroom-verification.agents.example.");
    s.dns.txt(
        "_mailroom-verification.agents.example",
        proof["value"].as_str().unwrap().trim_matches('"'),
    );
    s.dns.mx("agents.example", 10, "mail.test");
    s.dns.txt("agents.example", "v=spf1 mx -all");
    s.dns.txt(
        "mailroom1._domainkey.agents.example",
        &dkim["value"]
            .as_str()
            .unwrap()
            .split('"')
            .filter(|p| !p.trim().is_empty())
            .collect::<String>(),
    );
    let (st, v, _) = call(
        &s,
        "POST",
        "/v1/domains/agents.example/verify",
        Some(&key),
        None,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["result"]["status"], "verified", "{v}");
    let statuses: Vec<(&str, &str)> = v["result"]["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["purpose"].as_str().unwrap(),
                r["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            ("verification", "verified"),
            ("mx", "verified"),
            ("spf", "verified"),
            ("dkim", "verified"),
            ("dmarc", "missing")
        ]
    );
    let (_, ev, _) = call(&s, "GET", "/v1/events", Some(&key), None).await;
    assert!(
        ev["result"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "domain.verified" && e["data"]["domain"] == "agents.example"),
        "{ev}"
    );

    // Inboxes on it, and inbound mail for it; other accounts cannot use it.
    let (st, inbox, _) = call(
        &s,
        "POST",
        "/v1/inboxes",
        Some(&key),
        Some(json!({"username": "support", "domain": "agents.example"})),
    )
    .await;
    assert_eq!(st, 201, "{inbox}");
    assert_eq!(inbox["result"]["email"], "support@agents.example");
    let support_id = inbox["result"]["id"].as_str().unwrap().to_owned();
    let (st, _, _) = call(
        &s,
        "POST",
        "/v1/inboxes",
        Some(&other.account_key),
        Some(json!({"username": "x", "domain": "agents.example"})),
    )
    .await;
    assert_eq!(st, 422);
    s.deliver_smtp(
        "support@agents.example",
        "From: someone@example.com\r\nSubject: to the custom domain\r\n\r\nhi\r\n",
    )
    .await;
    let (_, list, _) = call(
        &s,
        "GET",
        &format!("/v1/inboxes/{support_id}/messages"),
        Some(&key),
        None,
    )
    .await;
    assert_eq!(
        list["result"]["messages"][0]["subject"], "to the custom domain",
        "{list}"
    );

    // Seed 001: a credential, in the seed's shape, with the rate-limit headers.
    let (st, c, h) = call(
        &s,
        "POST",
        "/api/domains/agents.example/credentials",
        Some(&key),
        Some(json!({"username": "myuser"})),
    )
    .await;
    assert_eq!(st, 201, "{c}");
    assert_eq!(c["success"], true);
    assert_eq!(c["message"], "Credential created successfully.");
    let cred = &c["data"]["credential"];
    for field in [
        "id",
        "user_smtp_guid",
        "username",
        "created_at",
        "modified_at",
        "password",
        "remote_synced",
    ] {
        assert!(cred.get(field).is_some(), "{field} in {c}");
    }
    assert!(cred["id"].is_i64() && cred["created_at"].is_i64(), "{c}");
    assert_eq!(cred["user_smtp_guid"].as_str().unwrap().len(), 36);
    assert_eq!(cred["username"], "myuser");
    assert!(
        h.contains_key("x-ratelimit-limit") && h.contains_key("x-ratelimit-remaining"),
        "{h:?}"
    );
    let password = cred["password"].as_str().unwrap().to_owned();
    let guid = cred["user_smtp_guid"].as_str().unwrap().to_owned();
    // Duplicate and bad usernames: 422 with field errors.
    for body in [
        json!({"username": "myuser"}),
        json!({"username": "bad user!"}),
        json!({}),
    ] {
        let (st, e, _) = call(
            &s,
            "POST",
            "/api/domains/agents.example/credentials",
            Some(&key),
            Some(body),
        )
        .await;
        assert_eq!(st, 422, "{e}");
        assert_eq!(e["message"], "Validation failed.");
        assert!(e["errors"]["username"][0].is_string(), "{e}");
    }
    // 401 and 404 in the seed's shape.
    let (st, e, _) = call(
        &s,
        "POST",
        "/api/domains/agents.example/credentials",
        None,
        Some(json!({"username": "u2"})),
    )
    .await;
    assert_eq!(
        (st, &e),
        (401, &json!({"success": false, "message": "Unauthorized"}))
    );
    let (st, e, _) = call(
        &s,
        "POST",
        "/api/domains/agents.example/credentials",
        Some("mr_acc_bogusbogusbogusbogusbogus"),
        Some(json!({"username": "u2"})),
    )
    .await;
    assert_eq!(
        (st, &e),
        (401, &json!({"success": false, "message": "Unauthorized"}))
    );
    let (st, e, _) = call(
        &s,
        "POST",
        "/api/domains/agents.example/credentials",
        Some(&other.account_key),
        Some(json!({"username": "u2"})),
    )
    .await;
    assert_eq!(st, 404, "{e}");
    assert_eq!(e["success"], false);
    // The list never shows passwords.
    let (st, l, _) = call(
        &s,
        "GET",
        "/api/domains/agents.example/credentials",
        Some(&key),
        None,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(l["data"]["credentials"][0]["username"], "myuser");
    assert!(l["data"]["credentials"][0].get("password").is_none(), "{l}");

    // The credential logs in to submission as username@domain and sends only as the domain.
    let port = s.server.as_ref().unwrap().submission_addr.port();
    let b = s.new_account("domain-rcpt").await;
    assert_eq!(
        smtplib(
            port,
            "myuser@agents.example",
            &password,
            "support@agents.example",
            &b.email
        ),
        "OK"
    );
    let (_, got, _) = call(
        &s,
        "GET",
        &format!("/v1/inboxes/{}/messages", b.inbox_id),
        Some(&b.inbox_key),
        None,
    )
    .await;
    assert_eq!(
        got["result"]["messages"][0]["subject"], "from a domain credential",
        "{got}"
    );
    let r = smtplib(port, "myuser@agents.example", &password, &a.email, &b.email);
    assert!(
        r.starts_with("550") && r.contains("agents.example only"),
        "{r}"
    );
    let r = smtplib(
        port,
        "myuser@agents.example",
        "wrong-password",
        "support@agents.example",
        &b.email,
    );
    assert!(r.starts_with("535"), "{r}");

    // Deleted: it stops at once.
    let (st, d, _) = call(
        &s,
        "DELETE",
        &format!("/api/domains/agents.example/credentials/{guid}"),
        Some(&key),
        None,
    )
    .await;
    assert_eq!(st, 200, "{d}");
    assert_eq!(d["success"], true);
    let r = smtplib(
        port,
        "myuser@agents.example",
        &password,
        "support@agents.example",
        &b.email,
    );
    assert!(r.starts_with("535"), "{r}");
    let (st, d, _) = call(
        &s,
        "DELETE",
        &format!("/api/domains/agents.example/credentials/{guid}"),
        Some(&key),
        None,
    )
    .await;
    assert_eq!(st, 404, "{d}");

    // A domain in use is not deleted.
    let (st, e, _) = call(&s, "DELETE", "/v1/domains/agents.example", Some(&key), None).await;
    assert_eq!(
        (st, e["error"].as_str().unwrap()),
        (409, "DOMAIN_IN_USE"),
        "{e}"
    );

    // The credential routes are limited per account: 429 with Retry-After.
    let mut limited = None;
    for _ in 0..70 {
        let (st, e, h) = call(
            &s,
            "GET",
            "/api/domains/agents.example/credentials",
            Some(&key),
            None,
        )
        .await;
        if st == 429 {
            limited = Some((e, h));
            break;
        }
    }
    let (e, h) = limited.expect("a 429 within 70 requests");
    assert_eq!(
        e,
        json!({"success": false, "message": "Too many attempts. Please try again later."})
    );
    assert!(
        h.contains_key("retry-after") && h["x-ratelimit-remaining"] == "0",
        "{h:?}"
    );
    s.stop().await;
}

/// The published `p=` is a SubjectPublicKeyInfo that OpenSSL reads (as OpenDKIM does, with
/// the same call), not the bare PKCS#1 form.
fn openssl_reads_the_dkim_key(record: &str) {
    use base64::Engine;
    let unquoted: String = record.split('"').skip(1).step_by(2).collect();
    let p = unquoted
        .split("p=")
        .nth(1)
        .unwrap_or_else(|| panic!("no p= in {record}"));
    let der = base64::engine::general_purpose::STANDARD
        .decode(p.trim())
        .expect("base64");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dkim.der");
    std::fs::write(&path, der).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["pkey", "-pubin", "-inform", "DER", "-noout", "-text", "-in"])
        .arg(&path)
        .output()
        .expect("cannot run openssl: install it with `apt-get install openssl`");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("Public-Key: (2048 bit)"),
        "openssl pkey -pubin: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
