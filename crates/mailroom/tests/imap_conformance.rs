//! IMAP answers checked against the RFCs where Dovecot's conformance scripts found them
//! wrong (issue 13, "Script failures"): ENVELOPE (RFC 3501 §7.4.2), BINARY and BINARY.SIZE
//! (RFC 3516), SEARCH FROM/TO/CC/BCC (RFC 3501 §6.4.4) and LSUB with `%` (RFC 3501
//! §6.3.9). Messages go in with Python's imaplib (APPEND) or a raw socket where imaplib
//! cannot say it (`~{N}` literals), and the answers are read with imaplib or, where the
//! wire form is the point, a raw socket.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use mailroom_testkit::{TestAccount, TestServer, on_both_backends};
use serde_json::{Value, json};

on_both_backends!(
    envelope_defaults_sender_and_reply_to_and_writes_addresses_right,
    binary_decodes_quoted_printable_base64_and_empty_parts,
    search_address_keys_match_addresses_and_display_names,
    lsub_percent_lists_unsubscribed_parents_as_noselect,
);

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(v: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().unwrap())
        .unwrap()
}

fn imap_port(s: &TestServer) -> u16 {
    s.server.as_ref().unwrap().imap_addr.port()
}

/// Runs `steps` with imaplib (tests/clients/imap_steps.py); one answer per step.
async fn imaplib(s: &TestServer, a: &TestAccount, steps: Value) -> Vec<Value> {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/clients/imap_steps.py"
    );
    let (port, user, pass) = (imap_port(s), a.email.clone(), a.inbox_key.clone());
    let out = tokio::task::spawn_blocking(move || {
        let mut child = Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .arg(user)
            .arg(pass)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(steps.to_string().as_bytes()).unwrap();
        drop(stdin);
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    report.as_array().unwrap().clone()
}

/// An APPEND step for imaplib.
fn append(mailbox: &str, message: &str) -> Value {
    json!(["append", mailbox, null, null, {"b64": b64(message.as_bytes())}])
}

/// The text of an answer's data items (literals as their prefix), one per item.
fn texts(answer: &Value) -> Vec<String> {
    assert_eq!(answer["typ"], "OK", "{answer}");
    answer["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| match d {
            Value::String(s) => Some(s.clone()),
            Value::Array(a) => Some(a[0].as_str().unwrap().to_owned()),
            _ => None,
        })
        .collect()
}

/// A raw IMAP client that reads whole responses, literals included (`{N}` and `~{N}`).
struct Raw {
    c: BufReader<TcpStream>,
}

impl Raw {
    fn connect(port: u16, a: &TestAccount) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut r = Raw {
            c: BufReader::new(stream),
        };
        assert!(r.response().starts_with(b"* OK"));
        let login = r.cmd("l", &format!("LOGIN {} {}", a.email, a.inbox_key));
        assert!(login.last().unwrap().starts_with(b"l OK"), "{login:?}");
        r
    }

    /// One response: a line, and when it ends in a literal, the literal and the rest.
    fn response(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let start = out.len();
            self.c.read_until(b'\n', &mut out).unwrap();
            assert!(out.len() > start, "connection closed after {out:?}");
            let line = &out[start..];
            let Some(open) = line.iter().rposition(|&b| b == b'{') else {
                return out;
            };
            let Some(n) = std::str::from_utf8(&line[open + 1..])
                .ok()
                .and_then(|t| t.strip_suffix("}\r\n"))
                .and_then(|t| t.parse::<usize>().ok())
            else {
                return out;
            };
            let mut literal = vec![0; n];
            self.c.read_exact(&mut literal).unwrap();
            out.extend_from_slice(&literal);
        }
    }

    fn send(&mut self, data: &[u8]) {
        self.c.get_mut().write_all(data).unwrap();
    }

    /// Sends a command and reads the responses up to its tagged one.
    fn cmd(&mut self, tag: &str, command: &str) -> Vec<Vec<u8>> {
        self.send(format!("{tag} {command}\r\n").as_bytes());
        self.until(tag)
    }

    fn until(&mut self, tag: &str) -> Vec<Vec<u8>> {
        let mut all = Vec::new();
        loop {
            let r = self.response();
            let done = r.starts_with(format!("{tag} ").as_bytes());
            all.push(r);
            if done {
                return all;
            }
        }
    }

    /// APPEND with a binary literal (`~{N}`, RFC 3516 §4.4); returns the tagged answer.
    fn append_binary(&mut self, tag: &str, mailbox: &str, message: &[u8]) -> String {
        self.send(format!("{tag} APPEND {mailbox} ~{{{}}}\r\n", message.len()).as_bytes());
        let go = self.response();
        assert!(go.starts_with(b"+"), "{}", String::from_utf8_lossy(&go));
        self.send(message);
        self.send(b"\r\n");
        let done = self.until(tag);
        String::from_utf8_lossy(done.last().unwrap()).into_owned()
    }
}

