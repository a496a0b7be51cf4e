//! The test server: the real `mailroom` server, started in-process on ephemeral loopback
//! ports with a fresh data directory and database, plus helpers to make accounts.
//!
//! ```no_run
//! # async fn demo() {
//! use mailroom_testkit::{Backend, TestServer};
//! let Some(server) = TestServer::start(Backend::Sqlite).await else { return };
//! let account = server.new_account("agent").await;
//! let answer = server.http.get(server.url("/v1/account"))
//!     .bearer_auth(&account.account_key).send().await.unwrap();
//! assert_eq!(answer.status(), 200);
//! server.stop().await;
//! # }
//! ```
//!
//! [`on_both_backends!`] runs one test body on SQLite and, when
//! `MAILROOM_TEST_DATABASE_URL` is set, on PostgreSQL (in a schema of its own).

pub mod budget;
mod dns;
pub mod fuzz;
pub mod imap_mix;

pub use dns::{Behaviour as DnsBehaviour, TestDns};

use std::net::SocketAddr;
use std::path::PathBuf;

use mailroom::RunningServer;
use mailroom::config::{Config, ServeArgs};
use mailroom_store::testing::TestDatabase;
use serde_json::Value;

pub use mailroom;

/// Which database a test server uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A running test server. Call [`TestServer::stop`] at the end of a test to shut it down
/// gracefully (dropping it leaves the server task to end with the test's runtime).
pub struct TestServer {
    pub base_url: String,
    pub http_addr: SocketAddr,
    /// A client for this server (no proxy, short timeouts).
    pub http: reqwest::Client,
    pub config: Config,
    pub database_url: String,
    pub server: Option<RunningServer>,
    /// The DNS server this server's resolver asks; add records to it.
    pub dns: TestDns,
    _db: TestDatabase,
    _data: tempfile::TempDir,
}

/// An account made through the API, with the secrets its creation showed once.
#[derive(Debug, Clone)]
pub struct TestAccount {
    pub account_id: String,
    pub account_key: String,
    pub inbox_id: String,
    pub inbox_key: String,
    pub email: String,
}

/// The configuration tests start from: `--dev`, every listener on `127.0.0.1:0`, host
/// `mail.test`, mail domain `mailroom.test`, and an account-creation rate limit high enough
/// that tests never meet it unless they lower it.
pub fn test_config(data_dir: PathBuf, database_url: Option<String>) -> Config {
    let any = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    let args = ServeArgs {
        dev: true,
        hostname: Some("mail.test".into()),
        default_domain: Some("mailroom.test".into()),
        http_listen: any,
        smtp_listen: any,
        submission_listen: any,
        submissions_listen: any,
        imap_listen: any,
        imaps_listen: any,
        pop3_listen: any,
        pop3s_listen: any,
        inbox_create_per_hour: Some(100_000),
        ..ServeArgs::default()
    };
    let mut config = Config::resolve(&args).expect("the test configuration is valid");
    config.data_dir = data_dir;
    config.database_url = database_url;
    config.master_secret = None;
    config
}

impl TestServer {
    /// Starts a server on `backend`; `None` for PostgreSQL when
    /// `MAILROOM_TEST_DATABASE_URL` is not set.
    pub async fn start(backend: Backend) -> Option<TestServer> {
        Self::start_with(backend, |_| {}).await
    }

    /// Like [`TestServer::start`], with a chance to change the configuration first.
    pub async fn start_with(
        backend: Backend,
        adjust: impl FnOnce(&mut Config),
    ) -> Option<TestServer> {
        let data = tempfile::Builder::new()
            .prefix("mailroom-testkit-")
            .tempdir()
            .expect("a temporary directory");
        let db = match backend {
            Backend::Sqlite => TestDatabase::sqlite().expect("a SQLite test database"),
            Backend::Postgres => TestDatabase::postgres()
                .await
                .expect("a PostgreSQL test schema")?,
        };
        let url = db.url.clone();
        let dns = TestDns::start().await.expect("a test DNS server");
        let mut config = test_config(data.path().join("data"), Some(url.clone()));
        config.dns_resolver = Some(dns.addr);
        adjust(&mut config);
        let server = mailroom::start(config.clone())
            .await
            .expect("the server starts");
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(std::time::Duration::from_secs(90))
            .build()
            .expect("an HTTP client");
        Some(TestServer {
            base_url: server.public_url.clone(),
            http_addr: server.http_addr,
            http,
            config,
            database_url: url,
            server: Some(server),
            dns,
            _db: db,
            _data: data,
        })
    }

