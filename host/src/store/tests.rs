use super::*;

pub(super) fn event(id: &str, sinks: &[&str]) -> NewEvent {
    NewEvent {
        record: EventRecord {
            id: id.into(),
            source: "demo".into(),
            received_at_ms: 1_000,
            method: "POST".into(),
            path: "/hooks/demo".into(),
            query: String::new(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: br#"{"a":1}"#.to_vec(),
            status: EventStatus::Forwarded,
            deliveries: Vec::new(),
        },
        deliveries: sinks
            .iter()
            .map(|s| NewDelivery {
                sink: s.to_string(),
                headers: Vec::new(),
                body: b"x".to_vec(),
                priority: Priority::Normal,
            })
            .collect(),
    }
}

#[tokio::test]
async fn event_and_deliveries_commit_together_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = Embedded::open(dir.path()).unwrap();
    assert_eq!(
        store.accept(event("e1", &["a", "b"])).await.unwrap(),
        AcceptOutcome::Stored
    );
    assert_eq!(
        store.accept(event("e1", &["a"])).await.unwrap(),
        AcceptOutcome::Duplicate { id: "e1".into() }
    );
    store.close().await;
    drop(store);

    let store = Embedded::open(dir.path()).unwrap();
    let (record, deliveries) = store.event("demo", "e1").unwrap().unwrap();
    assert_eq!(record.deliveries.len(), 2);
    assert_eq!(deliveries.len(), 2);
    assert_eq!(store.due_deliveries("a", 1_000, 10).unwrap().len(), 1);
    assert_eq!(store.due_deliveries("a", 999, 10).unwrap().len(), 0);
    // Sequence numbers keep growing after a reopen.
    store.accept(event("e2", &["a"])).await.unwrap();
    let (e2, _) = store.event("demo", "e2").unwrap().unwrap();
    assert!(e2.deliveries[0] > deliveries[1].seq);
}

#[tokio::test]
async fn concurrent_copies_of_one_event_store_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Embedded::open(dir.path()).unwrap();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.accept(event("same", &["a"])).await.unwrap() })
        })
        .collect();
    let mut stored = 0;
    for t in tasks {
        if t.await.unwrap() == AcceptOutcome::Stored {
            stored += 1;
        }
    }
    assert_eq!(stored, 1);
    assert_eq!(store.pending_count("a").unwrap(), 1);
}

#[tokio::test]
async fn retries_reschedule_and_dead_letters_are_listed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Embedded::open(dir.path()).unwrap();
    store.accept(event("e1", &["a"])).await.unwrap();
    let seq = store.due_deliveries("a", 1_000, 10).unwrap()[0].seq;

    store
        .update_deliveries(vec![DeliveryUpdate::Retry {
            seq,
            at_ms: 1_000,
            error: "connection refused".into(),
            status: None,
            due_ms: 5_000,
        }])
        .await
        .unwrap();
    assert!(store.due_deliveries("a", 4_999, 10).unwrap().is_empty());
    assert_eq!(store.next_due_ms("a").unwrap(), Some(5_000));

    store
        .update_deliveries(vec![DeliveryUpdate::Dead {
            seq,
            at_ms: 5_000,
            error: "gave up".into(),
            status: Some(503),
        }])
        .await
        .unwrap();
    assert_eq!(store.pending_count("a").unwrap(), 0);
    let letters = store.dead_letters(10).unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].1.delivery, Some(seq));
    let (_, deliveries) = store.event("demo", "e1").unwrap().unwrap();
    assert_eq!(deliveries[0].attempts.len(), 2);
    assert!(matches!(deliveries[0].state, DeliveryState::Dead { .. }));
}

#[tokio::test]
async fn high_priority_is_due_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = Embedded::open(dir.path()).unwrap();
    store.accept(event("normal", &["a"])).await.unwrap();
    let mut urgent = event("urgent", &["a"]);
    urgent.deliveries[0].priority = Priority::High;
    store.accept(urgent).await.unwrap();
    let due = store.due_deliveries("a", 1_000, 10).unwrap();
    assert_eq!(due[0].event_id, "urgent");
    assert_eq!(due[1].event_id, "normal");
}

#[tokio::test]
async fn writes_after_close_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Embedded::open(dir.path()).unwrap();
    store.close().await;
    assert!(matches!(
        store.accept(event("late", &["a"])).await,
        Err(StoreError::Closed)
    ));
}

