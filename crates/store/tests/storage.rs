//! Storage counting, limits and blob collection, on SQLite always and on PostgreSQL when
//! `MAILROOM_TEST_DATABASE_URL` is set (each test in a schema of its own).

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use mailroom_core::Tier;
use mailroom_core::ids::{IdKind, new_id};
use mailroom_core::secret::{KeyKind, generate_key};
use mailroom_core::time::now_ms;
use mailroom_store::testing::TestDatabase;
use mailroom_store::{
    CreateInboxOutcome, NewInbox, NewKeyRow, NewMessage, OutboundSpec, Recipient, StorageLimit,
    StorageScope, Store, StoreError,
};

use mailroom_store::store_on_both_backends as on_both_backends;

on_both_backends!(
    every_write_keeps_the_counters,
    over_the_inbox_limit_nothing_is_stored,
    the_account_limit_spans_its_inboxes,
    concurrent_deliveries_do_not_pass_the_limit,
    copy_counts_and_is_refused_over_the_limit,
    deleted_inbox_blobs_are_collected_after_the_grace,
    sent_message_can_be_deleted_and_its_blob_collected,
);

fn key() -> NewKeyRow {
    let k = generate_key(KeyKind::Inbox);
    NewKeyRow {
        id: new_id(IdKind::Key),
        hash: k.hash,
        display_prefix: k.display_prefix,
    }
}

fn new_inbox(name: &str) -> NewInbox {
    NewInbox {
        id: new_id(IdKind::Inbox),
        username: format!("{name}-{}", &new_id(IdKind::Event)[4..12]),
        domain: "mailroom.test".into(),
        client_id: None,
        created_at: now_ms(),
    }
}

/// A new account with one inbox, as a recipient with `limit`.
async fn account(store: &Store, name: &str, limit: StorageLimit) -> Recipient {
    let account_id = new_id(IdKind::Account);
    let acc = generate_key(KeyKind::Account);
    let acc = NewKeyRow {
        id: new_id(IdKind::Key),
        hash: acc.hash,
        display_prefix: acc.display_prefix,
    };
    let ib = new_inbox(name);
    let out = store
        .create_account_with_inbox(&account_id, Tier::Free, &ib, &acc, &key())
        .await
        .unwrap();
    assert!(matches!(out, CreateInboxOutcome::Created(_)), "{out:?}");
    Recipient {
        account_id,
        inbox_id: ib.id,
        storage: limit,
    }
}

/// Another inbox of the same account.
async fn second_inbox(store: &Store, of: &Recipient) -> Recipient {
    let ib = new_inbox("second");
    store
        .create_inbox(&of.account_id, &ib, &key(), None)
        .await
        .unwrap();
    Recipient {
        inbox_id: ib.id,
        ..of.clone()
    }
}

/// A message of exactly `size` bytes (unique content, so a blob of its own).
fn msg(size: usize, recipients: Vec<Recipient>) -> NewMessage {
    let mut raw = format!("Subject: {}\r\n\r\n", new_id(IdKind::Event)).into_bytes();
    raw.resize(size, b'x');
    NewMessage {
        hash: mailroom_core::secret::hash_secret(&String::from_utf8_lossy(&raw)),
        raw,
        internal_date: now_ms(),
        recipients,
        mailbox: "INBOX".into(),
        ..NewMessage::default()
    }
}

async fn used(store: &Store, r: &Recipient) -> (u64, u64) {
    let u = store.storage_usage(&r.inbox_id).await.unwrap().unwrap();
    assert_eq!(
        store.account_storage(&r.account_id).await.unwrap(),
        u.account_bytes
    );
    (u.inbox_bytes, u.account_bytes)
}

fn limit(inbox: u64, account: u64) -> StorageLimit {
    StorageLimit {
        inbox_bytes: Some(inbox),
        account_bytes: Some(account),
    }
}

