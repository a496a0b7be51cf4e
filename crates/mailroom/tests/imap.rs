//! IMAP with clients nobody here wrote (Python's imaplib, mbsync) and raw sockets for the
//! protocol's edges, over the same store as the API.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use mailroom_testkit::{Backend, TestAccount, TestServer, on_both_backends};
use serde_json::Value;

on_both_backends!(imaplib_reads_what_the_api_shows);
on_both_backends!(imaplib_organises_and_the_api_agrees);

/// A message with a text part and a binary attachment.
const MULTIPART: &str = "From: Ann <ann@example.com>\r\nTo: reader@mailroom.test\r\nSubject: first\r\nMessage-ID: <first@example.com>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello from the first message.\r\n--b1\r\nContent-Type: application/octet-stream; name=\"data.bin\"\r\nContent-Disposition: attachment; filename=\"data.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\nAAECA/8=\r\n--b1--\r\n";

async fn deliver(s: &TestServer, to: &str, message: &str) {
    s.deliver_smtp(to, message).await;
}

fn imaplib(port: u16, a: &TestAccount, scenario: &str, extra: &[&str]) -> Value {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/clients/imap_session.py"
    );
    let out = Command::new("python3")
        .arg(script)
        .arg(port.to_string())
        .arg(&a.email)
        .arg(&a.inbox_key)
        .arg(scenario)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn api(s: &TestServer, a: &TestAccount, path: &str) -> Value {
    s.get_json(&a.inbox_key, path).await
}

async fn raw_of(s: &TestServer, a: &TestAccount, id: &str) -> Vec<u8> {
    s.http
        .get(s.url(&format!("/v1/inboxes/{}/messages/{id}/raw", a.inbox_id)))
        .bearer_auth(&a.inbox_key)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec()
}

fn b64(v: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap())
        .unwrap()
}

