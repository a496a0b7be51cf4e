//! `mailroom-bench imap`: IMAP operations and memory per idle connection, Mailroom beside
//! Dovecot in the same run, and the mix of `mailroom_testkit::imap_mix` with its protocol
//! errors counted (issue #13).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::{Guard, free_port, imap, imap_mix, load, median, smtp, wait_ready, webhooks};

pub struct ImapArgs {
    pub sessions: usize,
    pub duration: Duration,
    pub rounds: usize,
    pub messages: usize,
    pub size: usize,
    pub idle: usize,
    pub idle_compare: usize,
    pub dovecot: PathBuf,
    pub mailroom: Option<PathBuf>,
    pub mix_users: usize,
    pub mix_sessions: usize,
    pub mix_duration: Duration,
}

/// Resident and proportional memory (KiB) of a process and all its descendants: Dovecot
/// serves each connection from a process of its own, so its cost is the sum over the tree.
/// PSS splits shared pages between the processes that share them, so summing it does not
/// count the shared library code 1000 times.
fn tree_memory_kib(root: u32) -> anyhow::Result<(u64, u64)> {
    let mut children: std::collections::HashMap<u32, Vec<u32>> = Default::default();
    for e in std::fs::read_dir("/proc")? {
        let Ok(pid) = e?.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The parent pid is the second field after the parenthesised command name.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let (mut rss, mut pss) = (0, 0);
    let mut todo = vec![root];
    while let Some(pid) = todo.pop() {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
            let field = |name: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                    .unwrap_or(0)
            };
            rss += field("Rss:");
            pss += field("Pss:");
        }
        todo.extend(children.get(&pid).into_iter().flatten());
    }
    Ok((rss, pss))
}

/// Starts Dovecot in `dir` on `port`, with one user whose INBOX is a Maildir.
fn start_dovecot(
    binary: &std::path::Path,
    dir: &std::path::Path,
    port: u16,
    pass: &str,
) -> anyhow::Result<Guard> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    for sub in ["mail", "home"] {
        std::fs::create_dir_all(dir.join(sub))?;
        let status = Command::new("chown")
            .args(["dovecot:dovecot", &dir.join(sub).display().to_string()])
            .status()?;
        if !status.success() {
            bail!("chown failed");
        }
    }
    let d = dir.display();
    let conf = format!(
        "base_dir = {d}/run\nstate_dir = {d}/state\ninstance_name = mailroom-bench-{port}\n\
         log_path = {d}/dovecot.log\nprotocols = imap\nlisten = 127.0.0.1\nssl = no\n\
         disable_plaintext_auth = no\nauth_mechanisms = plain login\n\
         mail_location = maildir:{d}/mail/%n\nfirst_valid_uid = 1\n\
         default_internal_user = dovecot\ndefault_login_user = dovenull\n\
         default_process_limit = 20000\ndefault_client_limit = 40000\n\
         passdb {{\n  driver = static\n  args = password={pass}\n}}\n\
         userdb {{\n  driver = static\n  args = uid=dovecot gid=dovecot home={d}/home/%n\n}}\n\
         protocol imap {{\n  mail_max_userip_connections = 100000\n}}\n\
         service imap-login {{\n  inet_listener imap {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n\
           inet_listener imaps {{\n    port = 0\n  }}\n}}\n\
         service imap {{\n  process_limit = 20000\n}}\n"
    );
    let path = dir.join("dovecot.conf");
    std::fs::write(&path, conf)?;
    let child = Command::new(binary)
        .arg("-F")
        .arg("-c")
        .arg(&path)
        .stdout(Stdio::null())
        .spawn()
        .context("starting dovecot")?;
    Ok(Guard(child))
}