async fn every_write_keeps_the_counters(store: Store, _db: &TestDatabase) {
    let a = account(&store, "count", StorageLimit::UNLIMITED).await;
    let b = second_inbox(&store, &a).await;
    assert_eq!(used(&store, &a).await, (0, 0));
    // One message to both inboxes: each copy counts, for the inbox and the account.
    let stored = store
        .deliver(msg(1000, vec![a.clone(), b.clone()]))
        .await
        .unwrap();
    assert_eq!(used(&store, &a).await, (1000, 2000));
    assert_eq!(used(&store, &b).await, (1000, 2000));
    store.deliver(msg(500, vec![a.clone()])).await.unwrap();
    assert_eq!(used(&store, &a).await, (1500, 2500));
    // A move changes nothing; a delete frees the copy.
    let first = &stored[0];
    store
        .update_message(&a.inbox_id, &first.id, &[], &[], Some("Archive"))
        .await
        .unwrap();
    assert_eq!(used(&store, &a).await, (1500, 2500));
    assert!(store.delete_message(&a.inbox_id, &first.id).await.unwrap());
    assert_eq!(used(&store, &a).await, (500, 1500));
    // Expunge frees what it removes.
    let inbox = format!("{}/INBOX", a.inbox_id);
    let uids = store.imap_uids(&inbox).await.unwrap();
    assert_eq!(store.imap_expunge(&inbox, &uids).await.unwrap(), uids);
    assert_eq!(used(&store, &a).await, (0, 1000));
    // Deleting an inbox takes its bytes off the account.
    store
        .delete_inbox(&b.account_id, &b.inbox_id, now_ms(), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(store.account_storage(&a.account_id).await.unwrap(), 0);
}

async fn over_the_inbox_limit_nothing_is_stored(store: Store, _db: &TestDatabase) {
    let a = account(&store, "full", limit(1000, 10_000)).await;
    store.deliver(msg(600, vec![a.clone()])).await.unwrap();
    let err = store.deliver(msg(401, vec![a.clone()])).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::StorageFull { inbox_id, scope: StorageScope::Inbox } if *inbox_id == a.inbox_id),
        "{err:?}"
    );
    assert_eq!(used(&store, &a).await, (600, 600), "nothing was charged");
    let inbox = format!("{}/INBOX", a.inbox_id);
    assert_eq!(
        store.imap_uids(&inbox).await.unwrap().len(),
        1,
        "nothing stored"
    );
    // Exactly full fits.
    store.deliver(msg(400, vec![a.clone()])).await.unwrap();
    assert_eq!(used(&store, &a).await, (1000, 1000));
}

async fn the_account_limit_spans_its_inboxes(store: Store, _db: &TestDatabase) {
    let a = account(&store, "acct", limit(1000, 1500)).await;
    let b = second_inbox(&store, &a).await;
    store.deliver(msg(900, vec![a.clone()])).await.unwrap();
    let err = store.deliver(msg(700, vec![b.clone()])).await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::StorageFull {
                scope: StorageScope::Account,
                ..
            }
        ),
        "{err:?}"
    );
    store.deliver(msg(600, vec![b.clone()])).await.unwrap();
    assert_eq!(used(&store, &b).await, (600, 1500));
    // One message to a full inbox and a roomy one stores nothing at all.
    let c = account(&store, "other", limit(1000, 1000)).await;
    let err = store
        .deliver(msg(100, vec![c.clone(), a.clone()]))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::StorageFull { .. }), "{err:?}");
    assert_eq!(used(&store, &c).await, (0, 0));
}

