//! Setup shared by the benches: engines on a manual clock, seeded player populations, and
//! concurrent callers that queue a population through the public API.

// Each bench compiles its own copy of this module and uses only part of it.
#![allow(dead_code)]

use std::sync::Arc;

/// The allocator the `matchwell` binary uses.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use compact_str::format_compact;
use matchwell::{
    Engine, EnqueueRequest, EntryId, ManualClock, MatchingParams, Pacing, PoolCatalog, PoolSpec,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// The tenant every bench queues under.
pub const TENANT: &str = "bench";

/// Concurrent callers queueing a population: far more than the cores, as on a busy server.
pub const CALLERS: usize = 64;

/// Where the benches' manual clocks start, in milliseconds.
pub const START_MS: u64 = 1_000;

/// A tokio runtime with one worker per core, where the callers run.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts")
}

/// An engine on a manual clock with no background tasks, the default shard count and the
/// built-in pools.
pub async fn engine() -> (Engine, Arc<ManualClock>) {
    engine_paced(Pacing::Eager).await
}

/// [`engine`] with every pool paced by `pacing`.
pub async fn engine_paced(pacing: Pacing) -> (Engine, Arc<ManualClock>) {
    let pools = PoolCatalog::from_definitions(PoolCatalog::builtin().iter().map(|pool| {
        let params = MatchingParams {
            pacing,
            ..pool.params
        };
        (pool.spec.clone(), params)
    }))
    .expect("the built-in pools are distinct");
    let (builder, clock) = Engine::builder().pools(pools).manual(START_MS);
    let engine = builder.start().await.expect("the engine starts");
    (engine, clock)
}

/// The first `count` pools of the engine's catalog.
pub fn pools(engine: &Engine, count: usize) -> Vec<PoolSpec> {
    engine
        .catalog()
        .iter()
        .take(count)
        .map(|pool| pool.spec.clone())
        .collect()
}

/// A request to queue player `n` into `pool`.
pub fn request(n: usize, pool: &PoolSpec, rating: u16) -> EnqueueRequest {
    EnqueueRequest {
        tenant: TENANT.into(),
        user_id: format_compact!("player-{n}"),
        pool: pool.clone(),
        rating,
        idempotency_key: None,
    }
}

/// `players` ratings drawn around 1500, as on a real site.
pub fn ratings(players: usize, seed: u64) -> impl Iterator<Item = u16> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let ratings = Normal::<f64>::new(1_500.0, 350.0).expect("a valid distribution");
    (0..players).map(move |_| ratings.sample(&mut rng).clamp(0.0, 4_000.0) as u16)
}

/// `players` distinct players with [`ratings`], spread round-robin over `pools` and dealt out
/// to [`CALLERS`] callers. Built before timing starts.
pub fn population(players: usize, pools: &[PoolSpec], seed: u64) -> Vec<Vec<EnqueueRequest>> {
    let mut callers: Vec<Vec<EnqueueRequest>> = (0..CALLERS)
        .map(|_| Vec::with_capacity(players / CALLERS + 1))
        .collect();
    for (n, rating) in ratings(players, seed).enumerate() {
        callers[n % CALLERS].push(request(n, &pools[n % pools.len()], rating));
    }
    callers
}

/// Queues every request, each caller its own task, and returns the new entries' ids.
pub async fn enqueue_all(engine: &Engine, callers: Vec<Vec<EnqueueRequest>>) -> Vec<EntryId> {
    let tasks: Vec<_> = callers
        .into_iter()
        .map(|requests| {
            let matchmaker = engine.matchmaker();
            tokio::spawn(async move {
                let mut ids = Vec::with_capacity(requests.len());
                for request in requests {
                    ids.push(matchmaker.enqueue(request).await.expect("enqueue").id);
                }
                ids
            })
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        ids.extend(task.await.expect("a caller task"));
    }
    ids
}

/// Waits until the shards hold every entry sent to them, and returns how many are searching.
///
/// A summary passes through the router and every shard behind the enqueues already sent, so
/// its answer comes only once they are all in their pools.
pub async fn searching(engine: &Engine) -> usize {
    engine
        .summary(TENANT)
        .await
        .expect("a summary")
        .iter()
        .map(|queue| queue.searching)
        .sum()
}
