//! The IMAP door's per-command budgets, over real sockets: literals in flight (server-wide
//! bytes and a deadline), FETCH items and SEARCH keys/time/bytes. Each test pushes one
//! tenant past a limit, checks the refusal and its `mailroom_refusals_total` count, and
//! shows that another tenant, from another address, is still served within a second.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mailroom_testkit::budget::{OTHER_ADDRESS, connect_from, within_a_second};
use mailroom_testkit::{Backend, TestAccount, TestServer};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

fn attacker() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}

/// A raw IMAP client over tokio.
struct Imap {
    r: BufReader<TcpStream>,
}

impl Imap {
    async fn connect(addr: SocketAddr, from: IpAddr) -> Imap {
        let mut c = Imap {
            r: BufReader::new(connect_from(addr, from).await),
        };
        let greeting = c.line().await;
        assert!(greeting.starts_with("* OK"), "{greeting}");
        c
    }

    /// One line, or "" when the server closed the connection.
    async fn line(&mut self) -> String {
        let mut buf = Vec::new();
        self.r
            .read_until(b'\n', &mut buf)
            .await
            .expect("a line from the server");
        String::from_utf8_lossy(&buf).into_owned()
    }

    async fn send(&mut self, data: &[u8]) {
        self.r.get_mut().write_all(data).await.expect("write");
    }

    /// Lines up to and including the tagged one (or up to the end of the stream).
    async fn until(&mut self, tag: &str) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let l = self.line().await;
            if l.is_empty() {
                return lines;
            }
            let done = l.starts_with(&format!("{tag} "));
            lines.push(l);
            if done {
                return lines;
            }
        }
    }

    async fn cmd(&mut self, tag: &str, command: &str) -> Vec<String> {
        self.send(format!("{tag} {command}\r\n").as_bytes()).await;
        self.until(tag).await
    }

    async fn login(&mut self, a: &TestAccount) {
        let r = self
            .cmd("l", &format!("LOGIN {} {}", a.email, a.inbox_key))
            .await;
        assert!(last(&r).starts_with("l OK"), "{r:?}");
    }

    async fn select(&mut self) {
        let r = self.cmd("s", "SELECT INBOX").await;
        assert!(last(&r).starts_with("s OK"), "{r:?}");
    }

    /// Reads until the server closes the connection, returning what it sent; fails after
    /// `limit`.
    async fn closed_within(&mut self, limit: Duration) -> String {
        let mut seen = Vec::new();
        let read = self.r.read_to_end(&mut seen);
        match tokio::time::timeout(limit, read).await {
            Ok(_) => String::from_utf8_lossy(&seen).into_owned(),
            Err(_) => panic!("still open after {limit:?}"),
        }
    }
}

fn last(lines: &[String]) -> &str {
    lines.last().map(String::as_str).unwrap_or("")
}

fn imap_addr(s: &TestServer) -> SocketAddr {
    s.server.as_ref().expect("running").imap_addr
}

/// Another tenant's IMAP session from [`OTHER_ADDRESS`]: greeting, LOGIN, SELECT and a
/// FETCH of its one message, all within a second.
async fn other_tenant_reads_imap(s: &TestServer, a: &TestAccount) {
    let addr = imap_addr(s);
    within_a_second("another tenant's IMAP session", async {
        let mut c = Imap::connect(addr, IpAddr::from(OTHER_ADDRESS)).await;
        c.login(a).await;
        c.select().await;
        let r = c.cmd("f", "FETCH 1 (FLAGS BODY.PEEK[HEADER])").await;
        assert!(last(&r).starts_with("f OK"), "{r:?}");
        assert!(r[0].starts_with("* 1 FETCH"), "{r:?}");
    })
    .await;
}

