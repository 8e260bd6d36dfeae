//! One wave over a pool of 100,000 and of 1,000,000 waiting players, run through the engine
//! on its manual clock: the wave itself and publishing every pair it forms to the index.
//!
//! The players joined over the last minute (so their windows differ) and nearly all of them
//! find a partner: the heaviest wave such a pool can see.
//!
//! `cargo bench --bench wave` (targets: 100,000 in at most 10 ms, 1,000,000 in at most 150 ms)

mod support;

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};

/// Simulated time over which the players join, in slices of equal size.
const JOIN_SLICES: u64 = 12;
const SLICE_MS: u64 = 5_000;

fn wave(c: &mut Criterion) {
    let runtime = support::runtime();
    let mut group = c.benchmark_group("wave");
    // Every iteration needs a freshly filled pool, so run as few as criterion allows.
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_millis(1));
    for players in [100_000, 1_000_000] {
        group.bench_with_input(
            BenchmarkId::from_parameter(players),
            &players,
            |b, &players| {
                b.iter_custom(|iterations| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iterations {
                        total += runtime.block_on(one_wave(players));
                    }
                    total
                });
            },
        );
    }
    group.finish();
}

/// Fills one pool with `players` and times the wave over it.
async fn one_wave(players: usize) -> Duration {
    let (engine, clock) = support::engine().await;
    let callers = support::population(players, &support::pools(&engine, 1), 2);
    let slices = callers.len().div_ceil(JOIN_SLICES as usize);
    let mut callers = callers.into_iter().peekable();
    while callers.peek().is_some() {
        support::enqueue_all(&engine, callers.by_ref().take(slices).collect()).await;
        clock.advance(Duration::from_millis(SLICE_MS));
    }
    assert_eq!(support::searching(&engine).await, players);
    let started = Instant::now();
    let counts = engine.run_waves(false).await.expect("a wave");
    let elapsed = started.elapsed();
    assert_eq!(counts.waves, 1);
    assert!(counts.pairs * 2 > players * 9 / 10, "{counts:?}");
    engine.shutdown().await;
    elapsed
}

criterion_group!(benches, wave);
criterion_main!(benches);
