//! The connection budgets of the doors that share `mailroom_net`: each test pushes one
//! client past a limit, checks the refusal (and its `mailroom_refusals_total` count), and
//! shows that another tenant, from another address, is still served within a second.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use mailroom_testkit::budget::{OTHER_ADDRESS, connect_from, read_reply, within_a_second};
use mailroom_testkit::{Backend, TestServer};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

fn attacker() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}

/// Reads until the peer closes the connection, and says how long that took; fails after
/// `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> (Duration, Vec<u8>) {
    let started = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((started + limit).into(), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (started.elapsed(), seen),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "still open after {limit:?}; received {:?}",
                String::from_utf8_lossy(&seen)
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pop3_connections_per_address_are_capped() {
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.pop3.connections.exempt_loopback = false;
        c.pop3.connections.max_per_ip = 2;
        c.pop3.connections.per_ip_wait = Duration::from_millis(100);
    })
    .await
    .expect("a server");
    let other = s.new_account("other").await;
    let addr = s.server.as_ref().expect("running").pop3_addr;
    let before = s.refusals("pop3", "max_connections_per_ip").await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut r = BufReader::new(connect_from(addr, attacker()).await);
        let mut line = String::new();
        r.read_line(&mut line).await.expect("a greeting");
        assert!(line.starts_with("+OK"), "{line}");
        held.push(r);
    }
    let mut third = BufReader::new(connect_from(addr, attacker()).await);
    let mut line = String::new();
    third.read_line(&mut line).await.expect("a refusal");
    assert!(
        line.starts_with("-ERR [SYS/TEMP] too many connections from your address"),
        "{line}"
    );
    assert!(s.refusals("pop3", "max_connections_per_ip").await > before);
    // Another tenant, from another address, logs in and reads its mailbox meanwhile.
    within_a_second("another tenant's POP3 session", async {
        let stream = connect_from(addr, IpAddr::from(OTHER_ADDRESS)).await;
        let (r, mut w) = stream.into_split();
        let mut r = BufReader::new(r);
        let mut line = String::new();
        r.read_line(&mut line).await.expect("greeting");
        for (cmd, want) in [
            (format!("USER {}", other.email), "+OK"),
            (format!("PASS {}", other.inbox_key), "+OK"),
            ("STAT".to_owned(), "+OK 0 0"),
        ] {
            w.write_all(format!("{cmd}\r\n").as_bytes())
                .await
                .expect("write");
            line.clear();
            r.read_line(&mut line).await.expect("a reply");
            assert!(line.starts_with(want), "{cmd}: {line}");
        }
    })
    .await;
    drop(held);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pop3_auth_continuation_has_a_deadline() {
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.pop3.login_timeout = Duration::from_secs(1);
    })
    .await
    .expect("a server");
    let other = s.new_account("other").await;
    let addr = s.server.as_ref().expect("running").pop3_addr;
    let before = s.refusals("pop3", "login_timeout").await;
    let mut stream = connect_from(addr, attacker()).await;
    let mut greeting = [0u8; 256];
    let n = stream.read(&mut greeting).await.expect("greeting");
    assert!(greeting[..n].starts_with(b"+OK"));
    stream.write_all(b"AUTH PLAIN\r\n").await.expect("write");
    // The client is asked for its response and never sends it.
    let other_task = {
        let url = s.url("/v1/account");
        let key = other.account_key.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let client = reqwest::Client::builder()
                .no_proxy()
                .local_address(IpAddr::from(OTHER_ADDRESS))
                .build()
                .expect("a client");
            within_a_second("another tenant's API call", async {
                let r = client.get(url).bearer_auth(key).send().await.expect("GET");
                assert_eq!(r.status().as_u16(), 200);
            })
            .await;
        })
    };
    let (took, seen) = closed_within(&mut stream, Duration::from_secs(5)).await;
    let seen = String::from_utf8_lossy(&seen);
    assert!(seen.starts_with("+ \r\n"), "{seen}");
    assert!(seen.contains("-ERR too long without logging in"), "{seen}");
    assert!(
        took >= Duration::from_millis(800),
        "closed too early: {took:?}"
    );
    other_task.await.expect("the other tenant's task");
    assert!(s.refusals("pop3", "login_timeout").await > before);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_headers_must_arrive_in_time() {
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.http_limits.header_read_timeout = Duration::from_secs(1);
    })
    .await
    .expect("a server");
    let other = s.new_account("other").await;
    // Slowloris: a request line and one header, then a byte now and then, never the end.
    let mut slow = connect_from(s.http_addr, attacker()).await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let trickle = async {
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if slow.write_all(b"X").await.is_err() {
                break;
            }
        }
    };
    let (_, ()) = tokio::join!(
        async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            s.other_tenant_reads_api(&other.account_key).await;
        },
        trickle
    );
    let (took, seen) = closed_within(&mut slow, Duration::from_secs(3)).await;
    assert!(
        !String::from_utf8_lossy(&seen).contains("200 OK"),
        "the slow request must not be answered"
    );
    assert!(took < Duration::from_secs(3));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_connections_per_address_are_capped() {
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.http_limits.connections.max_per_ip = 3;
    })
    .await
    .expect("a server");
    let other = s.new_account("other").await;
    let before = s.refusals("http", "max_connections_per_ip").await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from(s.http_addr, attacker()).await);
    }
    // Give the server a moment to admit the three.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut fourth = connect_from(s.http_addr, attacker()).await;
    let (_, seen) = closed_within(&mut fourth, Duration::from_secs(3)).await;
    let seen = String::from_utf8_lossy(&seen);
    assert!(seen.starts_with("HTTP/1.1 503"), "{seen}");
    assert!(seen.contains("TOO_MANY_CONNECTIONS"), "{seen}");
    assert!(
        seen.to_ascii_lowercase().contains("retry-after: 1"),
        "{seen}"
    );
    assert!(s.refusals("http", "max_connections_per_ip").await > before);
    s.other_tenant_reads_api(&other.account_key).await;
    // Closing the held connections gives their slots back.
    drop(held);
    let mut ok = false;
    for _ in 0..50 {
        let (status, _, _) = s
            .call("GET", "/v1/account", Some(&other.account_key), None)
            .await;
        if status == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        ok,
        "the address is served again once its connections closed"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_message_must_arrive_whole_in_time() {
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.smtp.message_timeout = Duration::from_secs(1);
    })
    .await
    .expect("a server");
    let victim = s.new_account("victim").await;
    let other = s.new_account("other").await;
    let addr = s.server.as_ref().expect("running").smtp_addr;
    let before = s.refusals("smtp", "message_timeout").await;
    let stream = connect_from(addr, attacker()).await;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    assert!(read_reply(&mut r).await.starts_with("220"));
    for cmd in [
        "EHLO slow.test".to_owned(),
        "MAIL FROM:<slow@example.com>".to_owned(),
        format!("RCPT TO:<{}>", victim.email),
        "DATA".to_owned(),
    ] {
        w.write_all(format!("{cmd}\r\n").as_bytes())
            .await
            .expect("write");
        let reply = read_reply(&mut r).await;
        assert!(reply.starts_with('2') || reply.starts_with('3'), "{reply}");
    }
    // A byte every 100 ms: each read is well within the data timeout, the whole is not.
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        for _ in 0..50 {
            if w.write_all(b"x").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.other_tenant_delivers(&other.email).await;
    let reply = read_reply(&mut r).await;
    let took = started.elapsed();
    assert!(reply.starts_with("421 4.4.2"), "{reply}");
    assert!(reply.contains("took too long"), "{reply}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    trickle.abort();
    assert!(s.refusals("smtp", "message_timeout").await > before);
    // Nothing of the cut-off message was stored; the other tenant's was.
    let mine = s
        .get_json(
            &victim.inbox_key,
            &format!("/v1/inboxes/{}/messages", victim.inbox_id),
        )
        .await;
    assert_eq!(mine["result"]["total"], 0, "{mine}");
    let theirs = s
        .get_json(
            &other.inbox_key,
            &format!("/v1/inboxes/{}/messages", other.inbox_id),
        )
        .await;
    assert_eq!(theirs["result"]["total"], 1, "{theirs}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_handshakes_have_a_deadline() {
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.smtp.connections.tls_handshake_timeout = Duration::from_secs(1);
    })
    .await
    .expect("a server");
    let other = s.new_account("other").await;
    let addr: SocketAddr = s.server.as_ref().expect("running").submissions_addr;
    let before = s.refusals("submission", "tls_handshake_timeout").await;
    // Connects to the implicit-TLS port and never says hello.
    let mut mute = connect_from(addr, attacker()).await;
    s.other_tenant_delivers(&other.email).await;
    let (took, _) = closed_within(&mut mute, Duration::from_secs(4)).await;
    assert!(took >= Duration::from_millis(900), "{took:?}");
    assert!(s.refusals("submission", "tls_handshake_timeout").await > before);
    s.stop().await;
}

