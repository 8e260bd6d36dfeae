//! The engine a server serves: absent while it recovers, then there until the process ends;
//! or in cluster mode, the node whose partitions serve the tenants. And the health components
//! that describe them.

use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use serde_json::json;

use crate::cluster::{Node, Route};
use crate::health::{ComponentHealth, Criticality, HealthRegistry, HealthStatus};
use crate::http::views::rfc3339;
use crate::{CircuitState, Engine};

/// The engine of a server, and whether the server is stopping. The server listens before
/// recovery begins, so that an orchestrator sees a live process while a big data directory is
/// read back; its handlers find the engine here once it is there. A `OnceLock` because the
/// engine arrives once and never leaves: a request reads it with one atomic load, lock-free,
/// and borrows it for as long as the request runs. Shared (`Arc`) by every worker, by the
/// health components, and by the command that fills it and stops the server.
#[derive(Default)]
pub struct EngineSlot {
    engine: OnceLock<Arc<Engine>>,
    /// In cluster mode, the node once it has joined: its partitions' engines serve the
    /// tenants, each only while the node owns the partition, so requests hold them by `Arc`.
    node: OnceLock<Arc<Node>>,
    /// Whether the server runs in cluster mode, which its routes depend on (the cluster map).
    clustered: bool,
    /// Set when the server begins to stop: writes are refused from then on, and answers close
    /// their connections.
    stopping: AtomicBool,
}

/// The engine serving a request: the server's one engine, borrowed for as long as the request
/// runs, or a partition's, held while the request runs (the partition may move meanwhile).
pub(crate) enum EngineRef<'a> {
    Single(&'a Engine),
    Partition(Arc<Engine>),
}

impl Deref for EngineRef<'_> {
    type Target = Engine;

    fn deref(&self) -> &Engine {
        match self {
            Self::Single(engine) => engine,
            Self::Partition(engine) => engine,
        }
    }
}

/// Why a slot has no engine for a request, as the answer tells it.
pub(crate) enum Unserved {
    /// The engine is recovering, or the node has not joined yet.
    Recovering,
    /// Cluster mode: this node does not serve the tenant's partition now.
    Elsewhere(String),
}

/// Where the served engine is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineState {
    /// Not there yet: the data directory is being read back.
    Recovering,
    /// Serving.
    Running,
    /// The server or the engine is stopping.
    Stopping,
}

impl EngineState {
    fn name(self) -> &'static str {
        match self {
            Self::Recovering => "recovering",
            Self::Running => "running",
            Self::Stopping => "stopping",
        }
    }
}

impl EngineSlot {
    /// A slot for a node of a cluster, filled with [`EngineSlot::fill_node`].
    pub fn clustered() -> Self {
        Self {
            clustered: true,
            ..Self::default()
        }
    }

    /// The engine, once recovered.
    pub fn get(&self) -> Option<&Engine> {
        self.engine.get().map(|engine| &**engine)
    }

    /// Whether the server runs in cluster mode.
    pub(crate) fn is_clustered(&self) -> bool {
        self.clustered
    }

    /// The cluster node, once it has joined.
    pub(crate) fn node(&self) -> Option<&Node> {
        self.node.get().map(|node| &**node)
    }

