//! Inbound DMARC policy enforcement (issue #12): Python's smtplib delivers spoofed mail to
//! the MX listener, the test's own DNS server publishes the domains' SPF and DMARC records,
//! and the API and IMAP (imaplib) show where the mail went. `p=reject` is refused at the
//! end of DATA with `550 5.7.1`, `p=quarantine` lands in Junk, `p=none` and passing mail in
//! INBOX; a DNS server past the time budget never costs a message (fail-open); the operator
//! can lower enforcement. On SQLite and PostgreSQL.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::time::Duration;

use mailroom_services::dmarc::DmarcEnforcement;
use mailroom_testkit::{Backend, DnsBehaviour, TestAccount, TestServer, on_both_backends};
use serde_json::Value;

on_both_backends!(dmarc_policies_decide_where_failing_mail_goes);

/// Sends `message` from `mail_from` to `to` through the MX listener with smtplib; `OK`, or
/// the refusal as `CODE text`.
async fn smtplib_mx(s: &TestServer, mail_from: &str, to: &str, message: &str) -> String {
    let code = r#"
import smtplib, sys
port, frm, to, body = sys.argv[1:5]
try:
    with smtplib.SMTP("127.0.0.1", int(port), timeout=20) as s:
        s.ehlo("mail.sender.example")
        s.sendmail(frm, [to], body.encode())
    print("OK")
except smtplib.SMTPResponseException as e:
    print(e.smtp_code, e.smtp_error.decode())
except smtplib.SMTPRecipientsRefused as e:
    code, msg = list(e.recipients.values())[0]
    print(code, msg.decode())
"#;
    let port = s.server.as_ref().unwrap().smtp_addr.port().to_string();
    let out = tokio::process::Command::new("python3")
        .args(["-c", code, &port, mail_from, to, message])
        .output()
        .await
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The messages of `a`'s `mailbox`, newest first.
async fn listed(s: &TestServer, a: &TestAccount, mailbox: &str) -> Vec<Value> {
    let list = s
        .get_json(
            &a.inbox_key,
            &format!("/v1/inboxes/{}/messages?mailbox={mailbox}", a.inbox_id),
        )
        .await;
    list["result"]["messages"].as_array().unwrap().clone()
}

fn subjects(list: &[Value]) -> Vec<String> {
    list.iter()
        .map(|m| m["subject"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// The `authentication` of the message with `subject` in `mailbox`.
async fn authentication(s: &TestServer, a: &TestAccount, mailbox: &str, subject: &str) -> Value {
    let list = listed(s, a, mailbox).await;
    let m = list
        .iter()
        .find(|m| m["subject"] == subject)
        .unwrap_or_else(|| panic!("{subject:?} in {mailbox}: {list:?}"));
    let id = m["id"].as_str().unwrap();
    let view = s
        .get_json(
            &a.inbox_key,
            &format!("/v1/inboxes/{}/messages/{id}", a.inbox_id),
        )
        .await;
    view["result"]["authentication"].clone()
}

/// Subjects in INBOX and Junk as Python's imaplib sees them.
async fn imap_subjects(s: &TestServer, a: &TestAccount) -> String {
    let code = r#"
import imaplib, sys
port, user, pw = sys.argv[1:4]
c = imaplib.IMAP4("127.0.0.1", int(port), timeout=20)
c.login(user, pw)
for box in ("INBOX", "Junk"):
    typ, data = c.select(box, readonly=True)
    assert typ == "OK", (box, data)
    typ, data = c.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])") if int(data[0]) else ("OK", [])
    subjects = sorted(
        part[1].decode().split(":", 1)[1].strip()
        for part in data if isinstance(part, tuple)
    )
    print(box + ": " + ", ".join(subjects))
c.logout()
"#;
    let port = s.server.as_ref().unwrap().imap_addr.port().to_string();
    let out = tokio::process::Command::new("python3")
        .args(["-c", code, &port, &a.email, &a.inbox_key])
        .output()
        .await
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Publishes SPF (only 127.0.0.1 may send) and a DMARC policy for `domain`.
fn publish(s: &TestServer, domain: &str, policy: &str) {
    s.dns.txt(domain, "v=spf1 ip4:127.0.0.1 -all");
    s.dns.txt(
        &format!("_dmarc.{domain}"),
        &format!("v=DMARC1; p={policy}"),
    );
}

fn message(from: &str, to: &str, subject: &str) -> String {
    format!("From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\n\r\nYour code is 424242.\r\n")
}

async fn dmarc_policies_decide_where_failing_mail_goes(s: TestServer) {
    let a = s.new_account("dmarc").await;
    publish(&s, "bank.example", "reject");
    publish(&s, "shop.example", "quarantine");
    publish(&s, "blog.example", "none");
    let refusals = s.refusals("smtp", "dmarc_reject").await;
    // Authenticated mail from the p=reject domain (SPF passes, aligned) lands in INBOX.
    let r = smtplib_mx(
        &s,
        "alerts@bank.example",
        &a.email,
        &message("alerts@bank.example", &a.email, "genuine"),
    )
    .await;
    assert_eq!(r, "OK");
    // A spoof of it (the envelope sender is a domain with no SPF) is refused at DATA.
    let r = smtplib_mx(
        &s,
        "x@elsewhere.example",
        &a.email,
        &message("ceo@bank.example", &a.email, "spoofed reject"),
    )
    .await;
    assert!(r.starts_with("550 5.7.1"), "{r}");
    assert!(r.contains("DMARC") && r.contains("bank.example"), "{r}");
    assert!(s.refusals("smtp", "dmarc_reject").await > refusals);
    // Two From headers, the one mail clients show first: refused as well.
    let two = format!(
        "From: ceo@bank.example\r\n{}",
        message("alerts@bank.example", &a.email, "two from")
    );
    let r = smtplib_mx(&s, "alerts@bank.example", &a.email, &two).await;
    assert!(r.starts_with("550 5.7.1") && r.contains("From"), "{r}");
    // A spoof of the p=quarantine domain is stored, in Junk.
    let r = smtplib_mx(
        &s,
        "x@elsewhere.example",
        &a.email,
        &message("orders@shop.example", &a.email, "spoofed quarantine"),
    )
    .await;
    assert_eq!(r, "OK");
    // A spoof of the p=none domain is only marked.
    let r = smtplib_mx(
        &s,
        "x@elsewhere.example",
        &a.email,
        &message("news@blog.example", &a.email, "spoofed none"),
    )
    .await;
    assert_eq!(r, "OK");

    let mut inbox = subjects(&listed(&s, &a, "INBOX").await);
    inbox.sort();
    assert_eq!(inbox, ["genuine", "spoofed none"]);
    assert_eq!(
        subjects(&listed(&s, &a, "Junk").await),
        ["spoofed quarantine"]
    );
    let junk = authentication(&s, &a, "Junk", "spoofed quarantine").await;
    assert_eq!(junk["dmarc"], "fail", "{junk}");
    assert_eq!(junk["dmarc_policy"], "quarantine", "{junk}");
    assert_eq!(junk["dmarc_disposition"], "quarantine", "{junk}");
    let none = authentication(&s, &a, "INBOX", "spoofed none").await;
    assert_eq!(
        (
            &none["dmarc"],
            &none["dmarc_policy"],
            &none["dmarc_disposition"]
        ),
        (&"fail".into(), &"none".into(), &"none".into()),
        "{none}"
    );
    let good = authentication(&s, &a, "INBOX", "genuine").await;
    assert_eq!(good["dmarc"], "pass", "{good}");
    assert_eq!(good["dmarc_policy"], "reject", "{good}");
    // Nothing of the refused ones was stored anywhere.
    let all = subjects(&listed(&s, &a, "all").await);
    assert!(
        !all.iter().any(|x| x == "spoofed reject" || x == "two from"),
        "{all:?}"
    );
    // IMAP shows the same folders.
    assert_eq!(
        imap_subjects(&s, &a).await,
        "INBOX: genuine, spoofed none\nJunk: spoofed quarantine"
    );
    s.stop().await;
}

/// A DNS server past the time budget makes DMARC `temperror`: the message is accepted into
/// INBOX even though its domain publishes p=reject and it would fail. Once DNS answers
/// again, the same message is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_trouble_never_rejects() {
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.auth_budget.time = Duration::from_millis(500);
    })
    .await
    .unwrap();
    let a = s.new_account("failopen").await;
    publish(&s, "bank.example", "reject");
    let spoof = message("ceo@bank.example", &a.email, "while dns is down");
    s.dns.set_behaviour(DnsBehaviour {
        mute: true,
        ..DnsBehaviour::default()
    });
    let r = smtplib_mx(&s, "x@elsewhere.example", &a.email, &spoof).await;
    s.dns.set_behaviour(DnsBehaviour::default());
    assert_eq!(r, "OK");
    let auth = authentication(&s, &a, "INBOX", "while dns is down").await;
    assert_eq!(auth["dmarc"], "temperror", "{auth}");
    assert_eq!(auth["dmarc_disposition"], "none", "{auth}");
    let r = smtplib_mx(&s, "x@elsewhere.example", &a.email, &spoof).await;
    assert!(r.starts_with("550 5.7.1"), "with DNS back: {r}");
    s.stop().await;
}

