//! The webhook queue in the store: the endpoint limit, fan-out in bounded batches (also
//! when one event needs more rows than a batch may write), and leasing one account at a
//! time. On SQLite always and on PostgreSQL when `MAILROOM_TEST_DATABASE_URL` is set.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use mailroom_core::Tier;
use mailroom_core::ids::{IdKind, new_id};
use mailroom_core::secret::{KeyKind, generate_key};
use mailroom_core::time::now_ms;
use mailroom_store::testing::TestDatabase;
use mailroom_store::{
    CreateInboxOutcome, CreateWebhookOutcome, FanOutBudget, NewInbox, NewKeyRow, NewWebhook, Store,
};

use mailroom_store::store_on_both_backends as on_both_backends;

on_both_backends!(
    webhook_limit_counts_every_endpoint,
    fan_out_batches_are_bounded_and_resume_inside_an_event,
    a_split_event_completes_without_the_resume_point,
    leasing_goes_account_by_account,
);

fn key(kind: KeyKind) -> NewKeyRow {
    let k = generate_key(kind);
    NewKeyRow {
        id: new_id(IdKind::Key),
        hash: k.hash,
        display_prefix: k.display_prefix,
    }
}

fn inbox() -> NewInbox {
    NewInbox {
        id: new_id(IdKind::Inbox),
        username: format!("q-{}", &new_id(IdKind::Event)[4..14]),
        domain: "mailroom.test".into(),
        client_id: None,
        created_at: now_ms(),
    }
}

async fn account(store: &Store) -> String {
    let account_id = new_id(IdKind::Account);
    let out = store
        .create_account_with_inbox(
            &account_id,
            Tier::Free,
            &inbox(),
            &key(KeyKind::Account),
            &key(KeyKind::Inbox),
        )
        .await
        .unwrap();
    assert!(matches!(out, CreateInboxOutcome::Created(_)), "{out:?}");
    account_id
}

/// A webhook for every event type; created "at 0" so that every event of the test
/// matches it.
async fn webhook(store: &Store, account_id: &str, max: Option<u64>) -> CreateWebhookOutcome {
    store
        .create_webhook(
            account_id,
            &NewWebhook {
                id: new_id(IdKind::Webhook),
                url: "https://hooks.example.com/h".into(),
                events: vec!["*".into()],
                inbox_ids: Vec::new(),
                client_id: None,
                now: 0,
            },
            max,
        )
        .await
        .unwrap()
}

/// `n` more events (`inbox.created`) for the account.
async fn events(store: &Store, account_id: &str, n: usize) {
    for _ in 0..n {
        let out = store
            .create_inbox(account_id, &inbox(), &key(KeyKind::Inbox), None)
            .await
            .unwrap();
        assert!(matches!(out, CreateInboxOutcome::Created(_)), "{out:?}");
    }
}

/// Later than PostgreSQL's fan-out grace period, so every event is readable.
fn later() -> i64 {
    now_ms() + 10_000
}

async fn due_count(store: &Store, account_id: &str) -> usize {
    store
        .due_deliveries_of(account_id, later(), 10_000, &[])
        .await
        .unwrap()
        .len()
}

async fn webhook_limit_counts_every_endpoint(store: Store, _db: &TestDatabase) {
    let a = account(&store).await;
    for _ in 0..3 {
        assert!(matches!(
            webhook(&store, &a, Some(3)).await,
            CreateWebhookOutcome::Created(_)
        ));
    }
    assert_eq!(
        webhook(&store, &a, Some(3)).await,
        CreateWebhookOutcome::LimitReached { current: 3 }
    );
    assert_eq!(store.count_webhooks(&a).await.unwrap(), 3);
    // Another account has its own count; no limit means none.
    let b = account(&store).await;
    assert!(matches!(
        webhook(&store, &b, Some(3)).await,
        CreateWebhookOutcome::Created(_)
    ));
    assert!(matches!(
        webhook(&store, &a, None).await,
        CreateWebhookOutcome::Created(_)
    ));
}

