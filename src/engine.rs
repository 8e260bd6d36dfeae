//! The embeddable engine: a builder over the matchmaking core plus its background tasks.
//!
//! ```no_run
//! # async fn demo() -> Result<(), matchwell::EngineError> {
//! use matchwell::{Engine, EnqueueRequest, PoolSpec};
//!
//! let engine = Engine::builder().start().await?;
//! let pool = PoolSpec::new("5+3".parse().unwrap(), "standard", true, None).unwrap();
//! let entry = engine
//!     .enqueue(EnqueueRequest { tenant: "default".into(), user_id: "alice".into(), pool, rating: 1500, idempotency_key: None })
//!     .await?;
//! println!("queued as {}", entry.id);
//! engine.shutdown().await;
//! # Ok(())
//! # }
//! ```

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use matchwell_actors::change_log::ChangeLog;
use matchwell_actors::clock::{ManualClock, SharedClock, SystemClock};
use matchwell_actors::error::MatchmakerError;
use matchwell_actors::games::{GameCreator, LocalGameIds, RetryPolicy};
use matchwell_actors::matchmaker::{Matchmaker, MatchmakerConfig};
use matchwell_actors::metrics::Metrics;
use matchwell_actors::persist::{Change, Restored};
use matchwell_actors::pools::PoolCatalog;
use matchwell_actors::{ChallengeLimits, OverloadLimits, ShardTimers};
use matchwell_snapshots::FsyncMode;
use prometheus::Registry;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::persistence::{
    JournalVitals, Persistence, PersistenceConfig, PersistenceError, PersistenceMetrics,
    RecoveryReport, SnapshotVitals,
};
use crate::tasks::{BackgroundTasks, TaskSettingsError};

