//! The shared store against a real PostgreSQL (the test kit's, on a free port): intake's
//! duplicates, claims (order keys, the fleet limit, leases), outcomes recorded only by the
//! lease holder, and the plugins' key-value store.

use std::collections::HashMap;
use std::time::Duration;

use hookwall_testkit::PostgresServer;

use super::*;
use crate::store::records::NewDelivery;

async fn connect(pg: &PostgresServer, lease: Duration) -> Shared {
    Shared::connect(SharedOptions {
        url: pg.url(),
        lease,
        pool_size: 4,
        order_keys: HashMap::from([("ordered".to_string(), "/k".to_string())]),
        ca_file: None,
    })
    .await
    .expect("connect")
}

fn event(id: &str, sink: &str, body: &str) -> NewEvent {
    let mut e = NewEvent::for_test(id, "s", 1_000, &[sink]);
    e.record.body = body.as_bytes().to_vec();
    e.deliveries = vec![NewDelivery {
        sink: sink.into(),
        headers: vec![("x-a".into(), "b".into())],
        body: body.as_bytes().to_vec(),
        priority: Priority::Normal,
    }];
    e
}

fn mark(key: &str, expires_ms: u64) -> Option<DedupeMark> {
    Some(DedupeMark {
        source: "s".into(),
        key: key.into(),
        expires_ms,
    })
}

