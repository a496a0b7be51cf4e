//! Generated-input tests of the SMTP and POP3 sessions, over real sockets to a whole
//! server: tens of thousands of sessions, each a random mix of valid commands (so that
//! inputs reach every state: greeted, in a transaction, in DATA or BDAT, logged in), broken
//! commands, random bytes, overlong lines and odd line ends. The server must never panic,
//! must answer only in its protocol's grammar, must close every session when the client
//! goes, must keep its memory bounded, and must still serve another tenant afterwards.
//!
//! Deterministic: fixed seeds, so every run sends the same sessions.

use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mailroom_testkit::fuzz::{self, Exchange};
use mailroom_testkit::{Backend, TestServer};
use proptest::prelude::*;
use proptest::sample::select;

/// Sessions per protocol: with the IMAP reader's and the MIME parser's, over 100,000
/// generated inputs in all.
const SMTP_SESSIONS: usize = 25_000;
const POP3_SESSIONS: usize = 25_000;
const PARALLEL: usize = 8;
/// A session must be closed this soon after the client closes its half.
const CLOSE_WITHIN: Duration = Duration::from_secs(15);
/// The process's peak memory may grow by at most this much over a run.
const MEMORY_BUDGET: u64 = 256 * 1024 * 1024;

fn count_panics_once() {
    static ONCE: Once = Once::new();
    ONCE.call_once(fuzz::count_panics);
}

/// Line ends as clients really send them, and as they should not.
fn line_end() -> impl Strategy<Value = &'static [u8]> {
    prop_oneof![
        24 => Just(&b"\r\n"[..]),
        1 => Just(&b"\n"[..]),
        1 => Just(&b"\r"[..]),
        1 => Just(&b""[..]),
    ]
}

/// Noise any protocol must survive: random bytes, printable junk, an overlong line.
fn noise() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => proptest::collection::vec(any::<u8>(), 0..200),
        2 => "[ -~]{0,120}".prop_map(String::into_bytes),
        1 => (1000usize..40_000).prop_map(|n| vec![b'A'; n]),
    ]
}

fn smtp_piece(rcpt: String) -> impl Strategy<Value = Vec<u8>> {
    let fixed = select(vec![
        "EHLO fuzz.test",
        "HELO fuzz.test",
        "EHLO",
        "LHLO fuzz.test",
        "DATA",
        "RSET",
        "NOOP",
        "QUIT",
        "STARTTLS",
        "AUTH LOGIN",
        "AUTH PLAIN AGZvbwBiYXI=",
        "VRFY postmaster",
        "EXPN list",
        "HELP",
        "MAIL FROM:<>",
        "RCPT TO:<>",
        "BDAT 0 LAST",
    ])
    .prop_map(|s| s.as_bytes().to_vec());
    let mail = (
        "[a-z0-9.]{0,20}@[a-z0-9.-]{0,20}",
        select(vec![
            "",
            " SIZE=100",
            " SIZE=999999999999",
            " BODY=8BITMIME",
            " SMTPUTF8",
            " BODY=BINARYMIME",
            " RET=HDRS ENVID=x",
            " X=Y",
        ]),
    )
        .prop_map(|(a, p)| format!("MAIL FROM:<{a}>{p}").into_bytes());
    let to = rcpt.clone();
    let rcpt_ok = select(vec!["", " NOTIFY=NEVER", " ORCPT=rfc822;x@y", " BAD=1"])
        .prop_map(move |p| format!("RCPT TO:<{to}>{p}").into_bytes());
    let rcpt_any = "[ -~]{0,60}".prop_map(|a| format!("RCPT TO:<{a}>").into_bytes());
    let body = proptest::collection::vec(
        prop_oneof![
            "[ -~]{0,100}".prop_map(String::into_bytes),
            Just(b".".to_vec()),
            Just(b"..".to_vec()),
            Just(b"Subject: fuzz".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..100),
        ],
        0..20,
    )
    .prop_map(|lines| {
        let mut out = Vec::new();
        for l in lines {
            out.extend_from_slice(&l);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".");
        out
    });
    let bdat = (
        0usize..3000,
        proptest::collection::vec(any::<u8>(), 0..400),
        any::<bool>(),
    )
        .prop_map(|(n, bytes, last)| {
            let mut out = format!("BDAT {n}{}\r\n", if last { " LAST" } else { "" }).into_bytes();
            out.extend_from_slice(&bytes);
            out
        });
    prop_oneof![
        4 => fixed,
        3 => mail,
        3 => rcpt_ok,
        1 => rcpt_any,
        2 => body,
        1 => bdat,
        2 => noise(),
    ]
}

