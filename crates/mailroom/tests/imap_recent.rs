//! Issue #13: `\Recent` for IMAP4rev1 sessions (RFC 3501 §2.3.2): a message is recent in
//! exactly one session, the first to be told of it; SELECT, EXAMINE and STATUS count them,
//! FETCH FLAGS shows them, SEARCH RECENT/NEW/OLD find them, a copy is recent in its target,
//! and an IMAP4rev2 session hears nothing of it. With Python's imaplib (and raw IMAP4rev2),
//! on SQLite and PostgreSQL.

use std::process::Command;

use mailroom_testkit::{TestServer, on_both_backends};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

on_both_backends!(
    recent_goes_to_the_first_session_told,
    imap4rev2_sessions_hear_nothing_of_recent,
);

async fn recent_goes_to_the_first_session_told(s: TestServer) {
    let a = s.new_account("recent").await;
    let running = s.server.as_ref().expect("running");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/clients/imap_recent.py"
    );
    let (imap, smtp) = (running.imap_addr.port(), running.smtp_addr.port());
    let (email, key) = (a.email.clone(), a.inbox_key.clone());
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args([script, &imap.to_string(), &smtp.to_string(), &email, &key])
            .output()
            .expect("python3 runs (apt-get install python3)")
    })
    .await
    .expect("the client finishes");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let got: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let expect = json!({
        "a_select_recent": "2",
        "a_flags": ["1 (FLAGS (\\Recent))", "2 (FLAGS (\\Recent))"],
        "a_recent": ["1", "2"],
        "a_new": ["2"],
        "a_old": [],
        "b_select_recent": "0",
        "b_flags": ["1 (FLAGS (\\Seen))", "2 (FLAGS ())"],
        "b_old": ["1", "2"],
        "e_status_before_claim": "\"INBOX\" (MESSAGES 3 RECENT 1)",
        "a_noop_exists": "3",
        "a_noop_recent": "3",
        "a_flags_3": ["3 (FLAGS (\\Recent))"],
        "b_noop_exists": "3",
        "b_noop_recent": "0",
        "b_flags_3": ["3 (FLAGS ())"],
        "e_status_after_claim": "\"INBOX\" (RECENT 0)",
        "c_examine_recent": "1",
        "a_noop_recent_4": "4",
        "d_archive_recent": "1",
        "d_flags": ["1 (FLAGS (\\Seen \\Recent))"],
    });
    for (k, v) in expect.as_object().expect("an object") {
        assert_eq!(&got[k], v, "{k}: {got}");
    }
    s.stop().await;
}

async fn imap4rev2_sessions_hear_nothing_of_recent(s: TestServer) {
    let a = s.new_account("rev2").await;
    s.deliver_smtp(
        &a.email,
        &format!(
            "From: x@example.net\r\nTo: {}\r\nSubject: new\r\n\r\nhi\r\n",
            a.email
        ),
    )
    .await;
    let addr = s.server.as_ref().expect("running").imap_addr;
    let mut r = BufReader::new(TcpStream::connect(addr).await.expect("connect"));
    let mut said = String::new();
    for cmd in [
        format!("a LOGIN {} {}", a.email, a.inbox_key),
        "b ENABLE IMAP4rev2".to_owned(),
        "c SELECT INBOX".to_owned(),
        "d FETCH 1 (FLAGS)".to_owned(),
        "e STATUS INBOX (MESSAGES)".to_owned(),
    ] {
        r.get_mut()
            .write_all(format!("{cmd}\r\n").as_bytes())
            .await
            .expect("write");
        let tag = &cmd[..1];
        loop {
            let mut l = String::new();
            r.read_line(&mut l).await.expect("read");
            assert!(!l.is_empty(), "closed after {said}");
            said.push_str(&l);
            if l.starts_with(&format!("{tag} ")) {
                assert!(l.starts_with(&format!("{tag} OK")), "{said}");
                break;
            }
        }
    }
    assert!(!said.contains("RECENT"), "{said}");
    assert!(said.contains("* 1 FETCH (FLAGS ())"), "{said}");
    s.stop().await;
}