async fn imaplib_reads_what_the_api_shows(s: TestServer) {
    let a = s.new_account("reader").await;
    deliver(&s, &a.email, MULTIPART).await;
    deliver(
        &s,
        &a.email,
        "From: bob@example.org\r\nSubject: second\r\n\r\nplain body\r\n",
    )
    .await;
    let srv = s.server.as_ref().unwrap();
    let report = imaplib(srv.imap_addr.port(), &a, "read", &[]);
    let caps: Vec<&str> = report["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for cap in [
        "IMAP4REV1",
        "IDLE",
        "MOVE",
        "UIDPLUS",
        "CONDSTORE",
        "SPECIAL-USE",
        "LITERAL+",
    ] {
        assert!(caps.contains(&cap), "{cap}: {caps:?}");
    }
    let list = report["list"].to_string();
    assert!(list.contains("\\\\Sent) \\\"/\\\" \\\"Sent\\\""), "{list}");
    assert!(list.contains("\\\"INBOX\\\""), "{list}");
    assert_eq!(report["exists"], 2);
    // Byte-exact bodies: BODY[] is /raw of the API.
    let listed = api(&s, &a, &format!("/v1/inboxes/{}/messages", a.inbox_id)).await;
    let ids: Vec<String> = listed["result"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    let msgs = report["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 2, "{report}");
    for (m, id) in msgs.iter().zip(&ids) {
        let raw = raw_of(&s, &a, id).await;
        assert_eq!(b64(&m["literals"]["BODY[]"]), raw, "BODY[] of {id}");
        assert_eq!(
            b64(&m["literals"]["BODY[]<0>"]),
            raw[..10].to_vec(),
            "partial"
        );
        let meta = m["meta"].as_str().unwrap();
        assert!(
            meta.contains(&format!("RFC822.SIZE {}", raw.len())),
            "{meta}"
        );
    }
    let first = &msgs[0];
    let meta = first["meta"].as_str().unwrap();
    assert!(meta.contains("UID 1"), "{meta}");
    // The first session told of a new message has it as \Recent (IMAP4rev1).
    assert!(meta.contains("FLAGS (\\Recent)"), "{meta}");
    assert!(
        meta.contains("ENVELOPE (NIL \"first\" ((\"Ann\" NIL \"ann\" \"example.com\"))"),
        "{meta}"
    );
    assert!(meta.contains("\"<first@example.com>\")"), "{meta}");
    assert!(
        meta.contains(
            "BODYSTRUCTURE ((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"utf-8\") NIL NIL \"7BIT\" 29 1"
        ),
        "{meta}"
    );
    assert!(
        meta.contains("(\"APPLICATION\" \"OCTET-STREAM\" (\"NAME\" \"data.bin\") NIL NIL \"BASE64\" 8 NIL (\"ATTACHMENT\" (\"FILENAME\" \"data.bin\")) NIL NIL) \"MIXED\""),
        "{meta}"
    );
    assert_eq!(
        b64(&first["literals"]["BODY[1]"]),
        b"Hello from the first message."
    );
    assert_eq!(
        b64(&first["literals"]["BODY[HEADER.FIELDS (SUBJECT)]"]),
        b"Subject: first\r\n\r\n"
    );
    assert_eq!(
        b64(&first["literals"]["BINARY[1]"]),
        b"Hello from the first message."
    );
    assert_eq!(report["search_all"], "1 2");
    assert_eq!(report["search_subject"], "2");
    assert_eq!(report["uid_search_unseen"], "1 2");
    let status = report["status"].as_str().unwrap();
    assert!(
        status.contains("MESSAGES 2")
            && status.contains("UNSEEN 2")
            && status.contains("UIDNEXT 3"),
        "{status}"
    );
    // BODY[TEXT] (not PEEK) marked the first message read: \Seen in IMAP, read in the API.
    assert!(
        report["fetch_text_flags"]
            .as_str()
            .unwrap()
            .contains("\\Seen"),
        "{report}"
    );
    assert!(report["flags_after"].as_str().unwrap().contains("\\Seen"));
    let unread = api(
        &s,
        &a,
        &format!("/v1/inboxes/{}/messages?unread=true", a.inbox_id),
    )
    .await;
    assert_eq!(unread["result"]["total"], 1);
    assert_eq!(unread["result"]["messages"][0]["id"], ids[1]);
    // Over implicit TLS too.
    let again = imaplib(srv.imaps_addr.port(), &a, "read", &["--implicit-tls"]);
    assert_eq!(again["exists"], 2);
    s.stop().await;
}

async fn imaplib_organises_and_the_api_agrees(s: TestServer) {
    let a = s.new_account("organiser").await;
    deliver(&s, &a.email, MULTIPART).await;
    deliver(
        &s,
        &a.email,
        "From: bob@example.org\r\nSubject: second\r\n\r\nplain body\r\n",
    )
    .await;
    let srv = s.server.as_ref().unwrap();
    let report = imaplib(srv.imap_addr.port(), &a, "organise", &[]);
    assert!(
        report["flags_1"].as_str().unwrap().contains("\\Flagged"),
        "{report}"
    );
    assert_eq!(report["unseen"], "1 2");
    assert_eq!(report["flagged"], "1");
    assert_eq!(report["move"], "OK");
    assert_eq!(report["after_move_exists"], "1");
    assert_eq!(report["append"][0], "OK");
    assert!(
        report["append"][1]
            .as_str()
            .unwrap()
            .starts_with("[APPENDUID "),
        "{report}"
    );
    assert_eq!(report["expunge"], serde_json::json!(["1"]));
    let renamed = report["list_after_rename"].to_string();
    assert!(
        renamed.contains("Old/Sub") && renamed.contains("HasChildren"),
        "{renamed}"
    );
    assert_eq!(report["delete_trash"], "NO");
    let lsub = report["lsub"].to_string();
    assert!(!lsub.contains("Junk") && lsub.contains("Archive"), "{lsub}");
    assert!(
        report["status_work"]
            .as_str()
            .unwrap()
            .contains("MESSAGES 0"),
        "{report}"
    );
    assert!(
        report["status_drafts"]
            .as_str()
            .unwrap()
            .contains("MESSAGES 1 UNSEEN 0"),
        "{report}"
    );
    // The API sees the same: the first message moved to Archive (flagged, same id),
    // INBOX holds the second, the APPENDed draft is in Drafts.
    let archive = api(
        &s,
        &a,
        &format!("/v1/inboxes/{}/messages?mailbox=Archive", a.inbox_id),
    )
    .await;
    assert_eq!(archive["result"]["total"], 1);
    assert_eq!(archive["result"]["messages"][0]["subject"], "first");
    let inbox = api(&s, &a, &format!("/v1/inboxes/{}/messages", a.inbox_id)).await;
    assert_eq!(inbox["result"]["total"], 1);
    assert_eq!(inbox["result"]["messages"][0]["subject"], "second");
    let drafts = api(
        &s,
        &a,
        &format!("/v1/inboxes/{}/messages?mailbox=Drafts", a.inbox_id),
    )
    .await;
    assert_eq!(drafts["result"]["messages"][0]["subject"], "draft");
    assert_eq!(drafts["result"]["messages"][0]["read"], true);
    s.stop().await;
}

/// A raw IMAP connection for the protocol's edges.
struct Raw {
    c: BufReader<TcpStream>,
}

impl Raw {
    fn connect(port: u16) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut r = Raw {
            c: BufReader::new(stream),
        };
        let greeting = r.line();
        assert!(greeting.starts_with("* OK"), "{greeting}");
        r
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.c.read_line(&mut line).unwrap();
        line
    }

    fn send(&mut self, data: &[u8]) {
        self.c.get_mut().write_all(data).unwrap();
    }

    /// Sends a command and reads until its tagged answer; returns every line.
    fn cmd(&mut self, tag: &str, command: &str) -> Vec<String> {
        self.send(format!("{tag} {command}\r\n").as_bytes());
        self.until(tag)
    }

    fn until(&mut self, tag: &str) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let l = self.line();
            assert!(!l.is_empty(), "connection closed; got {lines:?}");
            let done = l.starts_with(&format!("{tag} "));
            lines.push(l);
            if done {
                return lines;
            }
        }
    }

    fn login(&mut self, a: &TestAccount) {
        let r = self.cmd("l", &format!("LOGIN {} {}", a.email, a.inbox_key));
        assert!(r.last().unwrap().starts_with("l OK"), "{r:?}");
    }
}

