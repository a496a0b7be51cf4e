//! Helpers for generated-input tests (our fuzzing on stable Rust): deterministic
//! generation with `proptest` strategies, a count of panics anywhere in the process (a
//! server task that panics is caught by Tokio and would otherwise go unnoticed), the peak
//! memory of the process, and many sessions driven at once over real sockets.
//!
//! The runs are deterministic (a fixed seed per test) so a failure in CI is a failure on
//! every machine; the input that failed is printed, since a session is not shrunk.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::budget::connect_from;

/// A generator with a fixed seed: the same inputs on every run.
pub fn generator(seed: u8) -> TestRunner {
    let config = Config {
        failure_persistence: None,
        ..Config::default()
    };
    TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32]),
    )
}

/// One value of `strategy`.
pub fn sample<S: Strategy>(generator: &mut TestRunner, strategy: &S) -> S::Value {
    strategy
        .new_tree(generator)
        .expect("the strategy gives a value")
        .current()
}

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Counts every panic from now on (on any thread: server tasks included), keeping the
/// default report. Call once per test process, before the server starts.
pub fn count_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default(info);
    }));
}

/// Panics seen since [`count_panics`].
pub fn panics() -> usize {
    PANICS.load(Ordering::SeqCst)
}

/// The process's resident memory now and at its peak (`VmRSS`, `VmHWM`), in bytes.
pub fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// What one session was sent and what came back.
pub struct Exchange {
    pub input: Vec<u8>,
    pub output: Vec<u8>,
    /// The server closed the connection (rather than the read timing out).
    pub closed: bool,
}

/// Sends each input over its own connection to `addr` (from 127.0.0.1 to 127.0.0.16 in
/// turn, so that many short connections do not run out of ports), `parallel` at a time:
/// writes the input, closes the sending half, and reads until the server closes or
/// `timeout` passes. `check` sees every exchange.
pub async fn sessions<F>(
    addr: SocketAddr,
    inputs: Vec<Vec<u8>>,
    parallel: usize,
    timeout: Duration,
    check: F,
) where
    F: Fn(&Exchange) + Send + Sync + 'static,
{
    let check = Arc::new(check);
    let queue = Arc::new(std::sync::Mutex::new(inputs.into_iter().enumerate()));
    let mut workers = Vec::new();
    for _ in 0..parallel {
        let (queue, check) = (queue.clone(), check.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let next = queue.lock().expect("the input queue").next();
                let Some((i, input)) = next else { break };
                let from = IpAddr::from([127, 0, 0, 1 + (i % 16) as u8]);
                let exchange = exchange(addr, from, input, timeout).await;
                check(&exchange);
            }
        }));
    }
    for w in workers {
        w.await.expect("a session worker");
    }
}

async fn exchange(addr: SocketAddr, from: IpAddr, input: Vec<u8>, timeout: Duration) -> Exchange {
    let mut stream = connect_from(addr, from).await;
    let (mut r, mut w) = stream.split();
    let mut output = Vec::new();
    // Write and read at once: a server may answer (and stop reading) before the input
    // ends, and a full socket buffer must not deadlock the test.
    let write = async {
        let _ = w.write_all(&input).await;
        let _ = w.shutdown().await;
    };
    let read = async {
        let mut buf = [0u8; 8192];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(n) => output.extend_from_slice(&buf[..n]),
            }
        }
    };
    let closed = tokio::time::timeout(timeout, async {
        let ((), closed) = tokio::join!(write, read);
        closed
    })
    .await
    .unwrap_or(false);
    Exchange {
        input,
        output,
        closed,
    }
}

/// Runs `f` and reports how long it took (for the test's own log, never as a criterion).
pub async fn timed<F: Future>(what: &str, f: F) -> F::Output {
    let started = std::time::Instant::now();
    let v = f.await;
    eprintln!("{what}: {:?}", started.elapsed());
    v
}