/// Why an engine did not start, or an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A background task setting is out of range.
    #[error(transparent)]
    Tasks(#[from] TaskSettingsError),
    /// The actor threads could not be started.
    #[error("could not start the actor threads: {0}")]
    Actors(#[source] std::io::Error),
    /// Metrics could not be registered (a name is already taken in the registry).
    #[error("could not register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// A matchmaking operation was refused.
    #[error(transparent)]
    Matchmaker(#[from] MatchmakerError),
    /// The data directory could not be recovered or written.
    #[error(transparent)]
    Persistence(#[from] PersistenceError),
    /// Work on a blocking thread (recovery, a snapshot) panicked, or its runtime shut down.
    #[error(transparent)]
    Blocking(#[from] tokio::task::JoinError),
    /// The embedder's store (see [`ExternalStore`]) could not snapshot or close.
    #[error("the engine's store failed: {0}")]
    Store(#[source] StoreFailure),
}

/// Why an [`ExternalStore`] failed: its own error, whatever the store is.
pub type StoreFailure = Box<dyn std::error::Error + Send + Sync>;

/// Where an engine without a data directory persists: a log and a snapshot store that the
/// embedder runs, such as a cluster partition's replicated journal and object store. Given to
/// [`EngineBuilder::external_store`] with the state to start from; the engine journals every
/// change to [`log`](Self::log), acknowledges a change only once the log has it durable, runs
/// its heartbeat and snapshot tasks through the store, and closes it when it shuts down.
pub trait ExternalStore: Send + Sync + 'static {
    /// The log every change goes to.
    fn log(&self) -> Arc<dyn ChangeLog>;

    /// Stores a snapshot of `matchmaker` and returns the log position it covers. Captures
    /// the state only after noting where the log stands (see `matchwell_actors::persist`:
    /// every change the capture may have missed comes after that position).
    fn snapshot(
        &self,
        matchmaker: Arc<Matchmaker>,
    ) -> BoxFuture<'static, Result<u64, StoreFailure>>;

    /// Stops taking records and resolves once every record appended is durable; the engine
    /// has stopped by then.
    fn close(&self) -> BoxFuture<'static, Result<(), StoreFailure>>;
}

/// Builds an [`Engine`]; every option has a working default. `Clone`, so that one set of
/// options can start several engines (a cluster node's partitions).
#[must_use]
#[derive(Clone)]
pub struct EngineBuilder {
    catalog: PoolCatalog,
    clock: SharedClock,
    tasks: BackgroundTasks,
    shards: usize,
    game_creator: Arc<dyn GameCreator>,
    seed: u64,
    retention: Duration,
    retry: RetryPolicy,
    registry: Registry,
    event_capacity: usize,
    challenge_limits: ChallengeLimits,
    overload: OverloadLimits,
    id_base: u64,
    persistence: Option<Persisting>,
}

/// How a builder was told to persist.
#[derive(Clone)]
enum Persisting {
    /// In a data directory, recovered at start.
    Local(PersistenceConfig),
    /// Through the embedder's store, from the state it read back.
    External(Arc<dyn ExternalStore>, Restored),
}

impl Default for EngineBuilder {
    fn default() -> Self {
        Self {
            catalog: PoolCatalog::builtin(),
            clock: Arc::new(SystemClock::new()),
            tasks: BackgroundTasks::default(),
            shards: matchwell_actors::matchmaker::default_shards(),
            game_creator: Arc::new(LocalGameIds),
            seed: 0,
            retention: Duration::from_secs(3_600),
            retry: RetryPolicy::default(),
            registry: Registry::new(),
            event_capacity: 4_096,
            challenge_limits: ChallengeLimits::default(),
            overload: OverloadLimits::default(),
            id_base: 0,
            persistence: None,
        }
    }
}

impl EngineBuilder {
    /// The pools to serve (default: the built-in chess set).
    pub fn pools(mut self, catalog: PoolCatalog) -> Self {
        self.catalog = catalog;
        self
    }

    /// The time source (default: the system clock).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// A manual clock starting at `start_ms`, with every background task off: the caller
    /// drives time with [`ManualClock::advance`] and work with `tick`. Returns the clock too.
    pub fn manual(self, start_ms: u64) -> (Self, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(start_ms));
        (
            self.clock(clock.clone()).tasks(BackgroundTasks::all_off()),
            clock,
        )
    }

    /// Background task settings (default: all on, see [`BackgroundTasks::default`]).
    pub fn tasks(mut self, tasks: BackgroundTasks) -> Self {
        self.tasks = tasks;
        self
    }

    /// Number of pool-shard actors (default: one per two cores, [`matchwell_actors::matchmaker::default_shards`]).
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = shards.max(1);
        self
    }

    /// Who creates games (default: [`LocalGameIds`]).
    pub fn game_creator(mut self, creator: Arc<dyn GameCreator>) -> Self {
        self.game_creator = creator;
        self
    }

    /// Seed of every random choice, so runs on a manual clock repeat exactly (default 0).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// How long settled entries, matches and challenges stay readable (default 1 hour).
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// How game creation is paced and retried: attempts, backoff, per-attempt timeout,
    /// in-flight limit and circuit breaker (default: [`RetryPolicy::default`]).
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Where metrics are registered (default: a private registry, see
    /// [`Engine::metrics_registry`]).
    pub fn metrics_registry(mut self, registry: Registry) -> Self {
        self.registry = registry;
        self
    }

    /// Events a slow listener may fall behind before it skips ahead (default 4096).
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity;
        self
    }

    /// How many pending challenges one user may have sent and received (default 20 and 100).
    pub fn challenge_limits(mut self, limits: ChallengeLimits) -> Self {
        self.challenge_limits = limits;
        self
    }

    /// How far behind the shards' mailboxes and the journal may fall before changes are
    /// refused with [`MatchmakerError::Overloaded`] instead of queueing (default: no bound;
    /// `matchwell serve` sets both).
    pub fn overload(mut self, limits: OverloadLimits) -> Self {
        self.overload = limits;
        self
    }

    /// Hands out ids after `id_base` (default 0): a cluster gives each partition's engine a
    /// range of its own (`partition_id_base`), so that ids name their partition.
    pub fn id_base(mut self, id_base: u64) -> Self {
        self.id_base = id_base;
        self
    }

    /// Persists to a data directory: recovers what is there at start, journals every change,
    /// writes snapshots on the `snapshots` task and at shutdown (default: memory only).
    pub fn persistence(mut self, config: PersistenceConfig) -> Self {
        self.persistence = Some(Persisting::Local(config));
        self
    }

    /// Persists through `store` instead of a data directory, starting from `restored` (what
    /// the store read back): every change is journaled to the store's log and acknowledged
    /// once durable there, the heartbeat and snapshot tasks go through the store, and shutdown
    /// closes it (default: memory only). Replaces [`persistence`](Self::persistence).
    pub fn external_store(mut self, store: Arc<dyn ExternalStore>, restored: Restored) -> Self {
        self.persistence = Some(Persisting::External(store, restored));
        self
    }

    /// Starts the engine. Must be called inside a tokio runtime, which runs the background
    /// tasks; the actors run on threads of their own. Recovery (reading the data directory
    /// back and installing what it holds, seconds for a big one) runs on a blocking thread,
    /// so that the runtime goes on with its other work meanwhile, such as a server's health
    /// checks and signal handling.
    pub async fn start(self) -> Result<Engine, EngineError> {
        self.tasks.validate()?;
        tracing::info!(tasks = %self.tasks, "background tasks");
        let mut config = MatchmakerConfig::new(self.catalog);
        config.metrics = Metrics::register(&self.registry, &config.catalog)?;
        config.clock = self.clock;
        config.shards = self.shards;
        config.timers = ShardTimers {
            waves: self.tasks.matching.when_enabled(),
            expiry: self.tasks.expiry.when_enabled(),
        };
        config.retention = self.retention;
        config.retry = self.retry;
        config.seed = self.seed;
        config.game_creator = self.game_creator;
        config.event_capacity = self.event_capacity;
        config.challenge_limits = self.challenge_limits;
        config.overload = self.overload;
        config.id_base = self.id_base;
        let metrics = match &self.persistence {
            Some(Persisting::Local(_)) => Some(PersistenceMetrics::register(&self.registry)?),
            _ => None,
        };
        let settings = self.persistence;
        let (matchmaker, store, recovery) =
            tokio::task::spawn_blocking(move || recover(config, settings, metrics)).await??;
        let matchmaker = Arc::new(matchmaker);
        let mut background = spawn_background_tasks(&matchmaker, &self.tasks);
        if let Some(store) = &store {
            background.extend(spawn_persistence_tasks(&matchmaker, store, &self.tasks));
        }
        Ok(Engine {
            matchmaker,
            background,
            registry: self.registry,
            store,
            recovery,
            heartbeat: self.tasks.heartbeat.when_enabled(),
            running: AtomicBool::new(true),
        })
    }
}

/// What recovery hands the engine: the matchmaker and, when it persists, where, and what its
/// data directory held.
type Recovered = (Matchmaker, Option<Store>, Option<RecoveryReport>);

/// Reads the data directory of `settings` back, when there is one, and starts the actors
/// over what it holds (or over what an external store read back). Blocks on disk I/O and on
/// installing every item.
fn recover(
    mut config: MatchmakerConfig,
    settings: Option<Persisting>,
    metrics: Option<PersistenceMetrics>,
) -> Result<Recovered, EngineError> {
    let started = Instant::now();
    let mut opened = None;
    let settings = match settings {
        Some(Persisting::External(store, restored)) => {
            config.journal = Some(store.log());
            config.acknowledge_durable = true;
            config.restored = Some(restored);
            let matchmaker = Matchmaker::start(config).map_err(EngineError::Actors)?;
            return Ok((matchmaker, Some(Store::External(store)), None));
        }
        Some(Persisting::Local(settings)) => Some(settings),
        None => None,
    };
    if let (Some(settings), Some(metrics)) = (&settings, metrics) {
        let (persistence, restored, report) =
            Persistence::open(settings, metrics, Arc::clone(&config.clock))?;
        tracing::info!(
            data_dir = %settings.data_dir.display(),
            fsync = ?settings.fsync,
            snapshot = ?report.snapshot,
            replayed = report.replayed,
            torn_tails = report.torn_tails,
            read_ms = started.elapsed().as_millis() as u64,
            "data directory recovered"
        );
        config.journal = Some(persistence.journal());
        config.acknowledge_durable = settings.fsync == FsyncMode::Always;
        config.restored = Some(restored);
        opened = Some((persistence, report));
    }
    let matchmaker = Matchmaker::start(config).map_err(EngineError::Actors)?;
    let (persistence, report) = opened.unzip();
    Ok((
        matchmaker,
        persistence.map(|persistence| Store::Local(Arc::new(persistence))),
        report,
    ))
}

/// Where a persisting engine keeps its state; cheap to clone (handles).
#[derive(Clone)]
enum Store {
    /// Its own data directory.
    Local(Arc<Persistence>),
    /// The embedder's log and snapshot store.
    External(Arc<dyn ExternalStore>),
}

impl Store {
    /// The log the engine journals to.
    fn log(&self) -> Arc<dyn ChangeLog> {
        match self {
            Self::Local(persistence) => persistence.journal(),
            Self::External(store) => store.log(),
        }
    }

    /// Whether the journal takes records. An external store's log is the matchmaker's
    /// journal, whose failure [`Matchmaker::is_writable`] reports already.
    fn is_healthy(&self) -> bool {
        match self {
            Self::Local(persistence) => persistence.is_healthy(),
            Self::External(_) => true,
        }
    }

    /// Appends a record with no images, so that a later recovery knows the engine was up
    /// until now.
    fn heartbeat(&self, now_ms: u64) {
        let heartbeat = Change {
            at_ms: now_ms,
            images: Vec::new(),
        };
        if let Err(error) = self.log().append(&heartbeat) {
            tracing::error!(%error, "journal heartbeat failed");
        }
    }

    /// Writes a snapshot of `matchmaker`; its sequence number (local) or the log position it
    /// covers (external).
    async fn snapshot(&self, matchmaker: &Arc<Matchmaker>) -> Result<u64, EngineError> {
        let matchmaker = Arc::clone(matchmaker);
        match self {
            Self::Local(persistence) => {
                let persistence = Arc::clone(persistence);
                let written =
                    tokio::task::spawn_blocking(move || persistence.snapshot(&matchmaker))
                        .await??;
                tracing::debug!(seq = written.seq, summary = ?written.header.summary, "snapshot written");
                Ok(written.seq)
            }
            Self::External(store) => store.snapshot(matchmaker).await.map_err(EngineError::Store),
        }
    }

    /// Once the engine has stopped: the final snapshot (a data directory's), then closing the
    /// journal.
    async fn close(&self, matchmaker: &Arc<Matchmaker>) -> Result<(), EngineError> {
        match self {
            Self::Local(persistence) => {
                let persistence = Arc::clone(persistence);
                let matchmaker = Arc::clone(matchmaker);
                tokio::task::spawn_blocking(move || {
                    persistence.snapshot(&matchmaker)?;
                    persistence.close()
                })
                .await??;
                tracing::info!("final snapshot written");
                Ok(())
            }
            Self::External(store) => store.close().await.map_err(EngineError::Store),
        }
    }
}

fn every(period: Duration, matchmaker: &Arc<Matchmaker>, work: fn(&Matchmaker)) -> JoinHandle<()> {
    let matchmaker = Arc::clone(matchmaker);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            work(&matchmaker);
        }
    })
}

