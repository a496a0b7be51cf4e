//! Issue #12: one throttle for wrong passwords at every door (`POST /v1/auth/token`, SMTP
//! AUTH, IMAP LOGIN and AUTHENTICATE, POP3), counted per client address and per address
//! and user. Past it: 429 with `Retry-After` over HTTP, the protocol's temporary failure
//! elsewhere. A stranger failing as a real user does not lock that user out: the user,
//! from their own address, is served within a second. On SQLite and PostgreSQL.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use base64::Engine;
use mailroom_services::LoginThrottlePolicy;
use mailroom_testkit::TestServer;
use mailroom_testkit::budget::{connect_from, within_a_second};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

mailroom_testkit::on_both_backends_started_by!(
    start;
    token_grants_are_throttled_by_address_and_user,
    mail_doors_share_one_throttle,
);

const PER_ADDRESS_USER: u32 = 3;
const PER_ADDRESS: u32 = 8;

async fn start(backend: mailroom_testkit::Backend) -> Option<TestServer> {
    TestServer::start_with(backend, |c| {
        c.login_throttle = LoginThrottlePolicy {
            failures_per_address: PER_ADDRESS,
            failures_per_address_user: PER_ADDRESS_USER,
            window: Duration::from_secs(60),
        };
    })
    .await
}

fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// `POST /v1/auth/token` from `from`: the status, `Retry-After` and the body.
async fn grant(
    s: &TestServer,
    from: IpAddr,
    email: &str,
    password: &str,
) -> (u16, Option<u64>, Value) {
    let client = reqwest::Client::builder()
        .no_proxy()
        .local_address(from)
        .build()
        .expect("an HTTP client");
    let resp = client
        .post(s.url("/v1/auth/token"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .expect("POST /v1/auth/token");
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    (status, retry_after, resp.json().await.expect("JSON"))
}

async fn token_grants_are_throttled_by_address_and_user(s: TestServer) {
    let a = s.new_account("throttled").await;
    let password = "correct horse battery staple";
    let created = s
        .http
        .post(s.url("/v1/account/users"))
        .bearer_auth(&a.account_key)
        .json(&json!({"email": "jack@example.com", "password": password, "first_name": "Jack", "surname": "T", "is_owner": false}))
        .send()
        .await
        .expect("create a user");
    assert_eq!(created.status().as_u16(), 201);

    // A stranger at .1 fails as Jack until the address-and-user count is spent.
    for _ in 0..PER_ADDRESS_USER {
        let (st, _, body) = grant(&s, ip(1), "jack@example.com", "guess").await;
        assert_eq!((st, body["code"].as_i64()), (403, Some(40102)), "{body}");
    }
    // Now even the right password is refused there, before it is looked at.
    let (st, retry, body) = grant(&s, ip(1), "JACK@example.com", password).await;
    assert_eq!((st, body["code"].as_i64()), (429, Some(42901)), "{body}");
    assert!(
        retry.is_some_and(|r| (1..=60).contains(&r)),
        "Retry-After: {retry:?}"
    );
    // Jack, from his own address, is not locked out.
    let (st, _, body) = within_a_second("Jack from his address", async {
        grant(&s, ip(2), "jack@example.com", password).await
    })
    .await;
    assert_eq!(st, 200, "{body}");
    assert!(body["access_token"].is_string());

    // A guesser trying many names at .3 is stopped by the per-address count.
    for i in 0..PER_ADDRESS {
        let (st, _, _) = grant(&s, ip(3), &format!("user{i}@example.com"), "guess").await;
        assert_eq!(st, 403, "failure {i} is counted, not yet throttled");
    }
    let (st, retry, _) = grant(&s, ip(3), "someone-new@example.com", "guess").await;
    assert_eq!(st, 429);
    assert!(retry.is_some());
    let (st, _, _) = grant(&s, ip(3), "jack@example.com", password).await;
    assert_eq!(st, 429, "the whole address waits, whoever it names");
    let (st, _, _) = within_a_second("Jack again", async {
        grant(&s, ip(2), "jack@example.com", password).await
    })
    .await;
    assert_eq!(st, 200);

    // A success forgets that address's failures for that user: a typo or two a day never
    // adds up to a lockout.
    for _ in 0..2 {
        for _ in 0..PER_ADDRESS_USER - 1 {
            assert_eq!(grant(&s, ip(4), "jack@example.com", "typo").await.0, 403);
        }
        assert_eq!(grant(&s, ip(4), "jack@example.com", password).await.0, 200);
    }
    assert!(s.refusals("http", "login_throttled").await >= 3);
    s.stop().await;
}

/// One line-based client: IMAP and POP3 alike.
struct Client {
    r: BufReader<TcpStream>,
}

impl Client {
    async fn open(addr: SocketAddr, from: IpAddr) -> Client {
        let mut c = Client {
            r: BufReader::new(connect_from(addr, from).await),
        };
        let greeting = c.line().await;
        assert!(
            greeting.starts_with("* OK") || greeting.starts_with("+OK"),
            "{greeting}"
        );
        c
    }

    async fn send(&mut self, line: &str) {
        let w = self.r.get_mut();
        w.write_all(line.as_bytes()).await.expect("write");
        w.write_all(b"\r\n").await.expect("write");
    }

    async fn line(&mut self) -> String {
        let mut l = String::new();
        self.r.read_line(&mut l).await.expect("read");
        l
    }

    /// An IMAP command's tagged answer.
    async fn tagged(&mut self, tag: &str, command: &str) -> String {
        self.send(&format!("{tag} {command}")).await;
        loop {
            let l = self.line().await;
            if l.is_empty() || l.starts_with(&format!("{tag} ")) {
                return l;
            }
        }
    }
}

fn plain(user: &str, pass: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"))
}

/// SMTP AUTH PLAIN after STARTTLS, from `from`, with Python's smtplib (a client nobody
/// here wrote); the reply as `CODE text`.
async fn smtp_auth(addr: SocketAddr, from: IpAddr, user: &str, pass: &str) -> String {
    let code = r#"
import smtplib, sys, base64
port, src, user, pw = sys.argv[1:5]
s = smtplib.SMTP("127.0.0.1", int(port), timeout=20, source_address=(src, 0))
s.starttls()
s.ehlo()
auth = base64.b64encode(("\0" + user + "\0" + pw).encode()).decode()
code, text = s.docmd("AUTH", "PLAIN " + auth)
print(code, text.decode())
"#;
    let out = tokio::process::Command::new("python3")
        .args([
            "-c",
            code,
            &addr.port().to_string(),
            &from.to_string(),
            user,
            pass,
        ])
        .output()
        .await
        .expect("python3 runs (apt-get install python3)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

async fn imap_login(addr: SocketAddr, from: IpAddr, user: &str, pass: &str) -> String {
    let mut c = Client::open(addr, from).await;
    c.tagged("a", &format!("LOGIN \"{user}\" \"{pass}\"")).await
}

async fn imap_authenticate(addr: SocketAddr, from: IpAddr, user: &str, pass: &str) -> String {
    let mut c = Client::open(addr, from).await;
    c.tagged("a", &format!("AUTHENTICATE PLAIN {}", plain(user, pass)))
        .await
}

async fn pop3_login(addr: SocketAddr, from: IpAddr, user: &str, pass: &str) -> String {
    let mut c = Client::open(addr, from).await;
    c.send(&format!("USER {user}")).await;
    let ok = c.line().await;
    assert!(ok.starts_with("+OK"), "{ok}");
    c.send(&format!("PASS {pass}")).await;
    c.line().await
}

async fn mail_doors_share_one_throttle(s: TestServer) {
    let a = s.new_account("doors").await;
    let running = s.server.as_ref().expect("running");
    let (smtp, imap, pop3) = (
        running.submission_addr,
        running.imap_addr,
        running.pop3_addr,
    );
    let (user, key) = (a.email.as_str(), a.inbox_key.as_str());
    let wrong = "mr_inb_wrongwrongwrongwrongwrongwrongwr";

    // One wrong password at each door, from .1: the three count together.
    let r = imap_login(imap, ip(1), user, wrong).await;
    assert!(r.contains("NO [AUTHENTICATIONFAILED]"), "{r}");
    let r = pop3_login(pop3, ip(1), user, wrong).await;
    assert!(r.starts_with("-ERR [AUTH]"), "{r}");
    let r = smtp_auth(smtp, ip(1), user, wrong).await;
    assert!(r.starts_with("535"), "{r}");

    // Spent: every door now gives its temporary failure, even for the right key.
    let r = imap_login(imap, ip(1), user, key).await;
    assert!(r.contains("NO [UNAVAILABLE]"), "{r}");
    let r = imap_authenticate(imap, ip(1), user, key).await;
    assert!(r.contains("NO [UNAVAILABLE]"), "{r}");
    let r = pop3_login(pop3, ip(1), user, key).await;
    assert!(r.starts_with("-ERR [LOGIN-DELAY]"), "{r}");
    let r = smtp_auth(smtp, ip(1), user, key).await;
    assert!(r.starts_with("454 4.7.0"), "{r}");

    // The inbox's owner, from another address, logs in at every door within a second.
    within_a_second("the owner at every door", async {
        let r = imap_login(imap, ip(2), user, key).await;
        assert!(r.starts_with("a OK"), "{r}");
        let r = pop3_login(pop3, ip(2), user, key).await;
        assert!(r.starts_with("+OK"), "{r}");
        let r = smtp_auth(smtp, ip(2), user, key).await;
        assert!(r.starts_with("235"), "{r}");
    })
    .await;
    assert!(s.refusals("imap", "login_throttled").await >= 2);
    assert!(s.refusals("pop3", "login_throttled").await >= 1);
    assert!(s.refusals("smtp", "login_throttled").await >= 1);
    s.stop().await;
}