fn last(lines: &[String]) -> &str {
    lines.last().unwrap().as_str()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_answers() {
    let s = TestServer::start(Backend::Sqlite).await.unwrap();
    let a = s.new_account("hostile").await;
    deliver(&s, &a.email, "Subject: one\r\n\r\nbody\r\n").await;
    let port = s.server.as_ref().unwrap().imap_addr.port();
    let mut r = Raw::connect(port);
    // Wrong state, unknown commands, garbage.
    assert!(last(&r.cmd("a1", "SELECT INBOX")).starts_with("a1 BAD"));
    assert!(last(&r.cmd("a2", "FROBNICATE")).starts_with("a2 BAD"));
    assert!(last(&r.cmd("a3", "FETCH 1 (FLAGS)")).starts_with("a3 BAD"));
    // Wrong password.
    let wrong = r.cmd(
        "a4",
        &format!("LOGIN {} mr_inb_wrongwrongwrongwrongwrongwrongwr", a.email),
    );
    assert!(
        last(&wrong).starts_with("a4 NO [AUTHENTICATIONFAILED]"),
        "{wrong:?}"
    );
    r.login(&a);
    assert!(
        last(&r.cmd("a5", "FETCH 1 (FLAGS)")).starts_with("a5 BAD"),
        "no mailbox selected"
    );
    let sel = r.cmd("a6", "SELECT INBOX");
    assert!(sel.iter().any(|l| l == "* 1 EXISTS\r\n"), "{sel:?}");
    // Invalid sequence sets.
    assert!(last(&r.cmd("a7", "FETCH 5 (FLAGS)")).starts_with("a7 BAD"));
    assert!(last(&r.cmd("a8", "FETCH 0 (FLAGS)")).starts_with("a8 BAD"));
    assert!(last(&r.cmd("a9", "FETCH x:y (FLAGS)")).starts_with("a9 BAD"));
    // A huge synchronizing literal is refused before it is sent.
    let big = r.cmd("b1", "APPEND INBOX {999999999999}");
    assert!(last(&big).starts_with("b1 NO [TOOBIG]"), "{big:?}");
    // A line over the limit.
    let long = format!("b2 LOGIN {} x", "y".repeat(70_000));
    let l = r.cmd("b2", &long[3..]);
    assert!(last(&l).starts_with("b2 BAD"), "{l:?}");
    // Still alive and well.
    assert!(last(&r.cmd("b3", "NOOP")).starts_with("b3 OK"));
    // An unterminated literal followed by the client going away: no crash, next client fine.
    r.send(b"b4 APPEND INBOX {100}\r\n");
    assert!(r.line().starts_with("+"));
    r.send(b"only a few bytes");
    drop(r);
    let mut r = Raw::connect(port);
    r.login(&a);
    let st = r.cmd("c1", "STATUS INBOX (MESSAGES)");
    assert!(
        st[0].contains("MESSAGES 1"),
        "nothing half-appended: {st:?}"
    );
    // A flood of garbage ends the session with BYE.
    let mut flood = Vec::new();
    for i in 0..30 {
        flood.extend_from_slice(format!("f{i} GARBAGE\r\n").as_bytes());
    }
    r.send(&flood);
    let mut all = String::new();
    let _ = r.c.read_to_string(&mut all);
    assert!(all.contains("* BYE too many bad commands"), "{all}");
    s.stop().await;
    // Without --dev, plain-text logins need STARTTLS first.
    let s = TestServer::start_with(Backend::Sqlite, |c| c.dev = false)
        .await
        .unwrap();
    let port = s.server.as_ref().unwrap().imap_addr.port();
    let mut r = Raw::connect(port);
    let caps = r.cmd("a", "CAPABILITY");
    assert!(
        caps[0].contains("STARTTLS") && caps[0].contains("LOGINDISABLED"),
        "{caps:?}"
    );
    let l = r.cmd("b", "LOGIN someone@mailroom.test x");
    assert!(last(&l).starts_with("b NO [PRIVACYREQUIRED]"), "{l:?}");
    s.stop().await;
}

impl Raw {
    /// Reads lines until one contains `needle`, failing after `secs`.
    fn wait_for(&mut self, needle: &str, secs: u64) -> (String, Duration) {
        let start = std::time::Instant::now();
        self.c
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(secs)))
            .unwrap();
        let mut seen = Vec::new();
        loop {
            let mut line = String::new();
            match self.c.read_line(&mut line) {
                Ok(n) if n > 0 => {}
                other => panic!("no {needle:?} within {secs}s ({other:?}); saw {seen:?}"),
            }
            if line.contains(needle) {
                self.c
                    .get_ref()
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                return (line, start.elapsed());
            }
            seen.push(line);
        }
    }
}

on_both_backends!(sessions_see_each_others_changes_and_idle_hears_smtp);

