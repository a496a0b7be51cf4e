//! Issue #14, "Telling the operator": `POST /v1/notify-operator` stores a notice and
//! records an `operator.notified` event; the operator lists and resolves notices
//! (`GET /v1/account/notices`, `POST /v1/account/notices/{id}/resolve`); bad input is a 422
//! naming the field with nothing stored; an account has at most 100 open notices; another
//! tenant's notice is 404; a webhook subscribed to the event gets it, an inbox key's notice is on
//! its inbox's stream; a user who is not an owner notifies but does not list. Over real
//! sockets, on SQLite and PostgreSQL.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use mailroom_testkit::{TestServer, on_both_backends};
use serde_json::{Value, json};

on_both_backends!(
    a_notice_is_stored_announced_listed_and_resolved,
    bad_input_is_refused_naming_the_field,
    open_notices_are_capped_and_tenants_are_apart,
    webhooks_streams_and_users_hear_of_notices,
);

async fn notify(s: &TestServer, key: &str, body: Value) -> (u16, Value) {
    let (st, body, _) = s
        .call("POST", "/v1/notify-operator", Some(key), Some(body))
        .await;
    (st, body)
}

async fn notices(s: &TestServer, key: &str, query: &str) -> Vec<Value> {
    let body = s
        .get_json(key, &format!("/v1/account/notices{query}"))
        .await;
    body["result"]["notices"].as_array().unwrap().clone()
}

