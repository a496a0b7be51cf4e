//! The store's behaviour, on SQLite always and on PostgreSQL when
//! `MAILROOM_TEST_DATABASE_URL` is set (each test in a schema of its own).

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use mailroom_core::Tier;
use mailroom_core::ids::{IdKind, new_id};
use mailroom_core::secret::{KeyKind, generate_key};
use mailroom_store::testing::TestDatabase;
use mailroom_store::{CreateInboxOutcome, NewInbox, NewKeyRow, Store};

use mailroom_store::store_on_both_backends as on_both_backends;

on_both_backends!(
    account_and_inbox_round_trip,
    taken_address_creates_nothing,
    client_id_returns_the_existing_inbox,
    inbox_limit_is_enforced,
    tenants_do_not_see_each_other,
    delete_removes_inbox_and_its_keys,
    rotate_replaces_only_that_inbox_key,
    tier_change_writes_one_event,
    upgrade_redeems_once,
    reopening_keeps_data,
    list_pages,
    idempotency_keys_expire_and_abandoned_ones_are_freed,
);

/// Issue #12: a key replays its answer for a day, then is free; one left "in progress"
/// by a process that died is free again after ten minutes, not a 409 for ever.
async fn idempotency_keys_expire_and_abandoned_ones_are_freed(store: Store, _db: &TestDatabase) {
    use mailroom_store::Idempotency;
    let (account_id, _, _) = new_account(&store, &uname("idem")).await;
    let t0 = 1_000_000_000_000i64;
    let minute = 60_000;
    let claim = |at: i64| {
        let store = store.clone();
        let account_id = account_id.clone();
        async move {
            store
                .claim_idempotency_key(&account_id, "key:a", "hash-1", at)
                .await
                .unwrap()
        }
    };
    assert_eq!(claim(t0).await, Idempotency::New);
    assert_eq!(claim(t0 + minute).await, Idempotency::InProgress);
    // The first request never finished: ten minutes on, a retry may run.
    assert_eq!(claim(t0 + 11 * minute).await, Idempotency::New);
    store
        .complete_idempotency_key(&account_id, "key:a", 201, "{\"ok\":1}")
        .await
        .unwrap();
    assert_eq!(
        claim(t0 + 30 * minute).await,
        Idempotency::Replay {
            status: 201,
            response: "{\"ok\":1}".into()
        },
        "a finished one replays, however old within the day"
    );
    assert_eq!(
        claim(t0 + 11 * minute + 24 * 60 * minute + 1).await,
        Idempotency::New,
        "a day after, the key is free"
    );
}

fn key(kind: KeyKind) -> (String, NewKeyRow) {
    let k = generate_key(kind);
    (
        k.secret,
        NewKeyRow {
            id: new_id(IdKind::Key),
            hash: k.hash,
            display_prefix: k.display_prefix,
        },
    )
}

fn inbox(username: &str, client_id: Option<&str>) -> NewInbox {
    NewInbox {
        id: new_id(IdKind::Inbox),
        username: username.into(),
        domain: "mailroom.test".into(),
        client_id: client_id.map(Into::into),
        created_at: mailroom_core::time::now_ms(),
    }
}

/// A unique username, so that tests sharing nothing still never collide.
fn uname(base: &str) -> String {
    format!("{base}-{}", &new_id(IdKind::Event)[4..12])
}

async fn new_account(store: &Store, username: &str) -> (String, String, String) {
    let account_id = new_id(IdKind::Account);
    let (_, acc_key) = key(KeyKind::Account);
    let (_, inb_key) = key(KeyKind::Inbox);
    let ib = inbox(username, None);
    let out = store
        .create_account_with_inbox(&account_id, Tier::Free, &ib, &acc_key, &inb_key)
        .await
        .unwrap();
    assert!(matches!(out, CreateInboxOutcome::Created(_)), "{out:?}");
    (account_id, ib.id, acc_key.hash)
}

