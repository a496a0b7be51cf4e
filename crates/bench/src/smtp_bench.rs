//! `mailroom-bench smtp`: inbound SMTP ingest beside a reference MTA in the same run, with
//! the DNS the SPF/DKIM/DMARC checks ask either instant or slow and lossy.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use mailroom_testkit::{DnsBehaviour, TestDns};

use crate::{Guard, free_port, load, median, smtp, vm_kib, wait_ready};

/// How the DNS server of a measured Mailroom answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DnsMode {
    /// Answers at once.
    Instant,
    /// Answers after 50 ms, drops one query in ten, and sends no SOA with "not found"
    /// (so a resolver has no negative TTL): the way an overloaded resolver behaves.
    Slow,
    /// Both, one server each, in the same rounds.
    Both,
}

pub struct SmtpArgs {
    pub sessions: usize,
    pub messages: usize,
    pub size: usize,
    pub rounds: usize,
    pub connection_per_message: bool,
    pub dns: DnsMode,
    pub reference: Option<SocketAddr>,
    pub reference_rcpt: String,
    pub mailroom: Option<PathBuf>,
}

/// One Mailroom under load, with its own DNS server.
struct Measured {
    name: &'static str,
    smtp: SocketAddr,
    server: Guard,
    _dns: TestDns,
    _dir: tempfile::TempDir,
    idle_kib: u64,
    rates: Vec<f64>,
    /// The server's CPU time (all threads, user and system) per accepted message, in µs.
    cpu_per_msg: Vec<f64>,
    last: Option<smtp::SmtpOutcome>,
}

/// CPU time a process has used, all threads, user and system, in seconds (`/proc/<pid>/stat`
/// fields 14 and 15, in clock ticks of 1/100 s on Linux).
fn cpu_secs(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces; the fields after it are plain numbers.
    let rest = stat.rsplit_once(')').context("a /proc/<pid>/stat line")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(i)
            .context("utime/stime in /proc/<pid>/stat")?
            .parse::<f64>()?)
    };
    // After ")": state is field 3, so utime (14) and stime (15) are at 11 and 12.
    Ok((tick(11)? + tick(12)?) / 100.0)
}

fn start(
    rt: &tokio::runtime::Runtime,
    mailroom: &PathBuf,
    name: &'static str,
    slow: bool,
) -> anyhow::Result<Measured> {
    let dir = tempfile::tempdir()?;
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let smtp_addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let dns = rt.block_on(TestDns::start())?;
    // The load's sender: SPF allows loopback, DMARC is published; everything else is
    // NXDOMAIN (without an SOA).
    dns.txt("example.com", "v=spf1 ip4:127.0.0.0/8 -all");
    dns.txt("_dmarc.example.com", "v=DMARC1; p=none");
    if slow {
        dns.set_behaviour(DnsBehaviour {
            delay: Duration::from_millis(50),
            drop_one_in: 10,
            mute: false,
        });
    }
    // The free tier holds 100 MiB per inbox and a run stores more: give it room, so that
    // every round measures deliveries and not refusals.
    let config = dir.path().join("bench.toml");
    std::fs::write(
        &config,
        "[tiers.free]\nmax_storage_bytes_per_inbox = 1099511627776\n\
         max_storage_bytes_per_account = 1099511627776\n",
    )?;
    let mut cmd = Command::new(mailroom);
    // Two servers run side by side: every listener on a port of its own.
    for var in [
        "SUBMISSION",
        "SUBMISSIONS",
        "IMAP",
        "IMAPS",
        "POP3",
        "POP3S",
    ] {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        cmd.env(format!("MAILROOM_{var}_LISTEN"), addr.to_string());
    }
    let server = Guard(
        cmd.args(["serve", "--dev", "--default-domain", "bench.test"])
            .arg("--config")
            .arg(&config)
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
        let req = load::Request::post(http, "/v1/inboxes", None, "{\"username\":\"bench\"}");
        load::one(http, &req).await
    })?;
    let idle_kib = vm_kib(server.0.id(), "VmRSS:")?;
    Ok(Measured {
        name,
        smtp: smtp_addr,
        server,
        _dns: dns,
        _dir: dir,
        idle_kib,
        rates: Vec::new(),
        cpu_per_msg: Vec::new(),
        last: None,
    })
}