/// Two tenants: the attacker and the other one, each with a message in its inbox.
async fn tenants(s: &TestServer) -> (TestAccount, TestAccount) {
    let bad = s.new_account("attacker").await;
    let other = s.new_account("other").await;
    for a in [&bad, &other] {
        s.deliver_smtp(
            &a.email,
            "From: x@example.com\r\nSubject: hi\r\n\r\nhello\r\n",
        )
        .await;
    }
    (bad, other)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn literals_in_flight_share_one_budget() {
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.imap.literal_budget = 1024 * 1024;
    })
    .await
    .expect("a server");
    let (bad, other) = tenants(&s).await;
    let addr = imap_addr(&s);
    let before = s.refusals("imap", "literal_budget").await;
    // The first upload takes most of the budget and sends only part of its literal.
    let mut first = Imap::connect(addr, attacker()).await;
    first.login(&bad).await;
    first.send(b"a1 APPEND INBOX {800000}\r\n").await;
    let go = first.line().await;
    assert!(go.starts_with("+ "), "{go}");
    first.send(&[b'x'; 1000]).await;
    // A second synchronizing literal gets no room: refused before the client sends it.
    let mut second = Imap::connect(addr, attacker()).await;
    second.login(&bad).await;
    let no = second.cmd("b1", "APPEND INBOX {800000}").await;
    assert!(last(&no).starts_with("b1 NO [LIMIT]"), "{no:?}");
    // The session is still usable.
    assert!(last(&second.cmd("b2", "NOOP").await).starts_with("b2 OK"));
    // A big non-synchronizing literal cannot be refused once sent: BAD, and the end.
    let mut third = Imap::connect(addr, attacker()).await;
    third.login(&bad).await;
    third.send(b"c1 APPEND INBOX {800000+}\r\n").await;
    let bye = third.closed_within(Duration::from_secs(5)).await;
    assert!(bye.starts_with("c1 BAD [LIMIT]"), "{bye}");
    assert!(bye.contains("* BYE"), "{bye}");
    // Small non-synchronizing literals still pass (RFC 7888 LITERAL-).
    let small = second.cmd("b3", "LOGIN {3+}\r\nabc {3+}\r\ndef").await;
    assert!(last(&small).starts_with("b3 BAD"), "{small:?}");
    assert_eq!(s.refusals("imap", "literal_budget").await, before + 2);
    other_tenant_reads_imap(&s, &other).await;
    s.other_tenant_reads_api(&other.account_key).await;
    // When the first upload goes away its budget comes back.
    drop(first);
    let mut again = None;
    for _ in 0..50 {
        second.send(b"b4 APPEND INBOX {800000}\r\n").await;
        let l = second.line().await;
        if l.starts_with("+ ") {
            again = Some(l);
            break;
        }
        assert!(l.starts_with("b4 NO [LIMIT]"), "{l}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(again.is_some(), "the budget never came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_literal_meets_its_deadline() {
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.imap.literal_deadline = Duration::from_secs(1);
    })
    .await
    .expect("a server");
    let (bad, other) = tenants(&s).await;
    let before = s.refusals("imap", "literal_deadline").await;
    let mut c = Imap::connect(imap_addr(&s), attacker()).await;
    c.login(&bad).await;
    c.send(b"a1 APPEND INBOX {25000000}\r\n").await;
    let go = c.line().await;
    assert!(go.starts_with("+ "), "{go}");
    // A byte now and then: every read succeeds, but the command never completes.
    let trickle = async {
        loop {
            if c.r.get_mut().write_all(b"x").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            let mut probe = [0u8; 256];
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(10), c.r.read(&mut probe)).await
            {
                return String::from_utf8_lossy(&probe[..n]).into_owned();
            }
        }
        String::new()
    };
    let other_served = async {
        other_tenant_reads_imap(&s, &other).await;
    };
    let (answer, ()) = tokio::join!(
        async {
            tokio::time::timeout(Duration::from_secs(10), trickle)
                .await
                .expect("the server ended the command")
        },
        other_served
    );
    assert!(answer.starts_with("a1 BAD [LIMIT]"), "{answer}");
    assert_eq!(s.refusals("imap", "literal_deadline").await, before + 1);
}