    /// `base_url` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Creates an account and its first inbox through `POST /v1/inboxes`.
    pub async fn new_account(&self, username: &str) -> TestAccount {
        let resp = self
            .http
            .post(self.url("/v1/inboxes"))
            .json(&serde_json::json!({"username": username}))
            .send()
            .await
            .expect("POST /v1/inboxes");
        assert_eq!(
            resp.status().as_u16(),
            201,
            "creating an account for a test"
        );
        let body: Value = resp.json().await.expect("JSON");
        let r = &body["result"];
        let s = |k: &str| {
            r[k].as_str()
                .unwrap_or_else(|| panic!("{k} in {body}"))
                .to_owned()
        };
        TestAccount {
            account_id: s("account_id"),
            account_key: s("account_api_key"),
            inbox_id: s("id"),
            inbox_key: s("inbox_api_key"),
            email: s("email"),
        }
    }

    /// GETs `path` with `key` and returns the JSON answer, asserting a 200.
    pub async fn get_json(&self, key: &str, path: &str) -> Value {
        let resp = self
            .http
            .get(self.url(path))
            .bearer_auth(key)
            .send()
            .await
            .expect("GET");
        let status = resp.status();
        let body: Value = resp.json().await.expect("a JSON body");
        assert_eq!(status.as_u16(), 200, "GET {path}: {body}");
        body
    }

    /// Delivers `message` (headers and body, CRLF line ends) to `to` through the MX
    /// listener with a plain SMTP session, dot-stuffing it as a client must, and asserting
    /// every reply succeeds.
    pub async fn deliver_smtp(&self, to: &str, message: &str) {
        use std::io::{BufRead, BufReader, Write};
        let addr = self.server.as_ref().expect("running").smtp_addr;
        let stuffed: Vec<String> = message
            .split("\r\n")
            .map(|line| {
                if line.starts_with('.') {
                    format!(".{line}")
                } else {
                    line.to_owned()
                }
            })
            .collect();
        let (to, message) = (to.to_owned(), stuffed.join("\r\n"));
        tokio::task::spawn_blocking(move || {
            let stream = std::net::TcpStream::connect(addr).expect("connect to SMTP");
            stream
                .set_read_timeout(Some(std::time::Duration::from_secs(20)))
                .expect("a read timeout");
            let mut reader = BufReader::new(stream.try_clone().expect("clone the stream"));
            let mut writer = stream;
            let mut reply = || loop {
                let mut line = String::new();
                reader.read_line(&mut line).expect("an SMTP reply");
                if line.as_bytes().get(3) != Some(&b'-') {
                    return line;
                }
            };
            assert!(reply().starts_with("220"));
            let commands = [
                "EHLO testkit".to_owned(),
                "MAIL FROM:<sender@example.com>".to_owned(),
                format!("RCPT TO:<{to}>"),
                "DATA".to_owned(),
                format!("{message}\r\n."),
                "QUIT".to_owned(),
            ];
            for cmd in commands {
                writer
                    .write_all(format!("{cmd}\r\n").as_bytes())
                    .expect("write to SMTP");
                let r = reply();
                assert!(r.starts_with('2') || r.starts_with('3'), "{cmd}: {r}");
            }
        })
        .await
        .expect("the SMTP client task");
    }

    /// Runs `mailroom admin set-tier` logic against this server's database.
    pub async fn set_tier(&self, account_id: &str, tier: mailroom_core::Tier) {
        self.server
            .as_ref()
            .expect("running")
            .services
            .set_tier(account_id, tier)
            .await
            .expect("set tier");
    }

    /// A second server on the same database (its own data directory and ports), as when
    /// several processes share one PostgreSQL.
    pub async fn start_beside(&self) -> TestServer {
        let data = tempfile::Builder::new()
            .prefix("mailroom-testkit-")
            .tempdir()
            .expect("a temporary directory");
        let mut config = self.config.clone();
        config.data_dir = data.path().join("data");
        let server = mailroom::start(config.clone())
            .await
            .expect("the second server starts");
        TestServer {
            base_url: server.public_url.clone(),
            http_addr: server.http_addr,
            http: self.http.clone(),
            config,
            database_url: self.database_url.clone(),
            server: Some(server),
            dns: self.dns.clone(),
            _db: TestDatabase {
                url: self.database_url.clone(),
                dir: None,
            },
            _data: data,
        }
    }

