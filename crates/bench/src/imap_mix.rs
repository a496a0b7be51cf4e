//! The IMAP mix under load (issue #13): `sessions` sessions over a few users at once, each
//! running `mailroom_testkit::imap_mix` (SELECT, FETCH, STORE, EXPUNGE, APPEND, SEARCH,
//! NOOP, LOGOUT and a new LOGIN) for a while, with its client-side model counting every
//! answer that breaks a rule and every command not answered `OK`: the kind of stress mail
//! servers are compared on (imaptest), with protocol errors beside throughput.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mailroom_testkit::imap_mix::{Limit, run_session};

/// One run of the mix on one server.
pub struct MixRun {
    /// Commands answered per second, over all sessions.
    pub ops_per_sec: f64,
    /// Answers that broke a rule, and commands not answered `OK`.
    pub problems: Vec<String>,
}

/// Runs the mix: `sessions` sessions spread over `users` (user, password) for `duration`.
pub async fn run(
    addr: SocketAddr,
    users: &[(String, String)],
    sessions: usize,
    duration: Duration,
    seed: u64,
) -> anyhow::Result<MixRun> {
    anyhow::ensure!(!users.is_empty(), "the mix needs at least one user");
    let start = Instant::now();
    let until = start + duration;
    let mut tasks = Vec::new();
    for i in 0..sessions {
        let (user, pass) = users[i % users.len()].clone();
        let seed = seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        tasks.push(tokio::spawn(async move {
            run_session(addr, &user, &pass, seed, Limit::Until(until)).await
        }));
    }
    let mut commands = 0;
    let mut problems = Vec::new();
    for t in tasks {
        let report = t.await?;
        commands += report.commands;
        problems.extend(report.problems);
    }
    Ok(MixRun {
        ops_per_sec: commands as f64 / start.elapsed().as_secs_f64(),
        problems,
    })
}