/// A random POP3 piece. `anything`: credentials that fail and QUIT too (a failed login
/// counts against the address and the user, and QUIT commits deletions).
fn pop3_piece(user: String, pass: String, anything: bool) -> impl Strategy<Value = Vec<u8>> {
    let mut commands = vec![
        "CAPA", "STAT", "LIST", "UIDL", "NOOP", "RSET", "STLS", "APOP a b", "AUTH", "USER", "*",
    ];
    let mut logins = vec![format!("USER {user}"), format!("PASS {pass}")];
    if anything {
        commands.extend(["QUIT", "AUTH PLAIN", "AUTH LOGIN", "AUTH XOAUTH2 x", "PASS"]);
        logins.push("PASS wrong".to_owned());
    }
    let fixed = select(commands).prop_map(|s| s.as_bytes().to_vec());
    let login = select(logins).prop_map(String::into_bytes);
    let numbered = (
        select(vec!["LIST", "UIDL", "RETR", "DELE", "TOP"]),
        prop_oneof![
            (0u64..6).prop_map(|n| n.to_string()),
            Just("-1".to_owned()),
            Just("99999999999999999999".to_owned()),
            Just("x".to_owned()),
        ],
        prop_oneof![Just(String::new()), (0u64..5).prop_map(|n| format!(" {n}"))],
    )
        .prop_map(|(c, n, m)| format!("{c} {n}{m}").into_bytes());
    let sasl = "[A-Za-z0-9+/=]{0,60}".prop_map(String::into_bytes);
    prop_oneof![
        3 => fixed,
        3 => login,
        3 => numbered,
        1 => sasl,
        2 => noise(),
    ]
}

/// A whole valid transaction (EHLO, MAIL, RCPT, then DATA or BDAT), so that sessions reach
/// the deepest states; mixed with random pieces and odd line ends it is rarely valid whole.
fn smtp_transaction(rcpt: String) -> impl Strategy<Value = Vec<Vec<u8>>> {
    let data = proptest::collection::vec(
        prop_oneof![
            4 => "[ -~]{0,100}".prop_map(String::into_bytes),
            1 => Just(b"..".to_vec()),
            1 => proptest::collection::vec(any::<u8>(), 0..100),
        ],
        0..12,
    )
    .prop_map(|lines| {
        let mut body = b"Subject: fuzz\r\n\r\n".to_vec();
        for l in lines {
            body.extend_from_slice(&l);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b".");
        vec![b"DATA".to_vec(), body]
    });
    let bdat = proptest::collection::vec(any::<u8>(), 0..400).prop_map(|bytes| {
        let mut out = format!("BDAT {} LAST\r\n", bytes.len() + 19).into_bytes();
        out.extend_from_slice(b"Subject: fuzz\r\n\r\n");
        out.extend_from_slice(&bytes);
        vec![out]
    });
    (
        select(vec!["EHLO fuzz.test", "HELO fuzz.test"]),
        "[a-z]{1,8}@[a-z]{1,8}\\.example",
        1usize..3,
        prop_oneof![3 => data, 1 => bdat],
    )
        .prop_map(move |(helo, from, rcpts, body)| {
            let mut pieces = vec![
                helo.as_bytes().to_vec(),
                format!("MAIL FROM:<{from}>").into_bytes(),
            ];
            for _ in 0..rcpts {
                pieces.push(format!("RCPT TO:<{rcpt}>").into_bytes());
            }
            pieces.extend(body);
            pieces
        })
}

fn smtp_session(rcpt: String) -> impl Strategy<Value = Vec<u8>> {
    let piece = smtp_piece(rcpt.clone()).prop_map(|p| vec![p]);
    session(proptest::collection::vec(
        prop_oneof![2 => smtp_transaction(rcpt), 3 => piece],
        1..6,
    ))
}

