//! The engine's data directory: recovery at start, the journal while running, snapshots.
//!
//! Recovery loads the newest valid snapshot, replays the journal from the segment that
//! snapshot names, and drops a torn final record (logged and counted); any other damage stops
//! the start with an error naming the file and offset. A snapshot rotates the journal first and
//! captures the state after (see `matchwell_actors::persist`), then drops the journal segments
//! that no kept snapshot needs, so the journal never grows without bound.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use matchwell_actors::clock::SharedClock;
use matchwell_actors::matchmaker::Matchmaker;
use matchwell_actors::persist::{Change, Restored, SnapshotBody};
use matchwell_snapshots::{
    Commit, CommitObserver, FileStorage, FsyncMode, Journal, JournalError, JournalOptions,
    SnapshotError, SnapshotOptions, SnapshotStore, Storage, StorageError, WrittenSnapshot,
    read_segments,
};
use parking_lot::Mutex;
use prometheus::{
    Histogram, IntCounter, IntGauge, Registry, exponential_buckets,
    register_histogram_with_registry, register_int_counter_with_registry,
    register_int_gauge_with_registry,
};

/// Where and how the engine persists.
#[derive(Debug, Clone)]
pub struct PersistenceConfig {
    /// The data directory (created if missing).
    pub data_dir: PathBuf,
    /// Storage to use instead of the files in `data_dir` (tests use a fault-injecting one).
    pub storage: Option<Arc<dyn Storage>>,
    /// When the journal syncs, and so what a crash can lose (see the README).
    pub fsync: FsyncMode,
    /// How many snapshots to keep.
    pub keep_snapshots: NonZeroUsize,
}

impl PersistenceConfig {
    /// Persistence in `data_dir` with fsync `always` and three snapshots kept.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            storage: None,
            fsync: FsyncMode::Always,
            keep_snapshots: SnapshotOptions::default().keep,
        }
    }
}

/// Why the data directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PersistenceError {
    /// The directory or one of its files could not be read or written.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A snapshot could not be written or no snapshot is valid.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The journal is damaged, or failed.
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// What recovery found, for logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Sequence number of the snapshot loaded, if any.
    pub snapshot: Option<u64>,
    /// Journal records replayed over it.
    pub replayed: usize,
    /// Torn final records dropped (0 or 1).
    pub torn_tails: u64,
}

/// Metrics of the data directory: the journal's commits (told by its writer thread, see
/// [`CommitObserver`]) and the snapshots. `Clone` because one copy becomes the journal's
/// observer and one stays with the snapshots; prometheus handles share their values, so both
/// copies update the same metrics.
#[derive(Clone)]
pub(crate) struct PersistenceMetrics {
    commit_records: Histogram,
    journal_bytes: IntCounter,
    journal_write_seconds: Histogram,
    journal_sync_seconds: Histogram,
    snapshot_seconds: Histogram,
    snapshot_body_bytes: IntGauge,
}

impl PersistenceMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub(crate) fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        // 50 µs to ~3.3 s: a sync on a fast disk up to a stalled one.
        let io_buckets = exponential_buckets(0.000_05, 2.0, 17)?;
        Ok(Self {
            commit_records: register_histogram_with_registry!(
                "matchwell_journal_commit_records",
                "Journal records per commit (group commit: one write and at most one sync each)",
                exponential_buckets(1.0, 2.0, 14)?,
                registry
            )?,
            journal_bytes: register_int_counter_with_registry!(
                "matchwell_journal_bytes_total",
                "Bytes written to the journal",
                registry
            )?,
            journal_write_seconds: register_histogram_with_registry!(
                "matchwell_journal_write_seconds",
                "Time a journal commit spent writing",
                io_buckets.clone(),
                registry
            )?,
            journal_sync_seconds: register_histogram_with_registry!(
                "matchwell_journal_sync_seconds",
                "Time a journal commit spent syncing (commits that synced)",
                io_buckets,
                registry
            )?,
            snapshot_seconds: register_histogram_with_registry!(
                "matchwell_snapshot_seconds",
                "Time to write a snapshot: rotate the journal, capture, write, sync, prune",
                exponential_buckets(0.001, 2.0, 16)?,
                registry
            )?,
            snapshot_body_bytes: register_int_gauge_with_registry!(
                "matchwell_snapshot_body_bytes",
                "Body size of the newest snapshot written",
                registry
            )?,
        })
    }
}