#[tokio::test]
async fn without_fsync_a_clean_close_still_persists() {
    let dir = tempfile::tempdir().unwrap();
    let store = Embedded::open_with(dir.path(), false).unwrap();
    store.accept(event("e1", &["a"])).await.unwrap();
    store.close().await;
    drop(store);
    let store = Embedded::open(dir.path()).unwrap();
    assert!(store.event("demo", "e1").unwrap().is_some());
}

fn mark(key: &str, expires_ms: u64) -> DedupeMark {
    DedupeMark {
        source: "demo".into(),
        key: key.into(),
        expires_ms,
    }
}

#[tokio::test]
async fn concurrent_copies_under_one_mark_store_exactly_one_event() {
    let dir = tempfile::tempdir().unwrap();
    let store = Embedded::open(dir.path()).unwrap();
    // Different event ids (as with a body-hash key, where each copy gets a fresh id): only the
    // mark makes them the same event.
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .accept_marked(event(&format!("copy-{i}"), &["a"]), Some(mark("k", 5_000)))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut stored = Vec::new();
    let mut duplicate_of = std::collections::HashSet::new();
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.unwrap() {
            AcceptOutcome::Stored => stored.push(format!("copy-{i}")),
            AcceptOutcome::Duplicate { id } => {
                duplicate_of.insert(id);
            }
        }
    }
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(duplicate_of.into_iter().collect::<Vec<_>>(), stored);
    assert_eq!(store.pending_count("a").unwrap(), 1);
    assert_eq!(store.load().pending, 1);
    assert_eq!(
        store.marked("demo", "k", 1_000).unwrap(),
        Some(stored[0].clone())
    );
}

#[tokio::test]
async fn marks_survive_reopen_expire_and_are_purged_in_batches() {
    let dir = tempfile::tempdir().unwrap();
    let store = Embedded::open(dir.path()).unwrap();
    // received_at_ms is 1_000 for every test event.
    for i in 0..5 {
        let out = store
            .accept_marked(
                event(&format!("e{i}"), &[]),
                Some(mark(&format!("k{i}"), 2_000 + i)),
            )
            .await
            .unwrap();
        assert_eq!(out, AcceptOutcome::Stored);
    }
    store.close().await;
    drop(store);

    let store = Embedded::open(dir.path()).unwrap();
    assert_eq!(
        store.marked("demo", "k0", 1_500).unwrap().as_deref(),
        Some("e0")
    );
    assert_eq!(
        store.marked("demo", "k0", 2_000).unwrap(),
        None,
        "expired at 2_000"
    );
    assert_eq!(store.mark_count().unwrap(), 5);
    // Three marks expired before 2_003; the purge takes at most two per call.
    assert_eq!(store.purge_expired_marks(2_003, 2).await.unwrap(), 2);
    assert_eq!(store.purge_expired_marks(2_003, 2).await.unwrap(), 1);
    assert_eq!(store.purge_expired_marks(2_003, 2).await.unwrap(), 0);
    assert_eq!(store.mark_count().unwrap(), 2);
    assert_eq!(
        store.marked("demo", "k4", 1_500).unwrap().as_deref(),
        Some("e4")
    );
}

#[tokio::test]
async fn an_expired_mark_no_longer_makes_a_duplicate_and_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let store = Embedded::open(dir.path()).unwrap();
    // The event arrives at 1_000; a mark that expired at 900 is stale.
    let stale = mark("k", 900);
    let mut early = event("old", &[]);
    early.record.received_at_ms = 100;
    assert_eq!(
        store.accept_marked(early, Some(stale)).await.unwrap(),
        AcceptOutcome::Stored
    );
    assert_eq!(
        store
            .accept_marked(event("new", &[]), Some(mark("k", 9_000)))
            .await
            .unwrap(),
        AcceptOutcome::Stored
    );
    assert_eq!(
        store.marked("demo", "k", 1_000).unwrap().as_deref(),
        Some("new")
    );
    // The replaced mark's old expiry entry is gone: nothing to purge at 5_000.
    assert_eq!(store.purge_expired_marks(5_000, 10).await.unwrap(), 0);
    assert_eq!(store.mark_count().unwrap(), 1);
}