/// A session that logs in first (`anything` false), or any mix at all.
fn pop3_session(user: String, pass: String, anything: bool) -> impl Strategy<Value = Vec<u8>> {
    use base64::Engine;
    let plain = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"));
    let login = prop_oneof![
        Just(vec![
            format!("USER {user}").into_bytes(),
            format!("PASS {pass}").into_bytes()
        ]),
        Just(vec![format!("AUTH PLAIN {plain}").into_bytes()]),
        Just(vec![b"AUTH PLAIN".to_vec(), plain.clone().into_bytes()]),
    ];
    let pieces = proptest::collection::vec(pop3_piece(user, pass, anything), 0..10);
    // The login's own line ends are right: a broken one glues the password to the next
    // piece, and the failed logins that follow would lock the user out for the rest.
    let login = login.prop_map(|lines| {
        let mut out = Vec::new();
        for l in lines {
            out.extend_from_slice(&l);
            out.extend_from_slice(b"\r\n");
        }
        out
    });
    (login, session(pieces.prop_map(|p| vec![p]))).prop_map(move |(login, rest)| {
        if anything {
            rest
        } else {
            [login, rest].concat()
        }
    })
}

/// A session: its pieces, each followed by a line end.
fn session(pieces: impl Strategy<Value = Vec<Vec<Vec<u8>>>>) -> impl Strategy<Value = Vec<u8>> {
    let with_ends = pieces.prop_flat_map(|groups| {
        let pieces: Vec<Vec<u8>> = groups.into_iter().flatten().collect();
        let n = pieces.len();
        (Just(pieces), proptest::collection::vec(line_end(), n))
    });
    with_ends.prop_map(|(pieces, ends)| {
        let mut out = Vec::new();
        for (p, end) in pieces.iter().zip(ends) {
            out.extend_from_slice(p);
            out.extend_from_slice(end);
        }
        out
    })
}

fn generate(seed: u8, n: usize, strategy: impl Strategy<Value = Vec<u8>>) -> Vec<Vec<u8>> {
    let mut g = fuzz::generator(seed);
    (0..n).map(|_| fuzz::sample(&mut g, &strategy)).collect()
}

/// Fails with the input that broke a rule (its start: some inputs are long).
fn broke(rule: &str, e: &Exchange) -> ! {
    let show = |b: &[u8]| String::from_utf8_lossy(&b[..b.len().min(3000)]).into_owned();
    panic!(
        "{rule}\n--- sent ---\n{:?}\n--- received ---\n{:?}",
        show(&e.input),
        show(&e.output)
    )
}

/// The plain-text part of an answer: after the server agrees to start TLS, what follows
/// is the TLS handshake (or its alert), not the protocol.
fn before_tls<'a>(output: &'a [u8], ready: &[u8]) -> &'a [u8] {
    match output.windows(ready.len()).position(|w| w == ready) {
        Some(i) => &output[..i + ready.len()],
        None => output,
    }
}

fn check_smtp(e: &Exchange) {
    if !e.closed {
        broke("the session was not closed after the client closed", e);
    }
    let text = String::from_utf8_lossy(before_tls(&e.output, b"220 2.0.0 Ready to start TLS\r\n"));
    if !text.starts_with("220 ") {
        broke("no 220 greeting", e);
    }
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        let b = line.as_bytes();
        let code_ok = b.len() >= 4
            && (b'2'..=b'5').contains(&b[0])
            && b[1].is_ascii_digit()
            && b[2].is_ascii_digit()
            && (b[3] == b' ' || b[3] == b'-');
        if !code_ok {
            broke(
                &format!("a reply line outside RFC 5321's grammar: {line:?}"),
                e,
            );
        }
    }
    if !text.is_empty() && !text.ends_with("\r\n") {
        broke("a reply without its CRLF", e);
    }
}