async fn a_notice_is_stored_announced_listed_and_resolved(s: TestServer) {
    let a = s.new_account("notifier").await;
    let (st, body) = notify(
        &s,
        &a.inbox_key,
        json!({
            "issue": "I need the domain example.com verified",
            "context": {"domain": "example.com", "attempts": 3},
            "action_label": "Verify example.com",
        }),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    let r = &body["result"];
    let id = r["notice_id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("ntc_"), "{body}");
    let url = r["operator_action_url"].as_str().unwrap();
    assert_eq!(url, s.url("/v1/account/notices"));
    assert_eq!(r["operator_action_label"], "Verify example.com");
    let script = r["agent_script"].as_str().unwrap();
    assert!(
        script.starts_with("Tell your operator: I need the domain"),
        "{script}"
    );
    assert!(script.contains(url) && script.contains(&id), "{script}");
    assert!(!body["next_steps"].as_array().unwrap().is_empty());

    // The event, with every field, in the account's event log (what webhooks fan out).
    let events = s.get_json(&a.account_key, "/v1/events").await;
    let ev = events["result"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "operator.notified")
        .cloned()
        .unwrap_or_else(|| panic!("no operator.notified in {events}"));
    assert_eq!(ev["inbox_id"], a.inbox_id.as_str());
    let data = &ev["data"];
    assert_eq!(data["notice_id"], id.as_str());
    assert_eq!(data["inbox_id"], a.inbox_id.as_str());
    assert_eq!(data["issue"], "I need the domain example.com verified");
    assert_eq!(
        data["context"],
        json!({"domain": "example.com", "attempts": 3})
    );
    assert_eq!(data["action_label"], "Verify example.com");
    assert!(data["created_at"].is_string(), "{ev}");

    // The account key and a scoped key with api:write may notify too; defaults apply.
    let (st, body) = notify(&s, &a.account_key, json!({"issue": "  Please top up  "})).await;
    assert_eq!(st, 201, "{body}");
    assert_eq!(
        body["result"]["operator_action_label"],
        "Review the agent's notice"
    );
    let (st, key, _) = s
        .call(
            "POST",
            "/v1/keys",
            Some(&a.account_key),
            Some(json!({"name": "w", "scopes": ["api:write"]})),
        )
        .await;
    assert_eq!(st, 201, "{key}");
    let scoped = key["apiKey"].as_str().unwrap();
    let (st, body) = notify(&s, scoped, json!({"issue": "from a scoped key"})).await;
    assert_eq!(st, 201, "{body}");
    let (st, key, _) = s
        .call(
            "POST",
            "/v1/keys",
            Some(&a.account_key),
            Some(json!({"name": "r", "scopes": ["api:read"]})),
        )
        .await;
    assert_eq!(st, 201, "{key}");
    let (st, e) = notify(&s, key["apiKey"].as_str().unwrap(), json!({"issue": "x"})).await;
    assert_eq!(
        (st, e["error"].as_str()),
        (403, Some("SCOPE_REQUIRED")),
        "{e}"
    );

    // The operator lists them; the inbox key may not.
    let open = notices(&s, &a.account_key, "").await;
    assert_eq!(open.len(), 3, "{open:?}");
    let first = open.iter().find(|n| n["id"] == id.as_str()).unwrap();
    assert_eq!(first["issue"], "I need the domain example.com verified");
    assert_eq!(first["inbox_id"], a.inbox_id.as_str());
    assert_eq!(first["resolved_at"], Value::Null);
    let top_up = open.iter().find(|n| n["issue"] == "Please top up").unwrap();
    assert_eq!(top_up["inbox_id"], Value::Null);
    assert_eq!(top_up["context"], Value::Null);
    let (st, e, _) = s
        .call("GET", "/v1/account/notices", Some(&a.inbox_key), None)
        .await;
    assert_eq!(
        (st, e["error"].as_str()),
        (403, Some("ACCOUNT_KEY_REQUIRED"))
    );

    // Resolving: once, idempotent, then only with ?all=true.
    let path = format!("/v1/account/notices/{id}/resolve");
    let (st, body, _) = s.call("POST", &path, Some(&a.account_key), None).await;
    assert_eq!(st, 200, "{body}");
    let resolved_at = body["result"]["resolved_at"].as_str().unwrap().to_owned();
    let (st, again, _) = s.call("POST", &path, Some(&a.account_key), None).await;
    assert_eq!(st, 200);
    assert_eq!(again["result"]["resolved_at"], resolved_at.as_str());
    let open = notices(&s, &a.account_key, "").await;
    assert_eq!(open.len(), 2);
    assert!(open.iter().all(|n| n["id"] != id.as_str()));
    let all = notices(&s, &a.account_key, "?all=true").await;
    assert_eq!(all.len(), 3);

    // The operator's command lists them too, by account.
    let b = s.new_account("quiet").await;
    let admin = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailroom"))
            .args(["admin", "notices"])
            .args(args)
            .args(["--database-url", &s.database_url])
            .env_remove("MAILROOM_DATABASE_URL")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let open = admin(&["--account", &a.account_id]);
    assert_eq!(
        open.lines().filter(|l| l.starts_with("ntc_")).count(),
        2,
        "{open}"
    );
    assert!(
        open.contains("Please top up") && !open.contains(&id),
        "{open}"
    );
    let every = admin(&["--account", &a.email, "--all"]);
    assert!(
        every.contains(&id) && every.contains("resolved "),
        "{every}"
    );
    assert!(
        every.contains(r#"context: {"attempts":3,"domain":"example.com"}"#),
        "{every}"
    );
    assert_eq!(
        admin(&["--account", &b.account_id]).trim(),
        "no open notices"
    );
}

async fn bad_input_is_refused_naming_the_field(s: TestServer) {
    let a = s.new_account("badnotes").await;
    for (body, code, field) in [
        (json!({"issue": "   "}), "INVALID_ISSUE", "issue"),
        (json!({"issue": "x".repeat(2001)}), "INVALID_ISSUE", "issue"),
        (
            json!({"issue": "ok", "context": [1, 2]}),
            "INVALID_CONTEXT",
            "context",
        ),
        (
            json!({"issue": "ok", "context": "text"}),
            "INVALID_CONTEXT",
            "context",
        ),
        (
            json!({"issue": "ok", "context": {"big": "x".repeat(9000)}}),
            "INVALID_CONTEXT",
            "context",
        ),
        (
            json!({"issue": "ok", "action_label": "x".repeat(201)}),
            "INVALID_ACTION_LABEL",
            "action_label",
        ),
        (json!({"context": {}}), "VALIDATION_ERROR", "issue"),
        (
            json!({"issue": "ok", "extra": 1}),
            "VALIDATION_ERROR",
            "extra",
        ),
    ] {
        let (st, e) = notify(&s, &a.account_key, body.clone()).await;
        assert_eq!(st, 422, "{body} → {e}");
        assert_eq!(e["error"], code, "{body} → {e}");
        assert_eq!(e["field"], field, "{body} → {e}");
    }
    assert!(notices(&s, &a.account_key, "?all=true").await.is_empty());
    let events = s.get_json(&a.account_key, "/v1/events").await;
    assert!(
        !events["result"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "operator.notified"),
        "{events}"
    );
    // Without a key: 401.
    let (st, _, _) = s
        .call(
            "POST",
            "/v1/notify-operator",
            None,
            Some(json!({"issue": "x"})),
        )
        .await;
    assert_eq!(st, 401);
}

async fn open_notices_are_capped_and_tenants_are_apart(s: TestServer) {
    let a = s.new_account("capped").await;
    let b = s.new_account("elsewhere").await;
    let mut first = String::new();
    for i in 0..100 {
        let (st, body) = notify(&s, &a.inbox_key, json!({"issue": format!("notice {i}")})).await;
        assert_eq!(st, 201, "{i}: {body}");
        if i == 0 {
            first = body["result"]["notice_id"].as_str().unwrap().to_owned();
        }
    }
    let (st, e) = notify(&s, &a.account_key, json!({"issue": "one too many"})).await;
    assert_eq!(
        (st, e["error"].as_str()),
        (403, Some("OPEN_NOTICES_LIMIT")),
        "{e}"
    );
    assert_eq!(notices(&s, &a.account_key, "?limit=500").await.len(), 100);

    // Another tenant neither sees nor resolves it.
    assert!(notices(&s, &b.account_key, "?all=true").await.is_empty());
    let path = format!("/v1/account/notices/{first}/resolve");
    let (st, e, _) = s.call("POST", &path, Some(&b.account_key), None).await;
    assert_eq!((st, e["error"].as_str()), (404, Some("NOT_FOUND")), "{e}");
    let (st, _, _) = s
        .call(
            "POST",
            "/v1/account/notices/nonsense/resolve",
            Some(&a.account_key),
            None,
        )
        .await;
    assert_eq!(st, 404);

    // Resolving one makes room for one.
    let (st, _, _) = s.call("POST", &path, Some(&a.account_key), None).await;
    assert_eq!(st, 200);
    let (st, body) = notify(&s, &a.account_key, json!({"issue": "room again"})).await;
    assert_eq!(st, 201, "{body}");
    let (st, _) = notify(&s, &a.account_key, json!({"issue": "and full again"})).await;
    assert_eq!(st, 403);
}

async fn webhooks_streams_and_users_hear_of_notices(s: TestServer) {
    let a = s.new_account("listeners").await;
    // An inbox key's notice is an event of its inbox: its SSE stream carries it.
    let mut stream = s
        .http
        .get(s.url(&format!("/v1/inboxes/{}/events", a.inbox_id)))
        .bearer_auth(&a.inbox_key)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let (st, body) = notify(&s, &a.inbox_key, json!({"issue": "streamed notice"})).await;
    assert_eq!(st, 201, "{body}");
    let id = body["result"]["notice_id"].as_str().unwrap().to_owned();
    let until = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut seen = String::new();
    while !(seen.contains("event: operator.notified") && seen.contains(&id)) {
        let chunk = tokio::time::timeout_at(until, stream.chunk())
            .await
            .unwrap_or_else(|_| panic!("no operator.notified on the stream; saw {seen:?}"))
            .unwrap()
            .unwrap_or_else(|| panic!("stream closed; saw {seen:?}"));
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(stream);

    // A webhook subscribed to the event gets it, signed, through the usual worker.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, String)>();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let tx = tx.clone();
            async move {
                let id = headers
                    .get("webhook-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let _ = tx.send((id, body));
                "ok"
            }
        }),
    );
    let receiver = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let (st, hook, _) = s
        .call(
            "POST",
            "/v1/webhooks",
            Some(&a.account_key),
            Some(
                json!({"url": format!("http://{hook_addr}/hook"), "events": ["operator.notified"]}),
            ),
        )
        .await;
    assert_eq!(st, 201, "{hook}");
    let (st, body) = notify(&s, &a.account_key, json!({"issue": "hooked notice"})).await;
    assert_eq!(st, 201, "{body}");
    let hooked = body["result"]["notice_id"].as_str().unwrap().to_owned();
    let (hook_id, payload) = tokio::time::timeout(std::time::Duration::from_secs(15), rx.recv())
        .await
        .expect("the webhook is delivered")
        .unwrap();
    let payload: Value = serde_json::from_str(&payload).unwrap();
    assert!(hook_id.starts_with("evt_"), "{hook_id}");
    assert_eq!(payload["type"], "operator.notified", "{payload}");
    assert_eq!(payload["data"]["notice_id"], hooked.as_str(), "{payload}");
    assert_eq!(payload["data"]["inbox_id"], Value::Null, "{payload}");
    receiver.abort();

    // A user who is not an owner may notify, but not list or resolve.
    let password = "correct horse battery staple";
    let (st, created, _) = s
        .call(
            "POST",
            "/v1/account/users",
            Some(&a.account_key),
            Some(json!({"email": "helper@example.com", "password": password})),
        )
        .await;
    assert_eq!(st, 201, "{created}");
    let (st, g, _) = s
        .call(
            "POST",
            "/v1/auth/token",
            None,
            Some(json!({"email": "helper@example.com", "password": password})),
        )
        .await;
    assert_eq!(st, 200, "{g}");
    let token = g["access_token"].as_str().unwrap();
    let (st, body) = notify(&s, token, json!({"issue": "from a user"})).await;
    assert_eq!(st, 201, "{body}");
    let (st, e, _) = s
        .call("GET", "/v1/account/notices", Some(token), None)
        .await;
    assert_eq!(
        (st, e["error"].as_str()),
        (403, Some("OWNER_REQUIRED")),
        "{e}"
    );
    let path = format!("/v1/account/notices/{id}/resolve");
    let (st, e, _) = s.call("POST", &path, Some(token), None).await;
    assert_eq!(
        (st, e["error"].as_str()),
        (403, Some("OWNER_REQUIRED")),
        "{e}"
    );
    assert_eq!(notices(&s, &a.account_key, "").await.len(), 3);
}