fn spawn_background_tasks(
    matchmaker: &Arc<Matchmaker>,
    tasks: &BackgroundTasks,
) -> Vec<JoinHandle<()>> {
    let mut handles = Vec::new();
    if let Some(period) = tasks.games.when_enabled() {
        let matchmaker = Arc::clone(matchmaker);
        handles.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = matchmaker.game_jobs_scheduled() => {}
                    () = tokio::time::sleep(period) => {}
                }
                // As many as there are free slots: the others stay due, and the end of an
                // attempt wakes this loop to start the next.
                for attempt in matchmaker.due_game_attempts() {
                    tokio::spawn(attempt);
                }
            }
        }));
    }
    if let Some(period) = tasks.challenges.when_enabled() {
        handles.push(every(period, matchmaker, |matchmaker| {
            matchmaker.expire_challenges();
        }));
    }
    if let Some(period) = tasks.retention.when_enabled() {
        handles.push(every(period, matchmaker, |matchmaker| {
            matchmaker.prune();
        }));
    }
    handles
}

fn spawn_persistence_tasks(
    matchmaker: &Arc<Matchmaker>,
    store: &Store,
    tasks: &BackgroundTasks,
) -> Vec<JoinHandle<()>> {
    let mut handles = Vec::new();
    if let Some(period) = tasks.heartbeat.when_enabled() {
        let matchmaker = Arc::clone(matchmaker);
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            loop {
                ticks.tick().await;
                store.heartbeat(matchmaker.now_ms());
            }
        }));
    }
    if let Some(period) = tasks.snapshots.when_enabled() {
        let matchmaker = Arc::clone(matchmaker);
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            let mut pause = period;
            loop {
                tokio::time::sleep(pause).await;
                let started = Instant::now();
                if let Err(error) = store.snapshot(&matchmaker).await {
                    tracing::error!(%error, "snapshot failed");
                }
                let took = started.elapsed();
                pause = snapshot_pause(period, took);
                if took + pause > period.max(took) {
                    tracing::warn!(
                        took_ms = took.as_millis() as u64,
                        next_in_ms = pause.as_millis() as u64,
                        "a slow snapshot pushes the next one back"
                    );
                }
            }
        }));
    }
    handles
}

