//! Webhooks over real HTTP: a receiver (axum) in the test, signatures checked with Python's
//! hmac, and the failures that matter: a receiver that is down, then up; a restart with
//! deliveries pending; 410; 429 with Retry-After; a slow receiver; a secret rotation.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::collections::VecDeque;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use mailroom_testkit::{Backend, TestAccount, TestServer, on_both_backends};
use serde_json::{Value, json};

#[derive(Clone, Debug)]
struct Hit {
    id: String,
    timestamp: String,
    signature: String,
    body: String,
    at: std::time::Instant,
}

/// What the receiver answers: a status, an optional Retry-After, a delay.
type Plan = (u16, Option<&'static str>, Duration);

#[derive(Clone, Default)]
struct Receiver {
    hits: Arc<Mutex<Vec<Hit>>>,
    plan: Arc<Mutex<VecDeque<Plan>>>,
    /// Sent as `Location` on every answer when set (to test redirects).
    location: Arc<Mutex<Option<String>>>,
}

impl Receiver {
    /// Serves on `addr` (or a new port) until the returned handle is aborted.
    async fn serve(&self, addr: Option<SocketAddr>) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let listener =
            tokio::net::TcpListener::bind(addr.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap()))
                .await
                .unwrap();
        let addr = listener.local_addr().unwrap();
        let me = self.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let me = me.clone();
                async move {
                    let h = |n: &str| {
                        headers
                            .get(n)
                            .map(|v| v.to_str().unwrap().to_owned())
                            .unwrap_or_default()
                    };
                    me.hits.lock().unwrap().push(Hit {
                        id: h("webhook-id"),
                        timestamp: h("webhook-timestamp"),
                        signature: h("webhook-signature"),
                        body,
                        at: std::time::Instant::now(),
                    });
                    let plan =
                        me.plan
                            .lock()
                            .unwrap()
                            .pop_front()
                            .unwrap_or((200, None, Duration::ZERO));
                    tokio::time::sleep(plan.2).await;
                    let mut resp = axum::response::Response::new(axum::body::Body::from("ok"));
                    *resp.status_mut() = StatusCode::from_u16(plan.0).unwrap();
                    if let Some(ra) = plan.1 {
                        resp.headers_mut()
                            .insert("retry-after", ra.parse().unwrap());
                    }
                    if let Some(loc) = me.location.lock().unwrap().clone() {
                        resp.headers_mut().insert("location", loc.parse().unwrap());
                    }
                    resp
                }
            }),
        );
        let handle = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        (addr, handle)
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    async fn wait_for(&self, n: usize, secs: u64) -> Vec<Hit> {
        for _ in 0..secs * 20 {
            if self.hits().len() >= n {
                return self.hits();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("expected {n} webhook requests, got {}", self.hits().len());
    }
}

fn verify(secret: &str, hit: &Hit) -> bool {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/clients/verify_webhook.py"
    );
    let mut child = Command::new("python3")
        .args([script, secret, &hit.id, &hit.timestamp, &hit.signature])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(hit.body.as_bytes())
        .unwrap();
    child.wait().unwrap().success()
}

/// Short retries so the whole schedule runs within a test.
async fn server(backend: Backend) -> Option<TestServer> {
    TestServer::start_with(backend, |c| {
        c.webhook_retry_schedule = vec![Duration::from_millis(300); 3];
        c.webhook_timeout = Duration::from_secs(1);
    })
    .await
}

async fn send_mail(s: &TestServer, to: &str, subject: &str) {
    s.deliver_smtp(to, &format!("Subject: {subject}\r\n\r\nhi"))
        .await;
}

async fn create(s: &TestServer, a: &TestAccount, body: Value) -> (StatusCode, Value) {
    let resp = s
        .http
        .post(s.url("/v1/webhooks"))
        .bearer_auth(&a.account_key)
        .json(&body)
        .send()
        .await
        .unwrap();
    (
        StatusCode::from_u16(resp.status().as_u16()).unwrap(),
        resp.json().await.unwrap(),
    )
}