async fn account_and_inbox_round_trip(store: Store, _db: &TestDatabase) {
    let name = uname("platform-admin");
    let (account_id, inbox_id, acc_hash) = new_account(&store, &name).await;
    let acc = store.get_account(&account_id).await.unwrap().unwrap();
    assert_eq!(acc.tier, Tier::Free);
    let ib = store
        .get_inbox(&account_id, &inbox_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ib.email, format!("{name}@mailroom.test"));
    assert_eq!(ib.status, "active");
    let k = store.find_key(&acc_hash).await.unwrap().unwrap();
    assert_eq!(k.account_id, account_id);
    assert_eq!(k.kind, "account");
    assert_eq!(k.inbox_id, None);
    assert_eq!(store.count_inboxes(&account_id).await.unwrap(), 1);
    assert!(
        store
            .find_key("0".repeat(64).as_str())
            .await
            .unwrap()
            .is_none()
    );
    let events = store.list_events(&account_id, 0, 10).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].event_type, "inbox.created");
    assert_eq!(events[0].data["inbox_id"], inbox_id.as_str());
}

async fn taken_address_creates_nothing(store: Store, _db: &TestDatabase) {
    let name = uname("taken");
    let (first_account, _, _) = new_account(&store, &name).await;
    // A second account wanting the same address: no account, no keys are left behind.
    let account_id = new_id(IdKind::Account);
    let (_, acc_key) = key(KeyKind::Account);
    let (_, inb_key) = key(KeyKind::Inbox);
    let out = store
        .create_account_with_inbox(
            &account_id,
            Tier::Free,
            &inbox(&name, None),
            &acc_key,
            &inb_key,
        )
        .await
        .unwrap();
    assert_eq!(out, CreateInboxOutcome::EmailTaken);
    assert!(store.get_account(&account_id).await.unwrap().is_none());
    assert!(store.find_key(&acc_key.hash).await.unwrap().is_none());
    // The same account asking again for its own address: also taken.
    let (_, k) = key(KeyKind::Inbox);
    let out = store
        .create_inbox(&first_account, &inbox(&name, None), &k, None)
        .await
        .unwrap();
    assert_eq!(out, CreateInboxOutcome::EmailTaken);
    assert!(store.find_key(&k.hash).await.unwrap().is_none());
    assert_eq!(store.count_inboxes(&first_account).await.unwrap(), 1);
}

async fn client_id_returns_the_existing_inbox(store: Store, _db: &TestDatabase) {
    let (account_id, _, _) = new_account(&store, &uname("owner")).await;
    let (_, k1) = key(KeyKind::Inbox);
    let first = inbox(&uname("agent"), Some("agent-001"));
    let CreateInboxOutcome::Created(created) = store
        .create_inbox(&account_id, &first, &k1, None)
        .await
        .unwrap()
    else {
        panic!("not created")
    };
    // A repeat with another username but the same client_id creates nothing.
    let (_, k2) = key(KeyKind::Inbox);
    let out = store
        .create_inbox(
            &account_id,
            &inbox(&uname("other"), Some("agent-001")),
            &k2,
            None,
        )
        .await
        .unwrap();
    assert_eq!(out, CreateInboxOutcome::Existing(created.clone()));
    assert!(store.find_key(&k2.hash).await.unwrap().is_none());
    assert_eq!(store.count_inboxes(&account_id).await.unwrap(), 2);
    // Another account may use the same client_id for itself.
    let (other_account, _, _) = new_account(&store, &uname("owner2")).await;
    let (_, k3) = key(KeyKind::Inbox);
    let out = store
        .create_inbox(
            &other_account,
            &inbox(&uname("agent"), Some("agent-001")),
            &k3,
            None,
        )
        .await
        .unwrap();
    assert!(
        matches!(out, CreateInboxOutcome::Created(ref r) if r.id != created.id),
        "{out:?}"
    );
}

