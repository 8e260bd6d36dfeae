//! What the tests share: connecting, seeded randomness, records, polling with a deadline.

use std::future::Future;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use matchwell_actors::persist::{Change, Image};
use matchwell_cluster::testkit::NatsCluster;
use matchwell_cluster::{ClusterConfig, ClusterStore, LeaseUpdate, LeaseWatch};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A generator seeded from `MATCHWELL_TEST_SEED` or the clock; the seed is printed, so a
/// failing test (whose output is shown) can be run again with it.
pub fn seeded_rng(test: &str) -> ChaCha8Rng {
    let seed = std::env::var("MATCHWELL_TEST_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.as_nanos() as u64)
        });
    eprintln!("{test}: MATCHWELL_TEST_SEED={seed}");
    ChaCha8Rng::seed_from_u64(seed)
}

/// The cluster configuration the tests use: short timeouts so that failures show quickly.
pub fn config(nats: &NatsCluster, partitions: u32) -> ClusterConfig {
    ClusterConfig {
        replicas: nats.len(),
        partitions,
        lease_ttl: Duration::from_secs(1),
        request_timeout: Duration::from_secs(1),
        ..config_for_urls(&nats.urls())
    }
}

pub async fn connect(nats: &NatsCluster) -> ClusterStore {
    ClusterStore::connect(config(nats, 8)).await.unwrap()
}

/// A record recognisable by `id`, of a random size (up to a few hundred bytes).
pub fn record(id: u64, rng: &mut impl Rng) -> Change {
    let images = (0..rng.random_range(0..40))
        .map(|n| Image::Resumed { downtime_ms: n })
        .collect();
    Change { at_ms: id, images }
}

/// A raw JetStream context on the servers, to look at what the crate wrote.
pub async fn raw_jetstream(nats: &NatsCluster) -> jetstream::Context {
    let urls: Vec<String> = nats.urls().split(',').map(str::to_owned).collect();
    jetstream::new(async_nats::connect(urls).await.unwrap())
}

/// Polls `attempt` until it yields `Some`, failing the test after `within`.
pub async fn eventually<T, F: Future<Output = Option<T>>>(
    what: &str,
    within: Duration,
    mut attempt: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = attempt().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The watch's next update, failing the test if none comes within ten seconds.
pub async fn next_update(watch: &mut LeaseWatch) -> LeaseUpdate {
    tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("no lease update within 10 s")
        .expect("the lease watch ended")
        .unwrap()
}

/// A configuration for `urls` with one replica.
pub fn config_for_urls(urls: &str) -> ClusterConfig {
    ClusterConfig {
        replicas: 1,
        ..ClusterConfig::new(urls)
    }
}