impl PersistenceMetrics {
    fn observe_commit(&self, commit: &Commit) {
        self.commit_records.observe(commit.records as f64);
        self.journal_bytes.inc_by(commit.bytes as u64);
        self.journal_write_seconds
            .observe(commit.write.as_secs_f64());
        if let Some(sync) = commit.sync {
            self.journal_sync_seconds.observe(sync.as_secs_f64());
        }
    }
}

/// How long the journal may go without a commit, beyond one heartbeat interval, while
/// records wait, before readiness calls it stalled: a disk that takes this long to take a
/// write is one that callers are waiting on.
const JOURNAL_STALL_GRACE: Duration = Duration::from_secs(5);

/// Engine time that no commit or snapshot has happened at yet.
const NEVER: u64 = u64::MAX;

/// What the data directory's health reads: when the journal last committed, and how the
/// snapshots went. Shared (`Arc`) by the journal's writer thread, which notes each commit, by
/// whoever writes a snapshot (the periodic task, the final one at shutdown), and by readiness
/// requests. Atomics, because the writer thread must never wait for a reader; the last
/// snapshot error sits behind a mutex, as it changes only when a snapshot fails.
struct Vitals {
    /// The engine's clock, so that ages agree with the engine's own times.
    clock: SharedClock,
    /// Engine time the journal was opened at.
    opened_ms: u64,
    /// Engine time of the latest commit, or [`NEVER`].
    last_commit_ms: AtomicU64,
    /// Engine time of the newest snapshot written (by this process or, until it writes one,
    /// the one recovery loaded), or [`NEVER`].
    last_snapshot_ms: AtomicU64,
    /// Snapshots that failed since the last one that succeeded.
    snapshot_failures: AtomicU64,
    /// Why the latest failed snapshot failed; cleared by a success.
    last_snapshot_error: Mutex<Option<String>>,
}

/// The journal's observer: the commit's metrics, and its time for readiness.
struct CommitWatch {
    metrics: PersistenceMetrics,
    vitals: Arc<Vitals>,
}

impl CommitObserver for CommitWatch {
    fn committed(&self, commit: &Commit) {
        self.metrics.observe_commit(commit);
        self.vitals
            .last_commit_ms
            .store(self.vitals.clock.now_ms(), Ordering::Release);
    }
}

/// How the journal is doing, for readiness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalVitals {
    /// Whether it takes records: neither failed nor closed.
    pub writable: bool,
    /// Why it failed, if it did (it then refuses every change until a restart).
    pub failure: Option<String>,
    /// Time since its latest commit; `None` before the first.
    pub last_commit_age: Option<Duration>,
    /// Records appended and not yet durable.
    pub pending_records: u64,
    /// Whether records have been waiting longer than a heartbeat interval plus
    /// five seconds with nothing committed: its disk no longer takes writes. Judged only
    /// while the heartbeat runs, which makes the journal commit at least once an interval.
    pub stalled: bool,
}

/// How the snapshots are going, for readiness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotVitals {
    /// Engine time (ms since the Unix epoch) of the newest snapshot written, by this process
    /// or, until it writes one, the one recovery loaded; `None` when there is none.
    pub last_success_ms: Option<u64>,
    /// Time since then.
    pub last_success_age: Option<Duration>,
    /// Snapshots that failed since the last one that succeeded.
    pub consecutive_failures: u64,
    /// Why the latest of those failed.
    pub last_error: Option<String>,
}

