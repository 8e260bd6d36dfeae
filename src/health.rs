//! Readiness by component: each registered component says how it is doing, and the service is
//! as well as its worst critical component; a non-critical component (one the service works
//! without, with less) can make it `degraded` at worst.
//!
//! ```
//! use std::sync::Arc;
//! use matchwell::health::{ComponentHealth, Criticality, HealthRegistry, HealthStatus};
//!
//! let mut health = HealthRegistry::default();
//! health.register(
//!     "live_game",
//!     Criticality::NonCritical,
//!     Arc::new(|| ComponentHealth::new(HealthStatus::Unhealthy, serde_json::json!({"circuit": "open"}))),
//! );
//! assert_eq!(health.report().status, HealthStatus::Degraded);
//! ```

use std::sync::Arc;

use serde::Serialize;

/// How a component, or the whole service, is doing; ordered from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Works as it should.
    Healthy,
    /// Works, with less than it should (readiness still answers 200).
    Degraded,
    /// Does not work (readiness answers 503).
    Unhealthy,
}

impl HealthStatus {
    /// Every status, best first.
    pub const ALL: [HealthStatus; 3] = [Self::Healthy, Self::Degraded, Self::Unhealthy];

    /// Its name, as readiness and `/metrics` show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Unhealthy => "unhealthy",
        }
    }

    /// Whether readiness answers 200: the service takes traffic, degraded or not.
    pub fn is_ready(self) -> bool {
        self != Self::Unhealthy
    }
}

/// What a component's failure does to the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Criticality {
    /// The service cannot work without it: its status is the service's at best.
    Critical,
    /// The service works without it, with less: when it is unhealthy, the service is degraded.
    NonCritical,
}

/// How one component is doing now.
#[derive(Debug, Clone, PartialEq)]
pub struct ComponentHealth {
    /// Its status.
    pub status: HealthStatus,
    /// What it reports about itself, a JSON object shown as is under `details`.
    pub details: serde_json::Value,
}

impl ComponentHealth {
    /// A component in `status` with `details` (a JSON object).
    pub fn new(status: HealthStatus, details: serde_json::Value) -> Self {
        Self { status, details }
    }
}

/// A component whose health readiness reports. Checked on every readiness request, so it
/// must answer at once: read a few atomics, never wait and never do I/O.
pub trait HealthCheck: Send + Sync {
    /// How the component is doing now.
    fn check(&self) -> ComponentHealth;
}

impl<F: Fn() -> ComponentHealth + Send + Sync> HealthCheck for F {
    fn check(&self) -> ComponentHealth {
        self()
    }
}

/// One registered component.
struct Component {
    name: &'static str,
    criticality: Criticality,
    check: Arc<dyn HealthCheck>,
}

/// The components readiness reports. Filled before the server starts and read-only after,
/// so reports take no lock.
#[derive(Default)]
pub struct HealthRegistry {
    components: Vec<Component>,
}

impl HealthRegistry {
    /// Adds a component, reported under `name`.
    ///
    /// # Panics
    /// If a component of that name is registered already: two would hide each other.
    pub fn register(
        &mut self,
        name: &'static str,
        criticality: Criticality,
        check: Arc<dyn HealthCheck>,
    ) -> &mut Self {
        assert!(
            self.components.iter().all(|known| known.name != name),
            "health component `{name}` registered twice"
        );
        self.components.push(Component {
            name,
            criticality,
            check,
        });
        self
    }

    /// Checks every component.
    pub fn report(&self) -> HealthReport {
        let components: Vec<ComponentReport> = self
            .components
            .iter()
            .map(|component| ComponentReport {
                name: component.name,
                criticality: component.criticality,
                health: component.check.check(),
            })
            .collect();
        let status = components
            .iter()
            .map(ComponentReport::weight)
            .max()
            .unwrap_or(HealthStatus::Healthy);
        HealthReport { status, components }
    }
}

/// The service's health: the overall status and each component's.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthReport {
    /// The worst of the components' statuses, a non-critical component counting as
    /// `degraded` at worst.
    pub status: HealthStatus,
    /// Every component, in the order they were registered.
    pub components: Vec<ComponentReport>,
}

/// One component in a [`HealthReport`].
#[derive(Debug, Clone, PartialEq)]
pub struct ComponentReport {
    /// Its name.
    pub name: &'static str,
    /// What its failure does to the service.
    pub criticality: Criticality,
    /// How it is doing.
    pub health: ComponentHealth,
}

impl ComponentReport {
    /// What this component makes of the service's status.
    fn weight(&self) -> HealthStatus {
        match self.criticality {
            Criticality::Critical => self.health.status,
            Criticality::NonCritical => self.health.status.min(HealthStatus::Degraded),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Criticality::{Critical, NonCritical};
    use HealthStatus::{Degraded, Healthy, Unhealthy};

    fn fixed(status: HealthStatus) -> Arc<dyn HealthCheck> {
        Arc::new(move || ComponentHealth::new(status, serde_json::json!({})))
    }

    fn overall(components: &[(Criticality, HealthStatus)]) -> HealthStatus {
        let names = ["a", "b", "c"];
        let mut registry = HealthRegistry::default();
        for (&name, &(criticality, status)) in names.iter().zip(components) {
            registry.register(name, criticality, fixed(status));
        }
        registry.report().status
    }

    #[test]
    fn the_worst_critical_component_decides_and_a_non_critical_one_degrades_at_worst() {
        let cases: [(&[(Criticality, HealthStatus)], HealthStatus); 7] = [
            (&[], Healthy),
            (&[(Critical, Healthy), (Critical, Healthy)], Healthy),
            (&[(Critical, Healthy), (Critical, Degraded)], Degraded),
            (
                &[
                    (Critical, Degraded),
                    (Critical, Unhealthy),
                    (Critical, Healthy),
                ],
                Unhealthy,
            ),
            (&[(Critical, Healthy), (NonCritical, Unhealthy)], Degraded),
            (&[(Critical, Healthy), (NonCritical, Degraded)], Degraded),
            (&[(Critical, Unhealthy), (NonCritical, Healthy)], Unhealthy),
        ];
        for (components, expected) in cases {
            assert_eq!(overall(components), expected, "{components:?}");
        }
    }

    #[test]
    fn components_report_in_registration_order_with_their_own_status() {
        let mut registry = HealthRegistry::default();
        registry
            .register("engine", Critical, fixed(Healthy))
            .register("live_game", NonCritical, fixed(Unhealthy));
        let report = registry.report();
        let names: Vec<_> = report.components.iter().map(|c| c.name).collect();
        assert_eq!(names, ["engine", "live_game"]);
        assert_eq!(report.components[1].health.status, Unhealthy);
    }

    #[test]
    #[should_panic(expected = "registered twice")]
    fn a_name_is_registered_once() {
        let mut registry = HealthRegistry::default();
        registry.register("engine", Critical, fixed(Healthy));
        registry.register("engine", Critical, fixed(Healthy));
    }
}