/// A message of about `size` bytes, in lines of 76 `x`.
fn big_message(size: usize) -> String {
    let mut m = String::from("From: x@example.com\r\nSubject: big\r\n\r\n");
    while m.len() < size {
        m.push_str(&"x".repeat(76));
        m.push_str("\r\n");
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_items_are_capped_and_answered_once() {
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.imap.max_fetch_items = 64;
    })
    .await
    .expect("a server");
    let (bad, other) = tenants(&s).await;
    let size = 1024 * 1024;
    s.deliver_smtp(&bad.email, &big_message(size)).await;
    let before = s.refusals("imap", "fetch_items").await;
    let mut c = Imap::connect(imap_addr(&s), attacker()).await;
    c.login(&bad).await;
    c.select().await;
    // Past the cap: refused before any message is read.
    let many = vec!["BODY.PEEK[]"; 65].join(" ");
    let no = c.cmd("a1", &format!("FETCH 2 ({many})")).await;
    assert!(last(&no).starts_with("a1 NO [LIMIT]"), "{no:?}");
    assert_eq!(no.len(), 1, "{no:?}");
    assert_eq!(s.refusals("imap", "fetch_items").await, before + 1);
    // At the cap, the same item over and over is answered once (one copy of the message
    // leaves the server, not 64); BODY[] and BODY.PEEK[] give the same answer.
    let mut items = vec!["BODY.PEEK[]"; 62];
    items.push("BODY[]");
    items.push("UID");
    let fetch = format!("a2 FETCH 2 ({})\r\n", items.join(" "));
    let answer = other_tenant_meanwhile(&s, &other, async {
        c.send(fetch.as_bytes()).await;
        let mut all = Vec::new();
        c.r.read_until(b')', &mut all).await.expect("the answer");
        loop {
            let l = c.line().await;
            if l.is_empty() || l.starts_with("a2 ") {
                all.extend_from_slice(l.as_bytes());
                break;
            }
            all.extend_from_slice(l.as_bytes());
        }
        String::from_utf8_lossy(&all).into_owned()
    })
    .await;
    assert!(
        answer.contains("a2 OK"),
        "{}",
        &answer[answer.len() - 200..]
    );
    assert_eq!(answer.matches("BODY[] {").count(), 1);
    assert!(answer.len() < 2 * size, "{} bytes", answer.len());
    assert!(answer.contains("UID 2"));
    // BODY[] (not PEEK) among them marked the message read.
    assert!(answer.contains("\\Seen"), "FLAGS with \\Seen");
    // Answers are written item by item: one that fails after others closes the answer
    // with what it has before the tagged NO; one that fails first sends nothing.
    let partial = c.cmd("a3", "FETCH 1 (UID BINARY[5])").await;
    assert_eq!(partial[0], "* 1 FETCH (UID 1)\r\n", "{partial:?}");
    assert!(
        last(&partial).starts_with("a3 NO [NONEXISTENT]"),
        "{partial:?}"
    );
    let none = c.cmd("a4", "FETCH 1 (BINARY[5] UID)").await;
    assert_eq!(none.len(), 1, "{none:?}");
    assert!(last(&none).starts_with("a4 NO [NONEXISTENT]"), "{none:?}");
}