/// A store written before events were keyed by source and before the log (no `schema` in
/// `meta`, each record with its headers and body inline) is upgraded at open: events move to
/// `SOURCE:ID`, and headers and bodies move to the log, so another source's event with the
/// same id is stored and the old event and its pending delivery read as before.
#[tokio::test]
async fn an_old_store_gets_its_events_keyed_by_source() {
    let dir = tempfile::tempdir().unwrap();
    {
        // A store as the first versions wrote it: the event under its bare id, records inline.
        let mut old = event("42", &["a"]).record;
        old.deliveries = vec![1];
        let delivery = DeliveryRecord {
            seq: 1,
            id: "demo:42:a:0".into(),
            event_id: "42".into(),
            source: "demo".into(),
            received_at_ms: 1_000,
            sink: "a".into(),
            headers: vec![("x-old".into(), "1".into())],
            body: b"old body".to_vec(),
            priority: Priority::Normal,
            attempts: Vec::new(),
            state: DeliveryState::Pending { due_ms: 1_000 },
            queued_at_ms: 1_000,
        };
        let db = redb::Database::create(dir.path().join(DB_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn.open_table(META).unwrap();
            meta.insert("next_seq", 2).unwrap();
            let mut events = txn.open_table(EVENTS).unwrap();
            let bytes = records::encode(&old).unwrap();
            events.insert("42", bytes.as_slice()).unwrap();
            let mut deliveries = txn.open_table(DELIVERIES).unwrap();
            let bytes = records::encode(&delivery).unwrap();
            deliveries.insert(1, bytes.as_slice()).unwrap();
            let mut pending = txn.open_table(PENDING).unwrap();
            pending.insert(("a", 1, 1_000, 1), ()).unwrap();
            let mut times = txn.open_table(EVENT_TIMES).unwrap();
            times.insert((1_000, "42"), ()).unwrap();
        }
        txn.commit().unwrap();
    }
    let store = Embedded::open(dir.path()).unwrap();
    let (record, deliveries) = store.event("demo", "42").unwrap().unwrap();
    assert_eq!(record.id, "42");
    assert_eq!(deliveries[0].event_id, "42");
    // The delivery id a receiver may have seen already is kept.
    assert_eq!(deliveries[0].id, "demo:42:a:0");
    assert_eq!(record.body, br#"{"a":1}"#);
    assert_eq!(record.headers[0].0, "content-type");
    let due = store.due_deliveries("a", 5_000, 10).unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(
        (due[0].body.as_slice(), due[0].headers[0].0.as_str()),
        (&b"old body"[..], "x-old")
    );
    let page = store
        .list_events(&EventFilter::default(), None, 10)
        .unwrap();
    assert_eq!(page.events.len(), 1, "the time index follows the move");
    // The same id from another source is a new event.
    let mut other = event("42", &["a"]);
    other.record.source = "other".into();
    assert_eq!(store.accept(other).await.unwrap(), AcceptOutcome::Stored);
    assert_eq!(
        store.accept(event("42", &["a"])).await.unwrap(),
        AcceptOutcome::Duplicate { id: "42".into() }
    );
}

#[tokio::test]
async fn the_feed_publishes_commits_and_a_resend_queues_exactly_the_dead_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let store = Embedded::open(dir.path()).unwrap();
    let feed = store.feed("a");
    store.accept(event("e1", &["a", "a", "b"])).await.unwrap();
    let queued = feed.drain();
    assert_eq!(queued.len(), 2, "only sink a's deliveries: {queued:?}");
    assert!(feed.drain().is_empty());
    let (first, second) = (queued[0].seq, queued[1].seq);

    // The first dies, the second is delivered; a resend queues only the first, as it was.
    store
        .update_deliveries(vec![
            DeliveryUpdate::Dead {
                seq: first,
                at_ms: 2_000,
                error: "422".into(),
                status: Some(422),
            },
            DeliveryUpdate::Delivered {
                seq: second,
                at_ms: 2_000,
            },
        ])
        .await
        .unwrap();
    let letter = store.dead_letters(10).unwrap()[0].0;
    assert_eq!(
        store.replay(vec![Replay::Resend { letter }]).await.unwrap(),
        1
    );
    let again = feed.drain();
    assert_eq!(again.len(), 1);
    let old = store.delivery(first).unwrap().unwrap();
    let new = store.pending_records(&[again[0].seq]).unwrap().remove(0);
    assert_eq!((new.id.as_str(), &new.body), (old.id.as_str(), &old.body));
    assert!(new.attempts.is_empty(), "a fresh budget");
    assert!(matches!(old.state, DeliveryState::Resolved { .. }));
    assert_eq!(
        store
            .pending_records(&[first, second, again[0].seq])
            .unwrap()
            .len(),
        1,
        "only pending records are read"
    );
    // The letter is gone: a second replay resends nothing.
    assert_eq!(
        store.replay(vec![Replay::Resend { letter }]).await.unwrap(),
        0
    );
}

#[tokio::test]
async fn a_removed_sinks_pending_deliveries_become_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let store = Embedded::open(dir.path()).unwrap();
    for i in 0..3 {
        store
            .accept(event(&format!("e{i}"), &["kept", "gone"]))
            .await
            .unwrap();
    }
    assert_eq!(store.pending_sinks().unwrap(), vec!["gone", "kept"]);
    let mut scanned = 0;
    store
        .scan_pending("gone", true, |_, body| {
            assert_eq!(body, Some(&b"x"[..]));
            scanned += 1;
        })
        .unwrap();
    assert_eq!(scanned, 3);
    assert_eq!(
        store
            .dead_letter_sink("gone", "sink removed")
            .await
            .unwrap(),
        3
    );
    assert_eq!(store.pending_sinks().unwrap(), vec!["kept"]);
    let letters = store.dead_letters(10).unwrap();
    assert_eq!(letters.len(), 3);
    assert!(
        letters
            .iter()
            .all(|(_, l)| l.sink.as_deref() == Some("gone") && l.reason == "sink removed")
    );
}

