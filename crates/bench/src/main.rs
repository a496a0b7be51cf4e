//! `mailroom-bench`: measures a release build of `mailroom` against a reference in the same
//! run (TESTING.md): a bare axum "hello" route in a process of its own, loaded by the same
//! client, alternating A B A B, reporting the median ratio.
//!
//! ```sh
//! cargo build --release -p mailroom -p mailroom-bench
//! target/release/mailroom-bench api
//! ```

mod imap;
mod imap_bench;
mod imap_literals;
mod imap_mix;
mod load;
mod smtp;
mod smtp_bench;
mod submission;
mod webhooks;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use load::{Load, Request, run_load};

#[derive(Debug, Parser)]
#[command(
    name = "mailroom-bench",
    about = "Measure Mailroom against a reference"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// HTTP API: account creations/s, GET /v1/inboxes and GET /v1/inboxes/{id} requests/s
    /// (the latter against a bare axum hello route), and the server's idle RSS.
    Api {
        /// Seconds per measurement.
        #[arg(long, default_value_t = 5)]
        duration: u64,
        /// Concurrent keep-alive connections.
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// A/B rounds for the ratio.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// The mailroom binary [default: beside this one].
        #[arg(long)]
        mailroom: Option<PathBuf>,
        /// Database URL for the server (default: SQLite in a temporary directory).
        #[arg(long)]
        database_url: Option<String>,
    },
    /// SMTP: N clients × M messages of S bytes into one inbox of a fresh server (SQLite),
    /// with instant and/or slow, lossy DNS behind the SPF/DKIM/DMARC checks, alternating
    /// with a reference MTA at --reference (crates/bench/scripts/postfix-reference.sh sets
    /// up Postfix on 127.0.0.1:2526).
    Smtp {
        #[arg(long, default_value_t = 50)]
        sessions: usize,
        #[arg(long, default_value_t = 40)]
        messages: usize,
        /// Message size in bytes.
        #[arg(long, default_value_t = 10240)]
        size: usize,
        /// A/B rounds.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// A reference SMTP server (IP:PORT) that accepts mail for --reference-rcpt.
        #[arg(long)]
        reference: Option<SocketAddr>,
        #[arg(long, default_value = "bench@bench.test")]
        reference_rcpt: String,
        /// A new connection for every message (as smtp-source and most MTAs send).
        #[arg(long)]
        connection_per_message: bool,
        /// The DNS behind the checks.
        #[arg(long, value_enum, default_value = "both")]
        dns: smtp_bench::DnsMode,
        #[arg(long)]
        mailroom: Option<PathBuf>,
    },
    /// Submission: authenticated sessions (STARTTLS + AUTH with an inbox key) sending to a
    /// hosted inbox, then to remote addresses that the outbound queue relays to Postfix's
    /// smtp-sink; and the same load sent straight to smtp-sink as the reference.
    Submission {
        #[arg(long, default_value_t = 10)]
        sessions: usize,
        #[arg(long, default_value_t = 50)]
        messages: usize,
        /// Message size in bytes.
        #[arg(long, default_value_t = 10240)]
        size: usize,
        /// The smtp-sink binary (Debian's postfix package).
        #[arg(long, default_value = "/usr/sbin/smtp-sink")]
        smtp_sink: PathBuf,
        #[arg(long)]
        mailroom: Option<PathBuf>,
    },
    /// Webhooks: delay from SMTP 250 to the webhook arriving (sequential messages), and
    /// events delivered per second for a burst sent over concurrent sessions.
    Webhooks {
        /// Messages for the latency figure, one at a time.
        #[arg(long, default_value_t = 200)]
        sequential: usize,
        /// Messages in the throughput burst.
        #[arg(long, default_value_t = 2000)]
        burst: usize,
        #[arg(long)]
        mailroom: Option<PathBuf>,
    },
    /// IMAP: SELECT / FETCH / STORE / SEARCH operations per second from concurrent sessions,
    /// and memory per idle (logged-in) connection, beside Dovecot in the same run.
    Imap {
        /// Concurrent sessions for the operations.
        #[arg(long, default_value_t = 16)]
        sessions: usize,
        /// Seconds per operation and server.
        #[arg(long, default_value_t = 3)]
        duration: u64,
        /// A/B rounds.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Messages in the INBOX.
        #[arg(long, default_value_t = 200)]
        messages: usize,
        /// Size of each message in bytes.
        #[arg(long, default_value_t = 4096)]
        size: usize,
        /// Idle connections to open on Mailroom for the memory figure.
        #[arg(long, default_value_t = 10_000)]
        idle: usize,
        /// Idle connections to open on each server for the side-by-side figure (Dovecot
        /// runs one process per connection).
        #[arg(long, default_value_t = 1000)]
        idle_compare: usize,
        /// The dovecot binary; without it only Mailroom is measured.
        #[arg(long, default_value = "/usr/sbin/dovecot")]
        dovecot: PathBuf,
        #[arg(long)]
        mailroom: Option<PathBuf>,
        /// Users (inboxes) the mix's sessions are spread over; 0 skips the mix.
        #[arg(long, default_value_t = 10)]
        mix_users: usize,
        /// Sessions running the mix at once.
        #[arg(long, default_value_t = 20)]
        mix_sessions: usize,
        /// Seconds of the mix per round and server.
        #[arg(long, default_value_t = 10)]
        mix_duration: u64,
    },
    /// IMAP literals: the server's RSS while N logged-in sessions each announce a big
    /// synchronizing literal on APPEND and send only part of it, beside its idle RSS.
    ImapLiterals {
        #[arg(long, default_value_t = 100)]
        sessions: usize,
        /// Announced literal size in bytes (25 MiB).
        #[arg(long, default_value_t = 25 * 1024 * 1024)]
        size: usize,
        /// Bytes of each literal actually sent.
        #[arg(long, default_value_t = 1024 * 1024)]
        send: usize,
        /// A running server's IMAP address instead of a fresh one (needs --user, --pass,
        /// --pid).
        #[arg(long)]
        target: Option<SocketAddr>,
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        pass: Option<String>,
        /// The process whose RSS to read with --target.
        #[arg(long)]
        pid: Option<u32>,
        #[arg(long)]
        mailroom: Option<PathBuf>,
    },
    /// The reference: a bare axum server answering GET / with "hello".
    Hello {
        #[arg(long)]
        listen: SocketAddr,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Hello { listen } => hello(listen),
        Cmd::ImapLiterals {
            sessions,
            size,
            send,
            target,
            user,
            pass,
            pid,
            mailroom,
        } => imap_literals::run(imap_literals::LiteralArgs {
            sessions,
            size,
            send,
            target,
            user,
            pass,
            pid,
            mailroom,
        }),
        Cmd::Smtp {
            sessions,
            messages,
            size,
            rounds,
            reference,
            reference_rcpt,
            connection_per_message,
            dns,
            mailroom,
        } => smtp_bench::run(smtp_bench::SmtpArgs {
            sessions,
            messages,
            size,
            rounds,
            connection_per_message,
            dns,
            reference,
            reference_rcpt,
            mailroom,
        }),
        Cmd::Submission {
            sessions,
            messages,
            size,
            smtp_sink,
            mailroom,
        } => submission_bench(sessions, messages, size, smtp_sink, mailroom),
        Cmd::Webhooks {
            sequential,
            burst,
            mailroom,
        } => webhook_bench(sequential, burst, mailroom),
        Cmd::Api {
            duration,
            connections,
            rounds,
            mailroom,
            database_url,
        } => api(duration, connections, rounds, mailroom, database_url),
        Cmd::Imap {
            sessions,
            duration,
            rounds,
            messages,
            size,
            idle,
            idle_compare,
            dovecot,
            mailroom,
            mix_users,
            mix_sessions,
            mix_duration,
        } => imap_bench::imap_bench(imap_bench::ImapArgs {
            mix_users,
            mix_sessions,
            mix_duration: Duration::from_secs(mix_duration),
            sessions,
            duration: Duration::from_secs(duration),
            rounds,
            messages,
            size,
            idle,
            idle_compare,
            dovecot,
            mailroom,
        }),
    }
}