    /// The engine serving `tenant`: the one engine, or the engine of the tenant's partition
    /// when this node serves it.
    pub(crate) fn engine_for(&self, tenant: &str) -> Result<EngineRef<'_>, Unserved> {
        if let Some(engine) = self.get() {
            return Ok(EngineRef::Single(engine));
        }
        match self.node().map(|node| node.route(tenant)) {
            Some(Route::Local(owned)) => Ok(EngineRef::Partition(Arc::clone(&owned.engine))),
            Some(Route::Unavailable(reason)) => Err(Unserved::Elsewhere(reason)),
            Some(Route::Remote(holder)) => Err(Unserved::Elsewhere(format!(
                "this node does not serve the tenant's partition; {} does",
                holder.node.id()
            ))),
            None => Err(Unserved::Recovering),
        }
    }

    /// Puts the joined cluster node in place.
    ///
    /// # Panics
    /// If a node is there already, or the slot is not [clustered](Self::clustered).
    pub fn fill_node(&self, node: Arc<Node>) {
        assert!(self.clustered, "the slot is not a cluster node's");
        assert!(self.node.set(node).is_ok(), "the slot holds a node already");
    }

    /// Puts the recovered engine in place.
    ///
    /// # Panics
    /// If an engine is there already: a server serves one engine.
    pub fn fill(&self, engine: Arc<Engine>) {
        assert!(
            self.engine.set(engine).is_ok(),
            "the slot holds an engine already"
        );
    }

    /// The server begins to stop: from now on writes are refused, readiness says `stopping`,
    /// and every answer closes its connection.
    pub fn begin_stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Whether the server is stopping.
    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Where the engine is in its life.
    pub fn state(&self) -> EngineState {
        match self.get() {
            _ if self.is_stopping() => EngineState::Stopping,
            None => EngineState::Recovering,
            Some(engine) if engine.is_stopping() => EngineState::Stopping,
            Some(_) => EngineState::Running,
        }
    }

    /// Registers the health components of what the slot serves: a cluster node's `cluster`
    /// component, or the one engine's.
    pub fn register_health(self: &Arc<Self>, health: &mut HealthRegistry) {
        if self.clustered {
            self.register_cluster_health(health);
        } else {
            self.register_engine_health(health);
        }
    }

    /// Registers the engine's components, all critical: `engine` (its state, and whether it
    /// takes changes), `journal` and `snapshots`. Until the engine is there, the latter two
    /// report `unhealthy` with the engine's state, as they do not exist yet.
    fn register_engine_health(self: &Arc<Self>, health: &mut HealthRegistry) {
        let slot = Arc::clone(self);
        health.register(
            "engine",
            Criticality::Critical,
            Arc::new(move || slot.engine_health()),
        );
        let slot = Arc::clone(self);
        health.register(
            "journal",
            Criticality::Critical,
            Arc::new(move || slot.with_engine(journal_health)),
        );
        let slot = Arc::clone(self);
        health.register(
            "snapshots",
            Criticality::Critical,
            Arc::new(move || slot.with_engine(snapshot_health)),
        );
        // Matching goes on without it and games are created once it is back: at worst the
        // service is degraded.
        let slot = Arc::clone(self);
        health.register(
            "live_game",
            Criticality::NonCritical,
            Arc::new(move || slot.with_engine(live_game_health)),
        );
    }

    /// Registers the `cluster` component of a cluster node, critical: unhealthy until the
    /// node has joined, then as the node reports (see [`Node`]).
    fn register_cluster_health(self: &Arc<Self>, health: &mut HealthRegistry) {
        let slot = Arc::clone(self);
        health.register(
            "cluster",
            Criticality::Critical,
            Arc::new(move || match slot.node() {
                Some(node) if !slot.is_stopping() => node.health(),
                Some(_) => ComponentHealth::new(
                    HealthStatus::Unhealthy,
                    json!({"state": EngineState::Stopping.name()}),
                ),
                None => ComponentHealth::new(HealthStatus::Unhealthy, json!({"state": "joining"})),
            }),
        );
    }

    fn engine_health(&self) -> ComponentHealth {
        let state = self.state();
        let accepts_changes =
            state == EngineState::Running && self.get().is_some_and(Engine::is_ready);
        let status = if accepts_changes {
            HealthStatus::Healthy
        } else {
            HealthStatus::Unhealthy
        };
        ComponentHealth::new(
            status,
            json!({"state": state.name(), "accepts_changes": accepts_changes}),
        )
    }

    /// `check` of the engine, or `unhealthy` with the engine's state while it is absent.
    fn with_engine(&self, check: fn(&Engine) -> ComponentHealth) -> ComponentHealth {
        match self.get() {
            Some(engine) => check(engine),
            None => ComponentHealth::new(
                HealthStatus::Unhealthy,
                json!({"state": self.state().name()}),
            ),
        }
    }
}

