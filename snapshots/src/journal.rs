//! The append-only journal of changes since the last snapshot.
//!
//! [`Journal::append`] encodes a record on the calling thread and queues it;
//! one background writer thread writes queued records to the current segment
//! file and syncs according to the [`FsyncMode`]. [`read_segments`] reads the
//! records back after a restart.

mod error;
pub(crate) mod format;
mod recovery;
mod ticket;
mod writer;

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;

pub use error::{FrameDefect, JournalError, ParseFsyncModeError};
pub use format::{
    DecodedSegment, RecoveredRecord, SEGMENT_VERSION, SegmentPosition, TornTail, decode_segment,
};
pub use recovery::{Recovered, read_segments};
pub use ticket::{Ticket, WaitDurable};

use crate::storage::{Storage, StorageError};
use format::{encode_frame, segment_file_name};
use recovery::{list_segments, prepare_next_segment};
use writer::{Shared, Writer, create_segment};

/// When the writer thread syncs, and so when a [`Ticket`] counts as durable.
///
/// What each mode can lose is described in the crate documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncMode {
    /// Group commit: the writer takes everything queued, writes it with one
    /// write and syncs once; all of it is durable then.
    Always,
    /// The writer writes and syncs at most once per `interval` (earlier when
    /// [`JournalOptions::batch_wake_bytes`] are queued).
    Batch {
        /// Time between syncs under load.
        interval: Duration,
    },
    /// The writer writes promptly and never syncs; records count as durable
    /// once the operating system has them.
    None,
}

impl FsyncMode {
    /// The batch interval used when none is given.
    pub const DEFAULT_BATCH_INTERVAL: Duration = Duration::from_millis(5);
}

impl Default for FsyncMode {
    fn default() -> Self {
        Self::Batch {
            interval: Self::DEFAULT_BATCH_INTERVAL,
        }
    }
}

impl FromStr for FsyncMode {
    type Err = ParseFsyncModeError;

    /// Parses `always`, `batch` (with [`FsyncMode::DEFAULT_BATCH_INTERVAL`]) or
    /// `none`, ignoring ASCII case.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let mode = input.trim();
        if mode.eq_ignore_ascii_case("always") {
            Ok(Self::Always)
        } else if mode.eq_ignore_ascii_case("batch") {
            Ok(Self::default())
        } else if mode.eq_ignore_ascii_case("none") {
            Ok(Self::None)
        } else {
            Err(ParseFsyncModeError {
                input: input.to_owned(),
            })
        }
    }
}

/// How a [`Journal`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalOptions {
    /// When to sync.
    pub fsync: FsyncMode,
    /// In [`FsyncMode::Batch`], wake the writer before the interval is over
    /// once this many bytes are queued, bounding the memory a burst can take.
    pub batch_wake_bytes: usize,
}

impl JournalOptions {
    /// The default options with the given fsync mode.
    pub fn with_fsync(fsync: FsyncMode) -> Self {
        Self {
            fsync,
            ..Self::default()
        }
    }
}

impl Default for JournalOptions {
    fn default() -> Self {
        Self {
            fsync: FsyncMode::default(),
            batch_wake_bytes: 1 << 20,
        }
    }
}

/// What one commit of the writer thread did: it takes everything queued,
/// writes it, then syncs as the [`FsyncMode`] asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    /// Records written.
    pub records: u64,
    /// Bytes written.
    pub bytes: usize,
    /// Time spent writing (and rotating segments, when one was due).
    pub write: Duration,
    /// Time spent syncing; `None` when this commit did not sync.
    pub sync: Option<Duration>,
}

/// Told about every [`Commit`], on the journal's writer thread once the
/// commit's records count as durable, so it delays no waiter; but the next
/// commit waits for it, so it must be quick (a few atomic adds).
pub trait CommitObserver: Send + Sync {
    /// Called after each commit.
    fn committed(&self, commit: &Commit);
}

/// An append-only journal of records of type `T`, written by a background thread.
///
/// Sequence numbers count appends since the journal was opened, starting at 1;
/// they are not stored in the files. The journal is fail-stop: after a write
/// or sync fails, it accepts nothing more and every record not durable by then
/// reports the failure.
pub struct Journal<T> {
    shared: Arc<Shared>,
    /// Taken by the first [`close`](Self::close). Behind a mutex so that
    /// closing works through `&self`, for a journal shared in an `Arc`.
    writer: Mutex<Option<JoinHandle<()>>>,
    /// `fn(&T)`: the journal consumes `T`s but stores none, so it is `Send` and
    /// `Sync` whatever `T` is.
    _records: PhantomData<fn(&T)>,
}