fn claim(max: usize, fleet: usize) -> Claim {
    Claim {
        max,
        fleet,
        per_unit: 1,
        rate: None,
        now_ms: crate::clock::now_ms(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_in_one_group_and_across_groups_are_duplicates_of_the_stored_event() {
    let pg = PostgresServer::start();
    let store = connect(&pg, Duration::from_secs(30)).await;
    let far = crate::clock::now_ms() + 3_600_000;
    // Sent together, so they share groups: three copies of one id, and two ids under one mark.
    let (a, b, c, d, e) = tokio::join!(
        store.accept_marked(event("e1", "k", "{}"), None),
        store.accept_marked(event("e1", "k", "{}"), None),
        store.accept_marked(event("e1", "k", "{}"), None),
        store.accept_marked(event("m1", "k", "{}"), mark("key", far)),
        store.accept_marked(event("m2", "k", "{}"), mark("key", far)),
    );
    let ids = [a, b, c].map(|r| r.unwrap());
    assert_eq!(
        ids.iter().filter(|o| **o == AcceptOutcome::Stored).count(),
        1,
        "{ids:?}"
    );
    assert!(
        ids.iter()
            .all(|o| *o == AcceptOutcome::Stored
                || *o == AcceptOutcome::Duplicate { id: "e1".into() })
    );
    let marked = [d.unwrap(), e.unwrap()];
    let stored: Vec<&str> = ["m1", "m2"]
        .into_iter()
        .zip(&marked)
        .filter(|(_, o)| **o == AcceptOutcome::Stored)
        .map(|(id, _)| id)
        .collect();
    assert_eq!(stored.len(), 1, "{marked:?}");
    assert!(marked.contains(&AcceptOutcome::Duplicate {
        id: stored[0].to_string()
    }));
    // Later, in its own group: still a duplicate, of the stored id.
    assert_eq!(
        store
            .accept_marked(event("m3", "k", "{}"), mark("key", far))
            .await
            .unwrap(),
        AcceptOutcome::Duplicate {
            id: stored[0].to_string()
        }
    );
    assert_eq!(
        store
            .marked("s", "key", crate::clock::now_ms())
            .await
            .unwrap(),
        Some(stored[0].to_string())
    );
    // An expired mark is taken over by the next event.
    assert_eq!(
        store
            .accept_marked(event("x1", "k", "{}"), mark("old", 1))
            .await
            .unwrap(),
        AcceptOutcome::Stored
    );
    assert_eq!(
        store
            .accept_marked(event("x2", "k", "{}"), mark("old", far))
            .await
            .unwrap(),
        AcceptOutcome::Stored
    );
    assert_eq!(
        store
            .purge_expired_marks(crate::clock::now_ms(), 10)
            .await
            .unwrap(),
        0
    );
    let (record, deliveries) = store.event("s", "e1").await.unwrap().unwrap();
    assert_eq!(record.deliveries.len(), 1);
    assert_eq!(deliveries[0].id, "s:e1:k:0");
    assert_eq!(
        deliveries[0].headers,
        vec![("x-a".to_string(), "b".to_string())]
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_takes_each_keys_oldest_delivery_and_keeps_to_the_fleet_limit() {
    let pg = PostgresServer::start();
    let store = connect(&pg, Duration::from_secs(30)).await;
    for (id, k) in [
        ("a1", "a"),
        ("b1", "b"),
        ("a2", "a"),
        ("a3", "a"),
        ("b2", "b"),
    ] {
        let body = format!(r#"{{"k":"{k}"}}"#);
        let out = store.accept(event(id, "ordered", &body)).await.unwrap();
        assert_eq!(out, AcceptOutcome::Stored);
    }
    let first = store.claim("ordered", claim(10, 10)).await.unwrap();
    let ids: Vec<&str> = first.iter().map(|d| d.event_id.as_str()).collect();
    assert_eq!(ids, ["a1", "b1"], "only each key's oldest");
    // Nothing more of those keys while they are leased or pending.
    assert!(
        store
            .claim("ordered", claim(10, 10))
            .await
            .unwrap()
            .is_empty()
    );
    let a1 = first.iter().find(|d| d.event_id == "a1").unwrap().seq;
    store
        .update_deliveries(vec![DeliveryUpdate::Delivered { seq: a1, at_ms: 5 }])
        .await
        .unwrap();
    let next = store.claim("ordered", claim(10, 10)).await.unwrap();
    assert_eq!(
        next.iter().map(|d| d.event_id.as_str()).collect::<Vec<_>>(),
        ["a2"]
    );

    // The fleet limit counts every replica's leases: two leased now, so a limit of 2 gives none.
    for i in 0..3 {
        store
            .accept(event(&format!("u{i}"), "free", "{}"))
            .await
            .unwrap();
    }
    assert!(store.claim("free", claim(10, 0)).await.unwrap().is_empty());
    assert_eq!(store.claim("free", claim(10, 2)).await.unwrap().len(), 2);
    assert!(store.claim("free", claim(10, 2)).await.unwrap().is_empty());
    assert_eq!(store.pending_count("free").await.unwrap(), 3);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapsed_lease_passes_to_another_replica_and_the_first_ones_result_is_not_recorded() {
    let pg = PostgresServer::start();
    let one = connect(&pg, Duration::from_secs(1)).await;
    let two = connect(&pg, Duration::from_secs(1)).await;
    one.accept(event("e", "k", "{}")).await.unwrap();
    let claimed = one.claim("k", claim(1, 10)).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let seq = claimed[0].seq;
    assert!(
        two.claim("k", claim(1, 10)).await.unwrap().is_empty(),
        "leased"
    );
    // Renewed, the lease holds past its first term.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(one.renew(&[seq]).await.unwrap(), 1);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        two.claim("k", claim(1, 10)).await.unwrap().is_empty(),
        "renewed"
    );
    // Not renewed: it lapses and the other replica takes it.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let taken = two.claim("k", claim(1, 10)).await.unwrap();
    assert_eq!(taken.iter().map(|d| d.seq).collect::<Vec<_>>(), [seq]);
    assert_eq!(
        one.renew(&[seq]).await.unwrap(),
        0,
        "no longer the first one's"
    );
    // The first replica's late result is ignored; the holder's counts.
    one.update_deliveries(vec![DeliveryUpdate::Dead {
        seq,
        at_ms: 1,
        error: "late".into(),
        status: None,
    }])
    .await
    .unwrap();
    assert!(matches!(
        one.delivery(seq).await.unwrap().unwrap().state,
        DeliveryState::Pending { .. }
    ));
    two.update_deliveries(vec![DeliveryUpdate::Delivered { seq, at_ms: 9 }])
        .await
        .unwrap();
    let d = one.delivery(seq).await.unwrap().unwrap();
    assert_eq!(d.state, DeliveryState::Delivered { at_ms: 9 });
    assert_eq!(d.attempts.len(), 1);
    assert_eq!(one.dead_letter_count().await.unwrap(), 0);
    one.close().await;
    two.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugin_key_value_store_compares_and_swaps_atomically() {
    let pg = PostgresServer::start();
    let store = connect(&pg, Duration::from_secs(30)).await;
    let now = 1_000;
    assert!(
        store
            .kv_compare_and_swap("p", "k", None, b"1", None, now)
            .await
            .unwrap()
    );
    assert!(
        !store
            .kv_compare_and_swap("p", "k", None, b"2", None, now)
            .await
            .unwrap()
    );
    assert!(
        !store
            .kv_compare_and_swap("p", "k", Some(b"0".to_vec()), b"2", None, now)
            .await
            .unwrap()
    );
    assert!(
        store
            .kv_compare_and_swap("p", "k", Some(b"1".to_vec()), b"2", Some(2_000), now)
            .await
            .unwrap()
    );
    assert_eq!(
        store.kv_get("p", "k", now).await.unwrap(),
        Some(b"2".to_vec())
    );
    // Expired: absent to reads and to a swap that expects nothing.
    assert_eq!(store.kv_get("p", "k", 2_000).await.unwrap(), None);
    assert!(
        store
            .kv_compare_and_swap("p", "k", None, b"3", None, 2_000)
            .await
            .unwrap()
    );
    assert!(store.kv_delete("p", "k").await.unwrap());
    assert!(!store.kv_delete("p", "k").await.unwrap());
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_newer_than_this_binary_is_refused() {
    let pg = PostgresServer::start();
    connect(&pg, Duration::from_secs(30)).await.close().await;
    pg.psql(&format!(
        "INSERT INTO {HISTORY_TABLE} (version, name, applied_on, checksum) \
         VALUES (999, 'future', '2030-01-01', '0')"
    ));
    let refused = Shared::connect(SharedOptions {
        url: pg.url(),
        lease: Duration::from_secs(30),
        pool_size: 4,
        order_keys: HashMap::new(),
        ca_file: None,
    })
    .await
    .err()
    .expect("refused")
    .to_string();
    assert!(
        refused.contains("schema is version 999, newer than this binary knows (1)"),
        "{refused}"
    );
    let inspected = inspect(&pg.url(), None)
        .await
        .expect_err("refused")
        .to_string();
    assert!(inspected.contains("version 999"), "{inspected}");
}