/// A snapshot costs a core for as long as it takes, and its size grows with the settled state
/// kept for the retention period: at thousands of players a second it can take seconds. The
/// next one starts `period` after the previous one started, or, after a snapshot of
/// [`SLOW_SNAPSHOT`] or more, late enough that snapshots take at most one part in
/// [`SNAPSHOT_DUTY`] of the time; the journal between them grows meanwhile, which recovery
/// replays.
const SNAPSHOT_DUTY: u32 = 20;

/// Below this a snapshot costs little whatever the period (small deployments, and tests that
/// snapshot every few milliseconds, keep their period).
const SLOW_SNAPSHOT: Duration = Duration::from_secs(1);

/// How long to wait after a snapshot that took `took` before the next one.
fn snapshot_pause(period: Duration, took: Duration) -> Duration {
    let spacing = if took < SLOW_SNAPSHOT {
        period
    } else {
        period.max(took * SNAPSHOT_DUTY)
    };
    spacing.saturating_sub(took)
}

/// A running engine: the matchmaker (all its operations are available through `Deref`) and
/// its background tasks.
pub struct Engine {
    matchmaker: Arc<Matchmaker>,
    background: Vec<JoinHandle<()>>,
    registry: Registry,
    /// Where it persists, if it does.
    store: Option<Store>,
    recovery: Option<RecoveryReport>,
    /// The heartbeat's interval while it runs, by which readiness judges the journal.
    heartbeat: Option<Duration>,
    /// Cleared by [`Engine::shutdown`]; a flag rather than a consumed value because a server
    /// shares the engine between its workers and still has to stop it once they are gone.
    running: AtomicBool,
}

