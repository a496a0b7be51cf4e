//! Seed 004 over real HTTP: operator users, password grants, JWT access tokens, refresh
//! rotation with reuse detection, revocation, and what a user's token may do. On SQLite and
//! PostgreSQL.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::time::Duration;

use base64::Engine as _;
use mailroom_testkit::{Backend, TestServer, on_both_backends};
use serde_json::{Value, json};

on_both_backends!(
    users_log_in_refresh_rotate_and_revoke,
    user_tokens_end_with_the_user
);

async fn call(
    s: &TestServer,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let (status, value, _) = s.call(method, path, key, body).await;
    (status, value)
}

async fn grant(s: &TestServer, email: &str, password: &str) -> (u16, Value) {
    call(
        s,
        "POST",
        "/v1/auth/token",
        None,
        Some(json!({"email": email, "password": password})),
    )
    .await
}

async fn users_log_in_refresh_rotate_and_revoke(s: TestServer) {
    let a = s.new_account("operators").await;
    let password = "correct horse battery staple";
    let (st, created) = call(
        &s,
        "POST",
        "/v1/account/users",
        Some(&a.account_key),
        Some(json!({"email": "Jack@Example.com", "password": password, "first_name": "Jack", "surname": "Truong", "is_owner": true})),
    )
    .await;
    assert_eq!(st, 201, "{created}");
    assert_eq!(created["result"]["email"], "jack@example.com");
    assert!(created["result"].get("password").is_none(), "{created}");
    // Bad input and duplicates change nothing.
    for (body, code, status) in [
        (
            json!({"email": "jack@example.com", "password": password}),
            "EMAIL_TAKEN",
            409,
        ),
        (
            json!({"email": "short@example.com", "password": "short"}),
            "WEAK_PASSWORD",
            422,
        ),
        (
            json!({"email": "not an email", "password": password}),
            "INVALID_EMAIL",
            422,
        ),
        (
            json!({"email": "named@example.com", "password": password, "first_name": "a\nb"}),
            "INVALID_NAME",
            422,
        ),
    ] {
        let (st, e) = call(
            &s,
            "POST",
            "/v1/account/users",
            Some(&a.account_key),
            Some(body),
        )
        .await;
        assert_eq!((st, e["error"].as_str().unwrap()), (status, code), "{e}");
    }
    // Nothing was created by the refused requests.
    let (_, listed) = call(&s, "GET", "/v1/account/users", Some(&a.account_key), None).await;
    let emails: Vec<&str> = listed["result"]["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].as_str().unwrap())
        .collect();
    assert_eq!(emails, ["jack@example.com"], "{listed}");
    // An inbox key cannot create users.
    let (st, _) = call(
        &s,
        "POST",
        "/v1/account/users",
        Some(&a.inbox_key),
        Some(json!({"email": "x@example.com", "password": password})),
    )
    .await;
    assert_eq!(st, 403);

    // Wrong credentials: seed 004's code and message, whether the email exists or not.
    for (email, pw) in [
        ("jack@example.com", "wrong password!!"),
        ("nobody@example.com", password),
    ] {
        let (st, e) = grant(&s, email, pw).await;
        assert_eq!(st, 403, "{e}");
        assert_eq!(
            e,
            json!({"code": 40102, "message": "Username and password are incorrect"})
        );
    }

    // A grant in the seed's shape.
    let (st, g) = grant(&s, "JACK@example.com", password).await;
    assert_eq!(st, 200, "{g}");
    assert_eq!(g["token_type"], "bearer");
    let access = g["access_token"].as_str().unwrap().to_owned();
    assert_eq!(access.split('.').count(), 3);
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(access.split('.').next().unwrap())
        .unwrap();
    assert_eq!(
        String::from_utf8(header).unwrap(),
        r#"{"alg":"HS256","typ":"JWT"}"#
    );
    let now = mailroom_core::time::now_ms();
    let exp = g["expires_at"].as_i64().unwrap();
    assert!(exp > now && exp <= now + 15 * 60 * 1000 + 5000, "{g}");
    assert!(
        g["scope"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "api:write")
    );
    let refresh1 = g["refresh_token"].as_str().unwrap().to_owned();

    // /v1/me with the seed's fields.
    let (st, me) = call(&s, "GET", "/v1/me", Some(&access), None).await;
    assert_eq!(st, 200, "{me}");
    for field in [
        "id",
        "account_id",
        "email_address",
        "first_name",
        "surname",
        "gravatar_url",
        "is_owner",
        "is_verified",
        "created_at_utc",
        "modified_at_utc",
    ] {
        assert!(me.get(field).is_some(), "{field} in {me}");
    }
    assert_eq!(me["account_id"], a.account_id.as_str());
    assert_eq!(me["first_name"], "Jack");
    assert_eq!(me["is_owner"], true);
    // A key is not a user.
    let (st, _) = call(&s, "GET", "/v1/me", Some(&a.account_key), None).await;
    assert_eq!(st, 403);

    // An owner's token works where the account key works.
    let (st, list) = call(&s, "GET", "/v1/inboxes", Some(&access), None).await;
    assert_eq!(st, 200, "{list}");
    assert_eq!(list["result"]["inboxes"][0]["id"], a.inbox_id.as_str());
    let (st, made) = call(
        &s,
        "POST",
        "/v1/inboxes",
        Some(&access),
        Some(json!({"username": "made-by-jwt"})),
    )
    .await;
    assert_eq!(st, 201, "{made}");
    assert_eq!(made["result"]["account_id"], a.account_id.as_str());
    let (st, _) = call(&s, "GET", "/v1/account", Some(&access), None).await;
    assert_eq!(st, 200);
    // Basic auth with the token as user name, as with keys.
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{access}:"));
    let resp = s
        .http
        .get(s.url("/v1/account"))
        .header("Authorization", format!("Basic {basic}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);

    // Tampered, unsigned and foreign-algorithm tokens are refused.
    let parts: Vec<&str> = access.split('.').collect();
    let mut payload: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[1])
            .unwrap(),
    )
    .unwrap();
    payload["is_owner"] = json!(true);
    payload["account_id"] = json!("acc_someoneelse0000000");
    let forged_payload =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(payload.to_string());
    let none_header =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    for bad in [
        format!("{}.{forged_payload}.{}", parts[0], parts[2]),
        format!("{none_header}.{}.", parts[1]),
        format!("{none_header}.{}.{}", parts[1], parts[2]),
        format!("{}.{}.AAAA", parts[0], parts[1]),
    ] {
        let (st, _) = call(&s, "GET", "/v1/inboxes", Some(&bad), None).await;
        assert_eq!(st, 401, "{bad}");
    }

    // Refresh rotates; the spent token is refused and takes its successors with it.
    let (st, r2) = call(
        &s,
        "POST",
        "/v1/auth/refresh",
        None,
        Some(json!({"refresh_token": refresh1})),
    )
    .await;
    assert_eq!(st, 200, "{r2}");
    let refresh2 = r2["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(refresh1, refresh2);
    let (st, _) = call(
        &s,
        "GET",
        "/v1/me",
        Some(r2["access_token"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(st, 200);
    let (st, e) = call(
        &s,
        "POST",
        "/v1/auth/refresh",
        None,
        Some(json!({"refresh_token": refresh1})),
    )
    .await;
    assert_eq!(st, 403);
    assert_eq!(
        e,
        json!({"code": 40106, "message": "Refresh token is invalid"})
    );
    let (st, _) = call(
        &s,
        "POST",
        "/v1/auth/refresh",
        None,
        Some(json!({"refresh_token": refresh2})),
    )
    .await;
    assert_eq!(st, 403, "reuse revoked the family");

    // A new grant expires the earlier refresh tokens.
    let (_, g1) = grant(&s, "jack@example.com", password).await;
    let (_, g2) = grant(&s, "jack@example.com", password).await;
    let (st, _) = call(
        &s,
        "POST",
        "/v1/auth/refresh",
        None,
        Some(json!({"refresh_token": g1["refresh_token"]})),
    )
    .await;
    assert_eq!(st, 403);
    let (st, r) = call(
        &s,
        "POST",
        "/v1/auth/refresh",
        None,
        Some(json!({"refresh_token": g2["refresh_token"]})),
    )
    .await;
    assert_eq!(st, 200, "{r}");

    // Revoke (logout), then the token is gone.
    let (st, v) = call(
        &s,
        "POST",
        "/v1/auth/revoke",
        None,
        Some(json!({"refresh_token": r["refresh_token"]})),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let (st, _) = call(
        &s,
        "POST",
        "/v1/auth/refresh",
        None,
        Some(json!({"refresh_token": r["refresh_token"]})),
    )
    .await;
    assert_eq!(st, 403);
    let (st, e) = call(
        &s,
        "POST",
        "/v1/auth/revoke",
        None,
        Some(json!({"refresh_token": r["refresh_token"]})),
    )
    .await;
    assert_eq!(st, 401);
    assert_eq!(e["code"], 40106);

    // A user who is not an owner reads mail but does not manage the account.
    let (st, _) = call(
        &s,
        "POST",
        "/v1/account/users",
        Some(&access),
        Some(json!({"email": "amy@example.com", "password": password})),
    )
    .await;
    assert_eq!(st, 201, "an owner creates users");
    let (_, ga) = grant(&s, "amy@example.com", password).await;
    let amy = ga["access_token"].as_str().unwrap().to_owned();
    let (st, _) = call(
        &s,
        "GET",
        &format!("/v1/inboxes/{}/messages", a.inbox_id),
        Some(&amy),
        None,
    )
    .await;
    assert_eq!(st, 200);
    let (st, e) = call(
        &s,
        "POST",
        "/v1/account/users",
        Some(&amy),
        Some(json!({"email": "eve@example.com", "password": password})),
    )
    .await;
    assert_eq!(
        (st, e["error"].as_str()),
        (403, Some("OWNER_REQUIRED")),
        "{e}"
    );
    let (st, _) = call(&s, "GET", "/api/smtp-credentials", Some(&amy), None).await;
    assert_eq!(st, 403);
    // Nor the inboxes (issue #12): no deleting one, no rotating its key.
    for (method, path) in [
        ("POST", format!("/v1/inboxes/{}/rotate-key", a.inbox_id)),
        ("DELETE", format!("/v1/inboxes/{}", a.inbox_id)),
    ] {
        let body = (method == "POST").then(|| json!({}));
        let (st, e) = call(&s, method, &path, Some(&amy), body).await;
        assert_eq!(
            (st, e["error"].as_str()),
            (403, Some("OWNER_REQUIRED")),
            "{method} {path}: {e}"
        );
    }
    let (st, _) = call(
        &s,
        "GET",
        &format!("/v1/inboxes/{}", a.inbox_id),
        Some(&access),
        None,
    )
    .await;
    assert_eq!(st, 200, "the inbox is still there");

    // Another tenant never sees this account's users or inboxes.
    let b = s.new_account("other-tenant").await;
    let (st, _) = call(
        &s,
        "GET",
        &format!("/v1/inboxes/{}", b.inbox_id),
        Some(&access),
        None,
    )
    .await;
    assert_eq!(st, 404);
    let (_, users) = call(&s, "GET", "/v1/account/users", Some(&b.account_key), None).await;
    assert_eq!(users["result"]["users"].as_array().unwrap().len(), 0);
    s.stop().await;
}

async fn user_tokens_end_with_the_user(s: TestServer) {
    let a = s.new_account("ending").await;
    let password = "correct horse battery staple";
    let (_, u) = call(
        &s,
        "POST",
        "/v1/account/users",
        Some(&a.account_key),
        Some(json!({"email": "gone@example.com", "password": password, "is_owner": true})),
    )
    .await;
    let user_id = u["result"]["id"].as_str().unwrap().to_owned();
    let (_, g) = grant(&s, "gone@example.com", password).await;
    let access = g["access_token"].as_str().unwrap().to_owned();
    let (st, _) = call(&s, "GET", "/v1/me", Some(&access), None).await;
    assert_eq!(st, 200);
    // Disabled: the token stops at once, and so do the refresh token and the password.
    let (st, _) = call(
        &s,
        "PATCH",
        &format!("/v1/account/users/{user_id}"),
        Some(&a.account_key),
        Some(json!({"disabled": true})),
    )
    .await;
    assert_eq!(st, 200);
    let (st, _) = call(&s, "GET", "/v1/me", Some(&access), None).await;
    assert_eq!(st, 401);
    let (st, _) = call(
        &s,
        "POST",
        "/v1/auth/refresh",
        None,
        Some(json!({"refresh_token": g["refresh_token"]})),
    )
    .await;
    assert_eq!(st, 403);
    let (st, _) = grant(&s, "gone@example.com", password).await;
    assert_eq!(st, 403);
    // Enabled again, then deleted.
    call(
        &s,
        "PATCH",
        &format!("/v1/account/users/{user_id}"),
        Some(&a.account_key),
        Some(json!({"disabled": false})),
    )
    .await;
    let (st, g) = grant(&s, "gone@example.com", password).await;
    assert_eq!(st, 200);
    let access = g["access_token"].as_str().unwrap().to_owned();
    let (st, _) = call(
        &s,
        "DELETE",
        &format!("/v1/account/users/{user_id}"),
        Some(&a.account_key),
        None,
    )
    .await;
    assert_eq!(st, 204);
    let (st, _) = call(&s, "GET", "/v1/inboxes", Some(&access), None).await;
    assert_eq!(st, 401);
    // Another account cannot delete (or see) someone else's user.
    let b = s.new_account("stranger").await;
    let (_, u) = call(
        &s,
        "POST",
        "/v1/account/users",
        Some(&a.account_key),
        Some(json!({"email": "kept@example.com", "password": password})),
    )
    .await;
    let kept = u["result"]["id"].as_str().unwrap().to_owned();
    let (st, _) = call(
        &s,
        "DELETE",
        &format!("/v1/account/users/{kept}"),
        Some(&b.account_key),
        None,
    )
    .await;
    assert_eq!(st, 404);
    s.stop().await;
}

/// Access tokens expire (here after one second).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_tokens_expire() {
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.access_token_ttl = Duration::from_secs(1)
    })
    .await
    .unwrap();
    let a = s.new_account("brief").await;
    let password = "correct horse battery staple";
    call(
        &s,
        "POST",
        "/v1/account/users",
        Some(&a.account_key),
        Some(json!({"email": "brief@example.com", "password": password})),
    )
    .await;
    let (_, g) = grant(&s, "brief@example.com", password).await;
    let access = g["access_token"].as_str().unwrap().to_owned();
    let (st, _) = call(&s, "GET", "/v1/me", Some(&access), None).await;
    assert_eq!(st, 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (st, _) = call(&s, "GET", "/v1/me", Some(&access), None).await;
    assert_eq!(st, 401, "expired");
    // The refresh token still gives a new one.
    let (st, r) = call(
        &s,
        "POST",
        "/v1/auth/refresh",
        None,
        Some(json!({"refresh_token": g["refresh_token"]})),
    )
    .await;
    assert_eq!(st, 200);
    let (st, _) = call(
        &s,
        "GET",
        "/v1/me",
        Some(r["access_token"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(st, 200);
    s.stop().await;
}

/// `mailroom admin user create` makes a user who can log in; the password comes from the
/// environment, never a flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_creates_users() {
    let s = TestServer::start(Backend::Sqlite).await.unwrap();
    let a = s.new_account("cli-users").await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .args([
            "admin",
            "user",
            "create",
            &a.account_id,
            "cli@example.com",
            "--owner",
            "--first-name",
            "Cli",
        ])
        .args(["--database-url", &s.database_url])
        .env("MAILROOM_USER_PASSWORD", "a password from the environment")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (st, g) = grant(&s, "cli@example.com", "a password from the environment").await;
    assert_eq!(st, 200, "{g}");
    let (_, me) = call(
        &s,
        "GET",
        "/v1/me",
        Some(g["access_token"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(me["is_owner"], true);
    assert_eq!(me["first_name"], "Cli");
    s.stop().await;
}