/// Runs `attack` while another tenant's IMAP session and API call are served, each
/// within a second.
async fn other_tenant_meanwhile<F: Future>(
    s: &TestServer,
    other: &TestAccount,
    attack: F,
) -> F::Output {
    let (out, ()) = tokio::join!(attack, async {
        other_tenant_reads_imap(s, other).await;
        s.other_tenant_reads_api(&other.account_key).await;
    });
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pathological_list_patterns_are_answered() {
    let s = TestServer::start_with(Backend::Sqlite, |_| {})
        .await
        .expect("a server");
    let (bad, other) = tenants(&s).await;
    let mut c = Imap::connect(imap_addr(&s), attacker()).await;
    c.login(&bad).await;
    let name = "a".repeat(200);
    let made = c.cmd("c", &format!("CREATE {name}")).await;
    assert!(last(&made).starts_with("c OK"), "{made:?}");
    let pattern = format!("{}b", "*a".repeat(40));
    let listed = other_tenant_meanwhile(&s, &other, async {
        let mut lines = Vec::new();
        for i in 0..20 {
            lines = c
                .cmd(&format!("l{i}"), &format!("LIST \"\" \"{pattern}\""))
                .await;
            assert!(last(&lines).starts_with(&format!("l{i} OK")), "{lines:?}");
        }
        lines
    })
    .await;
    assert_eq!(listed.len(), 1, "nothing matches: {listed:?}");
    let hit = c
        .cmd("m", &format!("LIST \"\" \"{}a\"", "*a".repeat(40)))
        .await;
    assert!(hit[0].contains(&name), "{hit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_keys_and_bytes_are_budgeted() {
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.imap.max_search_keys = 8;
        c.imap.search_byte_budget = 300 * 1024;
    })
    .await
    .expect("a server");
    let (bad, other) = tenants(&s).await;
    for _ in 0..4 {
        s.deliver_smtp(&bad.email, &big_message(100 * 1024)).await;
    }
    let keys_before = s.refusals("imap", "search_keys").await;
    let bytes_before = s.refusals("imap", "search_bytes").await;
    let mut c = Imap::connect(imap_addr(&s), attacker()).await;
    c.login(&bad).await;
    c.select().await;
    // Nine keys, counted through OR and NOT: refused before anything is read.
    let no = c
        .cmd(
            "a1",
            "SEARCH OR BODY a BODY b NOT TEXT c SUBJECT d FROM e TO f CC g",
        )
        .await;
    assert!(last(&no).starts_with("a1 NO [LIMIT]"), "{no:?}");
    assert_eq!(s.refusals("imap", "search_keys").await, keys_before + 1);
    // Within the budgets the search is answered (the first message only is small).
    let ok = c.cmd("a2", "SEARCH 1 BODY hello").await;
    assert_eq!(ok[0], "* SEARCH 1\r\n", "{ok:?}");
    assert!(last(&ok).starts_with("a2 OK"), "{ok:?}");
    // TEXT over all of them reads whole messages: 400 KiB is past the byte budget.
    let answer = other_tenant_meanwhile(&s, &other, async {
        c.cmd("a3", "SEARCH TEXT nowhere").await
    })
    .await;
    assert!(last(&answer).starts_with("a3 NO [LIMIT]"), "{answer:?}");
    assert_eq!(s.refusals("imap", "search_bytes").await, bytes_before + 1);
    // Cheap keys still work, and the session too.
    let all = c.cmd("a4", "SEARCH LARGER 50000").await;
    assert_eq!(all[0], "* SEARCH 2 3 4 5\r\n", "{all:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_time_is_budgeted() {
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.imap.search_time_budget = Duration::from_millis(1);
    })
    .await
    .expect("a server");
    let (bad, other) = tenants(&s).await;
    // 8 MiB of text to lowercase and decode: far more than a millisecond's work, even
    // for a release build, so the budget is always met.
    for _ in 0..8 {
        s.deliver_smtp(&bad.email, &big_message(1024 * 1024)).await;
    }
    let before = s.refusals("imap", "search_time").await;
    let mut c = Imap::connect(imap_addr(&s), attacker()).await;
    c.login(&bad).await;
    c.select().await;
    let answer = other_tenant_meanwhile(&s, &other, async {
        c.cmd("a1", "SEARCH BODY nowhere").await
    })
    .await;
    assert!(last(&answer).starts_with("a1 NO [LIMIT]"), "{answer:?}");
    assert_eq!(s.refusals("imap", "search_time").await, before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_accounts_searches_do_not_hold_up_another() {
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.imap.search_concurrency_per_account = 1;
    })
    .await
    .expect("a server");
    let (bad, other) = tenants(&s).await;
    for _ in 0..6 {
        s.deliver_smtp(&bad.email, &big_message(1024 * 1024)).await;
    }
    let addr = imap_addr(&s);
    let mut attackers = Vec::new();
    for _ in 0..3 {
        let mut c = Imap::connect(addr, attacker()).await;
        c.login(&bad).await;
        c.select().await;
        attackers.push(c);
    }
    let searches = futures_search(&mut attackers);
    let other_search = async {
        within_a_second("another tenant's SEARCH BODY", async {
            let mut c = Imap::connect(addr, IpAddr::from(OTHER_ADDRESS)).await;
            c.login(&other).await;
            c.select().await;
            let r = c.cmd("o", "SEARCH BODY hello").await;
            assert_eq!(r[0], "* SEARCH 1\r\n", "{r:?}");
        })
        .await;
    };
    let (answers, ()) = tokio::join!(searches, async {
        // Let the attacker's searches start first.
        tokio::time::sleep(Duration::from_millis(50)).await;
        other_search.await;
        other_tenant_reads_imap(&s, &other).await;
    });
    // The attacker's own searches all complete (they wait for their account's slot).
    for a in answers {
        assert!(last(&a).starts_with("x OK"), "{a:?}");
        assert_eq!(a[0], "* SEARCH\r\n", "{a:?}");
    }
}

/// Each session's `SEARCH BODY nowhere`, all at once.
async fn futures_search(sessions: &mut [Imap]) -> Vec<Vec<String>> {
    let mut pending = Vec::new();
    for c in sessions.iter_mut() {
        pending.push(c.cmd("x", "SEARCH BODY nowhere"));
    }
    let mut out = Vec::new();
    // Sent together by polling all at once.
    let joined = join_all(pending).await;
    out.extend(joined);
    out
}

/// Polls every future to the end (a tiny `join_all`).
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut handles: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut done: Vec<Option<F::Output>> = handles.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (h, d) in handles.iter_mut().zip(done.iter_mut()) {
            if d.is_none() {
                match h.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *d = Some(v),
                    std::task::Poll::Pending => all = false,
                }
            }
        }
        if all {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    done.into_iter().flatten().collect()
}