fn submission_bench(
    sessions: usize,
    messages: usize,
    size: usize,
    smtp_sink: PathBuf,
    mailroom: Option<PathBuf>,
) -> anyhow::Result<()> {
    let me = std::env::current_exe()?;
    let mailroom = mailroom.unwrap_or_else(|| me.with_file_name("mailroom"));
    let rt = tokio::runtime::Runtime::new()?;
    let dir = tempfile::tempdir()?;
    let sink = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let user = String::from_utf8(Command::new("id").arg("-un").output()?.stdout)?;
    let _sink = Guard(
        Command::new(&smtp_sink)
            .args(["-u", user.trim(), "-c", &sink.to_string(), "1000"])
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| {
                format!("starting {} (apt-get install postfix)", smtp_sink.display())
            })?,
    );
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let submission = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let dns = rt.block_on(mailroom_testkit::TestDns::start())?;
    let server = Guard(
        Command::new(&mailroom)
            .args(["serve", "--dev", "--default-domain", "bench.test"])
            .args(["--relay", &sink.to_string()])
            .current_dir(dir.path())
            .env("MAILROOM_HTTP_LISTEN", http.to_string())
            .env("MAILROOM_SUBMISSION_LISTEN", submission.to_string())
            .env("MAILROOM_DNS_RESOLVER", dns.addr.to_string())
            .env("MAILROOM_LOG", "warn")
            // The limiter runs (its cost is measured) but never refuses the load.
            .env("MAILROOM_REQUESTS_PER_MINUTE", "4000000000")
            .env_remove("MAILROOM_DATABASE_URL")
            .stdout(Stdio::null())
            .spawn()
            .context("starting mailroom")?,
    );
    wait_ready(http, "/healthz")?;
    let sender = rt.block_on(load::post_json(
        http,
        "/v1/inboxes",
        None,
        "{\"username\":\"sender\"}",
    ))?;
    let rcpt = rt.block_on(load::post_json(
        http,
        "/v1/inboxes",
        None,
        "{\"username\":\"rcpt\"}",
    ))?;
    let field = |v: &serde_json::Value, k: &str| -> anyhow::Result<String> {
        v["result"][k]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("{k} in {v}"))
    };
    let account = field(&sender, "account_id")?;
    let from = field(&sender, "email")?;
    let key = field(&sender, "inbox_api_key")?;
    let local_rcpt = field(&rcpt, "email")?;
    let out = Command::new(&mailroom)
        .args(["admin", "set-tier", &account, "enterprise", "--data-dir"])
        .arg(dir.path().join("data"))
        .env_remove("MAILROOM_DATABASE_URL")
        .output()?;
    if !out.status.success() {
        anyhow::bail!("set-tier: {}", String::from_utf8_lossy(&out.stderr));
    }
    let run = |addr, login: Option<(String, String)>, rcpt: &str| {
        rt.block_on(submission::run(submission::SubmissionLoad {
            addr,
            login,
            from: from.clone(),
            rcpt: rcpt.to_owned(),
            sessions,
            messages,
            size,
        }))
    };
    let login = Some((from.clone(), key.clone()));
    let local = run(submission, login.clone(), &local_rcpt)?;
    let started = std::time::Instant::now();
    let remote = run(submission, login, "someone@remote.example")?;
    // The queue drains to smtp-sink: wait until nothing waits.
    let total = sessions * messages;
    let drained = loop {
        let out = Command::new(&mailroom)
            .args(["queue", "list", "--data-dir"])
            .arg(dir.path().join("data"))
            .env_remove("MAILROOM_DATABASE_URL")
            .output()?;
        if String::from_utf8_lossy(&out.stdout).contains("the queue is empty") {
            break started.elapsed().as_secs_f64();
        }
        if started.elapsed() > std::time::Duration::from_secs(600) {
            anyhow::bail!("the queue did not drain in 10 minutes");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let reference = run(sink, None, "someone@remote.example")?;
    let peak = vm_kib(server.0.id(), "VmHWM:")?;
    println!("| measurement ({sessions} sessions × {messages} messages × {size} B) | result |");
    println!("|---|---|");
    println!(
        "| submission (STARTTLS + AUTH) to a hosted inbox | {:.0} messages/s (p50 {:.1} ms, p99 {:.1} ms, {} accepted, {} refused) |",
        local.per_sec, local.p50_ms, local.p99_ms, local.accepted, local.failed
    );
    println!(
        "| submission to a remote address (queued) | {:.0} messages/s (p50 {:.1} ms, p99 {:.1} ms, {} accepted, {} refused) |",
        remote.per_sec, remote.p50_ms, remote.p99_ms, remote.accepted, remote.failed
    );
    println!(
        "| accepted and delivered to smtp-sink (queue empty) | {:.0} messages/s ({total} in {drained:.1} s) |",
        total as f64 / drained
    );
    println!(
        "| reference: the same load straight to smtp-sink (no TLS, no AUTH, no disk) | {:.0} messages/s |",
        reference.per_sec
    );
    println!("| Mailroom peak RSS | {:.1} MiB |", peak as f64 / 1024.0);
    Ok(())
}

fn vm_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in /proc/<pid>/status"))
}