/// Unhealthy when the journal takes no records (failed or closed) or has stalled.
fn journal_health(engine: &Engine) -> ComponentHealth {
    let Some(journal) = engine.journal_vitals() else {
        return ComponentHealth::new(HealthStatus::Healthy, json!({"persistent": false}));
    };
    let status = if journal.writable && !journal.stalled {
        HealthStatus::Healthy
    } else {
        HealthStatus::Unhealthy
    };
    ComponentHealth::new(
        status,
        json!({
            "writable": journal.writable,
            "stalled": journal.stalled,
            "last_commit_age_ms": journal.last_commit_age.map(|age| age.as_millis() as u64),
            "pending_records": journal.pending_records,
            "error": journal.failure,
        }),
    )
}

/// Unhealthy while the live-game service does not answer or the circuit is open (nothing is
/// sent to it then), degraded while the circuit probes it one call at a time.
fn live_game_health(engine: &Engine) -> ComponentHealth {
    let live_game = engine.live_game_health();
    let status = match live_game.circuit {
        CircuitState::Open => HealthStatus::Unhealthy,
        _ if !live_game.reachable => HealthStatus::Unhealthy,
        CircuitState::HalfOpen => HealthStatus::Degraded,
        CircuitState::Closed => HealthStatus::Healthy,
    };
    ComponentHealth::new(
        status,
        json!({
            "reachable": live_game.reachable,
            "circuit": live_game.circuit.as_str(),
            "pending_jobs": live_game.pending_jobs,
            "in_flight": live_game.in_flight,
        }),
    )
}

/// Degraded while snapshots fail: nothing is lost (the journal has every change), but the
/// journal grows and the next recovery takes longer.
fn snapshot_health(engine: &Engine) -> ComponentHealth {
    let Some(snapshots) = engine.snapshot_vitals() else {
        return ComponentHealth::new(HealthStatus::Healthy, json!({"persistent": false}));
    };
    let status = if snapshots.consecutive_failures == 0 {
        HealthStatus::Healthy
    } else {
        HealthStatus::Degraded
    };
    ComponentHealth::new(
        status,
        json!({
            "last_success_at": snapshots.last_success_ms.map(rfc3339),
            "last_success_age_ms": snapshots.last_success_age.map(|age| age.as_millis() as u64),
            "consecutive_failures": snapshots.consecutive_failures,
            "last_error": snapshots.last_error,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_components_follow_the_engine_through_its_life() {
        let slot = Arc::new(EngineSlot::default());
        let mut health = HealthRegistry::default();
        slot.register_health(&mut health);
        let states = |report: &crate::health::HealthReport| -> Vec<(&str, HealthStatus)> {
            report
                .components
                .iter()
                .map(|component| (component.name, component.health.status))
                .collect()
        };

        let recovering = health.report();
        assert_eq!(recovering.status, HealthStatus::Unhealthy);
        assert_eq!(
            recovering.components[0].health.details["state"],
            "recovering"
        );
        assert!(
            states(&recovering)
                .iter()
                .all(|(_, status)| *status == HealthStatus::Unhealthy)
        );

        let dir = tempfile::tempdir().unwrap();
        let (builder, _clock) = Engine::builder().manual(1_000);
        let engine = builder
            .persistence(crate::PersistenceConfig::new(dir.path()))
            .start()
            .await
            .unwrap();
        slot.fill(Arc::new(engine));
        let running = health.report();
        assert_eq!(running.status, HealthStatus::Healthy, "{running:?}");
        assert_eq!(running.components[0].health.details["state"], "running");
        assert_eq!(running.components[1].health.details["writable"], true);
        assert_eq!(
            running.components[2].health.details["consecutive_failures"],
            0
        );

        slot.begin_stop();
        let stopping = health.report();
        assert_eq!(stopping.status, HealthStatus::Unhealthy);
        assert_eq!(stopping.components[0].health.details["state"], "stopping");
        slot.get().unwrap().shutdown().await;
    }
}