/// Runs a raw-socket session on the blocking pool.
async fn raw<T: Send + 'static>(
    s: &TestServer,
    a: &TestAccount,
    f: impl FnOnce(&mut Raw) -> T + Send + 'static,
) -> T {
    let (port, a) = (imap_port(s), a.clone());
    tokio::task::spawn_blocking(move || f(&mut Raw::connect(port, &a)))
        .await
        .unwrap()
}

/// ENVELOPE over imaplib, compared whole: Sender and Reply-To are From's when absent or
/// empty (RFC 3501 §7.4.2); absent fields are NIL; groups are a start `(NIL NIL name NIL)`
/// and an end `(NIL NIL NIL NIL)`; a comment after a bare address is its name; a source
/// route is the adl; comments inside an address are not part of it; encoded words stay as
/// written (RFC 9051 §7.5.2) and quoted names lose their quotes.
async fn envelope_defaults_sender_and_reply_to_and_writes_addresses_right(s: TestServer) {
    let a = s.new_account("envelopes").await;
    let messages = [
        "Message-ID: <msg@id>\r\nIn-Reply-To: <reply@to.id>\r\nDate: Sat, 01 Feb 2007 01:02:03 +0200\r\nSubject: subject header\r\nFrom: From Real <fromuser@fromdomain.org>\r\nTo: To Real <touser@todomain.org>\r\nCc: Cc Real <ccuser@ccdomain.org>\r\nBcc: Bcc Real <bccuser@bccdomain.org>\r\nSender: Sender Real <senderuser@senderdomain.org>\r\nReply-To: ReplyTo Real <replytouser@replytodomain.org>\r\n\r\nbody\r\n",
        "From: user@domain\r\n\r\nno sender, no reply-to\r\n",
        "From: user@domain (Real Name)\r\nSender: \r\nReply-To:\r\nTo: group: g1@d1.org, g2@d2.org;, group2: g3@d3.org;\r\nCc: undisclosed-recipients:;\r\n\r\nempty sender and reply-to\r\n",
        "From: <@route:user@domain>\r\nTo: \"Doe, John\" <john@doe.example>, <odd (c)@ (c) example.net>\r\n\r\nroute\r\n",
        "From: =?utf-8?q?J=C3=B6rg?= <joerg@example.de>\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nReply-To: \"\" <list@example.de>\r\n\r\nencoded words\r\n",
        "Subject: no addresses at all\r\n\r\nbody\r\n",
    ];
    let mut steps: Vec<Value> = messages.iter().map(|m| append("INBOX", m)).collect();
    steps.push(json!(["select", "INBOX"]));
    steps.push(json!(["fetch", "1:*", "(ENVELOPE)"]));
    let answers = imaplib(&s, &a, json!(steps)).await;
    let got = texts(answers.last().unwrap());
    let from_real = "((\"From Real\" NIL \"fromuser\" \"fromdomain.org\"))";
    let user = "((NIL NIL \"user\" \"domain\"))";
    let real = "((\"Real Name\" NIL \"user\" \"domain\"))";
    let route = "((NIL \"@route\" \"user\" \"domain\"))";
    let joerg = "((\"=?utf-8?q?J=C3=B6rg?=\" NIL \"joerg\" \"example.de\"))";
    let want = [
        format!(
            "1 (ENVELOPE (\"Sat, 01 Feb 2007 01:02:03 +0200\" \"subject header\" {from_real} ((\"Sender Real\" NIL \"senderuser\" \"senderdomain.org\")) ((\"ReplyTo Real\" NIL \"replytouser\" \"replytodomain.org\")) ((\"To Real\" NIL \"touser\" \"todomain.org\")) ((\"Cc Real\" NIL \"ccuser\" \"ccdomain.org\")) ((\"Bcc Real\" NIL \"bccuser\" \"bccdomain.org\")) \"<reply@to.id>\" \"<msg@id>\"))"
        ),
        format!("2 (ENVELOPE (NIL NIL {user} {user} {user} NIL NIL NIL NIL NIL))"),
        format!(
            "3 (ENVELOPE (NIL NIL {real} {real} {real} ((NIL NIL \"group\" NIL)(NIL NIL \"g1\" \"d1.org\")(NIL NIL \"g2\" \"d2.org\")(NIL NIL NIL NIL)(NIL NIL \"group2\" NIL)(NIL NIL \"g3\" \"d3.org\")(NIL NIL NIL NIL)) ((NIL NIL \"undisclosed-recipients\" NIL)(NIL NIL NIL NIL)) NIL NIL NIL))"
        ),
        format!(
            "4 (ENVELOPE (NIL NIL {route} {route} {route} ((\"Doe, John\" NIL \"john\" \"doe.example\")(NIL NIL \"odd\" \"example.net\")) NIL NIL NIL NIL))"
        ),
        format!(
            "5 (ENVELOPE (NIL \"=?utf-8?q?Gr=C3=BC=C3=9Fe?=\" {joerg} {joerg} ((NIL NIL \"list\" \"example.de\")) NIL NIL NIL NIL NIL))"
        ),
        "6 (ENVELOPE (NIL \"no addresses at all\" NIL NIL NIL NIL NIL NIL NIL NIL))".to_owned(),
    ];
    assert_eq!(got.len(), want.len(), "{got:#?}");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w);
    }
    s.stop().await;
}