fn webhook_bench(sequential: usize, burst: usize, mailroom: Option<PathBuf>) -> anyhow::Result<()> {
    let me = std::env::current_exe()?;
    let mailroom = mailroom.unwrap_or_else(|| me.with_file_name("mailroom"));
    let rt = tokio::runtime::Runtime::new()?;
    let dir = tempfile::tempdir()?;
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let smtp_addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let dns = rt.block_on(mailroom_testkit::TestDns::start())?;
    let _server = Guard(
        Command::new(&mailroom)
            .args(["serve", "--dev", "--default-domain", "bench.test"])
            .current_dir(dir.path())
            .env("MAILROOM_HTTP_LISTEN", http.to_string())
            .env("MAILROOM_SMTP_LISTEN", smtp_addr.to_string())
            .env("MAILROOM_DNS_RESOLVER", dns.addr.to_string())
            .env("MAILROOM_LOG", "warn")
            // The limiter runs (its cost is measured) but never refuses the load.
            .env("MAILROOM_REQUESTS_PER_MINUTE", "4000000000")
            .env_remove("MAILROOM_DATABASE_URL")
            .stdout(Stdio::null())
            .spawn()
            .context("starting mailroom")?,
    );
    wait_ready(http, "/healthz")?;
    rt.block_on(async {
        let (hook_addr, arrivals) = webhooks::receiver().await?;
        let created = load::post_json(http, "/v1/inboxes", None, "{\"username\":\"hooked\"}").await?;
        let key = webhooks::field(&created, "/result/account_api_key")?;
        let body = webhooks::create_webhook_body(&format!("http://{hook_addr}/hook"));
        load::post_json(http, "/v1/webhooks", Some(&key), &body).await?;
        // Latency: one message at a time, 250 -> webhook.
        let mut lat = Vec::with_capacity(sequential);
        for i in 0..sequential {
            let subject = format!("seq-{i}");
            let acked = webhooks::send_one(smtp_addr, "hooked@bench.test", &subject).await?;
            webhooks::wait_for(&arrivals, i + 1, Duration::from_secs(30)).await?;
            let at = arrivals.get(&subject).context("arrival")?;
            lat.push(at.saturating_duration_since(acked).as_secs_f64() * 1000.0);
        }
        lat.sort_by(f64::total_cmp);
        let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
        // Throughput: a burst over 25 sessions (each reconnects per message; the default
        // limit is 50 sessions per IP); events/s until the last webhook arrived.
        let start = std::time::Instant::now();
        let per = burst / 25;
        let mut tasks = Vec::new();
        for s in 0..25 {
            tasks.push(tokio::spawn(async move {
                for i in 0..per {
                    webhooks::send_one(smtp_addr, "hooked@bench.test", &format!("burst-{s}-{i}")).await?;
                }
                anyhow::Ok(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        let sent_in = start.elapsed();
        webhooks::wait_for(&arrivals, sequential + per * 25, Duration::from_secs(120)).await?;
        let all_in = start.elapsed();
        println!("| measurement | result |");
        println!("|---|---|");
        println!(
            "| SMTP 250 → webhook received, {sequential} messages one at a time | p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms |",
            pct(0.5),
            pct(0.99),
            lat[lat.len() - 1]
        );
        println!(
            "| burst of {} messages over 25 SMTP sessions | accepted in {:.2} s; all webhooks delivered after {:.2} s: **{:.0} events/s** |",
            per * 25,
            sent_in.as_secs_f64(),
            all_in.as_secs_f64(),
            (per * 25) as f64 / all_in.as_secs_f64()
        );
        anyhow::Ok(())
    })
}

fn hello(listen: SocketAddr) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "hello" }));
        let l = tokio::net::TcpListener::bind(listen).await?;
        axum::serve(l, app).await?;
        Ok(())
    })
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