impl Engine {
    /// A builder with working defaults.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// The registry holding the engine's metrics.
    pub fn metrics_registry(&self) -> &Registry {
        &self.registry
    }

    /// A shared handle to the matchmaker, for code that must outlive a borrow of the engine.
    pub fn matchmaker(&self) -> Arc<Matchmaker> {
        Arc::clone(&self.matchmaker)
    }

    /// Whether the engine takes changes: it runs, its actors run and, when it persists, its
    /// journal works (an fsync failure turns this off for good; it is never silently retried).
    /// The one readiness check of every front end.
    pub fn is_ready(&self) -> bool {
        self.running.load(Ordering::Acquire)
            && self.matchmaker.is_writable()
            && self.store.as_ref().is_none_or(Store::is_healthy)
    }

    /// Whether [`Engine::shutdown`] has begun.
    pub fn is_stopping(&self) -> bool {
        !self.running.load(Ordering::Acquire)
    }

    /// What recovery found at start, when the engine persists.
    pub fn recovery(&self) -> Option<RecoveryReport> {
        self.recovery
    }

    /// The engine's data directory, when it persists in one.
    fn local(&self) -> Option<&Persistence> {
        match self.store.as_ref()? {
            Store::Local(persistence) => Some(persistence),
            Store::External(_) => None,
        }
    }

    /// How the journal is doing, when the engine persists in a data directory.
    pub fn journal_vitals(&self) -> Option<JournalVitals> {
        let persistence = self.local()?;
        Some(persistence.journal_vitals(self.matchmaker.now_ms(), self.heartbeat))
    }

    /// How the snapshots are going, when the engine persists in a data directory.
    pub fn snapshot_vitals(&self) -> Option<SnapshotVitals> {
        let persistence = self.local()?;
        Some(persistence.snapshot_vitals(self.matchmaker.now_ms()))
    }

    /// Writes a snapshot now (when the engine persists); returns its sequence number, or with
    /// an external store the log position it covers.
    pub async fn snapshot_now(&self) -> Result<Option<u64>, EngineError> {
        match &self.store {
            Some(store) => store.snapshot(&self.matchmaker).await.map(Some),
            None => Ok(None),
        }
    }

