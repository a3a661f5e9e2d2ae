//! What one delivery costs the scheduler with 1, 10,000 and 1,000,000 deliveries pending: one
//! hot order key waiting ten minutes for a retry (half the backlog queued behind it) and the
//! rest over 10,000 cold keys due in an hour. Each iteration is a new delivery of a free key
//! through the whole cycle (arrive, dispatch round, read, send, settle), against an in-memory
//! store, so this is the scheduler's own CPU. `cargo bench --bench dispatch`.

use criterion::{Criterion, criterion_group, criterion_main};
use hookwall::delivery::bench::DispatchBench;

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("dispatch_per_delivery");
    for pending in [1u64, 10_000, 1_000_000] {
        let mut rig = DispatchBench::new(pending);
        group.bench_function(format!("{pending} pending"), |b| {
            b.iter(|| assert_eq!(rig.deliver_one(), 1))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