async fn fan_out_batches_are_bounded_and_resume_inside_an_event(store: Store, _db: &TestDatabase) {
    let a = account(&store).await;
    for _ in 0..3 {
        webhook(&store, &a, None).await;
    }
    // The first inbox's event and 9 more: 10 events × 3 webhooks.
    events(&store, &a, 9).await;
    let budget = FanOutBudget {
        events: 4,
        deliveries: 5,
    };
    let (mut resume, mut batches, mut rows, mut events_read) = (None, 0, 0, 0);
    loop {
        let b = store
            .fan_out(budget, resume.as_ref(), later())
            .await
            .unwrap();
        assert!(b.deliveries <= 5 && b.events <= 4, "{b:?}");
        batches += 1;
        rows += b.deliveries;
        events_read += b.events;
        resume = b.resume;
        if !b.more {
            break;
        }
        assert!(batches < 50, "fan-out makes no progress");
    }
    assert_eq!((rows, events_read), (30, 10));
    assert!(batches >= 6, "{batches} batches for 30 rows at 5 a batch");
    assert_eq!(due_count(&store, &a).await, 30);
    // Nothing is left, and a further call writes nothing.
    let b = store.fan_out(budget, None, later()).await.unwrap();
    assert_eq!((b.events, b.deliveries, b.more), (0, 0, false));
}

async fn a_split_event_completes_without_the_resume_point(store: Store, _db: &TestDatabase) {
    let a = account(&store).await;
    for _ in 0..5 {
        webhook(&store, &a, None).await;
    }
    events(&store, &a, 1).await;
    // Each event needs 5 rows and a batch may write 2: every event is split. Another
    // process (or a restart) has no resume point; it must still get through.
    let budget = FanOutBudget {
        events: 10,
        deliveries: 2,
    };
    let mut rows = 0;
    for _ in 0..20 {
        let b = store.fan_out(budget, None, later()).await.unwrap();
        assert!(b.deliveries <= 2, "{b:?}");
        rows += b.deliveries;
        if !b.more {
            break;
        }
    }
    assert_eq!(rows, 10);
    assert_eq!(due_count(&store, &a).await, 10);
}

async fn leasing_goes_account_by_account(store: Store, _db: &TestDatabase) {
    let a = account(&store).await;
    let b = account(&store).await;
    webhook(&store, &a, None).await;
    webhook(&store, &b, None).await;
    // A has a backlog of 20 events, B one.
    events(&store, &a, 19).await;
    events(&store, &b, 0).await;
    let budget = FanOutBudget {
        events: 1000,
        deliveries: 1000,
    };
    let b_batch = store.fan_out(budget, None, later()).await.unwrap();
    assert_eq!(b_batch.deliveries, 21);
    let now = later();
    // Both accounts are found, in id order, whatever A's backlog.
    let (first, second) = if a < b { (&a, &b) } else { (&b, &a) };
    assert_eq!(
        store.next_due_account("", now).await.unwrap().as_ref(),
        Some(first)
    );
    assert_eq!(
        store.next_due_account(first, now).await.unwrap().as_ref(),
        Some(second)
    );
    assert_eq!(store.next_due_account(second, now).await.unwrap(), None);
    // A's oldest three, leased: another lease of the same ids gets nothing.
    let due = store.due_deliveries_of(&a, now, 3, &[]).await.unwrap();
    assert_eq!(due.len(), 3);
    let ids: Vec<String> = due.iter().map(|d| d.delivery_id.clone()).collect();
    let leased = store
        .lease_deliveries(&ids, now, now + 60_000)
        .await
        .unwrap();
    assert_eq!(leased.len(), 3);
    assert!(leased.iter().all(|d| d.webhook.account_id == a));
    assert!(
        store
            .lease_deliveries(&ids, now, now + 60_000)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(due_count(&store, &a).await, 17);
    // Skipping A's only endpoint (at its cap) leaves nothing of A's.
    let skip = vec![leased[0].webhook.id.clone()];
    assert!(
        store
            .due_deliveries_of(&a, now, 10, &skip)
            .await
            .unwrap()
            .is_empty()
    );
}