impl<T> Journal<T> {
    /// Opens the journal in `storage` and starts its writer thread.
    ///
    /// Never appends to an existing file: the journal continues in a new
    /// segment numbered after the newest existing one (0 in an empty
    /// storage), whose header is durable when this returns. The newest
    /// existing segment is repaired first, as by [`read_segments`], so that
    /// no segment with a damaged end is followed by another: a torn tail is
    /// cut off, and a segment whose header never became durable is removed
    /// (its number is then reused).
    pub fn open(storage: Arc<dyn Storage>, options: JournalOptions) -> Result<Self, JournalError> {
        Self::open_observed(storage, options, None)
    }

    /// Like [`open`](Self::open), and tells `observer` about every commit of
    /// the writer thread (for metrics: what was written and how long the
    /// write and the sync took).
    pub fn open_observed(
        storage: Arc<dyn Storage>,
        options: JournalOptions,
        observer: Option<Arc<dyn CommitObserver>>,
    ) -> Result<Self, JournalError> {
        let segment = prepare_next_segment(&*storage)?;
        let file = create_segment(&*storage, segment)?;
        let shared = Arc::new(Shared::new(storage, options, segment, observer));
        let writer = Writer::spawn(Arc::clone(&shared), file)?;
        Ok(Self {
            shared,
            writer: Mutex::new(Some(writer)),
            _records: PhantomData,
        })
    }

    /// Seals the current segment and starts a new one, returning its number.
    ///
    /// Every record appended before this call is in an older segment; every
    /// record appended after it returns is in the new one or later. Blocks the
    /// calling thread until the old segment is synced and the new segment's
    /// header and directory entry are durable. Before taking a snapshot, call
    /// this and store the returned number as the snapshot's `replay_from`.
    pub fn rotate(&self) -> Result<u64, JournalError> {
        let segment = self.shared.request_rotation()?;
        self.shared.block_until(|| self.shared.rotation(segment))
    }

    /// Removes every segment numbered below `segment` and returns how many it
    /// removed. The segment being written is never removed.
    ///
    /// Call it with the `replay_from` of the oldest snapshot still kept, so
    /// that falling back to that snapshot still finds its journal.
    pub fn remove_segments_before(&self, segment: u64) -> Result<usize, JournalError> {
        let active = self.shared.opened_segment();
        if segment > active {
            return Err(JournalError::ActiveSegment {
                requested: segment,
                active,
            });
        }
        let storage = &*self.shared.storage;
        let obsolete: Vec<u64> = list_segments(storage)?
            .into_iter()
            .take_while(|&existing| existing < segment)
            .collect();
        for &old in &obsolete {
            storage.remove(&segment_file_name(old))?;
        }
        if !obsolete.is_empty() {
            storage.sync_dir()?;
        }
        Ok(obsolete.len())
    }

    /// A future that resolves once record `seq` is durable, like
    /// [`Ticket::durable`]. Resolves at once with
    /// [`JournalError::NotAppended`] if `seq` was not handed out yet.
    pub fn wait_durable(&self, seq: u64) -> WaitDurable {
        WaitDurable::new(Arc::clone(&self.shared), seq)
    }

    /// The highest sequence number that is durable (0 if none is).
    pub fn durable_seq(&self) -> u64 {
        self.shared.durable_seq()
    }

    /// The last sequence number handed out (0 if none was).
    pub fn appended_seq(&self) -> u64 {
        self.shared.appended_seq()
    }

    /// The number of the segment being written.
    pub fn active_segment(&self) -> u64 {
        self.shared.opened_segment()
    }

    /// Whether the journal accepts records: it is neither poisoned nor closed.
    pub fn is_healthy(&self) -> bool {
        self.shared.failure().is_none() && !self.shared.is_closing()
    }

    /// The failure that poisoned the journal, if one did.
    pub fn failure(&self) -> Option<Arc<StorageError>> {
        self.shared.failure().cloned()
    }

