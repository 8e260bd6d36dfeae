//! Background tasks: which periodic work runs on its own, and how often.
//!
//! Every task can be switched on or off and given its own interval; [`BackgroundTasks::all_off`]
//! is the master switch that embedded programs and tests use to drive everything by hand
//! through `Matchmaker::tick`.

use std::fmt;
use std::time::Duration;

/// One task's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskSettings {
    /// Whether it runs.
    pub enabled: bool,
    /// Time between two runs.
    pub interval: Duration,
}

impl TaskSettings {
    const fn every(interval_ms: u64) -> Self {
        Self {
            enabled: true,
            interval: Duration::from_millis(interval_ms),
        }
    }

    /// The interval if enabled.
    pub fn when_enabled(self) -> Option<Duration> {
        self.enabled.then_some(self.interval)
    }
}

/// The background tasks of an engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackgroundTasks {
    /// Shards look for pools whose wave is due (each pool has its own wave interval).
    pub matching: TaskSettings,
    /// Shards expire entries that waited too long (waves expire them too).
    pub expiry: TaskSettings,
    /// Game-creation jobs are retried when due (new matches are dispatched at once).
    pub games: TaskSettings,
    /// Pending challenges past their deadline expire.
    pub challenges: TaskSettings,
    /// Settled entries, matches and challenges older than the retention period are forgotten.
    pub retention: TaskSettings,
    /// A snapshot is written and the journal rotated.
    pub snapshots: TaskSettings,
    /// An empty journal record tells a later recovery that the engine was up until then, which
    /// bounds how much waiting time recovery may count as downtime (engines that persist).
    pub heartbeat: TaskSettings,
    /// The HTTP server forgets the rate-limit state of users whose budgets are full again, so
    /// that the limiters' maps do not grow with every user ever seen (servers only).
    pub limiters: TaskSettings,
}

impl Default for BackgroundTasks {
    fn default() -> Self {
        Self {
            matching: TaskSettings::every(20),
            expiry: TaskSettings::every(1_000),
            games: TaskSettings::every(100),
            challenges: TaskSettings::every(1_000),
            retention: TaskSettings::every(10_000),
            snapshots: TaskSettings::every(60_000),
            heartbeat: TaskSettings::every(1_000),
            limiters: TaskSettings::every(60_000),
        }
    }
}

/// A task setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("task `{task}`: interval {interval_ms} ms is out of range {min_ms}..={max_ms} ms")]
pub struct TaskSettingsError {
    /// The task.
    pub task: &'static str,
    /// The interval asked for.
    pub interval_ms: u128,
    /// Shortest interval accepted.
    pub min_ms: u64,
    /// Longest interval accepted.
    pub max_ms: u64,
}

impl BackgroundTasks {
    /// The master switch: every task off.
    pub fn all_off() -> Self {
        let mut tasks = Self::default();
        for (_, settings) in tasks.iter_mut() {
            settings.enabled = false;
        }
        tasks
    }

    /// Names and settings of every task, in a fixed order.
    pub fn iter(&self) -> [(&'static str, TaskSettings); 8] {
        [
            ("matching", self.matching),
            ("expiry", self.expiry),
            ("games", self.games),
            ("challenges", self.challenges),
            ("retention", self.retention),
            ("snapshots", self.snapshots),
            ("heartbeat", self.heartbeat),
            ("limiters", self.limiters),
        ]
    }

    /// Names and mutable settings of every task.
    pub fn iter_mut(&mut self) -> [(&'static str, &mut TaskSettings); 8] {
        [
            ("matching", &mut self.matching),
            ("expiry", &mut self.expiry),
            ("games", &mut self.games),
            ("challenges", &mut self.challenges),
            ("retention", &mut self.retention),
            ("snapshots", &mut self.snapshots),
            ("heartbeat", &mut self.heartbeat),
            ("limiters", &mut self.limiters),
        ]
    }

    /// Settings of the task `name`, if there is one.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut TaskSettings> {
        self.iter_mut()
            .into_iter()
            .find(|(task, _)| *task == name)
            .map(|(_, settings)| settings)
    }

    /// Refuses intervals under 1 ms or over a day.
    pub fn validate(&self) -> Result<(), TaskSettingsError> {
        const MIN_MS: u64 = 1;
        const MAX_MS: u64 = 86_400_000;
        for (task, settings) in self.iter() {
            let interval_ms = settings.interval.as_millis();
            if !(u128::from(MIN_MS)..=u128::from(MAX_MS)).contains(&interval_ms) {
                return Err(TaskSettingsError {
                    task,
                    interval_ms,
                    min_ms: MIN_MS,
                    max_ms: MAX_MS,
                });
            }
        }
        Ok(())
    }

    /// How many tasks are enabled.
    pub fn enabled_count(&self) -> usize {
        self.iter()
            .iter()
            .filter(|(_, settings)| settings.enabled)
            .count()
    }
}

impl fmt::Display for BackgroundTasks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (task, settings) in self.iter() {
            if settings.enabled {
                write!(f, "{task}=every {} ms, ", settings.interval.as_millis())?;
            } else {
                write!(f, "{task}=off, ")?;
            }
        }
        write!(
            f,
            "{}/{} tasks enabled",
            self.enabled_count(),
            self.iter().len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_master_switch_turns_everything_off() {
        let tasks = BackgroundTasks::all_off();
        assert_eq!(tasks.enabled_count(), 0);
        assert!(tasks.to_string().ends_with("0/8 tasks enabled"), "{tasks}");
        assert_eq!(BackgroundTasks::default().enabled_count(), 8);
    }

    #[test]
    fn intervals_are_validated() {
        let mut tasks = BackgroundTasks::default();
        tasks.get_mut("games").unwrap().interval = Duration::ZERO;
        let error = tasks.validate().unwrap_err();
        assert_eq!(error.task, "games");
        assert!(error.to_string().contains("out of range"));
        assert!(tasks.get_mut("nonsense").is_none());
    }

    #[test]
    fn display_lists_every_task() {
        let mut tasks = BackgroundTasks::default();
        tasks.expiry.enabled = false;
        let text = tasks.to_string();
        assert!(
            text.starts_with("matching=every 20 ms, expiry=off, games=every 100 ms"),
            "{text}"
        );
        assert!(text.ends_with("7/8 tasks enabled"));
    }
}