pub fn imap_bench(a: ImapArgs) -> anyhow::Result<()> {
    let me = std::env::current_exe()?;
    let mailroom = a
        .mailroom
        .clone()
        .unwrap_or_else(|| me.with_file_name("mailroom"));
    let rt = tokio::runtime::Runtime::new()?;
    let dir = tempfile::tempdir()?;
    let port = |_: &str| -> anyhow::Result<String> {
        Ok(SocketAddr::from(([127, 0, 0, 1], free_port()?)).to_string())
    };
    let http: SocketAddr = port("http")?.parse()?;
    let imap_addr: SocketAddr = port("imap")?.parse()?;
    let dns = rt.block_on(mailroom_testkit::TestDns::start())?;
    let server = Guard(
        Command::new(&mailroom)
            .args(["serve", "--dev", "--default-domain", "bench.test"])
            .current_dir(dir.path())
            .env("MAILROOM_HTTP_LISTEN", http.to_string())
            .env("MAILROOM_SMTP_LISTEN", port("smtp")?)
            .env("MAILROOM_SUBMISSION_LISTEN", port("submission")?)
            .env("MAILROOM_SUBMISSIONS_LISTEN", port("submissions")?)
            .env("MAILROOM_POP3_LISTEN", port("pop3")?)
            .env("MAILROOM_POP3S_LISTEN", port("pop3s")?)
            .env("MAILROOM_IMAP_LISTEN", imap_addr.to_string())
            .env("MAILROOM_IMAPS_LISTEN", port("imaps")?)
            .env("MAILROOM_DNS_RESOLVER", dns.addr.to_string())
            .env("MAILROOM_LOG", "warn")
            .env("MAILROOM_INBOX_CREATE_PER_HOUR", "100000")
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
    let key = webhooks::field(&created, "/result/inbox_api_key")?;
    let user = "bench@bench.test".to_owned();
    rt.block_on(imap::populate(imap_addr, &user, &key, a.messages, a.size))?;

    let dovecot_dir = tempfile::tempdir()?;
    let dovecot_addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let dovecot = if a.dovecot.exists() {
        let g = start_dovecot(
            &a.dovecot,
            dovecot_dir.path(),
            dovecot_addr.port(),
            "secret",
        )?;
        rt.block_on(smtp::wait_listening(dovecot_addr))?;
        rt.block_on(imap::populate(
            dovecot_addr,
            "bench",
            "secret",
            a.messages,
            a.size,
        ))?;
        Some(g)
    } else {
        eprintln!(
            "{} not found: measuring Mailroom alone",
            a.dovecot.display()
        );
        None
    };

    println!(
        "| operation ({} sessions, INBOX of {} × {} B) | Mailroom ops/s | Dovecot ops/s | ratio |",
        a.sessions, a.messages, a.size
    );
    println!("|---|---|---|---|");
    for op in imap::Op::ALL {
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        for _ in 0..a.rounds {
            if dovecot.is_some() {
                theirs.push(rt.block_on(imap::run_op(
                    dovecot_addr,
                    "bench",
                    "secret",
                    a.sessions,
                    a.messages,
                    op,
                    a.duration,
                ))?);
            }
            ours.push(rt.block_on(imap::run_op(
                imap_addr, &user, &key, a.sessions, a.messages, op, a.duration,
            ))?);
        }
        let ratios: Vec<f64> = ours.iter().zip(&theirs).map(|(x, y)| x / y).collect();
        println!(
            "| `{}` | {:.0} | {} | {} |",
            op.label(),
            median(ours.clone()),
            if theirs.is_empty() {
                "—".to_owned()
            } else {
                format!("{:.0}", median(theirs.clone()))
            },
            if ratios.is_empty() {
                "—".to_owned()
            } else {
                format!("**{:.2}**", median(ratios))
            },
        );
    }

    if a.mix_users > 0 {
        let ours = mix_users_on_mailroom(&rt, http, imap_addr, a.mix_users)?;
        let theirs = match &dovecot {
            Some(_) => Some(mix_users_on_dovecot(&rt, dovecot_addr, a.mix_users)?),
            None => None,
        };
        mix_table(
            &rt,
            &a,
            (imap_addr, ours.as_slice()),
            theirs.as_ref().map(|t| (dovecot_addr, t.as_slice())),
        )?;
    }

    // Memory per idle connection: logged in, with and without INBOX selected.
    let idle_figure = |pid: u32,
                       addr: SocketAddr,
                       user: &str,
                       pass: &str,
                       n: usize,
                       select: bool|
     -> anyhow::Result<(f64, f64, f64)> {
        std::thread::sleep(Duration::from_millis(500));
        let (rss0, pss0) = tree_memory_kib(pid)?;
        let conns = rt.block_on(imap::idle_connections(addr, user, pass, n, select))?;
        std::thread::sleep(Duration::from_secs(2));
        let (rss1, pss1) = tree_memory_kib(pid)?;
        drop(conns);
        let per = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / n as f64;
        Ok((per(rss0, rss1), per(pss0, pss1), pss1 as f64 / 1024.0))
    };
    println!();
    println!(
        "| idle connections | Mailroom per connection (RSS / PSS) | Mailroom total PSS | Dovecot per connection (RSS / PSS) | Dovecot total PSS |"
    );
    println!("|---|---|---|---|---|");
    let n = a.idle_compare;
    let fmt = |f: (f64, f64, f64)| {
        (
            format!("{:.1} KiB / {:.1} KiB", f.0, f.1),
            format!("{:.1} MiB", f.2),
        )
    };
    for (select, what) in [(false, "logged in"), (true, "logged in, INBOX selected")] {
        let ours = idle_figure(server.0.id(), imap_addr, &user, &key, n, select)?;
        let theirs = match &dovecot {
            Some(g) => Some(idle_figure(
                g.0.id(),
                dovecot_addr,
                "bench",
                "secret",
                n,
                select,
            )?),
            None => None,
        };
        let (o1, o2) = fmt(ours);
        let (t1, t2) = theirs.map(fmt).unwrap_or(("—".into(), "—".into()));
        println!("| {n}, {what} | {o1} | {o2} | {t1} | {t2} |");
        std::thread::sleep(Duration::from_secs(1));
    }
    if a.idle > n {
        let big = idle_figure(server.0.id(), imap_addr, &user, &key, a.idle, false)?;
        let (o1, o2) = fmt(big);
        println!(
            "| {}, logged in (Mailroom only) | {o1} | {o2} | — | — |",
            a.idle
        );
    }
    Ok(())
}

/// Messages each user of the mix starts with.
const MIX_MESSAGES: usize = 20;

/// `n` inboxes on Mailroom (one account each), each with [`MIX_MESSAGES`] messages.
fn mix_users_on_mailroom(
    rt: &tokio::runtime::Runtime,
    http: SocketAddr,
    imap_addr: SocketAddr,
    n: usize,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut users = Vec::new();
    for i in 0..n {
        let created = rt.block_on(load::post_json(
            http,
            "/v1/inboxes",
            None,
            &format!("{{\"username\":\"mix{i}\"}}"),
        ))?;
        let key = webhooks::field(&created, "/result/inbox_api_key")?;
        let user = webhooks::field(&created, "/result/email")?;
        rt.block_on(imap::populate(imap_addr, &user, &key, MIX_MESSAGES, 2048))?;
        users.push((user, key));
    }
    Ok(users)
}

/// `n` users on Dovecot (its static passdb takes any name), each with [`MIX_MESSAGES`].
fn mix_users_on_dovecot(
    rt: &tokio::runtime::Runtime,
    addr: SocketAddr,
    n: usize,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut users = Vec::new();
    for i in 0..n {
        let user = format!("mix{i}");
        rt.block_on(imap::populate(addr, &user, "secret", MIX_MESSAGES, 2048))?;
        users.push((user, "secret".to_owned()));
    }
    Ok(users)
}

type MixServer<'a> = (SocketAddr, &'a [(String, String)]);