    /// Writes and syncs everything appended so far, in every fsync mode, and
    /// stops the writer thread. Later appends fail with [`JournalError::Closed`].
    ///
    /// Returns the poisoning failure if the journal is (or became) poisoned.
    /// Closing again does nothing more. Dropping the journal closes it too,
    /// logging instead of returning a failure.
    pub fn close(&self) -> Result<(), JournalError> {
        self.shared.request_close();
        let writer = self.writer.lock().take();
        if writer.is_some_and(|writer| writer.join().is_err()) {
            tracing::error!("the journal writer thread panicked");
        }
        match self.shared.failure() {
            Some(cause) => Err(JournalError::poisoned(cause)),
            None => Ok(()),
        }
    }
}

impl<T: Serialize> Journal<T> {
    /// Appends `record` and returns its ticket.
    ///
    /// The record is encoded on the calling thread, then queued; the call does
    /// not wait for any I/O. Records reach the file in the order their
    /// `append` calls returned (the order of their sequence numbers).
    pub fn append(&self, record: &T) -> Result<Ticket, JournalError> {
        let frame = encode_frame(record)?;
        let seq = self.shared.append_frame(&frame)?;
        Ok(Ticket::new(seq, Arc::clone(&self.shared)))
    }
}

impl<T> Drop for Journal<T> {
    fn drop(&mut self) {
        if self.writer.get_mut().is_none() {
            return;
        }
        if let Err(error) = self.close() {
            tracing::warn!(%error, "journal dropped after a failure");
        }
    }
}

