//! The tenancy API (seed 003, conventions of seed 000) over real HTTP, on SQLite and on
//! PostgreSQL.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use mailroom_core::Tier;
use mailroom_testkit::{TestServer, on_both_backends};
use reqwest::StatusCode;
use serde_json::{Value, json};

on_both_backends!(
    first_inbox_creates_the_account_with_seed_shape,
    account_key_creates_more_inboxes,
    client_id_makes_creation_idempotent,
    usernames_are_validated_and_unique,
    inbox_keys_reach_only_their_inbox,
    tenants_get_404_for_each_others_ids,
    missing_and_wrong_keys_are_401,
    rotation_stops_the_old_key_at_once,
    deletion_removes_inbox_and_key,
    listing_pages,
    account_reports_limits_and_usage,
    inbox_limit_answers_with_upgrade_context,
    smtp_credentials_follow_the_tier,
    capabilities_say_what_and_why,
    upgrade_links_are_signed_and_single_use,
    bad_input_gets_clear_errors_and_changes_nothing,
);

async fn json_of(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let body = resp.json::<Value>().await.expect("a JSON body");
    (status, body)
}

async fn get(s: &TestServer, path: &str, key: &str) -> (StatusCode, Value) {
    json_of(
        s.http
            .get(s.url(path))
            .bearer_auth(key)
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn post(s: &TestServer, path: &str, key: Option<&str>, body: Value) -> (StatusCode, Value) {
    let mut req = s.http.post(s.url(path)).json(&body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    json_of(req.send().await.unwrap()).await
}

async fn delete(s: &TestServer, path: &str, key: &str) -> (StatusCode, Value) {
    json_of(
        s.http
            .delete(s.url(path))
            .bearer_auth(key)
            .send()
            .await
            .unwrap(),
    )
    .await
}

fn assert_error(status: StatusCode, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status.as_u16(), want_status, "{body}");
    assert_eq!(body["error"], want_code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "errors carry a message: {body}"
    );
}

async fn first_inbox_creates_the_account_with_seed_shape(s: TestServer) {
    let (status, body) = post(
        &s,
        "/v1/inboxes",
        None,
        json!({"username": "platform-admin", "client_id": "bootstrap-001"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let r = &body["result"];
    let keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
    for k in [
        "id",
        "account_id",
        "username",
        "email",
        "inbox_api_key",
        "account_api_key",
        "tier",
        "created_at",
    ] {
        assert!(keys.contains(&k), "{k} missing in {body}");
    }
    assert!(r["id"].as_str().unwrap().starts_with("inbox_"));
    assert!(r["account_id"].as_str().unwrap().starts_with("acc_"));
    assert_eq!(r["username"], "platform-admin");
    assert_eq!(r["email"], "platform-admin@mailroom.test");
    assert_eq!(r["tier"], "free");
    assert!(
        r["account_api_key"]
            .as_str()
            .unwrap()
            .starts_with("mr_acc_")
    );
    assert!(r["inbox_api_key"].as_str().unwrap().starts_with("mr_inb_"));
    assert!(r["created_at"].as_str().unwrap().ends_with('Z'));
    let steps: Vec<&str> = body["next_steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        steps[..3],
        [
            "Save account_api_key securely — it's only returned once",
            "Use account_api_key to create additional inboxes",
            "Use inbox_api_key to access this specific inbox",
        ]
    );
    // The keys work.
    let (st, acc) = get(&s, "/v1/account", r["account_api_key"].as_str().unwrap()).await;
    assert_eq!(st, 200, "{acc}");
    assert_eq!(acc["result"]["account_id"], r["account_id"]);
    let (st, _) = get(
        &s,
        &format!("/v1/inboxes/{}", r["id"].as_str().unwrap()),
        r["inbox_api_key"].as_str().unwrap(),
    )
    .await;
    assert_eq!(st, 200);
    // An empty body makes an inbox with a generated name.
    let resp = s.http.post(s.url("/v1/inboxes")).send().await.unwrap();
    let (st, body) = json_of(resp).await;
    assert_eq!(st, 201, "{body}");
    assert!(
        body["result"]["username"]
            .as_str()
            .unwrap()
            .starts_with("agent-")
    );
    s.stop().await;
}

async fn account_key_creates_more_inboxes(s: TestServer) {
    let a = s.new_account("owner").await;
    let (st, body) = post(
        &s,
        "/v1/inboxes",
        Some(&a.account_key),
        json!({"username": "research-agent", "client_id": "agent-001"}),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    let r = &body["result"];
    assert_eq!(r["account_id"], a.account_id.as_str());
    assert!(
        r.get("account_api_key").is_none(),
        "no account key on later inboxes: {body}"
    );
    assert!(r["inbox_api_key"].as_str().unwrap().starts_with("mr_inb_"));
    let (_, list) = get(&s, "/v1/inboxes", &a.account_key).await;
    assert_eq!(list["result"]["total"], 2);
    s.stop().await;
}

async fn client_id_makes_creation_idempotent(s: TestServer) {
    let a = s.new_account("idem").await;
    let body = json!({"username": "worker", "client_id": "agent-001"});
    let (st1, first) = post(&s, "/v1/inboxes", Some(&a.account_key), body.clone()).await;
    assert_eq!(st1, 201);
    let (st2, again) = post(&s, "/v1/inboxes", Some(&a.account_key), body).await;
    assert_eq!(st2, 200, "{again}");
    assert_eq!(again["result"]["id"], first["result"]["id"]);
    assert_eq!(again["result"]["inbox_api_key"], Value::Null);
    // Same client_id, other username: still the original inbox.
    let (st3, third) = post(
        &s,
        "/v1/inboxes",
        Some(&a.account_key),
        json!({"username": "other", "client_id": "agent-001"}),
    )
    .await;
    assert_eq!(st3, 200);
    assert_eq!(third["result"]["email"], first["result"]["email"]);
    let (_, list) = get(&s, "/v1/inboxes", &a.account_key).await;
    assert_eq!(list["result"]["total"], 2);
    s.stop().await;
}

async fn usernames_are_validated_and_unique(s: TestServer) {
    let a = s.new_account("taken-name").await;
    for (name, code) in [
        ("a b", "INVALID_USERNAME"),
        ("postmaster", "INVALID_USERNAME"),
        ("Abuse", "INVALID_USERNAME"),
        ("-x", "INVALID_USERNAME"),
        ("x..y", "INVALID_USERNAME"),
        ("ünïcode", "INVALID_USERNAME"),
        ("a\r\nRCPT TO:<x@y>", "INVALID_USERNAME"),
    ] {
        let (st, body) = post(
            &s,
            "/v1/inboxes",
            Some(&a.account_key),
            json!({"username": name}),
        )
        .await;
        assert_error(st, &body, 422, code);
        assert_eq!(body["field"], "username");
    }
    let long = "a".repeat(65);
    let (st, body) = post(&s, "/v1/inboxes", None, json!({"username": long})).await;
    assert_error(st, &body, 422, "INVALID_USERNAME");
    // Taken, by this account or from another one; case does not make a new name.
    let (st, body) = post(
        &s,
        "/v1/inboxes",
        Some(&a.account_key),
        json!({"username": "taken-name"}),
    )
    .await;
    assert_error(st, &body, 409, "USERNAME_TAKEN");
    let (st, body) = post(&s, "/v1/inboxes", None, json!({"username": "Taken-Name"})).await;
    assert_error(st, &body, 409, "USERNAME_TAKEN");
    let (_, list) = get(&s, "/v1/inboxes", &a.account_key).await;
    assert_eq!(list["result"]["total"], 1, "nothing was created");
    s.stop().await;
}

async fn inbox_keys_reach_only_their_inbox(s: TestServer) {
    let a = s.new_account("scoped").await;
    let (_, second) = post(
        &s,
        "/v1/inboxes",
        Some(&a.account_key),
        json!({"username": "scoped-two"}),
    )
    .await;
    let second_id = second["result"]["id"].as_str().unwrap();
    let (st, own) = get(&s, &format!("/v1/inboxes/{}", a.inbox_id), &a.inbox_key).await;
    assert_eq!(st, 200);
    assert_eq!(own["result"]["email"], a.email.as_str());
    let (st, body) = get(&s, &format!("/v1/inboxes/{second_id}"), &a.inbox_key).await;
    assert_error(st, &body, 404, "NOT_FOUND");
    let (st, body) = delete(&s, &format!("/v1/inboxes/{second_id}"), &a.inbox_key).await;
    assert_error(st, &body, 404, "NOT_FOUND");
    for path in ["/v1/inboxes", "/v1/account", "/v1/account/smtp"] {
        let (st, body) = get(&s, path, &a.inbox_key).await;
        assert_error(st, &body, 403, "ACCOUNT_KEY_REQUIRED");
    }
    let (st, body) = post(
        &s,
        "/v1/inboxes",
        Some(&a.inbox_key),
        json!({"username": "sneaky"}),
    )
    .await;
    assert_error(st, &body, 403, "ACCOUNT_KEY_REQUIRED");
    let (st, body) = post(
        &s,
        "/v1/upgrade-link",
        Some(&a.inbox_key),
        json!({"target_tier": "developer"}),
    )
    .await;
    assert_error(st, &body, 403, "ACCOUNT_KEY_REQUIRED");
    let (st, _) = get(&s, "/v1/capabilities", &a.inbox_key).await;
    assert_eq!(st, 200);
    s.stop().await;
}

async fn tenants_get_404_for_each_others_ids(s: TestServer) {
    let a = s.new_account("tenant-a").await;
    let b = s.new_account("tenant-b").await;
    let path = format!("/v1/inboxes/{}", b.inbox_id);
    let (st, body) = get(&s, &path, &a.account_key).await;
    assert_error(st, &body, 404, "NOT_FOUND");
    let (st, body) = delete(&s, &path, &a.account_key).await;
    assert_error(st, &body, 404, "NOT_FOUND");
    let (st, body) = post(
        &s,
        &format!("{path}/rotate-key"),
        Some(&a.account_key),
        json!({}),
    )
    .await;
    assert_error(st, &body, 404, "NOT_FOUND");
    // Same answer as for an id that does not exist at all.
    let (st2, body2) = get(&s, "/v1/inboxes/inbox_00000000000000000000", &a.account_key).await;
    assert_eq!((st, &body["error"]), (st2, &body2["error"]));
    let (_, list) = get(&s, "/v1/inboxes", &a.account_key).await;
    let emails: Vec<&str> = list["result"]["inboxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["email"].as_str().unwrap())
        .collect();
    assert_eq!(emails, [a.email.as_str()]);
    // B's inbox and key are untouched.
    let (st, _) = get(&s, &path, &b.inbox_key).await;
    assert_eq!(st, 200);
    s.stop().await;
}

async fn missing_and_wrong_keys_are_401(s: TestServer) {
    let a = s.new_account("auth").await;
    let resp = s.http.get(s.url("/v1/inboxes")).send().await.unwrap();
    assert_eq!(
        resp.headers()["www-authenticate"],
        "Bearer realm=\"mailroom\""
    );
    let (st, body) = json_of(resp).await;
    assert_error(st, &body, 401, "UNAUTHORIZED");
    for key in [
        "mr_acc_wrongwrongwrongwrongwrongwrongwr",
        "nonsense",
        "mr_acc_a b",
    ] {
        let (st, body) = get(&s, "/v1/inboxes", key).await;
        assert_error(st, &body, 401, "UNAUTHORIZED");
    }
    let resp = s
        .http
        .get(s.url("/v1/inboxes"))
        .header("authorization", "Token abc")
        .send()
        .await
        .unwrap();
    let (st, body) = json_of(resp).await;
    assert_error(st, &body, 401, "UNAUTHORIZED");
    // A wrong key on account creation is refused, not ignored.
    let (st, body) = post(
        &s,
        "/v1/inboxes",
        Some("mr_acc_nope"),
        json!({"username": "ghost"}),
    )
    .await;
    assert_error(st, &body, 401, "UNAUTHORIZED");
    // Basic auth with the key as user name and no password (seed 004), like `curl -u key:`.
    let resp = s
        .http
        .get(s.url("/v1/inboxes"))
        .basic_auth(&a.account_key, Some(""))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = s
        .http
        .get(s.url("/v1/inboxes"))
        .basic_auth(&a.account_key, None::<&str>)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    s.stop().await;
}

async fn rotation_stops_the_old_key_at_once(s: TestServer) {
    let a = s.new_account("rotating").await;
    let (_, other) = post(
        &s,
        "/v1/inboxes",
        Some(&a.account_key),
        json!({"username": "rotating-other"}),
    )
    .await;
    let other_id = other["result"]["id"].as_str().unwrap().to_owned();
    let other_key = other["result"]["inbox_api_key"]
        .as_str()
        .unwrap()
        .to_owned();
    // The inbox key may rotate itself.
    let (st, body) = post(
        &s,
        &format!("/v1/inboxes/{}/rotate-key", a.inbox_id),
        Some(&a.inbox_key),
        json!({}),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let new_key = body["result"]["inbox_api_key"].as_str().unwrap().to_owned();
    assert_ne!(new_key, a.inbox_key);
    let own = format!("/v1/inboxes/{}", a.inbox_id);
    let (st, body) = get(&s, &own, &a.inbox_key).await;
    assert_error(st, &body, 401, "UNAUTHORIZED");
    assert_eq!(get(&s, &own, &new_key).await.0, 200);
    assert_eq!(
        get(&s, &format!("/v1/inboxes/{other_id}"), &other_key)
            .await
            .0,
        200
    );
    // The account key rotates any inbox of the account.
    let (st, body) = post(
        &s,
        &format!("{own}/rotate-key"),
        Some(&a.account_key),
        json!({}),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(get(&s, &own, &new_key).await.0, 401);
    assert_eq!(
        get(&s, &own, body["result"]["inbox_api_key"].as_str().unwrap())
            .await
            .0,
        200
    );
    assert_eq!(get(&s, "/v1/account", &a.account_key).await.0, 200);
    s.stop().await;
}

async fn deletion_removes_inbox_and_key(s: TestServer) {
    let a = s.new_account("deleting").await;
    let (_, other) = post(
        &s,
        "/v1/inboxes",
        Some(&a.account_key),
        json!({"username": "deleting-two"}),
    )
    .await;
    let id = other["result"]["id"].as_str().unwrap().to_owned();
    let key = other["result"]["inbox_api_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let (st, body) = delete(&s, &format!("/v1/inboxes/{id}"), &a.account_key).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["result"]["deleted"], true);
    assert_eq!(
        get(&s, &format!("/v1/inboxes/{id}"), &a.account_key)
            .await
            .0,
        404
    );
    assert_eq!(get(&s, &format!("/v1/inboxes/{id}"), &key).await.0, 401);
    let (st, body) = delete(&s, &format!("/v1/inboxes/{id}"), &a.account_key).await;
    assert_error(st, &body, 404, "NOT_FOUND");
    // The username is free again.
    let (st, _) = post(
        &s,
        "/v1/inboxes",
        Some(&a.account_key),
        json!({"username": "deleting-two"}),
    )
    .await;
    assert_eq!(st, 201);
    s.stop().await;
}

async fn listing_pages(s: TestServer) {
    let a = s.new_account("lister").await;
    for i in 0..4 {
        let (st, _) = post(
            &s,
            "/v1/inboxes",
            Some(&a.account_key),
            json!({"username": format!("lister-{i}")}),
        )
        .await;
        assert_eq!(st, 201);
    }
    let (st, body) = get(&s, "/v1/inboxes?limit=2&offset=1", &a.account_key).await;
    assert_eq!(st, 200);
    let r = &body["result"];
    assert_eq!(
        (
            r["total"].as_u64(),
            r["limit"].as_u64(),
            r["offset"].as_u64()
        ),
        (Some(5), Some(2), Some(1))
    );
    let page: Vec<&str> = r["inboxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["email"].as_str().unwrap())
        .collect();
    assert_eq!(page, ["lister-0@mailroom.test", "lister-1@mailroom.test"]);
    for item in r["inboxes"].as_array().unwrap() {
        for k in ["id", "email", "status", "created_at"] {
            assert!(item.get(k).is_some(), "{k} in {item}");
        }
        assert_eq!(item["status"], "active");
    }
    let (_, body) = get(&s, "/v1/inboxes", &a.account_key).await;
    assert_eq!(body["result"]["limit"], 50);
    for q in ["limit=0", "limit=101", "limit=abc", "offset=-1", "bogus=1"] {
        let (st, body) = get(&s, &format!("/v1/inboxes?{q}"), &a.account_key).await;
        assert_error(st, &body, 400, "INVALID_QUERY");
        assert!(body["field"].is_string(), "{q}: {body}");
    }
    s.stop().await;
}

async fn account_reports_limits_and_usage(s: TestServer) {
    let a = s.new_account("usage").await;
    post(
        &s,
        "/v1/inboxes",
        Some(&a.account_key),
        json!({"username": "usage-2"}),
    )
    .await;
    let (st, body) = get(&s, "/v1/account", &a.account_key).await;
    assert_eq!(st, 200);
    let r = &body["result"];
    assert_eq!(r["account_id"], a.account_id.as_str());
    assert_eq!(r["tier"], "free");
    let l = &r["limits"];
    assert_eq!(l["max_inboxes"], 10);
    assert_eq!(l["current_inboxes"], 2);
    assert_eq!(l["max_sends_per_day"], 0);
    assert_eq!(l["current_sends_today"], 0);
    assert_eq!(l["webhooks_enabled"], true);
    assert_eq!(l["custom_domains_enabled"], false);
    assert!(r["created_at"].is_string());
    s.set_tier(&a.account_id, Tier::Enterprise).await;
    let (_, body) = get(&s, "/v1/account", &a.account_key).await;
    assert_eq!(body["result"]["tier"], "enterprise");
    assert_eq!(
        body["result"]["limits"]["max_inboxes"],
        Value::Null,
        "unlimited is null"
    );
    assert_eq!(body["result"]["limits"]["custom_domains_enabled"], true);
    s.stop().await;
}

async fn inbox_limit_answers_with_upgrade_context(s: TestServer) {
    let a = s.new_account("limit-0").await;
    for i in 1..10 {
        let (st, body) = post(
            &s,
            "/v1/inboxes",
            Some(&a.account_key),
            json!({"username": format!("limit-{i}")}),
        )
        .await;
        assert_eq!(st, 201, "{body}");
    }
    let (st, body) = post(
        &s,
        "/v1/inboxes",
        Some(&a.account_key),
        json!({"username": "limit-10"}),
    )
    .await;
    assert_error(st, &body, 403, "INBOX_LIMIT_REACHED");
    let ctx = &body["upgrade_context"];
    let url = ctx["operator_action_url"].as_str().unwrap();
    assert!(url.starts_with(&s.base_url), "{url}");
    assert!(
        ctx["operator_action_label"]
            .as_str()
            .unwrap()
            .contains("Developer")
    );
    assert!(ctx["agent_script"].as_str().unwrap().contains(url));
    // The link works: the upgrade page names the account and the tier.
    let page = s.http.get(url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains(&a.account_id) && html.contains("Developer"),
        "{html}"
    );
    let (_, acc) = get(&s, "/v1/account", &a.account_key).await;
    assert_eq!(acc["result"]["limits"]["current_inboxes"], 10);
    // After an upgrade, the limit is gone.
    s.set_tier(&a.account_id, Tier::Developer).await;
    let (st, _) = post(
        &s,
        "/v1/inboxes",
        Some(&a.account_key),
        json!({"username": "limit-10"}),
    )
    .await;
    assert_eq!(st, 201);
    s.stop().await;
}

async fn smtp_credentials_follow_the_tier(s: TestServer) {
    let a = s.new_account("smtp-user").await;
    let (st, body) = get(&s, "/v1/account/smtp", &a.account_key).await;
    assert_error(st, &body, 403, "SMTP_REQUIRES_PAID");
    assert_eq!(
        body["message"],
        "SMTP access requires a paid tier subscription"
    );
    assert_eq!(
        body["upgrade_context"]["operator_action_label"],
        "Upgrade to Developer to enable SMTP access"
    );
    s.set_tier(&a.account_id, Tier::Developer).await;
    let (st, body) = get(&s, "/v1/account/smtp", &a.account_key).await;
    assert_eq!(st, 200, "{body}");
    let r = &body["result"];
    assert_eq!(r["host"], "mail.test");
    assert_eq!(r["port"], s.server.as_ref().unwrap().submission_addr.port());
    assert_eq!(r["username"], a.account_id.as_str());
    let password = r["password"].as_str().unwrap();
    assert!(password.starts_with("smtp_") && password.len() > 20);
    let (_, again) = get(&s, "/v1/account/smtp", &a.account_key).await;
    assert_eq!(again["result"]["password"], password, "stable across calls");
    assert_eq!(
        body["next_steps"][0],
        "Configure your SMTP client with these credentials"
    );
    let b = s.new_account("smtp-other").await;
    s.set_tier(&b.account_id, Tier::Developer).await;
    let (_, other) = get(&s, "/v1/account/smtp", &b.account_key).await;
    assert_ne!(
        other["result"]["password"], password,
        "each account has its own"
    );
    s.stop().await;
}

async fn capabilities_say_what_and_why(s: TestServer) {
    let a = s.new_account("caps").await;
    let (st, body) = get(&s, "/v1/capabilities", &a.account_key).await;
    assert_eq!(st, 200);
    let r = &body["result"];
    assert_eq!(r["tier"], "free");
    let can: Vec<&str> = r["can"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["action"].as_str().unwrap())
        .collect();
    assert!(
        can.contains(&"inbox.create") && can.contains(&"mail.receive"),
        "{can:?}"
    );
    let send = r["cannot"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["action"] == "mail.send")
        .expect("send refused on free");
    assert!(send["reason"].as_str().unwrap().contains("receive-only"));
    let unlock = send["unlock_url"].as_str().unwrap();
    assert_eq!(s.http.get(unlock).send().await.unwrap().status(), 200);
    assert!(r["limits"]["max_inboxes"].is_number());
    let (_, body) = get(&s, "/v1/capabilities", &a.inbox_key).await;
    let list = body["result"]["cannot"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["action"] == "inbox.list")
        .expect("inbox key cannot list");
    assert_eq!(list["unlock_url"], Value::Null);
    s.set_tier(&a.account_id, Tier::Growth).await;
    let (_, body) = get(&s, "/v1/capabilities", &a.account_key).await;
    let can: Vec<&str> = body["result"]["can"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["action"].as_str().unwrap())
        .collect();
    assert!(
        can.contains(&"mail.send")
            && can.contains(&"smtp.credentials")
            && can.contains(&"domains.manage"),
        "{can:?}"
    );
    s.stop().await;
}

async fn upgrade_links_are_signed_and_single_use(s: TestServer) {
    let a = s.new_account("upgrader").await;
    let (st, body) = post(
        &s,
        "/v1/upgrade-link",
        Some(&a.account_key),
        json!({"target_tier": "growth"}),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let r = &body["result"];
    assert_eq!(r["target_tier"], "growth");
    let url = r["url"].as_str().unwrap().to_owned();
    let expires = r["expires_at"].as_str().unwrap();
    let days = (chrono_days(expires) - chrono_days(&now_rfc3339())).round();
    assert_eq!(days, 7.0, "{expires}");
    let token = url.split("token=").nth(1).unwrap().to_owned();
    // A tampered token is refused by the page.
    let bad = s
        .http
        .get(format!("{}x", url.replace("token=", "token=A")))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let services = &s.server.as_ref().unwrap().services;
    let change = services.redeem_upgrade_token(&token).await.unwrap();
    assert_eq!((change.previous, change.tier), (Tier::Free, Tier::Growth));
    assert!(
        services.redeem_upgrade_token(&token).await.is_err(),
        "single use"
    );
    let html = s.http.get(&url).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("already been used"), "{html}");
    let events = services
        .store()
        .list_events(&a.account_id, 0, 50)
        .await
        .unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.event_type == "account.upgraded" && e.data["tier"] == "growth")
    );
    for (body, code) in [
        (json!({"target_tier": "developer"}), "INVALID_TARGET_TIER"),
        (json!({"target_tier": "growth"}), "INVALID_TARGET_TIER"),
        (json!({"target_tier": "platinum"}), "VALIDATION_ERROR"),
        (json!({}), "VALIDATION_ERROR"),
    ] {
        let (st, resp) = post(&s, "/v1/upgrade-link", Some(&a.account_key), body).await;
        assert_error(st, &resp, 422, code);
        assert_eq!(resp["field"], "target_tier", "{resp}");
    }
    s.stop().await;
}

fn now_rfc3339() -> String {
    mailroom_core::time::rfc3339(mailroom_core::time::now_ms())
}

/// Days since the epoch of an RFC 3339 UTC time (second precision).
fn chrono_days(s: &str) -> f64 {
    let d = s.trim_end_matches('Z');
    let (date, time) = d.split_once('T').unwrap();
    let p: Vec<i64> = date
        .split('-')
        .chain(time.split(':'))
        .map(|x| x.parse().unwrap())
        .collect();
    // Days from civil (Howard Hinnant's algorithm).
    let (y, m, day) = (if p[1] <= 2 { p[0] - 1 } else { p[0] }, p[1], p[2]);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days as f64 + (p[3] * 3600 + p[4] * 60 + p[5]) as f64 / 86_400.0
}

async fn bad_input_gets_clear_errors_and_changes_nothing(s: TestServer) {
    let a = s.new_account("strict").await;
    let send = |body: &'static str, ct: Option<&'static str>| {
        let mut req = s
            .http
            .post(s.url("/v1/inboxes"))
            .bearer_auth(&a.account_key)
            .body(body);
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        req.send()
    };
    let (st, body) = json_of(
        send("{\"username\": ", Some("application/json"))
            .await
            .unwrap(),
    )
    .await;
    assert_error(st, &body, 400, "INVALID_JSON");
    let (st, body) = json_of(
        send("{\"username\": \"x\"}", Some("text/plain"))
            .await
            .unwrap(),
    )
    .await;
    assert_error(st, &body, 415, "UNSUPPORTED_MEDIA_TYPE");
    let (st, body) = json_of(send("{\"username\": \"x\"}", None).await.unwrap()).await;
    assert_error(st, &body, 415, "UNSUPPORTED_MEDIA_TYPE");
    let (st, body) = json_of(
        send("{\"usernme\": \"x\"}", Some("application/json"))
            .await
            .unwrap(),
    )
    .await;
    assert_error(st, &body, 422, "VALIDATION_ERROR");
    assert_eq!(body["field"], "usernme");
    let (st, body) = json_of(
        send("{\"username\": 42}", Some("application/json"))
            .await
            .unwrap(),
    )
    .await;
    assert_error(st, &body, 422, "VALIDATION_ERROR");
    assert_eq!(body["field"], "username");
    let (st, body) = json_of(send("[1,2]", Some("application/json")).await.unwrap()).await;
    assert_error(st, &body, 422, "VALIDATION_ERROR");
    let (st, body) = json_of(
        send("{\"username\": \"x\"} trailing", Some("application/json"))
            .await
            .unwrap(),
    )
    .await;
    assert_error(st, &body, 400, "INVALID_JSON");
    let huge = format!("{{\"username\": \"{}\"}}", "a".repeat(200_000));
    let resp = s
        .http
        .post(s.url("/v1/inboxes"))
        .bearer_auth(&a.account_key)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    let (st, body) = json_of(resp).await;
    assert_error(st, &body, 413, "PAYLOAD_TOO_LARGE");
    let (st, body) = post(
        &s,
        "/v1/inboxes",
        Some(&a.account_key),
        json!({"client_id": ""}),
    )
    .await;
    assert_error(st, &body, 422, "INVALID_CLIENT_ID");
    let (st, body) = post(
        &s,
        "/v1/inboxes",
        Some(&a.account_key),
        json!({"username": "x", "domain": "elsewhere.example"}),
    )
    .await;
    assert_error(st, &body, 422, "DOMAIN_NOT_AVAILABLE");
    assert_eq!(body["field"], "domain");
    for id in [
        "nope",
        "inbox_",
        "inbox_UPPER",
        "..%2F..%2Fetc",
        "inbox_%00",
    ] {
        let (st, body) = get(&s, &format!("/v1/inboxes/{id}"), &a.account_key).await;
        assert_error(st, &body, 404, "NOT_FOUND");
    }
    let (st, body) = get(&s, "/v1/nothing-here", &a.account_key).await;
    assert_error(st, &body, 404, "NOT_FOUND");
    let resp = s
        .http
        .put(s.url("/v1/inboxes"))
        .bearer_auth(&a.account_key)
        .send()
        .await
        .unwrap();
    let (st, body) = json_of(resp).await;
    assert_error(st, &body, 405, "METHOD_NOT_ALLOWED");
    let (_, list) = get(&s, "/v1/inboxes", &a.account_key).await;
    assert_eq!(
        list["result"]["total"], 1,
        "no bad request created anything"
    );
    s.stop().await;
}

/// Two processes on one PostgreSQL: a key rotated or an inbox deleted through one stops
/// working on the other at once, although both cache keys in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_reach_every_process_sharing_postgres() {
    let Some(a) = TestServer::start(mailroom_testkit::Backend::Postgres).await else {
        eprintln!("skipped: MAILROOM_TEST_DATABASE_URL is not set");
        return;
    };
    let b = a.start_beside().await;
    let acct = a.new_account("shared").await;
    let path = format!("/v1/inboxes/{}", acct.inbox_id);
    // Both processes now hold the key in their caches.
    assert_eq!(get(&a, &path, &acct.inbox_key).await.0, 200);
    assert_eq!(get(&b, &path, &acct.inbox_key).await.0, 200);
    let (st, body) = post(
        &a,
        &format!("{path}/rotate-key"),
        Some(&acct.account_key),
        json!({}),
    )
    .await;
    assert_eq!(st, 200);
    let new_key = body["result"]["inbox_api_key"].as_str().unwrap().to_owned();
    let mut refused = false;
    for _ in 0..50 {
        if get(&b, &path, &acct.inbox_key).await.0 == 401 {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        refused,
        "the other process stopped accepting the old key within a second"
    );
    assert_eq!(get(&b, &path, &new_key).await.0, 200);
    // The other process also knows the address as a recipient (kept in memory).
    assert!(rcpt_reply(&b, &acct.email).await.starts_with("250"));
    let (st, _) = delete(&a, &path, &acct.account_key).await;
    assert_eq!(st, 200);
    let mut gone = false;
    for _ in 0..50 {
        if get(&b, &path, &acct.account_key).await.0 == 404 {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(gone, "the other process forgot the deleted inbox");
    let r = rcpt_reply(&b, &acct.email).await;
    assert!(r.starts_with("550"), "RCPT to the deleted inbox: {r}");
    b.stop().await;
    a.stop().await;
}

/// The reply to `RCPT TO:<to>` in a fresh SMTP session with `s`.
async fn rcpt_reply(s: &TestServer, to: &str) -> String {
    use mailroom_testkit::budget::read_reply;
    use tokio::io::AsyncWriteExt;
    let stream = tokio::net::TcpStream::connect(s.server.as_ref().unwrap().smtp_addr)
        .await
        .unwrap();
    let (r, mut w) = stream.into_split();
    let mut r = tokio::io::BufReader::new(r);
    assert!(read_reply(&mut r).await.starts_with("220"));
    for cmd in ["EHLO client.test", "MAIL FROM:<sender@example.com>"] {
        w.write_all(format!("{cmd}\r\n").as_bytes()).await.unwrap();
        assert!(read_reply(&mut r).await.starts_with("250"), "{cmd}");
    }
    w.write_all(format!("RCPT TO:<{to}>\r\n").as_bytes())
        .await
        .unwrap();
    read_reply(&mut r).await
}
