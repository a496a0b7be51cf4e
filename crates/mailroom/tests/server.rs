//! The server as a whole: rate limits, health and metrics, the API description, TLS, the
//! seed's curl examples, the admin CLI against a running server, restarts, and secrets at
//! rest.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::process::Command;

use mailroom_core::Tier;
use mailroom_testkit::{Backend, TestServer, on_both_backends};
use reqwest::StatusCode;
use serde_json::{Value, json};

on_both_backends!(
    health_metrics_and_api_description,
    seed_003_curl_examples_work_verbatim,
    admin_set_tier_works_while_the_server_runs,
    no_secret_is_stored_in_clear,
);

async fn health_metrics_and_api_description(s: TestServer) {
    let resp = s.http.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    // One request so the counter exists, then read it back.
    s.http.get(s.url("/v1/inboxes")).send().await.unwrap();
    let text = s
        .http
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("mailroom_http_requests_total"), "{text}");
    assert!(text.contains("route=\"/v1/inboxes\""), "{text}");
    let doc: Value = s
        .http
        .get(s.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/v1/inboxes",
        "/v1/inboxes/{id}",
        "/v1/inboxes/{id}/rotate-key",
        "/v1/account",
        "/v1/account/smtp",
        "/v1/capabilities",
        "/v1/upgrade-link",
        "/v1/notify-operator",
        "/v1/account/notices",
        "/v1/account/notices/{id}/resolve",
        "/v1/keys",
        "/v1/keys/{key_id}",
        "/healthz",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }
    // Every path parameter is in its path's template, and query parameters are not
    // described as path parameters (issue #14: SDKs are generated from this document).
    let mut wrong = Vec::new();
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        for (method, op) in ops.as_object().expect("operations") {
            for p in op["parameters"].as_array().into_iter().flatten() {
                let (name, place) = (p["name"].as_str().unwrap_or(""), p["in"].as_str());
                if place == Some("path") && !path.contains(&format!("{{{name}}}")) {
                    wrong.push(format!("{method} {path}: path parameter {name}"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    let docs = s.http.get(s.url("/docs")).send().await.unwrap();
    assert!(
        docs.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = docs.text().await.unwrap();
    assert!(
        html.contains("/v1/account/smtp") && html.contains("SMTP_REQUIRES_PAID"),
        "docs list routes and errors"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_creation_is_rate_limited_per_ip() {
    let s = TestServer::start_with(Backend::Sqlite, |c| c.inbox_create_per_hour = 3)
        .await
        .unwrap();
    let mut account_key = None;
    for remaining in [2, 1, 0] {
        let resp = s.http.post(s.url("/v1/inboxes")).send().await.unwrap();
        assert_eq!(resp.status(), 201);
        assert_eq!(resp.headers()["x-ratelimit-limit"], "3");
        assert_eq!(
            resp.headers()["x-ratelimit-remaining"],
            remaining.to_string().as_str()
        );
        let body: Value = resp.json().await.unwrap();
        account_key.get_or_insert(
            body["result"]["account_api_key"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let resp = s
        .http
        .post(s.url("/v1/inboxes"))
        .json(&json!({"username": "late"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3600).contains(&retry), "{retry}");
    assert_eq!(resp.headers()["x-ratelimit-limit"], "3");
    assert_eq!(resp.headers()["x-ratelimit-remaining"], "0");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "RATE_LIMITED");
    // The refused call created nothing (the name is free), and the account key is not
    // limited by the per-IP rule for creating accounts.
    for name in ["late", "later"] {
        let resp = s
            .http
            .post(s.url("/v1/inboxes"))
            .bearer_auth(account_key.as_ref().unwrap())
            .json(&json!({"username": name}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        // The general per-key limit, not the creation limit of 3 per IP.
        assert_eq!(resp.headers()["x-ratelimit-limit"], "6000");
    }
    s.stop().await;
}

async fn seed_003_curl_examples_work_verbatim(s: TestServer) {
    let base = &s.base_url;
    let curl = |args: &[&str]| -> Value {
        let out = Command::new("curl")
            .arg("-sS")
            .args(args)
            .output()
            .expect("curl is installed");
        assert!(
            out.status.success(),
            "curl failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
    };
    // The seed's commands with https://api.daimon.email replaced by the server's URL.
    let created = curl(&[
        "-X",
        "POST",
        &format!("{base}/v1/inboxes"),
        "-H",
        "Content-Type: application/json",
        "-d",
        "{\n\"username\": \"platform-admin\",\n\"client_id\": \"bootstrap-001\"\n}",
    ]);
    let account_key = created["result"]["account_api_key"]
        .as_str()
        .expect("account key")
        .to_owned();
    let auth = format!("Authorization: Bearer {account_key}");
    let second = curl(&[
        "-X",
        "POST",
        &format!("{base}/v1/inboxes"),
        "-H",
        &auth,
        "-H",
        "Content-Type: application/json",
        "-d",
        "{\n\"username\": \"research-agent\",\n\"client_id\": \"agent-001\"\n}",
    ]);
    assert_eq!(second["result"]["email"], "research-agent@mailroom.test");
    let list = curl(&["-X", "GET", &format!("{base}/v1/inboxes"), "-H", &auth]);
    assert_eq!(list["result"]["total"], 2);
    assert_eq!(
        list["result"]["inboxes"][0]["email"],
        "platform-admin@mailroom.test"
    );
    let account = curl(&["-X", "GET", &format!("{base}/v1/account"), "-H", &auth]);
    assert_eq!(account["result"]["limits"]["current_inboxes"], 2);
    // Seed 000's request, on a paid tier.
    s.set_tier(
        created["result"]["account_id"].as_str().unwrap(),
        Tier::Developer,
    )
    .await;
    let smtp = curl(&["-X", "GET", &format!("{base}/v1/account/smtp"), "-H", &auth]);
    assert_eq!(smtp["result"]["username"], created["result"]["account_id"]);
    // Basic auth as seed 004 describes it: the key as user name, no password.
    let basic = curl(&[
        "-u",
        &format!("{account_key}:"),
        &format!("{base}/v1/account"),
    ]);
    assert_eq!(basic["result"]["tier"], "developer");
    s.stop().await;
}

fn mailroom_bin() -> &'static str {
    env!("CARGO_BIN_EXE_mailroom")
}

async fn admin_set_tier_works_while_the_server_runs(s: TestServer) {
    let a = s.new_account("cli-user").await;
    let out = Command::new(mailroom_bin())
        .args([
            "admin",
            "set-tier",
            &a.account_id,
            "growth",
            "--database-url",
            &s.database_url,
        ])
        .env_remove("MAILROOM_DATABASE_URL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("free -> growth"));
    let resp = s
        .http
        .get(s.url("/v1/account"))
        .bearer_auth(&a.account_key)
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["result"]["tier"], "growth",
        "the running server sees the change at once"
    );
    let events = s
        .server
        .as_ref()
        .unwrap()
        .services
        .store()
        .list_events(&a.account_id, 0, 10)
        .await
        .unwrap();
    assert!(events.iter().any(|e| e.event_type == "account.upgraded"));
    // Errors name what is wrong and change nothing.
    let out = Command::new(mailroom_bin())
        .args([
            "admin",
            "set-tier",
            &a.account_id,
            "platinum",
            "--database-url",
            &s.database_url,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown tier"));
    let out = Command::new(mailroom_bin())
        .args([
            "admin",
            "set-tier",
            "acc_doesnotexist",
            "growth",
            "--database-url",
            &s.database_url,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no account"));
    s.stop().await;
}

async fn no_secret_is_stored_in_clear(s: TestServer) {
    let a = s.new_account("secretive").await;
    let resp = s
        .http
        .post(s.url(&format!("/v1/inboxes/{}/rotate-key", a.inbox_id)))
        .bearer_auth(&a.account_key)
        .send()
        .await
        .unwrap();
    let rotated: Value = resp.json().await.unwrap();
    let new_key = rotated["result"]["inbox_api_key"]
        .as_str()
        .unwrap()
        .to_owned();
    s.set_tier(&a.account_id, Tier::Developer).await;
    let smtp: Value = s
        .http
        .get(s.url("/v1/account/smtp"))
        .bearer_auth(&a.account_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let smtp_password = smtp["result"]["password"].as_str().unwrap().to_owned();
    // A user's password and refresh token (seed 004).
    let user_password = "a user password that must not be stored";
    let resp = s
        .http
        .post(s.url("/v1/account/users"))
        .bearer_auth(&a.account_key)
        .json(&serde_json::json!({"email": "secretive@example.com", "password": user_password}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let grant: Value = s
        .http
        .post(s.url("/v1/auth/token"))
        .json(&serde_json::json!({"email": "secretive@example.com", "password": user_password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let refresh = grant["refresh_token"].as_str().unwrap().to_owned();
    // A domain SMTP credential (seed 001), on a verified domain.
    let post = |path: &str, body: Value| {
        s.http
            .post(s.url(path))
            .bearer_auth(&a.account_key)
            .json(&body)
            .send()
    };
    let added: Value = post(
        "/v1/domains",
        serde_json::json!({"domain": "secret.example"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let dkim = added["result"]["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["purpose"] == "dkim")
        .unwrap()["value"]
        .as_str()
        .unwrap()
        .split('"')
        .filter(|p| !p.trim().is_empty())
        .collect::<String>();
    let proof = added["result"]["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["purpose"] == "verification")
        .unwrap()["value"]
        .as_str()
        .unwrap()
        .trim_matches('"')
        .to_owned();
    s.dns.txt("_mailroom-verification.secret.example", &proof);
    s.dns.mx("secret.example", 10, "mail.test");
    s.dns.txt("secret.example", "v=spf1 mx -all");
    s.dns.txt("mailroom1._domainkey.secret.example", &dkim);
    let verified: Value = post("/v1/domains/secret.example/verify", Value::Null)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(verified["result"]["status"], "verified", "{verified}");
    let cred: Value = post(
        "/api/domains/secret.example/credentials",
        serde_json::json!({"username": "stored"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let cred_password = cred["data"]["credential"]["password"]
        .as_str()
        .unwrap()
        .to_owned();
    let secrets = [
        a.account_key.clone(),
        a.inbox_key.clone(),
        new_key,
        smtp_password,
        user_password.to_owned(),
        refresh,
        cred_password,
    ];
    let haystack = database_text(&s).await;
    assert!(haystack.contains(&a.account_id), "the dump holds the data");
    for secret in &secrets {
        assert!(
            !haystack.contains(secret.as_str()),
            "a secret is stored in clear"
        );
        // Not even the random part without its prefix.
        assert!(!haystack.contains(&secret[secret.len() - 24..]));
    }
    s.stop().await;
}

/// Everything the database holds, as text: the raw SQLite files, or every PostgreSQL row
/// cast to text.
async fn database_text(s: &TestServer) -> String {
    if let Some(path) = s.database_url.strip_prefix("sqlite://") {
        let mut all = Vec::new();
        for suffix in ["", "-wal"] {
            if let Ok(bytes) = std::fs::read(format!("{path}{suffix}")) {
                all.extend(bytes);
            }
        }
        return String::from_utf8_lossy(&all).into_owned();
    }
    use sqlx::{Connection, Row};
    let mut conn = sqlx::PgConnection::connect(&s.database_url).await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema()",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(tables.len() >= 4, "{tables:?}");
    let mut text = String::new();
    for t in tables {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT t::text FROM {t} t")))
            .fetch_all(&mut conn)
            .await
            .unwrap();
        for r in rows {
            text.push_str(&r.get::<String, _>(0));
            text.push('\n');
        }
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_and_secrets_survive_a_restart() {
    let s = TestServer::start(Backend::Sqlite).await.unwrap();
    let a = s.new_account("durable").await;
    s.set_tier(&a.account_id, Tier::Developer).await;
    let get_smtp = |s: &TestServer| {
        let req = s
            .http
            .get(s.url("/v1/account/smtp"))
            .bearer_auth(&a.account_key);
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let before = get_smtp(&s).await;
    let cert_path = s.server.as_ref().unwrap().tls_cert_path.clone();
    let cert_before = std::fs::read(&cert_path).unwrap();
    let mut s = s;
    s.restart().await;
    let resp = s
        .http
        .get(s.url(&format!("/v1/inboxes/{}", a.inbox_id)))
        .bearer_auth(&a.inbox_key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "keys and inboxes survive");
    let after = get_smtp(&s).await;
    assert_eq!(
        after["result"]["password"], before["result"]["password"],
        "the master secret is reused"
    );
    assert_eq!(
        std::fs::read(&cert_path).unwrap(),
        cert_before,
        "the certificate is reused"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_is_served_over_tls_when_configured() {
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.http_tls = mailroom::config::HttpTls::On
    })
    .await
    .unwrap();
    assert!(s.base_url.starts_with("https://"), "{}", s.base_url);
    let server = s.server.as_ref().unwrap();
    let pem = std::fs::read(&server.tls_cert_path).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .no_proxy()
        .build()
        .unwrap();
    // The certificate names localhost and 127.0.0.1 besides the host name.
    let resp = client
        .post(format!("{}/v1/inboxes", s.base_url))
        .json(&json!({"username": "secure"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    // Plain HTTP to the TLS port gets no API answer.
    let plain = s
        .http
        .get(format!("http://{}/healthz", s.http_addr))
        .send()
        .await;
    assert!(plain.map(|r| r.status() != 200).unwrap_or(true));
    // A client that does not trust the certificate refuses it.
    assert!(
        s.http
            .get(format!("{}/healthz", s.base_url))
            .send()
            .await
            .is_err()
    );
    s.stop().await;
}

/// Every listener but HTTP.
const OTHER_LISTENERS: [&str; 7] = [
    "MAILROOM_SMTP_LISTEN",
    "MAILROOM_SUBMISSION_LISTEN",
    "MAILROOM_SUBMISSIONS_LISTEN",
    "MAILROOM_IMAP_LISTEN",
    "MAILROOM_IMAPS_LISTEN",
    "MAILROOM_POP3_LISTEN",
    "MAILROOM_POP3S_LISTEN",
];

/// The README's first command: the real binary, a fresh data directory, `serve --dev`,
/// stopped by SIGTERM.
#[test]
fn the_binary_starts_fresh_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = Command::new(mailroom_bin())
        .args(["serve", "--dev"])
        .current_dir(dir.path())
        .env("MAILROOM_HTTP_LISTEN", format!("127.0.0.1:{port}"))
        // The other listeners on free ports, so parallel runs never collide.
        .envs(OTHER_LISTENERS.iter().map(|v| (*v, "127.0.0.1:0")))
        .env_remove("MAILROOM_DATABASE_URL")
        .env_remove("MAILROOM_DATA_DIR")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/healthz");
    // The first start generates the DKIM key: allow for a slow, busy machine.
    let mut healthy = false;
    for _ in 0..300 {
        if let Ok(out) = Command::new("curl").args(["-sf", &url]).output()
            && out.status.success()
        {
            healthy = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let data = dir.path().join("data");
    assert!(healthy, "the server answered /healthz");
    for f in ["mailroom.db", "master.key", "tls/cert.pem", "tls/key.pem"] {
        assert!(data.join(f).exists(), "{f} created on first start");
    }
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = child.wait().unwrap();
    assert!(status.success(), "graceful exit on SIGTERM: {status}");
}

/// One rate limit on every API route: per key (or token), per IP without one, with the
/// headers on every answer and 429 + Retry-After over the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_is_rate_limited_per_key_and_per_ip() {
    let s = TestServer::start_with(Backend::Sqlite, |c| c.requests_per_minute = 5)
        .await
        .unwrap();
    let a = s.new_account("limited").await;
    let b = s.new_account("unlimited-neighbour").await;
    let get = |key: Option<&str>, path: &str| {
        let mut req = s.http.get(s.url(path));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        req.send()
    };
    let mut remaining = Vec::new();
    for path in [
        "/v1/account",
        "/v1/inboxes",
        "/v1/capabilities",
        "/v1/events",
        "/v1/webhooks",
    ] {
        let r = get(Some(&a.account_key), path).await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
        assert_eq!(r.headers()["x-ratelimit-limit"], "5");
        remaining.push(
            r.headers()["x-ratelimit-remaining"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(remaining, ["4", "3", "2", "1", "0"]);
    let r = get(Some(&a.account_key), "/v1/account").await.unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "RATE_LIMITED");
    // Another key has its own budget.
    let r = get(Some(&b.account_key), "/v1/account").await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["x-ratelimit-remaining"], "4");
    // Without a key, the client IP is the bucket.
    let mut last = 0;
    for _ in 0..6 {
        last = get(None, "/v1/capabilities")
            .await
            .unwrap()
            .status()
            .as_u16();
    }
    assert_eq!(last, 429);
    // A made-up key per request is no way out: what is not a valid credential counts
    // against the address (issue #12).
    for i in 0..3 {
        let bogus = format!("mr_acc_{i:0>32}");
        let r = get(Some(&bogus), "/v1/account").await.unwrap();
        assert_eq!(r.status().as_u16(), 429, "a bogus key from a spent address");
    }
    // A valid key keeps its own budget from the same address.
    let r = get(Some(&b.account_key), "/v1/account").await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // Health and metrics are not limited.
    assert_eq!(get(None, "/healthz").await.unwrap().status().as_u16(), 200);
    s.stop().await;
}

/// Issue #12: `/metrics` is for this host, or for a scraper with the token; a client from
/// elsewhere (here: through a trusted proxy) gets 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_for_this_host_or_a_token() {
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.trusted_proxies = vec![std::net::IpAddr::from([127, 0, 0, 1])];
        c.metrics_token = Some("scrape-token".into());
    })
    .await
    .unwrap();
    let get = |forwarded: Option<&str>, token: Option<&str>| {
        let mut req = s.http.get(s.url("/metrics"));
        if let Some(f) = forwarded {
            req = req.header("x-forwarded-for", f);
        }
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    let local = get(None, None).await.unwrap();
    assert_eq!(local.status().as_u16(), 200);
    assert!(local.text().await.unwrap().contains("mailroom_"));
    let far = get(Some("203.0.113.9"), None).await.unwrap();
    assert_eq!(far.status().as_u16(), 404, "another host without the token");
    let wrong = get(Some("203.0.113.9"), Some("guess")).await.unwrap();
    assert_eq!(wrong.status().as_u16(), 404, "a wrong token");
    let scraper = get(Some("203.0.113.9"), Some("scrape-token"))
        .await
        .unwrap();
    assert_eq!(scraper.status().as_u16(), 200, "the token opens it");
    s.stop().await;
}