/// `smtp.dmarc_enforcement`: `quarantine-only` files p=reject failures in Junk instead of
/// refusing them; `monitor` only records (the API still says `fail`, also for two From).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_can_lower_enforcement() {
    for (mode, mailbox, disposition) in [
        (DmarcEnforcement::QuarantineOnly, "Junk", "quarantine"),
        (DmarcEnforcement::Monitor, "INBOX", "none"),
    ] {
        let s = TestServer::start_with(Backend::Sqlite, |c| c.dmarc_enforcement = mode)
            .await
            .unwrap();
        let a = s.new_account("lenient").await;
        publish(&s, "bank.example", "reject");
        let r = smtplib_mx(
            &s,
            "x@elsewhere.example",
            &a.email,
            &message("ceo@bank.example", &a.email, "spoofed"),
        )
        .await;
        assert_eq!(r, "OK", "{mode:?}");
        let auth = authentication(&s, &a, mailbox, "spoofed").await;
        assert_eq!(auth["dmarc"], "fail", "{mode:?}: {auth}");
        assert_eq!(auth["dmarc_policy"], "reject", "{mode:?}: {auth}");
        assert_eq!(auth["dmarc_disposition"], disposition, "{mode:?}: {auth}");
        let two = format!(
            "From: ceo@bank.example\r\n{}",
            message("alerts@bank.example", &a.email, "two from")
        );
        assert_eq!(
            smtplib_mx(&s, "alerts@bank.example", &a.email, &two).await,
            "OK",
            "{mode:?}"
        );
        let auth = authentication(&s, &a, mailbox, "two from").await;
        assert_eq!(auth["dmarc"], "fail", "{mode:?}: {auth}");
        s.stop().await;
    }
}
