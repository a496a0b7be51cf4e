//! Held addresses of deleted inboxes, with the times written by the test (a hold of 30
//! days ends without waiting 30 days), on SQLite always and on PostgreSQL when
//! `MAILROOM_TEST_DATABASE_URL` is set.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use mailroom_core::Tier;
use mailroom_core::ids::{IdKind, new_id};
use mailroom_core::secret::{KeyKind, generate_key};
use mailroom_store::testing::TestDatabase;
use mailroom_store::{CreateInboxOutcome, NewInbox, NewKeyRow, Store};

use mailroom_store::store_on_both_backends as on_both_backends;

on_both_backends!(a_hold_binds_other_accounts_until_it_ends);

fn key(kind: KeyKind) -> NewKeyRow {
    let k = generate_key(kind);
    NewKeyRow {
        id: new_id(IdKind::Key),
        hash: k.hash,
        display_prefix: k.display_prefix,
    }
}

fn inbox(username: &str, at: i64) -> NewInbox {
    NewInbox {
        id: new_id(IdKind::Inbox),
        username: username.into(),
        domain: "mailroom.test".into(),
        client_id: None,
        created_at: at,
    }
}

async fn account(store: &Store, username: &str, at: i64) -> (String, String) {
    let account_id = new_id(IdKind::Account);
    let ib = inbox(username, at);
    let out = store
        .create_account_with_inbox(
            &account_id,
            Tier::Free,
            &ib,
            &key(KeyKind::Account),
            &key(KeyKind::Inbox),
        )
        .await
        .unwrap();
    assert!(matches!(out, CreateInboxOutcome::Created(_)), "{out:?}");
    (account_id, ib.id)
}

async fn a_hold_binds_other_accounts_until_it_ends(store: Store, _db: &TestDatabase) {
    const DAY: i64 = 86_400_000;
    let t0 = 1_700_000_000_000;
    let (a, a_inbox) = account(&store, "kept", t0).await;
    let (b, _) = account(&store, "other", t0).await;
    let until = t0 + 30 * DAY;
    let deleted = store
        .delete_inbox(&a, &a_inbox, t0, Some(until))
        .await
        .unwrap();
    assert!(deleted.is_some());
    assert_eq!(
        store.address_hold("kept@mailroom.test").await.unwrap(),
        Some((a.clone(), until))
    );

    // Another account, during the hold: refused, nothing created (nor a new account).
    let out = store
        .create_inbox(
            &b,
            &inbox("kept", t0 + 29 * DAY),
            &key(KeyKind::Inbox),
            None,
        )
        .await
        .unwrap();
    assert_eq!(out, CreateInboxOutcome::AddressHeld { until });
    let c = new_id(IdKind::Account);
    let out = store
        .create_account_with_inbox(
            &c,
            Tier::Free,
            &inbox("kept", t0 + DAY),
            &key(KeyKind::Account),
            &key(KeyKind::Inbox),
        )
        .await
        .unwrap();
    assert_eq!(out, CreateInboxOutcome::AddressHeld { until });
    assert!(store.get_account(&c).await.unwrap().is_none());
    assert_eq!(store.count_inboxes(&b).await.unwrap(), 1);

    // When the hold ends, the address is anyone's, and the hold is gone.
    let out = store
        .create_inbox(&b, &inbox("kept", until), &key(KeyKind::Inbox), None)
        .await
        .unwrap();
    assert!(matches!(out, CreateInboxOutcome::Created(_)), "{out:?}");
    assert_eq!(
        store.address_hold("kept@mailroom.test").await.unwrap(),
        None
    );

    // The account that had an address takes it back during the hold.
    let (d, d_inbox) = account(&store, "mine", t0).await;
    store
        .delete_inbox(&d, &d_inbox, t0, Some(until))
        .await
        .unwrap();
    let out = store
        .create_inbox(&d, &inbox("mine", t0 + DAY), &key(KeyKind::Inbox), None)
        .await
        .unwrap();
    assert!(matches!(out, CreateInboxOutcome::Created(_)), "{out:?}");
    assert_eq!(
        store.address_hold("mine@mailroom.test").await.unwrap(),
        None
    );
    // A deletion without a hold holds nothing.
    let (e, e_inbox) = account(&store, "free", t0).await;
    store.delete_inbox(&e, &e_inbox, t0, None).await.unwrap();
    assert_eq!(
        store.address_hold("free@mailroom.test").await.unwrap(),
        None
    );
}
