//! Bodies built by the API have CRLF line ends only (issue #12): a bare CR or LF in the
//! `text` or `html` of a send, a reply or a forward becomes CRLF in the message stored (the
//! Sent copy, which the outbound queue sends as it is, and the hosted recipient's copy),
//! and the text survives. On SQLite and PostgreSQL.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use mailroom_core::Tier;
use mailroom_testkit::{TestAccount, TestServer, on_both_backends};
use serde_json::{Value, json};

on_both_backends!(bare_line_ends_become_crlf);

/// Where `raw` has a CR not followed by LF, or an LF not preceded by CR.
fn bare_line_end(raw: &[u8]) -> Option<usize> {
    raw.iter().enumerate().position(|(i, &b)| match b {
        b'\r' => raw.get(i + 1) != Some(&b'\n'),
        b'\n' => i == 0 || raw[i - 1] != b'\r',
        _ => false,
    })
}

async fn post(s: &TestServer, key: &str, path: &str, body: Value) -> Value {
    let (status, answer, _) = s.call("POST", path, Some(key), Some(body)).await;
    assert_eq!(status, 201, "{path}: {answer}");
    answer["result"].clone()
}

/// The newest message of `acc`'s `mailbox` with `subject`: its parsed view and raw bytes.
async fn newest(
    s: &TestServer,
    acc: &TestAccount,
    mailbox: &str,
    subject: &str,
) -> (Value, Vec<u8>) {
    let list = s
        .get_json(
            &acc.inbox_key,
            &format!("/v1/inboxes/{}/messages?mailbox={mailbox}", acc.inbox_id),
        )
        .await;
    let id = list["result"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["subject"] == subject)
        .unwrap_or_else(|| panic!("{subject:?} in {mailbox}: {list}"))["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/inboxes/{}/messages/{id}", acc.inbox_id);
    let view = s.get_json(&acc.inbox_key, &path).await;
    let raw = s
        .http
        .get(s.url(&format!("{path}/raw")))
        .bearer_auth(&acc.inbox_key)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    (view["result"].clone(), raw)
}

fn assert_crlf_only(what: &str, raw: &[u8]) {
    if let Some(at) = bare_line_end(raw) {
        let from = at.saturating_sub(40);
        panic!(
            "{what}: bare line end at byte {at}: {:?}",
            String::from_utf8_lossy(&raw[from..(at + 40).min(raw.len())])
        );
    }
}

/// The lines of a text, whatever its line ends.
fn lines(text: &Value) -> Vec<String> {
    text.as_str()
        .unwrap_or_else(|| panic!("a text: {text}"))
        .lines()
        .map(|l| l.trim_end_matches('\r').to_owned())
        .collect()
}

async fn bare_line_ends_become_crlf(s: TestServer) {
    let a = s.new_account("lineends").await;
    let b = s.new_account("lineendsb").await;
    s.set_tier(&a.account_id, Tier::Developer).await;
    s.set_tier(&b.account_id, Tier::Developer).await;
    post(
        &s,
        &a.inbox_key,
        &format!("/v1/inboxes/{}/send", a.inbox_id),
        json!({
            "to": b.email,
            "subject": "line ends",
            "text": "a\rb\nc",
            "html": "<p>h1</p>\r<p>h2</p>\n<p>h3</p>",
        }),
    )
    .await;
    let (sent, sent_raw) = newest(&s, &a, "Sent", "line ends").await;
    assert_crlf_only("the Sent copy (what the queue sends)", &sent_raw);
    let (got, got_raw) = newest(&s, &b, "INBOX", "line ends").await;
    assert_crlf_only("the recipient's copy", &got_raw);
    assert_eq!(sent_raw, got_raw, "one message, byte for byte");
    assert_eq!(lines(&got["text"]), ["a", "b", "c"], "{got}");
    let html = got["html"].as_str().unwrap();
    assert!(
        html.contains("<p>h1</p>\r\n<p>h2</p>\r\n<p>h3</p>"),
        "{html:?}"
    );
    assert_eq!(lines(&sent["text"]), ["a", "b", "c"]);
    // A reply and a forward, built by the API around the caller's text.
    let mid = got["id"].as_str().unwrap();
    post(
        &s,
        &b.inbox_key,
        &format!("/v1/inboxes/{}/messages/{mid}/reply", b.inbox_id),
        json!({"text": "x\ry\nz"}),
    )
    .await;
    let (reply, raw) = newest(&s, &a, "INBOX", "Re: line ends").await;
    assert_crlf_only("the reply", &raw);
    assert_eq!(lines(&reply["text"]), ["x", "y", "z"], "{reply}");
    post(
        &s,
        &b.inbox_key,
        &format!("/v1/inboxes/{}/messages/{mid}/forward", b.inbox_id),
        json!({"to": [a.email], "text": "f\rg\n"}),
    )
    .await;
    let (fwd, raw) = newest(&s, &a, "INBOX", "Fwd: line ends").await;
    assert_crlf_only("the forward", &raw);
    assert_eq!(lines(&fwd["text"]), ["f", "g"], "{fwd}");
    s.stop().await;
}