/// The open data directory of a running engine.
pub(crate) struct Persistence {
    snapshots: SnapshotStore,
    journal: Arc<Journal<Change>>,
    metrics: PersistenceMetrics,
    vitals: Arc<Vitals>,
    /// Serialises snapshots (the periodic task and the final one at shutdown): each rotates
    /// the journal and prunes segments, which must not interleave.
    snapshotting: Mutex<()>,
}

impl Persistence {
    /// Opens `config.data_dir`, reads back its state and opens the journal after it; `clock`
    /// is the engine's, which readiness measures ages by.
    pub(crate) fn open(
        config: &PersistenceConfig,
        metrics: PersistenceMetrics,
        clock: SharedClock,
    ) -> Result<(Self, Restored, RecoveryReport), PersistenceError> {
        let storage: Arc<dyn Storage> = match &config.storage {
            Some(storage) => Arc::clone(storage),
            None => Arc::new(FileStorage::open(&config.data_dir)?),
        };
        let snapshots = SnapshotStore::open(
            Arc::clone(&storage),
            SnapshotOptions {
                keep: config.keep_snapshots,
            },
        )?;
        let loaded = snapshots.load_latest::<SnapshotBody>()?;
        let mut report = RecoveryReport {
            snapshot: loaded.as_ref().map(|snapshot| snapshot.seq),
            ..RecoveryReport::default()
        };
        let replay_from = loaded
            .as_ref()
            .map_or(0, |snapshot| snapshot.header.replay_from);
        let loaded_at_ms = loaded
            .as_ref()
            .map_or(NEVER, |snapshot| snapshot.header.created_at_ms);
        let journal = read_segments::<Change>(&*storage, replay_from)?;
        if let Some(torn) = &journal.torn_tail {
            report.torn_tails = 1;
            tracing::warn!(
                file = %torn.file.display(),
                offset = torn.offset,
                bytes_dropped = torn.bytes_dropped,
                "dropped a torn final journal record (it was never acknowledged)"
            );
        }
        let mut restored = Restored::from_snapshot(loaded.map(|snapshot| snapshot.body));
        report.replayed = journal.records.len();
        for record in journal.records {
            restored.apply(record.record);
        }
        let vitals = Arc::new(Vitals {
            opened_ms: clock.now_ms(),
            clock,
            last_commit_ms: AtomicU64::new(NEVER),
            last_snapshot_ms: AtomicU64::new(loaded_at_ms),
            snapshot_failures: AtomicU64::new(0),
            last_snapshot_error: Mutex::new(None),
        });
        let observer: Arc<dyn CommitObserver> = Arc::new(CommitWatch {
            metrics: metrics.clone(),
            vitals: Arc::clone(&vitals),
        });
        let journal = Journal::open_observed(
            storage,
            JournalOptions::with_fsync(config.fsync),
            Some(observer),
        )?;
        Ok((
            Self {
                snapshots,
                journal: Arc::new(journal),
                metrics,
                vitals,
                snapshotting: Mutex::new(()),
            },
            restored,
            report,
        ))
    }

    /// The journal, for the matchmaker to append to.
    pub(crate) fn journal(&self) -> Arc<Journal<Change>> {
        Arc::clone(&self.journal)
    }

    /// Whether the journal still accepts writes.
    pub(crate) fn is_healthy(&self) -> bool {
        self.journal.is_healthy()
    }

    /// How the journal is doing at engine time `now_ms`; `heartbeat` is the heartbeat's
    /// interval while it runs.
    pub(crate) fn journal_vitals(&self, now_ms: u64, heartbeat: Option<Duration>) -> JournalVitals {
        let vitals = &self.vitals;
        let last_commit_ms = vitals.last_commit_ms.load(Ordering::Acquire);
        let since = |at_ms: u64| Duration::from_millis(now_ms.saturating_sub(at_ms));
        let last_commit_age = (last_commit_ms != NEVER).then(|| since(last_commit_ms));
        let pending_records = self
            .journal
            .appended_seq()
            .saturating_sub(self.journal.durable_seq());
        let quiet_for = last_commit_age.unwrap_or_else(|| since(vitals.opened_ms));
        let stalled = heartbeat.is_some_and(|interval| {
            pending_records > 0 && quiet_for >= interval + JOURNAL_STALL_GRACE
        });
        JournalVitals {
            writable: self.journal.is_healthy(),
            failure: self.journal.failure().map(|cause| cause.to_string()),
            last_commit_age,
            pending_records,
            stalled,
        }
    }

