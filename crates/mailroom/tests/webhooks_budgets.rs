//! Webhook budgets over real HTTP: a free account holds at most its tier's endpoints (403
//! with `upgrade_context` past it, counted in `mailroom_refusals_total`), and an account
//! whose endpoints hang (accept the connection, never answer) gets no more than its share
//! of delivery slots, so another account's webhook still arrives within a second.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mailroom_testkit::{Backend, TestAccount, TestServer};
use serde_json::{Value, json};

/// One test per backend, each with its own server (the configuration differs from the
/// default, so `on_both_backends!` does not fit).
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

both!(a_stuck_account_does_not_delay_another);

/// Accepts connections and never answers; counts them (one per request in flight, since a
/// request that has no answer keeps its connection).
#[derive(Clone, Default)]
struct Hanging {
    accepted: Arc<Mutex<Vec<tokio::net::TcpStream>>>,
}

impl Hanging {
    async fn serve(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let me = self.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                me.accepted.lock().unwrap().push(stream);
            }
        });
        addr
    }

    fn count(&self) -> usize {
        self.accepted.lock().unwrap().len()
    }
}

/// Answers 200 at once and notes when each request came.
#[derive(Clone, Default)]
struct Fast {
    hits: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Fast {
    async fn serve(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let me = self.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |body: String| {
                let me = me.clone();
                async move {
                    me.hits.lock().unwrap().push((Instant::now(), body));
                    "ok"
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    }

    /// When the first request whose body contains `needle` came, waiting up to `secs`.
    async fn first_with(&self, needle: &str, secs: u64) -> Instant {
        let until = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some((at, _)) = self
                .hits
                .lock()
                .unwrap()
                .iter()
                .find(|(_, b)| b.contains(needle))
            {
                return *at;
            }
            assert!(
                Instant::now() < until,
                "no webhook with {needle:?} within {secs}s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn create_hook(s: &TestServer, a: &TestAccount, url: &str) -> (u16, Value) {
    let (status, body, _) = s
        .call(
            "POST",
            "/v1/webhooks",
            Some(&a.account_key),
            Some(json!({"url": url, "events": ["message.received"]})),
        )
        .await;
    (status, body)
}

/// The value of `mailroom_refusals_total{door=…, reason=…}` (0 before the first one).
pub async fn refusals(s: &TestServer, door: &str, reason: &str) -> u64 {
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

async fn a_stuck_account_does_not_delay_another(backend: Backend) {
    // Few slots, so that without a per-account share one account would take them all; a
    // timeout long enough that the hanging deliveries stay stuck for the whole test.
    let Some(s) = TestServer::start_with(backend, |c| {
        c.webhook_timeout = Duration::from_secs(30);
        c.webhook_budgets.max_in_flight = 8;
        c.webhook_budgets.max_in_flight_per_account = 4;
        c.webhook_budgets.max_per_endpoint = 2;
    })
    .await
    else {
        eprintln!("skipped: MAILROOM_TEST_DATABASE_URL is not set");
        return;
    };
    let hanging = Hanging::default();
    let hang_addr = hanging.serve().await;
    let fast = Fast::default();
    let fast_addr = fast.serve().await;

    // A (free tier) registers its 3 endpoints; the 4th is refused with an upgrade offer.
    let a = s.new_account("stuck").await;
    for i in 0..3 {
        let (st, body) = create_hook(&s, &a, &format!("http://{hang_addr}/hook{i}")).await;
        assert_eq!(st, 201, "{body}");
    }
    let before = refusals(&s, "webhooks", "webhook_limit").await;
    let (st, body) = create_hook(&s, &a, &format!("http://{hang_addr}/hook9")).await;
    assert_eq!(st, 403, "{body}");
    assert_eq!(body["error"], "WEBHOOK_LIMIT_REACHED");
    let upgrade = &body["upgrade_context"];
    assert!(
        upgrade["operator_action_url"]
            .as_str()
            .unwrap()
            .contains("token="),
        "{body}"
    );
    assert!(
        upgrade["operator_action_label"]
            .as_str()
            .unwrap()
            .contains("Developer"),
        "{body}"
    );
    assert!(refusals(&s, "webhooks", "webhook_limit").await > before);
    let caps = s.get_json(&a.account_key, "/v1/capabilities").await;
    let limits = &caps["result"]["limits"];
    assert_eq!(limits["max_webhooks"], 3, "{caps}");
    assert_eq!(limits["current_webhooks"], 3, "{caps}");
    let cannot = caps["result"]["cannot"].as_array().unwrap();
    assert!(
        cannot.iter().any(|r| r["action"] == "webhooks.create"),
        "{caps}"
    );

    // A burst of mail for A: 15 messages × 3 hanging endpoints = 45 deliveries, far more
    // than the 8 slots.
    for i in 0..15 {
        s.deliver_smtp(&a.email, &format!("Subject: burst {i}\r\n\r\nhi"))
            .await;
    }
    let until = Instant::now() + Duration::from_secs(10);
    while hanging.count() < 4 {
        assert!(Instant::now() < until, "A's deliveries never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // B registers a fast endpoint; B's mail arrives there within a second while A's
    // deliveries are stuck.
    let b = s.new_account("unstuck").await;
    let (st, body) = create_hook(&s, &b, &format!("http://{fast_addr}/hook")).await;
    assert_eq!(st, 201, "{body}");
    s.deliver_smtp(&b.email, "Subject: for-b\r\n\r\nhello")
        .await;
    let stored = Instant::now();
    let at = fast.first_with("for-b", 10).await;
    let took = at.saturating_duration_since(stored);
    assert!(took < Duration::from_secs(1), "B's webhook took {took:?}");

    // A never had more than its share in flight: 4 of the 8 slots.
    assert_eq!(hanging.count(), 4, "A's deliveries in flight");
    s.stop().await;
}
