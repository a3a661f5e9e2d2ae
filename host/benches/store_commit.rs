//! Store commit cost: one event per commit vs 64 concurrent events sharing one group commit,
//! with fsync (the default) and without. `cargo bench --bench store_commit`.

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use hookwall::store::{EventRecord, EventStatus, NewDelivery, NewEvent, Priority, Store};

fn event(id: u64) -> NewEvent {
    NewEvent {
        record: EventRecord {
            id: format!("e-{id}"),
            source: "bench".into(),
            received_at_ms: 0,
            method: "POST".into(),
            path: "/hooks/bench".into(),
            query: String::new(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: vec![b'x'; 1024],
            status: EventStatus::Forwarded,
            deliveries: Vec::new(),
        },
        deliveries: vec![NewDelivery {
            sink: "bench".into(),
            headers: Vec::new(),
            body: vec![b'x'; 1024],
            priority: Priority::Normal,
        }],
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    for fsync in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_with(dir.path(), fsync).unwrap();
        let mut next = 0u64;
        let mut group = c.benchmark_group(format!("store_commit_fsync_{fsync}"));
        group.measurement_time(Duration::from_secs(5));
        group.bench_function("one event per commit", |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                rt.block_on(async {
                    for _ in 0..iters {
                        next += 1;
                        store.accept(event(next)).await.unwrap();
                    }
                });
                start.elapsed()
            })
        });
        // Time per event when 64 arrive together and share commits.
        group.bench_function("64 concurrent events (group commit), per event", |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                rt.block_on(async {
                    for _ in 0..iters.div_ceil(64) {
                        let tasks: Vec<_> = (0..64)
                            .map(|_| {
                                next += 1;
                                let store = store.clone();
                                let e = event(next);
                                tokio::spawn(async move { store.accept(e).await.unwrap() })
                            })
                            .collect();
                        for t in tasks {
                            t.await.unwrap();
                        }
                    }
                });
                start.elapsed() * (iters as u32) / (iters.div_ceil(64) as u32 * 64)
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