async fn sessions_see_each_others_changes_and_idle_hears_smtp(s: TestServer) {
    let a = s.new_account("watcher").await;
    deliver(&s, &a.email, "Subject: one\r\n\r\nfirst\r\n").await;
    let port = s.server.as_ref().unwrap().imap_addr.port();
    let mut actor = Raw::connect(port);
    actor.login(&a);
    assert!(last(&actor.cmd("a1", "SELECT INBOX")).starts_with("a1 OK [READ-WRITE]"));
    let mut idler = Raw::connect(port);
    idler.login(&a);
    let sel = idler.cmd("b1", "SELECT INBOX");
    assert!(sel.iter().any(|l| l == "* 1 EXISTS\r\n"), "{sel:?}");
    idler.send(b"b2 IDLE\r\n");
    assert!(idler.line().starts_with("+ "));
    // Mail by SMTP reaches the IDLE session within a second of being stored.
    deliver(&s, &a.email, "Subject: two\r\n\r\nsecond\r\n").await;
    let stored = std::time::Instant::now();
    let (line, _) = idler.wait_for("EXISTS", 5);
    assert_eq!(line, "* 2 EXISTS\r\n");
    assert!(
        stored.elapsed() < Duration::from_secs(1),
        "{:?}",
        stored.elapsed()
    );
    // Flags set in another session: FETCH FLAGS.
    let r = actor.cmd("a2", "STORE 1 +FLAGS (\\Flagged)");
    assert!(last(&r).starts_with("a2 OK"), "{r:?}");
    let (line, took) = idler.wait_for("FETCH", 5);
    assert_eq!(line, "* 1 FETCH (UID 1 FLAGS (\\Flagged))\r\n");
    assert!(took < Duration::from_secs(1), "{took:?}");
    // Read through the API: \Seen in IMAP (one truth), within the poll interval.
    let listed = api(&s, &a, &format!("/v1/inboxes/{}/messages", a.inbox_id)).await;
    let newest = listed["result"]["messages"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let oldest = listed["result"]["messages"][1]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let patched = s
        .http
        .patch(s.url(&format!("/v1/inboxes/{}/messages/{newest}", a.inbox_id)))
        .bearer_auth(&a.inbox_key)
        .json(&serde_json::json!({"read": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    let (line, _) = idler.wait_for("FETCH", 5);
    assert_eq!(line, "* 2 FETCH (UID 2 FLAGS (\\Seen \\Recent))\r\n");
    // Deleted in the API (moved to Trash): EXPUNGE in the IDLE session.
    let deleted = s
        .http
        .delete(s.url(&format!("/v1/inboxes/{}/messages/{oldest}", a.inbox_id)))
        .bearer_auth(&a.inbox_key)
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success());
    let (line, _) = idler.wait_for("EXPUNGE", 5);
    assert_eq!(line, "* 1 EXPUNGE\r\n");
    idler.send(b"DONE\r\n");
    let done = idler.until("b2");
    assert!(last(&done).starts_with("b2 OK"), "{done:?}");
    // The other session hears of the removal at its next NOOP; a FETCH in between must not
    // report EXPUNGE (RFC 9051 §7.5.1) and still works on the old numbering.
    let f = actor.cmd("a3", "FETCH 1:* (UID)");
    assert!(!f.iter().any(|l| l.contains("EXPUNGE")), "{f:?}");
    assert!(f.iter().any(|l| l == "* 2 FETCH (UID 2)\r\n"), "{f:?}");
    let n = actor.cmd("a4", "NOOP");
    assert!(n.iter().any(|l| l == "* 1 EXPUNGE\r\n"), "{n:?}");
    // EXPUNGE by one session reaches the other; uids are never reused.
    assert!(last(&actor.cmd("a5", "STORE 1 +FLAGS.SILENT (\\Deleted)")).starts_with("a5 OK"));
    let e = actor.cmd("a6", "EXPUNGE");
    assert_eq!(e[0], "* 1 EXPUNGE\r\n", "{e:?}");
    let n = idler.cmd("b3", "NOOP");
    assert!(n.iter().any(|l| l == "* 1 EXPUNGE\r\n"), "{n:?}");
    deliver(&s, &a.email, "Subject: three\r\n\r\nthird\r\n").await;
    let f = idler.cmd("b4", "UID FETCH 1:* (UID)");
    assert!(f.iter().any(|l| l == "* 1 FETCH (UID 3)\r\n"), "{f:?}");
    // UID EXPUNGE removes only the named uids.
    actor.cmd("a7", "NOOP");
    let st = actor.cmd("a8", "UID STORE 3 +FLAGS (\\Deleted)");
    assert!(last(&st).starts_with("a8 OK"), "{st:?}");
    let e = actor.cmd("a9", "UID EXPUNGE 1:2");
    assert!(
        !e.iter()
            .any(|l| l.contains("EXPUNGE\r\n") && l.starts_with("* ")),
        "{e:?}"
    );
    let e = actor.cmd("a10", "UID EXPUNGE 3");
    assert_eq!(e[0], "* 1 EXPUNGE\r\n", "{e:?}");
    s.stop().await;
}

on_both_backends!(condstore_reports_modseqs);

async fn condstore_reports_modseqs(s: TestServer) {
    let a = s.new_account("modseq").await;
    deliver(&s, &a.email, "Subject: one\r\n\r\nfirst\r\n").await;
    deliver(&s, &a.email, "Subject: two\r\n\r\nsecond\r\n").await;
    let port = s.server.as_ref().unwrap().imap_addr.port();
    let mut r = Raw::connect(port);
    r.login(&a);
    let sel = r.cmd("a1", "SELECT INBOX (CONDSTORE)");
    let hms: i64 = sel
        .iter()
        .find_map(|l| l.strip_prefix("* OK [HIGHESTMODSEQ "))
        .and_then(|l| l.split(']').next())
        .unwrap()
        .parse()
        .unwrap();
    let st = r.cmd("a2", "STORE 2 +FLAGS (\\Seen)");
    let modseq_line = st.iter().find(|l| l.starts_with("* 2 FETCH")).unwrap();
    assert!(modseq_line.contains("MODSEQ ("), "{st:?}");
    // Only the changed message is newer than the old HIGHESTMODSEQ.
    let f = r.cmd("a3", &format!("FETCH 1:* (FLAGS) (CHANGEDSINCE {hms})"));
    assert_eq!(f.len(), 2, "{f:?}");
    assert!(
        f[0].starts_with("* 2 FETCH (FLAGS (\\Seen \\Recent) MODSEQ ("),
        "{f:?}"
    );
    // UNCHANGEDSINCE older than the message's modseq: refused with MODIFIED.
    let st = r.cmd(
        "a4",
        &format!("STORE 2 (UNCHANGEDSINCE {hms}) +FLAGS (\\Flagged)"),
    );
    assert!(last(&st).starts_with("a4 OK [MODIFIED 2]"), "{st:?}");
    let search = r.cmd("a5", &format!("SEARCH MODSEQ {}", hms + 1));
    assert!(search[0].starts_with("* SEARCH 2 (MODSEQ "), "{search:?}");
    let status = r.cmd("a6", "STATUS INBOX (HIGHESTMODSEQ MESSAGES)");
    assert!(
        status[0].contains("HIGHESTMODSEQ") && status[0].contains("MESSAGES 2"),
        "{status:?}"
    );
    let status = r.cmd("a6b", "STATUS INBOX (SIZE DELETED)");
    assert!(
        status[0].contains("SIZE ") && status[0].contains("DELETED 0"),
        "{status:?}"
    );
    let young = r.cmd("a6c", "SEARCH YOUNGER 3600");
    assert_eq!(young[0], "* SEARCH 1 2\r\n", "{young:?}");
    let old = r.cmd("a6d", "SEARCH OLDER 3600");
    assert_eq!(old[0], "* SEARCH\r\n", "{old:?}");
    // ENABLE, ID, NAMESPACE, UNSELECT and EXAMINE's read-only state.
    let en = r.cmd("a7", "ENABLE CONDSTORE");
    assert_eq!(en[0], "* ENABLED CONDSTORE\r\n");
    assert!(r.cmd("a8", "ID NIL")[0].starts_with("* ID (\"name\" \"Mailroom\""));
    assert_eq!(
        r.cmd("a9", "NAMESPACE")[0],
        "* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n"
    );
    assert!(last(&r.cmd("b1", "UNSELECT")).starts_with("b1 OK"));
    assert!(last(&r.cmd("b2", "EXAMINE INBOX")).starts_with("b2 OK [READ-ONLY]"));
    assert!(last(&r.cmd("b3", "STORE 1 +FLAGS (\\Seen)")).starts_with("b3 NO [READ-ONLY]"));
    let f = r.cmd("b4", "FETCH 1 (BODY[])");
    assert!(
        !f.iter().any(|l| l.contains("\\Seen")),
        "EXAMINE never sets \\Seen: {f:?}"
    );
    // APPEND with a non-synchronizing literal (LITERAL+), then it is in the API.
    let msg = "Subject: appended\r\n\r\nhi\r\n";
    r.send(
        format!(
            "b5 APPEND INBOX (\\Flagged) {{{}+}}\r\n{msg}\r\n",
            msg.len()
        )
        .as_bytes(),
    );
    let ap = r.until("b5");
    assert!(last(&ap).starts_with("b5 OK [APPENDUID "), "{ap:?}");
    let listed = api(&s, &a, &format!("/v1/inboxes/{}/messages", a.inbox_id)).await;
    assert_eq!(listed["result"]["messages"][0]["subject"], "appended");
    // UID COPY answers COPYUID; UID MOVE answers COPYUID and EXPUNGE.
    assert!(last(&r.cmd("c1", "SELECT INBOX")).starts_with("c1 OK"));
    let copy = r.cmd("c2", "UID COPY 1 Archive");
    assert!(last(&copy).contains("[COPYUID "), "{copy:?}");
    let mv = r.cmd("c3", "UID MOVE 2 Junk");
    assert!(mv.iter().any(|l| l.starts_with("* OK [COPYUID ")), "{mv:?}");
    assert!(mv.iter().any(|l| l == "* 2 EXPUNGE\r\n"), "{mv:?}");
    // CLOSE expunges \Deleted messages silently.
    assert!(last(&r.cmd("c4", "STORE 1 +FLAGS.SILENT (\\Deleted)")).starts_with("c4 OK"));
    let close = r.cmd("c5", "CLOSE");
    assert_eq!(close.len(), 1, "no untagged EXPUNGE from CLOSE: {close:?}");
    let st = r.cmd("c6", "STATUS INBOX (MESSAGES)");
    assert!(st[0].contains("MESSAGES 1"), "{st:?}");
    // IMAP4rev2: SEARCH answers ESEARCH.
    assert_eq!(
        r.cmd("c7", "ENABLE IMAP4rev2")[0],
        "* ENABLED IMAP4rev2\r\n"
    );
    assert!(last(&r.cmd("c8", "SELECT Archive")).starts_with("c8 OK"));
    let es = r.cmd("c9", "UID SEARCH ALL");
    assert!(
        es[0].starts_with("* ESEARCH (TAG \"c9\") UID ALL "),
        "{es:?}"
    );
    s.stop().await;
}

/// A message with a binary attachment of every byte value, base64 in 76-column lines.
fn with_attachment(to: &str, subject: &str) -> String {
    let bytes: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 256) as u8).collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "From: Sender <sender@example.com>\r\nTo: {to}\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"zz\"\r\n\r\n--zz\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße aus der Anlage.\r\n--zz\r\nContent-Type: application/octet-stream; name=\"bytes.bin\"\r\nContent-Disposition: attachment; filename=\"bytes.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--zz--\r\n",
        lines.join("\r\n")
    )
}

