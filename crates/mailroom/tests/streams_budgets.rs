//! Wake-ups and the budget of waiters: an arrival wakes the waiters of its own inbox only
//! (long polls, event streams, IMAP IDLE of other inboxes do not even look at the
//! database), and streams, long polls and IDLE sessions past the per-key or per-account cap
//! are refused (HTTP 429 `TOO_MANY_STREAMS` with `Retry-After`, IMAP `NO [LIMIT]`) while
//! another tenant's long poll still gets its message within a second.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::time::{Duration, Instant};

use mailroom_testkit::{Backend, TestAccount, TestServer};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

macro_rules! both {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$case(mailroom_testkit::Backend::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$case(mailroom_testkit::Backend::Postgres).await;
            }
        }
    )*};
}

both!(
    an_arrival_wakes_only_its_inbox,
    waiters_past_the_cap_are_refused
);

/// A second inbox of `a`'s account, as a `TestAccount` whose inbox fields are the new one.
async fn second_inbox(s: &TestServer, a: &TestAccount, name: &str) -> TestAccount {
    let (status, body, _) = s
        .call(
            "POST",
            "/v1/inboxes",
            Some(&a.account_key),
            Some(json!({"username": name})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let r = &body["result"];
    TestAccount {
        inbox_id: r["id"].as_str().unwrap().to_owned(),
        inbox_key: r["inbox_api_key"].as_str().unwrap().to_owned(),
        email: r["email"].as_str().unwrap().to_owned(),
        ..a.clone()
    }
}

/// An open SSE stream of `inbox` (the response, kept to keep the stream open).
async fn open_stream(s: &TestServer, key: &str, inbox: &str) -> reqwest::Response {
    s.http
        .get(s.url(&format!("/v1/inboxes/{inbox}/events")))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

/// Reads an SSE stream until `needle` shows, within `secs`.
async fn read_until(resp: &mut reqwest::Response, needle: &str, secs: u64) {
    let mut seen = String::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !seen.contains(needle) {
        let chunk = tokio::time::timeout_at(until, resp.chunk())
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} within {secs}s; saw {seen:?}"))
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
}

/// Starts a long poll (`wait=`) of `inbox`; its answer is the status and body.
fn long_poll(
    s: &TestServer,
    key: &str,
    inbox: &str,
    wait: u64,
) -> tokio::task::JoinHandle<(u16, Value, Instant)> {
    let req = s
        .http
        .get(s.url(&format!("/v1/inboxes/{inbox}/messages?wait={wait}")))
        .bearer_auth(key);
    tokio::spawn(async move {
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.json().await.unwrap();
        (status, body, Instant::now())
    })
}

/// A logged-in IMAP session with INBOX selected.
struct Imap {
    r: BufReader<TcpStream>,
}

impl Imap {
    async fn open(s: &TestServer, a: &TestAccount) -> Imap {
        let port = s.server.as_ref().unwrap().imap_addr.port();
        let mut i = Imap {
            r: BufReader::new(TcpStream::connect(("127.0.0.1", port)).await.unwrap()),
        };
        assert!(i.line().await.starts_with("* OK"));
        let l = i
            .cmd("l", &format!("LOGIN {} {}", a.email, a.inbox_key))
            .await;
        assert!(l.starts_with("l OK"), "{l}");
        let l = i.cmd("s", "SELECT INBOX").await;
        assert!(l.starts_with("s OK"), "{l}");
        i
    }

    async fn line(&mut self) -> String {
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(10), self.r.read_line(&mut line))
            .await
            .expect("an IMAP line within 10 s")
            .unwrap();
        line
    }

    /// Sends a command; returns its tagged answer.
    async fn cmd(&mut self, tag: &str, command: &str) -> String {
        self.send(&format!("{tag} {command}")).await;
        loop {
            let l = self.line().await;
            assert!(!l.is_empty(), "connection closed");
            if l.starts_with(&format!("{tag} ")) {
                return l;
            }
        }
    }

    async fn send(&mut self, line: &str) {
        self.r
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .unwrap();
    }

    /// IDLE: the first line of the answer (`+ idling`, or a refusal).
    async fn idle(&mut self) -> String {
        self.send("i IDLE").await;
        self.line().await
    }
}

/// The value of `mailroom_refusals_total{door=…, reason=…}` (0 before the first one).
async fn refusals(s: &TestServer, door: &str, reason: &str) -> u64 {
    let text = s
        .http
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("mailroom_refusals_total{"))
        .filter(|l| {
            l.contains(&format!("door=\"{door}\"")) && l.contains(&format!("reason=\"{reason}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// Waits until the server's waiters have looked at the database `n` times in all.
async fn polls_reach(s: &TestServer, n: u64) -> u64 {
    let services = &s.server.as_ref().unwrap().services;
    let until = Instant::now() + Duration::from_secs(10);
    while services.waiter_polls() < n {
        assert!(Instant::now() < until, "waiters never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Anything that would follow (a second look) would follow within this.
    tokio::time::sleep(Duration::from_millis(300)).await;
    services.waiter_polls()
}

async fn an_arrival_wakes_only_its_inbox(backend: Backend) {
    // No timer looks during the test: whatever wakes a waiter is a signal.
    let Some(s) = TestServer::start_with(backend, |c| {
        c.streams.poll_interval = Duration::from_secs(60);
    })
    .await
    else {
        eprintln!("skipped: MAILROOM_TEST_DATABASE_URL is not set");
        return;
    };
    let x = s.new_account("wake-x").await;
    let y = second_inbox(&s, &x, "wake-y").await;
    let services = s.server.as_ref().unwrap().services.clone();
    // Waiters on Y: a long poll, an event stream, an IMAP IDLE. On X: a long poll.
    let y_poll = long_poll(&s, &y.inbox_key, &y.inbox_id, 30);
    let mut y_stream = open_stream(&s, &y.inbox_key, &y.inbox_id).await;
    assert_eq!(y_stream.status(), 200);
    let mut y_idle = Imap::open(&s, &y).await;
    assert!(y_idle.idle().await.starts_with("+ "));
    let x_poll = long_poll(&s, &x.inbox_key, &x.inbox_id, 30);
    let settled = polls_reach(&s, 4).await;
    assert_eq!(settled, 4, "each waiter looked once");
    assert_eq!(services.watched_inboxes(), 2);

    // Mail for X: X's long poll answers at once, and nobody on Y looks.
    s.deliver_smtp(&x.email, "Subject: for-x\r\n\r\nhi").await;
    let stored = Instant::now();
    let (status, body, at) = tokio::time::timeout(Duration::from_secs(10), x_poll)
        .await
        .expect("X's long poll answers")
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["messages"][0]["subject"], "for-x", "{body}");
    let took = at.saturating_duration_since(stored);
    assert!(took < Duration::from_secs(1), "X's waiter took {took:?}");
    let after_x = polls_reach(&s, settled + 1).await;
    assert_eq!(after_x, settled + 1, "only X's waiter looked");
    assert!(!y_poll.is_finished());

    // Mail for Y wakes all three of Y's waiters at once.
    s.deliver_smtp(&y.email, "Subject: for-y\r\n\r\nhi").await;
    let stored = Instant::now();
    let (status, body, at) = tokio::time::timeout(Duration::from_secs(10), y_poll)
        .await
        .expect("Y's long poll answers")
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(at.saturating_duration_since(stored) < Duration::from_secs(1));
    read_until(&mut y_stream, "for-y", 1).await;
    let exists = tokio::time::timeout(Duration::from_secs(1), y_idle.line())
        .await
        .expect("IDLE hears the mail within a second");
    assert_eq!(exists, "* 1 EXISTS\r\n");
    drop(y_stream);
    s.stop().await;
}

async fn waiters_past_the_cap_are_refused(backend: Backend) {
    let Some(s) = TestServer::start_with(backend, |c| {
        c.streams.per_key = 4;
        c.streams.per_account = 6;
    })
    .await
    else {
        eprintln!("skipped: MAILROOM_TEST_DATABASE_URL is not set");
        return;
    };
    let a = s.new_account("greedy").await;
    let b = s.new_account("patient").await;
    let per_key = refusals(&s, "streams", "waiters_per_key").await;
    let per_account = refusals(&s, "streams", "waiters_per_account").await;
    let imap_refused = refusals(&s, "imap", "waiters_per_account").await;

    // The account key's 4 streams; the 5th stream and a waiting long poll are refused.
    let mut open = Vec::new();
    for _ in 0..4 {
        let r = open_stream(&s, &a.account_key, &a.inbox_id).await;
        assert_eq!(r.status(), 200);
        open.push(r);
    }
    let refused = open_stream(&s, &a.account_key, &a.inbox_id).await;
    assert_eq!(refused.status(), 429);
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "TOO_MANY_STREAMS", "{body}");
    let (status, body) = {
        let (st, b, _) = long_poll(&s, &a.account_key, &a.inbox_id, 5).await.unwrap();
        (st, b)
    };
    assert_eq!(status, 429, "{body}");
    // A list without wait= is no waiter.
    let (status, _, _) = s
        .call(
            "GET",
            &format!("/v1/inboxes/{}/messages", a.inbox_id),
            Some(&a.account_key),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert!(refusals(&s, "streams", "waiters_per_key").await >= per_key + 2);

    // The inbox key fits 2 more before the account's 6 are used.
    for _ in 0..2 {
        let r = open_stream(&s, &a.inbox_key, &a.inbox_id).await;
        assert_eq!(r.status(), 200);
        open.push(r);
    }
    let refused = open_stream(&s, &a.inbox_key, &a.inbox_id).await;
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("account"),
        "{body}"
    );
    assert!(refusals(&s, "streams", "waiters_per_account").await > per_account);
    // IMAP IDLE counts too.
    let mut imap = Imap::open(&s, &a).await;
    let idle = imap.idle().await;
    assert!(idle.starts_with("i NO [LIMIT]"), "{idle}");
    assert!(refusals(&s, "imap", "waiters_per_account").await > imap_refused);
    assert!(imap.cmd("n", "NOOP").await.starts_with("n OK"));

    // Meanwhile another tenant's long poll gets its message within a second.
    let b_poll = long_poll(&s, &b.inbox_key, &b.inbox_id, 20);
    let services = &s.server.as_ref().unwrap().services;
    let until = Instant::now() + Duration::from_secs(10);
    while services.watched_inboxes() < 2 {
        assert!(Instant::now() < until, "B's long poll never waited");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    s.deliver_smtp(&b.email, "Subject: for-b\r\n\r\nhi").await;
    let stored = Instant::now();
    let (status, body, at) = tokio::time::timeout(Duration::from_secs(10), b_poll)
        .await
        .expect("B's long poll answers")
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["messages"][0]["subject"], "for-b", "{body}");
    let took = at.saturating_duration_since(stored);
    assert!(took < Duration::from_secs(1), "B's long poll took {took:?}");
    // A stream the client drops gives its place back once the server sees it close.
    drop(open.remove(0));
    let dropped = Instant::now();
    loop {
        let r = open_stream(&s, &a.account_key, &a.inbox_id).await;
        if r.status() == 200 {
            open.push(r);
            break;
        }
        assert!(
            dropped.elapsed() < Duration::from_secs(20),
            "the place never came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(open);
    s.stop().await;
}
