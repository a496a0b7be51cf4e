//! `mailroom-bench imap-literals`: the server's memory while many sessions each announce a
//! big synchronizing literal on APPEND and send only part of it. The literal's buffer
//! grows with what arrives and a server-wide budget (`imap.literal_budget_bytes`) caps what
//! may be in flight, so RSS should stay near idle plus what was really sent, whatever the
//! announced sizes add up to.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;

use crate::{Guard, free_port, imap, load, rss_kib, wait_ready, webhooks};

pub struct LiteralArgs {
    pub sessions: usize,
    /// Announced literal size.
    pub size: usize,
    /// Bytes of each literal actually sent.
    pub send: usize,
    /// An already running server (with --user, --pass and --pid) instead of a fresh one.
    pub target: Option<SocketAddr>,
    pub user: Option<String>,
    pub pass: Option<String>,
    pub pid: Option<u32>,
    pub mailroom: Option<PathBuf>,
}

/// A fresh release server (SQLite in a temporary directory) and one inbox on it.
struct Fresh {
    server: Guard,
    _dir: tempfile::TempDir,
    imap: SocketAddr,
    user: String,
    pass: String,
}

fn start(mailroom: Option<PathBuf>, rt: &tokio::runtime::Runtime) -> anyhow::Result<Fresh> {
    let me = std::env::current_exe()?;
    let mailroom = mailroom.unwrap_or_else(|| me.with_file_name("mailroom"));
    let dir = tempfile::tempdir()?;
    let port = || -> anyhow::Result<String> {
        Ok(SocketAddr::from(([127, 0, 0, 1], free_port()?)).to_string())
    };
    let http: SocketAddr = port()?.parse()?;
    let imap: SocketAddr = port()?.parse()?;
    let server = Guard(
        Command::new(&mailroom)
            .args(["serve", "--dev", "--default-domain", "bench.test"])
            .current_dir(dir.path())
            .env("MAILROOM_HTTP_LISTEN", http.to_string())
            .env("MAILROOM_SMTP_LISTEN", port()?)
            .env("MAILROOM_SUBMISSION_LISTEN", port()?)
            .env("MAILROOM_SUBMISSIONS_LISTEN", port()?)
            .env("MAILROOM_POP3_LISTEN", port()?)
            .env("MAILROOM_POP3S_LISTEN", port()?)
            .env("MAILROOM_IMAP_LISTEN", imap.to_string())
            .env("MAILROOM_IMAPS_LISTEN", port()?)
            .env("MAILROOM_LOG", "warn")
            .env_remove("MAILROOM_DATABASE_URL")
            .stdout(Stdio::null())
            .spawn()
            .context("starting mailroom")?,
    );
    wait_ready(http, "/healthz")?;
    let created = rt.block_on(load::post_json(
        http,
        "/v1/inboxes",
        None,
        "{\"username\":\"bench\"}",
    ))?;
    let pass = webhooks::field(&created, "/result/inbox_api_key")?;
    Ok(Fresh {
        server,
        _dir: dir,
        imap,
        user: "bench@bench.test".into(),
        pass,
    })
}

pub fn run(a: LiteralArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    let fresh;
    let (addr, user, pass, pid) = match a.target {
        Some(t) => (
            t,
            a.user.context("--user with --target")?,
            a.pass.context("--pass with --target")?,
            a.pid.context("--pid with --target (to read its RSS)")?,
        ),
        None => {
            fresh = start(a.mailroom, &rt)?;
            (
                fresh.imap,
                fresh.user.clone(),
                fresh.pass.clone(),
                fresh.server.0.id(),
            )
        }
    };
    let mut clients = rt.block_on(imap::idle_connections(
        addr, &user, &pass, a.sessions, false,
    ))?;
    std::thread::sleep(Duration::from_millis(500));
    let idle = rss_kib(pid)?;
    let (mut started, mut refused) = (0usize, 0usize);
    rt.block_on(async {
        for c in &mut clients {
            if c.start_append(a.size, a.send).await? {
                started += 1;
            } else {
                refused += 1;
            }
        }
        anyhow::Ok(())
    })?;
    // Let the server read what was sent.
    std::thread::sleep(Duration::from_secs(2));
    let loaded = rss_kib(pid)?;
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "| {} logged-in sessions, each APPEND {{{}}} with {} B sent | server RSS |",
        a.sessions, a.size, a.send
    );
    println!("|---|---|");
    println!("| idle | {:.1} MiB |", mib(idle));
    println!(
        "| literals announced ({started} given `+`, {refused} refused `NO [LIMIT]`) | {:.1} MiB (+{:.1} MiB; {:.1} MiB really sent) |",
        mib(loaded),
        mib(loaded.saturating_sub(idle)),
        (started * a.send.min(a.size)) as f64 / (1024.0 * 1024.0)
    );
    drop(clients);
    Ok(())
}