struct Guard(Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/<pid>/status")
}

fn wait_ready(addr: SocketAddr, path: &str) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    for _ in 0..200 {
        let ok = rt.block_on(async {
            let req = Request::get(addr, path, None);
            load::one(addr, &req)
                .await
                .map(|s| s == 200)
                .unwrap_or(false)
        });
        if ok {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{addr}{path} did not answer 200")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn api(
    duration: u64,
    connections: usize,
    rounds: usize,
    mailroom: Option<PathBuf>,
    database_url: Option<String>,
) -> anyhow::Result<()> {
    let me = std::env::current_exe()?;
    let mailroom = match mailroom {
        Some(p) => p,
        None => me.with_file_name("mailroom"),
    };
    if !mailroom.exists() {
        bail!(
            "{} not found; build it with cargo build --release -p mailroom",
            mailroom.display()
        );
    }
    let dir = tempfile::tempdir()?;
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let hello_addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let mut cmd = Command::new(&mailroom);
    cmd.args(["serve", "--dev"])
        .current_dir(dir.path())
        .env("MAILROOM_HTTP_LISTEN", http.to_string())
        .env("MAILROOM_INBOX_CREATE_PER_HOUR", "1000000000")
        .env("MAILROOM_LOG", "warn")
        .env("MAILROOM_REQUESTS_PER_MINUTE", "4000000000")
        .stdout(Stdio::null());
    match &database_url {
        Some(url) => cmd.env("MAILROOM_DATABASE_URL", url),
        None => cmd.env_remove("MAILROOM_DATABASE_URL"),
    };
    let server = Guard(cmd.spawn().context("starting mailroom")?);
    let _hello = Guard(
        Command::new(&me)
            .args(["hello", "--listen", &hello_addr.to_string()])
            .spawn()
            .context("starting the reference server")?,
    );
    wait_ready(http, "/healthz")?;
    wait_ready(hello_addr, "/")?;
    std::thread::sleep(Duration::from_secs(2));
    let idle_rss = rss_kib(server.0.id())?;

    let rt = tokio::runtime::Runtime::new()?;
    let d = Duration::from_secs(duration);

    // Accounts for the measurements.
    let (account_key, inbox_id, inbox_key) = rt.block_on(load::create_account(http))?;
    let mut set_tier = Command::new(&mailroom);
    set_tier.args(["admin", "set-tier"]).current_dir(dir.path());
    let account_id = rt.block_on(load::account_id(http, &account_key))?;
    set_tier.args([&account_id, "enterprise"]);
    if let Some(url) = &database_url {
        set_tier.env("MAILROOM_DATABASE_URL", url);
    }
    let out = set_tier.output()?;
    if !out.status.success() {
        bail!("set-tier failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    rt.block_on(load::create_inboxes(http, &account_key, 9))?;

    let create_unauth = rt.block_on(run_load(
        http,
        Load::new(Request::post(http, "/v1/inboxes", None, ""), connections, d),
    ))?;
    let create_auth = rt.block_on(run_load(
        http,
        Load::new(
            Request::post(http, "/v1/inboxes", Some(&account_key), ""),
            connections,
            d,
        ),
    ))?;
    // The list account has 10 inboxes; make a fresh one so creations above don't count.
    let (list_key, _, _) = rt.block_on(load::create_account(http))?;
    rt.block_on(load::create_inboxes(http, &list_key, 9))?;

    let hello_req = Request::get(hello_addr, "/", None);
    let get_req = Request::get(http, &format!("/v1/inboxes/{inbox_id}"), Some(&inbox_key));
    let list_req = Request::get(http, "/v1/inboxes", Some(&list_key));
    let mut ratios = Vec::new();
    let mut hello_rps = Vec::new();
    let mut get_rps = Vec::new();
    let mut list_rps = Vec::new();
    let mut last_get = None;
    let mut last_list = None;
    for _ in 0..rounds {
        let a = rt.block_on(run_load(
            hello_addr,
            Load::new(hello_req.clone(), connections, d),
        ))?;
        let b = rt.block_on(run_load(http, Load::new(get_req.clone(), connections, d)))?;
        let c = rt.block_on(run_load(http, Load::new(list_req.clone(), connections, d)))?;
        ratios.push(b.rps / a.rps);
        hello_rps.push(a.rps);
        get_rps.push(b.rps);
        list_rps.push(c.rps);
        last_get = Some(b);
        last_list = Some(c);
    }
    let loaded_rss = rss_kib(server.0.id())?;
    let get = last_get.context("no rounds")?;
    let list = last_list.context("no rounds")?;
    println!("| measurement | result |");
    println!("|---|---|");
    println!(
        "| idle RSS after start | {:.1} MiB |",
        idle_rss as f64 / 1024.0
    );
    println!(
        "| RSS after the load below | {:.1} MiB |",
        loaded_rss as f64 / 1024.0
    );
    println!(
        "| `POST /v1/inboxes` without key (new account + inbox), {connections} conns | {:.0} /s (p50 {:.2} ms, p99 {:.2} ms, errors {}) |",
        create_unauth.rps, create_unauth.p50_ms, create_unauth.p99_ms, create_unauth.errors
    );
    println!(
        "| `POST /v1/inboxes` with account key, {connections} conns | {:.0} /s (p50 {:.2} ms, p99 {:.2} ms, errors {}) |",
        create_auth.rps, create_auth.p50_ms, create_auth.p99_ms, create_auth.errors
    );
    println!(
        "| `GET /v1/inboxes` (10 inboxes), {connections} conns | {:.0} req/s median (p50 {:.2} ms, p99 {:.2} ms, errors {}) |",
        median(list_rps),
        list.p50_ms,
        list.p99_ms,
        list.errors
    );
    println!(
        "| `GET /v1/inboxes/{{id}}` with inbox key, {connections} conns | {:.0} req/s median (p50 {:.2} ms, p99 {:.2} ms, errors {}) |",
        median(get_rps),
        get.p50_ms,
        get.p99_ms,
        get.errors
    );
    println!(
        "| reference: bare axum `GET /` \"hello\" | {:.0} req/s median |",
        median(hello_rps)
    );
    println!(
        "| **ratio** `GET /v1/inboxes/{{id}}` / hello (median of {rounds} A/B rounds) | **{:.2}** |",
        median(ratios)
    );
    Ok(())
}
