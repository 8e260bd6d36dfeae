//! Snapshot and recovery of a data directory holding 1,000,000 waiting entries.
//!
//! `cargo bench --bench persistence`

mod support;

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use matchwell::{Engine, FsyncMode, PersistenceConfig};

const ENTRIES: usize = 1_000_000;

fn config(dir: &std::path::Path) -> PersistenceConfig {
    let mut config = PersistenceConfig::new(dir);
    config.fsync = FsyncMode::default();
    config
}

async fn start(dir: &std::path::Path) -> Engine {
    let (builder, _) = Engine::builder().manual(1_000);
    builder.persistence(config(dir)).start().await.unwrap()
}

async fn fill(engine: &Engine) {
    let pools = support::pools(engine, engine.catalog().len());
    for n in 0..ENTRIES {
        engine
            .enqueue(support::request(
                n,
                &pools[n % pools.len()],
                (n % 4_000) as u16,
            ))
            .await
            .unwrap();
    }
}

fn persistence(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let engine = runtime.block_on(async {
        let engine = start(dir.path()).await;
        fill(&engine).await;
        engine
    });
    let mut group = c.benchmark_group("persistence");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    group.bench_function("snapshot_1m_waiting", |b| {
        b.iter(|| runtime.block_on(engine.snapshot_now()).unwrap());
    });
    runtime.block_on(engine.shutdown());
    group.bench_function("recover_1m_waiting", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let started = Instant::now();
                let engine = runtime.block_on(start(dir.path()));
                total += started.elapsed();
                runtime.block_on(engine.shutdown());
            }
            total
        });
    });
    group.finish();
}

criterion_group!(benches, persistence);
criterion_main!(benches);
