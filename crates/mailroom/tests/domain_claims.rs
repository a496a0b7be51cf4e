//! Issue #12: a claimed but unverified domain does not block another account; the TXT proof
//! in DNS decides who gets it, and a verified domain cannot be claimed by another account.
//! Deleting a domain deletes its DKIM key (mail is no longer signed with it), its
//! credentials and its records. Over real HTTP, SMTP and the test DNS server, on SQLite
//! and PostgreSQL.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use mailroom_core::Tier;
use mailroom_testkit::{TestAccount, TestServer, on_both_backends};
use serde_json::{Value, json};

on_both_backends!(
    the_txt_proof_decides_who_gets_a_domain,
    deleting_a_domain_deletes_its_dkim_key,
);

async fn paid_account(s: &TestServer, name: &str) -> TestAccount {
    let a = s.new_account(name).await;
    s.set_tier(&a.account_id, Tier::Developer).await;
    a
}

async fn claim(s: &TestServer, a: &TestAccount, domain: &str) -> (u16, Value) {
    let (st, body, _) = s
        .call(
            "POST",
            "/v1/domains",
            Some(&a.account_key),
            Some(json!({ "domain": domain })),
        )
        .await;
    (st, body)
}

async fn verify(s: &TestServer, a: &TestAccount, domain: &str) -> (u16, Value) {
    let (st, body, _) = s
        .call(
            "POST",
            &format!("/v1/domains/{domain}/verify"),
            Some(&a.account_key),
            None,
        )
        .await;
    (st, body)
}

/// The record of `purpose` in a domain answer, unquoted as DNS stores it.
fn record(domain: &Value, purpose: &str) -> (String, String) {
    let r = domain["result"]["records"]
        .as_array()
        .unwrap_or_else(|| panic!("records in {domain}"))
        .iter()
        .find(|r| r["purpose"] == purpose)
        .unwrap_or_else(|| panic!("{purpose} in {domain}"));
    let value: String = r["value"]
        .as_str()
        .unwrap()
        .split('"')
        .filter(|p| !p.trim().is_empty())
        .collect();
    (r["name"].as_str().unwrap().to_owned(), value)
}

/// Publishes what mail needs (MX, SPF, DKIM) and, if `proof`, the claim's TXT proof.
fn publish(s: &TestServer, domain: &str, answer: &Value, proof: bool) {
    s.dns.mx(domain, 10, "mail.test");
    s.dns.txt(domain, "v=spf1 mx -all");
    let (name, value) = record(answer, "dkim");
    s.dns.txt(&name, &value);
    if proof {
        let (name, value) = record(answer, "verification");
        s.dns.txt(&name, &value);
    }
}