/// Every file of a Maildir folder (`cur` and `new`), by file name.
fn maildir_files(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for sub in ["cur", "new"] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for e in entries {
            let e = e.unwrap();
            out.push((
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            ));
        }
    }
    out
}

on_both_backends!(mbsync_mirrors_the_mailboxes_byte_for_byte);

async fn mbsync_mirrors_the_mailboxes_byte_for_byte(s: TestServer) {
    let a = s.new_account("syncer").await;
    deliver(&s, &a.email, &with_attachment(&a.email, "attached one")).await;
    deliver(&s, &a.email, &with_attachment(&a.email, "attached two")).await;
    deliver(
        &s,
        &a.email,
        "Subject: plain\r\n\r\nSome text.\r\n.leading dot\r\n",
    )
    .await;
    // The second one goes to Archive through the API.
    let listed = api(&s, &a, &format!("/v1/inboxes/{}/messages", a.inbox_id)).await;
    let ids: Vec<String> = listed["result"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    let second = ids[1].clone();
    let moved = s
        .http
        .patch(s.url(&format!("/v1/inboxes/{}/messages/{second}", a.inbox_id)))
        .bearer_auth(&a.inbox_key)
        .json(&serde_json::json!({"mailbox": "Archive"}))
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status(), 200);
    let srv = s.server.as_ref().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mbsyncrc");
    std::fs::create_dir_all(dir.path().join("mail")).unwrap();
    std::fs::write(
        &config,
        format!(
            "IMAPAccount mr\nHost 127.0.0.1\nPort {port}\nUser {user}\nPass {pass}\nSSLType IMAPS\nCertificateFile {cert}\nSystemCertificates no\n\n\
             IMAPStore remote\nAccount mr\n\n\
             MaildirStore local\nPath {dir}/mail/\nInbox {dir}/mail/INBOX\nSubFolders Verbatim\n\n\
             Channel mr\nFar :remote:\nNear :local:\nPatterns *\nCreate Near\nSync All\nSyncState *\n",
            port = srv.imaps_addr.port(),
            user = a.email,
            pass = a.inbox_key,
            cert = srv.tls_cert_path.display(),
            dir = dir.path().display(),
        ),
    )
    .unwrap();
    let run = || {
        let out = Command::new("mbsync")
            .arg("-c")
            .arg(&config)
            .arg("-a")
            .output()
            .expect("cannot run mbsync: install it with `apt-get install isync`");
        assert!(
            out.status.success(),
            "mbsync failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    tokio::task::block_in_place(run);
    let mail = dir.path().join("mail");
    for folder in ["Sent", "Drafts", "Trash", "Junk", "Archive"] {
        assert!(
            mail.join(folder).join("cur").is_dir(),
            "{folder} was created"
        );
    }
    let inbox = maildir_files(&mail.join("INBOX"));
    let archive = maildir_files(&mail.join("Archive"));
    assert_eq!(
        inbox.len(),
        2,
        "{:?}",
        inbox.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    assert_eq!(archive.len(), 1);
    // Byte for byte what the API serves as /raw. Maildir keeps lines LF-terminated (mbsync
    // turns CRLF into LF on the way in) and mbsync adds its own `X-TUID` header line to every
    // message it copies; those two are undone, nothing else may differ.
    let lf = |b: &[u8]| -> Vec<u8> {
        let b: Vec<u8> = {
            let text = b;
            match text.windows(8).position(|w| w == b"\nX-TUID:") {
                Some(p) => {
                    let end = text[p + 1..]
                        .iter()
                        .position(|&c| c == b'\n')
                        .map_or(text.len(), |e| p + 1 + e);
                    [&text[..p], &text[end..]].concat()
                }
                None => text.to_vec(),
            }
        };
        let mut out = Vec::with_capacity(b.len());
        for (i, &c) in b.iter().enumerate() {
            if c == b'\r' && b.get(i + 1) == Some(&b'\n') {
                continue;
            }
            out.push(c);
        }
        out
    };
    let mut expected_inbox = vec![
        lf(&raw_of(&s, &a, &ids[0]).await),
        lf(&raw_of(&s, &a, &ids[2]).await),
    ];
    let mut got_inbox: Vec<Vec<u8>> = inbox.iter().map(|f| lf(&f.1)).collect();
    expected_inbox.sort();
    got_inbox.sort();
    assert!(got_inbox == expected_inbox, "INBOX differs from /raw");
    assert!(
        lf(&archive[0].1) == lf(&raw_of(&s, &a, &second).await),
        "Archive differs"
    );
    // Marking a message read in the Maildir and syncing again: read in the API.
    let folder = mail.join("INBOX");
    let (name, _) = &inbox[0];
    let from = if folder.join("new").join(name).exists() {
        folder.join("new").join(name)
    } else {
        folder.join("cur").join(name)
    };
    let base = name.split(":2,").next().unwrap();
    std::fs::rename(from, folder.join("cur").join(format!("{base}:2,S"))).unwrap();
    let before = api(
        &s,
        &a,
        &format!("/v1/inboxes/{}/messages?unread=true", a.inbox_id),
    )
    .await;
    assert_eq!(before["result"]["total"], 2, "mbsync reads with BODY.PEEK");
    tokio::task::block_in_place(run);
    let unread = api(
        &s,
        &a,
        &format!("/v1/inboxes/{}/messages?unread=true", a.inbox_id),
    )
    .await;
    assert_eq!(
        unread["result"]["total"], 1,
        "the message marked in the Maildir is read now"
    );
    let renamed_subject = if String::from_utf8_lossy(&inbox[0].1).contains("Subject: plain") {
        "plain"
    } else {
        "attached one"
    };
    assert_ne!(unread["result"]["messages"][0]["subject"], renamed_subject);
    // And curl's IMAP client fetches the attachment message exactly, CRLF and all.
    let out = Command::new("curl")
        .args([
            "-s",
            &format!("imap://127.0.0.1:{}/INBOX;UID=1", srv.imap_addr.port()),
            "-u",
            &format!("{}:{}", a.email, a.inbox_key),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout == raw_of(&s, &a, &ids[2]).await,
        "curl's UID=1 is /raw"
    );
    // curl fetches with BODY[] (not PEEK): the message is read now, as RFC 9051 says.
    let m = api(
        &s,
        &a,
        &format!("/v1/inboxes/{}/messages/{}", a.inbox_id, ids[2]),
    )
    .await;
    assert_eq!(m["result"]["read"], true, "{m}");
    s.stop().await;
}

async fn new_key(s: &TestServer, a: &TestAccount, scopes: &[&str]) -> String {
    let answer: Value = s
        .http
        .post(s.url("/v1/keys"))
        .bearer_auth(&a.account_key)
        .json(&serde_json::json!({"name": "mail client", "scopes": scopes}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["apiKey"].as_str().unwrap().to_owned()
}

on_both_backends!(logins_take_inbox_keys_and_imap_scoped_keys);

async fn logins_take_inbox_keys_and_imap_scoped_keys(s: TestServer) {
    let a = s.new_account("logger").await;
    let port = s.server.as_ref().unwrap().imap_addr.port();
    let plain = |user: &str, pass: &str| {
        base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"))
    };
    // AUTHENTICATE PLAIN with an initial response (SASL-IR) and with a continuation.
    let mut r = Raw::connect(port);
    let ok = r.cmd(
        "a1",
        &format!("AUTHENTICATE PLAIN {}", plain(&a.email, &a.inbox_key)),
    );
    assert!(last(&ok).starts_with("a1 OK [CAPABILITY "), "{ok:?}");
    let mut r = Raw::connect(port);
    r.send(b"a2 AUTHENTICATE PLAIN\r\n");
    assert!(r.line().starts_with("+"));
    r.send(format!("{}\r\n", plain(&a.email, &a.inbox_key)).as_bytes());
    assert!(last(&r.until("a2")).starts_with("a2 OK"));
    // An API key with the imap scope opens any inbox of its account; without it, no.
    let imap_key = new_key(&s, &a, &["imap"]).await;
    let pop_key = new_key(&s, &a, &["pop3"]).await;
    let mut r = Raw::connect(port);
    let ok = r.cmd("b1", &format!("LOGIN {} {imap_key}", a.email));
    assert!(last(&ok).starts_with("b1 OK"), "{ok:?}");
    let no = r.cmd("b2", &format!("LOGIN {} {pop_key}", a.email));
    assert!(last(&no).starts_with("b2 BAD"), "already logged in: {no:?}");
    let mut r = Raw::connect(port);
    let no = r.cmd("b3", &format!("LOGIN {} {pop_key}", a.email));
    assert!(
        last(&no).starts_with("b3 NO [AUTHORIZATIONFAILED]"),
        "{no:?}"
    );
    // A big literal before login is refused (unauthenticated clients cost little).
    let big = r.cmd("b4", "LOGIN {100000}");
    assert!(last(&big).starts_with("b4 NO [TOOBIG]"), "{big:?}");
    // A literal within the limit works (imaplib and others send passwords so).
    r.send(format!("b5 LOGIN {} {{{}}}\r\n", a.email, a.inbox_key.len()).as_bytes());
    assert!(r.line().starts_with("+"));
    r.send(format!("{}\r\n", a.inbox_key).as_bytes());
    assert!(last(&r.until("b5")).starts_with("b5 OK"));
    // Failed logins are throttled: after 5 for one user name, even the right key waits.
    let mut r = Raw::connect(port);
    for i in 0..5 {
        let no = r.cmd(
            &format!("c{i}"),
            &format!("LOGIN {} mr_inb_wrong{i}", a.email),
        );
        assert!(last(&no).contains("NO [AUTHENTICATIONFAILED]"), "{no:?}");
    }
    let no = r.cmd("c9", &format!("LOGIN {} {}", a.email, a.inbox_key));
    assert!(last(&no).starts_with("c9 NO [UNAVAILABLE]"), "{no:?}");
    // A revoked key stops at once: the next login with it fails.
    let b = s.new_account("revoker").await;
    let created: Value = s
        .http
        .post(s.url("/v1/keys"))
        .bearer_auth(&b.account_key)
        .json(&serde_json::json!({"name": "to revoke", "scopes": ["imap"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (key, key_id) = (
        created["apiKey"].as_str().unwrap().to_owned(),
        created["id"].as_str().unwrap().to_owned(),
    );
    let mut r = Raw::connect(port);
    assert!(last(&r.cmd("d1", &format!("LOGIN {} {key}", b.email))).starts_with("d1 OK"));
    let resp = s
        .http
        .delete(s.url(&format!("/v1/keys/{key_id}")))
        .bearer_auth(&b.account_key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    let mut r = Raw::connect(port);
    let no = r.cmd("d2", &format!("LOGIN {} {key}", b.email));
    assert!(last(&no).contains("NO [AUTHENTICATIONFAILED]"), "{no:?}");
    s.stop().await;
}

/// Hostile and malformed commands, each answered with a clear BAD or NO; the session stays
/// usable after every one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_commands_table() {
    let s = TestServer::start(Backend::Sqlite).await.unwrap();
    let a = s.new_account("table").await;
    deliver(&s, &a.email, "Subject: one\r\n\r\nbody\r\n").await;
    let port = s.server.as_ref().unwrap().imap_addr.port();
    let mut r = Raw::connect(port);
    r.login(&a);
    assert!(last(&r.cmd("s", "SELECT INBOX")).starts_with("s OK"));
    let table: &[(&str, &str)] = &[
        ("FETCH", "BAD"),
        ("FETCH 1", "BAD"),
        ("FETCH 1 (FLAGS", "BAD"),
        ("FETCH 1 (NOSUCHITEM)", "BAD"),
        ("FETCH 1:2:3 (FLAGS)", "BAD"),
        ("FETCH 4294967296 (FLAGS)", "BAD"),
        ("FETCH -1 (FLAGS)", "BAD"),
        ("FETCH 1 BODY[999]", "OK"),
        ("FETCH 1 BODY[1.2.3.4.5]", "OK"),
        ("FETCH 1 BINARY[7]", "NO"),
        ("UID FETCH 99999 (FLAGS)", "OK"),
        ("STORE 1 +FLAGS", "BAD"),
        ("STORE 1 FROB (\\Seen)", "BAD"),
        ("STORE 9 +FLAGS (\\Seen)", "BAD"),
        ("SEARCH", "BAD"),
        ("SEARCH CHARSET KOI8-R SUBJECT x", "NO"),
        ("SEARCH NOSUCHKEY", "BAD"),
        ("SEARCH OR SEEN", "BAD"),
        ("SEARCH SINCE 32-Foo-2020", "BAD"),
        // imap-codec bounds nesting; a shallow one is fine.
        (
            "SEARCH (((((((((((((((((((((ALL)))))))))))))))))))))",
            "BAD",
        ),
        ("SEARCH ((ALL) (NOT DELETED))", "OK"),
        ("COPY 1 NoSuchMailbox", "NO"),
        ("MOVE 1", "BAD"),
        ("SELECT", "BAD"),
        ("SELECT NoSuchMailbox", "NO"),
        ("CREATE \"\"", "NO"),
        ("CREATE a//b", "NO"),
        ("CREATE INBOX", "NO"),
        ("DELETE INBOX", "NO"),
        ("DELETE NoSuch", "NO"),
        ("RENAME Sent Elsewhere", "NO"),
        ("RENAME NoSuch Other", "NO"),
        ("STATUS NoSuch (MESSAGES)", "NO"),
        ("STATUS INBOX (NOSUCH)", "BAD"),
        ("APPEND NoSuch {3+}\r\nabc", "NO"),
        ("APPEND INBOX {0+}\r\n", "NO"),
        ("LOGIN a b", "BAD"),
        ("AUTHENTICATE PLAIN", "BAD"),
        ("STARTTLS", "BAD"),
        ("ENABLE", "BAD"),
        ("IDLE extra", "BAD"),
        ("UID", "BAD"),
        ("UID FROB 1", "BAD"),
        ("\u{1}\u{2}\u{3}", "BAD"),
    ];
    for (i, (command, want)) in table.iter().enumerate() {
        let tag = format!("t{i}");
        let got = r.cmd(&tag, command);
        let answer = last(&got);
        assert!(
            answer.starts_with(&format!("{tag} {want}")),
            "{command:?}: want {want}, got {got:?}"
        );
        let alive = r.cmd("n", "NOOP");
        assert!(
            last(&alive).starts_with("n OK"),
            "after {command:?}: {alive:?}"
        );
    }
    s.stop().await;
}

on_both_backends!(reselect_sees_changes_made_meanwhile);

async fn reselect_sees_changes_made_meanwhile(s: TestServer) {
    let a = s.new_account("reselect").await;
    deliver(&s, &a.email, "Subject: one\r\n\r\nfirst\r\n").await;
    let port = s.server.as_ref().unwrap().imap_addr.port();
    let mut r = Raw::connect(port);
    r.login(&a);
    let first = r.cmd("a1", "SELECT INBOX");
    assert!(first.iter().any(|l| l == "* 1 EXISTS\r\n"), "{first:?}");
    let again = r.cmd("a2", "SELECT INBOX");
    assert_eq!(
        first.len(),
        again.len(),
        "the same answer: {first:?} {again:?}"
    );
    deliver(&s, &a.email, "Subject: two\r\n\r\nsecond\r\n").await;
    let after = r.cmd("a3", "SELECT INBOX");
    assert!(after.iter().any(|l| l == "* 2 EXISTS\r\n"), "{after:?}");
    assert!(
        after.iter().any(|l| l.starts_with("* OK [UIDNEXT 3]")),
        "{after:?}"
    );
    // Removed through the API (to Trash): the next SELECT counts one.
    let listed = api(&s, &a, &format!("/v1/inboxes/{}/messages", a.inbox_id)).await;
    let id = listed["result"]["messages"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deleted = s
        .http
        .delete(s.url(&format!("/v1/inboxes/{}/messages/{id}", a.inbox_id)))
        .bearer_auth(&a.inbox_key)
        .send()
        .await
        .unwrap();
    assert!(deleted.status().is_success());
    let after = r.cmd("a4", "EXAMINE INBOX");
    assert!(after.iter().any(|l| l == "* 1 EXISTS\r\n"), "{after:?}");
    assert!(last(&after).starts_with("a4 OK [READ-ONLY]"), "{after:?}");
    let trash = r.cmd("a5", "SELECT Trash");
    assert!(trash.iter().any(|l| l == "* 1 EXISTS\r\n"), "{trash:?}");
    // `1:*` in an empty mailbox names nothing; a number that does not exist is BAD.
    assert!(last(&r.cmd("a6", "SELECT Drafts")).starts_with("a6 OK"));
    let f = r.cmd("a7", "FETCH 1:* (FLAGS)");
    assert_eq!(f, vec!["a7 OK FETCH completed\r\n".to_owned()]);
    assert!(last(&r.cmd("a8", "FETCH 1 (FLAGS)")).starts_with("a8 BAD"));
    s.stop().await;
}

/// Random command lines built from IMAP words, literals and junk (a deterministic
/// generator, so a failure repeats): every line gets an answer, the server never closes the
/// connection without a BYE, and a fresh session works afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_command_lines_never_break_the_server() {
    let s = TestServer::start(Backend::Sqlite).await.unwrap();
    let a = s.new_account("randomised").await;
    deliver(&s, &a.email, &with_attachment(&a.email, "random")).await;
    let port = s.server.as_ref().unwrap().imap_addr.port();
    let words = [
        "FETCH",
        "UID",
        "STORE",
        "SEARCH",
        "SELECT",
        "EXAMINE",
        "LIST",
        "STATUS",
        "COPY",
        "MOVE",
        "EXPUNGE",
        "APPEND",
        "CREATE",
        "RENAME",
        "DELETE",
        "NOOP",
        "IDLE",
        "ENABLE",
        "INBOX",
        "Trash",
        "1",
        "*",
        "1:*",
        "2,4:7",
        "0",
        "4294967295",
        "(",
        ")",
        "[",
        "]",
        "BODY[]",
        "BODY.PEEK[1.2.MIME]",
        "BINARY[2]<0.5>",
        "BODYSTRUCTURE",
        "ENVELOPE",
        "FLAGS",
        "+FLAGS",
        "(\\Seen)",
        "\\Deleted",
        "\"quoted\"",
        "\"unterminated",
        "{3}",
        "{5+}",
        "NIL",
        "CHARSET",
        "UTF-8",
        "OR",
        "NOT",
        "HEADER",
        "SINCE",
        "1-Jan-2026",
        "MODSEQ",
        "CHANGEDSINCE",
        "%",
        "&AOk-",
        "\u{7f}",
        "~{2}",
    ];
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut r = Raw::connect(port);
    r.login(&a);
    assert!(last(&r.cmd("s", "SELECT INBOX")).starts_with("s OK"));
    for i in 0..300 {
        // A good command now and then, or 20 bad ones in a row end the session (tested in
        // bad_input_gets_clear_answers).
        if i % 10 == 0 {
            assert!(last(&r.cmd("k", "NOOP")).starts_with("k OK"));
        }
        let n = 1 + next() % 6;
        let mut line = String::new();
        for _ in 0..n {
            line.push(' ');
            line.push_str(words[(next() as usize) % words.len()]);
        }
        let tag = format!("r{i}");
        // Lines announcing a literal (whose bytes would have to follow) and IDLE (which
        // waits for DONE) have tests of their own.
        if line.contains('{') || line.contains("IDLE") {
            continue;
        }
        let got = r.cmd(&tag, line.trim_start());
        let answer = last(&got);
        assert!(
            answer.starts_with(&format!("{tag} OK"))
                || answer.starts_with(&format!("{tag} NO"))
                || answer.starts_with(&format!("{tag} BAD")),
            "{line:?}: {got:?}"
        );
        if got.iter().any(|l| l.starts_with("* BYE")) {
            r = Raw::connect(port);
            r.login(&a);
            assert!(last(&r.cmd("s", "SELECT INBOX")).starts_with("s OK"));
        }
    }
    let mut fresh = Raw::connect(port);
    fresh.login(&a);
    assert!(last(&fresh.cmd("z", "EXAMINE INBOX")).starts_with("z OK"));
    s.stop().await;
}