impl<T> fmt::Debug for Journal<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Journal")
            .field("fsync", &self.shared.options.fsync)
            .field("active_segment", &self.active_segment())
            .field("appended_seq", &self.appended_seq())
            .field("durable_seq", &self.durable_seq())
            .field("failure", &self.shared.failure())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};
    use std::time::Duration;

    use super::*;
    use crate::storage::{CrashMode, FaultyStorage, StorageError};

    /// Counts wake-ups, to check that a pending future is woken.
    struct CountingWaker(std::sync::atomic::AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Batch mode with an interval no test outlives: nothing becomes durable
    /// unless a rotation or close forces it.
    fn never_syncing() -> JournalOptions {
        JournalOptions::with_fsync(FsyncMode::Batch {
            interval: Duration::from_secs(3600),
        })
    }

    fn open(disk: &FaultyStorage, options: JournalOptions) -> Journal<String> {
        Journal::open(Arc::new(disk.clone()), options).unwrap()
    }

    fn records(disk: &FaultyStorage) -> Vec<String> {
        read_segments::<String>(disk, 0)
            .unwrap()
            .records
            .into_iter()
            .map(|r| r.record)
            .collect()
    }

    /// Keeps every commit it is told about.
    #[derive(Default)]
    struct CommitLog(Mutex<Vec<Commit>>);

    impl CommitObserver for CommitLog {
        fn committed(&self, commit: &Commit) {
            self.0.lock().push(*commit);
        }
    }

    /// Appends `texts` to a journal in `fsync` mode observed by a [`CommitLog`], waits until
    /// the last is durable, closes the journal and returns the commits it saw.
    fn observed_commits(fsync: FsyncMode, texts: &[&str]) -> Vec<Commit> {
        let disk = FaultyStorage::new(1);
        let log = Arc::new(CommitLog::default());
        let observer: Arc<dyn CommitObserver> = log.clone();
        let journal: Journal<String> = Journal::open_observed(
            Arc::new(disk.clone()),
            JournalOptions::with_fsync(fsync),
            Some(observer),
        )
        .unwrap();
        let mut last = None;
        for text in texts {
            last = Some(journal.append(&(*text).to_owned()).unwrap());
        }
        last.unwrap().wait().unwrap();
        journal.close().unwrap();
        log.0.lock().clone()
    }

    #[test]
    fn the_observer_sees_every_record_and_byte_and_whether_each_commit_synced() {
        let texts = ["first", "second", "a third, longer record"];
        let frame_bytes: usize = texts
            .iter()
            .map(|text| encode_frame(&(*text).to_owned()).unwrap().len())
            .sum();
        for fsync in [FsyncMode::Always, FsyncMode::None] {
            let commits = observed_commits(fsync, &texts);
            assert!(!commits.is_empty(), "{fsync:?}");
            let records: u64 = commits.iter().map(|commit| commit.records).sum();
            let bytes: usize = commits.iter().map(|commit| commit.bytes).sum();
            assert_eq!((records, bytes), (3, frame_bytes), "{fsync:?}: {commits:?}");
            assert!(
                commits.iter().all(|commit| commit.records > 0
                    && commit.sync.is_some() == (fsync == FsyncMode::Always)),
                "{fsync:?}: {commits:?}"
            );
        }
    }

    #[test]
    fn fsync_modes_parse_from_their_names() {
        assert_eq!("always".parse(), Ok(FsyncMode::Always));
        assert_eq!(" Batch ".parse(), Ok(FsyncMode::default()));
        assert_eq!("NONE".parse(), Ok(FsyncMode::None));
        let err = "sometimes".parse::<FsyncMode>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown fsync mode \"sometimes\": expected `always`, `batch` or `none`"
        );
    }

    #[test]
    fn a_pending_durability_future_is_woken_when_its_record_becomes_durable() {
        let disk = FaultyStorage::new(1);
        let journal = open(&disk, never_syncing());
        let ticket = journal.append(&"a".to_owned()).unwrap();
        let waker = Arc::new(CountingWaker(0.into()));
        let task_waker = Waker::from(Arc::clone(&waker));
        let mut cx = Context::from_waker(&task_waker);
        let mut durable = pin!(ticket.clone().into_future());

        assert!(durable.as_mut().poll(&mut cx).is_pending());
        assert!(!ticket.is_durable());
        journal.rotate().unwrap();
        assert!(ticket.is_durable(), "rotation seals the old segment");
        assert!(waker.0.load(std::sync::atomic::Ordering::SeqCst) > 0);
        assert!(matches!(
            durable.as_mut().poll(&mut cx),
            Poll::Ready(Ok(()))
        ));
    }

    #[test]
    fn waiting_for_a_sequence_number_not_handed_out_fails_at_once() {
        let disk = FaultyStorage::new(1);
        let journal = open(&disk, JournalOptions::with_fsync(FsyncMode::Always));
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut wait = pin!(journal.wait_durable(1));
        assert!(matches!(
            wait.as_mut().poll(&mut cx),
            Poll::Ready(Err(JournalError::NotAppended {
                seq: 1,
                appended: 0
            }))
        ));
    }

    #[test]
    fn a_failed_sync_poisons_the_journal_and_every_waiting_ticket() {
        let disk = FaultyStorage::new(1);
        let journal = open(&disk, never_syncing());
        let first = journal.append(&"first".to_owned()).unwrap();
        let second = journal.append(&"second".to_owned()).unwrap();
        disk.fail_next_syncs(1);

        let rotation = journal.rotate();
        assert!(
            matches!(rotation, Err(JournalError::Poisoned { .. })),
            "{rotation:?}"
        );
        for ticket in [&first, &second] {
            let err = ticket.wait().unwrap_err();
            assert!(err.to_string().contains("injected sync failure"), "{err}");
        }
        assert_eq!(journal.durable_seq(), 0);
        assert!(!journal.is_healthy());
        assert!(matches!(
            journal.failure().as_deref(),
            Some(StorageError::Io {
                op: crate::storage::StorageOp::Sync,
                ..
            })
        ));
        assert!(matches!(
            journal.append(&"later".to_owned()),
            Err(JournalError::Poisoned { .. })
        ));
        assert!(matches!(
            journal.close(),
            Err(JournalError::Poisoned { .. })
        ));
    }

    #[test]
    fn a_failed_write_poisons_the_journal_without_a_retry() {
        let disk = FaultyStorage::new(1);
        let journal = open(&disk, JournalOptions::with_fsync(FsyncMode::Always));
        journal.append(&"kept".to_owned()).unwrap().wait().unwrap();
        disk.fail_next_writes(1);
        let err = journal
            .append(&"lost".to_owned())
            .unwrap()
            .wait()
            .unwrap_err();
        assert!(err.to_string().contains("injected write failure"), "{err}");
        assert_eq!(journal.durable_seq(), 1);
        drop(journal);
        assert_eq!(records(&disk), ["kept"]);
    }

    #[test]
    fn closing_flushes_and_stops_accepting_records() {
        let disk = FaultyStorage::new(1);
        let journal = open(&disk, never_syncing());
        let ticket = journal.append(&"a".to_owned()).unwrap();
        journal.close().unwrap();
        assert!(ticket.is_durable());
        assert!(!journal.is_healthy());
        assert!(matches!(
            journal.append(&"b".to_owned()),
            Err(JournalError::Closed)
        ));
        assert!(matches!(journal.rotate(), Err(JournalError::Closed)));
        journal.close().unwrap();
        assert_eq!(records(&disk.crash(CrashMode::LoseUnsynced)), ["a"]);
    }

    #[test]
    fn dropping_the_journal_flushes_it() {
        let disk = FaultyStorage::new(1);
        let journal = open(&disk, never_syncing());
        journal.append(&"a".to_owned()).unwrap();
        drop(journal);
        assert_eq!(records(&disk.crash(CrashMode::LoseUnsynced)), ["a"]);
    }

    #[test]
    fn fsync_none_acknowledges_once_written_so_a_power_cut_can_lose_acknowledged_records() {
        let disk = FaultyStorage::new(1);
        let journal = open(&disk, JournalOptions::with_fsync(FsyncMode::None));
        journal.append(&"a".to_owned()).unwrap().wait().unwrap();
        assert_eq!(records(&disk), ["a"], "the OS has the record");
        let rebooted = disk.crash(CrashMode::LoseUnsynced);
        drop(journal);
        assert!(records(&rebooted).is_empty(), "but it was never synced");
    }

    #[test]
    fn rotation_puts_later_records_in_a_new_segment() {
        let disk = FaultyStorage::new(1);
        let journal = open(&disk, JournalOptions::with_fsync(FsyncMode::Always));
        journal.append(&"old".to_owned()).unwrap();
        assert_eq!(journal.rotate().unwrap(), 1);
        assert_eq!(journal.active_segment(), 1);
        journal.append(&"new".to_owned()).unwrap().wait().unwrap();
        let segments: Vec<(u64, String)> = read_segments::<String>(&disk, 0)
            .unwrap()
            .records
            .into_iter()
            .map(|r| (r.segment, r.record))
            .collect();
        assert_eq!(segments, [(0, "old".to_owned()), (1, "new".to_owned())]);
    }

    #[test]
    fn old_segments_are_removed_but_never_the_active_one() {
        let disk = FaultyStorage::new(1);
        let journal = open(&disk, JournalOptions::with_fsync(FsyncMode::Always));
        journal.rotate().unwrap();
        journal.rotate().unwrap();
        assert!(matches!(
            journal.remove_segments_before(3),
            Err(JournalError::ActiveSegment {
                requested: 3,
                active: 2
            })
        ));
        assert_eq!(journal.remove_segments_before(2).unwrap(), 2);
        assert_eq!(journal.remove_segments_before(2).unwrap(), 0);
        assert_eq!(recovery::list_segments(&disk).unwrap(), [2]);
    }

    #[test]
    fn reopening_continues_in_a_new_segment() {
        let disk = FaultyStorage::new(1);
        let first = open(&disk, JournalOptions::with_fsync(FsyncMode::Always));
        first.append(&"a".to_owned()).unwrap();
        first.close().unwrap();
        let before = disk.read(&segment_file_name(0)).unwrap();

        let second = open(&disk, JournalOptions::with_fsync(FsyncMode::Always));
        assert_eq!(second.active_segment(), 1);
        second.append(&"b".to_owned()).unwrap();
        second.close().unwrap();
        assert_eq!(disk.read(&segment_file_name(0)).unwrap(), before);
        assert_eq!(records(&disk), ["a", "b"]);
    }

    #[test]
    fn batch_mode_makes_records_durable_within_the_interval() {
        let disk = FaultyStorage::new(1);
        let journal = open(
            &disk,
            JournalOptions::with_fsync(FsyncMode::Batch {
                interval: Duration::from_millis(2),
            }),
        );
        let tickets: Vec<Ticket> = (0..100)
            .map(|i| journal.append(&i.to_string()).unwrap())
            .collect();
        tickets.last().unwrap().wait().unwrap();
        assert!(tickets.iter().all(Ticket::is_durable));
        drop(journal);
        assert_eq!(records(&disk.crash(CrashMode::LoseUnsynced)).len(), 100);
    }
}
