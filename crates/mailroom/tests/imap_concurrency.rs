//! Issue #13: IMAP answers stay right while many sessions change the same mailboxes. Twenty
//! sessions over five inboxes run the mix of `mailroom_testkit::imap_mix` at once; each
//! session's client keeps a model of what it was told and checks every untagged answer
//! against it (the rules are listed there). Zero violations, on SQLite and PostgreSQL.

use std::time::Duration;

use mailroom_testkit::imap_mix::{Limit, run_session};
use mailroom_testkit::{TestServer, on_both_backends};

on_both_backends!(concurrent_sessions_are_told_a_consistent_story);

const INBOXES: usize = 5;
const SESSIONS_PER_INBOX: usize = 4;
const STEPS_PER_SESSION: usize = 60;

async fn concurrent_sessions_are_told_a_consistent_story(s: TestServer) {
    let addr = s.server.as_ref().expect("running").imap_addr;
    let mut inboxes = Vec::new();
    for i in 0..INBOXES {
        let a = s.new_account(&format!("concurrent{i}")).await;
        for j in 0..3 {
            s.deliver_smtp(
                &a.email,
                &format!(
                    "From: x@example.net\r\nTo: {}\r\nSubject: seed {j}\r\n\r\nhello\r\n",
                    a.email
                ),
            )
            .await;
        }
        inboxes.push(a);
    }
    let mut tasks = Vec::new();
    for (i, a) in inboxes.iter().enumerate() {
        for j in 0..SESSIONS_PER_INBOX {
            let seed = 0x9E37_79B9_7F4A_7C15 ^ ((i * 31 + j) as u64 + 1);
            let (user, key) = (a.email.clone(), a.inbox_key.clone());
            tasks.push(tokio::spawn(async move {
                run_session(addr, &user, &key, seed, Limit::Steps(STEPS_PER_SESSION)).await
            }));
        }
    }
    let mut problems = Vec::new();
    let mut others = 0;
    for t in tasks {
        let report = tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .expect("a session finishes in time")
            .expect("a session does not panic");
        problems.extend(report.problems);
        others += report.others;
    }
    let sessions = INBOXES * SESSIONS_PER_INBOX;
    assert!(
        others >= sessions,
        "the sessions were told of only {others} changes by others: not a concurrent run"
    );
    assert!(
        problems.is_empty(),
        "{} problems over {sessions} sessions, first ones:\n{}",
        problems.len(),
        problems
            .iter()
            .take(25)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    s.stop().await;
}
