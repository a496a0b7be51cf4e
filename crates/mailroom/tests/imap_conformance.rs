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

on_both_backends!(envelope_defaults_sender_and_reply_to_and_writes_addresses_right,);

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