/// The literals of a FETCH answer from imaplib, by their label (`BINARY[1]<4>`), and the
/// numbers after `BINARY.SIZE[n]`.
type Labelled<T> = Vec<(String, T)>;

fn fetched(answer: &Value) -> (Labelled<Vec<u8>>, Labelled<usize>) {
    assert_eq!(answer["typ"], "OK", "{answer}");
    let mut literals = Vec::new();
    let mut text = String::new();
    for d in answer["data"].as_array().unwrap() {
        match d {
            Value::Array(a) => {
                let prefix = a[0].as_str().unwrap();
                text.push_str(prefix);
                let label = prefix.rsplit(' ').nth(1).unwrap().to_owned();
                literals.push((label, unb64(&a[1])));
            }
            Value::String(s) => text.push_str(s),
            _ => {}
        }
    }
    let sizes = text
        .split("BINARY.SIZE[")
        .skip(1)
        .map(|rest| {
            let (section, rest) = rest.split_once("] ").unwrap();
            let n: String = rest.chars().take_while(char::is_ascii_digit).collect();
            (section.to_owned(), n.parse().unwrap())
        })
        .collect();
    (literals, sizes)
}

/// Quoted-printable as encoders and transports write it: soft breaks (one with whitespace
/// before it, which is text), trailing whitespace a transport added, `=09`, lowercase and
/// uppercase hex, and a part that ends in a bare `=` (its CRLF belongs to the boundary).
const QP_PART: &str = "hello=\r\nworld  \t\r\ntab\t=09\r\nlow=c3=a9 up=C3=A9\r\nsoft =\r\nend=";
const QP_DECODED: &str = "helloworld\r\ntab\t\t\r\nlowé upé\r\nsoft end";

/// Every byte value in base64, broken into lines with whitespace around them.
fn base64_part() -> String {
    let all: Vec<u8> = (0..=255).collect();
    let encoded = b64(&all);
    let lines: Vec<String> = encoded
        .as_bytes()
        .chunks(60)
        .map(|c| format!(" {}\t", std::str::from_utf8(c).unwrap()))
        .collect();
    lines.join("\r\n")
}

