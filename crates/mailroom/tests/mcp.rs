//! MCP: `/mcp` (Streamable HTTP) and `mailroom mcp --stdio`, with the official MCP Python
//! SDK (`pip install mcp`) as the client (tests/clients/mcp_steps.py), against a real server
//! on SQLite and PostgreSQL.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use base64::Engine as _;
use mailroom_core::Tier;
use mailroom_testkit::{TestAccount, TestServer, on_both_backends};
use serde_json::{Value, json};

on_both_backends!(
    tools_over_streamable_http,
    keys_and_scopes_hold_over_mcp,
    conversations_links_and_webhooks,
    tools_over_stdio
);

/// Runs the steps with the Python SDK: `transport` is `["http", url, key, mode]` or
/// `["stdio", command, args…]`; `env` is added to its environment.
async fn mcp_steps(transport: &[&str], env: &[(&str, &str)], steps: Value) -> Value {
    use tokio::io::AsyncWriteExt as _;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/clients/mcp_steps.py"
    );
    let mut child = tokio::process::Command::new("python3")
        .arg(script)
        .args(transport)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(steps.to_string().as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        child.wait_with_output(),
    )
    .await
    .expect("the MCP client finishes within 2 minutes")
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(
        out.status.code(),
        Some(3),
        "the official MCP Python SDK is missing: pip install mcp ({stderr})"
    );
    assert!(out.status.success(), "mcp_steps.py failed: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "mcp_steps.py printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

async fn over_http(s: &TestServer, key: &str, mode: &str, steps: Value) -> Value {
    let url = s.url("/mcp");
    mcp_steps(&["http", &url, key, mode], &[], steps).await
}

/// The structured result of a call step that succeeded.
fn ok(out: &Value, step: usize) -> &Value {
    let r = &out["steps"][step];
    assert_eq!(r["is_error"], false, "step {step}: {r}");
    &r["structured"]
}

/// The structured result of a call step that failed, checked for its `code` and status.
fn err(out: &Value, step: usize, code: &str, status: u64) -> Value {
    let r = &out["steps"][step];
    assert_eq!(r["is_error"], true, "step {step}: {r}");
    let e = &r["structured"];
    assert_eq!(e["error"], code, "step {step}: {e}");
    assert_eq!(e["status"], status, "step {step}: {e}");
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
    assert!(
        e["next_steps"].as_array().is_some_and(|n| !n.is_empty()),
        "{e}"
    );
    e.clone()
}

async fn tools_over_streamable_http(s: TestServer) {
    let ann = s.new_account("ann").await;
    let bob = s.new_account("bob").await;
    s.set_tier(&ann.account_id, Tier::Developer).await;
    let pdf = b"%PDF-1.4 not really\x00\xff";
    // The initialize handshake (the SDK's "legacy" mode), with the account key.
    let out = over_http(
        &s,
        &ann.account_key,
        "legacy",
        json!([
            ["list_tools"],
            ["call", "get_account", {}],
            ["call", "get_capabilities", {}],
            ["call", "create_inbox", {"username": "ann-second"}],
            ["call", "list_inboxes", {}],
            ["call", "send_message", {
                "inbox_id": ann.inbox_id, "to": bob.email, "subject": "Hello over MCP",
                "text": "Your code is 493817", "attachments": [{
                    "filename": "report.pdf", "content_type": "application/pdf",
                    "content": base64::engine::general_purpose::STANDARD.encode(pdf)}]}],
        ]),
    )
    .await;
    assert_eq!(out["server"]["name"], "mailroom");
    assert_eq!(out["server"]["protocol_version"], "2025-11-25");
    let tools = out["steps"][0]["tools"].as_array().unwrap();
    let names: Vec<&str> = tools.iter().filter_map(|t| t["name"].as_str()).collect();
    for name in [
        "get_account",
        "get_capabilities",
        "create_inbox",
        "list_inboxes",
        "list_messages",
        "wait_for_message",
        "get_message",
        "list_attachments",
        "send_message",
        "reply",
        "reply_all",
        "forward",
        "update_message",
        "create_upgrade_link",
        "notify_operator",
        "list_webhooks",
        "create_webhook",
    ] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    let send = tools.iter().find(|t| t["name"] == "send_message").unwrap();
    assert_eq!(
        send["inputSchema"]["required"],
        json!(["inbox_id"]),
        "{send}"
    );
    assert!(send["inputSchema"]["properties"]["subject"].is_object());
    assert_eq!(send["annotations"]["readOnlyHint"], false);
    assert_eq!(ok(&out, 1)["result"]["account_id"], ann.account_id.as_str());
    assert_eq!(ok(&out, 1)["result"]["tier"], "developer");
    assert!(ok(&out, 2)["result"]["can"].is_array());
    let second = ok(&out, 3)["result"].clone();
    assert!(
        second["inbox_api_key"]
            .as_str()
            .unwrap()
            .starts_with("mr_inb_"),
        "{second}"
    );
    assert_eq!(ok(&out, 4)["result"]["total"], 2);
    let sent = ok(&out, 5);
    assert!(sent["next_steps"].is_array(), "{sent}");

    // The message is really there, as the HTTP API shows it.
    let list = s
        .get_json(
            &bob.inbox_key,
            &format!("/v1/inboxes/{}/messages", bob.inbox_id),
        )
        .await;
    assert_eq!(list["result"]["messages"][0]["subject"], "Hello over MCP");
    read_as_bob(&s, &ann, &bob, pdf).await;
    s.stop().await;
}

/// The reader of `tools_over_streamable_http`: the SDK's default mode (server/discover),
/// with an inbox key.
async fn read_as_bob(s: &TestServer, ann: &TestAccount, bob: &TestAccount, pdf: &[u8]) {
    let out = over_http(
        s,
        &bob.inbox_key,
        "auto",
        json!([
            ["call", "wait_for_message", {"inbox_id": bob.inbox_id, "subject": "over MCP",
                "timeout_s": 10}],
            ["call", "get_message", {"inbox_id": bob.inbox_id,
                "message_id": "{{0:/result/messages/0/id}}"}],
            ["call", "list_attachments", {"inbox_id": bob.inbox_id,
                "message_id": "{{0:/result/messages/0/id}}"}],
            ["call", "update_message", {"inbox_id": bob.inbox_id,
                "message_id": "{{0:/result/messages/0/id}}", "read": true,
                "add_labels": ["seen-by-mcp"]}],
            ["call", "list_messages", {"inbox_id": bob.inbox_id, "label": "seen-by-mcp"}],
            ["call", "list_messages", {"inbox_id": bob.inbox_id, "from": "nobody-like-this"}],
            // Free tier: receive only. The error carries the API's code and upgrade context.
            ["call", "reply", {"inbox_id": bob.inbox_id,
                "message_id": "{{0:/result/messages/0/id}}", "text": "Thanks"}],
            ["call", "list_messages", {"inbox_id": bob.inbox_id, "limit": 1000}],
            ["call", "get_message", {"inbox_id": bob.inbox_id}],
        ]),
    )
    .await;
    assert_ne!(
        out["server"]["protocol_version"], "2025-11-25",
        "{}",
        out["server"]
    );
    let waited = ok(&out, 0);
    assert_eq!(
        waited["result"]["messages"][0]["from"],
        ann.email.as_str(),
        "{waited}"
    );
    let message = ok(&out, 1);
    assert_eq!(message["result"]["subject"], "Hello over MCP");
    assert_eq!(
        message["result"]["extracted"]["codes"][0], "493817",
        "{message}"
    );
    let attachment = &ok(&out, 2)["result"]["attachments"][0];
    assert_eq!(attachment["filename"], "report.pdf", "{attachment}");
    let url = attachment["download_url"].as_str().unwrap();
    assert!(url.starts_with(&s.base_url), "{url}");
    let bytes = s
        .http
        .get(url)
        .bearer_auth(&bob.inbox_key)
        .send()
        .await
        .unwrap();
    assert_eq!(bytes.status(), 200);
    assert_eq!(&bytes.bytes().await.unwrap()[..], pdf);
    assert_eq!(ok(&out, 3)["result"]["read"], true);
    assert_eq!(ok(&out, 4)["result"]["total"], 1);
    assert_eq!(ok(&out, 5)["result"]["total"], 0);
    let refused = err(&out, 6, "SEND_REQUIRES_PAID", 403);
    let script = refused["upgrade_context"]["agent_script"].as_str().unwrap();
    assert!(refused["next_steps"][0] == script, "{refused}");
    let bad = err(&out, 7, "INVALID_QUERY", 400);
    assert_eq!(bad["field"], "limit");
    let missing = &out["steps"][8];
    assert_eq!(missing["is_error"], true);
    assert_eq!(
        missing["structured"]["error"], "INVALID_ARGUMENTS",
        "{missing}"
    );
}

async fn keys_and_scopes_hold_over_mcp(s: TestServer) {
    let ann = s.new_account("ann").await;
    let eve = s.new_account("eve").await;
    let (st, second, _) = s
        .call(
            "POST",
            "/v1/inboxes",
            Some(&ann.account_key),
            Some(json!({"username": "ann-b"})),
        )
        .await;
    assert_eq!(st, 201, "{second}");
    let second_id = second["result"]["id"].as_str().unwrap();
    // Ann's first inbox key reaches its inbox only; another tenant's ids are not found.
    let out = over_http(
        &s,
        &ann.inbox_key,
        "auto",
        json!([
            ["call", "list_messages", {"inbox_id": ann.inbox_id}],
            ["call", "list_messages", {"inbox_id": second_id}],
            ["call", "get_inbox", {"inbox_id": eve.inbox_id}],
            ["call", "get_account", {}],
            ["call", "list_inboxes", {}],
        ]),
    )
    .await;
    assert_eq!(ok(&out, 0)["result"]["total"], 0);
    err(&out, 1, "NOT_FOUND", 404);
    err(&out, 2, "NOT_FOUND", 404);
    err(&out, 3, "ACCOUNT_KEY_REQUIRED", 403);
    err(&out, 4, "ACCOUNT_KEY_REQUIRED", 403);
    // Eve's account key does not reach Ann's inboxes either.
    let out = over_http(
        &s,
        &eve.account_key,
        "auto",
        json!([
            ["call", "get_inbox", {"inbox_id": ann.inbox_id}],
            ["call", "list_messages", {"inbox_id": second_id}],
        ]),
    )
    .await;
    err(&out, 0, "NOT_FOUND", 404);
    err(&out, 1, "NOT_FOUND", 404);
    // A scoped API key keeps its scopes: api:read reads, and may not send.
    let (st, reader, _) = s
        .call(
            "POST",
            "/v1/keys",
            Some(&ann.account_key),
            Some(json!({"name": "Reader", "scopes": ["api:read"]})),
        )
        .await;
    assert_eq!(st, 201, "{reader}");
    let out = over_http(
        &s,
        reader["apiKey"].as_str().unwrap(),
        "auto",
        json!([
            ["call", "list_messages", {"inbox_id": second_id}],
            ["call", "send_message", {"inbox_id": second_id, "to": eve.email, "text": "x"}],
        ]),
    )
    .await;
    assert_eq!(ok(&out, 0)["result"]["total"], 0);
    err(&out, 1, "SCOPE_REQUIRED", 403);
    http_level_rules(&s, &ann).await;
    s.stop().await;
}

/// What `/mcp` decides before any tool runs: the rate limit counts a tool call once (the
/// `/mcp` request, not its dispatch again), and no MCP is spoken without a valid key.
async fn http_level_rules(s: &TestServer, ann: &TestAccount) {
    let mut remaining = Vec::new();
    for id in 1..=3 {
        let resp = s
            .http
            .post(s.url("/mcp"))
            .bearer_auth(&ann.inbox_key)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-11-25")
            .json(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": {"name": "get_inbox", "arguments": {"inbox_id": ann.inbox_id}}}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let left: u64 = resp.headers()["x-ratelimit-remaining"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["result"]["isError"], false, "{body}");
        remaining.push(left);
    }
    assert_eq!(remaining[0] - remaining[1], 1, "{remaining:?}");
    assert_eq!(remaining[1] - remaining[2], 1, "{remaining:?}");
    // No MCP is spoken without a valid key: 401 as the API answers it.
    for auth in [None, Some("Bearer mr_acc_not_a_key")] {
        let mut req = s
            .http
            .post(s.url("/mcp"))
            .header("accept", "application/json, text/event-stream")
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "UNAUTHORIZED");
    }
}

async fn conversations_links_and_webhooks(s: TestServer) {
    let ann = s.new_account("ann").await;
    let bob = s.new_account("bob").await;
    s.set_tier(&ann.account_id, Tier::Developer).await;
    s.set_tier(&bob.account_id, Tier::Developer).await;
    let (st, sent, _) = s
        .call(
            "POST",
            &format!("/v1/inboxes/{}/send", ann.inbox_id),
            Some(&ann.inbox_key),
            Some(json!({"to": bob.email, "subject": "Lunch?", "text": "Noon?"})),
        )
        .await;
    assert_eq!(st, 201, "{sent}");
    let inbox = bob.inbox_id.as_str();
    let out = over_http(
        &s,
        &bob.inbox_key,
        "auto",
        json!([
            ["call", "wait_for_message", {"inbox_id": inbox, "timeout_s": 10}],
            ["call", "reply", {"inbox_id": inbox, "message_id": "{{0:/result/messages/0/id}}",
                "text": "Noon works."}],
            ["call", "reply_all", {"inbox_id": inbox, "message_id": "{{0:/result/messages/0/id}}",
                "text": "Everyone: noon."}],
            ["call", "forward", {"inbox_id": inbox, "message_id": "{{0:/result/messages/0/id}}",
                "to": ann.email, "text": "FYI"}],
            ["call", "list_threads", {"inbox_id": inbox}],
            ["call", "get_thread", {"inbox_id": inbox,
                "thread_id": "{{0:/result/messages/0/thread_id}}"}],
            ["call", "delete_message", {"inbox_id": inbox,
                "message_id": "{{0:/result/messages/0/id}}"}],
            ["call", "list_messages", {"inbox_id": inbox}],
        ]),
    )
    .await;
    for step in 1..=3 {
        let r = &ok(&out, step)["result"];
        assert_eq!(
            r["recipients"][0]["address"],
            ann.email.as_str(),
            "step {step}: {r}"
        );
        assert_eq!(
            r["recipients"][0]["status"], "delivered",
            "step {step}: {r}"
        );
    }
    assert!(ok(&out, 4)["result"]["total"].as_u64().unwrap() >= 1);
    let thread = &ok(&out, 5)["result"];
    assert!(
        thread["messages"].as_array().unwrap().len() >= 3,
        "{thread}"
    );
    assert_eq!(ok(&out, 6)["result"]["outcome"], "trash");
    assert_eq!(ok(&out, 7)["result"]["total"], 0);
    // Ann got the reply, the reply to all and the forward, subjects as the API makes them.
    let list = s
        .get_json(
            &ann.inbox_key,
            &format!("/v1/inboxes/{}/messages", ann.inbox_id),
        )
        .await;
    let subjects: Vec<&str> = list["result"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["subject"].as_str())
        .collect();
    assert!(
        subjects.contains(&"Re: Lunch?") && subjects.contains(&"Fwd: Lunch?"),
        "{subjects:?}"
    );
    account_tools(&s, &ann).await;
    s.stop().await;
}

/// The account key's tools: upgrade links and webhooks, with the API's refusals.
async fn account_tools(s: &TestServer, ann: &TestAccount) {
    let out = over_http(
        s,
        &ann.account_key,
        "auto",
        json!([
            ["call", "create_upgrade_link", {"target_tier": "growth"}],
            ["call", "create_upgrade_link", {"target_tier": "free"}],
            ["call", "create_webhook", {"url": "http://127.0.0.1:9/hook",
                "events": ["message.received"]}],
            ["call", "list_webhooks", {}],
            ["call", "create_webhook", {"url": "http://10.0.0.5/hook", "events": ["*"]}],
            ["call", "notify_operator", {"issue": "Please verify example.com",
                "context": {"domain": "example.com"}}],
            ["call", "notify_operator", {"issue": " "}],
        ]),
    )
    .await;
    let link = &ok(&out, 0)["result"];
    assert!(link.to_string().contains("/upgrade?token="), "{link}");
    err(&out, 1, "INVALID_TARGET_TIER", 422);
    let hook = &ok(&out, 2)["result"];
    assert!(
        hook["secret"].as_str().unwrap().starts_with("whsec_"),
        "{hook}"
    );
    assert_eq!(ok(&out, 3)["result"]["webhooks"][0]["id"], hook["id"]);
    err(&out, 4, "URL_NOT_ALLOWED", 422);
    let notice = &ok(&out, 5)["result"];
    assert!(
        notice["agent_script"]
            .as_str()
            .unwrap()
            .starts_with("Tell your operator: Please verify example.com"),
        "{notice}"
    );
    err(&out, 6, "INVALID_ISSUE", 422);
}

async fn tools_over_stdio(s: TestServer) {
    let ann = s.new_account("ann").await;
    let eve = s.new_account("eve").await;
    s.deliver_smtp(
        &ann.email,
        &format!(
            "From: Shop <noreply@shop.test>\r\nTo: {}\r\nSubject: Verify your email\r\n\r\n\
             Your verification code is 771203.\r\n",
            ann.email
        ),
    )
    .await;
    let bin = env!("CARGO_BIN_EXE_mailroom");
    let env = [
        ("MAILROOM_API_URL", s.base_url.as_str()),
        ("MAILROOM_API_KEY", ann.inbox_key.as_str()),
    ];
    let out = mcp_steps(
        &["stdio", bin, "mcp", "--stdio"],
        &env,
        json!([
            ["list_tools"],
            ["call", "list_messages", {"inbox_id": ann.inbox_id, "subject": "verify"}],
            ["call", "get_message", {"inbox_id": ann.inbox_id,
                "message_id": "{{1:/result/messages/0/id}}"}],
            ["call", "get_inbox", {"inbox_id": eve.inbox_id}],
            ["call", "get_capabilities", {}],
        ]),
    )
    .await;
    assert_eq!(out["server"]["name"], "mailroom");
    assert!(out["steps"][0]["tools"].as_array().unwrap().len() >= 16);
    assert_eq!(ok(&out, 1)["result"]["total"], 1);
    let message = ok(&out, 2);
    assert_eq!(
        message["result"]["extracted"]["codes"][0], "771203",
        "{message}"
    );
    err(&out, 3, "NOT_FOUND", 404);
    assert!(ok(&out, 4)["result"]["can"].is_array());
    // A key that is not valid: every tool answers the API's 401.
    let env = [
        ("MAILROOM_API_URL", s.base_url.as_str()),
        ("MAILROOM_API_KEY", "mr_inb_revoked_or_made_up"),
    ];
    let out = mcp_steps(
        &["stdio", bin, "mcp", "--stdio"],
        &env,
        json!([
            ["call", "list_messages", {"inbox_id": ann.inbox_id}],
        ]),
    )
    .await;
    err(&out, 0, "UNAUTHORIZED", 401);
    // Without a key it says what to set; --help teaches the host configuration.
    let out = tokio::process::Command::new(bin)
        .args(["mcp", "--stdio"])
        .env("MAILROOM_API_URL", &s.base_url)
        .env_remove("MAILROOM_API_KEY")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("MAILROOM_API_KEY"));
    let help = tokio::process::Command::new(bin)
        .args(["mcp", "--help"])
        .output()
        .await
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for needle in [
        "--stdio",
        "MAILROOM_API_URL",
        "MAILROOM_API_KEY",
        "mcpServers",
        "/mcp",
    ] {
        assert!(help.contains(needle), "{needle} in {help}");
    }
    s.stop().await;
}
