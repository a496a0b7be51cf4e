//! Issue #12: the account key and the account SMTP password can be rotated, by the account
//! key or an owner (never by other users, inbox keys or scoped keys), over the API and
//! with `mailroom admin account …`; the old secret stops at once, in open submission
//! sessions and in a second process too. Real sockets, on SQLite and PostgreSQL.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::io::{BufRead, Write};
use std::process::Command;
use std::time::Duration;

use mailroom_core::Tier;
use mailroom_testkit::{TestAccount, TestServer, on_both_backends};
use serde_json::{Value, json};

on_both_backends!(
    the_account_key_rotates_for_its_managers_only,
    a_rotated_smtp_password_stops_open_sessions,
    admin_rotations_reach_the_running_server,
);

async fn call(s: &TestServer, method: &str, path: &str, key: Option<&str>) -> (u16, Value) {
    let (status, value, _) = s.call(method, path, key, None).await;
    (status, value)
}

/// Polls `GET /v1/account` with `key` until it answers `status` (at most 2 s).
async fn account_answers(s: &TestServer, key: &str, status: u16) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let (st, body) = call(s, "GET", "/v1/account", Some(key)).await;
        if st == status {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "GET /v1/account answered {st} for 2 s, not {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An owner's and a non-owner's access tokens in `a`'s account.
async fn user_tokens(s: &TestServer, a: &TestAccount) -> (String, String) {
    let password = "a long enough passphrase";
    let mut tokens = Vec::new();
    for (email, owner) in [("owner@example.com", true), ("member@example.com", false)] {
        let (st, body, _) = s
            .call(
                "POST",
                "/v1/account/users",
                Some(&a.account_key),
                Some(json!({"email": email, "password": password, "is_owner": owner})),
            )
            .await;
        assert_eq!(st, 201, "{body}");
        let (st, grant, _) = s
            .call(
                "POST",
                "/v1/auth/token",
                None,
                Some(json!({"email": email, "password": password})),
            )
            .await;
        assert_eq!(st, 200, "{grant}");
        tokens.push(grant["access_token"].as_str().unwrap().to_owned());
    }
    (tokens.remove(0), tokens.remove(0))
}

fn next_steps(body: &Value) -> Vec<String> {
    body["next_steps"]
        .as_array()
        .unwrap_or_else(|| panic!("next_steps in {body}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

async fn the_account_key_rotates_for_its_managers_only(s: TestServer) {
    let a = s.new_account("rotating").await;
    let (owner, member) = user_tokens(&s, &a).await;
    let (st, scoped, _) = s
        .call(
            "POST",
            "/v1/keys",
            Some(&a.account_key),
            Some(json!({"name": "reader", "scopes": ["api:read", "api:write", "smtp"]})),
        )
        .await;
    assert_eq!(st, 201, "{scoped}");
    let scoped = scoped["apiKey"].as_str().unwrap().to_owned();

    // Who may not: with the role table's codes, for both routes, and nothing changes.
    for path in ["/v1/account/rotate-key", "/v1/account/smtp/rotate"] {
        for (key, code) in [
            (a.inbox_key.as_str(), "ACCOUNT_KEY_REQUIRED"),
            (scoped.as_str(), "ACCOUNT_KEY_REQUIRED"),
            (member.as_str(), "OWNER_REQUIRED"),
        ] {
            let (st, e) = call(&s, "POST", path, Some(key)).await;
            assert_eq!((st, e["error"].as_str()), (403, Some(code)), "{path}: {e}");
        }
        let (st, _) = call(&s, "POST", path, None).await;
        assert_eq!(st, 401, "{path} without a key");
    }
    account_answers(&s, &a.account_key, 200).await;

    // The account key rotates itself: the new key once, in the shape POST /v1/inboxes
    // shows it; the old key (cached by the call above) stops at the very next request.
    let (st, rotated) = call(&s, "POST", "/v1/account/rotate-key", Some(&a.account_key)).await;
    assert_eq!(st, 200, "{rotated}");
    assert_eq!(rotated["result"]["account_id"], a.account_id.as_str());
    let new_key = rotated["result"]["account_api_key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(new_key.starts_with("mr_acc_") && new_key != a.account_key);
    assert!(
        next_steps(&rotated)
            .iter()
            .any(|s| s.contains("only returned once")),
        "{rotated}"
    );
    let (st, e) = call(&s, "GET", "/v1/account", Some(&a.account_key)).await;
    assert_eq!(st, 401, "the old key stops at once: {e}");
    let (st, _) = call(&s, "POST", "/v1/account/rotate-key", Some(&a.account_key)).await;
    assert_eq!(st, 401, "the old key cannot rotate again");
    account_answers(&s, &new_key, 200).await;
    // Inbox keys and scoped keys are untouched.
    let (st, _) = call(
        &s,
        "GET",
        &format!("/v1/inboxes/{}", a.inbox_id),
        Some(&a.inbox_key),
    )
    .await;
    assert_eq!(st, 200);
    let (st, _) = call(
        &s,
        "GET",
        &format!("/v1/inboxes/{}", a.inbox_id),
        Some(&scoped),
    )
    .await;
    assert_eq!(st, 200);

    // An owner may rotate it too.
    let (st, by_owner) = call(&s, "POST", "/v1/account/rotate-key", Some(&owner)).await;
    assert_eq!(st, 200, "{by_owner}");
    let newest = by_owner["result"]["account_api_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let (st, _) = call(&s, "GET", "/v1/account", Some(&new_key)).await;
    assert_eq!(st, 401);
    account_answers(&s, &newest, 200).await;

    // Another tenant is not touched (its key still works).
    let b = s.new_account("bystander").await;
    let (st, _) = call(&s, "POST", "/v1/account/rotate-key", Some(&newest)).await;
    assert_eq!(st, 200);
    account_answers(&s, &b.account_key, 200).await;

    // A second process on the same database hears of the rotation (PostgreSQL NOTIFY;
    // SQLite's notes are shown by the admin test, whose command is a second process).
    if s.database_url.starts_with("postgres") {
        let other = s.start_beside().await;
        account_answers(&other, &b.account_key, 200).await;
        let (st, r) = call(&s, "POST", "/v1/account/rotate-key", Some(&b.account_key)).await;
        assert_eq!(st, 200, "{r}");
        account_answers(&other, &b.account_key, 401).await;
        other.stop().await;
    }
    s.stop().await;
}

/// A submission session (Python's smtplib) logged in with the account SMTP password: MAIL,
/// RSET, then waits for a line on stdin and tries MAIL again. Prints each reply code.
fn open_session(port: u16, user: &str, password: &str, from: &str) -> std::process::Child {
    let script = r#"
import smtplib, sys
port, user, pw, frm = sys.argv[1:5]
s = smtplib.SMTP("127.0.0.1", int(port), timeout=20)
s.starttls()
s.login(user, pw)
print(s.mail(frm)[0], flush=True)
print(s.rset()[0], flush=True)
sys.stdin.readline()
print(s.mail(frm)[0], flush=True)
"#;
    Command::new("python3")
        .args(["-c", script, &port.to_string(), user, password, from])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs")
}

async fn a_rotated_smtp_password_stops_open_sessions(s: TestServer) {
    let a = s.new_account("smtp-rotor").await;
    let b = s.new_account("smtp-rcpt").await;
    s.set_tier(&a.account_id, Tier::Developer).await;
    let port = s.server.as_ref().unwrap().submission_addr.port();
    let smtp = s.get_json(&a.account_key, "/v1/account/smtp").await;
    let old = smtp["result"]["password"].as_str().unwrap().to_owned();
    let body = format!(
        "From: {}\r\nTo: {}\r\nSubject: s\r\n\r\nhi\r\n",
        a.email, b.email
    );
    let send =
        |pw: &str| mailroom_testkit::smtplib(port, &a.account_id, pw, &a.email, &b.email, &body);
    assert_eq!(send(&old), "OK");

    let mut child = open_session(port, &a.account_id, &old, &a.email);
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "250", "MAIL before the rotation");
    line.clear();
    out.read_line(&mut line).unwrap();

    let (st, rotated) = call(&s, "POST", "/v1/account/smtp/rotate", Some(&a.account_key)).await;
    assert_eq!(st, 200, "{rotated}");
    // GET /v1/account/smtp's shape (seed 000), with a new password.
    let r = &rotated["result"];
    let mut fields: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        ["host", "password", "port", "username"],
        "{rotated}"
    );
    assert_eq!(r["username"], a.account_id.as_str());
    assert_eq!(r["host"], smtp["result"]["host"]);
    assert_eq!(r["port"], smtp["result"]["port"]);
    let new = r["password"].as_str().unwrap().to_owned();
    assert!(new.starts_with("smtp_") && new != old, "{rotated}");
    assert!(!next_steps(&rotated).is_empty());

    // The open session's next command is refused; new sessions need the new password.
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "535", "MAIL after the rotation");
    let _ = child.wait();
    assert!(send(&old).starts_with("535"), "the old password is refused");
    assert_eq!(send(&new), "OK");
    let again = s.get_json(&a.account_key, "/v1/account/smtp").await;
    assert_eq!(
        again["result"]["password"],
        new.as_str(),
        "stable until rotated"
    );

    // On a tier without SMTP the password still rotates (a leaked one must not come back
    // with an upgrade), and next_steps say it logs in after an upgrade.
    let (st, free) = call(&s, "POST", "/v1/account/smtp/rotate", Some(&b.account_key)).await;
    assert_eq!(st, 200, "{free}");
    assert!(
        next_steps(&free).iter().any(|s| s.contains("paid tier")),
        "{free}"
    );
    s.stop().await;
}

fn admin(s: &TestServer, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mailroom"))
        .args(["admin", "account"])
        .args(args)
        .arg("--database-url")
        .arg(&s.database_url)
        .arg("--data-dir")
        .arg(&s.config.data_dir)
        .env_remove("MAILROOM_DATABASE_URL")
        .env_remove("MAILROOM_MASTER_SECRET")
        .output()
        .unwrap()
}

/// The value after `name: ` in the command's output.
fn printed(out: &std::process::Output, name: &str) -> String {
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("{name} in {text}"))
        .to_owned()
}

async fn admin_rotations_reach_the_running_server(s: TestServer) {
    let a = s.new_account("operated").await;
    let b = s.new_account("operated-rcpt").await;
    s.set_tier(&a.account_id, Tier::Developer).await;
    // The running server has the old key cached.
    account_answers(&s, &a.account_key, 200).await;

    // Named by an inbox address: the command prints the new key once.
    let out = admin(&s, &["rotate-key", &a.email.to_uppercase()]);
    let new_key = printed(&out, "account_api_key");
    assert!(new_key.starts_with("mr_acc_"));
    account_answers(&s, &a.account_key, 401).await;
    account_answers(&s, &new_key, 200).await;

    // The SMTP password, named by the account id; derived with the server's master secret,
    // so GET /v1/account/smtp shows the same one.
    let port = s.server.as_ref().unwrap().submission_addr.port();
    let old = s.get_json(&new_key, "/v1/account/smtp").await["result"]["password"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = admin(&s, &["rotate-smtp", &a.account_id]);
    let new = printed(&out, "password");
    assert_eq!(printed(&out, "username"), a.account_id);
    assert_ne!(new, old);
    let shown = s.get_json(&new_key, "/v1/account/smtp").await;
    assert_eq!(shown["result"]["password"], new.as_str());
    let body = format!("From: {}\r\nSubject: s\r\n\r\nhi\r\n", a.email);
    let send =
        |pw: &str| mailroom_testkit::smtplib(port, &a.account_id, pw, &a.email, &b.email, &body);
    assert!(send(&old).starts_with("535"));
    assert_eq!(send(&new), "OK");

    // An unknown account is named in the error, and nothing changes.
    let out = admin(&s, &["rotate-key", "nobody@nowhere.example"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no account"));
    account_answers(&s, &new_key, 200).await;
    s.stop().await;
}