fn check_pop3(e: &Exchange) {
    if !e.closed {
        broke("the session was not closed after the client closed", e);
    }
    let output = before_tls(&e.output, b"+OK begin TLS negotiation\r\n");
    if !output.starts_with(b"+OK ") {
        broke("no +OK greeting", e);
    }
    if !output.ends_with(b"\r\n") {
        broke("an answer without its CRLF", e);
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn assert_memory_bounded(before: u64) {
    let (_, peak) = fuzz::rss();
    assert!(
        peak.saturating_sub(before) < MEMORY_BUDGET,
        "peak memory grew by {} MiB during the run",
        peak.saturating_sub(before) / (1024 * 1024)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_sessions_survive_generated_input() {
    count_panics_once();
    let s = TestServer::start(Backend::Sqlite).await.expect("a server");
    let target = s.new_account("fuzztarget").await;
    let other = s.new_account("fuzzother").await;
    let addr = s.server.as_ref().expect("running").smtp_addr;
    let inputs = generate(11, SMTP_SESSIONS, smtp_session(target.email.clone()));
    let (before, _) = fuzz::rss();
    let panics = fuzz::panics();
    let checked = std::sync::Arc::new(AtomicUsize::new(0));
    let delivered = std::sync::Arc::new(AtomicUsize::new(0));
    let (n, d) = (checked.clone(), delivered.clone());
    fuzz::timed("SMTP sessions", async {
        fuzz::sessions(addr, inputs, PARALLEL, CLOSE_WITHIN, move |e| {
            check_smtp(e);
            n.fetch_add(1, Ordering::Relaxed);
            if contains(&e.output, b"250 2.0.0 OK: queued as") {
                d.fetch_add(1, Ordering::Relaxed);
            }
        })
        .await
    })
    .await;
    assert_eq!(checked.load(Ordering::Relaxed), SMTP_SESSIONS);
    // The generator reaches the deepest state: whole messages accepted.
    let delivered = delivered.load(Ordering::Relaxed);
    eprintln!("SMTP: {delivered} sessions delivered a message");
    assert!(
        delivered > 100,
        "only {delivered} sessions delivered a message"
    );
    assert_eq!(fuzz::panics(), panics, "the server panicked (see above)");
    assert_memory_bounded(before);
    s.other_tenant_delivers(&other.email).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pop3_sessions_survive_generated_input() {
    count_panics_once();
    let s = TestServer::start(Backend::Sqlite).await.expect("a server");
    let a = s.new_account("fuzzpop").await;
    let other = s.new_account("fuzzpopother").await;
    for i in 0..5 {
        let msg = format!("Subject: m{i}\r\n\r\nline one\r\n.dot line\r\nend\r\n");
        s.deliver_smtp(&a.email, &msg).await;
    }
    let addr = s.server.as_ref().expect("running").pop3_addr;
    let (user, pass) = (a.email.clone(), a.inbox_key.clone());
    // Logged-in sessions first: the sessions with failing credentials that follow lock the
    // user and the addresses out (as they should), after which nobody logs in.
    let logged_in = POP3_SESSIONS * 4 / 5;
    let mut inputs = generate(
        23,
        logged_in,
        pop3_session(user.clone(), pass.clone(), false),
    );
    inputs.extend(generate(
        24,
        POP3_SESSIONS - logged_in,
        pop3_session(user, pass, true),
    ));
    let (before, _) = fuzz::rss();
    let panics = fuzz::panics();
    let checked = std::sync::Arc::new(AtomicUsize::new(0));
    let logins = std::sync::Arc::new(AtomicUsize::new(0));
    let (n, l) = (checked.clone(), logins.clone());
    fuzz::timed("POP3 sessions", async {
        fuzz::sessions(addr, inputs, PARALLEL, CLOSE_WITHIN, move |e| {
            check_pop3(e);
            n.fetch_add(1, Ordering::Relaxed);
            if contains(&e.output, b" messages\r\n") {
                l.fetch_add(1, Ordering::Relaxed);
            }
        })
        .await
    })
    .await;
    assert_eq!(checked.load(Ordering::Relaxed), POP3_SESSIONS);
    // The generator reaches the logged-in state, where RETR, TOP and DELE live.
    let logins = logins.load(Ordering::Relaxed);
    eprintln!("POP3: {logins} sessions logged in");
    assert!(logins > logged_in / 2, "only {logins} sessions logged in");
    assert_eq!(fuzz::panics(), panics, "the server panicked (see above)");
    assert_memory_bounded(before);
    s.other_tenant_reads_api(&other.account_key).await;
    s.stop().await;
}