    /// How the snapshots are going at engine time `now_ms`.
    pub(crate) fn snapshot_vitals(&self, now_ms: u64) -> SnapshotVitals {
        let vitals = &self.vitals;
        let last_success_ms =
            Some(vitals.last_snapshot_ms.load(Ordering::Acquire)).filter(|&at| at != NEVER);
        SnapshotVitals {
            last_success_ms,
            last_success_age: last_success_ms
                .map(|at_ms| Duration::from_millis(now_ms.saturating_sub(at_ms))),
            consecutive_failures: vitals.snapshot_failures.load(Ordering::Acquire),
            last_error: vitals.last_snapshot_error.lock().clone(),
        }
    }

    /// Writes a snapshot of `matchmaker` and drops the journal segments no kept snapshot
    /// needs, and notes how it went for readiness. Blocks on disk I/O: call it off the async
    /// workers.
    pub(crate) fn snapshot(
        &self,
        matchmaker: &Matchmaker,
    ) -> Result<WrittenSnapshot, PersistenceError> {
        let _one_at_a_time = self.snapshotting.lock();
        let written = self.write_snapshot(matchmaker);
        let vitals = &self.vitals;
        match &written {
            Ok(_) => {
                vitals
                    .last_snapshot_ms
                    .store(matchmaker.now_ms(), Ordering::Release);
                vitals.snapshot_failures.store(0, Ordering::Release);
                *vitals.last_snapshot_error.lock() = None;
            }
            Err(error) => {
                *vitals.last_snapshot_error.lock() = Some(error.to_string());
                vitals.snapshot_failures.fetch_add(1, Ordering::AcqRel);
            }
        }
        written
    }

    /// [`snapshot`](Self::snapshot)'s work, under its lock.
    fn write_snapshot(&self, matchmaker: &Matchmaker) -> Result<WrittenSnapshot, PersistenceError> {
        let started = Instant::now();
        let replay_from = self.journal.rotate()?;
        let body = matchmaker.capture();
        let written = self.snapshots.write(&body, replay_from, body.counts())?;
        if let Some(&oldest) = self.snapshots.list()?.first() {
            let needed_from = self.snapshots.read_header(oldest)?.replay_from;
            self.journal.remove_segments_before(needed_from)?;
        }
        self.metrics
            .snapshot_body_bytes
            .set(i64::try_from(written.header.body_len).unwrap_or(i64::MAX));
        self.metrics
            .snapshot_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(written)
    }

    /// Syncs and closes the journal.
    pub(crate) fn close(&self) -> Result<(), PersistenceError> {
        Ok(self.journal.close()?)
    }
}

/// A snapshot file's header and counts, as `matchwell snapshot inspect` prints them. Validates
/// the whole file (both checksums) without decoding the body.
pub fn describe_snapshot(path: &std::path::Path) -> Result<String, PersistenceError> {
    use std::fmt::Write as _;

    let header = matchwell_snapshots::inspect_snapshot(path)?;
    let mut text = format!(
        "file: {}\nformat version: {}\ncreated_at_ms: {}\nreplay journal from segment: {}\nbody: {} bytes, crc32c {:08x}\n",
        path.display(),
        matchwell_snapshots::snapshot::SNAPSHOT_VERSION,
        header.created_at_ms,
        header.replay_from,
        header.body_len,
        header.body_crc32c,
    );
    for (what, count) in &header.summary {
        let _ = writeln!(text, "{what}: {count}");
    }
    Ok(text)
}
