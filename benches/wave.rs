//! One wave over a pool of 100,000 and of 1,000,000 waiting players.
//!
//! `wave/engine`: through the engine on its manual clock, timed from the tick to its answer:
//! the pairing and the publishing of every pair it forms (match records and entry states in
//! the index, game jobs, metrics). `wave/pairing`: the pairing alone
//! (`WaitingPool::run_wave`) over the same kind of pool, to tell the two costs apart.
//!
//! The players joined over the last minute (so their windows differ) and nearly all of them
//! find a partner: the heaviest wave such a pool can see.
//!
//! `cargo bench --bench wave` (targets: 100,000 in at most 10 ms, 1,000,000 in at most 150 ms)

mod support;

use std::time::{Duration, Instant};

use criterion::{BatchSize, BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};
use matchwell::{EntryId, PoolCatalog};
use matchwell_actors::matching::{Waiting, WaitingPool, WaveScratch};

const SIZES: [usize; 2] = [100_000, 1_000_000];
/// The players join in this many slices of simulated time, one after the other (a divisor
/// of [`support::CALLERS`], so that each slice holds as many callers).
const JOIN_SLICES: usize = 8;
const SLICE_MS: u64 = 5_000;

fn wave(c: &mut Criterion) {
    let runtime = support::runtime();
    let mut group = c.benchmark_group("wave/engine");
    // Every iteration needs a freshly filled engine, so run as few as criterion allows.
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_millis(1));
    for players in SIZES {
        group.bench_with_input(
            BenchmarkId::from_parameter(players),
            &players,
            |b, &players| {
                b.iter_custom(|iterations| {
                    (0..iterations)
                        .map(|_| runtime.block_on(engine_wave(players)))
                        .sum()
                });
            },
        );
    }
    group.finish();

    let mut group = c.benchmark_group("wave/pairing");
    group.sample_size(10);
    let params = PoolCatalog::builtin().iter().next().expect("a pool").params;
    let now_ms = support::START_MS + JOIN_SLICES as u64 * SLICE_MS;
    for players in SIZES {
        let pool = waiting_pool(players);
        let mut scratch = WaveScratch::default();
        group.bench_with_input(
            BenchmarkId::from_parameter(players),
            &players,
            |b, &players| {
                b.iter_batched(
                    || pool.clone(),
                    |mut pool| {
                        let outcome = pool.run_wave(now_ms, &params, &mut scratch);
                        assert!(outcome.pairs.len() * 2 > players * 9 / 10);
                        outcome
                    },
                    BatchSize::LargeInput,
                );
            },
        );
    }
    group.finish();
}

/// Fills one pool of an engine with `players` and times the wave over it.
async fn engine_wave(players: usize) -> Duration {
    let (engine, clock) = support::engine().await;
    let callers = support::population(players, &support::pools(&engine, 1), 2);
    let per_slice = callers.len() / JOIN_SLICES;
    let mut callers = callers.into_iter().peekable();
    while callers.peek().is_some() {
        support::enqueue_all(&engine, callers.by_ref().take(per_slice).collect()).await;
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

/// A pool like the one [`engine_wave`] fills: the same ratings, joining over the same time.
fn waiting_pool(players: usize) -> WaitingPool {
    let mut pool = WaitingPool::new();
    for (n, rating) in support::ratings(players, 2).enumerate() {
        let slice = (n * JOIN_SLICES / players) as u64;
        let id = EntryId::new(n as u64 + 1).expect("ids start at one");
        let joined_at_ms = support::START_MS + slice * SLICE_MS;
        let waiting = Waiting {
            id,
            joined_at_ms,
            last_color: None,
        };
        pool.insert(rating, waiting);
    }
    pool
}

criterion_group!(benches, wave);
criterion_main!(benches);
