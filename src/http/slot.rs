//! The engine a server serves: absent while it recovers, then there until the process ends;
//! and the health components that describe it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use serde_json::json;

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
    /// Set when the server begins to stop: writes are refused from then on, and answers close
    /// their connections.
    stopping: AtomicBool,
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
    /// The engine, once recovered.
    pub fn get(&self) -> Option<&Engine> {
        self.engine.get().map(|engine| &**engine)
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

    /// Registers the engine's components, all critical: `engine` (its state, and whether it
    /// takes changes), `journal` and `snapshots`. Until the engine is there, the latter two
    /// report `unhealthy` with the engine's state, as they do not exist yet.
    pub fn register_health(self: &Arc<Self>, health: &mut HealthRegistry) {
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
