//! Status lookups by entry id from two threads among 1,000,000 waiting entries. Lookups read
//! the shared index directly, so no actor is involved.
//!
//! `cargo bench --bench lookup` (target: at least 5,000,000 lookups/s)

mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use matchwell::EntryStatus;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

const ENTRIES: usize = 1_000_000;
const THREADS: usize = 2;

fn lookup(c: &mut Criterion) {
    let runtime = support::runtime();
    let (engine, _clock) = runtime.block_on(support::engine());
    let mut ids = runtime.block_on(async {
        let callers = support::population(ENTRIES, &support::pools(&engine, 4), 3);
        let ids = support::enqueue_all(&engine, callers).await;
        assert_eq!(support::searching(&engine).await, ENTRIES);
        ids
    });
    ids.shuffle(&mut ChaCha8Rng::seed_from_u64(4));
    let mut group = c.benchmark_group("lookup");
    group
        .throughput(Throughput::Elements(1))
        .measurement_time(Duration::from_secs(10));
    group.bench_function("entry_status_2_threads", |b| {
        b.iter_custom(|iterations| {
            let per_thread = usize::try_from(iterations.div_ceil(THREADS as u64)).unwrap();
            let started = Instant::now();
            std::thread::scope(|scope| {
                for thread in 0..THREADS {
                    let ids = &ids;
                    let engine = &engine;
                    scope.spawn(move || {
                        let (tail, head) = ids.split_at(thread * ids.len() / THREADS);
                        for &id in head.iter().chain(tail).cycle().take(per_thread) {
                            let entry = engine.entry(support::TENANT, id);
                            assert_eq!(
                                black_box(entry.map(|entry| entry.status)),
                                Some(EntryStatus::Searching)
                            );
                        }
                    });
                }
            });
            started.elapsed()
        });
    });
    group.finish();
    runtime.block_on(engine.shutdown());
}

criterion_group!(benches, lookup);
criterion_main!(benches);