async fn concurrent_deliveries_do_not_pass_the_limit(store: Store, _db: &TestDatabase) {
    let a = account(&store, "race", limit(10_000, 10_000)).await;
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let store = store.clone();
        let m = msg(1000, vec![a.clone()]);
        tasks.push(tokio::spawn(async move { store.deliver(m).await }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(StoreError::StorageFull { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(ok, 10, "exactly as many as fit");
    assert_eq!(used(&store, &a).await, (10_000, 10_000));
    let inbox = format!("{}/INBOX", a.inbox_id);
    assert_eq!(store.imap_uids(&inbox).await.unwrap().len(), 10);
}

async fn copy_counts_and_is_refused_over_the_limit(store: Store, _db: &TestDatabase) {
    let a = account(&store, "copy", limit(2500, 10_000)).await;
    store.deliver(msg(1000, vec![a.clone()])).await.unwrap();
    let (inbox, archive) = (
        format!("{}/INBOX", a.inbox_id),
        format!("{}/Archive", a.inbox_id),
    );
    let uids = store.imap_uids(&inbox).await.unwrap();
    let pairs = store
        .imap_copy(&inbox, &uids, &archive, a.storage)
        .await
        .unwrap();
    assert_eq!(pairs.len(), 1);
    assert_eq!(used(&store, &a).await, (2000, 2000));
    let err = store
        .imap_copy(&inbox, &uids, &archive, a.storage)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::StorageFull { .. }), "{err:?}");
    assert_eq!(store.imap_uids(&archive).await.unwrap().len(), 1);
    assert_eq!(used(&store, &a).await, (2000, 2000));
    // Deleting the mailbox frees its copies.
    assert_eq!(
        store
            .imap_create_mailbox(&a.inbox_id, "Work", now_ms())
            .await
            .unwrap()
            .map(|_| ()),
        Ok(())
    );
    let work = format!("{}/Work", a.inbox_id);
    store
        .imap_copy(&inbox, &uids, &work, StorageLimit::UNLIMITED)
        .await
        .unwrap();
    assert_eq!(used(&store, &a).await, (3000, 3000));
    assert_eq!(
        store
            .imap_delete_mailbox(&a.inbox_id, "Work")
            .await
            .unwrap(),
        Ok(())
    );
    assert_eq!(used(&store, &a).await, (2000, 2000));
}

async fn deleted_inbox_blobs_are_collected_after_the_grace(store: Store, _db: &TestDatabase) {
    let a = account(&store, "gone", StorageLimit::UNLIMITED).await;
    let m = msg(2000, vec![a.clone()]);
    let hash = m.hash.clone();
    store.deliver(m).await.unwrap();
    store
        .delete_inbox(&a.account_id, &a.inbox_id, now_ms(), None)
        .await
        .unwrap()
        .unwrap();
    assert!(
        store.get_blob(&hash).await.unwrap().is_some(),
        "left to the collector"
    );
    // Inside the grace period: kept.
    let done = store.collect_garbage(now_ms() - 60_000, 100).await.unwrap();
    assert_eq!(done.blobs, 0);
    assert!(store.get_blob(&hash).await.unwrap().is_some());
    // Past it: collected, in batches of the size asked for.
    let b = account(&store, "many", StorageLimit::UNLIMITED).await;
    let mut hashes = vec![hash];
    for _ in 0..5 {
        let m = msg(100, vec![b.clone()]);
        hashes.push(m.hash.clone());
        store.deliver(m).await.unwrap();
    }
    let kept = msg(100, vec![b.clone()]);
    store.deliver(kept.clone()).await.unwrap();
    let inbox = format!("{}/INBOX", b.inbox_id);
    let uids = store.imap_uids(&inbox).await.unwrap();
    // Expunged blobs are the collector's too, their grace counted from the expunge: a
    // session not yet told of it still serves the message.
    store.imap_expunge(&inbox, &uids[..5]).await.unwrap();
    for h in &hashes[1..] {
        assert!(
            store.get_blob(h).await.unwrap().is_some(),
            "{h} kept a while"
        );
    }
    let done = store.collect_garbage(now_ms() - 60_000, 100).await.unwrap();
    assert_eq!(done.blobs, 0, "inside the grace");
    let later = now_ms() + 1000;
    let done = store.collect_garbage(later, 100).await.unwrap();
    assert_eq!(done.blobs, 6);
    assert_eq!(done.bytes, 2500);
    for h in &hashes {
        assert!(store.get_blob(h).await.unwrap().is_none(), "{h} collected");
    }
    assert!(
        store.get_blob(&kept.hash).await.unwrap().is_some(),
        "a blob in use stays"
    );
    assert_eq!(store.collect_garbage(later, 100).await.unwrap().blobs, 0);
}

async fn sent_message_can_be_deleted_and_its_blob_collected(store: Store, _db: &TestDatabase) {
    let a = account(&store, "sender", StorageLimit::UNLIMITED).await;
    let mut sent = msg(300, vec![a.clone()]);
    sent.mailbox = "Sent".into();
    sent.outbound = Some(OutboundSpec {
        mail_from: "sender@mailroom.test".into(),
        local: Vec::new(),
        remote: vec!["bob@example.com".into()],
        expires_at: now_ms() + 3_600_000,
    });
    let hash = sent.hash.clone();
    let stored = store.deliver_all(vec![sent], None).await.unwrap();
    let id = &stored[0][0].id;
    assert!(
        store.delete_message(&a.inbox_id, id).await.unwrap(),
        "deleting a sent message for good works"
    );
    assert!(store.get_message(&a.inbox_id, id).await.unwrap().is_none());
    assert_eq!(used(&store, &a).await, (0, 0));
    // Still queued: the queue entry keeps the blob, whatever the grace.
    let later = now_ms() + 1000;
    assert_eq!(store.collect_garbage(later, 100).await.unwrap().blobs, 0);
    assert!(store.get_blob(&hash).await.unwrap().is_some());
    let queue = store.list_queue(&[], 10).await.unwrap();
    assert_eq!(queue.len(), 1);
    store
        .remove_from_queue(&queue[0].outbound_id, now_ms())
        .await
        .unwrap();
    let done = store.collect_garbage(later, 100).await.unwrap();
    assert_eq!((done.outbound, done.blobs), (1, 1));
    assert!(store.get_blob(&hash).await.unwrap().is_none());
    assert!(store.list_queue(&[], 10).await.unwrap().is_empty());
}