/// BINARY[n], BINARY[n]<partial> and BINARY.SIZE[n] (RFC 3516 §4.2): the decoded content,
/// its length, for quoted-printable and base64 parts and for empty parts; `~{N}` where the
/// content holds NUL. Read with imaplib, and on the wire with a raw socket for a message
/// APPENDed with a binary literal (RFC 3516 §4.4) whose first part is empty.
async fn binary_decodes_quoted_printable_base64_and_empty_parts(s: TestServer) {
    let a = s.new_account("binaries").await;
    let message = format!(
        "From: a@example.org\r\nSubject: binary\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"bb\"\r\n\r\n--bb\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n{QP_PART}\r\n--bb\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--bb\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\r\n--bb--\r\n",
        base64_part()
    );
    let answers = imaplib(
        &s,
        &a,
        json!([
            append("INBOX", &message),
            ["select", "INBOX"],
            ["fetch", "1", "(BINARY.SIZE[1] BINARY.PEEK[1] BINARY.PEEK[1]<5.8> BINARY.SIZE[2] BINARY.PEEK[2] BINARY.SIZE[3] BINARY.PEEK[3])"],
        ]),
    )
    .await;
    let (literals, sizes) = fetched(&answers[2]);
    let all: Vec<u8> = (0..=255).collect();
    let want: Vec<(String, Vec<u8>)> = vec![
        ("BINARY[1]".into(), QP_DECODED.as_bytes().to_vec()),
        ("BINARY[1]<5>".into(), QP_DECODED.as_bytes()[5..13].to_vec()),
        ("BINARY[2]".into(), all.clone()),
        ("BINARY[3]".into(), Vec::new()),
    ];
    assert_eq!(literals, want);
    let want_sizes: Vec<(String, usize)> = vec![
        ("1".into(), QP_DECODED.len()),
        ("2".into(), 256),
        ("3".into(), 0),
    ];
    assert_eq!(sizes, want_sizes);

    // On the wire, after an APPEND with a binary literal: an empty part is an empty
    // literal (or ""), BINARY.SIZE 0; content with NUL is a literal8.
    let binary = b"Content-Type: multipart/mixed; boundary=xx\r\n\r\n--xx\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n\r\n--xx\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n\x00\x01binary\xff\r\n--xx--\r\n";
    let (appended, fetched) = raw(&s, &a, move |r| {
        let appended = r.append_binary("a1", "INBOX", binary);
        r.cmd("a2", "SELECT INBOX");
        let f = r.cmd(
            "a3",
            "FETCH 2 (BINARY.SIZE[1] BINARY.PEEK[1] BINARY.SIZE[2] BINARY.PEEK[2])",
        );
        (appended, f)
    })
    .await;
    assert!(appended.starts_with("a1 OK"), "{appended}");
    let wire = fetched.concat();
    let wire_text = String::from_utf8_lossy(&wire);
    assert!(
        wire_text.ends_with("a3 OK FETCH completed\r\n"),
        "{wire_text}"
    );
    assert!(wire_text.contains("BINARY.SIZE[1] 0 "), "{wire_text}");
    assert!(
        wire_text.contains("BINARY[1] {0}\r\n ")
            || wire_text.contains("BINARY[1] ~{0}\r\n ")
            || wire_text.contains("BINARY[1] \"\" "),
        "{wire_text}"
    );
    assert!(wire_text.contains("BINARY.SIZE[2] 9 "), "{wire_text}");
    let mut literal8 = b"BINARY[2] ~{9}\r\n\x00\x01binary\xff)\r\n".to_vec();
    literal8.splice(0..0, *b" ");
    assert!(
        wire.windows(literal8.len()).any(|w| w == literal8),
        "{wire_text}"
    );
    s.stop().await;
}

/// The message numbers of a SEARCH answer from imaplib.
fn hits(answer: &Value) -> Vec<u32> {
    let t = texts(answer);
    t[0].split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect()
}