    /// Stops the background tasks and the actors; when the engine persists in a data
    /// directory, writes a final snapshot and closes the journal; with an external store,
    /// closes it. Callable through a shared reference (a server holds the engine in an
    /// `Arc`); later calls do nothing.
    pub async fn shutdown(&self) {
        if !self.running.swap(false, Ordering::AcqRel) {
            return;
        }
        for task in &self.background {
            task.abort();
        }
        self.matchmaker.shutdown();
        if let Some(store) = &self.store {
            if let Err(error) = store.close(&self.matchmaker).await {
                tracing::error!(%error, "final snapshot or closing the journal failed");
            }
        }
    }
}

impl Deref for Engine {
    type Target = Matchmaker;

    fn deref(&self) -> &Matchmaker {
        &self.matchmaker
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        for task in &self.background {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ready_while_running_and_shutdown_is_idempotent() {
        let (builder, _clock) = Engine::builder().manual(0);
        let engine = builder.start().await.unwrap();
        assert!(engine.is_ready());
        assert!(!engine.is_stopping());
        engine.shutdown().await;
        assert!(!engine.is_ready());
        assert!(engine.is_stopping());
        engine.shutdown().await;
        assert!(!engine.is_ready());
    }

    #[test]
    fn snapshots_over_a_second_push_the_next_one_back_to_a_twentieth_of_the_time() {
        let period = Duration::from_secs(60);
        let ms = Duration::from_millis;
        // Quick snapshots keep the period, counted from each one's start.
        assert_eq!(snapshot_pause(period, ms(900)), ms(59_100));
        assert_eq!(snapshot_pause(period, ms(3_000)), ms(57_000));
        assert_eq!(snapshot_pause(period, ms(0)), period);
        // Slower ones leave nineteen times their length before the next.
        assert_eq!(snapshot_pause(period, ms(6_000)), ms(114_000));
        assert_eq!(snapshot_pause(period, ms(54_000)), ms(1_026_000));
        // Below a second the period holds, however short.
        let often = ms(15);
        assert_eq!(snapshot_pause(often, ms(5)), ms(10));
        assert_eq!(snapshot_pause(often, ms(900)), Duration::ZERO);
        assert_eq!(snapshot_pause(often, ms(1_000)), ms(19_000));
    }

    #[tokio::test]
    async fn with_every_task_off_nothing_runs_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::builder()
            .tasks(BackgroundTasks::all_off())
            .persistence(PersistenceConfig::new(dir.path()))
            .start()
            .await
            .unwrap();
        assert!(engine.background.is_empty());
        engine.shutdown().await;
    }

    #[tokio::test]
    async fn the_vitals_follow_commits_and_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let (builder, clock) = Engine::builder().manual(1_000_000);
        let engine = builder
            .persistence(PersistenceConfig::new(dir.path()))
            .start()
            .await
            .unwrap();
        let journal = engine.journal_vitals().unwrap();
        assert!(journal.writable && !journal.stalled && journal.failure.is_none());
        let snapshots = engine.snapshot_vitals().unwrap();
        assert_eq!(snapshots.last_success_ms, None);
        assert_eq!(snapshots.consecutive_failures, 0);

        clock.advance(Duration::from_secs(3));
        engine.snapshot_now().await.unwrap();
        clock.advance(Duration::from_secs(2));
        let snapshots = engine.snapshot_vitals().unwrap();
        assert_eq!(snapshots.last_success_ms, Some(1_003_000));
        assert_eq!(snapshots.last_success_age, Some(Duration::from_secs(2)));

        let pool = crate::PoolSpec::new("5+3".parse().unwrap(), "standard", true, None).unwrap();
        engine
            .enqueue(crate::EnqueueRequest {
                tenant: "default".into(),
                user_id: "alice".into(),
                pool,
                rating: 1500,
                idempotency_key: None,
            })
            .await
            .unwrap();
        // Closing joins the writer thread, so every commit has been noted by then.
        engine.shutdown().await;
        let journal = engine.journal_vitals().unwrap();
        assert!(!journal.writable, "a closed journal takes nothing");
        assert!(journal.last_commit_age.is_some(), "{journal:?}");
        assert_eq!(journal.pending_records, 0);
    }
}