/// A crash while the database file was being created leaves only its temporary file (see
/// `cell::create_new`): the next start removes it and creates the store.
#[tokio::test]
async fn a_half_created_database_is_discarded_not_refused() {
    let dir = tempfile::tempdir().unwrap();
    let leftover = dir.path().join(format!("{DB_FILE}.new"));
    std::fs::write(&leftover, b"half a redb header").unwrap();
    let store = Embedded::open(dir.path()).unwrap();
    assert!(!leftover.exists());
    assert_eq!(
        store.accept(event("e1", &["a"])).await.unwrap(),
        AcceptOutcome::Stored
    );
}

/// With small segments, a segment is deleted once every row pointing into it is pruned; the
/// open events' segments stay, and read whole after a reopen.
#[tokio::test]
async fn a_log_segment_is_deleted_once_nothing_in_it_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    cell::create_new(&path).unwrap();
    let db = cell::create(&path).unwrap();
    // Each event's record is longer than this: each group starts a segment of its own.
    let store = Embedded::start_with(dir.path(), db, true, 50).unwrap();
    for i in 0..6 {
        let e = event(&format!("e{i}"), &["a"]);
        assert_eq!(store.accept(e).await.unwrap(), AcceptOutcome::Stored);
    }
    let log_dir = dir.path().join(log::LOG_DIR);
    assert_eq!(log::list(&log_dir).unwrap(), [1, 2, 3, 4, 5, 6]);
    for i in 0..4 {
        let (_, deliveries) = store.event("demo", &format!("e{i}")).unwrap().unwrap();
        let done = DeliveryUpdate::Delivered {
            seq: deliveries[0].seq,
            at_ms: 2_000,
        };
        store.update_deliveries(vec![done]).await.unwrap();
    }
    let step = store.prune_settled(u64::MAX, None, 100, 100).await.unwrap();
    assert_eq!(step.pruned, 4);
    // Segment 7 is the head the commits after the sixth event rolled over to.
    assert_eq!(log::list(&log_dir).unwrap(), [5, 6, 7]);
    store.close().await;
    drop(store);

    let store = Embedded::open(dir.path()).unwrap();
    let due = store.due_deliveries("a", 5_000, 10).unwrap();
    let ids: Vec<&str> = due.iter().map(|d| d.event_id.as_str()).collect();
    assert_eq!(ids, ["e4", "e5"]);
    assert!(due.iter().all(|d| d.body == b"x"));
    let (e5, _) = store.event("demo", "e5").unwrap().unwrap();
    assert_eq!(e5.body, br#"{"a":1}"#);
    assert!(store.event("demo", "e0").unwrap().is_none());
}