pub fn run(a: SmtpArgs) -> anyhow::Result<()> {
    let me = std::env::current_exe()?;
    let mailroom = a
        .mailroom
        .clone()
        .unwrap_or_else(|| me.with_file_name("mailroom"));
    let rt = tokio::runtime::Runtime::new()?;
    let mut servers = Vec::new();
    if matches!(a.dns, DnsMode::Instant | DnsMode::Both) {
        servers.push(start(&rt, &mailroom, "instant DNS", false)?);
    }
    if matches!(a.dns, DnsMode::Slow | DnsMode::Both) {
        servers.push(start(&rt, &mailroom, "slow, lossy DNS without SOA", true)?);
    }
    let load = |addr: SocketAddr, rcpt: &str| smtp::SmtpLoad {
        addr,
        rcpt: rcpt.to_owned(),
        sessions: a.sessions,
        messages: a.messages,
        size: a.size,
        connection_per_message: a.connection_per_message,
    };
    let mut theirs = Vec::new();
    for _ in 0..a.rounds {
        if let Some(r) = a.reference {
            rt.block_on(smtp::wait_listening(r))?;
            theirs.push(rt.block_on(smtp::run(load(r, &a.reference_rcpt)))?.per_sec);
        }
        for m in &mut servers {
            let cpu_before = cpu_secs(m.server.0.id())?;
            let o = rt.block_on(smtp::run(load(m.smtp, "bench@bench.test")))?;
            let cpu = cpu_secs(m.server.0.id())? - cpu_before;
            m.cpu_per_msg.push(cpu * 1e6 / (o.accepted.max(1) as f64));
            m.rates.push(o.per_sec);
            m.last = Some(o);
        }
    }
    let how = if a.connection_per_message {
        "a connection per message"
    } else {
        "one session per client"
    };
    println!(
        "{} clients × {} messages × {} B, {how}, median of {} rounds",
        a.sessions, a.messages, a.size, a.rounds
    );
    println!();
    println!("| server | messages/s | last round | server CPU per message | RSS idle → peak |");
    println!("|---|---|---|---|---|");
    let reference = (!theirs.is_empty()).then(|| median(theirs.clone()));
    if let Some(r) = reference {
        println!("| reference MTA | {r:.0} | | | |");
    }
    for m in &servers {
        let o = m.last.as_ref().context("no rounds")?;
        let peak = vm_kib(m.server.0.id(), "VmHWM:")?;
        println!(
            "| Mailroom, {} | {:.0} | p50 {:.1} ms, p99 {:.1} ms, {} accepted, {} refused | {:.0} µs | {:.1} → {:.1} MiB |",
            m.name,
            median(m.rates.clone()),
            o.p50_ms,
            o.p99_ms,
            o.accepted,
            o.failed,
            median(m.cpu_per_msg.clone()),
            m.idle_kib as f64 / 1024.0,
            peak as f64 / 1024.0
        );
    }
    println!();
    for m in &servers {
        if !theirs.is_empty() {
            let ratios: Vec<f64> = m.rates.iter().zip(&theirs).map(|(x, y)| x / y).collect();
            println!(
                "- ratio Mailroom ({}) / reference, median of rounds: **{:.2}**",
                m.name,
                median(ratios)
            );
        }
    }
    if let [instant, slow] = &servers[..] {
        println!(
            "- slow-DNS / instant-DNS ingest: **{:.2}**",
            median(slow.rates.clone()) / median(instant.rates.clone())
        );
    }
    Ok(())
}
