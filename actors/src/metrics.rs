//! Prometheus metrics of the engine core.
//!
//! Handles are created once and cloned into whoever updates them; every update is an atomic
//! add, cheap enough for the enqueue path and the wave loop. Per-pool gauges are indexed by
//! [`PoolId`] so that no label lookup happens on the hot path.

use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::admission::Overload;
use crate::games::CircuitState;
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
    pub(crate) game_jobs_pending: IntGauge,
    pub(crate) game_jobs_in_flight: IntGauge,
    /// Attempts by outcome, in the order of [`AttemptOutcome`].
    pub(crate) live_game_attempts: [IntCounter; 4],
    pub(crate) live_game_seconds: Histogram,
    /// One gauge per state, in the order of [`CircuitState::ALL`]: 1 for the current one.
    pub(crate) live_game_circuit: [IntGauge; 3],
    /// Changes refused because the engine was behind, by reason, in the order of
    /// [`Overload::REASONS`].
    pub(crate) shed: [IntCounter; 2],
}

/// How one attempt to create a game ended, as `/metrics` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AttemptOutcome {
    Created,
    Transient,
    Permanent,
    Timeout,
}

impl AttemptOutcome {
    const LABELS: [&'static str; 4] = ["created", "transient", "permanent", "timeout"];
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
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let gauge = IntGauge::new(name, help)?;
            registry.register(Box::new(gauge.clone()))?;
            Ok(gauge)
        };
        let attempts = counter_vec(
            "matchwell_live_game_attempts_total",
            "Calls to the game creator by outcome: created, transient (5xx, 429, refused \
             connection), permanent (the request was refused), timeout",
            "outcome",
        )?;
        let circuit = IntGaugeVec::new(
            Opts::new(
                "matchwell_live_game_circuit",
                "Circuit breaker in front of the live-game service: 1 for the current state \
                 (closed, half_open, open)",
            ),
            &["state"],
        )?;
        registry.register(Box::new(circuit.clone()))?;
        let shed = counter_vec(
            "matchwell_shed_total",
            "Changes refused with 503 because the engine was behind: `shard` (the queue's \
             shard had too many messages waiting), `journal` (too many records waiting to be \
             durable)",
            "reason",
        )?;
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
            game_jobs_pending: gauge(
                "matchwell_game_jobs_pending",
                "Game-creation jobs not finished yet, running or waiting",
            )?,
            game_jobs_in_flight: gauge(
                "matchwell_game_jobs_in_flight",
                "Game-creation attempts running now",
            )?,
            live_game_attempts: AttemptOutcome::LABELS
                .map(|outcome| attempts.with_label_values(&[outcome])),
            live_game_seconds: histogram(
                "matchwell_live_game_seconds",
                "Time the game creator took to answer one attempt (or to time out)",
                prometheus::exponential_buckets(0.001, 2.0, 15)?,
            )?,
            live_game_circuit: CircuitState::ALL
                .map(|state| circuit.with_label_values(&[state.as_str()])),
            shed: Overload::REASONS.map(|reason| shed.with_label_values(&[reason])),
        })
    }

    /// Metrics registered in a private registry, for engines nobody scrapes.
    pub fn unregistered(catalog: &PoolCatalog) -> Self {
        Self::register(&Registry::new(), catalog).expect("a fresh registry accepts every metric")
    }

    pub(crate) fn searching(&self, pool: PoolId) -> &IntGauge {
        &self.searching[usize::from(pool.0)]
    }

    pub(crate) fn attempt(&self, outcome: AttemptOutcome) -> &IntCounter {
        &self.live_game_attempts[outcome as usize]
    }

    /// Shows `state` as the breaker's current state.
    pub(crate) fn circuit(&self, state: CircuitState) {
        for (gauge, each) in self.live_game_circuit.iter().zip(CircuitState::ALL) {
            gauge.set(i64::from(each == state));
        }
    }
}
