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
use std::time::Instant;

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

impl CommitObserver for PersistenceMetrics {
    fn committed(&self, commit: &Commit) {
        self.commit_records.observe(commit.records as f64);
        self.journal_bytes.inc_by(commit.bytes as u64);
        self.journal_write_seconds
            .observe(commit.write.as_secs_f64());
        if let Some(sync) = commit.sync {
            self.journal_sync_seconds.observe(sync.as_secs_f64());
        }
    }
}

/// The open data directory of a running engine.
pub(crate) struct Persistence {
    snapshots: SnapshotStore,
    journal: Arc<Journal<Change>>,
    metrics: PersistenceMetrics,
    /// Serialises snapshots (the periodic task and the final one at shutdown): each rotates
    /// the journal and prunes segments, which must not interleave.
    snapshotting: Mutex<()>,
}

impl Persistence {
    /// Opens `config.data_dir`, reads back its state and opens the journal after it.
    pub(crate) fn open(
        config: &PersistenceConfig,
        metrics: PersistenceMetrics,
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
        let observer: Arc<dyn CommitObserver> = Arc::new(metrics.clone());
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

    /// Writes a snapshot of `matchmaker` and drops the journal segments no kept snapshot
    /// needs. Blocks on disk I/O: call it off the async workers.
    pub(crate) fn snapshot(
        &self,
        matchmaker: &Matchmaker,
    ) -> Result<WrittenSnapshot, PersistenceError> {
        let _one_at_a_time = self.snapshotting.lock();
        let started = Instant::now();
        let replay_from = self.journal.rotate()?;
        let body = matchmaker.capture();
        let written = self.snapshots.write(&body, replay_from, body.counts())?;
        if let Some(&oldest) = self.snapshots.list()?.first() {
            let needed_from = self.snapshots.read_header(oldest)?.replay_from;
            self.journal.remove_segments_before(needed_from)?;
        }
        // The size first: a scrape that sees the snapshot counted sees its size too.
        self.metrics
            .snapshot_body_bytes
            .set(i64::try_from(written.header.body_len).unwrap_or(i64::MAX));
        self.metrics
            .snapshot_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(written)
    }

    /// Appends a record with no images, so that recovery knows the engine was up until now.
    pub(crate) fn heartbeat(&self, now_ms: u64) {
        let heartbeat = Change {
            at_ms: now_ms,
            images: Vec::new(),
        };
        if let Err(error) = self.journal.append(&heartbeat) {
            tracing::error!(%error, "journal heartbeat failed");
        }
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