async fn inbox_limit_is_enforced(store: Store, _db: &TestDatabase) {
    let (account_id, _, _) = new_account(&store, &uname("limited")).await;
    for i in 0..2 {
        let (_, k) = key(KeyKind::Inbox);
        let out = store
            .create_inbox(
                &account_id,
                &inbox(&uname(&format!("n{i}")), None),
                &k,
                Some(3),
            )
            .await
            .unwrap();
        assert!(matches!(out, CreateInboxOutcome::Created(_)));
    }
    let (_, k) = key(KeyKind::Inbox);
    let out = store
        .create_inbox(&account_id, &inbox(&uname("over"), None), &k, Some(3))
        .await
        .unwrap();
    assert_eq!(out, CreateInboxOutcome::LimitReached { current: 3 });
    assert_eq!(store.count_inboxes(&account_id).await.unwrap(), 3);
    let (_, k) = key(KeyKind::Inbox);
    let out = store
        .create_inbox("acc_doesnotexist", &inbox(&uname("x"), None), &k, None)
        .await;
    assert_eq!(out.unwrap(), CreateInboxOutcome::NoAccount);
}

async fn tenants_do_not_see_each_other(store: Store, _db: &TestDatabase) {
    let (a, a_inbox, _) = new_account(&store, &uname("tenant-a")).await;
    let (b, b_inbox, _) = new_account(&store, &uname("tenant-b")).await;
    assert!(store.get_inbox(&a, &b_inbox).await.unwrap().is_none());
    assert!(store.get_inbox(&b, &a_inbox).await.unwrap().is_none());
    let (list, total) = store.list_inboxes(&a, 50, 0).await.unwrap();
    assert_eq!(total, 1);
    assert_eq!(list[0].id, a_inbox);
    let (_, k) = key(KeyKind::Inbox);
    assert!(!store.rotate_inbox_key(&a, &b_inbox, &k, 0).await.unwrap());
    assert!(
        store
            .delete_inbox(&a, &b_inbox, 0, None)
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.get_inbox(&b, &b_inbox).await.unwrap().is_some());
    assert!(
        store
            .list_events(&a, 0, 100)
            .await
            .unwrap()
            .iter()
            .all(|e| e.account_id == a)
    );
}