async fn get(s: &TestServer, key: &str, path: &str) -> Value {
    s.get_json(key, path).await
}

on_both_backends!(
    registration_is_validated,
    delivers_signed_events_and_lists_them,
    down_then_up_delivers_every_event_once
);

async fn registration_is_validated(s: TestServer) {
    let a = s.new_account("hooks").await;
    let other = s.new_account("hooks-other").await;
    let (st, body) = create(&s, &a, json!({"url": "http://127.0.0.1:9/hook", "events": ["message.received"], "client_id": "w1"})).await;
    assert_eq!(st, 201, "{body}");
    let r = &body["result"];
    let id = r["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("wh_"));
    assert!(r["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(r["status"], "active");
    let (st, again) = create(
        &s,
        &a,
        json!({"url": "http://127.0.0.1:9/other", "events": ["*"], "client_id": "w1"}),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(again["result"]["id"], id.as_str());
    for (body, code) in [
        (
            json!({"url": "ftp://example.com/x", "events": ["*"]}),
            "INVALID_URL",
        ),
        (json!({"url": "not a url", "events": ["*"]}), "INVALID_URL"),
        (
            json!({"url": "http://10.0.0.5/hook", "events": ["*"]}),
            "URL_NOT_ALLOWED",
        ),
        (
            json!({"url": "http://169.254.169.254/latest", "events": ["*"]}),
            "URL_NOT_ALLOWED",
        ),
        (
            json!({"url": "https://user:pw@example.com/", "events": ["*"]}),
            "INVALID_URL",
        ),
        (
            json!({"url": "https://example.com/", "events": []}),
            "INVALID_EVENTS",
        ),
        (
            json!({"url": "https://example.com/", "events": ["message.recieved"]}),
            "INVALID_EVENTS",
        ),
        (
            json!({"url": "https://example.com/", "events": ["*"], "inbox_ids": [other.inbox_id]}),
            "INVALID_INBOX_IDS",
        ),
    ] {
        let (st, resp) = create(&s, &a, body).await;
        assert_eq!(st, 422, "{resp}");
        assert_eq!(resp["error"], code, "{resp}");
    }
    let list = get(&s, &a.account_key, "/v1/webhooks").await;
    assert_eq!(list["result"]["total"], 1);
    assert!(
        list["result"]["webhooks"][0].get("secret").is_none(),
        "the secret is not shown again"
    );
    let resp = s
        .http
        .get(s.url("/v1/webhooks"))
        .bearer_auth(&a.inbox_key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403, "inbox keys do not manage webhooks");
    let resp = s
        .http
        .get(s.url(&format!("/v1/webhooks/{id}")))
        .bearer_auth(&other.account_key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404, "another tenant's webhook");
    let patched: Value = s
        .http
        .patch(s.url(&format!("/v1/webhooks/{id}")))
        .bearer_auth(&a.account_key)
        .json(&json!({"status": "disabled", "events": ["*"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(patched["result"]["status"], "disabled");
    assert_eq!(patched["result"]["events"], json!(["*"]));
    let bad = s
        .http
        .patch(s.url(&format!("/v1/webhooks/{id}")))
        .bearer_auth(&a.account_key)
        .json(&json!({"status": "unhealthy"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    let del = s
        .http
        .delete(s.url(&format!("/v1/webhooks/{id}")))
        .bearer_auth(&a.account_key)
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 200);
    let gone = s
        .http
        .get(s.url(&format!("/v1/webhooks/{id}")))
        .bearer_auth(&a.account_key)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
    s.stop().await;
}

/// The same backend as `s`, restarted with short retries.
async fn with_short_retries(s: TestServer) -> TestServer {
    let backend = if s.database_url.starts_with("postgres") {
        Backend::Postgres
    } else {
        Backend::Sqlite
    };
    s.stop().await;
    server(backend).await.unwrap()
}

async fn delivers_signed_events_and_lists_them(s: TestServer) {
    let s = with_short_retries(s).await;
    let a = s.new_account("receiver").await;
    let rx = Receiver::default();
    let (addr, _h) = rx.serve(None).await;
    let (_, body) = create(
        &s,
        &a,
        json!({"url": format!("http://{addr}/hook"), "events": ["message.received"]}),
    )
    .await;
    let secret = body["result"]["secret"].as_str().unwrap().to_owned();
    let id = body["result"]["id"].as_str().unwrap().to_owned();
    send_mail(&s, &a.email, "hello hook").await;
    let hits = rx.wait_for(1, 10).await;
    let hit = &hits[0];
    assert!(verify(&secret, hit), "Python's hmac accepts the signature");
    assert!(
        !verify("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", hit),
        "and refuses another secret"
    );
    let payload: Value = serde_json::from_str(&hit.body).unwrap();
    assert_eq!(payload["type"], "message.received");
    assert_eq!(payload["data"]["subject"], "hello hook");
    let url = payload["data"]["url"].as_str().unwrap();
    let msg = s
        .http
        .get(url)
        .bearer_auth(&a.inbox_key)
        .send()
        .await
        .unwrap();
    assert_eq!(msg.status(), 200, "the payload links to the whole message");
    // The account's event log has the same event, with the same id.
    let events = get(&s, &a.account_key, "/v1/events").await;
    let ev = events["result"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "message.received")
        .unwrap();
    assert_eq!(ev["id"], hit.id.as_str());
    let after = get(&s, &a.account_key, &format!("/v1/events?after={}", hit.id)).await;
    assert!(
        after["result"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["id"] != hit.id.as_str())
    );
    // The attempt is listed; a test event reaches this webhook only; a replay resends.
    let attempts = get(&s, &a.account_key, &format!("/v1/webhooks/{id}/deliveries")).await;
    assert_eq!(attempts["result"]["attempts"][0]["status_code"], 200);
    assert_eq!(
        attempts["result"]["attempts"][0]["delivery_status"],
        "delivered"
    );
    let resp = s
        .http
        .post(s.url(&format!("/v1/webhooks/{id}/test")))
        .bearer_auth(&a.account_key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let hits = rx.wait_for(2, 10).await;
    assert!(hits[1].body.contains("webhook.test"));
    let did = attempts["result"]["attempts"][0]["delivery_id"]
        .as_str()
        .unwrap();
    let resp = s
        .http
        .post(s.url(&format!("/v1/webhooks/{id}/deliveries/{did}/replay")))
        .bearer_auth(&a.account_key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let hits = rx.wait_for(3, 10).await;
    assert_eq!(
        hits[2].id, hits[0].id,
        "a replay carries the same webhook-id"
    );
    // Rotation: both secrets sign for 24 hours.
    let rotated: Value = s
        .http
        .post(s.url(&format!("/v1/webhooks/{id}/rotate-secret")))
        .bearer_auth(&a.account_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let new_secret = rotated["result"]["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);
    send_mail(&s, &a.email, "after rotation").await;
    let hits = rx.wait_for(4, 10).await;
    let last = &hits[3];
    assert_eq!(
        last.signature.split(' ').count(),
        2,
        "two signatures during the overlap"
    );
    assert!(verify(&new_secret, last) && verify(&secret, last));
    s.stop().await;
}

async fn down_then_up_delivers_every_event_once(s: TestServer) {
    let mut s = with_short_retries(s).await;
    let a = s.new_account("resilient").await;
    // A port nobody listens on yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (_, body) = create(
        &s,
        &a,
        json!({"url": format!("http://{port}/hook"), "events": ["message.received"]}),
    )
    .await;
    let id = body["result"]["id"].as_str().unwrap().to_owned();
    for i in 0..3 {
        send_mail(&s, &a.email, &format!("while down {i}")).await;
    }
    // Failures are recorded with their error.
    let mut failed = false;
    for _ in 0..60 {
        let attempts = get(&s, &a.account_key, &format!("/v1/webhooks/{id}/deliveries")).await;
        if attempts["result"]["attempts"].as_array().unwrap().len() >= 3 {
            assert!(attempts["result"]["attempts"][0]["error"].is_string());
            failed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(failed, "attempts against a dead endpoint are recorded");
    // The server restarts with deliveries pending; then the receiver comes up.
    s.restart().await;
    let rx = Receiver::default();
    let (_, _h) = rx.serve(Some(port)).await;
    let hits = rx.wait_for(3, 15).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let hits_after = rx.hits();
    assert_eq!(hits_after.len(), hits.len(), "nothing is delivered twice");
    let mut ids: Vec<&str> = hits_after.iter().map(|h| h.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "every event arrived");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_disables_and_exhausted_retries_mark_unhealthy() {
    let s = server(Backend::Sqlite).await.unwrap();
    let a = s.new_account("failing").await;
    let rx = Receiver::default();
    let (addr, _h) = rx.serve(None).await;
    // Endpoint 1 answers 410 Gone: disabled at once.
    rx.plan
        .lock()
        .unwrap()
        .push_back((410, None, Duration::ZERO));
    let (_, body) = create(
        &s,
        &a,
        json!({"url": format!("http://{addr}/hook"), "events": ["message.received"]}),
    )
    .await;
    let gone_id = body["result"]["id"].as_str().unwrap().to_owned();
    send_mail(&s, &a.email, "to a gone endpoint").await;
    rx.wait_for(1, 10).await;
    let mut disabled = false;
    for _ in 0..50 {
        if get(&s, &a.account_key, &format!("/v1/webhooks/{gone_id}")).await["result"]["status"]
            == "disabled"
        {
            disabled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(disabled, "410 disables the endpoint");
    s.http
        .delete(s.url(&format!("/v1/webhooks/{gone_id}")))
        .bearer_auth(&a.account_key)
        .send()
        .await
        .unwrap();
    // Endpoint 2 fails every attempt (1 + 3 retries): unhealthy, and an event says so.
    for _ in 0..4 {
        rx.plan
            .lock()
            .unwrap()
            .push_back((500, None, Duration::ZERO));
    }
    let (_, body) = create(
        &s,
        &a,
        json!({"url": format!("http://{addr}/hook"), "events": ["message.received"]}),
    )
    .await;
    let id = body["result"]["id"].as_str().unwrap().to_owned();
    send_mail(&s, &a.email, "to a broken endpoint").await;
    let hits = rx.wait_for(5, 15).await;
    assert!(
        hits[1..5].iter().all(|h| h.id == hits[1].id),
        "the same webhook-id on every retry"
    );
    let mut unhealthy = false;
    for _ in 0..50 {
        if get(&s, &a.account_key, &format!("/v1/webhooks/{id}")).await["result"]["status"]
            == "unhealthy"
        {
            unhealthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(unhealthy);
    let events = get(&s, &a.account_key, "/v1/events").await;
    assert!(
        events["result"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "webhook.unhealthy" && e["data"]["webhook_id"] == id.as_str())
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_and_slow_receivers_time_out() {
    let s = server(Backend::Sqlite).await.unwrap();
    let a = s.new_account("patient").await;
    let rx = Receiver::default();
    let (addr, _h) = rx.serve(None).await;
    rx.plan
        .lock()
        .unwrap()
        .push_back((429, Some("2"), Duration::ZERO));
    rx.plan
        .lock()
        .unwrap()
        .push_back((200, None, Duration::from_secs(3))); // slower than the 1 s timeout
    let (_, body) = create(
        &s,
        &a,
        json!({"url": format!("http://{addr}/hook"), "events": ["*"]}),
    )
    .await;
    let id = body["result"]["id"].as_str().unwrap().to_owned();
    send_mail(&s, &a.email, "patience").await;
    let hits = rx.wait_for(3, 20).await;
    let gap = hits[1].at.duration_since(hits[0].at);
    assert!(
        gap >= Duration::from_millis(1900),
        "Retry-After: 2 was honoured ({gap:?}), not the 300 ms schedule"
    );
    let attempts = get(&s, &a.account_key, &format!("/v1/webhooks/{id}/deliveries")).await;
    let list = attempts["result"]["attempts"].as_array().unwrap();
    assert!(list.iter().any(|x| x["status_code"] == 429));
    assert!(
        list.iter()
            .any(|x| x["error"].as_str().is_some_and(|e| e.contains("timed out"))),
        "{attempts}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiers_without_webhooks_get_upgrade_context() {
    let s = TestServer::start_with(Backend::Sqlite, |c| c.tiers.free.webhooks_enabled = false)
        .await
        .unwrap();
    let a = s.new_account("lowtier").await;
    let (st, body) = create(
        &s,
        &a,
        json!({"url": "http://127.0.0.1:9/hook", "events": ["*"]}),
    )
    .await;
    assert_eq!(st, 403);
    assert_eq!(body["error"], "WEBHOOKS_REQUIRE_UPGRADE");
    assert!(body["upgrade_context"]["operator_action_url"].is_string());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_dev_only_public_https_urls_are_accepted() {
    let s = TestServer::start_with(Backend::Sqlite, |c| c.dev = false)
        .await
        .unwrap();
    let a = s.new_account("prod").await;
    for (url, code) in [
        ("http://example.com/hook", "INVALID_URL"),
        ("https://127.0.0.1/hook", "URL_NOT_ALLOWED"),
        ("https://localhost/hook", "URL_NOT_ALLOWED"),
        ("https://[::1]/hook", "URL_NOT_ALLOWED"),
        ("https://192.168.0.10/hook", "URL_NOT_ALLOWED"),
    ] {
        let (st, body) = create(&s, &a, json!({"url": url, "events": ["*"]})).await;
        assert_eq!(
            (st.as_u16(), body["error"].as_str()),
            (422, Some(code)),
            "{url}: {body}"
        );
    }
    let (st, _) = create(
        &s,
        &a,
        json!({"url": "https://hooks.example.com/mailroom", "events": ["*"]}),
    )
    .await;
    assert_eq!(st, 201);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_not_followed() {
    let s = server(Backend::Sqlite).await.unwrap();
    let a = s.new_account("redirected").await;
    // The target of the redirect records any request it gets.
    let target = Receiver::default();
    let (target_addr, _t) = target.serve(None).await;
    let rx = Receiver::default();
    *rx.location.lock().unwrap() = Some(format!("http://{target_addr}/hook"));
    let (addr, _h) = rx.serve(None).await;
    for _ in 0..4 {
        rx.plan
            .lock()
            .unwrap()
            .push_back((307, None, Duration::ZERO));
    }
    // The redirect is real: a client that follows redirects reaches the target.
    rx.plan
        .lock()
        .unwrap()
        .push_front((307, None, Duration::ZERO));
    let follower = reqwest::Client::builder().no_proxy().build().unwrap();
    let probe = follower
        .post(format!("http://{addr}/hook"))
        .body("probe")
        .send()
        .await
        .unwrap();
    assert_eq!(probe.status(), 200);
    assert_eq!(
        target.hits().len(),
        1,
        "a following client reached the target"
    );
    let (_, body) = create(
        &s,
        &a,
        json!({"url": format!("http://{addr}/hook"), "events": ["*"]}),
    )
    .await;
    let id = body["result"]["id"].as_str().unwrap().to_owned();
    send_mail(&s, &a.email, "moved").await;
    rx.wait_for(2, 10).await;
    let attempts = get(&s, &a.account_key, &format!("/v1/webhooks/{id}/deliveries")).await;
    assert!(
        attempts["result"]["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["status_code"] == 307),
        "{attempts}"
    );
    assert_eq!(
        target.hits().len(),
        1,
        "the webhook worker never called the redirect target"
    );
    s.stop().await;
}