fn status_of(answer: &Value, purpose: &str) -> String {
    answer["result"]["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["purpose"] == purpose)
        .map(|r| r["status"].as_str().unwrap().to_owned())
        .unwrap_or_default()
}

async fn the_txt_proof_decides_who_gets_a_domain(s: TestServer) {
    let squatter = paid_account(&s, "squatter").await;
    let owner = paid_account(&s, "real-owner").await;
    let late = paid_account(&s, "latecomer").await;
    let domain = "contested.example";

    // The first claim does not block a second account.
    let (st, first) = claim(&s, &squatter, domain).await;
    assert_eq!(st, 201, "{first}");
    let (st, second) = claim(&s, &owner, domain).await;
    assert_eq!(st, 201, "an unverified claim blocks nobody: {second}");
    assert_eq!(second["result"]["status"], "pending");
    let (st, e) = claim(&s, &squatter, domain).await;
    assert_eq!(
        (st, e["error"].as_str()),
        (409, Some("DOMAIN_TAKEN")),
        "{e}"
    );
    // Each claim has a proof of its own.
    let (proof_name, squatter_proof) = record(&first, "verification");
    let (_, owner_proof) = record(&second, "verification");
    assert_eq!(proof_name, format!("_mailroom-verification.{domain}."));
    assert!(owner_proof.starts_with("mailroom-verification="));
    assert_ne!(squatter_proof, owner_proof);

    // The domain's DNS holds the owner's proof (and what mail needs, which is the same
    // for every claim): the squatter's check does not verify it.
    publish(&s, domain, &second, true);
    let (st, checked) = verify(&s, &squatter, domain).await;
    assert_eq!(st, 200, "{checked}");
    assert_eq!(checked["result"]["status"], "pending", "{checked}");
    assert_eq!(status_of(&checked, "verification"), "mismatch");
    assert_eq!(status_of(&checked, "dkim"), "verified");

    // The owner's does; the squatter's claim goes.
    let (st, won) = verify(&s, &owner, domain).await;
    assert_eq!(st, 200, "{won}");
    assert_eq!(won["result"]["status"], "verified", "{won}");
    assert_eq!(status_of(&won, "verification"), "verified");
    for (m, p) in [
        ("GET", format!("/v1/domains/{domain}")),
        ("POST", format!("/v1/domains/{domain}/verify")),
        ("GET", format!("/v1/domains/{domain}/zone-file")),
    ] {
        let (st, _, _) = s.call(m, &p, Some(&squatter.account_key), None).await;
        assert_eq!(st, 404, "{m} {p} for the losing claim");
    }
    let (_, listed, _) = s
        .call("GET", "/v1/domains", Some(&squatter.account_key), None)
        .await;
    assert!(
        !listed.to_string().contains(domain),
        "the losing claim is gone: {listed}"
    );

    // A verified domain cannot be claimed by another account.
    for a in [&squatter, &late] {
        let (st, e) = claim(&s, a, domain).await;
        assert_eq!(
            (st, e["error"].as_str()),
            (409, Some("DOMAIN_TAKEN")),
            "{e}"
        );
    }
    // The owner uses it: an inbox, and mail for it arrives there.
    let (st, inbox, _) = s
        .call(
            "POST",
            "/v1/inboxes",
            Some(&owner.account_key),
            Some(json!({"username": "hello", "domain": domain})),
        )
        .await;
    assert_eq!(st, 201, "{inbox}");
    let (st, e, _) = s
        .call(
            "POST",
            "/v1/inboxes",
            Some(&squatter.account_key),
            Some(json!({"username": "x", "domain": domain})),
        )
        .await;
    assert_eq!(st, 422, "{e}");
    s.deliver_smtp(
        &format!("hello@{domain}"),
        "From: someone@example.com\r\nSubject: for the owner\r\n\r\nhi\r\n",
    )
    .await;
    let id = inbox["result"]["id"].as_str().unwrap();
    let got = s
        .get_json(&owner.account_key, &format!("/v1/inboxes/{id}/messages"))
        .await;
    assert_eq!(got["result"]["messages"][0]["subject"], "for the owner");
    s.stop().await;
}

const MESSAGE: &[u8] =
    b"From: support@gone.example\r\nTo: x@example.com\r\nSubject: s\r\n\r\nhi\r\n";

async fn deleting_a_domain_deletes_its_dkim_key(s: TestServer) {
    let a = paid_account(&s, "leaving").await;
    let b = paid_account(&s, "arriving").await;
    let rcpt = s.new_account("reader").await;
    let services = s.server.as_ref().unwrap().services.clone();
    let domain = "gone.example";
    let (st, added) = claim(&s, &a, domain).await;
    assert_eq!(st, 201, "{added}");
    publish(&s, domain, &added, true);
    let (_, v) = verify(&s, &a, domain).await;
    assert_eq!(v["result"]["status"], "verified", "{v}");
    let (_, old_dkim) = record(&added, "dkim");

    // In use: an inbox that sends signed mail, and a domain SMTP credential.
    let (st, inbox, _) = s
        .call(
            "POST",
            "/v1/inboxes",
            Some(&a.account_key),
            Some(json!({"username": "support", "domain": domain})),
        )
        .await;
    assert_eq!(st, 201, "{inbox}");
    let inbox_id = inbox["result"]["id"].as_str().unwrap().to_owned();
    let (st, sent, _) = s
        .call(
            "POST",
            &format!("/v1/inboxes/{inbox_id}/send"),
            Some(&a.account_key),
            Some(json!({"to": rcpt.email, "subject": "signed", "text": "t"})),
        )
        .await;
    assert_eq!(st, 201, "{sent}");
    let list = s
        .get_json(
            &rcpt.inbox_key,
            &format!("/v1/inboxes/{}/messages", rcpt.inbox_id),
        )
        .await;
    let mid = list["result"]["messages"][0]["id"].as_str().unwrap();
    let (_, raw, _) = s
        .call(
            "GET",
            &format!("/v1/inboxes/{}/messages/{mid}/raw", rcpt.inbox_id),
            Some(&rcpt.inbox_key),
            None,
        )
        .await;
    let raw = raw.as_str().unwrap().to_owned();
    assert!(
        raw.starts_with("DKIM-Signature:") && raw.contains("d=gone.example"),
        "{raw}"
    );
    let (st, cred, _) = s
        .call(
            "POST",
            &format!("/api/domains/{domain}/credentials"),
            Some(&a.account_key),
            Some(json!({"username": "mailer"})),
        )
        .await;
    assert_eq!(st, 201, "{cred}");
    let password = cred["data"]["credential"]["password"]
        .as_str()
        .unwrap()
        .to_owned();

    // Delete the inbox (its address is held for the account) and then the domain.
    let (st, _, _) = s
        .call(
            "DELETE",
            &format!("/v1/inboxes/{inbox_id}"),
            Some(&a.account_key),
            None,
        )
        .await;
    assert_eq!(st, 200);
    let (st, e, _) = s
        .call(
            "DELETE",
            &format!("/v1/domains/{domain}"),
            Some(&a.account_key),
            None,
        )
        .await;
    assert_eq!(st, 204, "{e}");

    // Its records answer 404, its key is gone and signs nothing, its credential is dead.
    for p in [
        format!("/v1/domains/{domain}"),
        format!("/v1/domains/{domain}/zone-file"),
        format!("/api/domains/{domain}/credentials"),
    ] {
        let (st, _, _) = s.call("GET", &p, Some(&a.account_key), None).await;
        assert_eq!(st, 404, "GET {p}");
    }
    assert!(services.store().dkim_key(domain).await.unwrap().is_none());
    let signed = services.dkim_sign(domain, MESSAGE).await.unwrap();
    assert_eq!(signed, MESSAGE, "nothing is signed with the deleted key");
    let port = s.server.as_ref().unwrap().submission_addr.port();
    let body = "From: support@gone.example\r\nSubject: s\r\n\r\nhi\r\n";
    let r = mailroom_testkit::smtplib(
        port,
        "mailer@gone.example",
        &password,
        "support@gone.example",
        &rcpt.email,
        body,
    );
    assert!(r.starts_with("535"), "{r}");

    // Whoever proves the domain next gets a new key, and its addresses.
    let (st, again) = claim(&s, &b, domain).await;
    assert_eq!(st, 201, "{again}");
    let (dkim_name, new_dkim) = record(&again, "dkim");
    assert_ne!(new_dkim, old_dkim, "a new DKIM key");
    let (proof_name, proof) = record(&again, "verification");
    s.dns.txt(&dkim_name, &new_dkim);
    s.dns.txt(&proof_name, &proof);
    let (_, v) = verify(&s, &b, domain).await;
    assert_eq!(v["result"]["status"], "verified", "{v}");
    let (st, inbox, _) = s
        .call(
            "POST",
            "/v1/inboxes",
            Some(&b.account_key),
            Some(json!({"username": "support", "domain": domain})),
        )
        .await;
    assert_eq!(st, 201, "holds go with the domain: {inbox}");
    let signed = services.dkim_sign(domain, MESSAGE).await.unwrap();
    let signature = String::from_utf8_lossy(&signed).into_owned();
    assert!(signature.starts_with("DKIM-Signature:"), "{signature}");
    s.stop().await;
}