    /// Stops the server gracefully and starts it again on the same data directory and
    /// database (new ports when the configuration asked for port 0).
    pub async fn restart(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("graceful shutdown");
        }
        let server = mailroom::start(self.config.clone())
            .await
            .expect("the server restarts");
        self.base_url = server.public_url.clone();
        self.http_addr = server.http_addr;
        self.server = Some(server);
    }

    /// Stops the server gracefully but keeps its data, for a later [`TestServer::resume`]
    /// (a peer that is down for a while).
    pub async fn halt(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("graceful shutdown");
        }
    }

    /// Starts a halted server again with the same configuration.
    pub async fn resume(&mut self) {
        assert!(self.server.is_none(), "resume a halted server only");
        let server = mailroom::start(self.config.clone())
            .await
            .expect("the server starts again");
        self.base_url = server.public_url.clone();
        self.http_addr = server.http_addr;
        self.server = Some(server);
    }

    /// Shuts the server down gracefully.
    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("graceful shutdown");
        }
    }
}

/// Generates, for each named `async fn case(server: TestServer)`, a module with a `sqlite`
/// and a `postgres` test. The PostgreSQL test says it was skipped when
/// `MAILROOM_TEST_DATABASE_URL` is not set.
#[macro_export]
macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let server = $crate::TestServer::start($crate::Backend::Sqlite)
                    .await
                    .expect("SQLite is always available");
                super::$case(server).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                match $crate::TestServer::start($crate::Backend::Postgres).await {
                    Some(server) => super::$case(server).await,
                    None => eprintln!("skipped: MAILROOM_TEST_DATABASE_URL is not set"),
                }
            }
        }
    )*};
}

/// Like [`on_both_backends!`], with servers started by the test file's own
/// `start(backend) -> Option<TestServer>` (a configuration of its own, say smaller budgets):
/// `on_both_backends_started_by!(start; case_a, case_b)`.
#[macro_export]
macro_rules! on_both_backends_started_by {
    ($start:ident; $($case:ident),* $(,)?) => {$(
        mod $case {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let server = super::$start($crate::Backend::Sqlite)
                    .await
                    .expect("SQLite is always available");
                super::$case(server).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                match super::$start($crate::Backend::Postgres).await {
                    Some(server) => super::$case(server).await,
                    None => eprintln!("skipped: MAILROOM_TEST_DATABASE_URL is not set"),
                }
            }
        }
    )*};
}

/// A loopback port that was free a moment ago, for a listener that must keep its port
/// across restarts (a peer's MX that another server delivers to).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Runs a Python `smtplib` session on `port` (STARTTLS, login, sendmail from `from` to
/// `to`) and returns `OK` or the refusal as `CODE text`: an SMTP client nobody here wrote.
pub fn smtplib(port: u16, user: &str, pass: &str, from: &str, to: &str, body: &str) -> String {
    let code = r#"
import smtplib, sys
port, user, pw, frm, to, body = sys.argv[1:7]
try:
    s = smtplib.SMTP("127.0.0.1", int(port), timeout=20)
    s.starttls()
    s.login(user, pw)
    s.sendmail(frm, [to], body.encode())
    print("OK")
except smtplib.SMTPResponseException as e:
    print(e.smtp_code, e.smtp_error.decode())
except smtplib.SMTPRecipientsRefused as e:
    code, msg = list(e.recipients.values())[0]
    print(code, msg.decode())
except smtplib.SMTPSenderRefused as e:
    print(e.smtp_code, e.smtp_error.decode())
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", code, &port.to_string(), user, pass, from, to, body])
        .output()
        .expect("python3 runs");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl TestServer {
    /// Any API call: `method path` with an optional bearer `key` and JSON `body`; the status,
    /// the answer (JSON, or the text as a JSON string), and the headers.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
        let mut req = self.http.request(method, self.url(path));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("the request is sent");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("an answer body");
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value, headers)
    }
}
