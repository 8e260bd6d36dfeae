//! Enqueues through the public engine API, the router and the shards, from many concurrent
//! callers: into one pool, and spread over four pools (which the default shards share).
//!
//! `cargo bench --bench enqueue` (target: at least 1,000,000 enqueues/s on two cores)

mod support;

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn enqueue(c: &mut Criterion) {
    let runtime = support::runtime();
    let mut group = c.benchmark_group("enqueue");
    group
        .throughput(Throughput::Elements(1))
        .sample_size(20)
        .measurement_time(Duration::from_secs(10));
    for pools in [1, 4] {
        group.bench_function(format!("{pools}_pools"), |b| {
            b.iter_custom(|iterations| {
                runtime.block_on(async {
                    let (engine, _clock) = support::engine().await;
                    let players = usize::try_from(iterations).expect("fits in memory");
                    let callers = support::population(players, &support::pools(&engine, pools), 1);
                    let started = Instant::now();
                    support::enqueue_all(&engine, callers).await;
                    // Timed until the shards hold them all: the router must keep up, too.
                    let searching = support::searching(&engine).await;
                    let elapsed = started.elapsed();
                    assert_eq!(searching, players);
                    engine.shutdown().await;
                    elapsed
                })
            });
        });
    }
    group.finish();
}

criterion_group!(benches, enqueue);
criterion_main!(benches);
