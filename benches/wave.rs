//! One wave over a pool of 100,000 and of 1,000,000 waiting players.
//!
//! `wave/engine` (and `wave/first-engine-wave`, see below): through the engine on its manual
//! clock, timed from the tick to its answer: the pairing and the publishing of every pair it
//! forms (match records and entry states in the index, game jobs, metrics). `wave/pairing`:
//! the pairing alone (`WaitingPool::run_wave`) over the same kind of pool, to tell the two
//! costs apart.
//!
//! The players joined over the last minute (so their windows differ) and nearly all of them
//! find a partner: the heaviest wave such a pool can see. In `wave/engine` the shard has run
//! one such wave before, as the shard of a running server has (see [`engine_wave`]), and the
//! pairing alone reuses its scratch space between iterations likewise; `wave/first-engine-wave`
//! times a fresh engine's first wave, which also pays for growing that space.
//!
//! `wave/engine-quality` and `wave/pairing-quality` are the same over 100,000 players in pools
//! paced for quality (a 3-second target, so a wave sees players on both sides of it), whose
//! estimate has learned the players' arrivals: quality pacing may add at most 2x to a wave.
//!
//! `cargo bench --bench wave` (targets: 100,000 in at most 10 ms, 1,000,000 in at most 150 ms)

mod support;

use std::time::{Duration, Instant};

use criterion::{BatchSize, BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};
use matchwell::{
    Engine, EntryId, EntryStatus, ManualClock, MatchingParams, Pacing, PoolCatalog, PoolSpec,
};
use matchwell_actors::matching::{Waiting, WaitingPool, WaveScratch};

const SIZES: [usize; 2] = [100_000, 1_000_000];
/// The players join in this many slices of simulated time, one after the other (a divisor
/// of [`support::CALLERS`], so that each slice holds as many callers).
const JOIN_SLICES: usize = 8;
const SLICE_MS: u64 = 5_000;

/// The pacing of the `-quality` groups.
const QUALITY: Pacing = Pacing::Quality {
    target_wait_ms: 3_000,
};

fn wave(c: &mut Criterion) {
    let runtime = support::runtime();
    let groups = [
        ("wave/engine", true, Pacing::Eager, &SIZES[..]),
        ("wave/engine-quality", true, QUALITY, &SIZES[..1]),
        ("wave/first-engine-wave", false, Pacing::Eager, &SIZES[..]),
    ];
    for (name, earlier_wave, pacing, sizes) in groups {
        let mut group = c.benchmark_group(name);
        // Every iteration needs a freshly filled engine, so run as few as criterion allows.
        group
            .sampling_mode(SamplingMode::Flat)
            .sample_size(10)
            .warm_up_time(Duration::from_millis(1))
            .measurement_time(Duration::from_millis(1));
        for &players in sizes {
            group.bench_with_input(
                BenchmarkId::from_parameter(players),
                &players,
                |b, &players| {
                    b.iter_custom(|iterations| {
                        (0..iterations)
                            .map(|_| runtime.block_on(engine_wave(players, earlier_wave, pacing)))
                            .sum()
                    });
                },
            );
        }
        group.finish();
    }

    for (name, pacing, sizes) in [
        ("wave/pairing", Pacing::Eager, &SIZES[..]),
        ("wave/pairing-quality", QUALITY, &SIZES[..1]),
    ] {
        pairing(c, name, pacing, sizes);
    }
}

/// The pairing alone over pools of `sizes` players paced by `pacing`.
fn pairing(c: &mut Criterion, name: &str, pacing: Pacing, sizes: &[usize]) {
    let mut group = c.benchmark_group(name);
    group.sample_size(10);
    let params = MatchingParams {
        pacing,
        ..PoolCatalog::builtin().iter().next().expect("a pool").params
    };
    let now_ms = support::START_MS + JOIN_SLICES as u64 * SLICE_MS;
    for &players in sizes {
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

/// Fills one pool of an engine whose pools are paced by `pacing` with `players` and times
/// the wave over it.
///
/// With `earlier_wave`, the shard has run a wave over as many players before, as the shard of
/// a running server has: the timed wave finds the shard's scratch space grown and freed
/// memory to reuse, and the players who were paired then join again carrying their previous
/// match (so colors are decided from it). That wave's leftovers are withdrawn, so the timed
/// wave is over exactly `players`. Without, the timed wave is the engine's first.
async fn engine_wave(players: usize, earlier_wave: bool, pacing: Pacing) -> Duration {
    let (engine, clock) = support::engine_paced(pacing).await;
    let pools = support::pools(&engine, 1);
    if earlier_wave {
        let earlier = join(&engine, &clock, &pools, players, 3).await;
        engine.run_waves(false).await.expect("a first wave");
        let matchmaker = engine.matchmaker();
        for id in earlier {
            let entry = matchmaker.entry(support::TENANT, id).expect("an entry");
            if entry.status == EntryStatus::Searching {
                matchmaker
                    .cancel(support::TENANT, id)
                    .await
                    .expect("a cancel");
            }
        }
    }
    join(&engine, &clock, &pools, players, 2).await;
    assert_eq!(support::searching(&engine).await, players);
    let started = Instant::now();
    let counts = engine.run_waves(false).await.expect("a wave");
    let elapsed = started.elapsed();
    assert_eq!(counts.waves, 1);
    assert!(counts.pairs * 2 > players * 9 / 10, "{counts:?}");
    engine.shutdown().await;
    elapsed
}

/// Queues `players` into `pools` in [`JOIN_SLICES`] slices of simulated time; returns their
/// entries.
async fn join(
    engine: &Engine,
    clock: &ManualClock,
    pools: &[PoolSpec],
    players: usize,
    seed: u64,
) -> Vec<EntryId> {
    let callers = support::population(players, pools, seed);
    let per_slice = callers.len() / JOIN_SLICES;
    let mut callers = callers.into_iter().peekable();
    let mut entries = Vec::with_capacity(players);
    while callers.peek().is_some() {
        entries
            .extend(support::enqueue_all(engine, callers.by_ref().take(per_slice).collect()).await);
        clock.advance(Duration::from_millis(SLICE_MS));
    }
    entries
}

/// A pool like the one [`engine_wave`] fills: the same ratings, joining over the same time,
/// each counted as an arrival (as the engine counts them).
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
        pool.arrive(rating, waiting);
    }
    pool
}

criterion_group!(benches, wave);
criterion_main!(benches);
