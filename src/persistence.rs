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

use matchwell_actors::matchmaker::Matchmaker;
use matchwell_actors::persist::{Change, Restored, SnapshotBody};
use matchwell_snapshots::{
    FileStorage, FsyncMode, Journal, JournalError, JournalOptions, SnapshotError, SnapshotOptions,
    SnapshotStore, Storage, StorageError, WrittenSnapshot, read_segments,
};
use parking_lot::Mutex;

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

/// The open data directory of a running engine.
pub(crate) struct Persistence {
    snapshots: SnapshotStore,
    journal: Arc<Journal<Change>>,
    /// Serialises snapshots (the periodic task and the final one at shutdown): each rotates
    /// the journal and prunes segments, which must not interleave.
    snapshotting: Mutex<()>,
}

impl Persistence {
    /// Opens `config.data_dir`, reads back its state and opens the journal after it.
    pub(crate) fn open(
        config: &PersistenceConfig,
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
        let journal = Journal::open(storage, JournalOptions::with_fsync(config.fsync))?;
        Ok((
            Self {
                snapshots,
                journal: Arc::new(journal),
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
        let replay_from = self.journal.rotate()?;
        let body = matchmaker.capture();
        let written = self.snapshots.write(&body, replay_from, body.counts())?;
        if let Some(&oldest) = self.snapshots.list()?.first() {
            let needed_from = self.snapshots.read_header(oldest)?.replay_from;
            self.journal.remove_segments_before(needed_from)?;
        }
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