/// One busy peer that opens a connection per message (as Postfix's `smtp-source` and most
/// MTAs send) with exactly as many at once as the per-address limit allows: every message is
/// accepted, none meets `421 too many connections`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_per_address_limit_holds_under_connection_churn() {
    const SESSIONS: usize = 50;
    const EACH: usize = 8;
    let s = TestServer::start(Backend::Sqlite).await.expect("a server");
    assert_eq!(s.config.smtp.connections.max_per_ip, SESSIONS);
    let a = s.new_account("busy").await;
    let addr = s.server.as_ref().expect("running").smtp_addr;
    let mut tasks = Vec::new();
    for i in 0..SESSIONS {
        let to = a.email.clone();
        tasks.push(tokio::spawn(async move {
            let mut refused = Vec::new();
            for j in 0..EACH {
                let stream = connect_from(addr, attacker()).await;
                let (r, mut w) = stream.into_split();
                let mut r = BufReader::new(r);
                let greeting = read_reply(&mut r).await;
                if !greeting.starts_with("220") {
                    refused.push(greeting);
                    continue;
                }
                // Pipelined, as MTAs do: EHLO, then MAIL, RCPT and DATA together.
                w.write_all(b"EHLO churn.test\r\n").await.expect("write");
                assert!(read_reply(&mut r).await.starts_with("250"));
                let cmds = format!("MAIL FROM:<peer@example.com>\r\nRCPT TO:<{to}>\r\nDATA\r\n");
                w.write_all(cmds.as_bytes()).await.expect("write");
                for want in ["250", "250", "354"] {
                    let reply = read_reply(&mut r).await;
                    assert!(reply.starts_with(want), "{reply}");
                }
                let body = format!("Subject: churn {i}.{j}\r\n\r\nbody\r\n.\r\nQUIT\r\n");
                w.write_all(body.as_bytes()).await.expect("write");
                let stored = read_reply(&mut r).await;
                assert!(stored.starts_with("250"), "{stored}");
                assert!(read_reply(&mut r).await.starts_with("221"));
            }
            refused
        }));
    }
    let mut refused = Vec::new();
    for t in tasks {
        refused.extend(t.await.expect("a client task"));
    }
    assert!(
        refused.is_empty(),
        "{} refused: {:?}",
        refused.len(),
        &refused[..refused.len().min(3)]
    );
    let list = s
        .get_json(
            &a.inbox_key,
            &format!("/v1/inboxes/{}/messages?limit=1", a.inbox_id),
        )
        .await;
    assert_eq!(
        list["result"]["total"],
        SESSIONS * EACH,
        "every message was stored"
    );
    s.stop().await;
}
