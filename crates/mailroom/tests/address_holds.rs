//! Issue #12: a deleted inbox's address is held for the account that had it (30 days by
//! default, `tenancy.deleted_address_hold_days`): another account gets 409 ADDRESS_HELD,
//! the same account may take it back, mail to it is refused as an unknown recipient. Over
//! real sockets, on SQLite and PostgreSQL. (The end of a hold is shown by the store test
//! `holds::a_hold_binds_other_accounts_until_it_ends`, which writes the times.)

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use mailroom_testkit::{Backend, TestServer, on_both_backends};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

on_both_backends!(a_deleted_address_is_held_for_its_account);

async fn create(s: &TestServer, key: Option<&str>, username: &str) -> (u16, Value) {
    let (st, body, _) = s
        .call(
            "POST",
            "/v1/inboxes",
            key,
            Some(json!({ "username": username })),
        )
        .await;
    (st, body)
}

/// The reply to `RCPT TO:<to>` at the MX.
async fn rcpt_reply(s: &TestServer, to: &str) -> String {
    let addr = s.server.as_ref().unwrap().smtp_addr;
    let mut r = BufReader::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    let mut say = async |line: &str| {
        if !line.is_empty() {
            r.get_mut()
                .write_all(format!("{line}\r\n").as_bytes())
                .await
                .unwrap();
        }
        loop {
            let mut l = String::new();
            r.read_line(&mut l).await.unwrap();
            if l.as_bytes().get(3) != Some(&b'-') {
                return l;
            }
        }
    };
    assert!(say("").await.starts_with("220"));
    assert!(say("EHLO holds.test").await.starts_with("250"));
    assert!(say("MAIL FROM:<a@example.com>").await.starts_with("250"));
    let reply = say(&format!("RCPT TO:<{to}>")).await;
    let _ = say("QUIT").await;
    reply
}

async fn a_deleted_address_is_held_for_its_account(s: TestServer) {
    let a = s.new_account("holder").await;
    let b = s.new_account("squatter").await;
    let (st, inbox) = create(&s, Some(&a.account_key), "billing").await;
    assert_eq!(st, 201, "{inbox}");
    let id = inbox["result"]["id"].as_str().unwrap().to_owned();
    let (st, _, _) = s
        .call(
            "DELETE",
            &format!("/v1/inboxes/{id}"),
            Some(&a.account_key),
            None,
        )
        .await;
    assert_eq!(st, 200);

    // Mail to it is refused as an unknown recipient, not delivered to anyone.
    let reply = rcpt_reply(&s, "billing@mailroom.test").await;
    assert!(reply.starts_with("550 5.1.1"), "{reply}");

    // Another account, or a new one, cannot take it: a clear 409, and nothing created.
    for key in [Some(b.account_key.as_str()), None] {
        let (st, e) = create(&s, key, "Billing").await;
        assert_eq!(
            (st, e["error"].as_str()),
            (409, Some("ADDRESS_HELD")),
            "{e}"
        );
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .contains("billing@mailroom.test")
        );
    }
    let (_, list, _) = s
        .call("GET", "/v1/inboxes", Some(&b.account_key), None)
        .await;
    assert_eq!(list["result"]["total"], 1, "{list}");
    let reply = rcpt_reply(&s, "billing@mailroom.test").await;
    assert!(reply.starts_with("550 5.1.1"), "{reply}");

    // The account that had it takes it back, and its mail arrives there.
    let (st, again) = create(&s, Some(&a.account_key), "billing").await;
    assert_eq!(st, 201, "{again}");
    let again_id = again["result"]["id"].as_str().unwrap().to_owned();
    s.deliver_smtp(
        "billing@mailroom.test",
        "From: customer@example.com\r\nSubject: invoice\r\n\r\nhello\r\n",
    )
    .await;
    let got = s
        .get_json(&a.account_key, &format!("/v1/inboxes/{again_id}/messages"))
        .await;
    assert_eq!(got["result"]["messages"][0]["subject"], "invoice", "{got}");
    // Taken back, it is an ordinary address again: deleted once more, held once more.
    let (st, _, _) = s
        .call(
            "DELETE",
            &format!("/v1/inboxes/{again_id}"),
            Some(&a.account_key),
            None,
        )
        .await;
    assert_eq!(st, 200);
    let (st, e) = create(&s, Some(&b.account_key), "billing").await;
    assert_eq!(st, 409, "{e}");
    s.stop().await;
}

/// With `tenancy.deleted_address_hold_days = 0` an address is free as soon as its inbox is
/// deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_hold_a_deleted_address_is_free_at_once() {
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.deleted_address_hold = std::time::Duration::ZERO;
    })
    .await
    .unwrap();
    let a = s.new_account("first-owner").await;
    let b = s.new_account("next-owner").await;
    let (st, _, _) = s
        .call(
            "DELETE",
            &format!("/v1/inboxes/{}", a.inbox_id),
            Some(&a.account_key),
            None,
        )
        .await;
    assert_eq!(st, 200);
    let (st, body) = create(&s, Some(&b.account_key), "first-owner").await;
    assert_eq!(st, 201, "{body}");
    s.stop().await;
}