/// The mix, A B A B: commands per second and protocol errors of each server.
fn mix_table(
    rt: &tokio::runtime::Runtime,
    a: &ImapArgs,
    ours: MixServer<'_>,
    theirs: Option<MixServer<'_>>,
) -> anyhow::Result<()> {
    println!();
    println!(
        "| mix ({} sessions over {} users, {} s; SELECT FETCH STORE EXPUNGE APPEND SEARCH NOOP LOGOUT/LOGIN) | Mailroom ops/s | Mailroom protocol errors | Dovecot ops/s | Dovecot protocol errors | ratio |",
        a.mix_sessions,
        a.mix_users,
        a.mix_duration.as_secs()
    );
    println!("|---|---|---|---|---|---|");
    let (mut our_ops, mut their_ops, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut our_errors, mut their_errors) = (Vec::new(), Vec::new());
    for round in 0..a.rounds {
        let seed = round as u64 + 1;
        if let Some((addr, users)) = theirs {
            let t = rt.block_on(imap_mix::run(
                addr,
                users,
                a.mix_sessions,
                a.mix_duration,
                seed,
            ))?;
            their_ops.push(t.ops_per_sec);
            their_errors.extend(t.problems);
        }
        let o = rt.block_on(imap_mix::run(
            ours.0,
            ours.1,
            a.mix_sessions,
            a.mix_duration,
            seed,
        ))?;
        if let Some(t) = their_ops.last() {
            ratios.push(o.ops_per_sec / t);
        }
        our_ops.push(o.ops_per_sec);
        our_errors.extend(o.problems);
    }
    let dash = || "—".to_owned();
    println!(
        "| {} rounds | {:.0} | {} | {} | {} | {} |",
        a.rounds,
        median(our_ops),
        our_errors.len(),
        if their_ops.is_empty() {
            dash()
        } else {
            format!("{:.0}", median(their_ops))
        },
        if theirs.is_some() {
            their_errors.len().to_string()
        } else {
            dash()
        },
        if ratios.is_empty() {
            dash()
        } else {
            format!("**{:.2}**", median(ratios))
        },
    );
    for (who, errors) in [("Mailroom", &our_errors), ("Dovecot", &their_errors)] {
        for e in errors.iter().take(5) {
            eprintln!("{who}: {e}");
        }
    }
    Ok(())
}