async fn delete_removes_inbox_and_its_keys(store: Store, _db: &TestDatabase) {
    let (account_id, _, acc_hash) = new_account(&store, &uname("keep")).await;
    let (_, k) = key(KeyKind::Inbox);
    let ib = inbox(&uname("gone"), None);
    store
        .create_inbox(&account_id, &ib, &k, None)
        .await
        .unwrap();
    assert!(store.find_key(&k.hash).await.unwrap().is_some());
    let deleted = store
        .delete_inbox(&account_id, &ib.id, 1, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(deleted.id, ib.id);
    assert!(store.find_key(&k.hash).await.unwrap().is_none());
    assert!(
        store
            .get_inbox(&account_id, &ib.id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store.find_key(&acc_hash).await.unwrap().is_some(),
        "account key survives"
    );
    assert!(
        store
            .delete_inbox(&account_id, &ib.id, 2, None)
            .await
            .unwrap()
            .is_none()
    );
    let events = store.list_events(&account_id, 0, 10).await.unwrap();
    assert_eq!(events.last().unwrap().event_type, "inbox.deleted");
}

async fn rotate_replaces_only_that_inbox_key(store: Store, _db: &TestDatabase) {
    let (account_id, first_inbox, _) = new_account(&store, &uname("rot")).await;
    let (_, k_other) = key(KeyKind::Inbox);
    let other = inbox(&uname("rot-other"), None);
    store
        .create_inbox(&account_id, &other, &k_other, None)
        .await
        .unwrap();
    let (_, k_new) = key(KeyKind::Inbox);
    assert!(
        store
            .rotate_inbox_key(&account_id, &first_inbox, &k_new, 5)
            .await
            .unwrap()
    );
    let found = store.find_key(&k_new.hash).await.unwrap().unwrap();
    assert_eq!(found.inbox_id.as_deref(), Some(first_inbox.as_str()));
    assert!(
        store.find_key(&k_other.hash).await.unwrap().is_some(),
        "other inbox untouched"
    );
    // Only one inbox key remains for the rotated inbox: the second rotation removes k_new.
    let (_, k_newer) = key(KeyKind::Inbox);
    assert!(
        store
            .rotate_inbox_key(&account_id, &first_inbox, &k_newer, 6)
            .await
            .unwrap()
    );
    assert!(store.find_key(&k_new.hash).await.unwrap().is_none());
}

async fn tier_change_writes_one_event(store: Store, _db: &TestDatabase) {
    let (account_id, _, _) = new_account(&store, &uname("tiers")).await;
    let change = store
        .set_tier(&account_id, Tier::Growth, 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((change.previous, change.tier), (Tier::Free, Tier::Growth));
    assert_eq!(
        store.get_account(&account_id).await.unwrap().unwrap().tier,
        Tier::Growth
    );
    // Same tier again: no new event.
    store.set_tier(&account_id, Tier::Growth, 11).await.unwrap();
    store
        .set_tier(&account_id, Tier::Developer, 12)
        .await
        .unwrap();
    let types: Vec<_> = store
        .list_events(&account_id, 0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(
        types,
        ["inbox.created", "account.upgraded", "account.downgraded"]
    );
    assert!(
        store
            .set_tier("acc_nobody", Tier::Growth, 1)
            .await
            .unwrap()
            .is_none()
    );
}

async fn upgrade_redeems_once(store: Store, _db: &TestDatabase) {
    let (account_id, _, _) = new_account(&store, &uname("redeem")).await;
    let nonce = new_id(IdKind::Event);
    assert!(!store.upgrade_redeemed(&nonce).await.unwrap());
    let first = store
        .redeem_upgrade(&nonce, &account_id, Tier::Developer, 1)
        .await
        .unwrap();
    assert_eq!(first.unwrap().unwrap().tier, Tier::Developer);
    assert!(store.upgrade_redeemed(&nonce).await.unwrap());
    let again = store
        .redeem_upgrade(&nonce, &account_id, Tier::Enterprise, 2)
        .await
        .unwrap();
    assert!(again.is_none());
    assert_eq!(
        store.get_account(&account_id).await.unwrap().unwrap().tier,
        Tier::Developer
    );
}

async fn reopening_keeps_data(store: Store, db: &TestDatabase) {
    let (account_id, inbox_id, _) = new_account(&store, &uname("durable")).await;
    store.close().await;
    let reopened = Store::open(&db.url).await.unwrap();
    assert!(
        reopened
            .get_inbox(&account_id, &inbox_id)
            .await
            .unwrap()
            .is_some()
    );
    reopened.ping().await.unwrap();
}

async fn list_pages(store: Store, _db: &TestDatabase) {
    let (account_id, first, _) = new_account(&store, &uname("page")).await;
    let mut ids = vec![first];
    for i in 0..4 {
        let (_, k) = key(KeyKind::Inbox);
        let mut ib = inbox(&uname(&format!("p{i}")), None);
        ib.created_at += i64::from(i) + 1;
        ids.push(ib.id.clone());
        store
            .create_inbox(&account_id, &ib, &k, None)
            .await
            .unwrap();
    }
    let (page, total) = store.list_inboxes(&account_id, 2, 1).await.unwrap();
    assert_eq!(total, 5);
    assert_eq!(
        page.iter().map(|i| i.id.clone()).collect::<Vec<_>>(),
        ids[1..3]
    );
    let (page, _) = store.list_inboxes(&account_id, 50, 10).await.unwrap();
    assert!(page.is_empty());
}

mod messages {
    use mailroom_store::{MessageQuery, NewMessage, Recipient, Store};

    use super::*;

    on_both_backends!(
        one_body_for_many_inboxes,
        concurrent_deliveries_share_commits_and_get_distinct_uids,
        one_commit_files_many_messages_in_order,
        replies_join_the_thread,
        filters_and_polling,
        flags_labels_moves_and_deletes,
    );

    fn msg(raw: &str, recipients: Vec<Recipient>) -> NewMessage {
        let raw = raw.as_bytes().to_vec();
        NewMessage {
            hash: mailroom_core::secret::hash_secret(&String::from_utf8_lossy(&raw)),
            raw,
            internal_date: mailroom_core::time::now_ms(),
            recipients,
            mailbox: "INBOX".into(),
            ..NewMessage::default()
        }
    }

    async fn inbox_of(store: &Store, name: &str) -> Recipient {
        let (account_id, inbox_id, _) = super::new_account(store, &super::uname(name)).await;
        Recipient {
            account_id,
            inbox_id,
            storage: mailroom_store::StorageLimit::UNLIMITED,
        }
    }

    fn q(limit: u32) -> MessageQuery {
        MessageQuery {
            limit,
            ..MessageQuery::default()
        }
    }

    async fn one_body_for_many_inboxes(store: Store, _db: &TestDatabase) {
        let a = inbox_of(&store, "many-a").await;
        let b = inbox_of(&store, "many-b").await;
        let mut m = msg("Subject: hi\r\n\r\nbody\r\n", vec![a.clone(), b.clone()]);
        m.subject = Some("hi".into());
        let stored = store.deliver(m.clone()).await.unwrap();
        assert_eq!(stored.len(), 2);
        let ra = store
            .get_message(&a.inbox_id, &stored[0].id)
            .await
            .unwrap()
            .unwrap();
        let rb = store
            .get_message(&b.inbox_id, &stored[1].id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ra.blob_hash, rb.blob_hash, "one blob");
        assert_eq!(ra.mailbox, "INBOX");
        assert_eq!(ra.uid, 1);
        assert_ne!(ra.thread_id, rb.thread_id, "threads are per inbox");
        assert_eq!(store.get_blob(&ra.blob_hash).await.unwrap().unwrap(), m.raw);
        // Another inbox's message is not found through this inbox.
        assert!(
            store
                .get_message(&a.inbox_id, &stored[1].id)
                .await
                .unwrap()
                .is_none()
        );
        let events = store.list_events(&a.account_id, 0, 10).await.unwrap();
        let received = events
            .iter()
            .find(|e| e.event_type == "message.received")
            .unwrap();
        assert_eq!(received.data["message_id"], stored[0].id.as_str());
        assert_eq!(received.data["subject"], "hi");
    }

    async fn concurrent_deliveries_share_commits_and_get_distinct_uids(
        store: Store,
        _db: &TestDatabase,
    ) {
        let a = inbox_of(&store, "burst").await;
        let mut tasks = Vec::new();
        for i in 0..60 {
            let store = store.clone();
            let m = msg(&format!("Subject: n{i}\r\n\r\n{i}\r\n"), vec![a.clone()]);
            tasks.push(tokio::spawn(async move { store.deliver(m).await }));
        }
        let mut uids = Vec::new();
        for t in tasks {
            uids.push(t.await.unwrap().unwrap()[0].uid);
        }
        uids.sort_unstable();
        assert_eq!(uids, (1..=60).collect::<Vec<i64>>());
        let (_, total) = store.list_messages(&a.inbox_id, &q(1)).await.unwrap();
        assert_eq!(total, 60);
    }

    /// A group commit writes its messages with a few statements for the whole batch: uids
    /// and modseqs still follow the order of the batch, per mailbox, a reply joins the
    /// thread of a parent in the same commit, a body shared by two messages is fine, and
    /// every INBOX copy gets its event, in order.
    async fn one_commit_files_many_messages_in_order(store: Store, _db: &TestDatabase) {
        let a = inbox_of(&store, "batcha").await;
        let b = inbox_of(&store, "batchb").await;
        let mut parent = msg("Message-ID: <p@x>\r\n\r\nparent\r\n", vec![a.clone()]);
        parent.message_id = Some("p@x".into());
        let mut reply = msg(
            "Message-ID: <r@x>\r\nIn-Reply-To: <p@x>\r\n\r\nreply\r\n",
            vec![a.clone(), b.clone()],
        );
        reply.message_id = Some("r@x".into());
        reply.references = vec!["p@x".into()];
        let same_body = msg("Message-ID: <p@x>\r\n\r\nparent\r\n", vec![b.clone()]);
        let stored = store
            .deliver_all(vec![parent, reply, same_body], None)
            .await
            .unwrap();
        let uids: Vec<Vec<(String, i64)>> = stored
            .iter()
            .map(|s| s.iter().map(|m| (m.inbox_id.clone(), m.uid)).collect())
            .collect();
        assert_eq!(
            uids,
            vec![
                vec![(a.inbox_id.clone(), 1)],
                vec![(a.inbox_id.clone(), 2), (b.inbox_id.clone(), 1)],
                vec![(b.inbox_id.clone(), 2)],
            ]
        );
        assert_eq!(
            stored[0][0].thread_id, stored[1][0].thread_id,
            "the reply joins"
        );
        assert_ne!(
            stored[1][1].thread_id, stored[0][0].thread_id,
            "another inbox"
        );
        let (rows, total) = store.list_messages(&a.inbox_id, &q(10)).await.unwrap();
        assert_eq!(total, 2);
        let mut modseqs: Vec<i64> = rows.iter().map(|r| r.modseq).collect();
        modseqs.sort_unstable();
        modseqs.dedup();
        assert_eq!(modseqs.len(), 2, "each copy its own modseq");
        let (_, total_b) = store.list_messages(&b.inbox_id, &q(10)).await.unwrap();
        assert_eq!(total_b, 2, "two copies in b, one body shared with a");
        let events = store.list_events(&a.account_id, 0, 100).await.unwrap();
        let received: Vec<&str> = events
            .iter()
            .filter(|e| e.event_type == "message.received")
            .filter_map(|e| e.data["message_id"].as_str())
            .collect();
        assert_eq!(
            received,
            [stored[0][0].id.as_str(), stored[1][0].id.as_str()],
            "an event per INBOX copy of the account, in order"
        );
    }

    async fn replies_join_the_thread(store: Store, _db: &TestDatabase) {
        let a = inbox_of(&store, "threads").await;
        let mut first = msg("Message-ID: <1@x>\r\n\r\nfirst\r\n", vec![a.clone()]);
        first.message_id = Some("1@x".into());
        let t1 = store.deliver(first).await.unwrap()[0].thread_id.clone();
        let mut reply = msg(
            "Message-ID: <2@x>\r\nIn-Reply-To: <1@x>\r\n\r\nreply\r\n",
            vec![a.clone()],
        );
        reply.message_id = Some("2@x".into());
        reply.references = vec!["1@x".into()];
        let t2 = store.deliver(reply).await.unwrap()[0].thread_id.clone();
        let mut other = msg("Message-ID: <3@x>\r\n\r\nother\r\n", vec![a.clone()]);
        other.message_id = Some("3@x".into());
        let t3 = store.deliver(other).await.unwrap()[0].thread_id.clone();
        assert_eq!(t1, t2);
        assert_ne!(t1, t3);
        let (threads, total) = store.list_threads(&a.inbox_id, 10, 0).await.unwrap();
        assert_eq!(total, 2);
        assert_eq!(threads[0].0, t3, "most recently active first");
        assert_eq!(threads[1].1, 2);
    }

    async fn filters_and_polling(store: Store, _db: &TestDatabase) {
        let a = inbox_of(&store, "filters").await;
        let mut ids = Vec::new();
        for (from, subject) in [
            ("alice@example.com", "Your code 123"),
            ("bob@example.org", "100% off_sale"),
            ("alice@example.com", "hello"),
        ] {
            let mut m = msg(
                &format!("From: {from}\r\nSubject: {subject}\r\n\r\nx\r\n"),
                vec![a.clone()],
            );
            m.from_addr = Some(from.into());
            m.subject = Some(subject.into());
            ids.push(store.deliver(m).await.unwrap()[0].id.clone());
        }
        let (all, total) = store.list_messages(&a.inbox_id, &q(10)).await.unwrap();
        assert_eq!(total, 3);
        assert_eq!(all[0].id, ids[2], "newest first");
        let by = |f: fn(&mut MessageQuery)| {
            let mut query = q(10);
            f(&mut query);
            query
        };
        let (r, _) = store
            .list_messages(&a.inbox_id, &by(|q| q.from_contains = Some("ALICE".into())))
            .await
            .unwrap();
        assert_eq!(r.len(), 2);
        let (r, _) = store
            .list_messages(
                &a.inbox_id,
                &by(|q| q.subject_contains = Some("100%".into())),
            )
            .await
            .unwrap();
        assert_eq!(r.len(), 1, "% is matched literally");
        let (r, _) = store
            .list_messages(
                &a.inbox_id,
                &by(|q| q.subject_contains = Some("f_s".into())),
            )
            .await
            .unwrap();
        assert_eq!(r.len(), 1, "_ is matched literally");
        let (r, _) = store
            .list_messages(
                &a.inbox_id,
                &by(|q| q.subject_contains = Some("o_f".into())),
            )
            .await
            .unwrap();
        assert_eq!(r.len(), 0, "_ is not a wildcard");
        let seq = store
            .message_seq(&a.inbox_id, &ids[0])
            .await
            .unwrap()
            .unwrap();
        let mut after = q(10);
        after.after_seq = Some(seq);
        after.ascending = true;
        let (r, _) = store.list_messages(&a.inbox_id, &after).await.unwrap();
        assert_eq!(r.iter().map(|m| m.id.clone()).collect::<Vec<_>>(), ids[1..]);
        let (r, _) = store
            .list_messages(&a.inbox_id, &by(|q| q.unread = Some(true)))
            .await
            .unwrap();
        assert_eq!(r.len(), 3);
        store
            .update_message(
                &a.inbox_id,
                &ids[0],
                &["\\Seen".into()],
                &["otp".into()],
                None,
            )
            .await
            .unwrap();
        let (r, _) = store
            .list_messages(&a.inbox_id, &by(|q| q.unread = Some(true)))
            .await
            .unwrap();
        assert_eq!(r.len(), 2);
        let (r, _) = store
            .list_messages(&a.inbox_id, &by(|q| q.unread = Some(false)))
            .await
            .unwrap();
        assert_eq!(r[0].id, ids[0]);
        let (r, _) = store
            .list_messages(&a.inbox_id, &by(|q| q.label = Some("otp".into())))
            .await
            .unwrap();
        assert_eq!(r.len(), 1);
    }

    async fn flags_labels_moves_and_deletes(store: Store, _db: &TestDatabase) {
        let a = inbox_of(&store, "moves").await;
        let stored = store
            .deliver(msg("Subject: m\r\n\r\nm\r\n", vec![a.clone()]))
            .await
            .unwrap();
        let id = &stored[0].id;
        let before = store.get_message(&a.inbox_id, id).await.unwrap().unwrap();
        store
            .update_message(
                &a.inbox_id,
                id,
                &["\\Seen".into(), "\\Flagged".into()],
                &["a".into(), "b".into()],
                None,
            )
            .await
            .unwrap();
        let after = store.get_message(&a.inbox_id, id).await.unwrap().unwrap();
        assert!(after.is_read());
        assert_eq!(after.labels, ["a", "b"]);
        assert_eq!(after.uid, before.uid, "a flag change keeps the uid");
        assert!(after.modseq > before.modseq);
        assert!(
            store
                .update_message(&a.inbox_id, id, &[], &[], Some("Trash"))
                .await
                .unwrap()
        );
        let moved = store.get_message(&a.inbox_id, id).await.unwrap().unwrap();
        assert_eq!(moved.mailbox, "Trash");
        assert_eq!(moved.uid, 1, "first uid in Trash");
        assert!(store.delete_message(&a.inbox_id, id).await.unwrap());
        assert!(store.get_message(&a.inbox_id, id).await.unwrap().is_none());
        assert!(
            store.get_blob(&moved.blob_hash).await.unwrap().is_some(),
            "an unused blob is left to the collector's grace"
        );
        store
            .collect_garbage(mailroom_core::time::now_ms() + 1000, 100)
            .await
            .unwrap();
        assert!(
            store.get_blob(&moved.blob_hash).await.unwrap().is_none(),
            "unused blob collected"
        );
        // UIDs are never reused in a mailbox.
        let next = store
            .deliver(msg("Subject: n\r\n\r\nn\r\n", vec![a.clone()]))
            .await
            .unwrap();
        assert_eq!(next[0].uid, 2);
        assert!(
            !store
                .update_message(&a.inbox_id, "msg_nope", &[], &[], None)
                .await
                .unwrap()
        );
        assert!(!store.delete_message(&a.inbox_id, "msg_nope").await.unwrap());
    }
}
