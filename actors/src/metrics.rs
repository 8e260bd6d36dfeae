//! Prometheus metrics of the engine core.
//!
//! Handles are created once and cloned into whoever updates them; every update is an atomic
//! add, cheap enough for the enqueue path and the wave loop. Per-pool gauges are indexed by
//! [`PoolId`] so that no label lookup happens on the hot path.

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::pools::{PoolCatalog, PoolId};

/// The core's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub(crate) enqueues: IntCounter,
    pub(crate) cancels: IntCounter,
    pub(crate) matches: IntCounter,
    pub(crate) expired: IntCounter,
    pub(crate) searching: Vec<IntGauge>,
    pub(crate) wait_seconds: Histogram,
    pub(crate) rating_gap: Histogram,
    pub(crate) tick_seconds: Histogram,
    pub(crate) game_jobs: IntCounterVec,
    pub(crate) challenges: IntCounterVec,
}

impl Metrics {
    /// Creates the metrics for `catalog` and registers them in `registry`.
    pub fn register(registry: &Registry, catalog: &PoolCatalog) -> Result<Self, prometheus::Error> {
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let counter = IntCounter::new(name, help)?;
            registry.register(Box::new(counter.clone()))?;
            Ok(counter)
        };
        let histogram =
            |name: &str, help: &str, buckets: Vec<f64>| -> Result<Histogram, prometheus::Error> {
                let histogram =
                    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))?;
                registry.register(Box::new(histogram.clone()))?;
                Ok(histogram)
            };
        let counter_vec =
            |name: &str, help: &str, label: &str| -> Result<IntCounterVec, prometheus::Error> {
                let counters = IntCounterVec::new(Opts::new(name, help), &[label])?;
                registry.register(Box::new(counters.clone()))?;
                Ok(counters)
            };
        let searching_by_pool = IntGaugeVec::new(
            Opts::new(
                "matchwell_queue_searching",
                "Entries searching now, by pool (all tenants)",
            ),
            &["pool"],
        )?;
        registry.register(Box::new(searching_by_pool.clone()))?;
        Ok(Self {
            enqueues: counter("matchwell_enqueues_total", "Entries created")?,
            cancels: counter("matchwell_cancels_total", "Entries cancelled")?,
            matches: counter("matchwell_matches_total", "Matches formed by the queue")?,
            expired: counter("matchwell_expired_total", "Entries that expired")?,
            searching: catalog
                .iter()
                .map(|pool| searching_by_pool.with_label_values(&[&pool.spec.to_string()]))
                .collect(),
            wait_seconds: histogram(
                "matchwell_wait_seconds",
                "Time from joining to being paired",
                vec![
                    0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
                ],
            )?,
            rating_gap: histogram(
                "matchwell_rating_gap",
                "Rating gap of formed matches",
                vec![
                    0.0, 10.0, 25.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 400.0, 500.0,
                ],
            )?,
            tick_seconds: histogram(
                "matchwell_tick_duration_seconds",
                "Duration of one tick of a shard (all its due waves)",
                prometheus::exponential_buckets(0.000_05, 2.0, 16)?,
            )?,
            game_jobs: counter_vec(
                "matchwell_game_jobs_total",
                "Game-creation attempts by outcome",
                "outcome",
            )?,
            challenges: counter_vec(
                "matchwell_challenges_total",
                "Challenge transitions by resulting status",
                "status",
            )?,
        })
    }

    /// Metrics registered in a private registry, for engines nobody scrapes.
    pub fn unregistered(catalog: &PoolCatalog) -> Self {
        Self::register(&Registry::new(), catalog).expect("a fresh registry accepts every metric")
    }

    pub(crate) fn searching(&self, pool: PoolId) -> &IntGauge {
        &self.searching[usize::from(pool.0)]
    }
}