/// SEARCH FROM/TO/CC/BCC find the address (local part, domain, any substring of them, in
/// any case) however the header writes it, and the display name, decoded when it is an
/// encoded word, and a group's name and members (RFC 3501 §6.4.4).
async fn search_address_keys_match_addresses_and_display_names(s: TestServer) {
    let a = s.new_account("searcher").await;
    let messages = [
        "From: ann.lee@example.org\r\nTo: bob@example.net\r\nCc: carol@example.com\r\nBcc: dave@example.edu\r\nSubject: bare\r\n\r\none\r\n",
        "From: Ann Lee <ann.lee@example.org>\r\nTo: \"Stone, Bob\" <bob@example.net>\r\nCc: =?utf-8?q?Carol_M=C3=BCller?= <carol@example.com>\r\nBcc: Dave <dave@example.edu>\r\nSubject: names\r\n\r\ntwo\r\n",
        "From: <ann.lee (work)@ (main) example.org>\r\nTo: bob@example.net (Bob S)\r\nSubject: comments\r\n\r\nthree\r\n",
        "From: Frank <frank@example.org>\r\nTo: team: bob@example.net, erin@example.net;\r\nSubject: group\r\n\r\nfour\r\n",
    ];
    let mut steps: Vec<Value> = messages.iter().map(|m| append("INBOX", m)).collect();
    steps.push(json!(["select", "INBOX"]));
    let searches: [(&str, &str, &[u32]); 18] = [
        ("FROM", "ann.lee@example.org", &[1, 2, 3]),
        ("FROM", "ANN.LEE@EXAMPLE", &[1, 2, 3]),
        ("FROM", "lee@exa", &[1, 2, 3]),
        ("FROM", "example.org", &[1, 2, 3, 4]),
        ("FROM", "ann lee", &[2]),
        ("FROM", "frank", &[4]),
        ("TO", "bob@example.net", &[1, 2, 3, 4]),
        ("TO", "stone, bob", &[2]),
        ("TO", "bob s", &[3]),
        ("TO", "team", &[4]),
        ("TO", "erin@example.net", &[4]),
        ("TO", "erin@example.com", &[]),
        ("CC", "carol@example.com", &[1, 2]),
        ("CC", "Carol M", &[2]),
        ("CC", "ROL@EX", &[1, 2]),
        ("BCC", "dave@example.edu", &[1, 2]),
        ("BCC", "DAVE", &[1, 2]),
        ("BCC", "nobody", &[]),
    ];
    for (key, value, _) in searches {
        steps.push(json!(["search", null, key, format!("\"{value}\"")]));
    }
    // A decoded non-ASCII display name, sent as a UTF-8 literal.
    steps.push(json!(["literal", {"b64": b64("müller".as_bytes())}]));
    steps.push(json!(["search", "UTF-8", "CC"]));
    let answers = imaplib(&s, &a, json!(steps)).await;
    let first = messages.len() + 1;
    for (i, (key, value, want)) in searches.iter().enumerate() {
        assert_eq!(&hits(&answers[first + i]), want, "SEARCH {key} {value:?}");
    }
    assert_eq!(hits(answers.last().unwrap()), vec![2], "SEARCH CC müller");
    s.stop().await;
}

/// LSUB with `%` (RFC 3501 §6.3.9): a parent that is not subscribed but has a subscribed
/// mailbox below where the `%` stops is listed with \Noselect; with `*` the subscribed
/// mailboxes themselves are listed; LIST is not changed by subscriptions.
async fn lsub_percent_lists_unsubscribed_parents_as_noselect(s: TestServer) {
    let a = s.new_account("subscriber").await;
    let answers = imaplib(
        &s,
        &a,
        json!([
            ["create", "box/test"],
            ["create", "box/test2/test"],
            ["create", "box/test3/test3"],
            // New mailboxes (and the parents CREATE makes) start subscribed.
            ["unsubscribe", "box"],
            ["unsubscribe", "box/test2"],
            ["unsubscribe", "box/test3"],
            ["lsub", "\"\"", "box/%"],
            ["lsub", "\"\"", "%"],
            ["lsub", "\"\"", "box/*"],
            ["list", "\"\"", "box/%"],
            ["unsubscribe", "box/test2/test"],
            ["lsub", "\"\"", "box/%"],
        ]),
    )
    .await;
    for (i, answer) in answers.iter().enumerate().take(6) {
        assert_eq!(answer["typ"], "OK", "step {i}: {answer}");
    }
    assert_eq!(
        texts(&answers[6]),
        vec![
            "(\\HasNoChildren) \"/\" \"box/test\"",
            "(\\Noselect \\HasChildren) \"/\" \"box/test2\"",
            "(\\Noselect \\HasChildren) \"/\" \"box/test3\"",
        ]
    );
    let top = texts(&answers[7]);
    assert!(
        top.contains(&"(\\Noselect \\HasChildren) \"/\" \"box\"".to_owned()),
        "{top:?}"
    );
    assert!(top.iter().any(|l| l.ends_with("\"INBOX\"")), "{top:?}");
    assert!(!top.iter().any(|l| l.contains("box/")), "{top:?}");
    assert_eq!(
        texts(&answers[8]),
        vec![
            "(\\HasNoChildren) \"/\" \"box/test\"",
            "(\\HasNoChildren) \"/\" \"box/test2/test\"",
            "(\\HasNoChildren) \"/\" \"box/test3/test3\"",
        ]
    );
    let listed = texts(&answers[9]);
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(!listed.iter().any(|l| l.contains("Noselect")), "{listed:?}");
    assert_eq!(
        texts(&answers[11]),
        vec![
            "(\\HasNoChildren) \"/\" \"box/test\"",
            "(\\Noselect \\HasChildren) \"/\" \"box/test3\"",
        ]
    );
    s.stop().await;
}
